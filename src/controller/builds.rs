//! Builds as the front ends see them: the list, a build's log, cancelling the running one,
//! emptying the build cache, and an app's build settings (`builds:set`, `builds:report`).

use super::{Core, CoreError};
use crate::names::BuildDir;
use crate::store::BuildRow;

/// An app's build settings, as `builds:report` shows them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildSettings {
    /// The subdirectory of the pushed tree the app builds from; `None`: the root (or the
    /// `APP_BASE` config var of the environment being built).
    pub build_dir: Option<String>,
}

impl Core {
    pub fn builds(&self, app: &str, n: i64) -> Result<Vec<BuildRow>, CoreError> {
        Ok(self.store.list_builds(app, n)?)
    }

    /// A build's log (default: the latest build's), its tail when it is huge.
    pub fn build_log(&self, app: &str, id: Option<i64>) -> Result<String, CoreError> {
        let build = match id {
            Some(id) => self.store.build(app, id)?,
            None => self.store.list_builds(app, 1)?.into_iter().next(),
        }
        .ok_or_else(|| CoreError::Invalid(format!("'{app}' has no such build")))?;
        let path = self
            .data
            .logs()
            .join("builds")
            .join(app)
            .join(format!("{}.log", build.id));
        let text = std::fs::read(&path)
            .map_err(|_| CoreError::Invalid(format!("build {} has no log", build.id)))?;
        // Keep the tail of huge logs.
        let start = text.len().saturating_sub(8 << 20);
        Ok(String::from_utf8_lossy(&text[start..]).into_owned())
    }

    /// Cancel the app's running build: its id.
    pub fn cancel_build(&self, app: &str) -> Result<i64, CoreError> {
        self.queue
            .cancel(app)
            .ok_or_else(|| CoreError::Invalid(format!("no build of '{app}' is running")))
    }

    /// Empty the app's build cache (its next build fetches its buildpacks again): the
    /// bytes freed.
    pub fn purge_build_cache(&self, app: &str) -> Result<u64, CoreError> {
        if self.queue.waiting(app) > 0 {
            return Err(CoreError::Invalid(format!(
                "a build of '{app}' is running or queued; wait for it or `builds:cancel {app}`"
            )));
        }
        crate::build::purge_cache(&self.data, app)
            .map_err(|e| CoreError::Invalid(format!("cannot purge the build cache: {e}")))
    }

    pub fn build_settings(&self, app: &str) -> Result<BuildSettings, CoreError> {
        Ok(BuildSettings {
            build_dir: self.store.build_dir(app)?,
        })
    }

    /// Sets (`Some`) or clears (`None`) the subdirectory the app builds from; its next
    /// build uses it (a build already running keeps what it started with).
    pub fn set_build_dir(
        &self,
        app: &str,
        dir: Option<&BuildDir>,
    ) -> Result<BuildSettings, CoreError> {
        self.store.set_build_dir(app, dir.map(|d| &**d))?;
        self.build_settings(app)
    }
}
