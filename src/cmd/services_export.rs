//! `services:export NAME [--backup ID] > FILE` (owner of the service's app).

use super::{CmdError, CmdResult, Command, Ctx, Done, Mode, Need};
use crate::access::AppRole;
use crate::names::ServiceName;

/// Write a dump of the service to stdout, as its own tools read it (pg_restore, an RDB file, SQL); progress on stderr (owner)
#[derive(Debug, clap::Args)]
pub struct ServicesExport {
    name: ServiceName,
    /// A stored backup's id (`services:backups NAME`) instead of a fresh dump
    #[arg(long, value_parser = super::services_restore::backup_id)]
    backup: Option<i64>,
}

impl Command for ServicesExport {
    const NEED: Need = Need::Service(AppRole::Owner);
    const MODE: Mode = Mode::Streams;
    const PIPE: bool = true;

    fn service(&self) -> Option<&str> {
        Some(&self.name)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let stdout = cx
            .pipe
            .take()
            .ok_or_else(|| CmdError::Invalid("services:export writes to stdout".into()))?
            .stdout;
        let n = cx
            .core
            .export_service(&self.name, self.backup, stdout, cx.out)
            .await?;
        Ok(format!(
            "exported {} of {}\n",
            crate::controller::view::human(n),
            self.name
        )
        .into())
    }
}
