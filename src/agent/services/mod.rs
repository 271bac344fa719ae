//! Services (Postgres, Redis, MariaDB) on a node: one container each, named
//! `mg-<instance>-svc-<key>` where `key` is the controller's random id for it (never its name,
//! so a later service of the same name starts from nothing), running an image of
//! `scripts/service-images.sh` with [`ENTRY`] mounted as `/usr/local/bin/magrathea-svc`.
//!
//! Confined like an app's processes (`isolation::confine`): the service's own uid, no
//! capabilities, no-new-privileges, a pids and a memory limit. Its data lives in
//! `<root>/services/<key>/data` (the uid's, mode 0700), mounted at `/data`. Docker restarts it
//! whenever it stops (`always`). Networks: its own (`isolation::network_name` of its uid),
//! and the network of every app linked to it, where its name is its host name; no port is
//! published, so only the linked apps' containers on this node reach it (Docker's isolation
//! rules drop traffic between app networks).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, EndpointSettings, ExecConfig, HostConfig, HostConfigLogConfig,
    NetworkConnectRequest, NetworkDisconnectRequest, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{CreateContainerOptionsBuilder, InspectContainerOptions};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::error::AgentError;
use super::AgentCtx;
use crate::docker::Docker;
use crate::node::proto::{
    ServiceDestroyReq, ServiceEnsureReq, ServiceSpec, ServiceStatus, ServiceUserReq, StoppedReply,
};

/// The script every service container runs and is driven through (see its header).
pub const ENTRY: &str = include_str!("entry.sh");
/// Where [`ENTRY`] is mounted in the container.
pub const ENTRY_PATH: &str = "/usr/local/bin/magrathea-svc";

const KINDS: [&str; 3] = ["postgres", "redis", "mariadb"];
const L_SERVICE: &str = "magrathea.service";
/// The memory limit a service container was given (bytes), for the node's capacity.
const L_MEMORY: &str = "magrathea.memory";
/// How long a service has to answer after a start (MariaDB's first start initialises its
/// system tables).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The container of the service `key` on this node.
pub fn container_name(instance: &str, key: &str) -> String {
    format!("mg-{instance}-svc-{key}")
}

pub(super) fn check_key(key: &str) -> Result<(), AgentError> {
    let ok = (8..=32).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    match ok {
        true => Ok(()),
        false => Err(AgentError::Invalid("bad service key".into())),
    }
}

/// A link's login: what the entry script accepts, checked here first.
fn check_user(user: &str) -> Result<(), AgentError> {
    let ok = (1..=63).contains(&user.len())
        && user
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    match ok {
        true => Ok(()),
        false => Err(AgentError::Invalid("bad service login name".into())),
    }
}

fn check_password(pw: &str) -> Result<(), AgentError> {
    match (16..=128).contains(&pw.len()) && pw.bytes().all(|b| b.is_ascii_alphanumeric()) {
        true => Ok(()),
        false => Err(AgentError::Invalid("bad service password".into())),
    }
}

fn check_spec(spec: &ServiceSpec) -> Result<(), AgentError> {
    check_key(&spec.key)?;
    crate::names::check("service", &spec.name)?;
    crate::isolation::check_uid(spec.uid)?;
    if !(128 << 20..=1 << 40).contains(&spec.memory) {
        return Err(AgentError::Invalid(format!(
            "a service's memory limit is 128 MiB to 1 TiB, not {} bytes",
            spec.memory
        )));
    }
    if !KINDS.contains(&spec.kind.as_str()) {
        return Err(AgentError::Invalid(format!(
            "unknown service type '{}'",
            spec.kind.chars().take(20).collect::<String>()
        )));
    }
    Ok(())
}

pub(super) fn service_dir(ctx: &AgentCtx, key: &str) -> PathBuf {
    ctx.root.root().join("services").join(key)
}

fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> AgentError + '_ {
    move |source| AgentError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The data dir (the service's uid's, 0700) and the entry script beside it.
fn prepare_dirs(ctx: &AgentCtx, spec: &ServiceSpec) -> Result<(PathBuf, PathBuf), AgentError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = service_dir(ctx, &spec.key);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).map_err(io_err(&data))?;
    std::os::unix::fs::chown(&data, Some(spec.uid), Some(spec.uid)).map_err(io_err(&data))?;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))
        .map_err(io_err(&data))?;
    let entry = dir.join("magrathea-svc");
    crate::fsutil::write_atomic(&entry, ENTRY.as_bytes(), 0o755).map_err(io_err(&entry))?;
    Ok((data, entry))
}

fn container_body(
    ctx: &AgentCtx,
    spec: &ServiceSpec,
    network: String,
) -> Result<ContainerCreateBody, AgentError> {
    let (data, entry) = prepare_dirs(ctx, spec)?;
    let mut body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: Some(vec![ENTRY_PATH.into(), "run".into()]),
        env: Some(vec![
            format!("MAGRATHEA_SERVICE_TYPE={}", spec.kind),
            format!("MAGRATHEA_DB={}", spec.name.replace('-', "_")),
            "HOME=/data".into(),
        ]),
        hostname: Some(spec.name.clone()),
        // Postgres shuts down cleanly but waits for its clients on SIGTERM; SIGINT is its
        // fast shutdown (the others finish cleanly on SIGTERM, Docker's default).
        stop_signal: (spec.kind == "postgres").then(|| "SIGINT".to_string()),
        labels: Some(HashMap::from([
            ("magrathea.instance".to_string(), ctx.instance.clone()),
            (L_SERVICE.to_string(), spec.key.clone()),
            (L_MEMORY.to_string(), spec.memory.to_string()),
        ])),
        host_config: Some(HostConfig {
            mounts: Some(vec![
                crate::docker::bind_mount(&data, "/data", false),
                crate::docker::bind_mount(&entry, ENTRY_PATH, true),
            ]),
            network_mode: Some(network),
            memory: Some(spec.memory),
            memory_swap: Some(spec.memory),
            init: Some(true),
            // Back whenever it stops, a crash or a kill, and after the engine restarts.
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::ALWAYS),
                maximum_retry_count: None,
            }),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), "10m".to_string()),
                    ("max-file".to_string(), "3".to_string()),
                ])),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    crate::isolation::confine_body(&mut body, spec.uid, crate::isolation::PROCESS_PIDS);
    Ok(body)
}

fn docker_err(what: &str) -> impl FnOnce(bollard::errors::Error) -> AgentError + '_ {
    move |e| AgentError::Docker(format!("{what}: {e}"))
}

fn is_404(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// The service running and on the networks of exactly the linked apps; waits until it
/// answers.
pub async fn ensure(ctx: &AgentCtx, req: ServiceEnsureReq) -> Result<ServiceStatus, AgentError> {
    let spec = &req.spec;
    check_spec(spec)?;
    for uid in &req.app_uids {
        crate::isolation::check_uid(*uid)?;
    }
    let docker = ctx.docker().await?;
    if docker.image_id(&spec.image).await?.is_none() {
        return Err(AgentError::NoImage(spec.image.clone()));
    }
    let name = container_name(&ctx.instance, &spec.key);
    let own = crate::isolation::ensure_network(docker.raw(), &ctx.instance, spec.uid)
        .await
        .map_err(|e| AgentError::Docker(e.to_string()))?;
    let mut info = match docker
        .raw()
        .inspect_container(&name, None::<InspectContainerOptions>)
        .await
    {
        Ok(i) => Some(i),
        Err(e) if is_404(&e) => None,
        Err(e) => return Err(docker_err("inspecting the service")(e)),
    };
    let limit = info
        .as_ref()
        .and_then(|i| i.config.as_ref())
        .and_then(|c| c.labels.as_ref())
        .map(labelled_memory);
    if limit.is_some_and(|m| m != spec.memory) {
        // A new memory limit: the container is made again (the server inside is tuned to
        // its limit at start); the data dir stays. Stopped with the server's own clean
        // shutdown signal, given time to finish its checkpoint.
        let stop = bollard::query_parameters::StopContainerOptionsBuilder::default()
            .t(60)
            .build();
        docker
            .raw()
            .stop_container(&name, Some(stop))
            .await
            .or_else(|e| if is_404(&e) { Ok(()) } else { Err(e) })
            .map_err(docker_err("stopping the service for its new memory limit"))?;
        // One left behind makes the create below fail, and say so.
        docker.remove(&name).await;
        info = None;
    }
    if info.is_none() {
        let body = container_body(ctx, spec, own.clone())?;
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        docker
            .raw()
            .create_container(Some(opts), body)
            .await
            .map_err(docker_err("creating the service container"))?;
    }
    let running = info
        .as_ref()
        .and_then(|i| i.state.as_ref())
        .and_then(|s| s.running)
        .unwrap_or(false);
    if !running {
        docker
            .raw()
            .start_container(
                &name,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(docker_err("starting the service"))?;
    }
    join_networks(ctx, docker, &name, &spec.name, &own, &req.app_uids).await?;
    wait_ready(docker, &name).await?;
    if spec.kind == "postgres" {
        let target = crate::node::proto::DumpTarget {
            key: spec.key.clone(),
            kind: spec.kind.clone(),
            name: spec.name.clone(),
        };
        let req = crate::node::proto::ServiceVerifyReq {
            target,
            image: spec.image.clone(),
            uid: spec.uid,
        };
        super::svcverify::warm_instance(ctx, docker, req);
    }
    status(ctx, &spec.key).await
}

/// Joins the linked apps' networks (its name as host name there) and leaves any other app's.
async fn join_networks(
    ctx: &AgentCtx,
    docker: &Docker,
    container: &str,
    host: &str,
    own: &str,
    app_uids: &[u32],
) -> Result<(), AgentError> {
    let info = docker
        .raw()
        .inspect_container(container, None::<InspectContainerOptions>)
        .await
        .map_err(docker_err("inspecting the service"))?;
    let on: Vec<String> = info
        .network_settings
        .and_then(|n| n.networks)
        .map(|n| n.into_keys().collect())
        .unwrap_or_default();
    let mut want = vec![];
    for uid in app_uids {
        let net = crate::isolation::ensure_network(docker.raw(), &ctx.instance, *uid)
            .await
            .map_err(|e| AgentError::Docker(e.to_string()))?;
        if !on.contains(&net) {
            let req = NetworkConnectRequest {
                container: container.to_string(),
                endpoint_config: Some(EndpointSettings {
                    aliases: Some(vec![host.to_string()]),
                    ..Default::default()
                }),
            };
            docker
                .raw()
                .connect_network(&net, req)
                .await
                .map_err(docker_err("joining the app's network"))?;
        }
        want.push(net);
    }
    for net in on.iter().filter(|n| *n != own && !want.contains(n)) {
        let req = NetworkDisconnectRequest {
            container: container.to_string(),
            force: Some(true),
        };
        if let Err(e) = docker.raw().disconnect_network(net, req).await {
            tracing::warn!(network = %net, "cannot leave an unlinked app's network: {e}");
        }
    }
    Ok(())
}

async fn wait_ready(docker: &Docker, container: &str) -> Result<(), AgentError> {
    let start = std::time::Instant::now();
    loop {
        let (code, _, _) = exec(docker, container, &["ready"], None).await?;
        if code == 0 {
            return Ok(());
        }
        if start.elapsed() > READY_TIMEOUT {
            return Err(AgentError::Timeout {
                what: "the service's start".into(),
                after: format!("{}s", READY_TIMEOUT.as_secs()),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Runs `magrathea-svc ARGS` in the container (as its user), `stdin` written and closed;
/// exit code, stdout, stderr.
async fn exec(
    docker: &Docker,
    container: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<(i64, String, String), AgentError> {
    let mut cmd = vec![ENTRY_PATH.to_string()];
    cmd.extend(args.iter().map(|a| a.to_string()));
    raw_exec(docker, container, cmd, stdin).await
}

async fn raw_exec(
    docker: &Docker,
    container: &str,
    cmd: Vec<String>,
    stdin: Option<&str>,
) -> Result<(i64, String, String), AgentError> {
    let config = ExecConfig {
        attach_stdin: Some(stdin.is_some()),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        cmd: Some(cmd),
        ..Default::default()
    };
    let id = docker
        .raw()
        .create_exec(container, config)
        .await
        .map_err(docker_err("exec in the service"))?
        .id;
    let started = docker
        .raw()
        .start_exec(&id, None::<StartExecOptions>)
        .await
        .map_err(docker_err("exec in the service"))?;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    if let StartExecResults::Attached {
        mut output,
        mut input,
    } = started
    {
        if let Some(s) = stdin {
            let _ = input.write_all(format!("{s}\n").as_bytes()).await;
            let _ = input.shutdown().await;
        }
        drop(input);
        while let Some(Ok(frame)) = output.next().await {
            match frame {
                bollard::container::LogOutput::StdErr { message } => err.extend(message),
                other => out.extend(other.into_bytes()),
            }
            if out.len() + err.len() > 1 << 20 {
                break;
            }
        }
    }
    for _ in 0..50 {
        let i = docker
            .raw()
            .inspect_exec(&id)
            .await
            .map_err(docker_err("exec in the service"))?;
        if i.running != Some(true) {
            let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
            return Ok((i.exit_code.unwrap_or(255), text(out), text(err)));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(AgentError::Docker("exec in the service did not end".into()))
}

/// A link's login created (password set) or dropped.
pub async fn user(ctx: &AgentCtx, req: ServiceUserReq) -> Result<ServiceStatus, AgentError> {
    check_key(&req.key)?;
    check_user(&req.user)?;
    if let Some(pw) = &req.password {
        check_password(pw)?;
    }
    let docker = ctx.docker().await?;
    let name = container_name(&ctx.instance, &req.key);
    wait_ready(docker, &name).await?;
    let (code, _, err) = match &req.password {
        Some(pw) => exec(docker, &name, &["user-add", &req.user], Some(pw)).await?,
        None => exec(docker, &name, &["user-del", &req.user], None).await?,
    };
    if code != 0 {
        // The script's error names no password (it never echoes its input).
        let last = err.lines().last().unwrap_or("").to_string();
        return Err(AgentError::Invalid(format!(
            "the service refused the login change: {last}"
        )));
    }
    status(ctx, &req.key).await
}

/// The memory the services on this node reserve: each service container's limit (one made
/// before the limit was labelled counts as the default), running or not, since Docker
/// brings it back.
pub async fn reserved_memory(docker: &crate::docker::Docker, instance: &str) -> i64 {
    let filter = vec![format!("magrathea.instance={instance}")];
    let Ok(list) = docker.containers("label", filter).await else {
        return 0;
    };
    list.iter()
        .filter_map(|c| c.labels.as_ref())
        .filter(|l| l.contains_key(L_SERVICE))
        .map(labelled_memory)
        .sum()
}

/// A service container's memory limit, from its label (one made before the limit was
/// labelled has the default).
fn labelled_memory(labels: &HashMap<String, String>) -> i64 {
    labels
        .get(L_MEMORY)
        .and_then(|m| m.parse::<i64>().ok())
        .filter(|m| *m > 0)
        .unwrap_or(crate::node::proto::SERVICE_MEMORY)
}

/// State, version, connections, size on disk; `missing` when there is no container.
pub async fn status(ctx: &AgentCtx, key: &str) -> Result<ServiceStatus, AgentError> {
    check_key(key)?;
    let docker = ctx.docker().await?;
    let name = container_name(&ctx.instance, key);
    let info = match docker
        .raw()
        .inspect_container(&name, None::<InspectContainerOptions>)
        .await
    {
        Ok(i) => i,
        Err(e) if is_404(&e) => {
            return Ok(ServiceStatus {
                state: "missing".into(),
                ..Default::default()
            })
        }
        Err(e) => return Err(docker_err("inspecting the service")(e)),
    };
    let state = info.state.unwrap_or_default();
    let mut st = ServiceStatus {
        state: state
            .status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "unknown".into()),
        restarts: info.restart_count.unwrap_or(0),
        started_at: state.started_at.unwrap_or_default(),
        ..Default::default()
    };
    if state.running == Some(true) {
        if let Ok((0, out, _)) = exec(docker, &name, &["info"], None).await {
            for l in out.lines() {
                match l.split_once('=') {
                    Some(("version", v)) => st.version = v.trim().to_string(),
                    Some(("connections", v)) => st.connections = v.trim().parse().ok(),
                    _ => {}
                }
            }
        }
        let du = vec!["du".into(), "-sb".into(), "/data".into()];
        if let Ok((0, out, _)) = raw_exec(docker, &name, du, None).await {
            st.size = out
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        }
    }
    Ok(st)
}

/// The container, the service's network and its data dir gone.
pub async fn destroy(ctx: &AgentCtx, req: ServiceDestroyReq) -> Result<StoppedReply, AgentError> {
    check_key(&req.key)?;
    crate::isolation::check_uid(req.uid)?;
    let docker = ctx.docker().await?;
    let name = container_name(&ctx.instance, &req.key);
    let existed = docker
        .raw()
        .inspect_container(&name, None::<InspectContainerOptions>)
        .await
        .is_ok();
    docker.remove(&name).await;
    super::svcverify::remove_throwaways(ctx, docker, &req.key).await;
    crate::isolation::remove_network(docker.raw(), &ctx.instance, req.uid).await;
    ctx.links.forget(&req.key);
    let dir = service_dir(ctx, &req.key);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&dir)(e)),
    }
    Ok(StoppedReply {
        stopped: existed as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_logins_and_passwords_are_checked() {
        assert!(check_key("0123abcd").is_ok());
        assert!(check_key("../etc").is_err());
        assert!(check_key("ABCDEFGH").is_err());
        assert!(check_user("shop_production").is_ok());
        assert!(check_user("x'; DROP").is_err());
        assert!(check_user("").is_err());
        assert!(check_password("Abcdefgh12345678").is_ok());
        assert!(check_password("short").is_err());
        assert!(check_password("abcdefgh12345678'").is_err());
    }
}
