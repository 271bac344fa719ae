//! A service reached from every node of its environment (issue 13): Postgres runs on n1,
//! the app (Flask + SQLAlchemy + Flask-Migrate under gunicorn, from PyPI; its release
//! command `flask db upgrade`) on n1 and n2, and both read and write through the same
//! `DATABASE_URL`; n2's through a forwarder that answers under the service's name on the
//! app's network there and tunnels over SSH to n1's agent with a link key of n2's.
//! Another app on n2 reaches the forwarder neither by name nor by address until it is
//! linked too, and unlinked its own forwarder goes; a link key opens nothing but its
//! tunnel.

mod util;

use std::path::Path;
use std::process::Command;

use util::*;

/// The containers of the node with this root that carry `label`.
fn labelled(root: &Path, label: &str) -> Vec<String> {
    labelled_containers(root, &[label])
}

/// The published port of `app`'s web process on the node with this root.
fn web_port(root: &Path, app: &str) -> u16 {
    let ids = labelled(root, &format!("magrathea.app={app}"));
    let id = ids
        .iter()
        .find(|id| {
            let out = run(Command::new("docker").args([
                "inspect",
                "-f",
                "{{index .Config.Labels \"magrathea.process\"}}",
                id,
            ]));
            text(&out.stdout).trim() == "web"
        })
        .unwrap_or_else(|| panic!("no web process of {app} on {}", root.display()));
    let out = run(Command::new("docker").args([
        "inspect",
        "-f",
        "{{index .Config.Labels \"magrathea.port\"}}",
        id,
    ]));
    text(&out.stdout).trim().parse().unwrap()
}

/// From inside `container`: what resolving and connecting to `host:port` gives.
fn reach(container: &str, host: &str, port: u16) -> String {
    let code = format!(
        "import socket\n\
try:\n socket.getaddrinfo('{host}', {port})\n\
except OSError:\n print('no name'); raise SystemExit\n\
try:\n socket.create_connection(('{host}', {port}), timeout=2); print('open')\n\
except OSError as e:\n print('closed', e)\n"
    );
    let out = run(Command::new("docker").args(["exec", container, "python3", "-c", &code]));
    text(&out.stdout).trim().to_string()
}

/// The rows after both nodes wrote: the migration's seeded (pinned) note, then theirs.
const ROWS: &str = "seeded*,from-n1,from-n2\n";

#[test]
fn a_service_on_one_node_is_reached_from_every_node_of_its_environment() {
    let s = Server::start();
    let mut agents: Vec<Agent> = ["n1", "n2"].iter().map(|n| Agent::start(&s, n)).collect();
    for (i, a) in agents.iter().enumerate() {
        s.ok(&s.admin, &format!("nodes:add n{} {}", i + 1, a.addr));
    }
    s.ok(&s.admin, "nodes:remove local");
    s.ok(&s.admin, "apps:create shop");
    s.ok(&s.admin, "services:create postgres shop-db --node n1");
    s.ok(&s.admin, "services:link shop shop-db");

    let dir = fixture_repo(&s.dir.path().join("shop"), "services-orm");
    // The service linked by hand (pinned to n1), not declared.
    commit(&dir, "magrathea.yml", "stack: bookworm\n", "linked by hand");
    let out = s.git_ok(&s.admin, &dir, &["push", &s.url("shop"), "main"]);
    let push = text(&out.stderr);
    assert!(push.contains("flask --app app db upgrade"), "{push}");
    assert!(push.contains("is live in production on n1, n2"), "{push}");

    // Each node's web process writes and reads, the same URL on both.
    for (i, a) in agents.iter().enumerate() {
        let port = web_port(&a.root, "shop");
        let (status, body) = http_get(port, "shop", &format!("/notes/add?text=from-n{}", i + 1));
        assert_eq!((status, body.as_str()), (200, "added\n"), "n{}", i + 1);
    }
    let (status, body) = http_get(web_port(&agents[1].root, "shop"), "shop", "/notes");
    assert_eq!((status, body.as_str()), (200, ROWS));
    // The forwarder is on n2, where the service is not; none on n1.
    let fwd = labelled(&agents[1].root, "magrathea.forward");
    assert_eq!(fwd.len(), 1, "{fwd:?}");
    assert!(labelled(&agents[0].root, "magrathea.forward").is_empty());

    // Another app on n2 reaches it neither by the service's name nor by its address.
    s.ok(&s.admin, "apps:create other");
    let other = fixture_repo(&s.dir.path().join("other"), "probe");
    s.git_ok(&s.admin, &other, &["push", &s.url("other"), "main"]);
    let other_web = labelled(&agents[1].root, "magrathea.app=other")
        .into_iter()
        .next()
        .expect("other's web process on n2");
    assert_eq!(reach(&other_web, "shop-db", 5432), "no name");
    let fwd_ip = text(
        &run(Command::new("docker").args([
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &fwd[0],
        ]))
        .stdout,
    )
    .trim()
    .to_string();
    let r = reach(&other_web, &fwd_ip, 5432);
    assert!(
        r.starts_with("closed"),
        "other app reached the forwarder: {r}"
    );
    // shop's own process on n2 does reach it by name (the check itself works).
    let shop_web = labelled(&agents[1].root, "magrathea.app=shop")
        .into_iter()
        .find(|c| !fwd.contains(c))
        .unwrap();
    assert_eq!(reach(&shop_web, "shop-db", 5432), "open");

    // A link key is no controller: n2's opens no verb on n1's agent.
    let keyfile = std::fs::read_dir(agents[1].root.join("forwards"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&keyfile).unwrap()).unwrap();
    let key_path = s.dir.path().join("link_key");
    std::fs::write(&key_path, saved["private_key"].as_str().unwrap()).unwrap();
    std::fs::set_permissions(
        &key_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let out = run(ssh_to_agent(&agents[0].addr, &key_path).args(["magrathea@127.0.0.1", "status"]));
    assert!(!out.status.success(), "a link key ran a verb: {out:?}");
    assert!(!text(&out.stdout).contains("instance"), "{out:?}");
    // It did get in (the refusal is the channel's, not the login's).
    assert!(!text(&out.stderr).contains("Permission denied"), "{out:?}");

    // Linked, the other app gets a forwarder of its own on n2 and reaches the service by
    // name; unlinked, that forwarder goes and shop's stays.
    s.ok(&s.admin, "services:link other shop-db");
    assert_eq!(labelled(&agents[1].root, "magrathea.forward").len(), 2);
    let other_web = labelled(&agents[1].root, "magrathea.app=other")
        .into_iter()
        .next()
        .expect("other's new web process on n2");
    assert_eq!(reach(&other_web, "shop-db", 5432), "open");
    s.ok(&s.admin, "services:unlink other shop-db");
    assert_eq!(labelled(&agents[1].root, "magrathea.forward"), fwd);

    // n1's agent gone, n2's queries fail though the database still runs; n1 back, they
    // work again. n2's agent restarted serves its forwarder again from what it kept.
    let n2 = web_port(&agents[1].root, "shop");
    agents[0].kill();
    assert_ne!(http_get(n2, "shop", "/notes").0, 200);
    agents[0].restart();
    answers_rows(n2);
    agents[1].restart();
    answers_rows(n2);

    // The last app linked from n2 gone, n1 lets n2's link key in no more, and n2 keeps
    // no forwarder.
    s.ok(&s.admin, "apps:destroy shop --confirm shop");
    let out = run(ssh_to_agent(&agents[0].addr, &key_path).args(["magrathea@127.0.0.1", "status"]));
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "a revoked link key got in: {out:?}"
    );
    assert!(labelled(&agents[1].root, "magrathea.forward").is_empty());
}

/// Polls n2's web process until its rows come back (two minutes at most: the forwarder
/// reconnects to the restarted agent in the background, slowly on a loaded machine).
fn answers_rows(port: u16) {
    let mut last = (0, String::new());
    for _ in 0..600 {
        last = http_get(port, "shop", "/notes");
        if last.0 == 200 {
            assert_eq!(last.1, ROWS);
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("n2's process never reached the service again: {last:?}");
}
