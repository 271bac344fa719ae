//! `certs:auto:enable APP [--env E]` (owner): certificates from ACME for the environment's
//! custom domains, renewed by themselves (Heroku's ACM, Dokku's letsencrypt plugin).

use super::{CmdResult, Command, Ctx, Done, Mode, Need};
use crate::access::AppRole;
use crate::names::{AppName, EnvName};
use crate::timefmt::utc;

/// Order certificates for the app's domains through ACME, renewed automatically (owner)
#[derive(Debug, clap::Args)]
pub struct CertsAutoEnable {
    app: AppName,
    #[arg(long, default_value = "production")]
    env: EnvName,
}

impl Command for CertsAutoEnable {
    const NEED: Need = Need::App(AppRole::Owner);
    const MODE: Mode = Mode::Streams;

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let row = cx.core.acme_enable(&self.app, &self.env, cx.out).await?;
        Ok(format!(
            "automatic certificates on for {} in {}: {} (renewal from {})\n",
            self.app,
            self.env,
            row.domains.join(", "),
            utc(row.next_attempt)
        )
        .into())
    }
}
