//! `domains:remove APP HOST... [--env E]` (owner).

use super::{CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::names::{AppName, EnvName, HostName};

/// Stop routing custom hosts to an app (owner)
#[derive(Debug, clap::Args)]
pub struct DomainsRemove {
    app: AppName,
    #[arg(value_name = "HOST", required = true)]
    hosts: Vec<HostName>,
    #[arg(long, default_value = "production")]
    env: EnvName,
}

impl Command for DomainsRemove {
    const NEED: Need = Need::App(AppRole::Owner);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        cx.core.remove_domains(&self.app, &self.env, &self.hosts)?;
        let names: Vec<&str> = self.hosts.iter().map(|h| &**h).collect();
        Ok(format!(
            "removed {} from {} in {}\n",
            names.join(", "),
            self.app,
            self.env
        )
        .into())
    }
}
