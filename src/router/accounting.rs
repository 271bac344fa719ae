//! Traffic accounting: what the router counts per app and environment (requests by status
//! class, body bytes in and out, a latency histogram), kept in atomics on the request path
//! and read by the controller, which stores per-minute buckets of the differences. Also the
//! access log: one line per request, queued on the worker thread that served it (a queue
//! per worker, bounded: past it lines are dropped, and counted, so the request path never
//! waits) and collected by the controller every [`ACCESS_POLL`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper::http::uri::PathAndQuery;

use super::acl::Permit;
use super::local::Resolved;
use super::workers::{self, Padded};
use super::Router;

/// Upper bounds of the latency buckets, in milliseconds; a last bucket takes the rest.
pub const LATENCY_BOUNDS_MS: [u64; 11] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];
/// Buckets of the histogram: one per bound, and the overflow.
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;
/// Access log lines waiting for the controller; past this they are dropped (and counted).
const ACCESS_QUEUE: usize = 16 * 1024;
/// How often the reader looks for new access lines when it found none.
const ACCESS_POLL: Duration = Duration::from_millis(50);

/// Figures of one app environment (or of a time span of it): counts only ever add up.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    pub requests: u64,
    /// Responses by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub status: [u64; 5],
    /// Request body bytes read from clients.
    pub bytes_in: u64,
    /// Response body bytes passed on to clients.
    pub bytes_out: u64,
    /// Requests by time to the response head (see [`LATENCY_BOUNDS_MS`]).
    pub latency: [u64; LATENCY_BUCKETS],
    /// Sum of those times, in microseconds.
    pub latency_us: u64,
}

impl Sample {
    pub fn add(&mut self, o: &Sample) {
        self.requests += o.requests;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.latency_us += o.latency_us;
        for (a, b) in self.status.iter_mut().zip(o.status) {
            *a += b;
        }
        for (a, b) in self.latency.iter_mut().zip(o.latency) {
            *a += b;
        }
    }

    /// `self - o`, for counters that only grow (saturating, should `o` be newer).
    pub fn since(&self, o: &Sample) -> Sample {
        let mut d = Sample {
            requests: self.requests.saturating_sub(o.requests),
            bytes_in: self.bytes_in.saturating_sub(o.bytes_in),
            bytes_out: self.bytes_out.saturating_sub(o.bytes_out),
            latency_us: self.latency_us.saturating_sub(o.latency_us),
            ..Sample::default()
        };
        for i in 0..5 {
            d.status[i] = self.status[i].saturating_sub(o.status[i]);
        }
        for i in 0..LATENCY_BUCKETS {
            d.latency[i] = self.latency[i].saturating_sub(o.latency[i]);
        }
        d
    }

    pub fn is_empty(&self) -> bool {
        self.requests == 0 && self.bytes_in == 0 && self.bytes_out == 0
    }

    /// The latency below which `q` (0..1) of the requests fall, as a bucket bound in ms
    /// (None: no requests, or past the last bound).
    pub fn quantile_ms(&self, q: f64) -> Option<u64> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= want {
                return LATENCY_BOUNDS_MS.get(i).copied();
            }
        }
        None
    }
}

/// The live counters of one app environment: a shard per worker thread (see
/// `workers.rs`), each only added to by its own thread, summed when read.
pub(crate) struct Counters {
    shards: Box<[Padded<Shard>]>,
}

#[derive(Default)]
struct Shard {
    requests: AtomicU64,
    status: [AtomicU64; 5],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS],
    latency_us: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            shards: (0..workers::shards()).map(|_| Padded::default()).collect(),
        }
    }
}

impl Counters {
    fn mine(&self) -> &Shard {
        &self.shards[workers::shard()].0
    }

    fn record(&self, status: u16, micros: u64) {
        let c = self.mine();
        c.requests.fetch_add(1, Ordering::Relaxed);
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        c.status[class].fetch_add(1, Ordering::Relaxed);
        let ms = micros / 1000;
        let bucket = LATENCY_BOUNDS_MS
            .iter()
            .position(|b| ms < *b)
            .unwrap_or(LATENCY_BOUNDS_MS.len());
        c.latency[bucket].fetch_add(1, Ordering::Relaxed);
        c.latency_us.fetch_add(micros, Ordering::Relaxed);
    }

    fn add_in(&self, n: u64) {
        self.mine().bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    fn add_out(&self, n: u64) {
        self.mine().bytes_out.fetch_add(n, Ordering::Relaxed);
    }

    fn sample(&self) -> Sample {
        let mut total = Sample::default();
        for shard in &self.shards {
            let c = &shard.0;
            let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
            total.add(&Sample {
                requests: load(&c.requests),
                status: std::array::from_fn(|i| load(&c.status[i])),
                bytes_in: load(&c.bytes_in),
                bytes_out: load(&c.bytes_out),
                latency: std::array::from_fn(|i| load(&c.latency[i])),
                latency_us: load(&c.latency_us),
            });
        }
        total
    }
}

/// One routed app environment as accounting knows it.
pub(crate) struct Site {
    pub app: Arc<str>,
    pub env: Arc<str>,
    pub counters: Counters,
    /// Where its access log lines go (the ledger's queues).
    access: Arc<Pending>,
}

/// A worker thread's handle on a [`Site`] (see `local.rs`): the request path clones it,
/// and the names its access lines carry, without touching a reference count the other
/// workers touch too.
pub(crate) struct LocalSite {
    site: Arc<Site>,
    pub app: Arc<str>,
    pub env: Arc<str>,
}

impl LocalSite {
    pub(super) fn new(site: Arc<Site>) -> Arc<LocalSite> {
        Arc::new(LocalSite {
            app: Arc::from(&*site.app),
            env: Arc::from(&*site.env),
            site,
        })
    }
}

/// Access lines not collected yet: a queue per worker thread (see `workers.rs`), so a
/// request only ever takes its own thread's lock, which the reader takes now and then.
struct Pending {
    shards: Box<[Padded<Mutex<Vec<AccessLine>>>]>,
    dropped: AtomicU64,
}

impl Pending {
    fn push(&self, line: AccessLine) {
        let mut q = self.shards[workers::shard()]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if q.len() < ACCESS_QUEUE / self.shards.len() {
            q.push(line);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Moves up to `limit` lines into `into`; how many.
    fn drain(&self, into: &mut Vec<AccessLine>, limit: usize) -> usize {
        let before = into.len();
        for shard in &self.shards {
            let room = limit.saturating_sub(into.len() - before);
            if room == 0 {
                break;
            }
            let mut q = shard.0.lock().unwrap_or_else(PoisonError::into_inner);
            let n = room.min(q.len());
            into.extend(q.drain(..n));
        }
        into.len() - before
    }
}

/// The access log's reading end (see [`Router::take_access_log`]).
pub struct AccessLog {
    pending: Arc<Pending>,
}

impl AccessLog {
    /// Up to `limit` lines into `into`, waiting for the first; 0 once the router is gone
    /// and every line has been read.
    pub async fn recv_many(&mut self, into: &mut Vec<AccessLine>, limit: usize) -> usize {
        loop {
            let n = self.pending.drain(into, limit);
            if n > 0 || limit == 0 {
                return n;
            }
            if Arc::strong_count(&self.pending) == 1 {
                return 0;
            }
            tokio::time::sleep(ACCESS_POLL).await;
        }
    }

    /// Every line queued now, without waiting.
    pub fn drain(&mut self, into: &mut Vec<AccessLine>) -> usize {
        self.pending.drain(into, usize::MAX)
    }
}

/// One request in the access log.
#[derive(Debug, Clone)]
pub struct AccessLine {
    pub app: Arc<str>,
    pub env: Arc<str>,
    pub client: IpAddr,
    pub method: hyper::Method,
    /// As the client sent it (shared with the request, not copied); shown without control
    /// characters and cut at 200 characters.
    pub path: PathAndQuery,
    pub status: u16,
    pub ms: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl std::fmt::Display for AccessLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        write!(f, "{:.16} ", self.method.as_str())?;
        for c in self
            .path
            .as_str()
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
        {
            f.write_char(c)?;
        }
        write!(
            f,
            " {} {}ms in={} out={} client={} env={}",
            self.status, self.ms, self.bytes_in, self.bytes_out, self.client, self.env
        )
    }
}

/// The accounting side of the router: which app environment a route is, and its counters.
pub(crate) struct Ledger {
    /// Route key -> its site. Read on every request, written on deploys.
    sites: RwLock<HashMap<String, Arc<Site>>>,
    /// Requests for hosts no app answers to.
    pub(crate) unrouted: AtomicU64,
    access: Arc<Pending>,
    access_taken: std::sync::atomic::AtomicBool,
}

impl Default for Ledger {
    fn default() -> Self {
        let access = Pending {
            shards: (0..workers::shards()).map(|_| Padded::default()).collect(),
            dropped: AtomicU64::new(0),
        };
        Ledger {
            sites: RwLock::default(),
            unrouted: AtomicU64::new(0),
            access: Arc::new(access),
            access_taken: Default::default(),
        }
    }
}

impl Router {
    /// Says which app environment the route `key` serves, so its traffic is counted as
    /// theirs (the deploy side calls it beside [`Router::set_upstreams`]).
    pub fn set_owner(&self, key: &str, app: &str, env: &str) {
        let key = key.to_ascii_lowercase();
        let mut sites = self
            .ledger
            .sites
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if sites
            .get(&key)
            .is_some_and(|s| &*s.app == app && &*s.env == env)
        {
            return;
        }
        let site = Site {
            app: app.into(),
            env: env.into(),
            counters: Counters::default(),
            access: Arc::clone(&self.ledger.access),
        };
        sites.insert(key, Arc::new(site));
        self.changed();
    }

    /// Forgets which app environment the route `key` served (the app is going away): what
    /// it counted since is nobody's.
    pub fn forget_owner(&self, key: &str) {
        let mut sites = self
            .ledger
            .sites
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if sites.remove(&key.to_ascii_lowercase()).is_some() {
            self.changed();
        }
    }

    /// Every app environment's counters since the router started, as (app, env, figures).
    pub fn traffic(&self) -> Vec<(String, String, Sample)> {
        let sites = self
            .ledger
            .sites
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<_> = sites
            .values()
            .map(|s| (s.app.to_string(), s.env.to_string(), s.counters.sample()))
            .collect();
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }

    /// Requests for hosts no app answers to, and access log lines dropped.
    pub fn unrouted(&self) -> (u64, u64) {
        (
            self.ledger.unrouted.load(Ordering::Relaxed),
            self.ledger.access.dropped.load(Ordering::Relaxed),
        )
    }

    /// The access log, for the one reader that writes it down (None once taken).
    pub fn take_access_log(&self) -> Option<AccessLog> {
        let taken = self.ledger.access_taken.swap(true, Ordering::Relaxed);
        (!taken).then(|| AccessLog {
            pending: Arc::clone(&self.ledger.access),
        })
    }

    pub(super) fn count_unrouted(&self) {
        self.ledger.unrouted.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn site(&self, key: &str) -> Option<Arc<Site>> {
        let sites = self
            .ledger
            .sites
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        sites.get(key).cloned()
    }
}

/// One request being counted: made when its app is known, finished when its response body
/// has been passed on (or dropped).
pub(super) struct Tally {
    site: Arc<LocalSite>,
    started: Instant,
    client: IpAddr,
    method: hyper::Method,
    path: PathAndQuery,
    status: u16,
    /// Shared with the request body as it is read (None: the request has no body).
    bytes_in: Option<Arc<AtomicU64>>,
    bytes_out: u64,
    /// Held until the response is over (the app's concurrency cap).
    _permit: Option<Permit>,
}

impl Tally {
    pub(super) fn start<B: Body>(
        site: Arc<LocalSite>,
        client: IpAddr,
        req: &hyper::Request<B>,
        started: Instant,
    ) -> Tally {
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        Tally {
            site,
            started,
            client: client.to_canonical(),
            method: req.method().clone(),
            path,
            status: 0,
            bytes_in: (!req.body().is_end_stream()).then(Arc::default),
            bytes_out: 0,
            _permit: None,
        }
    }

    pub(super) fn hold(&mut self, permit: Permit) {
        self._permit = Some(permit);
    }

    /// Counts the request body as it is read.
    pub(super) fn count_in<B>(&self, body: B) -> Counted<B> {
        let into = match &self.bytes_in {
            Some(seen) => Direction::In(Arc::clone(&self.site), Arc::clone(seen)),
            None => Direction::Uncounted,
        };
        Counted { inner: body, into }
    }

    /// The response head is out: counts the request, its status and latency; the body is
    /// counted as it goes, and the access line written once it is over.
    pub(super) fn respond(
        mut self,
        resp: hyper::Response<super::proxy::ProxyBody>,
    ) -> hyper::Response<super::proxy::ProxyBody> {
        use http_body_util::BodyExt;
        self.status = resp.status().as_u16();
        let micros = self.started.elapsed().as_micros() as u64;
        self.site.site.counters.record(self.status, micros);
        resp.map(|body| {
            Counted {
                inner: body,
                into: Direction::Out(self),
            }
            .boxed_unsync()
        })
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        let line = AccessLine {
            app: Arc::clone(&self.site.app),
            env: Arc::clone(&self.site.env),
            client: self.client,
            method: std::mem::take(&mut self.method),
            path: std::mem::replace(&mut self.path, PathAndQuery::from_static("/")),
            status: self.status,
            ms: self.started.elapsed().as_millis() as u64,
            bytes_in: self
                .bytes_in
                .as_ref()
                .map_or(0, |n| n.load(Ordering::Relaxed)),
            bytes_out: self.bytes_out,
        };
        self.site.site.access.push(line);
    }
}

enum Direction {
    /// A request body: its site, and the tally's count of it.
    In(Arc<LocalSite>, Arc<AtomicU64>),
    Out(Tally),
    Uncounted,
}

/// A body whose data bytes are added to its site's counters as they pass.
pub(super) struct Counted<B> {
    inner: B,
    into: Direction,
}

/// A client's request body on its way upstream.
pub(super) type ReqBody = Counted<hyper::body::Incoming>;

/// A request let through: on its way upstream, and its tally (when the app is known).
pub(super) type Admitted = (hyper::Request<ReqBody>, Option<Tally>);

/// The request path's hook, once the route is known: its policy (a refusal is the answer,
/// counted like any other), then counting. `end` finishes what this started.
pub(super) fn begin(
    route: &Resolved,
    client: IpAddr,
    req: hyper::Request<hyper::body::Incoming>,
    started: Instant,
) -> Result<Admitted, Box<hyper::Response<super::proxy::ProxyBody>>> {
    let mut tally = route
        .site
        .as_ref()
        .map(|s| Tally::start(Arc::clone(s), client, &req, started));
    // Policies are per route: an app's environment.
    match super::acl::admit(route.gate.as_deref(), &route.key, client) {
        Ok(Some(permit)) => {
            if let Some(t) = tally.as_mut() {
                t.hold(permit);
            }
        }
        Ok(None) => {}
        Err(refused) => return Err(Box::new(end(tally, *refused))),
    }
    let req = req.map(|body| match &tally {
        Some(t) => t.count_in(body),
        None => Counted {
            inner: body,
            into: Direction::Uncounted,
        },
    });
    Ok((req, tally))
}

/// The response head is ready: counted (when the app is known) and passed on.
pub(super) fn end(
    tally: Option<Tally>,
    resp: hyper::Response<super::proxy::ProxyBody>,
) -> hyper::Response<super::proxy::ProxyBody> {
    match tally {
        Some(t) => t.respond(resp),
        None => resp,
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        let data = match &frame {
            Some(Ok(f)) => f.data_ref().map(|d| d.len() as u64),
            _ => None,
        };
        if let Some(n) = data {
            match &mut this.into {
                Direction::In(site, seen) => {
                    site.site.counters.add_in(n);
                    seen.fetch_add(n, Ordering::Relaxed);
                }
                Direction::Out(tally) => {
                    tally.site.site.counters.add_out(n);
                    tally.bytes_out += n;
                }
                Direction::Uncounted => {}
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_classes_histogram_and_differences() {
        let c = Counters::default();
        c.record(200, 1_000);
        c.record(204, 7_000);
        c.record(302, 30_000);
        c.record(404, 20_000_000);
        c.record(503, 100);
        c.record(99, 100);
        c.add_in(10);
        let s = c.sample();
        assert_eq!(s.requests, 6);
        assert_eq!(s.status, [1, 2, 1, 1, 1]);
        assert_eq!(s.latency[0], 3);
        assert_eq!(s.latency[1], 1);
        assert_eq!(s.latency[3], 1);
        assert_eq!(s.latency[LATENCY_BUCKETS - 1], 1);
        assert_eq!(s.quantile_ms(0.5), Some(5));
        assert_eq!(s.quantile_ms(1.0), None);
        c.record(200, 1_000);
        let d = c.sample().since(&s);
        assert_eq!(d.requests, 1);
        assert_eq!(d.status, [0, 1, 0, 0, 0]);
        assert_eq!(d.bytes_in, 0);
        let mut t = s.clone();
        t.add(&d);
        assert_eq!(t, c.sample());
    }
}
