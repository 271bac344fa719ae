//! `config APP [--env E]` (owner): an environment's config vars. Values live on the
//! controller only, sealed at rest. A linked service's URL is shown with its password
//! masked (`services:info NAME --show-credentials` is the one place that prints it).

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
        let (vars, masked) = cx.core.config_shown(app, env)?;
        if self.json {
            return Ok(table::json(&vars).into());
        }
        if vars.is_empty() {
            return Ok(format!("no config vars for {app} in {env}\n").into());
        }
        let mut out: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        for (var, service) in masked {
            out.push_str(&hidden_note(&var, &service));
        }
        Ok(out.into())
    }
}

/// Says where a masked service URL's password can be read.
pub(super) fn hidden_note(var: &str, service: &str) -> String {
    format!(
        "# {var}: the password of service {service} is hidden; `services:info {service} --show-credentials` shows it\n"
    )
}
