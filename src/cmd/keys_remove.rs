//! `keys:remove NAME` (admin).

use super::{CmdResult, Command, Ctx, Done, Need};
use crate::names::KeyName;

/// Remove a key and its grants (admin)
#[derive(Debug, clap::Args)]
pub struct KeysRemove {
    name: KeyName,
}

impl Command for KeysRemove {
    const NEED: Need = Need::Admin;

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        cx.core.remove_key(&self.name)?;
        Ok(format!("removed key '{}'\n", self.name).into())
    }
}
