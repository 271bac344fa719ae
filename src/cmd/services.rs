//! `services [--json]`: the services the key can see (all, for admins), with their state.

use super::{table, CmdResult, Command, Ctx, Done, Mode, Need};

/// List the services you can see: Postgres, Redis, MariaDB
#[derive(Debug, clap::Args)]
pub struct Services {
    #[arg(long)]
    json: bool,
}

impl Command for Services {
    const NEED: Need = Need::Anyone;
    const MODE: Mode = Mode::Streams;

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let list = cx.core.list_services(cx.who).await?;
        if self.json {
            let v: Vec<_> = list
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "name": s.row.name,
                        "type": s.row.kind,
                        "env": s.row.env,
                        "node": s.row.node,
                        "state": s.status.state,
                        "app": s.row.app,
                        "memory": s.memory(),
                        "links": s.links.iter().map(|l| serde_json::json!({
                            "app": l.app, "env": l.env, "var": l.var,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            return Ok(table::json(&v).into());
        }
        if list.is_empty() {
            return Ok("no services; declare one in magrathea.yml (services: { db: postgres }) or run services:create\n".to_string().into());
        }
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|s| {
                let links: Vec<String> = s
                    .links
                    .iter()
                    .map(|l| format!("{}/{} {}", l.app, l.env, l.var))
                    .collect();
                vec![
                    s.row.name.clone(),
                    s.row.kind.clone(),
                    s.row.env.clone(),
                    s.row.node.clone(),
                    s.status.state.clone(),
                    if links.is_empty() {
                        "-".into()
                    } else {
                        links.join(", ")
                    },
                ]
            })
            .collect();
        Ok(table::render(
            &["SERVICE", "TYPE", "ENV", "NODE", "STATE", "LINKED"],
            &rows,
        )
        .into())
    }
}
