//! Nodes as the controller sees them: the wire protocol (`proto`, shared with the agent
//! program in `agent/`; its service verbs in `svcproto`, its backup verbs in `backupproto`, its
//! cluster verb in `clusterproto`) and the controller's client (`client`).

pub mod backupproto;
pub mod client;
pub mod clusterproto;
pub mod proto;
pub mod svcproto;
