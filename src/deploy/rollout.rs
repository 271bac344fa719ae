//! One rollout as named phases on a context object:
//!
//! plan (what runs where) -> release phase (every place receives the release, then app.json
//! predeploy and the release command run once) -> prepare (new processes beside the old
//! ones everywhere, health-checked) -> switch (everywhere) -> go live (one store
//! transaction, then the router moves) -> postdeploy -> retire (old processes drain and
//! stop, old releases are collected).
//!
//! A failure before the switch aborts everywhere (old processes were never touched); a
//! failure during the switch, or when going live cannot be recorded, switches the switched
//! places back.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::OwnedMutexGuard;

use super::backend::{abort_all, backend_for, fan_out, gc_places, Backend, Delivery, Place};
use super::envs::{self, EnvTarget};
use super::plan::{formation, place, Count, Placement};
use super::{node_app, route_key, DeployError, Host, RolloutOptions};
use crate::appjson::AppJson;
use crate::node::proto::*;
use crate::release::Manifest;
use crate::sink::Sink;
use crate::store::{GoLive, LiveRow, ReleaseRow};

type Prepared = Vec<(Arc<dyn Place>, PrepareReply)>;

/// One rollout of a release to an environment, under its deploy lock.
pub(super) struct Rollout<'a, H: Host> {
    pub host: &'a Arc<H>,
    pub release: &'a ReleaseRow,
    pub target: &'a EnvTarget,
    pub opts: &'a RolloutOptions,
    /// The deploy id: keeps this rollout's processes apart from those it replaces.
    pub generation: u64,
    pub out: &'a mut Sink,
}

/// What the plan decided; the later phases read it.
struct Plan {
    app: String,
    env: String,
    /// What the places call this app in this environment.
    napp: String,
    /// The release's name on the places.
    name: String,
    manifest: Manifest,
    uid: u32,
    backend: Box<dyn Backend>,
    /// The places, by name.
    names: Vec<String>,
    delivery: Arc<Delivery>,
    previous: Option<LiveRow>,
    config: BTreeMap<String, String>,
    /// magrathea.yml's env labels under the config vars.
    vars: BTreeMap<String, String>,
    app_json: AppJson,
    memory: i64,
    cpu: f64,
    placement: Placement,
    checks: Vec<Health>,
    /// What the pusher is told still serves when this rollout fails.
    still: String,
}

impl Plan {
    fn places(&self) -> &[Arc<dyn Place>] {
        self.backend.places()
    }

    /// Where one-offs run: the first place by name, so the same data dir sees every
    /// migration.
    fn first(&self) -> &Arc<dyn Place> {
        self.places()
            .iter()
            .min_by(|a, b| a.name().cmp(b.name()))
            .expect("at least one place")
    }

    /// What stops the processes a rollout of this generation started.
    fn abort_req(&self, generation: u64) -> AbortReq {
        AbortReq {
            app: self.napp.clone(),
            release: self.name.clone(),
            generation,
        }
    }

    fn one_off_req(&self, kind: &str, command: &str, snapshot: Option<String>) -> ReleasePhaseReq {
        ReleasePhaseReq {
            app: self.napp.clone(),
            release: self.name.clone(),
            image: self.manifest.stack_image.clone(),
            command: command.to_string(),
            env: self.vars.clone(),
            memory: self.memory,
            cpu: self.cpu,
            timeout_ms: 3_600_000,
            snapshot,
            uid: self.uid,
            kind: Some(kind.to_string()),
        }
    }
}

/// Logs a phase's duration (`MAGRATHEA_LOG=debug` shows every phase).
fn phase_done(phase: &str, since: Instant) {
    tracing::debug!(
        phase,
        ms = since.elapsed().as_millis() as u64,
        "rollout phase done"
    );
}

/// How a one-off phase is named to the pusher.
fn phase_name(kind: &str) -> &'static str {
    match kind {
        "predeploy" => "predeploy script (app.json scripts.dokku.predeploy)",
        "postdeploy" => "postdeploy script (app.json scripts.dokku.postdeploy)",
        _ => "release command",
    }
}

impl<H: Host> Rollout<'_, H> {
    /// The one line every abort before the switch ends with: what still serves.
    async fn say_aborted(&mut self, plan: &Plan) {
        let still = &plan.still;
        self.out
            .line(format!(" !     deploy aborted on every node; {still}"))
            .await;
    }

    /// Every phase in order. `held` is the deploy lock, which the retire phase may keep
    /// after this returns (`background_tail`).
    pub(super) async fn run(mut self, held: OwnedMutexGuard<()>) -> Result<(), DeployError> {
        let t = Instant::now();
        let plan = self.plan().await?;
        phase_done("plan", t);
        let t = Instant::now();
        if let Err(e) = self
            .host
            .reach_services(
                &plan.app,
                &plan.env,
                &plan.names,
                &plan.manifest.stack_image,
            )
            .await
        {
            let e = self.fail(e.to_string()).await;
            self.say_aborted(&plan).await;
            return Err(e);
        }
        let staged = self.release_phase(&plan).await?;
        phase_done("release", t);
        let t = Instant::now();
        let prepared = self.prepare(&plan, staged).await?;
        phase_done("prepare", t);
        let t = Instant::now();
        let switched = self.switch(&plan, &prepared).await?;
        phase_done("switch", t);
        let t = Instant::now();
        let stale = self.go_live(&plan, &prepared, &switched).await?;
        phase_done("go-live", t);
        let t = Instant::now();
        self.postdeploy(&plan).await;
        phase_done("postdeploy", t);
        let t = Instant::now();
        self.retire(&plan, prepared, stale, held).await;
        phase_done("retire", t);
        self.out
            .line(format!(
                "-----> v{} of {} is live in {} on {}",
                self.release.version,
                plan.app,
                plan.env,
                plan.names.join(", ")
            ))
            .await;
        Ok(())
    }

    /// Tells the pusher, and passes the message on as the rollout's error.
    async fn fail(&mut self, m: String) -> DeployError {
        self.out.line(format!(" !     {m}")).await;
        DeployError::Failed(m)
    }

    /// Plan: the places, the config, the release's app.json, and how many processes of
    /// each type run where (see [`formation`]); none when stopped.
    async fn plan(&mut self) -> Result<Plan, DeployError> {
        let (host, release, target, opts) = (self.host, self.release, self.target, self.opts);
        let (app, env) = (release.app.clone(), target.env.clone());
        let manifest: Manifest =
            serde_json::from_str(&release.manifest).map_err(DeployError::BadManifest)?;
        // Its processes run as the app's own uid on every node.
        let uid = host.app_uid(&app)?;
        let backend = backend_for(host, target)?;
        if backend.places().is_empty() {
            let m = format!(
                "no node matches environment {env}'s selector {:?}",
                target.selector
            );
            return Err(self.fail(m).await);
        }
        let names: Vec<String> = backend
            .places()
            .iter()
            .map(|p| p.name().to_string())
            .collect();
        self.out
            .line(format!(
                "-----> Deploying v{} of {app} to {env} on {}",
                release.version,
                names.join(", ")
            ))
            .await;
        let tarball = host.data().releases(&app).join(&release.file);
        let previous = host.store().live(&app, &env)?;
        // Labels from magrathea.yml under the config vars; the config wins.
        let config = match &opts.config {
            Some(c) => c.clone(),
            None => host.config(&app, &env)?,
        };
        let mut vars = target.vars.clone();
        vars.extend(config.clone());
        // The release's app.json (formation, health checks, predeploy/postdeploy scripts).
        let meta = {
            let t = tarball.clone();
            tokio::task::spawn_blocking(move || envs::meta_of_release(&t)).await?
        };
        let app_json = match meta.app_json.clone() {
            Ok(a) => a,
            Err(e) => return Err(self.fail(e).await),
        };
        // Each process gets (and is placed by) the memory magrathea.yml asks for, else the
        // server's default.
        let memory = meta
            .config
            .memory
            .as_deref()
            .and_then(crate::appconfig::parse_size)
            .unwrap_or(host.process_memory());
        let cpu = meta.config.cpu.unwrap_or(0.0);
        let napp = node_app(&app, &env);
        let (counts, stopped) = self.counts(&manifest, &app_json)?;
        let placement = self
            .fit(backend.places(), &napp, &counts, memory, cpu)
            .await?;
        if stopped {
            self.out
                .line(format!(
                    "-----> {app} is stopped in {env}: no processes will run (`start {app}` runs them)"
                ))
                .await;
        }
        let still = previous
            .as_ref()
            .map(|p| format!("v{} still serves", p.version))
            .unwrap_or_else(|| "nothing was running before".into());
        let name = release_name(release.version, &release.sha256);
        Ok(Plan {
            delivery: Arc::new(Delivery {
                app: napp.clone(),
                release: name.clone(),
                tarball,
                sha256: release.sha256.clone(),
                restore: opts.restore_data_from,
            }),
            checks: envs::app_json_checks(&meta.config, &app_json),
            app,
            env,
            napp,
            name,
            manifest,
            uid,
            backend,
            names,
            previous,
            config,
            vars,
            app_json,
            memory,
            cpu,
            placement,
            still,
        })
    }

    /// How many of each type run (`scale` over magrathea.yml over app.json, only the type
    /// a restart names), and whether the environment is stopped.
    fn counts(
        &self,
        manifest: &Manifest,
        app_json: &AppJson,
    ) -> Result<(BTreeMap<String, Count>, bool), DeployError> {
        let (store, opts) = (self.host.store(), self.opts);
        let (app, env) = (&self.release.app, &self.target.env);
        let stopped = match opts.stopped {
            Some(s) => s,
            None => store.stopped(app, env)?,
        };
        let mut scaled = store.formation(app, env)?;
        scaled.extend(opts.formation.clone().unwrap_or_default());
        let counts = formation(
            manifest.processes.keys(),
            &scaled,
            &self.target.scale,
            &app_json.formation(),
        )
        .into_iter()
        .filter(|(t, _)| opts.only.as_ref().is_none_or(|o| o == t))
        .map(|(t, c)| (t, if stopped { Count::Total(0) } else { c }))
        .collect();
        Ok((counts, stopped))
    }

    /// Asks every place for its room and places the processes. A place that does not
    /// answer fails the rollout here, before anything started.
    async fn fit(
        &mut self,
        places: &[Arc<dyn Place>],
        napp: &str,
        counts: &BTreeMap<String, Count>,
        memory: i64,
        cpu: f64,
    ) -> Result<Placement, DeployError> {
        let napp = Arc::new(napp.to_string());
        let asked = fan_out(
            places,
            None,
            |p, _| {
                let napp = napp.clone();
                Box::pin(async move { p.room(&napp, memory, cpu).await })
            },
            |_, _| None,
        )
        .await;
        let mut free = vec![0; places.len()];
        let mut room = vec![String::new(); places.len()];
        for (p, r) in asked {
            let i = places.iter().position(|q| Arc::ptr_eq(q, &p)).unwrap_or(0);
            match r {
                Ok(r) => (free[i], room[i]) = (r.free, r.words),
                Err(e) => return Err(self.fail(e.to_string()).await),
            }
        }
        match place(counts, &free) {
            Ok(p) => Ok(p),
            Err(e) => {
                // Which node is node 2, and why the nodes are full, in numbers.
                let mut e = e;
                for (i, p) in places.iter().enumerate() {
                    e = e.replace(&format!("node {} ", i + 1), &format!("node {} ", p.name()));
                }
                let cpus = if cpu > 0.0 {
                    format!(" and {cpu} CPUs")
                } else {
                    String::new()
                };
                let e = format!(
                    "{e} (each process gets {} MiB{cpus}; {}); lower `memory`/`cpu` in \
                     magrathea.yml, scale down, or add a node",
                    memory >> 20,
                    room.join(", ")
                );
                Err(self.fail(e).await)
            }
        }
    }

    /// The release phase, once, on one place, before any new process starts (Heroku's
    /// order: a web process may need the migration to answer its health check). app.json's
    /// `scripts.dokku.predeploy` runs first (as Dokku orders them), then the Procfile's
    /// release command; one data snapshot before both. Every place receives the release
    /// first, so one that cannot take it fails the deploy before any data changes. Whether
    /// the places were staged.
    async fn release_phase(&mut self, plan: &Plan) -> Result<bool, DeployError> {
        let mut phases: Vec<(&str, String)> = vec![];
        if !self.opts.skip_release_phase {
            if let Some(c) = plan.app_json.predeploy() {
                phases.push(("predeploy", c.to_string()));
            }
            if let Some(c) = &plan.manifest.release {
                phases.push(("release", c.clone()));
            }
        }
        if phases.is_empty() {
            return Ok(false);
        }
        self.receive(plan).await?;
        // The services' data as the previous release left it, tied to this one.
        if let Err(e) = self
            .host
            .backup_linked(&plan.app, &plan.env, self.release.version, self.out)
            .await
        {
            self.out.line(format!(" !     {e}")).await;
            self.say_aborted(plan).await;
            return Err(e);
        }
        let first = plan.first();
        for (i, (kind, cmd)) in phases.iter().enumerate() {
            let what = phase_name(kind);
            self.out
                .line(format!("-----> Running {what} on {}: {cmd}", first.name()))
                .await;
            let snapshot = (i == 0).then(|| format!("before-v{}", self.release.version));
            let req = plan.one_off_req(kind, cmd, snapshot);
            let err = match self.one_off(first.as_ref(), &req).await {
                Ok(0) => None,
                Ok(code) => Some(DeployError::Failed(format!("{what} failed (exit {code})"))),
                Err(e) => Some(e),
            };
            if let Some(e) = err {
                self.out.line(format!(" !     {e}")).await;
                // Whatever the command wrote before failing is undone: the data dir goes
                // back to the snapshot taken just before it ran.
                let label = format!("before-v{}", self.release.version);
                let restore = RestoreDataReq {
                    app: plan.napp.clone(),
                    label,
                    if_exists: false,
                };
                let line = match first.restore_data(restore).await {
                    Ok(_) => format!(
                        " !     {}: data dir restored from before the release command",
                        first.name()
                    ),
                    Err(re) => format!(" !     could not restore the data dir: {re}"),
                };
                self.out.line(line).await;
                self.say_aborted(plan).await;
                return Err(e);
            }
        }
        Ok(true)
    }

    /// Every place receives the release (and restores data when asked); nothing starts.
    async fn receive(&mut self, plan: &Plan) -> Result<(), DeployError> {
        let d = plan.delivery.clone();
        let results = fan_out(
            plan.places(),
            Some(&mut *self.out),
            |p, progress| {
                let d = d.clone();
                Box::pin(async move { p.stage(&d, progress).await })
            },
            |_, r| r.as_ref().err().map(|e| format!(" !     {e}")),
        )
        .await;
        let failed: Vec<String> = results
            .into_iter()
            .filter_map(|(_, r)| r.err().map(|e| e.to_string()))
            .collect();
        if !failed.is_empty() || self.out.closed() {
            self.say_aborted(plan).await;
            return Err(failed
                .into_iter()
                .next()
                .map_or(DeployError::PusherGone, DeployError::Failed));
        }
        Ok(())
    }

    /// Runs a one-off phase on `place`, its output streamed to the pusher; its exit code.
    async fn one_off(
        &mut self,
        place: &dyn Place,
        req: &ReleasePhaseReq,
    ) -> Result<i64, DeployError> {
        let (ltx, mut lrx) = tokio::sync::mpsc::channel::<String>(256);
        let call = place.one_off(req, ltx);
        tokio::pin!(call);
        let res = loop {
            tokio::select! {
                r = &mut call => break r,
                Some(l) = lrx.recv() => {
                    crate::failpoint::hit("release-command");
                    self.out.line(format!("       {l}")).await
                }
            }
        };
        while let Ok(l) = lrx.try_recv() {
            self.out.line(format!("       {l}")).await;
        }
        res.map_err(|e| DeployError::Failed(e.to_string()))
    }

    /// Prepare: start the new processes everywhere, in parallel, and health-check them.
    async fn prepare(&mut self, plan: &Plan, staged: bool) -> Result<Prepared, DeployError> {
        let version = self.release.version;
        let mut reqs: Vec<PrepareReq> = vec![];
        for (i, _) in plan.places().iter().enumerate() {
            let processes: Vec<ProcessGroup> = plan.placement[i]
                .iter()
                .filter(|(_, idx)| !idx.is_empty())
                .map(|(ptype, idx)| ProcessGroup {
                    ptype: ptype.clone(),
                    command: plan.manifest.processes[ptype].clone(),
                    count: idx.len() as u32,
                    indices: idx.clone(),
                })
                .collect();
            let mut env = plan.vars.clone();
            env.insert("GIT_REV".into(), self.release.git_sha.clone());
            reqs.push(PrepareReq {
                app: plan.napp.clone(),
                release: plan.name.clone(),
                image: plan.manifest.stack_image.clone(),
                processes,
                env,
                memory: plan.memory,
                cpu: plan.cpu,
                health: self.target.health.clone(),
                checks: plan.checks.clone(),
                grace_ms: 2_000,
                generation: self.generation,
                uid: plan.uid,
                // The place fills in where the router reaches it (and a cluster its
                // placement).
                publish_ip: None,
                placement: vec![],
            });
        }
        // Staged places have the release (and restored data) already.
        let mut d = (*plan.delivery).clone();
        d.restore = d.restore.filter(|_| !staged);
        let d = Arc::new(d);
        let places = plan.places();
        let results = fan_out(
            places,
            Some(&mut *self.out),
            |p, progress| {
                let i = places.iter().position(|q| Arc::ptr_eq(q, &p)).unwrap_or(0);
                let (req, d) = (reqs[i].clone(), d.clone());
                Box::pin(async move { p.prepare(req, &d, progress).await })
            },
            |p, r| match r {
                Ok(reply) => Some(format!(
                    "-----> {}: v{version} started and healthy ({} process{})",
                    p.name(),
                    reply.processes.len(),
                    if reply.processes.len() == 1 { "" } else { "es" }
                )),
                Err(e) => Some(format!(" !     {e}")),
            },
        )
        .await;
        let mut prepared: Prepared = vec![];
        let mut failed: Vec<String> = vec![];
        for (p, r) in results {
            match r {
                Ok(reply) => prepared.push((p, reply)),
                Err(e) => failed.push(e.to_string()),
            }
        }
        if !failed.is_empty() || self.out.closed() {
            abort_all(&prepared, plan.abort_req(self.generation)).await;
            self.say_aborted(plan).await;
            return Err(failed
                .into_iter()
                .next()
                .map_or(DeployError::PusherGone, DeployError::Failed));
        }
        Ok(prepared)
    }

    /// Switch everywhere; on a failure, the switched places go back and this rollout's
    /// processes stop. What each place was switched from.
    async fn switch(
        &mut self,
        plan: &Plan,
        prepared: &Prepared,
    ) -> Result<Vec<(Arc<dyn Place>, Option<String>)>, DeployError> {
        let places: Vec<Arc<dyn Place>> = prepared.iter().map(|(p, _)| p.clone()).collect();
        let to = SwitchReq {
            app: plan.napp.clone(),
            release: plan.name.clone(),
        };
        let results = fan_out(
            &places,
            Some(&mut *self.out),
            |p, _| {
                let to = to.clone();
                Box::pin(async move { p.switch(to).await })
            },
            |p, r| match r {
                Ok(_) => {
                    crate::failpoint::hit("switch");
                    None
                }
                Err(e) => Some(format!(" !     {}: switch failed: {e}", p.name())),
            },
        )
        .await;
        let mut switched = vec![];
        let mut switch_err = None;
        for (p, r) in results {
            match r {
                Ok(prev) => switched.push((p, prev)),
                Err(e) => switch_err = Some(e.to_string()),
            }
        }
        if let Some(e) = switch_err {
            self.switch_back(plan, prepared, &switched).await;
            return Err(DeployError::Failed(e));
        }
        Ok(switched)
    }

    /// Undoes a switch: the switched places go back to what they ran, and this rollout's
    /// processes stop.
    async fn switch_back(
        &mut self,
        plan: &Plan,
        prepared: &Prepared,
        switched: &[(Arc<dyn Place>, Option<String>)],
    ) {
        for (p, prev) in switched {
            if let Some(prev) = prev {
                let back = SwitchReq {
                    app: plan.napp.clone(),
                    release: prev.clone(),
                };
                let _ = p.switch(back).await;
            }
        }
        abort_all(prepared, plan.abort_req(self.generation)).await;
        let still = &plan.still;
        self.out
            .line(format!(" !     switched nodes were switched back; {still}"))
            .await;
    }

    /// Go live: the release, its config and what the command changed (formation, stopped)
    /// are recorded in one transaction, then the router moves to the new processes in one
    /// step. A failure to record switches back. The addresses the router left (they
    /// drain).
    async fn go_live(
        &mut self,
        plan: &Plan,
        prepared: &Prepared,
        switched: &[(Arc<dyn Place>, Option<String>)],
    ) -> Result<Vec<SocketAddr>, DeployError> {
        crate::failpoint::hit("go-live");
        let (host, opts) = (self.host, self.opts);
        let sealed_map = host.seal(&serde_json::to_vec(&plan.config).unwrap_or_default());
        let sealed: Option<BTreeMap<String, Vec<u8>>> = opts.config.as_ref().map(|_| {
            plan.config
                .iter()
                .map(|(k, v)| (k.clone(), host.seal(v.as_bytes())))
                .collect()
        });
        let recorded = host.store().go_live(&GoLive {
            app: &plan.app,
            env: &plan.env,
            version: self.release.version,
            nodes: &plan.names,
            release_config: &sealed_map,
            config: sealed.as_ref(),
            formation: opts.formation.as_ref(),
            stopped: opts.stopped,
        });
        if let Err(source) = recorded {
            tracing::error!(app = %plan.app, env = %plan.env, error = %source, "cannot record a release as live");
            let e = DeployError::NotRecorded {
                version: self.release.version,
                source,
            };
            self.out.line(format!(" !     {e}")).await;
            self.switch_back(plan, prepared, switched).await;
            return Err(e);
        }
        crate::failpoint::hit("live");
        let router = host.router();
        let key = route_key(&plan.app, &plan.env);
        let old: Vec<SocketAddr> = router.upstreams(&key);
        let new: Vec<SocketAddr> = prepared
            .iter()
            .flat_map(|(p, rep)| p.upstreams(rep))
            .collect();
        // A restart of workers alone leaves the web processes, and so the routes, as they are.
        if opts.only.as_ref().is_none_or(|t| t == "web") {
            router.set_owner(&key, &plan.app, &plan.env);
            router.set_upstreams(&key, new);
        }
        let now = router.upstreams(&key);
        Ok(old.into_iter().filter(|a| !now.contains(a)).collect())
    }

    /// app.json's `scripts.dokku.postdeploy`: after the switch, so a failure is reported
    /// but the new release stays live (as on Dokku).
    async fn postdeploy(&mut self, plan: &Plan) {
        if self.opts.skip_release_phase {
            return;
        }
        if let Some(cmd) = plan.app_json.postdeploy() {
            self.after_switch(plan, phase_name("postdeploy"), cmd).await;
        }
        // Heroku's (and Dokku's) scripts.postdeploy: once, after the environment's first
        // deploy (seed data, OAuth clients).
        if let Some(cmd) = plan
            .app_json
            .first_deploy_script()
            .filter(|_| plan.previous.is_none())
        {
            let what = "first-deploy script (app.json scripts.postdeploy)";
            self.after_switch(plan, what, cmd).await;
        }
    }

    /// A one-off command of the live release after the switch: its failure is said, and the
    /// release stays live.
    async fn after_switch(&mut self, plan: &Plan, what: &str, cmd: &str) {
        let first = plan.first().clone();
        self.out
            .line(format!("-----> Running {what} on {}: {cmd}", first.name()))
            .await;
        let req = plan.one_off_req("postdeploy", cmd, None);
        let v = self.release.version;
        match self.one_off(first.as_ref(), &req).await {
            Ok(0) => {}
            Ok(code) => {
                self.out
                    .line(format!(
                        " !     {what} failed (exit {code}); v{v} stays live"
                    ))
                    .await
            }
            Err(e) => {
                self.out
                    .line(format!(" !     {what} failed ({e}); v{v} stays live"))
                    .await
            }
        }
    }

    /// Retire: the old processes drain and stop, and old releases are collected (the
    /// newest few stay unpacked for instant rollback). With `background_tail` this happens
    /// after the rollout returns, still under the deploy lock.
    async fn retire(
        &mut self,
        plan: &Plan,
        prepared: Prepared,
        stale: Vec<SocketAddr>,
        held: OwnedMutexGuard<()>,
    ) {
        let host = self.host.clone();
        let mut keep = vec![plan.name.clone()];
        if let Some(p) = plan
            .previous
            .as_ref()
            .and_then(|p| host.store().release(&plan.app, p.version).ok().flatten())
        {
            keep.push(release_name(p.version, &p.sha256));
        }
        let retire = RetireReq {
            app: plan.napp.clone(),
            release: plan.name.clone(),
            generation: self.generation,
            only: self.opts.only.iter().cloned().collect(),
        };
        let app = plan.app.clone();
        let tail = async move {
            host.router().drain(&stale, Duration::from_secs(30)).await;
            let places: Vec<Arc<dyn Place>> = prepared.iter().map(|(p, _)| p.clone()).collect();
            let napp = retire.app.clone();
            fan_out(
                &places,
                None,
                |p, _| {
                    let retire = retire.clone();
                    Box::pin(async move { p.retire(retire).await })
                },
                |_, _| None,
            )
            .await;
            gc_places(host.store(), &places, &app, &napp, keep).await;
        };
        if self.opts.background_tail {
            // The old processes drain and stop after the command returns; the deploy lock
            // goes with them, so the next rollout of this environment waits for it.
            tokio::spawn(async move {
                tail.await;
                drop(held);
            });
        } else {
            drop(held);
            tail.await;
        }
    }
}
