//! `releases:info APP VERSION` (viewer): a release's manifest.

use super::{table, CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::controller::view::human;
use crate::names::{AppName, Version};
use crate::timefmt::utc;

/// Show a release's manifest
#[derive(Debug, clap::Args)]
pub struct ReleasesInfo {
    app: AppName,
    version: Version,
    #[arg(long)]
    json: bool,
}

impl Command for ReleasesInfo {
    const NEED: Need = Need::App(AppRole::Viewer);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let json = self.json;
        let r = cx.core.release(&self.app, self.version.0)?;
        let manifest: serde_json::Value = serde_json::from_str(&r.manifest).unwrap_or_default();
        // Taken before its release command: what `rollback --with-data` from it restores.
        let backups = cx.core.release_backups(&self.app, self.version.0)?;
        let doc = serde_json::json!({
            "app": r.app, "version": r.version, "sha256": r.sha256, "tar_sha256": r.tar_sha256,
            "size": r.size, "git_sha": r.git_sha, "ref": r.git_ref, "build": r.build_id, "file": r.file,
            "by": r.key_name, "created_at": r.created_at, "status": r.status, "pinned": r.pinned,
            "manifest": manifest,
            "backups": backups.iter().map(|b| serde_json::json!({
                "service": b.service, "id": b.id, "env": b.release.as_ref().map(|r| &r.env),
                "created": utc(b.created_at), "size": b.size, "sha256": b.sha256,
                "verified": b.verified,
            })).collect::<Vec<_>>(),
        });
        if json {
            return Ok(table::json(&doc).into());
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
        if !backups.is_empty() {
            s += "service backups (taken before its release command):\n";
        }
        for b in &backups {
            let env = b.release.as_ref().map(|r| r.env.as_str()).unwrap_or("?");
            s += &format!(
                "  {} #{} ({env}): {}, {}, sha256 {}\n",
                b.service,
                b.id,
                human(b.size),
                utc(b.created_at),
                &b.sha256[..12]
            );
        }
        Ok(s.into())
    }
}
