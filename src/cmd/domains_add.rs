//! `domains:add APP HOST... [--env E]` (owner): the app answers at these hosts too. A host
//! belongs to one app at a time; `*.example.com` takes every name one level under it.

use super::{CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::names::{AppName, EnvName, HostName};

/// Route custom hosts (www.example.com, *.example.com) to an app (owner)
#[derive(Debug, clap::Args)]
pub struct DomainsAdd {
    app: AppName,
    #[arg(value_name = "HOST", required = true)]
    hosts: Vec<HostName>,
    #[arg(long, default_value = "production")]
    env: EnvName,
}

impl Command for DomainsAdd {
    const NEED: Need = Need::App(AppRole::Owner);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let added = cx.core.add_domains(&self.app, &self.env, &self.hosts)?;
        let names: Vec<&str> = self.hosts.iter().map(|h| &**h).collect();
        Ok(match added {
            0 => format!(
                "{} already route to {} in {}\n",
                names.join(", "),
                self.app,
                self.env
            ),
            _ => format!(
                "{} now route to {} in {}\n",
                names.join(", "),
                self.app,
                self.env
            ),
        }
        .into())
    }
}
