//! apps, apps:create, apps:info, apps:destroy.

use std::sync::Arc;

use super::{table, CmdError, CmdResult};
use crate::access::Identity;
use crate::controller::Core;
use crate::timefmt::utc;

pub fn list(core: &Arc<Core>, who: &Identity, json: bool) -> CmdResult {
    let apps = core.store.list_apps(who)?;
    if json {
        let v: Vec<_> = apps
            .iter()
            .map(|(a, role)| serde_json::json!({"name": a.name, "role": role, "created_at": a.created_at}))
            .collect();
        return Ok(table::json(&v));
    }
    if apps.is_empty() {
        return Ok("no apps yet; create one with 'apps:create NAME' or just git push\n".into());
    }
    let rows: Vec<Vec<String>> = apps
        .iter()
        .map(|(a, role)| vec![a.name.clone(), role.clone(), utc(a.created_at)])
        .collect();
    Ok(table::render(&["APP", "ROLE", "CREATED"], &rows))
}

pub fn create(core: &Arc<Core>, who: &Identity, name: &str) -> CmdResult {
    crate::names::check("app", name)?;
    core.create_app(who, name)?;
    Ok(format!("created app '{name}'\n"))
}

pub fn info(core: &Arc<Core>, name: &str, json: bool) -> CmdResult {
    let app = core
        .store
        .app(name)?
        .ok_or_else(|| CmdError::Invalid(format!("app '{name}' does not exist")))?;
    let repo = core.data.repo(name);
    if json {
        return Ok(table::json(&serde_json::json!({
            "name": app.name, "created_at": app.created_at, "created_by": app.created_by,
            "uid": app.uid,
        })));
    }
    let _ = repo;
    Ok(format!(
        "name:     {}\ncreated:  {} by {}\nuid:      {} (its builds and processes run as it)\n",
        app.name,
        utc(app.created_at),
        app.created_by,
        app.uid
    ))
}

/// Stops the app everywhere it runs (routes first, then its processes and unpacked releases
/// on every node), then deletes it. A node that cannot be cleaned stops the destroy before
/// anything is deleted, so it can be retried.
pub async fn destroy(
    core: &Arc<Core>,
    name: &str,
    confirm: Option<&str>,
    out: &mut crate::build::Sink,
) -> CmdResult {
    use crate::node::client::Stdin;
    use crate::node::proto::{AppRelease, GcReq};
    if confirm != Some(name) {
        return Err(CmdError::Invalid(format!(
            "destroying '{name}' deletes its repository; repeat with --confirm {name}"
        )));
    }
    if core.store.app(name)?.is_none() {
        return Err(CmdError::Invalid(format!("app '{name}' does not exist")));
    }
    let lives: Vec<_> = core
        .store
        .all_live()?
        .into_iter()
        .filter(|l| l.app == name)
        .collect();
    let nodes = core.all_nodes()?;
    let mut held = vec![];
    for l in &lives {
        held.push(core.deploy_lock(name, &l.env).lock_owned().await);
    }
    for l in &lives {
        core.router
            .remove_app(&crate::deploy::route_key(name, &l.env));
        for n in nodes.iter().filter(|n| l.nodes.contains(&n.name)) {
            let client = core.node_client(n);
            // An empty release name matches no process: every one of the app's stops.
            let napp = crate::deploy::node_app(name, &l.env);
            let stop = AppRelease {
                app: napp.clone(),
                release: String::new(),
                generation: 0,
                only: vec![],
            };
            let gc = GcReq {
                app: napp,
                keep: vec![],
            };
            let r = async {
                client
                    .call::<serde_json::Value>(
                        "retire",
                        Stdin::Bytes(serde_json::to_vec(&stop).unwrap_or_default()),
                        None,
                    )
                    .await?;
                client
                    .call::<serde_json::Value>(
                        "gc",
                        Stdin::Bytes(serde_json::to_vec(&gc).unwrap_or_default()),
                        None,
                    )
                    .await
            }
            .await;
            match r {
                Ok(_) => {
                    out.line(format!("-----> {}: {name} stopped in {}", n.name, l.env))
                        .await
                }
                Err(e) => {
                    return Err(CmdError::Invalid(format!(
                        "{e}; '{name}' was not destroyed (its routes are off; retry when the node is back)"
                    )))
                }
            }
        }
    }
    core.destroy_app(name)?;
    let log = crate::eventlog::path(&core.data.logs(), name);
    let _ = std::fs::remove_file(&log);
    let mut rotated = log.into_os_string();
    rotated.push(".1");
    let _ = std::fs::remove_file(rotated);
    drop(held);
    Ok(format!("destroyed app '{name}'\n"))
}
