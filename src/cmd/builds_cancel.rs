//! `builds:cancel APP` (deployer).

use super::{CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::names::AppName;

/// Cancel an app's running build (deployer)
#[derive(Debug, clap::Args)]
pub struct BuildsCancel {
    app: AppName,
}

impl Command for BuildsCancel {
    const NEED: Need = Need::App(AppRole::Deployer);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let id = cx.core.cancel_build(&self.app)?;
        Ok(format!("cancelling build {id} of '{}'\n", self.app).into())
    }
}
