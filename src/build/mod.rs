//! Builds: export the pushed commit, run the buildpacks in a fresh container from the stack
//! image, and hand the slug to `release::cook`. Builds never write refs.

mod bounds;
pub mod buildpacks;
pub mod fetch;
mod run;
mod stacks;
pub mod submodules;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::appconfig;
use crate::git::export::{self, Quarantine};
use crate::names::BuildDir;
use crate::paths::DataDir;
use crate::sink::Sink;
use crate::store::ReleaseRow;
use crate::store::Store;
use bounds::Bound;

/// What a build is allowed (`magrathea serve --build-*`).
#[derive(Debug, Clone)]
pub struct BuildLimits {
    pub timeout: Duration,
    pub memory: i64,
    pub max_slug: u64,
    /// The most an app's build cache may hold.
    pub max_cache: u64,
    /// The Docker network builds run on.
    pub network: String,
    /// The stack of an app whose magrathea.yml names none.
    pub default_stack: String,
}

/// What a build needs from the server around it (the controller implements it): the data
/// dir, the store, the config and the build queue. Builds never reach further up.
pub trait Host: Send + Sync + 'static {
    fn data(&self) -> &DataDir;
    fn store(&self) -> &Store;
    /// Short id of this controller: its build containers carry it.
    fn instance(&self) -> &str;
    fn limits(&self) -> BuildLimits;
    /// The uid an app's builds run as.
    fn app_uid(&self, app: &str) -> Result<u32, BuildError>;
    /// An environment's config vars, decrypted.
    fn config(&self, app: &str, env: &str) -> Result<BTreeMap<String, String>, BuildError>;
    /// How many builds of `app` hold or wait for its turn.
    fn waiting(&self, app: &str) -> usize;
    /// Waits for the app's turn, then for a build slot; both are held (and the build is
    /// known as running, cancellable by `id`) until the returned guard drops. `None`: the
    /// build was cancelled while it waited.
    fn turn<'a>(
        &'a self,
        app: &'a str,
        id: i64,
        cancel: CancellationToken,
    ) -> impl Future<Output = Option<Box<dyn Send + 'a>>> + Send + 'a;
}

#[derive(Debug, Error)]
pub enum BuildError {
    /// Already explained to the pusher line by line.
    #[error("{0}")]
    Failed(String),
    #[error("build cancelled")]
    Cancelled,
}

#[derive(Clone)]
pub struct BuildRequest {
    pub app: String,
    pub object: String,
    pub git_ref: String,
    pub key_name: String,
    pub quarantine: Quarantine,
    pub config_vars: BTreeMap<String, String>,
}

/// The commit a pushed object (commit or annotated tag) points at, read from the quarantine.
pub async fn resolve_commit<H: Host>(
    host: &Arc<H>,
    app: &str,
    q: &Quarantine,
    object: &str,
) -> Result<String, BuildError> {
    let (repo, q, obj) = (host.data().repo(app), q.clone(), object.to_string());
    let (commit, _) = tokio::task::spawn_blocking(move || {
        export::open(&repo, &q).and_then(|r| export::resolve(&r, &obj))
    })
    .await
    .map_err(|e| BuildError::Failed(e.to_string()))?
    .map_err(|e| BuildError::Failed(format!("cannot read the pushed commit: {e}")))?;
    Ok(commit)
}

/// Where in the pushed tree an app is (a monorepo app's subdirectory), and what said so.
#[derive(Debug, Clone)]
pub struct Base {
    pub dir: BuildDir,
    /// `build-dir` (set by `builds:set`) or `APP_BASE` (the config var).
    pub from: &'static str,
}

/// The app's build dir set by `builds:set`, if any.
fn set_base<H: Host>(host: &Arc<H>, app: &str) -> Result<Option<Base>, String> {
    let set = host.store().build_dir(app).map_err(|e| e.to_string())?;
    set.map(|d| {
        d.parse()
            .map(|dir| Base {
                dir,
                from: "build-dir",
            })
            .map_err(|e: crate::names::InvalidBuildDir| e.to_string())
    })
    .transpose()
}

/// Heroku's monorepo convention: the `APP_BASE` config var names the app's directory. Its
/// value is not repeated in an error (config values never are).
fn app_base(vars: &BTreeMap<String, String>) -> Result<Option<Base>, String> {
    match vars.get("APP_BASE").map(|v| v.trim()) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse()
            .map(|dir| {
                Some(Base {
                    dir,
                    from: "APP_BASE",
                })
            })
            .map_err(|_| {
                "the APP_BASE config var is not a relative path inside the repository (like api \
                 or apps/web: no leading '/', no '.' or '..' parts)"
                    .to_string()
            }),
    }
}

/// The config vars a build of `commit` sees in `ENV_DIR`: those of the environment the ref
/// deploys to (the first, by the app's own magrathea.yml, at the top of its `base`;
/// production when none), over that environment's `env:` in magrathea.yml.
async fn build_config<H: Host>(
    host: &Arc<H>,
    req: &BuildRequest,
    commit: &str,
    base: Option<&Base>,
) -> BTreeMap<String, String> {
    let (repo, q, c, base) = (
        host.data().repo(&req.app),
        req.quarantine.clone(),
        commit.to_string(),
        base.map(|b| b.dir.to_string()),
    );
    let (text, app_json) = tokio::task::spawn_blocking(move || {
        let Ok(r) = export::open(&repo, &q) else {
            return (None, None);
        };
        let top = |name| export::read_top_file(&r, &c, base.as_deref(), name);
        (top("magrathea.yml"), top("app.json"))
    })
    .await
    .unwrap_or_default();
    let config = text
        .and_then(|t| appconfig::parse(&String::from_utf8_lossy(&t)).ok())
        .unwrap_or_default();
    let target = crate::deploy::envs::for_ref(&config, &req.git_ref)
        .into_iter()
        .next()
        .unwrap_or_else(|| crate::deploy::envs::target(&config, "production"));
    let mut vars = target.vars.clone();
    vars.extend(host.config(&req.app, &target.env).unwrap_or_default());
    // Before an environment's first deploy, the build sees app.json's env as that deploy
    // will set it (Heroku's app setup sets it before the first build): its values, and for a
    // generated secret a value of the build's own (the deploy generates the one kept).
    let first = matches!(host.store().live(&req.app, &target.env), Ok(None));
    let declared = app_json
        .and_then(|t| crate::appjson::parse(&String::from_utf8_lossy(&t)).ok())
        .and_then(|a| a.env_vars().ok())
        .filter(|_| first)
        .unwrap_or_default();
    for v in declared {
        if vars.contains_key(&v.name) {
            continue;
        }
        if let Some(value) = v.value {
            vars.insert(v.name, value);
        } else if v.secret {
            vars.insert(v.name, hex::encode(crate::keys::random_bytes(32)));
        }
    }
    vars
}

/// Where a build of `commit` takes the app from (`builds:set`'s build dir, else the
/// `APP_BASE` config var), or why it cannot; fills in the config vars the build sees when
/// the request brings none.
async fn base_and_config<H: Host>(
    host: &Arc<H>,
    req: &mut BuildRequest,
    commit: &str,
) -> Result<Option<Base>, String> {
    let mut base = set_base(host, &req.app);
    let computed = req.config_vars.is_empty();
    if computed {
        let set = base.as_ref().ok().and_then(Option::as_ref);
        req.config_vars = build_config(host, req, commit, set).await;
    }
    if matches!(base, Ok(None)) {
        // APP_BASE of the environment the root's magrathea.yml (production without one)
        // maps the ref to; the app's own magrathea.yml then says which it deploys to.
        base = app_base(&req.config_vars);
        if let (Ok(Some(b)), true) = (&base, computed) {
            req.config_vars = build_config(host, req, commit, Some(b)).await;
        }
    }
    base
}

/// The directory of `commit` a build would take the app from (`None`: the root), so a
/// release cooked from the same commit is reused only when it came from the same place.
pub async fn build_dir_of<H: Host>(
    host: &Arc<H>,
    req: &BuildRequest,
    commit: &str,
) -> Result<Option<String>, String> {
    let mut req = req.clone();
    let base = base_and_config(host, &mut req, commit).await?;
    Ok(base.map(|b| b.dir.to_string()))
}

pub async fn build<H: Host>(
    host: &Arc<H>,
    mut req: BuildRequest,
    out: &mut Sink,
    cancel: CancellationToken,
) -> Result<ReleaseRow, BuildError> {
    let fail = |m: String| BuildError::Failed(m);
    let commit = resolve_commit(host, &req.app, &req.quarantine, &req.object).await?;
    let base = base_and_config(host, &mut req, &commit).await;
    let id = host
        .store()
        .create_build(&req.app, &commit, &req.git_ref, &req.key_name)
        .map_err(|e| fail(e.to_string()))?;
    let log_dir = host.data().logs().join("builds").join(&req.app);
    let _ = std::fs::create_dir_all(&log_dir);
    prune_build_logs(&log_dir, KEEP_BUILD_LOGS);
    out.log_to(std::fs::File::create(log_dir.join(format!("{id}.log"))).ok());
    // Tagged with the version this build will most likely get (builds of an app run one
    // at a time; a config change in between would take it).
    let version = host.store().next_release_version(&req.app).unwrap_or(0);
    let events = crate::eventlog::EventLog::open(&host.data().logs(), &req.app, "build", version)
        .mask(req.config_vars.values());
    let outer_events = out.set_tee(Some(Box::new(events)));

    let span = tracing::info_span!("build", build = id, app = %req.app);
    let result = run_queued(host, &req, &commit, &base, id, out, cancel)
        .instrument(span)
        .await;
    out.set_tee(outer_events);
    let (status, detail, version) = match &result {
        Ok(r) => ("succeeded", String::new(), Some(r.version)),
        Err(BuildError::Cancelled) => ("cancelled", "cancelled".to_string(), None),
        Err(BuildError::Failed(m)) => ("failed", m.clone(), None),
    };
    if let Err(e) = host.store().set_build_status(id, status, &detail, version) {
        tracing::error!(error = %e, "cannot record build status");
    }
    result
}

async fn run_queued<H: Host>(
    host: &Arc<H>,
    req: &BuildRequest,
    commit: &str,
    base: &Result<Option<Base>, String>,
    id: i64,
    out: &mut Sink,
    cancel: CancellationToken,
) -> Result<ReleaseRow, BuildError> {
    let ahead = host.waiting(&req.app);
    if ahead > 0 {
        out.line(format!(
            "-----> {} build(s) of {} ahead of this one; waiting",
            ahead, req.app
        ))
        .await;
    }
    let Some(_turn) = host.turn(&req.app, id, cancel.clone()).await else {
        return Err(BuildError::Cancelled);
    };
    let _ = host.store().set_build_status(id, "running", "", None);
    let dir = host.data().builds().join(id.to_string());
    let result = run::Build {
        host,
        req,
        commit,
        base,
        id,
        dir: &dir,
        out,
        cancel,
    }
    .run()
    .await;
    discard(&host.data().builds(), &dir).await;
    result
}

/// Removes a finished build's directory without making the push wait for it: a slug with a
/// virtualenv or node_modules is thousands of files, so the directory is renamed into
/// `builds/.trash` (one rename) and deleted there in the background, with anything an
/// earlier run left in the trash.
async fn discard(builds: &Path, dir: &Path) {
    let trash = builds.join(".trash");
    let to = trash.join(dir.file_name().unwrap_or_default());
    if tokio::fs::create_dir_all(&trash).await.is_err()
        || tokio::fs::rename(dir, &to).await.is_err()
    {
        let _ = tokio::fs::remove_dir_all(dir).await;
        return;
    }
    tokio::spawn(async move {
        let Ok(mut rd) = tokio::fs::read_dir(&trash).await else {
            return;
        };
        while let Ok(Some(e)) = rd.next_entry().await {
            let _ = tokio::fs::remove_dir_all(e.path()).await;
        }
    });
}

/// How much more than the slug limit `/app` may hold while it builds. The limit is Heroku's:
/// on the compressed slug at the end (`release::cook`); a build holds far more on the way
/// (devDependencies before they are pruned, uncompressed files: a fresh Next.js app is
/// 500 MB in /app mid-build and a fifth of that in the end), and this bound only keeps a
/// runaway build from filling the controller's disk.
pub(crate) const WORK_FACTOR: u64 = 4;

/// What a build may write: the slug, the app's build cache, the buildpacks' metadata.
fn build_bounds(
    limits: &BuildLimits,
    app: &str,
    src: &Path,
    cache: &Path,
    meta: &Path,
) -> Vec<Bound> {
    vec![
        Bound {
            what: "/app (the slug)",
            dir: src.to_path_buf(),
            limit: limits.max_slug.saturating_mul(WORK_FACTOR),
            hint: format!(
                " while it builds ({WORK_FACTOR}x the {} the compressed slug may be)",
                human(limits.max_slug)
            ),
        },
        Bound {
            what: "/cache (the build cache)",
            dir: cache.to_path_buf(),
            limit: limits.max_cache,
            hint: format!("; `builds:purge-cache {app}` empties it"),
        },
        Bound {
            what: "/meta (buildpack metadata)",
            dir: meta.to_path_buf(),
            limit: bounds::MAX_META,
            hint: String::new(),
        },
    ]
}

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.len();
            }
        }
    }
    total
}

/// Build logs kept per app; older ones go when a build starts.
const KEEP_BUILD_LOGS: usize = 50;

/// Removes all but the newest `keep - 1` build logs (`<id>.log`, by id) in `dir`, making room
/// for the one about to be written.
fn prune_build_logs(dir: &Path, keep: usize) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut ids: Vec<i64> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .collect();
    ids.sort_unstable();
    let over = (ids.len() + 1).saturating_sub(keep);
    for id in &ids[..over] {
        let _ = std::fs::remove_file(dir.join(format!("{id}.log")));
    }
}

/// Where buildpacks fetched by URL are kept, shared by every app (keyed by URL and ref).
pub fn buildpack_cache(data: &DataDir) -> PathBuf {
    data.root().join("buildpack-cache")
}

/// Present after `builds:purge-cache`: the app's next build fetches its URL buildpacks
/// again. Beside the cache dir, not in it: the cache is the buildpacks' own space.
fn refetch_marker(data: &DataDir, app: &str) -> PathBuf {
    data.root().join("cache").join(format!("{app}.refetch"))
}

/// `builds:purge-cache`: empty the app's build cache and have its next build fetch its
/// buildpacks again. Returns the bytes freed.
pub fn purge_cache(data: &DataDir, app: &str) -> std::io::Result<u64> {
    let cache = data.cache(app);
    std::fs::create_dir_all(cache.parent().unwrap_or(&cache))?;
    crate::fsutil::write_atomic(&refetch_marker(data, app), b"", 0o600)?;
    let freed = dir_size(&cache);
    // Out of the way in one rename (a build starting now gets an empty cache), then gone.
    let doomed = cache.with_file_name(format!(".purged-{app}-{}", crate::keys::random_hex(4)));
    match std::fs::rename(&cache, &doomed) {
        Ok(()) => crate::release::extract::remove_tree(&doomed)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(freed)
}

pub fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MB", bytes as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KB", bytes as f64 / 1024.0)
    }
}

#[cfg(test)]
mod log_tests {
    #[test]
    fn pruning_keeps_the_newest_build_logs() {
        let d = tempfile::tempdir().unwrap();
        for id in [3, 10, 2, 7, 1] {
            std::fs::write(d.path().join(format!("{id}.log")), "x").unwrap();
        }
        std::fs::write(d.path().join("notes.txt"), "x").unwrap();
        super::prune_build_logs(d.path(), 3);
        let mut left: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["10.log", "7.log", "notes.txt"]);
    }
}
