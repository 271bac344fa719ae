//! App processes as Docker containers.
//!
//! A process is one container named `mg-<instance>-<app>-<release>-<ptype>-<index>` and
//! labelled with the same facts (`magrathea.*`), so a node finds its processes again after a
//! restart by asking Docker, never by trusting a file of its own. Containers share the host
//! network (the daemon runs with `--bridge=none`) and listen on the `PORT` they are given.
//!
//! Every container runs user code, so it gets the same confinement (`isolation::confine`):
//! the app's own uid, no capabilities, no-new-privileges, a pids limit, a memory limit
//! without swap, the release mounted read-only and only the app's own data dir writable.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, HostConfig, HostConfigLogConfig, Mount,
    MountType, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    LogsOptionsBuilder, StopContainerOptionsBuilder, WaitContainerOptions,
};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::layout::{check_release, NodeError, NodeRoot};
use crate::build::docker::Docker;
use crate::names;

/// Label keys. `magrathea.oneoff` marks [`run_once`] containers, which [`list`] skips.
const L_INSTANCE: &str = "magrathea.instance";
const L_APP: &str = "magrathea.app";
const L_RELEASE: &str = "magrathea.release";
const L_PROCESS: &str = "magrathea.process";
const L_INDEX: &str = "magrathea.index";
const L_PORT: &str = "magrathea.port";
const L_ONEOFF: &str = "magrathea.oneoff";
const L_GENERATION: &str = "magrathea.generation";

/// How often Docker restarts a crashing process before leaving it `exited`.
const MAX_RESTARTS: i64 = 5;

/// Sources `.profile.d` scripts (buildpacks put PATH and friends there), then runs the
/// Procfile command. The command comes in `$MAGRATHEA_CMD` so it is never spliced into this
/// string: only the inner `sh -c` parses it, exactly as written in the Procfile.
const LAUNCHER: &str = "for f in /app/.profile.d/*.sh; do [ -f \"$f\" ] && . \"$f\"; done; \
                        exec /bin/sh -c \"$MAGRATHEA_CMD\"";

pub struct ProcessSpec {
    /// Node instance id, part of container names and labels.
    pub instance: String,
    pub app: String,
    /// `v3-0123456789ab`
    pub release: String,
    /// `web`, `worker`, ...
    pub ptype: String,
    pub index: u32,
    /// From the Procfile; run through `/bin/sh -c`.
    pub command: String,
    /// Config vars. `PORT`, `HOME`, `DATA_DIR` and `MAGRATHEA_*` are set by this module and
    /// refused here.
    pub env: Vec<(String, String)>,
    /// Stack image tag or id.
    pub image: String,
    /// Memory limit in bytes (swap is not allowed on top).
    pub memory: i64,
    /// The rollout that started it (see `PrepareReq::generation`); 0 for none.
    pub generation: u64,
    /// The app's uid (and gid), from the controller; see `isolation`.
    pub uid: u32,
}

#[derive(Debug, Clone)]
pub struct Running {
    pub container: String,
    pub port: u16,
    pub ptype: String,
    pub index: u32,
    pub release: String,
}

#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
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
}

/// `mg-<instance>-<app>-<release>-<ptype>-<index>`, then `-g<generation>` when there is one.
pub fn container_name(spec: &ProcessSpec) -> String {
    let base = format!(
        "mg-{}-{}-{}-{}-{}",
        spec.instance, spec.app, spec.release, spec.ptype, spec.index
    );
    match spec.generation {
        0 => base,
        g => format!("{base}-g{g}"),
    }
}

/// Starts one process of a release: a fresh free port, a container created from scratch (a
/// stale one of the same name is removed first), started. Does not wait for it to listen;
/// see [`health_check`].
pub async fn start(
    docker: &Docker,
    root: &NodeRoot,
    spec: &ProcessSpec,
) -> Result<Running, NodeError> {
    let (app_dir, data_dir) = prepare(root, spec)?;
    let port = free_port()?;
    let name = container_name(spec);
    let mut env = env(spec)?;
    env.push(format!("PORT={port}"));
    let mut labels = labels(spec);
    labels.insert(L_PORT.into(), port.to_string());
    // Where `stop` archives its output (see `node::logs`).
    labels.insert(
        super::logs::L_LOGS.into(),
        std::path::absolute(root.logs_dir(&spec.app))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    let restart = RestartPolicy {
        name: Some(RestartPolicyNameEnum::ON_FAILURE),
        maximum_retry_count: Some(MAX_RESTARTS),
    };
    let body = container_body(spec, &app_dir, &data_dir, env, labels, restart);

    docker.remove(&name).await; // a leftover from a crash or an earlier attempt
    create(docker, &name, spec, body).await?;
    if let Err(e) = docker.raw().start_container(&name, None).await {
        docker.remove(&name).await;
        return Err(NodeError::Docker(format!("starting {name}: {e}")));
    }
    Ok(Running {
        container: name,
        port,
        ptype: spec.ptype.clone(),
        index: spec.index,
        release: spec.release.clone(),
    })
}

/// Waits between the extra probes of the first health-check interval, in milliseconds.
const FIRST_STEPS: [u64; 4] = [20, 40, 80, 160];

/// GETs `path` from `127.0.0.1:port` (raw HTTP/1.0, `Host: localhost`) up to `attempts`
/// times, `interval` apart, each bounded by `timeout`. Healthy means any status below 500
/// (a 404 or a redirect still proves the app is up and answering). The error says what
/// happened on the last attempt.
///
/// Most processes listen within a few tens of milliseconds of their start, so the first
/// interval is spent probing at growing steps ([`FIRST_STEPS`]) rather than asleep: a deploy
/// does not wait half a second for an app that was ready long before. The schedule of the
/// counted attempts, and so how long a slow app is given, stays `attempts` × `interval`.
pub async fn health_check(
    port: u16,
    path: &str,
    timeout: Duration,
    attempts: u32,
    interval: Duration,
) -> Result<(), String> {
    if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!(
            "health check path {:?} must start with '/' and hold no spaces or control characters",
            path.chars().take(60).collect::<String>()
        ));
    }
    let attempts = attempts.max(1);
    let mut last = String::new();
    for attempt in 1..=attempts {
        if attempt == 2 {
            // Extra probes inside the first interval; the last one is attempt 2.
            let mut waited = Duration::ZERO;
            for step in FIRST_STEPS {
                let step = Duration::from_millis(step);
                if waited + step >= interval {
                    break;
                }
                tokio::time::sleep(step).await;
                waited += step;
                if let Ok(Ok(status)) = tokio::time::timeout(timeout, probe(port, path)).await {
                    if status < 500 {
                        return Ok(());
                    }
                }
            }
            tokio::time::sleep(interval - waited).await;
        } else if attempt > 2 {
            tokio::time::sleep(interval).await;
        }
        last = match tokio::time::timeout(timeout, probe(port, path)).await {
            Ok(Ok(status)) if status < 500 => return Ok(()),
            Ok(Ok(status)) => format!("status {status}"),
            Ok(Err(e)) => e,
            Err(_) => format!("no answer within {}", secs(timeout)),
        };
    }
    Err(format!(
        "GET {path} on port {port}: {last} (after {attempts} attempt{})",
        if attempts == 1 { "" } else { "s" }
    ))
}

/// One GET; the status code, or what went wrong in words.
async fn probe(port: u16, path: &str) -> Result<u16, String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => {
                "connection refused (nothing listens on $PORT: did the process exit or bind \
                 another port?)"
                    .to_string()
            }
            _ => format!("cannot connect: {e}"),
        })?;
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: localhost\r\nUser-Agent: magrathea-health\r\n\
         Connection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("sending the request failed: {e}"))?;
    // Only the status line matters; read until its end (bounded).
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < 4096 {
        match s.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("reading the response failed: {e}")),
        }
    }
    if buf.is_empty() {
        return Err("connection closed without a response".into());
    }
    let line = String::from_utf8_lossy(&buf);
    let line = line.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|c| c.parse::<u16>().ok()),
    ) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => Ok(code),
        _ => Err(format!(
            "not an HTTP response: {:?}",
            line.chars()
                .filter(|c| !c.is_control())
                .take(60)
                .collect::<String>()
        )),
    }
}

/// Stops and removes a container: SIGTERM (to the app, through docker-init), up to `grace`
/// to exit, then SIGKILL. Docker's own stop is used rather than a kill so the restart policy
/// does not bring the process back. Errors are logged: a container that is already gone is
/// what the caller wants anyway.
pub async fn stop(docker: &Docker, container: &str, grace: Duration) {
    let t = grace.as_secs_f64().ceil().min(3600.0) as i32;
    let opts = StopContainerOptionsBuilder::default().t(t).build();
    // Bounded: Docker answers after the kill at the latest; the remove below kills anyway.
    let stopped = tokio::time::timeout(
        grace + Duration::from_secs(15),
        docker.raw().stop_container(container, Some(opts)),
    )
    .await;
    match stopped {
        Ok(Ok(())) => {}
        Ok(Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 304 | 404,
            ..
        })) => {}
        Ok(Err(e)) => tracing::warn!(container, "stop: {e}"),
        Err(_) => tracing::warn!(container, "stop: Docker did not answer in time"),
    }
    // Its output outlives it: `logs` still shows a retired release's lines.
    super::logs::archive(docker, container).await;
    docker.remove(container).await;
}

/// This instance's process containers (of `app`, or all), whatever their state; one-off
/// containers are left out. Sorted by app, release, process type, index.
pub async fn list(
    docker: &Docker,
    instance: &str,
    app: Option<&str>,
) -> Result<Vec<ProcInfo>, NodeError> {
    let mut filter = vec![format!("{L_INSTANCE}={instance}")];
    if let Some(app) = app {
        filter.push(format!("{L_APP}={app}"));
    }
    let filters = HashMap::from([("label", filter)]);
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let summaries = docker
        .raw()
        .list_containers(Some(opts))
        .await
        .map_err(|e| NodeError::Docker(format!("listing containers: {e}")))?;
    let mut out = vec![];
    for c in summaries {
        let labels = c.labels.unwrap_or_default();
        if labels.contains_key(L_ONEOFF) {
            continue;
        }
        let Some(id) = c.id else { continue };
        let info = match docker
            .raw()
            .inspect_container(&id, None::<InspectContainerOptions>)
            .await
        {
            Ok(i) => i,
            // Removed between the list and the inspect: not running, not listed.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => continue,
            Err(e) => return Err(NodeError::Docker(format!("inspecting {id}: {e}"))),
        };
        let state = info.state.unwrap_or_default();
        let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
        out.push(ProcInfo {
            container: info
                .name
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or(id),
            app: label(L_APP),
            release: label(L_RELEASE),
            ptype: label(L_PROCESS),
            index: label(L_INDEX).parse().unwrap_or(0),
            port: label(L_PORT).parse().unwrap_or(0),
            state: state
                .status
                .unwrap_or(ContainerStateStatusEnum::EMPTY)
                .to_string(),
            started_at: state.started_at.unwrap_or_default(),
            restarts: info.restart_count.unwrap_or(0),
            generation: label(L_GENERATION).parse().unwrap_or(0),
        });
    }
    out.sort_by(|a, b| {
        (&a.app, &a.release, &a.ptype, a.index).cmp(&(&b.app, &b.release, &b.ptype, b.index))
    });
    Ok(out)
}

/// A one-off container (the release phase): the same image, mounts, env and confinement as
/// a process, but no port and no restarts. Streams its output (stdout and stderr) line by
/// line to `lines` and returns its exit code. Killed after `timeout` (an error). The
/// container is removed whatever happens, even if this future is dropped.
pub async fn run_once(
    docker: &Docker,
    root: &NodeRoot,
    spec: &ProcessSpec,
    lines: mpsc::Sender<String>,
    timeout: Duration,
) -> Result<i64, NodeError> {
    // Ends in letters, so it never equals a process name (those end in the index).
    let name = format!("{}-once", container_name(spec));
    let body = oneoff_base(root, spec)?;

    docker.remove(&name).await;
    let cleanup = RemoveOnDrop {
        docker: docker.clone(),
        name: Some(name.clone()),
    };
    let result = run_container(docker, &name, spec, body, lines, timeout).await;
    // Removed before returning, so the caller never sees a leftover; the guard only covers
    // cancellation.
    docker.remove(&name).await;
    cleanup.disarm();
    result
}

/// A process's container body without its port or restarts, labelled `magrathea.oneoff`.
fn oneoff_base(root: &NodeRoot, spec: &ProcessSpec) -> Result<ContainerCreateBody, NodeError> {
    let (app_dir, data_dir) = prepare(root, spec)?;
    let env = env(spec)?;
    let mut labels = labels(spec);
    labels.insert(L_ONEOFF.into(), "true".into());
    let restart = RestartPolicy {
        name: Some(RestartPolicyNameEnum::NO),
        maximum_retry_count: None,
    };
    Ok(container_body(
        spec, &app_dir, &data_dir, env, labels, restart,
    ))
}

/// The body of an interactive one-off container (`run`, see `node::interactive`): the image,
/// mounts, env, labels (`magrathea.oneoff`, so [`list`] skips it) and confinement of
/// [`run_once`], but `cmd` as given (an argv, never parsed by a shell here), no restarts,
/// stdin open for one attach, and a tty if asked. The caller names, creates, attaches,
/// starts and removes it.
pub fn oneoff_body(
    root: &NodeRoot,
    spec: &ProcessSpec,
    cmd: Vec<String>,
    tty: bool,
) -> Result<ContainerCreateBody, NodeError> {
    let mut body = oneoff_base(root, spec)?;
    body.cmd = Some(cmd);
    body.tty = Some(tty);
    body.open_stdin = Some(true);
    body.stdin_once = Some(true);
    body.attach_stdin = Some(true);
    body.attach_stdout = Some(true);
    body.attach_stderr = Some(true);
    Ok(body)
}

async fn run_container(
    docker: &Docker,
    name: &str,
    spec: &ProcessSpec,
    body: ContainerCreateBody,
    lines: mpsc::Sender<String>,
    timeout: Duration,
) -> Result<i64, NodeError> {
    create(docker, name, spec, body).await?;
    docker
        .raw()
        .start_container(name, None)
        .await
        .map_err(|e| NodeError::Docker(format!("starting {name}: {e}")))?;

    let mut out = LineSplitter::new(lines);
    let mut seen = 0usize;
    let wait = async {
        // Live output while it runs. The followed stream ends when the container exits.
        let mut logs = std::pin::pin!(docker.raw().logs(name, Some(log_options(true))));
        while let Some(Ok(frame)) = logs.next().await {
            seen += 1;
            out.push(frame).await;
        }
        docker
            .raw()
            .wait_container(name, None::<WaitContainerOptions>)
            .next()
            .await
    };
    // The wait is inside the deadline too: a log stream that broke off early must not
    // leave us waiting on a command that never ends.
    let Ok(waited) = tokio::time::timeout(timeout, wait).await else {
        return Err(NodeError::Timeout {
            what: format!("the {} command", spec.ptype),
            after: secs(timeout),
        });
    };
    // A followed stream can end before the last lines are read (and a final line without
    // a newline is only logged at exit), yet the last lines are the ones that say why a
    // command failed: read the whole log again and send what the stream missed. Both
    // read the same json-file log in order, so the followed frames are a prefix (unless
    // more than the 30 MB kept were written; then the tail may go unsent, never twice).
    let mut all = std::pin::pin!(docker.raw().logs(name, Some(log_options(false))));
    let mut n = 0usize;
    while let Some(Ok(frame)) = all.next().await {
        n += 1;
        if n > seen {
            out.push(frame).await;
        }
    }
    let lines = out.finish().await;
    let code = match waited {
        Some(Ok(r)) => r.status_code,
        // bollard reports a non-zero exit as this error.
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
        Some(Err(e)) => return Err(NodeError::Docker(format!("waiting for {name}: {e}"))),
        None => return Err(NodeError::Docker(format!("{name}: no exit status"))),
    };
    let oom = docker
        .raw()
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
        .ok()
        .and_then(|i| i.state)
        .and_then(|s| s.oom_killed)
        .unwrap_or(false);
    if oom {
        // The exit code alone (137) would not say why.
        let _ = lines
            .send(format!(
                "killed: out of memory (limit {} MiB)",
                spec.memory >> 20
            ))
            .await;
    }
    Ok(code)
}

fn log_options(follow: bool) -> bollard::query_parameters::LogsOptions {
    LogsOptionsBuilder::default()
        .follow(follow)
        .stdout(true)
        .stderr(true)
        .build()
}

/// Turns log frames into lines, one partial line per stream so stdout and stderr output
/// never run together.
struct LineSplitter {
    tx: mpsc::Sender<String>,
    out: Vec<u8>,
    err: Vec<u8>,
}

impl LineSplitter {
    fn new(tx: mpsc::Sender<String>) -> Self {
        LineSplitter {
            tx,
            out: vec![],
            err: vec![],
        }
    }

    async fn push(&mut self, frame: LogOutput) {
        let buf = match &frame {
            LogOutput::StdErr { .. } => &mut self.err,
            _ => &mut self.out,
        };
        buf.extend_from_slice(&frame.into_bytes());
        let mut ready = vec![];
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            ready.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
        }
        for line in ready {
            // A receiver that went away only means nobody is watching.
            let _ = self.tx.send(line).await;
        }
    }

    /// Sends what is left without a final newline; returns the sender for more messages.
    async fn finish(mut self) -> mpsc::Sender<String> {
        for buf in [std::mem::take(&mut self.out), std::mem::take(&mut self.err)] {
            if !buf.is_empty() {
                let _ = self
                    .tx
                    .send(String::from_utf8_lossy(&buf).into_owned())
                    .await;
            }
        }
        self.tx
    }
}

/// Removes a container when dropped, also when the future owning it is cancelled.
struct RemoveOnDrop {
    docker: Docker,
    name: Option<String>,
}

impl RemoveOnDrop {
    fn disarm(mut self) {
        self.name = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let Some(name) = self.name.take() else { return };
        let docker = self.docker.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { docker.remove(&name).await });
        }
    }
}

/// Checks the spec and readies the files: returns (release's `app/` dir, data dir), both
/// absolute, as Docker bind mounts need.
fn prepare(root: &NodeRoot, spec: &ProcessSpec) -> Result<(PathBuf, PathBuf), NodeError> {
    check_instance(&spec.instance)?;
    names::check_node_app(&spec.app)?;
    check_release(&spec.release)?;
    names::check("process type", &spec.ptype)?;
    if spec.command.trim().is_empty() || spec.command.contains('\0') {
        return Err(NodeError::Invalid(format!(
            "{}: the command is empty or holds a NUL byte",
            spec.ptype
        )));
    }
    if spec.memory <= 0 {
        return Err(NodeError::Invalid(format!(
            "memory limit must be positive, got {}",
            spec.memory
        )));
    }
    if !root.has_release(&spec.app, &spec.release) {
        return Err(NodeError::NoRelease {
            app: spec.app.clone(),
            name: spec.release.clone(),
        });
    }
    let app_dir = root.release_dir(&spec.app, &spec.release).join("app");
    // A real directory: a symlink named `app` would mount some other part of the release.
    let is_dir = std::fs::symlink_metadata(&app_dir)
        .map(|m| m.is_dir())
        .unwrap_or(false);
    if !is_dir {
        return Err(NodeError::BadRelease {
            app: spec.app.clone(),
            name: spec.release.clone(),
            reason: "it has no app/ directory".into(),
        });
    }
    crate::isolation::check_uid(spec.uid).map_err(|e| NodeError::Invalid(e.to_string()))?;
    let data_dir = root.ensure_data_dir(&spec.app, spec.uid)?;
    let abs =
        |p: PathBuf| std::path::absolute(&p).map_err(|source| NodeError::Io { path: p, source });
    Ok((abs(app_dir)?, abs(data_dir)?))
}

/// Instance ids are hex digests or names: 1-40 of `[a-z0-9-]`, not starting with '-'.
/// They go into container names and label filters.
fn check_instance(id: &str) -> Result<(), NodeError> {
    let ok = !id.is_empty()
        && id.len() <= 40
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(NodeError::Invalid(format!(
            "invalid node instance id {:?}: use 1-40 characters a-z, 0-9 and '-'",
            id.chars()
                .filter(|c| !c.is_control())
                .take(60)
                .collect::<String>()
        )))
    }
}

fn is_reserved(key: &str) -> bool {
    matches!(key, "PORT" | "HOME" | "DATA_DIR") || key.starts_with("MAGRATHEA_")
}

/// Config vars first, then ours. Everything but `PORT` (the caller adds it if any).
fn env(spec: &ProcessSpec) -> Result<Vec<String>, NodeError> {
    let mut out = Vec::with_capacity(spec.env.len() + 6);
    for (k, v) in &spec.env {
        let key_ok = k
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !key_ok {
            return Err(NodeError::Invalid(format!(
                "config var name {:?} is not a valid environment variable name \
                 (letters, digits and '_', not starting with a digit)",
                k.chars()
                    .filter(|c| !c.is_control())
                    .take(60)
                    .collect::<String>()
            )));
        }
        if is_reserved(k) {
            return Err(NodeError::Invalid(format!(
                "config var {k} is set by magrathea and cannot be overridden; unset it"
            )));
        }
        if v.contains('\0') {
            return Err(NodeError::Invalid(format!(
                "config var {k} holds a NUL byte"
            )));
        }
        out.push(format!("{k}={v}"));
    }
    // `shop.staging` on the node: the app and its environment, as the app knows them.
    let (app, env) = spec
        .app
        .split_once('.')
        .unwrap_or((&spec.app, "production"));
    out.extend([
        "HOME=/app".to_string(),
        "DATA_DIR=/data".to_string(),
        format!("MAGRATHEA_APP={app}"),
        format!("MAGRATHEA_ENV={env}"),
        format!("MAGRATHEA_RELEASE={}", spec.release),
        format!("MAGRATHEA_PROCESS={}.{}", spec.ptype, spec.index),
        format!("MAGRATHEA_CMD={}", spec.command),
    ]);
    Ok(out)
}

fn labels(spec: &ProcessSpec) -> HashMap<String, String> {
    HashMap::from([
        (L_INSTANCE.into(), spec.instance.clone()),
        (L_APP.into(), spec.app.clone()),
        (L_RELEASE.into(), spec.release.clone()),
        (L_PROCESS.into(), spec.ptype.clone()),
        (L_INDEX.into(), spec.index.to_string()),
        (L_GENERATION.into(), spec.generation.to_string()),
    ])
}

fn container_body(
    spec: &ProcessSpec,
    app_dir: &Path,
    data_dir: &Path,
    env: Vec<String>,
    labels: HashMap<String, String>,
    restart: RestartPolicy,
) -> ContainerCreateBody {
    let bind = |src: &Path, dst: &str, ro: bool| Mount {
        typ: Some(MountType::BIND),
        source: Some(src.to_string_lossy().into_owned()),
        target: Some(dst.into()),
        read_only: Some(ro),
        ..Default::default()
    };
    // Capped json-file logs: a chatty app must not fill the node's disk.
    let log_config = HostConfigLogConfig {
        typ: Some("json-file".into()),
        config: Some(HashMap::from([
            ("max-size".to_string(), "10m".to_string()),
            ("max-file".to_string(), "3".to_string()),
        ])),
    };
    let mut body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: Some(vec!["/bin/sh".into(), "-c".into(), LAUNCHER.into()]),
        env: Some(env),
        working_dir: Some("/app".into()),
        labels: Some(labels),
        host_config: Some(HostConfig {
            mounts: Some(vec![
                bind(app_dir, "/app", true),
                bind(data_dir, "/data", false),
            ]),
            // The daemon has no bridge; processes listen on host ports.
            network_mode: Some("host".into()),
            memory: Some(spec.memory),
            memory_swap: Some(spec.memory),
            // docker-init as PID 1: it forwards SIGTERM (a shell or app as PID 1 would
            // ignore it, making every stop wait out the grace period) and reaps zombies.
            init: Some(true),
            restart_policy: Some(restart),
            log_config: Some(log_config),
            ..Default::default()
        }),
        ..Default::default()
    };
    // The app's own uid, no capabilities, no-new-privileges, a pids limit.
    if let Some(host) = body.host_config.as_mut() {
        crate::isolation::confine(
            &mut body.user,
            host,
            spec.uid,
            crate::isolation::PROCESS_PIDS,
        );
    }
    body
}

async fn create(
    docker: &Docker,
    name: &str,
    spec: &ProcessSpec,
    body: ContainerCreateBody,
) -> Result<(), NodeError> {
    let opts = CreateContainerOptionsBuilder::default().name(name).build();
    match docker.raw().create_container(Some(opts), body).await {
        Ok(_) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Err(NodeError::NoImage(spec.image.clone())),
        Err(e) => Err(NodeError::Docker(format!("creating {name}: {e}"))),
    }
}

/// A port nobody listens on right now. The kernel picks it; we let go before the process
/// binds it, so another program could take it in between: the health check would then
/// fail and the deploy be retried, which is acceptable for that rare race.
fn free_port() -> Result<u16, NodeError> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(|source| NodeError::Io {
        path: PathBuf::from("127.0.0.1:0"),
        source,
    })?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|source| NodeError::Io {
            path: PathBuf::from("127.0.0.1:0"),
            source,
        })
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ProcessSpec {
        ProcessSpec {
            instance: "0a1b2c3d".into(),
            app: "shop".into(),
            release: "v3-0123456789ab".into(),
            ptype: "web".into(),
            index: 1,
            command: "echo 'a b' && exit 3".into(),
            env: vec![("LOG_LEVEL".into(), "warn x=y".into())],
            image: "magrathea/stack-tiny:latest".into(),
            memory: 64 << 20,
            generation: 0,
            uid: crate::isolation::UID_BASE + 1,
        }
    }

    #[test]
    fn names_and_env() {
        let s = spec();
        assert_eq!(container_name(&s), "mg-0a1b2c3d-shop-v3-0123456789ab-web-1");
        let g = ProcessSpec {
            generation: 7,
            ..spec()
        };
        assert_eq!(
            container_name(&g),
            "mg-0a1b2c3d-shop-v3-0123456789ab-web-1-g7"
        );
        let e = env(&s).unwrap();
        assert_eq!(e[0], "LOG_LEVEL=warn x=y");
        assert!(e.contains(&"MAGRATHEA_PROCESS=web.1".to_string()));
        assert!(e.contains(&"MAGRATHEA_CMD=echo 'a b' && exit 3".to_string()));
        for bad in ["PORT", "MAGRATHEA_CMD", "1X", "A-B", "", "A=B"] {
            let mut s = spec();
            s.env = vec![(bad.into(), "v".into())];
            assert!(env(&s).is_err(), "{bad}");
        }
        assert!(check_instance("0a1b2c3d").is_ok());
        for bad in ["", "-x", "A", "a_b", "a/b", &"a".repeat(41)] {
            assert!(check_instance(bad).is_err(), "{bad}");
        }
    }
}
