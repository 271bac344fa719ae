//! Rollouts: a release goes live on every target node of an environment, or on none.
//!
//! The phases live in `rollout.rs` (plan, release phase, prepare, switch, go live, retire),
//! how many processes run where in `plan.rs`, and where they run behind the `Place` and
//! `Backend` traits (`backend.rs`), implemented today by the SSH agents (`agents.rs`).
//! This file is the door: [`rollout`] takes the deploy lock and records the deploy.

mod agents;
mod backend;
pub mod envs;
mod plan;
mod rollout;
mod swarm;

use std::collections::BTreeMap;
use std::sync::Arc;

use tracing::Instrument;

use crate::node::client::NodeClient;
use crate::paths::DataDir;
use crate::release::Manifest;
use crate::router::Router;
use crate::sink::Sink;
use crate::store::{NodeRow, ReleaseRow, Store, StoreError};
pub use agents::restore_routes;
pub use envs::EnvTarget;
pub use plan::{formation, place, Count, Placement};
use rollout::Rollout;
pub use swarm::follow as follow_clusters;

/// What a rollout needs from the server around it (the controller implements it): the data
/// dir, the store, the router, the deploy locks, sealed config and the nodes. Deploys never
/// reach further up.
pub trait Host: Send + Sync + 'static {
    fn data(&self) -> &DataDir;
    fn store(&self) -> &Store;
    fn router(&self) -> &Router;
    /// Held for the length of one rollout of an (app, environment).
    fn deploy_lock(&self, app: &str, env: &str) -> Arc<tokio::sync::Mutex<()>>;
    /// An environment's config vars, decrypted.
    fn config(&self, app: &str, env: &str) -> Result<BTreeMap<String, String>, DeployError>;
    /// Seals a config value (or a whole config map) for the store.
    fn seal(&self, plain: &[u8]) -> Vec<u8>;
    /// The uid an app's processes run as.
    fn app_uid(&self, app: &str) -> Result<u32, DeployError>;
    /// The memory of a process whose magrathea.yml asks for none.
    fn process_memory(&self) -> i64;
    /// Every node, by name.
    fn nodes(&self) -> Result<Vec<NodeRow>, StoreError>;
    /// The nodes an environment's label selector picks.
    fn target_nodes(&self, selector: &BTreeMap<String, String>)
        -> Result<Vec<NodeRow>, StoreError>;
    /// A client for a node (host key pinned).
    fn node_client(&self, node: &NodeRow) -> NodeClient;
    /// Every service linked to `app` in `env` reachable from the processes on each of
    /// `nodes` (names), whose stack is `image`: a forwarder where the service does not run.
    fn reach_services<'a>(
        &'a self,
        app: &'a str,
        env: &'a str,
        nodes: &'a [String],
        image: &'a str,
    ) -> impl std::future::Future<Output = Result<(), DeployError>> + Send + 'a;
    /// Backs up every service linked to `app` in `env`, each backup tied to `version`
    /// (taken before its release command: the data as the release before it left it), so
    /// `rollback --with-data` can put it back. Progress lines to `out`; an error fails the
    /// deploy before the release command runs.
    fn backup_linked<'a>(
        &'a self,
        app: &'a str,
        env: &'a str,
        version: i64,
        out: &'a mut Sink,
    ) -> impl std::future::Future<Output = Result<(), DeployError>> + Send + 'a;
}

/// Why a rollout failed: what the pusher is told and what is recorded.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Told to the pusher as it happened (a node's answer, a failed release command, no
    /// room, no node).
    #[error("{0}")]
    Failed(String),
    #[error("the pusher went away")]
    PusherGone,
    #[error("bad manifest: {0}")]
    BadManifest(#[source] serde_json::Error),
    #[error("cannot record v{version} as live: {source}")]
    NotRecorded {
        version: i64,
        #[source]
        source: StoreError,
    },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(#[from] tokio::task::JoinError),
}

/// What a rollout comes to.
pub type DeployResult = Result<(), DeployError>;

/// The router key of an app in an environment: `app` for production, `app-env` otherwise.
pub fn route_key(app: &str, env: &str) -> String {
    if env == "production" {
        app.to_string()
    } else {
        format!("{app}-{env}")
    }
}

/// The name a node knows one environment of an app by: `app` for production, `app.env`
/// otherwise (a dot never appears in an app name, so names never collide). Each has its own
/// releases, `current`, processes and data dir on the node.
pub fn node_app(app: &str, env: &str) -> String {
    if env == "production" {
        app.to_string()
    } else {
        format!("{app}.{env}")
    }
}

/// The counts an environment runs the release at (not stopped, no scale pending): what
/// `ps` shows and what `scale` compares against.
pub async fn current_formation<H: Host>(
    host: &Arc<H>,
    release: &ReleaseRow,
    env: &str,
) -> Result<BTreeMap<String, Count>, DeployError> {
    let manifest: Manifest =
        serde_json::from_str(&release.manifest).map_err(DeployError::BadManifest)?;
    let tarball = host.data().releases(&release.app).join(&release.file);
    let (meta, target) = {
        let (t, data, r, e) = (
            tarball,
            host.data().clone(),
            release.clone(),
            env.to_string(),
        );
        tokio::task::spawn_blocking(move || {
            (
                envs::meta_of_release(&t),
                envs::target_of_release(&data, &r, &e),
            )
        })
        .await?
    };
    let scaled = host.store().formation(&release.app, env)?;
    Ok(formation(
        manifest.processes.keys(),
        &scaled,
        &target.scale,
        &meta.app_json.unwrap_or_default().formation(),
    ))
}

pub async fn rollout<H: Host>(
    host: &Arc<H>,
    release: &ReleaseRow,
    target: &EnvTarget,
    who: &str,
    out: &mut Sink,
    opts: RolloutOptions,
) -> DeployResult {
    let app = &release.app;
    let lock = host.deploy_lock(app, &target.env);
    let held = match lock.clone().try_lock_owned() {
        Ok(g) => g,
        Err(_) => {
            out.line(format!(
                "-----> another deploy of {app} to {} is running; waiting",
                target.env
            ))
            .await;
            lock.lock_owned().await
        }
    };
    let deploy_id = host
        .store()
        .start_deploy(app, &target.env, release.version, who)?;
    // Its output also goes to the app's event log (`logs`), config values masked.
    let secrets = opts
        .config
        .clone()
        .or_else(|| host.config(app, &target.env).ok())
        .unwrap_or_default();
    let events =
        crate::eventlog::EventLog::open(&host.data().logs(), app, "deploy", release.version)
            .mask(secrets.values());
    let outer_events = out.set_tee(Some(Box::new(events)));
    let span = tracing::info_span!(
        "rollout",
        deploy = deploy_id,
        app = %app,
        env = %target.env,
        release = release.version
    );
    let result = Rollout {
        host,
        release,
        target,
        opts: &opts,
        generation: deploy_id as u64,
        out: &mut *out,
    }
    .run(held)
    .instrument(span)
    .await;
    out.set_tee(outer_events);
    let (status, detail) = match &result {
        Ok(()) => ("succeeded", String::new()),
        Err(e) => ("failed", e.to_string()),
    };
    let _ = host.store().finish_deploy(deploy_id, status, &detail);
    result
}

#[derive(Debug, Clone, Default)]
pub struct RolloutOptions {
    /// Restore the data snapshot taken before this version's release phase (rollback --with-data).
    pub restore_data_from: Option<i64>,
    /// Use this config instead of the environment's current one, and make it current on
    /// success (rollback restores the config that went with a release).
    pub config: Option<BTreeMap<String, String>>,
    /// Process counts to run, merged over the environment's; recorded on success (`scale`).
    pub formation: Option<BTreeMap<String, u32>>,
    /// Start (and retire) only this process type; the others keep running (`restart web`).
    pub only: Option<String>,
    /// Stop (true: run nothing) or start (false) the environment; recorded on success.
    pub stopped: Option<bool>,
    /// The release command already ran when this release went out (rollback, scale,
    /// restart, stop, start): not again.
    pub skip_release_phase: bool,
    /// Return once the new release serves; the old processes drain and stop in the
    /// background, still under the deploy lock (rollback: back fast, clean up after).
    pub background_tail: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(route_key("web", "production"), "web");
        assert_eq!(route_key("web", "staging"), "web-staging");
        assert_eq!(node_app("web", "production"), "web");
        assert_eq!(node_app("web", "staging"), "web.staging");
    }
}
