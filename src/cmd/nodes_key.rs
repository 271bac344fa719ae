//! `nodes:key` (admin): the controller's public key.

use super::{CmdResult, Command, Ctx, Done, Need};

/// Print the controller's public key, for 'magrathea agent --controller-key' (admin)
#[derive(Debug, clap::Args)]
pub struct NodesKey {}

impl Command for NodesKey {
    const NEED: Need = Need::Admin;

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        Ok(format!("{}\n", cx.core.controller_key()?).into())
    }
}
