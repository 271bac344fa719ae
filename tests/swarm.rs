//! Environments on a Docker Swarm: a real two-node swarm (scripts/swarm-up.sh: a dockerd per
//! network namespace), `magrathea agent --swarm` in the manager's namespace, the real
//! controller, ssh and git. One shared cluster and app for every step (the swarm is the
//! expensive part). Needs root (namespaces); under CI a missing tool fails the test.

mod util;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use util::*;

fn root_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A swarm from scripts/swarm-up.sh, taken down (by its name) when dropped.
struct Swarm {
    name: String,
    /// (namespace, address, docker socket) per node.
    nodes: Vec<(String, String, String)>,
}

impl Swarm {
    /// `nodes` dockerds, the first `joined` of them in the swarm.
    fn up(nodes: usize, joined: usize) -> Swarm {
        for t in ["ip", "nsenter", "unshare", "dockerd"] {
            require(t);
        }
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "the swarm tests need root (network namespaces)"
        );
        // Unique per run: namespaces, bridge and files are named after it.
        let name = format!("t{:x}", std::process::id() % 0xfffffff);
        let out = run(Command::new(root_dir().join("scripts/swarm-up.sh"))
            .arg(&name)
            .arg(nodes.to_string())
            .env("SWARM_JOIN", joined.to_string()));
        let mut s = Swarm {
            name,
            nodes: vec![],
        };
        assert!(
            out.status.success(),
            "swarm-up failed: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        for l in text(&out.stdout).lines() {
            let w: Vec<&str> = l.split_whitespace().collect();
            if w.first() == Some(&"node") {
                s.nodes
                    .push((w[2].to_string(), w[3].to_string(), w[4].to_string()));
            }
        }
        assert_eq!(s.nodes.len(), nodes, "{}", text(&out.stdout));
        s
    }

    /// Node `i` (1-based), started outside the swarm, joins it now.
    fn join(&self, i: usize) {
        let out = run(Command::new(root_dir().join("scripts/swarm-up.sh"))
            .arg(&self.name)
            .arg("--join")
            .arg(i.to_string()));
        assert!(out.status.success(), "{}", text(&out.stderr));
    }

    /// Whether node `i`'s engine holds `image` (the manager's image of that name: releases
    /// name their stack image by id).
    fn has_image(&self, i: usize, image: &str) -> bool {
        let inspect = |n: usize, what: &str| {
            let sock = &self.nodes[n - 1].2;
            let out = Command::new("docker")
                .args(["-H", &format!("unix://{sock}"), "image", "inspect"])
                .args(["-f", "{{.Id}}", what])
                .output()
                .unwrap();
            out.status
                .success()
                .then(|| text(&out.stdout).trim().to_string())
        };
        let id = inspect(1, image).expect("the stack image on the manager");
        inspect(i, &id).is_some()
    }

    /// The ids of the swarm objects (`service`, `secret`, `network`) labelled as `app`'s.
    fn labelled(&self, what: &str, app: &str) -> String {
        let sock = &self.nodes[0].2;
        let out = run(Command::new("docker")
            .args([
                "-H",
                &format!("unix://{sock}"),
                what,
                "ls",
                "-q",
                "--filter",
            ])
            .arg(format!("label=magrathea.app={app}")));
        text(&out.stdout).trim().to_string()
    }

    /// A task's address on its overlay network (asked of the manager).
    fn task_address(&self, task: &str) -> String {
        let sock = &self.nodes[0].2;
        let out = run(Command::new("docker")
            .args(["-H", &format!("unix://{sock}"), "inspect", task, "-f"])
            .arg("{{range .NetworksAttachments}}{{range .Addresses}}{{.}} {{end}}{{end}}"));
        let all = text(&out.stdout);
        // The app's network, not Swarm's ingress (10.0.0.0/24 by default).
        let a = all
            .split_whitespace()
            .find(|a| !a.starts_with("10.0.0."))
            .unwrap_or_else(|| panic!("no overlay address for task {task}: {all}"));
        a.split('/').next().unwrap().to_string()
    }

    /// Node `i` (1-based) dies: every process in its namespace killed.
    fn kill_node(&self, i: usize) {
        let out = run(Command::new(root_dir().join("scripts/swarm-down.sh"))
            .arg(&self.name)
            .arg(i.to_string()));
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        let _ = Command::new(root_dir().join("scripts/swarm-down.sh"))
            .arg(&self.name)
            .output();
    }
}

/// `magrathea agent --swarm` in the manager's network namespace, on its engine.
struct SwarmAgent {
    child: Child,
    addr: String,
    root: PathBuf,
    log: Arc<Mutex<String>>,
}

impl SwarmAgent {
    /// The cluster's agent, on node 1 (the manager).
    fn start(server: &Server, swarm: &Swarm) -> SwarmAgent {
        let ip = &swarm.nodes[0].1;
        let endpoint = ["--endpoint".to_string(), format!("{ip}:2301")];
        SwarmAgent::spawn(server, swarm, 1, &endpoint)
    }

    /// The agent of node `i`, joined to the cluster's agent `manager` (it loads the stack
    /// image from there and reaches the node's tasks for `shell`).
    fn join(server: &Server, swarm: &Swarm, i: usize, manager: &SwarmAgent) -> SwarmAgent {
        let ip = &swarm.nodes[0].1;
        let join = [
            "--join".to_string(),
            format!("{ip}:2301"),
            "--join-token".to_string(),
            manager.root.join("join_token").display().to_string(),
        ];
        SwarmAgent::spawn(server, swarm, i, &join)
    }

    fn spawn(server: &Server, swarm: &Swarm, i: usize, extra: &[String]) -> SwarmAgent {
        let (ns, ip, sock) = &swarm.nodes[i - 1];
        let root = match i {
            1 => server.dir.path().join("swarm-agent"),
            _ => server.dir.path().join(format!("swarm-agent-{i}")),
        };
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{ns}"))
            .arg("--")
            .arg(bin())
            .args(["agent", "--swarm", "--listen", &format!("{ip}:2300")])
            .args(extra)
            .arg("--root")
            .arg(&root)
            .arg("--controller-key")
            .arg(server.data.join("controller_ed25519.pub"))
            .env("DOCKER_HOST", format!("unix://{sock}"))
            .env("MAGRATHEA_LOG", "info,magrathea=debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log: Arc<Mutex<String>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(a) = line.strip_prefix("agent listening on ") {
                    let _ = tx.send(a.to_string());
                }
                l.lock().unwrap().push_str(&format!("[out] {line}\n"));
            }
        });
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                l.lock().unwrap().push_str(&format!("[err] {line}\n"));
            }
        });
        // A bound on a hang: an agent that exits closes its stdout and fails at once.
        let addr = rx
            .recv_timeout(START_TIMEOUT)
            .unwrap_or_else(|_| panic!("swarm agent did not start:\n{}", log.lock().unwrap()));
        SwarmAgent {
            child,
            addr,
            root,
            log,
        }
    }
}

impl SwarmAgent {
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SwarmAgent {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("---- swarm agent log ----\n{}", self.log.lock().unwrap());
        }
    }
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls the app through the router, recording every answer in order.
struct Watch {
    stop: Arc<std::sync::atomic::AtomicBool>,
    seen: Arc<Mutex<Vec<(u16, String)>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    fn start(port: u16, app: &str) -> Watch {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen: Arc<Mutex<Vec<(u16, String)>>> = Arc::default();
        let (s, log, host) = (stop.clone(), seen.clone(), format!("{app}.localhost"));
        let handle = std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, body) = http_get(port, &host, "/");
                log.lock().unwrap().push((status, body.trim().to_string()));
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Watch {
            stop,
            seen,
            handle: Some(handle),
        }
    }

    /// Waits until a few answers in a row hold `body` (a fixed sleep may see none on a
    /// loaded machine); two minutes at most.
    fn wait_for(&self, body: &str) {
        wait_until(&format!("the watch to see {body:?}"), 120, || {
            let seen = self.seen.lock().unwrap();
            seen.len() >= 3 && seen[seen.len() - 3..].iter().all(|(_, b)| b.contains(body))
        });
    }

    fn finish(mut self) -> Vec<(u16, String)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// No failed answer, and once `new` answered, never `old` again.
fn assert_clean_switch(seen: &[(u16, String)], old: &str, new: &str) {
    let failed: Vec<_> = seen.iter().filter(|(s, _)| *s != 200).take(5).collect();
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    let first_new = seen.iter().position(|(_, b)| b.contains(new));
    let Some(i) = first_new else {
        panic!("never saw {new}: {:?}", seen.last());
    };
    let back: Vec<_> = seen[i..].iter().filter(|(_, b)| b.contains(old)).collect();
    assert!(back.is_empty(), "{old} answered after {new}: {back:?}");
}

fn ps(s: &Server) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(&s.ok(&s.admin, "ps shop --json")).unwrap();
    v.as_array()
        .cloned()
        .unwrap_or_else(|| panic!("ps --json: {v}"))
}

fn web_nodes(s: &Server) -> Vec<String> {
    let mut n: Vec<String> = ps(s)
        .iter()
        .filter(|p| {
            p["process"].as_str().unwrap_or("").starts_with("web.") && p["state"] == "running"
        })
        .map(|p| p["node"].as_str().unwrap_or_default().to_string())
        .collect();
    n.sort();
    n
}

const STACK: &str = "magrathea/stack-tiny:latest";

/// A running web process on swarm node `node` (`web.N`).
fn process_on(s: &Server, node: &str) -> String {
    ps(s)
        .iter()
        .find(|p| {
            p["process"].as_str().unwrap_or("").starts_with("web.")
                && p["state"] == "running"
                && p["node"] == node
        })
        .and_then(|p| p["process"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no web process on {node}: {:?}", ps(s)))
}

/// `ssh -tt` running `command`, `input` on its stdin (kept open until the session ends):
/// its exit code and everything it printed. Killed after two minutes (a bound on a hang).
fn shell(s: &Server, command: &str, input: &str) -> (Option<i32>, String) {
    use std::io::Write;
    let mut child = Command::new("ssh")
        .args(s.ssh_args(&s.admin))
        .args(["-tt", "git@127.0.0.1", command])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sin = child.stdin.take().unwrap();
    sin.write_all(input.as_bytes()).unwrap();
    sin.flush().unwrap();
    let pid = child.id() as i32;
    let (done, wait) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if wait.recv_timeout(Duration::from_secs(120)).is_err() {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let out = child.wait_with_output().unwrap();
    let _ = done.send(());
    drop(sin);
    (out.status.code(), text(&out.stdout) + &text(&out.stderr))
}

const MAGRATHEA_YML: &str = "environments:\n  production:\n    branch: main\n    cluster: sw\nscale:\n  web: 2\nhealthcheck:\n  boot_timeout: 8s\n";

/// Says which node answered too: `v2 from t1234-2`.
const PROCFILE: &str =
    "web: echo \"hello from $DYNO\"; sed \"s/NODE/$(hostname)/\" page > index.html; exec busybox httpd -f -p $PORT -h .\n";

fn push(s: &Server, dir: &Path, body: &str) -> std::process::Output {
    commit(dir, "page", &format!("{body} from NODE\n"), body);
    s.git(&s.admin, dir, &["push", "origin", "main"])
}

#[test]
fn a_swarm_environment_goes_live_all_or_nothing_and_follows_the_cluster() {
    let mut s = Server::start();
    // Three machines, two in the swarm at first; the stack image only on the manager.
    let swarm = Swarm::up(3, 2);
    let agent = SwarmAgent::start(&s, &swarm);
    let mut agent2 = SwarmAgent::join(&s, &swarm, 2, &agent);
    let (n1, n2) = (swarm.nodes[0].0.clone(), swarm.nodes[1].0.clone());
    let n3 = swarm.nodes[2].0.clone();
    assert!(swarm.has_image(1, STACK) && !swarm.has_image(2, STACK));

    // The cluster: added through its agent, listed, described.
    let out = s.ok(&s.admin, &format!("clusters:add sw --swarm {}", agent.addr));
    assert!(out.contains("2 nodes") && out.contains("pinned"), "{out}");
    assert!(s.ok(&s.admin, "clusters").contains("sw"));
    let info = s.ok(&s.admin, "clusters:info sw");
    assert!(
        info.contains(&n1) && info.contains(&n2) && info.contains("ready"),
        "{info}"
    );
    // Not a node: environments choose it by name only.
    assert!(!s.ok(&s.admin, "nodes").contains(" sw "));

    s.ok(&s.admin, "apps:create shop");
    let dir = repo(s.dir.path());
    std::fs::write(dir.join("Procfile"), PROCFILE).unwrap();
    std::fs::write(dir.join("magrathea.yml"), MAGRATHEA_YML).unwrap();
    git_local(&dir, &["add", "-A"]);
    s.git_ok(&s.admin, &dir, &["remote", "add", "origin", &s.url("shop")]);
    let out = push(&s, &dir, "v1");
    assert!(out.status.success(), "{}\n{}", text(&out.stderr), s.log());

    // Live on both swarm nodes through the router (node 2's agent loaded the image).
    assert_eq!(web_nodes(&s), vec![n1.clone(), n2.clone()]);
    assert!(swarm.has_image(2, STACK));
    let mut answered = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let (code, body) = s.get("shop", "/");
        assert_eq!(code, 200, "{body}");
        answered.insert(body.trim().to_string());
    }
    assert_eq!(
        answered.into_iter().collect::<Vec<_>>(),
        vec![format!("v1 from {n1}"), format!("v1 from {n2}")]
    );

    // A second deploy: no failed request, never v1 after v2.
    let watch = Watch::start(s.http_port, "shop");
    let out = push(&s, &dir, "v2");
    assert!(out.status.success(), "{}", text(&out.stderr));
    watch.wait_for("v2 from");
    assert_clean_switch(&watch.finish(), "v1 from", "v2 from");

    // shell into a task on the worker, through the agent there: the process's env.
    let on2 = process_on(&s, &n2);
    let (code, out) = shell(
        &s,
        &format!("shell shop --process {on2}"),
        "echo \"in-[$(hostname)]-[$DYNO]-[$(cat page)]\"; exit 3\n",
    );
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains(&format!("in-[{n2}]-[{on2}]-[v2 from NODE]")),
        "{out}"
    );

    // Apps apart: each app environment is alone on its overlay network. Another app's
    // process cannot reach shop's task by its address; shop's own one-off can.
    s.ok(&s.admin, "apps:create other");
    // (beside shop's repo, which is the server's temp dir: kept out of it)
    std::fs::write(dir.join(".git/info/exclude"), "/other/\n").unwrap();
    let other = repo(&s.dir.path().join("other"));
    std::fs::write(other.join("Procfile"), PROCFILE).unwrap();
    std::fs::write(
        other.join("magrathea.yml"),
        MAGRATHEA_YML.replace("web: 2", "web: 1"),
    )
    .unwrap();
    git_local(&other, &["add", "-A"]);
    s.git_ok(
        &s.admin,
        &other,
        &["remote", "add", "origin", &s.url("other")],
    );
    let out = push(&s, &other, "other");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let info: serde_json::Value =
        serde_json::from_str(&s.ok(&s.admin, "clusters:info sw --json")).unwrap();
    let task = info["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["app"] == "shop" && t["ptype"] == "web" && t["state"] == "running")
        .and_then(|t| t["container"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no running web task of shop: {info}"));
    let addr = swarm.task_address(&task);
    let probe = format!(
        "run {{}} -- sh -c 'timeout 2 wget -q -O - http://{addr}:5000/ || echo unreachable'"
    );
    let own = s.ok(&s.admin, &probe.replace("{}", "shop"));
    assert!(
        own.contains("v2 from"),
        "shop's own one-off reaches {addr}: {own}"
    );
    let out = s.ssh(&s.admin, &probe.replace("{}", "other"), None);
    let theirs = text(&out.stdout) + &text(&out.stderr);
    assert!(
        theirs.contains("unreachable") && !theirs.contains("v2 from"),
        "another app reaches shop's task at {addr}: {theirs}"
    );

    // apps:destroy on a cluster app: its services, secrets, network and release files on
    // the cluster go; a later app of the same name finds none of it.
    s.ok(&s.admin, "apps:destroy other --confirm other");
    for what in ["service", "secret", "network"] {
        let left = swarm.labelled(what, "other");
        assert!(
            left.is_empty(),
            "{what}s of the destroyed app are left: {left}"
        );
    }
    for dir in ["tarballs/other", "apps/other"] {
        assert!(!agent.root.join(dir).exists(), "{dir} is left");
    }
    s.ok(&s.admin, "apps:create other");
    let out = s.ssh(&s.admin, "ps other", None);
    let ps_other = text(&out.stdout) + &text(&out.stderr);
    assert!(
        ps_other.contains("nothing of 'other' is live"),
        "{ps_other}"
    );

    // A release that fails its health check on one node: nothing switches.
    std::fs::write(
        dir.join("Procfile"),
        format!(
            "web: if [ \"$(hostname)\" = \"{n2}\" ]; then sleep 600; fi; {}",
            &PROCFILE[5..]
        ),
    )
    .unwrap();
    git_local(&dir, &["add", "-A"]);
    let out = push(&s, &dir, "v3");
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("health check") && err.contains(&n2), "{err}");
    assert!(s.get("shop", "/").1.starts_with("v2 from"));
    let info = s.ok(&s.admin, "clusters:info sw");
    assert!(!info.contains("v3-"), "v3's services are gone: {info}");
    std::fs::write(dir.join("Procfile"), PROCFILE).unwrap();
    git_local(&dir, &["add", "-A"]);

    // A tampered release endpoint answer: the runner refuses it, nothing switches.
    let live = s.ok(&s.admin, "releases shop");
    let tarballs = agent.root.join("tarballs/shop");
    let v2 = std::fs::read_dir(&tarballs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("/v2-") && p.extension().is_some_and(|e| e == "gz"))
        .unwrap_or_else(|| panic!("no v2 tarball in {}: {live}", tarballs.display()));
    let good = std::fs::read(&v2).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    std::fs::write(&v2, &bad).unwrap();
    let out = s.ssh(&s.admin, "restart shop", None);
    let err = text(&out.stderr) + &text(&out.stdout);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("does not match its sha256"), "{err}");
    std::fs::write(&v2, &good).unwrap();
    assert!(s.get("shop", "/").1.starts_with("v2 from"));

    // scale web=3: three tasks, the router on all three.
    s.ok(&s.admin, "scale shop web=3");
    assert_eq!(web_nodes(&s).len(), 3);

    // logs: the processes' output through the task log API; -f follows tasks that start
    // later (a restart's).
    let logs = s.ok(&s.admin, "logs shop -n 50");
    assert!(logs.contains("hello from web.3"), "{logs}");
    // `-n 1`: the one backlog line is printed once every node's stream is live, so after
    // it nothing the restart prints can be missed (a fixed sleep guessed that).
    let mut follow = Command::new("ssh")
        .args(s.ssh_args(&s.admin))
        .arg("git@127.0.0.1")
        .arg("logs shop -f -n 1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let backlog = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("logs -f printed no backlog line");
    s.ok(&s.admin, "restart shop");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut followed = false;
    while let Ok(l) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if l.contains("hello from web.") {
            followed = true;
            break;
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(
        followed,
        "logs -f saw no line of the restarted tasks (after {backlog:?})"
    );

    // run: a one-off of the live release.
    let out = s.ok(&s.admin, "run shop -- cat page");
    assert!(out.contains("v2 from NODE"), "{out}");

    // Node 2's agent gone: a shell into a task there is refused, naming the reason.
    agent2.stop();
    wait_until("node 2's agent forgotten", 120, || {
        let v: serde_json::Value =
            serde_json::from_str(&s.ok(&s.admin, "clusters:info sw --json")).unwrap();
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["hostname"] == n2.as_str() && n["agent"].is_null())
    });
    let on2 = process_on(&s, &n2);
    let (code, out) = shell(&s, &format!("shell shop --process {on2}"), "exit 0\n");
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "{on2} runs on swarm node {n2}, which has no magrathea agent"
        )),
        "{out}"
    );

    // A swarm node dies: its tasks come back on the other, the router follows. Requests in
    // flight on the dead node may fail (counted, not asserted: the router fails over to
    // the live upstreams on a refused connection, not on one that hangs).
    let watch = Watch::start(s.http_port, "shop");
    swarm.kill_node(2);
    wait_until("every web task on the surviving node", 120, || {
        let n = web_nodes(&s);
        n.len() == 3 && n.iter().all(|x| *x == n1)
    });
    wait_until("the router on the survivors", 120, || {
        (0..6).all(|_| s.get("shop", "/") == (200, format!("v2 from {n1}\n")))
    });
    let seen = watch.finish();
    let failed = seen.iter().filter(|(c, _)| *c != 200).count();
    eprintln!(
        "node death: {failed} of {} requests failed while Swarm moved the tasks",
        seen.len()
    );
    let ps_now = s.ok(&s.admin, "ps shop");
    assert!(ps_now.contains(&n1) && !ps_now.contains(&n2), "{ps_now}");

    // A machine joins after the deploys: its agent loads the stack image from the
    // cluster's agent, and the next rollout places tasks there too.
    assert!(!swarm.has_image(3, STACK));
    swarm.join(3);
    let _agent3 = SwarmAgent::join(&s, &swarm, 3, &agent);
    wait_until("node 3 holds the stack image", 120, || {
        swarm.has_image(3, STACK)
    });
    s.ok(&s.admin, "restart shop");
    assert!(web_nodes(&s).contains(&n3), "{:?}", web_nodes(&s));
    wait_until("node 3 answers through the router", 120, || {
        s.get("shop", "/").1 == format!("v2 from {n3}\n")
    });

    // rollback: v1 from a tarball the cluster still holds.
    s.ok(&s.admin, "rollback shop");
    wait_until("v1 answers", 120, || {
        s.get("shop", "/").1.starts_with("v1 from")
    });

    // stop and start: the services go, and come back.
    s.ok(&s.admin, "stop shop");
    assert!(web_nodes(&s).is_empty());
    assert_ne!(s.get("shop", "/").0, 200);
    s.ok(&s.admin, "start shop");
    wait_until("v1 answers again", 120, || {
        s.get("shop", "/").1.starts_with("v1 from")
    });

    // The controller dies and comes back: the environment kept serving on the swarm, its
    // routes come back from the task list, and it is operable.
    s.kill9();
    s.spawn();
    wait_until("the routes after the restart", 120, || {
        s.get("shop", "/").1.starts_with("v1 from")
    });
    s.ok(&s.admin, "scale shop web=1");
    assert_eq!(web_nodes(&s).len(), 1);
    assert!(s.get("shop", "/").1.starts_with("v1 from"));
    let _ = &agent;
}
