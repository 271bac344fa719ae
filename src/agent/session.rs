//! The agent's sessions: its interactive verbs (protocol in `node::proto`, before
//! [`ShellReq`]):
//!
//! - `shell`: `/bin/sh` through a Docker exec with a tty in a running process container of
//!   the release, so it has the process's env (PORT and all) and the buildpack PATH.
//! - `run`: a one-off container of the release running an argv, stdin attached (a tty when
//!   the controller requested a pty), removed afterwards in every case.
//!
//! Both bridge the channel to Docker both ways: channel data to the container's stdin (the
//! channel's EOF closes it), output back as it comes, window changes to the tty. When the
//! channel closes first (the user went away) the session ends at once.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, ResizeContainerTTYOptionsBuilder,
    ResizeExecOptionsBuilder, WaitContainerOptions,
};
use futures_util::{Stream, StreamExt};
use russh::server::Msg;
use russh::{Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::runtime::{self, ProcessSpec};
use super::AgentCtx;
use crate::docker::Docker;
use crate::node::proto::{
    pick_process, ProcInfo, RunReq, ServiceConnectReq, ServiceLogsReq, SessionRequest, ShellReq,
};
use crate::sshd::Pty;

/// What a `shell` runs, after the profile scripts: bash where the stack has it.
const SHELL_ARGV: [&str; 3] = [
    "/bin/sh",
    "-c",
    "if command -v bash >/dev/null 2>&1; then exec bash; fi; exec sh",
];

/// In the env of a shell (and so of everything started from it), with a random value: how
/// [`hang_up`] finds them.
const SHELL_MARK: &str = "MAGRATHEA_SHELL";

/// Sends SIGHUP, then SIGKILL a second later, to every process of the container whose env
/// holds `$1` (the shell's mark). Run as the container's user, which owns them.
const HANG_UP: &str = "for sig in HUP KILL; do for d in /proc/[0-9]*; do \
                       grep -q \"$1\" \"$d/environ\" 2>/dev/null && kill -$sig \"${d#/proc/}\" 2>/dev/null; \
                       done; sleep 1; done";

/// The user went away from a shell: end it and what runs in it, as a closed terminal would.
/// Docker itself would leave an exec running when its attach closes.
async fn hang_up(docker: &Docker, container: &str, mark: &str) {
    let config = ExecConfig {
        cmd: Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            HANG_UP.into(),
            "hang-up".into(),
            format!("{SHELL_MARK}={mark}"),
        ]),
        ..Default::default()
    };
    let started = match docker.raw().create_exec(container, config).await {
        Ok(e) => {
            let detached = StartExecOptions {
                detach: true,
                ..Default::default()
            };
            docker
                .raw()
                .start_exec(&e.id, Some(detached))
                .await
                .map(|_| ())
        }
        Err(e) => Err(e),
    };
    if let Err(e) = started {
        tracing::warn!(container, "cannot end an abandoned shell: {e}");
    }
}

/// The longest request line accepted.
const MAX_REQUEST: usize = 1 << 20;

/// Is this exec line one of the interactive verbs?
pub fn is_interactive(line: &str) -> bool {
    let verb = line.trim();
    [
        ShellReq::VERB,
        RunReq::VERB,
        ServiceConnectReq::VERB,
        ServiceLogsReq::VERB,
    ]
    .contains(&verb)
}

/// Serve one interactive channel to the end: exit status, EOF, close.
pub async fn serve(
    ctx: Arc<AgentCtx>,
    ch: Channel<Msg>,
    line: String,
    pty: Option<Pty>,
    resize: mpsc::Receiver<(u32, u32)>,
) {
    let (mut rx, tx) = ch.split();
    let code = match read_request(&mut rx).await {
        Err(e) => fail(&tx, &e).await,
        Ok((req, rest)) => {
            let io = Io {
                rx,
                rest,
                tx: &tx,
                resize,
            };
            let r = match line.trim() {
                ShellReq::VERB => match serde_json::from_slice::<ShellReq>(&req) {
                    Ok(r) => shell(&ctx, r, pty, io).await,
                    Err(e) => Err(format!("bad request: {e}")),
                },
                ServiceConnectReq::VERB => match serde_json::from_slice(&req) {
                    Ok(r) => service_connect(&ctx, r, pty, io).await,
                    Err(e) => Err(format!("bad request: {e}")),
                },
                ServiceLogsReq::VERB => match serde_json::from_slice(&req) {
                    Ok(r) => service_logs(&ctx, r, io).await,
                    Err(e) => Err(format!("bad request: {e}")),
                },
                _ => match serde_json::from_slice::<RunReq>(&req) {
                    Ok(r) => run(&ctx, r, pty, io).await,
                    Err(e) => Err(format!("bad request: {e}")),
                },
            };
            match r {
                Ok(code) => code,
                Err(e) => fail(&tx, &e).await,
            }
        }
    };
    let _ = tx.exit_status(code).await;
    let _ = tx.eof().await;
    let _ = tx.close().await;
}

async fn fail(tx: &ChannelWriteHalf<Msg>, msg: &str) -> u32 {
    let mut err = tx.make_writer_ext(Some(1));
    let msg = msg.replace('\n', " ");
    let _ = err
        .write_all(format!("error: {}\n", msg.trim_start_matches("error: ")).as_bytes())
        .await;
    let _ = err.flush().await;
    1
}

/// The first line of stdin, and whatever came after it in the same packets.
async fn read_request(rx: &mut ChannelReadHalf) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut buf = Vec::new();
    loop {
        if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let rest = buf.split_off(pos + 1);
            buf.pop();
            return Ok((buf, rest));
        }
        if buf.len() > MAX_REQUEST {
            return Err("request line too long".into());
        }
        match rx.wait().await {
            Some(ChannelMsg::Data { data }) => buf.extend_from_slice(&data),
            Some(ChannelMsg::Eof) | Some(ChannelMsg::Close) | None => {
                return Err("no request line".into())
            }
            Some(_) => {}
        }
    }
}

/// The channel's side of a session.
struct Io<'a> {
    rx: ChannelReadHalf,
    /// Input that arrived with the request line.
    rest: Vec<u8>,
    tx: &'a ChannelWriteHalf<Msg>,
    resize: mpsc::Receiver<(u32, u32)>,
}

/// What a window change resizes.
#[derive(Clone)]
enum Tty {
    None,
    Exec(String),
    Container(String),
}

async fn resize_tty(docker: &Docker, tty: &Tty, cols: u32, rows: u32) {
    let (w, h) = (clamp_dim(cols), clamp_dim(rows));
    let r = match tty {
        Tty::None => return,
        Tty::Exec(id) => {
            let o = ResizeExecOptionsBuilder::default().w(w).h(h).build();
            docker.raw().resize_exec(id, o).await
        }
        Tty::Container(name) => {
            let o = ResizeContainerTTYOptionsBuilder::default()
                .w(w)
                .h(h)
                .build();
            docker.raw().resize_container_tty(name, o).await
        }
    };
    if let Err(e) = r {
        tracing::debug!("resize: {e}");
    }
}

fn clamp_dim(n: u32) -> i32 {
    n.clamp(1, 10_000) as i32
}

/// Pumps both ways until the container's output ends (true) or the channel closes first
/// (false, the user is gone).
async fn bridge(
    docker: &Docker,
    io: Io<'_>,
    tty: Tty,
    mut output: impl Stream<Item = Result<LogOutput, bollard::errors::Error>> + Unpin,
    input: Pin<Box<dyn AsyncWrite + Send>>,
) -> bool {
    let Io {
        mut rx,
        rest,
        tx,
        mut resize,
    } = io;
    let (gone_tx, gone_rx) = oneshot::channel::<()>();
    let d = docker.clone();
    let pump = tokio::spawn(async move {
        let mut input = Some(input);
        if !rest.is_empty() {
            write_input(&mut input, &rest).await;
        }
        loop {
            tokio::select! {
                m = rx.wait() => match m {
                    Some(ChannelMsg::Data { data }) => write_input(&mut input, &data).await,
                    Some(ChannelMsg::Eof) => {
                        // The user's EOF is the command's.
                        if let Some(mut i) = input.take() {
                            let _ = i.shutdown().await;
                        }
                    }
                    Some(ChannelMsg::Close) | None => break,
                    Some(_) => {}
                },
                Some((c, r)) = resize.recv() => resize_tty(&d, &tty, c, r).await,
            }
        }
        let _ = gone_tx.send(());
    });
    let mut out = tx.make_writer();
    let mut err = tx.make_writer_ext(Some(1));
    let copy = async {
        while let Some(Ok(frame)) = output.next().await {
            let ok = match frame {
                LogOutput::StdErr { message } => {
                    err.write_all(&message).await.is_ok() && err.flush().await.is_ok()
                }
                other => {
                    let b = other.into_bytes();
                    out.write_all(&b).await.is_ok() && out.flush().await.is_ok()
                }
            };
            if !ok {
                break;
            }
        }
    };
    let done = tokio::select! {
        _ = copy => true,
        _ = gone_rx => false,
    };
    pump.abort();
    done
}

async fn write_input(input: &mut Option<Pin<Box<dyn AsyncWrite + Send>>>, data: &[u8]) {
    if let Some(i) = input.as_mut() {
        if i.write_all(data).await.is_err() || i.flush().await.is_err() {
            *input = None; // the command closed its stdin or ended
        }
    }
}

/// A shell's env over the container's: the terminal, the mark, and on a swarm the dyno's
/// names the runner exports to its process (a task's container holds only the port base).
fn shell_env(ctx: &AgentCtx, p: &ProcInfo, pty: &Pty, mark: &str) -> Vec<String> {
    let mut env = vec![format!("TERM={}", pty.term), format!("{SHELL_MARK}={mark}")];
    if ctx.swarm.is_some() || ctx.joined {
        let dyno = format!("{}.{}", p.ptype, p.index);
        env.push(format!("PORT={}", p.port));
        env.push(format!("DYNO={dyno}"));
        env.push(format!("MAGRATHEA_PROCESS={dyno}"));
    }
    env
}

async fn shell(ctx: &AgentCtx, req: ShellReq, pty: Option<Pty>, io: Io<'_>) -> Result<u32, String> {
    crate::names::check_node_app(&req.app).map_err(|e| e.to_string())?;
    let Some(pty) = pty else {
        return Err("shell needs a terminal; use ssh -t".into());
    };
    let docker = ctx.docker().await.map_err(|e| e.to_string())?;
    // On a swarm, the tasks on this node's engine (the controller picked the node).
    let procs: Vec<ProcInfo> = match ctx.swarm.is_some() || ctx.joined {
        true => super::swarm::local_tasks(docker).await,
        false => runtime::list(docker, &ctx.instance, Some(&req.app)).await,
    }
    .map_err(|e| e.to_string())?
    .into_iter()
    .filter(|p| p.app == req.app && p.release == req.release)
    .collect();
    let Some(p) = pick_process(&procs, req.process.as_deref()) else {
        let what = req.process.as_deref().unwrap_or("process");
        return Err(format!(
            "no running {what} of {} ({}) on this node",
            req.app, req.release
        ));
    };
    let p = p.clone();
    let argv: Vec<String> = SHELL_ARGV.iter().map(|s| s.to_string()).collect();
    let mark = crate::keys::random_hex(8);
    let config = ExecConfig {
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(true),
        console_size: Some(vec![
            clamp_dim(pty.rows) as usize,
            clamp_dim(pty.cols) as usize,
        ]),
        env: Some(shell_env(ctx, &p, &pty, &mark)),
        cmd: Some(runtime::argv_launcher("shell", &argv)),
        working_dir: Some("/app".into()),
        ..Default::default()
    };
    let exec = docker
        .raw()
        .create_exec(&p.container, config)
        .await
        .map_err(|e| format!("cannot start a shell in {}: {e}", p.container))?
        .id;
    let started = docker
        .raw()
        .start_exec(
            &exec,
            Some(StartExecOptions {
                tty: true,
                ..Default::default()
            }),
        )
        .await
        .map_err(|e| format!("cannot start a shell in {}: {e}", p.container))?;
    let StartExecResults::Attached { output, input } = started else {
        return Err("the shell started detached".into());
    };
    let tty = Tty::Exec(exec.clone());
    resize_tty(docker, &tty, pty.cols, pty.rows).await;
    if !bridge(docker, io, tty, output, input).await {
        // Docker keeps an exec running when its attach closes: hang it up ourselves.
        hang_up(docker, &p.container, &mark).await;
        return Ok(255);
    }
    // The stream can end a moment before Docker records the exit code.
    for _ in 0..50 {
        match docker.raw().inspect_exec(&exec).await {
            Ok(i) if i.running != Some(true) => return Ok(exit_code(i.exit_code.unwrap_or(255))),
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => return Err(format!("shell: {e}")),
        }
    }
    Ok(255)
}

/// A service's client (psql, redis-cli, mariadb) as its admin, in its container, on a tty.
async fn service_connect(
    ctx: &AgentCtx,
    req: ServiceConnectReq,
    pty: Option<Pty>,
    io: Io<'_>,
) -> Result<u32, String> {
    let Some(pty) = pty else {
        return Err("services:connect needs a terminal; use ssh -t".into());
    };
    if !req.key.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err("bad service key".into());
    }
    let docker = ctx.docker().await.map_err(|e| e.to_string())?;
    let container = super::services::container_name(&ctx.instance, &req.key);
    let config = ExecConfig {
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(true),
        console_size: Some(vec![
            clamp_dim(pty.rows) as usize,
            clamp_dim(pty.cols) as usize,
        ]),
        env: Some(vec![format!("TERM={}", pty.term)]),
        cmd: Some(vec![super::services::ENTRY_PATH.into(), "connect".into()]),
        ..Default::default()
    };
    let exec = docker
        .raw()
        .create_exec(&container, config)
        .await
        .map_err(|e| format!("the service is not running here: {e}"))?
        .id;
    let opts = StartExecOptions {
        tty: true,
        ..Default::default()
    };
    let started = docker
        .raw()
        .start_exec(&exec, Some(opts))
        .await
        .map_err(|e| format!("cannot start the client: {e}"))?;
    let StartExecResults::Attached { output, input } = started else {
        return Err("the client started detached".into());
    };
    let tty = Tty::Exec(exec.clone());
    resize_tty(docker, &tty, pty.cols, pty.rows).await;
    if !bridge(docker, io, tty, output, input).await {
        return Ok(255);
    }
    for _ in 0..50 {
        match docker.raw().inspect_exec(&exec).await {
            Ok(i) if i.running != Some(true) => return Ok(exit_code(i.exit_code.unwrap_or(255))),
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => return Err(format!("services:connect: {e}")),
        }
    }
    Ok(255)
}

/// A service container's output: its last lines, then (`follow`) what comes, until the
/// channel closes.
async fn service_logs(ctx: &AgentCtx, req: ServiceLogsReq, io: Io<'_>) -> Result<u32, String> {
    if !req.key.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err("bad service key".into());
    }
    let docker = ctx.docker().await.map_err(|e| e.to_string())?;
    let container = super::services::container_name(&ctx.instance, &req.key);
    let opts = bollard::query_parameters::LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .follow(req.follow)
        .tail(&req.tail.min(100_000).to_string())
        .build();
    let mut logs = docker.raw().logs(&container, Some(opts));
    let Io { mut rx, tx, .. } = io;
    let mut out = tx.make_writer();
    loop {
        tokio::select! {
            frame = logs.next() => match frame {
                Some(Ok(f)) => {
                    if out.write_all(&f.into_bytes()).await.is_err() || out.flush().await.is_err() {
                        return Ok(255);
                    }
                }
                Some(Err(e)) => return Err(format!("service logs: {e}")),
                None => return Ok(0),
            },
            m = rx.wait() => match m {
                Some(ChannelMsg::Close) | None => return Ok(255),
                _ => {}
            },
        }
    }
}

fn exit_code(c: i64) -> u32 {
    if (0..=255).contains(&c) {
        c as u32
    } else {
        255
    }
}

/// The command line of a `run` container: the launcher, then the argv as its arguments.
pub fn run_cmd(argv: &[String]) -> Vec<String> {
    runtime::argv_launcher("run", argv)
}

async fn run(ctx: &AgentCtx, req: RunReq, pty: Option<Pty>, io: Io<'_>) -> Result<u32, String> {
    if req.argv.is_empty() {
        return Err("run needs a command".into());
    }
    if req.argv.iter().any(|a| a.contains('\0')) {
        return Err("the command holds a NUL byte".into());
    }
    let docker = ctx.docker().await.map_err(|e| e.to_string())?;
    let mut env: Vec<(String, String)> = req.env.into_iter().collect();
    if let Some(p) = &pty {
        env.retain(|(k, _)| k != "TERM");
        env.push(("TERM".into(), p.term.clone()));
    }
    let spec = ProcessSpec {
        instance: ctx.instance.clone(),
        app: req.app.clone(),
        release: req.release.clone(),
        ptype: "run".into(),
        index: 1,
        command: shell_words::join(&req.argv),
        env,
        image: req.image.clone(),
        memory: req.memory,
        cpu: req.cpu,
        generation: 0,
        uid: req.uid,
        publish_ip: None,
    };
    // Ends in letters and a random part: never a process's name, never another run's.
    let name = format!(
        "{}-x{}",
        runtime::container_name(&spec),
        crate::keys::random_hex(4)
    );
    let (body, scratch) =
        runtime::oneoff_body(&ctx.root, &spec, &name, run_cmd(&req.argv), pty.is_some())
            .map_err(|e| e.to_string())?;
    // The container, then its scratch dir, go when the session ends, however it ends.
    let _remove = runtime::RemoveOnDrop {
        docker: docker.clone(),
        name: Some(name.clone()),
        scratch: Some(scratch),
    };
    runtime::ensure_network(docker, &spec)
        .await
        .map_err(|e| e.to_string())?;
    let opts = CreateContainerOptionsBuilder::default().name(&name).build();
    match docker.raw().create_container(Some(opts), body).await {
        Ok(_) => {}
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => return Err(format!("stack image {} is missing on this node", req.image)),
        Err(e) => return Err(format!("creating {name}: {e}")),
    }
    // Attached before it starts, so no output is missed.
    let attach = AttachContainerOptionsBuilder::default()
        .stream(true)
        .stdin(true)
        .stdout(true)
        .stderr(true)
        .build();
    let attached = docker
        .raw()
        .attach_container(&name, Some(attach))
        .await
        .map_err(|e| format!("attaching to {name}: {e}"))?;
    docker
        .raw()
        .start_container(&name, None)
        .await
        .map_err(|e| format!("starting {name}: {e}"))?;
    let tty = match &pty {
        Some(p) => {
            let t = Tty::Container(name.clone());
            resize_tty(docker, &t, p.cols, p.rows).await;
            t
        }
        None => Tty::None,
    };
    if !bridge(docker, io, tty, attached.output, attached.input).await {
        tracing::info!(container = %name, "run: the client went away; removing");
        docker.remove(&name).await;
        return Ok(255);
    }
    let waited = tokio::time::timeout(
        Duration::from_secs(30),
        docker
            .raw()
            .wait_container(&name, None::<WaitContainerOptions>)
            .next(),
    )
    .await;
    let code = match waited {
        Ok(Some(Ok(r))) => r.status_code,
        // bollard reports a non-zero exit as this error.
        Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => code,
        Ok(Some(Err(e))) => return Err(format!("waiting for {name}: {e}")),
        Ok(None) | Err(_) => return Err(format!("{name}: no exit status")),
    };
    docker.remove(&name).await;
    Ok(exit_code(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(ptype: &str, index: u32, generation: u64, state: &str) -> ProcInfo {
        ProcInfo {
            container: format!("{ptype}.{index}.g{generation}"),
            app: "a".into(),
            release: "v1-0123456789ab".into(),
            ptype: ptype.into(),
            index,
            port: 1,
            state: state.into(),
            started_at: String::new(),
            restarts: 0,
            generation,
            memory: 0,
            cpu: 0.0,
            addr: None,
            node: None,
        }
    }

    #[test]
    fn picking_a_process() {
        let procs = vec![
            p("worker", 1, 0, "running"),
            p("web", 2, 0, "running"),
            p("web", 1, 3, "running"),
            p("web", 1, 4, "running"),
            p("web", 3, 0, "exited"),
        ];
        let pick = |w| pick_process(&procs, w).map(|p| p.container.clone());
        assert_eq!(pick(None).as_deref(), Some("web.1.g4"));
        assert_eq!(pick(Some("web")).as_deref(), Some("web.1.g4"));
        assert_eq!(pick(Some("web.2")).as_deref(), Some("web.2.g0"));
        assert_eq!(pick(Some("worker")).as_deref(), Some("worker.1.g0"));
        assert_eq!(pick(Some("web.3")), None, "not running");
        assert_eq!(pick(Some("web.x")), None);
        let no_web = vec![p("worker", 2, 0, "running"), p("clock", 1, 0, "running")];
        assert_eq!(
            pick_process(&no_web, None).map(|p| p.container.as_str()),
            Some("clock.1.g0")
        );
        assert!(pick_process(&[], None).is_none());
    }

    #[test]
    fn argv_is_passed_not_parsed() {
        let cmd = run_cmd(&["sh".into(), "-c".into(), "echo $HOME; exit 7".into()]);
        assert_eq!(&cmd[..2], &["/bin/sh", "-c"]);
        assert!(cmd[2].contains("exec \"$@\""), "{}", cmd[2]);
        assert_eq!(&cmd[3..], &["run", "sh", "-c", "echo $HOME; exit 7"]);
        assert!(is_interactive("shell") && is_interactive("run") && !is_interactive("status"));
        assert_eq!(exit_code(7), 7);
        assert_eq!(exit_code(-1), 255);
    }
}
