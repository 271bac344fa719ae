//! `clusters:remove NAME` (admin): refused while an environment runs on it.

use super::{CmdResult, Command, Ctx, Done, Need};
use crate::names::NodeName;

/// Forget a cluster no environment runs on (admin)
#[derive(Debug, clap::Args)]
pub struct ClustersRemove {
    name: NodeName,
}

impl Command for ClustersRemove {
    const NEED: Need = Need::Admin;

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        cx.core.remove_cluster(&self.name)?;
        Ok(format!("removed cluster '{}'\n", self.name).into())
    }
}
