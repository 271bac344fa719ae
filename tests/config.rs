//! Config vars end to end: real ssh, git and Docker. A change is a release rolled out like a
//! deploy; the value reaches the app and nowhere else.

mod util;

use std::path::Path;

use util::*;

/// The app serves its GREETING var.
const WEB: &str = "web: mkdir -p /tmp/w && echo \"g=$GREETING\" > /tmp/w/index.html && exec busybox httpd -f -p $PORT -h /tmp/w\n";

const SECRET: &str = "s3cret-Zebra-4242";

fn versions(s: &Server, app: &str) -> (usize, i64) {
    let v: serde_json::Value =
        serde_json::from_str(&s.ok(&s.admin, &format!("releases {app} --json"))).unwrap();
    let all = v.as_array().unwrap();
    let live = all
        .iter()
        .find(|r| r["live"].as_array().is_some_and(|l| !l.is_empty()))
        .map(|r| r["version"].as_i64().unwrap())
        .unwrap_or(0);
    (all.len(), live)
}

fn containers(s: &Server) -> String {
    let out = run(std::process::Command::new("docker").args([
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("name=mg-{}-", node_instance(&s.data.join("node")).unwrap()),
    ]));
    text(&out.stdout)
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = vec![];
    for e in walk(dir) {
        let bytes = std::fs::read(&e).unwrap_or_default();
        if bytes.windows(needle.len()).any(|w| w == needle) {
            hits.push(e.display().to_string());
        }
    }
    hits
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            out.extend(walk(&p));
        } else if ft.is_file() {
            out.push(p);
        }
    }
    out
}

#[test]
fn config_set_is_a_release_that_rollback_takes_back() {
    let s = Server::start();
    let dir = repo(&s.dir.path().join("src"));
    std::fs::write(dir.join("Procfile"), WEB).unwrap();
    commit(&dir, "README", "hi", "first");
    s.git_ok(&s.admin, &dir, &["push", &s.url("shop"), "main"]);
    assert_eq!(s.get("shop", "/"), (200, "g=\n".to_string()));
    assert_eq!(versions(&s, "shop"), (1, 1));

    // A change is a new release, rolled out without a failed request.
    // Answers before and after the change, however loaded the machine.
    let poller = Poller::start(s.http_port, "shop");
    poller.wait_for_answers(3);
    let out = s.ok(&s.admin, &format!("config:set shop GREETING={SECRET}"));
    poller.wait_for_answers(3);
    let (ok, bad, errors) = poller.finish();
    assert!(out.contains("v2 of shop is live"), "{out}");
    assert_eq!(bad, 0, "failed requests during config:set: {errors:?}");
    assert!(ok >= 6);
    assert_eq!(s.get("shop", "/"), (200, format!("g={SECRET}\n")));
    assert_eq!(versions(&s, "shop"), (2, 2));
    assert_eq!(
        s.ok(&s.admin, "config:get shop GREETING"),
        format!("{SECRET}\n")
    );

    // The same value again changes nothing and restarts nothing.
    let before = containers(&s);
    assert!(
        !before.trim().is_empty(),
        "the app's containers are not listed"
    );
    let out = s.ok(&s.admin, &format!("config:set shop GREETING={SECRET}"));
    assert!(out.contains("no change"), "{out}");
    assert_eq!(containers(&s), before);
    assert_eq!(versions(&s, "shop"), (2, 2));

    s.ok(&s.admin, "config:set shop GREETING=other");
    assert_eq!(s.get("shop", "/"), (200, "g=other\n".to_string()));
    assert_eq!(versions(&s, "shop"), (3, 3));

    // Rollback brings back the config that went with v2.
    let out = s.ok(&s.admin, "rollback shop");
    assert!(out.contains("v2 of shop is live"), "{out}");
    assert_eq!(s.get("shop", "/"), (200, format!("g={SECRET}\n")));
    assert_eq!(
        s.ok(&s.admin, "config:get shop GREETING"),
        format!("{SECRET}\n")
    );

    // Unset is a release too; the next push keeps the config.
    s.ok(&s.admin, "config:unset shop GREETING");
    assert_eq!(s.get("shop", "/"), (200, "g=\n".to_string()));
    s.ok(&s.admin, "config:set shop GREETING=kept");
    commit(&dir, "README", "again", "second");
    s.git_ok(&s.admin, &dir, &["push", &s.url("shop"), "main"]);
    assert_eq!(s.get("shop", "/"), (200, "g=kept\n".to_string()));

    // The secret is nowhere but the app: not in audit, releases, the server's log, a
    // tarball, or the store's files (sealed at rest).
    for cmd in [
        "audit",
        "releases shop",
        "releases shop --json",
        "builds shop",
    ] {
        let out = s.ok(&s.admin, cmd);
        assert!(!out.contains(SECRET), "{cmd} shows the value:\n{out}");
    }
    assert!(!s.log().contains(SECRET), "server log has the value");
    let hits = files_containing(&s.data.join("releases"), SECRET.as_bytes());
    assert!(hits.is_empty(), "tarballs hold the value: {hits:?}");
    let mut store_files = vec![];
    for e in std::fs::read_dir(&s.data).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("magrathea.db") {
            store_files.push(e.path());
        }
    }
    assert!(!store_files.is_empty());
    for f in &store_files {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "{} holds the value in the clear",
            f.display()
        );
    }
    let key = s.data.join("config.key");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn config_is_for_owners_and_bad_input_changes_nothing() {
    let s = Server::start();
    let dir = repo(&s.dir.path().join("src"));
    std::fs::write(dir.join("Procfile"), WEB).unwrap();
    commit(&dir, "README", "hi", "first");
    s.git_ok(&s.admin, &dir, &["push", &s.url("shop"), "main"]);
    s.ok(&s.admin, &format!("config:set shop GREETING={SECRET}"));
    let viewer = s.key("viewer");
    s.add_key(&viewer, "user");
    s.ok(&s.admin, "access:grant shop viewer viewer");
    let deployer = s.key("deployer");
    s.add_key(&deployer, "user");
    s.ok(&s.admin, "access:grant shop deployer deployer");

    for k in [&viewer, &deployer] {
        for cmd in [
            "config shop".to_string(),
            "config:get shop GREETING".to_string(),
            "config:set shop GREETING=x".to_string(),
            "config:unset shop GREETING".to_string(),
        ] {
            let out = s.ssh(k, &cmd, None);
            assert!(!out.status.success(), "{} may {cmd}", k.name);
            let err = text(&out.stderr);
            assert!(err.contains("owner"), "{cmd}: {err}");
            assert!(!err.contains(SECRET) && !text(&out.stdout).contains(SECRET));
        }
    }
    for cmd in [
        "config:set shop =x",
        "config:set shop PORT=1",
        "config:set shop NOEQUALS",
        "config:set shop a;b=1",
        "config:set shop GREETING=x --env ../x",
        "config:unset shop",
        "config nope",
    ] {
        let out = s.ssh(&s.admin, cmd, None);
        assert!(!out.status.success(), "{cmd} succeeded");
        let err = text(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{cmd}: one line: {err}");
    }
    assert_eq!(
        s.ok(&s.admin, "config:get shop GREETING"),
        format!("{SECRET}\n")
    );
    assert_eq!(versions(&s, "shop"), (2, 2));
    assert_eq!(s.get("shop", "/"), (200, format!("g={SECRET}\n")));
    let audit = s.ok(&s.admin, "audit");
    assert!(audit.contains("config:set"), "{audit}");
    assert!(!audit.contains(SECRET));

    // Per environment; --no-restart stores only.
    let out = s.ok(&s.admin, "config:set shop GREETING=later --no-restart");
    assert!(out.contains("next deploy"), "{out}");
    assert_eq!(s.get("shop", "/"), (200, format!("g={SECRET}\n")));
    s.ok(&s.admin, "config:set shop OTHER=1 --env staging");
    let js: serde_json::Value =
        serde_json::from_str(&s.ok(&s.admin, "config shop --env staging --json")).unwrap();
    assert_eq!(js, serde_json::json!({"OTHER": "1"}));
}

/// A config var the build reads takes effect on `rebuild` (Dokku's `ps:rebuild`): the
/// commit live in the environment built again with today's config and deployed; a config
/// change alone does not rebuild. Refused in one line when nothing is live, and to viewers.
#[test]
fn rebuild_builds_the_live_commit_again_with_todays_config() {
    let s = Server::start();
    let dir = repo(&s.dir.path().join("src"));
    let bp = dir.join(".buildpack/bin");
    std::fs::create_dir_all(&bp).unwrap();
    std::fs::write(bp.join("detect"), "#!/bin/sh\necho greeter\n").unwrap();
    std::fs::write(
        bp.join("compile"),
        "#!/bin/sh\nmkdir -p \"$1/www\"\n\
         echo \"built with ${GREETING_AT_BUILD:-no greeting}\" >\"$1/www/index.html\"\n\
         [ ! -f \"$3/GREETING_AT_BUILD\" ] || \
         echo \"built with $(cat \"$3/GREETING_AT_BUILD\")\" >\"$1/www/index.html\"\n",
    )
    .unwrap();
    std::fs::write(bp.join("release"), "#!/bin/sh\necho ---\n").unwrap();
    commit(
        &dir,
        "Procfile",
        "web: busybox httpd -f -p $PORT -h www\n",
        "greeter",
    );
    s.ok(&s.admin, "apps:create greeter");
    let out = s.ssh(&s.admin, "rebuild greeter", None);
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr).trim(),
        "error: 'greeter' has nothing live in production to rebuild; push it first"
    );
    let pushed = text(
        &s.git_ok(&s.admin, &dir, &["push", &s.url("greeter"), "main"])
            .stderr,
    );
    let page = |s: &Server| s.get("greeter", "/").1;
    assert!(
        page(&s).contains("built with no greeting"),
        "{}\n{pushed}",
        page(&s)
    );

    s.ok(&s.admin, "config:set greeter GREETING_AT_BUILD=bonjour");
    assert!(page(&s).contains("built with no greeting"), "{}", page(&s));

    let viewer = s.key("viewer");
    s.add_key(&viewer, "user");
    s.ok(&s.admin, "access:grant greeter viewer viewer");
    let out = s.ssh(&viewer, "rebuild greeter", None);
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr).lines().count(),
        1,
        "{}",
        text(&out.stderr)
    );

    let out = s.ssh(&s.admin, "ps:rebuild greeter", None);
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    let at = |l: &str| {
        said.find(l)
            .unwrap_or_else(|| panic!("no {l:?} in:\n{said}"))
    };
    assert!(at("-----> Rebuilding ") < at("Released v3 of greeter"));
    assert!(at("Released v3 of greeter") < at("v3 of greeter is live in production"));
    assert!(
        said.ends_with("v3 of greeter (rebuilt) is live in production\n"),
        "{said}"
    );
    assert!(page(&s).contains("built with bonjour"), "{}", page(&s));
}
