//! `apps`: the apps the key can see.

use super::{table, CmdResult, Command, Ctx, Done, Need};
use crate::timefmt::utc;

/// List the apps you can see
#[derive(Debug, clap::Args)]
pub struct Apps {
    #[arg(long)]
    json: bool,
}

impl Command for Apps {
    const NEED: Need = Need::Anyone;

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let apps = cx.core.apps(cx.who)?;
        if self.json {
            let v: Vec<_> = apps
                .iter()
                .map(|(a, role)| serde_json::json!({"name": a.name, "role": role, "created_at": a.created_at}))
                .collect();
            return Ok(table::json(&v).into());
        }
        if apps.is_empty() {
            return Ok(
                "no apps yet; create one with 'apps:create NAME' or just git push\n"
                    .to_string()
                    .into(),
            );
        }
        let rows: Vec<Vec<String>> = apps
            .iter()
            .map(|(a, role)| vec![a.name.clone(), role.clone(), utc(a.created_at)])
            .collect();
        Ok(table::render(&["APP", "ROLE", "CREATED"], &rows).into())
    }
}
