//! `keys:add NAME [--role admin|user] < key.pub` (admin).

use super::{CmdError, CmdResult, Command, Ctx, Done, Need};
use crate::access::KeyRole;
use crate::names::KeyName;

/// Register a public key, read from stdin (admin)
#[derive(Debug, clap::Args)]
pub struct KeysAdd {
    name: KeyName,
    #[arg(long, default_value = "user", value_parser = ["admin", "user"])]
    role: String,
}

impl Command for KeysAdd {
    const NEED: Need = Need::Admin;
    const STDIN: bool = true;

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let name = self.name;
        let role: KeyRole = self.role.parse().map_err(CmdError::Invalid)?;
        let text = std::str::from_utf8(cx.stdin)
            .map_err(|_| CmdError::Invalid("the public key on stdin is not UTF-8".into()))?;
        let key = crate::keys::parse_public(text).map_err(|e| {
            CmdError::Invalid(format!("{e}; pipe it in: ssh paas keys:add NAME < key.pub"))
        })?;
        cx.core.add_key(&name, &key, role)?;
        Ok(format!(
            "added key '{name}' ({}, {})\n",
            role.as_str(),
            key.fingerprint
        )
        .into())
    }
}
