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
        })));
    }
    let _ = repo;
    Ok(format!(
        "name:     {}\ncreated:  {} by {}\n",
        app.name,
        utc(app.created_at),
        app.created_by
    ))
}

pub fn destroy(core: &Arc<Core>, name: &str, confirm: Option<&str>) -> CmdResult {
    if confirm != Some(name) {
        return Err(CmdError::Invalid(format!(
            "destroying '{name}' deletes its repository; repeat with --confirm {name}"
        )));
    }
    core.destroy_app(name)?;
    Ok(format!("destroyed app '{name}'\n"))
}
