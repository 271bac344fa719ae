//! access, access:grant, access:revoke.

use std::sync::Arc;

use super::{table, CmdError, CmdResult};
use crate::access::AppRole;
use crate::controller::{Core, NewGrant};

pub fn list(core: &Arc<Core>, app: &str, json: bool) -> CmdResult {
    let rows = core.grants(app)?;
    if json {
        return Ok(table::json(&rows));
    }
    if rows.is_empty() {
        return Ok(format!("only admins have access to '{app}'\n"));
    }
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| {
            let tags = match (r.tags, r.allow_retag) {
                (Some(t), true) => format!("{t} (may retag)"),
                (Some(t), false) => t,
                (None, _) => "-".into(),
            };
            vec![r.key, r.role, tags]
        })
        .collect();
    Ok(table::render(&["KEY", "ROLE", "TAGS"], &rows))
}

pub fn grant(
    core: &Arc<Core>,
    app: &str,
    key: &str,
    role: &str,
    tags: Option<&str>,
    allow_retag: bool,
) -> CmdResult {
    crate::names::check("key", key)?;
    let role: AppRole = role.parse().map_err(CmdError::Invalid)?;
    if let Some(p) = tags {
        if !crate::names::valid_tag_pattern(p) {
            return Err(CmdError::Invalid(format!(
                "invalid tag pattern '{p}': use letters, digits and . - _ / * ?"
            )));
        }
        if role < AppRole::Deployer {
            return Err(CmdError::Invalid(
                "--tags limits pushes; it needs role deployer or owner".into(),
            ));
        }
    }
    if allow_retag && tags.is_none() {
        return Err(CmdError::Invalid(
            "--allow-retag applies to a tag-limited key; it needs --tags".into(),
        ));
    }
    core.grant(NewGrant {
        app,
        key,
        role,
        tags,
        allow_retag,
    })?;
    let limit = match tags {
        Some(p) if allow_retag => {
            format!(", pushes limited to tags '{p}' (which it may also move and delete)")
        }
        Some(p) => format!(", pushes limited to tags '{p}' (which it may not move or delete)"),
        None => String::new(),
    };
    Ok(format!("key '{key}' is now {role} on '{app}'{limit}\n"))
}

pub fn revoke(core: &Arc<Core>, app: &str, key: &str) -> CmdResult {
    core.revoke(app, key)?;
    Ok(format!("revoked key '{key}' on '{app}'\n"))
}
