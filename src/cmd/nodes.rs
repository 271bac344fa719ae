//! `nodes` (admin): the nodes, the built-in one included.

use super::{table, CmdResult, Command, Ctx, Done, Need};

/// List nodes (admin)
#[derive(Debug, clap::Args)]
pub struct Nodes {
    #[arg(long)]
    json: bool,
}

impl Command for Nodes {
    const NEED: Need = Need::Admin;

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let (nodes, json) = (cx.core.nodes()?, self.json);
        if json {
            return Ok(table::json(&nodes).into());
        }
        let rows: Vec<Vec<String>> = nodes
            .iter()
            .map(|n| {
                let labels: Vec<String> =
                    n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                vec![
                    n.name.clone(),
                    n.addr.clone(),
                    labels.join(","),
                    match n.slots {
                        0 => "-".to_string(),
                        n => n.to_string(),
                    },
                    n.host_fp.clone(),
                ]
            })
            .collect();
        Ok(table::render(&["NODE", "ADDRESS", "LABELS", "SLOTS", "HOST KEY"], &rows).into())
    }
}
