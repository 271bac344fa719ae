//! audit [APP] [-n N].

use std::sync::Arc;

use super::{table, CmdResult};
use crate::controller::Core;
use crate::timefmt::utc;

pub fn list(core: &Arc<Core>, app: Option<&str>, n: i64, json: bool) -> CmdResult {
    let rows = core.audit_trail(app, n.clamp(1, 10_000))?;
    if json {
        return Ok(table::json(&rows));
    }
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| {
            vec![
                utc(r.at),
                r.key_name,
                r.app.unwrap_or_else(|| "-".into()),
                r.outcome,
                r.command,
                r.detail,
            ]
        })
        .collect();
    Ok(table::render(
        &["TIME", "KEY", "APP", "OUTCOME", "COMMAND", "DETAIL"],
        &rows,
    ))
}
