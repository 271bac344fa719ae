//! `shell` and `run`: the user's channel bridged to a session on a node. Input (bytes, EOF)
//! and window changes go one way, output the other, each as it comes; the exit status is
//! the remote one. When the user's channel closes first, the session is dropped, which
//! ends it on the node.

use russh::server::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::exec::ExecRequest;
use crate::controller::view::Session;
use crate::controller::view::{Input, Output};

pub async fn bridge(
    mut rx: ChannelReadHalf,
    tx: &ChannelWriteHalf<Msg>,
    req: ExecRequest,
    session: Session,
) -> u32 {
    let ExecRequest {
        term, mut resize, ..
    } = req;
    let (in_tx, in_rx) = mpsc::channel::<Input>(64);
    let (out_tx, mut out_rx) = mpsc::channel::<Output>(64);
    // user -> node. Ends (dropping `in_tx`, which drops the session) when the channel
    // closes: the user is gone.
    let pump = tokio::spawn(async move {
        loop {
            let input = tokio::select! {
                m = rx.wait() => match m {
                    Some(ChannelMsg::Data { data }) => Input::Data(data.to_vec()),
                    Some(ChannelMsg::Eof) => Input::Eof,
                    Some(ChannelMsg::Close) | None => break,
                    Some(_) => continue,
                },
                Some((cols, rows)) = resize.recv() => Input::Resize { cols, rows },
            };
            if in_tx.send(input).await.is_err() {
                break;
            }
        }
    });
    // node -> user, through writers that wait for the user's window.
    let mut out = tx.make_writer();
    let mut err = tx.make_writer_ext(Some(1));
    let write = async {
        while let Some(o) = out_rx.recv().await {
            let r = match o {
                Output::Stdout(b) => out.write_all(&b).await.and(out.flush().await),
                Output::Stderr(b) => err.write_all(&b).await.and(err.flush().await),
            };
            if r.is_err() {
                break;
            }
        }
    };
    let (code, ()) = tokio::join!(session.run(term, in_rx, out_tx), write);
    pump.abort();
    code
}
