//! `keys` (admin): the registered keys.

use super::{table, CmdResult, Command, Ctx, Done, Need};
use crate::timefmt::utc;

/// List the registered keys (admin)
#[derive(Debug, clap::Args)]
pub struct Keys {
    #[arg(long)]
    json: bool,
}

impl Command for Keys {
    const NEED: Need = Need::Admin;

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let keys = cx.core.keys()?;
        if self.json {
            return Ok(table::json(&keys).into());
        }
        let rows: Vec<Vec<String>> = keys
            .iter()
            .map(|k| {
                vec![
                    k.name.clone(),
                    k.role.clone(),
                    k.fingerprint.clone(),
                    utc(k.created_at),
                ]
            })
            .collect();
        Ok(table::render(&["NAME", "ROLE", "FINGERPRINT", "ADDED"], &rows).into())
    }
}
