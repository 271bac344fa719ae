//! `releases APP` (viewer).

use super::{table, CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::controller::view::{human, Listed};
use crate::names::AppName;
use crate::timefmt::utc;

/// List an app's releases
#[derive(Debug, clap::Args)]
pub struct Releases {
    app: AppName,
    #[arg(long)]
    json: bool,
}

impl Command for Releases {
    const NEED: Need = Need::App(AppRole::Viewer);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let app = &self.app;
        let rows = cx.core.releases(app)?;
        if self.json {
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
            return Ok(table::json(&v).into());
        }
        if rows.is_empty() {
            return Ok(format!("no releases of '{app}' yet; git push to build one\n").into());
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
        )
        .into())
    }
}
