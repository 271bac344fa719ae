//! Automatic certificates end to end, against a real ACMEv2 server with its own CA: Pebble
//! (Debian's package, run by `scripts/acme-server.sh`), whose DNS answers every name with
//! 127.0.0.1, so its HTTP-01 checks come to our router. One server, one app, one custom
//! domain: the certificate is issued and served over HTTPS (verified with Pebble's root by
//! curl), renewed by itself (Pebble issues 45-second certificates, so the renewal comes a
//! third before expiry) and the new one served without a restart; then Pebble is stopped
//! and the failing renewal shows in `certs`, `certs:auto`, `logs` and `apps:info`.

mod util;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use util::{lease_port, run, text, PortLease, Server};

const HOST: &str = "shop.example.test";
/// Seconds each certificate Pebble issues is valid: renewed after 30 s.
const VALIDITY: &str = "45";

/// Pebble and its DNS server, in their own process group (stopped together).
struct Pebble {
    child: Option<Child>,
    dir: PathBuf,
    mgmt_port: u16,
    acme_port: u16,
    log: Arc<Mutex<String>>,
}

fn require_pebble() {
    for tool in ["pebble", "pebble-challtestsrv", "openssl", "curl"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        // Never a skip: without the ACME server this test cannot say anything.
        assert!(
            found,
            "'{tool}' is missing: the ACME tests need a local ACME server; run scripts/acme-server.sh install (CI={})",
            std::env::var("CI").unwrap_or_default()
        );
    }
}

impl Pebble {
    /// Ports chosen up front (the server must know the directory URL when it starts), and
    /// leased for the test's life: a port found free with `bind(0)` and let go could be
    /// taken by another test before Pebble binds it.
    fn ports() -> [PortLease; 3] {
        [lease_port(), lease_port(), lease_port()]
    }

    /// Pebble checks HTTP-01 on `http_port`, TLS-ALPN-01 on `tls_port`.
    fn start(
        dir: &Path,
        (acme_port, mgmt_port, dns_port): (u16, u16, u16),
        http_port: u16,
        tls_port: u16,
    ) -> Pebble {
        require_pebble();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/acme-server.sh");
        let mut child = Command::new("bash")
            .arg(script)
            .arg("run")
            .arg(dir)
            .arg(http_port.to_string())
            .env("ACME_PORT", acme_port.to_string())
            .env("MGMT_PORT", mgmt_port.to_string())
            .env("DNS_PORT", dns_port.to_string())
            .env("CERT_VALIDITY", VALIDITY)
            .env("TLS_PORT", tls_port.to_string())
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log: Arc<Mutex<String>> = Arc::default();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let (log, ready_tx) = (log.clone(), ready_tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if line.contains("ACME directory available at") {
                        let _ = ready_tx.send(());
                    }
                    log.lock().unwrap().push_str(&format!("[pebble] {line}\n"));
                }
            });
        }
        let mut p = Pebble {
            child: Some(child),
            dir: dir.to_path_buf(),
            mgmt_port,
            acme_port,
            log,
        };
        if ready_rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let log = p.log();
            p.stop();
            panic!("pebble did not start:\n{log}");
        }
        p
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The root that issues the certificates (new at each start), saved for curl.
    fn root(&self) -> PathBuf {
        let path = self.dir.join("issuing-root.pem");
        let out = run(Command::new("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(self.dir.join("listener-ca.pem"))
            .arg(format!("https://127.0.0.1:{}/roots/0", self.mgmt_port))
            .arg("-o")
            .arg(&path));
        assert!(out.status.success(), "pebble root: {}", text(&out.stderr));
        path
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The whole group: the script, Pebble and its DNS server.
            // SAFETY: kill(2) on our own child's process group.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The serial of the certificate the router serves for `HOST` (SNI).
fn served_serial(https_port: u16) -> String {
    let out = run(Command::new("sh").arg("-c").arg(format!(
        "openssl s_client -connect 127.0.0.1:{https_port} -servername {HOST} </dev/null 2>/dev/null | openssl x509 -noout -serial"
    )));
    text(&out.stdout).trim().to_string()
}

/// curl over HTTPS, verifying the chain with `root` only; (exit code, body, stderr).
fn curl_verified(https_port: u16, root: &Path) -> (i32, String, String) {
    let out = run(Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(root)
        .arg("--resolve")
        .arg(format!("{HOST}:{https_port}:127.0.0.1"))
        .arg(format!("https://{HOST}:{https_port}/")));
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// Polls `cond` every second, up to `secs` (a bound on a hang, not a timing claim).
fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool, diag: impl Fn() -> String) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "gave up waiting for {what}:\n{}",
            diag()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn https_port(s: &Server) -> u16 {
    s.log()
        .lines()
        .find_map(|l| l.strip_prefix("[out] https listening on "))
        .and_then(|a| {
            a.split_whitespace()
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no https port in the server log:\n{}", s.log()))
}

#[test]
fn a_certificate_is_issued_served_renewed_and_a_failing_renewal_shows() {
    require_pebble();
    let scratch = tempfile::tempdir().unwrap();
    let pebble_dir = scratch.path().join("pebble");
    let leases = Pebble::ports();
    let ports = (leases[0].port, leases[1].port, leases[2].port);
    let directory = format!("https://127.0.0.1:{}/dir", ports.0);
    let ca = pebble_dir.join("listener-ca.pem");
    let s = Server::start_with(&[
        "--https",
        "127.0.0.1:0",
        "--acme-directory",
        &directory,
        "--acme-ca",
        ca.to_str().unwrap(),
        "--acme-email",
        "ops@example.test",
    ]);
    // TLS-ALPN-01 checks would go to a port nothing listens on: this order is HTTP-01's.
    let closed = lease_port();
    let mut pebble = Pebble::start(&pebble_dir, ports, s.http_port, closed.port);
    assert_eq!(pebble.acme_port, ports.0);
    let https = https_port(&s);
    let pebble_log = pebble.log.clone();
    let diag = || format!("server log:\n{}\n{}", s.log(), pebble_log.lock().unwrap());
    let admin = &s.admin;

    // An app with a custom domain, deployed.
    let repo = util::repo(&scratch.path().join("repo"));
    std::fs::write(repo.join("index.html"), "hello over tls\n").unwrap();
    util::git_local(&repo, &["add", "-A"]);
    util::git_local(&repo, &["commit", "-q", "-m", "app"]);
    s.git_ok(admin, &repo, &["push", &s.url("shop"), "main"]);
    s.ok(admin, &format!("domains:add shop {HOST}"));

    // Refused before any domain of its environment: nothing changes.
    let out = s.ssh(admin, "certs:auto:enable shop --env staging", None);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("domains:add shop HOST --env staging"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(s.ok(admin, "certs:auto shop").contains("off"));

    // Issued through Pebble (HTTP-01 answered by the router), served at once.
    let out = s.ok(admin, "certs:auto:enable shop");
    assert!(out.contains("certificate issued"), "{out}\n{}", diag());
    let root = pebble.root();
    let (code, body, err) = curl_verified(https, &root);
    assert_eq!(code, 0, "curl: {err}\n{}", diag());
    assert_eq!(body, "hello over tls\n");
    let first = served_serial(https);
    assert!(first.starts_with("serial="), "{first}");
    let status = s.ok(admin, "certs:auto shop");
    assert!(
        status.contains(HOST) && status.contains("next renewal"),
        "{status}"
    );
    // The account key and the certificate key are sealed at rest.
    let db = std::fs::read(s.data.join("magrathea.db")).unwrap_or_default();
    for needle in [&b"key_pkcs8"[..], b"PRIVATE KEY"] {
        assert!(
            !db.windows(needle.len()).any(|w| w == needle),
            "{} in the store",
            String::from_utf8_lossy(needle)
        );
    }

    // Renewed by itself before it expires; the new one is served without a restart.
    wait_for(
        180,
        "the renewed certificate",
        || {
            let now = served_serial(https);
            now.starts_with("serial=") && now != first
        },
        diag,
    );
    let (code, _, err) = curl_verified(https, &root);
    assert_eq!(code, 0, "curl after renewal: {err}\n{}", diag());
    let logs = s.ok(admin, "logs shop -n 200");
    assert!(
        logs.matches("certificate issued for shop.example.test")
            .count()
            >= 2,
        "{logs}"
    );

    // The ACME server goes away: the next renewal fails, and says so everywhere.
    pebble.stop();
    wait_for(
        180,
        "the failing renewal in certs:auto",
        || s.ok(admin, "certs:auto shop").contains("RENEWAL FAILING"),
        diag,
    );
    let status = s.ok(admin, "certs:auto shop");
    assert!(status.contains("next attempt"), "{status}");
    let certs = s.ok(admin, "certs shop");
    assert!(certs.contains("RENEWAL FAILING"), "{certs}");
    let info = s.ok(admin, "apps:info shop");
    assert!(info.contains("RENEWAL FAILING"), "{info}");
    let logs = s.ok(admin, "logs shop -n 200");
    println!("certs:\n{certs}\napps:info:\n{info}\nlogs:\n{logs}");
    assert!(
        logs.contains("certificate order for shop.example.test FAILED"),
        "{logs}"
    );

    // Off: no more orders; the renewal state is gone.
    s.ok(admin, "certs:auto:disable shop");
    assert!(s.ok(admin, "certs:auto shop").contains("off"));
}

/// TLS-ALPN-01: the CA's check is a handshake on the router's HTTPS port asking for
/// `acme-tls/1`; nothing listens where an HTTP-01 check would go. The challenge certificate
/// goes only to such a handshake, and the issued one is served after.
#[test]
fn tls_alpn_01_issues_through_the_https_port_alone() {
    require_pebble();
    let scratch = tempfile::tempdir().unwrap();
    let pebble_dir = scratch.path().join("pebble");
    let leases = Pebble::ports();
    let ports = (leases[0].port, leases[1].port, leases[2].port);
    // Without an HTTPS listener there is nothing to answer on: refused at start.
    let out = run(Command::new(util::bin())
        .args(["serve", "--data"])
        .arg(scratch.path())
        .args(["--acme-challenge", "tls-alpn-01"]));
    let err = text(&out.stderr);
    assert!(
        !out.status.success() && err.contains("give --https ADDR too"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let (https, closed) = (lease_port(), lease_port());
    let directory = format!("https://127.0.0.1:{}/dir", ports.0);
    let ca = pebble_dir.join("listener-ca.pem");
    let s = Server::start_with(&[
        "--https",
        &format!("127.0.0.1:{}", https.port),
        "--acme-directory",
        &directory,
        "--acme-ca",
        ca.to_str().unwrap(),
        "--acme-challenge",
        "tls-alpn-01",
    ]);
    let pebble = Pebble::start(&pebble_dir, ports, closed.port, https.port);
    assert_eq!(https_port(&s), https.port);
    let diag = || format!("server log:\n{}\n{}", s.log(), pebble.log());
    let admin = &s.admin;
    let repo = util::repo(&scratch.path().join("repo"));
    std::fs::write(repo.join("index.html"), "hello over tls-alpn\n").unwrap();
    util::git_local(&repo, &["add", "-A"]);
    util::git_local(&repo, &["commit", "-q", "-m", "app"]);
    s.git_ok(admin, &repo, &["push", &s.url("shop"), "main"]);
    s.ok(admin, &format!("domains:add shop {HOST}"));

    let out = s.ssh(admin, "certs:auto:enable shop", None);
    assert!(
        out.status.success() && text(&out.stdout).contains("certificate issued"),
        "{}{}\n{}",
        text(&out.stdout),
        text(&out.stderr),
        diag()
    );
    let (code, body, err) = curl_verified(https.port, &pebble.root());
    assert_eq!(code, 0, "curl: {err}\n{}", diag());
    assert_eq!(body, "hello over tls-alpn\n");
    // The order is over: an acme-tls/1 handshake for the host gets no certificate now.
    let out = run(Command::new("sh").arg("-c").arg(format!(
        "openssl s_client -connect 127.0.0.1:{} -servername {HOST} -alpn acme-tls/1 </dev/null 2>&1",
        https.port
    )));
    let said = text(&out.stdout);
    assert!(!said.contains("BEGIN CERTIFICATE"), "{said}");
}
