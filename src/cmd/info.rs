//! help, whoami.

use clap::CommandFactory;

use super::{Cli, CmdError, CmdResult};
use crate::access::Identity;

pub fn help(command: Option<&str>) -> CmdResult {
    match command {
        None => Ok(super::help_text()),
        Some(name) => {
            let mut cli = Cli::command();
            let sub = cli.find_subcommand_mut(name).ok_or_else(|| {
                CmdError::Invalid(format!("unknown command '{name}' (try 'help')"))
            })?;
            Ok(sub.render_help().to_string())
        }
    }
}

pub fn whoami(who: &Identity, json: bool) -> CmdResult {
    if json {
        return Ok(super::table::json(&serde_json::json!({
            "name": who.name, "fingerprint": who.fingerprint, "role": who.role.as_str(),
        })));
    }
    Ok(format!(
        "{} ({}, {})\n",
        who.name,
        who.role.as_str(),
        who.fingerprint
    ))
}
