//! `domains APP [--env E]` (viewer): the hosts an app answers at: its default host and its
//! custom domains, with the environment each routes to.

use super::{table, CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::names::{AppName, EnvName};

/// List an app's hosts: its default one and its custom domains (viewer)
#[derive(Debug, clap::Args)]
pub struct Domains {
    app: AppName,
    /// Only this environment's
    #[arg(long)]
    env: Option<EnvName>,
    #[arg(long)]
    json: bool,
}

impl Command for Domains {
    const NEED: Need = Need::App(AppRole::Viewer);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let app: &str = &self.app;
        let mut domains = cx.core.domains(app)?;
        if let Some(env) = &self.env {
            domains.retain(|d| d.env == **env);
        }
        if self.json {
            return Ok(table::json(&domains).into());
        }
        let env = self.env.as_deref().unwrap_or("production");
        let mut rows = vec![vec![
            cx.core.default_host(app, env),
            env.to_string(),
            "default".to_string(),
        ]];
        rows.extend(
            domains
                .iter()
                .map(|d| vec![d.host.clone(), d.env.clone(), "custom".to_string()]),
        );
        let settings = cx.core.route_settings(app, env)?;
        Ok(format!(
            "{}{app} in {env}: {}\n",
            table::render(&["HOST", "ENV", "KIND"], &rows),
            super::routing_set::describe(&settings)
        )
        .into())
    }
}
