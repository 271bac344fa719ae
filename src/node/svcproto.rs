//! The service verbs of the controller <-> agent protocol (see `proto`, which re-exports
//! them): a service's container ensured, its logins, its state, its end, and the sessions
//! of its client and its logs.

use serde::{Deserialize, Serialize};

use super::proto::{Request, SessionRequest, StoppedReply};

/// Memory a service may use, and so reserves on its node's capacity.
pub const SERVICE_MEMORY: i64 = 512 << 20;

/// A service on a node (see `agent::services`): its container `mg-<instance>-svc-<key>`
/// runs `image` as `uid` with its data in `<root>/services/<key>/data`, restarted by Docker
/// when it dies. `ensure` creates and starts it if it is not running and waits until it
/// answers; the app networks it joins are named by the linked apps' uids.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Random, from the controller: names the container and the data dir.
    pub key: String,
    /// The service's name: its host name on the apps' networks.
    pub name: String,
    /// `postgres`, `redis`, `mariadb`.
    pub kind: String,
    pub image: String,
    pub uid: u32,
    pub memory: i64,
}

/// `service-ensure`: the service running (created if missing), joined to the networks of
/// the apps with these uids.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceEnsureReq {
    pub spec: ServiceSpec,
    #[serde(default)]
    pub app_uids: Vec<u32>,
}

impl Request for ServiceEnsureReq {
    const VERB: &'static str = "service-ensure";
    type Reply = ServiceStatus;
}

/// `service-user`: a link's login created (or its password reset), or with no password
/// dropped. The password travels only in this request's body, never on a command line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceUserReq {
    pub key: String,
    pub user: String,
    #[serde(default)]
    pub password: Option<String>,
}

impl Request for ServiceUserReq {
    const VERB: &'static str = "service-user";
    type Reply = ServiceStatus;
}

/// `service-status`: state, version, connections, size on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceStatusReq {
    pub key: String,
}

impl Request for ServiceStatusReq {
    const VERB: &'static str = "service-status";
    type Reply = ServiceStatus;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Docker's state (`running`, `restarting`, `exited`), or `missing`.
    pub state: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub connections: Option<i64>,
    /// Bytes of its data dir.
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub restarts: i64,
    /// RFC 3339, from Docker.
    #[serde(default)]
    pub started_at: String,
}

/// `service-destroy`: the container, its network and the data dir gone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceDestroyReq {
    pub key: String,
    pub uid: u32,
}

impl Request for ServiceDestroyReq {
    const VERB: &'static str = "service-destroy";
    type Reply = StoppedReply;
}

/// A session: the service's client (psql, redis-cli, mariadb) as its admin, in its
/// container, on a tty (like `shell`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceConnectReq {
    pub key: String,
}

impl SessionRequest for ServiceConnectReq {
    const VERB: &'static str = "service-connect";
}

/// A session: the service container's output (`docker logs`), the last `tail` lines, then
/// with `follow` what comes until the channel closes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceLogsReq {
    pub key: String,
    pub tail: usize,
    pub follow: bool,
}

impl SessionRequest for ServiceLogsReq {
    const VERB: &'static str = "service-logs";
}

/// `service-links`: on the service's node, the link key that may reach the service from
/// node `from` (replacing that node's previous one; `None` revokes it). A link key opens
/// only a tunnel to this service's port (`agent::tunnel`), nothing else.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceLinksReq {
    pub key: String,
    pub port: u16,
    pub from: String,
    /// OpenSSH public key line.
    #[serde(default)]
    pub public_key: Option<String>,
}

impl Request for ServiceLinksReq {
    const VERB: &'static str = "service-links";
    type Reply = StoppedReply;
}

/// One app network a forwarder serves on a node that is not the service's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardApp {
    pub app: String,
    pub uid: u32,
    /// An image the node has (the app's stack): the forwarder container only holds the
    /// network namespace the agent listens in.
    pub image: String,
}

/// `service-forward`: on a node that runs linked apps' processes but not the service, a
/// forwarder per app network, answering under the service's name on its port and
/// tunnelling each connection to the service's node over SSH with the link key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceForwardReq {
    pub key: String,
    /// The service's name: the forwarder's host name on the app networks.
    pub name: String,
    pub port: u16,
    /// The service's node: name, address, pinned host key fingerprint.
    pub node: String,
    pub addr: String,
    pub host_fp: String,
    /// The link key (OpenSSH private key); kept by the node, readable by root only.
    pub private_key: String,
    pub apps: Vec<ForwardApp>,
}

impl Request for ServiceForwardReq {
    const VERB: &'static str = "service-forward";
    type Reply = StoppedReply;
}

/// `service-unforward`: the forwarders of service `key` removed, for the app with `uid` or
/// (none) for every app.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceUnforwardReq {
    pub key: String,
    #[serde(default)]
    pub uid: Option<u32>,
}

impl Request for ServiceUnforwardReq {
    const VERB: &'static str = "service-unforward";
    type Reply = StoppedReply;
}
