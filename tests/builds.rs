//! Builds end to end: real git push over real ssh, buildpacks in real Docker, release
//! tarballs inspected on disk.

mod util;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use util::*;

fn releases(s: &Server, app: &str) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(&s.ok(&s.admin, &format!("releases {app} --json")))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn release_info(s: &Server, app: &str, v: u64) -> serde_json::Value {
    serde_json::from_str(&s.ok(&s.admin, &format!("releases:info {app} v{v} --json"))).unwrap()
}

fn tarball(s: &Server, app: &str, v: u64) -> PathBuf {
    let info = release_info(s, app, v);
    s.data
        .join("releases")
        .join(app)
        .join(info["file"].as_str().unwrap())
}

/// (type, path, link target, content) of every entry.
fn entries(path: &Path) -> Vec<(tar::EntryType, String, Option<String>, Vec<u8>)> {
    let f = std::fs::File::open(path).unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let t = e.header().entry_type();
            let p = e.path().unwrap().display().to_string();
            let l = e.link_name().unwrap().map(|l| l.display().to_string());
            let mut buf = vec![];
            e.read_to_end(&mut buf).unwrap();
            (t, p, l, buf)
        })
        .collect()
}

fn file<'a>(es: &'a [(tar::EntryType, String, Option<String>, Vec<u8>)], p: &str) -> &'a [u8] {
    &es.iter()
        .find(|e| e.1 == p)
        .unwrap_or_else(|| panic!("{p} not in tarball"))
        .3
}

/// Pushes a fixture (with `extra` files on top); must release v1. Returns the repo and what
/// the pusher saw.
fn push_fixture(s: &Server, app: &str, fixture: &str, extra: &[(&str, &str)]) -> (PathBuf, String) {
    let dir = fixture_repo(&s.dir.path().join(format!("{app}-src")), fixture);
    if !extra.is_empty() {
        for (f, c) in extra {
            std::fs::write(dir.join(f), c).unwrap();
        }
        git_local(&dir, &["add", "-A"]);
        git_local(&dir, &["commit", "-q", "-m", "extra"]);
    }
    let out = s.git_ok(&s.admin, &dir, &["push", &s.url(app), "main"]);
    let err = text(&out.stderr);
    assert!(err.contains("Released v1"), "{err}");
    (dir, err)
}

fn check_builtin(
    s: &Server,
    app: &str,
    fixture: &str,
    web_contains: &str,
    extra: &[(&str, &str)],
    file_in_slug: &str,
) -> String {
    let (_, err) = push_fixture(s, app, fixture, extra);
    let info = release_info(s, app, 1);
    let web = info["manifest"]["processes"]["web"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(web.contains(web_contains), "{fixture}: web = {web:?}");
    let es = entries(&tarball(s, app, 1));
    let m: serde_json::Value = serde_json::from_slice(file(&es, "manifest.json")).unwrap();
    assert_eq!(m["processes"], info["manifest"]["processes"]);
    assert_eq!(m["app"], app);
    assert!(!file(&es, &format!("app/{file_in_slug}")).is_empty() || file_in_slug.ends_with('/'));
    let sha = tarball::sha256(&tarball(s, app, 1));
    assert_eq!(
        sha,
        info["sha256"].as_str().unwrap(),
        "recorded sha256 matches the file"
    );
    err
}

/// The app answers through the router with its fixture's greeting (what
/// scripts/test-buildpacks.sh checked by hand before its cases moved here).
fn says_hello(s: &Server, app: &str, fixture: &str) {
    let (status, body) = s.get(app, "/");
    assert_eq!(status, 200, "{app}: {body}");
    assert!(
        body.contains(&format!("hello from {fixture}")),
        "{app}: {body}"
    );
}

mod tarball {
    pub fn sha256(p: &std::path::Path) -> String {
        let out = std::process::Command::new("sha256sum")
            .arg(p)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    }
}

#[test]
fn builtin_buildpacks_on_the_tiny_stack() {
    let s = Server::start();
    let secrets = [
        (".env", "SECRET_KEY=hunter2\n"),
        ("app.json", "{\"name\": \"site\"}\n"),
        (
            "static.json",
            "{\"routes\": {\"/**\": \"index.html\"}, \"https_only\": true}\n",
        ),
    ];
    let err = check_builtin(&s, "site", "static", "httpd", &secrets, "index.html");
    // No nginx here: busybox serves the app's root, and says what it leaves out.
    assert!(
        err.contains("warning: this stack has no nginx: static.json is ignored (routes https_only), busybox httpd serves the app's root"),
        "{err}"
    );
    // The site is served, its dotfiles and the platform's files are not.
    says_hello(&s, "site", "static");
    for hidden in [
        "/.env",
        "/app.json",
        "/static.json",
        "/.static-root/index.html",
    ] {
        let (status, body) = s.get("site", hidden);
        assert_eq!(status, 404, "{hidden}: {body}");
    }
    check_builtin(
        &s,
        "proc",
        "procfile",
        "-h public",
        &[],
        "public/index.html",
    );
    says_hello(&s, "proc", "procfile");
    // A push of another branch is stored but not built.
    let out = s.ssh(&s.admin, "builds site --json", None);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// Every builtin buildpack builds on `stack` and its app answers from the run image.
/// The Python fixture gets `runtime_txt`, and `node_package` replaces the Node fixture's
/// package.json; returns the pushes' output by app.
/// With `by_yml` each app's magrathea.yml names the stack, else it is the server's default.
fn builtins_on(
    s: &Server,
    stack: &str,
    by_yml: bool,
    runtime_txt: &str,
    node_package: &str,
) -> Vec<(&'static str, String)> {
    let yml = format!("stack: {stack}\n");
    let yml: Vec<(&str, &str)> = [("magrathea.yml", yml.as_str())]
        .into_iter()
        .filter(|_| by_yml)
        .collect();
    let py = [yml.as_slice(), &[("runtime.txt", runtime_txt)]].concat();
    let node = [yml.as_slice(), &[("package.json", node_package)]].concat();
    let out = vec![
        (
            "py",
            check_builtin(s, "py", "python", "app.py", &py, ".venv/pyvenv.cfg"),
        ),
        (
            "node",
            check_builtin(s, "node", "nodejs", "npm start", &node, "server.js"),
        ),
        (
            "php",
            check_builtin(s, "php", "php", "heroku-php-apache2", &yml, "index.php"),
        ),
        (
            "site",
            check_builtin(s, "site", "static", "nginx", &yml, "index.html"),
        ),
        (
            "proc",
            check_builtin(
                s,
                "proc",
                "procfile",
                "-h public",
                &yml,
                "public/index.html",
            ),
        ),
    ];
    // Each runs on the stack's run image and answers.
    for (app, fixture) in [
        ("py", "python"),
        ("node", "nodejs"),
        ("php", "php"),
        ("site", "static"),
        ("proc", "procfile"),
    ] {
        says_hello(s, app, fixture);
    }
    // PHP's default web (Apache on the app's root) refuses dotfiles and the dot directories
    // the build wrote.
    for hidden in ["/.profile.d/php.sh", "/.magrathea/php.env", "/.htaccess"] {
        let (status, body) = s.get("php", hidden);
        assert_eq!(status, 403, "{hidden}: {body}");
    }
    let info = release_info(s, "py", 1);
    assert_eq!(info["manifest"]["stack"], stack);
    assert_eq!(info["manifest"]["buildpacks"][0], "python");
    out
}

fn node_package(engines: &str) -> String {
    format!(
        "{{\"name\": \"n\", \"private\": true, \"scripts\": {{\"start\": \"node server.js\"}}, \"engines\": {{\"node\": \"{engines}\"}}}}\n"
    )
}

#[test]
fn builtin_buildpacks_on_the_bookworm_stack() {
    let s = Server::start();
    // Node 18 here: a range without it gets the newest Node in the range, as on Heroku (the
    // official build, from the npm registry), at build and at run time (newer builds link
    // libatomic, which the run image lacks: it goes along).
    let out = builtins_on(
        &s,
        "bookworm",
        true,
        "python-3.11\n",
        "{\"name\": \"n\", \"private\": true, \"scripts\": {\"start\": \"node server.js\"}, \"engines\": {\"node\": \"16.x || >=24\", \"npm\": \">=10\"}}\n",
    );
    let node = &out[1].1;
    assert!(
        node.contains("Installing node ")
            && node.contains("engines.node: 16.x || >=24 (node v")
            && node.contains("engines.npm: >=10 (npm "),
        "{node}"
    );
    let npm = s.ok(&s.admin, "run node -- npm --version");
    let npm_major: u32 = npm
        .split('.')
        .next()
        .and_then(|m| m.trim().parse().ok())
        .unwrap_or(0);
    assert!(npm_major >= 10, "{npm}");
    let v = s.ok(&s.admin, "run node -- node --version");
    let major: u32 = v
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(major >= 24, "{v}");
    static_json_on_nginx(&s);
}

/// A static.json site (no index.html at the root) as heroku-buildpack-static serves it:
/// its root, a fallback route for deep links, a redirect, a header by path; nothing outside
/// the root, no dotfile and no platform file.
fn static_json_on_nginx(s: &Server) {
    let dir = s.dir.path().join("spa-src");
    let files = [
        ("magrathea.yml", "stack: bookworm\n"),
        ("static.json", "{\"root\": \"site/\", \"clean_urls\": true, \"error_page\": \"errors/404.html\", \"encoding\": \"ISO-8859-1\", \"routes\": {\"/app/**\": \"index.html\"}, \"redirects\": {\"/old\": {\"url\": \"/app/\", \"status\": 307}}, \"headers\": {\"/css/*\": {\"X-Checked\": \"yes\"}}, \"proxies\": {}}\n"),
        ("site/index.html", "hello from the spa\n"),
        ("site/about.html", "about us\n"),
        ("site/errors/404.html", "lost? try /app/\n"),
        ("site/css/a.css", "body {}\n"),
        ("site/.env", "SECRET=1\n"),
        ("notes.txt", "outside the root\n"),
    ];
    for (f, c) in files {
        let p = dir.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, c).unwrap();
    }
    git_local(&dir, &["init", "-q", "-b", "main"]);
    git_local(&dir, &["add", "-A"]);
    git_local(&dir, &["commit", "-q", "-m", "spa"]);
    let out = s.git_ok(&s.admin, &dir, &["push", &s.url("spa"), "main"]);
    let err = text(&out.stderr);
    assert!(
        err.contains("static.json: root site/, headers on 1 path(s), 1 redirect(s), 1 route(s)")
            && err.contains("warning: static.json: not supported here, ignored: proxies")
            && err.contains("will be served by nginx/"),
        "{err}"
    );
    let (status, body) = s.get("spa", "/app/reports/42");
    assert_eq!((status, body.as_str()), (200, "hello from the spa\n"));
    let head = |path: &str| s.head("spa", path);
    let old = head("/old");
    assert!(
        old.starts_with("http/1.1 307") && old.contains("location: /app/"),
        "{old}"
    );
    assert!(head("/css/a.css").contains("x-checked: yes"));
    // clean_urls: /about is about.html; encoding names the charset of text answers.
    assert_eq!(s.get("spa", "/about"), (200, "about us\n".to_string()));
    assert!(head("/about").contains("content-type: text/html; charset=iso-8859-1"));
    // error_page answers every 404, with its status.
    assert_eq!(
        s.get("spa", "/nope"),
        (404, "lost? try /app/\n".to_string())
    );
    for hidden in [
        "/static.json",
        "/.env",
        "/notes.txt",
        "/app/missing.js",
        "/.static/nginx.conf",
    ] {
        let (status, body) = s.get("spa", hidden);
        assert_eq!(status, 404, "{hidden}: {body}");
    }
}

#[test]
fn builtin_buildpacks_on_the_trixie_stack() {
    // The server's default stack, as `serve --default-stack trixie` makes it.
    let s = Server::start_with(&["--default-stack", "trixie"]);
    // A patch pin of the stack's minor builds with the stack's Python and says so.
    let out = builtins_on(
        &s,
        "trixie",
        false,
        "python-3.13.1\n",
        &node_package(">=20"),
    );
    let node = &out[1].1;
    assert!(
        node.contains("engines.node: >=20 (this stack has node v20."),
        "{node}"
    );
    assert!(!node.contains("warning"), "{node}");
    let py = &out[0].1;
    assert!(
        py.contains("warning: runtime.txt asks for Python 3.13.1; building with stack trixie's Python 3.13."),
        "{py}"
    );
}

#[test]
fn third_party_buildpack_inside_the_repo_builds_unchanged() {
    let s = Server::start();
    push_fixture(&s, "custom", "custom-buildpack", &[]);
    let es = entries(&tarball(&s, "custom", 1));
    let page = String::from_utf8_lossy(file(&es, "app/www/index.html")).into_owned();
    assert!(page.contains("build 1"), "{page}");
    let info = release_info(&s, "custom", 1);
    assert_eq!(
        info["manifest"]["processes"]["web"],
        "busybox httpd -f -p $PORT -h www"
    );
    assert_eq!(info["manifest"]["buildpacks"][0], "custom");
    says_hello(&s, "custom", "custom-buildpack");
    // The cache dir survives between builds; config vars reach the buildpack in ENV_DIR.
    s.ok(
        &s.admin,
        "config:set custom --no-restart GREETING_SUFFIX=-from-config",
    );
    let dir = s.dir.path().join("custom-src");
    commit(&dir, "greeting.txt", "hello again\n", "second");
    s.git_ok(&s.admin, &dir, &["push", &s.url("custom"), "main"]);
    let newest = releases(&s, "custom")[0]["version"].as_u64().unwrap();
    let es = entries(&tarball(&s, "custom", newest));
    let page = String::from_utf8_lossy(file(&es, "app/www/index.html")).into_owned();
    assert_eq!(page, "hello again-from-config\nbuild 2\n");
    let (status, body) = s.get("custom", "/");
    assert_eq!((status, body.as_str()), (200, page.as_str()));
}

#[test]
fn failing_compile_rejects_the_push_and_changes_nothing() {
    let s = Server::start();
    let (dir, _) = push_fixture(&s, "web", "static", &[]);
    let before = text(
        &s.git_ok(&s.admin, &dir, &["ls-remote", &s.url("web")])
            .stdout,
    );
    let v1 = releases(&s, "web");
    // Replace the app with one whose buildpack fails.
    let failing = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/failing/.buildpack");
    run(Command::new("cp")
        .arg("-a")
        .arg(&failing)
        .arg(dir.join(".buildpack")));
    git_local(&dir, &["add", "-A"]);
    git_local(&dir, &["commit", "-q", "-m", "break it"]);
    let out = s.git(&s.admin, &dir, &["push", &s.url("web"), "main"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("remote: error: intentional failure"), "{err}");
    assert!(err.contains("about to fail on purpose"), "{err}");
    assert!(err.contains("pre-receive hook declined"), "{err}");
    assert_eq!(releases(&s, "web"), v1, "no release stored");
    assert_eq!(
        text(
            &s.git_ok(&s.admin, &dir, &["ls-remote", &s.url("web")])
                .stdout
        ),
        before
    );
    let builds: serde_json::Value =
        serde_json::from_str(&s.ok(&s.admin, "builds web --json")).unwrap();
    assert_eq!(builds[0]["status"], "failed");
    let log = s.ok(&s.admin, "builds:log web");
    assert!(log.contains("intentional failure"), "{log}");
    assert_eq!(
        std::fs::read_dir(s.data.join("builds"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name() != ".trash")
            .count(),
        0,
        "build dir cleaned up"
    );
}

#[test]
fn nothing_detected_says_which_buildpacks_were_tried() {
    let s = Server::start();
    let dir = repo(&s.dir.path().join("src"));
    std::fs::remove_file(dir.join("Procfile")).unwrap();
    commit(&dir, "README.md", "just docs\n", "docs");
    let out = s.git(&s.admin, &dir, &["push", &s.url("docs"), "main"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("no buildpack matched this app; tried: python nodejs php go static procfile"),
        "{err}"
    );
    assert!(releases(&s, "docs").is_empty());
}

#[test]
fn missing_stack_image_names_the_command_that_makes_it() {
    let s = Server::start();
    let dir = repo(&s.dir.path().join("src"));
    commit(&dir, "magrathea.yml", "stack: nosuch\n", "x");
    let out = s.git(&s.admin, &dir, &["push", &s.url("app"), "main"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("scripts/stack-nosuch.sh"),
        "{}",
        text(&out.stderr)
    );
    let dir2 = repo(&s.dir.path().join("src2"));
    commit(&dir2, "magrathea.yml", "stack: tiny\nbogus: 1\n", "x");
    let out = s.git(&s.admin, &dir2, &["push", &s.url("app2"), "main"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("magrathea.yml"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_same_commit_builds_to_the_same_bytes() {
    let s = Server::start();
    let dir = repo(&s.dir.path().join("src"));
    let c1 = commit(&dir, "index.html", "<p>one</p>\n", "one");
    s.git_ok(&s.admin, &dir, &["push", &s.url("rep"), "main"]);
    commit(&dir, "index.html", "<p>two</p>\n", "two");
    s.git_ok(&s.admin, &dir, &["push", &s.url("rep"), "main"]);
    git_local(&dir, &["reset", "-q", "--hard", &c1]);
    // A branch push builds again, also a commit built before (as on Heroku and Dokku: the
    // build sees the current config and buildpacks); only a tag reuses cooked bytes.
    let out = s.git_ok(&s.admin, &dir, &["push", "-f", &s.url("rep"), "main"]);
    assert!(
        text(&out.stderr).contains(&format!("-----> Building rep {} (main)", &c1[..7])),
        "{}",
        text(&out.stderr)
    );
    let builds: serde_json::Value =
        serde_json::from_str(&s.ok(&s.admin, "builds rep --json")).unwrap();
    assert_eq!(builds.as_array().unwrap().len(), 3, "{builds}");
    let (a, b, c) = (
        release_info(&s, "rep", 1),
        release_info(&s, "rep", 2),
        release_info(&s, "rep", 3),
    );
    assert_eq!(a["git_sha"], c["git_sha"]);
    assert_eq!(a["sha256"], c["sha256"], "same commit, same bytes");
    assert_ne!(a["sha256"], b["sha256"]);
    assert_eq!(
        tarball::sha256(&tarball(&s, "rep", 1)),
        tarball::sha256(&tarball(&s, "rep", 3))
    );
}

#[test]
fn symlinks_to_host_files_stay_links() {
    let s = Server::start();
    let dir = repo(&s.dir.path().join("src"));
    std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd")).unwrap();
    std::os::unix::fs::symlink("../../../../etc", dir.join("up")).unwrap();
    commit(&dir, "index.html", "hi\n", "links");
    // A link climbing out of the release fails the build (no node would take it); an
    // absolute link is fine: it resolves inside the app's container.
    let out = s.git(&s.admin, &dir, &["push", &s.url("links"), "main"]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("\"up\"") && err.contains("points outside the release"),
        "{err}"
    );
    assert!(!err.contains("Released v1"), "{err}");
    assert!(releases(&s, "links").is_empty());
    // Without the escaping link, the same app builds, keeps the absolute link as a link,
    // deploys and serves.
    std::fs::remove_file(dir.join("up")).unwrap();
    commit(&dir, "index.html", "hi again\n", "no escape");
    s.git_ok(&s.admin, &dir, &["push", &s.url("links"), "main"]);
    let es = entries(&tarball(&s, "links", 1));
    let passwd = es.iter().find(|e| e.1 == "app/passwd").unwrap();
    assert_eq!(passwd.0, tar::EntryType::Symlink);
    assert_eq!(passwd.2.as_deref(), Some("/etc/passwd"));
    assert!(passwd.3.is_empty());
    for e in &es {
        assert!(
            !String::from_utf8_lossy(&e.3).contains("root:x:0:0"),
            "host file leaked via {}",
            e.1
        );
        assert!(!e.1.contains(".."), "escaping path {}", e.1);
        assert!(matches!(
            e.0,
            tar::EntryType::Regular | tar::EntryType::Directory | tar::EntryType::Symlink
        ));
    }
    assert_eq!(
        s.get("links", "/index.html"),
        (200, "hi again\n".to_string())
    );
}

/// A field of /proc/PID/status, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_big_file_in_a_packed_push_never_sits_whole_in_controller_memory() {
    const BIG: u64 = 256 << 20;
    let s = Server::start();
    let dir = repo(&s.dir.path().join("src"));
    // Over git's receive.unpackLimit (100 objects): the push is kept as a pack, and the big
    // blob with it, which libgit2 can only read whole.
    for i in 0..120 {
        std::fs::write(dir.join(format!("page{i}.html")), format!("page {i}\n")).unwrap();
    }
    std::fs::File::create(dir.join("video.bin"))
        .unwrap()
        .set_len(BIG)
        .unwrap();
    commit(&dir, "index.html", "big\n", "a big file among many");
    s.git_ok(&s.admin, &dir, &["push", &s.url("bigfile"), "main"]);
    let objects = s.data.join("repos/bigfile.git/objects/pack");
    let packs = std::fs::read_dir(&objects).map(|d| d.count()).unwrap_or(0);
    assert!(packs > 0, "the push was not kept as a pack in {objects:?}");
    let es = entries(&tarball(&s, "bigfile", 1));
    let video = es.iter().find(|e| e.1 == "app/video.bin").unwrap();
    assert_eq!(video.3.len() as u64, BIG);
    assert!(video.3.iter().all(|b| *b == 0));
    assert_eq!(
        s.get("bigfile", "/page7.html"),
        (200, "page 7\n".to_string())
    );
    // The controller's peak resident memory stayed well under the file's size.
    let peak = status_kib(s.pid(), "VmHWM:") << 10;
    eprintln!("controller peak RSS: {} MiB", peak >> 20);
    assert!(
        peak < BIG / 2,
        "controller peak RSS {} MiB for a {} MiB file",
        peak >> 20,
        BIG >> 20
    );
}

fn slow_repo(dir: &Path, seconds: u32) -> PathBuf {
    let dir = repo(dir);
    let bp = dir.join(".buildpack/bin");
    std::fs::create_dir_all(&bp).unwrap();
    std::fs::write(bp.join("detect"), "#!/bin/sh\necho slow\n").unwrap();
    std::fs::write(
        bp.join("compile"),
        format!("#!/bin/sh\necho '-----> sleeping'\nsleep {seconds}\necho done\n"),
    )
    .unwrap();
    std::fs::write(bp.join("release"), "#!/bin/sh\necho '---'\n").unwrap();
    commit(&dir, "index.html", "slow\n", "slow");
    dir
}

/// This server's containers of `app` (other tests' servers share the Docker engine).
fn containers(s: &Server, app: &str) -> String {
    text(
        &run(Command::new("docker").args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=magrathea.app={app}"),
            "--filter",
            &format!("label=magrathea.instance={}", s.instance()),
        ]))
        .stdout,
    )
}

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

fn build_status(s: &Server, app: &str) -> String {
    let out = s.ssh(&s.admin, &format!("builds {app} --json"), None);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v[0]["status"].as_str().unwrap_or("").to_string()
}

#[test]
fn build_timeout_is_a_clear_failure() {
    let s = Server::start_with(&["--build-timeout", "3"]);
    let dir = slow_repo(&s.dir.path().join("src"), 60);
    // The build sleeps 60 s and would then succeed: only the timeout fails it.
    let out = s.git(&s.admin, &dir, &["push", &s.url("slow"), "main"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("build timed out after 3s"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(containers(&s, "slow").trim(), "", "build container removed");
    assert!(releases(&s, "slow").is_empty());
}

/// A build that writes too much into /app, /meta or /cache is stopped while it runs, with
/// a message naming what grew, not after (the buildpack then waits out the build timeout:
/// only an early stop ends it with that message). `--max-slug` is Heroku's measure, the
/// compressed slug: /app may hold more while it builds, and a slug of zeros over the limit
/// goes live where one of random bytes that size is refused.
#[test]
fn a_build_writing_past_its_bounds_is_stopped_early() {
    let s = Server::start_with(&[
        "--max-slug",
        "1",
        "--max-cache",
        "1",
        "--build-timeout",
        "120",
    ]);
    let dir = repo(&s.dir.path().join("src"));
    let bp = dir.join(".buildpack/bin");
    std::fs::create_dir_all(&bp).unwrap();
    std::fs::write(bp.join("detect"), "#!/bin/sh\necho writer\n").unwrap();
    // Writes where `mode` says (6 MiB in /app, 2 MiB in /cache, 16 MiB in /meta), then waits
    // for the build timeout; `random` and `zeros` write 2 MiB and 3 MiB into /app and end.
    std::fs::write(
        bp.join("compile"),
        "#!/bin/sh\nmode=$(cat \"$1/mode\")\ncase $mode in\n\
         slug) dd if=/dev/zero of=\"$1/big\" bs=1024 count=6144 ;;\n\
         cache) dd if=/dev/zero of=\"$2/big\" bs=1024 count=2048 ;;\n\
         meta) dd if=/dev/zero of=/meta/big bs=1024 count=16384 ;;\n\
         random) head -c 2097152 /dev/urandom >\"$1/big\" ;;\n\
         zeros) dd if=/dev/zero of=\"$1/big\" bs=1024 count=3072 ;;\n\
         esac 2>/dev/null\necho \"-----> wrote ($mode)\"\n\
         case $mode in ok | random | zeros) ;; *) sleep 600 ;; esac\n",
    )
    .unwrap();
    std::fs::write(bp.join("release"), "#!/bin/sh\necho '---'\n").unwrap();
    // 2 MiB that do not compress: over the slug limit once packed, refused, nothing recorded.
    commit(&dir, "mode", "random", "random");
    let out = s.git(&s.admin, &dir, &["push", &s.url("big"), "main"]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(" !     the slug is 2.0 MB compressed, over the 1.0 MB limit; "),
        "{err}"
    );
    assert!(releases(&s, "big").is_empty());
    assert_eq!(build_status(&s, "big"), "failed");
    // What the watch measures depends on how far the write got (it may stop the build
    // mid-write): the message names what grew and its limit.
    for (mode, what, limit) in [
        ("slug", "/app (the slug)", "4.0 MB"),
        ("meta", "/meta (buildpack metadata)", "8.0 MB"),
        ("cache", "/cache (the build cache)", "1.0 MB"),
    ] {
        commit(&dir, "mode", mode, mode);
        let out = s.git(&s.admin, &dir, &["push", &s.url("big"), "main"]);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{mode}: {err}");
        let line = err
            .lines()
            .find(|l| l.contains(" !     build stopped: "))
            .unwrap_or_else(|| panic!("{mode}: {err}"));
        assert!(
            line.contains(&format!("build stopped: {what} is ")),
            "{line}"
        );
        assert!(
            line.contains(&format!("MB, over the {limit} limit")),
            "{line}"
        );
        if mode == "cache" {
            assert!(
                line.contains("; `builds:purge-cache big` empties it"),
                "{line}"
            );
        }
        assert!(!err.contains("timed out"), "{mode}: {err}");
        assert_eq!(containers(&s, "big").trim(), "", "build container removed");
        assert!(releases(&s, "big").is_empty());
        assert_eq!(build_status(&s, "big"), "failed");
    }
    // The cache stays over its bound until purged; then a build within bounds goes live:
    // 3 MiB of zeros in /app, a few KB compressed.
    commit(&dir, "mode", "zeros", "zeros");
    let out = s.git(&s.admin, &dir, &["push", &s.url("big"), "main"]);
    assert!(text(&out.stderr).contains("`builds:purge-cache big` empties it"));
    s.ok(&s.admin, "builds:purge-cache big");
    s.git_ok(&s.admin, &dir, &["push", &s.url("big"), "main"]);
    assert_eq!(releases(&s, "big").len(), 1);
}

#[test]
fn builds_cancel_and_ctrl_c_stop_the_build_and_free_the_app() {
    let s = Server::start();
    let dir = slow_repo(&s.dir.path().join("src"), 120);
    s.ok(&s.admin, "apps:create slow");
    // builds:cancel from another session.
    let push = Command::new("git")
        .args(["push", &s.url("slow"), "main"])
        .current_dir(&dir)
        .env("GIT_SSH_COMMAND", s.git_ssh_command(&s.admin))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("build running", || build_status(&s, "slow") == "running");
    // The filter below sees a running build's container (so "removed" means something).
    wait_for("build container listed", || {
        !containers(&s, "slow").trim().is_empty()
    });
    assert!(s.ok(&s.admin, "builds:cancel slow").contains("cancelling"));
    let out = push.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("build cancelled"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(build_status(&s, "slow"), "cancelled");
    wait_for("container removed", || {
        containers(&s, "slow").trim().is_empty()
    });

    // Ctrl-C: the pusher goes away mid-build. SIGKILL to its process group, because a
    // background test process may have SIGINT ignored; the server sees the same disconnect.
    let mut push = Command::new("git");
    push.args(["push", &s.url("slow"), "main"])
        .current_dir(&dir)
        .env("GIT_SSH_COMMAND", s.git_ssh_command(&s.admin))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut push, 0);
    let mut child = push.spawn().unwrap();
    wait_for("second build running", || {
        let v: serde_json::Value =
            serde_json::from_str(&s.ok(&s.admin, "builds slow --json")).unwrap();
        v.as_array().unwrap().len() == 2 && v[0]["status"] == "running"
    });
    let pgid = child.id() as i32;
    assert!(pgid > 1);
    // SAFETY: plain kill(2) on the process group we created for the pusher.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = child.wait();
    wait_for("build cancelled after Ctrl-C", || {
        build_status(&s, "slow") == "cancelled"
    });
    wait_for("container removed", || {
        containers(&s, "slow").trim().is_empty()
    });
    assert!(releases(&s, "slow").is_empty());

    // The app is free again: a quick build goes through.
    std::fs::remove_dir_all(dir.join(".buildpack")).unwrap();
    commit(&dir, "index.html", "fast\n", "fast");
    s.git_ok(&s.admin, &dir, &["push", &s.url("slow"), "main"]);
    assert_eq!(releases(&s, "slow").len(), 1);
}

/// A repo whose inline buildpack's compile waits for the test's go-ahead: a `.go` file the
/// test puts in the build's source dir (`builds/<id>/src` on the controller).
fn gated_repo(dir: &Path) -> PathBuf {
    let dir = repo(dir);
    let bp = dir.join(".buildpack/bin");
    std::fs::create_dir_all(&bp).unwrap();
    std::fs::write(bp.join("detect"), "#!/bin/sh\necho gated\n").unwrap();
    std::fs::write(
        bp.join("compile"),
        "#!/bin/sh\necho '-----> waiting'\nwhile [ ! -e \"$1/.go\" ]; do sleep 0.1; done\nrm -f \"$1/.go\"\necho done\n",
    )
    .unwrap();
    std::fs::write(bp.join("release"), "#!/bin/sh\necho '---'\n").unwrap();
    commit(&dir, "index.html", "gated\n", "gated");
    dir
}

/// Lets build `id` of a gated repo go on once its compile is waiting.
fn let_build_go(s: &Server, id: &serde_json::Value) {
    let src = s.data.join(format!("builds/{id}/src"));
    wait_for(&format!("build {id} to start compiling"), || {
        src.join("index.html").exists()
    });
    std::fs::write(src.join(".go"), "").unwrap();
}

#[test]
fn pushes_to_one_app_queue_and_are_told_their_place() {
    let s = Server::start();
    // The first build is held until the second push has been told its place (a build that
    // merely took a few seconds could end before the second push got there).
    let dir = gated_repo(&s.dir.path().join("src"));
    git_local(&dir, &["tag", "v1"]);
    let spawn = |r: &str| {
        Command::new("git")
            .args(["push", &s.url("q"), r])
            .current_dir(&dir)
            .env("GIT_SSH_COMMAND", s.git_ssh_command(&s.admin))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Create the app first so both pushes race only on the build.
    s.ok(&s.admin, "apps:create q");
    let a = spawn("main");
    wait_for("first build running", || {
        s.ok(&s.admin, "builds q --json").contains("running")
    });
    let first: serde_json::Value =
        serde_json::from_str(&s.ok(&s.admin, "builds q --json")).unwrap();
    let first = first[0]["id"].clone();
    let mut b = spawn("v1");
    // The second push's output, read as it comes.
    let b_err = Arc::new(Mutex::new(String::new()));
    let reader = {
        let (mut pipe, b_err) = (b.stderr.take().unwrap(), b_err.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                b_err
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    wait_for("the second push to be told its place", || {
        b_err.lock().unwrap().contains("ahead of this one")
    });
    let_build_go(&s, &first);
    let a = a.wait_with_output().unwrap();
    assert!(a.status.success(), "{}", text(&a.stderr));
    let second: serde_json::Value =
        serde_json::from_str(&s.ok(&s.admin, "builds q --json")).unwrap();
    let src = s.data.join(format!("builds/{}/src", second[0]["id"]));
    let t = Instant::now();
    let b_status = loop {
        if let Some(status) = b.try_wait().unwrap() {
            break status;
        }
        // Its compile waits too (once it is there; the dir goes when the build ends).
        if src.join("index.html").exists() {
            let _ = std::fs::write(src.join(".go"), "");
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the second push hung"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    reader.join().unwrap();
    let b_err = b_err.lock().unwrap().clone();
    assert!(b_status.success(), "{b_err}");
    assert!(
        b_err.contains("1 build(s) of q ahead of this one"),
        "{b_err}"
    );
    assert_eq!(releases(&s, "q").len(), 2);
}

/// Pushes `files` as a new app on the bookworm stack (unless `files` has a magrathea.yml);
/// the push must be refused with every one of `says` in its output, and store no release.
fn refused(s: &Server, app: &str, files: &[(&str, &str)], says: &[&str]) {
    let dir = s.dir.path().join(format!("{app}-src"));
    std::fs::create_dir_all(&dir).unwrap();
    git_local(&dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("magrathea.yml"), "stack: bookworm\n").unwrap();
    for (f, c) in files {
        std::fs::write(dir.join(f), c).unwrap();
    }
    git_local(&dir, &["add", "-A"]);
    git_local(&dir, &["commit", "-q", "-m", "app"]);
    let out = s.git(&s.admin, &dir, &["push", &s.url(app), "main"]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{app}: {err}");
    for want in says {
        assert!(err.contains(want), "{app}: wanted {want:?} in:\n{err}");
    }
    assert!(releases(s, app).is_empty(), "{app}: a release was stored");
}

#[test]
fn builtins_refuse_what_the_stack_cannot_honour_clearly() {
    let s = Server::start();
    let py = ("app.py", "print('hi')\n");
    for root in ["../etc", "/etc"] {
        refused(
            &s,
            "escape",
            &[("static.json", &format!("{{\"root\": \"{root}\"}}\n"))],
            &[&format!(
                "static.json: root \"{root}\" must be a path inside the app (no leading /, no ..)"
            )],
        );
    }
    refused(
        &s,
        "oldpy",
        &[
            py,
            ("requirements.txt", "\n"),
            ("runtime.txt", "python-2.7.18\n"),
        ],
        &["runtime.txt asks for Python 2.7.18", "has Python 3.11"],
    );
    refused(
        &s,
        "newpy",
        &[
            py,
            ("requirements.txt", "\n"),
            (".python-version", "3.13\n"),
            // By name: without it, the Python pinned chooses trixie (see stacks.rs).
            ("magrathea.yml", "stack: bookworm\n"),
        ],
        &[
            ".python-version asks for Python 3.13, but stack bookworm has Python 3.11",
            "use a stack with Python 3.13 or newer (bookworm: 3.11, trixie: 3.13)",
        ],
    );
    refused(
        &s,
        "py314-trixie",
        &[
            py,
            ("requirements.txt", "\n"),
            (".python-version", "3.14\n"),
            ("magrathea.yml", "stack: trixie\n"),
        ],
        &[
            ".python-version asks for Python 3.14, but stack trixie has Python 3.13.",
            "use a stack with Python 3.14 or newer (bookworm: 3.11, trixie: 3.13)",
        ],
    );
    // An older Python 3 than the stack's builds with it, said (nothing else can run it here).
    let (_, err) = push_fixture(
        &s,
        "py312-trixie",
        "python",
        &[
            (".python-version", "3.12\n"),
            ("magrathea.yml", "stack: trixie\n"),
        ],
    );
    assert!(
        err.contains("warning: .python-version asks for Python 3.12; building with stack trixie's Python 3.13."),
        "{err}"
    );
    refused(
        &s,
        "poetry",
        &[
            py,
            (
                "pyproject.toml",
                "[tool.poetry]\nname = \"x\"\nversion = \"0.1.0\"\n",
            ),
            ("poetry.lock", "# empty\n"),
        ],
        &["poetry.lock has no [metadata] lock-version: it is not a lock file Poetry wrote (run poetry lock and commit it)"],
    );
    refused(
        &s,
        "pipenv",
        &[py, ("Pipfile", "[packages]\nflask = \"*\"\n")],
        &["Pipfile found, but no Pipfile.lock", "pipenv lock"],
    );
    refused(
        &s,
        "yarn",
        &[
            (
                "package.json",
                "{\"name\": \"y\", \"packageManager\": \"yarn@$(id)\", \"scripts\": {\"start\": \"node i.js\"}}\n",
            ),
            ("yarn.lock", "# yarn lockfile v1\n"),
        ],
        &["packageManager \"yarn@$(id)\" names no version of yarn"],
    );
    // No start script and no server.js: no `web: npm start` is made up.
    refused(
        &s,
        "noweb",
        &[("package.json", "{\"name\": \"w\", \"private\": true}\n")],
        &["no process types"],
    );
}

/// Heroku's buildpack API as third-party bash buildpacks use it: scripts executed through
/// their own shebang (`set -euo pipefail`), one without its exec bit run with bash, the
/// first buildpack's `export` sourced before the second, the build env (STACK,
/// SOURCE_VERSION, HOME, ENV_DIR), bin/release's config_vars as defaults and addons
/// recorded, and the app built at /app, where it runs: a script whose shebang names an
/// interpreter inside the app by absolute path works at run time.
#[test]
fn bash_buildpacks_run_as_executables_and_build_where_the_app_runs() {
    let s = Server::start();
    s.ok(&s.admin, "apps:create bashy");
    s.ok(&s.admin, "config:set bashy GREETING=howdy --no-restart");
    let dir = fixture_repo(&s.dir.path().join("bashy-src"), "bash-buildpacks");
    let sha = git_local(&dir, &["rev-parse", "HEAD"]).trim().to_string();
    let out = s.git(&s.admin, &dir, &["push", &s.url("bashy"), "main"]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}\n{}", s.log());
    for want in [
        "Buildpack 1/2: tool",
        "built on magrathea-stack-bookworm-build, cc: /usr/bin/cc",
        "Tool app detected",
        "requested: tool-hello",
        "Greeter app detected",
        "hello from tool-hello in /app/.tool",
        &format!("STACK=bookworm SOURCE_VERSION={sha} HOME=/app BUILD_DIR=/app PWD=/app"),
        "/app/buildpacks/tool/bin/release is not executable; running it with bash",
        "Default config vars from buildpacks: GREETER_MODE, WEB_CONCURRENCY",
        "recorded, not provisioned): tool-cache:basic",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    let info = release_info(&s, "bashy", 1);
    assert_eq!(
        info["manifest"]["buildpacks"],
        serde_json::json!(["Tool", "Greeter"])
    );
    assert_eq!(info["manifest"]["config_vars"]["WEB_CONCURRENCY"], "2");
    assert_eq!(info["manifest"]["addons"][0], "tool-cache:basic");
    assert_eq!(
        s.get("bashy", "/index.html"),
        (200, format!("howdy from {}\n", &sha[..7]))
    );
    // At run time: the vendored script's absolute shebang resolves, and the buildpack's
    // config var defaults apply unless the app's config sets them.
    let out = s.ok(
        &s.admin,
        "run bashy -- sh -c 'tool-hello; echo $GREETER_MODE $GREETING; cat /etc/stack-release; command -v cc || echo no cc'",
    );
    assert_eq!(
        out,
        "hello from tool-hello in /app/.tool\nfriendly howdy\nmagrathea-stack-bookworm\nno cc\n"
    );
    // Built on the stack's build image, run on (and recorded as) its run image.
    let run_image = text(
        &run(Command::new("docker").args([
            "image",
            "inspect",
            "-f",
            "{{.Id}}",
            "magrathea/stack-bookworm-run:latest",
        ]))
        .stdout,
    );
    assert_eq!(info["manifest"]["stack_image"], run_image.trim());

    // Named buildpacks must pass their bin/detect, as on Heroku.
    git_local(&dir, &["rm", "-q", "Toolfile"]);
    git_local(&dir, &["commit", "-q", "-m", "no Toolfile"]);
    let out = s.git(&s.admin, &dir, &["push", &s.url("bashy"), "main"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("App not compatible with buildpack: tool (bin/detect failed)"),
        "{err}"
    );
}

/// A bash buildpack on a stack without bash fails with the reason, not `not found`.
#[test]
fn bash_buildpack_on_a_stack_without_bash_says_so() {
    let s = Server::start();
    let dir = fixture_repo(&s.dir.path().join("src"), "bash-buildpacks");
    commit(&dir, "magrathea.yml", "stack: tiny\n", "tiny");
    let out = s.git(&s.admin, &dir, &["push", &s.url("nobash"), "main"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("/app/buildpacks/tool/bin/detect needs bash, which stack tiny does not have"),
        "{err}"
    );
}

/// A bash buildpack shaped like heroku-buildpack-null/-inline: always detects, renders a
/// page saying which version of the buildpack built it, declares the web process.
fn hello_buildpack(dir: &Path, version: &str) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let files = [
        (
            "detect",
            "#!/usr/bin/env bash\n# bin/detect BUILD_DIR\nset -euo pipefail\necho \"Hello\"\n".to_string(),
        ),
        (
            "compile",
            format!(
                "#!/usr/bin/env bash\n# bin/compile BUILD_DIR CACHE_DIR ENV_DIR\nset -euo pipefail\n\
                 BUILD_DIR=$1\nBP_DIR=$(cd \"$(dirname \"${{BASH_SOURCE[0]}}\")/..\" && pwd)\n\
                 echo \"-----> Hello buildpack {version}\"\n\
                 mkdir -p \"$BUILD_DIR/www\"\n\
                 page=\"hello {version}\"\n\
                 if [[ -n \"${{PAGE_SUFFIX:-}}\" ]]; then page=\"$page $PAGE_SUFFIX\"; fi\n\
                 echo \"$page\" >\"$BUILD_DIR/www/index.html\"\n\
                 cat \"$BP_DIR/VERSION\" | sed 's/^/       buildpack version: /'\n"
            ),
        ),
        (
            "release",
            "#!/usr/bin/env bash\n# bin/release BUILD_DIR\nset -euo pipefail\n\
             cat <<'YAML'\n---\ndefault_process_types:\n  web: busybox httpd -f -p $PORT -h www\nYAML\n"
                .to_string(),
        ),
    ];
    for (name, body) in files {
        std::fs::write(bin.join(name), body).unwrap();
        run(Command::new("chmod").arg("755").arg(bin.join(name)));
    }
    std::fs::write(dir.join("VERSION"), format!("{version}\n")).unwrap();
}

/// Publish a work tree as a bare repository under `served/name` for dumb HTTP.
fn publish(work: &Path, served: &Path, name: &str) {
    let bare = served.join(name);
    if !bare.exists() {
        git_local(
            served,
            &["clone", "-q", "--bare", &work.display().to_string(), name],
        );
    } else {
        git_local(work, &["push", "-q", &bare.display().to_string(), "main"]);
    }
    git_local(&bare, &["update-server-info"]);
}

/// Buildpacks by URL: a git repository at a ref (`.buildpacks`), a `.git`-less one
/// (`BUILDPACK_URL` in `.env`), a tarball whose entries start with `./`, and the
/// `BUILDPACK_URL` config var. Fetched once and cached per URL+ref (a second build uses the
/// cache even with the source gone), fetched again after `builds:purge-cache`; a source that
/// cannot be reached, with nothing cached, fails the build at once naming the URL.
#[test]
fn buildpacks_by_url_are_fetched_cached_and_purged() {
    let s = Server::start();
    let root = s.dir.path();
    let served = root.join("served");
    std::fs::create_dir_all(&served).unwrap();

    // The git buildpack, v1 on main.
    let work = root.join("heroku-buildpack-hello");
    std::fs::create_dir_all(&work).unwrap();
    git_local(&work, &["init", "-q", "-b", "main"]);
    hello_buildpack(&work, "v1");
    git_local(&work, &["add", "-A"]);
    git_local(&work, &["commit", "-q", "-m", "v1"]);
    publish(&work, &served, "heroku-buildpack-hello.git");
    publish(&work, &served, "hello-buildpack"); // the same, served without .git
                                                // A tarball buildpack made like `tar -C dir -czf x.tgz .` (entries start with ./),
                                                // shaped like heroku-buildpack-inline's config step: it exports PAGE_SUFFIX.
    let tb = root.join("suffix-buildpack");
    std::fs::create_dir_all(tb.join("bin")).unwrap();
    std::fs::write(
        tb.join("bin/detect"),
        "#!/usr/bin/env bash\nset -euo pipefail\necho Suffix\n",
    )
    .unwrap();
    std::fs::write(
        tb.join("bin/compile"),
        "#!/usr/bin/env bash\n# bin/compile BUILD_DIR CACHE_DIR ENV_DIR\nset -euo pipefail\n\
         BP_DIR=$(cd \"$(dirname \"${BASH_SOURCE[0]}\")/..\" && pwd)\n\
         echo '-----> Suffix buildpack'\n\
         echo 'export PAGE_SUFFIX=\"(with suffix)\"' >\"$BP_DIR/export\"\n",
    )
    .unwrap();
    run(Command::new("chmod")
        .args(["-R", "755"])
        .arg(tb.join("bin")));
    let out = run(Command::new("tar")
        .arg("-C")
        .arg(&tb)
        .args(["-czf"])
        .arg(served.join("suffix-buildpack.tgz"))
        .arg("."));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let http = FileServer::start(&served);

    let git_url = http.url("heroku-buildpack-hello.git#main");
    let tgz_url = http.url("suffix-buildpack.tgz");
    let app = repo(&root.join("app-src"));
    std::fs::remove_file(app.join("Procfile")).unwrap();
    std::fs::write(app.join("magrathea.yml"), "stack: bookworm\n").unwrap();
    commit(
        &app,
        ".buildpacks",
        &format!("# order matters: the suffix's export feeds the page\n{tgz_url}\n{git_url}\n"),
        "buildpacks by url",
    );
    let push = |dir: &Path, app: &str| {
        let out = s.git(&s.admin, dir, &["push", &s.url(app), "main"]);
        (out.status.success(), text(&out.stderr))
    };
    let (ok, err) = push(&app, "urls");
    assert!(ok, "{err}");
    assert!(
        err.contains(&format!("-----> Fetching buildpack {tgz_url}")),
        "{err}"
    );
    assert!(
        err.contains(&format!("fetched {git_url} (commit ")),
        "{err}"
    );
    assert!(err.contains("buildpack version: v1"), "{err}");
    assert_eq!(
        s.get("urls", "/index.html"),
        (200, "hello v1 (with suffix)\n".into())
    );

    // Upstream moves on; the app keeps the copy it has until it asks for a fresh one.
    hello_buildpack(&work, "v2");
    git_local(&work, &["commit", "-q", "-am", "v2"]);
    publish(&work, &served, "heroku-buildpack-hello.git");
    commit(&app, "README", "second\n", "second");
    let (ok, err) = push(&app, "urls");
    assert!(ok, "{err}");
    assert!(
        err.contains(&format!("using cached {git_url} (commit ")),
        "{err}"
    );
    assert!(err.contains("buildpack version: v1"), "{err}");
    let purged = s.ok(&s.admin, "builds:purge-cache urls");
    assert!(
        purged.contains("purged the build cache of 'urls'"),
        "{purged}"
    );
    commit(&app, "README", "third\n", "third");
    let (ok, err) = push(&app, "urls");
    assert!(ok, "{err}");
    assert!(
        err.contains(&format!("fetched {git_url} (commit ")),
        "{err}"
    );
    assert_eq!(
        s.get("urls", "/index.html"),
        (200, "hello v2 (with suffix)\n".into())
    );

    // BUILDPACK_URL in .env, .git-less.
    let dotenv = repo(&root.join("dotenv-src"));
    std::fs::remove_file(dotenv.join("Procfile")).unwrap();
    std::fs::write(dotenv.join("magrathea.yml"), "stack: bookworm\n").unwrap();
    let bare_url = http.url("hello-buildpack");
    commit(
        &dotenv,
        ".env",
        &format!("BUILDPACK_URL={bare_url}\n"),
        "dotenv",
    );
    let (ok, err) = push(&dotenv, "dotenv");
    assert!(ok, "{err}");
    assert!(
        err.contains(&format!("fetched {bare_url} (commit ")),
        "{err}"
    );
    assert_eq!(s.get("dotenv", "/index.html"), (200, "hello v1\n".into()));

    // The source goes away: what is cached still builds; what is not fails at once.
    let dead = http.url("heroku-buildpack-gone.git");
    drop(http);
    commit(&app, "README", "fourth\n", "fourth");
    let (ok, err) = push(&app, "urls");
    assert!(ok, "{err}");
    assert!(err.contains("using cached"), "{err}");
    s.ok(&s.admin, "apps:create gone");
    s.ok(
        &s.admin,
        &format!("config:set gone BUILDPACK_URL={dead} --no-restart"),
    );
    let (ok, err) = push(&dotenv, "gone");
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "cannot fetch buildpack {}",
            dead.trim_end_matches('/')
        )),
        "{err}"
    );
    assert!(releases(&s, "gone").is_empty());
}

/// Submodules are fetched at build time from the URLs in .gitmodules, recursively, at the
/// commits the pushed tree records; one that cannot be fetched fails the build, named.
#[test]
fn submodules_are_fetched_recursively_at_the_recorded_commit() {
    let s = Server::start();
    let root = s.dir.path();
    let served = root.join("served");
    std::fs::create_dir_all(&served).unwrap();
    let http = FileServer::start(&served);

    let inner = root.join("inner");
    std::fs::create_dir_all(&inner).unwrap();
    git_local(&inner, &["init", "-q", "-b", "main"]);
    commit(&inner, "inner.txt", "inner v1\n", "inner");
    publish(&inner, &served, "inner.git");

    let lib = root.join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    git_local(&lib, &["init", "-q", "-b", "main"]);
    std::fs::write(lib.join("index.html"), "from the submodule v1\n").unwrap();
    git_local(
        &lib,
        &["submodule", "add", "-q", &http.url("inner.git"), "inner"],
    );
    git_local(&lib, &["commit", "-q", "-am", "lib v1"]);
    git_local(&lib, &["add", "-A"]);
    git_local(&lib, &["commit", "-q", "-m", "lib v1 files"]);
    publish(&lib, &served, "shared-ui.git");

    let app = repo(&root.join("app-src"));
    std::fs::write(
        app.join("Procfile"),
        "web: busybox httpd -f -p $PORT -h vendor/ui\n",
    )
    .unwrap();
    git_local(
        &app,
        &[
            "submodule",
            "add",
            "-q",
            &http.url("shared-ui.git"),
            "vendor/ui",
        ],
    );
    git_local(&app, &["add", "-A"]);
    git_local(&app, &["commit", "-q", "-m", "app with a submodule"]);
    let out = s.git_ok(&s.admin, &app, &["push", &s.url("subs"), "main"]);
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "Fetching submodule vendor/ui from {}",
            http.url("shared-ui.git")
        )),
        "{err}"
    );
    assert!(
        err.contains("Fetching submodule vendor/ui/inner from"),
        "{err}"
    );
    assert_eq!(
        s.get("subs", "/index.html"),
        (200, "from the submodule v1\n".into())
    );
    assert_eq!(
        s.get("subs", "/inner/inner.txt"),
        (200, "inner v1\n".into())
    );

    // Upstream moves on; the app still gets the commit it records.
    commit(&lib, "index.html", "from the submodule v2\n", "lib v2");
    publish(&lib, &served, "shared-ui.git");
    commit(&app, "README", "again\n", "again");
    s.git_ok(&s.admin, &app, &["push", &s.url("subs"), "main"]);
    assert_eq!(
        s.get("subs", "/index.html"),
        (200, "from the submodule v1\n".into())
    );

    // A submodule whose URL does not answer: the build fails naming it.
    let gone = http.url("gone-ui.git");
    git_local(
        &app,
        &[
            "config",
            "-f",
            ".gitmodules",
            "submodule.vendor/ui.url",
            &gone,
        ],
    );
    git_local(&app, &["commit", "-q", "-am", "moved"]);
    let out = s.git(&s.admin, &app, &["push", &s.url("subs2"), "main"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("submodule 'vendor/ui': cannot fetch {gone}")),
        "{err}"
    );
    assert!(releases(&s, "subs2").is_empty());
}
