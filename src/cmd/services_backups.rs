//! `services:backups NAME [--json]` (viewer of the service's app).

use super::{CmdResult, Command, Ctx, Done, Mode, Need};
use crate::access::AppRole;
use crate::names::ServiceName;
use crate::timefmt::utc;

/// List a service's backups, newest first
#[derive(Debug, clap::Args)]
pub struct ServicesBackups {
    name: ServiceName,
    #[arg(long)]
    json: bool,
}

impl Command for ServicesBackups {
    const NEED: Need = Need::Service(AppRole::Viewer);
    const MODE: Mode = Mode::Quick;

    fn service(&self) -> Option<&str> {
        Some(&self.name)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let rows = cx.core.service_backups(&self.name)?;
        let release = |b: &crate::controller::view::BackupRow| {
            b.release
                .as_ref()
                .map(|r| format!("v{} ({})", r.version, r.env))
        };
        if self.json {
            let v: Vec<_> = rows
                .iter()
                .map(|b| {
                    serde_json::json!({
                        "id": b.id, "created": utc(b.created_at), "size": b.size,
                        "sha256": b.sha256, "reason": b.reason, "verified": b.verified,
                        "release": b.release,
                    })
                })
                .collect();
            return Ok(super::table::json(&v).into());
        }
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|b| {
                vec![
                    format!("#{}", b.id),
                    utc(b.created_at),
                    crate::controller::view::human(b.size),
                    b.reason.as_str().to_string(),
                    release(b).unwrap_or_else(|| "-".into()),
                    if b.verified { "yes" } else { "no" }.into(),
                    b.sha256[..12].to_string(),
                ]
            })
            .collect();
        let headers = [
            "ID", "CREATED", "SIZE", "WHY", "RELEASE", "VERIFIED", "SHA256",
        ];
        Ok(super::table::render(&headers, &table).into())
    }
}
