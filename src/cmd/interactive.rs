//! shell, run (owner): sessions in the app's live release on a node. The core finds the
//! live release and the node and builds the request; `ssh/` bridges the user's channel to
//! [`Session::run`]; the node does the rest.

use std::sync::Arc;

use super::{Cmd, CmdError};
use crate::controller::view::{Session, ShellTarget};
use crate::controller::Core;

/// `web`, `web.2`: a process type, optionally with a number.
fn check_process(p: &str) -> Result<(), CmdError> {
    let (t, n) = match p.split_once('.') {
        Some((t, n)) => (t, Some(n)),
        None => (p, None),
    };
    let n_ok = n.is_none_or(|n| {
        !n.is_empty() && n.len() < 6 && n.bytes().all(|b| b.is_ascii_digit()) && n != "0"
    });
    if crate::names::valid(t) && n_ok {
        Ok(())
    } else {
        Err(CmdError::Invalid(format!(
            "--process expects a type or a process, like web or web.2; got '{}'",
            p.chars()
                .filter(|c| !c.is_control())
                .take(40)
                .collect::<String>()
        )))
    }
}

pub async fn prepare(core: &Arc<Core>, cmd: Cmd, pty: bool) -> Result<Session, CmdError> {
    match cmd {
        Cmd::Shell {
            app,
            node,
            process,
            env,
        } => {
            if !pty {
                return Err(CmdError::Invalid(
                    "shell needs a terminal; use ssh -t".into(),
                ));
            }
            if let Some(p) = &process {
                check_process(p)?;
            }
            crate::names::check("environment", &env)?;
            Ok(core.shell_session(ShellTarget {
                app: &app,
                env: &env,
                node: node.as_deref(),
                process,
            })?)
        }
        Cmd::Run { app, env, command } => Ok(core.run_session(&app, &env, command).await?),
        _ => Err(CmdError::Invalid("not an interactive command".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_names() {
        for ok in ["web", "web.1", "worker.12", "clock-2.3"] {
            assert!(check_process(ok).is_ok(), "{ok}");
        }
        for bad in ["", "web.", "web.0", "web.x", ".1", "Web", "web.1.2", "a/b"] {
            assert!(check_process(bad).is_err(), "{bad}");
        }
    }
}
