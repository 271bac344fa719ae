//! Forwarding one request: pick the app from `Host`, apply its route's policy (HTTPS
//! redirect, body limit), rewrite headers, dispatch with connect-failure failover, and wrap
//! the response. An HTTP/1.1 upgrade (WebSocket or any other) the app accepts becomes a
//! tunnel between the two connections (see `tunnel.rs`).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::{Authority, PathAndQuery};
use hyper::{Request, Response, StatusCode, Uri, Version};
use tracing::debug;

use super::accounting;
use super::h1::ResponseHead;
use super::realip;
use super::tunnel;
use super::tunnel::UpstreamIo;
use super::upstream::{
    self, BodyError, BoxError, ExchangeError, InflightGuard, Link, ReqBody, UpstreamBody,
};
pub(super) use super::watchdog::Limit;
use super::{Pick, RoutePolicy, Router};

pub(super) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Request/response headers that describe one connection rather than the message (RFC 9110
/// section 7.6.1); forwarding them would confuse the connection on the other side.
/// `Connection` first (see [`strip_hop_by_hop`]).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Where ACME's HTTP-01 challenges are answered: never redirected to HTTPS.
const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// The client end of a request: who, over which listener, and the router serving it
/// (held per connection: the shared `Arc<Router>`'s count is not touched per request).
pub(super) struct Client {
    pub router: Arc<Router>,
    pub peer: SocketAddr,
    pub https: bool,
    /// The peer's address as a header value, made once per connection rather than
    /// formatted for every request's `X-Forwarded-For` and `X-Real-IP`.
    peer_value: HeaderValue,
}

impl Client {
    pub(super) fn new(router: Arc<Router>, peer: SocketAddr, https: bool) -> Client {
        Client {
            router,
            peer,
            https,
            peer_value: ip_value(peer.ip()),
        }
    }
}

/// An address as a header value (canonical: an IPv4-mapped address in its IPv4 form).
fn ip_value(ip: IpAddr) -> HeaderValue {
    use std::io::Write;
    // An address is at most 45 characters: formatted in place, not in a String.
    let mut buf = [0u8; 64];
    let len = {
        let mut w = &mut buf[..];
        write!(w, "{}", ip.to_canonical()).expect("an address fits in 64 bytes");
        64 - w.len()
    };
    HeaderValue::from_bytes(&buf[..len]).expect("an IP address is a valid header")
}

pub(super) async fn handle(
    client: &Client,
    mut req: Request<Incoming>,
    limit: Limit<'_>,
) -> Response<ProxyBody> {
    let router = &*client.router;
    let started = Instant::now();
    let (host, host_value) = match request_host(&req) {
        Ok(host) => host,
        Err(msg) => return text(StatusCode::BAD_REQUEST, msg),
    };
    if let Some(answer) = router.challenges.answer(host.host(), req.uri().path()) {
        return answer;
    }
    let Some(route) = router.resolve(host.host()) else {
        router.count_unrouted();
        return text(
            StatusCode::NOT_FOUND,
            format!("no app '{}' here", printable(host.host())),
        );
    };
    // Taken before the request is rewritten: the client side of an upgrade.
    let upgrade = tunnel::wanted(&req).map(|proto| (proto, hyper::upgrade::on(&mut req)));
    let ip = realip::client(
        client.peer.ip(),
        req.headers_mut(),
        &router.opts.trusted_proxies,
    );
    let ip_value = if ip == client.peer.ip().to_canonical() {
        client.peer_value.clone()
    } else {
        ip_value(ip)
    };
    let forwarded = Forwarding {
        host: &host,
        host_value,
        client: ip_value,
        https: client.https,
    };
    upstream_request(&mut req, forwarded);
    let (app, policy) = (&route.key, &route.policy);
    let (mut req, tally) = match accounting::begin(&route, ip, req, started) {
        Ok(admitted) => admitted,
        Err(refused) => return *refused,
    };
    // Boxed: rare, and its future would otherwise make every request's future larger
    // (hyper moves that future into place once per request).
    if policy.force_https || policy.max_body.is_some() {
        let answer = Box::pin(by_policy(
            router,
            app,
            policy,
            client.https,
            &host,
            &mut req,
        ))
        .await;
        if let Some(answer) = answer {
            return accounting::end(tally, answer);
        }
    }
    let mut req = req.map(|body| ReqBody::new(body, policy.max_body));
    if let Some((proto, _)) = &upgrade {
        tunnel::ask_upstream(req.headers_mut(), proto);
    }
    let (mut response, upgraded) = match forward(router, app, req, limit).await {
        Ok(resp) => {
            debug!(
                app = %app,
                upstream = %resp.upstream,
                status = resp.response.status().as_u16(),
                ms = started.elapsed().as_millis() as u64,
                "proxied"
            );
            (resp.response, resp.upgraded)
        }
        Err(failure) => (failure_response(app, failure, started), None),
    };
    if let Some((proto, client_side)) = upgrade {
        response = tunnel::finish(
            response,
            proto,
            client_side,
            upgraded,
            router.opts.tunnel_idle_timeout,
        );
    } else if upgraded.is_some() {
        // The app switched protocols on a request that never asked to.
        response = text(
            StatusCode::BAD_GATEWAY,
            format!("bad gateway: the upstream of '{app}' switched protocols unasked"),
        );
    }
    if client.https {
        if let Some(hsts) = &policy.hsts {
            response
                .headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
    }
    accounting::end(tally, response)
}

/// The route's own answer, when its policy has one: the redirect to HTTPS, or a 413 for a
/// body declared larger than the limit.
async fn by_policy<B: hyper::body::Body<Data = Bytes> + Unpin>(
    router: &Router,
    app: &str,
    policy: &RoutePolicy,
    https: bool,
    host: &Authority,
    req: &mut Request<B>,
) -> Option<Response<ProxyBody>> {
    if policy.force_https && !https && !req.uri().path().starts_with(ACME_CHALLENGE) {
        return Some(redirect_to_https(req, host, router.https_port()));
    }
    let limit = policy.max_body?;
    if content_length(req.headers()).is_some_and(|n| n > limit) {
        // A client that sent no `Expect: 100-continue` is uploading already; reading what
        // it sends (within a bound) lets it read the answer instead of a reset.
        if !req.headers().contains_key(header::EXPECT) {
            discard(req.body_mut()).await;
        }
        return Some(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {app}'s limit of {limit} bytes"),
        ));
    }
    None
}

fn failure_response(app: &str, failure: Failure, started: Instant) -> Response<ProxyBody> {
    let (status, msg) = match failure {
        Failure::NotRouted => (StatusCode::NOT_FOUND, format!("no app '{app}' here")),
        Failure::NoUpstreams => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("app '{app}' has no running web processes"),
        ),
        Failure::NoneAnswered => (
            StatusCode::BAD_GATEWAY,
            format!("bad gateway: no upstream of '{app}' answered"),
        ),
        Failure::Broken(addr, err) => {
            debug!(app = %app, upstream = %addr, error = %err, "upstream failed mid-request");
            (
                StatusCode::BAD_GATEWAY,
                format!("bad gateway: the upstream of '{app}' failed"),
            )
        }
        Failure::TooLarge(limit) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {app}'s limit of {limit} bytes"),
        ),
        Failure::BadBody(err) => {
            debug!(app = %app, error = %err, "bad request body");
            (
                StatusCode::BAD_REQUEST,
                "bad request: malformed request body".to_string(),
            )
        }
        Failure::TimedOut(addr, after) => {
            debug!(app = %app, upstream = %addr, "upstream did not answer in time");
            (
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "gateway timeout: '{app}' did not answer within {}s",
                    after.as_secs_f32()
                ),
            )
        }
    };
    debug!(
        app = %app,
        status = status.as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "not proxied"
    );
    text(status, msg)
}

struct Forwarded {
    upstream: SocketAddr,
    response: Response<ProxyBody>,
    /// The upstream's connection, when it switched protocols.
    upgraded: Option<UpstreamIo>,
}

enum Failure {
    /// The app disappeared from the table while the request was being handled.
    NotRouted,
    NoUpstreams,
    /// Every upstream refused or timed out the connection.
    NoneAnswered,
    /// The request was (possibly partly) sent, so it cannot be retried.
    Broken(SocketAddr, std::io::Error),
    /// The client's request body could not be read (malformed chunked encoding, cut short).
    BadBody(hyper::Error),
    /// The client's request body went past the route's limit.
    TooLarge(u64),
    TimedOut(SocketAddr, Duration),
}

/// Tries the app's upstreams in round-robin order, each at most once, moving on only while
/// the request has not been sent (or, with a method that may be repeated, went without any
/// answer before any of its body was taken); on each, a pooled connection if one is open, else a new
/// one. One function rather than one per level: every level of futures is a copy of the
/// request's state per request.
async fn forward(
    router: &Router,
    app: &str,
    mut req: Request<ReqBody>,
    limit: Limit<'_>,
) -> Result<Forwarded, Failure> {
    // Upstreams given up on: empty on the common path, so nothing is allocated.
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut guard = pick(router, app, &tried)?;
    loop {
        let upstream = guard.upstream();
        let addr = upstream.addr;
        let (mut link, pooled) = match upstream.checkout() {
            Some(link) => (link, true),
            // Boxed: once per upstream connection, and large.
            None => match Box::pin(upstream.connect(router.opts.connect_timeout)).await {
                Ok(link) => (link, false),
                Err(err) => {
                    debug!(app, upstream = %addr, error = %err, "upstream unreachable, trying the next");
                    tried.push(addr);
                    guard = pick(router, app, &tried)?;
                    continue;
                }
            },
        };
        match link.exchange(&mut req, limit).await {
            Ok(head) => {
                // Answered before all of the request went: the rest goes on beside it.
                let upload = (!link.sent_all()).then(|| req.into_body());
                return Ok(forwarded(head, link, upload, guard));
            }
            Err(ExchangeError::TimedOut) => {
                return Err(Failure::TimedOut(addr, router.opts.upstream_timeout))
            }
            Err(ExchangeError::Body(BodyError::TooLarge(limit))) => {
                // Read what the client is still sending, so it reads the 413 rather than
                // a reset.
                discard(req.body_mut().client()).await;
                return Err(Failure::TooLarge(limit));
            }
            Err(ExchangeError::Body(BodyError::Client(err))) => return Err(Failure::BadBody(err)),
            // Closed or reset before any answer, none of the body taken, and a method that
            // may be repeated (what nginx's `proxy_next_upstream error` does too): a pooled
            // connection the upstream closed just now goes again to the same upstream, a
            // fresh one (the process on its way out) to the next.
            Err(ExchangeError::Unanswered(err)) if upstream::idempotent(req.method()) => {
                debug!(app, upstream = %addr, error = %err, pooled, "no answer, sending again");
                if !pooled {
                    tried.push(addr);
                    guard = pick(router, app, &tried)?;
                }
            }
            Err(ExchangeError::Unanswered(err) | ExchangeError::Broken(err)) => {
                return Err(Failure::Broken(addr, err))
            }
        }
    }
}

/// The next upstream of `app` not in `tried`, counted as in flight.
fn pick(router: &Router, app: &str, tried: &[SocketAddr]) -> Result<InflightGuard, Failure> {
    match router.pick(app, tried) {
        Pick::Upstream(guard) => Ok(guard),
        Pick::NotRouted => Err(Failure::NotRouted),
        Pick::Exhausted if tried.is_empty() => Err(Failure::NoUpstreams),
        Pick::Exhausted => Err(Failure::NoneAnswered),
    }
}

/// The upstream's response on its way to the client: its connection goes with its body
/// (back to the pool once read), or to the tunnel after a switch of protocols.
fn forwarded(
    head: ResponseHead,
    link: Link,
    upload: Option<ReqBody>,
    guard: InflightGuard,
) -> Forwarded {
    let upstream = guard.upstream().addr;
    let ResponseHead {
        status,
        mut headers,
        framing,
        keep_alive,
    } = head;
    strip_hop_by_hop(&mut headers);
    let (body, upgraded) = if status == StatusCode::SWITCHING_PROTOCOLS {
        (UpstreamBody::empty(guard), Some(link.into_upgraded()))
    } else {
        (
            UpstreamBody::new(framing, link, keep_alive, upload, guard),
            None,
        )
    };
    let mut response = Response::new(body.boxed_unsync());
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Forwarded {
        upstream,
        response,
        upgraded,
    }
}

/// The authority the client addressed: the absolute-form request target wins over `Host`
/// (RFC 9112 section 3.2.2), and is then what the app sees as `Host` too. With it, the
/// `Host` header it came from, if it came from one (the same text, reused as is).
fn request_host(req: &Request<Incoming>) -> Result<(Authority, Option<HeaderValue>), &'static str> {
    let (authority, value) = match req.uri().authority() {
        Some(a) => (a.clone(), None),
        None => {
            let mut hosts = req.headers().get_all(header::HOST).iter();
            let (Some(host), None) = (hosts.next(), hosts.next()) else {
                return Err("bad request: exactly one Host header is required");
            };
            let authority = host
                .to_str()
                .ok()
                .and_then(|h| h.parse::<Authority>().ok())
                .ok_or("bad request: invalid Host header")?;
            (authority, Some(host.clone()))
        }
    };
    check_authority(&authority)?;
    Ok((authority, value))
}

/// A host, and at most a port in 1..=65535: no userinfo (`user@host` would reach the app
/// as a `Host` it never expects), no empty or out-of-range port.
fn check_authority(a: &Authority) -> Result<(), &'static str> {
    let s = a.as_str();
    if s.contains('@') {
        return Err("bad request: userinfo is not allowed in the host");
    }
    if a.host().is_empty() {
        return Err("bad request: invalid Host header");
    }
    let port = s.get(a.host().len()..).unwrap_or("");
    if !port.is_empty() {
        let ok = port.strip_prefix(':').is_some_and(|p| {
            (1..=5).contains(&p.len())
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u16>().is_ok_and(|n| n > 0)
        });
        if !ok {
            return Err("bad request: invalid port in the host");
        }
    }
    Ok(())
}

/// Turns the client's request into the one sent upstream: origin-form target, HTTP/1.1,
/// hop-by-hop headers gone, `X-Forwarded-*` and `X-Request-Id` set, the body limited.
/// In place: the request is large, and every move of it is a copy.
fn upstream_request<B>(req: &mut Request<B>, forwarded: Forwarding<'_>) {
    let uri = req.uri();
    if uri.scheme().is_some() || uri.authority().is_some() || uri.path_and_query().is_none() {
        let path = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(path);
    }
    *req.version_mut() = Version::HTTP_11;
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    add_forwarded(headers, forwarded);
    set_request_id(headers);
}

/// Keeps a request id the client (or a proxy in front) sent when it is a sane token, else
/// makes one: unique per router process, cheap (a random prefix and a counter).
fn set_request_id(headers: &mut HeaderMap) {
    let sane = headers.get(&X_REQUEST_ID).is_some_and(|v| {
        let b = v.as_bytes();
        (1..=200).contains(&b.len())
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.:+/=".contains(c))
    });
    if sane {
        return;
    }
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    /// Blocks of ids handed to threads, so the shared counter is not written per request.
    static BLOCKS: AtomicU64 = AtomicU64::new(0);
    const BLOCK: u64 = 1 << 16;
    thread_local! {
        /// This thread's next id and the end of its block.
        static NEXT: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
    }
    let prefix = PREFIX.get_or_init(|| crate::keys::random_hex(8));
    let n = NEXT.with(|next| {
        let (mut n, mut end) = next.get();
        if n == end {
            n = BLOCKS.fetch_add(BLOCK, Ordering::Relaxed);
            end = n + BLOCK;
        }
        next.set((n + 1, end));
        n
    });
    // 16 hex digits of prefix, 16 of counter, written in place: no formatting machinery.
    let mut id = [0u8; 32];
    id[..16].copy_from_slice(&prefix.as_bytes()[..16]);
    for (i, b) in id[16..].iter_mut().enumerate() {
        *b = b"0123456789abcdef"[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
    headers.insert(
        X_REQUEST_ID,
        HeaderValue::from_bytes(&id).expect("hex is a valid header value"),
    );
}

/// Reads and drops a refused request's body, up to 1 MiB and 5 seconds.
async fn discard<B: hyper::body::Body<Data = Bytes> + Unpin>(body: &mut B) {
    const MAX: usize = 1 << 20;
    let mut seen = 0;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > MAX {
                break;
            }
        }
    })
    .await;
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// `308` to the same URL over HTTPS (a 308 keeps the method and body, unlike a 301).
fn redirect_to_https<B>(
    req: &Request<B>,
    host: &Authority,
    https_port: Option<u16>,
) -> Response<ProxyBody> {
    let port = match https_port {
        Some(443) | None => String::new(),
        Some(p) => format!(":{p}"),
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{}{port}{path}", host.host());
    let mut resp = text(StatusCode::PERMANENT_REDIRECT, format!("see {location}"));
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// What the app is told about the request's origin.
struct Forwarding<'a> {
    /// The authority the request was routed by.
    host: &'a Authority,
    /// The same as a header value, when the client sent it as `Host`.
    host_value: Option<HeaderValue>,
    /// The client's address (see `realip.rs`).
    client: HeaderValue,
    https: bool,
}

fn add_forwarded(headers: &mut HeaderMap, f: Forwarding<'_>) {
    // Append to any chain the client sent, like every other proxy does: apps that trust us
    // read the last entry, which is always ours.
    let mut sent = headers.get_all(&X_FORWARDED_FOR).iter().peekable();
    let xff = if sent.peek().is_none() {
        f.client.clone()
    } else {
        let mut chain: Vec<u8> = Vec::with_capacity(128);
        for v in sent.filter(|v| v.to_str().is_ok()) {
            chain.extend_from_slice(v.as_bytes());
            chain.extend_from_slice(b", ");
        }
        chain.extend_from_slice(f.client.as_bytes());
        HeaderValue::from_bytes(&chain).unwrap_or_else(|_| f.client.clone())
    };
    headers.insert(X_FORWARDED_FOR, xff);
    headers.insert(X_REAL_IP, f.client);
    // The router is the edge: whatever the client claims about proto/host is overwritten.
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if f.https { "https" } else { "http" }),
    );
    let host_value = f.host_value.unwrap_or_else(|| {
        HeaderValue::from_str(f.host.as_str()).expect("a parsed authority is a valid header")
    });
    // The app sees the authority the request was routed by: for an absolute-form request
    // that is the target's, whatever `Host` said (RFC 9112 section 3.2.2).
    headers.insert(header::HOST, host_value.clone());
    headers.insert(X_FORWARDED_HOST, host_value);
}

/// Headers of the proxy hop: `Proxy-*`, and a bare `Proxy` header, the httpoxy vector
/// (apps exporting it as HTTP_PROXY).
fn is_proxy_header(name: &HeaderName) -> bool {
    let n = name.as_str();
    n == "proxy" || n.starts_with("proxy-")
}

/// Removes the headers that describe one connection rather than the message (RFC 9110
/// section 7.6.1): the standard ones, those named in `Connection`, and the proxy hop's.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One look over the names first: most messages carry none, or only `Connection`,
    // and then nothing is allocated.
    let mut found = 0u8;
    let mut doomed: Vec<HeaderName> = Vec::new();
    for k in headers.keys() {
        match HOP_BY_HOP.iter().position(|h| h == k) {
            Some(i) => found |= 1 << i,
            None if is_proxy_header(k) => doomed.push(k.clone()),
            None => {}
        }
    }
    if found & 1 != 0 {
        // Headers named in `Connection` (HOP_BY_HOP[0]) are hop-by-hop for this message too.
        for v in headers.get_all(header::CONNECTION) {
            let Ok(v) = v.to_str() else { continue };
            for token in v.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("keep-alive") || token.eq_ignore_ascii_case("close") {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                    doomed.push(name);
                }
            }
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if found & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    for name in doomed {
        headers.remove(name);
    }
}

/// The router's own short answers.
pub(super) fn text(status: StatusCode, msg: impl Into<String>) -> Response<ProxyBody> {
    let mut body = msg.into();
    body.push('\n');
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A client-supplied host, fit to echo in an error message.
fn printable(host: &str) -> String {
    host.chars().filter(|c| !c.is_control()).take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarding<'a>(host: &'a Authority, client: &str, https: bool) -> Forwarding<'a> {
        Forwarding {
            host,
            host_value: None,
            client: ip_value(client.parse().unwrap()),
            https,
        }
    }

    #[test]
    fn strips_hop_by_hop_and_connection_listed() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, X-Secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("proxy", "http://evil"),
            ("content-length", "3"),
            ("x-kept", "yes"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-length", "x-kept"]);
    }

    #[test]
    fn forwarded_headers_append_and_overwrite() {
        let mut h = HeaderMap::new();
        h.insert(
            header::HOST,
            HeaderValue::from_static("web.example.test:8080"),
        );
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        let host: Authority = "web.example.test:8080".parse().unwrap();
        add_forwarded(&mut h, forwarding(&host, "::ffff:127.0.0.1", false));
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1, 127.0.0.1");
        assert_eq!(h[&X_REAL_IP], "127.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        add_forwarded(&mut h, forwarding(&host, "10.1.1.1", true));
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_FORWARDED_HOST], "web.example.test:8080");
        assert_eq!(h[header::HOST], "web.example.test:8080");
    }

    #[test]
    fn authorities_with_userinfo_or_bad_ports_are_refused() {
        for good in [
            "web.example.test",
            "web.example.test:8080",
            "[::1]:80",
            "a:65535",
        ] {
            let a: Authority = good.parse().unwrap();
            assert!(check_authority(&a).is_ok(), "{good}");
        }
        for bad in [
            "user@web.example.test",
            "user:pw@web.example.test:80",
            "@web.example.test",
            "web.example.test:",
            "web.example.test:0",
            "web.example.test:65536",
            "web.example.test:99999",
            "web.example.test:123456",
        ] {
            if let Ok(a) = bad.parse::<Authority>() {
                assert!(check_authority(&a).is_err(), "{bad}");
            }
        }
    }

    #[test]
    fn the_routed_authority_is_the_host_the_app_sees() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("other.example.test"));
        let routed: Authority = "web.example.test".parse().unwrap();
        add_forwarded(&mut h, forwarding(&routed, "127.0.0.1", false));
        assert_eq!(h[header::HOST], "web.example.test");
        assert_eq!(h[&X_FORWARDED_HOST], "web.example.test");
    }

    #[test]
    fn request_ids_are_kept_when_sane_else_made() {
        let mut h = HeaderMap::new();
        set_request_id(&mut h);
        let first = h[&X_REQUEST_ID].clone();
        assert_eq!(first.len(), 32);
        let mut h2 = HeaderMap::new();
        set_request_id(&mut h2);
        assert_ne!(h2[&X_REQUEST_ID], first);
        let mut kept = HeaderMap::new();
        kept.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        set_request_id(&mut kept);
        assert_eq!(kept[&X_REQUEST_ID], "abc-123");
        let mut bad = HeaderMap::new();
        bad.insert(X_REQUEST_ID, HeaderValue::from_static("a b"));
        set_request_id(&mut bad);
        assert_ne!(bad[&X_REQUEST_ID], "a b");
    }

    #[test]
    fn redirects_keep_the_path_and_name_the_https_port() {
        let req = Request::get("/a/b?c=1").body(()).unwrap();
        let host: Authority = "www.shop.test:8080".parse().unwrap();
        let r = redirect_to_https(&req, &host, Some(8443));
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            r.headers()[header::LOCATION],
            "https://www.shop.test:8443/a/b?c=1"
        );
        let r = redirect_to_https(&req, &host, Some(443));
        assert_eq!(
            r.headers()[header::LOCATION],
            "https://www.shop.test/a/b?c=1"
        );
    }

    #[test]
    fn error_bodies_are_plain_text() {
        let resp = text(StatusCode::NOT_FOUND, "no app 'x' here");
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
    }
}
