//! `services:import NAME < DUMP` (owner of the service's app).

use super::{CmdError, CmdResult, Command, Ctx, Done, Mode, Need};
use crate::access::AppRole;
use crate::names::ServiceName;

/// Load a dump made elsewhere (pg_dump -Fc, an RDB file, an SQL dump; gzipped or not), read from stdin, into the service, after a safety backup (owner)
#[derive(Debug, clap::Args)]
pub struct ServicesImport {
    name: ServiceName,
}

impl Command for ServicesImport {
    const NEED: Need = Need::Service(AppRole::Owner);
    const MODE: Mode = Mode::Streams;
    const PIPE: bool = true;

    fn service(&self) -> Option<&str> {
        Some(&self.name)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let stdin = cx
            .pipe
            .take()
            .ok_or_else(|| CmdError::Invalid("services:import reads a dump on stdin".into()))?
            .stdin;
        let (import, safety, holds) = cx.core.import_service(&self.name, stdin, cx.out).await?;
        Ok(format!(
            "imported into {} as backup #{} ({holds}); safety backup #{} holds what it had\n",
            self.name, import.id, safety.id
        )
        .into())
    }
}
