//! `apps:create NAME` (admin).

use super::{CmdResult, Command, Ctx, Done, Need};
use crate::names::AppName;

/// Create an app (admin)
#[derive(Debug, clap::Args)]
pub struct AppsCreate {
    name: AppName,
}

impl Command for AppsCreate {
    const NEED: Need = Need::Admin;

    fn app(&self) -> Option<&str> {
        Some(&self.name)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let name = self.name;
        cx.core.create_app(cx.who, &name)?;
        Ok(format!("created app '{name}'\n").into())
    }
}
