//! `access:grant APP KEY ROLE [--tags PATTERN [--allow-retag]]` (owner).

use super::{CmdError, CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::controller::NewGrant;
use crate::names::{AppName, KeyName};

/// Give a key a role on an app: viewer, deployer or owner (owner)
#[derive(Debug, clap::Args)]
pub struct AccessGrant {
    app: AppName,
    key: KeyName,
    #[arg(value_parser = ["viewer", "deployer", "owner"])]
    role: String,
    /// Limit this key's pushes to tags matching PATTERN (e.g. 'v*'); it may create
    /// them, not move or delete them
    #[arg(long, value_name = "PATTERN")]
    tags: Option<String>,
    /// With --tags: the key may also move (force) and delete its tags
    #[arg(long)]
    allow_retag: bool,
}

impl Command for AccessGrant {
    const NEED: Need = Need::App(AppRole::Owner);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let (app, key, tags, allow_retag) =
            (&self.app, &self.key, self.tags.as_deref(), self.allow_retag);
        let role: AppRole = self.role.parse().map_err(CmdError::Invalid)?;
        if let Some(p) = tags {
            if !crate::names::valid_tag_pattern(p) {
                return Err(CmdError::Invalid(format!(
                    "invalid tag pattern '{p}': use letters, digits and . - _ / * ?"
                )));
            }
            if role < AppRole::Deployer {
                return Err(CmdError::Invalid(
                    "--tags limits pushes; it needs role deployer or owner".into(),
                ));
            }
        }
        if allow_retag && tags.is_none() {
            return Err(CmdError::Invalid(
                "--allow-retag applies to a tag-limited key; it needs --tags".into(),
            ));
        }
        cx.core.grant(NewGrant {
            app,
            key,
            role,
            tags,
            allow_retag,
        })?;
        let limit = match tags {
            Some(p) if allow_retag => {
                format!(", pushes limited to tags '{p}' (which it may also move and delete)")
            }
            Some(p) => format!(", pushes limited to tags '{p}' (which it may not move or delete)"),
            None => String::new(),
        };
        Ok(format!("key '{key}' is now {role} on '{app}'{limit}\n").into())
    }
}
