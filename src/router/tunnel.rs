//! HTTP/1.1 upgrades (WebSocket, or any other protocol an app speaks after a `101`): the
//! request goes upstream with its `Upgrade` kept; when the app answers `101 Switching
//! Protocols`, the client's connection is handed over by hyper, the upstream's by the
//! router's own client (with whatever the app sent past the `101`), and the bytes are
//! copied both ways until either side closes or the tunnel sits idle for the idle timeout.
//!
//! A tunnel no longer counts as a request in flight once it is set up: a deploy does not
//! wait for long-lived WebSockets, which end with the old process (clients reconnect).

use std::io;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, Version};
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::listen::{idle_for, Watched};
use super::proxy::ProxyBody;

/// The protocol an HTTP/1.1 request asks to switch to (`Connection: upgrade` and an
/// `Upgrade` header), if any. HTTP/2 has no such upgrade.
pub(super) fn wanted<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let asks = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !asks {
        return None;
    }
    req.headers().get(header::UPGRADE).cloned()
}

/// Puts the upgrade back on the upstream request (hop-by-hop headers were stripped).
pub(super) fn ask_upstream(headers: &mut HeaderMap, proto: &HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, proto.clone());
}

/// The upstream's connection after it switched protocols: what it sent past the `101`
/// first, then the socket.
pub(super) struct UpstreamIo {
    io: TcpStream,
    early: Bytes,
}

impl UpstreamIo {
    pub(super) fn new(io: TcpStream, early: Bytes) -> UpstreamIo {
        UpstreamIo { io, early }
    }
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.early.is_empty() {
            let n = self.early.len().min(buf.remaining());
            buf.put_slice(&self.early[..n]);
            self.early.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// When the app switched protocols (`upstream` is then its connection), joins the two
/// connections once hyper hands the client's over and answers the client with the `101`;
/// any other answer goes back as it is.
pub(super) fn finish(
    mut response: Response<ProxyBody>,
    proto: HeaderValue,
    client: OnUpgrade,
    upstream: Option<UpstreamIo>,
    idle: Duration,
) -> Response<ProxyBody> {
    let Some(mut upstream) = upstream else {
        return response;
    };
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, proto);
    tokio::spawn(async move {
        let client = match client.await {
            Ok(client) => client,
            Err(err) => {
                debug!(error = %err, "upgrade not completed");
                return;
            }
        };
        let activity = Arc::new(AtomicU64::new(0));
        let mut client = Watched::new(TokioIo::new(client), Arc::clone(&activity));
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                if let Err(err) = r {
                    debug!(error = %err, "tunnel ended with an error");
                }
            }
            () = idle_for(&activity, idle) => debug!("idle tunnel closed"),
        }
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http11_requests_naming_upgrade_in_connection_upgrade() {
        let ws = Request::get("/")
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert_eq!(wanted(&ws).unwrap(), "websocket");
        let no_conn = Request::get("/")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert!(wanted(&no_conn).is_none());
        let h2 = Request::get("/")
            .version(Version::HTTP_2)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert!(wanted(&h2).is_none());
    }
}
