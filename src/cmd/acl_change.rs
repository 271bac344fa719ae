//! `acl:allow APP CIDR...`, `acl:deny APP CIDR...` and `acl:remove APP CIDR...` (owner): the
//! app's IP access list, enforced by the router on the client's address. A denied address
//! gets a 403; with any allow entry, an address in none of them does too. Deny wins.
//! Every block is checked before anything changes.

use super::{CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::controller::view::AclChange;
use crate::names::AppName;

/// Let only these address blocks reach the app (10.0.0.0/8, 192.0.2.7) (owner)
#[derive(Debug, clap::Args)]
pub struct AclAllow {
    app: AppName,
    #[arg(value_name = "CIDR", required = true)]
    blocks: Vec<String>,
}

/// Refuse these address blocks with a 403 (owner)
#[derive(Debug, clap::Args)]
pub struct AclDeny {
    app: AppName,
    #[arg(value_name = "CIDR", required = true)]
    blocks: Vec<String>,
}

/// Take address blocks off the access list (owner)
#[derive(Debug, clap::Args)]
pub struct AclRemove {
    app: AppName,
    #[arg(value_name = "CIDR", required = true)]
    blocks: Vec<String>,
}

async fn change(
    cx: &mut Ctx<'_>,
    app: &str,
    what: AclChange,
    blocks: &[String],
) -> CmdResult<Done> {
    let s = cx.core.change_acl(app, what, blocks)?;
    Ok(super::acl::render(app, &s).into())
}

impl Command for AclAllow {
    const NEED: Need = Need::App(AppRole::Owner);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        change(cx, &self.app, AclChange::Allow, &self.blocks).await
    }
}

impl Command for AclDeny {
    const NEED: Need = Need::App(AppRole::Owner);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        change(cx, &self.app, AclChange::Deny, &self.blocks).await
    }
}

impl Command for AclRemove {
    const NEED: Need = Need::App(AppRole::Owner);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        change(cx, &self.app, AclChange::Remove, &self.blocks).await
    }
}
