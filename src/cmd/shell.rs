//! `shell APP [--node N] [--process P] [--env E]` (owner; needs `ssh -t`): a shell in a
//! running process of the live release. The core resolves it to a node; `ssh/` bridges the
//! user's channel to it.

use super::{CmdError, CmdResult, Command, Ctx, Done, Mode, Need};
use crate::access::AppRole;
use crate::controller::view::ShellTarget;
use crate::names::{AppName, EnvName, NodeName, ProcessName};

/// Open a shell in a running process of the live release (owner; needs ssh -t)
#[derive(Debug, clap::Args)]
pub struct Shell {
    app: AppName,
    /// The node to use (default: the first where the app is live)
    #[arg(long)]
    node: Option<NodeName>,
    /// A process (web.2) or a type (web); default web.1, else the first
    #[arg(long)]
    process: Option<ProcessName>,
    #[arg(long, default_value = "production")]
    env: EnvName,
}

impl Command for Shell {
    const NEED: Need = Need::App(AppRole::Owner);
    const MODE: Mode = Mode::Session;

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        if !cx.pty {
            return Err(CmdError::Invalid(
                "shell needs a terminal; use ssh -t".into(),
            ));
        }
        let session = cx
            .core
            .shell_session(ShellTarget {
                app: &self.app,
                env: &self.env,
                node: self.node.as_deref(),
                process: self.process.map(|p| p.to_string()),
            })
            .await?;
        Ok(Done::Session(Box::new(session)))
    }
}
