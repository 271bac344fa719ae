//! `whoami`.

use super::{table, CmdResult, Command, Ctx, Done, Need};

/// Show which key you are authenticated as
#[derive(Debug, clap::Args)]
pub struct Whoami {
    #[arg(long)]
    json: bool,
}

impl Command for Whoami {
    const NEED: Need = Need::Anyone;

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let who = cx.who;
        if self.json {
            return Ok(table::json(&serde_json::json!({
                "name": who.name, "fingerprint": who.fingerprint, "role": who.role.as_str(),
            }))
            .into());
        }
        Ok(format!(
            "{} ({}, {})\n",
            who.name,
            who.role.as_str(),
            who.fingerprint
        )
        .into())
    }
}
