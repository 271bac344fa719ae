//! releases, releases:info.

use std::sync::Arc;

use super::{table, CmdError, CmdResult};
use crate::controller::view::{human, Listed};
use crate::controller::Core;
use crate::timefmt::utc;

pub fn parse_version(v: &str) -> Result<i64, CmdError> {
    v.strip_prefix('v')
        .unwrap_or(v)
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| CmdError::Invalid(format!("'{v}' is not a release version (like v3)")))
}

pub fn list(core: &Arc<Core>, app: &str, json: bool) -> CmdResult {
    let rows = core.releases(app)?;
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|Listed { release: r, live_in }| {
                serde_json::json!({
                    "version": r.version, "sha256": r.sha256, "git_sha": r.git_sha, "ref": r.git_ref,
                    "size": r.size, "by": r.key_name, "created_at": r.created_at, "status": r.status,
                    "pinned": r.pinned, "live": live_in,
                })
            })
            .collect();
        return Ok(table::json(&v));
    }
    if rows.is_empty() {
        return Ok(format!(
            "no releases of '{app}' yet; git push to build one\n"
        ));
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(
            |Listed {
                 release: r,
                 live_in,
             }| {
                vec![
                    format!("v{}", r.version),
                    r.sha256[..12].to_string(),
                    r.git_sha[..7].to_string(),
                    r.git_ref.rsplit('/').next().unwrap_or("").to_string(),
                    human(r.size as u64),
                    r.key_name.clone(),
                    utc(r.created_at),
                    if live_in.is_empty() {
                        "-".to_string()
                    } else {
                        live_in.join(",")
                    },
                ]
            },
        )
        .collect();
    Ok(table::render(
        &[
            "VERSION", "SHA256", "COMMIT", "REF", "SIZE", "BY", "CREATED", "STATUS",
        ],
        &rows,
    ))
}

pub fn info(core: &Arc<Core>, app: &str, version: &str, json: bool) -> CmdResult {
    let v = parse_version(version)?;
    let r = core.release(app, v)?;
    let manifest: serde_json::Value = serde_json::from_str(&r.manifest).unwrap_or_default();
    let doc = serde_json::json!({
        "app": r.app, "version": r.version, "sha256": r.sha256, "tar_sha256": r.tar_sha256,
        "size": r.size, "git_sha": r.git_sha, "ref": r.git_ref, "build": r.build_id, "file": r.file,
        "by": r.key_name, "created_at": r.created_at, "status": r.status, "pinned": r.pinned,
        "manifest": manifest,
    });
    if json {
        return Ok(table::json(&doc));
    }
    let mut s = format!(
        "release:    v{}\nsha256:     {}\ncommit:     {} ({})\nsize:       {}\nbuilt by:   {} at {}\nstatus:     {}\n",
        r.version,
        r.sha256,
        r.git_sha,
        r.git_ref,
        human(r.size as u64),
        r.key_name,
        utc(r.created_at),
        r.status
    );
    s += &format!(
        "stack:      {} ({})\nbuildpacks: {}\n",
        manifest["stack"].as_str().unwrap_or("?"),
        manifest["stack_image"].as_str().unwrap_or("?"),
        manifest["buildpacks"]
            .as_array()
            .map(|a| a
                .iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default()
    );
    if let Some(rel) = manifest["release"].as_str() {
        s += &format!("release cmd: {rel}\n");
    }
    s += "processes:\n";
    if let Some(p) = manifest["processes"].as_object() {
        for (k, v) in p {
            s += &format!("  {k}: {}\n", v.as_str().unwrap_or(""));
        }
    }
    Ok(s)
}
