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

/// The host pid of the app's web.1 (docker-init, whose environ is the process's).
fn web_pid(s: &Server, app: &str) -> u32 {
    let inst = node_instance(&s.data.join("node")).unwrap();
    let out = run(Command::new("docker").args([
        "ps",
        "-q",
        "--filter",
        &format!("label=magrathea.instance={inst}"),
        "--filter",
        &format!("label=magrathea.app={app}"),
        "--filter",
        "label=magrathea.process=web",
    ]));
    let id = text(&out.stdout)
        .split_whitespace()
        .next()
        .map(String::from);
    let id = id.unwrap_or_else(|| panic!("no web container for {app}"));
    let out = run(Command::new("docker").args(["inspect", "-f", "{{.State.Pid}}", &id]));
    text(&out.stdout).trim().parse().expect("pid")
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

#[test]
fn builds_and_processes_of_two_apps_are_confined_apart() {
    require("setpriv");
    let s = Server::start();
    let mut uids = vec![];
    for app in ["alpha", "beta"] {
        let dir = fixture_repo(&s.dir.path().join(app), "probe");
        let out = s.git_ok(&s.admin, &dir, &["push", &s.url(app), "main"]);
        let err = text(&out.stderr);
        assert!(err.contains("Released v1"), "{err}");
        let uid = uid_of(&s, app);
        assert!(uid > UID_BASE, "{app}: uid {uid}");
        uids.push(uid);

        // The build: the app's uid, no capabilities, and still the package index.
        let p = build_probe(&err);
        assert_confined("build", &p, uid, magrathea::isolation::BUILD_PIDS);
        let fetched = p["fetch"].as_str().unwrap();
        assert!(fetched.starts_with("200 "), "build fetch: {p}");

        // The release command, before the processes started.
        let release = s
            .data
            .join(format!("node/apps/{app}/data/release-probe.json"));
        let p: Value = serde_json::from_str(&std::fs::read_to_string(&release).unwrap()).unwrap();
        assert_confined(
            "release command",
            &p,
            uid,
            magrathea::isolation::PROCESS_PIDS,
        );

        // The web process, asked through the router.
        let (status, body) = s.get(app, "/probe");
        assert_eq!(status, 200, "{body}");
        let p: Value = serde_json::from_str(&body).unwrap();
        assert_confined("web process", &p, uid, magrathea::isolation::PROCESS_PIDS);

        // A one-off `run`.
        let out = s.ok(&s.admin, &format!("run {app} -- python3 probe.py probe"));
        let p: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_confined("run", &p, uid, magrathea::isolation::PROCESS_PIDS);
    }
    assert_ne!(uids[0], uids[1], "two apps share a uid");
    // No host account has either uid.
    for uid in &uids {
        let out = run(Command::new("getent").args(["passwd", &uid.to_string()]));
        assert!(!out.status.success(), "uid {uid} is a host account");
    }

    // Neither a host login user (uid 1000, which every app ran as before) nor the other
    // app's uid can read alpha's process environment, where its config values are.
    let pid = web_pid(&s, "alpha");
    let environ = format!("/proc/{pid}/environ");
    let own = run(Command::new("setpriv")
        .args([
            "--reuid",
            &uids[0].to_string(),
            "--regid",
            &uids[0].to_string(),
        ])
        .args(["--clear-groups", "cat", &environ]));
    assert!(
        text(&own.stdout).contains("MAGRATHEA_APP=alpha"),
        "the check itself is broken: {own:?}"
    );
    for uid in [1000, uids[1]] {
        let out = run(Command::new("setpriv")
            .args(["--reuid", &uid.to_string(), "--regid", &uid.to_string()])
            .args(["--clear-groups", "cat", &environ]));
        assert!(!out.status.success(), "uid {uid} read alpha's environ");
        assert!(text(&out.stderr).contains("Permission denied"), "{out:?}");
    }
}
