//! The cluster read back: services by their labels, tasks as processes (slot `N` of a
//! service is process `type.N`, on its node's address at `port base + N`), nodes.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bollard::models::{Node, Task, TaskState};
use bollard::query_parameters::{
    ListNodesOptions, ListSecretsOptionsBuilder, ListServicesOptionsBuilder,
    ListTasksOptionsBuilder, LogsOptionsBuilder,
};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::service::{
    APP_PORT, L_APP, L_GENERATION, L_MANAGED, L_ONEOFF, L_PORT_BASE, L_PROCESS, L_RELEASE,
};
use super::Labels;
use crate::agent::error::AgentError;
use crate::docker::Docker;
use crate::node::proto::{ClusterNode, ClusterReply, ProcInfo};

pub struct Svc {
    pub id: String,
    pub name: String,
    pub parsed: Labels,
    pub port_base: u16,
    pub memory: i64,
    pub cpu: f64,
}

fn label_filter(app: Option<&str>) -> HashMap<String, Vec<String>> {
    let mut labels = vec![format!("{L_MANAGED}=1")];
    if let Some(a) = app {
        labels.push(format!("{L_APP}={a}"));
    }
    HashMap::from([("label".to_string(), labels)])
}

/// The process services of the cluster (of `app`, when given); one-offs are not processes.
pub async fn services(docker: &Docker, app: Option<&str>) -> Result<Vec<Svc>, AgentError> {
    let opts = ListServicesOptionsBuilder::new()
        .filters(&label_filter(app))
        .build();
    let list = docker
        .raw()
        .list_services(Some(opts))
        .await
        .map_err(|e| AgentError::Docker(format!("listing services: {e}")))?;
    let mut out = vec![];
    for s in list {
        let spec = s.spec.unwrap_or_default();
        let labels = spec.labels.unwrap_or_default();
        if labels.contains_key(L_ONEOFF) {
            continue;
        }
        let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
        let limits = spec
            .task_template
            .and_then(|t| t.resources)
            .and_then(|r| r.limits)
            .unwrap_or_default();
        out.push(Svc {
            id: s.id.unwrap_or_default(),
            name: spec.name.unwrap_or_default(),
            parsed: Labels {
                app: get(L_APP),
                release: get(L_RELEASE),
                ptype: get(L_PROCESS),
                generation: get(L_GENERATION).parse().unwrap_or(0),
            },
            port_base: get(L_PORT_BASE).parse().unwrap_or(0),
            memory: limits.memory_bytes.unwrap_or(0),
            cpu: limits.nano_cpus.map_or(0.0, |n| n as f64 / 1e9),
        });
    }
    Ok(out)
}

/// One swarm node as placement sees it.
pub struct NodeInfo {
    pub node: ClusterNode,
    pub state: String,
    pub memory: i64,
    pub cpus: u32,
}

impl std::ops::Deref for NodeInfo {
    type Target = ClusterNode;
    fn deref(&self) -> &ClusterNode {
        &self.node
    }
}

fn lower<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|s| s.to_string().to_lowercase()).unwrap_or_default()
}

fn node_info(n: Node) -> NodeInfo {
    let spec = n.spec.unwrap_or_default();
    let desc = n.description.unwrap_or_default();
    let res = desc.resources.unwrap_or_default();
    let status = n.status.unwrap_or_default();
    let state = lower(status.state);
    NodeInfo {
        node: ClusterNode {
            id: n.id.unwrap_or_default(),
            hostname: desc.hostname.unwrap_or_default(),
            addr: status.addr.unwrap_or_default(),
            state: state.clone(),
            availability: lower(spec.availability),
            role: lower(spec.role),
            labels: spec.labels.unwrap_or_default().into_iter().collect(),
            agent: None,
        },
        state,
        memory: res.memory_bytes.unwrap_or(0),
        cpus: (res.nano_cpus.unwrap_or(0) / 1_000_000_000) as u32,
    }
}

pub async fn nodes(docker: &Docker) -> Result<Vec<NodeInfo>, AgentError> {
    let list = docker
        .raw()
        .list_nodes(None::<ListNodesOptions>)
        .await
        .map_err(|e| AgentError::Docker(format!("listing swarm nodes: {e}")))?;
    Ok(list.into_iter().map(node_info).collect())
}

/// The nodes, and the tasks of every process service as processes (only those meant to
/// run, when `running_only`), sorted by app, release, type and slot.
pub async fn list_tasks(
    docker: &Docker,
    running_only: bool,
) -> Result<(Vec<NodeInfo>, Vec<ProcInfo>), AgentError> {
    let nodes = nodes(docker).await?;
    let services = services(docker, None).await?;
    let mut filters = HashMap::new();
    if running_only {
        filters.insert("desired-state".to_string(), vec!["running".to_string()]);
    }
    let tasks: Vec<Task> = docker
        .raw()
        .list_tasks(Some(
            ListTasksOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .map_err(|e| AgentError::Docker(format!("listing tasks: {e}")))?;
    let by_node: HashMap<&str, &NodeInfo> = nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    let by_service: HashMap<&str, &Svc> = services.iter().map(|s| (s.id.as_str(), s)).collect();
    // Tasks per (service, slot): the older ones are restarts of the slot.
    let mut per_slot: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for t in &tasks {
        *per_slot
            .entry((
                t.service_id.clone().unwrap_or_default(),
                t.slot.unwrap_or(0),
            ))
            .or_default() += 1;
    }
    let mut out = vec![];
    for t in tasks {
        let Some(svc) = t.service_id.as_deref().and_then(|id| by_service.get(id)) else {
            continue;
        };
        let slot = t.slot.unwrap_or(0);
        let node = t.node_id.as_deref().and_then(|id| by_node.get(id));
        let status = t.status.clone().unwrap_or_default();
        let desired = t.desired_state.map(|s| s.to_string()).unwrap_or_default();
        if running_only && desired != "running" {
            continue;
        }
        let restarts = per_slot.get(&(svc.id.clone(), slot)).copied().unwrap_or(1) - 1;
        out.push(ProcInfo {
            container: t.id.clone().unwrap_or_default(),
            app: svc.parsed.app.clone(),
            release: svc.parsed.release.clone(),
            ptype: svc.parsed.ptype.clone(),
            index: slot.max(0) as u32,
            port: task_port(svc, &status, slot),
            state: status.state.map(|s| s.to_string()).unwrap_or_default(),
            started_at: status.timestamp.map(|t| t.to_string()).unwrap_or_default(),
            restarts: if running_only { restarts } else { 0 },
            generation: svc.parsed.generation,
            memory: svc.memory,
            cpu: svc.cpu,
            addr: node.map(|n| n.addr.clone()),
            node: node.map(|n| n.hostname.clone()),
        });
    }
    out.sort_by(|a, b| {
        (&a.app, &a.release, &a.ptype, a.index).cmp(&(&b.app, &b.release, &b.ptype, b.index))
    });
    Ok((nodes, out))
}

/// Where a task listens as seen from outside its node: a web task's published port on its
/// node (Docker picks one per task), else the port inside the task; a service made before
/// app networks at `port base + slot` of its node.
fn task_port(svc: &Svc, status: &bollard::models::TaskStatus, slot: i64) -> u16 {
    if svc.port_base != 0 {
        return svc.port_base.saturating_add(slot.clamp(0, 99) as u16);
    }
    status
        .port_status
        .as_ref()
        .and_then(|p| p.ports.as_ref())
        .and_then(|ports| {
            ports
                .iter()
                .find(|p| p.target_port == Some(APP_PORT as i64))
                .and_then(|p| p.published_port)
        })
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(APP_PORT)
}

/// Waits until `want` tasks that `mine` picks are running, one per slot; fails at once when
/// one of them failed (with the task's error and its last lines), or after `within`.
pub async fn wait_running(
    docker: &Docker,
    app: &str,
    want: u32,
    mine: &impl Fn(&ProcInfo) -> bool,
    within: Duration,
) -> Result<Vec<ProcInfo>, AgentError> {
    let start = Instant::now();
    loop {
        let (_, all) = list_tasks(docker, false).await?;
        let ours: Vec<&ProcInfo> = all.iter().filter(|p| p.app == app && mine(p)).collect();
        if let Some(bad) = ours
            .iter()
            .find(|p| matches!(p.state.as_str(), "failed" | "rejected" | "orphaned"))
        {
            let why = task_error(docker, &bad.container).await;
            let process = format!(
                "{}.{} on {}",
                bad.ptype,
                bad.index,
                bad.node.as_deref().unwrap_or("?")
            );
            if why.contains("unhealthy") {
                return Err(AgentError::Invalid(format!(
                    "{process} failed its health check (Swarm's check of $PORT: {why})"
                )));
            }
            return Err(AgentError::CannotStart {
                process,
                why: Box::new(AgentError::Invalid(why)),
            });
        }
        let running: Vec<ProcInfo> = ours
            .iter()
            .filter(|p| p.state == "running")
            .map(|p| (*p).clone())
            .collect();
        if running.len() as u32 >= want {
            return Ok(running);
        }
        if start.elapsed() > within {
            return Err(AgentError::Timeout {
                what: format!("starting {want} tasks ({} running)", running.len()),
                after: format!("{}s", within.as_secs()),
            });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Why a task failed: Swarm's words, then the process's last line.
async fn task_error(docker: &Docker, task: &str) -> String {
    let err = docker
        .raw()
        .inspect_task(task)
        .await
        .ok()
        .and_then(|t| t.status)
        .and_then(|s| s.err.or(s.message))
        .unwrap_or_else(|| "failed".into());
    // No registry: a node without the stack image cannot pull it.
    let err = if err.contains("No such image") || err.contains("pull access denied") {
        format!("{err} (the stack image is not on that node: its magrathea agent (agent --swarm --join) loads it from the cluster's agent)")
    } else {
        err
    };
    match last_lines(docker, task, 3).await.pop() {
        Some(l) => format!("{err}: {l}"),
        None => err,
    }
}

/// Ok while the task runs (the health check's early stop).
pub async fn still_running(docker: &Docker, task: String) -> Result<(), String> {
    match docker.raw().inspect_task(&task).await {
        Ok(t) => match t.status.and_then(|s| s.state) {
            Some(TaskState::RUNNING) => Ok(()),
            Some(s) => Err(format!("its task is {s}")),
            None => Ok(()),
        },
        Err(e) => Err(format!("its task is gone ({e})")),
    }
}

pub async fn last_lines(docker: &Docker, task: &str, n: usize) -> Vec<String> {
    let opts = LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .tail(&n.to_string())
        .build();
    let mut s = docker.raw().task_logs(task, Some(opts));
    let mut out = vec![];
    let read = async {
        while let Some(Ok(l)) = s.next().await {
            out.push(l.to_string().trim_end().to_string());
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), read).await;
    out
}

pub async fn say_last_lines(
    docker: &Docker,
    task: &str,
    progress: &mpsc::Sender<String>,
    name: &str,
) {
    let lines = last_lines(docker, task, 20).await;
    if !lines.is_empty() {
        let _ = progress.send(format!("{name}'s last log lines:")).await;
        for l in lines {
            let _ = progress.send(format!("  | {l}")).await;
        }
    }
}

/// Secrets of `app` whose services are gone (a secret in use cannot be removed, so those
/// simply stay).
pub async fn remove_unused_secrets(docker: &Docker, app: &str) {
    let opts = ListSecretsOptionsBuilder::new()
        .filters(&label_filter(Some(app)))
        .build();
    let Ok(list) = docker.raw().list_secrets(Some(opts)).await else {
        return;
    };
    let services = services(docker, Some(app)).await.unwrap_or_default();
    for s in list {
        let labels = s.spec.and_then(|s| s.labels).unwrap_or_default();
        let used = services.iter().any(|v| {
            Some(&v.parsed.release) == labels.get(L_RELEASE)
                && Some(&v.parsed.generation.to_string()) == labels.get(L_GENERATION)
        });
        if !used {
            if let Some(id) = s.id {
                let _ = docker.raw().delete_secret(&id).await;
            }
        }
    }
}

/// `clusters:info`: nodes and every task meant to run.
pub async fn cluster(docker: &Docker) -> Result<ClusterReply, AgentError> {
    let (nodes, tasks) = list_tasks(docker, true).await?;
    Ok(ClusterReply {
        nodes: nodes.into_iter().map(|n| n.node).collect(),
        tasks,
    })
}

/// The process tasks whose containers run on this engine (any swarm node's), for `shell`:
/// slot `N` of a service is process `type.N` (from the task's name, `service.N.id`).
pub async fn local_tasks(docker: &Docker) -> Result<Vec<ProcInfo>, AgentError> {
    let list = docker
        .containers("label", vec![format!("{L_MANAGED}=1")])
        .await
        .map_err(|e| AgentError::Docker(format!("listing containers: {e}")))?;
    let mut out = vec![];
    for c in list {
        let labels = c.labels.unwrap_or_default();
        if labels.contains_key(L_ONEOFF) {
            continue;
        }
        let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
        let slot: u32 = get("com.docker.swarm.task.name")
            .split('.')
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let base: u16 = get(L_PORT_BASE).parse().unwrap_or(0);
        let port = match base {
            0 => APP_PORT,
            b => b.saturating_add(slot.min(99) as u16),
        };
        out.push(ProcInfo {
            container: c.id.unwrap_or_default(),
            app: get(L_APP),
            release: get(L_RELEASE),
            ptype: get(L_PROCESS),
            index: slot,
            port,
            state: c.state.map(|s| s.to_string()).unwrap_or_default(),
            started_at: String::new(),
            restarts: 0,
            generation: get(L_GENERATION).parse().unwrap_or(0),
            memory: 0,
            cpu: 0.0,
            addr: None,
            node: None,
        });
    }
    Ok(out)
}
