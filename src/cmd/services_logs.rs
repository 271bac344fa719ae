//! `services:logs NAME [-f] [-n N]` (viewer): the service container's output.

use super::{CmdResult, Command, Ctx, Done, Mode, Need};
use crate::access::AppRole;
use crate::names::ServiceName;

/// Show a service's output (-f: follow)
#[derive(Debug, clap::Args)]
pub struct ServicesLogs {
    name: ServiceName,
    #[arg(short, long)]
    follow: bool,
    /// Lines of backlog
    #[arg(short = 'n', long = "num", default_value_t = 100)]
    num: usize,
}

impl Command for ServicesLogs {
    const NEED: Need = Need::Service(AppRole::Viewer);
    const MODE: Mode = Mode::Session;

    fn service(&self) -> Option<&str> {
        Some(&self.name)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let s = cx
            .core
            .service_logs_session(&self.name, self.follow, self.num)?;
        Ok(Done::Session(Box::new(s)))
    }
}
