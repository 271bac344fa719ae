//! `restart APP [TYPE] [--env E]` (owner): a rolling restart.

use super::{CmdResult, Command, Ctx, Done, Mode, Need};
use crate::access::AppRole;
use crate::names::{AppName, EnvName, ProcessType};

/// Rolling restart: new processes first, then the old ones drain (owner)
#[derive(Debug, clap::Args)]
pub struct Restart {
    app: AppName,
    /// Only this process type
    ptype: Option<ProcessType>,
    #[arg(long, default_value = "production")]
    env: EnvName,
}

impl Command for Restart {
    const NEED: Need = Need::App(AppRole::Owner);
    const MODE: Mode = Mode::Streams;

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let (app, env, ptype) = (&self.app, &self.env, self.ptype.as_deref());
        cx.core
            .restart(&cx.who.name, app, env, ptype, cx.out)
            .await?;
        Ok(format!(
            "restarted {} of {app} in {env}\n",
            ptype.unwrap_or("every process")
        )
        .into())
    }
}
