//! `help [COMMAND]`.

use clap::CommandFactory;

use super::{Cli, CmdError, CmdResult, Command, Ctx, Done, Need};

/// Show the commands, or one command's help
#[derive(Debug, clap::Args)]
pub struct Help {
    command: Option<String>,
}

impl Command for Help {
    const NEED: Need = Need::Anyone;

    async fn apply(self, _: &mut Ctx<'_>) -> CmdResult<Done> {
        match self.command {
            None => Ok(super::help_text().into()),
            Some(name) => {
                let mut cli = Cli::command();
                let sub = cli.find_subcommand_mut(&name).ok_or_else(|| {
                    CmdError::Invalid(format!("unknown command '{name}' (try 'help')"))
                })?;
                Ok(sub.render_help().to_string().into())
            }
        }
    }
}
