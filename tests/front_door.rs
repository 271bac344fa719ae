//! The SSH front door end to end: real `magrathea serve`, real OpenSSH and git clients.

mod util;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use util::*;

fn ls_remote(s: &Server, key: &Key, app: &str) -> String {
    let out = s.git_ok(key, s.dir.path(), &["ls-remote", &s.url(app)]);
    text(&out.stdout)
}

#[test]
fn push_branches_and_tag_then_clone_back_identical() {
    let s = Server::start();
    let src = repo(&s.dir.path().join("src"));
    commit(&src, "README", "hello\n", "first");
    commit(&src, "bin/run.sh", "#!/bin/sh\necho hi\n", "second");
    git_local(&src, &["checkout", "-q", "-b", "feature"]);
    commit(&src, "feature.txt", "f\n", "feature");
    git_local(&src, &["checkout", "-q", "main"]);
    git_local(&src, &["tag", "-a", "v1.0", "-m", "release 1.0"]);
    git_local(&src, &["tag", "light"]);

    let out = s.git_ok(
        &s.admin,
        &src,
        &["push", &s.url("myapp"), "main", "feature", "v1.0", "light"],
    );
    let err = text(&out.stderr);
    assert!(err.contains("remote: -----> myapp: received main"), "{err}");
    assert!(err.contains("received v1.0"), "{err}");

    let clone = s.dir.path().join("clone");
    s.git_ok(
        &s.admin,
        s.dir.path(),
        &["clone", "-q", &s.url("myapp.git"), clone.to_str().unwrap()],
    );
    s.git_ok(
        &s.admin,
        &clone,
        &["fetch", "-q", "--tags", "origin", "feature:feature"],
    );
    for r in ["main", "feature", "v1.0", "light"] {
        let a = git_local(&src, &["rev-parse", &format!("{r}^{{tree}}")]);
        let b = git_local(&clone, &["rev-parse", &format!("{r}^{{tree}}")]);
        assert_eq!(a, b, "tree of {r} differs");
        let a = git_local(&src, &["rev-parse", r]);
        let b = git_local(&clone, &["rev-parse", r]);
        assert_eq!(a, b, "{r} differs");
    }
    // Every spelling of the repository reaches the same repo.
    let expect = ls_remote(&s, &s.admin, "myapp");
    for spelling in ["myapp.git", "/myapp.git", "~/myapp"] {
        assert_eq!(ls_remote(&s, &s.admin, spelling), expect, "{spelling}");
    }
    // Protocol v2 passes through.
    let out = run(Command::new("git")
        .args(["-c", "protocol.version=2", "ls-remote", &s.url("myapp")])
        .env("GIT_SSH_COMMAND", s.git_ssh_command(&s.admin))
        .env("GIT_TRACE_PACKET", "1"));
    assert!(out.status.success());
    assert!(
        text(&out.stderr).contains("version 2"),
        "protocol v2 not negotiated"
    );
    // The push is in the audit trail with the key's name.
    let audit = s.ok(&s.admin, "audit myapp");
    assert!(
        audit.contains("git push") && audit.contains("admin"),
        "{audit}"
    );
}

#[test]
fn unknown_key_is_refused_at_authentication() {
    let s = Server::start();
    let stranger = s.key("stranger");
    let out = s.ssh(&stranger, "whoami", None);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );
    let src = repo(&s.dir.path().join("src"));
    commit(&src, "a", "a", "a");
    let out = s.git(&stranger, &src, &["push", &s.url("myapp"), "main"]);
    assert!(!out.status.success());
    assert!(s.ok(&s.admin, "apps").contains("no apps"));
}

#[test]
fn key_without_access_is_refused_everything_and_nothing_changes() {
    let s = Server::start();
    let src = repo(&s.dir.path().join("src"));
    commit(&src, "a", "1", "one");
    s.git_ok(&s.admin, &src, &["push", &s.url("web"), "main"]);
    let before = ls_remote(&s, &s.admin, "web");

    let bob = s.key("bob");
    s.add_key(&bob, "user");
    commit(&src, "a", "2", "two");
    let out = s.git(&bob, &src, &["push", &s.url("web"), "main"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no access"),
        "{}",
        text(&out.stderr)
    );
    let out = s.git(&bob, s.dir.path(), &["clone", &s.url("web"), "bobclone"]);
    assert!(!out.status.success());
    assert!(
        !s.dir.path().join("bobclone/.git").exists() || !s.dir.path().join("bobclone/a").exists()
    );
    for cmd in [
        "apps:info web",
        "access web",
        "access:grant web bob owner",
        "apps:destroy web --confirm web",
        "audit web",
        "audit",
        "keys",
        "apps:create other",
    ] {
        let out = s.ssh(&bob, cmd, None);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {}", text(&out.stdout));
        let err = text(&out.stderr);
        assert!(err.contains("access denied"), "{cmd}: {err}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "one-line error for {cmd}: {err}"
        );
    }
    let out = s.ssh(&bob, "keys:add eve --role admin", Some(&s.admin.public()));
    assert_eq!(out.status.code(), Some(1));
    assert!(s.ok(&bob, "apps").contains("no apps"));
    // Nothing changed.
    assert_eq!(ls_remote(&s, &s.admin, "web"), before);
    assert!(s.ok(&s.admin, "apps").contains("web"));
    assert!(!s.ok(&s.admin, "apps").contains("other"));
    assert!(s.ok(&s.admin, "access web").contains("only admins"));
    assert!(!s.ok(&s.admin, "keys").contains("eve"));
    // Every refusal was audited with the key's name.
    let audit = s.ok(&s.admin, "audit -n 100");
    assert!(
        audit
            .lines()
            .filter(|l| l.contains("bob") && l.contains("denied"))
            .count()
            >= 8,
        "{audit}"
    );

    // A viewer may clone and read but not push.
    s.ok(&s.admin, "access:grant web bob viewer");
    s.git_ok(
        &bob,
        s.dir.path(),
        &["clone", "-q", &s.url("web"), "bobclone2"],
    );
    assert!(s.ok(&bob, "apps:info web").contains("web"));
    let out = s.git(&bob, &src, &["push", &s.url("web"), "main"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("push needs deployer"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(ls_remote(&s, &s.admin, "web"), before);
    // A deployer may push.
    s.ok(&s.admin, "access:grant web bob deployer");
    s.git_ok(&bob, &src, &["push", &s.url("web"), "main"]);
    assert_ne!(ls_remote(&s, &s.admin, "web"), before);
    // Non-admins cannot create apps by pushing.
    let out = s.git(&bob, &src, &["push", &s.url("newapp"), "main"]);
    assert!(!out.status.success());
    assert!(!s.ok(&s.admin, "apps").contains("newapp"));
}

#[test]
fn tag_limited_ci_key_pushes_tags_only() {
    let s = Server::start();
    let src = repo(&s.dir.path().join("src"));
    commit(&src, "a", "1", "one");
    s.git_ok(&s.admin, &src, &["push", &s.url("api"), "main"]);
    let ci = s.key("ci");
    s.add_key(&ci, "user");
    s.ok(&s.admin, "access:grant api ci deployer --tags v*");
    assert!(s.ok(&s.admin, "access api").contains("v*"));

    commit(&src, "a", "2", "two");
    git_local(&src, &["tag", "v1.2"]);
    let out = s.git_ok(&ci, &src, &["push", &s.url("api"), "v1.2"]);
    assert!(text(&out.stderr).contains("received v1.2"));
    let refs = ls_remote(&s, &s.admin, "api");
    assert!(refs.contains("refs/tags/v1.2"));

    let out = s.git(&ci, &src, &["push", &s.url("api"), "main"]);
    assert!(!out.status.success(), "CI key pushed main");
    let err = text(&out.stderr);
    assert!(err.contains("may only push tags matching 'v*'"), "{err}");
    git_local(&src, &["tag", "nightly"]);
    let out = s.git(&ci, &src, &["push", &s.url("api"), "nightly"]);
    assert!(!out.status.success());
    assert_eq!(
        ls_remote(&s, &s.admin, "api"),
        refs,
        "a refused push moved refs"
    );

    // A tag it pushed is immutable to it: not moved (forced), not deleted.
    git_local(&src, &["tag", "-f", "v1.2", "HEAD~1"]);
    let out = s.git(&ci, &src, &["push", "--force", &s.url("api"), "v1.2"]);
    assert!(!out.status.success(), "CI key moved a release tag");
    assert!(
        text(&out.stderr).contains("may not move existing tag v1.2"),
        "{}",
        text(&out.stderr)
    );
    let out = s.git(&ci, &src, &["push", &s.url("api"), ":refs/tags/v1.2"]);
    assert!(!out.status.success(), "CI key deleted a release tag");
    assert!(text(&out.stderr).contains("may not delete existing tag v1.2"));
    assert_eq!(ls_remote(&s, &s.admin, "api"), refs);
    // Unless its grant says so.
    let out = s.ok(
        &s.admin,
        "access:grant api ci deployer --tags v* --allow-retag",
    );
    assert!(out.contains("may also move and delete"), "{out}");
    s.git_ok(&ci, &src, &["push", "--force", &s.url("api"), "v1.2"]);
    let one = git_local(&src, &["rev-parse", "HEAD~1"]);
    assert!(ls_remote(&s, &s.admin, "api").contains(&format!("{}\trefs/tags/v1.2", one.trim())));
    s.git_ok(&ci, &src, &["push", &s.url("api"), ":refs/tags/v1.2"]);
    assert!(!ls_remote(&s, &s.admin, "api").contains("v1.2"));
    let out = s.ssh(&s.admin, "access:grant api ci deployer --allow-retag", None);
    assert_eq!(out.status.code(), Some(1), "--allow-retag without --tags");

    // The trail says what each push did to each ref.
    let audit: serde_json::Value =
        serde_json::from_str(&s.ok(&s.admin, "audit api --json")).unwrap();
    let pushes: Vec<(String, String)> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["command"] == "git push")
        .map(|r| {
            (
                r["outcome"].as_str().unwrap().to_string(),
                r["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (outcome, detail) in [
        ("ok", "create refs/heads/main"),
        ("ok", "create refs/tags/v1.2"),
        ("denied", "update refs/heads/main"),
        ("denied", "create refs/tags/nightly"),
        ("denied", "force refs/tags/v1.2"),
        ("denied", "delete refs/tags/v1.2"),
        ("ok", "force refs/tags/v1.2"),
        ("ok", "delete refs/tags/v1.2"),
    ] {
        assert!(
            pushes
                .iter()
                .any(|(o, d)| o == outcome && d.starts_with(detail)),
            "no {outcome} {detail}: {pushes:?}"
        );
    }
}

#[test]
fn commands_grammar_and_hostile_names() {
    let s = Server::start();
    // Bare ssh prints the help.
    let out = s.ssh(&s.admin, "", None);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("apps:create"));
    assert!(s.ok(&s.admin, "help").contains("access:grant"));
    assert!(s.ok(&s.admin, "apps:create --help").contains("Usage"));
    assert!(s.ok(&s.admin, "version").starts_with("magrathea "));
    assert!(s.ok(&s.admin, "whoami").contains("admin"));

    let out = s.ssh(&s.admin, "frobnicate x", None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "error: unknown command 'frobnicate' (try 'help')"
    );

    for (i, bad) in ["../x", "a;b", "A", "x/../../etc", "'a b'", "$(id)", "-rf"]
        .iter()
        .enumerate()
    {
        let out = s.ssh(&s.admin, &format!("apps:create {bad}"), None);
        assert_ne!(out.status.code(), Some(0), "{bad} accepted");
        let src = repo(&s.dir.path().join(format!("r{i}")));
        commit(&src, "a", "1", "one");
        let out = s.git(
            &s.admin,
            &src,
            &[
                "push",
                &format!("ssh://git@127.0.0.1:{}/{bad}", s.port),
                "main",
            ],
        );
        assert!(!out.status.success(), "push to {bad} accepted");
    }
    let out = s.ssh(&s.admin, "apps:create 'unbalanced", None);
    assert_eq!(out.status.code(), Some(2));
    assert!(s.ok(&s.admin, "apps").contains("no apps"));
    assert_eq!(std::fs::read_dir(s.data.join("repos")).unwrap().count(), 0);

    // Apps and JSON output.
    assert!(s.ok(&s.admin, "apps:create shop").contains("created"));
    let out = s.ssh(&s.admin, "apps:create shop", None);
    assert!(text(&out.stderr).contains("already exists"));
    let v: serde_json::Value = serde_json::from_str(&s.ok(&s.admin, "apps --json")).unwrap();
    assert_eq!(v[0]["name"], "shop");
    let out = s.ssh(&s.admin, "apps:destroy shop", None);
    assert!(text(&out.stderr).contains("--confirm shop"));
    s.ok(&s.admin, "apps:destroy shop --confirm shop");
    assert!(!s.data.join("repos/shop.git").exists());

    // Keys over ssh.
    let k = s.key("dev");
    let out = s.ssh(&s.admin, "keys:add dev", Some("not a key"));
    assert_eq!(out.status.code(), Some(1));
    s.add_key(&k, "user");
    let out = s.ssh(&s.admin, "keys:add dev2", Some(&k.public()));
    assert!(text(&out.stderr).contains("already registered as 'dev'"));
    let keys: serde_json::Value = serde_json::from_str(&s.ok(&s.admin, "keys --json")).unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 2);
    assert!(s.ok(&k, "whoami").contains("dev"));
    let out = s.ssh(&s.admin, "keys:remove admin", None);
    assert!(text(&out.stderr).contains("last admin"));
    s.ok(&s.admin, "keys:remove dev");
    assert_eq!(s.ssh(&k, "whoami", None).status.code(), Some(255));
}

/// `magrathea hook pre-receive` as git runs it, talking to `socket` as push `id` with
/// `token`; (exit code, stdout, stderr).
fn run_hook(socket: &Path, id: &str, token: &str) -> (Option<i32>, String, String) {
    let mut child = Command::new(bin())
        .args(["hook", "pre-receive"])
        .env("MAGRATHEA_HOOK_SOCKET", socket)
        .env("MAGRATHEA_PUSH_ID", id)
        .env("MAGRATHEA_PUSH_TOKEN", token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let update = format!("{} {} refs/heads/main\n", "0".repeat(40), "a".repeat(40));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(update.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// A stand-in controller on a unix socket: it reads the hook's request line, answers `reply`
/// and hangs up.
fn fake_controller(path: &Path, reply: &'static str) -> std::thread::JoinHandle<String> {
    let l = std::os::unix::net::UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (c, _) = l.accept().unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(&c), &mut line).unwrap();
        (&c).write_all(reply.as_bytes()).unwrap();
        line
    })
}

/// The audit trail's rows, newest first, as JSON.
fn audit_rows(s: &Server, app: Option<&str>) -> Vec<serde_json::Value> {
    let cmd = match app {
        Some(a) => format!("audit {a} -n 50 --json"),
        None => "audit -n 50 --json".to_string(),
    };
    let v: serde_json::Value = serde_json::from_str(&s.ok(&s.admin, &cmd)).unwrap();
    let mut rows = v.as_array().unwrap().clone();
    rows.sort_by_key(|r| std::cmp::Reverse(r["id"].as_i64()));
    rows
}

#[test]
fn hook_without_a_controller_or_a_valid_token_rejects_the_push() {
    let s = Server::start();
    let src = repo(&s.dir.path().join("src"));
    commit(&src, "a", "1", "one");
    s.git_ok(&s.admin, &src, &["push", &s.url("web"), "main"]);
    let before = ls_remote(&s, &s.admin, "web");
    let socket = s.data.join("run/hook.sock");

    // Someone on the host talks to the hook socket without a push's token: refused, and
    // the refusal is on the audit trail.
    let (code, out, _) = run_hook(&socket, "0123456789abcdef", "not-the-token");
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(
        out,
        "error: unknown push or bad token; push rejected\n",
        "{}",
        s.log()
    );
    let hook_rows = || -> Vec<serde_json::Value> {
        audit_rows(&s, None)
            .into_iter()
            .filter(|r| r["key_name"] == "(hook)")
            .collect()
    };
    let rows = hook_rows();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["outcome"], "denied", "{rows:?}");
    assert_eq!(rows[0]["command"], "git hook pre-receive", "{rows:?}");
    assert_eq!(rows[0]["detail"], "hook request for an unknown push");
    // A request that is not one: refused and audited too.
    let mut c = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    c.write_all(b"{\"push_id\": 7}\n").unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut c, &mut answer).unwrap();
    assert!(answer.contains("bad hook request"), "{answer}");
    assert!(answer.ends_with("{\"exit\":1}\n"), "{answer}");
    let rows = hook_rows();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["detail"], "malformed hook request", "{rows:?}");
    assert_eq!(rows[0]["outcome"], "denied", "{rows:?}");

    // The hook fails closed on what a broken controller might say: a frame that is not
    // JSON, and a hang-up before the verdict.
    let fake = s.dir.path().join("fake.sock");
    let got = fake_controller(&fake, "{\"out\":\"building\"}\nnot a frame\n{\"exit\":0}\n");
    let (code, out, err) = run_hook(&fake, "0123456789abcdef", "t");
    assert!(got.join().unwrap().contains("\"token\":\"t\""));
    assert_eq!(code, Some(1), "{out}{err}");
    assert_eq!(out, "building\n");
    assert!(
        err.starts_with("error: bad frame from the controller (")
            && err.ends_with("; push rejected\n"),
        "{err}"
    );
    std::fs::remove_file(&fake).unwrap();
    let got = fake_controller(&fake, "{\"out\":\"building\"}\n");
    let (code, _, err) = run_hook(&fake, "0123456789abcdef", "t");
    got.join().unwrap();
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(
        err,
        "error: the controller hung up before deciding; push rejected\n"
    );

    // No socket at all: git's push is rejected and no ref moves.
    std::fs::remove_file(&socket).unwrap();
    commit(&src, "a", "2", "two");
    let out = s.git(&s.admin, &src, &["push", &s.url("web"), "main"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot reach the magrathea controller"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(ls_remote(&s, &s.admin, "web"), before);
}

#[test]
fn init_twice_changes_nothing_and_offline_keys_work() {
    let s = Server::start();
    let db_before = std::fs::read(s.data.join("host_ed25519")).unwrap();
    let out = run(Command::new(bin())
        .args(["init", "--data"])
        .arg(&s.data)
        .arg("--admin-key")
        .arg(s.admin.pub_path()));
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("nothing changed"));
    assert_eq!(
        std::fs::read(s.data.join("host_ed25519")).unwrap(),
        db_before
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.data.join("host_ed25519"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Recovery: add an admin key locally, use it over ssh.
    let rescue = s.key("rescue");
    let out = run(Command::new(bin())
        .args(["keys", "add", "rescue", "--role", "admin", "--key"])
        .arg(rescue.pub_path())
        .env("MAGRATHEA_DATA", &s.data));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(s.ok(&rescue, "whoami").contains("rescue (admin"));
    let out = run(Command::new(bin())
        .args(["keys", "list", "--data"])
        .arg(&s.data));
    assert!(text(&out.stdout).contains("rescue"));
}

/// The id of a push in flight to this server, read from its hook's environment (the
/// hook's processes carry it).
fn push_in_flight(s: &Server) -> Option<String> {
    let want = std::fs::canonicalize(s.data.join("run/hook.sock")).ok()?;
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        let get = |k: &str| {
            env.split(|b| *b == 0).find_map(|v| {
                v.strip_prefix(format!("{k}=").as_bytes())
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
        };
        let (Some(sock), Some(id)) = (get("MAGRATHEA_HOOK_SOCKET"), get("MAGRATHEA_PUSH_ID"))
        else {
            continue;
        };
        if std::fs::canonicalize(&sock).ok() == Some(want.clone()) {
            return Some(id);
        }
    }
    None
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = std::time::Instant::now();
    while !f() {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// SIGTERM with a push in flight: the push runs to its end and goes live, new pushes are
/// refused (new connections find nothing listening; a connection already open is told the
/// server is shutting down), then the server exits cleanly and comes back with its data.
/// A hook request with a forged token for that push is refused and audited under the app.
#[test]
fn graceful_shutdown_lets_a_push_in_flight_finish_and_refuses_new_ones() {
    let mut s = Server::start();
    // An inline buildpack whose compile waits for the test's go-ahead (a file the test puts
    // in the build dir), so the push is surely in flight when SIGTERM comes.
    let src = repo(&s.dir.path().join("src"));
    let bp = src.join(".buildpack/bin");
    std::fs::create_dir_all(&bp).unwrap();
    std::fs::write(bp.join("detect"), "#!/bin/sh\necho inline\n").unwrap();
    std::fs::write(
        bp.join("compile"),
        "#!/bin/sh\necho '-----> waiting'\nwhile [ ! -e \"$1/.go\" ]; do sleep 0.1; done\nrm -f \"$1/.go\"\necho '-----> compiled'\n",
    )
    .unwrap();
    std::fs::write(bp.join("release"), "#!/bin/sh\necho '---'\n").unwrap();
    let sha = commit(&src, "index.html", "finished\n", "slow");
    s.ok(&s.admin, "apps:create slow");
    let other = work_repo(&s, "other", "other\n");

    // A connection opened before the shutdown (OpenSSH connection sharing).
    let control = s.dir.path().join("control.sock");
    let mut master = Command::new("ssh")
        .args(s.ssh_args(&s.admin))
        .args(["-M", "-S"])
        .arg(&control)
        .args(["-N", "git@127.0.0.1"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the shared ssh connection", || control.exists());
    let shared_ssh = format!("{} -S {}", s.git_ssh_command(&s.admin), control.display());

    let (push, shared, fresh) = std::thread::scope(|sc| {
        let push = sc.spawn(|| s.git(&s.admin, &src, &["push", &s.url("slow"), "main"]));
        wait_for("the build to start", || {
            let b: serde_json::Value =
                serde_json::from_str(&s.ok(&s.admin, "builds slow --json")).unwrap();
            b[0]["status"] == "running"
                && s.data
                    .join(format!("builds/{}/src", b[0]["id"]))
                    .join("index.html")
                    .exists()
        });
        let b: serde_json::Value =
            serde_json::from_str(&s.ok(&s.admin, "builds slow --json")).unwrap();
        let build_src = s.data.join(format!("builds/{}/src", b[0]["id"]));

        // A forged token for the real push in flight.
        let id = push_in_flight(&s).expect("the push's hook is running");
        let (code, out, _) = run_hook(&s.data.join("run/hook.sock"), &id, "forged");
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains("unknown push or bad token"), "{out}");
        let rows: Vec<serde_json::Value> = audit_rows(&s, Some("slow"))
            .into_iter()
            .filter(|r| r["key_name"] == "(hook)")
            .collect();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(
            rows[0]["detail"],
            "hook request with a bad token for a push in flight"
        );

        s.terminate();
        wait_for("the shutdown to begin", || {
            s.log().contains("shutting down: no new pushes")
        });
        let shared = run(Command::new("git")
            .args(["push", &s.url("other"), "work"])
            .current_dir(&other)
            .env("GIT_SSH_COMMAND", &shared_ssh));
        let fresh = s.git(&s.admin, &other, &["push", &s.url("other"), "work"]);
        std::fs::write(build_src.join(".go"), "").unwrap();
        (push.join().unwrap(), shared, fresh)
    });
    let _ = master.kill();
    let _ = master.wait();

    assert!(
        push.status.success(),
        "the push in flight failed:\n{}\n{}",
        text(&push.stderr),
        s.log()
    );
    assert!(
        text(&push.stderr).contains("is live in production"),
        "{}",
        text(&push.stderr)
    );
    assert!(!shared.status.success());
    assert!(
        text(&shared.stderr).contains("the server is shutting down; push again in a moment"),
        "{}",
        text(&shared.stderr)
    );
    assert!(!fresh.status.success());
    assert!(
        text(&fresh.stderr).contains("Connection refused"),
        "{}",
        text(&fresh.stderr)
    );
    let status = s.wait_exit();
    assert!(
        status.success(),
        "serve exited with {status:?}\n{}",
        s.log()
    );
    assert!(s.log().contains("stopped"));

    // It comes back with the same host key and data: the push landed, the refused ones did not.
    s.spawn();
    assert!(s.ok(&s.admin, "whoami").contains("admin"));
    let remote = ls_remote(&s, &s.admin, "slow");
    assert!(
        remote.contains(&format!("{sha}\trefs/heads/main")),
        "{remote}"
    );
    assert!(!s.ok(&s.admin, "apps").contains("other"));
    let mut answer = (0, String::new());
    wait_for("the app to answer after the restart", || {
        answer = s.get("slow", "/");
        answer.0 == 200
    });
    assert_eq!(answer, (200, "finished\n".to_string()));
}

#[test]
fn hostile_git_paths_and_huge_command_lines_are_refused() {
    let s = Server::start();
    for bad in ["'../../etc'", "'a;b'", "'A'", "'x; rm -rf /'"] {
        let out = s.ssh(&s.admin, &format!("git-receive-pack {bad}"), None);
        assert_ne!(out.status.code(), Some(0), "{bad}");
        let err = text(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{bad}: {err}");
    }
    let out = s.ssh(&s.admin, "logs 'x; rm -rf /'", None);
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(text(&out.stderr).trim().lines().count(), 1);
    let huge = format!("apps:create {}", "a".repeat(100 << 10));
    let out = s.ssh(&s.admin, &huge, None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("command line too long"));
    assert!(s.ok(&s.admin, "apps").contains("no apps"));
    assert_eq!(std::fs::read_dir(s.data.join("repos")).unwrap().count(), 0);
    assert!(s.ok(&s.admin, "whoami").contains("admin"), "still serving");
}

/// `work` branches build nothing: these tests are about the front door.
fn work_repo(s: &Server, name: &str, content: &str) -> PathBuf {
    let src = repo(&s.dir.path().join(name));
    git_local(&src, &["checkout", "-q", "-b", "work"]);
    commit(&src, "file.txt", content, content);
    src
}

#[test]
fn concurrent_pushes_land_or_are_refused_cleanly() {
    let s = Server::start();
    // Eight apps at once: all land.
    let repos: Vec<PathBuf> = (0..8)
        .map(|i| work_repo(&s, &format!("src{i}"), &format!("app {i}\n")))
        .collect();
    std::thread::scope(|sc| {
        let hs: Vec<_> = repos
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let s = &s;
                sc.spawn(move || s.git(&s.admin, r, &["push", &s.url(&format!("app{i}")), "work"]))
            })
            .collect();
        for (i, h) in hs.into_iter().enumerate() {
            let out = h.join().unwrap();
            assert!(out.status.success(), "app{i}: {}", text(&out.stderr));
        }
    });
    for i in 0..8 {
        let remote = ls_remote(&s, &s.admin, &format!("app{i}"));
        assert!(remote.contains("refs/heads/work"), "app{i}: {remote}");
    }

    // Four different histories to one app at once: each lands or is refused with a reason,
    // and the repository stays consistent.
    let base = work_repo(&s, "base", "base\n");
    s.git_ok(&s.admin, &base, &["push", &s.url("one"), "work"]);
    let forks: Vec<(PathBuf, String)> = (0..4)
        .map(|i| {
            let dir = s.dir.path().join(format!("fork{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            git_local(&dir, &["init", "-q"]);
            git_local(&dir, &["pull", "-q", base.to_str().unwrap(), "work"]);
            git_local(&dir, &["checkout", "-q", "-b", "work"]);
            let sha = commit(&dir, "file.txt", &format!("fork {i}\n"), "fork");
            (dir, sha)
        })
        .collect();
    let outcomes: Vec<std::process::Output> = std::thread::scope(|sc| {
        let hs: Vec<_> = forks
            .iter()
            .map(|(d, _)| {
                let s = &s;
                sc.spawn(move || s.git(&s.admin, d, &["push", &s.url("one"), "work"]))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let landed: Vec<usize> = (0..4).filter(|i| outcomes[*i].status.success()).collect();
    assert_eq!(landed.len(), 1, "exactly one fork can fast-forward");
    for (i, o) in outcomes.iter().enumerate() {
        if !o.status.success() {
            let err = text(&o.stderr);
            // Git's two answers to a lost race, nothing else: the client saw the winner's
            // commit advertised (fetch first), or receive-pack found the ref moved under it
            // (its ref lock's old value no longer matches). A platform refusal (the hook
            // declined) or any other failure is not one of them.
            let fetch_first = err.contains("! [rejected]        work -> work (fetch first)");
            let lost_lock = err.contains("cannot lock ref 'refs/heads/work'")
                && err.contains("! [remote rejected] work -> work (failed to update ref)");
            assert!(
                fetch_first || lost_lock,
                "fork {i} refused without a reason: {err}"
            );
        }
    }
    let remote = ls_remote(&s, &s.admin, "one");
    assert!(remote.contains(&forks[landed[0]].1), "{remote}");
    let fsck = run(Command::new("git")
        .args(["fsck", "--no-progress"])
        .current_dir(s.data.join("repos/one.git")));
    assert!(fsck.status.success(), "{}", text(&fsck.stderr));
    // Nothing is left locked: the next push works.
    let (d, _) = &forks[(landed[0] + 1) % 4];
    s.git_ok(&s.admin, d, &["push", "--force", &s.url("one"), "work"]);
}

#[test]
fn a_restart_keeps_keys_apps_access_audit_and_repos() {
    let mut s = Server::start();
    let src = work_repo(&s, "src", "kept\n");
    s.git_ok(&s.admin, &src, &["push", &s.url("web"), "work"]);
    let bob = s.key("bob");
    s.add_key(&bob, "user");
    s.ok(&s.admin, "access:grant web bob deployer");
    let before = (
        s.ok(&s.admin, "keys --json"),
        s.ok(&s.admin, "apps --json"),
        s.ok(&s.admin, "access web --json"),
        ls_remote(&s, &s.admin, "web"),
    );
    let audit_before = s.ok(&s.admin, "audit -n 1000");
    assert!(s.stop().success());
    s.spawn();
    let after = (
        s.ok(&s.admin, "keys --json"),
        s.ok(&s.admin, "apps --json"),
        s.ok(&s.admin, "access web --json"),
        ls_remote(&s, &s.admin, "web"),
    );
    assert_eq!(before, after);
    let audit_after = s.ok(&s.admin, "audit -n 1000");
    // Entries are written before their command runs: the listing's own (then `started`)
    // has its outcome by now.
    for line in audit_before
        .lines()
        .skip(1)
        .filter(|l| !l.contains(" started "))
    {
        assert!(audit_after.contains(line), "audit lost: {line}");
    }
    // bob still has his access, and the clone is the pushed tree.
    let clone = s.dir.path().join("clone");
    let out = s.git(
        &bob,
        s.dir.path(),
        &[
            "clone",
            "-q",
            "-b",
            "work",
            &s.url("web"),
            clone.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(clone.join("file.txt")).unwrap(),
        "kept\n"
    );
}

/// Idle sockets lock nobody out: 256 connections that never say a word, then a real ssh
/// command works (they displace each other, not authenticated users), and they are closed
/// once the login grace time is over.
#[test]
fn idle_connections_lock_nobody_out_and_are_closed_after_the_grace_time() {
    use std::io::Read;
    let s = Server::start_with(&["--login-grace-time", "2"]);
    let idle: Vec<std::net::TcpStream> = (0..256)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap())
        .collect();
    let out = s.ssh(&s.admin, "whoami", None);
    assert!(
        out.status.success(),
        "locked out by idle connections: {}\n{}",
        text(&out.stderr),
        s.log()
    );
    assert!(text(&out.stdout).contains("admin"));
    // Every idle one is closed by the server (displaced, or out of time); a read that
    // times out means one was left open.
    for (i, mut c) in idle.into_iter().enumerate() {
        c.set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue, // the server's version line
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("idle connection {i} still open: {e}\n{}", s.log()),
            }
        }
    }
    assert!(
        s.log().contains("no authentication within 2s"),
        "{}",
        s.log()
    );
    // An authenticated session outlives the grace time.
    let out = s.ssh(&s.admin, "whoami", None);
    assert!(out.status.success());
}

/// A log line without its colour codes.
fn strip_ansi(l: &str) -> String {
    let mut out = String::new();
    let mut chars = l.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ parameters final-letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// What the front door does not do is refused at once, not left unanswered.
#[test]
fn unsupported_requests_fail_at_once_and_repeated_bad_keys_are_slowed() {
    let s = Server::start();
    let mut sftp = Command::new("ssh");
    sftp.args(s.ssh_args(&s.admin))
        .args(["-s", "git@127.0.0.1", "sftp"]);
    let out = output_within(&mut sftp, 60).expect("ssh -s sftp hung");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("subsystem request failed"),
        "{}",
        text(&out.stderr)
    );
    // X11 forwarding is refused, and the command still runs.
    let mut x11 = Command::new("ssh");
    x11.args(s.ssh_args(&s.admin))
        .args([
            "-o",
            "ForwardX11=yes",
            "-o",
            "ForwardX11Trusted=yes",
            "-o",
            "LogLevel=INFO",
        ])
        .env("DISPLAY", "127.0.0.1:99")
        .args(["git@127.0.0.1", "whoami"]);
    let out = output_within(&mut x11, 60).expect("ssh -X hung");
    assert!(out.status.success(), "{}\n{}", text(&out.stderr), s.log());
    assert!(text(&out.stdout).contains("admin"));
    assert!(
        text(&out.stderr).contains("X11 forwarding request failed"),
        "{}",
        text(&out.stderr)
    );

    // The node agent too (the controller's key; a real agent process): a shell or a
    // subsystem is refused at once.
    let agent = Agent::start(&s, "n1");
    let to_agent = |extra: &[&str]| {
        let mut c = ssh_to_agent(&agent.addr, &s.data.join("controller_ed25519"));
        c.args(extra);
        output_within(&mut c, 60).expect("the agent left a request unanswered")
    };
    let out = to_agent(&["-s", "magrathea@127.0.0.1", "sftp"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("subsystem request failed"),
        "{}",
        text(&out.stderr)
    );
    let out = to_agent(&["-T", "magrathea@127.0.0.1"]);
    assert!(!out.status.success());
    drop(agent);

    // 16 attempts with an unknown key, four at a time: past the free allowance (10 a
    // minute) each answer is delayed, doubling from 200 ms, one at a time per address. The
    // server announces each delay as it starts; no attempt ends before its delay is over.
    let stranger = s.key("stranger");
    let t0 = std::time::Instant::now();
    let outs: Vec<_> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                sc.spawn(|| {
                    (0..4)
                        .map(|_| s.ssh(&stranger, "whoami", None))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let took = t0.elapsed();
    assert!(outs.iter().all(|o| o.status.code() == Some(255)));
    let delays: Vec<u64> = s
        .log()
        .lines()
        .filter(|l| l.contains("repeated authentication failures; answer delayed"))
        .filter_map(|l| {
            strip_ansi(l)
                .split("delay_ms=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(delays.len() >= 3, "{delays:?}\n{}", s.log());
    let longest = *delays.iter().max().unwrap();
    assert!(longest >= 800, "{delays:?}");
    assert!(
        took.as_millis() as u64 >= longest,
        "{took:?} < {longest} ms"
    );
    // A known key from the same address is not delayed: it gets in.
    assert!(s.ok(&s.admin, "whoami").contains("admin"));
}

/// Every refusal is audited (unknown keys, command lines that do not parse, unknown
/// commands, bad usage), config values never reach the trail in any spelling, and when
/// the trail cannot be written nothing runs.
#[test]
fn refusals_are_audited_values_redacted_and_a_failing_audit_trail_fails_closed() {
    let s = Server::start();
    let stranger = s.key("stranger");
    assert_eq!(s.ssh(&stranger, "whoami", None).status.code(), Some(255));
    let fp = text(
        &run(Command::new("ssh-keygen")
            .args(["-l", "-E", "sha256", "-f"])
            .arg(stranger.pub_path()))
        .stdout,
    );
    let fp = fp.split_whitespace().nth(1).unwrap().to_string();
    for (line, code) in [
        ("apps:create 'oops", 2),
        ("frobnicate A=s3cret-1 s3cret-2", 1),
        ("apps:create", 2),
        (
            "config:set shop -E=s3cret-3 KEY s3cret-4 --env=prod B=s3cret-5",
            2,
        ),
        ("config:get shop s3cret-6=x", 1),
    ] {
        let out = s.ssh(&s.admin, line, None);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{line}: {}",
            text(&out.stderr)
        );
    }
    let audit: serde_json::Value = serde_json::from_str(&s.ok(&s.admin, "audit --json")).unwrap();
    let rows = audit.as_array().unwrap();
    let has = |command: &str, outcome: &str| {
        rows.iter().any(|r| {
            r["command"] == command
                && (r["outcome"] == outcome || outcome == "refused")
                && r["outcome"] != "ok"
        })
    };
    assert!(
        rows.iter().any(|r| r["fingerprint"] == fp.as_str()
            && r["command"] == "ssh login"
            && r["outcome"] == "denied"),
        "{audit:#}"
    );
    assert!(has("apps:create (unparseable)", "invalid"), "{audit:#}");
    assert!(has("frobnicate *** ***", "invalid"), "{audit:#}");
    assert!(has("apps:create", "invalid"), "{audit:#}");
    assert!(
        has("config:set shop *** *** *** --env=prod B=***", "invalid"),
        "{audit:#}"
    );
    assert!(has("config:get shop ***", "refused"), "{audit:#}");
    assert!(!audit.to_string().contains("s3cret"), "{audit:#}");

    // The trail cannot be written (as on a full disk): commands and pushes are refused,
    // and change nothing.
    s.ok(&s.admin, "apps:create shop");
    let db = rusqlite::Connection::open(s.data.join("magrathea.db")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER audit_full BEFORE INSERT ON audit
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
    )
    .unwrap();
    let out = s.ssh(&s.admin, "apps:create blog", None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("audit trail cannot be written"),
        "{}",
        text(&out.stderr)
    );
    let src = repo(&s.dir.path().join("src"));
    commit(&src, "a", "a", "a");
    let out = s.git(&s.admin, &src, &["push", &s.url("shop"), "main"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("audit trail cannot be written"));
    db.execute_batch("DROP TRIGGER audit_full").unwrap();
    let apps = s.ok(&s.admin, "apps");
    assert!(apps.contains("shop") && !apps.contains("blog"), "{apps}");
    assert_eq!(ls_remote(&s, &s.admin, "shop"), "");
}

/// The authenticated budget (`--max-connections`): full, a further key is turned away
/// (after authenticating, so no unauthenticated socket can take a place); a place frees up
/// when a session ends.
#[test]
fn the_authenticated_connection_cap_holds_and_frees_up() {
    let s = Server::start_with(&["--max-connections", "2"]);
    let hold = || {
        Command::new("ssh")
            .args(s.ssh_args(&s.admin))
            .args(["-N", "git@127.0.0.1"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut held = vec![hold(), hold()];
    let authenticated = || strip_ansi(&s.log()).matches("authenticated peer=").count();
    for _ in 0..2400 {
        if authenticated() >= 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(authenticated(), 2, "{}", s.log());
    // Idle unauthenticated sockets change nothing either way.
    let _idle: Vec<std::net::TcpStream> = (0..20)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap())
        .collect();
    let out = s.ssh(&s.admin, "whoami", None);
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stdout));
    assert!(s.log().contains("connection limit reached"), "{}", s.log());
    let mut first = held.remove(0);
    first.kill().unwrap();
    first.wait().unwrap();
    // The server notices the session's end in the background: asked until it has (two
    // minutes at most).
    let mut last = None;
    let t = std::time::Instant::now();
    while t.elapsed() < std::time::Duration::from_secs(120) {
        let out = s.ssh(&s.admin, "whoami", None);
        if out.status.success() {
            last = Some(out);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = last.unwrap_or_else(|| panic!("no place freed up:\n{}", s.log()));
    assert!(text(&out.stdout).contains("admin"));
    for mut h in held {
        let _ = h.kill();
        let _ = h.wait();
    }
}

/// What a command does is logged under its connection (peer, key, fingerprint) and the
/// command (verb, app), so `MAGRATHEA_LOG=debug` follows one command from the door to the
/// end; a push the same way under `git`.
#[test]
fn a_command_is_logged_under_its_connection_and_its_name() {
    let s = Server::start();
    let who = s.ok(&s.admin, "whoami");
    let (name, rest) = who.trim().split_once(' ').unwrap();
    let fp = rest.trim_end_matches(')').rsplit(", ").next().unwrap();
    s.ok(&s.admin, "apps:create spanned");
    let src = repo(&s.dir.path().join("src"));
    commit(&src, "a", "1", "one");
    let _ = s.git(&s.admin, &src, &["push", &s.url("spanned"), "main"]);
    // The server's stderr is read by another thread: wait for the lines to get there.
    let find = |what: &str, verb: &str| {
        for _ in 0..1200 {
            // Without the terminal colours the log may carry.
            let log = strip_ansi(&s.log());
            if let Some(l) = log.lines().find(|l| l.contains(what) && l.contains(verb)) {
                return l.to_string();
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("no '{what}' line for {verb}:\n{}", s.log());
    };
    let line = find("command done", "apps:create");
    assert!(line.contains("ssh{peer=127.0.0.1:"), "{line}");
    assert!(line.contains(name) && line.contains(fp), "{line}");
    assert!(
        line.contains("cmd{verb=") && line.contains("spanned"),
        "{line}"
    );
    let line = find("git done", "receive-pack");
    assert!(
        line.contains("ssh{peer=127.0.0.1:") && line.contains(fp),
        "{line}"
    );
    assert!(
        line.contains("git{service=") && line.contains("spanned"),
        "{line}"
    );
}
