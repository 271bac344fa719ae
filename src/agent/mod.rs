//! `magrathea agent`: a node. An SSH server that accepts only the controller's key and
//! answers a small fixed set of verbs (`node::proto`). Nodes never build: they receive
//! verified tarballs, run processes in Docker, health-check, switch and roll back.
//!
//! `conn` is the SSH side (auth, channels, ptys), `verbs` the dispatcher and the calls,
//! `receive` the tarball transfer, `prepare` starting and checking a release's processes,
//! `session` the interactive verbs (`shell`, `run`, a service's client and logs); `layout`
//! the node's files, `runtime` its containers, `logs` the process logs, `services` the
//! service containers (Postgres, Redis, MariaDB).

mod conn;
pub mod error;
mod forward;
pub mod layout;
pub mod logs;
mod prepare;
mod receive;
pub mod runtime;
pub mod services;
pub mod session;
mod svcbackup;
mod svcverify;
pub mod swarm;
mod tunnel;
mod verbs;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::OnceCell;

use crate::docker::Docker;
use crate::node::proto::Capacity;
use conn::AgentConn;
use layout::NodeRoot;

pub struct AgentCtx {
    pub root: NodeRoot,
    pub controller_fp: String,
    pub instance: String,
    docker: OnceCell<Docker>,
    /// What the node offers app processes (`--memory`, else sized from the machine).
    pub capacity: Capacity,
    /// One operation per app at a time on this node.
    locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// `--swarm`: processes are the services of the Swarm this engine manages.
    pub swarm: Option<swarm::Swarm>,
    /// `--swarm --join`: an agent on another node of a swarm (`shell` into its tasks).
    pub joined: bool,
    /// Link keys other nodes reach this node's services with (`tunnel`).
    links: tunnel::Links,
    /// Forwarders to services on other nodes (`forward`).
    forwards: forward::Forwards,
}

impl AgentCtx {
    pub fn new(root: PathBuf, controller_fp: String) -> AgentCtx {
        use sha2::Digest;
        let canon = std::fs::canonicalize(&root).unwrap_or(root.clone());
        let instance =
            hex::encode(&sha2::Sha256::digest(canon.as_os_str().as_encoded_bytes())[..4]);
        let links = tunnel::Links::load(&canon.join("services"));
        AgentCtx {
            root: NodeRoot::new(canon),
            controller_fp,
            instance,
            docker: OnceCell::new(),
            capacity: runtime::machine_capacity(),
            locks: Default::default(),
            swarm: None,
            joined: false,
            links,
            forwards: Default::default(),
        }
    }

    /// Offer this much memory to app processes instead of the machine's (`--memory`).
    pub fn with_memory(mut self, memory: Option<i64>) -> AgentCtx {
        if let Some(m) = memory {
            self.capacity.memory = m;
        }
        self
    }

    pub(crate) async fn docker(&self) -> Result<&Docker, error::AgentError> {
        self.docker
            .get_or_try_init(|| async { Ok(Docker::connect().await?) })
            .await
    }

    fn app_lock(&self, app: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(app.to_string())
            .or_default()
            .clone()
    }
}

/// `--swarm`: the cluster's agent on a manager, or (`--join`) one on another node.
pub enum SwarmMode {
    /// Where swarm nodes fetch releases and images (empty: the listener's port + 1).
    Manager { endpoint: String },
    /// The manager agent's endpoint, and the cluster's join token (or a file holding it).
    Join { endpoint: String, token: String },
}

pub async fn run(
    root: PathBuf,
    listen: &str,
    controller_key: &str,
    limits: crate::sshd::Limits,
    memory: Option<i64>,
    swarm: Option<SwarmMode>,
) -> anyhow::Result<()> {
    let text = match std::fs::read_to_string(controller_key) {
        Ok(t) => t,
        Err(_) => controller_key.to_string(), // the key itself on the command line
    };
    let key = crate::keys::parse_public(&text)
        .context("--controller-key: expected a public key file or key text")?;
    std::fs::create_dir_all(root.join("apps"))?;
    let (host_key, _) = crate::keys::load_or_create(&root.join("host_ed25519"), "magrathea-agent")?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let mut ctx = AgentCtx::new(root, key.fingerprint).with_memory(memory);
    let fp = crate::keys::fingerprint(host_key.public_key());
    match swarm {
        Some(SwarmMode::Manager { endpoint }) => {
            ctx.swarm = Some(start_swarm(&ctx, &listener, &endpoint, fp).await?);
        }
        Some(SwarmMode::Join { endpoint, token }) => {
            start_joined(&ctx, &listener, endpoint, &token, fp).await?;
            ctx.joined = true;
        }
        None => {}
    }
    let ctx = Arc::new(ctx);
    let stop = crate::shutdown::StopSignals::register().context("cannot handle SIGTERM")?;
    println!(
        "host key {}",
        crate::keys::fingerprint(host_key.public_key())
    );
    println!("agent listening on {}", listener.local_addr()?);
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let sd = shutdown.clone();
    tokio::spawn(async move {
        stop.wait().await;
        sd.cancel();
    });
    serve_on(ctx, listener, host_key, shutdown, limits).await;
    Ok(())
}

/// `--swarm`: the engine must be a swarm manager; the release endpoint listens on
/// `endpoint` (default: the SSH listener's address, port + 1).
async fn start_swarm(
    ctx: &AgentCtx,
    listener: &tokio::net::TcpListener,
    endpoint: &str,
    fp: String,
) -> anyhow::Result<swarm::Swarm> {
    let docker = ctx.docker().await.context("--swarm: Docker")?;
    let info = docker.raw().info().await.context("--swarm: docker info")?;
    let manager = info
        .swarm
        .as_ref()
        .and_then(|s| s.control_available)
        .unwrap_or(false);
    anyhow::ensure!(
        manager,
        "--swarm: this Docker engine is not a swarm manager (docker swarm init, or run the \
         agent on a manager node)"
    );
    let addr: SocketAddr = if endpoint.is_empty() {
        let l = listener.local_addr()?;
        SocketAddr::new(l.ip(), l.port() + 1)
    } else {
        endpoint
            .parse()
            .with_context(|| format!("--endpoint {endpoint}: expected IP:PORT"))?
    };
    anyhow::ensure!(
        !addr.ip().is_unspecified(),
        "--swarm: swarm nodes need an address to fetch releases from: give --endpoint IP:PORT"
    );
    let endpoint_listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (the release endpoint)"))?;
    // Release commands and `run` join the app environment's overlay, with its tasks.
    runtime::use_swarm_network();
    let tarballs = swarm::endpoint::Tarballs::new(ctx.root.root());
    let own_node = info
        .swarm
        .as_ref()
        .and_then(|s| s.node_id.clone())
        .unwrap_or_default();
    let fleet = Arc::new(swarm::images::Fleet::open(ctx.root.root(), own_node, fp)?);
    let served = swarm::endpoint::Served {
        tarballs: tarballs.clone(),
        fleet: fleet.clone(),
        docker: docker.clone(),
    };
    tokio::spawn(swarm::endpoint::serve(endpoint_listener, served));
    println!("release endpoint on {addr}");
    println!(
        "join token in {} (other nodes: magrathea agent --swarm --join {addr} --join-token FILE)",
        ctx.root.root().join("join_token").display()
    );
    Ok(swarm::Swarm {
        endpoint: addr,
        tarballs,
        fleet,
    })
}

/// `--swarm --join`: this engine must be in a swarm; images come from the manager agent's
/// endpoint, and this agent reports itself there (`swarm::join`).
async fn start_joined(
    ctx: &AgentCtx,
    listener: &tokio::net::TcpListener,
    endpoint: String,
    token: &str,
    fp: String,
) -> anyhow::Result<()> {
    let docker = ctx.docker().await.context("--swarm: Docker")?;
    let info = docker.raw().info().await.context("--swarm: docker info")?;
    let sw = info.swarm.unwrap_or_default();
    let node_id = sw.node_id.clone().unwrap_or_default();
    anyhow::ensure!(
        !node_id.is_empty(),
        "--join: this Docker engine is not in a swarm (docker swarm join first)"
    );
    let token = match std::fs::read_to_string(token) {
        Ok(t) => t.trim().to_string(),
        Err(_) => token.trim().to_string(),
    };
    anyhow::ensure!(
        token.len() >= 32,
        "--join-token: expected the cluster agent's join token or the file holding it"
    );
    let l = listener.local_addr()?;
    let ip = match (l.ip().is_unspecified(), sw.node_addr.as_deref()) {
        (true, Some(a)) => a.to_string(),
        _ => l.ip().to_string(),
    };
    let join = swarm::join::Join {
        endpoint,
        token,
        agent: SocketAddr::new(ip.parse()?, l.port()).to_string(),
        fp,
        dir: ctx.root.root().join("images"),
    };
    println!("joined to {} as swarm node {node_id}", join.endpoint);
    tokio::spawn(swarm::join::run(docker.clone(), join, node_id));
    Ok(())
}

/// Serve an agent on `listener` (also used in-process for the controller's `local` node).
pub async fn serve_on(
    ctx: Arc<AgentCtx>,
    listener: tokio::net::TcpListener,
    host_key: russh::keys::PrivateKey,
    shutdown: tokio_util::sync::CancellationToken,
    limits: crate::sshd::Limits,
) {
    // Before the first call: one-offs still there have lost their caller.
    if let Ok(Ok(docker)) = tokio::time::timeout(Duration::from_secs(10), ctx.docker()).await {
        let n = runtime::sweep_oneoffs(docker, &ctx.instance).await;
        if n > 0 {
            tracing::warn!(
                removed = n,
                "one-off containers left by a previous run removed"
            );
        }
        forward::restore(&ctx, docker);
        let n = svcverify::sweep_throwaways(&ctx, docker).await;
        if n > 0 {
            tracing::warn!(
                removed = n,
                "throwaway instances of backup verifications left by a previous run removed"
            );
        }
    }
    let config = crate::sshd::server::config(host_key);
    crate::sshd::server::accept_loop(
        listener,
        config,
        limits,
        shutdown,
        move |_peer: SocketAddr, ticket| AgentConn::new(ctx.clone(), ticket),
    )
    .await;
}
