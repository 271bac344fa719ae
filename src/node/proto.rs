//! The controller <-> agent protocol. One SSH exec per operation: `VERB [ARGS]`, a JSON
//! request on stdin (or a tarball, for `receive`), progress lines on stderr, one JSON reply on
//! stdout, exit 0. On failure: exit 1 and a one-line reason on stderr.
//!
//! The one exception is `logs` ([`LogsReq`]): its stdout is a stream of JSON documents, one
//! per line (see [`LogFrame`]), for as long as the controller keeps the channel open.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
/// below 500, and the body holds `content` if set), up to `attempts` times `interval_ms`
/// apart after `initial_delay_ms`. The default gives a process Heroku's 60 s to boot.
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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Started {
    pub container: String,
    pub ptype: String,
    pub index: u32,
    pub port: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrepareReply {
    pub processes: Vec<Started>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppRelease {
    pub app: String,
    pub release: String,
    /// With `retire` and `abort`: the generation that `prepare` started.
    #[serde(default)]
    pub generation: u64,
    /// With `retire`: only processes of these types go (a `restart web` leaves workers be).
    #[serde(default)]
    pub only: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SwitchReply {
    pub previous: Option<String>,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CodeReply {
    pub code: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GcReq {
    pub app: String,
    pub keep: Vec<String>,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotReq {
    pub app: String,
    pub label: String,
    /// `restore-data`: a missing snapshot is not an error (`{"restored": false}`): the
    /// release command, which takes them, runs on one node only.
    #[serde(default)]
    pub if_exists: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AppStatus {
    pub current: Option<String>,
    pub releases: Vec<String>,
    pub processes: Vec<crate::node::runtime::ProcInfo>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusReply {
    pub instance: String,
    pub apps: BTreeMap<String, AppStatus>,
    /// What the node offers app processes (absent from older agents: unlimited).
    #[serde(default)]
    pub capacity: Option<Capacity>,
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

/// `shell` and `run` are sessions, not calls (see `node::interactive`). The controller may
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

/// The tarball filename-ish name of a release on nodes: `v3-0123456789ab`.
pub fn release_name(version: i64, sha256: &str) -> String {
    format!("v{version}-{}", &sha256[..12])
}
