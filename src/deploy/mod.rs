//! Rollouts: a release goes live on every target node of an environment, or on none.
//!
//! prepare everywhere (receive + verify + unpack, start new processes beside the old ones,
//! health-check) -> release phase once -> switch everywhere -> router swap + drain -> retire
//! the old processes. A failure before the switch aborts everywhere (old processes were
//! never touched); a failure during the switch switches the switched nodes back.

pub mod envs;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::build::Sink;
use crate::controller::Core;
use crate::node::client::{NodeCallError, NodeClient, Stdin};
use crate::node::proto::*;
use crate::release::Manifest;
use crate::store::{NodeRow, ReleaseRow};
pub use envs::EnvTarget;

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

/// Spread `total` processes over `n` nodes, first nodes first.
fn spread(total: u32, n: usize, i: usize) -> u32 {
    let n = n.max(1) as u32;
    total / n + u32::from((i as u32) < total % n)
}

pub async fn rollout(
    core: &Arc<Core>,
    release: &ReleaseRow,
    target: &EnvTarget,
    who: &str,
    out: &mut Sink,
    opts: RolloutOptions,
) -> DeployResult {
    let app = &release.app;
    let lock = core.deploy_lock(app, &target.env);
    let _held = match lock.clone().try_lock_owned() {
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
    let deploy_id = core
        .store
        .start_deploy(app, &target.env, release.version, who)
        .map_err(|e| e.to_string())?;
    let result = rollout_locked(core, release, target, out, &opts).await;
    let (status, detail) = match &result {
        Ok(()) => ("succeeded", String::new()),
        Err(e) => ("failed", e.clone()),
    };
    let _ = core.store.finish_deploy(deploy_id, status, &detail);
    result
}

#[derive(Debug, Clone, Default)]
pub struct RolloutOptions {
    /// Restore the data snapshot taken before this version's release phase (rollback --with-data).
    pub restore_data_from: Option<i64>,
    /// Use this config instead of the environment's current one, and make it current on
    /// success (rollback restores the config that went with a release).
    pub config: Option<BTreeMap<String, String>>,
}

async fn rollout_locked(
    core: &Arc<Core>,
    release: &ReleaseRow,
    target: &EnvTarget,
    out: &mut Sink,
    opts: &RolloutOptions,
) -> DeployResult {
    let app = release.app.clone();
    let env = target.env.clone();
    let name = release_name(release.version, &release.sha256);
    let manifest: Manifest =
        serde_json::from_str(&release.manifest).map_err(|e| format!("bad manifest: {e}"))?;
    let nodes = core
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
    let tarball = core.data.releases(&app).join(&release.file);
    let previous = core.store.live(&app, &env).map_err(|e| e.to_string())?;
    // Labels from magrathea.yml under the config vars; the config wins.
    let config = match &opts.config {
        Some(c) => c.clone(),
        None => core.config(&app, &env).map_err(|e| e.to_string())?,
    };
    let mut vars = target.vars.clone();
    vars.extend(config.clone());

    // Phase 1: prepare everywhere, in parallel.
    let mut set = JoinSet::new();
    let (ptx, mut prx) = tokio::sync::mpsc::channel::<String>(256);
    for (i, node) in nodes.iter().enumerate() {
        let client = core.node_client(node);
        let processes: Vec<ProcessGroup> = manifest
            .processes
            .iter()
            .filter_map(|(ptype, command)| {
                let count = match target.scale.get(ptype) {
                    Some(total) => spread(*total, nodes.len(), i),
                    // Defaults: a web process on every node; one of each other type overall.
                    None if ptype == "web" => 1,
                    None => u32::from(i == 0),
                };
                (count > 0).then(|| ProcessGroup {
                    ptype: ptype.clone(),
                    command: command.clone(),
                    count,
                })
            })
            .collect();
        let mut env_vars: BTreeMap<String, String> = vars.clone();
        env_vars.insert("GIT_REV".into(), release.git_sha.clone());
        let req = PrepareReq {
            app: app.clone(),
            release: name.clone(),
            image: manifest.stack_image.clone(),
            processes,
            env: env_vars,
            memory: core.limits.process_memory,
            health: target.health.clone(),
            grace_ms: 2_000,
        };
        let (tarball, sha, ptx) = (tarball.clone(), release.sha256.clone(), ptx.clone());
        let restore = opts.restore_data_from;
        set.spawn(async move {
            let r = prepare_node(&client, &req, &tarball, &sha, restore, ptx).await;
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
    let still = previous
        .as_ref()
        .map(|p| format!("v{} still serves", p.version))
        .unwrap_or_else(|| "nothing was running before".into());
    if !failed.is_empty() || out.closed() {
        abort_all(&prepared, &app, &name).await;
        let why = failed
            .first()
            .cloned()
            .unwrap_or_else(|| "the pusher went away".into());
        out.line(format!(" !     deploy aborted on every node; {still}"))
            .await;
        return Err(why);
    }

    // Phase 2: the release phase, once, on one node, before anything switches.
    if let Some(cmd) = &manifest.release {
        let (client, _) = &prepared[0];
        out.line(format!(
            "-----> Running release command on {}: {cmd}",
            client.name
        ))
        .await;
        let req = ReleasePhaseReq {
            app: app.clone(),
            release: name.clone(),
            image: manifest.stack_image.clone(),
            command: cmd.clone(),
            env: vars.clone(),
            memory: core.limits.process_memory,
            timeout_ms: 3_600_000,
            snapshot: Some(format!("before-v{}", release.version)),
        };
        let (ltx, mut lrx) = tokio::sync::mpsc::channel::<String>(256);
        let body = serde_json::to_vec(&req).unwrap_or_default();
        let call = client.call::<CodeReply>("release-phase", Stdin::Bytes(body), Some(ltx));
        tokio::pin!(call);
        let res = loop {
            tokio::select! {
                r = &mut call => break r,
                Some(l) = lrx.recv() => out.line(format!("       {l}")).await,
            }
        };
        while let Ok(l) = lrx.try_recv() {
            out.line(format!("       {l}")).await;
        }
        let err = match res {
            Ok(CodeReply { code: 0 }) => None,
            Ok(CodeReply { code }) => Some(format!("release command failed (exit {code})")),
            Err(e) => Some(e.to_string()),
        };
        if let Some(e) = err {
            out.line(format!(" !     {e}")).await;
            abort_all(&prepared, &app, &name).await;
            out.line(format!(" !     deploy aborted on every node; {still}"))
                .await;
            return Err(e);
        }
    }

    // Phase 3: switch everywhere.
    let mut set = JoinSet::new();
    for (client, _) in &prepared {
        let client = client.clone();
        let body = serde_json::to_vec(&AppRelease {
            app: app.clone(),
            release: name.clone(),
        })
        .unwrap_or_default();
        set.spawn(async move {
            let r = client
                .call::<SwitchReply>("switch", Stdin::Bytes(body), None)
                .await;
            (client, r)
        });
    }
    let mut switched: Vec<(NodeClient, Option<String>)> = vec![];
    let mut switch_err = None;
    while let Some(r) = set.join_next().await {
        match r {
            Ok((c, Ok(rep))) => switched.push((c, rep.previous)),
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
                let body = serde_json::to_vec(&AppRelease {
                    app: app.clone(),
                    release: prev.clone(),
                })
                .unwrap_or_default();
                let _ = c
                    .call::<SwitchReply>("switch", Stdin::Bytes(body), None)
                    .await;
            }
        }
        abort_all(&prepared, &app, &name).await;
        out.line(format!(" !     switched nodes were switched back; {still}"))
            .await;
        return Err(e);
    }

    // Phase 4: the router moves to the new processes in one step; old ones drain, then stop.
    let key = route_key(&app, &env);
    let old: Vec<SocketAddr> = core.router.upstreams(&key);
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
    core.router.set_upstreams(&key, new);
    let stale: Vec<SocketAddr> = old
        .into_iter()
        .filter(|a| !core.router.upstreams(&key).contains(a))
        .collect();
    core.router.drain(&stale, Duration::from_secs(30)).await;
    let mut set = JoinSet::new();
    for (client, _) in &prepared {
        let client = client.clone();
        let body = serde_json::to_vec(&AppRelease {
            app: app.clone(),
            release: name.clone(),
        })
        .unwrap_or_default();
        set.spawn(async move {
            client
                .call::<serde_json::Value>("retire", Stdin::Bytes(body), None)
                .await
        });
    }
    while set.join_next().await.is_some() {}

    let _ = core.store.set_live(&app, &env, release.version, &names);
    let _ = core
        .store
        .set_release_config(&app, release.version, &env, &core.seal_map(&config));
    if opts.config.is_some() {
        let _ = core.replace_config(&app, &env, &config);
    }
    // Old releases stay unpacked for instant rollback: keep the newest few on each node.
    let mut keep = vec![name.clone()];
    if let Some(p) = previous
        .as_ref()
        .and_then(|p| core.store.release(&app, p.version).ok().flatten())
    {
        keep.push(release_name(p.version, &p.sha256));
    }
    gc_nodes(core, &prepared, &app, keep).await;
    out.line(format!(
        "-----> v{} of {app} is live in {env} on {}",
        release.version,
        names.join(", ")
    ))
    .await;
    Ok(())
}

async fn prepare_node(
    client: &NodeClient,
    req: &PrepareReq,
    tarball: &std::path::Path,
    sha: &str,
    restore: Option<i64>,
    progress: tokio::sync::mpsc::Sender<String>,
) -> Result<PrepareReply, NodeCallError> {
    let status: StatusReply = client.call("status", Stdin::Empty, None).await?;
    let present = status
        .apps
        .get(&req.app)
        .is_some_and(|a| a.releases.contains(&req.release));
    if !present {
        let cmd = format!("receive {} {} {}", req.app, req.release, sha);
        let _: serde_json::Value = client
            .call(&cmd, Stdin::File(tarball.to_path_buf()), None)
            .await?;
        let _ = progress
            .send(format!(
                "-----> {}: received {} (sha256 verified)",
                client.name, req.release
            ))
            .await;
    }
    if let Some(v) = restore {
        let body = serde_json::to_vec(&SnapshotReq {
            app: req.app.clone(),
            label: format!("before-v{v}"),
        })
        .unwrap_or_default();
        let _: serde_json::Value = client
            .call("restore-data", Stdin::Bytes(body), None)
            .await?;
        let _ = progress
            .send(format!(
                "-----> {}: data restored from before v{v}",
                client.name
            ))
            .await;
    }
    let body = serde_json::to_vec(req).unwrap_or_default();
    let (ltx, mut lrx) = tokio::sync::mpsc::channel::<String>(64);
    let name = client.name.clone();
    let fwd = tokio::spawn(async move {
        while let Some(l) = lrx.recv().await {
            let _ = progress.send(format!("       {name}: {l}")).await;
        }
    });
    let r = client.call("prepare", Stdin::Bytes(body), Some(ltx)).await;
    let _ = fwd.await;
    r
}

async fn abort_all(prepared: &[(NodeClient, PrepareReply)], app: &str, name: &str) {
    let mut set = JoinSet::new();
    for (client, _) in prepared {
        let client = client.clone();
        let body = serde_json::to_vec(&AppRelease {
            app: app.to_string(),
            release: name.to_string(),
        })
        .unwrap_or_default();
        set.spawn(async move {
            client
                .call::<serde_json::Value>("abort", Stdin::Bytes(body), None)
                .await
        });
    }
    while set.join_next().await.is_some() {}
}

/// Keep the newest releases unpacked (for rollback), plus the live and previous ones.
async fn gc_nodes(
    core: &Arc<Core>,
    prepared: &[(NodeClient, PrepareReply)],
    app: &str,
    mut keep: Vec<String>,
) {
    let recent: Vec<String> = core
        .store
        .list_releases(app)
        .unwrap_or_default()
        .iter()
        .take(5)
        .map(|r| release_name(r.version, &r.sha256))
        .collect();
    keep.extend(recent);
    for (client, _) in prepared {
        let body = serde_json::to_vec(&GcReq {
            app: app.to_string(),
            keep: keep.clone(),
        })
        .unwrap_or_default();
        let _ = client
            .call::<serde_json::Value>("gc", Stdin::Bytes(body), None)
            .await;
    }
}

/// After a controller restart: ask every node what runs, and point the router at the live
/// releases' web processes again. Nothing is redeployed.
pub async fn restore_routes(core: &Arc<Core>) {
    let Ok(live) = core.store.all_live() else {
        return;
    };
    let Ok(nodes) = core.all_nodes() else { return };
    let mut statuses: Vec<(NodeRow, StatusReply)> = vec![];
    for n in nodes {
        match core
            .node_client(&n)
            .call::<StatusReply>("status", Stdin::Empty, None)
            .await
        {
            Ok(s) => statuses.push((n, s)),
            Err(e) => {
                tracing::warn!(node = %n.name, error = %e, "node unreachable while restoring routes")
            }
        }
    }
    for l in live {
        let Ok(Some(rel)) = core.store.release(&l.app, l.version) else {
            continue;
        };
        let name = release_name(rel.version, &rel.sha256);
        let mut ups = vec![];
        for (n, s) in &statuses {
            if !l.nodes.contains(&n.name) {
                continue;
            }
            if let Some(a) = s.apps.get(&l.app) {
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
        core.router.set_upstreams(&route_key(&l.app, &l.env), ups);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn spreading() {
        let v: Vec<u32> = (0..3).map(|i| super::spread(4, 3, i)).collect();
        assert_eq!(v, vec![2, 1, 1]);
        assert_eq!((0..2).map(|i| super::spread(3, 2, i)).sum::<u32>(), 3);
        assert_eq!(super::route_key("web", "production"), "web");
        assert_eq!(super::route_key("web", "staging"), "web-staging");
        assert_eq!(super::node_ip("127.0.0.1:2300"), "127.0.0.1");
    }
}
