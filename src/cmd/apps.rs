//! apps, apps:create, apps:info, apps:destroy.

use std::sync::Arc;

use super::{table, CmdError, CmdResult};
use crate::access::Identity;
use crate::controller::{Core, Sink};
use crate::timefmt::utc;

pub fn list(core: &Arc<Core>, who: &Identity, json: bool) -> CmdResult {
    let apps = core.apps(who)?;
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
    let app = core.app(name)?;
    if json {
        return Ok(table::json(&serde_json::json!({
            "name": app.name, "created_at": app.created_at, "created_by": app.created_by,
            "uid": app.uid,
        })));
    }
    Ok(format!(
        "name:     {}\ncreated:  {} by {}\nuid:      {} (its builds and processes run as it)\n",
        app.name,
        utc(app.created_at),
        app.created_by,
        app.uid
    ))
}

/// Stops the app everywhere and removes everything of it (see the core's use case).
pub async fn destroy(
    core: &Arc<Core>,
    name: &str,
    confirm: Option<&str>,
    keep_data: bool,
    out: &mut Sink,
) -> CmdResult {
    if confirm != Some(name) {
        return Err(CmdError::Invalid(format!(
            "destroying '{name}' deletes its repository; repeat with --confirm {name}"
        )));
    }
    core.destroy_app_everywhere(name, keep_data, out).await?;
    Ok(format!("destroyed app '{name}'\n"))
}
