//! Nodes: the agent (server side), its protocol, the controller's client, and the node's
//! files and processes.

pub mod agent;
pub mod client;
pub mod interactive;
pub mod layout;
pub mod logs;
pub mod proto;
pub mod runtime;
