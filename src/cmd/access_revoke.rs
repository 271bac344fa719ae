//! `access:revoke APP KEY` (owner).

use super::{CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::names::{AppName, KeyName};

/// Take a key's access to an app away (owner)
#[derive(Debug, clap::Args)]
pub struct AccessRevoke {
    app: AppName,
    key: KeyName,
}

impl Command for AccessRevoke {
    const NEED: Need = Need::App(AppRole::Owner);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        cx.core.revoke(&self.app, &self.key)?;
        Ok(format!("revoked key '{}' on '{}'\n", self.key, self.app).into())
    }
}
