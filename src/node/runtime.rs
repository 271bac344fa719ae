//! App processes as Docker containers.
//!
//! A process is one container named `mg-<instance>-<app>-<release>-<ptype>-<index>` and
//! labelled with the same facts (`magrathea.*`), so a node finds its processes again after a
//! restart by asking Docker, never by trusting a file of its own. Each app's containers are on
//! the app's own network (`isolation`); a process listens on the `PORT` it is given, which is
//! published under the same number on the node.
//!
//! Every container runs user code, so it gets the same confinement (`isolation::confine`):
//! the app's own uid, no capabilities, no-new-privileges, a pids limit, a memory limit
//! without swap, and only its own files writable: `/app` is a throwaway overlay on the
//! unpacked release (see [`Scratch`]), gone with the container, and `/data` the app's
//! persistent data dir.
//!
//! The dyno environment is Heroku's: `PORT`, `DYNO` (`web.1`, `run.1`, `release.1`),
//! `HOME=/app`, and bash sourcing `.profile.d/*.sh` and `.profile` before the command.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, HostConfig, HostConfigLogConfig, Mount,
    MountType, MountVolumeOptions, MountVolumeOptionsDriverConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    LogsOptionsBuilder, StopContainerOptionsBuilder, WaitContainerOptions,
};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::layout::{check_release, AgentError, NodeRoot};
use super::proto::{Capacity, ProcInfo};
use crate::docker::Docker;
use crate::names;
use crate::release::extract::remove_tree;

/// Label keys. `magrathea.oneoff` marks [`run_once`] containers, which [`list`] skips.
const L_INSTANCE: &str = "magrathea.instance";
const L_APP: &str = "magrathea.app";
const L_RELEASE: &str = "magrathea.release";
const L_PROCESS: &str = "magrathea.process";
const L_INDEX: &str = "magrathea.index";
const L_PORT: &str = "magrathea.port";
const L_ONEOFF: &str = "magrathea.oneoff";
const L_GENERATION: &str = "magrathea.generation";
/// The container's scratch dir (its `/app` overlay's upper and work dirs).
const L_SCRATCH: &str = "magrathea.scratch";

/// How often Docker restarts a crashing process before leaving it `exited`.
const MAX_RESTARTS: i64 = 5;

/// The shell every process, release command and one-off runs in: bash, as on Heroku
/// (buildpacks' `.profile.d` scripts are bash), or `sh` on a stack without bash.
/// `$0` of the inner script is that shell.
const PICK_SHELL: &str =
    "if command -v bash >/dev/null 2>&1; then s=bash; else s=sh; fi; exec \"$s\" -c";

/// Sources the buildpacks' `.profile.d/*.sh`, then the app's own `.profile` (Heroku's
/// order), from `/app`.
const PROFILE: &str =
    "for f in /app/.profile.d/*.sh; do [ -f \"$f\" ] && . \"$f\"; done; unset f; \
                       [ -f /app/.profile ] && . /app/.profile; ";

/// A Procfile or release command: it comes in `$MAGRATHEA_CMD`, so it is never spliced into
/// this string; only the innermost `bash -c` parses it, exactly as written.
fn launcher() -> Vec<String> {
    let inner = format!("{PROFILE}exec \"$0\" -c \"$MAGRATHEA_CMD\"");
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("{PICK_SHELL} '{inner}' \"$s\""),
    ]
}

/// An argv (`run`, `shell`): the launcher, then the argv as its arguments (`"$@"`, never
/// parsed again).
pub fn argv_launcher(name: &str, argv: &[String]) -> Vec<String> {
    let inner = format!("{PROFILE}exec \"$@\"");
    let mut cmd = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        format!("{PICK_SHELL} '{inner}' {name} \"$@\""),
        name.to_string(),
    ];
    cmd.extend(argv.iter().cloned());
    cmd
}

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
    /// CPUs it may use (Docker's `--cpus`); 0 for no limit.
    pub cpu: f64,
    /// The rollout that started it (see `PrepareReq::generation`); 0 for none.
    pub generation: u64,
    /// The app's uid (and gid), from the controller; see `isolation`.
    pub uid: u32,
    /// The address the controller reaches this node at: a web process's port is published
    /// there as well as on loopback (where the health checker probes). None: loopback only.
    pub publish_ip: Option<std::net::IpAddr>,
}

#[derive(Debug, Clone)]
pub struct Running {
    pub container: String,
    pub port: u16,
    pub ptype: String,
    pub index: u32,
    pub release: String,
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
) -> Result<Running, AgentError> {
    let (app_dir, data_dir) = prepare(root, spec)?;
    let port = free_port()?;
    let name = container_name(spec);
    let mut env = env(spec)?;
    env.push(format!("PORT={port}"));
    docker.remove(&name).await; // a leftover from a crash or an earlier attempt
    let scratch = Scratch::create(root, &spec.app, &name, spec.uid)?;
    let mut labels = labels(spec);
    labels.insert(L_SCRATCH.into(), scratch.dir.to_string_lossy().into_owned());
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
    let mut body = container_body(spec, &app_dir, &data_dir, &scratch, env, labels, restart)?;
    publish(&mut body, port, spec.publish_ip);

    if let Err(e) = create(docker, &name, spec, body).await {
        scratch.remove();
        return Err(e);
    }
    if let Err(e) = docker.raw().start_container(&name, None).await {
        docker.remove(&name).await;
        scratch.remove();
        return Err(AgentError::Docker(format!("starting {name}: {e}")));
    }
    Ok(Running {
        container: name,
        port,
        ptype: spec.ptype.clone(),
        index: spec.index,
        release: spec.release.clone(),
    })
}

/// The longest a health probe waits for its connection (see [`probe`]).
const CONNECT_LIMIT: Duration = Duration::from_secs(1);

/// Waits between the extra probes of the first health-check interval, in milliseconds.
const FIRST_STEPS: [u64; 4] = [20, 40, 80, 160];

/// GETs `path` from `127.0.0.1:port` (raw HTTP/1.0, `Host: localhost`) up to `attempts`
/// times, `interval` apart, each bounded by `timeout`. Healthy means any status below 500
/// (a 404 or a redirect still proves the app is up and answering). The error says what
/// happened on the last attempt. See [`check_health`].
pub async fn health_check(
    port: u16,
    path: &str,
    timeout: Duration,
    attempts: u32,
    interval: Duration,
) -> Result<(), String> {
    let probe = Probe {
        path,
        timeout,
        attempts,
        interval,
        initial_delay: Duration::ZERO,
        content: None,
    };
    check_health(port, &probe, || async { Ok(()) }).await
}

/// One startup check's schedule and what counts as healthy.
#[derive(Debug, Clone)]
pub struct Probe<'a> {
    pub path: &'a str,
    pub timeout: Duration,
    pub attempts: u32,
    pub interval: Duration,
    pub initial_delay: Duration,
    /// The body must contain this (as Dokku's `content`).
    pub content: Option<&'a str>,
}

/// Runs `probe` against `port`. Before every attempt after the first, `alive` is asked
/// whether the process is still up: its error ends the check at once (a process that exited
/// will not start answering, and waiting out a 60 s boot timeout would only hide why).
///
/// Most processes listen within a few tens of milliseconds of their start, so the first
/// interval is spent probing at growing steps ([`FIRST_STEPS`]) rather than asleep: a deploy
/// does not wait half a second for an app that was ready long before. The schedule of the
/// counted attempts, and so how long a slow app is given, stays `attempts` × `interval`.
pub async fn check_health<F, Fut>(port: u16, p: &Probe<'_>, mut alive: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let path = p.path;
    if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!(
            "health check path {:?} must start with '/' and hold no spaces or control characters",
            path.chars().take(60).collect::<String>()
        ));
    }
    let (timeout, interval) = (p.timeout, p.interval);
    let connect_limit = CONNECT_LIMIT.min(timeout / 2);
    let healthy = |r: &Result<(u16, bool), String>| matches!(r, Ok((s, true)) if *s < 500);
    let attempts = p.attempts.max(1);
    if !p.initial_delay.is_zero() {
        tokio::time::sleep(p.initial_delay).await;
    }
    let started = std::time::Instant::now();
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
                let r = tokio::time::timeout(timeout, probe(port, path, p.content, connect_limit));
                if let Ok(r) = r.await {
                    if healthy(&r) {
                        return Ok(());
                    }
                }
            }
            tokio::time::sleep(interval - waited).await;
        } else if attempt > 2 {
            tokio::time::sleep(interval).await;
        }
        if attempt > 1 {
            alive().await?;
        }
        last = match tokio::time::timeout(timeout, probe(port, path, p.content, connect_limit))
            .await
        {
            Ok(r) if healthy(&r) => return Ok(()),
            Ok(Ok((status, true))) => format!("status {status}"),
            Ok(Ok((status, false))) => format!(
                "status {status}, but the body does not contain {:?}",
                p.content.unwrap_or_default()
            ),
            Ok(Err(e)) => e,
            Err(_) => format!("no answer within {}", secs(timeout)),
        };
    }
    Err(format!(
        "GET {path} on port {port}: {last} (after {attempts} attempt{} over {})",
        if attempts == 1 { "" } else { "s" },
        secs(started.elapsed())
    ))
}

/// The last `n` lines a container wrote (stdout and stderr), oldest first: what a failed
/// check shows so the pusher sees why without another command.
pub async fn last_lines(docker: &Docker, container: &str, n: usize) -> Vec<String> {
    let opts = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail(&n.to_string())
        .build();
    let mut out = vec![];
    let mut logs = std::pin::pin!(docker.raw().logs(container, Some(opts)));
    let mut buf = Vec::new();
    while let Some(Ok(frame)) = logs.next().await {
        buf.extend_from_slice(&frame.into_bytes());
    }
    for l in String::from_utf8_lossy(&buf).lines() {
        out.push(
            l.chars()
                .filter(|c| !c.is_control() || *c == '\t')
                .collect(),
        );
    }
    let skip = out.len().saturating_sub(n);
    out.split_off(skip)
}

/// One GET; the status code and whether the body holds `content` (true without one), or
/// what went wrong in words. The connection is bounded by `connect_limit`: the port is
/// DNATed into the app's network, so while a crashed process's container restarts, a SYN
/// goes to an address nobody holds and is never answered (a live container answers or
/// refuses at once).
async fn probe(
    port: u16,
    path: &str,
    content: Option<&str>,
    connect_limit: Duration,
) -> Result<(u16, bool), String> {
    let connect = tokio::net::TcpStream::connect(("127.0.0.1", port));
    let Ok(connected) = tokio::time::timeout(connect_limit, connect).await else {
        return Err(format!(
            "no connection within {} (nothing answers on $PORT: did the process exit? \
             its container may be restarting)",
            secs(connect_limit)
        ));
    };
    let mut s = connected.map_err(|e| match e.kind() {
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
    // The status line matters, and the body only when its content is checked: read until
    // the end of the status line, or of the response (bounded).
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 4096];
    let limit = if content.is_some() { 1 << 20 } else { 4096 };
    while (content.is_some() || !buf.contains(&b'\n')) && buf.len() < limit {
        match s.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("reading the response failed: {e}")),
        }
    }
    let has_content = match content {
        None => true,
        Some(c) => {
            let body = buf
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(&buf[..0], |i| &buf[i + 4..]);
            body.windows(c.len().max(1)).any(|w| w == c.as_bytes())
        }
    };
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
        (Some(v), Some(code)) if v.starts_with("HTTP/") => Ok((code, has_content)),
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
    let scratch = scratch_of(docker, container).await;
    docker.remove(container).await;
    // Its throwaway /app goes with it (the overlay volume was unmounted by the remove).
    if let Some(s) = scratch {
        s.remove();
    }
}

/// The scratch dir a container's label names, if it is one (an absolute path ending in
/// `apps/<its app>/scratch/<its name>`; a label is ours, but a path is checked before a
/// tree is removed).
async fn scratch_of(docker: &Docker, container: &str) -> Option<Scratch> {
    let info = docker
        .raw()
        .inspect_container(container, None::<InspectContainerOptions>)
        .await
        .ok()?;
    let name = info.name.as_deref()?.trim_start_matches('/').to_string();
    let labels = info.config?.labels?;
    let app = labels.get(L_APP)?;
    let dir = PathBuf::from(labels.get(L_SCRATCH)?);
    let ok = names::valid_node_app(app)
        && dir.is_absolute()
        && dir.ends_with(Path::new("apps").join(app).join(SCRATCH).join(&name));
    ok.then_some(Scratch { dir })
}

/// This instance's process containers (of `app`, or all), whatever their state; one-off
/// containers are left out. Sorted by app, release, process type, index.
pub async fn list(
    docker: &Docker,
    instance: &str,
    app: Option<&str>,
) -> Result<Vec<ProcInfo>, AgentError> {
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
        .map_err(|e| AgentError::Docker(format!("listing containers: {e}")))?;
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
            Err(e) => return Err(AgentError::Docker(format!("inspecting {id}: {e}"))),
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
            memory: info
                .host_config
                .as_ref()
                .and_then(|h| h.memory)
                .unwrap_or(0),
            cpu: info
                .host_config
                .as_ref()
                .and_then(|h| h.nano_cpus)
                .map_or(0.0, |n| n as f64 / 1e9),
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
) -> Result<i64, AgentError> {
    // Ends in letters, so it never equals a process name (those end in the index).
    let name = format!("{}-once", container_name(spec));
    docker.remove(&name).await;
    let (body, scratch) = oneoff_base(root, spec, &name)?;
    let cleanup = RemoveOnDrop {
        docker: docker.clone(),
        name: Some(name.clone()),
        scratch: Some(scratch),
    };
    let result = run_container(docker, &name, spec, body, lines, timeout).await;
    // Removed before returning, so the caller never sees a leftover; the guard only covers
    // cancellation.
    docker.remove(&name).await;
    cleanup.disarm();
    result
}

/// A process's container body without restarts, labelled `magrathea.oneoff`, with a fresh
/// scratch dir for its `/app` (the caller removes it with the container) and a `PORT` of
/// its own, as Heroku gives one-off dynos.
fn oneoff_base(
    root: &NodeRoot,
    spec: &ProcessSpec,
    name: &str,
) -> Result<(ContainerCreateBody, Scratch), AgentError> {
    let (app_dir, data_dir) = prepare(root, spec)?;
    let mut env = env(spec)?;
    env.push(format!("PORT={}", free_port()?));
    let scratch = Scratch::create(root, &spec.app, name, spec.uid)?;
    let mut labels = labels(spec);
    labels.insert(L_ONEOFF.into(), "true".into());
    labels.insert(L_SCRATCH.into(), scratch.dir.to_string_lossy().into_owned());
    let restart = RestartPolicy {
        name: Some(RestartPolicyNameEnum::NO),
        maximum_retry_count: None,
    };
    match container_body(spec, &app_dir, &data_dir, &scratch, env, labels, restart) {
        Ok(body) => Ok((body, scratch)),
        Err(e) => {
            scratch.remove();
            Err(e)
        }
    }
}

/// The body of an interactive one-off container named `name` (`run`, see
/// `node::interactive`): the image, mounts, env, labels (`magrathea.oneoff`, so [`list`]
/// skips it) and confinement of [`run_once`], but `cmd` as given (an argv, never parsed by
/// a shell here), no restarts, stdin open for one attach, and a tty if asked. The caller
/// creates, attaches, starts and removes it, and removes the returned scratch dir after.
pub fn oneoff_body(
    root: &NodeRoot,
    spec: &ProcessSpec,
    name: &str,
    cmd: Vec<String>,
    tty: bool,
) -> Result<(ContainerCreateBody, Scratch), AgentError> {
    let (mut body, scratch) = oneoff_base(root, spec, name)?;
    body.cmd = Some(cmd);
    body.tty = Some(tty);
    body.open_stdin = Some(true);
    body.stdin_once = Some(true);
    body.attach_stdin = Some(true);
    body.attach_stdout = Some(true);
    body.attach_stderr = Some(true);
    Ok((body, scratch))
}

async fn run_container(
    docker: &Docker,
    name: &str,
    spec: &ProcessSpec,
    body: ContainerCreateBody,
    lines: mpsc::Sender<String>,
    timeout: Duration,
) -> Result<i64, AgentError> {
    create(docker, name, spec, body).await?;
    docker
        .raw()
        .start_container(name, None)
        .await
        .map_err(|e| AgentError::Docker(format!("starting {name}: {e}")))?;

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
        return Err(AgentError::Timeout {
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
        Some(Err(e)) => return Err(AgentError::Docker(format!("waiting for {name}: {e}"))),
        None => return Err(AgentError::Docker(format!("{name}: no exit status"))),
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
    out: crate::lines::LineBuf,
    err: crate::lines::LineBuf,
}

impl LineSplitter {
    fn new(tx: mpsc::Sender<String>) -> Self {
        LineSplitter {
            tx,
            out: Default::default(),
            err: Default::default(),
        }
    }

    async fn push(&mut self, frame: LogOutput) {
        let buf = match &frame {
            LogOutput::StdErr { .. } => &mut self.err,
            _ => &mut self.out,
        };
        for line in buf.push(&frame.into_bytes()) {
            // A receiver that went away only means nobody is watching.
            let _ = self.tx.send(line).await;
        }
    }

    /// Sends what is left without a final newline; returns the sender for more messages.
    async fn finish(mut self) -> mpsc::Sender<String> {
        for rest in [self.out.finish(), self.err.finish()].into_iter().flatten() {
            let _ = self.tx.send(rest).await;
        }
        self.tx
    }
}

/// Removes a container and then its scratch dir when dropped, also when the future owning
/// it is cancelled. [`Self::disarm`] after removing the container yourself removes the
/// scratch dir at once.
pub struct RemoveOnDrop {
    pub docker: Docker,
    pub name: Option<String>,
    pub scratch: Option<Scratch>,
}

impl RemoveOnDrop {
    pub fn disarm(mut self) {
        self.name = None;
        if let Some(s) = self.scratch.take() {
            s.remove();
        }
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let (name, scratch) = (self.name.take(), self.scratch.take());
        if name.is_none() && scratch.is_none() {
            return;
        }
        let docker = self.docker.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Some(n) = name {
                    docker.remove(&n).await;
                }
                if let Some(s) = scratch {
                    s.remove();
                }
            });
        }
    }
}

/// The directory under `apps/<app>/`: one dir per container, holding its `/app` overlay's
/// upper and work dirs.
pub const SCRATCH: &str = "scratch";

/// A container's throwaway `/app`: an overlay mounted by Docker (a `local` volume of type
/// overlay, anonymous, so removing the container with its volumes unmounts it) whose lower
/// dir is the unpacked, never-written release and whose upper and work dirs live here.
/// Starting one costs a mkdir and a mount whatever the release's size; writes land in
/// `upper/` and go when the container does.
#[derive(Debug)]
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    fn create(
        root: &NodeRoot,
        app: &str,
        container: &str,
        uid: u32,
    ) -> Result<Scratch, AgentError> {
        let dir = std::path::absolute(root.app_dir(app).join(SCRATCH).join(container)).map_err(
            |source| AgentError::Io {
                path: root.app_dir(app),
                source,
            },
        )?;
        if dir.exists() {
            // A leftover of a crash: its container is gone (the caller removed it).
            let _ = remove_tree(&dir);
        }
        let upper = dir.join("upper");
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| AgentError::Io { path: p, source }
        };
        std::fs::create_dir_all(&upper).map_err(io(&upper))?;
        std::fs::create_dir(dir.join("work")).map_err(io(&dir.join("work")))?;
        // The overlay's root takes the upper dir's owner: the app's uid may write /app.
        std::os::unix::fs::chown(&upper, Some(uid), Some(uid)).map_err(io(&upper))?;
        Ok(Scratch { dir })
    }

    fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }

    fn work(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// Best effort: a dir left behind is swept by [`sweep_scratch`].
    pub fn remove(&self) {
        if let Err(e) = remove_tree(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.dir.display(), "removing scratch dir: {e}");
            }
        }
    }
}

/// Removes every one-off container of this node (release commands, `run` sessions): called
/// when the agent starts, so none of them has a caller any more (an agent killed with its
/// calls in flight, or the controller's in-process node dying with the controller).
pub async fn sweep_oneoffs(docker: &Docker, instance: &str) -> usize {
    let filters = HashMap::from([(
        "label",
        vec![format!("{L_INSTANCE}={instance}"), L_ONEOFF.to_string()],
    )]);
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let Ok(list) = docker.raw().list_containers(Some(opts)).await else {
        return 0;
    };
    let mut n = 0;
    for id in list.into_iter().filter_map(|c| c.id) {
        // Its scratch dir goes with the next `gc` of the app (see [`sweep_scratch`]).
        docker.remove(&id).await;
        n += 1;
    }
    n
}

/// Removes the scratch dirs of `app` whose container no longer exists (a node that crashed
/// or a session that was cut off), leaving the young ones: a container being created now
/// has its dir before Docker knows its name.
pub async fn sweep_scratch(docker: &Docker, root: &NodeRoot, instance: &str, app: &str) {
    let dir = root.app_dir(app).join(SCRATCH);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return;
    };
    let filters = HashMap::from([("label", vec![format!("{L_INSTANCE}={instance}")])]);
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let Ok(list) = docker.raw().list_containers(Some(opts)).await else {
        return;
    };
    let alive: std::collections::HashSet<String> = list
        .into_iter()
        .flat_map(|c| c.names.unwrap_or_default())
        .map(|n| n.trim_start_matches('/').to_string())
        .collect();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let young = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age < Duration::from_secs(120));
        if !alive.contains(&name) && !young {
            let _ = remove_tree(&e.path());
        }
    }
}

/// Checks the spec and readies the files: returns (release's `app/` dir, data dir), both
/// absolute, as Docker bind mounts need.
fn prepare(root: &NodeRoot, spec: &ProcessSpec) -> Result<(PathBuf, PathBuf), AgentError> {
    check_instance(&spec.instance)?;
    names::check_node_app(&spec.app)?;
    check_release(&spec.release)?;
    names::check("process type", &spec.ptype)?;
    if spec.command.trim().is_empty() || spec.command.contains('\0') {
        return Err(AgentError::Invalid(format!(
            "{}: the command is empty or holds a NUL byte",
            spec.ptype
        )));
    }
    if !(0.0..=1024.0).contains(&spec.cpu) {
        return Err(AgentError::Invalid(format!(
            "cpu limit must be 0 (none) to 1024, got {}",
            spec.cpu
        )));
    }
    if spec.memory <= 0 {
        return Err(AgentError::Invalid(format!(
            "memory limit must be positive, got {}",
            spec.memory
        )));
    }
    if !root.has_release(&spec.app, &spec.release) {
        return Err(AgentError::NoRelease {
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
        return Err(AgentError::BadRelease {
            app: spec.app.clone(),
            name: spec.release.clone(),
            reason: "it has no app/ directory".into(),
        });
    }
    crate::isolation::check_uid(spec.uid).map_err(|e| AgentError::Invalid(e.to_string()))?;
    root.own_release(&spec.app, &spec.release, spec.uid)?;
    let data_dir = root.ensure_data_dir(&spec.app, spec.uid)?;
    let abs =
        |p: PathBuf| std::path::absolute(&p).map_err(|source| AgentError::Io { path: p, source });
    Ok((abs(app_dir)?, abs(data_dir)?))
}

/// Memory kept for the system and Docker when a node sizes itself from the machine: a
/// tenth of it, at least 256 MiB and at most 2 GiB.
pub fn memory_reserve(total: i64) -> i64 {
    (total / 10).clamp(256 << 20, 2 << 30)
}

/// The machine's `MemTotal` (from `/proc/meminfo`) minus [`memory_reserve`], and its CPUs.
pub fn machine_capacity() -> Capacity {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| parse_mem_total(&s))
        .unwrap_or(0);
    Capacity {
        memory: (total - memory_reserve(total)).max(0),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
    }
}

/// `MemTotal:       24554112 kB` in bytes.
fn parse_mem_total(meminfo: &str) -> Option<i64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut parts = line.split_whitespace().skip(1);
    let n: i64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => n.checked_mul(1024),
        _ => None,
    }
}

/// Instance ids are hex digests or names: 1-40 of `[a-z0-9-]`, not starting with '-'.
/// They go into container names and label filters.
fn check_instance(id: &str) -> Result<(), AgentError> {
    let ok = !id.is_empty()
        && id.len() <= 40
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(AgentError::Invalid(format!(
            "invalid node instance id {:?}: use 1-40 characters a-z, 0-9 and '-'",
            id.chars()
                .filter(|c| !c.is_control())
                .take(60)
                .collect::<String>()
        )))
    }
}

fn is_reserved(key: &str) -> bool {
    matches!(key, "PORT" | "HOME" | "DATA_DIR" | "DYNO") || key.starts_with("MAGRATHEA_")
}

/// Config vars first, then ours. Everything but `PORT` (the caller adds it if any).
fn env(spec: &ProcessSpec) -> Result<Vec<String>, AgentError> {
    let mut out = Vec::with_capacity(spec.env.len() + 6);
    for (k, v) in &spec.env {
        let key_ok = k
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !key_ok {
            return Err(AgentError::Invalid(format!(
                "config var name {:?} is not a valid environment variable name \
                 (letters, digits and '_', not starting with a digit)",
                k.chars()
                    .filter(|c| !c.is_control())
                    .take(60)
                    .collect::<String>()
            )));
        }
        if is_reserved(k) {
            return Err(AgentError::Invalid(format!(
                "config var {k} is set by magrathea and cannot be overridden; unset it"
            )));
        }
        if v.contains('\0') {
            return Err(AgentError::Invalid(format!(
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
        // Heroku's name for the process: web.1, worker.2, run.1, release.1.
        format!("DYNO={}.{}", spec.ptype, spec.index),
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

/// The `/app` mount: an anonymous `local` volume of type overlay (see [`Scratch`]). The
/// paths go into a comma- and colon-separated option string, so those are refused.
fn app_mount(app_dir: &Path, scratch: &Scratch) -> Result<Mount, AgentError> {
    let paths = [app_dir.to_path_buf(), scratch.upper(), scratch.work()];
    let mut s = vec![];
    for p in &paths {
        let t = p.to_str().filter(|t| {
            !t.contains([',', ':', '\\']) && !t.chars().any(|c| c.is_control() || c == ' ')
        });
        match t {
            Some(t) => s.push(t.to_string()),
            None => {
                return Err(AgentError::Invalid(format!(
                    "{}: the node's root path must not hold ',', ':', '\\', spaces or control \
                     characters (it goes into an overlay mount's options)",
                    p.display()
                )))
            }
        }
    }
    Ok(Mount {
        typ: Some(MountType::VOLUME),
        target: Some("/app".into()),
        read_only: Some(false),
        volume_options: Some(MountVolumeOptions {
            // Never copy the image's /app into it: the release is the content.
            no_copy: Some(true),
            driver_config: Some(MountVolumeOptionsDriverConfig {
                name: Some("local".into()),
                options: Some(HashMap::from([
                    ("type".to_string(), "overlay".to_string()),
                    ("device".to_string(), "overlay".to_string()),
                    (
                        "o".to_string(),
                        format!("lowerdir={},upperdir={},workdir={}", s[0], s[1], s[2]),
                    ),
                ])),
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn container_body(
    spec: &ProcessSpec,
    app_dir: &Path,
    data_dir: &Path,
    scratch: &Scratch,
    env: Vec<String>,
    labels: HashMap<String, String>,
    restart: RestartPolicy,
) -> Result<ContainerCreateBody, AgentError> {
    let bind = |src: &Path, dst: &str, ro: bool| Mount {
        typ: Some(MountType::BIND),
        source: Some(src.to_string_lossy().into_owned()),
        target: Some(dst.into()),
        read_only: Some(ro),
        ..Default::default()
    };
    let app = app_mount(app_dir, scratch)?;
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
        cmd: Some(launcher()),
        env: Some(env),
        working_dir: Some("/app".into()),
        labels: Some(labels),
        host_config: Some(HostConfig {
            mounts: Some(vec![app, bind(data_dir, "/data", false)]),
            // The app's own network (see `isolation`): no other app's ports or traffic.
            network_mode: Some(crate::isolation::network_name(&spec.instance, spec.uid)),
            memory: Some(spec.memory),
            memory_swap: Some(spec.memory),
            nano_cpus: (spec.cpu > 0.0).then_some((spec.cpu * 1e9) as i64),
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
    Ok(body)
}

/// Publishes the process's `port` (the same number inside, as `PORT`) on loopback and on
/// `ip` when that is another address.
fn publish(body: &mut ContainerCreateBody, port: u16, ip: Option<std::net::IpAddr>) {
    let key = format!("{port}/tcp");
    let mut ips = vec!["127.0.0.1".to_string()];
    if let Some(ip) = ip.filter(|ip| !ip.is_loopback() && !ip.is_unspecified()) {
        ips.push(ip.to_string());
    }
    let bindings = ips
        .into_iter()
        .map(|ip| PortBinding {
            host_ip: Some(ip),
            host_port: Some(port.to_string()),
        })
        .collect();
    body.exposed_ports = Some(vec![key.clone()]);
    if let Some(host) = body.host_config.as_mut() {
        host.port_bindings = Some(HashMap::from([(key, Some(bindings))]));
    }
}

/// The app's network on this node, created when missing (see `isolation`).
pub async fn ensure_network(docker: &Docker, spec: &ProcessSpec) -> Result<String, AgentError> {
    crate::isolation::ensure_network(docker.raw(), &spec.instance, spec.uid)
        .await
        .map_err(|e| AgentError::Docker(e.to_string()))
}

async fn create(
    docker: &Docker,
    name: &str,
    spec: &ProcessSpec,
    body: ContainerCreateBody,
) -> Result<(), AgentError> {
    ensure_network(docker, spec).await?;
    let opts = CreateContainerOptionsBuilder::default().name(name).build();
    match docker.raw().create_container(Some(opts), body).await {
        Ok(_) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Err(AgentError::NoImage(spec.image.clone())),
        Err(e) => Err(AgentError::Docker(format!("creating {name}: {e}"))),
    }
}

/// A port nobody listens on right now. The kernel picks it; we let go before the process
/// binds it, so another program could take it in between: the health check would then
/// fail and the deploy be retried, which is acceptable for that rare race.
fn free_port() -> Result<u16, AgentError> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(|source| AgentError::Io {
        path: PathBuf::from("127.0.0.1:0"),
        source,
    })?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|source| AgentError::Io {
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
            cpu: 0.0,
            generation: 0,
            uid: crate::isolation::UID_BASE + 1,
            publish_ip: None,
        }
    }

    #[test]
    fn capacity_from_meminfo() {
        let m = "MemTotal:       24554112 kB\nMemFree:        22000000 kB\n";
        assert_eq!(parse_mem_total(m), Some(24554112 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(memory_reserve(24 << 30), 2 << 30);
        assert_eq!(memory_reserve(1 << 30), 256 << 20);
        let c = machine_capacity();
        assert!(c.memory > 0 && c.cpus > 0, "{c:?}");
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

    #[test]
    fn web_ports_are_published_on_loopback_and_the_node_address() {
        let bindings = |ip: Option<&str>| {
            let mut body = ContainerCreateBody {
                host_config: Some(HostConfig::default()),
                ..Default::default()
            };
            publish(&mut body, 41234, ip.map(|i| i.parse().unwrap()));
            assert_eq!(body.exposed_ports, Some(vec!["41234/tcp".to_string()]));
            let map = body.host_config.unwrap().port_bindings.unwrap();
            map["41234/tcp"]
                .clone()
                .unwrap()
                .into_iter()
                .map(|b| {
                    assert_eq!(b.host_port.as_deref(), Some("41234"));
                    b.host_ip.unwrap()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(bindings(None), ["127.0.0.1"]);
        assert_eq!(bindings(Some("127.0.0.1")), ["127.0.0.1"]);
        assert_eq!(bindings(Some("0.0.0.0")), ["127.0.0.1"]);
        assert_eq!(bindings(Some("10.0.0.5")), ["127.0.0.1", "10.0.0.5"]);
        assert_eq!(bindings(Some("fd00::5")), ["127.0.0.1", "fd00::5"]);
    }
}
