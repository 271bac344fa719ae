//! What the router enforces per route (an app's environment) before a request is
//! forwarded, in this order: the IP access list (403), maintenance mode (503 with the app's
//! page), request rate limits per route and per client address (token buckets, 429 with
//! `Retry-After`) and a cap on requests in progress (503). The controller sets a route's
//! [`Policy`] from the store; a route without one passes.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use super::proxy::{text, ProxyBody};
use super::Router;

/// Client addresses one app's limiter remembers; past it, the full buckets are forgotten.
const MAX_CLIENTS: usize = 10_000;

/// An address block, `10.0.0.0/8` or `2001:db8::/32` (a bare address is a block of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// Strict: an address, optionally `/len` in range; host bits must be zero, so
    /// `10.0.0.1/8` (probably a typo) is refused rather than silently widened.
    fn from_str(s: &str) -> Result<Cidr, String> {
        let shown: String = s.chars().filter(|c| !c.is_control()).take(60).collect();
        let bad = || {
            format!("'{shown}' is not an address block (e.g. 10.0.0.0/8, 192.0.2.7, 2001:db8::/32)")
        };
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) if (1..=3).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_digit()) => {
                l.parse::<u8>().ok().filter(|n| *n <= max).ok_or_else(bad)?
            }
            Some(_) => return Err(bad()),
        };
        let cidr = Cidr { addr, len };
        let masked = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        if masked != addr {
            return Err(format!(
                "'{shown}' has host bits set; did you mean {masked}/{len}?"
            ));
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// A request rate: `n` requests every `per` seconds (a burst of `n`), as `limits:set`
/// takes it: `100` or `100/s` (a second), `30/m`, `5/h`, `1000/d`, `5/10m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub n: u32,
    pub per: u32,
}

/// The most requests a rate counts, and its longest window (a day).
pub const MAX_RATE: u32 = 1_000_000;
pub const MAX_WINDOW: u32 = 86_400;

impl Rate {
    /// Tokens added a second.
    fn per_sec(self) -> f64 {
        f64::from(self.n) / f64::from(self.per.max(1))
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Rate, String> {
        let shown: String = s.chars().filter(|c| !c.is_control()).take(40).collect();
        let bad = || format!("'{shown}' is not a rate (e.g. 100, 100/s, 30/m, 5/h, 5/10m)");
        let digits =
            |t: &str| !t.is_empty() && t.len() <= 20 && t.bytes().all(|b| b.is_ascii_digit());
        let (count, window) = match s.split_once('/') {
            Some((c, w)) => (c, Some(w)),
            None => (s, None),
        };
        if !digits(count) {
            return Err(bad());
        }
        let n = count
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=u64::from(MAX_RATE)).contains(n))
            .ok_or_else(|| format!("a rate counts 1 to {MAX_RATE} requests, not '{shown}'"))?;
        let per = match window {
            None => 1,
            Some(w) => {
                let split = w.find(|c: char| !c.is_ascii_digit()).unwrap_or(w.len());
                let (k, unit) = w.split_at(split);
                let unit = match unit {
                    "s" => 1,
                    "m" => 60,
                    "h" => 3600,
                    "d" => 86_400,
                    _ => return Err(bad()),
                };
                let k = match k {
                    "" => 1,
                    k if digits(k) => k.parse::<u64>().map_err(|_| bad())?,
                    _ => return Err(bad()),
                };
                k.checked_mul(unit)
                    .filter(|p| (1..=u64::from(MAX_WINDOW)).contains(p))
                    .ok_or_else(|| format!("a rate's window is 1s to 1d, not '{shown}'"))?
            }
        };
        Ok(Rate {
            n: n as u32,
            per: per as u32,
        })
    }
}

impl Rate {
    /// `a second`, `an hour`, `every 10 minutes`.
    pub fn window(&self) -> String {
        match self.per {
            1 => "a second".into(),
            60 => "a minute".into(),
            3600 => "an hour".into(),
            86_400 => "a day".into(),
            p if p % 3600 == 0 => format!("every {} hours", p / 3600),
            p if p % 60 == 0 => format!("every {} minutes", p / 60),
            p => format!("every {p} seconds"),
        }
    }
}

impl fmt::Display for Rate {
    /// `100 a second`, `5 an hour`, `5 every 10 minutes`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.n, self.window())
    }
}

/// What the router enforces for one route (an app's environment).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// When not empty, only these blocks may reach the app.
    pub allow: Vec<Cidr>,
    /// These blocks never may (wins over `allow`).
    pub deny: Vec<Cidr>,
    /// In maintenance: every request gets a 503 with `page` (HTML) or a default text.
    pub maintenance: bool,
    pub page: Option<String>,
    /// Requests to the app's environment (a burst of as many).
    pub rate: Option<Rate>,
    /// Requests from one client address.
    pub client_rate: Option<Rate>,
    /// Requests in progress at once.
    pub max_concurrent: Option<u32>,
}

/// A token bucket: `rate.n` tokens at most, refilled at `rate.n` every `rate.per` seconds.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(rate: Rate) -> Bucket {
        Bucket {
            tokens: f64::from(rate.n),
            last: Instant::now(),
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * rate.per_sec()).min(f64::from(rate.n));
        self.last = now;
    }

    fn is_full(&self, rate: Rate) -> bool {
        self.tokens >= f64::from(rate.n)
    }

    /// Takes a token, or says in how many seconds (at least 1) the next one comes.
    fn take(&mut self, rate: Rate, now: Instant) -> Result<(), u64> {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - self.tokens) / rate.per_sec()).ceil() as u64).max(1))
        }
    }
}

/// An app's policy with the state enforcing it.
pub(super) struct Enforcer {
    policy: Policy,
    app_bucket: Mutex<Bucket>,
    clients: Mutex<HashMap<IpAddr, Bucket>>,
    in_progress: Arc<AtomicUsize>,
}

/// A request counted against its app's cap until dropped.
pub(super) struct Permit(Arc<AtomicUsize>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The policies of all routes, by route key (`APP`, `APP-ENV`).
#[derive(Default)]
pub(crate) struct Gate {
    apps: RwLock<HashMap<String, Arc<Enforcer>>>,
}

impl Router {
    /// Sets what the router enforces for the route `app` (`APP` for production, `APP-ENV`;
    /// a default policy removes it).
    pub fn set_policy(&self, app: &str, policy: Policy) {
        let mut apps = self
            .gate
            .apps
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if policy == Policy::default() {
            if apps.remove(app).is_some() {
                self.changed();
            }
            return;
        }
        if apps.get(app).is_some_and(|e| e.policy == policy) {
            return;
        }
        let e = Enforcer {
            app_bucket: Mutex::new(Bucket::full(policy.rate.unwrap_or(Rate { n: 0, per: 1 }))),
            policy,
            clients: Mutex::default(),
            in_progress: Arc::default(),
        };
        apps.insert(app.to_string(), Arc::new(e));
        self.changed();
    }

    /// The route `app`'s policy, when it has one.
    pub(super) fn enforcer(&self, app: &str) -> Option<Arc<Enforcer>> {
        let apps = self
            .gate
            .apps
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        apps.get(app).cloned()
    }

    /// Whether a request from `client` to `app` may go on: `Ok` with the permit to hold
    /// while it runs (if the app caps requests in progress), or the router's answer. (The
    /// request path asks [`admit`] with the policy it resolved along with the route.)
    #[cfg(test)]
    pub(super) fn admit(
        &self,
        app: &str,
        client: IpAddr,
    ) -> Result<Option<Permit>, Box<Response<ProxyBody>>> {
        admit(self.enforcer(app).as_deref(), app, client)
    }
}

/// Whether a request from `client` to the route `app`, whose policy is `gate`, may go on
/// (see [`Router::admit`]).
pub(super) fn admit(
    gate: Option<&Enforcer>,
    app: &str,
    client: IpAddr,
) -> Result<Option<Permit>, Box<Response<ProxyBody>>> {
    match gate {
        Some(e) => e.admit(app, client.to_canonical()),
        None => Ok(None),
    }
}

impl Enforcer {
    fn admit(&self, app: &str, client: IpAddr) -> Result<Option<Permit>, Box<Response<ProxyBody>>> {
        let p = &self.policy;
        let denied = p.deny.iter().any(|c| c.contains(client))
            || (!p.allow.is_empty() && !p.allow.iter().any(|c| c.contains(client)));
        if denied {
            return Err(Box::new(text(
                StatusCode::FORBIDDEN,
                format!("forbidden: {client} may not reach '{app}'"),
            )));
        }
        if p.maintenance {
            return Err(Box::new(maintenance(app, p.page.as_deref())));
        }
        let now = Instant::now();
        if let Some(rate) = p.rate {
            let mut b = self
                .app_bucket
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Err(wait) = b.take(rate, now) {
                return Err(Box::new(too_many(
                    wait,
                    format!("too many requests: '{app}' takes {rate}; try again in {wait}s"),
                )));
            }
        }
        if let Some(rate) = p.client_rate {
            let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
            if clients.len() >= MAX_CLIENTS && !clients.contains_key(&client) {
                clients.retain(|_, b| {
                    b.refill(rate, now);
                    !b.is_full(rate)
                });
                if clients.len() >= MAX_CLIENTS {
                    clients.clear();
                }
            }
            let b = clients.entry(client).or_insert_with(|| Bucket::full(rate));
            if let Err(wait) = b.take(rate, now) {
                return Err(Box::new(too_many(
                    wait,
                    format!(
                        "too many requests: '{app}' takes {rate} from one address; try again in {wait}s"
                    ),
                )));
            }
        }
        let Some(max) = p.max_concurrent else {
            return Ok(None);
        };
        let n = self.in_progress.fetch_add(1, Ordering::AcqRel);
        let permit = Permit(Arc::clone(&self.in_progress));
        if n >= max as usize {
            let mut r = text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("busy: '{app}' has {max} requests in progress; try again shortly"),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return Err(Box::new(r));
        }
        Ok(Some(permit))
    }
}

fn too_many(wait: u64, msg: String) -> Response<ProxyBody> {
    let mut r = text(StatusCode::TOO_MANY_REQUESTS, msg);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(wait));
    r
}

fn maintenance(app: &str, page: Option<&str>) -> Response<ProxyBody> {
    let mut r = match page {
        Some(html) => {
            let mut r = Response::new(
                Full::new(Bytes::from(html.to_string()))
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            );
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            r
        }
        None => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("'{app}' is down for maintenance; please try again later"),
        ),
    };
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("120"));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_parse_strictly_and_match() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("10.9.8.7")));
        assert!(c.contains(ip("::ffff:10.1.2.3")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(!c.contains(ip("::1")));
        let one: Cidr = "127.0.0.2".parse().unwrap();
        assert_eq!(one.to_string(), "127.0.0.2/32");
        assert!(one.contains(ip("127.0.0.2")) && !one.contains(ip("127.0.0.1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")) && !v6.contains(ip("2001:db9::1")));
        assert_eq!(
            "::ffff:1.2.3.4".parse::<Cidr>().unwrap().to_string(),
            "1.2.3.4/32"
        );
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0.1/8",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "10.0.0.0/0008",
            "example.com",
            "1.2.3",
            "::/129",
            "10.0.0.0/8/8",
            "10.0.0.0 /8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
        assert!("10.0.0.1/8"
            .parse::<Cidr>()
            .unwrap_err()
            .contains("10.0.0.0/8"));
    }

    #[test]
    fn policy_order_and_limits() {
        let r = Router::new("example.test".into(), Default::default());
        assert!(r.admit("web", ip("1.2.3.4")).unwrap().is_none());
        r.set_policy(
            "web",
            Policy {
                allow: vec!["127.0.0.0/8".parse().unwrap()],
                deny: vec!["127.0.0.2".parse().unwrap()],
                client_rate: Some("2/h".parse().unwrap()),
                max_concurrent: Some(1),
                ..Policy::default()
            },
        );
        let status = |res: Result<Option<Permit>, Box<Response<ProxyBody>>>| match res {
            Ok(_) => 200,
            Err(r) => r.status().as_u16(),
        };
        assert_eq!(status(r.admit("web", ip("127.0.0.2"))), 403);
        assert_eq!(status(r.admit("web", ip("10.0.0.1"))), 403);
        let held = r.admit("web", ip("127.0.0.1")).unwrap();
        assert!(held.is_some());
        // The cap: one in progress.
        assert_eq!(status(r.admit("web", ip("127.0.0.3"))), 503);
        drop(held);
        // The second token of 127.0.0.1, then none left.
        assert_eq!(status(r.admit("web", ip("127.0.0.1"))), 200);
        let refused = r.admit("web", ip("127.0.0.1")).err().unwrap();
        assert_eq!(refused.status(), 429);
        // The next token of 2 an hour comes in 30 minutes.
        let wait: u64 = refused.headers()[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1790..=1800).contains(&wait), "{wait}");
        assert_eq!(status(r.admit("web", ip("127.0.0.4"))), 200);
        r.set_policy(
            "web",
            Policy {
                maintenance: true,
                ..Policy::default()
            },
        );
        assert_eq!(status(r.admit("web", ip("127.0.0.1"))), 503);
        r.set_policy("web", Policy::default());
        assert_eq!(status(r.admit("web", ip("127.0.0.2"))), 200);
    }

    #[test]
    fn a_bucket_refills_at_its_rate() {
        let t0 = Instant::now();
        let ten: Rate = "10".parse().unwrap();
        let mut b = Bucket {
            tokens: 0.0,
            last: t0,
        };
        assert_eq!(b.take(ten, t0), Err(1));
        assert!(b
            .take(ten, t0 + std::time::Duration::from_millis(100))
            .is_ok());
        assert!(b
            .take(ten, t0 + std::time::Duration::from_millis(150))
            .is_err());
        b.refill(ten, t0 + std::time::Duration::from_secs(60));
        assert_eq!(b.tokens, 10.0);
        assert!(b.is_full(ten));
        let hourly: Rate = "6/h".parse().unwrap();
        let mut b = Bucket {
            tokens: 0.0,
            last: t0,
        };
        assert_eq!(b.take(hourly, t0), Err(600));
    }

    #[test]
    fn rates_parse_strictly_and_read_back() {
        for (text, n, per, shown) in [
            ("100", 100, 1, "100 a second"),
            ("100/s", 100, 1, "100 a second"),
            ("30/m", 30, 60, "30 a minute"),
            ("5/h", 5, 3600, "5 an hour"),
            ("5/1h", 5, 3600, "5 an hour"),
            ("1000/d", 1000, 86_400, "1000 a day"),
            ("5/10m", 5, 600, "5 every 10 minutes"),
            ("5/2h", 5, 7200, "5 every 2 hours"),
            ("7/90s", 7, 90, "7 every 90 seconds"),
            ("1000000", 1_000_000, 1, "1000000 a second"),
        ] {
            let r: Rate = text.parse().unwrap();
            assert_eq!((r.n, r.per), (n, per), "{text}");
            assert_eq!(r.to_string(), shown);
        }
        for bad in [
            "",
            "0",
            "-1",
            "+5",
            "1.5",
            "5/",
            "5/x",
            "5/0s",
            "5/2d",
            "5/h/h",
            "5/-1m",
            "5 /s",
            "1000001",
            "99999999999999999999999",
            "5/99999999999999999999s",
            "/s",
        ] {
            let err = bad.parse::<Rate>().unwrap_err();
            assert_eq!(err.lines().count(), 1, "{bad:?}: {err}");
        }
        assert!("5/2d".parse::<Rate>().unwrap_err().contains("1s to 1d"));
        assert!("0".parse::<Rate>().unwrap_err().contains("1 to 1000000"));
    }
}
