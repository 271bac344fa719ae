//! `acl:allow APP CIDR... [--env E]`, `acl:deny APP CIDR...` and `acl:remove APP CIDR...`
//! (owner): the IP access list of an app's environment (production by default), enforced
//! by the router on the client's address. A denied address
//! gets a 403; with any allow entry, an address in none of them does too. Deny wins.
//! Every block is checked before anything changes.

use super::{CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::controller::view::AclChange;
use crate::names::{AppName, EnvName};

/// Let only these address blocks reach the app (10.0.0.0/8, 192.0.2.7) (owner)
#[derive(Debug, clap::Args)]
pub struct AclAllow {
    app: AppName,
    #[arg(value_name = "CIDR", required = true)]
    blocks: Vec<String>,
    /// The environment (default: production)
    #[arg(long, default_value = "production")]
    env: EnvName,
}

/// Refuse these address blocks with a 403 (owner)
#[derive(Debug, clap::Args)]
pub struct AclDeny {
    app: AppName,
    #[arg(value_name = "CIDR", required = true)]
    blocks: Vec<String>,
    /// The environment (default: production)
    #[arg(long, default_value = "production")]
    env: EnvName,
}

/// Take address blocks off the access list (owner)
#[derive(Debug, clap::Args)]
pub struct AclRemove {
    app: AppName,
    #[arg(value_name = "CIDR", required = true)]
    blocks: Vec<String>,
    /// The environment (default: production)
    #[arg(long, default_value = "production")]
    env: EnvName,
}

async fn change(
    cx: &mut Ctx<'_>,
    app: &str,
    env: &str,
    what: AclChange,
    blocks: &[String],
) -> CmdResult<Done> {
    let s = cx.core.change_acl(app, env, what, blocks)?;
    Ok(super::acl::render(app, env, &s).into())
}

impl Command for AclAllow {
    const NEED: Need = Need::App(AppRole::Owner);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        change(cx, &self.app, &self.env, AclChange::Allow, &self.blocks).await
    }
}

impl Command for AclDeny {
    const NEED: Need = Need::App(AppRole::Owner);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        change(cx, &self.app, &self.env, AclChange::Deny, &self.blocks).await
    }
}

impl Command for AclRemove {
    const NEED: Need = Need::App(AppRole::Owner);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        change(cx, &self.app, &self.env, AclChange::Remove, &self.blocks).await
    }
}
