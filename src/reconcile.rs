//! What a crash leaves behind, put right when the controller starts.
//!
//! A `kill -9` can stop the controller at any step of a build or a rollout. At start:
//! - temp state of builds goes: their work dirs (`<data>/builds/<id>/`), half-written release
//!   tarballs (`.cooking-*` under `<data>/releases/<app>/`) and this controller's build
//!   containers (builds left `running` in the store are marked failed by `Core::open`);
//! - every node is brought in line with the store, which is the truth: a node whose
//!   `current` is not the live release is switched to it, and processes that are not the
//!   live release's (a rollout that never finished started them) are stopped. Only the
//!   existing node verbs are used (`status`, `switch`, `abort`);
//! - git follows the store: a push journalled before go-live and never answered has its refs
//!   moved to what went live (`controller/journal.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::controller::Core;
use crate::deploy::node_app;
use crate::node::proto::{release_name, AbortReq, StatusReply, StatusReq, SwitchReq};
use crate::paths::DataDir;
use crate::store::{NodeRow, PushIntent};

/// Removes build work dirs and partial release tarballs. Nothing builds yet when this runs.
pub fn sweep_files(data: &DataDir) -> usize {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(data.builds()) {
        for e in rd.flatten() {
            let p = e.path();
            let gone = if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                crate::release::extract::remove_tree(&p).is_ok()
            } else {
                std::fs::remove_file(&p).is_ok()
            };
            n += usize::from(gone);
        }
    }
    if let Ok(apps) = std::fs::read_dir(data.root().join("releases")) {
        for app in apps.flatten() {
            let Ok(rd) = std::fs::read_dir(app.path()) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name();
                if name
                    .to_string_lossy()
                    .starts_with(crate::release::temp::COOKING_PREFIX)
                    && std::fs::remove_file(e.path()).is_ok()
                {
                    n += 1;
                }
            }
        }
    }
    n
}

/// Removes this controller's build containers (`magrathea-<instance>-build-...`): a build
/// whose controller is gone has nobody to read its output or store its release.
pub async fn sweep_build_containers(instance: &str) -> usize {
    let docker = match crate::docker::Docker::connect().await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "cannot reach Docker to sweep build containers");
            return 0;
        }
    };
    let prefix = format!("magrathea-{instance}-build-");
    let Ok(list) = docker.containers("name", vec![prefix.clone()]).await else {
        return 0;
    };
    let mut n = 0;
    for name in list.into_iter().flat_map(|c| c.names.unwrap_or_default()) {
        // Docker's name filter matches anywhere in the name: check it starts with ours.
        let name = name.trim_start_matches('/');
        if name.starts_with(&prefix) {
            docker.remove(name).await;
            n += 1;
        }
    }
    n
}

/// `app` or `app.env` on a node: (app, env).
fn split_node_app(napp: &str) -> (String, String) {
    match napp.split_once('.') {
        Some((a, e)) => (a.to_string(), e.to_string()),
        None => (napp.to_string(), "production".to_string()),
    }
}

async fn statuses(core: &Arc<Core>, nodes: &[NodeRow]) -> Vec<(NodeRow, StatusReply)> {
    let mut out = vec![];
    for n in nodes {
        match core.node_client(n).send(&StatusReq).await {
            Ok(s) => out.push((n.clone(), s)),
            Err(e) => {
                tracing::warn!(node = %n.name, error = %e, "node unreachable; not reconciled")
            }
        }
    }
    out
}

/// The pushes a crash left journalled (`controller/journal.rs`): read at start before the
/// hook socket opens, so a push arriving meanwhile is never taken for one.
pub fn pending_pushes(core: &Core) -> Vec<PushIntent> {
    core.store().pending_intents().unwrap_or_default()
}

/// Brings every node in line with the store, and git in line with it for the `pending`
/// pushes a crash left journalled. Holds the deploy lock of every environment it looks at,
/// so a push that arrives meanwhile waits for it. Returns how many changes it made to nodes.
pub async fn reconcile_nodes(core: &Arc<Core>, pending: Vec<PushIntent>) -> usize {
    let nodes = core.all_nodes().unwrap_or_default();
    // Every environment the store has live, and every one a node has anything of.
    let mut envs: BTreeSet<(String, String)> = core
        .store()
        .all_live()
        .unwrap_or_default()
        .into_iter()
        .map(|l| (l.app, l.env))
        .collect();
    for (_, s) in statuses(core, &nodes).await {
        for napp in s.apps.keys() {
            let (app, env) = split_node_app(napp);
            // Not ours to judge: a node app no app of this controller names.
            if matches!(core.store().app(&app), Ok(Some(_))) {
                envs.insert((app, env));
            }
        }
    }
    let mut guards = vec![];
    for (app, env) in &envs {
        guards.push(core.deploy_lock(app, env).lock_owned().await);
    }
    // Under the locks: what the nodes run now.
    let statuses = statuses(core, &nodes).await;
    let mut changes = 0;
    for (app, env) in &envs {
        changes += reconcile_env(core, &statuses, app, env).await;
    }
    for intent in &pending {
        crate::controller::journal::settle(core, intent);
    }
    drop(guards);
    changes
}

async fn reconcile_env(
    core: &Arc<Core>,
    statuses: &[(NodeRow, StatusReply)],
    app: &str,
    env: &str,
) -> usize {
    let napp = node_app(app, env);
    let live = core.store().live(app, env).ok().flatten();
    let live_name = live.as_ref().and_then(|l| {
        core.store()
            .release(app, l.version)
            .ok()
            .flatten()
            .map(|r| release_name(r.version, &r.sha256))
    });
    let good = core.store().last_good_deploy(app, env).ok().flatten();
    let mut changes = 0;
    for (node, status) in statuses {
        let Some(st) = status.apps.get(&napp) else {
            continue;
        };
        let client = core.node_client(node);
        let live_here = live.as_ref().is_some_and(|l| l.nodes.contains(&node.name));
        // `current` follows the store.
        if let (true, Some(want)) = (live_here, &live_name) {
            if st.current.as_ref() != Some(want) {
                if st.releases.contains(want) {
                    let req = SwitchReq {
                        app: napp.clone(),
                        release: want.clone(),
                    };
                    match client.send(&req).await {
                        Ok(_) => {
                            tracing::warn!(node = %node.name, app = %napp, was = ?st.current, now = %want, "node's current release switched back to the live one");
                            changes += 1;
                        }
                        Err(e) => {
                            tracing::warn!(node = %node.name, app = %napp, error = %e, "cannot switch back")
                        }
                    }
                } else {
                    tracing::warn!(node = %node.name, app = %napp, want = %want, "live release not unpacked on the node; current left as it is");
                }
            }
        }
        // Processes: the live release's stay. Of those, a type that has processes of a
        // generation no later than the last rollout that succeeded keeps only these: the
        // later ones were started by a rollout that never finished.
        let mut settled: BTreeMap<&str, bool> = BTreeMap::new();
        let is_live =
            |p: &crate::node::proto::ProcInfo| live_here && live_name.as_ref() == Some(&p.release);
        for p in st.processes.iter().filter(|p| is_live(p)) {
            let ok = good.is_some_and(|g| p.generation as i64 <= g);
            *settled.entry(p.ptype.as_str()).or_default() |= ok;
        }
        let orphans: BTreeSet<(String, u64)> = st
            .processes
            .iter()
            .filter(|p| {
                !is_live(p)
                    || (settled.get(p.ptype.as_str()) == Some(&true)
                        && good.is_some_and(|g| p.generation as i64 > g))
            })
            .map(|p| (p.release.clone(), p.generation))
            .collect();
        for (release, generation) in orphans {
            let req = AbortReq {
                app: napp.clone(),
                release: release.clone(),
                generation,
            };
            match client.send(&req).await {
                Ok(_) => {
                    tracing::warn!(node = %node.name, app = %napp, %release, generation, "stopped processes that are not live");
                    changes += 1;
                }
                Err(e) => {
                    tracing::warn!(node = %node.name, app = %napp, error = %e, "cannot stop orphan processes")
                }
            }
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_app_names_split_into_app_and_env() {
        assert_eq!(
            split_node_app("web"),
            ("web".to_string(), "production".to_string())
        );
        assert_eq!(
            split_node_app("web.staging"),
            ("web".to_string(), "staging".to_string())
        );
    }

    #[test]
    fn sweep_removes_build_dirs_and_partial_tarballs_only() {
        let t = tempfile::tempdir().unwrap();
        let dd = DataDir::new(t.path());
        std::fs::create_dir_all(dd.builds().join("7/src")).unwrap();
        let rel = dd.releases("a");
        std::fs::create_dir_all(&rel).unwrap();
        std::fs::write(rel.join(".cooking-abc.tar.gz"), "x").unwrap();
        std::fs::write(rel.join("v1-0123.tar.gz"), "x").unwrap();
        assert_eq!(sweep_files(&dd), 2);
        assert!(!dd.builds().join("7").exists());
        assert!(!rel.join(".cooking-abc.tar.gz").exists());
        assert!(rel.join("v1-0123.tar.gz").exists());
    }
}
