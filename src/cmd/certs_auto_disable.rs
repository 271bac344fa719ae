//! `certs:auto:disable APP [--env E]` (owner): no more ACME orders or renewals for the
//! environment; the last certificate stays served until it expires or `certs:remove`.

use super::{CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::names::{AppName, EnvName};

/// Stop ordering and renewing automatic certificates (owner)
#[derive(Debug, clap::Args)]
pub struct CertsAutoDisable {
    app: AppName,
    #[arg(long, default_value = "production")]
    env: EnvName,
}

impl Command for CertsAutoDisable {
    const NEED: Need = Need::App(AppRole::Owner);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        cx.core.acme_disable(&self.app, &self.env)?;
        Ok(format!(
            "automatic certificates off for {} in {}; the last one stays served until it expires (certs:remove removes it)\n",
            self.app, self.env
        )
        .into())
    }
}
