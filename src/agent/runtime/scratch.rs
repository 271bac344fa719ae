//! A container's throwaway `/app` overlay dirs (`Scratch`), and sweeping those whose
//! container is gone.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::query_parameters::InspectContainerOptions;

use crate::agent::error::AgentError;
use crate::agent::layout::NodeRoot;
use crate::docker::Docker;
use crate::names;
use crate::release::extract::remove_tree;

use super::{L_APP, L_INSTANCE, L_SCRATCH};

/// The scratch dir a container's label names, if it is one (an absolute path ending in
/// `apps/<its app>/scratch/<its name>`; a label is ours, but a path is checked before a
/// tree is removed).
pub(super) async fn scratch_of(docker: &Docker, container: &str) -> Option<Scratch> {
    let info = docker
        .raw()
        .inspect_container(container, None::<InspectContainerOptions>)
        .await
        .ok()?;
    let name = info.name.as_deref()?.trim_start_matches('/').to_string();
    let labels = info.config?.labels?;
    let app = labels.get(L_APP)?;
    let dir = PathBuf::from(labels.get(L_SCRATCH)?);
    let ok = names::valid_node_app(app)
        && dir.is_absolute()
        && dir.ends_with(Path::new("apps").join(app).join(SCRATCH).join(&name));
    ok.then_some(Scratch { dir })
}

/// The directory under `apps/<app>/`: one dir per container, holding its `/app` overlay's
/// upper and work dirs.
pub const SCRATCH: &str = "scratch";

/// A container's throwaway `/app`: an overlay mounted by Docker (a `local` volume of type
/// overlay, anonymous, so removing the container with its volumes unmounts it) whose lower
/// dir is the unpacked, never-written release and whose upper and work dirs live here.
/// Starting one costs a mkdir and a mount whatever the release's size; writes land in
/// `upper/` and go when the container does.
#[derive(Debug)]
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub(super) fn create(
        root: &NodeRoot,
        app: &str,
        container: &str,
        uid: u32,
    ) -> Result<Scratch, AgentError> {
        let dir = std::path::absolute(root.app_dir(app).join(SCRATCH).join(container)).map_err(
            |source| AgentError::Io {
                path: root.app_dir(app),
                source,
            },
        )?;
        if dir.exists() {
            // A leftover of a crash: its container is gone (the caller removed it).
            let _ = remove_tree(&dir);
        }
        let upper = dir.join("upper");
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| AgentError::Io { path: p, source }
        };
        std::fs::create_dir_all(&upper).map_err(io(&upper))?;
        std::fs::create_dir(dir.join("work")).map_err(io(&dir.join("work")))?;
        // The overlay's root takes the upper dir's owner: the app's uid may write /app.
        std::os::unix::fs::chown(&upper, Some(uid), Some(uid)).map_err(io(&upper))?;
        Ok(Scratch { dir })
    }

    pub(super) fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }

    pub(super) fn work(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// Best effort: a dir left behind is swept by [`sweep_scratch`].
    pub fn remove(&self) {
        if let Err(e) = remove_tree(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.dir.display(), "removing scratch dir: {e}");
            }
        }
    }
}

/// Removes the scratch dirs of `app` whose container no longer exists (a node that crashed
/// or a session that was cut off), leaving the young ones: a container being created now
/// has its dir before Docker knows its name.
pub async fn sweep_scratch(docker: &Docker, root: &NodeRoot, instance: &str, app: &str) {
    let dir = root.app_dir(app).join(SCRATCH);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return;
    };
    let label = vec![format!("{L_INSTANCE}={instance}")];
    let Ok(list) = docker.containers("label", label).await else {
        return;
    };
    let alive: std::collections::HashSet<String> = list
        .into_iter()
        .flat_map(|c| c.names.unwrap_or_default())
        .map(|n| n.trim_start_matches('/').to_string())
        .collect();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let young = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age < Duration::from_secs(120));
        if !alive.contains(&name) && !young {
            let _ = remove_tree(&e.path());
        }
    }
}
