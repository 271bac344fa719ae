//! The controller <-> agent protocol. One SSH exec per operation: `VERB [ARGS]`, a JSON
//! request on stdin (or a tarball, for `receive`), progress lines on stderr, one JSON reply on
//! stdout, exit 0. On failure: exit 1 and `{"error": ...}` on stdout.
//!
//! The one exception is `logs` ([`LogsReq`]): its stdout is a stream of JSON documents, one
//! per line (see [`LogFrame`]), for as long as the controller keeps the channel open.
//!
//! Each verb is a type: a [`Request`] (one call, one reply), a [`StreamRequest`] (`logs`) or
//! a [`SessionRequest`] (`shell`, `run`) names its verb and what comes back, and both the
//! client (`node::client`) and the agent's dispatcher are keyed by these types, so a verb
//! and its reply cannot disagree between the two ends.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use super::backupproto::*;
pub use super::clusterproto::*;
pub use super::svcproto::*;

/// A call: `VERB` on the exec line, the request as JSON on stdin, one `Reply` on stdout.
pub trait Request: Serialize + DeserializeOwned + Send + Sync + 'static {
    const VERB: &'static str;
    type Reply: Serialize + DeserializeOwned + Send + 'static;

    /// Words after the verb on the exec line (for `receive`, whose stdin is a tarball).
    fn args(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A streaming verb: the request as JSON on stdin, then one `Frame` per stdout line.
pub trait StreamRequest: Serialize + DeserializeOwned + Send + Sync + 'static {
    const VERB: &'static str;
    type Frame: Serialize + DeserializeOwned + Send + 'static;
}

/// An interactive verb (see [`ShellReq`]): the request as the first line of stdin, then the
/// user's bytes both ways; the answer is the exit status.
pub trait SessionRequest: Serialize + DeserializeOwned + Send + Sync + 'static {
    const VERB: &'static str;
}

/// A request's stdin: its JSON, or nothing for a request without fields ([`StatusReq`]).
pub fn encode<R: Serialize>(req: &R) -> Vec<u8> {
    match serde_json::to_vec(req) {
        Ok(v) if v == b"null" => Vec::new(),
        Ok(v) => v,
        // Requests are plain data (strings, numbers, maps with string keys).
        Err(_) => Vec::new(),
    }
}

/// The agent's reading of [`encode`].
pub fn decode<R: DeserializeOwned>(body: &[u8]) -> Result<R, serde_json::Error> {
    if body.is_empty() {
        if let Ok(r) = serde_json::from_slice(b"null") {
            return Ok(r);
        }
    }
    serde_json::from_slice(body)
}

/// `status`: the node's apps, releases, processes and capacity. No body.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct StatusReq;

impl Request for StatusReq {
    const VERB: &'static str = "status";
    type Reply = StatusReply;
}

/// `disk`: the bytes one app environment (`app` as the node knows it) takes on the node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiskReq {
    pub app: String,
}

impl Request for DiskReq {
    const VERB: &'static str = "disk";
    type Reply = DiskReply;
}

/// Bytes under the app's releases, data dir and archived logs on one node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskReply {
    pub releases: u64,
    pub data: u64,
    pub logs: u64,
}

/// `receive APP RELEASE SHA256`: the release tarball on stdin, verified and unpacked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceiveReq {
    pub app: String,
    pub release: String,
    pub sha256: String,
}

impl Request for ReceiveReq {
    const VERB: &'static str = "receive";
    type Reply = ReceiveReply;

    fn args(&self) -> Vec<String> {
        vec![self.app.clone(), self.release.clone(), self.sha256.clone()]
    }
}

impl ReceiveReq {
    /// The agent's reading of [`Request::args`].
    pub fn from_args(args: &[String]) -> Option<ReceiveReq> {
        match args {
            [app, release, sha256] => Some(ReceiveReq {
                app: app.clone(),
                release: release.clone(),
                sha256: sha256.clone(),
            }),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceiveReply {
    /// Bytes of tarball received.
    pub received: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessGroup {
    pub ptype: String,
    pub command: String,
    pub count: u32,
    /// The process numbers to start (`web.2`, `web.3`); empty means 1..=count. Numbers are
    /// global across an environment's nodes, so `ps` never shows two `web.1`s.
    #[serde(default)]
    pub indices: Vec<u32>,
}

/// A web process's startup check: GET `path` on its `$PORT` until it answers (any status
/// below 500, or 2xx/3xx when `strict`, and the body holds `content` if set), up to
/// `attempts` times `interval_ms` apart after `initial_delay_ms`. The default gives a process
/// Heroku's 60 s to boot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub path: String,
    pub timeout_ms: u64,
    pub attempts: u32,
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    #[serde(default)]
    pub initial_delay_ms: u64,
    #[serde(default)]
    pub content: Option<String>,
    /// The app named this path as its health check (magrathea.yml or app.json): only 2xx
    /// and 3xx pass, as in Dokku's path checks. The default `GET /` passes with any answer
    /// below 500: as on Heroku, an app that answers is up (an API may have nothing at `/`).
    #[serde(default)]
    pub strict: bool,
    /// Where this check comes from and what changes it, for the failure message
    /// (`healthcheck.boot_timeout in magrathea.yml (default 60s)`).
    #[serde(default)]
    pub setting: String,
}

fn default_interval_ms() -> u64 {
    500
}

/// Heroku's boot timeout: a web process has this long to answer on `$PORT`.
pub const BOOT_TIMEOUT_MS: u64 = 60_000;

impl Default for Health {
    fn default() -> Self {
        Health {
            path: "/".into(),
            timeout_ms: 5_000,
            attempts: (BOOT_TIMEOUT_MS / default_interval_ms()) as u32,
            interval_ms: default_interval_ms(),
            initial_delay_ms: 0,
            content: None,
            strict: false,
            setting: "healthcheck.boot_timeout in magrathea.yml (default 60s)".into(),
        }
    }
}

/// Start a release's processes beside the running ones and health-check them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrepareReq {
    pub app: String,
    pub release: String,
    pub image: String,
    pub processes: Vec<ProcessGroup>,
    pub env: BTreeMap<String, String>,
    pub memory: i64,
    /// CPUs each process may use (0: no limit); placement counts it against the node's.
    #[serde(default)]
    pub cpu: f64,
    pub health: Health,
    /// app.json's startup checks for web (Dokku's `healthchecks`): each must pass, in
    /// order, instead of `health`.
    #[serde(default)]
    pub checks: Vec<Health>,
    /// Non-web processes must stay up this long.
    pub grace_ms: u64,
    /// Which rollout started these processes (the deploy id). A restart or a scale starts the
    /// same release again beside itself; the generation keeps the two sets apart.
    #[serde(default)]
    pub generation: u64,
    /// The app's uid: its processes run as it (see `isolation`).
    pub uid: u32,
    /// The node's address as the controller's router reaches it: web ports are published
    /// there (and on loopback). None or a loopback address: loopback only.
    #[serde(default)]
    pub publish_ip: Option<String>,
    /// On a swarm cluster: the placement constraints of its services (`node.labels.K==V`,
    /// from `magrathea.yml`'s `placement`). Empty elsewhere.
    #[serde(default)]
    pub placement: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Started {
    pub container: String,
    pub ptype: String,
    pub index: u32,
    pub port: u16,
    /// Where the router reaches it, when that is not the node's own address (a swarm task:
    /// the address of the swarm node it was scheduled on).
    #[serde(default)]
    pub addr: Option<String>,
}

impl Request for PrepareReq {
    const VERB: &'static str = "prepare";
    type Reply = PrepareReply;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrepareReply {
    pub processes: Vec<Started>,
}

/// `switch`: point `current` at a release (unpacked on this node).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SwitchReq {
    pub app: String,
    pub release: String,
}

impl Request for SwitchReq {
    const VERB: &'static str = "switch";
    type Reply = SwitchReply;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SwitchReply {
    pub previous: Option<String>,
}

/// `retire`: stop every process of the app but those `prepare` started for this release and
/// generation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetireReq {
    pub app: String,
    pub release: String,
    /// The generation that `prepare` started.
    #[serde(default)]
    pub generation: u64,
    /// Only processes of these types go (a `restart web` leaves workers be); empty: all.
    #[serde(default)]
    pub only: Vec<String>,
}

impl Request for RetireReq {
    const VERB: &'static str = "retire";
    type Reply = StoppedReply;
}

/// `abort`: stop the processes `prepare` started for this release and generation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AbortReq {
    pub app: String,
    pub release: String,
    #[serde(default)]
    pub generation: u64,
}

impl Request for AbortReq {
    const VERB: &'static str = "abort";
    type Reply = StoppedReply;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoppedReply {
    pub stopped: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleasePhaseReq {
    pub app: String,
    pub release: String,
    pub image: String,
    pub command: String,
    pub env: BTreeMap<String, String>,
    pub memory: i64,
    /// CPUs each process may use (0: no limit); placement counts it against the node's.
    #[serde(default)]
    pub cpu: f64,
    pub timeout_ms: u64,
    /// Snapshot the data dir under this label first.
    pub snapshot: Option<String>,
    /// The app's uid: the command runs as it.
    pub uid: u32,
    /// `release` (the default), `predeploy` or `postdeploy`: the one-off's process name
    /// (`DYNO=release.1`).
    #[serde(default)]
    pub kind: Option<String>,
}

impl Request for ReleasePhaseReq {
    const VERB: &'static str = "release-phase";
    type Reply = CodeReply;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CodeReply {
    pub code: i64,
}

/// `gc`: remove an app's unpacked releases but `keep` and `current`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GcReq {
    pub app: String,
    pub keep: Vec<String>,
}

impl Request for GcReq {
    const VERB: &'static str = "gc";
    /// The releases removed.
    type Reply = Vec<String>;
}

/// `purge`: everything of an app on a node, every environment of it (`app`, `app.env`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PurgeReq {
    /// The app's name (not a node app name: its environments are found by the node).
    pub app: String,
    /// Move each environment's data dir to `<root>/archive/` instead of deleting it.
    #[serde(default)]
    pub keep_data: bool,
    /// The app's uid: its network on the node goes too.
    #[serde(default)]
    pub uid: Option<u32>,
}

impl Request for PurgeReq {
    const VERB: &'static str = "purge";
    type Reply = PurgeReply;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PurgeReply {
    /// Processes stopped.
    pub stopped: u32,
    /// The node apps (environments) removed.
    pub purged: Vec<String>,
}

/// `restore-data`: put an app's data dir back as the snapshot `label` holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreDataReq {
    pub app: String,
    pub label: String,
    /// A missing snapshot is not an error (`{"restored": false}`): the release command,
    /// which takes them, runs on one node only.
    #[serde(default)]
    pub if_exists: bool,
}

impl Request for RestoreDataReq {
    const VERB: &'static str = "restore-data";
    type Reply = RestoreReply;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreReply {
    pub restored: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AppStatus {
    pub current: Option<String>,
    pub releases: Vec<String>,
    pub processes: Vec<ProcInfo>,
}

/// One process container on a node, as `status` reports it.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ProcInfo {
    pub container: String,
    pub app: String,
    pub release: String,
    pub ptype: String,
    pub index: u32,
    pub port: u16,
    /// Docker's state: `running`, `restarting`, `exited`, `created`, ...
    pub state: String,
    /// RFC 3339, from Docker (`State.StartedAt`).
    pub started_at: String,
    /// Docker's RestartCount: crashes since the container was created.
    pub restarts: i64,
    #[serde(default)]
    pub generation: u64,
    /// Its memory limit in bytes (0 if unknown).
    #[serde(default)]
    pub memory: i64,
    /// Its CPU limit (0: none).
    #[serde(default)]
    pub cpu: f64,
    /// A swarm task: the address of the swarm node it runs on (see [`Started::addr`]).
    #[serde(default)]
    pub addr: Option<String>,
    /// A swarm task: the swarm node it runs on (its hostname).
    #[serde(default)]
    pub node: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusReply {
    pub instance: String,
    pub apps: BTreeMap<String, AppStatus>,
    /// What the node offers app processes (absent from older agents: unlimited).
    #[serde(default)]
    pub capacity: Option<Capacity>,
    /// Memory the node's services reserve (their limits), taken from `capacity` first.
    #[serde(default)]
    pub services_memory: i64,
}

/// A node's room for app processes: memory (the machine's, minus a reserve for the system,
/// or what the agent was told) and CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    pub memory: i64,
    pub cpus: u32,
}

/// `logs`: an app's process output on this node, oldest first: the last `tail` lines of its
/// containers and of the archived logs of stopped ones (`apps/<app>/logs/`), merged by time,
/// then `{"live":true}`; with `follow`, then every new line as it is written (containers
/// that start later included) until the channel closes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogsReq {
    pub app: String,
    pub tail: usize,
    pub follow: bool,
    /// A process type (`web`) or one process (`web.1`).
    #[serde(default)]
    pub process: Option<String>,
    /// A version (`v3`) or a full release name.
    #[serde(default)]
    pub release: Option<String>,
}

impl StreamRequest for LogsReq {
    const VERB: &'static str = "logs";
    type Frame = LogFrame;
}

/// One output line of a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// UTC RFC 3339 with nine fraction digits, so the strings sort in time order.
    pub t: String,
    /// `web.1`
    pub process: String,
    /// `v3-0123456789ab`
    pub release: String,
    pub line: String,
}

/// One line of a `logs` reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LogFrame {
    Line(LogLine),
    /// The backlog is complete; what follows is new.
    Live {
        live: bool,
    },
    Error {
        error: String,
    },
}

/// `shell` and `run` are sessions, not calls (see the agent's `oneoff`). The controller may
/// request a pty on the channel first (`pty-request`), then execs the bare verb. The first
/// line of stdin is the JSON request ([`ShellReq`] or [`RunReq`], one line); every byte after
/// it is the user's input, and the channel's EOF is the user's EOF. Window changes follow as
/// `window-change` requests. stdout carries the output as is (and stderr too, for a `run`
/// without a pty); the exit status is the command's. Closing the channel ends the session
/// (a `run` container is removed). A failure before anything runs is one line on stderr
/// (`error: ...`) and exit status 1.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShellReq {
    pub app: String,
    /// The live release; only its running processes are candidates.
    pub release: String,
    /// `web.2`, or a type (`web`: its first running process). None: `web.1`, else the
    /// first running process.
    #[serde(default)]
    pub process: Option<String>,
}

impl SessionRequest for ShellReq {
    const VERB: &'static str = "shell";
}

/// A one-off container of a release, running `argv` (through the `.profile.d` launcher).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReq {
    pub app: String,
    pub release: String,
    pub image: String,
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub memory: i64,
    /// CPUs each process may use (0: no limit); placement counts it against the node's.
    #[serde(default)]
    pub cpu: f64,
    /// The app's uid: the command runs as it.
    pub uid: u32,
}

impl SessionRequest for RunReq {
    const VERB: &'static str = "run";
}

/// The tarball filename-ish name of a release on nodes: `v3-0123456789ab`.
pub fn release_name(version: i64, sha256: &str) -> String {
    format!("v{version}-{}", &sha256[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_verb_is_one_type() {
        let verbs = [
            StatusReq::VERB,
            DiskReq::VERB,
            ReceiveReq::VERB,
            PrepareReq::VERB,
            SwitchReq::VERB,
            RetireReq::VERB,
            AbortReq::VERB,
            ReleasePhaseReq::VERB,
            GcReq::VERB,
            PurgeReq::VERB,
            RestoreDataReq::VERB,
            LogsReq::VERB,
            ShellReq::VERB,
            RunReq::VERB,
            ServiceEnsureReq::VERB,
            ServiceUserReq::VERB,
            ServiceStatusReq::VERB,
            ServiceDestroyReq::VERB,
            ServiceSettleReq::VERB,
            ServiceSwapReq::VERB,
            ServiceConnectReq::VERB,
            ServiceLogsReq::VERB,
            ClusterReq::VERB,
        ];
        let unique: std::collections::BTreeSet<_> = verbs.iter().collect();
        assert_eq!(unique.len(), verbs.len(), "{verbs:?}");
    }

    #[test]
    fn a_request_without_fields_is_no_bytes() {
        assert!(encode(&StatusReq).is_empty());
        decode::<StatusReq>(b"").unwrap();
        // Others still need their body.
        assert!(decode::<GcReq>(b"").is_err());
        let gc = GcReq {
            app: "shop".into(),
            keep: vec!["v1-0123456789ab".into()],
        };
        let back: GcReq = decode(&encode(&gc)).unwrap();
        assert_eq!(back.keep, gc.keep);
    }

    #[test]
    fn receive_travels_on_the_exec_line() {
        let r = ReceiveReq {
            app: "shop.staging".into(),
            release: "v3-0123456789ab".into(),
            sha256: "ab".repeat(32),
        };
        let back = ReceiveReq::from_args(&r.args()).unwrap();
        assert_eq!(
            (back.app, back.release, back.sha256),
            (r.app, r.release, r.sha256)
        );
        assert!(ReceiveReq::from_args(&["shop".into()]).is_none());
    }
}
