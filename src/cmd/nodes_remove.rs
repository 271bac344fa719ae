//! `nodes:remove NAME` (admin).

use super::{CmdResult, Command, Ctx, Done, Need};
use crate::names::NodeName;

/// Forget a node (admin)
#[derive(Debug, clap::Args)]
pub struct NodesRemove {
    name: NodeName,
}

impl Command for NodesRemove {
    const NEED: Need = Need::Admin;

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        cx.core.remove_node(&self.name)?;
        Ok(format!(
            "removed node '{}' (its processes keep running until stopped there)\n",
            self.name
        )
        .into())
    }
}
