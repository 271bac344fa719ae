//! One upstream process address: its in-flight request count (what `drain` waits on), its
//! pool of idle keep-alive connections, and the response body wrapper that keeps the count
//! honest until the last byte has been handed to the client.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tracing::debug;

/// Requests are forwarded with the client's body as it comes (counted against the route's
/// limit), so request bodies stream.
pub(super) type Sender = SendRequest<ReqBody>;

/// Idle connections kept per upstream; beyond this a finished connection is simply closed.
const MAX_IDLE_PER_UPSTREAM: usize = 32;
/// Older idle connections are dropped rather than reused: most app servers close idle
/// keep-alive connections after a while, and reusing one just as it closes fails a request.
const IDLE_EXPIRY: Duration = Duration::from_secs(30);

pub(super) struct Upstream {
    pub(super) addr: SocketAddr,
    inflight: AtomicUsize,
    /// Woken whenever `inflight` drops to zero.
    idle_notify: Notify,
    idle_conns: Mutex<Vec<IdleConn>>,
}

struct IdleConn {
    sender: Sender,
    since: Instant,
}

impl Upstream {
    pub(super) fn new(addr: SocketAddr) -> Arc<Self> {
        Arc::new(Upstream {
            addr,
            inflight: AtomicUsize::new(0),
            idle_notify: Notify::new(),
            idle_conns: Mutex::new(Vec::new()),
        })
    }

    pub(super) fn inflight(&self) -> usize {
        self.inflight.load(Ordering::SeqCst)
    }

    /// Counts a request as dispatched to this upstream until the guard is dropped.
    pub(super) fn begin(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::SeqCst);
        InflightGuard(Arc::clone(self))
    }

    /// Resolves once no request is in flight to this upstream.
    pub(super) async fn wait_idle(&self) {
        loop {
            let notified = self.idle_notify.notified();
            tokio::pin!(notified);
            // Register before checking the count so a decrement in between is not missed.
            notified.as_mut().enable();
            if self.inflight() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// A pooled connection that is ready for a request, if any. Closed or expired ones are
    /// dropped on the way; the most recently used one is preferred as the least likely to
    /// have been closed by the upstream.
    pub(super) fn checkout(&self) -> Option<Sender> {
        let mut idle = self.lock_idle();
        while let Some(conn) = idle.pop() {
            if conn.sender.is_ready() && conn.since.elapsed() < IDLE_EXPIRY {
                return Some(conn.sender);
            }
        }
        None
    }

    /// Returns a connection whose response has been fully read. The connection only becomes
    /// ready again once hyper's connection task has finished the exchange (the request body
    /// may even still be uploading), so wait for that off the request path.
    pub(super) fn checkin(self: &Arc<Self>, mut sender: Sender) {
        // Bodies can be dropped while the runtime shuts down; the connection just closes then.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let this = Arc::clone(self);
        runtime.spawn(async move {
            if sender.ready().await.is_err() {
                return;
            }
            let mut idle = this.lock_idle();
            idle.retain(|c| !c.sender.is_closed() && c.since.elapsed() < IDLE_EXPIRY);
            if idle.len() < MAX_IDLE_PER_UPSTREAM {
                idle.push(IdleConn {
                    sender,
                    since: Instant::now(),
                });
            }
        });
    }

    /// Closes every idle connection (the process behind them is about to go away).
    pub(super) fn clear_idle(&self) {
        self.lock_idle().clear();
    }

    /// Opens a fresh HTTP/1.1 connection. Nothing has been sent when this fails, so the
    /// caller may safely try another upstream.
    pub(super) async fn connect(&self, timeout: Duration) -> io::Result<Sender> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        // Proxied traffic is latency-sensitive and already written in whole frames.
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
        let addr = self.addr;
        tokio::spawn(async move {
            // With upgrades: a 101 hands the connection over to a tunnel (`tunnel.rs`).
            if let Err(err) = conn.with_upgrades().await {
                debug!(upstream = %addr, error = %err, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<IdleConn>> {
        // The pool is only ever pushed to or popped from, so it is consistent even if a
        // holder panicked.
        self.idle_conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// One request counted against an upstream's in-flight total.
pub(super) struct InflightGuard(Arc<Upstream>);

impl InflightGuard {
    pub(super) fn upstream(&self) -> &Arc<Upstream> {
        &self.0
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        if self.0.inflight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle_notify.notify_waiters();
        }
    }
}

/// The upstream's response body on its way to the client. It holds the in-flight guard, so
/// the request counts until the body has been fully passed on (or abandoned), and the
/// connection, which goes back to the pool only if the body was read to its end.
pub(super) struct UpstreamBody {
    inner: Incoming,
    guard: Option<InflightGuard>,
    sender: Option<Sender>,
}

impl UpstreamBody {
    pub(super) fn new(inner: Incoming, guard: InflightGuard, sender: Sender) -> Self {
        UpstreamBody {
            inner,
            guard: Some(guard),
            sender: Some(sender),
        }
    }

    fn finish(&mut self, clean: bool) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        if let Some(sender) = self.sender.take() {
            // A connection whose response was not read to the end cannot carry another
            // request; dropping it closes it.
            if clean {
                guard.upstream().checkin(sender);
            }
        }
        drop(guard);
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            None => this.finish(true),
            Some(Err(_)) => this.finish(false),
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // hyper may stop polling once `is_end_stream` says so, and drops the body early when
        // the client goes away; either way the request is over now.
        let clean = self.inner.is_end_stream();
        self.finish(clean);
    }
}

/// The client's request body on its way upstream (counted by accounting), cut off past the
/// route's limit.
pub(super) struct ReqBody {
    inner: super::accounting::ReqBody,
    /// Bytes still allowed (u64::MAX: no limit).
    left: u64,
    limit: u64,
}

impl ReqBody {
    pub(super) fn new(inner: super::accounting::ReqBody, limit: Option<u64>) -> Self {
        let limit = limit.unwrap_or(u64::MAX);
        ReqBody {
            inner,
            left: limit,
            limit,
        }
    }
}

/// Why a request body could not be passed on.
#[derive(Debug)]
pub(super) enum BodyError {
    Client(hyper::Error),
    TooLarge(u64),
}

impl BodyError {
    /// The limit, when `err` is a body that went past it.
    pub(super) fn too_large(err: &hyper::Error) -> Option<u64> {
        let mut source = std::error::Error::source(err);
        while let Some(e) = source {
            if let Some(BodyError::TooLarge(limit)) = e.downcast_ref::<BodyError>() {
                return Some(*limit);
            }
            source = e.source();
        }
        None
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Client(e) => write!(f, "{e}"),
            BodyError::TooLarge(limit) => write!(f, "request body over {limit} bytes"),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::Client(e) => Some(e),
            BodyError::TooLarge(_) => None,
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > this.left {
                        return Poll::Ready(Some(Err(BodyError::TooLarge(this.limit))));
                    }
                    this.left -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(BodyError::Client(e)))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
