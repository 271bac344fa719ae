//! A node's files and processes: real files under a temp root, real Docker with the tiny
//! stack (busybox). Every Docker test uses its own random instance id and removes every
//! container carrying it when it ends, pass or fail.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use magrathea::agent::error::AgentError;
use magrathea::agent::layout::NodeRoot;
use magrathea::agent::runtime::{self, ProcessSpec};
use magrathea::docker::Docker;
use magrathea::release::tarball::pack;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IMAGE: &str = "magrathea/stack-tiny:latest";
/// An app uid, as the controller gives them (see `isolation`).
const UID: u32 = magrathea::isolation::UID_BASE + 7;
const HTTPD: &str = "exec busybox httpd -f -p \"$PORT\" -h /app";

struct Rel {
    tarball: PathBuf,
    sha256: String,
    name: String,
    size: u64,
}

/// Packs a release the way the controller does: `app/<files>` + `manifest.json`.
fn make_release(work: &Path, version: u32, files: &[(&str, &str)]) -> Rel {
    let slug = work.join(format!("slug-{version}"));
    for (path, content) in files {
        let p = slug.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    fs::create_dir_all(&slug).unwrap();
    let manifest = serde_json::json!({ "app": "shop", "version": version, "processes": {} });
    let tarball = work.join(format!("v{version}.tar.gz"));
    let packed = pack(
        &slug,
        serde_json::to_vec(&manifest).unwrap().as_slice(),
        1_700_000_000,
        &tarball,
    )
    .unwrap();
    Rel {
        name: format!("v{version}-{}", &packed.sha256[..12]),
        sha256: packed.sha256,
        size: packed.size,
        tarball,
    }
}

fn receive(root: &NodeRoot, app: &str, rel: &Rel) -> Result<u64, AgentError> {
    root.receive(
        app,
        &rel.name,
        &rel.sha256,
        fs::File::open(&rel.tarball).unwrap(),
    )
}

/// Every entry under `dir`, relative, sorted (to prove nothing else was left behind).
fn tree(dir: &Path) -> Vec<String> {
    fn go(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            if e.file_type().unwrap().is_dir() {
                go(root, &p, out);
            }
        }
    }
    let mut out = vec![];
    go(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn receive_unpacks_a_verified_release_idempotently() {
    let t = tempfile::tempdir().unwrap();
    let root = NodeRoot::new(t.path().join("node"));
    let rel = make_release(t.path(), 1, &[("index.html", "<h1>hello</h1>\n")]);

    assert!(!root.has_release("shop", &rel.name));
    assert_eq!(receive(&root, "shop", &rel).unwrap(), rel.size);
    assert!(root.has_release("shop", &rel.name));
    let dir = root.release_dir("shop", &rel.name);
    assert_eq!(
        fs::read_to_string(dir.join("app/index.html")).unwrap(),
        "<h1>hello</h1>\n"
    );
    assert_eq!(root.manifest("shop", &rel.name).unwrap()["version"], 1);
    assert_eq!(root.releases("shop"), std::slice::from_ref(&rel.name));

    // Again: drained, Ok, nothing changed; no temp file left in the app dir.
    let before = tree(&root.app_dir("shop"));
    assert_eq!(receive(&root, "shop", &rel).unwrap(), rel.size);
    assert_eq!(tree(&root.app_dir("shop")), before);
    assert!(before
        .iter()
        .all(|p| !p.contains("/.") && !p.starts_with('.')));
}

#[test]
fn receive_refuses_a_wrong_digest_and_leaves_nothing() {
    let t = tempfile::tempdir().unwrap();
    let root = NodeRoot::new(t.path().join("node"));
    let rel = make_release(t.path(), 1, &[("index.html", "x")]);

    // A digest that matches the name but not the bytes.
    let wrong = format!("{}{}", &rel.sha256[..12], "0".repeat(52));
    let err = root
        .receive(
            "shop",
            &rel.name,
            &wrong,
            fs::File::open(&rel.tarball).unwrap(),
        )
        .unwrap_err();
    assert!(matches!(err, AgentError::DigestMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("send it again"), "{err}");

    // A truncated transfer with the right digest.
    let bytes = fs::read(&rel.tarball).unwrap();
    let err = root
        .receive("shop", &rel.name, &rel.sha256, &bytes[..bytes.len() / 2])
        .unwrap_err();
    assert!(matches!(err, AgentError::DigestMismatch { .. }), "{err:?}");

    // One byte changed in the middle: reported as what it is, with the size received, even
    // though the extractor met the damage first.
    let mut tampered = bytes.clone();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0x55;
    let err = root
        .receive("shop", &rel.name, &rel.sha256, &tampered[..])
        .unwrap_err();
    assert!(
        matches!(err, AgentError::DigestMismatch { size, .. } if size == bytes.len() as u64),
        "{err:?}"
    );

    // A name that does not belong to the digest.
    let other = format!("v1-{}", "f".repeat(12));
    let err = root
        .receive("shop", &other, &rel.sha256, &bytes[..])
        .unwrap_err();
    assert!(
        matches!(err, AgentError::NameDigestMismatch { .. }),
        "{err:?}"
    );

    assert!(!root.has_release("shop", &rel.name));
    assert!(root.releases("shop").is_empty());
    // Only the (empty) releases dir: no tarball, no partial tree.
    assert_eq!(tree(&root.app_dir("shop")), ["releases"]);
}

#[test]
fn hostile_names_are_refused_before_any_path_is_built() {
    let t = tempfile::tempdir().unwrap();
    let node = t.path().join("node");
    fs::create_dir(&node).unwrap();
    let root = NodeRoot::new(&node);
    let rel = make_release(t.path(), 1, &[("index.html", "x")]);
    let bytes = fs::read(&rel.tarball).unwrap();

    let bad_apps = ["", "..", "../x", "a/b", "/etc", "Shop", "x\n", "-x", "a b"];
    let bad_names = [
        "",
        "..",
        "current",
        "../../etc",
        "v1-../../../x",
        "v1-0123456789ab/..",
        "v1-0123456789AB",
        "v1-0123456789ab\n",
        "v-0123456789ab",
    ];
    for app in bad_apps {
        let err = root
            .receive(app, &rel.name, &rel.sha256, &bytes[..])
            .unwrap_err();
        assert!(matches!(err, AgentError::Name(_)), "{app:?}: {err:?}");
        assert!(err.to_string().contains("invalid app name"), "{err}");
        assert!(root.switch(app, &rel.name).is_err());
        assert!(root.manifest(app, &rel.name).is_err());
        assert!(root.gc(app, &[]).is_err());
        assert!(root.snapshot_data(app, "pre", UID).is_err());
        assert!(root.restore_data(app, "pre").is_err());
        assert!(root.ensure_data_dir(app, UID).is_err());
        assert!(!root.has_release(app, &rel.name));
        assert_eq!(root.current(app), None);
        assert!(root.releases(app).is_empty());
    }
    for name in bad_names {
        let err = root
            .receive("shop", name, &rel.sha256, &bytes[..])
            .unwrap_err();
        assert!(
            matches!(err, AgentError::ReleaseName(_)),
            "{name:?}: {err:?}"
        );
        assert!(!err.to_string().contains('\n'), "{err}");
        assert!(root.switch("shop", name).is_err());
        assert!(root.manifest("shop", name).is_err());
        assert!(!root.has_release("shop", name));
    }
    for sha in ["", "zz", &"g".repeat(64), &"a".repeat(63), "../../x"] {
        let err = root
            .receive("shop", &rel.name, sha, &bytes[..])
            .unwrap_err();
        assert!(matches!(err, AgentError::Digest(_)), "{sha:?}: {err:?}");
    }
    for label in ["", "..", "../data", "a/b", "X"] {
        assert!(root.snapshot_data("shop", label, UID).is_err(), "{label:?}");
        assert!(root.restore_data("shop", label).is_err(), "{label:?}");
    }
    // Nothing was created anywhere.
    assert!(tree(t.path()).iter().all(|p| !p.starts_with("node/")));
}

#[test]
fn switch_is_atomic_and_current_follows() {
    let t = tempfile::tempdir().unwrap();
    let root = NodeRoot::new(t.path().join("node"));
    let a = make_release(t.path(), 1, &[("index.html", "one")]);
    let b = make_release(t.path(), 2, &[("index.html", "two")]);
    receive(&root, "shop", &a).unwrap();
    receive(&root, "shop", &b).unwrap();

    assert_eq!(root.current("shop"), None);
    root.switch("shop", &a.name).unwrap();
    assert_eq!(root.current("shop"), Some(a.name.clone()));
    let current = root.app_dir("shop").join("current");
    assert!(fs::symlink_metadata(&current)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::read_to_string(current.join("app/index.html")).unwrap(),
        "one"
    );

    // A reader never sees `current` missing or pointing elsewhere while it flips.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (current, stop) = (current.clone(), stop.clone());
        let ok = [
            PathBuf::from("releases").join(&a.name),
            PathBuf::from("releases").join(&b.name),
        ];
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let target = fs::read_link(&current).expect("current vanished mid-switch");
                assert!(ok.contains(&target), "{target:?}");
                reads += 1;
            }
            reads
        })
    };
    for i in 0..400 {
        let name = if i % 2 == 0 { &b.name } else { &a.name };
        root.switch("shop", name).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    assert_eq!(root.current("shop"), Some(a.name.clone()));

    root.switch("shop", &b.name).unwrap();
    assert_eq!(root.current("shop"), Some(b.name.clone()));
    assert_eq!(
        fs::read_to_string(current.join("app/index.html")).unwrap(),
        "two"
    );

    // A release that is not here: refused, current unchanged.
    let missing = format!("v3-{}", "a".repeat(12));
    let err = root.switch("shop", &missing).unwrap_err();
    assert!(matches!(err, AgentError::NoRelease { .. }), "{err:?}");
    assert!(err.to_string().contains("send it first"), "{err}");
    assert_eq!(root.current("shop"), Some(b.name.clone()));
    // No temp symlinks left behind.
    let entries: Vec<_> = fs::read_dir(root.app_dir("shop"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(entries.is_empty(), "{entries:?}");
}

#[test]
fn gc_keeps_current_and_kept_releases() {
    let t = tempfile::tempdir().unwrap();
    let root = NodeRoot::new(t.path().join("node"));
    let rels: Vec<Rel> = [2, 9, 10, 11]
        .into_iter()
        .map(|v| make_release(t.path(), v, &[("f", &v.to_string())]))
        .collect();
    for r in &rels {
        receive(&root, "shop", r).unwrap();
    }
    let names: Vec<String> = rels.iter().map(|r| r.name.clone()).collect();
    // By version number, not as strings (v10 after v9).
    assert_eq!(root.releases("shop"), names);

    root.switch("shop", &names[1]).unwrap();
    let removed = root.gc("shop", &[names[3].clone()]).unwrap();
    assert_eq!(removed, [names[0].clone(), names[2].clone()]);
    assert_eq!(root.releases("shop"), [names[1].clone(), names[3].clone()]);

    // Even with nothing to keep, the current release stays.
    assert_eq!(root.gc("shop", &[]).unwrap(), [names[3].clone()]);
    assert_eq!(root.releases("shop"), [names[1].clone()]);
    assert_eq!(root.current("shop"), Some(names[1].clone()));
    assert!(root.has_release("shop", &names[1]));
    assert_eq!(
        tree(&root.app_dir("shop").join("releases"))
            .iter()
            .filter(|p| !p.contains('/'))
            .collect::<Vec<_>>(),
        [&names[1]]
    );
}

#[test]
fn data_dir_belongs_to_the_app_uid_and_never_to_a_later_app_of_the_same_name() {
    let t = tempfile::tempdir().unwrap();
    let root = NodeRoot::new(t.path().join("node"));
    let owner = |p: &Path| fs::symlink_metadata(p).unwrap().uid();
    // From before per-app uids: the app's own, owned by uid 1000; given to the app's uid.
    let data = root.data_dir("shop");
    fs::create_dir_all(data.join("uploads")).unwrap();
    fs::write(data.join("uploads/a.png"), "png").unwrap();
    std::os::unix::fs::lchown(&data, Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::lchown(data.join("uploads/a.png"), Some(1000), Some(1000)).unwrap();
    assert_eq!(root.ensure_data_dir("shop", UID).unwrap(), data);
    for p in [&data, &data.join("uploads"), &data.join("uploads/a.png")] {
        assert_eq!(owner(p), UID, "{}", p.display());
    }
    // An app destroyed and created again under the same name has a new uid: the old
    // app's data is moved aside, out of the new app's reach, and the new one starts empty.
    let next = UID + 100;
    assert_eq!(root.ensure_data_dir("shop", next).unwrap(), data);
    assert_eq!(owner(&data), next);
    assert_eq!(fs::read_dir(&data).unwrap().count(), 0);
    let aside = root.app_dir("shop").join(format!("data.uid-{UID}"));
    assert_eq!(
        fs::read_to_string(aside.join("uploads/a.png")).unwrap(),
        "png"
    );
    assert_eq!(owner(&aside), UID);
    // Its own dir is left as the app made it.
    fs::write(data.join("mine"), "x").unwrap();
    assert_eq!(root.ensure_data_dir("shop", next).unwrap(), data);
    assert!(data.join("mine").exists());
}

#[test]
fn snapshot_and_restore_round_trip() {
    let t = tempfile::tempdir().unwrap();
    let root = NodeRoot::new(t.path().join("node"));
    let data = root.ensure_data_dir("shop", UID).unwrap();
    let meta = fs::metadata(&data).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (UID, UID));

    fs::write(data.join("db.txt"), "v1 schema").unwrap();
    fs::create_dir(data.join("uploads")).unwrap();
    fs::write(data.join("uploads/a.png"), "png").unwrap();
    std::os::unix::fs::symlink("db.txt", data.join("link")).unwrap();
    std::os::unix::fs::chown(data.join("db.txt"), Some(UID), Some(UID)).unwrap();
    let original = tree(&data);

    root.snapshot_data("shop", "pre-v2", UID).unwrap();
    assert_eq!(root.snapshots("shop"), ["pre-v2"]);

    // A release phase "migrates" the data.
    fs::write(data.join("db.txt"), "v2 schema").unwrap();
    fs::remove_dir_all(data.join("uploads")).unwrap();
    fs::write(data.join("new.txt"), "new").unwrap();

    root.restore_data("shop", "pre-v2").unwrap();
    assert_eq!(tree(&data), original);
    assert_eq!(
        fs::read_to_string(data.join("db.txt")).unwrap(),
        "v1 schema"
    );
    assert_eq!(
        fs::read_to_string(data.join("uploads/a.png")).unwrap(),
        "png"
    );
    assert_eq!(
        fs::read_link(data.join("link")).unwrap(),
        Path::new("db.txt")
    );
    assert_eq!(fs::metadata(data.join("db.txt")).unwrap().uid(), UID);
    assert_eq!(fs::metadata(&data).unwrap().uid(), UID);
    // The snapshot survives a restore, so it can be restored again.
    assert_eq!(root.snapshots("shop"), ["pre-v2"]);
    // No temp trees left in the app dir.
    let app_entries: Vec<_> = fs::read_dir(root.app_dir("shop"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        app_entries.iter().all(|n| !n.starts_with('.')),
        "{app_entries:?}"
    );

    // Same label again replaces the snapshot.
    fs::write(data.join("db.txt"), "v3 schema").unwrap();
    root.snapshot_data("shop", "pre-v2", UID).unwrap();
    fs::write(data.join("db.txt"), "broken").unwrap();
    root.restore_data("shop", "pre-v2").unwrap();
    assert_eq!(
        fs::read_to_string(data.join("db.txt")).unwrap(),
        "v3 schema"
    );

    let err = root.restore_data("shop", "nope").unwrap_err();
    assert!(matches!(err, AgentError::NoSnapshot { .. }), "{err:?}");
    root.remove_snapshot("shop", "pre-v2").unwrap();
    assert!(root.snapshots("shop").is_empty());
}

#[tokio::test]
async fn health_check_reports_what_went_wrong_last() {
    // Refused: a port nobody listens on, held (bound, not listening) so that no other test
    // can start listening on it meanwhile.
    let (port, _held) = bound_not_listening();
    let ms = Duration::from_millis;
    let err = runtime::health_check(port, "/", ms(300), 2, ms(10))
        .await
        .unwrap_err();
    assert!(err.contains("connection refused"), "{err}");
    assert!(err.contains("2 attempts"), "{err}");

    // The default check: any answer below 500 means the app is up (a 404 too, as on Heroku,
    // where an app that answers is up). A path the app named (strict): 2xx or 3xx only, as
    // in Dokku's path checks; a 404 there means the check itself is wrong.
    for (status, strict, healthy) in [
        ("503 Service Unavailable", false, false),
        ("404 Not Found", false, true),
        ("404 Not Found", true, false),
        ("302 Found", true, true),
        ("200 OK", true, true),
    ] {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let resp = format!("HTTP/1.0 {status}\r\nContent-Length: 0\r\n\r\n");
        let server = tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let mut req = [0u8; 1024];
                let n = s.read(&mut req).await.unwrap();
                let req = String::from_utf8_lossy(&req[..n]).into_owned();
                assert!(req.starts_with("GET /health HTTP/1.0\r\n"), "{req}");
                assert!(req.contains("\r\nHost: localhost\r\n"), "{req}");
                s.write_all(resp.as_bytes()).await.unwrap();
            }
        });
        // A generous bound per attempt: the answer comes at once, but a loaded machine may
        // schedule this server late, and a timeout would replace the status in the message.
        let probe = runtime::Probe {
            path: "/health",
            timeout: Duration::from_secs(10),
            attempts: 3,
            interval: ms(10),
            initial_delay: Duration::ZERO,
            content: None,
            strict,
        };
        let res = runtime::check_health(runtime::loopback(port), &probe, || async { Ok(()) }).await;
        let code = &status[..3];
        match (healthy, strict) {
            (true, _) => res.unwrap(),
            (false, false) => {
                let err = res.unwrap_err();
                assert!(err.contains(&format!("status {code} (after")), "{err}");
            }
            (false, true) => {
                let err = res.unwrap_err();
                assert!(
                    err.contains(&format!(
                        "status {code} (the health check path must answer 2xx or 3xx)"
                    )),
                    "{err}"
                );
            }
        }
        server.abort();
    }

    // Accepts but never answers: a timeout.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let err = runtime::health_check(port, "/", ms(200), 1, ms(10))
        .await
        .unwrap_err();
    assert!(err.contains("no answer within 0.2s"), "{err}");
    drop(l);

    let err = runtime::health_check(port, "/a b\r\n", ms(200), 1, ms(10))
        .await
        .unwrap_err();
    assert!(err.contains("must start with '/'"), "{err}");
}

// ---- Docker ----

/// Removes every container of this test's instance when dropped (also on panic).
struct Instance(String);

impl Instance {
    fn new() -> Instance {
        Instance(format!("t{}", magrathea::keys::random_hex(5)))
    }
    fn containers(&self) -> Vec<String> {
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter"])
            .arg(format!("label=magrathea.instance={}", self.0))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(String::from)
            .collect()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let ids = self.containers();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v"])
                .args(&ids)
                .output();
        }
        // And the app networks it made, one by one (dockerd refuses a prune while
        // another test's prune runs).
        let ls = Command::new("docker")
            .args(["network", "ls", "-q", "--filter"])
            .arg(format!("label=magrathea.instance={}", self.0))
            .output();
        if let Ok(ls) = ls {
            for id in String::from_utf8_lossy(&ls.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["network", "rm", id]).output();
            }
        }
    }
}

async fn docker() -> Docker {
    Docker::connect()
        .await
        .expect("Docker is needed for these tests (scripts/docker-up.sh)")
}

fn spec(inst: &Instance, app: &str, rel: &Rel, ptype: &str, index: u32, cmd: &str) -> ProcessSpec {
    ProcessSpec {
        instance: inst.0.clone(),
        app: app.into(),
        release: rel.name.clone(),
        ptype: ptype.into(),
        index,
        command: cmd.into(),
        env: vec![],
        image: IMAGE.into(),
        memory: 64 << 20,
        cpu: 0.0,
        generation: 0,
        uid: UID,
        publish_ip: None,
    }
}

/// A loopback port held by a socket that is bound but does not listen: connecting to it is
/// refused, and no one else can take the port while the socket lives.
fn bound_not_listening() -> (u16, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2)/bind(2)/getsockname(2) on a socket this function owns, with
    // sockaddr_in buffers of the right size.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let owned = std::os::fd::OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let rc = libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len);
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        let mut got: libc::sockaddr_in = std::mem::zeroed();
        let mut got_len = len;
        let rc = libc::getsockname(fd, &mut got as *mut _ as *mut libc::sockaddr, &mut got_len);
        assert_eq!(rc, 0, "getsockname: {}", std::io::Error::last_os_error());
        (u16::from_be(got.sin_port), owned)
    }
}

/// Docker's events for one container as they happen (`docker events`), known to be
/// listening before `watch` returns: an exec in the container has shown up.
struct Events {
    child: std::process::Child,
    rx: std::sync::mpsc::Receiver<String>,
}

impl Events {
    fn watch(container: &str) -> Events {
        use std::io::BufRead;
        let mut child = Command::new("docker")
            .args(["events", "--filter", &format!("container={container}")])
            .args(["--format", "{{.Action}} {{json .Actor.Attributes}}"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let events = Events { child, rx };
        let t = std::time::Instant::now();
        'ready: loop {
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "docker events never showed an exec in {container}"
            );
            let exec = Command::new("docker")
                .args(["exec", container, "true"])
                .output()
                .unwrap();
            assert!(exec.status.success(), "{exec:?}");
            // An exec made before the subscription is not shown: try again.
            while let Ok(l) = events.rx.recv_timeout(Duration::from_secs(2)) {
                if l.starts_with("exec_die ") {
                    break 'ready;
                }
            }
        }
        events
    }

    /// Every event up to and including the first `action` (two minutes at most).
    fn until(&self, action: &str) -> Vec<String> {
        let mut seen = vec![];
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) => {
                    let done = l.starts_with(&format!("{action} "));
                    seen.push(l);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!("no {action} event: {seen:?}"),
            }
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.0 GET; the whole response.
async fn get(port: u16, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// Waits for a file the container writes (two minutes at most: a bound on a hang).
async fn read_eventually(path: &Path) -> String {
    for _ in 0..1200 {
        if let Ok(s) = fs::read_to_string(path) {
            if s.ends_with('\n') {
                return s;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} never appeared", path.display());
}

#[tokio::test]
async fn web_process_serves_its_release_confined_as_the_app_uid() {
    let d = docker().await;
    let inst = Instance::new();
    let t = tempfile::tempdir().unwrap();
    let root = NodeRoot::new(t.path().join("node"));
    let rel = make_release(
        t.path(),
        3,
        &[
            ("index.html", "<h1>served from the release</h1>\n"),
            (
                ".profile.d/greet.sh",
                "export GREETING='hi from profile.d'\n",
            ),
        ],
    );
    receive(&root, "shop", &rel).unwrap();

    // Quotes and `$(...)` in a config var stay data: nothing splices it into a shell.
    // /app is the dyno's own: writable (new files, existing files, subdirectories), over
    // a release that stays as it was.
    let cmd = "id -u > /data/uid; id -g >> /data/uid; \
               if touch /app/x && echo more >> /app/index.html && mkdir /app/.profile.d/sub; \
               then echo rw; else echo ro; fi > /data/app-mount 2>&1; \
               echo \"$GREETING|$MAGRATHEA_APP|$MAGRATHEA_RELEASE|$MAGRATHEA_PROCESS|$HOME|$DATA_DIR|$TRICKY|$DYNO\" > /data/env; \
               ".to_string()
        + HTTPD;
    let mut s = spec(&inst, "shop", &rel, "web", 1, &cmd);
    s.env = vec![("TRICKY".into(), "$(touch /data/pwned) \"'".into())];
    let r = runtime::start(&d, &root, &s).await.unwrap();
    assert_eq!(
        r.container,
        format!("mg-{}-shop-{}-web-1", inst.0, rel.name)
    );
    assert_eq!((r.ptype.as_str(), r.index), ("web", 1));

    runtime::health_check(
        r.port,
        "/",
        Duration::from_secs(2),
        480,
        Duration::from_millis(250),
    )
    .await
    .unwrap();
    let resp = get(r.port, "/index.html").await;
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    // Its own write to the file, over the release's content.
    assert!(
        resp.ends_with("<h1>served from the release</h1>\nmore\n"),
        "{resp}"
    );

    let data = root.data_dir("shop");
    assert_eq!(
        read_eventually(&data.join("uid")).await,
        format!("{UID}\n{UID}\n")
    );
    assert_eq!(read_eventually(&data.join("app-mount")).await, "rw\n");
    assert_eq!(
        read_eventually(&data.join("env")).await,
        format!(
            "hi from profile.d|shop|{}|web.1|/app|/data|$(touch /data/pwned) \"'|web.1\n",
            rel.name
        )
    );
    // The writes stayed in the process's own layer: the release is untouched, and another
    // process of it starts from the release as it was.
    let released = root.release_dir("shop", &rel.name).join("app");
    assert_eq!(
        fs::read_to_string(released.join("index.html")).unwrap(),
        "<h1>served from the release</h1>\n"
    );
    assert!(!released.join("x").exists());
    let second = spec(
        &inst,
        "shop",
        &rel,
        "worker",
        1,
        "if [ -e /app/x ]; then echo seen; else echo fresh; fi > /data/second; exec sleep 300",
    );
    let r2 = runtime::start(&d, &root, &second).await.unwrap();
    assert_eq!(read_eventually(&data.join("second")).await, "fresh\n");
    let scratch = root.app_dir("shop").join("scratch");
    assert_eq!(
        fs::read_dir(&scratch).unwrap().count(),
        2,
        "one per process"
    );
    runtime::stop(&d, &r2.container, Duration::from_secs(5)).await;
    assert!(!scratch.join(&r2.container).exists(), "removed with it");
    assert!(!data.join("pwned").exists());
    assert_eq!(fs::metadata(data.join("uid")).unwrap().uid(), UID);

    // The confinement asked of Docker.
    let info = d
        .raw()
        .inspect_container(
            &r.container,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap();
    let cfg = info.config.unwrap();
    assert_eq!(cfg.user.as_deref(), Some(format!("{UID}:{UID}").as_str()));
    let labels = cfg.labels.unwrap();
    assert_eq!(labels["magrathea.port"], r.port.to_string());
    assert_eq!(labels["magrathea.process"], "web");
    let env = cfg.env.unwrap();
    assert!(env.contains(&format!("PORT={}", r.port)));
    let hc = info.host_config.unwrap();
    // The app's own network; the port published on loopback only (no other address given).
    assert_eq!(
        hc.network_mode,
        Some(magrathea::isolation::network_name(&inst.0, UID))
    );
    let bindings = hc.port_bindings.clone().unwrap();
    let b = bindings[&format!("{}/tcp", r.port)].clone().unwrap();
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0].host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(b[0].host_port, Some(r.port.to_string()));
    assert_eq!(hc.cap_drop, Some(vec!["ALL".to_string()]));
    assert_eq!(hc.security_opt, Some(vec!["no-new-privileges".to_string()]));
    assert_eq!(hc.pids_limit, Some(magrathea::isolation::PROCESS_PIDS));
    assert_eq!(hc.memory, Some(64 << 20));

    // A login user of the host (uid 1000, as every app ran before) cannot read the
    // process's environment (its config values), nor can another app's uid.
    let pid = info.state.as_ref().and_then(|s| s.pid).unwrap();
    for uid in [1000, UID + 1] {
        let out = Command::new("setpriv")
            .args(["--reuid", &uid.to_string(), "--regid", &uid.to_string()])
            .args(["--clear-groups", "cat", &format!("/proc/{pid}/environ")])
            .output()
            .unwrap();
        assert!(!out.status.success(), "uid {uid} read the environ");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "{out:?}"
        );
    }
    // A uid outside the app range, or a host account's, is refused before anything runs.
    for bad in [0, 1000, magrathea::isolation::UID_BASE] {
        let mut s = spec(&inst, "shop", &rel, "web", 2, "true");
        s.uid = bad;
        let err = runtime::start(&d, &root, &s).await.unwrap_err();
        assert!(
            err.to_string().contains(&format!("app uid {bad} ")),
            "{err}"
        );
    }
    let rp = hc.restart_policy.unwrap();
    assert_eq!(rp.maximum_retry_count, Some(5));
    assert_eq!(rp.name.unwrap().to_string(), "on-failure");
    let log = hc.log_config.unwrap();
    assert_eq!(log.typ.as_deref(), Some("json-file"));
    let log_cfg = log.config.unwrap();
    assert_eq!(
        (log_cfg["max-size"].as_str(), log_cfg["max-file"].as_str()),
        ("10m", "3")
    );

    // docker-init passes SIGTERM on, so stopping does not wait out the grace period: the
    // process ends by the SIGTERM (exit 143), and Docker never has to send its SIGKILL.
    // Read from Docker's events, not the clock (a loaded machine is slow either way).
    let events = Events::watch(&r.container);
    runtime::stop(&d, &r.container, Duration::from_secs(60)).await;
    let seen = events.until("destroy");
    assert!(
        seen.iter()
            .any(|e| e.starts_with("die ") && e.contains("\"exitCode\":\"143\"")),
        "{seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|e| e.starts_with("kill ") && e.contains("\"signal\":\"9\"")),
        "{seen:?}"
    );
    assert!(inst.containers().is_empty());
    assert!(runtime::list(&d, &inst.0, None).await.unwrap().is_empty());
    assert_eq!(
        fs::read_dir(&scratch).unwrap().count(),
        0,
        "no scratch left"
    );
}

#[tokio::test]
async fn process_that_exits_fails_its_health_check_clearly() {
    let d = docker().await;
    let inst = Instance::new();
    let t = tempfile::tempdir().unwrap();
    let root = NodeRoot::new(t.path().join("node"));
    let rel = make_release(t.path(), 1, &[("index.html", "x")]);
    receive(&root, "shop", &rel).unwrap();

    let s = spec(
        &inst,
        "shop",
        &rel,
        "web",
        1,
        "echo 'missing module'; exit 3",
    );
    let r = runtime::start(&d, &root, &s).await.unwrap();
    let err = runtime::health_check(
        r.port,
        "/",
        Duration::from_millis(500),
        4,
        Duration::from_millis(250),
    )
    .await
    .unwrap_err();
    // Refused while the container is up; while Docker restarts it, the published port leads
    // nowhere and the connection is never answered. Either way the message says why.
    assert!(
        err.contains("connection refused (nothing listens on $PORT: did the process exit")
            || err.contains(
                "no connection within 0.2s (nothing answers on $PORT: did the process exit?"
            ),
        "{err}"
    );
    assert!(err.contains("after 4 attempts"), "{err}");
    assert!(
        err.contains(&format!("on port 127.0.0.1:{}:", r.port)),
        "{err}"
    );

    // Docker restarts it (on-failure); list says so: its restart count goes up (a state
    // other than "running" alone would also pass for a container that just exited).
    let t0 = std::time::Instant::now();
    let procs = loop {
        let procs = runtime::list(&d, &inst.0, Some("shop")).await.unwrap();
        assert_eq!(procs.len(), 1);
        if procs[0].restarts >= 1 {
            break procs;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "never restarted: {procs:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(procs[0].ptype, "web");

    runtime::stop(&d, &r.container, Duration::from_secs(1)).await;
    assert!(inst.containers().is_empty());
}

#[tokio::test]
async fn list_shows_exactly_the_running_processes() {
    let d = docker().await;
    let inst = Instance::new();
    let other = Instance::new();
    let t = tempfile::tempdir().unwrap();
    let root = NodeRoot::new(t.path().join("node"));
    let rel = make_release(t.path(), 1, &[("index.html", "x")]);
    receive(&root, "shop", &rel).unwrap();
    receive(&root, "blog", &rel).unwrap();

    let mut started = vec![];
    for (app, ptype, index, cmd) in [
        ("shop", "web", 1, HTTPD),
        ("shop", "web", 2, HTTPD),
        ("shop", "worker", 1, "exec sleep 300"),
        ("blog", "web", 1, HTTPD),
    ] {
        let s = spec(&inst, app, &rel, ptype, index, cmd);
        started.push(runtime::start(&d, &root, &s).await.unwrap());
    }
    // Same app on another instance sharing the engine: not ours.
    let s = spec(&other, "shop", &rel, "web", 1, HTTPD);
    let theirs = runtime::start(&d, &root, &s).await.unwrap();

    let shop = runtime::list(&d, &inst.0, Some("shop")).await.unwrap();
    let got: Vec<_> = shop
        .iter()
        .map(|p| (p.ptype.as_str(), p.index, p.container.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("web", 1, started[0].container.as_str()),
            ("web", 2, started[1].container.as_str()),
            ("worker", 1, started[2].container.as_str()),
        ]
    );
    for (p, r) in shop.iter().zip(&started) {
        assert_eq!(p.state, "running", "{p:?}");
        assert_eq!(
            (p.app.as_str(), p.release.as_str()),
            ("shop", rel.name.as_str())
        );
        assert_eq!(p.port, r.port);
        assert_eq!(p.restarts, 0);
        assert!(p.started_at.starts_with("20"), "{p:?}");
    }
    assert_eq!(runtime::list(&d, &inst.0, None).await.unwrap().len(), 4);
    let theirs_list = runtime::list(&d, &other.0, None).await.unwrap();
    assert_eq!(theirs_list.len(), 1);
    assert_eq!(theirs_list[0].container, theirs.container);

    runtime::stop(&d, &started[1].container, Duration::from_secs(5)).await;
    let shop = runtime::list(&d, &inst.0, Some("shop")).await.unwrap();
    let names: Vec<_> = shop.iter().map(|p| p.container.clone()).collect();
    assert_eq!(
        names,
        [started[0].container.clone(), started[2].container.clone()]
    );

    // Starting the same process again replaces the old container instead of failing.
    let s = spec(&inst, "shop", &rel, "web", 1, HTTPD);
    let again = runtime::start(&d, &root, &s).await.unwrap();
    assert_eq!(again.container, started[0].container);
    assert_eq!(
        runtime::list(&d, &inst.0, Some("shop"))
            .await
            .unwrap()
            .len(),
        2
    );

    for r in runtime::list(&d, &inst.0, None).await.unwrap() {
        runtime::stop(&d, &r.container, Duration::from_secs(5)).await;
    }
    runtime::stop(&d, &theirs.container, Duration::from_secs(5)).await;
    assert!(inst.containers().is_empty());
    assert!(other.containers().is_empty());
}

#[tokio::test]
async fn run_once_streams_output_and_returns_the_exit_code() {
    let d = docker().await;
    let inst = Instance::new();
    let t = tempfile::tempdir().unwrap();
    let root = NodeRoot::new(t.path().join("node"));
    let rel = make_release(t.path(), 1, &[("index.html", "x")]);
    receive(&root, "shop", &rel).unwrap();

    let run = |cmd: &str, timeout: Duration| {
        let s = spec(&inst, "shop", &rel, "release", 1, cmd);
        let (d, root) = (d.clone(), root.clone());
        async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel(64);
            let res = runtime::run_once(&d, &root, &s, tx, timeout).await;
            let mut lines = vec![];
            while let Some(l) = rx.recv().await {
                lines.push(l);
            }
            (res, lines)
        }
    };
    let minute = Duration::from_secs(60);

    let (res, lines) = run(
        "echo hello; echo oops >&2; printf 'no newline'; id -u > /data/migrated; exit 7",
        minute,
    )
    .await;
    assert_eq!(res.unwrap(), 7);
    // stdout and stderr are separate pipes: their relative order is not kept.
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(sorted, ["hello", "no newline", "oops"], "{lines:?}");
    assert!(lines.iter().position(|l| l == "hello") < lines.iter().position(|l| l == "no newline"));
    assert_eq!(
        fs::read_to_string(root.data_dir("shop").join("migrated")).unwrap(),
        format!("{UID}\n")
    );
    assert!(inst.containers().is_empty(), "run_once left a container");

    let (res, lines) = run("echo hello", minute).await;
    assert_eq!(res.unwrap(), 0);
    assert_eq!(lines, ["hello"]);
    // A release command gets a dyno of its own: writable /app, its name, a port.
    let (res, lines) = run(
        "touch /app/release.test && echo \"$DYNO $HOME ${PORT:+port}\"",
        minute,
    )
    .await;
    assert_eq!(res.unwrap(), 0, "{lines:?}");
    assert_eq!(lines, ["release.1 /app port"]);
    assert!(!root
        .release_dir("shop", &rel.name)
        .join("app/release.test")
        .exists());
    assert_eq!(
        fs::read_dir(root.app_dir("shop").join("scratch"))
            .unwrap()
            .count(),
        0,
        "its scratch dir went with it"
    );
    // One-off containers never show up as processes.
    assert!(runtime::list(&d, &inst.0, None).await.unwrap().is_empty());

    let (res, _) = run("echo started; sleep 60", Duration::from_secs(2)).await;
    let err = res.unwrap_err();
    assert!(matches!(err, AgentError::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains("within 2.0s"), "{err}");
    assert!(
        inst.containers().is_empty(),
        "timed-out run left a container"
    );

    // A release that is not on the node, an image that is not there.
    let mut s = spec(&inst, "shop", &rel, "release", 1, "true");
    s.release = format!("v9-{}", "b".repeat(12));
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    let err = runtime::run_once(&d, &root, &s, tx.clone(), minute)
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::NoRelease { .. }), "{err:?}");
    let mut s = spec(&inst, "shop", &rel, "release", 1, "true");
    s.image = "magrathea/no-such-stack:latest".into();
    let err = runtime::run_once(&d, &root, &s, tx, minute)
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::NoImage(_)), "{err}");
    assert!(inst.containers().is_empty());
}
