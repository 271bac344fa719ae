//! Nodes: the agent (server side), its protocol, the controller's client, and the node's
//! files and processes.

pub mod agent;
pub mod client;
pub mod layout;
pub mod proto;
pub mod runtime;
