//! The router against real sockets on 127.0.0.1: tiny hyper upstreams, a real client.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::HOST;
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use magrathea::router::{RoutePolicy, Router, RouterOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const DOMAIN: &str = "apps.example.test";

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type TestBody = BoxBody<Bytes, BoxError>;

fn full(s: impl Into<Bytes>) -> TestBody {
    Full::new(s.into()).map_err(|never| match never {}).boxed()
}

struct Proxy {
    router: Arc<Router>,
    addr: SocketAddr,
    shutdown: CancellationToken,
    served: tokio::task::JoinHandle<()>,
}

async fn start_router(opts: RouterOptions) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new(DOMAIN.to_string(), opts);
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(Arc::clone(&router).serve(listener, shutdown.clone()));
    Proxy {
        router,
        addr,
        shutdown,
        served,
    }
}

/// A hyper HTTP/1.1 server on a fresh port running `handler` for every request. Counts
/// requests and accepted connections.
struct Upstream {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    conns: Arc<AtomicUsize>,
}

async fn spawn_upstream<F, Fut>(handler: F) -> Upstream
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let conns = Arc::new(AtomicUsize::new(0));
    let (h, c) = (Arc::clone(&hits), Arc::clone(&conns));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            c.fetch_add(1, Ordering::SeqCst);
            let (handler, hits) = (handler.clone(), Arc::clone(&h));
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    hits.fetch_add(1, Ordering::SeqCst);
                    let fut = handler(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Upstream { addr, hits, conns }
}

/// An upstream that answers every request with its name.
async fn named(name: &'static str) -> Upstream {
    spawn_upstream(move |_req| async move { Response::new(full(name)) }).await
}

/// An upstream that streams the request body straight back.
async fn echo() -> Upstream {
    spawn_upstream(|req: Request<Incoming>| async move {
        Response::new(req.into_body().map_err(BoxError::from).boxed())
    })
    .await
}

/// An address nothing listens on: connecting is refused.
async fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

fn client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Polls `cond` until it holds; a bound far above what it takes turns a hang into a failure.
async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let polled = async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), polled)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

fn host(app: &str) -> String {
    format!("{app}.{DOMAIN}")
}

async fn send(
    client: &Client<HttpConnector, TestBody>,
    proxy: SocketAddr,
    req: Request<TestBody>,
) -> (StatusCode, HeaderMap, Bytes) {
    let mut req = req;
    *req.uri_mut() = format!("http://{proxy}{}", req.uri()).parse().unwrap();
    let resp = client.request(req).await.expect("request to the router");
    let status = resp.status();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("response body").to_bytes();
    (status, parts.headers, body)
}

async fn get(
    client: &Client<HttpConnector, TestBody>,
    proxy: SocketAddr,
    host: &str,
) -> (StatusCode, Bytes) {
    let req = Request::get("/")
        .header(HOST, host)
        .body(Empty::new().map_err(|never| match never {}).boxed())
        .unwrap();
    let (status, _, body) = send(client, proxy, req).await;
    (status, body)
}

#[tokio::test]
async fn routes_by_host_and_answers_404_503_400() {
    let proxy = start_router(RouterOptions::default()).await;
    let (web, api) = (named("web").await, named("api").await);
    proxy.router.set_upstreams("web", vec![web.addr]);
    proxy.router.set_upstreams("api", vec![api.addr]);
    proxy.router.set_upstreams("idle", vec![]);
    let c = client();

    assert_eq!(
        get(&c, proxy.addr, &host("web")).await,
        (StatusCode::OK, Bytes::from("web"))
    );
    assert_eq!(
        get(&c, proxy.addr, &host("api")).await,
        (StatusCode::OK, Bytes::from("api"))
    );
    // Port stripped, case-insensitive.
    let mixed = format!("API.{}:8080", DOMAIN.to_uppercase());
    assert_eq!(
        get(&c, proxy.addr, &mixed).await,
        (StatusCode::OK, Bytes::from("api"))
    );

    let (status, body) = get(&c, proxy.addr, &host("nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, "no app 'nope' here\n");
    let (status, _) = get(&c, proxy.addr, "web.elsewhere.test").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = get(&c, proxy.addr, &host("idle")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "app 'idle' has no running web processes\n");

    proxy.router.remove_app("idle");
    assert_eq!(
        get(&c, proxy.addr, &host("idle")).await.0,
        StatusCode::NOT_FOUND
    );

    // hyper clients always send Host, so speak raw HTTP/1.1 for this one.
    let mut raw = TcpStream::connect(proxy.addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
}

#[tokio::test]
async fn round_robin_spreads_over_three_upstreams() {
    let proxy = start_router(RouterOptions::default()).await;
    let ups = [named("a").await, named("b").await, named("c").await];
    proxy
        .router
        .set_upstreams("web", ups.iter().map(|u| u.addr).collect());
    let c = client();
    for _ in 0..30 {
        assert_eq!(get(&c, proxy.addr, &host("web")).await.0, StatusCode::OK);
    }
    for u in &ups {
        assert_eq!(u.hits.load(Ordering::SeqCst), 10, "strict round robin");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_upstream_is_skipped_without_failing_requests() {
    let proxy = start_router(RouterOptions::default()).await;
    let (a, b) = (named("a").await, named("b").await);
    let dead = refused_addr().await;
    proxy
        .router
        .set_upstreams("web", vec![a.addr, dead, b.addr]);
    let c = client();
    for i in 0..100 {
        let (status, _) = get(&c, proxy.addr, &host("web")).await;
        assert_eq!(status, StatusCode::OK, "request {i}");
    }
    assert_eq!(
        a.hits.load(Ordering::SeqCst) + b.hits.load(Ordering::SeqCst),
        100
    );
    assert_eq!(proxy.router.in_flight(dead), 0);
}

#[tokio::test]
async fn all_upstreams_refused_is_502() {
    let proxy = start_router(RouterOptions::default()).await;
    let dead = vec![refused_addr().await, refused_addr().await];
    proxy.router.set_upstreams("web", dead);
    let (status, body) = get(&client(), proxy.addr, &host("web")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body, "bad gateway: no upstream of 'web' answered\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swap_under_load_fails_nothing_and_moves_all_new_requests() {
    let proxy = start_router(RouterOptions::default()).await;
    let (a, b) = (named("A").await, named("B").await);
    proxy.router.set_upstreams("web", vec![a.addr]);

    let addr = proxy.addr;
    let load = tokio::spawn(async move {
        let c = client();
        let mut failures = 0;
        for _ in 0..500 {
            let (status, body) = get(&c, addr, &host("web")).await;
            if status != StatusCode::OK || !(body == "A" || body == "B") {
                failures += 1;
            }
        }
        failures
    });

    wait_until("A to get half of the requests", || {
        a.hits.load(Ordering::SeqCst) >= 250 || load.is_finished()
    })
    .await;
    assert!(
        !load.is_finished(),
        "the load ended before A got half of it"
    );
    proxy.router.set_upstreams("web", vec![b.addr]);
    assert_eq!(proxy.router.upstreams("web"), [b.addr]);
    // Whatever A had already been given finishes; after that A must see nothing new.
    assert!(proxy.router.drain(&[a.addr], Duration::from_secs(5)).await);
    let a_at_swap = a.hits.load(Ordering::SeqCst);

    assert_eq!(load.await.unwrap(), 0, "failed requests");
    assert_eq!(
        a.hits.load(Ordering::SeqCst),
        a_at_swap,
        "A got requests after the swap"
    );
    assert_eq!(a_at_swap + b.hits.load(Ordering::SeqCst), 500);
    assert!(b.hits.load(Ordering::SeqCst) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_waits_until_a_streaming_response_is_fully_sent() {
    let proxy = start_router(RouterOptions::default()).await;
    let arrived = Arc::new(Notify::new());
    let finished = Arc::new(AtomicBool::new(false));
    let (arrived2, finished2) = (Arc::clone(&arrived), Arc::clone(&finished));
    // Headers go out at once; the body's second half only after 500 ms, so a router that
    // stopped counting at the response headers would drain too early.
    let slow = spawn_upstream(move |_req| {
        let (arrived, finished) = (Arc::clone(&arrived2), Arc::clone(&finished2));
        async move {
            arrived.notify_one();
            let chunks = futures_util::stream::iter([0u8, 1]).then(move |i| {
                let finished = Arc::clone(&finished);
                async move {
                    if i == 0 {
                        Ok::<_, BoxError>(Frame::data(Bytes::from("first-half;")))
                    } else {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        finished.store(true, Ordering::SeqCst);
                        Ok(Frame::data(Bytes::from("second-half")))
                    }
                }
            });
            Response::new(BodyExt::boxed(StreamBody::new(chunks)))
        }
    })
    .await;
    let fresh = named("B").await;
    proxy.router.set_upstreams("web", vec![slow.addr]);

    let addr = proxy.addr;
    let request = tokio::spawn(async move { get(&client(), addr, &host("web")).await });
    arrived.notified().await;
    let started = Instant::now();

    proxy.router.set_upstreams("web", vec![fresh.addr]);
    assert_eq!(get(&client(), proxy.addr, &host("web")).await.1, "B");
    assert!(
        !proxy
            .router
            .drain(&[slow.addr], Duration::from_millis(100))
            .await
    );
    assert!(
        proxy
            .router
            .drain(&[slow.addr], Duration::from_secs(5))
            .await
    );
    assert!(
        finished.load(Ordering::SeqCst),
        "drained before the body was done"
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(proxy.router.in_flight(slow.addr), 0);

    let (status, body) = request.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "first-half;second-half");
}

#[tokio::test]
async fn post_5mb_body_is_echoed_intact() {
    let proxy = start_router(RouterOptions::default()).await;
    let up = echo().await;
    proxy.router.set_upstreams("web", vec![up.addr]);
    let payload: Bytes = (0..5 * 1024 * 1024)
        .map(|i: u32| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let req = Request::post("/upload")
        .header(HOST, host("web"))
        .body(full(payload.clone()))
        .unwrap();
    let (status, _, body) = send(&client(), proxy.addr, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), payload.len());
    assert!(body == payload, "echoed body differs");
}

#[tokio::test]
async fn request_and_response_bodies_stream_both_ways() {
    let proxy = start_router(RouterOptions::default()).await;
    let up = echo().await;
    proxy.router.set_upstreams("web", vec![up.addr]);

    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let body = StreamBody::new(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, BoxError>(Frame::data(b)), rx))
    }));
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);

    tx.send(Bytes::from("ping-1")).await.unwrap();
    let req = Request::post("/")
        .header(HOST, host("web"))
        .body(body)
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
        .await
        .expect("response headers before the request body ended")
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut resp_body = resp.into_body();
    // The first chunk comes back while the request is still open: nothing buffers whole bodies.
    let first = tokio::time::timeout(Duration::from_secs(5), resp_body.frame())
        .await
        .expect("first echoed chunk while the upload is still open")
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(first, "ping-1");
    tx.send(Bytes::from("ping-2")).await.unwrap();
    drop(tx);
    let rest = resp_body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "ping-2");
}

#[tokio::test]
async fn silent_upstream_gets_504_within_upstream_timeout() {
    let proxy = start_router(RouterOptions {
        upstream_timeout: Duration::from_millis(500),
        ..RouterOptions::default()
    })
    .await;
    // Accepts and keeps connections open, never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    proxy.router.set_upstreams("web", vec![silent]);

    let started = Instant::now();
    let (status, _) = get(&client(), proxy.addr, &host("web")).await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(took >= Duration::from_millis(450), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(proxy.router.in_flight(silent), 0);
}

#[tokio::test]
async fn idle_and_trickling_connections_are_cut_at_the_idle_timeout_slow_answers_are_not() {
    let proxy = start_router(RouterOptions {
        idle_timeout: Duration::from_millis(400),
        ..RouterOptions::default()
    })
    .await;
    // Answers after three idle timeouts.
    let slow = spawn_upstream(|_req: Request<Incoming>| async move {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        Response::new(full("late but fine"))
    })
    .await;
    proxy.router.set_upstreams("web", vec![slow.addr]);

    // Closed from the router's side after the idle timeout: the read ends (EOF, or a reset).
    async fn cut(mut s: impl tokio::io::AsyncRead + Unpin) {
        let started = Instant::now();
        let read = tokio::time::timeout(Duration::from_secs(3), s.read(&mut [0u8; 64])).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "not closed: {read:?}"
        );
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(350), "{took:?}");
    }
    cut(TcpStream::connect(proxy.addr).await.unwrap()).await;

    // A head trickled in a byte at a time never completes: cut all the same (slowloris).
    let (rd, mut wr) = TcpStream::connect(proxy.addr).await.unwrap().into_split();
    tokio::spawn(async move {
        wr.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        while wr.write_all(b"x").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    cut(rd).await;

    // A request in progress is not idle, however long the app takes.
    let (status, body) = get(&client(), proxy.addr, &host("web")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "late but fine");
}

#[tokio::test]
async fn forwarded_headers_added_and_hop_by_hop_stripped_both_ways() {
    let proxy = start_router(RouterOptions::default()).await;
    let up = spawn_upstream(|req: Request<Incoming>| async move {
        let mut seen: Vec<String> = req
            .headers()
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
            .collect();
        seen.sort();
        Response::builder()
            .header("connection", "x-up-private")
            .header("x-up-private", "1")
            .header("proxy-authenticate", "Basic")
            .header("x-up-public", "1")
            .body(full(seen.join("\n")))
            .unwrap()
    })
    .await;
    proxy.router.set_upstreams("web", vec![up.addr]);

    let req = Request::get("/path?q=1")
        .header(HOST, format!("{}:80", host("web")))
        .header("connection", "x-secret")
        .header("x-secret", "1")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic x")
        .header("x-kept", "yes")
        .body(Empty::new().map_err(|never| match never {}).boxed())
        .unwrap();
    let (status, headers, body) = send(&client(), proxy.addr, req).await;
    assert_eq!(status, StatusCode::OK);
    let seen = String::from_utf8(body.to_vec()).unwrap();
    let lines: Vec<&str> = seen.lines().collect();
    for want in [
        "x-forwarded-for: 203.0.113.9, 127.0.0.1",
        "x-forwarded-proto: http",
        "x-forwarded-host: web.apps.example.test:80",
        "host: web.apps.example.test:80",
        "x-kept: yes",
    ] {
        assert!(lines.contains(&want), "missing {want:?} in\n{seen}");
    }
    for gone in ["x-secret", "te:", "proxy-authorization"] {
        assert!(!seen.contains(gone), "{gone} leaked upstream:\n{seen}");
    }
    assert!(headers.get("x-up-private").is_none());
    assert!(headers.get("proxy-authenticate").is_none());
    assert_eq!(headers["x-up-public"], "1");
}

#[tokio::test]
async fn keep_alive_on_both_sides() {
    let proxy = start_router(RouterOptions::default()).await;
    let up = named("web").await;
    proxy.router.set_upstreams("web", vec![up.addr]);

    // One client connection carries many requests.
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    for _ in 0..20 {
        sender.ready().await.unwrap();
        let req = Request::get("/")
            .header(HOST, host("web"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "web");
    }
    // And the router reuses its upstream connections rather than opening one per request.
    let conns = up.conns.load(Ordering::SeqCst);
    assert!(
        conns <= 3,
        "{conns} upstream connections for 20 sequential requests"
    );
}

#[tokio::test]
async fn connections_of_large_and_streamed_responses_are_reused_too() {
    let proxy = start_router(RouterOptions::default()).await;
    // 256 KiB with a length, then a chunked body of two frames.
    let big = spawn_upstream(|req: Request<Incoming>| async move {
        if req.uri().path() == "/big" {
            return Response::new(full(vec![b'x'; 256 * 1024]));
        }
        let frames = futures_util::stream::iter([
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"one "))),
            Ok(Frame::data(Bytes::from_static(b"two"))),
        ]);
        Response::new(BodyExt::boxed(StreamBody::new(frames)))
    })
    .await;
    proxy.router.set_upstreams("web", vec![big.addr]);
    let client = client();
    for i in 0..10 {
        let path = if i % 2 == 0 { "/big" } else { "/chunked" };
        let req = Request::get(path)
            .header(HOST, host("web"))
            .body(Empty::new().map_err(|never| match never {}).boxed())
            .unwrap();
        let (status, _, body) = send(&client, proxy.addr, req).await;
        assert_eq!(status, StatusCode::OK);
        if i % 2 == 0 {
            assert_eq!(body.len(), 256 * 1024);
        } else {
            assert_eq!(body, "one two");
        }
    }
    let conns = big.conns.load(Ordering::SeqCst);
    assert!(
        conns <= 3,
        "{conns} upstream connections for 10 sequential requests"
    );
}

#[tokio::test]
async fn pooled_connections_the_upstream_closed_while_idle_are_not_used() {
    // An upstream that answers one request per connection, then closes it soon after
    // (without saying so): the router pools the connection, and must see it closed.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&conns);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            });
        }
    });
    let proxy = start_router(RouterOptions::default()).await;
    proxy.router.set_upstreams("web", vec![addr]);
    let client = client();
    for _ in 0..5 {
        let (status, body) = get(&client, proxy.addr, &host("web")).await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
        // Long enough for the upstream's close to have reached the router.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(conns.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_then_stops() {
    let proxy = start_router(RouterOptions::default()).await;
    let up = spawn_upstream(|_req| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Response::new(full("done"))
    })
    .await;
    proxy.router.set_upstreams("web", vec![up.addr]);

    let addr = proxy.addr;
    let request = tokio::spawn(async move { get(&client(), addr, &host("web")).await });
    wait_until("the request to reach the upstream", || {
        up.hits.load(Ordering::SeqCst) > 0
    })
    .await;
    proxy.shutdown.cancel();
    assert_eq!(
        request.await.unwrap(),
        (StatusCode::OK, Bytes::from("done"))
    );
    tokio::time::timeout(Duration::from_secs(5), proxy.served)
        .await
        .expect("serve returns once connections are done")
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn post_is_not_retried_once_sent() {
    // The upstream reads the request then drops the connection without answering: the
    // router must answer 502 rather than replay the POST on the other upstream.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rude = listener.local_addr().unwrap();
    let rude_hits = Arc::new(AtomicUsize::new(0));
    let hits = Arc::clone(&rude_hits);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            hits.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            drop(s);
        }
    });
    let other = named("other").await;
    let proxy = start_router(RouterOptions::default()).await;
    proxy.router.set_upstreams("web", vec![rude, other.addr]);

    let req = Request::post("/charge")
        .header(HOST, host("web"))
        .body(full("pay 10"))
        .unwrap();
    let (status, _, _) = send(&client(), proxy.addr, req).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(rude_hits.load(Ordering::SeqCst), 1);
    assert_eq!(other.hits.load(Ordering::SeqCst), 0, "POST was replayed");
}

#[tokio::test]
async fn a_get_the_upstream_drops_unanswered_goes_to_the_next() {
    // A process on its way out: it takes the connection, reads the request, and closes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dying = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
        }
    });
    let other = named("other").await;
    let proxy = start_router(RouterOptions::default()).await;
    proxy.router.set_upstreams("web", vec![dying, other.addr]);
    let client = client();
    for _ in 0..4 {
        let (status, body) = get(&client, proxy.addr, &host("web")).await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"other"[..]));
    }
}

/// One raw HTTP/1.1 exchange (the request says `Connection: close`): what came back.
async fn raw(proxy: SocketAddr, req: &str) -> String {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf))
        .await
        .expect("the router answers and closes")
        .unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn hosts_with_userinfo_or_bad_ports_are_400_and_absolute_form_uses_its_own_authority() {
    let proxy = start_router(RouterOptions::default()).await;
    let up = spawn_upstream(|req: Request<Incoming>| async move {
        let host = req.headers()[HOST].to_str().unwrap().to_string();
        Response::new(full(format!("host={host}")))
    })
    .await;
    proxy.router.set_upstreams("web", vec![up.addr]);
    proxy.router.set_upstreams("other", vec![up.addr]);
    for host in [
        format!("user@{}", host("web")),
        format!("user:pw@{}:80", host("web")),
        format!("{}:", host("web")),
        format!("{}:0", host("web")),
        format!("{}:65536", host("web")),
        format!("{}:http", host("web")),
    ] {
        let out = raw(
            proxy.addr,
            &format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 400"), "{host}: {out}");
    }
    let out = raw(
        proxy.addr,
        &format!(
            "GET http://u@{}/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            host("web"),
            host("web")
        ),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert_eq!(up.hits.load(Ordering::SeqCst), 0);
    // Routed by the target's authority, and the app sees that same one as Host.
    let out = raw(
        proxy.addr,
        &format!(
            "GET http://{}:8080/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            host("web"),
            host("other")
        ),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.ends_with(&format!("host={}:8080", host("web"))),
        "{out}"
    );
}

#[tokio::test]
async fn a_malformed_chunked_body_is_400() {
    let proxy = start_router(RouterOptions::default()).await;
    let up = echo().await;
    proxy.router.set_upstreams("web", vec![up.addr]);
    let out = raw(
        proxy.addr,
        &format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\nzz\r\nbad\r\n0\r\n\r\n",
            host("web")
        ),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
}

#[tokio::test]
async fn connections_past_the_cap_get_503_and_the_cap_frees_up() {
    let proxy = start_router(RouterOptions {
        max_connections: 4,
        max_per_address: 3,
        ..RouterOptions::default()
    })
    .await;
    let up = named("web").await;
    proxy.router.set_upstreams("web", vec![up.addr]);
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        host("web")
    );
    // Three idle connections from this address: the fourth from it is refused.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(proxy.addr).await.unwrap());
    }
    let out = raw(proxy.addr, &req).await;
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(out.contains("too many connections"), "{out}");
    // Another address still gets in, up to the overall cap (4); then no one does.
    let from = |ip: &str| {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        async move {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind(SocketAddr::new(ip, 0)).unwrap();
            sock.connect(proxy.addr).await.unwrap()
        }
    };
    let mut other = from("127.0.0.2").await;
    other.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    other.read_to_end(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    idle.push(from("127.0.0.2").await);
    let mut third = from("127.0.0.3").await;
    third.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    third.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    // One goes: a place frees up (once the router has seen it close).
    drop(idle.remove(0));
    let mut answered = String::new();
    for _ in 0..100 {
        answered = raw(proxy.addr, &req).await;
        if answered.starts_with("HTTP/1.1 200") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    assert!(answered.ends_with("web"));
}

#[tokio::test]
async fn a_chunked_upload_past_the_limit_gets_the_413_not_a_reset() {
    let proxy = start_router(RouterOptions::default()).await;
    // The app reads the whole body before it answers (so the limit is what answers).
    let up = spawn_upstream(|req: Request<Incoming>| async move {
        let n = req.into_body().collect().await.map(|b| b.to_bytes().len());
        Response::new(full(format!("got {n:?}")))
    })
    .await;
    proxy.router.set_upstreams("web", vec![up.addr]);
    proxy.router.set_policies(HashMap::from([(
        "web".to_string(),
        RoutePolicy::new(false, 0, 1024),
    )]));
    let head = format!(
        "POST /up HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        host("web")
    );
    // 640 KiB in 1 KiB chunks, sent in pieces over a while: well past the limit, and still
    // coming when the router has its answer ready (a server that stopped reading then
    // closes with unread bytes, which resets the connection under its answer).
    let piece = format!("400\r\n{}\r\n", "y".repeat(1024)).repeat(32);
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    let writer = tokio::spawn(async move {
        w.write_all(head.as_bytes()).await?;
        for _ in 0..20 {
            w.write_all(piece.as_bytes()).await?;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        w.write_all(b"0\r\n\r\n").await?;
        Ok::<_, std::io::Error>(w)
    });
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), r.read_to_end(&mut out))
        .await
        .expect("the router answers and closes")
        .expect("the answer, not a reset");
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("limit of 1024 bytes"), "{out}");
    writer.await.unwrap().expect("the whole body was taken");
    // A body within the limit still goes through.
    let req = Request::post("/up")
        .header(HOST, host("web"))
        .body(full("small"))
        .unwrap();
    let (status, _, body) = send(&client(), proxy.addr, req).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"got Ok(5)"[..]));
}

/// An upstream speaking raw HTTP/1.1, one shape of answer per path, keep-alive where the
/// shape allows it; counts connections.
async fn shapes_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&conns);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                    let pause = || tokio::time::sleep(Duration::from_millis(20));
                    let parts: Vec<&[u8]> = match path.as_str() {
                        "/continue" => vec![
                            b"HTTP/1.1 100 Continue\r\n\r\n",
                            b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhel",
                            b"lo world",
                        ],
                        "/chunked" => vec![
                            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhel",
                            b"lo\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n",
                            b"\r\n",
                        ],
                        "/head" => vec![b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n"],
                        "/304" => vec![b"HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\n\r\n"],
                        _ => vec![
                            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the close",
                        ],
                    };
                    for part in parts {
                        if s.write_all(part).await.is_err() {
                            return;
                        }
                        pause().await;
                    }
                    if path == "/close" {
                        return;
                    }
                }
            });
        }
    });
    (addr, conns)
}

#[tokio::test]
async fn upstream_answers_of_every_shape_come_through_and_keep_the_connection() {
    let proxy = start_router(RouterOptions::default()).await;
    let (addr, conns) = shapes_upstream().await;
    proxy.router.set_upstreams("web", vec![addr]);
    let client = client();
    let empty = || Empty::new().map_err(|never| match never {}).boxed();
    for round in 0..2 {
        let req = |method: &str, path: &str| {
            Request::builder()
                .method(method)
                .uri(path)
                .header(HOST, host("web"))
                .body(empty())
                .unwrap()
        };
        let (status, _, body) = send(&client, proxy.addr, req("GET", "/continue")).await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello world"[..]));
        let (status, headers, body) = send(&client, proxy.addr, req("GET", "/chunked")).await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello world"[..]));
        assert!(!headers.contains_key("x-trailer"));
        let (status, headers, body) = send(&client, proxy.addr, req("HEAD", "/head")).await;
        assert_eq!((status, body.len()), (StatusCode::OK, 0));
        assert_eq!(headers["content-length"], "1234");
        let (status, headers, body) = send(&client, proxy.addr, req("GET", "/304")).await;
        assert_eq!((status, body.len()), (StatusCode::NOT_MODIFIED, 0));
        assert_eq!(headers["etag"], "\"v1\"");
        // All of these on one upstream connection.
        assert_eq!(conns.load(Ordering::SeqCst), round + 1, "round {round}");
        // No length: the body runs until the upstream closes, and that connection is done.
        let (status, _, body) = send(&client, proxy.addr, req("GET", "/close")).await;
        assert_eq!(
            (status, &body[..]),
            (StatusCode::OK, &b"until the close"[..])
        );
    }
}
