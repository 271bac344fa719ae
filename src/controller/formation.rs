//! What runs: the processes of an environment as its nodes report them, and the use cases
//! that change it (scale, restart, stop, start). Every change is a rollout of the live
//! release: new processes start beside the old ones, pass their health checks on every
//! node, then the router moves and the old ones drain. All or nothing, like a deploy.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::task::JoinSet;

use super::releases::Live;
use super::{Core, CoreError};
use crate::deploy::{self, envs, Count, RolloutOptions};
use crate::node::proto::StatusReq;
use crate::release::Manifest;
use crate::sink::Sink;

/// More than this per type is surely a typo.
pub const MAX_PER_TYPE: u32 = 100;

/// One process as `ps` shows it.
#[derive(serde::Serialize)]
pub struct ProcessRow {
    pub process: String,
    pub node: String,
    pub release: String,
    pub state: String,
    pub uptime_secs: Option<i64>,
    pub restarts: i64,
    pub port: u16,
}

/// The processes of an environment, in process order, and the nodes that did not answer.
pub struct Processes {
    pub rows: Vec<ProcessRow>,
    pub unreachable: Vec<String>,
}

/// What a `scale` did.
pub enum Scaled {
    /// Nothing is deployed yet: remembered for the first deploy.
    Remembered,
    /// The counts were already running (remembered all the same).
    Unchanged,
    Rolled,
}

/// A process type the manifest's Procfile defines.
pub fn check_type(t: &str, manifest: &Manifest) -> Result<(), CoreError> {
    crate::names::check("process type", t)?;
    if !manifest.processes.contains_key(t) {
        let known: Vec<&str> = manifest.processes.keys().map(String::as_str).collect();
        return Err(CoreError::Invalid(format!(
            "the live release has no process type '{t}' (it has: {})",
            known.join(", ")
        )));
    }
    Ok(())
}

impl Core {
    /// Every process of the environment's live release, asked of the nodes it is live on.
    pub async fn processes(&self, app: &str, env: &str) -> Result<Processes, CoreError> {
        let Live { live, .. } = self.live_release(app, env)?;
        let nodes = self.all_nodes()?;
        let mut set = JoinSet::new();
        for n in nodes.iter().filter(|n| live.nodes.contains(&n.name)) {
            let client = self.node_client(n);
            set.spawn(async move {
                let r = client.send(&StatusReq).await;
                (client.name.clone(), r)
            });
        }
        let mut rows = vec![];
        let mut unreachable = vec![];
        let now = crate::timefmt::now();
        while let Some(r) = set.join_next().await {
            let Ok((node, r)) = r else { continue };
            let status = match r {
                Ok(s) => s,
                Err(e) => {
                    unreachable.push(e.to_string());
                    continue;
                }
            };
            let Some(a) = status.apps.get(&deploy::node_app(app, env)) else {
                continue;
            };
            for p in &a.processes {
                let up = crate::timefmt::parse_rfc3339(&p.started_at)
                    .filter(|_| p.state == "running")
                    .map(|(t, _)| (now - t).max(0));
                rows.push(ProcessRow {
                    process: format!("{}.{}", p.ptype, p.index),
                    // A swarm task: the swarm node it landed on.
                    node: p.node.clone().unwrap_or_else(|| node.clone()),
                    release: p.release.split('-').next().unwrap_or("").to_string(),
                    state: p.state.clone(),
                    uptime_secs: up,
                    restarts: p.restarts,
                    port: p.port,
                });
            }
        }
        rows.sort_by(|a, b| {
            let key = |r: &ProcessRow| {
                let (t, i) = r.process.rsplit_once('.').unwrap_or((&r.process, "0"));
                (t.to_string(), i.parse::<u32>().unwrap_or(0), r.node.clone())
            };
            key(a).cmp(&key(b))
        });
        Ok(Processes { rows, unreachable })
    }

    /// The live release's formation (every Procfile type, those at 0 too) and the number of
    /// nodes it is live on.
    pub async fn formation(
        self: &Arc<Self>,
        app: &str,
        env: &str,
    ) -> Result<(BTreeMap<String, Count>, usize), CoreError> {
        let Live { live, release } = self.live_release(app, env)?;
        let counts = deploy::current_formation(self, &release, env)
            .await
            .map_err(|e| CoreError::Invalid(e.to_string()))?;
        Ok((counts, live.nodes.len()))
    }

    /// Set process counts; checked against the live release's Procfile (any well-formed
    /// type before the first deploy, which then runs them).
    pub async fn scale(
        self: &Arc<Self>,
        who: &str,
        app: &str,
        env: &str,
        counts: BTreeMap<String, u32>,
        out: &mut Sink,
    ) -> Result<Scaled, CoreError> {
        crate::names::check("environment", env)?;
        if self.store.live(app, env)?.is_none() {
            for t in counts.keys() {
                crate::names::check("process type", t)?;
            }
            let _held = self.deploy_lock(app, env).lock_owned().await;
            self.store.set_formation(app, env, &counts)?;
            return Ok(Scaled::Remembered);
        }
        let live = self.live_release(app, env)?;
        let manifest = live.manifest()?;
        for t in counts.keys() {
            check_type(t, &manifest)?;
        }
        let current = deploy::current_formation(self, &live.release, env)
            .await
            .map_err(|e| CoreError::Invalid(e.to_string()))?;
        let nodes = self.store.live(app, env)?.map_or(1, |l| l.nodes.len());
        let same = |t: &String, n: &u32| match current.get(t) {
            Some(Count::Total(m)) => m == n,
            Some(Count::PerNode) => nodes as u32 == *n && nodes == 1,
            None => false,
        };
        if counts.iter().all(|(t, n)| same(t, n)) {
            // Remembered all the same: an explicit count outranks app.json and magrathea.yml.
            self.store.set_formation(app, env, &counts)?;
            return Ok(Scaled::Unchanged);
        }
        out.line(format!(
            "-----> Scaling {app} in {env} to {}",
            counts_text(&counts)
        ))
        .await;
        let opts = RolloutOptions {
            formation: Some(counts),
            ..Default::default()
        };
        self.roll(who, &live, env, opts, out).await?;
        Ok(Scaled::Rolled)
    }

    /// Rolling restart of every process, or of one type: new processes first, then the old
    /// ones drain.
    pub async fn restart(
        self: &Arc<Self>,
        who: &str,
        app: &str,
        env: &str,
        ptype: Option<&str>,
        out: &mut Sink,
    ) -> Result<(), CoreError> {
        let live = self.live_release(app, env)?;
        if self.store.stopped(app, env)? {
            return Err(CoreError::Invalid(format!(
                "{app} is stopped in {env}; `start {app}` runs it"
            )));
        }
        if let Some(t) = ptype {
            check_type(t, &live.manifest()?)?;
        }
        out.line(format!(
            "-----> Restarting {} of {app} in {env} (new processes first, then the old ones drain)",
            ptype.unwrap_or("every process")
        ))
        .await;
        let opts = RolloutOptions {
            only: ptype.map(str::to_string),
            ..Default::default()
        };
        self.roll(who, &live, env, opts, out).await
    }

    /// `stop` (true) and `start` (false). False when it already was so (nothing changed).
    pub async fn set_stopped(
        self: &Arc<Self>,
        who: &str,
        app: &str,
        env: &str,
        stop: bool,
        out: &mut Sink,
    ) -> Result<bool, CoreError> {
        let live = self.live_release(app, env)?;
        if self.store.stopped(app, env)? == stop {
            return Ok(false);
        }
        let opts = RolloutOptions {
            stopped: Some(stop),
            ..Default::default()
        };
        self.roll(who, &live, env, opts, out).await?;
        Ok(true)
    }

    /// A rollout of the live release that changes what runs (no release phase).
    async fn roll(
        self: &Arc<Self>,
        who: &str,
        live: &Live,
        env: &str,
        mut opts: RolloutOptions,
        out: &mut Sink,
    ) -> Result<(), CoreError> {
        opts.skip_release_phase = true;
        let target = envs::target_of_release(&self.data, &live.release, env);
        deploy::rollout(self, &live.release, &target, who, out, opts)
            .await
            .map_err(|e| CoreError::Failed(e.to_string()))
    }
}

/// `web=3 worker=1`.
pub fn counts_text(c: &BTreeMap<String, u32>) -> String {
    c.iter()
        .map(|(t, n)| format!("{t}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}
