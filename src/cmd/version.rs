//! `version`.

use super::{CmdResult, Command, Ctx, Done, Need};

/// Show the server's version
#[derive(Debug, clap::Args)]
pub struct Version {}

impl Command for Version {
    const NEED: Need = Need::Anyone;

    async fn apply(self, _: &mut Ctx<'_>) -> CmdResult<Done> {
        Ok(format!("magrathea {}\n", env!("CARGO_PKG_VERSION")).into())
    }
}
