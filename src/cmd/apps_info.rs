//! `apps:info NAME` (viewer).

use super::{table, CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::names::AppName;
use crate::timefmt::utc;

/// Show an app
#[derive(Debug, clap::Args)]
pub struct AppsInfo {
    name: AppName,
    #[arg(long)]
    json: bool,
}

impl Command for AppsInfo {
    const NEED: Need = Need::App(AppRole::Viewer);

    fn app(&self) -> Option<&str> {
        Some(&self.name)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let app = cx.core.app(&self.name)?;
        if self.json {
            return Ok(table::json(&serde_json::json!({
                "name": app.name, "created_at": app.created_at, "created_by": app.created_by,
                "uid": app.uid,
            }))
            .into());
        }
        Ok(format!(
            "name:     {}\ncreated:  {} by {}\nuid:      {} (its builds and processes run as it)\n",
            app.name,
            utc(app.created_at),
            app.created_by,
            app.uid
        )
        .into())
    }
}
