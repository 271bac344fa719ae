//! `maintenance:on APP` and `maintenance:off APP` (owner): while on, the router answers
//! every request to the app with a 503 and its maintenance page (`maintenance.html` at the
//! top of the production release's commit, read when maintenance goes on; a default text
//! without one). The processes keep running.

use super::{CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::names::AppName;

/// Answer every request with a 503 and the app's maintenance page (owner)
#[derive(Debug, clap::Args)]
pub struct MaintenanceOn {
    app: AppName,
}

/// Serve the app again (owner)
#[derive(Debug, clap::Args)]
pub struct MaintenanceOff {
    app: AppName,
}

impl Command for MaintenanceOn {
    const NEED: Need = Need::App(AppRole::Owner);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let custom = cx.core.set_maintenance(&self.app, true)?;
        let page = if custom {
            "its maintenance.html"
        } else {
            "the default page (add maintenance.html to the repo for your own)"
        };
        Ok(format!(
            "{} is in maintenance: every request gets a 503 with {page}\n",
            self.app
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
        cx.core.set_maintenance(&self.app, false)?;
        Ok(format!("{} is out of maintenance\n", self.app).into())
    }
}
