//! `audit [APP] [-n N]` (admin; owners for their app).

use super::{table, CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::names::AppName;
use crate::timefmt::utc;

/// Show the audit trail (admin; owners for their app)
#[derive(Debug, clap::Args)]
pub struct Audit {
    app: Option<AppName>,
    #[arg(short = 'n', default_value_t = 50)]
    n: i64,
    #[arg(long)]
    json: bool,
}

impl Command for Audit {
    const NEED: Need = Need::AppOrAdmin(AppRole::Owner);

    fn app(&self) -> Option<&str> {
        self.app.as_deref()
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let rows = cx
            .core
            .audit_trail(self.app.as_deref(), self.n.clamp(1, 10_000))?;
        if self.json {
            return Ok(table::json(&rows).into());
        }
        let rows: Vec<Vec<String>> = rows
            .into_iter()
            .map(|r| {
                vec![
                    utc(r.at),
                    r.key_name,
                    r.app.unwrap_or_else(|| "-".into()),
                    r.outcome,
                    r.command,
                    r.detail,
                ]
            })
            .collect();
        Ok(table::render(
            &["TIME", "KEY", "APP", "OUTCOME", "COMMAND", "DETAIL"],
            &rows,
        )
        .into())
    }
}
