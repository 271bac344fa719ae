//! `apps:destroy NAME --confirm NAME [--keep-data]` (owner).

use super::{CmdError, CmdResult, Command, Ctx, Done, Mode, Need};
use crate::access::AppRole;
use crate::names::AppName;

/// Destroy an app and its repository (owner)
#[derive(Debug, clap::Args)]
pub struct AppsDestroy {
    name: AppName,
    /// The app's name again, to confirm
    #[arg(long, value_name = "NAME")]
    confirm: Option<String>,
    /// Archive the data dirs on the nodes and the app's services' backups (outside every
    /// app's reach) instead of deleting them
    #[arg(long)]
    keep_data: bool,
}

impl Command for AppsDestroy {
    const NEED: Need = Need::App(AppRole::Owner);
    const MODE: Mode = Mode::Streams;

    fn app(&self) -> Option<&str> {
        Some(&self.name)
    }

    /// Stops the app everywhere and removes everything of it, nodes first (see
    /// `Core::destroy_app_everywhere`).
    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let name = &*self.name;
        if self.confirm.as_deref() != Some(name) {
            return Err(CmdError::Invalid(format!(
                "destroying '{name}' deletes its repository; repeat with --confirm {name}"
            )));
        }
        cx.core
            .destroy_app_everywhere(name, self.keep_data, cx.out)
            .await?;
        Ok(format!("destroyed app '{name}'\n").into())
    }
}
