//! `config APP [--env E]` (owner): an environment's config vars. Values live on the
//! controller only, sealed at rest.

use super::{table, CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::names::{AppName, EnvName};

/// Show config vars (owner)
#[derive(Debug, clap::Args)]
pub struct Config {
    app: AppName,
    #[arg(long, default_value = "production")]
    env: EnvName,
    #[arg(long)]
    json: bool,
}

impl Command for Config {
    const NEED: Need = Need::App(AppRole::Owner);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let (app, env) = (&self.app, &self.env);
        let vars = cx.core.config(app, env)?;
        if self.json {
            return Ok(table::json(&vars).into());
        }
        if vars.is_empty() {
            return Ok(format!("no config vars for {app} in {env}\n").into());
        }
        Ok(vars
            .iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect::<String>()
            .into())
    }
}
