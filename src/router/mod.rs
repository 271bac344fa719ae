//! The HTTP reverse proxy that gives every app a stable address, `<app>.<domain>`, while
//! releases come and go behind it.
//!
//! The deploy side calls [`Router::set_upstreams`] with the new release's web processes, then
//! [`Router::drain`] with the old ones before stopping them: a request counts against the
//! upstream it picked from the moment it is dispatched until its response body has been
//! passed on, so draining never cuts a response short.
//!
//! Upstream connections are the router's own small HTTP/1.1 client (`upstream.rs`, the wire
//! format in `h1.rs`, a small keep-alive pool per upstream) rather than hyper's: failing
//! over to the next upstream after a refused connection needs the unsent request, streaming
//! body included, back, and writing the rewritten head straight into the socket spares
//! hyper's client machinery (its request channel, its connection task) on every request.

mod accounting;
mod acl;
mod acme;
pub mod certs;
mod h1;
mod listen;
mod local;
mod proxy;
mod realip;
pub mod tls;
mod tunnel;
mod upstream;
mod watchdog;
mod workers;

pub use accounting::{AccessLine, AccessLog, Sample, LATENCY_BOUNDS_MS, LATENCY_BUCKETS};
pub use acl::{Cidr, Policy, Rate, MAX_RATE};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use hyper::header::HeaderValue;

use upstream::{InflightGuard, Upstream};

#[derive(Clone, Debug)]
pub struct RouterOptions {
    /// Bound on connecting to one upstream; past it the next upstream is tried.
    pub connect_timeout: Duration,
    /// Bound on waiting for an upstream's response headers once the request is sent
    /// (includes the upstream reading the request body). Past it the client gets a 504.
    pub upstream_timeout: Duration,
    /// A client connection (keep-alive, HTTP/2) without traffic for this long is closed; a
    /// client must also send a request's headers within it (slowloris guard).
    pub idle_timeout: Duration,
    /// An upgraded connection (a WebSocket) without traffic either way for this long is
    /// closed.
    pub tunnel_idle_timeout: Duration,
    /// Client connections open at once, and from one address; past either, a new
    /// connection gets a 503 and is closed.
    pub max_connections: usize,
    pub max_per_address: usize,
    /// Proxies in front of the router whose `X-Forwarded-For` names the client (see
    /// `realip.rs`); empty: the TCP peer is always the client.
    pub trusted_proxies: Vec<Cidr>,
}

impl Default for RouterOptions {
    fn default() -> Self {
        RouterOptions {
            connect_timeout: Duration::from_secs(2),
            upstream_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(30),
            tunnel_idle_timeout: Duration::from_secs(300),
            max_connections: 8192,
            max_per_address: 512,
            trusted_proxies: Vec::new(),
        }
    }
}

/// How the router serves one route (an app's environment).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutePolicy {
    /// Plain HTTP requests get a redirect to HTTPS (ACME's HTTP-01 path excepted).
    pub force_https: bool,
    /// The `Strict-Transport-Security` value added to HTTPS answers, if any.
    pub hsts: Option<HeaderValue>,
    /// Largest request body accepted (413 past it).
    pub max_body: Option<u64>,
}

impl RoutePolicy {
    pub fn new(force_https: bool, hsts_max_age: u32, max_body: u64) -> RoutePolicy {
        RoutePolicy {
            force_https,
            hsts: (hsts_max_age > 0).then(|| {
                HeaderValue::from_str(&format!("max-age={hsts_max_age}"))
                    .expect("digits are a valid header value")
            }),
            max_body: (max_body > 0).then_some(max_body),
        }
    }
}

/// Hosts besides `APP.DOMAIN`, and the policy of each route.
#[derive(Default)]
struct Table {
    /// Host -> route key.
    exact: HashMap<String, String>,
    /// `example.com` (for `*.example.com`) -> route key.
    wildcard: HashMap<String, String>,
    policies: HashMap<String, RoutePolicy>,
}

pub struct Router {
    /// `.<domain>`, lowercase: what a routed Host ends with.
    suffix: String,
    opts: RouterOptions,
    /// Custom domains and route policies: read on every request, written on changes.
    table: RwLock<Table>,
    /// What the HTTPS listener serves, by SNI.
    certs: Arc<tls::CertStore>,
    /// The port HTTPS is served on, for redirects (None: no HTTPS listener).
    https_port: RwLock<Option<u16>>,
    /// Read on every request, written on deploys. Never held across an await.
    routes: RwLock<HashMap<String, AppRoute>>,
    /// One shared [`Upstream`] per address, so its in-flight count and connection pool
    /// survive the address moving between route sets (and `drain` can find it).
    registry: Mutex<HashMap<SocketAddr, Arc<Upstream>>>,
    /// Traffic accounting and the access log (accounting.rs).
    ledger: accounting::Ledger,
    /// Per-app access lists, maintenance and limits (acl.rs).
    gate: acl::Gate,
    /// HTTP-01 answers of the ACME orders in progress (see `acme.rs`).
    challenges: acme::Challenges,
    /// Signalled when a route appears or goes (see [`Router::routes_changed`]).
    route_change: tokio::sync::Notify,
    /// The threads connections are served on (workers.rs), started by the first listener.
    workers: OnceLock<workers::Workers>,
    /// Tells this router apart in each thread's copy of its tables (local.rs).
    id: u64,
    /// Moves on whenever a table that copy is made from changes.
    generation: workers::Padded<std::sync::atomic::AtomicU64>,
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
            table: RwLock::default(),
            certs: Arc::default(),
            https_port: RwLock::new(None),
            routes: RwLock::new(HashMap::new()),
            registry: Mutex::new(HashMap::new()),
            ledger: Default::default(),
            gate: Default::default(),
            challenges: Default::default(),
            route_change: tokio::sync::Notify::new(),
            workers: OnceLock::new(),
            id: {
                static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
                IDS.fetch_add(1, Ordering::Relaxed)
            },
            generation: Default::default(),
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
        let fresh = self
            .write_routes()
            .insert(app.to_ascii_lowercase(), route)
            .is_none();
        prune(&mut registry);
        if fresh {
            self.route_change.notify_one();
        }
    }

    /// Forgets `app`: its requests get a 404 from now on.
    pub fn remove_app(&self, app: &str) {
        let mut registry = self.lock_registry();
        let gone = self
            .write_routes()
            .remove(&app.to_ascii_lowercase())
            .is_some();
        prune(&mut registry);
        if gone {
            self.route_change.notify_one();
        }
    }

    /// Resolves once a route has appeared or gone since the last call returned (changes in
    /// between are one), for what follows the set of routes (the SNI table's default
    /// hosts). Meant for one waiter.
    pub async fn routes_changed(&self) {
        self.route_change.notified().await
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

    /// The domain apps are served under (`APP.DOMAIN`), lowercase.
    pub fn domain(&self) -> &str {
        &self.suffix[1..]
    }

    /// Replaces every custom host: `(host, route key)`, a host as `domains:add` takes it
    /// (`*.example.com` for one level under a domain).
    pub fn set_domains(&self, hosts: impl IntoIterator<Item = (String, String)>) {
        let (mut exact, mut wildcard) = (HashMap::new(), HashMap::new());
        for (host, key) in hosts {
            match host.strip_prefix("*.") {
                Some(parent) => wildcard.insert(parent.to_string(), key),
                None => exact.insert(host, key),
            };
        }
        let mut t = self.write_table();
        t.exact = exact;
        t.wildcard = wildcard;
        self.changed();
    }

    /// Replaces every route's policy (a route not named gets the default).
    pub fn set_policies(&self, policies: HashMap<String, RoutePolicy>) {
        self.write_table().policies = policies;
        self.changed();
    }

    /// The certificates the HTTPS listener serves.
    pub fn certs(&self) -> &Arc<tls::CertStore> {
        &self.certs
    }

    /// Where HTTPS is served, so plain requests of a `force_https` app can be redirected.
    pub fn set_https_port(&self, port: Option<u16>) {
        *self
            .https_port
            .write()
            .unwrap_or_else(PoisonError::into_inner) = port;
    }

    fn https_port(&self) -> Option<u16> {
        *self
            .https_port
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The route a request for `host` (no port) is for, and its policy: a custom host,
    /// else a wildcard one level up, else `APP.DOMAIN`.
    fn route_for_host(&self, host: &str) -> Option<(String, RoutePolicy)> {
        let host = host.trim_end_matches('.');
        // Hosts are nearly always sent in lowercase already: no copy then.
        let lower: String;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = host.to_ascii_lowercase();
            &lower
        } else {
            host
        };
        let t = self.read_table();
        let key = match t.exact.get(host) {
            Some(key) => key.clone(),
            None => match host
                .split_once('.')
                .and_then(|(_, parent)| t.wildcard.get(parent))
            {
                Some(key) => key.clone(),
                None => {
                    let app = host.strip_suffix(&self.suffix)?;
                    if app.is_empty() || app.contains('.') {
                        return None;
                    }
                    app.to_owned()
                }
            },
        };
        let policy = t.policies.get(&key).cloned().unwrap_or_default();
        Some((key, policy))
    }

    #[cfg(test)]
    fn app_for_host(&self, host: &str) -> Option<String> {
        self.route_for_host(host).map(|(key, _)| key)
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

    fn read_table(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_table(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn workers(&self) -> &workers::Workers {
        self.workers.get_or_init(workers::Workers::start)
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
    fn custom_hosts_win_then_wildcards_then_the_default() {
        let r = Router::new("apps.test".into(), RouterOptions::default());
        r.set_domains([
            ("www.shop.example".to_string(), "shop".to_string()),
            ("*.shop.example".to_string(), "shop-staging".to_string()),
            ("web.apps.test".to_string(), "other".to_string()),
        ]);
        r.set_policies(HashMap::from([(
            "shop".to_string(),
            RoutePolicy::new(true, 60, 10),
        )]));
        let (key, policy) = r.route_for_host("WWW.shop.example.").unwrap();
        assert_eq!(key, "shop");
        assert!(policy.force_https);
        assert_eq!(policy.hsts.unwrap(), "max-age=60");
        assert_eq!(policy.max_body, Some(10));
        let (key, policy) = r.route_for_host("api.shop.example").unwrap();
        assert_eq!(key, "shop-staging");
        assert_eq!(policy, RoutePolicy::default());
        assert_eq!(r.app_for_host("shop.example"), None);
        assert_eq!(r.app_for_host("a.b.shop.example"), None);
        assert_eq!(r.app_for_host("web.apps.test").as_deref(), Some("other"));
        assert_eq!(r.app_for_host("shop.apps.test").as_deref(), Some("shop"));
        r.set_domains([]);
        assert_eq!(r.app_for_host("www.shop.example"), None);
        assert_eq!(r.domain(), "apps.test");
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
