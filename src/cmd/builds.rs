//! `builds APP [-n N]` (viewer).

use super::{table, CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::names::AppName;
use crate::timefmt::utc;

/// List an app's builds
#[derive(Debug, clap::Args)]
pub struct Builds {
    app: AppName,
    #[arg(short = 'n', default_value_t = 20)]
    n: i64,
    #[arg(long)]
    json: bool,
}

impl Command for Builds {
    const NEED: Need = Need::App(AppRole::Viewer);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let (app, json) = (&self.app, self.json);
        let rows = cx.core.builds(app, self.n.clamp(1, 1000))?;
        if json {
            return Ok(table::json(&rows).into());
        }
        if rows.is_empty() {
            return Ok(format!("no builds of '{app}' yet\n").into());
        }
        let rows: Vec<Vec<String>> = rows
            .iter()
            .map(|b| {
                vec![
                    b.id.to_string(),
                    b.status.clone(),
                    b.git_sha[..7].to_string(),
                    b.git_ref.rsplit('/').next().unwrap_or("").to_string(),
                    b.key_name.clone(),
                    utc(b.created_at),
                    b.finished_at
                        .map(|f| format!("{}s", f - b.created_at))
                        .unwrap_or_else(|| "-".into()),
                    b.release_version
                        .map(|v| format!("v{v}"))
                        .unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        Ok(table::render(
            &[
                "ID", "STATUS", "COMMIT", "REF", "BY", "STARTED", "TOOK", "RELEASE",
            ],
            &rows,
        )
        .into())
    }
}
