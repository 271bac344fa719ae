//! `magrathea agent`: a node. An SSH server that accepts only the controller's key and
//! answers a small fixed set of verbs (see `proto`). Nodes never build: they receive
//! verified tarballs, run processes in Docker, health-check, switch and roll back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelWriteHalf};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, OnceCell};
use tokio_util::sync::CancellationToken;

use super::layout::{AgentError, NodeRoot};
use super::proto::*;
use super::runtime::{self, ProcessSpec};
use crate::docker::Docker;

pub struct AgentCtx {
    pub root: NodeRoot,
    pub controller_fp: String,
    pub instance: String,
    docker: OnceCell<Docker>,
    /// What the node offers app processes (`--memory`, else sized from the machine).
    pub capacity: Capacity,
    /// One operation per app at a time on this node.
    locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl AgentCtx {
    pub fn new(root: PathBuf, controller_fp: String) -> AgentCtx {
        use sha2::Digest;
        let canon = std::fs::canonicalize(&root).unwrap_or(root.clone());
        let instance =
            hex::encode(&sha2::Sha256::digest(canon.as_os_str().as_encoded_bytes())[..4]);
        AgentCtx {
            root: NodeRoot::new(canon),
            controller_fp,
            instance,
            docker: OnceCell::new(),
            capacity: runtime::machine_capacity(),
            locks: Default::default(),
        }
    }

    /// Offer this much memory to app processes instead of the machine's (`--memory`).
    pub fn with_memory(mut self, memory: Option<i64>) -> AgentCtx {
        if let Some(m) = memory {
            self.capacity.memory = m;
        }
        self
    }

    pub(crate) async fn docker(&self) -> Result<&Docker, String> {
        self.docker
            .get_or_try_init(|| async { Docker::connect().await.map_err(|e| e.to_string()) })
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

pub struct AgentConn {
    ctx: Arc<AgentCtx>,
    /// This connection's place at the gate (budgets, auth failure delays).
    ticket: Arc<crate::sshd::gate::Ticket>,
    authed: bool,
    chans: HashMap<ChannelId, Channel<Msg>>,
    /// Ptys and window changes of `shell`/`run` channels.
    terms: super::interactive::Terminals,
    /// Cancelled when this connection ends: the controller closed it, died (its kernel
    /// closes the socket), or stopped answering keepalives. A channel's own close is no such
    /// signal (a caller half-closes its channel as soon as its request is sent).
    gone: CancellationToken,
    _gone_on_drop: tokio_util::sync::DropGuard,
}

impl russh::server::Handler for AgentConn {
    type Error = anyhow::Error;

    async fn auth_publickey_offered(
        &mut self,
        _u: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        if crate::keys::fingerprint(offer.public_key) == self.ctx.controller_fp {
            return Ok(Auth::Accept);
        }
        self.ticket.rejected().await;
        Ok(Auth::reject())
    }

    async fn auth_password(&mut self, _user: &str, _pw: &str) -> Result<Auth, Self::Error> {
        self.ticket.rejected().await;
        Ok(Auth::reject())
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        _user: &str,
        _submethods: &str,
        _response: Option<russh::server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        self.ticket.rejected().await;
        Ok(Auth::reject())
    }

    async fn auth_publickey(
        &mut self,
        _u: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if crate::keys::fingerprint(key.public_key) != self.ctx.controller_fp {
            self.ticket.rejected().await;
            return Ok(Auth::reject());
        }
        // No room for another authenticated connection: refused, and the gate closes it.
        self.authed = self.ticket.authenticated();
        Ok(if self.authed {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _s: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.authed && self.chans.len() < 16 {
            self.chans.insert(channel.id(), channel);
            reply.accept().await;
        }
        Ok(())
    }

    async fn exec_request(
        &mut self,
        id: ChannelId,
        data: &[u8],
        s: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.chans.remove(&id) {
            Some(ch) => {
                s.channel_success(id)?;
                let line = String::from_utf8_lossy(data).into_owned();
                if super::interactive::is_interactive(&line) {
                    let (pty, resize) = self.terms.start(id);
                    let ctx = self.ctx.clone();
                    tokio::spawn(super::interactive::serve(ctx, ch, line, pty, resize));
                } else {
                    tokio::spawn(exec(self.ctx.clone(), ch, line, self.gone.clone()));
                }
            }
            None => s.channel_failure(id)?,
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        id: ChannelId,
        term: &str,
        cols: u32,
        rows: u32,
        _pw: u32,
        _ph: u32,
        _modes: &[(russh::Pty, u32)],
        s: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.chans.contains_key(&id) {
            self.terms.pty(id, term, cols, rows);
            s.channel_success(id)?;
        } else {
            s.channel_failure(id)?;
        }
        Ok(())
    }

    async fn window_change_request(
        &mut self,
        id: ChannelId,
        cols: u32,
        rows: u32,
        _pw: u32,
        _ph: u32,
        _s: &mut Session,
    ) -> Result<(), Self::Error> {
        self.terms.resize(id, cols, rows);
        Ok(())
    }

    async fn channel_close(&mut self, id: ChannelId, _s: &mut Session) -> Result<(), Self::Error> {
        self.chans.remove(&id);
        self.terms.close(id);
        Ok(())
    }

    // Everything else a client may ask of a session channel is refused at once, never left
    // unanswered: the agent runs verbs (`exec`) and nothing more.
    async fn shell_request(&mut self, id: ChannelId, s: &mut Session) -> Result<(), Self::Error> {
        s.channel_failure(id)?;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        id: ChannelId,
        _name: &str,
        s: &mut Session,
    ) -> Result<(), Self::Error> {
        s.channel_failure(id)?;
        Ok(())
    }

    async fn env_request(
        &mut self,
        id: ChannelId,
        _name: &str,
        _value: &str,
        s: &mut Session,
    ) -> Result<(), Self::Error> {
        s.channel_failure(id)?;
        Ok(())
    }

    async fn x11_request(
        &mut self,
        id: ChannelId,
        _single: bool,
        _proto: &str,
        _cookie: &str,
        _screen: u32,
        s: &mut Session,
    ) -> Result<(), Self::Error> {
        s.channel_failure(id)?;
        Ok(())
    }
}

pub async fn run(
    root: PathBuf,
    listen: &str,
    controller_key: &str,
    limits: crate::sshd::Limits,
    memory: Option<i64>,
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
    let ctx = Arc::new(AgentCtx::new(root, key.fingerprint).with_memory(memory));
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
    }
    let config = crate::sshd::server::config(host_key);
    crate::sshd::server::accept_loop(
        listener,
        config,
        limits,
        shutdown,
        move |_peer: SocketAddr, ticket| {
            let gone = CancellationToken::new();
            AgentConn {
                ctx: ctx.clone(),
                ticket,
                authed: false,
                chans: HashMap::new(),
                terms: Default::default(),
                _gone_on_drop: gone.clone().drop_guard(),
                gone,
            }
        },
    )
    .await;
}

/// The reply is always one JSON document on stdout (`{"error": ...}` on failure), so the
/// client never mistakes a progress line on stderr for the verdict.
async fn finish(tx: &ChannelWriteHalf<Msg>, result: Result<Value, String>) {
    let (code, doc) = match result {
        Ok(v) => (0, v),
        Err(e) => (1, serde_json::json!({ "error": e.replace('\n', " ") })),
    };
    let mut out = tx.make_writer();
    let _ = out.write_all(format!("{doc}\n").as_bytes()).await;
    let _ = out.flush().await;
    let _ = tx.exit_status(code).await;
    let _ = tx.eof().await;
    let _ = tx.close().await;
}

async fn read_stdin(rx: &mut russh::ChannelReadHalf) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![];
    let _ = rx.make_reader().take(4 << 20).read_to_end(&mut buf).await;
    buf
}

/// What a verb's handler has besides its request.
struct Call<'a> {
    ctx: &'a AgentCtx,
    /// Progress lines, to the controller (stderr) as they happen.
    progress: &'a mpsc::Sender<String>,
    /// Cancelled when the caller's connection ends (see [`AgentConn`]).
    gone: &'a CancellationToken,
}

/// The agent's side of a [`Request`]: what it does with one.
trait Handle: Request {
    fn handle(
        self,
        call: &Call<'_>,
    ) -> impl std::future::Future<Output = Result<Self::Reply, String>> + Send;
}

/// Reads an `R` from stdin, handles it, and returns its reply as JSON.
async fn answer<R: Handle>(
    call: &Call<'_>,
    rx: &mut russh::ChannelReadHalf,
) -> Result<Value, String> {
    let req: R = decode(&read_stdin(rx).await).map_err(|e| format!("bad request: {e}"))?;
    let reply = req.handle(call).await?;
    serde_json::to_value(reply).map_err(|e| e.to_string())
}

/// The dispatcher: each verb is its request type's `VERB`, handled by its `Handle` impl.
macro_rules! dispatch {
    ($verb:expr, $call:expr, $rx:expr, [$($req:ty),* $(,)?]) => {
        match $verb {
            $(<$req as Request>::VERB => answer::<$req>($call, $rx).await,)*
            other => Err(format!(
                "unknown agent verb '{}'",
                other.chars().take(40).collect::<String>()
            )),
        }
    };
}

async fn exec(ctx: Arc<AgentCtx>, ch: Channel<Msg>, line: String, gone: CancellationToken) {
    let (mut rx, tx) = ch.split();
    let argv = shell_words::split(&line).unwrap_or_default();
    let verb = argv.first().cloned().unwrap_or_default();
    if verb == LogsReq::VERB {
        // Streams JSON lines (not one reply) until done or the channel closes.
        let docker = ctx.docker().await;
        super::logs::serve(docker, &ctx.root, &ctx.instance, rx, tx).await;
        return;
    }
    // Progress lines go to stderr as they happen.
    let (ptx, mut prx) = mpsc::channel::<String>(256);
    let progress_tx = tx.make_writer_ext(Some(1));
    let forward = tokio::spawn(async move {
        let mut w = progress_tx;
        while let Some(l) = prx.recv().await {
            let _ = w.write_all(format!("{l}\n").as_bytes()).await;
        }
        let _ = w.flush().await;
    });
    let call = Call {
        ctx: &ctx,
        progress: &ptx,
        gone: &gone,
    };
    let result = if verb == ReceiveReq::VERB {
        // The tarball is stdin; the request is on the exec line.
        match ReceiveReq::from_args(&argv[1..]) {
            Some(r) => receive(&ctx, rx, r)
                .await
                .and_then(|r| serde_json::to_value(r).map_err(|e| e.to_string())),
            None => Err("usage: receive APP RELEASE SHA256".into()),
        }
    } else {
        dispatch!(
            verb.as_str(),
            &call,
            &mut rx,
            [
                StatusReq,
                PrepareReq,
                SwitchReq,
                RetireReq,
                AbortReq,
                ReleasePhaseReq,
                GcReq,
                PurgeReq,
                RestoreDataReq,
            ]
        )
    };
    drop(ptx);
    let _ = forward.await;
    finish(&tx, result).await;
}

impl Handle for StatusReq {
    async fn handle(self, call: &Call<'_>) -> Result<StatusReply, String> {
        status(call.ctx).await
    }
}

impl Handle for PrepareReq {
    async fn handle(self, call: &Call<'_>) -> Result<PrepareReply, String> {
        prepare(call.ctx, self, call.progress).await
    }
}

impl Handle for SwitchReq {
    async fn handle(self, call: &Call<'_>) -> Result<SwitchReply, String> {
        let root = &call.ctx.root;
        let previous = root.current(&self.app);
        root.switch(&self.app, &self.release)
            .map_err(|e| e.to_string())?;
        Ok(SwitchReply { previous })
    }
}

impl Handle for RetireReq {
    async fn handle(self, call: &Call<'_>) -> Result<StoppedReply, String> {
        // Everything but what this rollout started (of the types it restarted).
        stop_where(call.ctx, &self.app, |p| {
            (p.release != self.release || p.generation != self.generation)
                && (self.only.is_empty() || self.only.contains(&p.ptype))
        })
        .await
    }
}

impl Handle for AbortReq {
    async fn handle(self, call: &Call<'_>) -> Result<StoppedReply, String> {
        stop_where(call.ctx, &self.app, |p| {
            p.release == self.release && p.generation == self.generation
        })
        .await
    }
}

impl Handle for ReleasePhaseReq {
    async fn handle(self, call: &Call<'_>) -> Result<CodeReply, String> {
        // A release command whose controller went away stops (dropping the call removes its
        // container): nobody would act on its outcome, and the restarted controller may run
        // it again.
        tokio::select! {
            res = release_phase(call.ctx, self, call.progress) => res,
            _ = call.gone.cancelled() => {
                tracing::warn!("the controller's connection ended; release command stopped");
                Err("the controller went away; release command stopped".into())
            }
        }
    }
}

impl Handle for GcReq {
    async fn handle(self, call: &Call<'_>) -> Result<Vec<String>, String> {
        let ctx = call.ctx;
        let removed = ctx
            .root
            .gc(&self.app, &self.keep)
            .map_err(|e| e.to_string())?;
        // Scratch dirs of containers that went without us (a crash, a cut session).
        if let Ok(docker) = ctx.docker().await {
            runtime::sweep_scratch(docker, &ctx.root, &ctx.instance, &self.app).await;
        }
        Ok(removed)
    }
}

impl Handle for PurgeReq {
    async fn handle(self, call: &Call<'_>) -> Result<PurgeReply, String> {
        purge(call.ctx, self).await
    }
}

impl Handle for RestoreDataReq {
    async fn handle(self, call: &Call<'_>) -> Result<RestoreReply, String> {
        match call.ctx.root.restore_data(&self.app, &self.label) {
            Ok(()) => Ok(RestoreReply { restored: true }),
            Err(AgentError::NoSnapshot { .. }) if self.if_exists => {
                Ok(RestoreReply { restored: false })
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

async fn status(ctx: &AgentCtx) -> Result<StatusReply, String> {
    let mut reply = StatusReply {
        instance: ctx.instance.clone(),
        capacity: Some(ctx.capacity),
        ..Default::default()
    };
    let apps_dir = ctx.root.root().join("apps");
    if let Ok(rd) = std::fs::read_dir(&apps_dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !crate::names::valid_node_app(&name) {
                continue;
            }
            reply.apps.insert(
                name.clone(),
                AppStatus {
                    current: ctx.root.current(&name),
                    releases: ctx.root.releases(&name),
                    processes: vec![],
                },
            );
        }
    }
    if let Ok(docker) = ctx.docker().await {
        for p in runtime::list(docker, &ctx.instance, None)
            .await
            .map_err(|e| e.to_string())?
        {
            reply
                .apps
                .entry(p.app.clone())
                .or_default()
                .processes
                .push(p);
        }
    }
    Ok(reply)
}

async fn receive(
    ctx: &AgentCtx,
    mut rx: russh::ChannelReadHalf,
    req: ReceiveReq,
) -> Result<ReceiveReply, String> {
    // Channel data goes to the blocking side chunk by chunk as it arrives, which hashes and
    // extracts it: one copy and one hand-off per packet, not a pipe's two.
    let (tx, chunks) = mpsc::channel::<Vec<u8>>(64);
    let pump = tokio::spawn(async move {
        while let Some(msg) = rx.wait().await {
            let data = match msg {
                russh::ChannelMsg::Data { data } => data,
                russh::ChannelMsg::Eof | russh::ChannelMsg::Close => break,
                _ => continue,
            };
            if tx.send(data.to_vec()).await.is_err() {
                break;
            }
        }
    });
    let root = ctx.root.clone();
    let res = tokio::task::spawn_blocking(move || {
        root.receive(
            &req.app,
            &req.release,
            &req.sha256,
            ChunkReader::new(chunks),
        )
    })
    .await
    .map_err(|e| e.to_string())?;
    pump.abort();
    let received = res.map_err(|e| e.to_string())?;
    Ok(ReceiveReply { received })
}

/// The blocking end of [`receive`]'s hand-off: the chunks, read in order, then EOF.
struct ChunkReader {
    chunks: mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl ChunkReader {
    fn new(chunks: mpsc::Receiver<Vec<u8>>) -> Self {
        ChunkReader {
            chunks,
            cur: Vec::new(),
            pos: 0,
        }
    }
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.chunks.blocking_recv() {
                Some(c) => (self.cur, self.pos) = (c, 0),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

async fn prepare(
    ctx: &AgentCtx,
    req: PrepareReq,
    progress: &mpsc::Sender<String>,
) -> Result<PrepareReply, String> {
    let lock = ctx.app_lock(&req.app);
    let _g = lock.lock().await;
    if !ctx.root.has_release(&req.app, &req.release) {
        return Err(format!(
            "release {} of {} is not on this node",
            req.release, req.app
        ));
    }
    let publish_ip = match req
        .publish_ip
        .as_deref()
        .map(str::parse::<std::net::IpAddr>)
    {
        None => None,
        Some(Ok(ip)) => Some(ip),
        Some(Err(_)) => {
            return Err(format!(
                "publish_ip {:?} is not an IP address",
                req.publish_ip.unwrap_or_default()
            ))
        }
    };
    let docker = ctx.docker().await?;
    let mut started: Vec<runtime::Running> = vec![];
    let env: Vec<(String, String)> = req.env.clone().into_iter().collect();
    let mut failure = None;
    'outer: for g in &req.processes {
        let indices: Vec<u32> = if g.indices.is_empty() {
            (1..=g.count).collect()
        } else {
            g.indices.clone()
        };
        for index in indices {
            let spec = ProcessSpec {
                instance: ctx.instance.clone(),
                app: req.app.clone(),
                release: req.release.clone(),
                ptype: g.ptype.clone(),
                index,
                command: g.command.clone(),
                env: env.clone(),
                image: req.image.clone(),
                memory: req.memory,
                cpu: req.cpu,
                generation: req.generation,
                uid: req.uid,
                publish_ip,
            };
            match runtime::start(docker, &ctx.root, &spec).await {
                Ok(r) => started.push(r),
                Err(e) => {
                    failure = Some(format!("cannot start {}.{index}: {e}", g.ptype));
                    break 'outer;
                }
            }
        }
    }
    if failure.is_none() {
        let checks = if req.checks.is_empty() {
            vec![req.health.clone()]
        } else {
            req.checks.clone()
        };
        'web: for r in started.iter().filter(|r| r.ptype == "web") {
            for h in &checks {
                let _ = progress
                    .send(format!(
                        "health-checking web.{} on port {} (GET {})",
                        r.index, r.port, h.path
                    ))
                    .await;
                let probe = runtime::Probe {
                    path: &h.path,
                    timeout: Duration::from_millis(h.timeout_ms.max(100)),
                    attempts: h.attempts.max(1),
                    interval: Duration::from_millis(h.interval_ms.max(10)),
                    initial_delay: Duration::from_millis(h.initial_delay_ms),
                    content: h.content.as_deref(),
                };
                let alive = || still_up(docker, &r.container, &r.ptype, r.index);
                if let Err(e) = runtime::check_health(r.port, &probe, alive).await {
                    // Why, in the app's own words: its last lines, before the verdict.
                    let lines = runtime::last_lines(docker, &r.container, 20).await;
                    if !lines.is_empty() {
                        let _ = progress
                            .send(format!("web.{}'s last log lines:", r.index))
                            .await;
                        for l in lines {
                            let _ = progress.send(format!("  | {l}")).await;
                        }
                    }
                    let setting = if h.setting.is_empty() {
                        "healthcheck in magrathea.yml".to_string()
                    } else {
                        h.setting.clone()
                    };
                    failure = Some(format!(
                        "web.{} failed its health check ({e}); to give it longer or check \
                         another path, set {setting}",
                        r.index
                    ));
                    break 'web;
                }
            }
        }
    }
    if failure.is_none() && started.iter().any(|r| r.ptype != "web") {
        tokio::time::sleep(Duration::from_millis(req.grace_ms)).await;
        let live = runtime::list(docker, &ctx.instance, Some(&req.app))
            .await
            .map_err(|e| e.to_string())?;
        for r in started.iter().filter(|r| r.ptype != "web") {
            let ok = live
                .iter()
                .any(|p| p.container == r.container && p.state == "running" && p.restarts == 0);
            if !ok {
                failure = Some(format!(
                    "{}.{} did not stay up through the grace period",
                    r.ptype, r.index
                ));
                break;
            }
        }
    }
    if let Some(f) = failure {
        for r in &started {
            runtime::stop(docker, &r.container, Duration::from_secs(5)).await;
        }
        return Err(f);
    }
    Ok(PrepareReply {
        processes: started
            .into_iter()
            .map(|r| Started {
                container: r.container,
                ptype: r.ptype,
                index: r.index,
                port: r.port,
            })
            .collect(),
    })
}

/// Ok while the process runs and has not been restarted; else what happened to it.
async fn still_up(
    docker: &crate::docker::Docker,
    container: &str,
    ptype: &str,
    index: u32,
) -> Result<(), String> {
    let Ok(info) = docker
        .raw()
        .inspect_container(
            container,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
    else {
        return Err(format!(
            "{ptype}.{index} is gone (its container was removed)"
        ));
    };
    let restarts = info.restart_count.unwrap_or(0);
    let state = info.state.unwrap_or_default();
    let running = state.running.unwrap_or(false);
    let code = state.exit_code.unwrap_or(0);
    if state.oom_killed.unwrap_or(false) {
        return Err(format!("{ptype}.{index} was killed: out of memory"));
    }
    if restarts > 0 {
        // The exit code is gone by now: the restart reset it.
        return Err(format!(
            "{ptype}.{index} exited before answering (restarted {restarts} time{} since)",
            if restarts == 1 { "" } else { "s" }
        ));
    }
    if !running {
        return Err(format!(
            "{ptype}.{index} exited (code {code}) before answering"
        ));
    }
    Ok(())
}

async fn stop_where(
    ctx: &AgentCtx,
    app: &str,
    pick: impl Fn(&ProcInfo) -> bool,
) -> Result<StoppedReply, String> {
    crate::names::check_node_app(app).map_err(|e| e.to_string())?;
    let docker = ctx.docker().await?;
    let procs = runtime::list(docker, &ctx.instance, Some(app))
        .await
        .map_err(|e| e.to_string())?;
    let mut stopped = 0;
    for p in procs.iter().filter(|p| pick(p)) {
        runtime::stop(docker, &p.container, Duration::from_secs(10)).await;
        stopped += 1;
    }
    Ok(StoppedReply { stopped })
}

/// Stops every process of every environment of an app, then removes all it left on this
/// node (releases, `current`, data, snapshots, process logs), so nothing of it is there for a
/// later app of the same name.
async fn purge(ctx: &AgentCtx, req: PurgeReq) -> Result<PurgeReply, String> {
    crate::names::check("app", &req.app).map_err(|e| e.to_string())?;
    let docker = ctx.docker().await?;
    let mut stopped = 0;
    for p in runtime::list(docker, &ctx.instance, None)
        .await
        .map_err(|e| e.to_string())?
    {
        if crate::names::node_app_of(&p.app) == Some(req.app.as_str()) {
            runtime::stop(docker, &p.container, Duration::from_secs(10)).await;
            stopped += 1;
        }
    }
    let purged = ctx
        .root
        .purge(&req.app, req.keep_data)
        .map_err(|e| e.to_string())?;
    if let Some(uid) = req.uid {
        crate::isolation::remove_network(docker.raw(), &ctx.instance, uid).await;
    }
    Ok(PurgeReply { stopped, purged })
}

async fn release_phase(
    ctx: &AgentCtx,
    req: ReleasePhaseReq,
    progress: &mpsc::Sender<String>,
) -> Result<CodeReply, String> {
    crate::isolation::check_uid(req.uid).map_err(|e| e.to_string())?;
    let kind = req.kind.as_deref().unwrap_or("release");
    if !matches!(kind, "release" | "predeploy" | "postdeploy") {
        return Err(format!(
            "unknown one-off kind {:?}",
            kind.chars().take(40).collect::<String>()
        ));
    }
    if let Some(label) = &req.snapshot {
        ctx.root
            .snapshot_data(&req.app, label, req.uid)
            .map_err(|e| e.to_string())?;
    }
    let docker = ctx.docker().await?;
    let spec = ProcessSpec {
        instance: ctx.instance.clone(),
        app: req.app.clone(),
        release: req.release.clone(),
        ptype: kind.into(),
        index: 1,
        command: req.command.clone(),
        env: req.env.clone().into_iter().collect(),
        image: req.image.clone(),
        memory: req.memory,
        cpu: req.cpu,
        generation: 0,
        uid: req.uid,
        publish_ip: None,
    };
    let code = runtime::run_once(
        docker,
        &ctx.root,
        &spec,
        progress.clone(),
        Duration::from_millis(req.timeout_ms),
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(CodeReply { code })
}
