//! The HTTP reverse proxy that gives every app a stable address, `<app>.<domain>`, while
//! releases come and go behind it.
//!
//! The deploy side calls [`Router::set_upstreams`] with the new release's web processes, then
//! [`Router::drain`] with the old ones before stopping them: a request counts against the
//! upstream it picked from the moment it is dispatched until its response body has been
//! passed on, so draining never cuts a response short.
//!
//! Upstream connections are hand-rolled on `hyper::client::conn::http1` (with a small
//! keep-alive pool per upstream) rather than hyper-util's legacy client, because failing
//! over to the next upstream after a refused connection needs the unsent request, streaming
//! body included, back; the legacy client consumes it.

mod accounting;
mod acl;
mod proxy;
mod upstream;

pub use accounting::{AccessLine, Sample, LATENCY_BOUNDS_MS, LATENCY_BUCKETS};
pub use acl::{Cidr, Policy};

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use upstream::{InflightGuard, Upstream};

/// How long a client may take to send request headers (slowloris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `serve` lets in-flight connections finish after shutdown before cutting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct RouterOptions {
    /// Bound on connecting to one upstream; past it the next upstream is tried.
    pub connect_timeout: Duration,
    /// Bound on waiting for an upstream's response headers once the request is sent
    /// (includes the upstream reading the request body). Past it the client gets a 504.
    pub upstream_timeout: Duration,
    /// Client connections open at once, and from one address; past either, a new
    /// connection gets a 503 and is closed.
    pub max_connections: usize,
    pub max_per_address: usize,
}

impl Default for RouterOptions {
    fn default() -> Self {
        RouterOptions {
            connect_timeout: Duration::from_secs(2),
            upstream_timeout: Duration::from_secs(60),
            max_connections: 8192,
            max_per_address: 512,
        }
    }
}

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
/// reads the answer rather than a reset).
async fn refuse(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 32\r\nconnection: close\r\n\r\ntoo many connections; try again\n";
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        stream.write_all(BUSY).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

pub struct Router {
    /// `.<domain>`, lowercase: what a routed Host ends with.
    suffix: String,
    opts: RouterOptions,
    /// Read on every request, written on deploys. Never held across an await.
    routes: RwLock<HashMap<String, AppRoute>>,
    /// One shared [`Upstream`] per address, so its in-flight count and connection pool
    /// survive the address moving between route sets (and `drain` can find it).
    registry: Mutex<HashMap<SocketAddr, Arc<Upstream>>>,
    /// Traffic accounting and the access log (accounting.rs).
    ledger: accounting::Ledger,
    /// Per-app access lists, maintenance and limits (acl.rs).
    gate: acl::Gate,
}

struct AppRoute {
    /// Empty: the app is known but has nothing to route to (503 rather than 404).
    upstreams: Vec<Arc<Upstream>>,
    cursor: AtomicUsize,
}

/// Outcome of choosing an upstream for a request.
enum Pick {
    Upstream(InflightGuard),
    NotRouted,
    /// No upstream left that this request has not tried already.
    Exhausted,
}

impl Router {
    pub fn new(domain: String, opts: RouterOptions) -> Arc<Router> {
        let domain = domain.trim_matches('.').to_ascii_lowercase();
        Arc::new(Router {
            suffix: format!(".{domain}"),
            opts,
            routes: RwLock::new(HashMap::new()),
            registry: Mutex::new(HashMap::new()),
            ledger: Default::default(),
            gate: Default::default(),
        })
    }

    /// Atomically replaces the live upstream set of `app` (empty vec = app not routed: its
    /// requests get a 503). In-flight requests keep going to the upstream they picked.
    pub fn set_upstreams(&self, app: &str, upstreams: Vec<SocketAddr>) {
        let mut registry = self.lock_registry();
        let mut chosen: Vec<Arc<Upstream>> = Vec::with_capacity(upstreams.len());
        for addr in upstreams {
            // Duplicates would skew round-robin and make "each upstream once" ambiguous.
            if chosen.iter().any(|u| u.addr == addr) {
                continue;
            }
            chosen.push(Arc::clone(
                registry.entry(addr).or_insert_with(|| Upstream::new(addr)),
            ));
        }
        let route = AppRoute {
            upstreams: chosen,
            cursor: AtomicUsize::new(0),
        };
        self.write_routes().insert(app.to_ascii_lowercase(), route);
        prune(&mut registry);
    }

    /// Forgets `app`: its requests get a 404 from now on.
    pub fn remove_app(&self, app: &str) {
        let mut registry = self.lock_registry();
        self.write_routes().remove(&app.to_ascii_lowercase());
        prune(&mut registry);
    }

    pub fn upstreams(&self, app: &str) -> Vec<SocketAddr> {
        self.read_routes()
            .get(&app.to_ascii_lowercase())
            .map(|r| r.upstreams.iter().map(|u| u.addr).collect())
            .unwrap_or_default()
    }

    /// Requests currently dispatched to `addr` whose response is not fully passed on yet.
    pub fn in_flight(&self, addr: SocketAddr) -> usize {
        self.lock_registry().get(&addr).map_or(0, |u| u.inflight())
    }

    /// Waits until no request is in flight to any of `addrs` (bounded by `timeout`), so the
    /// caller can stop those processes without failing requests. Returns true if drained.
    /// Only meaningful once `addrs` are out of every app's upstream set.
    pub async fn drain(&self, addrs: &[SocketAddr], timeout: Duration) -> bool {
        let targets: Vec<Arc<Upstream>> = {
            let registry = self.lock_registry();
            addrs
                .iter()
                .filter_map(|a| registry.get(a))
                .cloned()
                .collect()
        };
        let drained = tokio::time::timeout(timeout, async {
            for upstream in &targets {
                upstream.wait_idle().await;
            }
        })
        .await
        .is_ok();
        // The caller is about to stop these processes; their idle keep-alive connections
        // would only fail the next request that picks them up.
        for upstream in &targets {
            upstream.clear_idle();
        }
        drained
    }

    /// Serves HTTP/1.1 on `listener` until `shutdown` is cancelled, then stops accepting and
    /// gives open connections up to 30 s to finish their current exchange.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .keep_alive(true);
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
                    refusals.spawn(refuse(stream));
                }
                continue;
            };
            let _ = stream.set_nodelay(true);
            let router = Arc::clone(&self);
            let builder = builder.clone();
            let shutdown = shutdown.clone();
            conns.spawn(async move {
                let _slot = slot;
                let service = service_fn(move |req| {
                    let router = Arc::clone(&router);
                    async move { Ok::<_, Infallible>(proxy::handle(&router, peer, req).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                let result = tokio::select! {
                    result = conn.as_mut() => result,
                    () = shutdown.cancelled() => {
                        // Finish the exchange in progress, then close; idle keep-alive
                        // connections close at once.
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                };
                if let Err(err) = result {
                    debug!(client = %peer, error = %err, "client connection ended with an error");
                }
            });
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

    /// The app a request for `host` (no port) is for, if it is under our domain.
    fn app_for_host(&self, host: &str) -> Option<String> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let app = host.strip_suffix(&self.suffix)?;
        (!app.is_empty() && !app.contains('.')).then(|| app.to_owned())
    }

    /// Chooses the next upstream of `app` round-robin, skipping those in `tried`, and counts
    /// the request against it. Counting happens under the routes lock, so once
    /// `set_upstreams` returns no request can still be about to start on a removed upstream
    /// without `drain` seeing it.
    fn pick(&self, app: &str, tried: &[SocketAddr]) -> Pick {
        let routes = self.read_routes();
        let Some(route) = routes.get(app) else {
            return Pick::NotRouted;
        };
        let n = route.upstreams.len();
        if n == 0 {
            return Pick::Exhausted;
        }
        let start = route.cursor.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &route.upstreams[start.wrapping_add(i) % n])
            .find(|u| !tried.contains(&u.addr))
            .map_or(Pick::Exhausted, |u| Pick::Upstream(u.begin()))
    }

    // The maps are only mutated by single inserts/removes, so they stay consistent even if
    // a holder panicked; recovering beats taking the whole router down.
    fn read_routes(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, AppRoute>> {
        self.routes.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_routes(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, AppRoute>> {
        self.routes.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_registry(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<Upstream>>> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Drops upstreams nothing refers to any more (no route, no in-flight request, no pending
/// pool check-in); their idle connections close with them.
fn prune(registry: &mut HashMap<SocketAddr, Arc<Upstream>>) {
    registry.retain(|_, u| Arc::strong_count(u) > 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn picked(router: &Router, app: &str, tried: &[SocketAddr]) -> Option<SocketAddr> {
        match router.pick(app, tried) {
            Pick::Upstream(guard) => Some(guard.upstream().addr),
            Pick::NotRouted | Pick::Exhausted => None,
        }
    }

    #[test]
    fn host_to_app() {
        let r = Router::new(".Apps.Example.test.".into(), RouterOptions::default());
        assert_eq!(
            r.app_for_host("web.apps.example.test").as_deref(),
            Some("web")
        );
        assert_eq!(
            r.app_for_host("WEB.Apps.Example.Test.").as_deref(),
            Some("web")
        );
        assert_eq!(r.app_for_host("apps.example.test"), None);
        assert_eq!(r.app_for_host(".apps.example.test"), None);
        assert_eq!(r.app_for_host("a.b.apps.example.test"), None);
        assert_eq!(r.app_for_host("web.example.test"), None);
        assert_eq!(r.app_for_host("webapps.example.test"), None);
    }

    #[test]
    fn round_robin_skips_tried_and_counts() {
        let r = Router::new("example.test".into(), RouterOptions::default());
        r.set_upstreams("web", vec![addr(1), addr(2), addr(2), addr(3)]);
        assert_eq!(r.upstreams("WEB"), [addr(1), addr(2), addr(3)]);
        let seq: Vec<_> = (0..6).map(|_| picked(&r, "web", &[]).unwrap()).collect();
        assert_eq!(seq, [addr(1), addr(2), addr(3), addr(1), addr(2), addr(3)]);
        assert_eq!(picked(&r, "web", &[addr(1), addr(2)]), Some(addr(3)));
        assert_eq!(picked(&r, "web", &[addr(1), addr(2), addr(3)]), None);

        let Pick::Upstream(guard) = r.pick("web", &[]) else {
            panic!("expected an upstream");
        };
        let a = guard.upstream().addr;
        assert_eq!(r.in_flight(a), 1);
        drop(guard);
        assert_eq!(r.in_flight(a), 0);
    }

    #[test]
    fn empty_set_is_known_but_unroutable_and_registry_is_pruned() {
        let r = Router::new("example.test".into(), RouterOptions::default());
        r.set_upstreams("web", vec![addr(1)]);
        let Pick::Upstream(guard) = r.pick("web", &[]) else {
            panic!("expected an upstream");
        };
        r.set_upstreams("web", vec![]);
        assert!(matches!(r.pick("web", &[]), Pick::Exhausted));
        assert!(matches!(r.pick("other", &[]), Pick::NotRouted));
        // Still in flight, so still tracked for drain.
        assert_eq!(r.in_flight(addr(1)), 1);
        drop(guard);
        r.remove_app("web");
        assert!(matches!(r.pick("web", &[]), Pick::NotRouted));
        assert!(r.lock_registry().is_empty());
    }

    #[tokio::test]
    async fn drain_waits_for_guards() {
        let r = Router::new("example.test".into(), RouterOptions::default());
        r.set_upstreams("web", vec![addr(1)]);
        let Pick::Upstream(guard) = r.pick("web", &[]) else {
            panic!("expected an upstream");
        };
        assert!(!r.drain(&[addr(1)], Duration::from_millis(20)).await);
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(guard);
        });
        assert!(r.drain(&[addr(1), addr(9)], Duration::from_secs(5)).await);
        release.await.unwrap();
    }
}
