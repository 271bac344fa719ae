//! The push journal. A push is decided in pre-receive: the controller builds and deploys
//! before any ref moves, and git moves the refs only when it answers yes. A crash (or a
//! second build target failing) after a release went live but before that answer would leave
//! the store, nodes and router on the new release and git on the old one, with the pushed
//! objects gone with git's quarantine. So before anything can go live the pushed objects are
//! kept in the repository (`git::quarantine`) and the ref updates are recorded as a pending
//! intent in the store. The verdict settles it; a pending intent found at start (a crash) is
//! settled by [`settle`]: each ref whose new commit went live since the intent was recorded
//! moves, by compare-and-swap on its old value; the rest is dropped.

use std::sync::Arc;

use super::Core;
use crate::git::export::Quarantine;
use crate::git::hookproto::{is_zero, RefUpdate};
use crate::store::{PushIntent, RefMove};

/// Keeps the push's objects in the repository and records its ref updates as pending; the
/// intent's id. An error means the push must be rejected: it could not be journalled.
pub async fn open(
    core: &Arc<Core>,
    push_id: &str,
    app: &str,
    updates: &[RefUpdate],
    q: &Quarantine,
) -> Result<i64, String> {
    if let Some(dir) = q.object_dir.clone() {
        let repo = core.data().repo(app);
        tokio::task::spawn_blocking(move || {
            crate::git::quarantine::keep_objects(&repo, std::path::Path::new(&dir))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    }
    let refs: Vec<RefMove> = updates
        .iter()
        .map(|u| RefMove {
            name: u.name.clone(),
            old: u.old.clone(),
            new: u.new.clone(),
        })
        .collect();
    core.store()
        .open_intent(push_id, app, &refs)
        .map_err(|e| e.to_string())
}

/// Settles the intent `id` if it is still pending (see [`settle`]); the refs moved.
pub fn settle_id(core: &Core, id: i64) -> Vec<String> {
    let pending = core.store().pending_intents().unwrap_or_default();
    match pending.iter().find(|i| i.id == id) {
        Some(i) => settle(core, i),
        None => vec![],
    }
}

/// Settles a pending intent from what the store has live: a ref whose new object peels to the
/// commit of a release that went live in any environment of the app since the intent was
/// recorded moves, if it still has the intent's old value; any other ref update is dropped
/// and logged. The intent is `done` if a ref moved, else `dropped`. Returns the refs moved.
pub fn settle(core: &Core, intent: &PushIntent) -> Vec<String> {
    let live: Vec<String> = core
        .store()
        .all_live()
        .unwrap_or_default()
        .into_iter()
        .filter(|l| l.app == intent.app && l.updated_at >= intent.created_at)
        .filter_map(|l| core.store().release(&l.app, l.version).ok().flatten())
        .map(|r| r.git_sha)
        .collect();
    let repo = core.data().repo(&intent.app);
    let git = git2::Repository::open_bare(&repo).ok();
    let commit_of = |hex: &str| -> Option<String> {
        let r = git.as_ref()?;
        let obj = r.find_object(git2::Oid::from_str(hex).ok()?, None).ok()?;
        Some(obj.peel_to_commit().ok()?.id().to_string())
    };
    let mut moved = vec![];
    for m in &intent.refs {
        let now = crate::git::quarantine::ref_value(&repo, &m.name);
        if !is_zero(&m.new) && now == Some(m.new.clone()) {
            // git moved it (the verdict was given before the crash, or the push ended).
            moved.push(m.name.clone());
            continue;
        }
        let went_live = !is_zero(&m.new) && commit_of(&m.new).is_some_and(|c| live.contains(&c));
        if !went_live {
            tracing::info!(push = %intent.push_id, app = %intent.app, r#ref = %m.name, "journal: not live; ref update dropped");
            continue;
        }
        let expected = (!is_zero(&m.old)).then(|| m.old.clone());
        if now != expected {
            tracing::warn!(push = %intent.push_id, app = %intent.app, r#ref = %m.name, ?now, old = %m.old, "journal: ref moved since the push; left as it is");
            continue;
        }
        match crate::git::quarantine::update_ref(&repo, &m.name, &m.new, &m.old) {
            Ok(()) => {
                tracing::warn!(push = %intent.push_id, app = %intent.app, r#ref = %m.name, new = %m.new, "journal: ref moved to the release that went live");
                moved.push(m.name.clone());
            }
            Err(e) => {
                tracing::warn!(push = %intent.push_id, app = %intent.app, error = %e, "journal: ref not moved")
            }
        }
    }
    if let Err(e) = core.store().settle_intent(intent.id, !moved.is_empty()) {
        tracing::warn!(push = %intent.push_id, error = %e, "journal: cannot settle the intent");
    }
    moved
}
