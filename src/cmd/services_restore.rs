//! `services:restore NAME BACKUP_ID` (owner of the service's app).

use super::{CmdResult, Command, Ctx, Done, Mode, Need};
use crate::access::AppRole;
use crate::names::ServiceName;

/// Put a backup back into the running service, all or nothing (Postgres) or after a safety backup
#[derive(Debug, clap::Args)]
pub struct ServicesRestore {
    name: ServiceName,
    /// The backup's id (`services:backups NAME`), with or without its '#'
    #[arg(value_parser = backup_id)]
    id: i64,
}

pub(super) fn backup_id(s: &str) -> Result<i64, String> {
    s.strip_prefix('#')
        .unwrap_or(s)
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("'{s}' is not a backup id (see services:backups)"))
}

impl Command for ServicesRestore {
    const NEED: Need = Need::Service(AppRole::Owner);
    const MODE: Mode = Mode::Streams;

    fn service(&self) -> Option<&str> {
        Some(&self.name)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let (safety, holds) = cx.core.restore_service(&self.name, self.id, cx.out).await?;
        Ok(format!(
            "restored backup #{} into {} ({holds}); safety backup #{} holds what it had\n",
            self.id, self.name, safety.id
        )
        .into())
    }
}
