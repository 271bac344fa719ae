//! apps, apps:create, apps:info, apps:destroy.

use std::sync::Arc;

use super::{table, CmdError, CmdResult};
use crate::access::Identity;
use crate::controller::Core;
use crate::timefmt::utc;

pub fn list(core: &Arc<Core>, who: &Identity, json: bool) -> CmdResult {
    let apps = core.store().list_apps(who)?;
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
        .store()
        .app(name)?
        .ok_or_else(|| CmdError::Invalid(format!("app '{name}' does not exist")))?;
    let repo = core.data().repo(name);
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

/// Stops the app everywhere (routes first, then every process of every environment on every
/// node) and removes everything of it on the nodes (releases, data, snapshots, process logs)
/// and on the controller (repository, releases, build cache and logs, event log, store
/// rows), so a later app of the same name starts from nothing. A node that cannot be cleaned
/// stops the destroy before anything on the controller is deleted, so it can be retried.
pub async fn destroy(
    core: &Arc<Core>,
    name: &str,
    confirm: Option<&str>,
    keep_data: bool,
    out: &mut crate::sink::Sink,
) -> CmdResult {
    use crate::node::proto::PurgeReq;
    if confirm != Some(name) {
        return Err(CmdError::Invalid(format!(
            "destroying '{name}' deletes its repository; repeat with --confirm {name}"
        )));
    }
    if core.store().app(name)?.is_none() {
        return Err(CmdError::Invalid(format!("app '{name}' does not exist")));
    }
    let envs: Vec<String> = core
        .store()
        .all_live()?
        .into_iter()
        .filter(|l| l.app == name)
        .map(|l| l.env)
        .collect();
    let mut held = vec![];
    for env in &envs {
        held.push(core.deploy_lock(name, env).lock_owned().await);
    }
    for env in &envs {
        core.router().remove_app(&crate::deploy::route_key(name, env));
    }
    // Every node, not only those it is live on: an environment moved elsewhere, or a failed
    // first deploy, can have left releases or data behind.
    let uid = core.app_uid(name)?;
    let req = PurgeReq {
        app: name.to_string(),
        keep_data,
        uid: Some(uid),
    };
    for n in core.all_nodes()? {
        let r = core.node_client(&n).send(&req).await;
        match r {
            Ok(v) => {
                if !v.purged.is_empty() {
                    out.line(format!("-----> {}: {name} stopped and removed", n.name))
                        .await;
                }
            }
            Err(e) => {
                return Err(CmdError::Invalid(format!(
                    "node {}: {e}; '{name}' was not destroyed (its routes are off; retry when the node is back, or nodes:remove it)",
                    n.name
                )))
            }
        }
    }
    core.destroy_app(name)?;
    // Its builds' network (its uid is never given out again, so neither is the network).
    if let Ok(d) = crate::docker::Docker::connect().await {
        crate::isolation::remove_network(d.raw(), core.instance(), uid).await;
    }
    drop(held);
    Ok(format!("destroyed app '{name}'\n"))
}
