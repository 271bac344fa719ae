//! The controller core: the one API every front end (SSH commands, git pushes, hooks) calls.
//! It owns the store, the data dir and the table of pushes in flight. It knows nothing of SSH.

mod access;
mod acme;
mod appenv;
mod apps;
mod appservices;
pub mod backups;
mod builds;
mod clusters;
pub mod edge;
mod formation;
pub mod hookserver;
mod hosts;
pub mod journal;
pub mod limits;
mod logs;
mod metrics;
mod nodes;
pub mod push;
pub mod queue;
mod reach;
mod releases;
pub mod routing;
mod schedule;
mod services;
mod sessions;
mod transfer;
pub mod usage;
pub mod view;

/// Where a long use case writes its progress lines.
pub use crate::sink::Sink;
pub use access::NewGrant;
pub use acme::renewals;
pub use appservices::{interval_words, mask_password};
pub use formation::{check_type, counts_text, MAX_PER_TYPE};
pub use limits::Limits;
pub use nodes::NewNode;
pub use schedule::scheduled_backups;
pub use services::{
    check_var, kind as service_kind, LinkView, ScheduleView, ServiceAsk, ServiceView,
};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::{AppRole, Grant, Identity};
use crate::git::service::GitService;
use crate::paths::DataDir;
use crate::store::{Audit, NodeRow, Store, StoreError};

#[derive(Debug, Error)]
pub enum CoreError {
    #[error("access denied: {0}")]
    Denied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    /// A request that cannot be done as asked (said in one line).
    #[error("{0}")]
    Invalid(String),
    /// A rollout that failed (nothing half-done: see `deploy`).
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Name(#[from] crate::names::InvalidName),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Other(#[from] anyhow::Error),
}

/// A push in flight: the hook proves it belongs to it with the token.
#[derive(Debug, Clone)]
pub struct PendingPush {
    pub token: String,
    pub app: String,
    pub identity: Identity,
    pub grant: Grant,
    /// Journal intents of this push answered yes: git moves their refs after the answer, so
    /// they are settled when its git process has ended (the guard drops), not before.
    answered: Vec<i64>,
}

/// Held for the length of one rollout of an (app, environment).
type DeployLock = Arc<tokio::sync::Mutex<()>>;

pub struct Core {
    data: DataDir,
    store: Store,
    pushes: Mutex<HashMap<String, PendingPush>>,
    shutdown: CancellationToken,
    /// Work that graceful shutdown waits for (pushes).
    tasks: TaskTracker,
    /// The binary git hooks call back into.
    bin: PathBuf,
    limits: Limits,
    /// Short id of this controller (from its data dir), so two controllers sharing a Docker
    /// engine never touch each other's containers.
    instance: String,
    router: Arc<crate::router::Router>,
    /// Seals config values at rest.
    sealer: crate::secrets::Sealer,
    /// The controller's client key, which agents accept.
    client_key: Arc<russh::keys::PrivateKey>,
    /// The built-in node, served by an in-process agent. It is a node like any other until
    /// `nodes:remove local` (which [`Core::local_removed`] remembers across restarts).
    local_node: Mutex<Option<NodeRow>>,
    deploy_locks: Mutex<HashMap<(String, String), DeployLock>>,
    queue: queue::BuildQueue,
    /// Traffic figures already written to the store (usage.rs).
    traffic_flushed: Mutex<usage::Flushed>,
    acme: acme::AcmeState,
    /// Wakes the scheduled backups' task when a deploy changed a schedule (schedule.rs).
    backups_wake: tokio::sync::Notify,
}

/// Removes the push from the in-flight table when the SSH side is done with it.
pub struct PushGuard {
    core: Arc<Core>,
    pub id: String,
    pub token: String,
}

impl Drop for PushGuard {
    fn drop(&mut self) {
        let gone = self
            .core
            .pushes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        // git has moved the refs of what was answered yes (or failed to): the journal sees
        // which, and moves any it did not.
        for id in gone.map(|p| p.answered).unwrap_or_default() {
            journal::settle_id(&self.core, id);
        }
    }
}

impl Core {
    pub fn open(
        data: DataDir,
        bin: PathBuf,
        limits: Limits,
        router: Arc<crate::router::Router>,
    ) -> anyhow::Result<Core> {
        let store = Store::open(&data.db())?;
        store.fail_orphan_deploys()?;
        let (client_key, _) =
            crate::keys::load_or_create(&data.client_key(), "magrathea-controller")?;
        let orphans = store.fail_orphan_builds()?;
        if orphans > 0 {
            tracing::warn!(
                orphans,
                "builds interrupted by the last shutdown marked failed"
            );
        }
        use sha2::Digest;
        let instance =
            hex::encode(&sha2::Sha256::digest(data.root().as_os_str().as_encoded_bytes())[..4]);
        let sealer = crate::secrets::Sealer::load_or_create(&data.root().join("config.key"))?;
        Ok(Core {
            instance,
            router,
            sealer,
            client_key: Arc::new(client_key),
            local_node: Mutex::new(None),
            deploy_locks: Mutex::default(),
            queue: queue::BuildQueue::new(limits.parallel),
            traffic_flushed: Mutex::default(),
            acme: Default::default(),
            backups_wake: Default::default(),
            limits,
            data,
            store,
            pushes: Mutex::new(HashMap::new()),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            bin,
        })
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn data(&self) -> &DataDir {
        &self.data
    }

    /// Short id of this controller (see the field).
    pub(crate) fn instance(&self) -> &str {
        &self.instance
    }

    pub(crate) fn client_key(&self) -> &Arc<russh::keys::PrivateKey> {
        &self.client_key
    }

    /// Cancelled when the server is shutting down.
    pub(crate) fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Work that graceful shutdown waits for.
    pub(crate) fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// The built-in node, once its in-process agent listens.
    pub(crate) fn set_local_node(&self, node: NodeRow) {
        *self.local_node.lock().unwrap_or_else(|p| p.into_inner()) = Some(node);
    }

    /// Record one audit entry; an audit failure is logged, never hidden.
    pub fn audit(
        &self,
        who: &Identity,
        app: Option<&str>,
        command: &str,
        outcome: &str,
        detail: &str,
    ) {
        if let Err(e) = self.store.audit(&Audit {
            fingerprint: &who.fingerprint,
            key_name: &who.name,
            app,
            command,
            outcome,
            detail,
        }) {
            tracing::error!(error = %e, "cannot write audit entry");
        }
    }

    /// Record an allowed action before it happens, as `started`; the caller sets the
    /// outcome with [`Core::audit_close`]. An action that cannot be recorded must not happen
    /// (a full disk, a failing store): the error says so in one line.
    pub fn audit_open(
        &self,
        who: &Identity,
        app: Option<&str>,
        command: &str,
        detail: &str,
    ) -> Result<i64, CoreError> {
        self.store
            .audit(&Audit {
                fingerprint: &who.fingerprint,
                key_name: &who.name,
                app,
                command,
                outcome: "started",
                detail,
            })
            .map_err(|e| {
                tracing::error!(error = %e, "cannot write audit entry; refusing");
                CoreError::Unavailable(
                    "the audit trail cannot be written (disk full?); nothing was done".into(),
                )
            })
    }

    pub fn audit_close(&self, id: i64, outcome: &str, detail: &str) {
        if let Err(e) = self.store.audit_outcome(id, outcome, detail) {
            tracing::error!(error = %e, "cannot write audit outcome");
        }
    }

    /// A key that is not registered tried to log in (or to the agent: never, that is not
    /// the controller's trail).
    pub fn audit_unknown_key(&self, fingerprint: &str, peer: &str) {
        if let Err(e) = self.store.audit(&Audit {
            fingerprint,
            // Not a key name (those match the name grammar), so it cannot pass for one.
            key_name: "(unknown)",
            app: None,
            command: "ssh login",
            outcome: "denied",
            detail: &format!("unknown key {fingerprint} from {peer}"),
        }) {
            tracing::error!(error = %e, "cannot write audit entry");
        }
    }

    /// A request on the hook socket was refused (a bad token, an unknown push, a malformed
    /// request). No key made it: the trail names the hook instead.
    pub fn audit_hook_refusal(&self, app: Option<&str>, detail: &str) {
        if let Err(e) = self.store.audit(&Audit {
            fingerprint: "-",
            // Not a key name (those match the name grammar), so it cannot pass for one.
            key_name: "(hook)",
            app,
            command: "git hook pre-receive",
            outcome: "denied",
            detail,
        }) {
            tracing::error!(error = %e, "cannot write audit entry");
        }
    }

    /// The caller's grant on an existing app, or a message that does not reveal whether an
    /// app the caller cannot see exists.
    pub fn require(
        &self,
        who: &Identity,
        app: &str,
        need: AppRole,
        action: &str,
    ) -> Result<Grant, CoreError> {
        let exists = self.store.app(app)?.is_some();
        if who.is_admin() {
            return if exists {
                Ok(Grant::admin())
            } else {
                Err(CoreError::NotFound(format!("app '{app}' does not exist")))
            };
        }
        match self.store.grant(who, app)? {
            Some(g) if exists && g.role >= need => Ok(g),
            Some(g) => Err(CoreError::Denied(format!(
                "key '{}' is {} on app '{app}'; {action} needs {need}",
                who.name, g.role
            ))),
            None => Err(CoreError::Denied(format!(
                "app '{app}' does not exist or key '{}' has no access to it",
                who.name
            ))),
        }
    }

    /// Checks a git service request and returns the repository path. A push by an admin to
    /// an app that does not exist creates it.
    pub fn authorize_git(
        &self,
        who: &Identity,
        svc: GitService,
        app: &str,
    ) -> Result<(PathBuf, Grant), CoreError> {
        if self.shutdown.is_cancelled() && svc == GitService::ReceivePack {
            return Err(CoreError::Unavailable(
                "the server is shutting down; push again in a moment".into(),
            ));
        }
        let exists = self.store.app(app)?.is_some();
        if !exists && svc == GitService::ReceivePack && who.is_admin() {
            self.create_app(who, app)?;
        }
        let (need, action) = match svc {
            GitService::ReceivePack => (AppRole::Deployer, "push"),
            GitService::UploadPack => (AppRole::Viewer, "clone"),
        };
        let grant = self.require(who, app, need, action)?;
        let repo = self.data.repo(app);
        if !repo.exists() {
            init_repo(&self.data, app)?;
        }
        Ok((repo, grant))
    }

    /// One rollout per app and environment at a time. The lock lives in memory, so it can
    /// never outlive the process holding it.
    pub fn deploy_lock(&self, app: &str, env: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.deploy_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((app.to_string(), env.to_string()))
            .or_default()
            .clone()
    }

    /// An environment's config vars, decrypted.
    pub fn config(
        &self,
        app: &str,
        env: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, CoreError> {
        let mut out = std::collections::BTreeMap::new();
        for (k, blob) in self.store.config_sealed(app, env)? {
            let v = self
                .sealer
                .open(&blob)
                .map_err(|e| CoreError::Other(e.into()))?;
            out.insert(k, String::from_utf8_lossy(&v).into_owned());
        }
        Ok(out)
    }

    pub fn replace_config(
        &self,
        app: &str,
        env: &str,
        vars: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), CoreError> {
        let sealed = vars
            .iter()
            .map(|(k, v)| (k.clone(), self.sealer.seal(v.as_bytes())))
            .collect();
        Ok(self.store.replace_config(app, env, &sealed)?)
    }

    /// A whole config map as one sealed blob (the config a release went live with).
    pub fn seal_map(&self, vars: &std::collections::BTreeMap<String, String>) -> Vec<u8> {
        self.sealer
            .seal(&serde_json::to_vec(vars).unwrap_or_default())
    }

    pub fn open_map(
        &self,
        blob: &[u8],
    ) -> Result<std::collections::BTreeMap<String, String>, CoreError> {
        let plain = self
            .sealer
            .open(blob)
            .map_err(|e| CoreError::Other(e.into()))?;
        serde_json::from_slice(&plain).map_err(|e| CoreError::Other(e.into()))
    }

    pub fn begin_push(self: &Arc<Self>, who: &Identity, app: &str, grant: Grant) -> PushGuard {
        let id = crate::keys::random_hex(8);
        let token = crate::keys::random_hex(32);
        self.pushes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id.clone(),
                PendingPush {
                    token: token.clone(),
                    app: app.to_string(),
                    identity: who.clone(),
                    grant,
                    answered: vec![],
                },
            );
        PushGuard {
            core: self.clone(),
            id,
            token,
        }
    }

    /// Spawns the real git service on an authorized repository; a push carries what its
    /// hook needs to find its way back to this controller.
    pub fn spawn_git(
        &self,
        svc: GitService,
        repo: &std::path::Path,
        git_protocol: Option<&str>,
        push: Option<&PushGuard>,
    ) -> std::io::Result<tokio::process::Child> {
        let socket = self.data.hook_socket();
        let hook = push.map(|g| crate::git::service::HookEnv {
            socket: &socket,
            push_id: &g.id,
            token: &g.token,
            bin: &self.bin,
        });
        crate::git::service::spawn(svc, repo, &self.data.hooks(), git_protocol, hook)
    }

    /// Runs `work` as work graceful shutdown waits for (a push).
    pub async fn tracked<F: std::future::Future>(&self, work: F) -> F::Output {
        self.tasks.track_future(work).await
    }

    /// The registered key with this fingerprint, if any.
    pub fn identity(&self, fingerprint: &str) -> Result<Option<Identity>, CoreError> {
        Ok(self.store.identity_by_fingerprint(fingerprint)?)
    }

    /// Records that the push's journal intent is answered yes; false when the push's git
    /// process is gone already (nothing will move its refs but the caller).
    pub(crate) fn answered(&self, push_id: &str, intent: i64) -> bool {
        let mut map = self.pushes.lock().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(push_id) {
            Some(p) => {
                p.answered.push(intent);
                true
            }
            None => false,
        }
    }

    /// The app of a push in flight, whatever token comes with its id (for the audit trail).
    pub fn pending_push_app(&self, id: &str) -> Option<String> {
        let map = self.pushes.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id).map(|p| p.app.clone())
    }

    pub fn pending_push(&self, id: &str, token: &str) -> Option<PendingPush> {
        let map = self.pushes.lock().unwrap_or_else(|p| p.into_inner());
        let p = map.get(id)?;
        constant_time_eq(p.token.as_bytes(), token.as_bytes()).then(|| p.clone())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `git init --bare` into a temp dir, configured, then renamed into place. A failure leaves
/// no temp dir behind, and its message names no server path (it may reach a pusher).
pub fn init_repo(data: &DataDir, app: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    std::fs::create_dir_all(data.repos()).context("cannot create the repositories dir")?;
    let tmp = data
        .repos()
        .join(format!(".new-{app}-{}", crate::keys::random_hex(4)));
    let guard = crate::release::temp::RemoveOnDrop(Some(tmp.clone()));
    let t = tmp.to_str().context("non-UTF-8 data dir")?;
    let run = |args: &[&str]| -> anyhow::Result<()> {
        let out = std::process::Command::new("git")
            .args(args)
            .output()
            .context("cannot run git (is it installed?)")?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).replace(t, "<repo>");
            tracing::error!(app, error = %err.trim(), "git init of a new repository failed");
            anyhow::bail!(
                "cannot create the repository of '{app}': git {} failed: {}",
                args.first().copied().unwrap_or_default(),
                err.lines().next().unwrap_or_default().trim()
            );
        }
        Ok(())
    };
    run(&["init", "--bare", "--quiet", "--initial-branch=main", t])?;
    for (k, v) in [
        ("receive.fsckObjects", "true"),
        ("gc.auto", "0"),
        ("receive.advertisePushOptions", "true"),
    ] {
        run(&["--git-dir", t, "config", k, v])?;
    }
    match crate::fsutil::rename_noreplace(&tmp, &data.repo(app)) {
        Ok(()) => guard.disarm(),
        // Made meanwhile by another push or apps:create: theirs is as good as ours.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => anyhow::bail!("cannot create the repository of '{app}': {e}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leftovers(data: &DataDir) -> Vec<String> {
        std::fs::read_dir(data.repos())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect()
    }

    #[test]
    fn repo_creation_is_atomic_and_leaves_no_temp_dirs() {
        let t = tempfile::tempdir().unwrap();
        let data = DataDir::new(t.path());
        init_repo(&data, "web").unwrap();
        assert!(data.repo("web").join("HEAD").is_file());
        // A second creation (a race with another push) keeps the first repo.
        std::fs::write(data.repo("web").join("marker"), "first").unwrap();
        init_repo(&data, "web").unwrap();
        assert!(data.repo("web").join("marker").exists());
        assert!(leftovers(&data).is_empty(), "{:?}", leftovers(&data));
        // git refusing the temp dir (a file is in its way under every name it could pick is
        // not possible; a non-directory repos dir is): an error without a server path, and
        // nothing left.
        let t2 = tempfile::tempdir().unwrap();
        std::fs::write(t2.path().join("repos"), "not a dir").unwrap();
        let err = init_repo(&DataDir::new(t2.path()), "web")
            .unwrap_err()
            .to_string();
        assert!(!err.contains(&t2.path().display().to_string()), "{err}");
    }
}
