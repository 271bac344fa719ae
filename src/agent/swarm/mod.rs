//! `magrathea agent --swarm`: the agent on a Docker Swarm manager. It answers the same
//! verbs as a node, but a release's processes are Swarm services (one per process type,
//! `service.rs`) whose tasks fetch the release tarball from the agent's release endpoint
//! (`endpoint.rs`) by URL and token, check its sha256 and run it. No registry: the stack
//! image is loaded on the manager, and the agents of the other nodes (`join.rs`) copy it
//! from here (`images.rs`); tasks are placed only on nodes that hold it. Release commands
//! and `run` use the manager's own engine, as on a node; `shell` the engine of the task's
//! node, through the agent there.
//!
//! `prepare` creates the new services beside the old ones and answers only once every task
//! runs and every web task passes the same HTTP check as on a node (from here, at the
//! task's node address); any failure removes what it created. `tasks.rs` reads the task
//! list back as processes (`status`, `clusters:info`), which is what the controller's
//! router follows.

pub mod endpoint;
pub mod images;
pub mod join;
pub mod logs;
pub mod service;
mod tasks;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bollard::models::SecretSpec;
use tokio::sync::mpsc;

use super::error::AgentError;
use super::runtime::{self, Probe};
use super::AgentCtx;
use crate::docker::Docker;
use crate::node::proto::{
    AppStatus, Capacity, ClusterReply, NodeAgent, PrepareReply, PrepareReq, ProcInfo, StatusReply,
    StoppedReply,
};
use endpoint::Tarballs;
pub use tasks::{cluster, list_tasks, local_tasks};

/// A swarm agent's own state.
pub struct Swarm {
    /// The release endpoint's address as the swarm nodes reach it.
    pub endpoint: SocketAddr,
    pub tarballs: Tarballs,
    /// The stack images served to the other nodes, and their agents (`images.rs`).
    pub fleet: std::sync::Arc<images::Fleet>,
}

fn docker_err(what: &str) -> impl Fn(bollard::errors::Error) -> AgentError + '_ {
    move |e| AgentError::Docker(format!("{what}: {e}"))
}

/// `status`: the environments (releases, `current`) as on a node, their processes from the
/// task list, and the cluster's capacity (every ready node's).
pub async fn status(ctx: &AgentCtx) -> Result<StatusReply, AgentError> {
    let docker = ctx.docker().await?;
    let mut reply = StatusReply {
        instance: ctx.instance.clone(),
        ..Default::default()
    };
    for app in app_names(ctx) {
        reply.apps.insert(
            app.clone(),
            AppStatus {
                current: ctx.root.current(&app),
                releases: ctx.root.releases(&app),
                processes: vec![],
            },
        );
    }
    let (nodes, procs) = list_tasks(docker, true).await?;
    for p in procs {
        reply
            .apps
            .entry(p.app.clone())
            .or_default()
            .processes
            .push(p);
    }
    let mut cap = Capacity::default();
    for n in nodes.iter().filter(|n| n.state == "ready") {
        cap.memory += n.memory;
        cap.cpus += n.cpus;
    }
    reply.capacity = Some(cap);
    Ok(reply)
}

/// The environments the layout holds.
fn app_names(ctx: &AgentCtx) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(ctx.root.root().join("apps")) else {
        return vec![];
    };
    rd.flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| crate::names::valid_node_app(n))
        .collect()
}

/// `prepare` on a swarm: the new services beside the old ones, all or nothing.
pub async fn prepare(
    ctx: &AgentCtx,
    sw: &Swarm,
    req: PrepareReq,
    progress: &mpsc::Sender<String>,
) -> Result<PrepareReply, AgentError> {
    let lock = ctx.app_lock(&req.app);
    let _g = lock.lock().await;
    if !ctx.root.has_release(&req.app, &req.release) || !sw.tarballs.has(&req.app, &req.release) {
        return Err(AgentError::NotOnNode {
            app: req.app,
            release: req.release,
        });
    }
    for c in &req.placement {
        service::check_constraint(c)?;
    }
    let docker = ctx.docker().await?;
    // The stack image on every node with an agent first; tasks go only where it is.
    let image = sw.fleet.ensure_saved(docker, &req.image).await?;
    sw.fleet
        .wait_spread(docker, &image, progress, Duration::from_secs(90))
        .await?;
    let mut req = req;
    req.placement
        .push(format!("node.labels.{}==1", images::label(&image.id)));
    let created = create_all(sw, docker, &req, progress).await;
    let result = match created {
        Ok(()) => wait_and_check(docker, &req, progress).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(started) => Ok(PrepareReply { processes: started }),
        Err(e) => {
            remove_where(docker, &req.app, |l| {
                l.release == req.release && l.generation == req.generation
            })
            .await;
            Err(e)
        }
    }
}

/// The release's secret and one service per process type.
async fn create_all(
    sw: &Swarm,
    docker: &Docker,
    req: &PrepareReq,
    progress: &mpsc::Sender<String>,
) -> Result<(), AgentError> {
    let manifest_sha = sw.tarballs.digest(&req.app, &req.release)?;
    let token = sw.tarballs.token(&req.app, &req.release)?;
    let env = checked_env(&req.env)?;
    let secret_name = format!(
        "{}-env",
        service::service_name(&req.app, &req.release, "all", req.generation)
    );
    let secret = create_secret(
        docker,
        &secret_name,
        &req.app,
        &req.release,
        req.generation,
        &env,
        &token,
    )
    .await?;
    let url = format!(
        "http://{}/releases/{}/{}.tar.gz",
        sw.endpoint, req.app, req.release
    );
    let network = crate::isolation::ensure_overlay(docker.raw(), &req.app, req.uid)
        .await
        .map_err(|e| AgentError::Docker(format!("the app's overlay network: {e}")))?;
    for g in &req.processes {
        let spec = service::spec(&service::Spec {
            app: &req.app,
            release: &req.release,
            sha256: &manifest_sha,
            ptype: &g.ptype,
            command: &g.command,
            replicas: g.count,
            image: &req.image,
            memory: req.memory,
            cpu: req.cpu,
            uid: req.uid,
            generation: req.generation,
            network: network.clone(),
            url: url.clone(),
            secret: (secret_name.clone(), secret.clone()),
            placement: &req.placement,
            oneoff: false,
            health: (g.ptype == "web").then(|| {
                let h = req.checks.first().unwrap_or(&req.health);
                (h.path.as_str(), boot_ms(req))
            }),
        })?;
        let name = spec.name.clone().unwrap_or_default();
        docker
            .raw()
            .create_service(spec, None)
            .await
            .map_err(|e| AgentError::CannotStart {
                process: g.ptype.clone(),
                why: Box::new(AgentError::Docker(format!("creating service {name}: {e}"))),
            })?;
        let _ = progress
            .send(format!(
                "service {name}: {} task{} on {network}",
                g.count,
                if g.count == 1 { "" } else { "s" },
            ))
            .await;
    }
    Ok(())
}

/// Config names as a shell may export them, and none of ours.
fn checked_env(env: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>, AgentError> {
    for (k, v) in env {
        let ok = k
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok || v.contains('\0') {
            return Err(AgentError::Invalid(format!(
                "config var {:?} cannot be passed to a process",
                k.chars().take(60).collect::<String>()
            )));
        }
        if matches!(k.as_str(), "PORT" | "HOME" | "DATA_DIR" | "DYNO")
            || k.starts_with("MAGRATHEA_")
        {
            return Err(AgentError::Invalid(format!(
                "config var {k} is set by magrathea and cannot be overridden; unset it"
            )));
        }
    }
    Ok(env.clone())
}

async fn create_secret(
    docker: &Docker,
    name: &str,
    app: &str,
    release: &str,
    generation: u64,
    env: &BTreeMap<String, String>,
    token: &str,
) -> Result<String, AgentError> {
    // Left by an earlier attempt of the same generation: replaced.
    let _ = docker.raw().delete_secret(name).await;
    let data = service::secret_data(env, token);
    let spec = SecretSpec {
        name: Some(name.to_string()),
        labels: Some(
            [
                (service::L_MANAGED.to_string(), "1".to_string()),
                (service::L_APP.to_string(), app.to_string()),
                (service::L_RELEASE.to_string(), release.to_string()),
                (service::L_GENERATION.to_string(), generation.to_string()),
            ]
            .into(),
        ),
        data: Some(service::base64(data.as_bytes())),
        ..Default::default()
    };
    let r = docker
        .raw()
        .create_secret(spec)
        .await
        .map_err(docker_err("creating the release's secret"))?;
    Ok(r.id)
}

/// How long a web task may take to answer: the health check's attempts.
fn boot_ms(req: &PrepareReq) -> u64 {
    (req.health.attempts as u64 * req.health.interval_ms).clamp(1_000, 3_600_000)
}

/// Waits until every task of the new services runs, then checks the web ones over HTTP
/// at their node's address and watches the others through the grace period.
async fn wait_and_check(
    docker: &Docker,
    req: &PrepareReq,
    progress: &mpsc::Sender<String>,
) -> Result<Vec<crate::node::proto::Started>, AgentError> {
    // Swarm holds a task in `starting` until its own health check passes.
    let boot = Duration::from_millis(boot_ms(req) + 30_000);
    let want: u32 = req.processes.iter().map(|g| g.count).sum();
    let mine = |p: &ProcInfo| p.release == req.release && p.generation == req.generation;
    let running = tasks::wait_running(docker, &req.app, want, &mine, boot).await?;
    let _ = progress
        .send(format!(
            "{want} task{} running",
            if want == 1 { "" } else { "s" }
        ))
        .await;
    let checks = if req.checks.is_empty() {
        vec![req.health.clone()]
    } else {
        req.checks.clone()
    };
    for p in running.iter().filter(|p| p.ptype == "web") {
        let ip: std::net::IpAddr = p
            .addr
            .as_deref()
            .and_then(|a| a.parse().ok())
            .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
        for h in &checks {
            let _ = progress
                .send(format!(
                    "health-checking web.{} on {} port {} (GET {})",
                    p.index,
                    p.node.as_deref().unwrap_or("?"),
                    p.port,
                    h.path
                ))
                .await;
            let probe = Probe {
                path: &h.path,
                timeout: Duration::from_millis(h.timeout_ms.max(100)),
                attempts: h.attempts.max(1),
                interval: Duration::from_millis(h.interval_ms.max(10)),
                initial_delay: Duration::from_millis(h.initial_delay_ms),
                content: h.content.as_deref(),
                strict: h.strict,
            };
            let container = p.container.clone();
            let alive = || tasks::still_running(docker, container.clone());
            if let Err(why) = runtime::check_health((ip, p.port).into(), &probe, alive).await {
                tasks::say_last_lines(docker, &p.container, progress, &format!("web.{}", p.index))
                    .await;
                return Err(AgentError::Unhealthy {
                    process: format!("web.{} on {}", p.index, p.node.as_deref().unwrap_or("?")),
                    why,
                    setting: h.setting.clone(),
                });
            }
        }
    }
    if running.iter().any(|p| p.ptype != "web") {
        tokio::time::sleep(Duration::from_millis(req.grace_ms)).await;
        let (_, now) = list_tasks(docker, false).await?;
        for p in running.iter().filter(|p| p.ptype != "web") {
            let ok = now
                .iter()
                .any(|q| q.container == p.container && q.state == "running");
            if !ok {
                return Err(AgentError::NotUp(format!("{}.{}", p.ptype, p.index)));
            }
        }
    }
    Ok(running
        .into_iter()
        .map(|p| crate::node::proto::Started {
            container: p.container,
            ptype: p.ptype,
            index: p.index,
            port: p.port,
            addr: p.addr,
        })
        .collect())
}

/// What a service is, from its labels.
#[derive(Debug, Clone, Default)]
pub struct Labels {
    pub app: String,
    pub release: String,
    pub ptype: String,
    pub generation: u64,
}

/// Removes the services of `app` that `pick` chooses, then the secrets no service uses.
pub async fn remove_where(docker: &Docker, app: &str, pick: impl Fn(&Labels) -> bool) -> u32 {
    let mut removed = 0;
    let Ok(services) = tasks::services(docker, Some(app)).await else {
        return 0;
    };
    for s in services.iter().filter(|s| pick(&s.parsed)) {
        if docker.raw().delete_service(&s.name).await.is_ok() {
            removed += 1;
        }
    }
    tasks::remove_unused_secrets(docker, app).await;
    removed
}

/// `abort` and `retire` on a swarm.
pub async fn stop_where(
    ctx: &AgentCtx,
    app: &str,
    pick: impl Fn(&Labels) -> bool,
) -> Result<StoppedReply, AgentError> {
    crate::names::check_node_app(app)?;
    let docker = ctx.docker().await?;
    Ok(StoppedReply {
        stopped: remove_where(docker, app, pick).await,
    })
}

/// Every service of every environment of `app`, and its tarballs (`purge`).
pub async fn purge(ctx: &AgentCtx, sw: &Swarm, app: &str) -> Result<u32, AgentError> {
    let docker = ctx.docker().await?;
    let mut stopped = 0;
    let envs: Vec<String> = tasks::services(docker, None)
        .await?
        .into_iter()
        .map(|s| s.parsed.app)
        .filter(|a| crate::names::node_app_of(a) == Some(app))
        .collect();
    for e in envs {
        stopped += remove_where(docker, &e, |_| true).await;
    }
    remove_networks(docker, app).await;
    sw.tarballs.purge(app);
    Ok(stopped)
}

/// The overlay networks of every environment of `app`, once their tasks have let go of
/// them (a removed service's tasks take a few seconds to stop).
async fn remove_networks(docker: &Docker, app: &str) {
    let filters = std::collections::HashMap::from([(
        "label".to_string(),
        vec!["magrathea.swarm=1".to_string()],
    )]);
    let opts = bollard::query_parameters::ListNetworksOptionsBuilder::new()
        .filters(&filters)
        .build();
    for _ in 0..40 {
        let Ok(list) = docker.raw().list_networks(Some(opts.clone())).await else {
            return;
        };
        let mine: Vec<String> = list
            .into_iter()
            .filter(|n| {
                let labels = n.labels.clone().unwrap_or_default();
                labels
                    .get("magrathea.app")
                    .is_some_and(|a| crate::names::node_app_of(a) == Some(app))
            })
            .filter_map(|n| n.id)
            .collect();
        if mine.is_empty() {
            return;
        }
        for id in mine {
            let _ = docker.raw().remove_network(&id).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tracing::warn!(
        app,
        "overlay networks still in use after 20s; left for Swarm"
    );
}

/// `clusters:info`: with each node's agent (this one on its own node; the joined ones
/// heard from lately on theirs).
pub async fn cluster_info(ctx: &AgentCtx, sw: &Swarm) -> Result<ClusterReply, AgentError> {
    let mut reply = cluster(ctx.docker().await?).await?;
    let agents = sw.fleet.agents();
    for n in &mut reply.nodes {
        n.agent = if n.id == sw.fleet.own_node {
            Some(NodeAgent {
                addr: String::new(),
                fp: sw.fleet.own_fp.clone(),
            })
        } else {
            agents.get(&n.id).map(|j| NodeAgent {
                addr: j.addr.clone(),
                fp: j.fp.clone(),
            })
        };
    }
    Ok(reply)
}
