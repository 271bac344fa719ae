//! `apps:info NAME` (viewer).

use super::{table, CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::controller::view::human;
use crate::names::AppName;
use crate::timefmt::utc;

/// Show an app
#[derive(Debug, clap::Args)]
pub struct AppsInfo {
    name: AppName,
    #[arg(long)]
    json: bool,
}

impl Command for AppsInfo {
    const NEED: Need = Need::App(AppRole::Viewer);

    fn app(&self) -> Option<&str> {
        Some(&self.name)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let app = cx.core.app(&self.name)?;
        let mut u = cx
            .core
            .usage(&self.name, None, crate::timefmt::now() - 86_400)?;
        u.disk = cx.core.disk_use_everywhere(&self.name).await?;
        let envs = cx.core.all_env_settings(&self.name)?;
        let in_maintenance: Vec<&str> = envs
            .iter()
            .filter(|(_, s)| s.maintenance)
            .map(|(e, _)| e.as_str())
            .collect();
        let s = cx.core.app_settings(&self.name, "production")?;
        let t = &u.total;
        let auto = cx.core.acme_status(&self.name)?;
        if self.json {
            return Ok(table::json(&serde_json::json!({
                "name": app.name, "created_at": app.created_at, "created_by": app.created_by,
                "uid": app.uid,
                "requests_24h": t.requests, "bytes_in_24h": t.bytes_in, "bytes_out_24h": t.bytes_out,
                "disk": u.disk, "maintenance": s.maintenance, "maintenance_envs": in_maintenance,
                "acl": {"allow": s.allow, "deny": s.deny}, "limits": s.limits,
                "certs_auto": auto,
            }))
            .into());
        }
        let mut out = format!(
            "name:     {}\ncreated:  {} by {}\nuid:      {} (its builds and processes run as it)\n",
            app.name,
            utc(app.created_at),
            app.created_by,
            app.uid
        );
        out += &format!(
            "traffic:  {} requests in 24h ({} in, {} out; 4xx {}, 5xx {})\ndisk:     {} ({})\n",
            t.requests,
            human(t.bytes_in),
            human(t.bytes_out),
            t.status[3],
            t.status[4],
            human(u.disk.total),
            u.disk.parts()
        );
        if !in_maintenance.is_empty() {
            out += &format!(
                "maintenance: on in {} (every request there gets a 503)\n",
                in_maintenance.join(", ")
            );
        }
        if !s.allow.is_empty() || !s.deny.is_empty() {
            out += &format!(
                "acl:      allow {}; deny {}\n",
                if s.allow.is_empty() {
                    "any".to_string()
                } else {
                    s.allow.join(" ")
                },
                if s.deny.is_empty() {
                    "none".to_string()
                } else {
                    s.deny.join(" ")
                }
            );
        }
        if let Some(q) = s.limits.disk {
            out += &format!("quota:    {} of disk\n", human(q));
        }
        // Automatic certificates, a failing renewal included.
        out += &super::certs_auto::render(&auto);
        Ok(out.into())
    }
}
