//! shell, run (owner): sessions in the app's live release on a node. This side finds the
//! live release and the node and builds the request; `ssh/` bridges the user's channel to
//! [`Session::run`]; the node does the rest (`node::interactive`).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Cmd, CmdError};
use crate::controller::Core;
use crate::deploy::envs;
use crate::node::client::{Input, NodeClient, Output};
use crate::node::proto::{release_name, RunReq, ShellReq};
use crate::release::Manifest;
use crate::sshd::Pty;
use crate::store::NodeRow;

/// A checked, resolved session, ready to bridge.
pub struct Session {
    node: NodeClient,
    request: Request,
    /// For the audit trail: where and what.
    pub detail: String,
}

/// What a session asks of its node.
enum Request {
    Shell(ShellReq),
    Run(RunReq),
}

impl Session {
    /// Runs the session on its node; the exit status to give the user (255 when the node
    /// could not be reached or the session broke off, after a one-line error on `output`).
    pub async fn run(
        self,
        pty: Option<Pty>,
        input: mpsc::Receiver<Input>,
        output: mpsc::Sender<Output>,
    ) -> u32 {
        let (node, pty, out) = (&self.node, pty.as_ref(), output.clone());
        let r = match &self.request {
            Request::Shell(req) => node.session(req, pty, input, out).await,
            Request::Run(req) => node.session(req, pty, input, out).await,
        };
        match r {
            Ok(code) => code,
            Err(e) => {
                let _ = output
                    .send(Output::Stderr(format!("error: {e}\n").into_bytes()))
                    .await;
                255
            }
        }
    }
}

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

struct Live {
    version: i64,
    release: String,
    manifest: Manifest,
    git_sha: String,
    file: String,
    nodes: Vec<String>,
}

fn live(core: &Core, app: &str, env: &str) -> Result<Live, CmdError> {
    crate::names::check("environment", env)?;
    let live = core
        .store()
        .live(app, env)?
        .ok_or_else(|| CmdError::Invalid(format!("nothing of '{app}' is live in {env}")))?;
    let rel = core.store().release(app, live.version)?.ok_or_else(|| {
        CmdError::Invalid(format!(
            "the live release v{} of '{app}' is missing",
            live.version
        ))
    })?;
    let manifest: Manifest = serde_json::from_str(&rel.manifest)
        .map_err(|e| CmdError::Invalid(format!("bad manifest of v{}: {e}", rel.version)))?;
    Ok(Live {
        version: rel.version,
        release: release_name(rel.version, &rel.sha256),
        manifest,
        git_sha: rel.git_sha,
        file: rel.file,
        nodes: live.nodes,
    })
}

/// The node to use: `want` if the app is live there, else the first live node we know.
fn pick_node(
    core: &Core,
    app: &str,
    env: &str,
    live: &[String],
    want: Option<&str>,
) -> Result<NodeRow, CmdError> {
    let known = core.all_nodes()?;
    let find = |n: &str| known.iter().find(|k| k.name == n).cloned();
    match want {
        Some(w) if live.iter().any(|l| l == w) => {
            find(w).ok_or_else(|| CmdError::Invalid(format!("node '{w}' is no longer configured")))
        }
        Some(w) => Err(CmdError::Invalid(format!(
            "'{app}' is not live in {env} on node '{}' (live on: {})",
            w.chars()
                .filter(|c| !c.is_control())
                .take(40)
                .collect::<String>(),
            live.join(", ")
        ))),
        None => live.iter().find_map(|n| find(n)).ok_or_else(|| {
            CmdError::Invalid(format!(
                "none of the nodes '{app}' is live on in {env} is configured"
            ))
        }),
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
            let live = live(core, &app, &env)?;
            let n = pick_node(core, &app, &env, &live.nodes, node.as_deref())?;
            let detail = format!(
                "node {}, v{}, {}",
                n.name,
                live.version,
                process.as_deref().unwrap_or("web.1")
            );
            let req = ShellReq {
                app: crate::deploy::node_app(&app, &env),
                release: live.release,
                process,
            };
            Ok(Session {
                node: core.node_client(&n),
                request: Request::Shell(req),
                detail,
            })
        }
        Cmd::Run { app, env, command } => {
            if command.iter().any(|a| a.contains('\0')) {
                return Err(CmdError::Invalid("the command holds a NUL byte".into()));
            }
            let live = live(core, &app, &env)?;
            let n = pick_node(core, &app, &env, &live.nodes, None)?;
            let (env_vars, config) = run_env(core, &app, &env, &live).await?;
            let detail = format!("node {}, v{}", n.name, live.version);
            let req = RunReq {
                app: crate::deploy::node_app(&app, &env),
                release: live.release,
                image: live.manifest.stack_image.clone(),
                argv: command,
                env: env_vars,
                // The limits the app's processes get (magrathea.yml), else the defaults.
                memory: config
                    .memory
                    .as_deref()
                    .and_then(crate::appconfig::parse_size)
                    .unwrap_or(core.limits().process_memory),
                cpu: config.cpu.unwrap_or(0.0),
                uid: core.app_uid(&app)?,
            };
            Ok(Session {
                node: core.node_client(&n),
                request: Request::Run(req),
                detail,
            })
        }
        _ => Err(CmdError::Invalid("not an interactive command".into())),
    }
}

/// The env a process of the live release gets (as a rollout builds it): the environment's
/// labels from `magrathea.yml`, the config vars over them, and GIT_REV; and the release's
/// `magrathea.yml`.
async fn run_env(
    core: &Arc<Core>,
    app: &str,
    env: &str,
    live: &Live,
) -> Result<(BTreeMap<String, String>, crate::appconfig::AppConfig), CmdError> {
    let tarball = core.data().releases(app).join(&live.file);
    let e = env.to_string();
    let (target, config) = tokio::task::spawn_blocking(move || {
        let c = envs::config_of_release(&tarball);
        (envs::target(&c, &e), c)
    })
    .await
    .map_err(|e| CmdError::Invalid(format!("internal error ({e})")))?;
    let mut vars = target.vars;
    vars.extend(core.config(app, env)?);
    vars.insert("GIT_REV".into(), live.git_sha.clone());
    Ok((vars, config))
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
