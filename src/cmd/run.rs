//! `run APP [--env E] -- CMD ARGS...` (owner): a one-off container of the live release. The
//! core resolves it to a node; `ssh/` bridges the user's channel to it.

use super::{CmdResult, Command, Ctx, Done, Mode, Need};
use crate::access::AppRole;
use crate::names::{AppName, EnvName};

/// Run a command in a one-off container of the live release: run APP -- CMD ARGS (owner)
#[derive(Debug, clap::Args)]
pub struct Run {
    app: AppName,
    #[arg(long, default_value = "production")]
    env: EnvName,
    /// The command and its arguments, after '--'
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

impl Command for Run {
    const NEED: Need = Need::App(AppRole::Owner);
    const MODE: Mode = Mode::Session;

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let session = cx
            .core
            .run_session(&self.app, &self.env, self.command)
            .await?;
        Ok(Done::Session(Box::new(session)))
    }
}
