//! `deploy APP VERSION [--env E]` (deployer): an existing release to an environment.

use super::{CmdResult, Command, Ctx, Done, Mode, Need};
use crate::access::AppRole;
use crate::names::{AppName, EnvName, Version};

/// Deploy an existing release to an environment (deployer)
#[derive(Debug, clap::Args)]
pub struct Deploy {
    app: AppName,
    version: Version,
    #[arg(long, default_value = "production")]
    env: EnvName,
}

impl Command for Deploy {
    const NEED: Need = Need::App(AppRole::Deployer);
    const MODE: Mode = Mode::Streams;

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let (app, v, env) = (&self.app, self.version, &self.env);
        cx.core.deploy(&cx.who.name, app, v.0, env, cx.out).await?;
        Ok(format!("{v} of {app} is live in {env}\n").into())
    }
}
