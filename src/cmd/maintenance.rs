//! `maintenance:on APP [--env E]` and `maintenance:off APP [--env E]` (owner): while on,
//! the router answers every request to the app's environment (production by default) with
//! a 503 and its maintenance page (`maintenance.html` at the top of that environment's live
//! commit, read when maintenance goes on; a default text without one). Other environments
//! are not affected; the processes keep running.

use super::{CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::names::{AppName, EnvName};

/// Answer every request with a 503 and the app's maintenance page (owner)
#[derive(Debug, clap::Args)]
pub struct MaintenanceOn {
    app: AppName,
    /// The environment (default: production)
    #[arg(long, default_value = "production")]
    env: EnvName,
}

/// Serve the app again (owner)
#[derive(Debug, clap::Args)]
pub struct MaintenanceOff {
    app: AppName,
    /// The environment (default: production)
    #[arg(long, default_value = "production")]
    env: EnvName,
}

impl Command for MaintenanceOn {
    const NEED: Need = Need::App(AppRole::Owner);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let custom = cx.core.set_maintenance(&self.app, &self.env, true)?;
        let page = if custom {
            "its maintenance.html"
        } else {
            "the default page (add maintenance.html to the repo for your own)"
        };
        Ok(format!(
            "{} is in maintenance in {}: every request there gets a 503 with {page}\n",
            self.app, self.env
        )
        .into())
    }
}

impl Command for MaintenanceOff {
    const NEED: Need = Need::App(AppRole::Owner);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        cx.core.set_maintenance(&self.app, &self.env, false)?;
        Ok(format!("{} is out of maintenance in {}\n", self.app, self.env).into())
    }
}
