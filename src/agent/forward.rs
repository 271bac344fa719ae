//! A node's end of a link to a service on another node (ARCHITECTURE.md, "Services across
//! nodes"): per linked app network, a forwarder that answers under the service's name on
//! its port, so `DATABASE_URL` is the same on every node, and carries each connection to
//! the service's node through an SSH tunnel opened with this node's link key for that
//! service (`tunnel.rs` is the other end).
//!
//! The forwarder container (`mg-<instance>-fwd-<key>-u<uid>`, `sleep` from the app's stack
//! image, the app's uid, no capabilities) only holds a network namespace on the app's
//! network with the service's name as alias; the agent listens inside that namespace
//! itself (`setns` on a thread of its own) and splices. Only the app's containers share
//! that network, so only they reach the forwarder. What a node was asked to forward is kept
//! in `forwards/<key>.json` (root only: it holds the link key) and served again when the
//! agent starts.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::docker::Docker;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig};
use bollard::models::{RestartPolicy, RestartPolicyNameEnum};
use bollard::query_parameters::{CreateContainerOptionsBuilder, InspectContainerOptions};
use tokio_util::sync::CancellationToken;

use super::error::AgentError;
use super::AgentCtx;
use crate::node::client::NodeClient;
use crate::node::proto::{ForwardApp, ServiceForwardReq, ServiceUnforwardReq, StoppedReply};

/// How often a forwarder checks that its container still holds the namespace it listens
/// in (a restarted container has a new one).
const WATCH: Duration = Duration::from_secs(2);

/// The running forwarders, by (service key, app uid).
#[derive(Default)]
pub struct Forwards(Mutex<HashMap<(String, u32), CancellationToken>>);

fn container_name(instance: &str, key: &str, uid: u32) -> String {
    format!("mg-{instance}-fwd-{key}-u{uid}")
}

fn file(ctx: &AgentCtx, key: &str) -> PathBuf {
    ctx.root.root().join("forwards").join(format!("{key}.json"))
}

fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> AgentError + '_ {
    move |source| AgentError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn check(req: &ServiceForwardReq) -> Result<(), AgentError> {
    super::services::check_key(&req.key)?;
    crate::names::check("service", &req.name)?;
    crate::names::check("node", &req.node)?;
    if req.port == 0 || req.addr.is_empty() || req.host_fp.is_empty() {
        return Err(AgentError::Invalid("bad forward: port or address".into()));
    }
    russh::keys::decode_secret_key(&req.private_key, None)
        .map_err(|e| AgentError::Invalid(format!("bad link key: {e}")))?;
    for a in &req.apps {
        crate::names::check("app", &a.app)?;
        crate::isolation::check_uid(a.uid)?;
    }
    Ok(())
}

/// `service-forward`: the link key and the service's node for `key` replaced, and a
/// forwarder for each app of the request (added to those already there).
pub async fn ensure(ctx: &AgentCtx, req: ServiceForwardReq) -> Result<StoppedReply, AgentError> {
    check(&req)?;
    let path = file(ctx, &req.key);
    let saved = read(&path);
    // The same link (node, address, host key, link key): forwarders already running carry
    // on untouched, so a rollout never drops a connection being made.
    let same = saved.as_ref().is_some_and(|s| {
        (&s.node, &s.addr, &s.host_fp, &s.private_key)
            == (&req.node, &req.addr, &req.host_fp, &req.private_key)
    });
    let mut apps: BTreeMap<u32, ForwardApp> = saved
        .map(|r| r.apps.into_iter().map(|a| (a.uid, a)).collect())
        .unwrap_or_default();
    apps.extend(req.apps.iter().map(|a| (a.uid, a.clone())));
    let req = ServiceForwardReq {
        apps: apps.into_values().collect(),
        ..req
    };
    save(&path, &req)?;
    let n = start(ctx, ctx.docker().await?, &req, !same);
    Ok(StoppedReply { stopped: n })
}

fn read(path: &std::path::Path) -> Option<ServiceForwardReq> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn save(path: &std::path::Path, req: &ServiceForwardReq) -> Result<(), AgentError> {
    let dir = path.parent().expect("forwards dir");
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let json = serde_json::to_vec(req).expect("forward serializes");
    crate::fsutil::write_atomic(path, &json, 0o600).map_err(io_err(path))
}

/// Starts a forwarder for every app of `req` that has none running (all of them again
/// when `restart`: the link changed); how many were started.
fn start(ctx: &AgentCtx, docker: &Docker, req: &ServiceForwardReq, restart: bool) -> u32 {
    let key = match russh::keys::decode_secret_key(&req.private_key, None) {
        Ok(k) => Arc::new(k),
        Err(_) => return 0,
    };
    let client = NodeClient::new(&req.node, &req.addr, key, Some(req.host_fp.clone()));
    let mut running = ctx.forwards.0.lock().unwrap_or_else(|p| p.into_inner());
    let mut started = 0;
    for app in &req.apps {
        if !restart && running.contains_key(&(req.key.clone(), app.uid)) {
            continue;
        }
        started += 1;
        let stop = CancellationToken::new();
        if let Some(old) = running.insert((req.key.clone(), app.uid), stop.clone()) {
            old.cancel();
        }
        let f = Forwarder {
            docker: docker.clone(),
            instance: ctx.instance.clone(),
            client: client.clone(),
            key: req.key.clone(),
            name: req.name.clone(),
            port: req.port,
            app: app.clone(),
        };
        let span = tracing::info_span!("forward", service = %req.name, app = %app.app);
        tokio::spawn(tracing::Instrument::instrument(f.run(stop), span));
    }
    started
}

/// `service-unforward`: the forwarders of `key` (of one app, or all) stopped and removed.
pub async fn remove(ctx: &AgentCtx, req: ServiceUnforwardReq) -> Result<StoppedReply, AgentError> {
    super::services::check_key(&req.key)?;
    let path = file(ctx, &req.key);
    let Some(mut saved) = read(&path) else {
        return Ok(StoppedReply { stopped: 0 });
    };
    let (gone, kept): (Vec<ForwardApp>, Vec<ForwardApp>) = saved
        .apps
        .into_iter()
        .partition(|a| req.uid.is_none_or(|u| u == a.uid));
    saved.apps = kept;
    match saved.apps.is_empty() {
        true => std::fs::remove_file(&path).map_err(io_err(&path))?,
        false => save(&path, &saved)?,
    }
    let docker = ctx.docker().await?;
    for a in &gone {
        let stop = ctx
            .forwards
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(req.key.clone(), a.uid));
        if let Some(s) = stop {
            s.cancel();
        }
        docker
            .remove(&container_name(&ctx.instance, &req.key, a.uid))
            .await;
    }
    Ok(StoppedReply {
        stopped: gone.len() as u32,
    })
}

/// At the agent's start: every forwarder it was asked for, served again.
pub fn restore(ctx: &AgentCtx, docker: &Docker) {
    let dir = ctx.root.root().join("forwards");
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        if let Some(req) = read(&e.path()) {
            if check(&req).is_ok() {
                start(ctx, docker, &req, true);
            }
        }
    }
}

struct Forwarder {
    docker: Docker,
    instance: String,
    client: NodeClient,
    key: String,
    name: String,
    port: u16,
    app: ForwardApp,
}

impl Forwarder {
    /// Until stopped: the container up, a listener in its namespace, connections carried.
    async fn run(self, stop: CancellationToken) {
        while !stop.is_cancelled() {
            match self.listen().await {
                Ok((listener, pid)) => self.serve(listener, pid, &stop).await,
                Err(e) => {
                    tracing::warn!("forwarder not ready: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(WATCH) => {}
                        _ = stop.cancelled() => {}
                    }
                }
            }
        }
    }

    /// The forwarder container running (created if missing), and a listener on the
    /// service's port inside its network namespace; with the container's pid.
    async fn listen(&self) -> Result<(tokio::net::TcpListener, i64), AgentError> {
        let docker = &self.docker;
        let name = container_name(&self.instance, &self.key, self.app.uid);
        let pid = match self.pid(&name).await {
            Some(p) => p,
            None => {
                docker.remove(&name).await;
                self.create(&name).await?;
                self.pid(&name)
                    .await
                    .ok_or_else(|| AgentError::Docker(format!("{name} does not run")))?
            }
        };
        let port = self.port;
        let l = tokio::task::spawn_blocking(move || {
            // A thread of its own: setns changes the calling thread, which then ends.
            std::thread::spawn(move || listen_in(pid, port))
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("listener thread panicked")))
        })
        .await
        .map_err(|e| AgentError::Docker(e.to_string()))?
        .map_err(|e| AgentError::Docker(format!("listening in {name}: {e}")))?;
        let l = tokio::net::TcpListener::from_std(l)
            .map_err(|e| AgentError::Docker(format!("listening in {name}: {e}")))?;
        tracing::info!(container = %name, port, "forwarder listening");
        Ok((l, pid))
    }

    /// The container's pid when it runs.
    async fn pid(&self, name: &str) -> Option<i64> {
        let info = self
            .docker
            .raw()
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
            .ok()?;
        let st = info.state?;
        st.running.filter(|r| *r)?;
        st.pid.filter(|p| *p > 0)
    }

    async fn create(&self, name: &str) -> Result<(), AgentError> {
        let docker = &self.docker;
        let net = crate::isolation::ensure_network(docker.raw(), &self.instance, self.app.uid)
            .await
            .map_err(|e| AgentError::Docker(e.to_string()))?;
        let mut host = HostConfig {
            network_mode: Some(net.clone()),
            memory: Some(16 << 20),
            init: Some(true),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::ALWAYS),
                maximum_retry_count: None,
            }),
            ..Default::default()
        };
        let mut user = None;
        crate::isolation::confine(&mut user, &mut host, self.app.uid, 16);
        let body = ContainerCreateBody {
            image: Some(self.app.image.clone()),
            cmd: Some(vec!["sleep".into(), "infinity".into()]),
            user,
            labels: Some(HashMap::from([
                ("magrathea.instance".to_string(), self.instance.clone()),
                ("magrathea.forward".to_string(), self.key.clone()),
            ])),
            host_config: Some(host),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    net,
                    EndpointSettings {
                        aliases: Some(vec![self.name.clone()]),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::default().name(name).build();
        let err = |e: bollard::errors::Error| AgentError::Docker(format!("{name}: {e}"));
        docker
            .raw()
            .create_container(Some(opts), body)
            .await
            .map_err(err)?;
        docker
            .raw()
            .start_container(
                name,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(err)
    }

    /// Accepts and carries connections until stopped or the container's pid changes.
    async fn serve(&self, listener: tokio::net::TcpListener, pid: i64, stop: &CancellationToken) {
        let name = container_name(&self.instance, &self.key, self.app.uid);
        let mut watch = tokio::time::interval(WATCH);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = watch.tick() => {
                    if self.pid(&name).await != Some(pid) {
                        return;
                    }
                }
                r = listener.accept() => {
                    let Ok((mut tcp, _)) = r else { continue };
                    let (client, host, port) = (self.client.clone(), self.name.clone(), self.port);
                    tokio::spawn(async move {
                        match client.tunnel(&host, port).await {
                            Ok(mut t) => {
                                let _ = tokio::io::copy_bidirectional(&mut tcp, &mut t.stream).await;
                            }
                            Err(e) => tracing::warn!(service = %host, "tunnel: {e}"),
                        }
                    });
                }
            }
        }
    }
}

/// A listening socket on `port` in the network namespace of process `pid`. Must run on a
/// thread of its own that ends afterwards (it stays in that namespace).
fn listen_in(pid: i64, port: u16) -> std::io::Result<std::net::TcpListener> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    // SAFETY: setns takes a valid namespace fd; it affects only this thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let l = std::net::TcpListener::bind(("0.0.0.0", port))?;
    l.set_nonblocking(true)?;
    Ok(l)
}
