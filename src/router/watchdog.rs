//! The timeouts of an HTTP/1.1 client connection, kept by one coarse ticker per connection
//! instead of timers per request: hyper's header read timeout allocates and arms a timer
//! for every request (and wakes the runtime's driver to re-arm it), and a `timeout` around
//! the upstream exchange arms and disarms another. Here a request only bumps counters.
//!
//! The ticker runs inside the connection's own task (see [`Watchdog::watch`]), every
//! quarter of the shorter bound, and enforces:
//! - idle and header timeout: a connection with no request in progress and none begun for
//!   `idle` is closed, however slowly a client trickles in the next request's head
//!   (the slowloris guard; hyper's header read timeout did the same);
//! - upstream timeout: a request waiting for its upstream's response head for `upstream`
//!   is told so (it answers 504). The ticker wakes the connection's task, which polls the
//!   request, which sees the verdict.
//!
//! Both fire between the bound and 1.5 times it (a request is first seen waiting within a
//! tick of it starting). HTTP/2 connections keep per-stream timers (streams are concurrent).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::proxy::ProxyBody;
use super::upstream::BoxError;

/// What a connection's requests tell its watchdog: shared by the connection's task and its
/// requests, which all run on one thread (atomics only because tasks must be `Send`).
#[derive(Default)]
pub(super) struct Pulse {
    /// Requests begun on the connection; a request's number is the count after its own.
    begun: AtomicU64,
    /// Requests whose response is over (its body passed on or dropped).
    ended: AtomicU64,
    /// The request waiting for its upstream's response head now (0: none).
    waiting: AtomicU64,
    /// The request the watchdog found waiting too long.
    expired: AtomicU64,
}

impl Pulse {
    /// A request begins: its number, for [`Limit::Watched`].
    pub(super) fn begin(self: &Arc<Self>) -> (u64, Ending) {
        let n = self.begun.fetch_add(1, Ordering::Relaxed) + 1;
        (n, Ending(Arc::clone(self)))
    }
}

/// What bounds the wait for an upstream's response head.
#[derive(Clone, Copy)]
pub(super) enum Limit<'a> {
    /// The connection's watchdog, for request number `.1` (HTTP/1.1).
    Watched(&'a Pulse, u64),
    /// A timer of the request's own (HTTP/2, whose streams are concurrent).
    Timer(Duration),
}

/// One wait for a response head, within its [`Limit`].
pub(super) struct Wait<'a> {
    limit: Limit<'a>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<'a> Wait<'a> {
    pub(super) fn new(limit: Limit<'a>) -> Wait<'a> {
        let timer = match limit {
            Limit::Watched(pulse, n) => {
                pulse.waiting.store(n, Ordering::Relaxed);
                None
            }
            Limit::Timer(after) => Some(Box::pin(tokio::time::sleep(after))),
        };
        Wait { limit, timer }
    }

    /// Whether the wait went on too long (a timer is polled: `cx` is woken when it does).
    pub(super) fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        match (self.limit, &mut self.timer) {
            (Limit::Watched(pulse, n), _) => pulse.expired.load(Ordering::Relaxed) == n,
            (Limit::Timer(_), Some(timer)) => timer.as_mut().poll(cx).is_ready(),
            (Limit::Timer(_), None) => false,
        }
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Limit::Watched(pulse, _) = self.limit {
            pulse.waiting.store(0, Ordering::Relaxed);
        }
    }
}

/// Marks its request's response over when dropped.
pub(super) struct Ending(Arc<Pulse>);

impl Ending {
    pub(super) fn pulse(&self) -> &Pulse {
        &self.0
    }
}

impl Drop for Ending {
    fn drop(&mut self) {
        self.0.ended.fetch_add(1, Ordering::Relaxed);
    }
}

/// A response body that ends its request (for the watchdog) when it is over.
pub(super) struct Tracked {
    inner: ProxyBody,
    _ending: Ending,
}

impl Tracked {
    pub(super) fn new(inner: ProxyBody, ending: Ending) -> Tracked {
        Tracked {
            inner,
            _ending: ending,
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How watching a connection ended.
#[derive(Debug, PartialEq)]
pub(super) enum Outcome<T> {
    /// The connection's future finished.
    Done(T),
    /// It sat idle too long (the caller drops it).
    Idle,
    /// The router is shutting down (reported once).
    Shutdown,
}

/// The waker the shutdown token is polled with: it notes that the token woke the task, so
/// the token (a lock) is only looked at again then, not at every wake-up of the task.
struct Noted {
    woke: AtomicBool,
    task: Waker,
}

impl Wake for Noted {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woke.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

/// The ticker's side of a [`Pulse`], and the router's shutdown as the connection sees it.
pub(super) struct Watchdog {
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Set once the token has been polled with a [`Noted`] waker.
    noted: Option<Arc<Noted>>,
    /// Shutdown came (and was reported).
    shut: bool,
    pulse: Arc<Pulse>,
    idle: Duration,
    upstream: Duration,
    tick: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// Whether `sleep` has been polled since it was last set (so it will wake the task).
    armed: bool,
    /// (begun, ended) when last looked at, and since when they have not moved.
    seen: (u64, u64),
    still_since: Instant,
    /// The waiting request last seen, and since when.
    waiting: u64,
    waiting_since: Instant,
}

impl Watchdog {
    pub(super) fn new(
        pulse: Arc<Pulse>,
        idle: Duration,
        upstream: Duration,
        shutdown: CancellationToken,
    ) -> Watchdog {
        let tick = (idle.min(upstream) / 4).max(Duration::from_millis(10));
        let now = Instant::now();
        Watchdog {
            shutdown: Box::pin(shutdown.cancelled_owned()),
            noted: None,
            shut: false,
            pulse,
            idle,
            upstream,
            tick,
            sleep: Box::pin(tokio::time::sleep(tick)),
            armed: false,
            seen: (0, 0),
            still_since: now,
            waiting: 0,
            waiting_since: now,
        }
    }

    /// Polls `conn` (the connection's future), keeps the time and watches for shutdown.
    pub(super) async fn watch<C: Future + Unpin>(&mut self, mut conn: C) -> Outcome<C::Output> {
        std::future::poll_fn(|cx| {
            if self.shutdown_now(cx) {
                return Poll::Ready(Outcome::Shutdown);
            }
            // Checking the ticker is a load while it is armed: polling registers the
            // task's waker, which only needs doing once per tick.
            if !self.armed || self.sleep.is_elapsed() {
                if self.sleep.is_elapsed() && self.tick_now() {
                    return Poll::Ready(Outcome::Idle);
                }
                self.armed = self.sleep.as_mut().poll(cx).is_pending();
            }
            Pin::new(&mut conn).poll(cx).map(Outcome::Done)
        })
        .await
    }

    /// Whether shutdown has just come (true once). The token is polled the first time and
    /// then only when it was what woke the task.
    fn shutdown_now(&mut self, cx: &mut Context<'_>) -> bool {
        if self.shut {
            return false;
        }
        let noted = match &self.noted {
            Some(n) if !n.woke.swap(false, Ordering::AcqRel) => return false,
            Some(n) => Arc::clone(n),
            None => {
                let n = Arc::new(Noted {
                    woke: AtomicBool::new(false),
                    task: cx.waker().clone(),
                });
                self.noted = Some(Arc::clone(&n));
                n
            }
        };
        let waker = Waker::from(noted);
        self.shut = self
            .shutdown
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_ready();
        self.shut
    }

    /// One tick: true when the connection is to be closed as idle. Re-arms the ticker.
    fn tick_now(&mut self) -> bool {
        let now = Instant::now();
        self.sleep.as_mut().reset((now + self.tick).into());
        self.armed = false;
        let p = &self.pulse;
        let waiting = p.waiting.load(Ordering::Relaxed);
        if waiting != self.waiting {
            self.waiting = waiting;
            self.waiting_since = now;
        } else if waiting != 0 && now - self.waiting_since >= self.upstream {
            p.expired.store(waiting, Ordering::Relaxed);
        }
        let seen = (
            p.begun.load(Ordering::Relaxed),
            p.ended.load(Ordering::Relaxed),
        );
        if seen != self.seen || seen.0 != seen.1 {
            self.seen = seen;
            self.still_since = now;
            return false;
        }
        now - self.still_since >= self.idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::future::pending;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// `f`, unless its wait expires first (None), the way the request path waits.
    async fn bound<F: Future>(limit: Limit<'_>, f: F) -> Option<F::Output> {
        let mut wait = Wait::new(limit);
        let mut f = std::pin::pin!(f);
        std::future::poll_fn(|cx| {
            if wait.expired(cx) {
                return Poll::Ready(None);
            }
            f.as_mut().poll(cx).map(Some)
        })
        .await
    }

    #[tokio::test]
    async fn idle_connections_close_and_busy_ones_do_not() {
        let pulse = Arc::new(Pulse::default());
        let mut dog = Watchdog::new(Arc::clone(&pulse), ms(400), ms(800), Default::default());
        let started = Instant::now();
        assert_eq!(dog.watch(pending::<()>()).await, Outcome::Idle);
        let took = started.elapsed();
        assert!(took >= ms(400) && took <= ms(900), "{took:?}");

        // A request in progress (its response not over) keeps it open past the bound.
        let (_, ending) = pulse.begin();
        let held = dog.watch(Box::pin(tokio::time::sleep(ms(1000))));
        assert_eq!(held.await, Outcome::Done(()));
        drop(ending);
        let started = Instant::now();
        assert_eq!(dog.watch(pending::<()>()).await, Outcome::Idle);
        let took = started.elapsed();
        assert!(took >= ms(400) && took <= ms(900), "{took:?}");
    }

    #[tokio::test]
    async fn shutdown_is_reported_once() {
        let token = CancellationToken::new();
        let mut dog = Watchdog::new(Default::default(), ms(30_000), ms(30_000), token.clone());
        let cancel = tokio::spawn(async move {
            tokio::time::sleep(ms(100)).await;
            token.cancel();
        });
        assert_eq!(dog.watch(pending::<()>()).await, Outcome::Shutdown);
        cancel.await.unwrap();
        let after = dog.watch(Box::pin(tokio::time::sleep(ms(50))));
        assert_eq!(after.await, Outcome::Done(()));
    }

    #[tokio::test]
    async fn a_request_waiting_too_long_is_told_so() {
        let pulse = Arc::new(Pulse::default());
        let mut dog = Watchdog::new(Arc::clone(&pulse), ms(30_000), ms(400), Default::default());
        let (n, _ending) = pulse.begin();
        let started = Instant::now();
        let waited = dog.watch(Box::pin(bound(Limit::Watched(&pulse, n), pending::<()>())));
        assert_eq!(waited.await, Outcome::Done(None));
        let took = started.elapsed();
        assert!(took >= ms(400) && took <= ms(900), "{took:?}");
        // One that answers in time gets its answer.
        let (n, _ending) = pulse.begin();
        let quick = bound(Limit::Watched(&pulse, n), tokio::time::sleep(ms(200)));
        assert_eq!(dog.watch(Box::pin(quick)).await, Outcome::Done(Some(())));
        // A timer of its own, the same.
        let started = Instant::now();
        assert_eq!(bound(Limit::Timer(ms(300)), pending::<()>()).await, None);
        assert!(started.elapsed() >= ms(300));
    }
}
