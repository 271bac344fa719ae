//! Deploys end to end: real agents as separate processes on loopback ports, real Docker,
//! real ssh and git; an HTTP client polls the app through the router during deploys.

mod util;

use std::path::Path;

use util::*;

fn web_repo(dir: &Path, body: &str, procfile: &str) -> std::path::PathBuf {
    let dir = repo(dir);
    std::fs::write(dir.join("Procfile"), procfile).unwrap();
    commit(&dir, "index.html", body, body);
    dir
}

const WEB: &str = "web: busybox httpd -f -p $PORT -h .\n";

fn set_body(dir: &Path, body: &str) {
    commit(dir, "index.html", body, body);
}

fn node_status(s: &Server, node: &str) -> serde_json::Value {
    serde_json::from_str(&s.ok(&s.admin, &format!("nodes:info {node} --json"))).unwrap()
}

fn three_nodes(s: &Server) -> Vec<Agent> {
    let agents: Vec<Agent> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| Agent::start(s, n))
        .collect();
    for (i, a) in agents.iter().enumerate() {
        let out = s.ok(&s.admin, &format!("nodes:add n{} {}", i + 1, a.addr));
        assert!(out.contains("pinned"), "{out}");
    }
    // Only the added nodes: the built-in one stays a node until removed.
    s.ok(&s.admin, "nodes:remove local");
    agents
}

/// After a restart: the app's first 200 through the router (or the last answer after two
/// minutes: the routes come back in the background, slowly on a loaded machine).
fn first_answer(s: &Server, app: &str) -> (u16, String) {
    let mut answer = (0, String::new());
    let t = std::time::Instant::now();
    while t.elapsed() < std::time::Duration::from_secs(120) {
        answer = s.get(app, "/");
        if answer.0 == 200 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    answer
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = std::time::Instant::now();
    while !f() {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The names of the containers of the node with this root.
fn container_names(root: &Path) -> Vec<String> {
    let inst = node_instance(root).unwrap();
    let out = run(std::process::Command::new("docker").args([
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("label=magrathea.instance={inst}"),
    ]));
    text(&out.stdout).lines().map(str::to_string).collect()
}

fn live_version(s: &Server, app: &str) -> i64 {
    let v: serde_json::Value =
        serde_json::from_str(&s.ok(&s.admin, &format!("releases {app} --json"))).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|r| r["live"].as_array().is_some_and(|l| !l.is_empty()))
        .map(|r| r["version"].as_i64().unwrap())
        .unwrap_or(0)
}

#[test]
fn push_goes_live_on_three_nodes_and_switches_without_failed_requests() {
    let s = Server::start();
    let _agents = three_nodes(&s);
    let dir = web_repo(&s.dir.path().join("src"), "v1\n", WEB);
    let out = s.git_ok(&s.admin, &dir, &["push", &s.url("shop"), "main"]);
    let err = text(&out.stderr);
    assert!(err.contains("is live in production on n1, n2, n3"), "{err}");
    assert_eq!(s.get("shop", "/"), (200, "v1\n".to_string()));

    // Every node runs the same bytes, and answers on its own.
    let rel: serde_json::Value =
        serde_json::from_str(&s.ok(&s.admin, "releases:info shop v1 --json")).unwrap();
    let name = format!("v1-{}", &rel["sha256"].as_str().unwrap()[..12]);
    for n in ["n1", "n2", "n3"] {
        let st = node_status(&s, n);
        assert_eq!(
            st["status"]["apps"]["shop"]["current"],
            name.as_str(),
            "{n}"
        );
        let procs = st["status"]["apps"]["shop"]["processes"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(procs.len(), 1, "{n}: {procs:?}");
        let port = procs[0]["port"].as_u64().unwrap() as u16;
        assert_eq!(
            http_get(port, "localhost", "/").1,
            "v1\n",
            "{n} answers directly"
        );
    }

    // Answers before and after the switch, however loaded the machine.
    let poller = Poller::start(s.http_port, "shop");
    poller.wait_for_answers(5);
    set_body(&dir, "v2\n");
    s.git_ok(&s.admin, &dir, &["push", &s.url("shop"), "main"]);
    poller.wait_for_answers(5);
    let (ok, bad, errors) = poller.finish();
    assert_eq!(bad, 0, "failed requests during the switch: {errors:?}");
    assert!(ok >= 10);
    assert_eq!(s.get("shop", "/"), (200, "v2\n".to_string()));
    // The old release stays unpacked; its processes are gone.
    for n in ["n1", "n2", "n3"] {
        let st = node_status(&s, n);
        let app = &st["status"]["apps"]["shop"];
        assert_eq!(app["releases"].as_array().unwrap().len(), 2);
        assert_eq!(app["processes"].as_array().unwrap().len(), 1);
    }
    assert_eq!(live_version(&s, "shop"), 2);

    // Rollback is a switch to the unpacked release, not a rebuild.
    let builds_before = s.ok(&s.admin, "builds shop --json");
    let out = s.ok(&s.admin, "rollback shop");
    assert!(out.contains("v1 of shop is live"), "{out}");
    assert_eq!(s.get("shop", "/"), (200, "v1\n".to_string()));
    assert_eq!(s.ok(&s.admin, "builds shop --json"), builds_before);
    assert_eq!(live_version(&s, "shop"), 1);
}

#[test]
fn a_node_failing_its_health_check_aborts_everywhere() {
    let s = Server::start();
    let agents = three_nodes(&s);
    // The web process refuses to start where the node's data dir holds a 'broken' file.
    let procfile = "web: test -e /data/broken && exit 1; exec busybox httpd -f -p $PORT -h .\n";
    let dir = web_repo(&s.dir.path().join("src"), "v1\n", procfile);
    s.git_ok(&s.admin, &dir, &["push", &s.url("api"), "main"]);
    let before = text(
        &s.git_ok(&s.admin, &dir, &["ls-remote", &s.url("api")])
            .stdout,
    );
    std::fs::write(agents[1].root.join("apps/api/data/broken"), "").unwrap();

    let poller = Poller::start(s.http_port, "api");
    set_body(&dir, "v2\n");
    let out = s.git(&s.admin, &dir, &["push", &s.url("api"), "main"]);
    let (_, bad, errors) = poller.finish();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("node n2"), "names the failing node: {err}");
    assert!(err.contains("v1 still serves"), "{err}");
    assert_eq!(bad, 0, "{errors:?}");
    assert_eq!(s.get("api", "/"), (200, "v1\n".to_string()));
    assert_eq!(
        text(
            &s.git_ok(&s.admin, &dir, &["ls-remote", &s.url("api")])
                .stdout
        ),
        before
    );
    for n in ["n1", "n2", "n3"] {
        let st = node_status(&s, n);
        let app = &st["status"]["apps"]["api"];
        assert!(app["current"].as_str().unwrap().starts_with("v1-"), "{n}");
        let procs = app["processes"].as_array().unwrap();
        assert_eq!(procs.len(), 1, "{n}: only v1 runs: {procs:?}");
        assert!(procs[0]["release"].as_str().unwrap().starts_with("v1-"));
    }
    assert_eq!(live_version(&s, "api"), 1);
}

#[test]
fn a_node_vanishing_aborts_and_a_failed_release_phase_aborts() {
    let s = Server::start();
    let mut agents = three_nodes(&s);
    let dir = web_repo(&s.dir.path().join("src"), "v1\n", WEB);
    s.git_ok(&s.admin, &dir, &["push", &s.url("cms"), "main"]);

    agents[2].kill();
    set_body(&dir, "v2\n");
    let out = s.git(&s.admin, &dir, &["push", &s.url("cms"), "main"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    // The failure names the node itself (its name is also in the "Deploying ... on n1, n2,
    // n3" line, so the name alone would prove nothing).
    assert!(
        err.contains(&format!("node n3 ({}) is unreachable", agents[2].addr)),
        "{err}"
    );
    assert_eq!(s.get("cms", "/"), (200, "v1\n".to_string()));
    for n in ["n1", "n2"] {
        let app = &node_status(&s, n)["status"]["apps"]["cms"];
        assert_eq!(app["processes"].as_array().unwrap().len(), 1, "{n}");
    }
    s.ok(&s.admin, "nodes:remove n3");

    // A release command that fails stops the deploy before any switch.
    std::fs::write(
        dir.join("Procfile"),
        format!("{WEB}release: echo migrating; exit 3\n"),
    )
    .unwrap();
    set_body(&dir, "v3\n");
    let out = s.git(&s.admin, &dir, &["push", &s.url("cms"), "main"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("migrating"), "release output shown: {err}");
    assert!(err.contains("release command failed (exit 3)"), "{err}");
    assert_eq!(s.get("cms", "/"), (200, "v1\n".to_string()));
}

/// Versions of the app's releases the controller keeps, newest first.
fn versions(s: &Server, app: &str) -> Vec<i64> {
    let v: serde_json::Value =
        serde_json::from_str(&s.ok(&s.admin, &format!("releases {app} --json"))).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_i64().unwrap())
        .collect()
}

/// The versions unpacked on the built-in node, oldest first (`v3-<sha12>` -> 3).
fn unpacked(s: &Server, app: &str) -> Vec<i64> {
    let mut v: Vec<i64> = std::fs::read_dir(s.data.join("node/apps").join(app).join("releases"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_prefix('v')?.split('-').next()?.parse().ok()
        })
        .collect();
    v.sort();
    v
}

/// Old releases go, on the controller and the node, beyond `keep_releases`; the live one
/// and the rollback target never, even when they are old (after a rollback).
fn releases_are_pruned_but_never_the_live_or_rollback_ones(s: &Server) {
    let dir = web_repo(&s.dir.path().join("pruned-src"), "p1\n", WEB);
    std::fs::write(dir.join("magrathea.yml"), "keep_releases: 1\n").unwrap();
    for v in 1..=4 {
        set_body(&dir, &format!("p{v}\n"));
        s.git_ok(&s.admin, &dir, &["push", &s.url("pruned"), "main"]);
    }
    assert_eq!(s.get("pruned", "/"), (200, "p4\n".to_string()));
    // v4 is live, v3 the rollback target, v2 the newest-but-one that was still live when
    // v4 was cooked; v1 is gone, on the node too.
    assert_eq!(versions(s, "pruned"), [4, 3, 2]);
    wait_until("v1 removed from the node", || {
        unpacked(s, "pruned") == [2, 3, 4]
    });
    // Back to an old release: it is live, and stays while newer ones come and go.
    s.ok(&s.admin, "rollback pruned v2");
    assert_eq!(s.get("pruned", "/"), (200, "p2\n".to_string()));
    set_body(&dir, "p5\n");
    s.git_ok(&s.admin, &dir, &["push", &s.url("pruned"), "main"]);
    assert_eq!(
        versions(s, "pruned"),
        [5, 4, 2],
        "v2 is the rollback target"
    );
    wait_until("v3 removed from the node", || {
        unpacked(s, "pruned") == [2, 4, 5]
    });
    let files = std::fs::read_dir(s.data.join("releases/pruned"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tar.gz"))
        .count();
    assert_eq!(files, 3, "one tarball per kept release");
    let out = s.ok(&s.admin, "rollback pruned");
    assert!(out.contains("v2 of pruned is live"), "{out}");
    assert_eq!(s.get("pruned", "/"), (200, "p2\n".to_string()));
}

#[test]
fn tags_deploy_cooked_bytes_and_a_restart_keeps_serving() {
    let mut s = Server::start();
    releases_are_pruned_but_never_the_live_or_rollback_ones(&s);
    let dir = web_repo(&s.dir.path().join("src"), "v1\n", WEB);
    s.git_ok(&s.admin, &dir, &["push", &s.url("blog"), "main"]);
    git_local(&dir, &["tag", "v1.0"]);
    let out = s.git_ok(&s.admin, &dir, &["push", &s.url("blog"), "v1.0"]);
    let err = text(&out.stderr);
    assert!(err.contains("deploying the same bytes"), "{err}");
    assert!(!err.contains("Building"), "{err}");
    let rels: serde_json::Value =
        serde_json::from_str(&s.ok(&s.admin, "releases blog --json")).unwrap();
    assert_eq!(
        rels.as_array().unwrap().len(),
        1,
        "no second release for the tag"
    );

    // The controller restarts: the router serves again without a redeploy (a deploy is in
    // the app's event log, and would replace the web process).
    let deploys = |s: &Server| {
        s.ok(&s.admin, "logs blog -n 1000")
            .matches("-----> Deploying v")
            .count()
    };
    let processes =
        |s: &Server| node_status(s, "local")["status"]["apps"]["blog"]["processes"].clone();
    let (deploys_before, processes_before) = (deploys(&s), processes(&s));
    assert_eq!(deploys_before, 2, "the push and the tag each deployed");
    assert!(s.stop().success());
    s.spawn();
    let answer = first_answer(&s, "blog");
    assert_eq!(answer, (200, "v1\n".to_string()));
    assert_eq!(deploys(&s), deploys_before, "no deploy at start");
    assert_eq!(
        processes(&s),
        processes_before,
        "the same web process serves"
    );
}

#[test]
fn environments_select_nodes_and_deploy_promotes() {
    let s = Server::start();
    let agents: Vec<Agent> = ["a", "b"].iter().map(|n| Agent::start(&s, n)).collect();
    s.ok(
        &s.admin,
        &format!("nodes:add stage1 {} --label env=staging", agents[0].addr),
    );
    s.ok(
        &s.admin,
        &format!("nodes:add prod1 {} --label env=prod", agents[1].addr),
    );
    let dir = web_repo(&s.dir.path().join("src"), "hello\n", WEB);
    std::fs::write(
        dir.join("magrathea.yml"),
        "environments:\n  staging: { branch: main, nodes: { env: staging } }\n  production: { tags: \"v*\", nodes: { env: prod } }\n",
    )
    .unwrap();
    set_body(&dir, "hello v1\n");
    let out = s.git_ok(&s.admin, &dir, &["push", &s.url("site"), "main"]);
    assert!(
        text(&out.stderr).contains("live in staging on stage1"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(s.get("site-staging", "/").1, "hello v1\n");
    assert_eq!(s.get("site", "/").0, 404, "nothing in production yet");
    let out = s.ok(&s.admin, "deploy site v1 --env production");
    assert!(out.contains("live in production on prod1"), "{out}");
    assert_eq!(s.get("site", "/").1, "hello v1\n");
    // A viewer may not deploy.
    let v = s.key("viewer");
    s.add_key(&v, "user");
    s.ok(&s.admin, "access:grant site viewer viewer");
    let out = s.ssh(&v, "deploy site v1 --env production", None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("access denied"));
}

#[test]
fn two_environments_of_one_app_share_a_node_without_touching_each_other() {
    let s = Server::start();
    let dir = web_repo(&s.dir.path().join("src"), "hello\n", WEB);
    // No selectors: both environments land on the one (built-in) node.
    std::fs::write(
        dir.join("magrathea.yml"),
        "environments:\n  staging: { branch: main }\n  production: { tags: \"v*\" }\n",
    )
    .unwrap();
    set_body(&dir, "staging\n");
    s.git_ok(&s.admin, &dir, &["push", &s.url("site"), "main"]);
    assert_eq!(s.get("site-staging", "/"), (200, "staging\n".to_string()));
    set_body(&dir, "prod\n");
    git_local(&dir, &["tag", "v1"]);
    let out = s.git(&s.admin, &dir, &["push", &s.url("site"), "v1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(s.get("site", "/"), (200, "prod\n".to_string()));
    assert_eq!(s.get("site-staging", "/"), (200, "staging\n".to_string()));
    // Each has its own processes, releases and data dir on the node.
    for env in ["production", "staging"] {
        let ps: serde_json::Value =
            serde_json::from_str(&s.ok(&s.admin, &format!("ps site --env {env} --json"))).unwrap();
        assert_eq!(ps.as_array().unwrap().len(), 1, "{env}: {ps}");
    }
    assert!(s.data.join("node/apps/site/data").is_dir());
    assert!(s.data.join("node/apps/site.staging/data").is_dir());
    // A staging deploy leaves production alone, and the reverse.
    set_body(&dir, "staging 2\n");
    s.git_ok(&s.admin, &dir, &["push", &s.url("site"), "main"]);
    assert_eq!(s.get("site-staging", "/"), (200, "staging 2\n".to_string()));
    assert_eq!(s.get("site", "/"), (200, "prod\n".to_string()));
    s.ok(&s.admin, "restart site");
    assert_eq!(s.get("site-staging", "/"), (200, "staging 2\n".to_string()));
    let out = s.ok(
        &s.admin,
        "run site --env staging -- sh -c 'echo $MAGRATHEA_APP $MAGRATHEA_ENV'",
    );
    assert_eq!(out.trim(), "site staging");
}

fn node_data(a: &Agent, app: &str, file: &str) -> String {
    std::fs::read_to_string(a.root.join(format!("apps/{app}/data/{file}"))).unwrap_or_default()
}

#[test]
fn data_snapshots_rollbacks_a_node_lost_mid_prepare_and_a_controller_sigkill() {
    let mut s = Server::start();
    let mut agents: Vec<Agent> = ["n1", "n2"].iter().map(|n| Agent::start(&s, n)).collect();
    for (i, a) in agents.iter().enumerate() {
        s.ok(&s.admin, &format!("nodes:add n{} {}", i + 1, a.addr));
    }
    // Only the added nodes: the built-in one stays a node until removed.
    s.ok(&s.admin, "nodes:remove local");
    // Each release command appends its version to a file in the data dir. Where the data
    // dir holds `slow`, the web process waits before it listens: long enough that the test
    // kills its node while the rollout health-checks it, however slowly the test sees it.
    let web = "web: test -e /data/slow && sleep 30; exec busybox httpd -f -p $PORT -h .\n";
    let dir = web_repo(&s.dir.path().join("src"), "v1\n", web);
    let release = |v: &str, fail: bool| {
        let tail = if fail { "; exit 3" } else { "" };
        std::fs::write(
            dir.join("Procfile"),
            format!("{web}release: echo {v} >> /data/log{tail}\n"),
        )
        .unwrap();
        set_body(&dir, &format!("{v}\n"));
    };
    release("v1", false);
    s.git_ok(&s.admin, &dir, &["push", &s.url("crm"), "main"]);
    release("v2", false);
    s.git_ok(&s.admin, &dir, &["push", &s.url("crm"), "main"]);
    // The release command runs on the first node by name.
    let ran_on = |want: &str| (node_data(&agents[0], "crm", "log") == want).then_some(());
    assert!(
        ran_on("v1\nv2\n").is_some(),
        "the release command ran once per deploy"
    );

    // A failing release command: refused, and what it wrote is rolled back.
    release("v3", true);
    let out = s.git(&s.admin, &dir, &["push", &s.url("crm"), "main"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("data dir restored"),
        "{}",
        text(&out.stderr)
    );
    assert!(ran_on("v1\nv2\n").is_some());
    assert!(agents
        .iter()
        .all(|a| !node_data(a, "crm", "log").contains("v3")));
    assert_eq!(s.get("crm", "/"), (200, "v2\n".to_string()));

    // Rollback to an older release, and --with-data back to before v2's release command.
    let out = s.ok(&s.admin, "rollback crm v1");
    assert!(out.contains("v1 of crm is live"), "{out}");
    assert_eq!(s.get("crm", "/"), (200, "v1\n".to_string()));
    s.ok(&s.admin, "rollback crm v2");
    assert!(
        ran_on("v1\nv2\n").is_some(),
        "a rollback runs no release command"
    );
    let out = s.ok(&s.admin, "rollback crm --with-data");
    assert!(out.contains("v1 of crm is live"), "{out}");
    assert!(
        ran_on("v1\n").is_some(),
        "data from before v2's release command"
    );

    // A node lost in the middle of prepare: refused, named, v1 still serves; it comes back
    // and the next push works.
    std::fs::write(agents[1].root.join("apps/crm/data/slow"), "").unwrap();
    release("v4", false);
    let poller = Poller::start(s.http_port, "crm");
    let n2_addr = agents[1].addr.clone();
    let push = {
        let (s, dir) = (&s, dir.clone());
        std::thread::scope(|sc| {
            let h = sc.spawn(move || s.git(&s.admin, &dir, &["push", &s.url("crm"), "main"]));
            // Killed once n2 runs v4's web process (which sleeps before it listens), so the
            // kill lands while the rollout health-checks it, however loaded the machine is.
            let v4 = format!("mg-{}-crm-v4-", node_instance(&agents[1].root).unwrap());
            wait_until("v4's web process on n2", || {
                container_names(&agents[1].root)
                    .iter()
                    .any(|n| n.starts_with(&v4))
            });
            agents[1].kill();
            h.join().unwrap()
        })
    };
    let (_, bad, errors) = poller.finish();
    assert!(!push.status.success());
    let err = text(&push.stderr);
    assert!(
        err.contains(&format!("node n2 ({n2_addr})")),
        "names the node: {err}"
    );
    assert_eq!(bad, 0, "{errors:?}");
    assert_eq!(s.get("crm", "/"), (200, "v1\n".to_string()));
    std::fs::remove_file(agents[1].root.join("apps/crm/data/slow")).unwrap();
    agents[1].restart();
    release("v5", false);
    s.git_ok(&s.admin, &dir, &["push", &s.url("crm"), "main"]);
    assert_eq!(s.get("crm", "/"), (200, "v5\n".to_string()));

    // The controller dies without warning; it comes back serving, and the next push works.
    s.kill9();
    s.spawn();
    let answer = first_answer(&s, "crm");
    assert_eq!(answer, (200, "v5\n".to_string()));
    release("v6", false);
    s.git_ok(&s.admin, &dir, &["push", &s.url("crm"), "main"]);
    assert_eq!(s.get("crm", "/"), (200, "v6\n".to_string()));
}

/// A TCP relay in front of an agent: the node as the controller sees it. It can stop
/// passing the controller's bytes on after a given count (the node is mid-receive and
/// takes no more), and then also stop answering (the node vanished from the network).
/// When the node's side closes (the agent was killed), the controller's side is closed too.
struct Relay {
    addr: String,
    passed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    limit: std::sync::Arc<std::sync::atomic::AtomicU64>,
    silent: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    fn start(to: &str) -> Relay {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering::SeqCst;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let r = Relay {
            addr: l.local_addr().unwrap().to_string(),
            passed: Default::default(),
            limit: std::sync::Arc::new(u64::MAX.into()),
            silent: Default::default(),
        };
        let (passed, limit, silent, to) = (
            r.passed.clone(),
            r.limit.clone(),
            r.silent.clone(),
            to.to_string(),
        );
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { break };
                let Ok(mut a) = std::net::TcpStream::connect(&to) else {
                    continue;
                };
                let dead = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let held = {
                    let (passed, limit) = (passed.clone(), limit.clone());
                    move || passed.load(SeqCst) >= limit.load(SeqCst)
                };
                // Controller -> node, up to the limit.
                let (mut c2, mut a2) = (c.try_clone().unwrap(), a.try_clone().unwrap());
                let (passed2, limit2, dead2, held2) =
                    (passed.clone(), limit.clone(), dead.clone(), held.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 16 << 10];
                    loop {
                        if dead2.load(SeqCst) {
                            break;
                        }
                        if held2() {
                            std::thread::sleep(std::time::Duration::from_millis(10));
                            continue;
                        }
                        let room = limit2.load(SeqCst) - passed2.load(SeqCst);
                        let want = buf.len().min(room.min(usize::MAX as u64) as usize);
                        let n = match c2.read(&mut buf[..want]) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if a2.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        passed2.fetch_add(n as u64, SeqCst);
                    }
                    let _ = a2.shutdown(std::net::Shutdown::Write);
                });
                // Node -> controller, until the node's side ends (or it falls silent).
                let silent = silent.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 16 << 10];
                    loop {
                        if silent.load(SeqCst) && held() {
                            std::thread::sleep(std::time::Duration::from_millis(10));
                            continue;
                        }
                        let n = match a.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    // Both ends go: the controller sees the node's connection close.
                    dead.store(true, SeqCst);
                    let _ = c.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        r
    }

    /// Pass `bytes` more from the controller, then hold the rest back.
    fn hold_after(&self, bytes: u64, silent: bool) {
        use std::sync::atomic::Ordering::SeqCst;
        self.silent.store(silent, SeqCst);
        self.limit.store(self.passed.load(SeqCst) + bytes, SeqCst);
    }

    fn holding(&self) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        self.passed.load(SeqCst) >= self.limit.load(SeqCst)
    }

    fn release(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.silent.store(false, SeqCst);
        self.limit.store(u64::MAX, SeqCst);
    }
}

/// Incompressible bytes, so a release is as big as its files.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A node killed (SIGKILL) while it receives a release, and one that vanishes from the
/// network mid-receive, are both found out in seconds: the push fails naming the node,
/// the deploy is aborted on the other node, the old release keeps serving, and the app's
/// deploy lock is free for the next push. Idle connections to a node do not keep the
/// controller out either.
#[test]
fn a_node_dying_or_vanishing_mid_receive_fails_the_push_in_seconds() {
    let s = Server::start();
    let mut agents: Vec<Agent> = ["n1", "n2"].iter().map(|n| Agent::start(&s, n)).collect();
    let relay = Relay::start(&agents[1].addr);
    s.ok(&s.admin, &format!("nodes:add n1 {}", agents[0].addr));
    s.ok(&s.admin, &format!("nodes:add n2 {}", relay.addr));
    // Only the added nodes: the built-in one stays a node until removed.
    s.ok(&s.admin, "nodes:remove local");
    // 100 connections to n1 that never say a word.
    let _idle: Vec<std::net::TcpStream> = (0..100)
        .map(|_| std::net::TcpStream::connect(&agents[0].addr).unwrap())
        .collect();
    let dir = web_repo(&s.dir.path().join("src"), "v1\n", WEB);
    s.git_ok(&s.admin, &dir, &["push", &s.url("blog"), "main"]);
    assert_eq!(s.get("blog", "/"), (200, "v1\n".to_string()));

    let push = |s: &Server, dir: &Path| {
        let mut git = std::process::Command::new("git");
        git.args(["push", &s.url("blog"), "main"])
            .current_dir(dir)
            .env("GIT_SSH_COMMAND", s.git_ssh_command(&s.admin))
            .env("GIT_TERMINAL_PROMPT", "0");
        // Far above how long it takes; a wedged rollout used to take 600 s.
        output_within(&mut git, 150).expect("the push hung on a dead node")
    };
    let wait_holding = |relay: &Relay| {
        for _ in 0..1200 {
            if relay.holding() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("the release never started to flow to n2");
    };
    let v1_only = |s: &Server| {
        for n in ["n1", "n2"] {
            let procs = node_status(s, n)["status"]["apps"]["blog"]["processes"].clone();
            let procs = procs.as_array().unwrap();
            assert_eq!(procs.len(), 1, "{n}: {procs:?}");
            assert!(procs[0]["release"].as_str().unwrap().starts_with("v1-"));
        }
    };

    // Killed mid-receive: 8 MB that do not compress, 256 KiB of them let through.
    std::fs::write(dir.join("blob.bin"), noise(8 << 20, 1)).unwrap();
    set_body(&dir, "v2\n");
    relay.hold_after(256 << 10, false);
    let out = std::thread::scope(|sc| {
        let h = sc.spawn(|| push(&s, &dir));
        wait_holding(&relay);
        let killed = std::time::Instant::now();
        agents[1].kill();
        let out = h.join().unwrap();
        // A figure for the log, not an assertion.
        eprintln!(
            "push failed {:?} after the node was killed",
            killed.elapsed()
        );
        out
    });
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("node n2") && err.contains("unreachable"),
        "{err}"
    );
    assert!(err.contains("deploy aborted on every node"), "{err}");
    assert_eq!(s.get("blog", "/"), (200, "v1\n".to_string()));
    relay.release();
    agents[1].restart();
    v1_only(&s);

    // Gone from the network mid-receive: nothing closes; keepalives find out.
    std::fs::write(dir.join("blob.bin"), noise(8 << 20, 2)).unwrap();
    set_body(&dir, "v3\n");
    relay.hold_after(256 << 10, true);
    let out = std::thread::scope(|sc| {
        let h = sc.spawn(|| push(&s, &dir));
        wait_holding(&relay);
        let silent = std::time::Instant::now();
        let out = h.join().unwrap();
        eprintln!(
            "push failed {:?} after the node fell silent",
            silent.elapsed()
        );
        out
    });
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("node n2") && err.contains("unreachable"),
        "{err}"
    );
    assert_eq!(s.get("blog", "/"), (200, "v1\n".to_string()));
    relay.release();
    v1_only(&s);

    // The deploy lock was let go: the next push goes live everywhere.
    set_body(&dir, "v4\n");
    let out = s.git_ok(&s.admin, &dir, &["push", &s.url("blog"), "main"]);
    assert!(
        text(&out.stderr).contains("is live in production on n1, n2"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(s.get("blog", "/"), (200, "v4\n".to_string()));
}
