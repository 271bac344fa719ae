//! The router's listeners: plain HTTP/1.1, and HTTPS (rustls, SNI, HTTP/2 or HTTP/1.1 by
//! ALPN). Both cap connections overall and per address, bound idle connections and shut
//! down gracefully.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::proxy::{self, Client};
use super::watchdog::{Outcome, Pulse, Tracked, Watchdog};
use super::{Router, RouterOptions};

/// How long `serve` lets in-flight connections finish after shutdown before cutting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Open client connections, overall and per address.
#[derive(Default)]
struct ConnCount {
    total: usize,
    per: HashMap<IpAddr, usize>,
}

/// One client connection's place in [`ConnCount`], given back on drop.
struct ConnSlot {
    count: Arc<Mutex<ConnCount>>,
    ip: IpAddr,
}

impl ConnSlot {
    fn take(count: &Arc<Mutex<ConnCount>>, ip: IpAddr, opts: &RouterOptions) -> Option<ConnSlot> {
        let ip = ip.to_canonical();
        let mut c = count.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = c.per.get(&ip).copied().unwrap_or(0);
        if c.total >= opts.max_connections.max(1) || mine >= opts.max_per_address.max(1) {
            return None;
        }
        c.total += 1;
        c.per.insert(ip, mine + 1);
        Some(ConnSlot {
            count: Arc::clone(count),
            ip,
        })
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut c = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        c.total -= 1;
        if let Some(n) = c.per.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per.remove(&self.ip);
            }
        }
    }
}

/// Over the cap: a short 503, then close (after letting the client finish sending, so it
/// reads the answer rather than a reset). Over TLS the client gets a closed connection.
async fn refuse(mut stream: TcpStream, tls: bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 32\r\nconnection: close\r\n\r\ntoo many connections; try again\n";
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        if !tls {
            stream.write_all(BUSY).await?;
        }
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, io::Error>(())
    })
    .await;
}

impl Router {
    /// Serves HTTP/1.1 on `listener` until `shutdown` is cancelled, then stops accepting and
    /// gives open connections up to 30 s to finish their current exchange.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        self.accept_loop(listener, None, shutdown).await
    }

    /// Serves HTTPS on `listener`: TLS with `config` (see [`super::tls::server_config`]),
    /// then HTTP/2 or HTTP/1.1 as ALPN chose.
    pub async fn serve_tls(
        self: Arc<Self>,
        listener: TcpListener,
        config: Arc<ServerConfig>,
        shutdown: CancellationToken,
    ) {
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        self.accept_loop(listener, Some(acceptor), shutdown).await
    }

    async fn accept_loop(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        shutdown: CancellationToken,
    ) {
        let mut conns = JoinSet::new();
        let count: Arc<Mutex<ConnCount>> = Arc::default();
        let mut refusals = JoinSet::new();
        loop {
            let (stream, peer) = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                // Reap finished connection tasks so the set does not grow without bound.
                Some(_) = conns.join_next(), if !conns.is_empty() => continue,
                Some(_) = refusals.join_next(), if !refusals.is_empty() => continue,
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(err) => {
                        // Typically EMFILE: back off instead of spinning on the error.
                        warn!(error = %err, "router accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Some(slot) = ConnSlot::take(&count, peer.ip(), &self.opts) else {
                debug!(client = %peer, "router connection limit reached; refusing");
                // Bounded too: past the cap, refusals are cut short rather than queued.
                if refusals.len() < 1024 {
                    refusals.spawn(refuse(stream, tls.is_some()));
                }
                continue;
            };
            let _ = stream.set_nodelay(true);
            // The worker's own reactor takes the socket over.
            let stream = match stream.into_std() {
                Ok(stream) => stream,
                Err(err) => {
                    debug!(client = %peer, error = %err, "cannot hand the connection over");
                    continue;
                }
            };
            let router = Arc::clone(&self);
            // A token of its own: a connection checks it at every poll of its task, and a
            // clone would check (and lock) the one node every connection shares.
            let shutdown = shutdown.child_token();
            let tls = tls.clone();
            let (worker, placed) = self.workers().place();
            conns.spawn_on(
                async move {
                    let _slot = slot;
                    let _placed = placed;
                    let stream = match TcpStream::from_std(stream) {
                        Ok(stream) => stream,
                        Err(err) => {
                            debug!(client = %peer, error = %err, "cannot take the connection over");
                            return;
                        }
                    };
                    match tls {
                        None => router.serve_plain(stream, peer, shutdown).await,
                        Some(acceptor) => {
                            router.serve_https(acceptor, stream, peer, shutdown).await
                        }
                    }
                },
                worker,
            );
        }
        drop(listener);
        let finished = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while conns.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        if !finished {
            warn!(
                open = conns.len(),
                "router shutdown grace expired, closing connections"
            );
            conns.shutdown().await;
        }
    }

    /// One plain HTTP/1.1 connection.
    async fn serve_plain(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        shutdown: CancellationToken,
    ) {
        self.serve_h1(TokioIo::new(stream), peer, false, shutdown)
            .await
    }

    /// One HTTP/1.1 connection (plain, or TLS without `h2`). Its timeouts (idle, header
    /// read, upstream) are kept by a watchdog rather than timers per request (see
    /// `watchdog.rs`).
    async fn serve_h1<I>(
        self: Arc<Self>,
        io: I,
        peer: SocketAddr,
        https: bool,
        shutdown: CancellationToken,
    ) where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let pulse = Arc::new(Pulse::default());
        let mut dog = Watchdog::new(
            Arc::clone(&pulse),
            self.opts.idle_timeout,
            self.opts.upstream_timeout,
            shutdown,
        );
        let client = Arc::new(Client::new(Arc::clone(&self), peer, https));
        let service = service_fn(move |req| {
            let client = Arc::clone(&client);
            let (n, ending) = pulse.begin();
            async move {
                let limit = proxy::Limit::Watched(ending.pulse(), n);
                let resp = proxy::handle(&client, req, limit).await;
                Ok::<_, Infallible>(resp.map(|body| Tracked::new(body, ending)))
            }
        });
        let conn = http1::Builder::new()
            .keep_alive(true)
            .serve_connection(io, service)
            .with_upgrades();
        tokio::pin!(conn);
        let mut outcome = dog.watch(conn.as_mut()).await;
        if matches!(outcome, Outcome::Shutdown) {
            // Finish the exchange in progress, then close; idle keep-alive connections
            // close at once.
            conn.as_mut().graceful_shutdown();
            outcome = dog.watch(conn.as_mut()).await;
        }
        match outcome {
            Outcome::Idle => debug!(client = %peer, "idle connection closed"),
            Outcome::Done(Err(err)) => {
                debug!(client = %peer, error = %err, "client connection ended with an error")
            }
            Outcome::Done(Ok(())) | Outcome::Shutdown => {}
        }
    }

    /// One HTTPS connection: the handshake (bounded), then HTTP/2 or HTTP/1.1 as ALPN
    /// chose. An HTTP/2 connection without traffic for the idle timeout is shut down
    /// gracefully.
    async fn serve_https(
        self: Arc<Self>,
        acceptor: tokio_rustls::TlsAcceptor,
        stream: TcpStream,
        peer: SocketAddr,
        shutdown: CancellationToken,
    ) {
        let activity = Arc::new(AtomicU64::new(0));
        let stream = Watched::new(stream, Arc::clone(&activity));
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(err)) => {
                debug!(client = %peer, error = %err, "TLS handshake failed");
                return;
            }
            Err(_) => {
                debug!(client = %peer, "TLS handshake timed out");
                return;
            }
        };
        match tls.get_ref().1.alpn_protocol() {
            Some(b"h2") => {}
            // A CA's TLS-ALPN-01 check: the handshake was all it wanted.
            Some(super::tls::ACME_TLS_ALPN) => return,
            _ => return self.serve_h1(TokioIo::new(tls), peer, true, shutdown).await,
        }
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http2().timer(TokioTimer::new());
        let builder = builder.http2_only();
        let client = Arc::new(Client::new(Arc::clone(&self), peer, true));
        let timeout = self.opts.upstream_timeout;
        let service = service_fn(move |req| {
            let client = Arc::clone(&client);
            async move {
                let limit = proxy::Limit::Timer(timeout);
                Ok::<_, Infallible>(proxy::handle(&client, req, limit).await)
            }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
        tokio::pin!(conn);
        let idle = self.opts.idle_timeout;
        let result = tokio::select! {
            result = conn.as_mut() => result,
            () = idle_for(&activity, idle) => {
                debug!(client = %peer, "idle HTTPS connection closed");
                conn.as_mut().graceful_shutdown();
                conn.await
            }
            () = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(err) = result {
            debug!(client = %peer, error = %err, "client connection ended with an error");
        }
    }
}

/// Resolves once `activity` has not moved for `idle` (checked every quarter of it, so the
/// bound is met within a quarter).
pub(super) async fn idle_for(activity: &AtomicU64, idle: Duration) {
    let tick = (idle / 4).max(Duration::from_millis(10));
    let mut seen = activity.load(Ordering::Relaxed);
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        let now = activity.load(Ordering::Relaxed);
        if now != seen {
            seen = now;
            since = Instant::now();
        } else if since.elapsed() >= idle {
            return;
        }
    }
}

/// A stream that counts the reads and writes that moved bytes, for idle timeouts (a
/// counter, not a clock: nothing is read per operation but an atomic add).
pub(super) struct Watched<T> {
    inner: T,
    activity: Arc<AtomicU64>,
}

impl<T> Watched<T> {
    pub(super) fn new(inner: T, activity: Arc<AtomicU64>) -> Self {
        Watched { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
