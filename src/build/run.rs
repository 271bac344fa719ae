//! One build as named phases on a context object: export (the pushed tree, its submodules,
//! magrathea.yml) -> stack image -> buildpacks (selected, fetched, staged, run in a fresh
//! container as the app's uid) -> process types (from the buildpacks' output, magrathea.yml
//! and the Procfile) -> cook (the release tarball, recorded). Each phase's duration is
//! logged at debug level.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    buildpack_cache, buildpacks, dir_size, fetch, human, refetch_marker, stacks, submodules,
    BuildError, BuildLimits, BuildRequest, Host,
};
use crate::appconfig::{self, AppConfig};
use crate::docker::{Docker, RunOutcome, RunSpec};
use crate::git::export;
use crate::release::Manifest;
use crate::safefs;
use crate::sink::Sink;
use crate::store::ReleaseRow;

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

fn fail(m: String) -> BuildError {
    BuildError::Failed(m)
}

/// One build of a pushed commit in its build dir.
pub(super) struct Build<'a, H: Host> {
    pub host: &'a Arc<H>,
    pub req: &'a BuildRequest,
    pub commit: &'a str,
    /// The app's subdirectory of the pushed tree (None: the root), or why it has none.
    pub base: &'a Result<Option<super::Base>, String>,
    pub id: i64,
    pub dir: &'a Path,
    pub out: &'a mut Sink,
    pub cancel: CancellationToken,
}

/// The stack a build runs on.
struct Stack {
    name: String,
    docker: Docker,
    /// The run image's id: recorded in the release, nodes run it.
    run_image: String,
    /// The image the buildpacks run in.
    build_image: String,
}

/// What the buildpacks and the app say runs.
struct ProcessTypes {
    buildpacks: Vec<String>,
    processes: BTreeMap<String, String>,
    release: Option<String>,
    config_defaults: BTreeMap<String, String>,
    addons: Vec<String>,
}

/// Logs a phase's duration (`MAGRATHEA_LOG=debug` shows every phase).
fn phase_done(phase: &str, since: Instant) {
    tracing::debug!(
        phase,
        ms = since.elapsed().as_millis() as u64,
        "build phase done"
    );
}

impl<H: Host> Build<'_, H> {
    fn src(&self) -> PathBuf {
        self.dir.join("src")
    }

    fn envd(&self) -> PathBuf {
        self.dir.join("env")
    }

    fn meta(&self) -> PathBuf {
        self.dir.join("meta")
    }

    /// Tells the pusher why the build failed, and passes the error on.
    async fn report(&mut self, e: BuildError) -> BuildError {
        self.out.line(format!(" !     {e}")).await;
        e
    }

    /// Every phase in order.
    pub(super) async fn run(mut self) -> Result<ReleaseRow, BuildError> {
        let limits = self.host.limits();
        let t = Instant::now();
        let (commit_time, config) = self.export(&limits).await?;
        phase_done("export", t);
        let t = Instant::now();
        let stack = self.stack_image(&config, &limits).await?;
        phase_done("stack image", t);
        let t = Instant::now();
        self.buildpacks(&config, &stack, &limits, commit_time)
            .await?;
        phase_done("buildpacks", t);
        let t = Instant::now();
        let types = self.process_types(&config).await?;
        phase_done("process types", t);
        let t = Instant::now();
        let cooked = self.cook(&config, stack, types, commit_time).await;
        phase_done("cook", t);
        cooked
    }

    /// Export: the pushed tree (and its submodules) into `src/`; the app's magrathea.yml.
    /// The commit time.
    async fn export(&mut self, limits: &BuildLimits) -> Result<(i64, AppConfig), BuildError> {
        let (src, commit) = (self.src(), self.commit);
        for d in [self.envd(), self.meta()] {
            std::fs::create_dir_all(d).map_err(|e| fail(format!("build dir: {e}")))?;
        }
        let base = match self.base {
            Ok(b) => b.clone(),
            Err(e) => return Err(self.report(fail(e.clone())).await),
        };
        if let Some(b) = &base {
            self.out
                .line(format!(
                    "-----> Building from subdirectory {}/ ({})",
                    b.dir, b.from
                ))
                .await;
        }
        let exported = {
            let (repo, q, c, src) = (
                self.host.data().repo(&self.req.app),
                self.req.quarantine.clone(),
                commit.to_string(),
                src.clone(),
            );
            let dir = base.as_ref().map(|b| b.dir.to_string());
            tokio::task::spawn_blocking(move || {
                export::open(&repo, &q)
                    .and_then(|r| export::export(&r, &q, &c, dir.as_deref(), &src))
            })
            .await
            .map_err(|e| fail(e.to_string()))?
        };
        let exported = match exported {
            Ok(x) => x,
            Err(e @ export::ExportError::NoBuildDir(..)) => {
                return Err(self.report(fail(e.to_string())).await)
            }
            Err(e) => {
                self.out
                    .line(format!(" !     cannot export {}: {e}", &commit[..7]))
                    .await;
                return Err(fail(e.to_string()));
            }
        };
        if !exported.submodules.is_empty() {
            self.submodules(exported.submodules.clone()).await?;
        }
        // The files the platform itself reads must be files of the repo, never links to
        // something on the server.
        for name in APP_FILES {
            if safefs::kind(&src, name).map_err(|e| fail(e.to_string()))? == safefs::Kind::Link {
                let m = format!(
                    "{name} is a symlink in the pushed tree; commit the file itself (the platform reads it, and never follows links)"
                );
                return Err(self.report(fail(m)).await);
            }
        }
        let mut config: AppConfig = match safefs::read_text(&src, "magrathea.yml", MAX_APP_FILE) {
            Ok(Some(t)) => match appconfig::parse(&t) {
                Ok(c) => c,
                Err(e) => return Err(self.report(fail(e)).await),
            },
            Ok(None) => AppConfig::default(),
            Err(e) => return Err(self.report(fail(e.to_string())).await),
        };
        // An app that names no stack builds where its language is (on Heroku and Dokku it
        // builds unchanged), not on a default stack without it.
        if config.stack.is_none() {
            let url = self
                .req
                .config_vars
                .get("BUILDPACK_URL")
                .map(String::as_str);
            let chosen =
                stacks::choose(config.buildpacks.as_ref(), url, &src, &limits.default_stack);
            if let Some((stack, why)) = chosen {
                self.out.line(format!("-----> {why}")).await;
                config.stack = Some(stack.to_string());
            }
        }
        let stack = config
            .stack
            .clone()
            .unwrap_or_else(|| limits.default_stack.clone());
        let short_ref = self
            .req
            .git_ref
            .rsplit('/')
            .next()
            .unwrap_or(&self.req.git_ref)
            .to_string();
        self.out
            .line(format!(
                "-----> Building {} {} ({short_ref}) on stack {stack}",
                self.req.app,
                &commit[..7]
            ))
            .await;
        Ok((exported.commit_time, config))
    }

    /// The pushed tree's submodules, fetched at their recorded commits, with progress as
    /// it happens (a large submodule takes a while).
    async fn submodules(&mut self, subs: Vec<export::Submodule>) -> Result<(), BuildError> {
        let sub_cache = self.host.data().root().join("submodule-cache");
        let src = self.src();
        let (stx, mut srx) = mpsc::unbounded_channel::<String>();
        let fetch = submodules::fetch_all(&sub_cache, &src, subs, move |l| {
            let _ = stx.send(l);
        });
        tokio::pin!(fetch);
        let fetched = loop {
            tokio::select! {
                r = &mut fetch => break r,
                Some(l) = srx.recv() => self.out.line(l).await,
                _ = self.cancel.cancelled() => return Err(BuildError::Cancelled),
            }
        };
        while let Ok(l) = srx.try_recv() {
            self.out.line(l).await;
        }
        match fetched {
            Ok(_) => Ok(()),
            Err(e) => Err(self.report(fail(e)).await),
        }
    }

    /// Stack image: a stack is a run image (`-run`, recorded in the release: nodes run it)
    /// and, as on Heroku, a larger build image (`-build`) with compilers and headers. A
    /// stack with one image (the tiny stack) has only `magrathea/stack-NAME`, which is also
    /// the fallback for either (scripts/lib/stack.sh keeps it as an alias of the build image
    /// for the Debian stacks, bookworm and trixie).
    async fn stack_image(
        &mut self,
        config: &AppConfig,
        limits: &BuildLimits,
    ) -> Result<Stack, BuildError> {
        let stack = config
            .stack
            .clone()
            .unwrap_or_else(|| limits.default_stack.clone());
        let docker = match Docker::connect().await {
            Ok(d) => d,
            Err(e) => return Err(self.report(fail(e.to_string())).await),
        };
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
                    return Err(self.report(fail(m)).await);
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
        Ok(Stack {
            name: stack,
            docker,
            run_image: image_id,
            build_image: image,
        })
    }

    /// The buildpacks to run: selected (magrathea.yml, `BUILDPACK_URL`, `.buildpacks`, or
    /// detection), URL ones from the cache or fetched now (again after
    /// `builds:purge-cache`), all staged into the build dir. Whether to detect, and the
    /// staged buildpacks' names.
    async fn stage_buildpacks(
        &mut self,
        config: &AppConfig,
    ) -> Result<(bool, Vec<String>), BuildError> {
        let (host, req) = (self.host, self.req);
        let selected = match buildpacks::select(
            config.buildpacks.as_ref(),
            req.config_vars.get("BUILDPACK_URL").map(String::as_str),
            &self.src(),
        ) {
            Ok(s) => s,
            Err(e) => return Err(self.report(fail(e)).await),
        };
        // Heroku's own buildpacks, named by the app, run as the builtins that stand in for them.
        let named = buildpacks::named(
            config.buildpacks.as_ref(),
            req.config_vars.get("BUILDPACK_URL").map(String::as_str),
            &self.src(),
        )
        .ok()
        .flatten();
        for spec in named.iter().flatten() {
            if let Some(b) = buildpacks::standin(spec).filter(|b| *b != spec.trim()) {
                let shown: String = spec.chars().filter(|c| !c.is_control()).take(200).collect();
                self.out
                    .line(format!(
                        "-----> {shown}: using the builtin {b} buildpack in its place (Heroku's own buildpacks are made for Heroku's stacks)"
                    ))
                    .await;
            }
        }
        let detect = selected.is_none();
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
            self.out
                .line(format!("-----> Fetching buildpack {}", r.spec))
                .await;
            let bp_cache = buildpack_cache(host.data());
            let got = tokio::select! {
                g = fetch::fetch(&bp_cache, r, refresh) => g,
                _ = self.cancel.cancelled() => return Err(BuildError::Cancelled),
            };
            match got {
                Ok((tree, what)) => {
                    self.out.line(format!("       {what}")).await;
                    fetched.insert(r.key(), tree);
                }
                Err(e) => return Err(self.report(fail(e.to_string())).await),
            }
        }
        if refresh {
            let _ = std::fs::remove_file(&refetch);
        }
        let staged = {
            let (installed, stage) = (host.data().buildpacks(), self.dir.join("buildpacks"));
            let list = selected.clone();
            tokio::task::spawn_blocking(move || {
                buildpacks::stage(&installed, &stage, list.as_deref(), &fetched)
            })
            .await
            .map_err(|e| fail(e.to_string()))?
        };
        match staged {
            Ok(b) => Ok((detect, b)),
            Err(e) => {
                let m = format!("cannot stage the buildpacks: {e}");
                Err(self.report(fail(m)).await)
            }
        }
    }

    /// Buildpacks: staged (see [`Self::stage_buildpacks`]), then run in a fresh container
    /// from the stack's build image, as the app's uid, on the app's build network, within
    /// the server's limits; the slug must stay under its cap.
    async fn buildpacks(
        &mut self,
        config: &AppConfig,
        stack: &Stack,
        limits: &BuildLimits,
        commit_time: i64,
    ) -> Result<(), BuildError> {
        let (detect, bps) = self.stage_buildpacks(config).await?;
        let (host, req, id, commit) = (self.host, self.req, self.id, self.commit);
        let (src, envd, meta) = (self.src(), self.envd(), self.meta());
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
        let uid = host.app_uid(&req.app)?;
        let stage = self.dir.join("buildpacks");
        crate::isolation::give_build_dirs(&[&src, &envd, &meta, &stage], &cache, uid)
            .map_err(|e| fail(format!("build dirs: {e}")))?;
        let p = |x: &Path| x.display().to_string();
        let mut mounts = vec![
            (p(&src), buildpacks::APP_DIR.to_string(), false),
            (p(&cache), "/cache".to_string(), false),
            (p(&envd), "/env".to_string(), true),
            (p(&meta), "/meta".to_string(), false),
            (p(&stage), buildpacks::STAGE_DIR.to_string(), false),
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
        let network = crate::isolation::build_network(
            stack.docker.raw(),
            host.instance(),
            uid,
            &limits.network,
        )
        .await;
        let network = match network {
            Ok(n) => n,
            Err(e) => return Err(self.report(fail(e.to_string())).await),
        };
        let spec = RunSpec {
            name: format!("magrathea-{}-build-{}-{id}", host.instance(), req.app),
            image: stack.build_image.clone(),
            cmd,
            // Heroku's build environment: STACK, SOURCE_VERSION (the commit), HOME (the app
            // dir). GIT_REV as Dokku sets it; SOURCE_DATE_EPOCH for reproducible tools.
            env: vec![
                format!("STACK={}", stack.name),
                format!("SOURCE_VERSION={commit}"),
                format!("HOME={}", buildpacks::APP_DIR),
                format!("SOURCE_DATE_EPOCH={commit_time}"),
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
        let bounds = super::build_bounds(limits, &req.app, &src, &cache, &meta);
        self.run_container(&stack.docker, spec, detect, limits, bounds)
            .await?;
        let size = dir_size(&src);
        let most = limits.max_slug.saturating_mul(super::WORK_FACTOR);
        if size > most {
            let m = format!(
                "/app (the slug) is {}, over the {} limit while it builds",
                human(size),
                human(most)
            );
            return Err(self.report(fail(m)).await);
        }
        Ok(())
    }

    /// Runs the build container to its end, its output streamed to the pusher; how it
    /// ended, in the pusher's words.
    async fn run_container(
        &mut self,
        docker: &Docker,
        spec: RunSpec,
        detect: bool,
        limits: &BuildLimits,
        bounds: Vec<super::bounds::Bound>,
    ) -> Result<(), BuildError> {
        // Stopped early when /app, /cache or /meta grow past their bounds.
        let over = self.cancel.child_token();
        let watch = tokio::spawn(super::bounds::watch(bounds, over.clone()));
        let (ltx, mut lrx) = mpsc::channel::<String>(256);
        let run = docker.run(spec, ltx, over.clone(), limits.timeout);
        tokio::pin!(run);
        let outcome = loop {
            tokio::select! {
                r = &mut run => break r,
                Some(l) = lrx.recv() => {
                    crate::failpoint::hit("build");
                    self.out.line(l).await
                }
            }
        };
        while let Ok(l) = lrx.try_recv() {
            self.out.line(l).await;
        }
        over.cancel();
        if let Some(m) = watch.await.ok().flatten() {
            return Err(self.report(fail(m)).await);
        }
        match outcome {
            Ok(RunOutcome::Exited(0)) => Ok(()),
            Ok(RunOutcome::Exited(3)) if detect => Err(fail("no buildpack matched".into())),
            Ok(RunOutcome::Exited(5)) if !detect => {
                Err(fail("app not compatible with a buildpack".into()))
            }
            Ok(RunOutcome::Exited(c)) => {
                Err(self.report(fail(format!("build failed (exit {c})"))).await)
            }
            Ok(RunOutcome::OomKilled) => {
                let m = format!(
                    "build ran out of memory (limit {})",
                    human(limits.memory as u64)
                );
                Err(self.report(fail(m)).await)
            }
            Ok(RunOutcome::TimedOut) => {
                let m = format!(
                    "build timed out after {}s (limit)",
                    limits.timeout.as_secs()
                );
                Err(self.report(fail(m)).await)
            }
            Ok(RunOutcome::Cancelled) => Err(self.report(BuildError::Cancelled).await),
            Err(e) => Err(self.report(fail(e.to_string())).await),
        }
    }

    /// The buildpacks' `bin/release` output (read as hostile: the build container wrote
    /// it): their names, default process types, config_vars (defaults of the release, a
    /// later buildpack's win) and addons (recorded, never provisioned).
    async fn buildpack_output(&mut self) -> Result<ProcessTypes, BuildError> {
        let meta = self.meta();
        let hostile = |e: safefs::HostileFile| fail(format!("build output: {e}"));
        let names: Vec<String> = match safefs::read_text(&meta, "buildpacks", MAX_META_FILE) {
            Ok(t) => t.unwrap_or_default().lines().map(String::from).collect(),
            Err(e) => return Err(self.report(hostile(e)).await),
        };
        let mut types = ProcessTypes {
            buildpacks: vec![],
            processes: BTreeMap::new(),
            release: None,
            config_defaults: BTreeMap::new(),
            addons: vec![],
        };
        for i in 1..=names.len().max(1) {
            let t = match safefs::read_text(&meta, &format!("release-{i}.yml"), MAX_META_FILE) {
                Ok(t) => t,
                Err(e) => return Err(self.report(hostile(e)).await),
            };
            if let Some(t) = t {
                match appconfig::parse_release(&t) {
                    Ok(r) => {
                        types.config_defaults.extend(r.config_vars());
                        types.addons.extend(r.addons());
                        types
                            .processes
                            .extend(r.default_process_types.unwrap_or_default());
                    }
                    Err(e) => return Err(self.report(fail(e)).await),
                }
            }
        }
        types.buildpacks = names;
        types
            .config_defaults
            .retain(|k, _| buildpacks::is_env_name(k));
        Ok(types)
    }

    /// Process types: buildpack defaults, then magrathea.yml, then the Procfile (whose
    /// `release` is the release command).
    async fn process_types(&mut self, config: &AppConfig) -> Result<ProcessTypes, BuildError> {
        let mut types = self.buildpack_output().await?;
        let src = self.src();
        if !types.config_defaults.is_empty() {
            let names: Vec<&str> = types.config_defaults.keys().map(String::as_str).collect();
            self.out
                .line(format!(
                    "-----> Default config vars from buildpacks: {}",
                    names.join(", ")
                ))
                .await;
            if let Err(e) = buildpacks::write_config_defaults(&src, &types.config_defaults) {
                let m = format!("cannot apply the buildpacks' config_vars: {e}");
                return Err(self.report(fail(m)).await);
            }
        }
        if !types.addons.is_empty() {
            self.out
                .line(format!(
                    "-----> Add-ons asked for by buildpacks (recorded, not provisioned): {}",
                    types.addons.join(", ")
                ))
                .await;
        }
        if let Some(p) = &config.processes {
            types.processes.extend(p.clone());
        }
        types.release = config.release.clone();
        let procfile = match safefs::read_text(&src, "Procfile", MAX_APP_FILE) {
            Ok(t) => t,
            Err(e) => {
                let e = fail(format!("build output: {e}"));
                return Err(self.report(e).await);
            }
        };
        if let Some(t) = procfile {
            match appconfig::parse_procfile(&t) {
                Ok(mut p) => {
                    if let Some(r) = p.remove("release") {
                        types.release = Some(r);
                    }
                    types.processes.extend(p);
                }
                Err(e) => return Err(self.report(fail(e)).await),
            }
        }
        if types.processes.is_empty() {
            self.out.line(" !     no process types: add a Procfile (e.g. 'web: ./server') or 'processes:' in magrathea.yml").await;
            return Err(fail("no process types".into()));
        }
        let names: Vec<&str> = types.processes.keys().map(String::as_str).collect();
        self.out
            .line(format!("-----> Process types: {}", names.join(", ")))
            .await;
        Ok(types)
    }

    /// Cook: the slug and its manifest into a release tarball, recorded as the app's next
    /// version; old releases pruned.
    async fn cook(
        &mut self,
        config: &AppConfig,
        stack: Stack,
        types: ProcessTypes,
        commit_time: i64,
    ) -> Result<ReleaseRow, BuildError> {
        let (host, req) = (self.host, self.req);
        let manifest = Manifest {
            app: req.app.clone(),
            git_sha: self.commit.to_string(),
            stack: stack.name,
            stack_image: stack.run_image,
            buildpacks: types.buildpacks,
            processes: types.processes,
            release: types.release,
            config_vars: types.config_defaults,
            addons: types.addons,
            build_dir: self
                .base
                .as_ref()
                .ok()
                .and_then(Option::as_ref)
                .map(|b| b.dir.to_string()),
        };
        if self.out.closed() || self.cancel.is_cancelled() {
            return Err(BuildError::Cancelled);
        }
        self.out.line("-----> Compressing...").await;
        let cooked = crate::release::cook(
            host.data(),
            host.store(),
            &manifest,
            &self.src(),
            commit_time,
            host.limits().max_slug,
            &crate::release::Origin {
                git_ref: &req.git_ref,
                build_id: Some(self.id),
                key_name: &req.key_name,
            },
        )
        .await;
        let cooked = match cooked {
            Ok(c) => c,
            Err(e) => {
                // Entries the release may not hold are the app's to fix; anything else
                // (disk, I/O) names server paths, so it stays in the server log.
                let shown = match e.downcast_ref::<crate::release::ReleaseError>() {
                    Some(
                        r @ (crate::release::ReleaseError::BadEntry { .. }
                        | crate::release::ReleaseError::TooLarge { .. }),
                    ) => r.to_string(),
                    _ => {
                        tracing::error!(app = %req.app, error = %e, "cannot cook the release");
                        "cannot pack the release (server error; see the server log)".to_string()
                    }
                };
                return Err(self.report(fail(shown)).await);
            }
        };
        self.out
            .line(format!(
                "       done, {} (sha256 {})",
                human(cooked.size as u64),
                &cooked.sha256[..12]
            ))
            .await;
        self.out
            .line(format!(
                "-----> Released v{} of {}",
                cooked.version, req.app
            ))
            .await;
        let keep = config.keep_releases.unwrap_or(10).max(1) as usize;
        crate::release::prune(host.data(), host.store(), &req.app, keep);
        Ok(cooked)
    }
}
