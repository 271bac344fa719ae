//! `limits APP [--env E] [--json]` (viewer): the app's disk quota and the request limits of
//! one of its environments (production by default).

use super::{table, CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::controller::view::{human, AppLimits};
use crate::names::{AppName, EnvName};

/// Show the app's disk quota and request limits (viewer)
#[derive(Debug, clap::Args)]
pub struct Limits {
    app: AppName,
    /// The environment (default: production)
    #[arg(long, default_value = "production")]
    env: EnvName,
    #[arg(long)]
    json: bool,
}

impl Command for Limits {
    const NEED: Need = Need::App(AppRole::Viewer);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let l = cx.core.limits(&self.app, &self.env)?;
        if self.json {
            return Ok(table::json(&l).into());
        }
        Ok(render(&l).into())
    }
}

pub(crate) fn render(l: &AppLimits) -> String {
    let none = || "none".to_string();
    format!(
        "disk:         {}\nrate:         {}\nclient-rate:  {}\nconns:        {}\n",
        l.disk
            .map_or_else(none, |b| format!("{} ({b} bytes)", human(b))),
        l.rate()
            .map_or_else(none, |r| format!("{} requests {}", r.n, r.window())),
        l.client_rate().map_or_else(none, |r| format!(
            "{} requests {} per client address",
            r.n,
            r.window()
        )),
        l.conns
            .map_or_else(none, |n| format!("{n} requests in progress")),
    )
}
