//! `rollback APP [VERSION] [--env E] [--with-data]` (deployer).

use super::{CmdResult, Command, Ctx, Done, Mode, Need};
use crate::access::AppRole;
use crate::names::{AppName, EnvName, Version};

/// Go back to the previous release, or to vN (deployer)
#[derive(Debug, clap::Args)]
pub struct Rollback {
    app: AppName,
    version: Option<Version>,
    #[arg(long, default_value = "production")]
    env: EnvName,
    /// Also restore the data snapshot taken before the current release
    #[arg(long)]
    with_data: bool,
}

impl Command for Rollback {
    const NEED: Need = Need::App(AppRole::Deployer);
    const MODE: Mode = Mode::Streams;

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let (app, env) = (&self.app, &self.env);
        let v = cx
            .core
            .rollback(
                &cx.who.name,
                app,
                self.version.map(|v| v.0),
                env,
                self.with_data,
                cx.out,
            )
            .await?;
        Ok(format!("rolled back: v{v} of {app} is live in {env}\n").into())
    }
}
