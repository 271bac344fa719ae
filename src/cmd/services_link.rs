//! `services:link APP NAME [--as VAR] [--env E]` and `services:unlink APP NAME [--env E]`
//! (owner of the app): one family, like `config:set`/`config:unset`, whose change they make
//! (a new release, rolled out).

use super::{CmdResult, Command, Ctx, Done, Mode, Need};
use crate::access::AppRole;
use crate::controller::view::ConfigOutcome;
use crate::names::{AppName, EnvName, ServiceName};

/// Link a service into an app: a login of its own, its URL as DATABASE_URL/REDIS_URL/MYSQL_URL (owner)
#[derive(Debug, clap::Args)]
pub struct ServicesLink {
    app: AppName,
    name: ServiceName,
    /// The config var to set (default: DATABASE_URL, REDIS_URL or MYSQL_URL by type)
    #[arg(long = "as", value_name = "VAR")]
    var: Option<String>,
    /// The app's environment (default: the one the service serves)
    #[arg(long)]
    env: Option<EnvName>,
}

/// Unlink a service from an app: its variable goes (a new release) and so does its login (owner)
#[derive(Debug, clap::Args)]
pub struct ServicesUnlink {
    app: AppName,
    name: ServiceName,
    #[arg(long)]
    env: Option<EnvName>,
}

impl Command for ServicesLink {
    const NEED: Need = Need::App(AppRole::Owner);
    const MODE: Mode = Mode::Streams;

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        if let Some(v) = &self.var {
            crate::controller::check_var(v)?;
        }
        let outcome = cx
            .core
            .link_service(
                cx.who,
                &self.app,
                &self.name,
                self.env.as_deref(),
                self.var.as_deref(),
                false,
                cx.out,
            )
            .await?;
        Ok(said(outcome, &self.app, "linked", &self.name).into())
    }
}

impl Command for ServicesUnlink {
    const NEED: Need = Need::App(AppRole::Owner);
    const MODE: Mode = Mode::Streams;

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let who = cx.who.name.clone();
        let outcome = cx
            .core
            .unlink_service(&who, &self.app, &self.name, self.env.as_deref(), cx.out)
            .await?;
        Ok(said(outcome, &self.app, "unlinked", &self.name).into())
    }
}

fn said(o: ConfigOutcome, app: &str, what: &str, name: &str) -> String {
    match o {
        ConfigOutcome::Released(v) => format!("{what} '{name}'; v{v} of {app} is live with it\n"),
        _ => format!("{what} '{name}'; {app} takes it on its next deploy\n"),
    }
}
