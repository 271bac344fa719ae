//! `services:backup NAME [--no-verify]` (owner of the service's app).

use super::{CmdResult, Command, Ctx, Done, Mode, Need};
use crate::access::AppRole;
use crate::controller::view::BackupAsk;
use crate::names::ServiceName;

/// Back a service up: a consistent dump, sealed, verified by a restore into a throwaway instance
#[derive(Debug, clap::Args)]
pub struct ServicesBackup {
    name: ServiceName,
    /// Do not restore it into a throwaway instance first
    #[arg(long)]
    no_verify: bool,
}

impl Command for ServicesBackup {
    const NEED: Need = Need::Service(AppRole::Owner);
    const MODE: Mode = Mode::Streams;

    fn service(&self) -> Option<&str> {
        Some(&self.name)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let ask = BackupAsk::manual(!self.no_verify);
        let b = cx.core.backup_service(&self.name, ask, cx.out).await?;
        Ok(format!(
            "backup #{} of {} taken (sha256 {})\n",
            b.id, self.name, b.sha256
        )
        .into())
    }
}
