//! What happens to a push, decided before any ref moves (pre-receive). Returns the exit code
//! that accepts (0) or rejects (non-zero) the whole push.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Core, PendingPush};
use crate::access::RefChange;
use crate::build::{self, BuildError, BuildRequest};
use crate::git::export::Quarantine;
use crate::git::hookproto::RefUpdate;
use crate::git::hookproto::{is_zero, Frame, HookRequest};
use crate::sink::Sink;

/// Refs that build (and, later, deploy): the default branch and release tags.
pub fn builds_ref(name: &str) -> bool {
    matches!(name, "refs/heads/main" | "refs/heads/master")
        || name
            .strip_prefix("refs/tags/")
            .is_some_and(|t| crate::names::glob_match("v*", t))
}

fn short(name: &str) -> &str {
    name.strip_prefix("refs/heads/")
        .or_else(|| name.strip_prefix("refs/tags/"))
        .unwrap_or(name)
}

/// One push, under a span that every line of its build and rollout carries (push id, app,
/// key), so a push can be followed through the server log.
#[tracing::instrument(name = "push", skip_all, fields(id = %req.push_id, app = %push.app, key = %push.identity.name))]
pub async fn run(
    core: Arc<Core>,
    push: PendingPush,
    req: HookRequest,
    out: mpsc::Sender<Frame>,
    cancel: CancellationToken,
) -> i32 {
    let started = std::time::Instant::now();
    tracing::info!(refs = req.updates.len(), "push received");
    let code = decide(core, push, req, out, cancel).await;
    let ms = started.elapsed().as_millis() as u64;
    tracing::info!(
        code,
        ms,
        "push {}",
        if code == 0 { "accepted" } else { "rejected" }
    );
    code
}

async fn decide(
    core: Arc<Core>,
    push: PendingPush,
    req: HookRequest,
    out: mpsc::Sender<Frame>,
    cancel: CancellationToken,
) -> i32 {
    let mut sink = Sink::new(out);
    let who = &push.identity;
    let quarantine = Quarantine {
        object_dir: req.object_dir.clone(),
        alternates: req.alternates.clone(),
    };
    let changes = {
        let (repo, updates) = (core.data().repo(&push.app), req.updates.clone());
        let q = quarantine.clone();
        tokio::task::spawn_blocking(move || classify(&repo, &q, &updates))
            .await
            .unwrap_or_else(|_| vec![RefChange::Force; req.updates.len()])
    };
    // "create refs/tags/v2, update refs/heads/main": what each ref update does.
    let detail = req
        .updates
        .iter()
        .zip(&changes)
        .map(|(u, c)| format!("{} {}", c.as_str(), u.name))
        .collect::<Vec<_>>()
        .join(", ");
    // Recorded before anything happens; a push that cannot be recorded is rejected.
    let audit = match core.audit_open(who, Some(&push.app), "git push", &detail) {
        Ok(id) => id,
        Err(e) => {
            sink.line(format!("error: {e}")).await;
            return 1;
        }
    };
    for (u, c) in req.updates.iter().zip(&changes) {
        if let Err(why) = push.grant.may_push_ref(&u.name, *c) {
            sink.line(format!("error: key '{}': {why}", who.name)).await;
            let _ = core
                .store()
                .record_push(&push.app, who, &req.updates, "refused");
            core.audit_close(audit, "denied", &format!("{detail}: {why}"));
            return 1;
        }
    }
    if let Err(e) = within_quota(&core, &push.app, &req.updates).await {
        sink.line(format!("error: {e}")).await;
        let _ = core
            .store()
            .record_push(&push.app, who, &req.updates, "refused");
        core.audit_close(audit, "error", &format!("{detail}: {e}"));
        return 1;
    }
    let targets = announce(&push.app, &req.updates, &mut sink).await;
    // Journalled before anything can go live (see journal.rs).
    let intent = match journal(&core, &push.app, &req, &quarantine, !targets.is_empty()).await {
        Ok(id) => id,
        Err(e) => {
            sink.line(format!("error: cannot journal the push ({e})"))
                .await;
            let _ = core
                .store()
                .record_push(&push.app, who, &req.updates, "refused");
            core.audit_close(audit, "error", &format!("{detail}: cannot journal: {e}"));
            return 1;
        }
    };
    for t in targets {
        let result = cook_and_deploy(&core, &push, t, &quarantine, &mut sink, cancel.clone()).await;
        let (outcome, why) = match result {
            Ok(()) => continue,
            Err(PushError::Build(BuildError::Cancelled)) => {
                ("cancelled", "build cancelled".to_string())
            }
            Err(PushError::Build(e)) => ("build failed", e.to_string()),
            Err(PushError::Deploy(e)) => ("deploy failed", format!("deploy failed: {e}")),
        };
        let refs = settle_rejected(&core, intent);
        sink.line(format!(" !     push rejected: {why}; {refs}"))
            .await;
        let _ = core
            .store()
            .record_push(&push.app, who, &req.updates, outcome);
        core.audit_close(audit, "error", &format!("{detail}: {why}"));
        return 1;
    }
    match core
        .store()
        .record_push(&push.app, who, &req.updates, "accepted")
    {
        Ok(_) => {
            // Settled once git has moved the refs (the push's guard drops): until then a
            // crash leaves the intent pending, for the next start to finish.
            if let Some(id) = intent {
                if !core.answered(&req.push_id, id) {
                    super::journal::settle_id(&core, id);
                }
            }
            core.audit_close(audit, "ok", &detail);
            crate::failpoint::hit("verdict");
            0
        }
        Err(e) => {
            settle_rejected(&core, intent);
            sink.line(format!("error: cannot record the push ({e})"))
                .await;
            core.audit_close(audit, "error", "cannot record the push");
            1
        }
    }
}

/// Says what each ref update is; returns the ones that build (each commit once).
async fn announce<'a>(app: &str, updates: &'a [RefUpdate], sink: &mut Sink) -> Vec<&'a RefUpdate> {
    let mut targets: Vec<&RefUpdate> = vec![];
    for u in updates {
        if is_zero(&u.new) {
            sink.line(format!("-----> {}: deleted {}", app, short(&u.name)))
                .await;
        } else {
            sink.line(format!(
                "-----> {}: received {} {}",
                app,
                short(&u.name),
                &u.new[..7]
            ))
            .await;
            if builds_ref(&u.name) && !targets.iter().any(|t| t.new == u.new) {
                targets.push(u);
            }
        }
    }
    if targets.is_empty() && !updates.is_empty() {
        sink.line(
            "-----> nothing to build: only the default branch (main/master) and v* tags build",
        )
        .await;
    }
    targets
}

/// The pushed objects are in the repository (quarantined) by now: a push that takes the
/// app past its disk quota is refused before anything is built.
async fn within_quota(
    core: &Arc<Core>,
    app: &str,
    updates: &[RefUpdate],
) -> Result<(), super::CoreError> {
    if updates.iter().all(|u| is_zero(&u.new)) {
        return Ok(());
    }
    core.check_disk_quota(app).await
}

/// A push that builds is journalled (its intent's id); one that does not cannot make
/// anything live, and is not.
async fn journal(
    core: &Arc<Core>,
    app: &str,
    req: &HookRequest,
    q: &Quarantine,
    builds: bool,
) -> Result<Option<i64>, String> {
    if !builds {
        return Ok(None);
    }
    super::journal::open(core, &req.push_id, app, &req.updates, q)
        .await
        .map(Some)
}

/// A rejected push's intent: git will not move its refs, so those whose commit went live
/// (an earlier build target of the push) are moved here. Says what happened to the refs.
fn settle_rejected(core: &Core, intent: Option<i64>) -> String {
    let moved = intent.map_or(vec![], |id| super::journal::settle_id(core, id));
    if moved.is_empty() {
        "the refs did not move".to_string()
    } else {
        format!("{} moved to what went live", moved.join(", "))
    }
}

/// What each update does: create, delete, a fast-forward (`update`: the new commit
/// descends from the old one, tags peeled to their commits) or anything else (`force`,
/// also when that cannot be told).
fn classify(repo: &std::path::Path, q: &Quarantine, updates: &[RefUpdate]) -> Vec<RefChange> {
    let git = crate::git::export::open(repo, q).ok();
    let commit = |r: &git2::Repository, hex: &str| -> Option<git2::Oid> {
        let oid = git2::Oid::from_str(hex).ok()?;
        Some(r.find_object(oid, None).ok()?.peel_to_commit().ok()?.id())
    };
    updates
        .iter()
        .map(|u| {
            if is_zero(&u.old) {
                return RefChange::Create;
            }
            if is_zero(&u.new) {
                return RefChange::Delete;
            }
            let ff = git.as_ref().and_then(|r| {
                let (old, new) = (commit(r, &u.old)?, commit(r, &u.new)?);
                Some(old == new || r.graph_descendant_of(new, old).ok()?)
            });
            if ff == Some(true) {
                RefChange::Update
            } else {
                RefChange::Force
            }
        })
        .collect()
}

enum PushError {
    Build(BuildError),
    Deploy(String),
}

/// Build the pushed commit (or, for a tag on a commit already cooked, reuse those exact
/// bytes: final mode) and deploy it to the environments the ref maps to.
async fn cook_and_deploy(
    core: &Arc<Core>,
    push: &PendingPush,
    t: &RefUpdate,
    q: &Quarantine,
    sink: &mut Sink,
    cancel: CancellationToken,
) -> Result<(), PushError> {
    let commit = build::resolve_commit(core, &push.app, q, &t.new)
        .await
        .map_err(PushError::Build)?;
    let breq = BuildRequest {
        app: push.app.clone(),
        object: t.new.clone(),
        git_ref: t.name.clone(),
        key_name: push.identity.name.clone(),
        quarantine: q.clone(),
        config_vars: Default::default(),
    };
    let existing = if t.name.starts_with("refs/tags/") {
        let cooked = core
            .store()
            .release_by_commit(&push.app, &commit)
            .ok()
            .flatten();
        match cooked {
            Some(r) => same_build_dir(core, &breq, &commit, r).await,
            None => None,
        }
    } else {
        None
    };
    let release = match existing {
        Some(r) => {
            sink.line(format!(
                "-----> {} was cooked as v{}; deploying the same bytes (sha256 {})",
                &commit[..7],
                r.version,
                &r.sha256[..12]
            ))
            .await;
            r
        }
        None => build::build(core, breq, sink, cancel)
            .await
            .map_err(PushError::Build)?,
    };
    let tarball = core.data().releases(&push.app).join(&release.file);
    let config = crate::deploy::envs::config_of_release(&tarball);
    let targets = crate::deploy::envs::for_ref(&config, &t.name);
    if targets.is_empty() {
        sink.line(format!(
            "-----> {} deploys to no environment; v{} is cooked",
            short(&t.name),
            release.version
        ))
        .await;
    }
    for target in targets {
        roll_out(core, push, &release, &target, &config, sink).await?;
    }
    Ok(())
}

/// A release cooked from the commit a tag points at, if it came from the directory a build
/// would take the app from now (a monorepo app whose build dir changed builds again).
async fn same_build_dir(
    core: &Arc<Core>,
    breq: &BuildRequest,
    commit: &str,
    cooked: crate::store::ReleaseRow,
) -> Option<crate::store::ReleaseRow> {
    let was = serde_json::from_str::<crate::release::Manifest>(&cooked.manifest)
        .ok()?
        .build_dir;
    let now = build::build_dir_of(core, breq, commit).await.ok()?;
    (was == now).then_some(cooked)
}

/// One environment of a push: its declared services (created and linked before the
/// release command runs, so it can migrate them) and app.json's env, then the rollout.
async fn roll_out(
    core: &Arc<Core>,
    push: &PendingPush,
    release: &crate::store::ReleaseRow,
    target: &crate::deploy::envs::EnvTarget,
    config: &crate::appconfig::AppConfig,
    sink: &mut Sink,
) -> Result<(), PushError> {
    core.declare_services(
        &push.identity.name,
        &push.app,
        &target.env,
        &config.services.clone().unwrap_or_default(),
        sink,
    )
    .await
    .map_err(|e| PushError::Deploy(e.to_string()))?;
    core.declare_env(&push.app, &target.env, release, &target.vars, sink)
        .await
        .map_err(|e| PushError::Deploy(e.to_string()))?;
    crate::deploy::rollout(
        core,
        release,
        target,
        &push.identity.name,
        sink,
        Default::default(),
    )
    .await
    .map_err(|e| PushError::Deploy(e.to_string()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn which_refs_build() {
        assert!(super::builds_ref("refs/heads/main"));
        assert!(super::builds_ref("refs/heads/master"));
        assert!(super::builds_ref("refs/tags/v1.4.0"));
        assert!(!super::builds_ref("refs/tags/nightly"));
        assert!(!super::builds_ref("refs/heads/feature"));
    }
}
