//! `clusters` (admin): the clusters environments can run on.

use super::{table, CmdResult, Command, Ctx, Done, Need};

/// List clusters (admin)
#[derive(Debug, clap::Args)]
pub struct Clusters {
    #[arg(long)]
    json: bool,
}

impl Command for Clusters {
    const NEED: Need = Need::Admin;

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let clusters = cx.core.clusters()?;
        if self.json {
            return Ok(table::json(&clusters).into());
        }
        let rows: Vec<Vec<String>> = clusters
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    "swarm".into(),
                    c.addr.clone(),
                    c.host_fp.clone(),
                ]
            })
            .collect();
        Ok(table::render(&["CLUSTER", "KIND", "AGENT", "HOST KEY"], &rows).into())
    }
}
