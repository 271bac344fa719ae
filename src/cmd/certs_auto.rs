//! `certs:auto APP [--json]` (viewer): the automatic certificates of an app's environments
//! and their renewal state. The renderer is shared with `certs` and `apps:info`, so a
//! failing renewal shows wherever an owner looks.

use super::{table, CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::controller::view::AcmeRow;
use crate::names::AppName;
use crate::timefmt::utc;

/// Show automatic (ACME) certificates and their renewals
#[derive(Debug, clap::Args)]
pub struct CertsAuto {
    app: AppName,
    #[arg(long)]
    json: bool,
}

impl Command for CertsAuto {
    const NEED: Need = Need::App(AppRole::Viewer);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let rows = cx.core.acme_status(&self.app)?;
        if self.json {
            return Ok(table::json(&rows).into());
        }
        if rows.is_empty() {
            return Ok(format!(
                "automatic certificates are off for {0}; turn them on: certs:auto:enable {0}\n",
                self.app
            )
            .into());
        }
        Ok(render(&rows).into())
    }
}

/// One paragraph per environment: what is covered until when, the next attempt, and the
/// last error while renewals fail.
pub(crate) fn render(rows: &[AcmeRow]) -> String {
    let mut out = String::new();
    for r in rows {
        let covered = match (r.domains.is_empty(), r.not_after) {
            (false, Some(t)) => format!("{} (valid until {})", r.domains.join(", "), utc(t)),
            _ => "no certificate issued yet".into(),
        };
        out += &format!("auto {}: {covered}\n", r.env);
        match &r.last_error {
            Some(e) => {
                out += &format!(
                    "  RENEWAL FAILING: {} attempt(s) in a row, the last at {}: {e}\n",
                    r.failures,
                    r.last_error_at.map(utc).unwrap_or_default()
                );
                out += &format!("  next attempt:  {}\n", utc(r.next_attempt));
            }
            None => out += &format!("  next renewal:  {}\n", utc(r.next_attempt)),
        }
    }
    out
}
