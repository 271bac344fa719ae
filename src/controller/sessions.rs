//! `shell` and `run`: sessions in the app's live release on a node. This side finds the
//! live release and the node and builds the request; the front end bridges the user's
//! channel to [`Session::run`]; the node does the rest.

use std::collections::BTreeMap;

use tokio::sync::mpsc;

use super::releases::Live;
use super::{Core, CoreError};
use crate::deploy::envs;
use crate::node::client::{Input, NodeClient, Output};
use crate::node::proto::{
    pick_process, release_name, ClusterReply, ClusterReq, ProcInfo, RunReq, ServiceConnectReq,
    ServiceLogsReq, ShellReq,
};
use crate::sshd::Pty;
use crate::store::NodeRow;

/// A checked, resolved session, ready to bridge.
pub struct Session {
    node: NodeClient,
    request: Request,
    /// For the audit trail: where and what.
    pub detail: String,
}

/// What a session asks of its node.
enum Request {
    Shell(ShellReq),
    Run(RunReq),
    ServiceConnect(ServiceConnectReq),
    ServiceLogs(ServiceLogsReq),
}

impl Session {
    /// Runs the session on its node; the exit status to give the user (255 when the node
    /// could not be reached or the session broke off, after a one-line error on `output`).
    pub async fn run(
        self,
        pty: Option<Pty>,
        input: mpsc::Receiver<Input>,
        output: mpsc::Sender<Output>,
    ) -> u32 {
        let (node, pty, out) = (&self.node, pty.as_ref(), output.clone());
        let r = match &self.request {
            Request::Shell(req) => node.session(req, pty, input, out).await,
            Request::Run(req) => node.session(req, pty, input, out).await,
            Request::ServiceConnect(req) => node.session(req, pty, input, out).await,
            Request::ServiceLogs(req) => node.session(req, pty, input, out).await,
        };
        match r {
            Ok(code) => code,
            Err(e) => {
                let _ = output
                    .send(Output::Stderr(format!("error: {e}\n").into_bytes()))
                    .await;
                255
            }
        }
    }
}

/// A shell in a running process.
pub struct ShellTarget<'a> {
    pub app: &'a str,
    pub env: &'a str,
    /// The node to use (default: the first where the app is live).
    pub node: Option<&'a str>,
    /// A process (web.2) or a type (web), checked by the front end.
    pub process: Option<String>,
}

impl Core {
    pub async fn shell_session(&self, t: ShellTarget<'_>) -> Result<Session, CoreError> {
        let live = self.live_release(t.app, t.env)?;
        let n = self.pick_node(t.app, t.env, &live.live.nodes, t.node)?;
        let req = ShellReq {
            app: crate::deploy::node_app(t.app, t.env),
            release: release_name(live.release.version, &live.release.sha256),
            process: t.process,
        };
        if n.is_cluster() {
            return self.cluster_shell(n, req, live.release.version).await;
        }
        let detail = format!(
            "node {}, v{}, {}",
            n.name,
            live.release.version,
            req.process.as_deref().unwrap_or("web.1")
        );
        Ok(Session {
            node: self.node_client(&n),
            request: Request::Shell(req),
            detail,
        })
    }

    /// A shell in a swarm task: the process picked from the cluster's task list, reached
    /// through the agent on the task's node (the cluster's own, or one that joined), or
    /// refused with the reason when that node has none.
    async fn cluster_shell(
        &self,
        c: NodeRow,
        mut req: ShellReq,
        version: i64,
    ) -> Result<Session, CoreError> {
        let info: ClusterReply = self
            .node_client(&c)
            .send(&ClusterReq)
            .await
            .map_err(|e| CoreError::Invalid(e.to_string()))?;
        let procs: Vec<ProcInfo> = info
            .tasks
            .into_iter()
            .filter(|p| p.app == req.app && p.release == req.release)
            .collect();
        let Some(p) = pick_process(&procs, req.process.as_deref()) else {
            return Err(CoreError::Invalid(format!(
                "no running {} of {} ({}) on cluster '{}'",
                req.process.as_deref().unwrap_or("process"),
                req.app,
                req.release,
                c.name
            )));
        };
        let name = format!("{}.{}", p.ptype, p.index);
        let host = p.node.clone().unwrap_or_else(|| "?".into());
        let agent = info
            .nodes
            .iter()
            .find(|n| n.hostname == host && p.addr.as_deref() == Some(n.addr.as_str()))
            .and_then(|n| n.agent.clone());
        let Some(agent) = agent else {
            return Err(CoreError::Invalid(format!(
                "{name} runs on swarm node {host}, which has no magrathea agent: start                  `magrathea agent --swarm --join` there to reach its tasks, or pick a                  process on another node (ps shows where each runs)"
            )));
        };
        let node = match agent.addr.is_empty() {
            true => self.node_client(&c),
            false => NodeClient::new(&host, &agent.addr, self.client_key.clone(), Some(agent.fp)),
        };
        req.process = Some(name.clone());
        Ok(Session {
            node,
            request: Request::Shell(req),
            detail: format!("cluster {}, swarm node {host}, v{version}, {name}", c.name),
        })
    }

    /// A one-off container of the live release running `argv`.
    pub async fn run_session(
        &self,
        app: &str,
        env: &str,
        argv: Vec<String>,
    ) -> Result<Session, CoreError> {
        if argv.iter().any(|a| a.contains('\0')) {
            return Err(CoreError::Invalid("the command holds a NUL byte".into()));
        }
        let live = self.live_release(app, env)?;
        let manifest = live.manifest()?;
        let n = self.pick_node(app, env, &live.live.nodes, None)?;
        let (env_vars, config) = self.run_env(app, env, &live).await?;
        let detail = format!("node {}, v{}", n.name, live.release.version);
        let req = RunReq {
            app: crate::deploy::node_app(app, env),
            release: release_name(live.release.version, &live.release.sha256),
            image: manifest.stack_image.clone(),
            argv,
            env: env_vars,
            // The limits the app's processes get (magrathea.yml), else the defaults.
            memory: config
                .memory
                .as_deref()
                .and_then(crate::appconfig::parse_size)
                .unwrap_or(self.limits.process_memory),
            cpu: config.cpu.unwrap_or(0.0),
            uid: self.app_uid(app)?,
        };
        Ok(Session {
            node: self.node_client(&n),
            request: Request::Run(req),
            detail,
        })
    }

    /// The client of a service, in its container (`services:connect`).
    pub fn service_connect_session(&self, name: &str) -> Result<Session, CoreError> {
        let (row, node) = self.service_and_node(name)?;
        Ok(Session {
            node: self.node_client(&node),
            request: Request::ServiceConnect(ServiceConnectReq { key: row.key }),
            detail: format!("node {}", node.name),
        })
    }

    /// A service container's output (`services:logs`).
    pub fn service_logs_session(
        &self,
        name: &str,
        follow: bool,
        tail: usize,
    ) -> Result<Session, CoreError> {
        let (row, node) = self.service_and_node(name)?;
        Ok(Session {
            node: self.node_client(&node),
            request: Request::ServiceLogs(ServiceLogsReq {
                key: row.key,
                tail,
                follow,
            }),
            detail: format!("node {}", node.name),
        })
    }

    /// The node to use: `want` if the app is live there, else the first live node we know.
    fn pick_node(
        &self,
        app: &str,
        env: &str,
        live: &[String],
        want: Option<&str>,
    ) -> Result<NodeRow, CoreError> {
        let known = self.all_nodes()?;
        let find = |n: &str| known.iter().find(|k| k.name == n).cloned();
        match want {
            Some(w) if live.iter().any(|l| l == w) => find(w)
                .ok_or_else(|| CoreError::Invalid(format!("node '{w}' is no longer configured"))),
            Some(w) => Err(CoreError::Invalid(format!(
                "'{app}' is not live in {env} on node '{}' (live on: {})",
                w.chars()
                    .filter(|c| !c.is_control())
                    .take(40)
                    .collect::<String>(),
                live.join(", ")
            ))),
            None => live.iter().find_map(|n| find(n)).ok_or_else(|| {
                CoreError::Invalid(format!(
                    "none of the nodes '{app}' is live on in {env} is configured"
                ))
            }),
        }
    }

    /// The env a process of the live release gets (as a rollout builds it): the
    /// environment's labels from `magrathea.yml`, the config vars over them, and GIT_REV;
    /// and the release's `magrathea.yml`.
    async fn run_env(
        &self,
        app: &str,
        env: &str,
        live: &Live,
    ) -> Result<(BTreeMap<String, String>, crate::appconfig::AppConfig), CoreError> {
        let tarball = self.data.releases(app).join(&live.release.file);
        let e = env.to_string();
        let (target, config) = tokio::task::spawn_blocking(move || {
            let c = envs::config_of_release(&tarball);
            (envs::target(&c, &e), c)
        })
        .await
        .map_err(|e| CoreError::Invalid(format!("internal error ({e})")))?;
        let mut vars = target.vars;
        vars.extend(self.config(app, env)?);
        vars.insert("GIT_REV".into(), live.release.git_sha.clone());
        Ok((vars, config))
    }
}
