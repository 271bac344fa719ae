//! What a `kill -9` of the controller leaves behind is put right at the next start: build
//! temp state is swept, nodes follow the store, and the built-in node stays a node when
//! others are added. Real binary, git, ssh and Docker.

mod util;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::*;

const WEB: &str = "web: busybox httpd -f -p $PORT -h .\n";

/// Polls `f` until it holds; the bound is on a hang, far above a loaded machine's pace.
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An app with its own buildpack (as `.buildpack/` in the repo, like an inline buildpack):
/// compile sleeps while the commit carries a `slow` file, so a build can be caught running.
fn slow_web_repo(dir: &Path) -> std::path::PathBuf {
    let dir = repo(dir);
    let bp = dir.join(".buildpack/bin");
    std::fs::create_dir_all(&bp).unwrap();
    std::fs::write(bp.join("detect"), "#!/bin/sh\necho inline\n").unwrap();
    std::fs::write(
        bp.join("compile"),
        "#!/bin/sh\nif [ -f \"$1/slow\" ]; then echo '-----> sleeping'; sleep 300; fi\necho '-----> compiled'\n",
    )
    .unwrap();
    std::fs::write(bp.join("release"), "#!/bin/sh\necho '---'\n").unwrap();
    std::fs::write(dir.join("Procfile"), WEB).unwrap();
    std::fs::write(dir.join("slow"), "").unwrap();
    commit(&dir, "index.html", "built\n", "slow build");
    dir
}

/// This controller's build containers, by the name it gives them.
fn build_containers(s: &Server) -> String {
    text(
        &run(Command::new("docker").args([
            "ps",
            "-aq",
            "--filter",
            &format!("name=magrathea-{}-build-", s.instance()),
        ]))
        .stdout,
    )
}

/// Processes of a push to this server (git's receive-pack and its hook carry the hook
/// socket's path in their environment).
fn push_processes(s: &Server) -> usize {
    let want = s.data.join("run/hook.sock");
    let want_canonical = std::fs::canonicalize(&s.data)
        .map(|d| d.join("run/hook.sock"))
        .unwrap_or_else(|_| want.clone());
    let needles: Vec<Vec<u8>> = [&want, &want_canonical]
        .iter()
        .map(|p| format!("MAGRATHEA_HOOK_SOCKET={}", p.display()).into_bytes())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("environ")).is_ok_and(|env| {
                env.split(|b| *b == 0)
                    .any(|v| needles.iter().any(|n| v == n.as_slice()))
            })
        })
        .count()
}

fn builds(s: &Server, app: &str) -> serde_json::Value {
    serde_json::from_str(&s.ok(&s.admin, &format!("builds {app} --json"))).unwrap()
}

#[test]
fn a_build_killed_with_the_controller_leaves_nothing_and_the_next_push_goes_live() {
    let mut s = Server::start();
    let dir = slow_web_repo(&s.dir.path().join("src"));
    s.ok(&s.admin, "apps:create slow");
    let push = Command::new("git")
        .args(["push", &s.url("slow"), "main"])
        .current_dir(&dir)
        .env("GIT_SSH_COMMAND", s.git_ssh_command(&s.admin))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the build container", || {
        !build_containers(&s).trim().is_empty()
    });
    let id = builds(&s, "slow")[0]["id"].as_i64().unwrap();
    let build_dir = s.data.join("builds").join(id.to_string());
    assert!(build_dir.exists());
    assert!(
        push_processes(&s) > 0,
        "the push's receive-pack and hook are running"
    );
    s.kill9();
    // The controller died while the hook waited for its verdict: the push is rejected, and
    // git's receive-pack and hook, left behind by the dead controller, end without moving a
    // ref (the hook fails closed when the controller hangs up).
    let out = push.wait_with_output().unwrap();
    assert!(!out.status.success(), "{}", text(&out.stderr));
    wait_for("the dead controller's receive-pack and hook to end", || {
        push_processes(&s) == 0
    });
    let refs = run(Command::new("git")
        .args(["for-each-ref"])
        .current_dir(s.data.join("repos/slow.git")));
    assert!(refs.status.success(), "{}", text(&refs.stderr));
    assert_eq!(text(&refs.stdout), "", "no ref moved");
    // What the crash left: the container still runs, the work dir is still there.
    assert!(!build_containers(&s).trim().is_empty());
    assert!(build_dir.exists());

    s.spawn();
    assert_eq!(build_containers(&s).trim(), "", "build container removed");
    assert!(!build_dir.exists(), "build dir removed");
    let b = builds(&s, "slow");
    assert_eq!(b[0]["status"], "failed", "{b}");

    assert_eq!(
        text(
            &s.git_ok(&s.admin, &dir, &["ls-remote", &s.url("slow")])
                .stdout
        ),
        ""
    );
    git_local(&dir, &["rm", "-q", "slow"]);
    git_local(&dir, &["commit", "-q", "-m", "fast"]);
    s.git_ok(&s.admin, &dir, &["push", &s.url("slow"), "main"]);
    assert_eq!(s.get("slow", "/"), (200, "built\n".to_string()));
}

fn current(s: &Server, app: &str) -> String {
    std::fs::read_link(s.data.join("node/apps").join(app).join("current"))
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn after_a_crash_nodes_follow_the_store_and_the_local_node_stays_a_node() {
    let mut s = Server::start();
    let dir = repo(&s.dir.path().join("src"));
    std::fs::write(dir.join("Procfile"), WEB).unwrap();
    commit(&dir, "index.html", "v1\n", "v1");
    s.git_ok(&s.admin, &dir, &["push", &s.url("web"), "main"]);
    commit(&dir, "index.html", "v2\n", "v2");
    s.git_ok(&s.admin, &dir, &["push", &s.url("web"), "main"]);
    // Back to v1: v2 stays unpacked on the node, so the node can be put ahead of the store.
    s.ok(&s.admin, "rollback web v1");
    assert_eq!(s.get("web", "/"), (200, "v1\n".to_string()));
    let v1 = current(&s, "web");
    assert!(v1.starts_with("v1-"), "{v1}");

    // The first node is added while the app runs on the built-in one.
    let agent = Agent::start(&s, "n1");
    s.ok(&s.admin, &format!("nodes:add n1 {}", agent.addr));
    let nodes = s.ok(&s.admin, "nodes");
    assert!(nodes.contains("local") && nodes.contains("n1"), "{nodes}");

    // The controller dies right after a node switched: the node's `current` is ahead.
    s.kill9();
    let app_dir = s.data.join("node/apps/web");
    let v2 = std::fs::read_dir(app_dir.join("releases"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("v2-"))
        .expect("v2 unpacked on the node");
    let tmp = app_dir.join("current.tmp");
    std::os::unix::fs::symlink(Path::new("releases").join(&v2), &tmp).unwrap();
    std::fs::rename(&tmp, app_dir.join("current")).unwrap();

    // A release command the crash cut off: its one-off container is still there.
    let inst = node_instance(&s.data.join("node")).unwrap();
    let once = format!("mg-{inst}-web-{v1}-release-1-once");
    let out = run(Command::new("docker").args([
        "run",
        "-d",
        "--name",
        &once,
        "--label",
        &format!("magrathea.instance={inst}"),
        "--label",
        "magrathea.oneoff=true",
        "--label",
        "magrathea.app=web",
        "magrathea/stack-tiny:latest",
        "busybox",
        "sleep",
        "300",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));

    s.spawn();
    wait_for("the cut-off release command removed", || {
        let out =
            run(Command::new("docker").args(["ps", "-aq", "--filter", &format!("name=^/{once}$")]));
        text(&out.stdout).trim().is_empty()
    });
    wait_for("the node switched back to the store's live release", || {
        current(&s, "web") == v1
    });
    assert_eq!(s.get("web", "/"), (200, "v1\n".to_string()));
    let ps = s.ok(&s.admin, "ps web");
    assert!(ps.contains("local"), "{ps}");
    assert!(s.ok(&s.admin, "nodes").contains("local"));

    // Removing the built-in node is explicit, and remembered.
    s.ok(&s.admin, "nodes:remove local");
    s.kill9();
    s.spawn();
    let nodes = s.ok(&s.admin, "nodes");
    assert!(!nodes.contains("local") && nodes.contains("n1"), "{nodes}");

    // `nodes:add local` brings it back, for good; an address or a second add is refused.
    let out = s.ssh(&s.admin, "nodes:add local 127.0.0.1:2300", None);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("`nodes:add local`") && err.lines().count() == 1,
        "{err}"
    );
    assert!(!s.ok(&s.admin, "nodes").contains("local"));
    let out = s.ok(&s.admin, "nodes:add local");
    assert!(out.contains("node 'local'"), "{out}");
    let nodes = s.ok(&s.admin, "nodes");
    assert!(nodes.contains("local") && nodes.contains("n1"), "{nodes}");
    let out = s.ssh(&s.admin, "nodes:add local", None);
    assert_eq!(text(&out.stderr), "error: node 'local' is already a node\n");
    s.kill9();
    s.spawn();
    let nodes = s.ok(&s.admin, "nodes");
    assert!(nodes.contains("local") && nodes.contains("n1"), "{nodes}");
    let info: serde_json::Value =
        serde_json::from_str(&s.ok(&s.admin, "nodes:info local --json")).unwrap();
    assert!(info["status"]["apps"]["web"].is_object(), "{info}");
}
