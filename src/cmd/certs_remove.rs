//! `certs:remove APP ID` (owner).

use super::{CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::names::AppName;

/// Remove a TLS certificate by its id in `certs` (owner)
#[derive(Debug, clap::Args)]
pub struct CertsRemove {
    app: AppName,
    id: i64,
}

impl Command for CertsRemove {
    const NEED: Need = Need::App(AppRole::Owner);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        cx.core.remove_cert(&self.app, self.id)?;
        Ok(format!("removed certificate {} of {}\n", self.id, self.app).into())
    }
}
