//! One upstream process address: its in-flight request count (what `drain` waits on), its
//! pool of idle keep-alive connections, and the response body wrapper that keeps the count
//! honest until the last byte has been handed to the client.
//!
//! An upstream connection has no task of its own while it carries a request: the request's
//! task drives it (hyper's connection future is polled beside the response, then by the
//! response body), so a proxied exchange wakes one task, not two that hand the request and
//! the response over to each other. An idle pooled connection is driven by nobody; the next
//! request that takes it polls it first, which notices one the upstream has closed. A
//! response whose body is large or streamed gets the connection a task of its own once its
//! head is in (as does an upgrade): the body then comes in as the client reads it, and a
//! request body still uploading keeps going even while the client is slow to read.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::TrySendError;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tracing::debug;

use super::watchdog::{Limit, Wait};
use super::workers::{self, Padded};

/// Requests are forwarded with the client's body as it comes (counted against the route's
/// limit), so request bodies stream.
pub(super) type Sender = SendRequest<ReqBody>;

/// What one exchange on a link ends with: the response head, or the error (with the
/// request, when it never left).
pub(super) type Exchanged = Result<Response<Incoming>, TrySendError<Request<ReqBody>>>;

/// hyper's connection future (with upgrades, so a `101` hands the connection over to a
/// tunnel), boxed once per connection: its type cannot be named.
type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// Responses whose body is known to be at most this long are driven by the request's task
/// to their end; longer or streamed ones get a task of their own for their connection.
const INLINE_BODY_MAX: u64 = 64 * 1024;
/// Idle connections kept per upstream; beyond this a finished connection is simply closed.
const MAX_IDLE_PER_UPSTREAM: usize = 128;
/// Older idle connections are dropped rather than reused: most app servers close idle
/// keep-alive connections after a while, and reusing one just as it closes fails a request.
const IDLE_EXPIRY: Duration = Duration::from_secs(30);

pub(super) struct Upstream {
    pub(super) addr: SocketAddr,
    inflight: AtomicUsize,
    /// Woken whenever `inflight` drops to zero.
    idle_notify: Notify,
    /// Idle connections, a pool per worker thread (see `workers.rs`): a connection is
    /// driven by the thread that pooled it, and a worker never waits on another's lock.
    idle_conns: Box<[Padded<Mutex<Vec<IdleLink>>>]>,
}

struct IdleLink {
    link: Link,
    since: Instant,
}

/// One HTTP/1.1 connection to an upstream: where requests are sent, and the connection
/// itself, driven by whoever holds the link.
pub(super) struct Link {
    sender: Sender,
    conn: Conn,
    addr: SocketAddr,
    /// What the connection is polled with while driven here: wakes the driving task, but
    /// not for what that task is about to drive anyway (see [`DriveWaker`]).
    wake: Arc<DriveWaker>,
    waker: Waker,
}

/// The waker a link's connection is polled with. Handing the connection a request, or
/// taking its response body, wakes it; the task doing so drives it right after, so such a
/// wake would only poll the whole client connection again for nothing (and every request
/// took two such polls). While `held`, a wake is noted instead; driving the connection
/// clears the note, and [`DriveWaker::release`] passes a wake on that driving did not
/// follow. Wakes from I/O readiness arrive between polls, never while held.
struct DriveWaker {
    task: AtomicWaker,
    held: AtomicBool,
    missed: AtomicBool,
}

impl Wake for DriveWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.held.load(Ordering::Acquire) {
            self.missed.store(true, Ordering::Release);
        } else {
            self.task.wake();
        }
    }
}

impl DriveWaker {
    fn hold(&self) {
        self.held.store(true, Ordering::Release);
    }

    /// Ends a hold that was not followed by driving the connection.
    fn release(&self) {
        self.held.store(false, Ordering::Release);
        if self.missed.swap(false, Ordering::AcqRel) {
            self.task.wake();
        }
    }
}

/// Who drives a link's connection.
enum Conn {
    /// Whoever holds the link.
    Here(Driver),
    /// A task of its own.
    Own,
    /// Nobody: it has finished (closed or failed).
    Done,
}

impl Link {
    /// Moves the connection's I/O along as far as it goes without waiting.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let Conn::Here(conn) = &mut self.conn {
            self.wake.task.register(cx.waker());
            self.wake.held.store(false, Ordering::Release);
            self.wake.missed.store(false, Ordering::Release);
            if let Poll::Ready(result) = conn.as_mut().poll(&mut Context::from_waker(&self.waker)) {
                if let Err(err) = result {
                    debug!(upstream = %self.addr, error = %err, "upstream connection ended with an error");
                }
                self.conn = Conn::Done;
            }
        }
    }

    /// Whether its connection is driven by whoever holds the link (rather than a task of
    /// its own): then what the connection hands over (the response, its body) can only
    /// arrive while the holder drives it, so the holder needs no wake-up for those.
    fn driven_here(&self) -> bool {
        matches!(self.conn, Conn::Here(_))
    }

    /// Whether another request can be sent on it now.
    fn is_ready(&self) -> bool {
        !matches!(self.conn, Conn::Done) && self.sender.is_ready()
    }

    /// Whether it may still become ready.
    fn is_alive(&self) -> bool {
        !matches!(self.conn, Conn::Done) && !self.sender.is_closed()
    }

    /// Gives the connection a task of its own (it stays usable through the link).
    fn hand_off(&mut self) {
        if let Conn::Here(conn) = std::mem::replace(&mut self.conn, Conn::Own) {
            let addr = self.addr;
            tokio::spawn(async move {
                if let Err(err) = conn.await {
                    debug!(upstream = %addr, error = %err, "upstream connection ended with an error");
                }
            });
        }
    }

    /// Sends `req` (at once) and waits for the response head within `limit`, driving the
    /// connection meanwhile: None when the wait expired. A request that never left comes
    /// back in the error. Not an `async fn`: the request goes into hyper's queue now rather
    /// than being kept (and moved) in the future's state.
    pub(super) fn exchange<'a>(
        &'a mut self,
        req: Request<ReqBody>,
        limit: Limit<'a>,
    ) -> impl Future<Output = Option<Exchanged>> + 'a {
        // Handing the request over wakes the connection, which is driven next anyway.
        self.wake.hold();
        let response = self.sender.try_send_request(req);
        async move {
            let mut wait = Wait::new(limit);
            let mut response = std::pin::pin!(response);
            std::future::poll_fn(|cx| {
                if wait.expired(cx) {
                    return Poll::Ready(None);
                }
                self.drive(cx);
                let head = if self.driven_here() {
                    response
                        .as_mut()
                        .poll(&mut Context::from_waker(Waker::noop()))
                } else {
                    response.as_mut().poll(cx)
                };
                head.map(Some)
            })
            .await
        }
    }

    /// Lets the connection run on its own task to its end: it is being upgraded (the
    /// tunnel takes it over once hyper hands it out).
    pub(super) fn detach(mut self) {
        self.hand_off();
    }
}

impl Upstream {
    pub(super) fn new(addr: SocketAddr) -> Arc<Self> {
        Arc::new(Upstream {
            addr,
            inflight: AtomicUsize::new(0),
            idle_notify: Notify::new(),
            idle_conns: (0..workers::shards()).map(|_| Padded::default()).collect(),
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

    /// A pooled connection that is ready for a request, if any. Each is polled first, so
    /// one the upstream closed while it sat idle is seen closed and dropped, as are expired
    /// ones; the most recently used one is preferred as the least likely to have been
    /// closed by the upstream.
    pub(super) async fn checkout(&self) -> Option<Link> {
        std::future::poll_fn(|cx| {
            let mut idle = self.lock_idle();
            while let Some(mut conn) = idle.pop() {
                if conn.since.elapsed() >= IDLE_EXPIRY {
                    continue;
                }
                conn.link.drive(cx);
                if conn.link.is_ready() {
                    return Poll::Ready(Some(conn.link));
                }
            }
            Poll::Ready(None)
        })
        .await
    }

    /// Returns a connection whose response has been fully read. It is pooled at once when
    /// it is ready for the next request, which is the rule; one still busy (the request
    /// body may even still be uploading) is driven until it is ready by a task of its own.
    fn checkin(self: &Arc<Self>, mut link: Link, cx: &mut Context<'_>) {
        link.drive(cx);
        if link.is_ready() {
            self.pool(link);
            return;
        }
        if !link.is_alive() {
            return;
        }
        // Bodies can be dropped while the runtime shuts down; the connection just closes then.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let this = Arc::clone(self);
        runtime.spawn(async move {
            let ready = std::future::poll_fn(|cx| {
                link.drive(cx);
                if matches!(link.conn, Conn::Done) {
                    return Poll::Ready(false);
                }
                link.sender.poll_ready(cx).map(|r| r.is_ok())
            })
            .await;
            if ready {
                this.pool(link);
            }
        });
    }

    fn pool(&self, link: Link) {
        let mut idle = self.lock_idle();
        if idle.len() >= MAX_IDLE_PER_UPSTREAM {
            idle.retain(|c| c.link.is_alive());
            idle.retain(|c| c.since.elapsed() < IDLE_EXPIRY);
        }
        if idle.len() < MAX_IDLE_PER_UPSTREAM {
            idle.push(IdleLink {
                link,
                since: Instant::now(),
            });
        }
    }

    /// Closes every idle connection (the process behind them is about to go away).
    pub(super) fn clear_idle(&self) {
        for shard in &self.idle_conns {
            shard
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
    }

    /// Opens a fresh HTTP/1.1 connection. Nothing has been sent when this fails, so the
    /// caller may safely try another upstream.
    pub(super) async fn connect(&self, timeout: Duration) -> io::Result<Link> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        // Proxied traffic is latency-sensitive and already written in whole frames.
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
        let wake = Arc::new(DriveWaker {
            task: AtomicWaker::new(),
            held: AtomicBool::new(false),
            missed: AtomicBool::new(false),
        });
        Ok(Link {
            sender,
            conn: Conn::Here(Box::pin(conn.with_upgrades())),
            addr: self.addr,
            waker: Waker::from(Arc::clone(&wake)),
            wake,
        })
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<IdleLink>> {
        // The pool is only ever pushed to or popped from, so it is consistent even if a
        // holder panicked.
        self.idle_conns[workers::shard()]
            .0
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
/// connection, which it drives while the body comes in and which goes back to the pool
/// only if the body was read to its end.
pub(super) struct UpstreamBody {
    inner: Incoming,
    guard: Option<InflightGuard>,
    link: Option<Link>,
}

impl UpstreamBody {
    /// `link` is None when the connection went on its own (an upgrade).
    pub(super) fn new(inner: Incoming, guard: InflightGuard, mut link: Option<Link>) -> Self {
        let small = inner.is_end_stream()
            || inner
                .size_hint()
                .exact()
                .is_some_and(|n| n <= INLINE_BODY_MAX);
        if !small {
            if let Some(link) = link.as_mut() {
                link.hand_off();
            }
        }
        UpstreamBody {
            inner,
            guard: Some(guard),
            link,
        }
    }

    fn finish(&mut self, clean: bool, cx: &mut Context<'_>) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        if let Some(link) = self.link.take() {
            // A connection whose response was not read to the end cannot carry another
            // request; dropping it closes it.
            if clean {
                guard.upstream().checkin(link, cx);
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
        let frame = match this.link.as_mut().filter(|l| l.driven_here()) {
            // The body comes in through the connection, which only this body drives now:
            // it is what wakes this task (see `DriveWaker`).
            Some(link) => {
                let noop = &mut Context::from_waker(Waker::noop());
                // Taking the body wakes the connection (it may read on), driven next.
                link.wake.hold();
                let mut frame = Pin::new(&mut this.inner).poll_frame(noop);
                if frame.is_pending() {
                    link.drive(cx);
                    frame = Pin::new(&mut this.inner).poll_frame(noop);
                } else if link.wake.missed.load(Ordering::Acquire) {
                    // The connection has more to do (typically: finish the response it
                    // just handed over): done here rather than in another poll of the task.
                    link.drive(cx);
                } else {
                    link.wake.release();
                }
                frame
            }
            None => Pin::new(&mut this.inner).poll_frame(cx),
        };
        let frame = ready!(frame);
        match &frame {
            None => this.finish(true, cx),
            Some(Err(_)) => this.finish(false, cx),
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
        // the client goes away; either way the request is over now. Nobody waits on the
        // connection from here: it is driven without a waker, and the next request to take
        // it from the pool polls it properly.
        let clean = self.inner.is_end_stream();
        self.finish(clean, &mut Context::from_waker(Waker::noop()));
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
