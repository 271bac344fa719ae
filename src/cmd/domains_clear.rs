//! `domains:clear APP [--env E]` (owner): every custom domain of the environment goes; the
//! default host stays.

use super::{CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::names::{AppName, EnvName};

/// Remove every custom domain of an app's environment (owner)
#[derive(Debug, clap::Args)]
pub struct DomainsClear {
    app: AppName,
    #[arg(long, default_value = "production")]
    env: EnvName,
}

impl Command for DomainsClear {
    const NEED: Need = Need::App(AppRole::Owner);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let n = cx.core.clear_domains(&self.app, &self.env)?;
        Ok(format!(
            "removed {n} domain{} of {} in {}; it still answers at {}\n",
            if n == 1 { "" } else { "s" },
            self.app,
            self.env,
            cx.core.default_host(&self.app, &self.env)
        )
        .into())
    }
}
