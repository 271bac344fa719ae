//! `limits APP [--json]` (viewer): the app's disk quota and request limits.

use super::{table, CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::controller::view::{human, AppLimits};
use crate::names::AppName;

/// Show the app's disk quota and request limits (viewer)
#[derive(Debug, clap::Args)]
pub struct Limits {
    app: AppName,
    #[arg(long)]
    json: bool,
}

impl Command for Limits {
    const NEED: Need = Need::App(AppRole::Viewer);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let s = cx.core.app_settings(&self.app)?;
        if self.json {
            return Ok(table::json(&s.limits).into());
        }
        Ok(render(&s.limits).into())
    }
}

pub(crate) fn render(l: &AppLimits) -> String {
    let none = || "none".to_string();
    let per_sec = |v: Option<u32>| v.map_or_else(none, |n| format!("{n} requests/s"));
    format!(
        "disk:         {}\nrate:         {}\nclient-rate:  {}\nconns:        {}\n",
        l.disk
            .map_or_else(none, |b| format!("{} ({b} bytes)", human(b))),
        per_sec(l.rate),
        per_sec(l.client_rate).replace("/s", "/s per client address"),
        l.conns
            .map_or_else(none, |n| format!("{n} requests in progress")),
    )
}
