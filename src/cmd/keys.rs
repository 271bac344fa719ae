//! keys, keys:add, keys:remove.

use std::sync::Arc;

use super::{table, CmdError, CmdResult};
use crate::access::KeyRole;
use crate::controller::Core;
use crate::timefmt::utc;

pub fn list(core: &Arc<Core>, json: bool) -> CmdResult {
    let keys = core.keys()?;
    if json {
        return Ok(table::json(&keys));
    }
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.name.clone(),
                k.role.clone(),
                k.fingerprint.clone(),
                utc(k.created_at),
            ]
        })
        .collect();
    Ok(table::render(
        &["NAME", "ROLE", "FINGERPRINT", "ADDED"],
        &rows,
    ))
}

pub fn add(core: &Arc<Core>, name: &str, role: &str, stdin: &[u8]) -> CmdResult {
    crate::names::check("key", name)?;
    let role: KeyRole = role.parse().map_err(CmdError::Invalid)?;
    let text = std::str::from_utf8(stdin)
        .map_err(|_| CmdError::Invalid("the public key on stdin is not UTF-8".into()))?;
    let key = crate::keys::parse_public(text).map_err(|e| {
        CmdError::Invalid(format!("{e}; pipe it in: ssh paas keys:add NAME < key.pub"))
    })?;
    core.add_key(name, &key, role)?;
    Ok(format!(
        "added key '{name}' ({}, {})\n",
        role.as_str(),
        key.fingerprint
    ))
}

pub fn remove(core: &Arc<Core>, name: &str) -> CmdResult {
    core.remove_key(name)?;
    Ok(format!("removed key '{name}'\n"))
}
