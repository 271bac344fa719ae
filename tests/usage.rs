//! Accounting, limits and the router's per-app policy end to end, on one server and one
//! app (`tests/fixtures/usage`: busybox httpd with a CGI that reads POST bodies): `usage`
//! figures that match a known load exactly, the access log in `logs --process router`,
//! an access list refusing a client address (127.0.0.2 against 127.0.0.1, and an address
//! named by a trusted proxy's X-Forwarded-For, ignored from another peer), maintenance on
//! and off with the repo's page, request rate limits per app and per client address and the
//! cap on requests in progress, a push refused by the disk quota with the figures (old
//! releases pruned first), the Prometheus endpoint scraped and parsed, and bad input
//! refused in one line with nothing changed.

mod util;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use util::*;

/// A connection to the router from `from` (a loopback address).
fn connect_from(port: u16, from: &str) -> std::net::TcpStream {
    let from: IpAddr = from.parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let std_stream = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(from, 0)).unwrap();
        let s = sock
            .connect(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .unwrap();
        s.into_std().unwrap()
    });
    let s = std_stream;
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Reads a whole response (the connection closes after it): (status, head, body).
fn response(mut s: std::net::TcpStream) -> (u16, String, Vec<u8>) {
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = text(&buf[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), buf[split + 4..].to_vec())
}

/// One HTTP/1.0 request to the router from `from`: (status, lowercase head, body).
fn exchange(
    port: u16,
    from: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = connect_from(port, from);
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: meter.localhost\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    response(s)
}

/// One HTTP/1.0 request to the router from `from`: (status, body).
fn request(port: u16, from: &str, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let (status, _, body) = exchange(port, from, method, path, body);
    (status, body)
}

fn get(port: u16, from: &str, path: &str) -> (u16, String) {
    let (status, body) = request(port, from, "GET", path, b"");
    (status, text(&body))
}

fn usage_json(s: &Server) -> serde_json::Value {
    serde_json::from_str(&s.ok(&s.admin, "usage meter --json")).unwrap()
}

fn one_line_error(s: &Server, args: &str, want: &str) {
    let out = s.ssh(&s.admin, args, None);
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "{args}: succeeded: {}",
        text(&out.stdout)
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{args}: {err}");
    assert!(
        err.starts_with("error") && err.contains(want),
        "{args}: {err}"
    );
}

/// `# TYPE` before every family, and every sample `name{labels} value` with a number.
fn parse_metrics(body: &str) -> Vec<(String, f64)> {
    let mut typed: Vec<String> = vec![];
    let mut samples = vec![];
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut w = rest.split_whitespace();
            typed.push(w.next().unwrap().to_string());
            assert!(
                matches!(w.next(), Some("counter" | "gauge" | "histogram")),
                "{line}"
            );
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect(line);
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        let name = series.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| typed.iter().any(|t| t == f))
            .unwrap_or(name);
        assert!(typed.iter().any(|t| t == family), "untyped: {line}");
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line}"
            );
        }
        samples.push((series.to_string(), value));
    }
    samples
}

fn metric(samples: &[(String, f64)], series: &str) -> f64 {
    samples
        .iter()
        .find(|(s, _)| s == series)
        .unwrap_or_else(|| panic!("no {series}"))
        .1
}

#[test]
fn usage_acl_maintenance_quota_and_metrics() {
    let s = Server::start_with(&["--metrics", "127.0.0.1:0", "--trusted-proxy", "127.0.0.9"]);
    let port = s.http_port;
    let dir = fixture_repo(&s.dir.path().join("src"), "usage");
    s.git_ok(&s.admin, &dir, &["push", &s.url("meter"), "main"]);

    // A known load: N pages, M misses, K posts of B bytes each.
    let (n, m, k, b) = (7u64, 3u64, 4u64, 1000usize);
    let mut bytes_out = 0u64;
    for _ in 0..n {
        let (status, body) = get(port, "127.0.0.1", "/");
        assert_eq!((status, body.as_str()), (200, "metered\n"));
        bytes_out += body.len() as u64;
    }
    for i in 0..m {
        let (status, body) = get(port, "127.0.0.1", &format!("/missing-{i}"));
        assert_eq!(status, 404);
        bytes_out += body.len() as u64;
    }
    for _ in 0..k {
        let (status, body) = request(port, "127.0.0.1", "POST", "/cgi-bin/count", &vec![b'x'; b]);
        assert_eq!((status, text(&body).trim()), (200, "1000"), "{}", s.log());
        bytes_out += body.len() as u64;
    }
    let u = usage_json(&s);
    assert_eq!(u["requests"], n + m + k, "{u}");
    assert_eq!(u["bytes_in"], k * b as u64, "{u}");
    assert_eq!(u["bytes_out"], bytes_out, "{u}");
    assert_eq!(u["status"]["2xx"], n + k, "{u}");
    assert_eq!(u["status"]["4xx"], m, "{u}");
    assert_eq!(u["status"]["5xx"], 0, "{u}");
    assert_eq!(u["envs"][0]["env"], "production", "{u}");
    assert!(u["disk"]["repo"].as_u64().unwrap() > 0, "{u}");
    assert!(u["disk"]["releases"].as_u64().unwrap() > 0, "{u}");
    // Asked of the node the app runs on: its unpacked release, its (empty) data dir.
    assert!(u["disk"]["node_releases"].as_u64().unwrap() > 0, "{u}");
    assert!(u["disk"]["data"].is_u64(), "{u}");
    assert_eq!(u["disk"]["unmeasured"], serde_json::json!([]), "{u}");
    let table = s.ok(&s.admin, "usage meter --since 1h");
    assert!(
        table.contains("production") && table.contains(&format!("{}", n + m + k)),
        "{table}"
    );
    let apps = s.ok(&s.admin, "apps");
    assert!(apps.contains("REQUESTS/24H"), "{apps}");
    let info = s.ok(&s.admin, "apps:info meter");
    assert!(
        info.contains(&format!("traffic:  {} requests", n + m + k)),
        "{info}"
    );
    // The access log, written in the background: one line per request.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logs = s.ok(&s.admin, "logs meter --process router -n 1000");
        let lines = logs
            .lines()
            .filter(|l| l.contains(" controller router: "))
            .count();
        if lines as u64 == n + m + k {
            assert!(logs.contains("POST /cgi-bin/count 200"), "{logs}");
            assert!(logs.contains("in=1000"), "{logs}");
            assert!(!logs.contains("-----> "), "only the router's lines: {logs}");
            let all = s.ok(&s.admin, "logs meter -n 1000");
            assert!(
                !all.contains(" controller router: "),
                "an access log of its own: {all}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "access log: {logs}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Access lists: deny one address; then allow only another.
    s.ok(&s.admin, "acl:deny meter 127.0.0.2");
    assert_eq!(get(port, "127.0.0.2", "/").0, 403);
    assert_eq!(get(port, "127.0.0.1", "/").0, 200);
    let before = s.ok(&s.admin, "acl meter --json");
    for (args, want) in [
        ("acl:deny meter 127.0.0.3/8", "host bits"),
        (
            "acl:allow meter 127.0.0.4 not-an-address",
            "not an address block",
        ),
        ("acl:allow meter 10.0.0.0/33", "not an address block"),
        ("acl:deny nosuchapp 127.0.0.3", "nosuchapp"),
        ("acl:remove meter 192.0.2.1", "not in the access list"),
    ] {
        one_line_error(&s, args, want);
    }
    assert_eq!(
        s.ok(&s.admin, "acl meter --json"),
        before,
        "nothing changed"
    );
    s.ok(&s.admin, "acl:allow meter 127.0.0.1");
    assert_eq!(get(port, "127.0.0.3", "/").0, 403);
    assert_eq!(get(port, "127.0.0.1", "/").0, 200);
    assert!(s.ok(&s.admin, "acl meter").contains("127.0.0.2/32"));
    s.ok(&s.admin, "acl:remove meter 127.0.0.1 127.0.0.2");
    assert_eq!(get(port, "127.0.0.2", "/").0, 200);
    behind_a_trusted_proxy(&s);

    // Maintenance, with the page from the repo.
    let out = s.ok(&s.admin, "maintenance:on meter");
    assert!(out.contains("maintenance.html"), "{out}");
    let (status, body) = get(port, "127.0.0.1", "/");
    assert_eq!(status, 503);
    assert!(body.contains("meter is being serviced"), "{body}");
    assert!(s
        .ok(&s.admin, "apps:info meter")
        .contains("maintenance: on"));
    s.ok(&s.admin, "maintenance:off meter");
    assert_eq!(get(port, "127.0.0.1", "/"), (200, "metered\n".to_string()));
    one_line_error(&s, "maintenance:on nosuchapp", "nosuchapp");

    rate_limits_and_the_cap(&s);

    // Limits: bad values change nothing.
    let before = s.ok(&s.admin, "limits meter --json");
    for (args, want) in [
        ("limits:set meter disk=lots", "not a size"),
        ("limits:set meter rate=10 memory=1", "unknown limit"),
        ("limits:set meter rate=0", "1 to 1000000"),
        ("limits:set meter rate=99999999999999999999", "1 to 1000000"),
        ("limits:set meter rate=5/fortnight", "not a rate"),
        ("limits:set meter rate=10 client-rate=5/0s", "1s to 1d"),
        ("limits:set meter conns=0", "1 to 1000000"),
        ("limits:set meter conns=many", "not a whole number"),
        ("limits:set meter rate", "not NAME=VALUE"),
        ("limits:unset meter bogus", "unknown limit"),
        ("usage meter --since yesterday", "--since"),
        ("usage nosuchapp", "nosuchapp"),
    ] {
        one_line_error(&s, args, want);
    }
    assert_eq!(
        s.ok(&s.admin, "limits meter --json"),
        before,
        "nothing changed"
    );

    // The disk quota: two more releases (so the first is neither live nor the rollback
    // target), then a quota just above what the app uses and a push of 2 MB that would
    // pass it.
    for i in 0..2 {
        commit(&dir, "README", &format!("{i}"), "another release");
        s.git_ok(&s.admin, &dir, &["push", &s.url("meter"), "main"]);
    }
    assert!(s.ok(&s.admin, "releases meter").contains("v1"));
    let used = usage_json(&s)["disk"]["total"].as_u64().unwrap();
    s.ok(
        &s.admin,
        &format!("limits:set meter disk={}K", used / 1024 + 512),
    );
    let live = git_local(&dir, &["rev-parse", "HEAD"]);
    // Incompressible (xorshift), so the pushed objects are as large as the file.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let noise: Vec<u8> = (0..2 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(dir.join("blob.bin"), &noise).unwrap();
    git_local(&dir, &["add", "-A"]);
    git_local(&dir, &["commit", "-q", "-m", "too big"]);
    let out = s.git(&s.admin, &dir, &["push", &s.url("meter"), "main"]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("disk quota exceeded: 'meter' would use"),
        "{err}"
    );
    assert!(err.contains("repo ") && err.contains("releases "), "{err}");
    let releases = s.ok(&s.admin, "releases meter");
    assert!(!releases.contains("v1 "), "v1 pruned first: {releases}");
    let remote = s.git_ok(&s.admin, &dir, &["ls-remote", &s.url("meter"), "main"]);
    assert!(
        text(&remote.stdout).starts_with(live.trim()),
        "the ref did not move"
    );
    assert_eq!(get(port, "127.0.0.1", "/").0, 200);

    // The Prometheus endpoint agrees with `usage`.
    let log = s.log();
    let maddr = log
        .lines()
        .find_map(|l| l.strip_prefix("[out] metrics listening on "))
        .expect("metrics address");
    let mport: u16 = maddr.rsplit(':').next().unwrap().parse().unwrap();
    let u = usage_json(&s);
    let (status, body) = http_get(mport, "metrics", "/metrics");
    assert_eq!(status, 200, "{body}");
    let samples = parse_metrics(&body);
    let l = "app=\"meter\",env=\"production\"";
    assert_eq!(
        metric(
            &samples,
            &format!("magrathea_router_requests_total{{{l},class=\"2xx\"}}")
        ),
        u["status"]["2xx"].as_f64().unwrap()
    );
    assert_eq!(
        metric(
            &samples,
            &format!("magrathea_router_response_bytes_total{{{l}}}")
        ),
        u["bytes_out"].as_f64().unwrap()
    );
    assert_eq!(
        metric(
            &samples,
            &format!("magrathea_router_request_duration_seconds_count{{{l}}}")
        ),
        u["requests"].as_f64().unwrap()
    );
    assert!(
        metric(&samples, "magrathea_builds_total{status=\"succeeded\"}") >= 3.0,
        "{body}"
    );
    assert_eq!(metric(&samples, "magrathea_nodes"), 1.0);
    assert_eq!(
        metric(&samples, "magrathea_node_environments{node=\"local\"}"),
        1.0
    );
    assert_eq!(http_get(mport, "metrics", "/other").0, 404);

    policies_per_environment(&s);

    // A later app of the same name starts from nothing: no figures, no policy, no quota,
    // no limits.
    s.ok(&s.admin, "acl:deny meter 127.0.0.2");
    s.ok(&s.admin, "maintenance:on meter");
    s.ok(
        &s.admin,
        "limits:set meter rate=1/h client-rate=1/h conns=1",
    );
    s.ok(&s.admin, "maintenance:on meter --env staging");
    s.ok(&s.admin, "apps:destroy meter --confirm meter");
    s.ok(&s.admin, "apps:create meter");
    assert_eq!(usage_json(&s)["requests"], 0);
    assert!(!s.ok(&s.admin, "acl meter --json").contains("127.0.0.2"));
    let limits: serde_json::Value =
        serde_json::from_str(&s.ok(&s.admin, "limits meter --json")).unwrap();
    for name in ["disk", "rate", "client_rate", "conns"] {
        assert!(limits[name].is_null(), "{limits}");
    }
    let info = s.ok(&s.admin, "apps:info meter");
    assert!(!info.contains("maintenance"), "{info}");
    s.git_ok(&s.admin, &dir, &["push", &s.url("meter"), "main"]);
    assert_eq!(get(port, "127.0.0.2", "/"), (200, "metered\n".to_string()));
    assert_eq!(get(port, "127.0.0.2", "/").0, 200, "no rate limit left");
    let u = usage_json(&s);
    assert_eq!(
        (u["requests"].as_u64(), u["status"]["2xx"].as_u64()),
        (Some(2), Some(2)),
        "{u}"
    );
}

/// The value of header `name` in a lowercase response head.
fn header<'a>(head: &'a str, name: &str) -> &'a str {
    head.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {name} in {head}"))
        .trim()
}

/// Request limits over a long window, so nothing depends on timing: past N requests the
/// next gets a 429 with `Retry-After`; a per-address limit holds back only that address;
/// the cap on requests in progress answers 503 while one request is held open (an upload
/// that has sent its head only) and lets the next in once it is over.
fn rate_limits_and_the_cap(s: &Server) {
    let port = s.http_port;
    let too_many = |from: &str, want: &str| {
        let (status, head, body) = exchange(port, from, "GET", "/", b"");
        assert_eq!(status, 429, "{from}: {head}");
        let wait: u64 = header(&head, "retry-after").parse().unwrap();
        assert!((1..=3600).contains(&wait), "{head}");
        assert!(text(&body).contains(want), "{}", text(&body));
    };
    let out = s.ok(&s.admin, "limits:set meter client-rate=2/1h");
    assert!(
        out.contains("2 requests an hour per client address"),
        "{out}"
    );
    for _ in 0..2 {
        assert_eq!(get(port, "127.0.0.1", "/").0, 200);
    }
    too_many("127.0.0.1", "takes 2 an hour from one address");
    assert_eq!(get(port, "127.0.0.2", "/").0, 200, "another address");
    s.ok(&s.admin, "limits:unset meter client-rate");
    assert_eq!(get(port, "127.0.0.1", "/").0, 200);

    s.ok(&s.admin, "limits:set meter rate=3/h");
    for from in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
        assert_eq!(get(port, from, "/").0, 200, "{from}");
    }
    for from in ["127.0.0.1", "127.0.0.4"] {
        too_many(from, "'meter' takes 3 an hour");
    }
    s.ok(&s.admin, "limits:unset meter rate");

    s.ok(&s.admin, "limits:set meter conns=1");
    let mut held = connect_from(port, "127.0.0.1");
    held.write_all(
        b"POST /cgi-bin/count HTTP/1.1\r\nHost: meter.localhost\r\nContent-Length: 1000\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    // The router asks for the body (100 Continue) once it has let the request in.
    let mut interim = Vec::new();
    let mut byte = [0u8; 1];
    while !interim.ends_with(b"\r\n\r\n") {
        held.read_exact(&mut byte).unwrap();
        interim.push(byte[0]);
    }
    assert!(interim.starts_with(b"HTTP/1.1 100"), "{}", text(&interim));
    let (status, head, body) = exchange(port, "127.0.0.2", "GET", "/", b"");
    assert_eq!(status, 503, "{head}");
    assert_eq!(header(&head, "retry-after"), "1");
    assert!(text(&body).contains("busy: 'meter' has 1 requests in progress"));
    held.write_all(&[b'x'; 1000]).unwrap();
    let (status, _, body) = response(held);
    // HTTP/1.1: the CGI's answer comes chunked.
    assert_eq!(status, 200);
    assert!(text(&body).contains("\r\n1000\n"), "{}", text(&body));
    assert_eq!(
        get(port, "127.0.0.2", "/").0,
        200,
        "the held request is over"
    );
    s.ok(&s.admin, "limits:unset meter conns");
}

/// `serve --trusted-proxy 127.0.0.9`: from that peer, the client is the rightmost
/// X-Forwarded-For entry outside the trusted blocks; from any other peer the header is not
/// believed. A bad block stops `serve` with one line.
fn behind_a_trusted_proxy(s: &Server) {
    let port = s.http_port;
    let via = |from: &str, xff: &str| {
        let mut c = connect_from(port, from);
        write!(
            c,
            "GET / HTTP/1.0\r\nHost: meter.localhost\r\nX-Forwarded-For: {xff}\r\n\r\n"
        )
        .unwrap();
        let (status, _, body) = response(c);
        (status, text(&body))
    };
    s.ok(&s.admin, "acl:deny meter 203.0.113.7");
    let (status, body) = via("127.0.0.9", "198.51.100.1, 203.0.113.7, 127.0.0.9");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("203.0.113.7 may not reach"), "{body}");
    // The address left of the client proves nothing; the client is allowed.
    assert_eq!(via("127.0.0.9", "203.0.113.7, 198.51.100.1").0, 200);
    // From a peer that is not trusted, the header is only appended to.
    assert_eq!(via("127.0.0.1", "203.0.113.7").0, 200);
    s.ok(&s.admin, "acl:remove meter 203.0.113.7");

    let out = run(Command::new(bin()).args([
        "serve",
        "--data",
        s.data.to_str().unwrap(),
        "--trusted-proxy",
        "10.0.0.1/8",
    ]));
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("host bits") && err.trim().lines().count() <= 3,
        "{err}"
    );
}

/// A GET for `host` from 127.0.0.2: (status, body).
fn get_host(port: u16, host: &str) -> (u16, String) {
    let mut c = connect_from(port, "127.0.0.2");
    write!(c, "GET / HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let (status, _, body) = response(c);
    (status, text(&body))
}

/// Maintenance, access lists and limits are per environment (`--env`, production by
/// default): staging's leave production alone, and the disk quota is the whole app's.
fn policies_per_environment(s: &Server) {
    let port = s.http_port;
    let (staging, production) = ("meter-staging.localhost", "meter.localhost");
    s.ok(&s.admin, "deploy meter v3 --env staging");
    assert_eq!(get_host(port, staging), (200, "metered\n".to_string()));
    let out = s.ok(&s.admin, "maintenance:on meter --env staging");
    assert!(out.contains("in staging"), "{out}");
    let (status, body) = get_host(port, staging);
    assert_eq!(status, 503);
    assert!(body.contains("meter is being serviced"), "{body}");
    assert_eq!(
        get_host(port, production).0,
        200,
        "production is not in maintenance"
    );
    let info = s.ok(&s.admin, "apps:info meter");
    assert!(info.contains("maintenance: on in staging"), "{info}");
    s.ok(&s.admin, "maintenance:off meter --env staging");
    assert_eq!(get_host(port, staging).0, 200);

    s.ok(&s.admin, "acl:deny meter 127.0.0.2 --env staging");
    assert_eq!(get_host(port, staging).0, 403);
    assert_eq!(get_host(port, production).0, 200);
    assert!(s.ok(&s.admin, "acl meter").contains("any address"));
    assert!(s
        .ok(&s.admin, "acl meter --env staging")
        .contains("127.0.0.2/32"));
    s.ok(&s.admin, "acl:remove meter 127.0.0.2 --env staging");
    assert_eq!(get_host(port, staging).0, 200);

    s.ok(&s.admin, "limits:set meter rate=1/h --env staging");
    assert_eq!(get_host(port, staging).0, 200);
    assert_eq!(get_host(port, staging).0, 429);
    assert_eq!(get_host(port, production).0, 200);
    let shown = s.ok(&s.admin, "limits meter --env staging");
    assert!(shown.contains("1 requests an hour"), "{shown}");
    assert!(!s.ok(&s.admin, "limits meter").contains("an hour"));
    let before = s.ok(&s.admin, "limits meter --env staging --json");
    for (args, want) in [
        (
            "limits:set meter disk=1G --env staging",
            "quota of the whole app",
        ),
        ("maintenance:on meter --env Bad", "environment"),
        ("acl:deny meter 10.0.0.1/8 --env staging", "host bits"),
    ] {
        one_line_error(s, args, want);
    }
    assert_eq!(
        s.ok(&s.admin, "limits meter --env staging --json"),
        before,
        "nothing changed"
    );
    s.ok(&s.admin, "limits:unset meter rate --env staging");
}
