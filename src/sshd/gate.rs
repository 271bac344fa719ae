//! Who may hold a connection, and for how long before it authenticates. Shared by the front
//! door and the node agent (both go through `server::accept_loop`).
//!
//! Idle or slow sockets must never lock anyone out, so connections are counted in two
//! budgets:
//! - **unauthenticated** ones, few per address and few overall, each with a deadline to
//!   authenticate (sshd's `LoginGraceTime`). A newcomer is never refused for lack of room: it
//!   takes the place of the oldest unauthenticated connection from its own address (or,
//!   when the overall budget is full, from the address holding the most), so a flood of idle
//!   sockets only ever displaces itself;
//! - **authenticated** ones (`max_connections`), which only a connection that proved its key
//!   can take, so unauthenticated sockets cannot exhaust it.
//!
//! Rejected authentication attempts are slowed per address: a few a minute are free (a
//! user's agent offering keys the server does not know), past that each one waits
//! longer, one at a time per address, up to a cap. Accepted keys are never delayed.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The limits of one listener.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Authenticated connections at once.
    pub max_connections: usize,
    /// Connections not yet authenticated, over all addresses.
    pub max_unauthenticated: usize,
    /// Connections not yet authenticated, from one address.
    pub per_address: usize,
    /// How long a connection may take to authenticate.
    pub login_grace: Duration,
    /// Rejected attempts per address that go undelayed (the allowance refills at
    /// `free_failures` a minute).
    pub free_failures: u32,
    /// The first delay past the allowance; each next one doubles, up to `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            max_unauthenticated: 128,
            per_address: 16,
            login_grace: Duration::from_secs(30),
            free_failures: 10,
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
        }
    }
}

pub struct Gate {
    limits: Limits,
    authenticated: Arc<Semaphore>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    /// Unauthenticated connections per address, oldest first.
    pending: HashMap<IpAddr, VecDeque<(u64, CancellationToken)>>,
    pending_total: usize,
    failures: HashMap<IpAddr, Failures>,
}

struct Failures {
    /// Rejections, decaying at `free_failures` a minute.
    score: f64,
    at: Instant,
    /// When the next delayed rejection from this address may be answered.
    next: Instant,
}

/// Why an unauthenticated connection was closed.
pub const EVICTED: &str = "displaced by a newer unauthenticated connection";

impl Gate {
    pub fn new(limits: Limits) -> Arc<Gate> {
        Arc::new(Gate {
            authenticated: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            state: Mutex::default(),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new connection from `ip`: always let in, as an unauthenticated one, possibly in
    /// the place of an older one (which is closed).
    pub fn admit(self: &Arc<Gate>, ip: IpAddr) -> Arc<Ticket> {
        let ip = ip.to_canonical();
        let kill = CancellationToken::new();
        let mut st = self.state();
        let mine = st.pending.get(&ip).map_or(0, VecDeque::len);
        let victim = if mine >= self.limits.per_address.max(1) {
            Some(ip)
        } else if st.pending_total >= self.limits.max_unauthenticated.max(1) {
            st.pending
                .iter()
                .max_by_key(|(_, q)| q.len())
                .map(|(a, _)| *a)
        } else {
            None
        };
        if let Some(v) = victim {
            if let Some((_, old)) = st.pending.get_mut(&v).and_then(VecDeque::pop_front) {
                st.pending_total -= 1;
                tracing::info!(peer = %v, "unauthenticated connection closed: {EVICTED}");
                old.cancel();
            }
            if st.pending.get(&v).is_some_and(VecDeque::is_empty) {
                st.pending.remove(&v);
            }
        }
        st.next_id += 1;
        let id = st.next_id;
        st.pending
            .entry(ip)
            .or_default()
            .push_back((id, kill.clone()));
        st.pending_total += 1;
        Arc::new(Ticket {
            gate: self.clone(),
            ip,
            id,
            kill,
            permit: Mutex::new(None),
            authed: Arc::default(),
        })
    }

    /// Take `id` off the unauthenticated list (authenticated, or gone).
    fn unlist(&self, ip: IpAddr, id: u64) {
        let mut guard = self.state();
        let st = &mut *guard;
        if let Some(q) = st.pending.get_mut(&ip) {
            if let Some(pos) = q.iter().position(|(i, _)| *i == id) {
                q.remove(pos);
                st.pending_total -= 1;
            }
            if q.is_empty() {
                st.pending.remove(&ip);
            }
        }
    }

    /// Count a rejection from `ip`; how long to wait before answering it.
    fn failure_delay(&self, ip: IpAddr) -> Duration {
        self.failure_delay_at(ip, Instant::now())
    }

    fn failure_delay_at(&self, ip: IpAddr, now: Instant) -> Duration {
        let l = &self.limits;
        let mut st = self.state();
        // Forget addresses that have been quiet long enough to be back to zero.
        if st.failures.len() > 4096 {
            let rate = f64::from(l.free_failures.max(1)) / 60.0;
            st.failures
                .retain(|_, f| f.score - now.duration_since(f.at).as_secs_f64() * rate > 0.0);
        }
        let f = st.failures.entry(ip).or_insert(Failures {
            score: 0.0,
            at: now,
            next: now,
        });
        let rate = f64::from(l.free_failures.max(1)) / 60.0;
        f.score = (f.score - now.duration_since(f.at).as_secs_f64() * rate).max(0.0) + 1.0;
        f.at = now;
        let over = f.score - f64::from(l.free_failures);
        if over <= 0.0 {
            return Duration::ZERO;
        }
        let delay = l
            .first_delay
            .mul_f64(2f64.powf((over - 1.0).min(30.0)))
            .min(l.max_delay);
        // One at a time per address: parallel connections queue behind each other.
        let start = f.next.max(now);
        f.next = start + delay;
        f.next.duration_since(now)
    }

    fn forgive(&self, ip: IpAddr) {
        self.state().failures.remove(&ip);
    }
}

/// One connection's place at the gate. The accept loop and the handler share it.
pub struct Ticket {
    gate: Arc<Gate>,
    ip: IpAddr,
    id: u64,
    /// Cancelled to close the connection (displaced, or out of time to authenticate).
    kill: CancellationToken,
    /// Held once authenticated.
    permit: Mutex<Option<OwnedSemaphorePermit>>,
    /// Set with `permit`; read on every socket read and write, so lock-free.
    authed: Arc<AtomicBool>,
}

impl Ticket {
    /// The handler accepted a key. `false` when every authenticated place is taken: the
    /// handler refuses, and the connection is closed.
    pub fn authenticated(&self) -> bool {
        let mut p = self.permit.lock().unwrap_or_else(|p| p.into_inner());
        if p.is_some() {
            return true;
        }
        match self.gate.authenticated.clone().try_acquire_owned() {
            Ok(permit) => {
                *p = Some(permit);
                self.authed.store(true, Ordering::Release);
                drop(p);
                self.gate.unlist(self.ip, self.id);
                self.gate.forgive(self.ip);
                true
            }
            Err(_) => {
                tracing::warn!(peer = %self.ip, "connection limit reached; closing");
                self.kill.cancel();
                false
            }
        }
    }

    pub fn is_authenticated(&self) -> bool {
        self.permit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// The handler is about to refuse an authentication attempt: wait as long as this
    /// address has earned.
    pub async fn rejected(&self) {
        let delay = self.gate.failure_delay(self.ip);
        if !delay.is_zero() {
            tracing::info!(peer = %self.ip, delay_ms = delay.as_millis() as u64, "repeated authentication failures; answer delayed");
            tokio::time::sleep(delay).await;
        }
    }

    /// Close the connection.
    pub fn close(&self) {
        self.kill.cancel();
    }

    /// Resolves once the connection is to be closed.
    pub fn closed(&self) -> WaitForCancellationFutureOwned {
        self.kill.clone().cancelled_owned()
    }

    /// Close the connection if it has not authenticated within the grace time.
    pub async fn enforce_grace(&self) {
        let grace = self.gate.limits.login_grace;
        tokio::select! {
            _ = tokio::time::sleep(grace) => {
                if !self.is_authenticated() {
                    tracing::info!(peer = %self.ip, "unauthenticated connection closed: no authentication within {}s", grace.as_secs());
                    self.kill.cancel();
                }
            }
            _ = self.kill.cancelled() => {}
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.gate.unlist(self.ip, self.id);
    }
}

/// A socket that fails every read and write once its ticket says close, so the session
/// that owns it ends (and drops it) wherever it is waiting: in the handshake, in
/// authentication, or for a peer that sends nothing.
pub struct Guarded<S> {
    inner: S,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Once authenticated, nothing closes a connection from here: stop watching (a
    /// session's bulk transfer then pays one atomic load per read or write).
    authed: Arc<AtomicBool>,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, ticket: &Ticket) -> Self {
        Guarded {
            inner,
            closed: Box::pin(ticket.closed()),
            authed: ticket.authed.clone(),
        }
    }

    fn check(&mut self, cx: &mut Context<'_>) -> Result<(), io::Error> {
        if self.authed.load(Ordering::Acquire) {
            return Ok(());
        }
        match self.closed.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection closed by the server",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(per_address: usize, total: usize) -> Arc<Gate> {
        Gate::new(Limits {
            max_connections: 2,
            max_unauthenticated: total,
            per_address,
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn a_newcomer_displaces_the_oldest_unauthenticated_from_its_address() {
        let g = gate(2, 10);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t1 = g.admit(a);
        let t2 = g.admit(a);
        let other = g.admit(b);
        let t3 = g.admit(a);
        assert!(t1.kill.is_cancelled());
        assert!(!t2.kill.is_cancelled() && !t3.kill.is_cancelled());
        assert!(!other.kill.is_cancelled());
        // Authenticated connections are no longer candidates.
        assert!(t2.authenticated());
        let t4 = g.admit(a);
        assert!(!t2.kill.is_cancelled());
        assert!(!t3.kill.is_cancelled() && !t4.kill.is_cancelled());
        let _t5 = g.admit(a);
        assert!(t3.kill.is_cancelled());
    }

    #[tokio::test]
    async fn when_full_the_address_holding_most_gives_way() {
        let g = gate(10, 3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        let a1 = g.admit(a);
        let a2 = g.admit(a);
        let b1 = g.admit(b);
        let c1 = g.admit(c);
        assert!(a1.kill.is_cancelled());
        assert!(!a2.kill.is_cancelled() && !b1.kill.is_cancelled() && !c1.kill.is_cancelled());
    }

    #[tokio::test]
    async fn the_authenticated_budget_is_separate_and_released_on_drop() {
        let g = gate(10, 1);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let t1 = g.admit(a);
        assert!(t1.authenticated());
        let t2 = g.admit(a);
        assert!(t2.authenticated());
        // Unauthenticated newcomers do not touch authenticated connections.
        let _idle: Vec<_> = (0..5).map(|_| g.admit(a)).collect();
        assert!(!t1.kill.is_cancelled() && !t2.kill.is_cancelled());
        let t3 = g.admit(a);
        assert!(!t3.authenticated(), "both places taken");
        assert!(t3.kill.is_cancelled());
        drop(t1);
        let t4 = g.admit(a);
        assert!(t4.authenticated());
        // Nothing is left listed once tickets go.
        drop((t2, t3, t4, _idle));
        assert_eq!(g.state().pending_total, 0);
        assert!(g.state().pending.is_empty());
    }

    #[test]
    fn repeated_failures_wait_longer_one_at_a_time() {
        let g = Gate::new(Limits {
            free_failures: 3,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..Default::default()
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        let d: Vec<u128> = (0..7)
            .map(|_| g.failure_delay_at(a, t0).as_millis())
            .collect();
        // Free, then doubling, queued behind each other (no time passes here).
        assert_eq!(d, vec![0, 0, 0, 100, 300, 700, 1500]);
        assert_eq!(g.failure_delay_at(b, t0), Duration::ZERO, "per address");
        // An hour later the allowance is back.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(g.failure_delay_at(a, later), Duration::ZERO);
        // A success forgets the address.
        for _ in 0..5 {
            g.failure_delay_at(b, later);
        }
        g.forgive(b);
        assert_eq!(g.failure_delay_at(b, later), Duration::ZERO);
    }
}
