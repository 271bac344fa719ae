//! The swarm backend: an environment with `cluster: NAME` runs on a Docker Swarm through the
//! `magrathea agent --swarm` on one of its managers. The whole cluster is one [`Place`]: the
//! agent creates the services beside the old ones and answers once every task runs and
//! passes its health check, so the rollout's phases (and its all-or-nothing switch) are the
//! ones the nodes go through. What differs is where the router reaches a process (the
//! address of the swarm node its task landed on) and that Swarm moves tasks on its own:
//! [`follow`] keeps every swarm environment's routes on its running tasks.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::agents::{node_ip, Agents};
use super::backend::{Backend, BoxFut, Delivery, Place, PlaceError, Room};
use super::{node_app, route_key, Host};
use crate::node::proto::*;
use crate::store::NodeRow;

/// One cluster, as the single place of an environment.
pub(crate) struct Cluster {
    places: Vec<Arc<dyn Place>>,
}

impl Cluster {
    pub(crate) fn new<H: Host>(host: &H, row: NodeRow, placement: Vec<String>) -> Cluster {
        let addr = node_ip(&row.addr);
        let agent = Agents::new(host, vec![row]).places()[0].clone();
        Cluster {
            places: vec![Arc::new(SwarmPlace {
                agent,
                placement,
                addr,
            })],
        }
    }
}

impl Backend for Cluster {
    fn places(&self) -> &[Arc<dyn Place>] {
        &self.places
    }
}

/// The swarm agent, driven as a node, with the environment's placement constraints.
struct SwarmPlace {
    agent: Arc<dyn Place>,
    placement: Vec<String>,
    /// The agent's own address (a process without one of its own is there).
    addr: String,
}

impl Place for SwarmPlace {
    fn name(&self) -> &str {
        self.agent.name()
    }

    fn room<'a>(
        &'a self,
        app: &'a str,
        memory: i64,
        cpu: f64,
    ) -> BoxFut<'a, Result<Room, PlaceError>> {
        self.agent.room(app, memory, cpu)
    }

    fn stage<'a>(
        &'a self,
        d: &'a Delivery,
        progress: mpsc::Sender<String>,
    ) -> BoxFut<'a, Result<(), PlaceError>> {
        self.agent.stage(d, progress)
    }

    fn one_off<'a>(
        &'a self,
        req: &'a ReleasePhaseReq,
        lines: mpsc::Sender<String>,
    ) -> BoxFut<'a, Result<i64, PlaceError>> {
        self.agent.one_off(req, lines)
    }

    fn restore_data<'a>(&'a self, req: RestoreDataReq) -> BoxFut<'a, Result<bool, PlaceError>> {
        self.agent.restore_data(req)
    }

    fn prepare<'a>(
        &'a self,
        mut req: PrepareReq,
        d: &'a Delivery,
        progress: mpsc::Sender<String>,
    ) -> BoxFut<'a, Result<PrepareReply, PlaceError>> {
        req.placement = self.placement.clone();
        self.agent.prepare(req, d, progress)
    }

    fn switch<'a>(&'a self, to: SwitchReq) -> BoxFut<'a, Result<Option<String>, PlaceError>> {
        self.agent.switch(to)
    }

    fn abort<'a>(&'a self, what: AbortReq) -> BoxFut<'a, Result<(), PlaceError>> {
        self.agent.abort(what)
    }

    fn retire<'a>(&'a self, keep: RetireReq) -> BoxFut<'a, Result<(), PlaceError>> {
        self.agent.retire(keep)
    }

    fn gc<'a>(&'a self, req: GcReq) -> BoxFut<'a, Result<(), PlaceError>> {
        self.agent.gc(req)
    }

    fn upstreams(&self, started: &PrepareReply) -> Vec<SocketAddr> {
        started
            .processes
            .iter()
            .filter(|p| p.ptype == "web")
            .filter_map(|p| {
                let ip = p.addr.as_deref().unwrap_or(&self.addr);
                format!("{ip}:{}", p.port).parse().ok()
            })
            .collect()
    }

    fn publish_ip(&self) -> Option<String> {
        self.agent.publish_ip()
    }
}

/// The running web tasks of a release, as router upstreams, sorted.
pub(crate) fn web_upstreams(status: &StatusReply, napp: &str, release: &str) -> Vec<SocketAddr> {
    let mut ups: Vec<SocketAddr> = status
        .apps
        .get(napp)
        .map(|a| a.processes.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|p| p.release == release && p.ptype == "web" && p.state == "running")
        .filter_map(|p| format!("{}:{}", p.addr.as_deref()?, p.port).parse().ok())
        .collect();
    ups.sort();
    ups
}

/// Keeps the routes of every environment that runs on a cluster on its live release's
/// running web tasks, as Swarm restarts and reschedules them (a node dies: its tasks start
/// elsewhere, and the router follows within about a second of Swarm). An environment in
/// the middle of a rollout is left to it (its deploy lock is held).
pub async fn follow<H: Host>(host: Arc<H>, stop: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(700)) => {}
        }
        follow_once(&host).await;
    }
}

async fn follow_once<H: Host>(host: &Arc<H>) {
    let Ok(nodes) = host.nodes() else { return };
    let clusters: Vec<NodeRow> = nodes.into_iter().filter(|n| n.is_cluster()).collect();
    if clusters.is_empty() {
        return;
    }
    let Ok(live) = host.store().all_live() else {
        return;
    };
    for c in clusters {
        // A rollout owns the routes while it runs: its environments are skipped, and the
        // others stay locked from before their live release is read to after their routes
        // are set (else a status read before a flip could put the old tasks back after it).
        let mut held = vec![];
        for l in live.iter().filter(|l| l.nodes == [c.name.clone()]) {
            if let Ok(g) = host.deploy_lock(&l.app, &l.env).try_lock_owned() {
                held.push((l.app.clone(), l.env.clone(), g));
            }
        }
        if held.is_empty() {
            continue;
        }
        let status = match host.node_client(&c).send(&StatusReq).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(cluster = %c.name, error = %e, "cluster unreachable");
                continue;
            }
        };
        for (app, env, _held) in &held {
            let Ok(Some(l)) = host.store().live(app, env) else {
                continue;
            };
            if l.nodes != [c.name.clone()] {
                continue;
            }
            let Ok(Some(rel)) = host.store().release(&l.app, l.version) else {
                continue;
            };
            let ups = web_upstreams(
                &status,
                &node_app(&l.app, &l.env),
                &release_name(rel.version, &rel.sha256),
            );
            let key = route_key(&l.app, &l.env);
            let now: BTreeSet<SocketAddr> = host.router().upstreams(&key).into_iter().collect();
            let new: BTreeSet<SocketAddr> = ups.iter().copied().collect();
            // No running task at all (the swarm is still rescheduling): keep what we have.
            if now != new && !new.is_empty() {
                tracing::info!(app = %l.app, env = %l.env, upstreams = ups.len(), "routes follow the cluster");
                host.router().set_upstreams(&key, ups);
            }
        }
    }
}
