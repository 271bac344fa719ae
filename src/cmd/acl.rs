//! `acl APP [--env E] [--json]` (viewer): the IP access list of an app's environment.

use super::{table, CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::controller::view::AppSettings;
use crate::names::{AppName, EnvName};

/// Show the app's IP access list (viewer)
#[derive(Debug, clap::Args)]
pub struct Acl {
    app: AppName,
    /// The environment (default: production)
    #[arg(long, default_value = "production")]
    env: EnvName,
    #[arg(long)]
    json: bool,
}

impl Command for Acl {
    const NEED: Need = Need::App(AppRole::Viewer);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let s = cx.core.app_settings(&self.app, &self.env)?;
        if self.json {
            return Ok(table::json(&serde_json::json!({"allow": s.allow, "deny": s.deny})).into());
        }
        Ok(render(&self.app, &self.env, &s).into())
    }
}

pub(crate) fn render(app: &str, env: &str, s: &AppSettings) -> String {
    if s.allow.is_empty() && s.deny.is_empty() {
        return format!("{app} in {env} takes requests from any address\n");
    }
    let mut rows: Vec<Vec<String>> = vec![];
    rows.extend(s.deny.iter().map(|c| vec!["deny".to_string(), c.clone()]));
    rows.extend(s.allow.iter().map(|c| vec!["allow".to_string(), c.clone()]));
    let mut out = table::render(&["RULE", "ADDRESSES"], &rows);
    out += if s.allow.is_empty() {
        "any other address is allowed\n"
    } else {
        "any other address is denied (403)\n"
    };
    out
}
