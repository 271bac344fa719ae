//! `config:get APP KEY [--env E]` (owner); a linked service's URL with its password masked.

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
        let (vars, masked) = cx.core.config_shown(app, env)?;
        let v = vars
            .get(key)
            .ok_or_else(|| CmdError::Invalid(format!("{key} is not set for {app} in {env}")))?;
        let mut out = format!("{v}\n");
        if let Some((var, service)) = masked.iter().find(|(var, _)| var == key) {
            out.push_str(&super::config::hidden_note(var, service));
        }
        Ok(out.into())
    }
}
