//! The cluster verb of the controller <-> agent protocol (see `proto`, which re-exports it):
//! a swarm's nodes, their agents and its tasks; and which process a `shell` goes into, which
//! the agent decides on a node and the controller on a cluster (to find the task's node).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::proto::{ProcInfo, Request};

/// `cluster`: a swarm cluster's nodes and what runs where (`clusters:info`). No body.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ClusterReq;

impl Request for ClusterReq {
    const VERB: &'static str = "cluster";
    type Reply = ClusterReply;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterReply {
    pub nodes: Vec<ClusterNode>,
    /// Every process task of every app, running or not.
    pub tasks: Vec<ProcInfo>,
}

/// One swarm node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterNode {
    pub id: String,
    pub hostname: String,
    pub addr: String,
    /// `ready`, `down`, ...
    pub state: String,
    /// `active`, `pause`, `drain`
    pub availability: String,
    /// `manager` or `worker`
    pub role: String,
    pub labels: BTreeMap<String, String>,
    /// The magrathea agent on this node (`agent --swarm --join`, or the cluster's own),
    /// through which `shell` reaches its tasks; None: no agent answers there.
    #[serde(default)]
    pub agent: Option<NodeAgent>,
}

/// Where the controller reaches a swarm node's agent, and its host key's fingerprint. An
/// empty `addr` is the cluster's own agent (the one the controller talks to).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeAgent {
    pub addr: String,
    pub fp: String,
}

/// The process a `shell` goes into: `want` is `type.N`, a type, or None (web.1, else the
/// first). Among several of one name (a restart in progress), the newest generation.
pub fn pick_process<'a>(procs: &'a [ProcInfo], want: Option<&str>) -> Option<&'a ProcInfo> {
    let running = || procs.iter().filter(|p| p.state == "running");
    let newest = |it: Vec<&'a ProcInfo>| -> Option<&'a ProcInfo> {
        let first = it.iter().map(|p| (p.ptype.as_str(), p.index)).min()?;
        it.into_iter()
            .filter(|p| (p.ptype.as_str(), p.index) == first)
            .max_by_key(|p| p.generation)
    };
    match want {
        None => newest(
            running()
                .filter(|p| p.ptype == "web" && p.index == 1)
                .collect(),
        )
        .or_else(|| newest(running().collect())),
        Some(w) => match w.split_once('.') {
            Some((t, n)) => {
                let n: u32 = n.parse().ok()?;
                newest(running().filter(|p| p.ptype == t && p.index == n).collect())
            }
            None => newest(running().filter(|p| p.ptype == w).collect()),
        },
    }
}
