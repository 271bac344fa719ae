//! Magrathea: a single-binary git-push build and deploy server with an SSH front door.
//!
//! Module map (see ARCHITECTURE.md for the invariants):
//! - [`ssh`]: the front door (russh); translates callbacks into calls on the core.
//! - [`cmd`]: the SSH commands, one file per family; strict parsing, access checks, audit.
//! - [`controller`]: the core API, the push pipeline and the hook socket.
//! - [`git`]: bridging the real `git receive-pack`/`upload-pack`; the hook shim and protocol.
//! - [`store`]: SQLite, migrations; only the controller opens it.
//! - [`node`]: the node protocol and the controller's client; [`agent`]: the node program.
//! - [`access`], [`keys`], [`names`]: identity, roles, key handling, the name grammar.
//! - [`serve`]: `init` and `serve`, the process lifecycle.

pub mod access;
pub mod acme;
pub mod agent;
pub mod appconfig;
pub mod appjson;
pub mod backup;
pub mod build;
pub mod chunks;
pub mod cli;
pub mod cmd;
pub mod controller;
pub mod deploy;
pub mod docker;
pub mod doctor;
pub mod eventlog;
pub(crate) mod failpoint;
pub mod fsutil;
pub mod git;
pub mod isolation;
pub mod keys;
pub mod lines;
pub mod metrics;
pub mod names;
pub mod node;
pub mod paths;
pub mod reconcile;
pub mod release;
pub mod router;
pub mod safefs;
pub mod sealstream;
pub mod secrets;
pub mod serve;
pub mod shutdown;
pub mod sink;
pub mod ssh;
pub mod sshd;
pub mod store;
pub mod timefmt;
