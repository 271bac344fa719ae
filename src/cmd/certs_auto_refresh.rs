//! `certs:auto:refresh APP [--env E]` (owner): order a new automatic certificate now.

use super::{CmdResult, Command, Ctx, Done, Mode, Need};
use crate::access::AppRole;
use crate::names::{AppName, EnvName};
use crate::timefmt::utc;

/// Renew the automatic certificate now (owner)
#[derive(Debug, clap::Args)]
pub struct CertsAutoRefresh {
    app: AppName,
    #[arg(long, default_value = "production")]
    env: EnvName,
}

impl Command for CertsAutoRefresh {
    const NEED: Need = Need::App(AppRole::Owner);
    const MODE: Mode = Mode::Streams;

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let row = cx.core.acme_refresh(&self.app, &self.env, cx.out).await?;
        Ok(format!(
            "renewed the certificate of {} in {}: {} (next renewal from {})\n",
            self.app,
            self.env,
            row.domains.join(", "),
            utc(row.next_attempt)
        )
        .into())
    }
}
