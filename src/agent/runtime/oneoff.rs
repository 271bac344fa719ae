//! One-off containers: the release phase (`run_once`), the body of a `run` session, and
//! removal whatever happens (`RemoveOnDrop`).

use std::time::Duration;

use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, RestartPolicy, RestartPolicyNameEnum};
use bollard::query_parameters::{
    InspectContainerOptions, LogsOptionsBuilder, WaitContainerOptions,
};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::agent::error::AgentError;
use crate::agent::layout::NodeRoot;
use crate::docker::Docker;

use super::dyno::{container_body, env, labels, prepare};
use super::{container_name, create, free_port, secs, ProcessSpec, Scratch, L_ONEOFF, L_SCRATCH};

/// A one-off container (the release phase): the same image, mounts, env and confinement as
/// a process, but no port and no restarts. Streams its output (stdout and stderr) line by
/// line to `lines` and returns its exit code. Killed after `timeout` (an error). The
/// container is removed whatever happens, even if this future is dropped.
pub async fn run_once(
    docker: &Docker,
    root: &NodeRoot,
    spec: &ProcessSpec,
    lines: mpsc::Sender<String>,
    timeout: Duration,
) -> Result<i64, AgentError> {
    // Ends in letters, so it never equals a process name (those end in the index).
    let name = format!("{}-once", container_name(spec));
    docker.remove(&name).await;
    let (body, scratch) = oneoff_base(root, spec, &name)?;
    let cleanup = RemoveOnDrop {
        docker: docker.clone(),
        name: Some(name.clone()),
        scratch: Some(scratch),
    };
    let result = run_container(docker, &name, spec, body, lines, timeout).await;
    // Removed before returning, so the caller never sees a leftover; the guard only covers
    // cancellation.
    docker.remove(&name).await;
    cleanup.disarm();
    result
}

/// A process's container body without restarts, labelled `magrathea.oneoff`, with a fresh
/// scratch dir for its `/app` (the caller removes it with the container) and a `PORT` of
/// its own, as Heroku gives one-off dynos.
pub(super) fn oneoff_base(
    root: &NodeRoot,
    spec: &ProcessSpec,
    name: &str,
) -> Result<(ContainerCreateBody, Scratch), AgentError> {
    let (app_dir, data_dir) = prepare(root, spec)?;
    let mut env = env(spec)?;
    env.push(format!("PORT={}", free_port()?));
    let scratch = Scratch::create(root, &spec.app, name, spec.uid)?;
    let mut labels = labels(spec);
    labels.insert(L_ONEOFF.into(), "true".into());
    labels.insert(L_SCRATCH.into(), scratch.dir.to_string_lossy().into_owned());
    let restart = RestartPolicy {
        name: Some(RestartPolicyNameEnum::NO),
        maximum_retry_count: None,
    };
    match container_body(spec, &app_dir, &data_dir, &scratch, env, labels, restart) {
        Ok(body) => Ok((body, scratch)),
        Err(e) => {
            scratch.remove();
            Err(e)
        }
    }
}

/// The body of an interactive one-off container named `name` (`run`, see
/// `agent::session`): the image, mounts, env, labels (`magrathea.oneoff`, so [`list`]
/// skips it) and confinement of [`run_once`], but `cmd` as given (an argv, never parsed by
/// a shell here), no restarts, stdin open for one attach, and a tty if asked. The caller
/// creates, attaches, starts and removes it, and removes the returned scratch dir after.
pub fn oneoff_body(
    root: &NodeRoot,
    spec: &ProcessSpec,
    name: &str,
    cmd: Vec<String>,
    tty: bool,
) -> Result<(ContainerCreateBody, Scratch), AgentError> {
    let (mut body, scratch) = oneoff_base(root, spec, name)?;
    body.cmd = Some(cmd);
    body.tty = Some(tty);
    body.open_stdin = Some(true);
    body.stdin_once = Some(true);
    body.attach_stdin = Some(true);
    body.attach_stdout = Some(true);
    body.attach_stderr = Some(true);
    Ok((body, scratch))
}

pub(super) async fn run_container(
    docker: &Docker,
    name: &str,
    spec: &ProcessSpec,
    body: ContainerCreateBody,
    lines: mpsc::Sender<String>,
    timeout: Duration,
) -> Result<i64, AgentError> {
    create(docker, name, spec, body).await?;
    docker
        .raw()
        .start_container(name, None)
        .await
        .map_err(|e| AgentError::Docker(format!("starting {name}: {e}")))?;

    let mut out = LineSplitter::new(lines);
    let mut seen = 0usize;
    let wait = async {
        // Live output while it runs. The followed stream ends when the container exits.
        let mut logs = std::pin::pin!(docker.raw().logs(name, Some(log_options(true))));
        while let Some(Ok(frame)) = logs.next().await {
            seen += 1;
            out.push(frame).await;
        }
        docker
            .raw()
            .wait_container(name, None::<WaitContainerOptions>)
            .next()
            .await
    };
    // The wait is inside the deadline too: a log stream that broke off early must not
    // leave us waiting on a command that never ends.
    let Ok(waited) = tokio::time::timeout(timeout, wait).await else {
        return Err(AgentError::Timeout {
            what: format!("the {} command", spec.ptype),
            after: secs(timeout),
        });
    };
    // A followed stream can end before the last lines are read (and a final line without
    // a newline is only logged at exit), yet the last lines are the ones that say why a
    // command failed: read the whole log again and send what the stream missed. Both
    // read the same json-file log in order, so the followed frames are a prefix (unless
    // more than the 30 MB kept were written; then the tail may go unsent, never twice).
    let mut all = std::pin::pin!(docker.raw().logs(name, Some(log_options(false))));
    let mut n = 0usize;
    while let Some(Ok(frame)) = all.next().await {
        n += 1;
        if n > seen {
            out.push(frame).await;
        }
    }
    let lines = out.finish().await;
    let code = match waited {
        Some(Ok(r)) => r.status_code,
        // bollard reports a non-zero exit as this error.
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
        Some(Err(e)) => return Err(AgentError::Docker(format!("waiting for {name}: {e}"))),
        None => return Err(AgentError::Docker(format!("{name}: no exit status"))),
    };
    let oom = docker
        .raw()
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
        .ok()
        .and_then(|i| i.state)
        .and_then(|s| s.oom_killed)
        .unwrap_or(false);
    if oom {
        // The exit code alone (137) would not say why.
        let _ = lines
            .send(format!(
                "killed: out of memory (limit {} MiB)",
                spec.memory >> 20
            ))
            .await;
    }
    Ok(code)
}

pub(super) fn log_options(follow: bool) -> bollard::query_parameters::LogsOptions {
    LogsOptionsBuilder::default()
        .follow(follow)
        .stdout(true)
        .stderr(true)
        .build()
}

/// Turns log frames into lines, one partial line per stream so stdout and stderr output
/// never run together.
pub(super) struct LineSplitter {
    tx: mpsc::Sender<String>,
    out: crate::lines::LineBuf,
    err: crate::lines::LineBuf,
}

impl LineSplitter {
    fn new(tx: mpsc::Sender<String>) -> Self {
        LineSplitter {
            tx,
            out: Default::default(),
            err: Default::default(),
        }
    }

    async fn push(&mut self, frame: LogOutput) {
        let buf = match &frame {
            LogOutput::StdErr { .. } => &mut self.err,
            _ => &mut self.out,
        };
        for line in buf.push(&frame.into_bytes()) {
            // A receiver that went away only means nobody is watching.
            let _ = self.tx.send(line).await;
        }
    }

    /// Sends what is left without a final newline; returns the sender for more messages.
    async fn finish(mut self) -> mpsc::Sender<String> {
        for rest in [self.out.finish(), self.err.finish()].into_iter().flatten() {
            let _ = self.tx.send(rest).await;
        }
        self.tx
    }
}

/// Removes a container and then its scratch dir when dropped, also when the future owning
/// it is cancelled. [`Self::disarm`] after removing the container yourself removes the
/// scratch dir at once.
pub struct RemoveOnDrop {
    pub docker: Docker,
    pub name: Option<String>,
    pub scratch: Option<Scratch>,
}

impl RemoveOnDrop {
    pub fn disarm(mut self) {
        self.name = None;
        if let Some(s) = self.scratch.take() {
            s.remove();
        }
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let (name, scratch) = (self.name.take(), self.scratch.take());
        if name.is_none() && scratch.is_none() {
            return;
        }
        let docker = self.docker.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Some(n) = name {
                    docker.remove(&n).await;
                }
                if let Some(s) = scratch {
                    s.remove();
                }
            });
        }
    }
}
