//! `builds:log APP [ID]` (viewer).

use super::{CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::names::AppName;

/// Show a build's log (default: the latest)
#[derive(Debug, clap::Args)]
pub struct BuildsLog {
    app: AppName,
    id: Option<i64>,
}

impl Command for BuildsLog {
    const NEED: Need = Need::App(AppRole::Viewer);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        Ok(cx.core.build_log(&self.app, self.id)?.into())
    }
}
