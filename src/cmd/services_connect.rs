//! `ssh -t paas services:connect NAME` (owner): the service's own client (psql, redis-cli,
//! mariadb) as its admin, in its container, on a terminal.

use super::{CmdError, CmdResult, Command, Ctx, Done, Mode, Need};
use crate::access::AppRole;
use crate::names::ServiceName;

/// Open psql, redis-cli or mariadb on a service (owner; needs ssh -t)
#[derive(Debug, clap::Args)]
pub struct ServicesConnect {
    name: ServiceName,
}

impl Command for ServicesConnect {
    const NEED: Need = Need::Service(AppRole::Owner);
    const MODE: Mode = Mode::Session;

    fn service(&self) -> Option<&str> {
        Some(&self.name)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        if !cx.pty {
            return Err(CmdError::Invalid(
                "services:connect needs a terminal; use ssh -t".into(),
            ));
        }
        let s = cx.core.service_connect_session(&self.name)?;
        Ok(Done::Session(Box::new(s)))
    }
}
