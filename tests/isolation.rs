//! Tenants are isolated: two apps (the `probe` fixture, on the bookworm stack) whose build,
//! release command, web process and `run` report who they run as and what they can reach.
//! One server for every check: the Docker-heavy part of the suite stays small.

mod util;

use std::process::Command;

use serde_json::Value;
use util::*;

const UID_BASE: u64 = magrathea::isolation::UID_BASE as u64;

/// The probe a build printed (`remote: PROBE {json}`).
fn build_probe(push_stderr: &str) -> Value {
    let line = push_stderr
        .lines()
        .find_map(|l| l.split_once("PROBE ").map(|(_, j)| j))
        .unwrap_or_else(|| panic!("no probe in the push output:\n{push_stderr}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

fn uid_of(s: &Server, app: &str) -> u64 {
    let info: Value = serde_json::from_str(&s.ok(&s.admin, &format!("apps:info {app} --json")))
        .expect("apps:info --json");
    info["uid"].as_u64().expect("uid")
}

/// The app's web.1 container on the built-in node.
fn web_container(s: &Server, app: &str) -> String {
    let app_label = format!("magrathea.app={app}");
    let ids = labelled_containers(&s.data.join("node"), &[&app_label, "magrathea.process=web"]);
    let id = ids.into_iter().next();
    id.unwrap_or_else(|| panic!("no web container for {app}"))
}

fn inspect(container: &str, format: &str) -> String {
    let out = run(Command::new("docker").args(["inspect", "-f", format, container]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

/// The host's own IPv4 addresses other than loopback (a container reaching one of them
/// reaches the host, not the network).
fn host_ipv4s() -> Vec<String> {
    let out = run(Command::new("ip").args(["-4", "-o", "addr", "show"]));
    text(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|a| a.split('/').next())
        .filter(|a| !a.starts_with("127."))
        .map(String::from)
        .collect()
}

/// What every container of an app must show: the app's uid and gid and no other group, no
/// capability at all, no-new-privileges, the pids limit, no raw or packet socket.
fn assert_confined(what: &str, p: &Value, uid: u64, pids: i64) {
    assert_eq!(p["uid"], uid, "{what}: {p}");
    assert_eq!(p["gid"], uid, "{what}: {p}");
    let groups = p["groups"].as_array().unwrap();
    assert!(groups.iter().all(|g| g == uid), "{what}: {p}");
    assert_eq!(p["cap_eff"], "0000000000000000", "{what}: {p}");
    assert_eq!(p["cap_bnd"], "0000000000000000", "{what}: {p}");
    assert_eq!(p["no_new_privs"], "1", "{what}: {p}");
    assert_eq!(p["pids_max"], pids.to_string(), "{what}: {p}");
    for sock in ["packet_socket", "raw_socket"] {
        let r = p[sock].as_str().unwrap();
        assert!(r.starts_with("denied"), "{what}: {sock}: {p}");
    }
}

/// Where each probe must find nothing: another app's published port on loopback, the
/// host's addresses and its own network's gateway, and that app's container directly.
fn assert_reaches_no_other_app(what: &str, p: &Value) {
    let connect = p["connect"].as_object().unwrap();
    assert!(!connect.is_empty(), "{what}: no targets probed: {p}");
    for (target, r) in connect {
        let r = r.as_str().unwrap();
        assert!(!r.starts_with("open"), "{what} reached {target}: {r}");
    }
    // Its own network namespace: loopback and its bridge port, nothing of the host's.
    assert_eq!(
        p["interfaces"],
        serde_json::json!(["eth0", "lo"]),
        "{what}: {p}"
    );
}

fn iptables(args: &[&str]) -> bool {
    run(Command::new("iptables").arg("-w").args(args))
        .status
        .success()
}

/// The gap dockerd opens on every network creation: its `FORWARD -j
/// DOCKER-ISOLATION-STAGE-1` jump deleted. Dropped, the jump is back (unless dockerd put it
/// back first).
struct DockerGap;

const DOCKER_JUMP: [&str; 3] = ["FORWARD", "-j", "DOCKER-ISOLATION-STAGE-1"];

impl DockerGap {
    fn open() -> DockerGap {
        iptables(&[&["-D"], &DOCKER_JUMP[..]].concat());
        DockerGap
    }
}

impl Drop for DockerGap {
    fn drop(&mut self) {
        if !iptables(&[&["-C"], &DOCKER_JUMP[..]].concat()) {
            iptables(&[&["-I"], &DOCKER_JUMP[..]].concat());
        }
    }
}

/// Magrathea's own rules for one bridge removed while this lives: what enters from it and
/// what leaves by it (a connection to it needs both: its replies enter from it).
struct Unguarded(String);

impl Unguarded {
    fn rules(bridge: &str) -> [Vec<&str>; 2] {
        [
            vec![
                "MAGRATHEA-ISOLATION-1",
                "-i",
                bridge,
                "!",
                "-o",
                bridge,
                "-j",
            ]
            .into_iter()
            .chain(["MAGRATHEA-ISOLATION-2"])
            .collect(),
            vec!["MAGRATHEA-ISOLATION-2", "-o", bridge, "-j", "DROP"],
        ]
    }

    fn open(bridge: &str) -> Unguarded {
        for rule in Unguarded::rules(bridge) {
            let del = [&["-t", "mangle", "-D"][..], &rule].concat();
            assert!(iptables(&del), "no isolation rule of ours: {rule:?}");
        }
        Unguarded(bridge.to_string())
    }
}

impl Drop for Unguarded {
    fn drop(&mut self) {
        for rule in Unguarded::rules(&self.0) {
            iptables(&[&["-t", "mangle", "-A"][..], &rule].concat());
        }
    }
}

/// Whether `container` (as its own user) opens a TCP connection to `target` within a
/// second; anything but a connection or a timeout fails the test (a broken check).
fn connects(container: &str, target: &str) -> bool {
    let (host, port) = target.rsplit_once(':').unwrap();
    let code = format!(
        "import socket\ntry:\n socket.create_connection(('{host}', {port}), timeout=1)\n \
         print('open')\nexcept TimeoutError:\n print('timeout')"
    );
    let out = run(Command::new("docker").args(["exec", container, "python3", "-c", &code]));
    match text(&out.stdout).trim() {
        "open" => true,
        "timeout" => false,
        _ => panic!("probe from {container} to {target} failed: {out:?}"),
    }
}

#[test]
fn builds_and_processes_of_two_apps_are_confined_apart() {
    require("setpriv");
    require("ip");
    let s = Server::start();

    // alpha: a live app with a web process and config values, the neighbour to reach.
    let dir = fixture_repo(&s.dir.path().join("alpha"), "probe");
    s.ok(&s.admin, "apps:create alpha");
    s.ok(&s.admin, "config:set alpha API_TOKEN=alpha-secret-token");
    let out = s.git_ok(&s.admin, &dir, &["push", &s.url("alpha"), "main"]);
    let alpha_push = text(&out.stderr);
    assert!(alpha_push.contains("Released v1"), "{alpha_push}");
    let alpha = web_container(&s, "alpha");
    let port = inspect(&alpha, "{{index .Config.Labels \"magrathea.port\"}}");
    let alpha_ip = inspect(
        &alpha,
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
    );
    let alpha_gw = inspect(
        &alpha,
        "{{range .NetworkSettings.Networks}}{{.Gateway}}{{end}}",
    );
    // The router and the health checker reach it through its published port.
    let (status, body) = s.get("alpha", "/");
    assert_eq!((status, body.as_str()), (200, "ok"));

    // beta: the same probe, told every way to alpha's port it could try.
    let mut targets = vec![
        format!("127.0.0.1:{port}"),
        format!("{alpha_ip}:{port}"),
        format!("{alpha_gw}:{port}"),
    ];
    targets.extend(host_ipv4s().iter().map(|ip| format!("{ip}:{port}")));
    let dir = fixture_repo(&s.dir.path().join("beta"), "probe");
    commit(&dir, "targets.txt", &(targets.join("\n") + "\n"), "targets");
    let out = s.git_ok(&s.admin, &dir, &["push", &s.url("beta"), "main"]);
    let beta_push = text(&out.stderr);
    assert!(beta_push.contains("Released v1"), "{beta_push}");
    let uids = [uid_of(&s, "alpha"), uid_of(&s, "beta")];
    assert!(uids.iter().all(|u| *u > UID_BASE), "{uids:?}");
    assert_ne!(uids[0], uids[1], "two apps share a uid");
    // No host account has either uid.
    for uid in &uids {
        let out = run(Command::new("getent").args(["passwd", &uid.to_string()]));
        assert!(!out.status.success(), "uid {uid} is a host account");
    }

    for (i, app) in ["alpha", "beta"].into_iter().enumerate() {
        let uid = uids[i];
        // The build: the app's uid, no capabilities, and still the package index.
        let p = build_probe(if i == 0 { &alpha_push } else { &beta_push });
        assert_confined("build", &p, uid, magrathea::isolation::BUILD_PIDS);
        let fetched = p["fetch"].as_str().unwrap();
        assert!(fetched.starts_with("200 "), "build fetch: {p}");
        // The release command, before the processes started.
        let release = s
            .data
            .join(format!("node/apps/{app}/data/release-probe.json"));
        let rp: Value = serde_json::from_str(&std::fs::read_to_string(&release).unwrap()).unwrap();
        assert_confined(
            "release command",
            &rp,
            uid,
            magrathea::isolation::PROCESS_PIDS,
        );
        // The web process, asked through the router.
        let (status, body) = s.get(app, "/probe");
        assert_eq!(status, 200, "{body}");
        let wp: Value = serde_json::from_str(&body).unwrap();
        assert_confined("web process", &wp, uid, magrathea::isolation::PROCESS_PIDS);
        // A one-off `run`.
        let out = s.ok(&s.admin, &format!("run {app} -- python3 probe.py probe"));
        let run_p: Value =
            serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_confined("run", &run_p, uid, magrathea::isolation::PROCESS_PIDS);
        // Every one of them still has egress (the registries).
        for (what, p) in [
            ("build", &p),
            ("release command", &rp),
            ("web", &wp),
            ("run", &run_p),
        ] {
            let e = p["egress"].as_str().unwrap();
            assert!(e.starts_with("open"), "{app} {what}: no egress: {p}");
        }
        if app == "beta" {
            for (what, p) in [
                ("build", &p),
                ("release command", &rp),
                ("web", &wp),
                ("run", &run_p),
            ] {
                assert_reaches_no_other_app(what, p);
            }
        }
    }
    // The probe does see an open port when there is one: beta's run container reaches
    // beta's own web process across beta's network.
    let beta = web_container(&s, "beta");
    let beta_ip = inspect(
        &beta,
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
    );
    let beta_port = inspect(&beta, "{{index .Config.Labels \"magrathea.port\"}}");
    let own = format!("{beta_ip}:{beta_port}");
    let out = s.ok(
        &s.admin,
        &format!("run beta -- env PROBE_TARGETS={own} python3 probe.py probe"),
    );
    let p: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let r = p["connect"][&own].as_str().unwrap();
    assert!(r.starts_with("open: HTTP/1.0 200"), "{own}: {r}");

    // Each time dockerd creates a network it deletes and re-inserts its isolation jump;
    // in that gap alpha stays out of beta's reach (our own rules), and without our rule
    // for alpha's bridge the gap does let beta in (so the check can fail).
    let alpha_at = format!("{alpha_ip}:{port}");
    let alpha_bridge = format!(
        "br-{}",
        &inspect(
            &alpha,
            "{{range .NetworkSettings.Networks}}{{.NetworkID}}{{end}}"
        )[..12]
    );
    {
        let _gap = DockerGap::open();
        assert!(
            !connects(&beta, &alpha_at),
            "beta reached alpha in Docker's gap"
        );
        let _unguarded = Unguarded::open(&alpha_bridge);
        // Each try opens the gap again: dockerd closes it whenever another test creates a
        // network, so a few tries could all land closed; tried until it is seen, for two
        // minutes at most (it stays false if the gap never lets beta in).
        let t = std::time::Instant::now();
        let reached = loop {
            let _gap = DockerGap::open();
            if connects(&beta, &alpha_at) {
                break true;
            }
            if t.elapsed() > std::time::Duration::from_secs(120) {
                break false;
            }
        };
        assert!(
            reached,
            "the gap check is broken: beta never reached unguarded alpha"
        );
    }
    assert!(
        !connects(&beta, &alpha_at),
        "alpha's rules were not restored"
    );

    // Each app in a network namespace of its own, neither the host's nor the other's.
    let pid = |c: &str| inspect(c, "{{.State.Pid}}");
    let netns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let (alpha_pid, beta_pid) = (pid(&alpha), pid(&beta));
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(netns(&alpha_pid), netns(&beta_pid));
    assert_ne!(netns(&alpha_pid), host);
    assert_ne!(netns(&beta_pid), host);

    // Neither a host login user (uid 1000, which every app ran as before) nor the other
    // app's uid can read alpha's process environment, where its config values are.
    let environ = format!("/proc/{alpha_pid}/environ");
    let as_uid = |uid: u64| {
        run(Command::new("setpriv")
            .args(["--reuid", &uid.to_string(), "--regid", &uid.to_string()])
            .args(["--clear-groups", "cat", &environ]))
    };
    let own = as_uid(uids[0]);
    assert!(
        text(&own.stdout).contains("API_TOKEN=alpha-secret-token"),
        "the check itself is broken: {own:?}"
    );
    for uid in [1000, uids[1]] {
        let out = as_uid(uid);
        assert!(!out.status.success(), "uid {uid} read alpha's environ");
        assert!(text(&out.stderr).contains("Permission denied"), "{out:?}");
    }

    // Destroyed, beta's networks go (its build network on the controller's side, its
    // process network on the node's); an app created again under the name is someone else.
    let instances = [s.instance(), node_instance(&s.data.join("node")).unwrap()];
    let mine = |uid: u64| {
        let out = run(Command::new("docker").args([
            "network",
            "ls",
            "--format",
            "{{.Name}}",
            "--filter",
            &format!("label=magrathea.uid={uid}"),
        ]));
        text(&out.stdout)
            .lines()
            .filter(|n| instances.iter().any(|i| n.starts_with(&format!("mg-{i}-"))))
            .count()
    };
    assert_eq!(mine(uids[1]), 2, "beta's networks");
    s.ok(&s.admin, "apps:destroy beta --confirm beta");
    assert_eq!(mine(uids[1]), 0, "beta's networks outlived it");
    assert_eq!(mine(uids[0]), 2, "alpha's networks went with beta");
    s.ok(&s.admin, "apps:create beta");
    let again = uid_of(&s, "beta");
    assert!(
        again > uids[1],
        "the new beta has uid {again}, the old one had {}",
        uids[1]
    );
}
