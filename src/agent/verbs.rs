//! The calls (`node::proto::Request`): the dispatcher, keyed by the request types, and what
//! each verb does. One exec per call: the request on stdin, progress lines on stderr, one
//! JSON reply on stdout.

use std::sync::Arc;
use std::time::Duration;

use russh::server::Msg;
use russh::{Channel, ChannelWriteHalf};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::error::AgentError;
use super::runtime::{self, ProcessSpec};
use super::swarm;
use super::AgentCtx;
use crate::node::proto::*;

/// The reply is always one JSON document on stdout (`{"error": ...}` on failure), so the
/// client never mistakes a progress line on stderr for the verdict.
async fn finish(tx: &ChannelWriteHalf<Msg>, result: Result<Value, AgentError>) {
    let (code, doc) = match result {
        Ok(v) => (0, v),
        Err(e) => (
            1,
            serde_json::json!({ "error": e.to_string().replace('\n', " ") }),
        ),
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
    /// Cancelled when the caller's connection ends (see `conn::AgentConn`).
    gone: &'a CancellationToken,
}

/// The agent's side of a [`Request`]: what it does with one.
trait Handle: Request {
    fn handle(
        self,
        call: &Call<'_>,
    ) -> impl std::future::Future<Output = Result<Self::Reply, AgentError>> + Send;
}

fn reply_json(reply: impl serde::Serialize) -> Result<Value, AgentError> {
    serde_json::to_value(reply).map_err(|e| AgentError::Internal(e.to_string()))
}

/// Reads an `R` from stdin, handles it, and returns its reply as JSON.
async fn answer<R: Handle>(
    call: &Call<'_>,
    rx: &mut russh::ChannelReadHalf,
) -> Result<Value, AgentError> {
    let req: R =
        decode(&read_stdin(rx).await).map_err(|e| AgentError::BadRequest(e.to_string()))?;
    let reply = req.handle(call).await?;
    reply_json(reply)
}

/// The dispatcher: each verb is its request type's `VERB`, handled by its `Handle` impl.
macro_rules! dispatch {
    ($verb:expr, $call:expr, $rx:expr, [$($req:ty),* $(,)?]) => {
        match $verb {
            $(<$req as Request>::VERB => answer::<$req>($call, $rx).await,)*
            other => Err(AgentError::UnknownVerb(other.chars().take(40).collect())),
        }
    };
}

pub(super) async fn exec(
    ctx: Arc<AgentCtx>,
    ch: Channel<Msg>,
    line: String,
    gone: CancellationToken,
) {
    let (mut rx, tx) = ch.split();
    let argv = shell_words::split(&line).unwrap_or_default();
    let verb = argv.first().cloned().unwrap_or_default();
    if verb == LogsReq::VERB {
        // Streams JSON lines (not one reply) until done or the channel closes.
        let docker = ctx.docker().await.map_err(|e| e.to_string());
        let swarm = ctx.swarm.is_some();
        super::logs::serve(docker, &ctx.root, &ctx.instance, swarm, rx, tx).await;
        return;
    }
    if verb == ServiceDumpReq::VERB {
        // stdout is the dump itself: the verdict is the exit status, a failure's reason the
        // last stderr line.
        let res = match ServiceDumpReq::from_args(&argv[1..]) {
            Some(r) => super::svcbackup::dump(&ctx, r, &tx).await,
            None => Err(AgentError::Usage("service-dump KEY KIND NAME")),
        };
        let code = match res {
            Ok(()) => 0,
            Err(e) => {
                let mut w = tx.make_writer_ext(Some(1));
                let _ = w.write_all(format!("{e}\n").as_bytes()).await;
                let _ = w.flush().await;
                1
            }
        };
        let _ = tx.exit_status(code).await;
        let _ = tx.eof().await;
        let _ = tx.close().await;
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
    let result = if verb == ServiceLoadReq::VERB {
        // The dump is stdin; the request is on the exec line.
        match ServiceLoadReq::from_args(&argv[1..]) {
            Some(r) => super::svcbackup::load(&ctx, r, &mut rx)
                .await
                .and_then(reply_json),
            None => Err(AgentError::Usage(
                "service-load KEY KIND NAME [keep|staged]",
            )),
        }
    } else if verb == ServiceVerifyReq::VERB {
        match ServiceVerifyReq::from_args(&argv[1..]) {
            Some(r) => super::svcverify::verify(&ctx, r, &mut rx)
                .await
                .and_then(reply_json),
            None => Err(AgentError::Usage("service-verify KEY KIND NAME IMAGE UID")),
        }
    } else if verb == ReceiveReq::VERB {
        // The tarball is stdin; the request is on the exec line.
        match ReceiveReq::from_args(&argv[1..]) {
            Some(r) => super::receive::receive(&ctx, rx, r)
                .await
                .and_then(reply_json),
            None => Err(AgentError::Usage("receive APP RELEASE SHA256")),
        }
    } else {
        dispatch!(
            verb.as_str(),
            &call,
            &mut rx,
            [
                StatusReq,
                DiskReq,
                PrepareReq,
                SwitchReq,
                RetireReq,
                AbortReq,
                ReleasePhaseReq,
                GcReq,
                PurgeReq,
                RestoreDataReq,
                ServiceEnsureReq,
                ServiceUserReq,
                ServiceStatusReq,
                ServiceDestroyReq,
                ServiceSettleReq,
                ServiceLinksReq,
                ServiceForwardReq,
                ServiceUnforwardReq,
                ServiceSwapReq,
                ClusterReq,
            ]
        )
    };
    drop(ptx);
    let _ = forward.await;
    finish(&tx, result).await;
}

impl Handle for StatusReq {
    async fn handle(self, call: &Call<'_>) -> Result<StatusReply, AgentError> {
        match call.ctx.swarm {
            Some(_) => swarm::status(call.ctx).await,
            None => status(call.ctx).await,
        }
    }
}

impl Handle for DiskReq {
    async fn handle(self, call: &Call<'_>) -> Result<DiskReply, AgentError> {
        crate::names::check_node_app(&self.app)?;
        let root = call.ctx.root.clone();
        let du = crate::fsutil::du;
        tokio::task::spawn_blocking(move || DiskReply {
            releases: du(&root.app_dir(&self.app).join("releases")),
            data: du(&root.data_dir(&self.app)),
            logs: du(&root.logs_dir(&self.app)),
        })
        .await
        .map_err(|e| AgentError::Internal(format!("disk: {e}")))
    }
}

impl Handle for PrepareReq {
    async fn handle(self, call: &Call<'_>) -> Result<PrepareReply, AgentError> {
        match &call.ctx.swarm {
            Some(sw) => swarm::prepare(call.ctx, sw, self, call.progress).await,
            None => super::prepare::prepare(call.ctx, self, call.progress).await,
        }
    }
}

impl Handle for ClusterReq {
    async fn handle(self, call: &Call<'_>) -> Result<ClusterReply, AgentError> {
        match &call.ctx.swarm {
            Some(sw) => swarm::cluster_info(call.ctx, sw).await,
            None => Err(AgentError::Invalid(
                "this agent does not run a swarm (magrathea agent --swarm)".into(),
            )),
        }
    }
}

impl Handle for SwitchReq {
    async fn handle(self, call: &Call<'_>) -> Result<SwitchReply, AgentError> {
        let root = &call.ctx.root;
        let previous = root.current(&self.app);
        root.switch(&self.app, &self.release)?;
        Ok(SwitchReply { previous })
    }
}

impl Handle for RetireReq {
    async fn handle(self, call: &Call<'_>) -> Result<StoppedReply, AgentError> {
        // Everything but what this rollout started (of the types it restarted).
        if call.ctx.swarm.is_some() {
            return swarm::stop_where(call.ctx, &self.app, |l| {
                (l.release != self.release || l.generation != self.generation)
                    && (self.only.is_empty() || self.only.contains(&l.ptype))
            })
            .await;
        }
        stop_where(call.ctx, &self.app, |p| {
            (p.release != self.release || p.generation != self.generation)
                && (self.only.is_empty() || self.only.contains(&p.ptype))
        })
        .await
    }
}

impl Handle for AbortReq {
    async fn handle(self, call: &Call<'_>) -> Result<StoppedReply, AgentError> {
        if call.ctx.swarm.is_some() {
            return swarm::stop_where(call.ctx, &self.app, |l| {
                l.release == self.release && l.generation == self.generation
            })
            .await;
        }
        stop_where(call.ctx, &self.app, |p| {
            p.release == self.release && p.generation == self.generation
        })
        .await
    }
}

impl Handle for ReleasePhaseReq {
    async fn handle(self, call: &Call<'_>) -> Result<CodeReply, AgentError> {
        // A release command whose controller went away stops (dropping the call removes its
        // container): nobody would act on its outcome, and the restarted controller may run
        // it again.
        tokio::select! {
            res = release_phase(call.ctx, self, call.progress) => res,
            _ = call.gone.cancelled() => {
                tracing::warn!("the controller's connection ended; release command stopped");
                Err(AgentError::ControllerGone)
            }
        }
    }
}

impl Handle for GcReq {
    async fn handle(self, call: &Call<'_>) -> Result<Vec<String>, AgentError> {
        let ctx = call.ctx;
        let removed = ctx.root.gc(&self.app, &self.keep)?;
        if let Some(sw) = &ctx.swarm {
            sw.tarballs.gc(&self.app, &ctx.root.releases(&self.app));
        }
        // Scratch dirs of containers that went without us (a crash, a cut session).
        if let Ok(docker) = ctx.docker().await {
            runtime::sweep_scratch(docker, &ctx.root, &ctx.instance, &self.app).await;
        }
        Ok(removed)
    }
}

impl Handle for PurgeReq {
    async fn handle(self, call: &Call<'_>) -> Result<PurgeReply, AgentError> {
        purge(call.ctx, self).await
    }
}

impl Handle for RestoreDataReq {
    async fn handle(self, call: &Call<'_>) -> Result<RestoreReply, AgentError> {
        match call.ctx.root.restore_data(&self.app, &self.label) {
            Ok(()) => Ok(RestoreReply { restored: true }),
            Err(AgentError::NoSnapshot { .. }) if self.if_exists => {
                Ok(RestoreReply { restored: false })
            }
            Err(e) => Err(e),
        }
    }
}

impl Handle for ServiceEnsureReq {
    async fn handle(self, call: &Call<'_>) -> Result<ServiceStatus, AgentError> {
        super::services::ensure(call.ctx, self).await
    }
}

impl Handle for ServiceUserReq {
    async fn handle(self, call: &Call<'_>) -> Result<ServiceStatus, AgentError> {
        super::services::user(call.ctx, self).await
    }
}

impl Handle for ServiceStatusReq {
    async fn handle(self, call: &Call<'_>) -> Result<ServiceStatus, AgentError> {
        super::services::status(call.ctx, &self.key).await
    }
}

impl Handle for ServiceSettleReq {
    async fn handle(self, call: &Call<'_>) -> Result<LoadReply, AgentError> {
        super::svcbackup::settle(call.ctx, self).await
    }
}

impl Handle for ServiceLinksReq {
    async fn handle(self, call: &Call<'_>) -> Result<StoppedReply, AgentError> {
        super::tunnel::set(call.ctx, self).await
    }
}

impl Handle for ServiceForwardReq {
    async fn handle(self, call: &Call<'_>) -> Result<StoppedReply, AgentError> {
        super::forward::ensure(call.ctx, self).await
    }
}

impl Handle for ServiceUnforwardReq {
    async fn handle(self, call: &Call<'_>) -> Result<StoppedReply, AgentError> {
        super::forward::remove(call.ctx, self).await
    }
}

impl Handle for ServiceSwapReq {
    async fn handle(self, call: &Call<'_>) -> Result<LoadReply, AgentError> {
        super::svcbackup::swap(call.ctx, self).await
    }
}

impl Handle for ServiceDestroyReq {
    async fn handle(self, call: &Call<'_>) -> Result<StoppedReply, AgentError> {
        super::services::destroy(call.ctx, self).await
    }
}

async fn status(ctx: &AgentCtx) -> Result<StatusReply, AgentError> {
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
        reply.services_memory = super::services::reserved_memory(docker, &ctx.instance).await;
        for p in runtime::list(docker, &ctx.instance, None).await? {
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

async fn stop_where(
    ctx: &AgentCtx,
    app: &str,
    pick: impl Fn(&ProcInfo) -> bool,
) -> Result<StoppedReply, AgentError> {
    crate::names::check_node_app(app)?;
    let docker = ctx.docker().await?;
    let procs = runtime::list(docker, &ctx.instance, Some(app)).await?;
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
async fn purge(ctx: &AgentCtx, req: PurgeReq) -> Result<PurgeReply, AgentError> {
    crate::names::check("app", &req.app)?;
    let docker = ctx.docker().await?;
    let mut stopped = 0;
    if let Some(sw) = &ctx.swarm {
        stopped += super::swarm::purge(ctx, sw, &req.app).await?;
    }
    for p in runtime::list(docker, &ctx.instance, None).await? {
        if crate::names::node_app_of(&p.app) == Some(req.app.as_str()) {
            runtime::stop(docker, &p.container, Duration::from_secs(10)).await;
            stopped += 1;
        }
    }
    let purged = ctx.root.purge(&req.app, req.keep_data)?;
    if let Some(uid) = req.uid {
        crate::isolation::remove_network(docker.raw(), &ctx.instance, uid).await;
    }
    Ok(PurgeReply { stopped, purged })
}

async fn release_phase(
    ctx: &AgentCtx,
    req: ReleasePhaseReq,
    progress: &mpsc::Sender<String>,
) -> Result<CodeReply, AgentError> {
    crate::isolation::check_uid(req.uid)?;
    let kind = req.kind.as_deref().unwrap_or("release");
    if !matches!(kind, "release" | "predeploy" | "postdeploy") {
        return Err(AgentError::OneOffKind(kind.chars().take(40).collect()));
    }
    if let Some(label) = &req.snapshot {
        ctx.root.snapshot_data(&req.app, label, req.uid)?;
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
    .await?;
    Ok(CodeReply { code })
}
