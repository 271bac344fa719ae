//! One upstream process address: its in-flight request count (what `drain` waits on), its
//! pool of idle keep-alive connections, and the HTTP/1.1 exchange on one of them.
//!
//! The upstream side is the router's own small HTTP/1.1 client (`h1.rs` is the wire
//! format) rather than hyper's: the rewritten request head goes straight into the
//! connection's socket, the response head is parsed out of one read, and a small body that
//! came in that same read is handed on whole, the connection going back to the pool at
//! once. A connection has no task of its own: the request's task writes and reads it, so a
//! proxied exchange costs one write and one read upstream and two polls of that task.
//! Longer bodies are read as the client takes them; a response that comes while its request
//! is still uploading gets a task of its own that drives both.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use hyper::header;
use hyper::{Method, Request};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio_util::io::poll_read_buf;
use tokio_util::sync::PollSender;

use super::h1::{self, Decoded, Decoder, Framing, ResponseHead, Sending};
use super::watchdog::{Limit, Wait};
use super::workers::{self, Padded};

/// Idle connections kept per upstream; beyond this a finished connection is simply closed.
const MAX_IDLE_PER_UPSTREAM: usize = 128;
/// Older idle connections are dropped rather than reused: most app servers close idle
/// keep-alive connections after a while, and reusing one just as it closes fails a request.
const IDLE_EXPIRY: Duration = Duration::from_secs(30);
/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 8 * 1024;
/// Request body bytes gathered before they are written.
const WRITE_BATCH: usize = 64 * 1024;

pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(super) struct Upstream {
    pub(super) addr: SocketAddr,
    inflight: AtomicUsize,
    /// Woken whenever `inflight` drops to zero.
    idle_notify: Notify,
    /// Idle connections, a pool per worker thread (see `workers.rs`): a connection is
    /// registered with the reactor of the thread that opened it, and a worker never waits
    /// on another's lock.
    idle_conns: Box<[Padded<Mutex<Vec<IdleLink>>>]>,
}

struct IdleLink {
    link: Link,
    /// When it was pooled, by [`coarse_now`].
    since: Duration,
}

/// The monotonic clock as the kernel last ticked it (a few ms coarse), read without the
/// time stamp counter: enough for idle expiry, and cheaper on a path taken per request.
fn coarse_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into; the clock id is a constant Linux has.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One HTTP/1.1 connection to an upstream.
pub(super) struct Link {
    io: TcpStream,
    /// Bytes read and not consumed yet (empty between exchanges). Kept with its
    /// allocation: once the last response's head and body (which share it) have been
    /// handed on, the next read reuses it rather than allocating another.
    rbuf: BytesMut,
    /// The request head and body bytes on their way out (kept for its capacity).
    wbuf: Vec<u8>,
    /// Whether it may carry another request once the current response is read.
    reusable: bool,
    /// How far the current request has gone out.
    out: Outgoing,
}

/// Why an exchange ended without a response head.
#[derive(Debug)]
pub(super) enum ExchangeError {
    /// The connection failed before any byte of an answer came and before any of the
    /// request body was taken from the client: the request may go again elsewhere.
    Unanswered(io::Error),
    /// The connection failed (or the upstream answered nonsense) past that point.
    Broken(io::Error),
    /// The client's body could not be passed on.
    Body(BodyError),
    /// No response head within the request's limit.
    TimedOut,
}

impl Link {
    fn new(io: TcpStream) -> Link {
        Link {
            io,
            rbuf: BytesMut::new(),
            wbuf: Vec::new(),
            reusable: true,
            out: Outgoing {
                sending: Sending::None,
                written: 0,
                body_done: true,
                taken: false,
            },
        }
    }

    /// Whether a pooled connection is still open with nothing unasked for to read. No
    /// system call unless the reactor has seen it readable (the upstream closed it, most
    /// likely).
    fn still_open(&self) -> bool {
        matches!(self.io.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Sends `req` (head, then its body) and reads the response head within `limit`,
    /// skipping interim (1xx) answers other than `101`. The request stays the caller's, so
    /// one that never got an answer can go again.
    pub(super) async fn exchange(
        &mut self,
        req: &mut Request<ReqBody>,
        limit: Limit<'_>,
    ) -> Result<ResponseHead, ExchangeError> {
        let sending = if req.headers().contains_key(header::CONTENT_LENGTH) {
            Sending::Length
        } else if req.body().is_end_stream() {
            Sending::None
        } else {
            Sending::Chunked
        };
        self.wbuf.clear();
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        h1::encode_request_head(req.method(), target, req.headers(), sending, &mut self.wbuf);
        self.out = Outgoing {
            sending,
            written: 0,
            body_done: sending == Sending::None,
            taken: false,
        };
        let mut answered = false;
        let mut wait = Wait::new(limit);
        // Standard methods clone without allocating.
        let method = req.method().clone();
        let body = req.body_mut();
        std::future::poll_fn(|cx| {
            if wait.expired(cx) {
                return Poll::Ready(Err(ExchangeError::TimedOut));
            }
            let fail = |e, taken: bool, answered| {
                if taken || answered {
                    ExchangeError::Broken(e)
                } else {
                    ExchangeError::Unanswered(e)
                }
            };
            if let Err(err) = self.send(cx, body) {
                return Poll::Ready(Err(match err {
                    SendError::Io(e) => fail(e, self.out.taken, answered),
                    SendError::Body(e) => ExchangeError::Body(e),
                }));
            }
            loop {
                match h1::parse_response_head(&mut self.rbuf, &method) {
                    Ok(Some(head))
                        if head.status.is_informational()
                            && head.status != hyper::StatusCode::SWITCHING_PROTOCOLS =>
                    {
                        continue
                    }
                    Ok(Some(head)) => {
                        return Poll::Ready(Ok(head));
                    }
                    Ok(None) => {}
                    Err(e) => return Poll::Ready(Err(ExchangeError::Broken(e))),
                }
                match ready!(self.read(cx)) {
                    Ok(0) => {
                        let eof = io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "upstream closed the connection without an answer",
                        );
                        return Poll::Ready(Err(fail(eof, self.out.taken, answered)));
                    }
                    Ok(_) => answered = true,
                    Err(e) => return Poll::Ready(Err(fail(e, self.out.taken, answered))),
                }
            }
        })
        .await
    }

    /// Writes what is pending of the request, taking more of its body as it comes, until
    /// the socket or the body has to wait (or all of it is out).
    fn send(&mut self, cx: &mut Context<'_>, body: &mut ReqBody) -> Result<(), SendError> {
        let out = &mut self.out;
        loop {
            while out.written < self.wbuf.len() {
                match Pin::new(&mut self.io).poll_write(cx, &self.wbuf[out.written..]) {
                    Poll::Ready(Ok(0)) => {
                        return Err(SendError::Io(io::ErrorKind::WriteZero.into()))
                    }
                    Poll::Ready(Ok(n)) => out.written += n,
                    Poll::Ready(Err(e)) => return Err(SendError::Io(e)),
                    Poll::Pending => return Ok(()),
                }
            }
            if out.body_done {
                return Ok(());
            }
            self.wbuf.clear();
            out.written = 0;
            // Gather what the body has ready into one write.
            while self.wbuf.len() < WRITE_BATCH {
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        let Ok(data) = frame.into_data() else {
                            continue;
                        };
                        out.taken = true;
                        match out.sending {
                            Sending::Chunked => h1::encode_chunk(&data, &mut self.wbuf),
                            _ => self.wbuf.extend_from_slice(&data),
                        }
                    }
                    Poll::Ready(Some(Err(e))) => return Err(SendError::Body(e)),
                    Poll::Ready(None) => {
                        out.body_done = true;
                        if out.sending == Sending::Chunked {
                            self.wbuf.extend_from_slice(h1::LAST_CHUNK);
                        }
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            if self.wbuf.is_empty() {
                return Ok(());
            }
        }
    }

    /// Whether all of the request has been written.
    pub(super) fn sent_all(&self) -> bool {
        self.out.body_done && self.out.written >= self.wbuf.len()
    }

    fn read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.rbuf.reserve(READ_CHUNK);
        poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf)
    }

    /// The connection for a tunnel after a `101`, with what the upstream sent past the
    /// response head.
    pub(super) fn into_upgraded(self) -> super::tunnel::UpstreamIo {
        super::tunnel::UpstreamIo::new(self.io, self.rbuf.freeze())
    }
}

/// Where sending a request stands.
struct Outgoing {
    sending: Sending,
    /// Bytes of `wbuf` written.
    written: usize,
    body_done: bool,
    /// Whether any of the client's body has been taken (then the request cannot go again).
    taken: bool,
}

enum SendError {
    Io(io::Error),
    Body(BodyError),
}

/// Methods a request may be sent again with after a reused connection failed it unanswered
/// (RFC 9110 section 9.2.2).
pub(super) fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
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

    /// A pooled connection that is still open, if any: one the upstream closed while it
    /// sat idle is seen closed and dropped, as are expired ones; the most recently used
    /// one is preferred as the least likely to have been closed by the upstream.
    pub(super) fn checkout(&self) -> Option<Link> {
        let mut idle = self.lock_idle();
        let now = coarse_now();
        while let Some(conn) = idle.pop() {
            if now.saturating_sub(conn.since) < IDLE_EXPIRY && conn.link.still_open() {
                return Some(conn.link);
            }
        }
        None
    }

    /// Takes back a connection whose response has been read to its end.
    fn checkin(&self, link: Link) {
        if !link.reusable || !link.rbuf.is_empty() {
            // Bytes past the response's end: the upstream is out of step with us.
            return;
        }
        let mut idle = self.lock_idle();
        let now = coarse_now();
        if idle.len() >= MAX_IDLE_PER_UPSTREAM {
            idle.retain(|c| now.saturating_sub(c.since) < IDLE_EXPIRY && c.link.still_open());
        }
        if idle.len() < MAX_IDLE_PER_UPSTREAM {
            idle.push(IdleLink { link, since: now });
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

    /// Opens a fresh connection. Nothing has been sent when this fails, so the caller may
    /// safely try another upstream.
    pub(super) async fn connect(&self, timeout: Duration) -> io::Result<Link> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        // Proxied traffic is latency-sensitive and already written in whole frames.
        stream.set_nodelay(true)?;
        Ok(Link::new(stream))
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
/// connection while the body comes in: back to the pool once the body has been read to its
/// end, closed if it never is.
pub(super) struct UpstreamBody {
    state: BodyState,
    guard: Option<InflightGuard>,
}

enum BodyState {
    /// All of it, read already (the connection is back in the pool); None once handed on.
    Whole(Option<Bytes>),
    Reading(Link, Decoder),
    /// From the task that drives the connection while the request is still uploading.
    Piped(mpsc::Receiver<io::Result<Bytes>>),
}

impl UpstreamBody {
    /// The body of a response whose head was just read off `link`; `upload` is the rest
    /// of the request's body when the upstream answered before it was all sent.
    pub(super) fn new(
        framing: Framing,
        mut link: Link,
        keep_alive: bool,
        upload: Option<ReqBody>,
        guard: InflightGuard,
    ) -> UpstreamBody {
        link.reusable &= keep_alive;
        let mut decoder = Decoder::new(framing);
        if let Some(upload) = upload {
            let upstream = Arc::clone(guard.upstream());
            return UpstreamBody {
                state: BodyState::Piped(pipe(link, upload, decoder, upstream)),
                guard: Some(guard),
            };
        }
        let whole = decoder
            .remaining()
            .is_some_and(|n| n <= link.rbuf.len() as u64);
        let state = if whole {
            // The common case for small answers: all of it came with the head.
            let data = match decoder.decode(&mut link.rbuf) {
                Ok(Decoded::Data(data)) => Some(data),
                _ => None,
            };
            guard.upstream().checkin(link);
            BodyState::Whole(data)
        } else {
            BodyState::Reading(link, decoder)
        };
        UpstreamBody {
            state,
            guard: Some(guard),
        }
    }

    /// No body (an upgrade's `101`): the request counts until it is handed on.
    pub(super) fn empty(guard: InflightGuard) -> UpstreamBody {
        UpstreamBody {
            state: BodyState::Whole(None),
            guard: Some(guard),
        }
    }

    /// The body has been read to its end: the connection goes back to the pool and the
    /// request stops counting.
    fn finish(&mut self) {
        if let BodyState::Reading(link, _) =
            std::mem::replace(&mut self.state, BodyState::Whole(None))
        {
            if let Some(guard) = &self.guard {
                guard.upstream().checkin(link);
            }
        }
        self.guard = None;
    }

    /// The body cannot be read on: the connection is dropped (closed), the request over.
    fn fail(&mut self, err: io::Error) -> BoxError {
        self.state = BodyState::Whole(None);
        self.guard = None;
        err.into()
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let (link, decoder) = match &mut this.state {
            BodyState::Whole(data) => {
                let frame = data.take().map(|d| Ok(Frame::data(d)));
                if frame.is_none() {
                    this.guard = None;
                }
                return Poll::Ready(frame);
            }
            BodyState::Reading(link, decoder) => (link, decoder),
            BodyState::Piped(rx) => {
                return Poll::Ready(match ready!(rx.poll_recv(cx)) {
                    Some(Ok(data)) => Some(Ok(Frame::data(data))),
                    Some(Err(e)) => Some(Err(this.fail(e))),
                    None => {
                        this.finish();
                        None
                    }
                })
            }
        };
        loop {
            match decoder.decode(&mut link.rbuf) {
                Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(Decoded::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Decoded::More) => {}
                Err(e) => return Poll::Ready(Some(Err(this.fail(e)))),
            }
            match ready!(link.read(cx)) {
                Ok(0) => match decoder.eof() {
                    // A body that ran until the close: nothing left to reuse.
                    Ok(()) => link.reusable = false,
                    Err(e) => return Poll::Ready(Some(Err(this.fail(e)))),
                },
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(this.fail(e)))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            BodyState::Whole(data) => data.is_none(),
            BodyState::Reading(_, decoder) => decoder.is_done(),
            BodyState::Piped(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            BodyState::Whole(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            BodyState::Reading(_, decoder) => match decoder.remaining() {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
            BodyState::Piped(_) => SizeHint::default(),
        }
    }
}

/// Frames a piped response body may run ahead of the client by.
const PIPE_FRAMES: usize = 4;

/// A response that came while its request was still uploading: a task of its own drives
/// the connection both ways, so the upload goes on even while the client is slow to read
/// the answer (a client may well finish sending before it reads), and hands the body over.
fn pipe(
    mut link: Link,
    mut upload: ReqBody,
    mut decoder: Decoder,
    upstream: Arc<Upstream>,
) -> mpsc::Receiver<io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(PIPE_FRAMES);
    tokio::spawn(async move {
        let mut tx = PollSender::new(tx);
        let mut uploading = true;
        let clean = std::future::poll_fn(|cx| {
            if uploading {
                match link.send(cx, &mut upload) {
                    Ok(()) => uploading = !link.sent_all(),
                    // The answer is on its way: the rest of the request no longer
                    // matters; the app learns it is cut short by the end of its input.
                    Err(_) => {
                        uploading = false;
                        link.reusable = false;
                        let _ = Pin::new(&mut link.io).poll_shutdown(cx);
                    }
                }
            }
            loop {
                match ready!(tx.poll_reserve(cx)) {
                    Ok(()) => {}
                    // The client went away.
                    Err(_) => return Poll::Ready(false),
                }
                let item = match decoder.decode(&mut link.rbuf) {
                    Ok(Decoded::Data(data)) => Ok(data),
                    // Reusable only once all of the request went too.
                    Ok(Decoded::End) => return Poll::Ready(!uploading && link.sent_all()),
                    Ok(Decoded::More) => match ready!(link.read(cx)) {
                        Ok(0) => match decoder.eof() {
                            Ok(()) => {
                                link.reusable = false;
                                continue;
                            }
                            Err(e) => Err(e),
                        },
                        Ok(_) => continue,
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                };
                let failed = item.is_err();
                let _ = tx.send_item(item);
                if failed {
                    return Poll::Ready(false);
                }
            }
        })
        .await;
        if clean {
            upstream.checkin(link);
        }
    });
    rx
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // hyper may stop polling once `is_end_stream` says so: a body read to its end still
        // gives its connection back.
        if matches!(&self.state, BodyState::Reading(_, d) if d.is_done()) {
            self.finish();
        }
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

    /// The client's body as it comes, past the limit (to read and drop what a refused
    /// client is still sending).
    pub(super) fn client(&mut self) -> &mut super::accounting::ReqBody {
        &mut self.inner
    }
}

/// Why a request body could not be passed on.
#[derive(Debug)]
pub(super) enum BodyError {
    Client(hyper::Error),
    TooLarge(u64),
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn pooled_connections_the_upstream_closed_are_not_checked_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = Upstream::new(listener.local_addr().unwrap());
        let kept = upstream.connect(Duration::from_secs(5)).await.unwrap();
        let (kept_end, _) = listener.accept().await.unwrap();
        let closed = upstream.connect(Duration::from_secs(5)).await.unwrap();
        let (mut closed_end, _) = listener.accept().await.unwrap();
        upstream.checkin(kept);
        upstream.checkin(closed);
        closed_end.shutdown().await.unwrap();
        drop(closed_end);
        // The reactor sees the close once this task lets it run.
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The most recent (closed) one is dropped, the open one is handed out.
        assert!(upstream.checkout().is_some());
        assert!(upstream.checkout().is_none());
        drop(kept_end);
    }

    #[tokio::test]
    async fn connections_with_bytes_past_the_response_or_not_reusable_are_not_pooled() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = Upstream::new(listener.local_addr().unwrap());
        let mut extra = upstream.connect(Duration::from_secs(5)).await.unwrap();
        extra.rbuf.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        upstream.checkin(extra);
        let mut spent = upstream.connect(Duration::from_secs(5)).await.unwrap();
        spent.reusable = false;
        upstream.checkin(spent);
        assert!(upstream.checkout().is_none());
    }
}
