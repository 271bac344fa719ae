//! `certs APP` (viewer): an app's certificates: names, expiry, where they came from and the
//! hosts each answers for now.

use super::{table, CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::names::AppName;

/// List an app's TLS certificates (viewer)
#[derive(Debug, clap::Args)]
pub struct Certs {
    app: AppName,
    #[arg(long)]
    json: bool,
}

impl Command for Certs {
    const NEED: Need = Need::App(AppRole::Viewer);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let certs = cx.core.certs(&self.app)?;
        if self.json {
            return Ok(table::json(&certs).into());
        }
        // Automatic certificates and their renewals (a failing one shows here too).
        let auto = super::certs_auto::render(&cx.core.acme_status(&self.app)?);
        if certs.is_empty() {
            return Ok(format!(
                "no certificates for {}; add one: ssh paas certs:add {} < bundle.pem, or certs:auto:enable {}\n{auto}",
                self.app, self.app, self.app
            )
            .into());
        }
        let now = crate::timefmt::now();
        let rows: Vec<Vec<String>> = certs
            .iter()
            .map(|c| {
                let expires = crate::timefmt::utc(c.row.not_after);
                vec![
                    c.row.id.to_string(),
                    c.row.source.clone(),
                    c.row.names.join(","),
                    if c.row.not_after <= now {
                        format!("{expires} (EXPIRED)")
                    } else {
                        expires
                    },
                    if c.serving.is_empty() {
                        "-".to_string()
                    } else {
                        c.serving.join(",")
                    },
                ]
            })
            .collect();
        Ok((table::render(&["ID", "SOURCE", "NAMES", "EXPIRES", "SERVING"], &rows) + &auto).into())
    }
}
