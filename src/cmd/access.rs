//! `access APP` (owner): who has access to an app.

use super::{table, CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::names::AppName;

/// Show who has access to an app (owner)
#[derive(Debug, clap::Args)]
pub struct Access {
    app: AppName,
    #[arg(long)]
    json: bool,
}

impl Command for Access {
    const NEED: Need = Need::App(AppRole::Owner);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let app = &self.app;
        let rows = cx.core.grants(app)?;
        if self.json {
            return Ok(table::json(&rows).into());
        }
        if rows.is_empty() {
            return Ok(format!("only admins have access to '{app}'\n").into());
        }
        let rows: Vec<Vec<String>> = rows
            .into_iter()
            .map(|r| {
                let tags = match (r.tags, r.allow_retag) {
                    (Some(t), true) => format!("{t} (may retag)"),
                    (Some(t), false) => t,
                    (None, _) => "-".into(),
                };
                vec![r.key, r.role, tags]
            })
            .collect();
        Ok(table::render(&["KEY", "ROLE", "TAGS"], &rows).into())
    }
}
