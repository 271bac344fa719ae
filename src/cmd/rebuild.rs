//! `rebuild APP [--env E]` (deployer; Dokku's `ps:rebuild`): the commit live in an
//! environment built again and deployed there.

use super::{CmdResult, Command, Ctx, Done, Mode, Need};
use crate::access::AppRole;
use crate::names::{AppName, EnvName};

/// Build the live commit again and deploy it (deployer)
#[derive(Debug, clap::Args)]
pub struct Rebuild {
    app: AppName,
    #[arg(long, default_value = "production")]
    env: EnvName,
}

impl Command for Rebuild {
    const NEED: Need = Need::App(AppRole::Deployer);
    const MODE: Mode = Mode::Streams;

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let (app, env) = (&self.app, &self.env);
        let v = cx.core.rebuild(&cx.who.name, app, env, cx.out).await?;
        Ok(format!("v{v} of {app} (rebuilt) is live in {env}\n").into())
    }
}
