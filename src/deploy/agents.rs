//! The SSH agents backend: each node an environment's selector picks is a [`Place`], driven
//! over the agent protocol (`node::client`, `node::proto`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::backend::{Backend, BoxFut, Delivery, Place, PlaceError, Room};
use super::{node_app, route_key, Host};
use crate::node::client::NodeClient;
use crate::node::proto::*;
use crate::store::NodeRow;

/// The host part of a node's `host:port` address.
pub(crate) fn node_ip(addr: &str) -> String {
    addr.rsplit_once(':')
        .map(|(h, _)| h.trim_matches(['[', ']']))
        .unwrap_or(addr)
        .to_string()
}

/// The nodes an environment runs on.
pub(crate) struct Agents {
    places: Vec<Arc<dyn Place>>,
}

impl Agents {
    /// One client per node for the whole rollout: its calls share one connection.
    pub(crate) fn new<H: Host>(host: &H, nodes: Vec<NodeRow>) -> Agents {
        let places = nodes
            .into_iter()
            .map(|n| {
                Arc::new(Agent {
                    client: host.node_client(&n),
                    node: n,
                    status: Mutex::new(None),
                }) as Arc<dyn Place>
            })
            .collect();
        Agents { places }
    }
}

impl Backend for Agents {
    fn places(&self) -> &[Arc<dyn Place>] {
        &self.places
    }
}

/// One node.
struct Agent {
    node: NodeRow,
    client: NodeClient,
    /// What `room` learned, used once by the next `stage` or `prepare` (one call fewer).
    status: Mutex<Option<StatusReply>>,
}

impl Agent {
    async fn status(&self) -> Result<StatusReply, PlaceError> {
        let known = self.status.lock().unwrap_or_else(|p| p.into_inner()).take();
        match known {
            Some(s) => Ok(s),
            None => Ok(self.client.send(&StatusReq).await?),
        }
    }

    /// See [`Place::stage`].
    async fn stage_now(
        &self,
        d: &Delivery,
        progress: &mpsc::Sender<String>,
    ) -> Result<(), PlaceError> {
        let status = self.status().await?;
        let present = status
            .apps
            .get(&d.app)
            .is_some_and(|a| a.releases.contains(&d.release));
        if !present {
            let req = ReceiveReq {
                app: d.app.clone(),
                release: d.release.clone(),
                sha256: d.sha256.clone(),
            };
            self.client.upload(&req, &d.tarball).await?;
            crate::failpoint::hit("prepare");
            let _ = progress
                .send(format!(
                    "-----> {}: received {} (sha256 verified)",
                    self.node.name, d.release
                ))
                .await;
        }
        if let Some(v) = d.restore {
            let req = RestoreDataReq {
                app: d.app.clone(),
                label: format!("before-v{v}"),
                if_exists: true,
            };
            let restored = self.client.send(&req).await?.restored;
            let line = if restored {
                format!("-----> {}: data restored from before v{v}", self.node.name)
            } else {
                format!(
                    "-----> {}: no data snapshot from before v{v} (its release command ran elsewhere)",
                    self.node.name
                )
            };
            let _ = progress.send(line).await;
        }
        Ok(())
    }
}

impl Place for Agent {
    fn name(&self) -> &str {
        &self.node.name
    }

    /// A node takes what fits in the memory and CPUs it offers ([`Capacity`], the machine's
    /// by default) beside what other apps' processes were given, and no more than its
    /// `--slots` cap (0: none) minus their count.
    fn room<'a>(
        &'a self,
        app: &'a str,
        memory: i64,
        cpu: f64,
    ) -> BoxFut<'a, Result<Room, PlaceError>> {
        Box::pin(async move {
            let status = self.client.send(&StatusReq).await?;
            let room = room_of(&self.node, &status, app, memory, cpu);
            *self.status.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
            Ok(room)
        })
    }

    fn stage<'a>(
        &'a self,
        d: &'a Delivery,
        progress: mpsc::Sender<String>,
    ) -> BoxFut<'a, Result<(), PlaceError>> {
        Box::pin(async move { self.stage_now(d, &progress).await })
    }

    fn one_off<'a>(
        &'a self,
        req: &'a ReleasePhaseReq,
        lines: mpsc::Sender<String>,
    ) -> BoxFut<'a, Result<i64, PlaceError>> {
        Box::pin(async move {
            // The node bounds the command itself; a dead node is found out by keepalives.
            let within = Duration::from_millis(req.timeout_ms) + Duration::from_secs(60);
            let long = self.client.clone().answer_within(within);
            let r = long.send_with_progress(req, lines).await?;
            Ok(r.code)
        })
    }

    fn restore_data<'a>(&'a self, req: RestoreDataReq) -> BoxFut<'a, Result<bool, PlaceError>> {
        Box::pin(async move { Ok(self.client.send(&req).await?.restored) })
    }

    fn prepare<'a>(
        &'a self,
        mut req: PrepareReq,
        d: &'a Delivery,
        progress: mpsc::Sender<String>,
    ) -> BoxFut<'a, Result<PrepareReply, PlaceError>> {
        Box::pin(async move {
            // A staged node has the release, so this only asks for its status.
            self.stage_now(d, &progress).await?;
            // Where the router will connect: web ports are published there.
            req.publish_ip = self.publish_ip();
            let (ltx, mut lrx) = mpsc::channel::<String>(64);
            let name = self.node.name.clone();
            let fwd = tokio::spawn(async move {
                while let Some(l) = lrx.recv().await {
                    crate::failpoint::hit("health-check");
                    let _ = progress.send(format!("       {name}: {l}")).await;
                }
            });
            let r = self.client.send_with_progress(&req, ltx).await;
            let _ = fwd.await;
            Ok(r?)
        })
    }

    fn switch<'a>(&'a self, to: SwitchReq) -> BoxFut<'a, Result<Option<String>, PlaceError>> {
        Box::pin(async move { Ok(self.client.send(&to).await?.previous) })
    }

    fn abort<'a>(&'a self, what: AbortReq) -> BoxFut<'a, Result<(), PlaceError>> {
        Box::pin(async move { self.client.send(&what).await.map(drop).map_err(Into::into) })
    }

    fn retire<'a>(&'a self, keep: RetireReq) -> BoxFut<'a, Result<(), PlaceError>> {
        Box::pin(async move { self.client.send(&keep).await.map(drop).map_err(Into::into) })
    }

    fn gc<'a>(&'a self, req: GcReq) -> BoxFut<'a, Result<(), PlaceError>> {
        Box::pin(async move { self.client.send(&req).await.map(drop).map_err(Into::into) })
    }

    fn upstreams(&self, started: &PrepareReply) -> Vec<SocketAddr> {
        let ip = node_ip(&self.node.addr);
        started
            .processes
            .iter()
            .filter(|p| p.ptype == "web")
            .filter_map(|p| format!("{ip}:{}", p.port).parse().ok())
            .collect()
    }

    fn publish_ip(&self) -> Option<String> {
        Some(node_ip(&self.client.addr))
    }
}

/// How many more processes of `memory` bytes (and `cpu` CPUs, when asked) a node takes,
/// with the reason in words. This app's own processes do not count.
fn room_of(node: &NodeRow, status: &StatusReply, app: &str, memory: i64, cpu: f64) -> Room {
    let others: Vec<&ProcInfo> = status
        .apps
        .iter()
        .filter(|(a, _)| a.as_str() != app)
        .flat_map(|(_, s)| s.processes.iter())
        .filter(|p| p.state == "running" || p.state == "restarting")
        .collect();
    let mut n = i64::MAX;
    let mut why = vec![];
    if node.slots > 0 {
        n = node.slots - others.len() as i64;
        why.push(format!("{} of {} slots used", others.len(), node.slots));
    }
    if let Some(c) = status.capacity {
        // A process from before limits were recorded counts as this one's size; the
        // node's services reserve their own limits.
        let used: i64 = others
            .iter()
            .map(|p| if p.memory > 0 { p.memory } else { memory })
            .sum::<i64>()
            + status.services_memory;
        n = n.min((c.memory - used).max(0) / memory.max(1));
        why.push(format!(
            "{} MiB of {} MiB free{}",
            (c.memory - used).max(0) >> 20,
            c.memory >> 20,
            match status.services_memory {
                0 => String::new(),
                m => format!(" ({} MiB reserved by services)", m >> 20),
            }
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
    Room {
        free: n.clamp(0, 1_000_000),
        words: format!("{}: {}", node.name, why.join(", ")),
    }
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
                    // A swarm task is on the address of the node it landed on.
                    let ip = p.addr.clone().unwrap_or_else(|| node_ip(&n.addr));
                    if let Ok(addr) = format!("{ip}:{}", p.port).parse() {
                        ups.push(addr);
                    }
                }
            }
        }
        tracing::info!(app = %l.app, env = %l.env, version = l.version, upstreams = ups.len(), "route restored");
        let key = route_key(&l.app, &l.env);
        host.router().set_owner(&key, &l.app, &l.env);
        host.router().set_upstreams(&key, ups);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn node_addresses() {
        assert_eq!(super::node_ip("127.0.0.1:2300"), "127.0.0.1");
        assert_eq!(super::node_ip("[::1]:2300"), "::1");
    }

    #[test]
    fn services_take_their_memory_from_the_room_for_processes() {
        use crate::node::proto::{Capacity, StatusReply};
        let node = crate::store::NodeRow {
            name: "n1".into(),
            addr: "127.0.0.1:1".into(),
            labels: Default::default(),
            host_fp: String::new(),
            slots: 0,
            added_at: 0,
        };
        let mut st = StatusReply {
            capacity: Some(Capacity {
                memory: 4 << 30,
                cpus: 2,
            }),
            ..Default::default()
        };
        let mb512 = 512 << 20;
        assert_eq!(super::room_of(&node, &st, "shop", mb512, 0.0).free, 8);
        st.services_memory = 3 * mb512;
        let room = super::room_of(&node, &st, "shop", mb512, 0.0);
        assert_eq!(room.free, 5);
        assert!(
            room.words.contains("1536 MiB reserved by services"),
            "{}",
            room.words
        );
    }
}
