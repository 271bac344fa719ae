//! `builds:set APP build-dir [PATH]` (owner): the subdirectory of the pushed tree the app
//! builds from, as Dokku's `builds:set`; without PATH it is cleared (the app builds from the
//! repository's root, or from its `APP_BASE` config var). Refused input changes nothing.

use super::{CmdError, CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::names::{AppName, BuildDir};

/// Set or clear a build setting: build-dir PATH (a monorepo's app subdirectory) (owner)
#[derive(Debug, clap::Args)]
pub struct BuildsSet {
    app: AppName,
    /// The setting (build-dir)
    #[arg(value_name = "KEY", value_parser = ["build-dir"])]
    key: String,
    /// Its value (none: clear it)
    #[arg(value_name = "PATH")]
    value: Option<String>,
}

impl Command for BuildsSet {
    const NEED: Need = Need::App(AppRole::Owner);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let app = &self.app;
        // An empty value clears, as Dokku's `builds:set APP build-dir ""` does.
        let dir = match self.value.as_deref() {
            None | Some("") => None,
            Some(v) => Some(
                v.parse::<BuildDir>()
                    .map_err(|e| CmdError::Invalid(e.to_string()))?,
            ),
        };
        let set = cx.core.set_build_dir(app, dir.as_ref())?;
        Ok(match set.build_dir {
            Some(d) => format!("{app} builds from {d}/ of each pushed commit, from its next build\n"),
            None => format!(
                "{app} builds from the repository's root (or its APP_BASE config var), from its next build\n"
            ),
        }
        .into())
    }
}
