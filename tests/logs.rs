//! `logs` end to end: real agents, Docker, ssh and git. Process output from every node and
//! the controller's build and deploy events, merged; kept past a release's retirement;
//! followed across deploys until the client goes away.

mod util;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use util::*;

/// Prints a boot line with its release, then serves (and logs requests to stderr).
const WEB: &str = "web: mkdir -p /tmp/w && echo hi > /tmp/w/index.html && echo \"booted $MAGRATHEA_RELEASE\" && exec busybox httpd -f -v -p $PORT -h /tmp/w\n";

fn app_repo(dir: &Path) -> std::path::PathBuf {
    let dir = repo(dir);
    std::fs::write(dir.join("Procfile"), WEB).unwrap();
    commit(&dir, "README", "one", "first");
    dir
}

/// Containers of the node with this root (by its instance label).
fn containers(root: &Path) -> std::collections::BTreeSet<String> {
    node_containers(root).into_iter().collect()
}

/// `logs` output once it holds `needle`: a process's line reaches Docker's log a moment
/// after the process wrote it, which may be after its deploy was done (two minutes at
/// most).
fn logs_with(s: &Server, key: &Key, cmd: &str, needle: &str) -> String {
    let t = Instant::now();
    loop {
        let out = s.ok(key, cmd);
        if out.contains(needle) {
            return out;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "no {needle:?} in `{cmd}`:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn one_node(s: &Server) -> Agent {
    let a = Agent::start(s, "n1");
    s.ok(&s.admin, &format!("nodes:add n1 {}", a.addr));
    // Only the added nodes: the built-in one stays a node until removed.
    s.ok(&s.admin, "nodes:remove local");
    a
}

fn assert_one_line_error(out: &std::process::Output, what: &str) {
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "{what}: succeeded: {}",
        text(&out.stdout)
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{what}: {err}");
    assert!(
        err.starts_with("error") || err.starts_with("access denied"),
        "{what}: {err}"
    );
}

#[test]
fn logs_keep_the_previous_release_and_tag_every_line() {
    let s = Server::start();
    let _n1 = one_node(&s);
    let dir = app_repo(&s.dir.path().join("src"));
    s.git_ok(&s.admin, &dir, &["push", &s.url("logshop"), "main"]);
    commit(&dir, "README", "two", "second");
    s.git_ok(&s.admin, &dir, &["push", &s.url("logshop"), "main"]);
    assert_eq!(s.get("logshop", "/"), (200, "hi\n".to_string()));

    // All of it: how many lines the health probes add (httpd -v logs each) varies with the
    // machine's pace, and a tail could cut the first build's lines off.
    let out = logs_with(
        &s,
        &s.admin,
        "logs logshop -n 1000",
        " n1 web.1 v2: booted v2-",
    );
    let lines: Vec<&str> = out.lines().collect();
    let find = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{out}"))
    };
    // v1's processes were retired by v2's deploy, yet their lines are still there.
    let v1 = find(" n1 web.1 v1: booted v1-");
    let v2 = find(" n1 web.1 v2: booted v2-");
    let build1 = find(" controller build v1: ");
    let deploy2 = find(" controller deploy v2: ");
    assert!(
        build1 < v1 && v1 < deploy2 && v1 < v2,
        "out of order:\n{out}"
    );
    // Every line: time, source, process, release.
    for l in &lines {
        let mut parts = l.splitn(4, ' ');
        let t = parts.next().unwrap();
        assert!(t.len() == 24 && t.ends_with('Z') && t.contains('T'), "{l}");
        assert!(parts.next().is_some() && parts.next().is_some(), "{l}");
    }
    let mut sorted = lines.clone();
    sorted.sort_by_key(|l| l.split(' ').next().unwrap().to_string());
    assert_eq!(sorted, lines, "not in time order");

    // Filters.
    let only_v1 = s.ok(&s.admin, "logs logshop --release v1");
    assert!(only_v1.contains("web.1 v1: booted"), "{only_v1}");
    assert!(!only_v1.contains(" v2: "), "{only_v1}");
    let web = s.ok(&s.admin, "logs logshop --process web");
    assert!(
        web.contains("web.1 v2: booted") && !web.contains("controller"),
        "{web}"
    );
    let ctl = s.ok(&s.admin, "logs logshop --node controller");
    assert!(
        ctl.contains("controller deploy v2") && !ctl.contains(" n1 "),
        "{ctl}"
    );
    let n1 = s.ok(&s.admin, "logs logshop --node n1");
    assert!(
        n1.contains(" n1 web.1 v2") && !n1.contains("controller"),
        "{n1}"
    );
    let two = s.ok(&s.admin, "logs logshop -n 2");
    assert_eq!(two.lines().count(), 2, "{two}");
    let recent = s.ok(&s.admin, "logs logshop --since 1h");
    assert!(recent.contains("booted"), "{recent}");
    let future = s.ok(&s.admin, "logs logshop --since 2999-01-01T00:00:00Z");
    assert_eq!(future, "", "{future}");
}

#[test]
fn logs_follow_across_a_deploy_and_stop_with_the_client() {
    let s = Server::start();
    let mut n1 = one_node(&s);
    let dir = app_repo(&s.dir.path().join("src"));
    s.git_ok(&s.admin, &dir, &["push", &s.url("logfollow"), "main"]);

    let mut child = Command::new("ssh")
        .args(s.ssh_args(&s.admin))
        .arg("git@127.0.0.1")
        .arg("logs logfollow -f")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let sink = seen.clone();
    let reader = std::thread::spawn(move || {
        for l in stdout.lines().map_while(Result::ok) {
            sink.lock().unwrap().push(l);
        }
    });
    let wait_for = |needle: &str| {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(120) {
            if seen.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "no {needle:?} in followed output:\n{}\nserver log:\n{}",
            seen.lock().unwrap().join("\n"),
            s.log()
        );
    };
    wait_for("web.1 v1: booted v1-");

    commit(&dir, "README", "two", "second");
    s.git_ok(&s.admin, &dir, &["push", &s.url("logfollow"), "main"]);
    // The build, the deploy and the new release's process, all as they happen.
    wait_for("controller build v2: ");
    wait_for("controller deploy v2: ");
    wait_for("n1 web.1 v2: booted v2-");
    // A request is logged by the app (busybox httpd -v, on stderr) and followed too.
    // Wait for the app's own line, not just any: the deploy's last lines may still be
    // arriving when the request is made.
    let before = seen.lock().unwrap().len();
    assert_eq!(s.get("logfollow", "/").0, 200);
    let request_line = |l: &String| l.contains(" n1 web.1 v2: ") && !l.contains(": booted ");
    let start = Instant::now();
    while !seen.lock().unwrap()[before..].iter().any(request_line)
        && start.elapsed() < Duration::from_secs(120)
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let after: Vec<String> = seen.lock().unwrap()[before..].to_vec();
    assert!(
        after.iter().any(request_line),
        "request not followed: {after:?}"
    );

    // The node's agent restarts (its processes keep running): the follower reconnects and
    // picks up new output, without repeating what it already sent.
    n1.restart();
    let before = seen.lock().unwrap().len();
    let start = Instant::now();
    loop {
        assert_eq!(s.get("logfollow", "/").0, 200);
        if seen.lock().unwrap()[before..]
            .iter()
            .any(|l| l.contains(" n1 web.1 v2: "))
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "nothing followed after the node restarted:\n{}\nserver log:\n{}",
            seen.lock().unwrap().join("\n"),
            s.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // The client goes away: the stream stops and leaves nothing behind (no container
    // that was not there before; one may go meanwhile, as v1's are retired).
    let running = containers(&n1.root);
    signal(child.id(), libc::SIGTERM);
    let _ = child.wait();
    reader.join().unwrap();
    let start = Instant::now();
    while !s.log().contains("client went away; stream stopped") {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "server did not notice:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let all = seen.lock().unwrap().join("\n");
    assert_eq!(all.matches("web.1 v1: booted").count(), 1, "{all}");
    assert_eq!(all.matches("web.1 v2: booted").count(), 1, "{all}");
    let out = s.ok(&s.admin, "logs logfollow -n 5");
    assert_eq!(out.lines().count(), 5, "{out}");
    let left: Vec<String> = containers(&n1.root).difference(&running).cloned().collect();
    assert!(left.is_empty(), "containers the stream left: {left:?}");
    // The audit trail has the followed command.
    let audit = s.ok(&s.admin, "audit logfollow");
    assert!(audit.contains("logs logfollow -f"), "{audit}");
}

#[test]
fn viewers_may_read_logs_and_bad_input_is_one_line() {
    let s = Server::start();
    let dir = app_repo(&s.dir.path().join("src"));
    s.git_ok(&s.admin, &dir, &["push", &s.url("logview"), "main"]);
    let viewer = s.key("viewer");
    s.add_key(&viewer, "user");
    let stranger = s.key("stranger");
    s.add_key(&stranger, "user");
    s.ok(&s.admin, "access:grant logview viewer viewer");

    let out = logs_with(&s, &viewer, "logs logview", "web.1 v1: booted v1-");
    assert!(out.contains("controller build v1: "), "{out}");
    let denied = s.ssh(&stranger, "logs logview", None);
    assert_one_line_error(&denied, "stranger");
    assert!(
        text(&denied.stderr).contains("access denied"),
        "{}",
        text(&denied.stderr)
    );

    for bad in [
        "logs nope",
        "logs logview -n abc",
        "logs logview --release zz",
        "logs logview --since yesterday",
        "logs logview --process Web",
        "logs logview --node n9",
        "logs logview --env NOPE",
        "logs",
    ] {
        let out = s.ssh(&s.admin, bad, None);
        assert_one_line_error(&out, bad);
    }
    // Config values never reach the event log.
    s.ok(&s.admin, "config:set logview GREETING=s3cret-Zebra-4242");
    let out = s.ok(&s.admin, "logs logview -n 1000");
    assert!(out.contains("controller deploy v2"), "{out}");
    assert!(!out.contains("s3cret-Zebra-4242"), "{out}");
    let events = std::fs::read_to_string(s.data.join("logs").join("logview.log")).unwrap();
    assert!(!events.contains("s3cret-Zebra-4242"));
    let audit = s.ok(&s.admin, "audit logview");
    assert!(audit.contains("logs logview"), "{audit}");
}
