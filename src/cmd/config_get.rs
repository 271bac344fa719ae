//! `config:get APP KEY [--env E]` (owner).

use super::{CmdError, CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::names::{AppName, EnvName};

/// Show one config var (owner)
#[derive(Debug, clap::Args)]
pub struct ConfigGet {
    app: AppName,
    key: String,
    #[arg(long, default_value = "production")]
    env: EnvName,
}

impl Command for ConfigGet {
    const NEED: Need = Need::App(AppRole::Owner);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let (app, key, env) = (&self.app, &self.key, &self.env);
        let vars = cx.core.config(app, env)?;
        vars.get(key)
            .map(|v| format!("{v}\n").into())
            .ok_or_else(|| CmdError::Invalid(format!("{key} is not set for {app} in {env}")))
    }
}
