//! `receive`: a release tarball streamed from the channel into the node's layout, hashed and
//! extracted in one pass.

use tokio::sync::mpsc;

use super::error::AgentError;
use super::AgentCtx;
use crate::chunks::ChunkReader;
use crate::node::proto::{ReceiveReply, ReceiveReq};

pub(super) async fn receive(
    ctx: &AgentCtx,
    mut rx: russh::ChannelReadHalf,
    req: ReceiveReq,
) -> Result<ReceiveReply, AgentError> {
    // Channel data goes to the blocking side chunk by chunk as it arrives, which hashes and
    // extracts it: one copy and one hand-off per packet, not a pipe's two.
    let (tx, chunks) = mpsc::channel::<Vec<u8>>(64);
    let pump = tokio::spawn(async move {
        while let Some(msg) = rx.wait().await {
            let data = match msg {
                russh::ChannelMsg::Data { data } => data,
                russh::ChannelMsg::Eof | russh::ChannelMsg::Close => break,
                _ => continue,
            };
            if tx.send(data.to_vec()).await.is_err() {
                break;
            }
        }
    });
    let root = ctx.root.clone();
    // A swarm agent keeps the tarball too: its tasks fetch it from the release endpoint.
    let keep = match &ctx.swarm {
        Some(sw) if !sw.tarballs.has(&req.app, &req.release) => Some(sw.tarballs.clone()),
        _ => None,
    };
    let res = tokio::task::spawn_blocking(move || {
        let reader = ChunkReader::new(chunks);
        let Some(t) = keep else {
            return root.receive(&req.app, &req.release, &req.sha256, reader);
        };
        let (tmp, file) = t.temp()?;
        let mut tee = super::swarm::endpoint::Tee {
            inner: reader,
            file,
            failed: false,
        };
        let r = root.receive(&req.app, &req.release, &req.sha256, &mut tee);
        let kept = match (&r, tee.failed) {
            (Ok(_), false) => t.keep(&req.app, &req.release, &req.sha256, &tmp),
            _ => Ok(()),
        };
        let _ = std::fs::remove_file(&tmp);
        kept.and(r)
    })
    .await
    .map_err(|e| AgentError::Internal(e.to_string()))?;
    pump.abort();
    let received = res?;
    Ok(ReceiveReply { received })
}
