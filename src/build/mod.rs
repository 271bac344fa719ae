//! Builds: export the pushed commit, run the buildpacks in a fresh container from the stack
//! image, and hand the slug to `release::cook`. Builds never write refs.

pub mod buildpacks;
pub mod fetch;
pub mod submodules;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::appconfig::{self, AppConfig};
use crate::docker::{Docker, RunOutcome, RunSpec};
use crate::git::export::{self, Quarantine};
use crate::paths::DataDir;
use crate::safefs;
use crate::sink::Sink;
use crate::store::ReleaseRow;
use crate::store::Store;

/// What a build is allowed (`magrathea serve --build-*`).
#[derive(Debug, Clone)]
pub struct BuildLimits {
    pub timeout: Duration,
    pub memory: i64,
    pub max_slug: u64,
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
    fn app_uid(&self, app: &str) -> Result<u32, String>;
    /// An environment's config vars, decrypted.
    fn config(&self, app: &str, env: &str) -> Result<BTreeMap<String, String>, String>;
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

/// The config vars a build of `commit` sees in `ENV_DIR`: those of the environment the ref
/// deploys to (the first, by the commit's own magrathea.yml; production when none), over
/// that environment's `env:` in magrathea.yml.
async fn build_config<H: Host>(
    host: &Arc<H>,
    req: &BuildRequest,
    commit: &str,
) -> BTreeMap<String, String> {
    let (repo, q, c) = (
        host.data().repo(&req.app),
        req.quarantine.clone(),
        commit.to_string(),
    );
    let text = tokio::task::spawn_blocking(move || {
        let r = export::open(&repo, &q).ok()?;
        export::read_top_file(&r, &c, "magrathea.yml")
    })
    .await
    .ok()
    .flatten();
    let config = text
        .and_then(|t| appconfig::parse(&String::from_utf8_lossy(&t)).ok())
        .unwrap_or_default();
    let target = crate::deploy::envs::for_ref(&config, &req.git_ref)
        .into_iter()
        .next()
        .unwrap_or_else(|| crate::deploy::envs::target(&config, "production"));
    let mut vars = target.vars.clone();
    vars.extend(host.config(&req.app, &target.env).unwrap_or_default());
    vars
}

pub async fn build<H: Host>(
    host: &Arc<H>,
    mut req: BuildRequest,
    out: &mut Sink,
    cancel: CancellationToken,
) -> Result<ReleaseRow, BuildError> {
    let fail = |m: String| BuildError::Failed(m);
    let commit = resolve_commit(host, &req.app, &req.quarantine, &req.object).await?;
    if req.config_vars.is_empty() {
        req.config_vars = build_config(host, &req, &commit).await;
    }
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

    let result = run_queued(host, &req, &commit, id, out, cancel).await;
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
    let result = run(host, req, commit, id, &dir, out, cancel).await;
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

/// The files of a pushed tree that the platform reads (not only the buildpacks).
const APP_FILES: [&str; 5] = [
    "Procfile",
    "magrathea.yml",
    ".buildpacks",
    "app.json",
    ".env",
];

/// Caps on the files the controller reads from a push or a build's output.
const MAX_APP_FILE: u64 = 256 << 10;
const MAX_META_FILE: u64 = 1 << 20;

/// Tells the pusher why the build failed, and passes the error on.
async fn report(out: &mut Sink, e: BuildError) -> BuildError {
    out.line(format!(" !     {e}")).await;
    e
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

async fn run<H: Host>(
    host: &Arc<H>,
    req: &BuildRequest,
    commit: &str,
    id: i64,
    dir: &Path,
    out: &mut Sink,
    cancel: CancellationToken,
) -> Result<ReleaseRow, BuildError> {
    let fail = |m: String| BuildError::Failed(m);
    let limits = host.limits();
    let short_ref = req
        .git_ref
        .rsplit('/')
        .next()
        .unwrap_or(&req.git_ref)
        .to_string();
    let src = dir.join("src");
    let (envd, meta) = (dir.join("env"), dir.join("meta"));
    for d in [&envd, &meta] {
        std::fs::create_dir_all(d).map_err(|e| fail(format!("build dir: {e}")))?;
    }
    let exported = {
        let (repo, q, c, src) = (
            host.data().repo(&req.app),
            req.quarantine.clone(),
            commit.to_string(),
            src.clone(),
        );
        tokio::task::spawn_blocking(move || {
            export::open(&repo, &q).and_then(|r| export::export(&r, &c, &src))
        })
        .await
        .map_err(|e| fail(e.to_string()))?
    };
    let exported = match exported {
        Ok(x) => x,
        Err(e) => {
            out.line(format!(" !     cannot export {}: {e}", &commit[..7]))
                .await;
            return Err(fail(e.to_string()));
        }
    };
    if !exported.submodules.is_empty() {
        let subs = exported.submodules.clone();
        let sub_cache = host.data().root().join("submodule-cache");
        // Progress as it happens: a large submodule takes a while.
        let (stx, mut srx) = mpsc::unbounded_channel::<String>();
        let fetch = submodules::fetch_all(&sub_cache, &src, subs, move |l| {
            let _ = stx.send(l);
        });
        tokio::pin!(fetch);
        let fetched = loop {
            tokio::select! {
                r = &mut fetch => break r,
                Some(l) = srx.recv() => out.line(l).await,
                _ = cancel.cancelled() => return Err(BuildError::Cancelled),
            }
        };
        while let Ok(l) = srx.try_recv() {
            out.line(l).await;
        }
        if let Err(e) = fetched {
            out.line(format!(" !     {e}")).await;
            return Err(fail(e));
        }
    }
    // The files the platform itself reads must be files of the repo, never links to
    // something on the server.
    for name in APP_FILES {
        if safefs::kind(&src, name).map_err(|e| fail(e.to_string()))? == safefs::Kind::Link {
            let m = format!(
                "{name} is a symlink in the pushed tree; commit the file itself (the platform reads it, and never follows links)"
            );
            out.line(format!(" !     {m}")).await;
            return Err(fail(m));
        }
    }
    let config: AppConfig = match safefs::read_text(&src, "magrathea.yml", MAX_APP_FILE) {
        Ok(Some(t)) => match appconfig::parse(&t) {
            Ok(c) => c,
            Err(e) => {
                out.line(format!(" !     {e}")).await;
                return Err(fail(e));
            }
        },
        Ok(None) => AppConfig::default(),
        Err(e) => {
            out.line(format!(" !     {e}")).await;
            return Err(fail(e.to_string()));
        }
    };
    let stack = config
        .stack
        .clone()
        .unwrap_or_else(|| limits.default_stack.clone());
    out.line(format!(
        "-----> Building {} {} ({short_ref}) on stack {stack}",
        req.app,
        &commit[..7]
    ))
    .await;

    let docker = match Docker::connect().await {
        Ok(d) => d,
        Err(e) => {
            out.line(format!(" !     {e}")).await;
            return Err(fail(e.to_string()));
        }
    };
    // A stack is a run image (`-run`, recorded in the release: nodes run it) and, as on
    // Heroku, a larger build image (`-build`) with compilers and headers. A stack with one
    // image (the tiny stack) has only `magrathea/stack-NAME`, which is also the fallback for
    // either (scripts/stack-bookworm.sh keeps it as an alias of the build image).
    let plain = format!("magrathea/stack-{stack}:latest");
    let run_image = format!("magrathea/stack-{stack}-run:latest");
    let image_id = match docker.image_id(&run_image).await {
        Ok(Some(i)) => Some(i),
        Ok(None) => None,
        Err(e) => return Err(fail(e.to_string())),
    };
    let image_id = match image_id {
        Some(i) => i,
        None => match docker.image_id(&plain).await {
            Ok(Some(i)) => i,
            Ok(None) => {
                let m = format!(
                    "stack image {plain} not found; build it with scripts/stack-{stack}.sh"
                );
                out.line(format!(" !     {m}")).await;
                return Err(fail(m));
            }
            Err(e) => return Err(fail(e.to_string())),
        },
    };
    let build_image = format!("magrathea/stack-{stack}-build:latest");
    let image = match docker.image_id(&build_image).await {
        Ok(Some(i)) => i,
        Ok(None) => image_id.clone(),
        Err(e) => return Err(fail(e.to_string())),
    };
    let selected = match buildpacks::select(
        config.buildpacks.as_ref(),
        req.config_vars.get("BUILDPACK_URL").map(String::as_str),
        &src,
    ) {
        Ok(s) => s,
        Err(e) => {
            out.line(format!(" !     {e}")).await;
            return Err(fail(e));
        }
    };
    let detect = selected.is_none();
    // Buildpacks by URL: from the cache, or fetched now (again after builds:purge-cache).
    let refetch = refetch_marker(host.data(), &req.app);
    let refresh = refetch.exists();
    let mut fetched = std::collections::HashMap::new();
    for bp in selected.iter().flatten() {
        let buildpacks::Buildpack::Url(r) = bp else {
            continue;
        };
        if fetched.contains_key(&r.key()) {
            continue;
        }
        out.line(format!("-----> Fetching buildpack {}", r.spec))
            .await;
        let bp_cache = buildpack_cache(host.data());
        let got = tokio::select! {
            g = fetch::fetch(&bp_cache, r, refresh) => g,
            _ = cancel.cancelled() => return Err(BuildError::Cancelled),
        };
        match got {
            Ok((tree, what)) => {
                out.line(format!("       {what}")).await;
                fetched.insert(r.key(), tree);
            }
            Err(e) => {
                out.line(format!(" !     {e}")).await;
                return Err(fail(e.to_string()));
            }
        }
    }
    if refresh {
        let _ = std::fs::remove_file(&refetch);
    }
    let staged = {
        let (installed, stage) = (host.data().buildpacks(), dir.join("buildpacks"));
        let list = selected.clone();
        tokio::task::spawn_blocking(move || {
            buildpacks::stage(&installed, &stage, list.as_deref(), &fetched)
        })
        .await
        .map_err(|e| fail(e.to_string()))?
    };
    let bps = match staged {
        Ok(b) => b,
        Err(e) => {
            let m = format!("cannot stage the buildpacks: {e}");
            out.line(format!(" !     {m}")).await;
            return Err(fail(m));
        }
    };
    // ENV_DIR: one file per config var (names are checked at config:set; a file name
    // must not be anything but a plain variable name all the same).
    for (k, v) in req
        .config_vars
        .iter()
        .filter(|(k, _)| buildpacks::is_env_name(k))
    {
        let _ = crate::fsutil::write_atomic(&envd.join(k), v.as_bytes(), 0o600);
    }
    let cache = host.data().cache(&req.app);
    // The build runs as the app's uid: its dirs are given to it.
    let uid = host.app_uid(&req.app).map_err(fail)?;
    let stage = dir.join("buildpacks");
    crate::isolation::give_build_dirs(&[&src, &envd, &meta, &stage], &cache, uid)
        .map_err(|e| fail(format!("build dirs: {e}")))?;
    let p = |x: &Path| x.display().to_string();
    let mut mounts = vec![
        (p(&src), buildpacks::APP_DIR.to_string(), false),
        (p(&cache), "/cache".to_string(), false),
        (p(&envd), "/env".to_string(), true),
        (p(&meta), "/meta".to_string(), false),
        (
            p(&dir.join("buildpacks")),
            buildpacks::STAGE_DIR.to_string(),
            false,
        ),
    ];
    // Builds fetch from package indexes over TLS: give them the host's CA bundle.
    let ca = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if ca.exists() {
        mounts.push((p(ca), "/etc/ssl/certs/ca-certificates.crt".into(), true));
    }
    let mut cmd = vec![
        "/bin/sh".into(),
        format!("{}/.driver.sh", buildpacks::STAGE_DIR),
        if detect { "detect" } else { "list" }.into(),
        buildpacks::APP_DIR.into(),
        "/cache".into(),
        "/env".into(),
        "/meta".into(),
    ];
    cmd.extend(bps);
    let network =
        crate::isolation::build_network(docker.raw(), host.instance(), uid, &limits.network).await;
    let network = match network {
        Ok(n) => n,
        Err(e) => {
            out.line(format!(" !     {e}")).await;
            return Err(fail(e.to_string()));
        }
    };
    let spec = RunSpec {
        name: format!("magrathea-{}-build-{}-{id}", host.instance(), req.app),
        image: image.clone(),
        cmd,
        // Heroku's build environment: STACK, SOURCE_VERSION (the commit), HOME (the app
        // dir). GIT_REV as Dokku sets it; SOURCE_DATE_EPOCH for reproducible tools.
        env: vec![
            format!("STACK={stack}"),
            format!("SOURCE_VERSION={commit}"),
            format!("HOME={}", buildpacks::APP_DIR),
            format!("SOURCE_DATE_EPOCH={}", exported.commit_time),
            format!("GIT_REV={commit}"),
        ],
        mounts,
        network,
        memory: Some(limits.memory),
        labels: vec![
            ("magrathea.app".into(), req.app.clone()),
            ("magrathea.build".into(), id.to_string()),
            // Which controller's build it is, when several share one engine.
            ("magrathea.instance".into(), host.instance().to_string()),
        ],
        uid,
        pids: crate::isolation::BUILD_PIDS,
        workdir: Some(buildpacks::APP_DIR.into()),
    };
    let (ltx, mut lrx) = mpsc::channel::<String>(256);
    let run = docker.run(spec, ltx, cancel.clone(), limits.timeout);
    tokio::pin!(run);
    let outcome = loop {
        tokio::select! {
            r = &mut run => break r,
            Some(l) = lrx.recv() => { crate::failpoint::hit("build"); out.line(l).await }
        }
    };
    while let Ok(l) = lrx.try_recv() {
        out.line(l).await;
    }
    match outcome {
        Ok(RunOutcome::Exited(0)) => {}
        Ok(RunOutcome::Exited(3)) if detect => return Err(fail("no buildpack matched".into())),
        Ok(RunOutcome::Exited(5)) if !detect => {
            return Err(fail("app not compatible with a buildpack".into()))
        }
        Ok(RunOutcome::Exited(c)) => {
            out.line(format!(" !     build failed (exit {c})")).await;
            return Err(fail(format!("build failed (exit {c})")));
        }
        Ok(RunOutcome::OomKilled) => {
            let m = format!(
                "build ran out of memory (limit {})",
                human(limits.memory as u64)
            );
            out.line(format!(" !     {m}")).await;
            return Err(fail(m));
        }
        Ok(RunOutcome::TimedOut) => {
            let m = format!(
                "build timed out after {}s (limit)",
                limits.timeout.as_secs()
            );
            out.line(format!(" !     {m}")).await;
            return Err(fail(m));
        }
        Ok(RunOutcome::Cancelled) => {
            out.line(" !     build cancelled").await;
            return Err(BuildError::Cancelled);
        }
        Err(e) => {
            out.line(format!(" !     {e}")).await;
            return Err(fail(e.to_string()));
        }
    }
    let size = dir_size(&src);
    if size > limits.max_slug {
        let m = format!(
            "slug is {}, over the {} limit",
            human(size),
            human(limits.max_slug)
        );
        out.line(format!(" !     {m}")).await;
        return Err(fail(m));
    }

    // Process types: buildpack defaults, then magrathea.yml, then the Procfile.
    let mut processes = BTreeMap::new();
    // Everything below was written by the build container: read it as hostile.
    let hostile = |e: safefs::HostileFile| fail(format!("build output: {e}"));
    let buildpack_names: Vec<String> = match safefs::read_text(&meta, "buildpacks", MAX_META_FILE) {
        Ok(t) => t.unwrap_or_default().lines().map(String::from).collect(),
        Err(e) => return Err(report(out, hostile(e)).await),
    };
    // bin/release's config_vars become defaults of the release (a later buildpack's win);
    // addons are recorded, never provisioned.
    let mut config_defaults = BTreeMap::new();
    let mut addons = vec![];
    for i in 1..=buildpack_names.len().max(1) {
        let t = match safefs::read_text(&meta, &format!("release-{i}.yml"), MAX_META_FILE) {
            Ok(t) => t,
            Err(e) => return Err(report(out, hostile(e)).await),
        };
        if let Some(t) = t {
            match appconfig::parse_release(&t) {
                Ok(r) => {
                    config_defaults.extend(r.config_vars());
                    addons.extend(r.addons());
                    processes.extend(r.default_process_types.unwrap_or_default());
                }
                Err(e) => {
                    out.line(format!(" !     {e}")).await;
                    return Err(fail(e));
                }
            }
        }
    }
    config_defaults.retain(|k, _| buildpacks::is_env_name(k));
    if !config_defaults.is_empty() {
        out.line(format!(
            "-----> Default config vars from buildpacks: {}",
            config_defaults
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .await;
        if let Err(e) = buildpacks::write_config_defaults(&src, &config_defaults) {
            let m = format!("cannot apply the buildpacks' config_vars: {e}");
            out.line(format!(" !     {m}")).await;
            return Err(fail(m));
        }
    }
    if !addons.is_empty() {
        out.line(format!(
            "-----> Add-ons asked for by buildpacks (recorded, not provisioned): {}",
            addons.join(", ")
        ))
        .await;
    }
    if let Some(p) = &config.processes {
        processes.extend(p.clone());
    }
    let mut release_cmd = config.release.clone();
    let procfile = match safefs::read_text(&src, "Procfile", MAX_APP_FILE) {
        Ok(t) => t,
        Err(e) => return Err(report(out, hostile(e)).await),
    };
    if let Some(t) = procfile {
        match appconfig::parse_procfile(&t) {
            Ok(mut p) => {
                if let Some(r) = p.remove("release") {
                    release_cmd = Some(r);
                }
                processes.extend(p);
            }
            Err(e) => {
                out.line(format!(" !     {e}")).await;
                return Err(fail(e));
            }
        }
    }
    if processes.is_empty() {
        out.line(" !     no process types: add a Procfile (e.g. 'web: ./server') or 'processes:' in magrathea.yml").await;
        return Err(fail("no process types".into()));
    }
    let names: Vec<&String> = processes.keys().collect();
    out.line(format!(
        "-----> Process types: {}",
        names
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .await;

    let manifest = crate::release::Manifest {
        app: req.app.clone(),
        git_sha: commit.to_string(),
        stack,
        stack_image: image_id,
        buildpacks: buildpack_names,
        processes,
        release: release_cmd,
        config_vars: config_defaults,
        addons,
    };
    if out.closed() || cancel.is_cancelled() {
        return Err(BuildError::Cancelled);
    }
    out.line("-----> Compressing...").await;
    let cooked = crate::release::cook(
        host.data(),
        host.store(),
        &manifest,
        &src,
        exported.commit_time,
        &crate::release::Origin {
            git_ref: &req.git_ref,
            build_id: Some(id),
            key_name: &req.key_name,
        },
    )
    .await;
    let cooked = match cooked {
        Ok(c) => c,
        Err(e) => {
            // Entries the release may not hold are the app's to fix; anything else (disk,
            // I/O) names server paths, so it stays in the server log.
            let shown = match e.downcast_ref::<crate::release::ReleaseError>() {
                Some(r @ crate::release::ReleaseError::BadEntry { .. }) => r.to_string(),
                _ => {
                    tracing::error!(app = %req.app, error = %e, "cannot cook the release");
                    "cannot pack the release (server error; see the server log)".to_string()
                }
            };
            return Err(report(out, fail(shown)).await);
        }
    };
    out.line(format!(
        "       done, {} (sha256 {})",
        human(cooked.size as u64),
        &cooked.sha256[..12]
    ))
    .await;
    out.line(format!(
        "-----> Released v{} of {}",
        cooked.version, req.app
    ))
    .await;
    let keep = config.keep_releases.unwrap_or(10).max(1) as usize;
    crate::release::prune(host.data(), host.store(), &req.app, keep);
    let _ = PathBuf::new();
    Ok(cooked)
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
