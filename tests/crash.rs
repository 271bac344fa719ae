//! Crash consistency (issue 10): the controller is killed with SIGKILL at each named step of
//! a push (build, pack, prepare, release command, health check, switch, go-live, live, verdict) by a
//! failpoint compiled in with the `failpoints` feature (`src/failpoint.rs`). After a restart
//! the store, the nodes' `current`, the router and git agree on the release that was live
//! (for `live` and `verdict`, the one the crashed push made live: the push journal moves git's refs),
//! nothing of the interrupted build or rollout is left (build containers and dirs, partial
//! tarballs, release-command containers, processes) and the next push goes live.
//!
//! One server and one remote agent node (`a1`, first by name, so the release command runs
//! there and a rollout spans a real node besides the built-in `local`) serve every step; the
//! server is restarted between steps. Real binary, git, ssh and Docker.

mod util;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use util::*;

/// The release command sleeps while the commit carries a `slow` file, so the controller
/// can be killed while it runs on the node.
const PROCFILE: &str = "web: busybox httpd -f -p $PORT -h .\n\
                        release: echo release command runs; if [ -f slow ]; then sleep 600; fi\n";

/// In pipeline order. From `live` on the store has the new release live: the restart
/// finishes the push (the journal moves git's refs) instead of undoing it.
const STEPS: [&str; 9] = [
    "build",
    "pack",
    "prepare",
    "release-command",
    "health-check",
    "switch",
    "go-live",
    "live",
    "verdict",
];

fn wait_for(what: &str, mut f: impl FnMut() -> Result<(), String>) {
    let t = Instant::now();
    loop {
        match f() {
            Ok(()) => return,
            Err(e) if t.elapsed() > Duration::from_secs(120) => {
                panic!("timed out waiting for {what}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// What should be live: its version, node release name, commit and the page it serves.
#[derive(Debug, Clone)]
struct Live {
    name: String,
    commit: String,
    content: String,
}

struct World {
    s: Server,
    a1: Agent,
    dir: PathBuf,
}

impl World {
    /// The node roots: the built-in node's and a1's.
    fn node_roots(&self) -> [(&'static str, PathBuf); 2] {
        [
            ("local", self.s.data.join("node")),
            ("a1", self.a1.root.clone()),
        ]
    }

    fn push_ok(&self, content: &str) -> String {
        let commit = commit(&self.dir, "index.html", content, content.trim());
        self.s.git_ok(
            &self.s.admin,
            &self.dir,
            &["push", &self.s.url("web"), "main"],
        );
        commit
    }

    /// The store's live release of web in production: (node release name, commit).
    fn store_live(&self) -> (String, String) {
        let v: serde_json::Value =
            serde_json::from_str(&self.s.ok(&self.s.admin, "releases web --json")).unwrap();
        let live: Vec<&serde_json::Value> = v
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["live"].as_array().is_some_and(|l| !l.is_empty()))
            .collect();
        assert_eq!(live.len(), 1, "one live release: {v}");
        let r = live[0];
        let name = format!(
            "v{}-{}",
            r["version"].as_i64().unwrap(),
            &r["sha256"].as_str().unwrap()[..12]
        );
        (name, r["git_sha"].as_str().unwrap().to_string())
    }

    /// Checks that everything agrees on `want` and nothing else is left.
    fn agree(&self, want: &Live) {
        let (name, commit) = self.store_live();
        assert_eq!(name, want.name, "the store's live release");
        assert_eq!(commit, want.commit, "the live release's commit");
        // The journal is settled by the start's reconcile, which runs in the background.
        wait_for("git's main to be the live commit", || {
            let git = git_local(
                &self.s.data.join("repos/web.git"),
                &["rev-parse", "refs/heads/main"],
            );
            (git.trim() == want.commit)
                .then_some(())
                .ok_or(format!("main is {}", git.trim()))
        });
        for (node, root) in self.node_roots() {
            wait_for(&format!("{node}'s current to be {}", want.name), || {
                let cur = current(&root);
                (cur == want.name)
                    .then_some(())
                    .ok_or(format!("current is {cur}"))
            });
            wait_for(&format!("only the live processes on {node}"), || {
                let left: Vec<String> = containers(&root)
                    .into_iter()
                    .filter(|c| !(c.release == want.name && c.oneoff.is_empty()))
                    .map(|c| c.name)
                    .collect();
                left.is_empty()
                    .then_some(())
                    .ok_or(format!("left: {left:?}"))
            });
            // Temp dirs of an interrupted receive or switch.
            let app = root.join("apps/web");
            for d in [app.clone(), app.join("releases")] {
                let dots: Vec<String> = std::fs::read_dir(&d)
                    .unwrap()
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with('.') || n.ends_with(".tmp"))
                    .collect();
                assert!(dots.is_empty(), "{node}: {} holds {dots:?}", d.display());
            }
        }
        let procs: usize = self
            .node_roots()
            .iter()
            .map(|(_, r)| containers(r).len())
            .sum();
        assert_eq!(procs, 1, "one web process in all (web=1)");
        wait_for("the router to serve the live release", || {
            let got = self.s.get("web", "/");
            (got == (200, want.content.clone()))
                .then_some(())
                .ok_or(format!("{got:?}"))
        });
        let builds = build_containers(&self.s);
        assert!(builds.is_empty(), "build containers left: {builds:?}");
        // Build dirs; a finished build's goes to builds/.trash and is deleted from there in
        // the background.
        wait_for("no build dirs", || {
            let builds = self.s.data.join("builds");
            let mut left: Vec<_> = std::fs::read_dir(&builds)
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .filter(|n| n != ".trash")
                .collect();
            if let Ok(rd) = std::fs::read_dir(builds.join(".trash")) {
                left.extend(rd.flatten().map(|e| e.file_name()));
            }
            left.is_empty()
                .then_some(())
                .ok_or(format!("builds/ holds {left:?}"))
        });
        let cooking: Vec<_> = std::fs::read_dir(self.s.data.join("releases/web"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".cooking-"))
            .collect();
        assert!(cooking.is_empty(), "partial tarballs left: {cooking:?}");
    }
}

/// The release a node's `current` names.
fn current(root: &Path) -> String {
    std::fs::read_link(root.join("apps/web/current"))
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .unwrap_or_default()
}

struct Container {
    name: String,
    release: String,
    oneoff: String,
}

/// Every container of the node with this root (processes and one-offs, running or not).
fn containers(root: &Path) -> Vec<Container> {
    let inst = node_instance(root).unwrap();
    let out = run(Command::new("docker").args([
        "ps",
        "-a",
        "--filter",
        &format!("label=magrathea.instance={inst}"),
        "--format",
        "{{.Names}} {{.Label \"magrathea.release\"}} {{.Label \"magrathea.oneoff\"}}",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| {
            let mut f = l.split(' ');
            let mut next = || f.next().unwrap_or_default().to_string();
            Container {
                name: next(),
                release: next(),
                oneoff: next(),
            }
        })
        .collect()
}

/// This controller's build containers, by the name it gives them.
fn build_containers(s: &Server) -> Vec<String> {
    let out = run(Command::new("docker").args([
        "ps",
        "-aq",
        "--filter",
        &format!("name=magrathea-{}-build-", s.instance()),
    ]));
    text(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// What the crash at `step` left, seen before the restart: proof that the failpoint cut the
/// pipeline where it says.
fn left_by_crash(w: &World, step: &str, live: &Live) {
    let roots = w.node_roots();
    let ahead = || {
        roots
            .iter()
            .filter(|(_, r)| current(r) != live.name)
            .count()
    };
    match step {
        "build" => {
            assert!(!build_containers(&w.s).is_empty(), "a build container");
            let dirs = std::fs::read_dir(w.s.data.join("builds"))
                .unwrap()
                .flatten()
                .any(|e| e.file_name() != ".trash");
            assert!(dirs, "a build dir");
        }
        "pack" => {
            let cooking = std::fs::read_dir(w.s.data.join("releases/web"))
                .unwrap()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(".cooking-"));
            assert!(cooking, "a partial tarball");
        }
        "health-check" => {
            let new = roots
                .iter()
                .flat_map(|(_, r)| containers(r))
                .any(|c| c.release != live.name && c.oneoff.is_empty());
            assert!(new, "a process of the new release");
        }
        "switch" => assert!(ahead() >= 1, "a node switched"),
        "go-live" => assert_eq!(ahead(), 2, "every node switched"),
        "live" | "verdict" => {
            assert_eq!(ahead(), 2, "every node switched");
            let git = git_local(
                &w.s.data.join("repos/web.git"),
                &["rev-parse", "refs/heads/main"],
            );
            assert_eq!(git.trim(), live.commit, "git's main has not moved");
        }
        _ => {}
    }
}

#[test]
fn a_controller_killed_at_each_pipeline_step_comes_back_consistent() {
    let s = Server::start();
    let a1 = Agent::start(&s, "a1");
    s.ok(&s.admin, &format!("nodes:add a1 {}", a1.addr));
    let dir = repo(&s.dir.path().join("src"));
    std::fs::write(dir.join("Procfile"), PROCFILE).unwrap();
    let mut w = World { s, a1, dir };
    w.push_ok("v1\n");
    // One web process: which node has it is up to placement; every node receives and
    // switches.
    w.s.ok(&w.s.admin, "scale web web=1");
    let (name, first) = w.store_live();
    let mut live = Live {
        name,
        commit: first,
        content: "v1\n".into(),
    };
    w.agree(&live);

    for step in STEPS {
        let slow = w.dir.join("slow");
        if step == "release-command" {
            std::fs::write(&slow, "").unwrap();
        }
        let crashed = commit(&w.dir, "index.html", &format!("{step}\n"), step);
        w.s.kill9();
        w.s.spawn_with_env(&[("MAGRATHEA_FAILPOINT", step)]);
        let push =
            w.s.git(&w.s.admin, &w.dir, &["push", &w.s.url("web"), "main"]);
        assert!(!push.status.success(), "{step}: the push went through");
        let status = w.s.wait_exit();
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "{step}: the server was not killed by its failpoint ({status:?}):\n{}",
            w.s.log()
        );
        // The log is read by another thread: the line may land just after the exit.
        wait_for(&format!("{step}: the failpoint to say it fired"), || {
            let log = w.s.log();
            log.contains(&format!("failpoint {step}: killing"))
                .then_some(())
                .ok_or(log)
        });
        left_by_crash(&w, step, &live);

        w.s.spawn();
        if step == "live" || step == "verdict" {
            // The crashed push went live: everything, git included, agrees on it.
            let (name, c) = w.store_live();
            assert_eq!(c, crashed, "the crashed push's commit is live");
            live = Live {
                name,
                commit: crashed,
                content: format!("{step}\n"),
            };
        }
        w.agree(&live);

        // The next push goes live.
        let _ = std::fs::remove_file(&slow);
        let content = format!("after {step}\n");
        let pushed = w.push_ok(&content);
        let (name, c) = w.store_live();
        assert_eq!(c, pushed);
        live = Live {
            name,
            commit: pushed,
            content,
        };
        w.agree(&live);
    }
}
