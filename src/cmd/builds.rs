//! builds, builds:log, builds:cancel, builds:purge-cache.

use std::sync::Arc;

use super::{table, CmdError, CmdResult};
use crate::controller::Core;
use crate::timefmt::utc;

pub fn list(core: &Arc<Core>, app: &str, n: i64, json: bool) -> CmdResult {
    let rows = core.store().list_builds(app, n.clamp(1, 1000))?;
    if json {
        return Ok(table::json(&rows));
    }
    if rows.is_empty() {
        return Ok(format!("no builds of '{app}' yet\n"));
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|b| {
            vec![
                b.id.to_string(),
                b.status.clone(),
                b.git_sha[..7].to_string(),
                b.git_ref.rsplit('/').next().unwrap_or("").to_string(),
                b.key_name.clone(),
                utc(b.created_at),
                b.finished_at
                    .map(|f| format!("{}s", f - b.created_at))
                    .unwrap_or_else(|| "-".into()),
                b.release_version
                    .map(|v| format!("v{v}"))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    Ok(table::render(
        &[
            "ID", "STATUS", "COMMIT", "REF", "BY", "STARTED", "TOOK", "RELEASE",
        ],
        &rows,
    ))
}

pub fn log(core: &Arc<Core>, app: &str, id: Option<i64>) -> CmdResult {
    let build = match id {
        Some(id) => core.store().build(app, id)?,
        None => core.store().list_builds(app, 1)?.into_iter().next(),
    }
    .ok_or_else(|| CmdError::Invalid(format!("'{app}' has no such build")))?;
    let path = core
        .data()
        .logs()
        .join("builds")
        .join(app)
        .join(format!("{}.log", build.id));
    let text = std::fs::read(&path)
        .map_err(|_| CmdError::Invalid(format!("build {} has no log", build.id)))?;
    // Keep the tail of huge logs.
    let start = text.len().saturating_sub(8 << 20);
    Ok(String::from_utf8_lossy(&text[start..]).into_owned())
}

pub fn cancel(core: &Arc<Core>, app: &str) -> CmdResult {
    match core.queue().cancel(app) {
        Some(id) => Ok(format!("cancelling build {id} of '{app}'\n")),
        None => Err(CmdError::Invalid(format!("no build of '{app}' is running"))),
    }
}

pub fn purge_cache(core: &Arc<Core>, app: &str) -> CmdResult {
    if core.queue().waiting(app) > 0 {
        return Err(CmdError::Invalid(format!(
            "a build of '{app}' is running or queued; wait for it or `builds:cancel {app}`"
        )));
    }
    let freed = crate::build::purge_cache(core.data(), app)
        .map_err(|e| CmdError::Invalid(format!("cannot purge the build cache: {e}")))?;
    Ok(format!(
        "purged the build cache of '{app}' ({}); its next build fetches its buildpacks again\n",
        crate::build::human(freed)
    ))
}
