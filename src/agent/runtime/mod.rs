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

mod capacity;
mod dyno;
mod health;
mod oneoff;
mod scratch;

pub use capacity::{machine_capacity, memory_reserve};
pub use dyno::{argv_launcher, launcher_script};
use dyno::{container_body, env, labels, prepare, publish};
pub use health::{check_health, health_check, last_lines, loopback, Probe};
pub use oneoff::{oneoff_body, run_once, RemoveOnDrop};
use scratch::scratch_of;
pub use scratch::{sweep_scratch, Scratch, SCRATCH};

use std::path::PathBuf;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, StopContainerOptionsBuilder,
};

use crate::agent::error::AgentError;
use crate::agent::layout::NodeRoot;
use crate::agent::logs;
use crate::docker::Docker;
use crate::node::proto::ProcInfo;

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

/// How many fresh ports [`start`] tries when Docker finds the one it was given taken.
const PORT_TRIES: u32 = 5;

/// Starts one process of a release: a fresh free port, a container created from scratch (a
/// stale one of the same name is removed first), started. Does not wait for it to listen;
/// see [`health_check`]. The port is free when picked but let go before Docker binds it, so
/// another program (or another process started at the same moment) may take it in
/// between: Docker then refuses the start, and it is tried again on a new port.
pub async fn start(
    docker: &Docker,
    root: &NodeRoot,
    spec: &ProcessSpec,
) -> Result<Running, AgentError> {
    let mut tries = 1;
    loop {
        match start_on(docker, root, spec, free_port()?).await {
            Err(AgentError::Docker(e)) if tries < PORT_TRIES && port_taken(&e) => {
                tracing::warn!(process = %container_name(spec), "port taken meanwhile, trying another: {e}");
                tries += 1;
            }
            r => return r,
        }
    }
}

/// Whether Docker refused a start because the published port was taken: by another of its
/// containers ("port is already allocated") or by another program ("address already in use").
fn port_taken(docker_error: &str) -> bool {
    docker_error.contains("port is already allocated")
        || docker_error.contains("address already in use")
}

/// [`start`] on `port`.
async fn start_on(
    docker: &Docker,
    root: &NodeRoot,
    spec: &ProcessSpec,
    port: u16,
) -> Result<Running, AgentError> {
    let (app_dir, data_dir) = prepare(root, spec)?;
    let name = container_name(spec);
    let mut env = env(spec)?;
    env.push(format!("PORT={port}"));
    docker.remove(&name).await; // a leftover from a crash or an earlier attempt
    let scratch = Scratch::create(root, &spec.app, &name, spec.uid)?;
    let mut labels = labels(spec);
    labels.insert(L_SCRATCH.into(), scratch.dir.to_string_lossy().into_owned());
    labels.insert(L_PORT.into(), port.to_string());
    // Where `stop` archives its output (see `agent::logs`).
    labels.insert(
        logs::L_LOGS.into(),
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
    logs::archive(docker, container).await;
    let scratch = scratch_of(docker, container).await;
    docker.remove(container).await;
    // Its throwaway /app goes with it (the overlay volume was unmounted by the remove).
    if let Some(s) = scratch {
        s.remove();
    }
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
    let summaries = docker
        .containers("label", filter)
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
            addr: None,
            node: None,
        });
    }
    out.sort_by(|a, b| {
        (&a.app, &a.release, &a.ptype, a.index).cmp(&(&b.app, &b.release, &b.ptype, b.index))
    });
    Ok(out)
}

/// Removes every one-off container of this node (release commands, `run` sessions): called
/// when the agent starts, so none of them has a caller any more (an agent killed with its
/// calls in flight, or the controller's in-process node dying with the controller).
pub async fn sweep_oneoffs(docker: &Docker, instance: &str) -> usize {
    let labels = vec![format!("{L_INSTANCE}={instance}"), L_ONEOFF.to_string()];
    let Ok(list) = docker.containers("label", labels).await else {
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

/// Set by a swarm agent: its app containers (release commands, `run`) join the app
/// environment's overlay network, with its tasks (see `agent::swarm`).
static SWARM_NETWORK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// See [`SWARM_NETWORK`]; once, when a swarm agent starts.
pub fn use_swarm_network() {
    SWARM_NETWORK.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn on_swarm() -> bool {
    SWARM_NETWORK.load(std::sync::atomic::Ordering::Relaxed)
}

/// The network an app's containers join here: the app's own (see `isolation`), or on a
/// swarm agent the app environment's overlay.
pub fn network_of(spec: &ProcessSpec) -> String {
    if on_swarm() {
        return crate::isolation::overlay_name(&spec.app, spec.uid);
    }
    crate::isolation::network_name(&spec.instance, spec.uid)
}

/// The app's network on this node, created when missing (see `isolation`).
pub async fn ensure_network(docker: &Docker, spec: &ProcessSpec) -> Result<String, AgentError> {
    let made = match on_swarm() {
        true => crate::isolation::ensure_overlay(docker.raw(), &spec.app, spec.uid).await,
        false => crate::isolation::ensure_network(docker.raw(), &spec.instance, spec.uid).await,
    };
    made.map_err(|e| AgentError::Docker(e.to_string()))
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

/// A port nobody listens on right now. The kernel picks it; we let go before Docker binds
/// it, so another program could take it in between ([`start`] then tries another).
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
    use super::port_taken;

    #[test]
    fn a_taken_port_is_told_from_other_docker_errors() {
        // As dockerd words them (20.10; a port held by another container, then by a program).
        assert!(port_taken(
            "starting mg-x: Docker responded with status code 500: driver failed programming \
             external connectivity on endpoint mg-x (3cd7): Bind for 127.0.0.1:45999 failed: \
             port is already allocated"
        ));
        assert!(port_taken(
            "starting mg-x: Docker responded with status code 500: driver failed programming \
             external connectivity on endpoint mg-x (3cd7): Error starting userland proxy: \
             listen tcp4 127.0.0.1:45999: bind: address already in use"
        ));
        assert!(!port_taken(
            "starting mg-x: Docker responded with status code 500: OCI runtime create failed"
        ));
    }
}
