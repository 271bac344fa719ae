//! One task per exec'd channel: it owns the `Channel` (and so drains it), routes the command
//! to git or to the command table, and finishes with exit-status, EOF, close, in that order.

use std::sync::Arc;
use std::time::Duration;

use russh::server::Msg;
use russh::{Channel, ChannelWriteHalf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::Instrument;

use crate::access::Identity;
use crate::cmd::{self, Reply};
use crate::controller::Core;
use crate::git::service::GitService;

pub struct ExecRequest {
    pub who: Identity,
    /// None for a bare `ssh paas` (shell request).
    pub command: Option<String>,
    pub pty: bool,
    /// The pty's terminal and size, when one was requested.
    pub term: Option<crate::sshd::Pty>,
    /// Window changes, forwarded by the handler.
    pub resize: tokio::sync::mpsc::Receiver<(u32, u32)>,
    pub git_protocol: Option<String>,
}

const MAX_STDIN: u64 = 64 << 10;
/// Longer than any real command (config:set with many vars included); anything longer is
/// refused before it is parsed.
const MAX_COMMAND: usize = 16 << 10;

pub async fn run(core: Arc<Core>, channel: Channel<Msg>, req: ExecRequest) {
    let (mut rx, tx) = channel.split();
    let Some(line) = req.command.as_deref() else {
        finish(&tx, Reply::ok(cmd::help_text())).await;
        return;
    };
    if line.len() > MAX_COMMAND {
        let msg = format!(
            "error: command line too long ({} bytes; the limit is {MAX_COMMAND})",
            line.len()
        );
        let reply = Reply::err(msg, 2);
        cmd::audit_invalid(&core, &req.who, "(command line too long)", "too long");
        finish(&tx, reply).await;
        return;
    }
    let argv = match shell_words::split(line) {
        Ok(a) => a,
        Err(_) => {
            let reply = Reply::err("error: cannot parse the command (unbalanced quotes?)", 2);
            // Only the first word: the rest may hold a value, and cannot be redacted.
            let first = line.split_whitespace().next().unwrap_or("");
            let shown = cmd::redact(&[first.to_string()]);
            let shown = format!("{shown} (unparseable)");
            cmd::audit_invalid(&core, &req.who, &shown, "cannot parse");
            finish(&tx, reply).await;
            return;
        }
    };
    let svc = match argv.first().map(String::as_str) {
        Some("git-receive-pack") => Some(GitService::ReceivePack),
        Some("git-upload-pack") => Some(GitService::UploadPack),
        _ => None,
    };
    if let Some(svc) = svc {
        let mut reader = None;
        if svc == GitService::ReceivePack {
            // Pushes are tracked so graceful shutdown lets them finish, up to the client's
            // answer to our close: only then has it surely read the exit status (a shutdown
            // that ended the process first lost it, and a push that went live looked failed).
            let work = async {
                let code = git(core.clone(), rx, &tx, &req, svc, argv, &mut reader).await;
                close(&tx, code).await;
                if let Some(mut r) = reader.take() {
                    if tokio::time::timeout(std::time::Duration::from_secs(5), &mut r)
                        .await
                        .is_err()
                    {
                        r.abort();
                    }
                }
            };
            core.tracked(work).await;
        } else {
            let code = git(core.clone(), rx, &tx, &req, svc, argv, &mut reader).await;
            close(&tx, code).await;
        }
        return;
    }
    // Dokku's service commands, in our words (see `cmd::dokku`).
    let argv = match cmd::dokku::rewrite(&argv) {
        None => argv,
        Some(Ok(ours)) => ours,
        Some(Err(usage)) => {
            cmd::audit_invalid(&core, &req.who, &cmd::redact(&argv), "bad usage");
            finish(&tx, Reply::err(format!("error: {usage}"), 2)).await;
            return;
        }
    };
    let c = match cmd::parse_audited(&core, &req.who, &argv) {
        Ok(c) => c,
        Err(reply) => {
            drop(rx);
            finish(&tx, reply).await;
            return;
        }
    };
    let stdin = if c.wants_stdin() {
        let mut buf = Vec::new();
        let mut r = rx.make_reader().take(MAX_STDIN);
        // A client that never sends EOF must not hold the task forever.
        let _ = tokio::time::timeout(Duration::from_secs(30), r.read_to_end(&mut buf)).await;
        buf
    } else {
        Vec::new()
    };
    let reply = if c.is_interactive() {
        // `shell`, `run`: the channel is bridged to a session on a node.
        let (ftx, _) = tokio::sync::mpsc::channel::<String>(1);
        let mut sink = crate::sink::Sink::new(ftx);
        let io = cmd::Io {
            out: &mut sink,
            stdin: &stdin,
            pty: req.pty,
            pipe: None,
        };
        match cmd::execute(&core, &req.who, &argv, c, io).await {
            cmd::Finished::Reply(reply) => reply,
            cmd::Finished::Session(session) => {
                let code = super::bridge::bridge(rx, &tx, req, *session).await;
                close(&tx, code).await;
                return;
            }
        }
    } else if c.pipes() {
        let mut reply = pipe(&core, &req, rx, &tx, argv, c).await;
        // stdout carried the bytes; the closing line goes with the progress lines.
        let text = std::mem::take(&mut reply.stdout);
        reply.stderr.splice(0..0, text);
        reply
    } else {
        stream(&core, &req, rx, &tx, argv, c, stdin).await
    };
    finish(&tx, reply).await;
}

/// Runs a command that streams bytes ([`cmd::Pipe`]): the channel's data to its stdin until
/// the client's EOF, its bytes to the channel's stdout, its progress lines to stderr. The
/// client going away ends the streams (a dump being read is cut short; one being written
/// stops), and the command sees it as a short stream or a closed output.
async fn pipe(
    core: &Arc<Core>,
    req: &ExecRequest,
    mut rx: russh::ChannelReadHalf,
    tx: &ChannelWriteHalf<Msg>,
    argv: Vec<String>,
    c: cmd::Cmd,
) -> Reply {
    let (ftx, mut frx) = tokio::sync::mpsc::channel::<crate::git::hookproto::Frame>(256);
    let (in_tx, in_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    let (data_tx, mut data_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    let pipe = cmd::Pipe {
        stdin: in_rx,
        stdout: data_tx,
    };
    let task = spawn_command(core, req, argv, c, Vec::new(), Some(pipe), ftx);
    let mut out = tx.make_writer();
    let mut err = tx.make_writer_ext(Some(1));
    let mut stdin = Some(in_tx);
    let (mut lines, mut data) = (true, true);
    while lines || data {
        tokio::select! {
            m = rx.wait() => match m {
                Some(russh::ChannelMsg::Data { data }) => {
                    // A command that does not read stdin has dropped its end: ignored.
                    if let Some(s) = &stdin {
                        if s.send(data.to_vec()).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                Some(russh::ChannelMsg::Eof) => stdin = None,
                Some(russh::ChannelMsg::Close) | None => {
                    tracing::info!("client went away; stream stopped");
                    break;
                }
                _ => {}
            },
            f = frx.recv(), if lines => match f {
                Some(f) => {
                    if let Some(line) = f.out {
                        let _ = err.write_all(format!("{line}\n").as_bytes()).await;
                        let _ = err.flush().await;
                    }
                }
                None => lines = false,
            },
            d = data_rx.recv(), if data => match d {
                Some(d) => {
                    if out.write_all(&d).await.is_err() {
                        break;
                    }
                }
                None => {
                    let _ = out.flush().await;
                    data = false;
                }
            },
        }
    }
    drop((stdin, frx, data_rx));
    task.await
        .unwrap_or_else(|e| Reply::err(format!("error: internal error ({e})"), 1))
}

/// Runs a command, its progress lines written to the channel as they come. The client
/// going away (the channel closes, or the connection drops) drops the receiver: a command
/// that would stream forever (`logs -f`) sees `Sink::gone` and ends, closing its node
/// connections. Others run to completion unheard.
async fn stream(
    core: &Arc<Core>,
    req: &ExecRequest,
    mut rx: russh::ChannelReadHalf,
    tx: &ChannelWriteHalf<Msg>,
    argv: Vec<String>,
    c: cmd::Cmd,
    stdin: Vec<u8>,
) -> Reply {
    let (ftx, mut frx) = tokio::sync::mpsc::channel::<crate::git::hookproto::Frame>(256);
    let task = spawn_command(core, req, argv, c, stdin, None, ftx);
    let mut out = tx.make_writer();
    // Not `make_reader`: it stops at EOF, and the close comes after that.
    let gone = async { while !matches!(rx.wait().await, Some(russh::ChannelMsg::Close) | None) {} };
    tokio::pin!(gone);
    loop {
        tokio::select! {
            f = frx.recv() => match f {
                Some(f) => {
                    if let Some(line) = f.out {
                        let _ = out.write_all(format!("{line}\n").as_bytes()).await;
                        let _ = out.flush().await;
                    }
                }
                None => break,
            },
            _ = &mut gone => {
                tracing::info!("client went away; stream stopped");
                break;
            }
        }
    }
    drop(frx);
    task.await
        .unwrap_or_else(|e| Reply::err(format!("error: internal error ({e})"), 1))
}

/// A streaming or piping command, run on a task of its own: its progress lines as frames to
/// `ftx`, its reply at the end.
fn spawn_command(
    core: &Arc<Core>,
    req: &ExecRequest,
    argv: Vec<String>,
    c: cmd::Cmd,
    stdin: Vec<u8>,
    pipe: Option<cmd::Pipe>,
    ftx: tokio::sync::mpsc::Sender<crate::git::hookproto::Frame>,
) -> tokio::task::JoinHandle<Reply> {
    let (core, who) = (core.clone(), req.who.clone());
    tokio::spawn(
        async move {
            let mut sink = crate::sink::Sink::new(ftx);
            let io = cmd::Io {
                out: &mut sink,
                stdin: &stdin,
                pty: false,
                pipe,
            };
            match cmd::execute(&core, &who, &argv, c, io).await {
                cmd::Finished::Reply(r) => r,
                // Only `shell` and `run` become sessions, and they do not come this way.
                cmd::Finished::Session(_) => Reply::err("error: internal routing error", 1),
            }
        }
        // Still the connection's: a spawned task does not inherit the span.
        .instrument(tracing::Span::current()),
    )
}

async fn finish(tx: &ChannelWriteHalf<Msg>, reply: Reply) {
    let mut out = tx.make_writer();
    let mut err = tx.make_writer_ext(Some(1));
    let _ = out.write_all(&reply.stdout).await;
    let _ = out.flush().await;
    let _ = err.write_all(&reply.stderr).await;
    let _ = err.flush().await;
    close(tx, reply.code).await;
}

async fn close(tx: &ChannelWriteHalf<Msg>, code: u32) {
    let _ = tx.exit_status(code).await;
    let _ = tx.eof().await;
    let _ = tx.close().await;
}

async fn say_err(tx: &ChannelWriteHalf<Msg>, msg: &str) {
    let mut err = tx.make_writer_ext(Some(1));
    let _ = err.write_all(format!("{msg}\n").as_bytes()).await;
    let _ = err.flush().await;
}

/// The repository a git service may use, checked and (a clone) recorded: the app, its
/// repository and the caller's grant, or the exit code after a one-line error.
async fn admit_git(
    core: &Arc<Core>,
    tx: &ChannelWriteHalf<Msg>,
    who: &Identity,
    svc: GitService,
    argv: &[String],
) -> Result<(String, std::path::PathBuf, crate::access::Grant), u32> {
    let verb = match svc {
        GitService::ReceivePack => "git push",
        GitService::UploadPack => "git fetch",
    };
    let app = match argv {
        [_, repo] => match crate::names::app_from_repo_arg(repo) {
            Ok(a) => a.to_string(),
            Err(e) => {
                core.audit(who, None, verb, "error", &e.to_string());
                say_err(tx, &format!("error: {e}")).await;
                return Err(1);
            }
        },
        _ => {
            let msg = "error: expected exactly one repository argument";
            core.audit(who, None, verb, "invalid", msg);
            say_err(tx, msg).await;
            return Err(2);
        }
    };
    let authorized = {
        let (core, who, app) = (core.clone(), who.clone(), app.clone());
        tokio::task::spawn_blocking(move || core.authorize_git(&who, svc, &app)).await
    };
    let (repo, grant) = match authorized {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            let outcome = if matches!(e, crate::controller::CoreError::Denied(_)) {
                "denied"
            } else {
                "error"
            };
            core.audit(who, Some(&app), verb, outcome, &e.to_string());
            say_err(tx, &format!("error: {e}")).await;
            return Err(1);
        }
        Err(e) => {
            say_err(tx, &format!("error: internal error ({e})")).await;
            return Err(1);
        }
    };
    // Recorded before git runs; what cannot be recorded does not run. A push's entry is
    // opened (and closed with its outcome) by the controller, once it sees the refs.
    if svc == GitService::UploadPack {
        match core.audit_open(who, Some(&app), verb, "") {
            Ok(id) => core.audit_close(id, "ok", ""),
            Err(e) => {
                say_err(tx, &format!("error: {e}")).await;
                return Err(1);
            }
        }
    }
    Ok((app, repo, grant))
}

/// Bridge the channel to `git receive-pack`/`upload-pack`. Returns the exit code to send.
/// For a push, `reader` gets the task still reading the channel: it ends when the client
/// closes the channel.
#[tracing::instrument(name = "git", skip_all, fields(service = svc.as_str(), app = tracing::field::Empty))]
async fn git(
    core: Arc<Core>,
    mut rx: russh::ChannelReadHalf,
    tx: &ChannelWriteHalf<Msg>,
    req: &ExecRequest,
    svc: GitService,
    argv: Vec<String>,
    reader: &mut Option<tokio::task::JoinHandle<()>>,
) -> u32 {
    let who = &req.who;
    let (app, repo, grant) = match admit_git(&core, tx, who, svc, &argv).await {
        Ok(x) => x,
        Err(code) => return code,
    };
    tracing::Span::current().record("app", app.as_str());
    tracing::debug!("git started");
    let guard = (svc == GitService::ReceivePack).then(|| core.begin_push(who, &app, grant));
    let mut child = match core.spawn_git(svc, &repo, req.git_protocol.as_deref(), guard.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            say_err(tx, &format!("error: cannot start git ({e})")).await;
            return 1;
        }
    };
    let (Some(sin), Some(mut sout), Some(mut serr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return 1;
    };
    // client -> git. Closing `sin` is git's EOF. Fire and forget: a client need not send EOF.
    // Afterwards keep draining the channel: when it closes before git is done, the client is
    // gone (Ctrl-C) and the push must be stopped.
    let (gone_tx, mut gone_rx) = tokio::sync::oneshot::channel::<()>();
    let pump_in = tokio::spawn(async move {
        // Not `make_reader`: it closes the receiver at EOF, and we need to see the close.
        let mut sin = Some(sin);
        while let Some(msg) = rx.wait().await {
            match msg {
                russh::ChannelMsg::Data { data } => {
                    if let Some(s) = sin.as_mut() {
                        if s.write_all(&data).await.is_err() {
                            sin = None;
                        }
                    }
                }
                russh::ChannelMsg::Eof => {
                    if let Some(mut s) = sin.take() {
                        let _ = s.shutdown().await;
                    }
                }
                russh::ChannelMsg::Close => break,
                _ => {}
            }
        }
        drop(sin);
        let _ = gone_tx.send(());
    });
    let mut out = tx.make_writer();
    let mut err = tx.make_writer_ext(Some(1));
    let pid = child.id();
    let finished = async {
        // Both at once: a full stderr pipe must never block stdout, nor the reverse.
        let _ = tokio::join!(
            async {
                let _ = tokio::io::copy(&mut sout, &mut out).await;
                let _ = out.flush().await;
            },
            async {
                let _ = tokio::io::copy(&mut serr, &mut err).await;
                let _ = err.flush().await;
            }
        );
    };
    let client_gone = tokio::select! {
        _ = finished => false,
        Ok(()) = &mut gone_rx => true,
    };
    if client_gone {
        // The whole group: receive-pack and the hook it runs. The hook's socket closes and
        // the controller cancels the build.
        if let Some(pid) = pid {
            unsafe {
                libc::killpg(pid as i32, libc::SIGTERM);
            }
        }
        tracing::info!(app = %app, "client went away; push stopped");
    }
    let status = child.wait().await;
    if svc == GitService::ReceivePack && !client_gone {
        *reader = Some(pump_in);
    } else {
        pump_in.abort();
    }
    drop(guard);
    let code = match status {
        Ok(s) => s.code().map_or(255, |c| c as u32),
        Err(_) => 255,
    };
    tracing::debug!(code, "git done");
    code
}
