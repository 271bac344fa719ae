//! `services:info NAME [--show-credentials]` (viewer; credentials: owner).

use super::{CmdResult, Command, Ctx, Done, Mode, Need};
use crate::access::AppRole;
use crate::names::ServiceName;
use crate::timefmt::utc;

/// Show a service: state, node, version, size on disk, memory, connections, links
#[derive(Debug, clap::Args)]
pub struct ServicesInfo {
    name: ServiceName,
    /// Also print each link's URL, password included (owner)
    #[arg(long)]
    show_credentials: bool,
    #[arg(long)]
    json: bool,
}

impl Command for ServicesInfo {
    const NEED: Need = Need::Service(AppRole::Viewer);
    const MODE: Mode = Mode::Streams;

    fn service(&self) -> Option<&str> {
        Some(&self.name)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let need = match self.show_credentials {
            true => AppRole::Owner,
            false => AppRole::Viewer,
        };
        let row = cx
            .core
            .require_service(cx.who, &self.name, need, "read the credentials of")?;
        let v = cx.core.service_view(row, self.show_credentials).await?;
        let st = &v.status;
        if self.json {
            let links: Vec<_> = v
                .links
                .iter()
                .map(
                    |l| serde_json::json!({"app": l.app, "env": l.env, "var": l.var, "url": l.url}),
                )
                .collect();
            return Ok(super::table::json(&serde_json::json!({
                "name": v.row.name, "type": v.row.kind, "env": v.row.env, "app": v.row.app,
                "node": v.row.node, "image": v.row.image, "state": st.state,
                "version": st.version, "size": st.size, "connections": st.connections,
                "memory": v.memory(),
                "restarts": st.restarts, "created_at": v.row.created_at, "links": links,
                "backups": v.schedule,
            }))
            .into());
        }
        let mut out = String::new();
        let mut line = |k: &str, v: String| out.push_str(&format!("{k:<12} {v}\n"));
        line("service", v.row.name.clone());
        line("type", format!("{} ({})", v.row.kind, v.row.image));
        line("version", or_dash(&st.version));
        line("env", v.row.env.clone());
        line(
            "app",
            v.row.app.clone().unwrap_or_else(|| "- (global)".into()),
        );
        line("node", v.row.node.clone());
        line("state", st.state.clone());
        line("restarts", st.restarts.to_string());
        line("size", crate::controller::view::human(st.size));
        line("memory", crate::controller::view::human(v.memory() as u64));
        line(
            "connections",
            st.connections.map_or("-".into(), |c| c.to_string()),
        );
        line("created", utc(v.row.created_at));
        match &v.schedule {
            None => line(
                "backups",
                "not scheduled (services:backup takes one)".into(),
            ),
            Some(b) => {
                line(
                    "backups",
                    format!(
                        "every {}, the newest {} kept",
                        crate::controller::interval_words(b.every),
                        b.keep
                    ),
                );
                line("last backup", b.last.map_or("-".into(), utc));
                line("next backup", b.next.map_or("-".into(), utc));
                if let (Some(e), Some(at)) = (&b.error, b.error_at) {
                    line(
                        "backup error",
                        format!("{} failed in a row, last at {}: {e}", b.failures, utc(at)),
                    );
                }
            }
        }
        if v.links.is_empty() {
            line("links", "-".into());
        }
        for l in &v.links {
            let url = l
                .url
                .as_deref()
                .map(|u| format!(" = {u}"))
                .unwrap_or_default();
            line("link", format!("{} ({}) {}{url}", l.app, l.env, l.var));
        }
        Ok(out.into())
    }
}

fn or_dash(s: &str) -> String {
    match s {
        "" => "-".into(),
        s => s.into(),
    }
}
