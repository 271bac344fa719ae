//! Where an environment's processes run, as the rollout sees it: a list of places, each of
//! which can take a release, start its processes beside the old ones, switch, and let the
//! old ones go. The phases in `rollout.rs` only ever talk to a [`Place`], and run one call on
//! every place at once with [`fan_out`].
//!
//! Two backends: the SSH agents (`agents.rs`), one place per node, and a Docker Swarm
//! cluster (`swarm.rs`), one place for the whole cluster, chosen per environment in
//! [`backend_for`] (`cluster:` in magrathea.yml) without touching the phases. The request and reply types
//! are the agent protocol's (`node::proto`): they describe a release to run (image,
//! processes, env, limits, health checks), which is what any backend needs.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{EnvTarget, Host};
use crate::node::proto::{
    release_name, AbortReq, GcReq, PrepareReply, PrepareReq, ReleasePhaseReq, RestoreDataReq,
    RetireReq, SwitchReq,
};
use crate::sink::Sink;

pub(crate) type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a place says went wrong, as the pusher reads it (`node n1: ...`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub(crate) struct PlaceError(pub(crate) String);

impl From<crate::node::client::NodeError> for PlaceError {
    fn from(e: crate::node::client::NodeError) -> Self {
        PlaceError(e.to_string())
    }
}

/// What a release needs to reach a place before anything of it runs.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    /// The environment's name on the place (`app` or `app.env`).
    pub app: String,
    /// The release's name (`v3-<sha12>`).
    pub release: String,
    pub tarball: std::path::PathBuf,
    pub sha256: String,
    /// Restore the data snapshot taken before this version's release phase.
    pub restore: Option<i64>,
}

/// How much more of an app a place takes.
#[derive(Debug, Clone)]
pub(crate) struct Room {
    /// How many more processes of the asked size.
    pub free: i64,
    /// Why, in words (`n1: 512 MiB of 2048 MiB free`).
    pub words: String,
}

/// One place an environment's processes run (a node). Every call stands alone; a place
/// may remember what it learned in [`Place::room`] for the calls of the same rollout.
pub(crate) trait Place: Send + Sync {
    fn name(&self) -> &str;
    /// How many more processes of `memory` bytes (and `cpu` CPUs) of `app` fit; `app`'s own
    /// processes do not count (the rollout replaces them).
    fn room<'a>(
        &'a self,
        app: &'a str,
        memory: i64,
        cpu: f64,
    ) -> BoxFut<'a, Result<Room, PlaceError>>;
    /// The place gets the release (verified) unless it has it, and restores data when
    /// asked. Nothing starts. Progress lines go to `progress`.
    fn stage<'a>(
        &'a self,
        d: &'a Delivery,
        progress: mpsc::Sender<String>,
    ) -> BoxFut<'a, Result<(), PlaceError>>;
    /// Runs a one-off (release command, predeploy, postdeploy) to its end; its output lines
    /// go to `lines`; its exit code.
    fn one_off<'a>(
        &'a self,
        req: &'a ReleasePhaseReq,
        lines: mpsc::Sender<String>,
    ) -> BoxFut<'a, Result<i64, PlaceError>>;
    /// Puts the app's data back to a snapshot; false when there was none (`if_exists`).
    fn restore_data<'a>(&'a self, req: RestoreDataReq) -> BoxFut<'a, Result<bool, PlaceError>>;
    /// Stages (see [`Place::stage`]), then starts the release's processes beside the old
    /// ones and health-checks them.
    fn prepare<'a>(
        &'a self,
        req: PrepareReq,
        d: &'a Delivery,
        progress: mpsc::Sender<String>,
    ) -> BoxFut<'a, Result<PrepareReply, PlaceError>>;
    /// Makes the release current; the one it replaces.
    fn switch<'a>(&'a self, to: SwitchReq) -> BoxFut<'a, Result<Option<String>, PlaceError>>;
    /// Stops what a `prepare` of this generation started.
    fn abort<'a>(&'a self, what: AbortReq) -> BoxFut<'a, Result<(), PlaceError>>;
    /// Stops the processes of every other release (of `only` types, when given).
    fn retire<'a>(&'a self, keep: RetireReq) -> BoxFut<'a, Result<(), PlaceError>>;
    /// Deletes unpacked releases but those kept.
    fn gc<'a>(&'a self, req: GcReq) -> BoxFut<'a, Result<(), PlaceError>>;
    /// Where the router reaches the web processes `prepare` started.
    fn upstreams(&self, started: &PrepareReply) -> Vec<SocketAddr>;
    /// The address the router reaches this place's published ports on.
    fn publish_ip(&self) -> Option<String>;
}

/// Where an environment's processes run.
pub(crate) trait Backend: Send + Sync {
    /// The places of an environment, in a stable order (placement numbers them so).
    fn places(&self) -> &[Arc<dyn Place>];
}

/// The backend an environment deploys to: the cluster it names (`cluster:`), else the
/// nodes its selector picks. A cluster that does not exist is no place at all (the
/// rollout says there is nowhere to run).
pub(crate) fn backend_for<H: Host>(
    host: &Arc<H>,
    target: &EnvTarget,
) -> Result<Box<dyn Backend>, crate::store::StoreError> {
    if let Some(name) = &target.cluster {
        let row = host
            .nodes()?
            .into_iter()
            .find(|n| n.is_cluster() && &n.name == name);
        return Ok(match row {
            Some(row) => Box::new(super::swarm::Cluster::new(
                host.as_ref(),
                row,
                target.placement.clone(),
            )),
            None => Box::new(super::agents::Agents::new(host.as_ref(), vec![])),
        });
    }
    let nodes = host.target_nodes(&target.selector)?;
    Ok(Box::new(super::agents::Agents::new(host.as_ref(), nodes)))
}

/// Runs `call` on every place at once. Lines a call sends on its progress channel reach the
/// pusher as they come; each result goes to `done` as it comes in (it may print), and the
/// results are returned in the order they finished. A panicked call is an internal error.
pub(crate) async fn fan_out<T, F>(
    places: &[Arc<dyn Place>],
    out: Option<&mut Sink>,
    call: F,
    mut done: impl FnMut(&dyn Place, &Result<T, PlaceError>) -> Option<String>,
) -> Vec<(Arc<dyn Place>, Result<T, PlaceError>)>
where
    T: Send + 'static,
    F: Fn(Arc<dyn Place>, mpsc::Sender<String>) -> BoxFut<'static, Result<T, PlaceError>>,
{
    let mut set = JoinSet::new();
    let (ptx, mut prx) = mpsc::channel::<String>(256);
    for (i, place) in places.iter().enumerate() {
        let fut = std::panic::AssertUnwindSafe(call(place.clone(), ptx.clone()));
        set.spawn(async move {
            let r = match fut.catch_unwind().await {
                Ok(r) => r,
                Err(_) => Err(PlaceError("internal error: a node call panicked".into())),
            };
            (i, r)
        });
    }
    drop(ptx);
    let mut results = vec![];
    let mut out = out;
    loop {
        tokio::select! {
            Some(line) = prx.recv() => {
                if let Some(o) = out.as_deref_mut() {
                    o.line(line).await;
                }
            }
            r = set.join_next() => match r {
                None => break,
                Some(r) => {
                    // Panics are caught above; a cancelled task only at runtime shutdown.
                    let Ok((i, r)) = r else { continue };
                    let line = done(places[i].as_ref(), &r);
                    if let (Some(o), Some(l)) = (out.as_deref_mut(), line) {
                        o.line(l).await;
                    }
                    results.push((places[i].clone(), r));
                }
            }
        }
    }
    while let Ok(line) = prx.try_recv() {
        if let Some(o) = out.as_deref_mut() {
            o.line(line).await;
        }
    }
    results
}

/// Stops what this rollout started, everywhere it started.
pub(crate) async fn abort_all(prepared: &[(Arc<dyn Place>, PrepareReply)], what: AbortReq) {
    let places: Vec<Arc<dyn Place>> = prepared.iter().map(|(p, _)| p.clone()).collect();
    fan_out(
        &places,
        None,
        |p, _| {
            let what = what.clone();
            Box::pin(async move { p.abort(what).await })
        },
        |_, _| None,
    )
    .await;
}

/// Keep the newest releases unpacked (for rollback), plus the live and previous ones.
pub(crate) async fn gc_places(
    store: &crate::store::Store,
    places: &[Arc<dyn Place>],
    app: &str,
    napp: &str,
    mut keep: Vec<String>,
) {
    let recent: Vec<String> = store
        .list_releases(app)
        .unwrap_or_default()
        .iter()
        .take(5)
        .map(|r| release_name(r.version, &r.sha256))
        .collect();
    keep.extend(recent);
    // In parallel, like the other phases: one node at a time made a rollout's tail grow
    // with the number of nodes.
    let req = GcReq {
        app: napp.to_string(),
        keep,
    };
    fan_out(
        places,
        None,
        |p, _| {
            let req = req.clone();
            Box::pin(async move { p.gc(req).await })
        },
        |_, _| None,
    )
    .await;
}
