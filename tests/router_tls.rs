//! The router in front of a real app: custom domains, HTTPS with a given certificate (a
//! test CA made here with rcgen), HTTP/2, the HTTPS redirect and HSTS, the body limit
//! (declared, and chunked: cut at the limit before the app gets more),
//! WebSockets over HTTP and HTTPS, the SNI table following a new environment's default
//! host, and routes surviving a restart. One server and one app
//! (a WebSocket echo app on the bookworm stack, `tests/fixtures/websocket`) for all of it.
//! Test hosts resolve to loopback through curl's `--resolve` and the client's own SNI.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use util::*;

const HOST: &str = "www.shop.test";
/// What the app's greeting says.
const GREETING: &str = "hello from the websocket app";

/// A test CA, and bundles it signs.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl Ca {
    fn new() -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "magrathea test ca");
        let pem = p.self_signed(&key).unwrap().pem();
        Ca {
            issuer: rcgen::Issuer::new(p, key),
            pem,
        }
    }

    /// (leaf + CA chain, the leaf's key), as PEM; an expired one was valid in 2020 only.
    fn issue(&self, names: &[&str], expired: bool) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2020, 12, 31);
        }
        let leaf = p.signed_by(&key, &self.issuer).unwrap();
        (format!("{}{}", leaf.pem(), self.pem), key.serialize_pem())
    }
}

/// curl with `args`; (stdout, stderr, success).
fn curl(args: &[&str]) -> (String, String, bool) {
    let out = run(Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args));
    (text(&out.stdout), text(&out.stderr), out.status.success())
}

/// curl over HTTPS to `host` on the router, trusting the test CA.
fn https(s: &Server, ca: &Path, host: &str, extra: &[&str], path: &str) -> (String, String, bool) {
    let resolve = format!("{host}:{}:127.0.0.1", s.https_port);
    let url = format!("https://{host}:{}{path}", s.https_port);
    let mut args = vec!["--cacert", ca.to_str().unwrap(), "--resolve", &resolve];
    args.extend_from_slice(extra);
    args.push(&url);
    curl(&args)
}

/// curl over plain HTTP with `Host: host`.
fn http(s: &Server, host: &str, extra: &[&str], path: &str) -> (String, String, bool) {
    let h = format!("Host: {host}");
    let url = format!("http://127.0.0.1:{}{path}", s.http_port);
    let mut args = vec!["-H", &h];
    args.extend_from_slice(extra);
    args.push(&url);
    curl(&args)
}

fn refused(s: &Server, cmd: &str, stdin: Option<&str>) -> String {
    let out = s.ssh(&s.admin, cmd, stdin);
    assert!(
        !out.status.success(),
        "{cmd} should be refused: {}",
        text(&out.stdout)
    );
    let err = text(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    err
}

fn tls_client(ca_pem: &str, host: &str, port: u16) -> impl Read + Write {
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

#[test]
fn custom_domains_over_https_http2_websockets_and_redirects() {
    require("curl");
    let mut s = Server::start_with(&["--https", "127.0.0.1:0"]);
    let app = fixture_repo(&s.dir.path().join("shop"), "websocket");
    s.git_ok(&s.admin, &app, &["push", &s.url("shop"), "main"]);
    s.ok(&s.admin, "apps:create other");

    // Domains: exact and wildcard; a host belongs to one app; the default host stays.
    s.ok(
        &s.admin,
        &format!("domains:add shop {HOST} *.shop-wild.test"),
    );
    let err = refused(&s, &format!("domains:add other {HOST}"), None);
    assert!(err.contains("already belongs to another app"), "{err}");
    let err = refused(&s, "domains:add other shop.localhost", None);
    assert!(err.contains("is under localhost"), "{err}");
    let err = refused(&s, "domains:add other bad_host.test", None);
    assert!(err.contains("invalid host"), "{err}");
    let listed = s.ok(&s.admin, "domains shop");
    for h in ["shop.localhost", HOST, "*.shop-wild.test"] {
        assert!(listed.contains(h), "{listed}");
    }
    for host in [HOST, "api.shop-wild.test", "shop.localhost"] {
        let (body, err, ok) = http(&s, host, &[], "/");
        assert!(ok && body.contains(GREETING), "{host}: {body} {err}");
    }
    let (body, _, _) = http(
        &s,
        "other.shop-wild.test.nope",
        &["-o", "/dev/null", "-w", "%{http_code}"],
        "/",
    );
    assert_eq!(body, "404");

    // What the app is told over plain HTTP.
    let (headers, _, _) = http(&s, HOST, &[], "/headers");
    for want in [
        "x-forwarded-for: 127.0.0.1",
        "x-real-ip: 127.0.0.1",
        "x-forwarded-proto: http\n",
        "x-forwarded-host: www.shop.test",
    ] {
        assert!(headers.contains(want), "{want}: {headers}");
    }
    assert!(
        headers
            .lines()
            .any(|l| l.starts_with("x-request-id: ") && l.len() > 20),
        "{headers}"
    );
    assert_eq!(
        ws_echo(
            TcpStream::connect(("127.0.0.1", s.http_port)).unwrap(),
            HOST,
            "/ws",
            "hi"
        ),
        "echo: hi"
    );

    let ca = Ca::new();
    let ca_path = s.dir.path().join("ca.pem");
    std::fs::write(&ca_path, &ca.pem).unwrap();
    certificates_are_checked(&s, &ca);

    // HTTPS with the given certificate, HTTP/1.1 and HTTP/2.
    let (body, err, ok) = https(&s, &ca_path, HOST, &[], "/");
    assert!(ok && body.contains(GREETING), "{body} {err}\n{}", s.log());
    let (headers, _, _) = https(&s, &ca_path, HOST, &[], "/headers");
    assert!(headers.contains("x-forwarded-proto: https"), "{headers}");
    let (version, err, ok) = https(
        &s,
        &ca_path,
        HOST,
        &["--http2", "-o", "/dev/null", "-w", "%{http_version}"],
        "/",
    );
    assert!(ok && version == "2", "{version} {err}");
    let (version, _, _) = https(
        &s,
        &ca_path,
        HOST,
        &["--http1.1", "-o", "/dev/null", "-w", "%{http_version}"],
        "/",
    );
    assert_eq!(version, "1.1");
    // A host without a certificate gets no handshake, not another host's certificate.
    let (_, err, ok) = https(&s, &ca_path, "api.shop-wild.test", &[], "/");
    assert!(!ok, "{err}");
    assert_eq!(
        ws_echo(
            tls_client(&ca.pem, HOST, s.https_port),
            HOST,
            "/ws",
            "over tls"
        ),
        "echo: over tls"
    );

    default_hosts_follow_environments(&s, &ca, &ca_path);
    redirect_hsts_and_body_limit(&s, &ca_path);

    // Domains, settings and certificates come back with the server (its routes as soon
    // as the node has answered).
    s.stop();
    s.spawn();
    let mut tries = 0;
    let (body, err) = loop {
        let (body, err, ok) = https(&s, &ca_path, HOST, &[], "/");
        tries += 1;
        if (ok && body.contains(GREETING)) || tries == 100 {
            break (body, err);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(
        body.contains(GREETING),
        "after a restart: {body} {err}\n{}",
        s.log()
    );
    let (code, _, _) = http(&s, HOST, &["-o", "/dev/null", "-w", "%{http_code}"], "/");
    assert_eq!(code, "308");
    s.ok(&s.admin, "domains:clear shop");
    let (code, _, _) = http(&s, HOST, &["-o", "/dev/null", "-w", "%{http_code}"], "/");
    assert_eq!(code, "404");
}

/// certs:add refuses what cannot serve the app, in one line, keeping nothing; takes a good
/// bundle.
fn certificates_are_checked(s: &Server, ca: &Ca) {
    let (chain, key) = ca.issue(&[HOST], false);
    let (_, other_key) = ca.issue(&[HOST], false);
    let err = refused(s, "certs:add shop", Some(&format!("{chain}{other_key}")));
    assert!(err.contains("does not belong to the certificate"), "{err}");
    let (old_chain, old_key) = ca.issue(&[HOST], true);
    let err = refused(s, "certs:add shop", Some(&format!("{old_chain}{old_key}")));
    assert!(err.contains("expired on 2020-12-31"), "{err}");
    let (elsewhere, elsewhere_key) = ca.issue(&["www.elsewhere.test"], false);
    let err = refused(
        s,
        "certs:add shop",
        Some(&format!("{elsewhere}{elsewhere_key}")),
    );
    assert!(err.contains("matches none of shop's domains"), "{err}");
    let err = refused(s, "certs:add shop", Some(&chain));
    assert!(err.contains("no private key"), "{err}");
    assert!(s.ok(&s.admin, "certs shop").starts_with("no certificates"));

    let out = s.ssh(&s.admin, "certs:add shop", Some(&format!("{chain}{key}")));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = text(&out.stdout);
    assert!(out.contains("serving www.shop.test"), "{out}");
    let listed = s.ok(&s.admin, "certs shop");
    assert!(
        listed.contains("given") && listed.contains(HOST),
        "{listed}"
    );
    // The key is sealed at rest: its PEM body is nowhere in the store.
    let body_line = key.lines().nth(1).unwrap();
    for f in ["magrathea.db", "magrathea.db-wal"] {
        if let Ok(bytes) = std::fs::read(s.data.join(f)) {
            assert!(
                !text(&bytes).contains(body_line),
                "{f} holds the key in the clear"
            );
        }
    }
}

fn redirect_hsts_and_body_limit(s: &Server, ca_path: &Path) {
    s.ok(
        &s.admin,
        "routing:set shop --force-https on --hsts 300 --max-body 1K",
    );
    let (out, _, _) = http(
        s,
        HOST,
        &["-o", "/dev/null", "-w", "%{http_code} %{redirect_url}"],
        "/a?b=1",
    );
    assert_eq!(out, format!("308 https://{HOST}:{}/a?b=1", s.https_port));
    // ACME's HTTP-01 path is never redirected.
    let (code, _, _) = http(
        s,
        HOST,
        &["-o", "/dev/null", "-w", "%{http_code}"],
        "/.well-known/acme-challenge/x",
    );
    assert_eq!(code, "200");
    let (headers, _, _) = https(s, ca_path, HOST, &["-D", "-", "-o", "/dev/null"], "/");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("strict-transport-security: max-age=300"),
        "{headers}"
    );
    let big = "x".repeat(2048);
    for version in ["--http1.1", "--http2"] {
        let (code, err, _) = https(
            s,
            ca_path,
            HOST,
            &[
                version,
                "--data-binary",
                &big,
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ],
            "/echo",
        );
        assert_eq!(code, "413", "{version}: {err}");
    }
    let (body, _, _) = https(s, ca_path, HOST, &["--data-binary", "small"], "/echo");
    assert_eq!(body, "got 5 bytes\n");
    chunked_bodies_are_cut_at_the_limit(s, ca_path);
    let shown = s.ok(&s.admin, "domains shop");
    assert!(
        shown.contains("force-https on, hsts max-age=300, max-body 1.0 KB"),
        "{shown}"
    );
}

/// A chunked body (no Content-Length to refuse up front) past the 1K limit: the client gets
/// a 413, and the app sees at most the limit and never the end of the body.
fn chunked_bodies_are_cut_at_the_limit(s: &Server, ca_path: &Path) {
    let ca = std::fs::read_to_string(ca_path).unwrap();
    let post = |chunks: usize| {
        let mut req = format!(
            "POST /echo HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        for _ in 0..chunks {
            req += &format!("200\r\n{}\r\n", "y".repeat(512));
        }
        req += "0\r\n\r\n";
        let mut tls = tls_client(&ca, HOST, s.https_port);
        tls.write_all(req.as_bytes()).unwrap();
        let mut out = Vec::new();
        // The router may close without TLS's close_notify once it has answered.
        let _ = tls.read_to_end(&mut out);
        text(&out)
    };
    let small = post(1);
    assert!(
        small.starts_with("HTTP/1.1 200") && small.ends_with("got 512 bytes\n"),
        "{small}"
    );
    assert_eq!(https(s, ca_path, HOST, &[], "/chunked").0, "complete 512\n");
    let big = post(6);
    assert!(big.starts_with("HTTP/1.1 413"), "{big}");
    assert!(big.contains("limit of 1024 bytes"), "{big}");
    // The app learns the body was cut once the router has closed that connection.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (seen, _, _) = https(s, ca_path, HOST, &[], "/chunked");
        if let Some(n) = seen.trim().strip_prefix("cut ") {
            let n: usize = n.parse().unwrap();
            assert!(n <= 1024, "the app got {n} bytes past a 1K limit");
            break;
        }
        assert!(
            !seen.starts_with("complete 3072"),
            "the app got the whole body: {seen}"
        );
        assert!(std::time::Instant::now() < deadline, "{seen}\n{}", s.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A certificate naming an environment's default host (`APP-ENV.DOMAIN`) answers for it
/// once that environment has a route (its first deploy), not before.
fn default_hosts_follow_environments(s: &Server, ca: &Ca, ca_path: &Path) {
    let staging = "shop-staging.localhost";
    let (chain, key) = ca.issue(&[HOST, staging], false);
    let out = s.ssh(&s.admin, "certs:add shop", Some(&format!("{chain}{key}")));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (_, err, ok) = https(s, ca_path, staging, &[], "/");
    assert!(!ok, "no staging yet, no handshake: {err}");
    s.ok(&s.admin, "deploy shop v1 --env staging");
    // The table is rebuilt in the background as the route appears.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (body, err, ok) = https(s, ca_path, staging, &[], "/");
        if ok {
            assert!(body.contains(GREETING), "{body}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{staging}: {err}\n{}",
            s.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let listed = s.ok(&s.admin, "certs shop");
    assert!(listed.contains(staging), "{listed}");
}
