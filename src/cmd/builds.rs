//! builds, builds:log, builds:cancel, builds:purge-cache.

use std::sync::Arc;

use super::{table, CmdResult};
use crate::controller::view::human;
use crate::controller::Core;
use crate::timefmt::utc;

pub fn list(core: &Arc<Core>, app: &str, n: i64, json: bool) -> CmdResult {
    let rows = core.builds(app, n.clamp(1, 1000))?;
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
    Ok(core.build_log(app, id)?)
}

pub fn cancel(core: &Arc<Core>, app: &str) -> CmdResult {
    let id = core.cancel_build(app)?;
    Ok(format!("cancelling build {id} of '{app}'\n"))
}

pub fn purge_cache(core: &Arc<Core>, app: &str) -> CmdResult {
    let freed = core.purge_build_cache(app)?;
    Ok(format!(
        "purged the build cache of '{app}' ({}); its next build fetches its buildpacks again\n",
        human(freed)
    ))
}
