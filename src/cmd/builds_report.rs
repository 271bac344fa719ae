//! `builds:report APP [--json]` (viewer): the app's build settings (Dokku's
//! `builds:report`). A viewer may not read config, so `APP_BASE` is named, never shown.

use super::{table, CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::names::AppName;

/// Show an app's build settings: its build dir (viewer)
#[derive(Debug, clap::Args)]
pub struct BuildsReport {
    app: AppName,
    #[arg(long)]
    json: bool,
}

impl Command for BuildsReport {
    const NEED: Need = Need::App(AppRole::Viewer);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let s = cx.core.build_settings(&self.app)?;
        if self.json {
            return Ok(table::json(&s).into());
        }
        Ok(match s.build_dir {
            Some(d) => format!("build-dir:    {d}/\n"),
            None => "build-dir:    none (the repository's root, or the APP_BASE config var)\n"
                .to_string(),
        }
        .into())
    }
}
