//! The unix socket (0600) that `magrathea hook pre-receive` talks to. One request per
//! connection; the push pipeline's output goes back as frames.

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use super::Core;
use crate::git::hookproto::{Frame, HookRequest};

pub fn bind(core: &Core) -> anyhow::Result<UnixListener> {
    let path = core.data().hook_socket();
    std::fs::create_dir_all(core.data().run())?;
    crate::fsutil::set_mode(&core.data().run(), 0o700)?;
    // A stale socket from a crashed controller would make bind fail.
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path)?;
    crate::fsutil::set_mode(&path, 0o600)?;
    Ok(l)
}

/// Accepts until the process exits. A shutdown does not stop it: new pushes are refused by
/// the SSH side, and the hooks of pushes still running must reach the controller. (Watching
/// the shutdown token here made this loop spin once it was cancelled.)
pub async fn serve(core: Arc<Core>, listener: UnixListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let core = core.clone();
                tokio::spawn(async move { handle(core, stream).await });
            }
            Err(e) => {
                tracing::warn!(error = %e, "hook socket accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(core: Arc<Core>, stream: UnixStream) {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(r.take(32 << 20));
    let req: HookRequest = match reader.read_line(&mut line).await {
        Ok(_) => match serde_json::from_str(&line) {
            Ok(req) => req,
            Err(e) => {
                core.audit_hook_refusal(None, "malformed hook request");
                let _ = w
                    .write_all(
                        Frame::out(format!("error: bad hook request ({e})"))
                            .to_line()
                            .as_bytes(),
                    )
                    .await;
                let _ = w.write_all(Frame::exit(1).to_line().as_bytes()).await;
                return;
            }
        },
        Err(_) => return,
    };
    let Some(push) = core.pending_push(&req.push_id, &req.token) else {
        // Only a process of this host can reach the socket (0600): whoever it is, the
        // refusal is on the trail, with the app when the push id is a real one.
        let app = core.pending_push_app(&req.push_id);
        let detail = match &app {
            Some(_) => "hook request with a bad token for a push in flight",
            None => "hook request for an unknown push",
        };
        core.audit_hook_refusal(app.as_deref(), detail);
        let _ = w
            .write_all(
                Frame::out("error: unknown push or bad token; push rejected")
                    .to_line()
                    .as_bytes(),
            )
            .await;
        let _ = w.write_all(Frame::exit(1).to_line().as_bytes()).await;
        return;
    };
    let (tx, mut rx) = mpsc::channel::<Frame>(256);
    // The hook sends nothing after its request: EOF means it died (the pusher pressed
    // Ctrl-C, or the connection dropped). That cancels the build.
    let cancel = tokio_util::sync::CancellationToken::new();
    let watcher = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => continue,
                }
            }
            cancel.cancel();
        })
    };
    let pipeline = tokio::spawn(super::push::run(
        core.clone(),
        push,
        req,
        tx.clone(),
        cancel.clone(),
    ));
    drop(tx);
    let mut hook_gone = false;
    while let Some(f) = rx.recv().await {
        if !hook_gone && w.write_all(f.to_line().as_bytes()).await.is_err() {
            // The pusher went away (Ctrl-C): the pipeline sees its sender fail and stops.
            hook_gone = true;
            cancel.cancel();
            rx.close();
        }
    }
    let code = pipeline.await.unwrap_or(1);
    watcher.abort();
    if !hook_gone {
        let _ = w.write_all(Frame::exit(code).to_line().as_bytes()).await;
        let _ = w.flush().await;
    }
}
