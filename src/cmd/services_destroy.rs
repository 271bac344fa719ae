//! `services:destroy NAME --confirm NAME [--unlink]` (owner of the service's app; admin
//! for a global one).

use super::{CmdError, CmdResult, Command, Ctx, Done, Mode, Need};
use crate::access::AppRole;
use crate::names::ServiceName;

/// Destroy a service and its data; refused while linked, unless --unlink
#[derive(Debug, clap::Args)]
pub struct ServicesDestroy {
    name: ServiceName,
    /// The service's name again, to confirm
    #[arg(long, value_name = "NAME")]
    confirm: Option<String>,
    /// Unlink it from every app first (each a new release without its variable)
    #[arg(long)]
    unlink: bool,
}

impl Command for ServicesDestroy {
    const NEED: Need = Need::Service(AppRole::Owner);
    const MODE: Mode = Mode::Streams;

    fn service(&self) -> Option<&str> {
        Some(&self.name)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let name = &*self.name;
        if self.confirm.as_deref() != Some(name) {
            return Err(CmdError::Invalid(format!(
                "destroying '{name}' deletes its data; repeat with --confirm {name}"
            )));
        }
        let who = cx.who.name.clone();
        cx.core
            .destroy_service(&who, name, self.unlink, cx.out)
            .await?;
        Ok(format!("destroyed service '{name}'\n").into())
    }
}
