//! `stop APP` and `start APP` (owner): one family, the same rollout either way.

use super::{CmdResult, Command, Ctx, Done, Mode, Need};
use crate::access::AppRole;
use crate::names::{AppName, EnvName};

/// Stop every process; release, config and data stay (owner)
#[derive(Debug, clap::Args)]
pub struct Stop {
    app: AppName,
    #[arg(long, default_value = "production")]
    env: EnvName,
}

/// Start a stopped app again (owner)
#[derive(Debug, clap::Args)]
pub struct Start {
    app: AppName,
    #[arg(long, default_value = "production")]
    env: EnvName,
}

impl Command for Stop {
    const NEED: Need = Need::App(AppRole::Owner);
    const MODE: Mode = Mode::Streams;

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        set_stopped(cx, &self.app, &self.env, true).await
    }
}

impl Command for Start {
    const NEED: Need = Need::App(AppRole::Owner);
    const MODE: Mode = Mode::Streams;

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        set_stopped(cx, &self.app, &self.env, false).await
    }
}

async fn set_stopped(cx: &mut Ctx<'_>, app: &str, env: &str, stop: bool) -> CmdResult<Done> {
    if !cx
        .core
        .set_stopped(&cx.who.name, app, env, stop, cx.out)
        .await?
    {
        let state = if stop { "stopped" } else { "running" };
        return Ok(format!("{app} is already {state} in {env}; nothing changed\n").into());
    }
    Ok(if stop {
        format!("{app} is stopped in {env}; its release and data are kept\n")
    } else {
        format!("{app} is running in {env} again\n")
    }
    .into())
}
