//! `shell` and `run` end to end: real ssh (under a real pty from `script` and tmux), the
//! in-process local node, real Docker.

mod util;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::*;

const WEB: &str = "web: mkdir -p /tmp/w && echo hi > /tmp/w/index.html && exec busybox httpd -f -p $PORT -h /tmp/w\n";

/// A server with `app` live (one web process) and GREETING set.
fn live_app() -> Server {
    let s = Server::start();
    let dir = repo(&s.dir.path().join("src"));
    std::fs::write(dir.join("Procfile"), WEB).unwrap();
    commit(&dir, "README", "tiny\n", "tiny app");
    s.git_ok(&s.admin, &dir, &["push", &s.url("app"), "main"]);
    s.ok(&s.admin, "config:set app GREETING=hello-from-config");
    s
}

/// The local node's instance id (it labels the node's containers with it).
fn node_instance(s: &Server) -> String {
    util::node_instance(&s.data.join("node")).unwrap()
}

/// This server's one-off containers, running or not.
fn oneoffs(s: &Server) -> Vec<String> {
    let out = run(Command::new("docker").args([
        "ps",
        "-aq",
        "--filter",
        "label=magrathea.oneoff",
        "--filter",
        &format!("label=magrathea.instance={}", node_instance(s)),
    ]));
    text(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn web_container(s: &Server) -> String {
    let st: serde_json::Value =
        serde_json::from_str(&s.ok(&s.admin, "nodes:info local --json")).unwrap();
    st["status"]["apps"]["app"]["processes"][0]["container"]
        .as_str()
        .unwrap()
        .to_string()
}

fn web_port(s: &Server) -> u64 {
    let st: serde_json::Value =
        serde_json::from_str(&s.ok(&s.admin, "nodes:info local --json")).unwrap();
    let procs = st["status"]["apps"]["app"]["processes"]
        .as_array()
        .unwrap()
        .clone();
    let web: Vec<_> = procs
        .iter()
        .filter(|p| p["ptype"] == "web" && p["state"] == "running")
        .collect();
    assert_eq!(web.len(), 1, "{procs:?}");
    web[0]["port"].as_u64().unwrap()
}

fn ssh_line(s: &Server, key: &Key, tty: &str, remote: &str) -> String {
    let args: Vec<String> = s
        .ssh_args(key)
        .into_iter()
        .map(|a| shell_words::quote(&a).into_owned())
        .collect();
    format!(
        "ssh {tty} {} git@127.0.0.1 {}",
        args.join(" "),
        shell_words::quote(remote)
    )
}

/// The processes of `container` that belong to a `shell` session (the product marks their
/// environment with `MAGRATHEA_SHELL`), read from the host's /proc.
fn shell_processes(container: &str) -> usize {
    let out = run(Command::new("docker").args(["top", container, "-eo", "pid"]));
    assert!(out.status.success(), "docker top: {}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .skip(1)
        .filter(|pid| {
            std::fs::read(format!("/proc/{}/environ", pid.trim())).is_ok_and(|env| {
                env.split(|b| *b == 0)
                    .any(|v| v.starts_with(b"MAGRATHEA_SHELL="))
            })
        })
        .count()
}

/// Polls `f` until it holds; `timeout` bounds a hang, far above a loaded machine's pace.
fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn shell_and_run() {
    require("script");
    require("tmux");
    let s = live_app();
    let port = web_port(&s);

    // (1) A shell under a real pty: the process's env, the shell's exit code, and the
    // terminal's size.
    let inner = format!(
        "stty cols 91 rows 37; exec {}",
        ssh_line(&s, &s.admin, "-tt", "shell app")
    );
    let mut child = Command::new("script")
        .args(["-qfec", &inner, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sin = child.stdin.take().unwrap();
    sin.write_all(
        b"echo \"port=[$PORT]\"; stty size; \
          echo \"who=[$(id -u) $(grep CapEff /proc/self/status | cut -f2) \
          $(grep NoNewPrivs /proc/self/status | cut -f2)]\"; exit 3\n",
    )
    .unwrap();
    sin.flush().unwrap();
    // stdin stays open until the shell is done (an EOF would end the session early).
    let out = child.wait_with_output().unwrap();
    drop(sin);
    let o = text(&out.stdout);
    assert!(
        o.contains(&format!("port=[{port}]")),
        "PORT of the process in the shell:\n{o}\n{}\n{}",
        text(&out.stderr),
        s.log()
    );
    assert!(o.contains("37 91"), "pty size reaches the shell:\n{o}");
    // The shell is confined like the process: the app's uid, no capabilities, no privilege
    // gain.
    let info: serde_json::Value =
        serde_json::from_str(&s.ok(&s.admin, "apps:info app --json")).unwrap();
    let uid = info["uid"].as_u64().unwrap();
    assert!(
        o.contains(&format!("who=[{uid} 0000000000000000 1]")),
        "the shell's uid, capabilities, no-new-privileges:\n{o}"
    );
    assert_eq!(out.status.code(), Some(3), "the shell's exit code:\n{o}");

    // (2) A window resize reaches the shell's tty (tmux, a real terminal).
    let sock = format!("mg-shell-{}", std::process::id());
    let rc = s.dir.path().join("tmux-rc");
    let cmd = format!(
        "{}; echo $? > {}",
        ssh_line(&s, &s.admin, "-t", "shell app"),
        rc.display()
    );
    let tmux = |args: &[&str]| {
        let out = run(Command::new("tmux").arg("-L").arg(&sock).args(args));
        assert!(out.status.success(), "tmux {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    tmux(&[
        "-f",
        "/dev/null",
        "new-session",
        "-d",
        "-s",
        "t",
        "-x",
        "80",
        "-y",
        "24",
        &cmd,
    ]);
    let pane = || tmux(&["capture-pane", "-p", "-t", "t"]);
    let result = std::panic::catch_unwind(|| {
        // The shell is up once it runs what is typed (no fixed wait: a loaded machine takes
        // longer to open the session).
        tmux(&["send-keys", "-t", "t", "echo \"up=[$((20+1))]\"", "Enter"]);
        wait_until("the shell in tmux", Duration::from_secs(120), || {
            pane().contains("up=[21]")
        });
        tmux(&["resize-window", "-t", "t", "-x", "100", "-y", "40"]);
        // The new size travels tmux -> ssh -> server -> the container's pty: ask until the
        // shell sees it.
        let mut asked = 0;
        wait_until("the resized size in tmux", Duration::from_secs(120), || {
            if pane().contains("sz=[40 100]") {
                return true;
            }
            asked += 1;
            if asked % 5 == 1 {
                tmux(&[
                    "send-keys",
                    "-t",
                    "t",
                    "echo \"sz=[$(stty size)]\"",
                    "Enter",
                ]);
            }
            false
        });
        // Ctrl-C reaches the shell's foreground process, not the session: sent once the
        // shell has started the command (it printed its marker). The sleep outlasts every
        // wait below, so the next command can only run if Ctrl-C ended it (no timing
        // involved).
        tmux(&[
            "send-keys",
            "-t",
            "t",
            "echo \"sleeping=[$((3*3))]\"; sleep 600; echo slept",
            "Enter",
        ]);
        wait_until(
            "the shell to start sleeping",
            Duration::from_secs(120),
            || pane().contains("sleeping=[9]"),
        );
        tmux(&["send-keys", "-t", "t", "C-c"]);
        tmux(&["send-keys", "-t", "t", "echo \"int=[$((6*7))]\"", "Enter"]);
        wait_until("the shell after Ctrl-C", Duration::from_secs(120), || {
            tmux(&["capture-pane", "-p", "-t", "t"]).contains("int=[42]")
        });
        assert!(!tmux(&["capture-pane", "-p", "-t", "t"]).contains("\nslept"));
        tmux(&["send-keys", "-t", "t", "exit 4", "Enter"]);
        wait_until("the shell's exit", Duration::from_secs(120), || {
            std::fs::read_to_string(&rc).is_ok_and(|r| r.trim() == "4")
        });
    });
    let _ = Command::new("tmux")
        .arg("-L")
        .arg(&sock)
        .arg("kill-server")
        .output();
    if let Err(e) = result {
        panic!("tmux part failed: {e:?}\nserver log:\n{}", s.log());
    }

    // The client goes away mid-shell: the shell goes too. Its processes are told apart
    // by the mark in their environment (a count of the container's processes also moves
    // with the web server's own children and the hang-up helper).
    let web = web_container(&s);
    let shells = || shell_processes(&web);
    assert_eq!(shells(), 0, "a shell before the test opened one");
    // ssh itself is killed, so its connection drops whatever the signal dispositions this
    // test inherits (an ssh that ignores SIGHUP outlives a killed `script`); `-tt` asks for
    // the pty without a local terminal.
    let mut child = Command::new("ssh")
        .args(s.ssh_args(&s.admin))
        .args(["-tt", "git@127.0.0.1", "shell app"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(
        "the shell in the container",
        Duration::from_secs(120),
        || shells() > 0,
    );
    child.kill().unwrap();
    let _ = child.wait();
    wait_until("the shell's end", Duration::from_secs(120), || {
        shells() == 0
    });

    // (3) No pty: one line, non-zero, nothing runs.
    let out = s.ssh(&s.admin, "shell app", None);
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stderr),
        "error: shell needs a terminal; use ssh -t\n"
    );

    // (4) run: stdin streamed with its EOF, exit codes, config vars, no leftovers.
    let out = s.ssh(&s.admin, "run app -- cat", Some("hi\n"));
    assert_eq!(
        (text(&out.stdout).as_str(), out.status.code()),
        ("hi\n", Some(0)),
        "{}",
        text(&out.stderr)
    );
    let out = s.ssh(&s.admin, "run app -- sh -c 'exit 7'", None);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    let out = s.ssh(
        &s.admin,
        "run app -- sh -c 'echo \"$GREETING $GIT_REV\" >&2; pwd; echo \"$1\"' x 'a b;c'",
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "/app\na b;c\n", "argv passed as is");
    let err = text(&out.stderr);
    // GIT_REV is the commit the live release was built from (as Dokku sets it).
    let sha = git_local(&s.dir.path().join("src"), &["rev-parse", "HEAD"]);
    assert_eq!(err, format!("hello-from-config {}\n", sha.trim()));
    assert!(oneoffs(&s).is_empty(), "{:?}", oneoffs(&s));
    // Under a pty, run uses a tty.
    let out = run(Command::new("script").args([
        "-qfec",
        &ssh_line(
            &s,
            &s.admin,
            "-tt",
            "run app -- sh -c 'test -t 0 && echo tty-yes'",
        ),
        "/dev/null",
    ]));
    assert!(
        text(&out.stdout).contains("tty-yes"),
        "{}",
        text(&out.stdout)
    );

    // The client goes away mid-run: the container goes too.
    let mut cmd = Command::new("ssh");
    cmd.args(s.ssh_args(&s.admin))
        .arg("git@127.0.0.1")
        .arg("run app -- sleep 60")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    wait_until("the one-off container", Duration::from_secs(120), || {
        !oneoffs(&s).is_empty()
    });
    child.kill().unwrap();
    let _ = child.wait();
    wait_until(
        "the one-off container's removal",
        Duration::from_secs(120),
        || oneoffs(&s).is_empty(),
    );

    // (5) Owners only: a viewer and a deployer are refused with one line; nothing runs.
    for role in ["viewer", "deployer"] {
        let k = s.key(role);
        s.add_key(&k, "user");
        s.ok(&s.admin, &format!("access:grant app {role} {role}"));
        for cmdline in ["shell app", "run app -- touch /data/pwned"] {
            let out = s.ssh(&k, cmdline, None);
            assert_eq!(out.status.code(), Some(1), "{role} {cmdline}");
            let err = text(&out.stderr);
            assert!(err.starts_with("error: access denied:"), "{err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }
    assert!(!s.data.join("node/apps/app/data/pwned").exists());
    // Unknown app, and an app that is not live: one line each.
    let out = s.ssh(&s.admin, "run nope -- true", None);
    assert_eq!(text(&out.stderr).lines().count(), 1);
    assert_eq!(out.status.code(), Some(1));
    s.ok(&s.admin, "apps:create idle");
    let out = s.ssh(&s.admin, "run idle -- true", None);
    assert_eq!(
        text(&out.stderr),
        "error: nothing of 'idle' is live in production\n"
    );
    // Audited, allowed and refused.
    let audit = s.ok(&s.admin, "audit app -n 100");
    assert!(audit.contains("run app"), "{audit}");
    assert!(audit.contains("shell app"), "{audit}");
    assert!(audit.contains("denied"), "{audit}");
}
