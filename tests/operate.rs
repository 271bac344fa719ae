//! ps, scale, restart, stop, start end to end: two real agents, real Docker, real ssh and git,
//! an HTTP poller through the router while processes come and go.

mod util;

use std::collections::BTreeSet;

use util::*;

/// Each web process answers with its own port, so the router's balancing is visible.
const PROCFILE: &str = "web: mkdir -p /tmp/w && echo \"p=$PORT\" > /tmp/w/index.html && exec busybox httpd -f -p $PORT -h /tmp/w\nworker: exec sleep 100000\n";

const APP_JSON: &str = r#"{"formation": {"worker": {"quantity": 1}}}"#;

fn ps(s: &Server, key: &Key, app: &str) -> Vec<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(&s.ok(key, &format!("ps {app} --json"))).unwrap();
    v.as_array().unwrap().clone()
}

/// What identifies a process (uptime moves on).
fn ids(rows: &[serde_json::Value]) -> Vec<String> {
    rows.iter()
        .map(|r| {
            format!(
                "{} {} {} {}",
                r["process"], r["node"], r["release"], r["port"]
            )
        })
        .collect()
}

fn of_type(rows: &[serde_json::Value], t: &str) -> Vec<serde_json::Value> {
    rows.iter()
        .filter(|r| r["process"].as_str().unwrap().starts_with(&format!("{t}.")))
        .cloned()
        .collect()
}

fn push_app(s: &Server, app: &str) {
    let dir = repo(&s.dir.path().join(format!("src-{app}")));
    std::fs::write(dir.join("Procfile"), PROCFILE).unwrap();
    // Heroku's default is web only; the app asks for its worker.
    std::fs::write(dir.join("app.json"), APP_JSON).unwrap();
    commit(&dir, "README", "hi", "first");
    s.git_ok(&s.admin, &dir, &["push", &s.url(app), "main"]);
}

/// Runs `cmd` while polling the app; asserts no request failed.
fn without_failures(s: &Server, app: &str, cmd: &str) -> String {
    // Answers before and after the command, however loaded the machine.
    let poller = Poller::start(s.http_port, app);
    poller.wait_for_answers(3);
    let out = s.ok(&s.admin, cmd);
    poller.wait_for_answers(3);
    let (ok, bad, errors) = poller.finish();
    assert_eq!(bad, 0, "failed requests during `{cmd}`: {errors:?}");
    assert!(ok >= 6, "{ok} requests only");
    out
}

#[test]
fn scale_places_processes_on_two_nodes_and_the_router_balances() {
    let s = Server::start();
    let _agents: Vec<Agent> = ["n1", "n2"]
        .iter()
        .map(|n| {
            let a = Agent::start(&s, n);
            s.ok(&s.admin, &format!("nodes:add {n} {} --slots 4", a.addr));
            a
        })
        .collect();
    // Only the added nodes: the built-in one stays a node until removed.
    s.ok(&s.admin, "nodes:remove local");
    push_app(&s, "shop");

    // Defaults: a web process on each node, numbered across them; app.json's one worker.
    let rows = ps(&s, &s.admin, "shop");
    let web = of_type(&rows, "web");
    assert_eq!(web.len(), 2, "{rows:?}");
    assert_eq!(of_type(&rows, "worker").len(), 1, "{rows:?}");
    let names: BTreeSet<&str> = web.iter().map(|r| r["process"].as_str().unwrap()).collect();
    assert_eq!(names, BTreeSet::from(["web.1", "web.2"]));
    let table = s.ok(&s.admin, "ps shop");
    assert!(table.starts_with("PROCESS"), "{table}");
    assert!(table.contains("running") && table.contains("v1"), "{table}");

    // Up to three, with no failed request.
    let out = without_failures(&s, "shop", "scale shop web=3");
    assert!(out.contains("now runs web=3"), "{out}");
    let rows = ps(&s, &s.admin, "shop");
    let web = of_type(&rows, "web");
    assert_eq!(web.len(), 3, "{rows:?}");
    let nodes: BTreeSet<&str> = web.iter().map(|r| r["node"].as_str().unwrap()).collect();
    assert_eq!(nodes, BTreeSet::from(["n1", "n2"]));
    assert!(web
        .iter()
        .all(|r| r["state"] == "running" && r["release"] == "v1"));
    // The router spreads requests over all three.
    let mut seen = BTreeSet::new();
    for _ in 0..30 {
        let (code, body) = s.get("shop", "/");
        assert_eq!(code, 200);
        seen.insert(body);
    }
    assert_eq!(seen.len(), 3, "answers came from {seen:?}");

    // The same counts again: nothing happens.
    assert!(s.ok(&s.admin, "scale shop web=3").contains("no change"));

    // Down to one, worker off: the others drain first.
    without_failures(&s, "shop", "scale shop web=1 worker=0");
    let rows = ps(&s, &s.admin, "shop");
    assert_eq!(of_type(&rows, "web").len(), 1, "{rows:?}");
    assert!(of_type(&rows, "worker").is_empty(), "{rows:?}");

    // More than the nodes hold is refused, and changes nothing.
    let out = s.ssh(&s.admin, "scale shop web=9", None);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("not enough capacity"), "{err}");
    assert_eq!(of_type(&ps(&s, &s.admin, "shop"), "web").len(), 1);

    // A rolling restart: new processes (new ports), no failed request.
    let before = ps(&s, &s.admin, "shop");
    without_failures(&s, "shop", "restart shop");
    let after = ps(&s, &s.admin, "shop");
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(before[0]["port"], after[0]["port"], "a new process");

    // A new deploy keeps the counts.
    let dir = s.dir.path().join("src-shop");
    commit(&dir, "README", "again", "second");
    s.git_ok(&s.admin, &dir, &["push", &s.url("shop"), "main"]);
    let rows = ps(&s, &s.admin, "shop");
    assert_eq!(of_type(&rows, "web").len(), 1, "{rows:?}");
    assert!(of_type(&rows, "worker").is_empty(), "{rows:?}");
    assert!(rows.iter().all(|r| r["release"] == "v2"), "{rows:?}");
}

#[test]
fn stop_start_and_permissions() {
    let s = Server::start();
    push_app(&s, "shop");
    assert_eq!(s.get("shop", "/").0, 200);

    let viewer = s.key("viewer");
    s.add_key(&viewer, "user");
    s.ok(&s.admin, "access:grant shop viewer viewer");
    let deployer = s.key("deployer");
    s.add_key(&deployer, "user");
    s.ok(&s.admin, "access:grant shop deployer deployer");
    let before = ps(&s, &viewer, "shop");
    assert_eq!(before.len(), 2, "web and worker: {before:?}");
    for k in [&viewer, &deployer] {
        for cmd in [
            "scale shop web=2",
            "restart shop",
            "stop shop",
            "start shop",
        ] {
            let out = s.ssh(k, cmd, None);
            assert!(!out.status.success(), "{} may {cmd}", k.name);
            let err = text(&out.stderr);
            assert!(err.contains("owner"), "{cmd}: {err}");
            assert_eq!(err.trim().lines().count(), 1, "{err}");
        }
    }
    assert_eq!(
        ids(&ps(&s, &s.admin, "shop")),
        ids(&before),
        "refusals change nothing"
    );
    let audit = s.ok(&s.admin, "audit");
    assert!(audit.contains("denied"), "{audit}");

    for cmd in [
        "ps nope",
        "scale shop web",
        "scale shop web=x",
        "scale shop clock=1",
        "scale shop web=1 --env ../x",
        "restart shop clock",
    ] {
        let out = s.ssh(&s.admin, cmd, None);
        assert!(!out.status.success(), "{cmd} succeeded");
        assert_eq!(text(&out.stderr).trim().lines().count(), 1, "{cmd}");
    }

    // Stop: nothing runs, the router has nowhere to send requests; start brings it back.
    let out = s.ok(&s.admin, "stop shop");
    assert!(out.contains("stopped"), "{out}");
    let (status, body) = s.get("shop", "/");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("has no running web processes"), "{body}");
    assert!(ps(&s, &s.admin, "shop").is_empty());
    assert!(s.ok(&s.admin, "ps shop").contains("stopped"));
    assert!(s.ok(&s.admin, "stop shop").contains("already stopped"));
    s.ok(&s.admin, "start shop");
    assert_eq!(s.get("shop", "/").0, 200);
    assert_eq!(ps(&s, &s.admin, "shop").len(), 2);

    // Restarting only the worker leaves web alone.
    let web_before = of_type(&ps(&s, &s.admin, "shop"), "web");
    s.ok(&s.admin, "restart shop worker");
    let rows = ps(&s, &s.admin, "shop");
    assert_eq!(ids(&of_type(&rows, "web")), ids(&web_before));
    assert_eq!(of_type(&rows, "worker").len(), 1, "{rows:?}");
    assert_eq!(s.get("shop", "/").0, 200);

    // Destroying the app stops it everywhere: no route, no process, no history, and nothing
    // of it left on disk for a later app of the same name (data, releases, logs).
    let node_app = s.data.join("node/apps/shop");
    assert!(node_app.join("data").is_dir(), "no data dir to check");
    std::fs::write(node_app.join("data/old-secret.txt"), "OLD-APP-DATA").unwrap();
    assert!(
        s.data.join("logs/builds/shop").is_dir(),
        "no build logs to check"
    );
    let out = s.ok(&s.admin, "apps:destroy shop --confirm shop");
    assert!(out.contains("destroyed"), "{out}");
    assert_eq!(s.get("shop", "/").0, 404);
    let out = s.ssh(&s.admin, "ps shop", None);
    assert!(!out.status.success());
    let left = run(std::process::Command::new("docker").args([
        "ps",
        "-q",
        "--filter",
        "label=magrathea.app=shop",
        "--filter",
        &format!("name=mg-{}", node_instance(&s)),
    ]));
    assert_eq!(text(&left.stdout).trim(), "", "processes left behind");
    for left in [node_app.clone(), s.data.join("logs/builds/shop")] {
        assert!(!left.exists(), "{} left behind", left.display());
    }
    // The name can be used again, from scratch.
    let dir = repo(&s.dir.path().join("again"));
    std::fs::write(dir.join("Procfile"), PROCFILE).unwrap();
    std::fs::write(dir.join("app.json"), APP_JSON).unwrap();
    commit(&dir, "README", "again", "again");
    s.git_ok(&s.admin, &dir, &["push", &s.url("shop"), "main"]);
    assert!(s.ok(&s.admin, "releases shop").contains("v1"));
    assert_eq!(s.get("shop", "/").0, 200);
    assert!(!node_app.join("data/old-secret.txt").exists());
    let builds = s.ok(&s.admin, "builds shop --json");
    let builds: serde_json::Value = serde_json::from_str(&builds).unwrap();
    assert_eq!(
        builds.as_array().unwrap().len(),
        1,
        "earlier builds shown: {builds}"
    );
    let audit = s.ok(&s.admin, "audit shop -n 1000");
    assert!(
        !audit.contains("restart shop worker"),
        "earlier app's audit shown:\n{audit}"
    );

    // --keep-data archives the data outside every app's reach.
    std::fs::write(node_app.join("data/keep.txt"), "KEEP").unwrap();
    s.ok(&s.admin, "apps:destroy shop --confirm shop --keep-data");
    assert!(!node_app.exists());
    let archived: Vec<_> = std::fs::read_dir(s.data.join("node/archive"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(archived.len(), 1, "{archived:?}");
    assert_eq!(
        std::fs::read_to_string(archived[0].join("keep.txt")).unwrap(),
        "KEEP"
    );
}

/// The built-in node's instance id (its containers are named `mg-<instance>-...`).
fn node_instance(s: &Server) -> String {
    util::node_instance(&s.data.join("node")).unwrap()
}
