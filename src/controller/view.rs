//! The types the front ends render, re-exported from where they live, so a front end names
//! `controller::view::X` and never the store, the node protocol or the pipeline. A
//! re-export, not a copy: the JSON a command prints is the row's own serialization. A
//! session's input and output are the node client's own.

pub use super::backups::BackupAsk;
pub use super::builds::BuildSettings;
pub use super::edge::{AclChange, AppLimits, AppSettings};
pub use super::formation::{ProcessRow, Processes, Scaled};
pub use super::logs::{LogQuery, NodeLog, NodeLogs};
pub use super::releases::{ConfigChange, ConfigOutcome, Listed, Live};
pub use super::routing::{CertInfo, CertSource};
pub use super::sessions::{Session, ShellTarget};
pub use super::usage::{DiskUse, Usage};
pub use crate::build::human;
pub use crate::deploy::Count;
pub use crate::eventlog::{Event, Tailer};
pub use crate::node::client::{Input, Output};
pub use crate::node::proto::{ClusterReply, LogLine, StatusReply};
pub use crate::release::Manifest;
pub use crate::router::{Sample, LATENCY_BOUNDS_MS};
pub use crate::store::{
    AccessRow, AcmeRow, AppRow, AuditRow, BuildRow, DomainRow, KeyRow, NodeRow, ReleaseRow,
    RouteSettings,
};
pub use crate::store::{BackupReason, BackupRow, ReleaseTag};
