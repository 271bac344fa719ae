//! Rollouts: a release goes live on every target node of an environment, or on none.
//!
//! receive everywhere (verify + unpack) -> release phase once (app.json predeploy, then the
//! release command) -> start new processes beside the old ones everywhere and health-check
//! them -> switch everywhere -> router swap + drain -> retire the old processes -> app.json
//! postdeploy. A failure before the switch aborts everywhere (old processes were never
//! touched); a failure during the switch switches the switched nodes back.

pub mod envs;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::node::client::{NodeClient, NodeError};
use crate::node::proto::*;
use crate::paths::DataDir;
use crate::release::Manifest;
use crate::router::Router;
use crate::sink::Sink;
use crate::store::{NodeRow, ReleaseRow, Store, StoreError};
pub use envs::EnvTarget;

/// What a rollout needs from the server around it (the controller implements it): the data
/// dir, the store, the router, the deploy locks, sealed config and the nodes. Deploys never
/// reach further up.
pub trait Host: Send + Sync + 'static {
    fn data(&self) -> &DataDir;
    fn store(&self) -> &Store;
    fn router(&self) -> &Router;
    /// Held for the length of one rollout of an (app, environment).
    fn deploy_lock(&self, app: &str, env: &str) -> Arc<tokio::sync::Mutex<()>>;
    /// An environment's config vars, decrypted.
    fn config(&self, app: &str, env: &str) -> Result<BTreeMap<String, String>, String>;
    /// Seals a config value (or a whole config map) for the store.
    fn seal(&self, plain: &[u8]) -> Vec<u8>;
    /// The uid an app's processes run as.
    fn app_uid(&self, app: &str) -> Result<u32, String>;
    /// The memory of a process whose magrathea.yml asks for none.
    fn process_memory(&self) -> i64;
    /// Every node, by name.
    fn nodes(&self) -> Result<Vec<NodeRow>, StoreError>;
    /// The nodes an environment's label selector picks.
    fn target_nodes(&self, selector: &BTreeMap<String, String>)
        -> Result<Vec<NodeRow>, StoreError>;
    /// A client for a node (host key pinned).
    fn node_client(&self, node: &NodeRow) -> NodeClient;
}

/// What the pusher is told and what is recorded when a deploy fails.
pub type DeployResult = Result<(), String>;

fn node_ip(addr: &str) -> String {
    addr.rsplit_once(':')
        .map(|(h, _)| h.trim_matches(['[', ']']))
        .unwrap_or(addr)
        .to_string()
}

/// The router key of an app in an environment: `app` for production, `app-env` otherwise.
pub fn route_key(app: &str, env: &str) -> String {
    if env == "production" {
        app.to_string()
    } else {
        format!("{app}-{env}")
    }
}

/// The name a node knows one environment of an app by: `app` for production, `app.env`
/// otherwise (a dot never appears in an app name, so names never collide). Each has its own
/// releases, `current`, processes and data dir on the node.
pub fn node_app(app: &str, env: &str) -> String {
    if env == "production" {
        app.to_string()
    } else {
        format!("{app}.{env}")
    }
}

/// How many processes of a type an environment runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// One on every node (the default for `web`).
    PerNode,
    /// This many across the environment's nodes.
    Total(u32),
}

/// For each node, for each process type, the process numbers it runs. Numbers are global
/// (`web.1` on n1, `web.2` on n2, `web.3` on n1).
pub type Placement = Vec<BTreeMap<String, Vec<u32>>>;

/// How many of each Procfile type run, as Heroku and Dokku decide it: `web` one (on every
/// node, so one on a single node) and every other type none, unless asked. Asked means, per
/// type, first an explicit `scale` (`scaled`, remembered in the store), then `magrathea.yml`
/// (`yml`), then app.json's `formation`. Counts for types the Procfile lacks are ignored.
pub fn formation<'a>(
    types: impl Iterator<Item = &'a String>,
    scaled: &BTreeMap<String, u32>,
    yml: &BTreeMap<String, u32>,
    app_json: &BTreeMap<String, u32>,
) -> BTreeMap<String, Count> {
    types
        .map(|t| {
            let c = match scaled.get(t).or(yml.get(t)).or(app_json.get(t)) {
                Some(n) => Count::Total(*n),
                None if t == "web" => Count::PerNode,
                None => Count::Total(0),
            };
            (t.clone(), c)
        })
        .collect()
}

/// The counts an environment runs the release at (not stopped, no scale pending): what
/// `ps` shows and what `scale` compares against.
pub async fn current_formation<H: Host>(
    host: &Arc<H>,
    release: &ReleaseRow,
    env: &str,
) -> Result<BTreeMap<String, Count>, String> {
    let manifest: Manifest =
        serde_json::from_str(&release.manifest).map_err(|e| format!("bad manifest: {e}"))?;
    let tarball = host.data().releases(&release.app).join(&release.file);
    let (meta, target) = {
        let (t, data, r, e) = (
            tarball,
            host.data().clone(),
            release.clone(),
            env.to_string(),
        );
        tokio::task::spawn_blocking(move || {
            (
                envs::meta_of_release(&t),
                envs::target_of_release(&data, &r, &e),
            )
        })
        .await
        .map_err(|e| e.to_string())?
    };
    let scaled = host
        .store()
        .formation(&release.app, env)
        .map_err(|e| e.to_string())?;
    Ok(formation(
        manifest.processes.keys(),
        &scaled,
        &target.scale,
        &meta.app_json.unwrap_or_default().formation(),
    ))
}

/// Place processes by free capacity: each next process goes to the node with the most room
/// left (ties: the node with fewer of that type, then the first). `free` is how many more
/// of this app's processes each node takes (see [`free_capacity`]). Fails with a clear
/// message when the nodes are full.
pub fn place(counts: &BTreeMap<String, Count>, free: &[i64]) -> Result<Placement, String> {
    let mut out: Placement = vec![BTreeMap::new(); free.len()];
    let mut left: Vec<i64> = free.to_vec();
    let mut order: Vec<(&String, &Count)> = counts.iter().collect();
    // Per-node types first: they are not negotiable.
    order.sort_by_key(|(t, c)| (!matches!(c, Count::PerNode), t.as_str() != "web"));
    for (ptype, count) in order {
        match *count {
            Count::PerNode => {
                for (i, node) in out.iter_mut().enumerate() {
                    if left[i] < 1 {
                        return Err(format!(
                            "not enough capacity for a {ptype} process on every node: node {} has no room left",
                            i + 1
                        ));
                    }
                    node.entry(ptype.clone()).or_default().push(i as u32 + 1);
                    left[i] -= 1;
                }
            }
            Count::Total(n) => {
                for k in 1..=n {
                    let best = (0..free.len()).max_by_key(|&i| {
                        let mine = out[i].get(ptype).map_or(0, Vec::len) as i64;
                        (left[i], -mine, -(i as i64))
                    });
                    match best {
                        Some(i) if left[i] > 0 => {
                            out[i].entry(ptype.clone()).or_default().push(k);
                            left[i] -= 1;
                        }
                        _ => {
                            let total: i64 = free.iter().map(|f| (*f).max(0)).sum();
                            return Err(format!(
                                "not enough capacity for {n} {ptype} process{}: the nodes have room for {total} more in all",
                                if n == 1 { "" } else { "es" },
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

pub async fn rollout<H: Host>(
    host: &Arc<H>,
    release: &ReleaseRow,
    target: &EnvTarget,
    who: &str,
    out: &mut Sink,
    opts: RolloutOptions,
) -> DeployResult {
    let app = &release.app;
    let lock = host.deploy_lock(app, &target.env);
    let held = match lock.clone().try_lock_owned() {
        Ok(g) => g,
        Err(_) => {
            out.line(format!(
                "-----> another deploy of {app} to {} is running; waiting",
                target.env
            ))
            .await;
            lock.lock_owned().await
        }
    };
    let deploy_id = host
        .store()
        .start_deploy(app, &target.env, release.version, who)
        .map_err(|e| e.to_string())?;
    // Its output also goes to the app's event log (`logs`), config values masked.
    let secrets = opts
        .config
        .clone()
        .or_else(|| host.config(app, &target.env).ok())
        .unwrap_or_default();
    let events =
        crate::eventlog::EventLog::open(&host.data().logs(), app, "deploy", release.version)
            .mask(secrets.values());
    let outer_events = out.set_tee(Some(Box::new(events)));
    let mut held = Some(held);
    let result = rollout_locked(
        host,
        release,
        target,
        out,
        &opts,
        deploy_id as u64,
        &mut held,
    )
    .await;
    out.set_tee(outer_events);
    let (status, detail) = match &result {
        Ok(()) => ("succeeded", String::new()),
        Err(e) => ("failed", e.clone()),
    };
    let _ = host.store().finish_deploy(deploy_id, status, &detail);
    result
}

#[derive(Debug, Clone, Default)]
pub struct RolloutOptions {
    /// Restore the data snapshot taken before this version's release phase (rollback --with-data).
    pub restore_data_from: Option<i64>,
    /// Use this config instead of the environment's current one, and make it current on
    /// success (rollback restores the config that went with a release).
    pub config: Option<BTreeMap<String, String>>,
    /// Process counts to run, merged over the environment's; recorded on success (`scale`).
    pub formation: Option<BTreeMap<String, u32>>,
    /// Start (and retire) only this process type; the others keep running (`restart web`).
    pub only: Option<String>,
    /// Stop (true: run nothing) or start (false) the environment; recorded on success.
    pub stopped: Option<bool>,
    /// The release command already ran when this release went out (rollback, scale,
    /// restart, stop, start): not again.
    pub skip_release_phase: bool,
    /// Return once the new release serves; the old processes drain and stop in the
    /// background, still under the deploy lock (rollback: back fast, clean up after).
    pub background_tail: bool,
}

async fn rollout_locked<H: Host>(
    host: &Arc<H>,
    release: &ReleaseRow,
    target: &EnvTarget,
    out: &mut Sink,
    opts: &RolloutOptions,
    generation: u64,
    held: &mut Option<tokio::sync::OwnedMutexGuard<()>>,
) -> DeployResult {
    let app = release.app.clone();
    let env = target.env.clone();
    // What the nodes call this app in this environment.
    let napp = node_app(&app, &env);
    let name = release_name(release.version, &release.sha256);
    let manifest: Manifest =
        serde_json::from_str(&release.manifest).map_err(|e| format!("bad manifest: {e}"))?;
    // Its processes run as the app's own uid on every node.
    let uid = host.app_uid(&app).map_err(|e| e.to_string())?;
    let nodes = host
        .target_nodes(&target.selector)
        .map_err(|e| e.to_string())?;
    if nodes.is_empty() {
        let m = format!(
            "no node matches environment {env}'s selector {:?}",
            target.selector
        );
        out.line(format!(" !     {m}")).await;
        return Err(m);
    }
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    out.line(format!(
        "-----> Deploying v{} of {app} to {env} on {}",
        release.version,
        names.join(", ")
    ))
    .await;
    let tarball = host.data().releases(&app).join(&release.file);
    let previous = host.store().live(&app, &env).map_err(|e| e.to_string())?;
    // Labels from magrathea.yml under the config vars; the config wins.
    let config = match &opts.config {
        Some(c) => c.clone(),
        None => host.config(&app, &env).map_err(|e| e.to_string())?,
    };
    let mut vars = target.vars.clone();
    vars.extend(config.clone());

    // The release's app.json (formation, health checks, predeploy/postdeploy scripts).
    let meta = {
        let t = tarball.clone();
        tokio::task::spawn_blocking(move || envs::meta_of_release(&t))
            .await
            .map_err(|e| e.to_string())?
    };
    let app_json = match meta.app_json.clone() {
        Ok(a) => a,
        Err(e) => {
            out.line(format!(" !     {e}")).await;
            return Err(e);
        }
    };

    // Which processes run where (see [`formation`]); none when stopped.
    let stopped = match opts.stopped {
        Some(s) => s,
        None => host
            .store()
            .stopped(&app, &env)
            .map_err(|e| e.to_string())?,
    };
    let mut scaled = host
        .store()
        .formation(&app, &env)
        .map_err(|e| e.to_string())?;
    scaled.extend(opts.formation.clone().unwrap_or_default());
    let counts: BTreeMap<String, Count> = formation(
        manifest.processes.keys(),
        &scaled,
        &target.scale,
        &app_json.formation(),
    )
    .into_iter()
    .filter(|(t, _)| opts.only.as_ref().is_none_or(|o| o == t))
    .map(|(t, c)| (t, if stopped { Count::Total(0) } else { c }))
    .collect();
    // One client per node for the whole rollout: its calls share one connection.
    let clients: Vec<NodeClient> = nodes.iter().map(|n| host.node_client(n)).collect();
    // Each process gets (and is placed by) the memory magrathea.yml asks for, else the
    // server's default.
    let memory = meta
        .config
        .memory
        .as_deref()
        .and_then(crate::appconfig::parse_size)
        .unwrap_or(host.process_memory());
    let cpu = meta.config.cpu.unwrap_or(0.0);
    let (free, mut statuses, room) = match free_capacity(&clients, &nodes, &napp, memory, cpu).await
    {
        Ok(r) => r,
        Err(e) => {
            out.line(format!(" !     {e}")).await;
            return Err(e);
        }
    };
    let placement = match place(&counts, &free) {
        Ok(p) => p,
        Err(e) => {
            // Which node is node 2, and why the nodes are full, in numbers.
            let mut e = e;
            for (i, n) in nodes.iter().enumerate() {
                e = e.replace(&format!("node {} ", i + 1), &format!("node {} ", n.name));
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
            out.line(format!(" !     {e}")).await;
            return Err(e);
        }
    };
    if stopped {
        out.line(format!(
            "-----> {app} is stopped in {env}: no processes will run (`start {app}` runs them)"
        ))
        .await;
    }

    let checks = envs::app_json_checks(&meta.config, &app_json);

    let still = previous
        .as_ref()
        .map(|p| format!("v{} still serves", p.version))
        .unwrap_or_else(|| "nothing was running before".into());

    // Phase 1: the release phase, once, on one node (the first by name, so the same node's
    // data dir sees every migration), before any new process starts (Heroku's order: a web
    // process may need the migration to answer its health check). app.json's
    // `scripts.dokku.predeploy` runs first (as Dokku orders them), then the Procfile's
    // release command; one data snapshot before both. Every node receives the release
    // first, so a node that cannot take it fails the deploy before any data changes.
    let mut phases: Vec<(&str, String)> = vec![];
    if !opts.skip_release_phase {
        if let Some(c) = app_json.predeploy() {
            phases.push(("predeploy", c.to_string()));
        }
        if let Some(c) = &manifest.release {
            phases.push(("release", c.clone()));
        }
    }
    let staged = !phases.is_empty();
    if staged {
        let mut set = JoinSet::new();
        let (ptx, mut prx) = tokio::sync::mpsc::channel::<String>(256);
        for (i, client) in clients.iter().enumerate() {
            let (client, known, ptx) = (client.clone(), statuses[i].take(), ptx.clone());
            let (tarball, sha) = (tarball.clone(), release.sha256.clone());
            let (napp, name, restore) = (napp.clone(), name.clone(), opts.restore_data_from);
            set.spawn(async move {
                let r =
                    stage_node(&client, &napp, &name, known, &tarball, &sha, restore, &ptx).await;
                (client, r)
            });
        }
        drop(ptx);
        let mut failed: Vec<String> = vec![];
        loop {
            tokio::select! {
                Some(line) = prx.recv() => out.line(line).await,
                r = set.join_next() => match r {
                    None => break,
                    Some(Ok((_, Ok(())))) => {}
                    Some(Ok((_, Err(e)))) => {
                        out.line(format!(" !     {e}")).await;
                        failed.push(e.to_string());
                    }
                    Some(Err(e)) => failed.push(format!("internal error: {e}")),
                }
            }
        }
        while let Ok(line) = prx.try_recv() {
            out.line(line).await;
        }
        if !failed.is_empty() || out.closed() {
            let why = failed
                .into_iter()
                .next()
                .unwrap_or_else(|| "the pusher went away".into());
            out.line(format!(" !     deploy aborted on every node; {still}"))
                .await;
            return Err(why);
        }
    }
    let first = clients
        .iter()
        .min_by(|a, b| a.name.cmp(&b.name))
        .expect("at least one node");
    for (i, (kind, cmd)) in phases.iter().enumerate() {
        let client = first;
        let what = phase_name(kind);
        out.line(format!("-----> Running {what} on {}: {cmd}", client.name))
            .await;
        let req = ReleasePhaseReq {
            app: napp.clone(),
            release: name.clone(),
            image: manifest.stack_image.clone(),
            command: cmd.clone(),
            env: vars.clone(),
            memory,
            cpu,
            timeout_ms: 3_600_000,
            snapshot: (i == 0).then(|| format!("before-v{}", release.version)),
            uid,
            kind: Some(kind.to_string()),
        };
        let err = match one_off(client, &req, out).await {
            Ok(0) => None,
            Ok(code) => Some(format!("{what} failed (exit {code})")),
            Err(e) => Some(e),
        };
        if let Some(e) = err {
            out.line(format!(" !     {e}")).await;
            // Whatever the command wrote before failing is undone: the data dir goes back to
            // the snapshot taken just before it ran.
            let restore = RestoreDataReq {
                app: napp.clone(),
                label: format!("before-v{}", release.version),
                if_exists: false,
            };
            match client.send(&restore).await {
                Ok(_) => {
                    out.line(format!(
                        " !     {}: data dir restored from before the release command",
                        client.name
                    ))
                    .await
                }
                Err(re) => {
                    out.line(format!(" !     could not restore the data dir: {re}"))
                        .await
                }
            }
            out.line(format!(" !     deploy aborted on every node; {still}"))
                .await;
            return Err(e);
        }
    }

    // Phase 2: start the new processes everywhere, in parallel, and health-check them.
    let mut set = JoinSet::new();
    let (ptx, mut prx) = tokio::sync::mpsc::channel::<String>(256);
    for (i, client) in clients.iter().enumerate() {
        let client = client.clone();
        let known = statuses[i].take();
        let processes: Vec<ProcessGroup> = placement[i]
            .iter()
            .filter(|(_, idx)| !idx.is_empty())
            .map(|(ptype, idx)| ProcessGroup {
                ptype: ptype.clone(),
                command: manifest.processes[ptype].clone(),
                count: idx.len() as u32,
                indices: idx.clone(),
            })
            .collect();
        let mut env_vars: BTreeMap<String, String> = vars.clone();
        env_vars.insert("GIT_REV".into(), release.git_sha.clone());
        let req = PrepareReq {
            app: napp.clone(),
            release: name.clone(),
            image: manifest.stack_image.clone(),
            processes,
            env: env_vars,
            memory,
            cpu,
            health: target.health.clone(),
            checks: checks.clone(),
            grace_ms: 2_000,
            generation,
            uid,
            // Where the router will connect: web ports are published there.
            publish_ip: Some(node_ip(&client.addr)),
        };
        let (tarball, sha, ptx) = (tarball.clone(), release.sha256.clone(), ptx.clone());
        // Staged nodes have the release (and restored data) already.
        let restore = opts.restore_data_from.filter(|_| !staged);
        set.spawn(async move {
            let r = prepare_node(&client, &req, known, &tarball, &sha, restore, ptx).await;
            (client, r)
        });
    }
    drop(ptx);
    let mut prepared: Vec<(NodeClient, PrepareReply)> = vec![];
    let mut failed: Vec<String> = vec![];
    loop {
        tokio::select! {
            Some(line) = prx.recv() => out.line(line).await,
            r = set.join_next() => match r {
                None => break,
                Some(Ok((client, Ok(reply)))) => {
                    out.line(format!("-----> {}: v{} started and healthy ({} process{})", client.name, release.version,
                        reply.processes.len(), if reply.processes.len() == 1 { "" } else { "es" })).await;
                    prepared.push((client, reply));
                }
                Some(Ok((_, Err(e)))) => {
                    out.line(format!(" !     {e}")).await;
                    failed.push(e.to_string());
                }
                Some(Err(e)) => failed.push(format!("internal error: {e}")),
            }
        }
    }
    while let Ok(line) = prx.try_recv() {
        out.line(line).await;
    }
    if !failed.is_empty() || out.closed() {
        abort_all(&prepared, &napp, &name, generation).await;
        let why = failed
            .first()
            .cloned()
            .unwrap_or_else(|| "the pusher went away".into());
        out.line(format!(" !     deploy aborted on every node; {still}"))
            .await;
        return Err(why);
    }

    // Phase 3: switch everywhere.
    let mut set = JoinSet::new();
    for (client, _) in &prepared {
        let client = client.clone();
        let req = SwitchReq {
            app: napp.clone(),
            release: name.clone(),
        };
        set.spawn(async move {
            let r = client.send(&req).await;
            (client, r)
        });
    }
    let mut switched: Vec<(NodeClient, Option<String>)> = vec![];
    let mut switch_err = None;
    while let Some(r) = set.join_next().await {
        match r {
            Ok((c, Ok(rep))) => {
                switched.push((c, rep.previous));
                crate::failpoint::hit("switch")
            }
            Ok((c, Err(e))) => {
                out.line(format!(" !     {}: switch failed: {e}", c.name))
                    .await;
                switch_err = Some(e.to_string());
            }
            Err(e) => switch_err = Some(e.to_string()),
        }
    }
    if let Some(e) = switch_err {
        for (c, prev) in &switched {
            if let Some(prev) = prev {
                let back = SwitchReq {
                    app: napp.clone(),
                    release: prev.clone(),
                };
                let _ = c.send(&back).await;
            }
        }
        abort_all(&prepared, &napp, &name, generation).await;
        out.line(format!(" !     switched nodes were switched back; {still}"))
            .await;
        return Err(e);
    }

    // Phase 4: the router moves to the new processes in one step; old ones drain, then stop.
    let key = route_key(&app, &env);
    let old: Vec<SocketAddr> = host.router().upstreams(&key);
    let new: Vec<SocketAddr> = prepared
        .iter()
        .flat_map(|(c, rep)| {
            let ip = node_ip(&c.addr);
            rep.processes
                .iter()
                .filter(|p| p.ptype == "web")
                .filter_map(move |p| format!("{ip}:{}", p.port).parse().ok())
                .collect::<Vec<_>>()
        })
        .collect();
    // A restart of workers alone leaves the web processes, and so the routes, as they are.
    if opts.only.as_ref().is_none_or(|t| t == "web") {
        host.router().set_upstreams(&key, new);
    }
    let stale: Vec<SocketAddr> = old
        .into_iter()
        .filter(|a| !host.router().upstreams(&key).contains(a))
        .collect();

    crate::failpoint::hit("go-live");
    // From here the new release serves: record it before the old processes go.
    let _ = host.store().set_live(&app, &env, release.version, &names);
    let sealed_map = host.seal(&serde_json::to_vec(&config).unwrap_or_default());
    let _ = host
        .store()
        .set_release_config(&app, release.version, &env, &sealed_map);
    if opts.config.is_some() {
        let sealed = config
            .iter()
            .map(|(k, v)| (k.clone(), host.seal(v.as_bytes())))
            .collect();
        let _ = host.store().replace_config(&app, &env, &sealed);
    }
    if let Some(f) = &opts.formation {
        let _ = host.store().set_formation(&app, &env, f);
    }
    if let Some(s) = opts.stopped {
        let _ = host.store().set_stopped(&app, &env, s);
    }
    // app.json's `scripts.dokku.postdeploy`: after the switch, so a failure is reported but
    // the new release stays live (as on Dokku).
    if let Some(cmd) = app_json.postdeploy().filter(|_| !opts.skip_release_phase) {
        let client = first;
        let what = phase_name("postdeploy");
        out.line(format!("-----> Running {what} on {}: {cmd}", client.name))
            .await;
        let req = ReleasePhaseReq {
            app: napp.clone(),
            release: name.clone(),
            image: manifest.stack_image.clone(),
            command: cmd.to_string(),
            env: vars.clone(),
            memory,
            cpu,
            timeout_ms: 3_600_000,
            snapshot: None,
            uid,
            kind: Some("postdeploy".into()),
        };
        match one_off(client, &req, out).await {
            Ok(0) => {}
            Ok(code) => {
                out.line(format!(
                    " !     {what} failed (exit {code}); v{} stays live",
                    release.version
                ))
                .await
            }
            Err(e) => {
                out.line(format!(
                    " !     {what} failed ({e}); v{} stays live",
                    release.version
                ))
                .await
            }
        }
    }
    // Old releases stay unpacked for instant rollback: keep the newest few on each node.
    let mut keep = vec![name.clone()];
    if let Some(p) = previous
        .as_ref()
        .and_then(|p| host.store().release(&app, p.version).ok().flatten())
    {
        keep.push(release_name(p.version, &p.sha256));
    }
    let retire = RetireReq {
        app: napp.clone(),
        release: name.clone(),
        generation,
        only: opts.only.iter().cloned().collect(),
    };
    let tail = {
        let (host, prepared, app) = (host.clone(), prepared.clone(), app.clone());
        async move {
            host.router().drain(&stale, Duration::from_secs(30)).await;
            let mut set = JoinSet::new();
            for (client, _) in &prepared {
                let (client, req) = (client.clone(), retire.clone());
                set.spawn(async move { client.send(&req).await });
            }
            while set.join_next().await.is_some() {}
            gc_nodes(&host, &prepared, &app, &retire.app, keep).await;
        }
    };
    match held.take().filter(|_| opts.background_tail) {
        // The old processes drain and stop after the command returns; the deploy lock goes
        // with them, so the next rollout of this environment waits for it.
        Some(guard) => {
            tokio::spawn(async move {
                tail.await;
                drop(guard);
            });
        }
        None => tail.await,
    }
    out.line(format!(
        "-----> v{} of {app} is live in {env} on {}",
        release.version,
        names.join(", ")
    ))
    .await;
    Ok(())
}

/// How many more processes of `memory` bytes (and `cpu` CPUs, when asked) each node takes,
/// the statuses that told (prepare reuses them), and each node's room in words. A node takes
/// what fits in the memory and CPUs it offers ([`Capacity`], the machine's by default)
/// beside what other apps' processes were given, and no more than its `--slots` cap (0:
/// none) minus their count.
/// This app's own processes do not count: the rollout replaces them. A node that does not
/// answer fails the rollout here, before anything started.
async fn free_capacity(
    clients: &[NodeClient],
    nodes: &[NodeRow],
    app: &str,
    memory: i64,
    cpu: f64,
) -> Result<(Vec<i64>, Vec<Option<StatusReply>>, Vec<String>), String> {
    let mut free: Vec<i64> = vec![0; nodes.len()];
    let mut statuses: Vec<Option<StatusReply>> = vec![None; nodes.len()];
    let mut room: Vec<String> = vec![String::new(); nodes.len()];
    let mut set = JoinSet::new();
    for (i, client) in clients.iter().enumerate() {
        let client = client.clone();
        set.spawn(async move {
            let r = client.send(&StatusReq).await;
            (i, r)
        });
    }
    while let Some(r) = set.join_next().await {
        let (i, r) = r.map_err(|e| e.to_string())?;
        let status = r.map_err(|e| e.to_string())?;
        let others: Vec<&crate::node::proto::ProcInfo> = status
            .apps
            .iter()
            .filter(|(a, _)| a.as_str() != app)
            .flat_map(|(_, s)| s.processes.iter())
            .filter(|p| p.state == "running" || p.state == "restarting")
            .collect();
        let mut n = i64::MAX;
        let mut why = vec![];
        if nodes[i].slots > 0 {
            n = nodes[i].slots - others.len() as i64;
            why.push(format!("{} of {} slots used", others.len(), nodes[i].slots));
        }
        if let Some(c) = status.capacity {
            // A process from before limits were recorded counts as this one's size.
            let used: i64 = others
                .iter()
                .map(|p| if p.memory > 0 { p.memory } else { memory })
                .sum();
            n = n.min((c.memory - used).max(0) / memory.max(1));
            why.push(format!(
                "{} MiB of {} MiB free",
                (c.memory - used).max(0) >> 20,
                c.memory >> 20
            ));
            // CPUs count only for apps that ask for a share (`cpu:`), against the shares
            // others were given.
            if cpu > 0.0 && c.cpus > 0 {
                let taken: f64 = others.iter().map(|p| p.cpu).sum();
                let left = (c.cpus as f64 - taken).max(0.0);
                n = n.min((left / cpu + 1e-9).floor() as i64);
                why.push(format!("{left:.2} of {} CPUs free", c.cpus));
            }
        }
        free[i] = n.clamp(0, 1_000_000);
        room[i] = format!("{}: {}", nodes[i].name, why.join(", "));
        statuses[i] = Some(status);
    }
    Ok((free, statuses, room))
}

/// How a one-off phase is named to the pusher.
fn phase_name(kind: &str) -> &'static str {
    match kind {
        "predeploy" => "predeploy script (app.json scripts.dokku.predeploy)",
        "postdeploy" => "postdeploy script (app.json scripts.dokku.postdeploy)",
        _ => "release command",
    }
}

/// Runs a one-off phase (release command, predeploy, postdeploy) on `client`, its output
/// streamed to the pusher; its exit code.
async fn one_off(
    client: &NodeClient,
    req: &ReleasePhaseReq,
    out: &mut Sink,
) -> Result<i64, String> {
    let (ltx, mut lrx) = tokio::sync::mpsc::channel::<String>(256);
    // The node bounds the command itself; a dead node is found out by keepalives.
    let within = Duration::from_millis(req.timeout_ms) + Duration::from_secs(60);
    let long = client.clone().answer_within(within);
    let call = long.send_with_progress(req, ltx);
    tokio::pin!(call);
    let res = loop {
        tokio::select! {
            r = &mut call => break r,
            Some(l) = lrx.recv() => { crate::failpoint::hit("release-command"); out.line(format!("       {l}")).await }
        }
    };
    while let Ok(l) = lrx.try_recv() {
        out.line(format!("       {l}")).await;
    }
    res.map(|r| r.code).map_err(|e| e.to_string())
}

/// Readies a node for a release: it receives the tarball unless it has it, and restores a
/// data snapshot when asked (rollback --with-data). Nothing starts.
#[allow(clippy::too_many_arguments)]
async fn stage_node(
    client: &NodeClient,
    app: &str,
    release: &str,
    known: Option<StatusReply>,
    tarball: &std::path::Path,
    sha: &str,
    restore: Option<i64>,
    progress: &tokio::sync::mpsc::Sender<String>,
) -> Result<(), NodeError> {
    let status: StatusReply = match known {
        Some(s) => s,
        None => client.send(&StatusReq).await?,
    };
    let present = status
        .apps
        .get(app)
        .is_some_and(|a| a.releases.iter().any(|r| r == release));
    if !present {
        let req = ReceiveReq {
            app: app.to_string(),
            release: release.to_string(),
            sha256: sha.to_string(),
        };
        client.upload(&req, tarball).await?;
        crate::failpoint::hit("prepare");
        let _ = progress
            .send(format!(
                "-----> {}: received {release} (sha256 verified)",
                client.name
            ))
            .await;
    }
    if let Some(v) = restore {
        let req = RestoreDataReq {
            app: app.to_string(),
            label: format!("before-v{v}"),
            if_exists: true,
        };
        let line = if client.send(&req).await?.restored {
            format!("-----> {}: data restored from before v{v}", client.name)
        } else {
            format!(
                "-----> {}: no data snapshot from before v{v} (its release command ran elsewhere)",
                client.name
            )
        };
        let _ = progress.send(line).await;
    }
    Ok(())
}

/// Stages the node (see [`stage_node`]; a staged node has the release, so this only asks
/// for its status), then starts the release's processes there and health-checks them.
async fn prepare_node(
    client: &NodeClient,
    req: &PrepareReq,
    known: Option<StatusReply>,
    tarball: &std::path::Path,
    sha: &str,
    restore: Option<i64>,
    progress: tokio::sync::mpsc::Sender<String>,
) -> Result<PrepareReply, NodeError> {
    stage_node(
        client,
        &req.app,
        &req.release,
        known,
        tarball,
        sha,
        restore,
        &progress,
    )
    .await?;
    let (ltx, mut lrx) = tokio::sync::mpsc::channel::<String>(64);
    let name = client.name.clone();
    let fwd = tokio::spawn(async move {
        while let Some(l) = lrx.recv().await {
            crate::failpoint::hit("health-check");
            let _ = progress.send(format!("       {name}: {l}")).await;
        }
    });
    let r = client.send_with_progress(req, ltx).await;
    let _ = fwd.await;
    r
}

async fn abort_all(
    prepared: &[(NodeClient, PrepareReply)],
    app: &str,
    name: &str,
    generation: u64,
) {
    let mut set = JoinSet::new();
    for (client, _) in prepared {
        let client = client.clone();
        let req = AbortReq {
            app: app.to_string(),
            release: name.to_string(),
            generation,
        };
        set.spawn(async move { client.send(&req).await });
    }
    while set.join_next().await.is_some() {}
}

/// Keep the newest releases unpacked (for rollback), plus the live and previous ones.
async fn gc_nodes<H: Host>(
    host: &Arc<H>,
    prepared: &[(NodeClient, PrepareReply)],
    app: &str,
    napp: &str,
    mut keep: Vec<String>,
) {
    let recent: Vec<String> = host
        .store()
        .list_releases(app)
        .unwrap_or_default()
        .iter()
        .take(5)
        .map(|r| release_name(r.version, &r.sha256))
        .collect();
    keep.extend(recent);
    // In parallel, like the other phases: one node at a time made a rollout's tail grow
    // with the number of nodes.
    let mut set = JoinSet::new();
    for (client, _) in prepared {
        let client = client.clone();
        let req = GcReq {
            app: napp.to_string(),
            keep: keep.clone(),
        };
        set.spawn(async move { client.send(&req).await });
    }
    while set.join_next().await.is_some() {}
}

/// After a controller restart: ask every node what runs, and point the router at the live
/// releases' web processes again. Nothing is redeployed.
pub async fn restore_routes<H: Host>(host: &Arc<H>) {
    let Ok(live) = host.store().all_live() else {
        return;
    };
    let Ok(nodes) = host.nodes() else { return };
    let mut statuses: Vec<(NodeRow, StatusReply)> = vec![];
    for n in nodes {
        match host.node_client(&n).send(&StatusReq).await {
            Ok(s) => statuses.push((n, s)),
            Err(e) => {
                tracing::warn!(node = %n.name, error = %e, "node unreachable while restoring routes")
            }
        }
    }
    for l in live {
        let Ok(Some(rel)) = host.store().release(&l.app, l.version) else {
            continue;
        };
        let name = release_name(rel.version, &rel.sha256);
        let mut ups = vec![];
        for (n, s) in &statuses {
            if !l.nodes.contains(&n.name) {
                continue;
            }
            if let Some(a) = s.apps.get(&node_app(&l.app, &l.env)) {
                for p in a
                    .processes
                    .iter()
                    .filter(|p| p.release == name && p.ptype == "web")
                {
                    if let Ok(addr) = format!("{}:{}", node_ip(&n.addr), p.port).parse() {
                        ups.push(addr);
                    }
                }
            }
        }
        tracing::info!(app = %l.app, env = %l.env, version = l.version, upstreams = ups.len(), "route restored");
        host.router().set_upstreams(&route_key(&l.app, &l.env), ups);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(c: &[(&str, Count)]) -> BTreeMap<String, Count> {
        c.iter().map(|(t, c)| (t.to_string(), *c)).collect()
    }

    #[test]
    fn placement_by_free_capacity() {
        // Defaults: web on every node, numbered across nodes; a worker once.
        let p = place(
            &counts(&[("web", Count::PerNode), ("worker", Count::Total(1))]),
            &[8, 8],
        )
        .unwrap();
        assert_eq!(p[0]["web"], vec![1]);
        assert_eq!(p[1]["web"], vec![2]);
        assert_eq!(p[0]["worker"], vec![1], "ties go to the first node");
        // web=3 on two equal nodes: 2 + 1, numbers global.
        let p = place(&counts(&[("web", Count::Total(3))]), &[8, 8]).unwrap();
        assert_eq!(p[0]["web"], vec![1, 3]);
        assert_eq!(p[1]["web"], vec![2]);
        // The fuller node gets less.
        let p = place(&counts(&[("web", Count::Total(3))]), &[1, 8]).unwrap();
        assert!(!p[0].contains_key("web"));
        assert_eq!(p[1]["web"], vec![1, 2, 3]);
        let p = place(&counts(&[("web", Count::Total(4))]), &[3, 4]).unwrap();
        assert_eq!(p[0]["web"], vec![2, 4]);
        assert_eq!(p[1]["web"], vec![1, 3]);
        // Zero means none; too many is refused with the numbers.
        let p = place(&counts(&[("web", Count::Total(0))]), &[8]).unwrap();
        assert!(p[0].get("web").is_none_or(Vec::is_empty));
        let e = place(&counts(&[("web", Count::Total(5))]), &[2, 2]).unwrap_err();
        assert!(e.contains("room for 4 more"), "{e}");
        let e = place(&counts(&[("web", Count::PerNode)]), &[2, 0]).unwrap_err();
        assert!(e.contains("node 2 has no room"), "{e}");
    }

    #[test]
    fn formation_defaults_and_precedence() {
        let types: Vec<String> = ["web", "worker", "once"].map(String::from).to_vec();
        let m = |v: &[(&str, u32)]| -> BTreeMap<String, u32> {
            v.iter().map(|(t, n)| (t.to_string(), *n)).collect()
        };
        let none = BTreeMap::new();
        // Heroku's default: web, nothing else.
        let f = formation(types.iter(), &none, &none, &none);
        assert_eq!(f["web"], Count::PerNode);
        assert_eq!(f["worker"], Count::Total(0));
        assert_eq!(f["once"], Count::Total(0));
        // app.json < magrathea.yml < scale, per type; unknown types ignored.
        let json = m(&[("worker", 2), ("web", 0), ("clock", 1)]);
        let yml = m(&[("worker", 3)]);
        let scaled = m(&[("worker", 4)]);
        let f = formation(types.iter(), &none, &none, &json);
        assert_eq!((f["web"], f["worker"]), (Count::Total(0), Count::Total(2)));
        assert!(!f.contains_key("clock"));
        let f = formation(types.iter(), &none, &yml, &json);
        assert_eq!(f["worker"], Count::Total(3));
        let f = formation(types.iter(), &scaled, &yml, &json);
        assert_eq!(f["worker"], Count::Total(4));
        assert_eq!(f["web"], Count::Total(0), "app.json still decides web");
    }

    #[test]
    fn keys_and_addresses() {
        assert_eq!(route_key("web", "production"), "web");
        assert_eq!(route_key("web", "staging"), "web-staging");
        assert_eq!(node_ip("127.0.0.1:2300"), "127.0.0.1");
    }
}
