//! Compatibility suite (issue 9): apps and buildpacks shaped like real published ones
//! (`tests/fixtures/compat/<case>/`), pushed unchanged with real git over ssh to one server
//! on the default (bookworm) stack, or on the one their magrathea.yml names (trixie), with the
//! registries (PyPI, npm, Debian) for dependencies (Go modules are vendored: no module proxy).
//! Each must answer through the router, or fail at build time where that is the point.
//!
//! One test function shares the server: the cases run one after the other (the slow-boot
//! case in a thread beside them, since it mostly waits), every case runs even when another
//! fails, and the failures are listed at the end. `COMPAT_CASES=flask-gunicorn,django` runs
//! only those (pending cases included).

mod util;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use util::*;

struct Ctx<'a> {
    s: &'a Server,
    http: &'a FileServer,
    /// Served by `http`: bare repositories published with `publish`.
    served: PathBuf,
}

fn fixture_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/compat")
        .join(case)
}

impl Ctx<'_> {
    /// A git repo holding a copy of the fixture, committed.
    fn app(&self, case: &str) -> PathBuf {
        fixture_repo(
            &self.s.dir.path().join(format!("src-{case}")),
            &format!("compat/{case}"),
        )
    }

    fn push(&self, app: &str, dir: &Path) -> Output {
        self.s
            .git(&self.s.admin, dir, &["push", &self.s.url(app), "main"])
    }

    /// Pushes; must go live. Returns what the pusher saw.
    fn push_ok(&self, app: &str, dir: &Path) -> String {
        let out = self.push(app, dir);
        let err = text(&out.stderr);
        assert!(out.status.success(), "push of {app} failed:\n{err}");
        assert!(err.contains("Released v"), "{err}");
        err
    }

    /// The router's answer for `path`, waiting (two minutes at most) until it is a 200
    /// holding `want`.
    fn answer(&self, app: &str, path: &str, want: &str) -> String {
        let t = Instant::now();
        loop {
            let (status, body) = self.s.get(app, path);
            if status == 200 && body.contains(want) {
                return body;
            }
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "{app}{path}: wanted 200 with {want:?}, got {status}: {body}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Publishes a directory as a bare repository `name` for dumb HTTP; returns its URL.
    fn publish(&self, dir: &Path, name: &str) -> String {
        let work = self.s.dir.path().join(format!("pub-{name}"));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap();
        let out = run(Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", dir.display()))
            .arg(&work));
        assert!(out.status.success(), "{}", text(&out.stderr));
        git_local(&work, &["init", "-q", "-b", "main"]);
        git_local(&work, &["add", "-A"]);
        git_local(&work, &["commit", "-q", "-m", &format!("{name}: initial")]);
        let bare = self.served.join(name);
        let _ = std::fs::remove_dir_all(&bare);
        git_local(
            &self.served,
            &["clone", "-q", "--bare", &work.display().to_string(), name],
        );
        git_local(&bare, &["update-server-info"]);
        self.http.url(name)
    }

    fn logs(&self, app: &str, process: &str) -> String {
        text(
            &self
                .s
                .ssh(
                    &self.s.admin,
                    &format!("logs {app} --process {process} -n 200"),
                    None,
                )
                .stdout,
        )
    }
}

/// Flask served by gunicorn (a console script from PyPI), pinned requirements. A second push
/// with unchanged requirements reuses the cached virtualenv: no venv, no pip.
fn flask_gunicorn(c: &Ctx) {
    let dir = c.app("flask-gunicorn");
    let err = c.push_ok("flask", &dir);
    assert!(err.contains("Installing requirements with pip"), "{err}");
    // Heroku's hooks: bin/pre_compile before anything is installed, bin/post_compile
    // after, with the virtualenv's python (it writes what /build-info serves).
    let at = |s: &str| err.find(s).unwrap_or_else(|| panic!("no {s:?} in:\n{err}"));
    assert!(at("Running bin/pre_compile hook") < at("requirements name gunicorn"));
    assert!(at("requirements name gunicorn") < at("Installing requirements with pip"));
    assert!(at("Installing requirements with pip") < at("Running bin/post_compile hook"));
    assert!(at("Running bin/post_compile hook") < at("wrote build-info.json"));
    c.answer("flask", "/", "hello from flask on python 3.11");
    c.answer("flask", "/healthz", "\"status\":\"ok\"");
    c.answer("flask", "/build-info", "\"flask\": \"3.");

    let app_py = std::fs::read_to_string(dir.join("app.py")).unwrap();
    commit(
        &dir,
        "app.py",
        &app_py.replace("hello from flask", "hello again from flask"),
        "greeting",
    );
    // A patch-level pin of the stack's minor (Heroku's runtime.txt style) builds with the
    // stack's Python and says so.
    commit(&dir, "runtime.txt", "python-3.11.9\n", "pin a patch");
    let err = c.push_ok("flask", &dir);
    assert!(
        err.contains("warning: runtime.txt asks for Python 3.11.9; building with stack bookworm's Python 3.11."),
        "{err}"
    );
    assert!(
        err.contains("Dependencies unchanged: reusing the cached virtualenv"),
        "{err}"
    );
    for not in [
        "Creating virtualenv",
        "Installing requirements",
        "pip install",
    ] {
        assert!(!err.contains(not), "second push ran {not:?}:\n{err}");
    }
    c.answer("flask", "/", "hello again from flask on python 3.11.");

    // A hook that fails fails the build, in one line; the live release stays.
    commit(
        &dir,
        "bin/pre_compile",
        "#!/bin/sh\necho 'settings check failed'\nexit 3\n",
        "a failing hook",
    );
    let out = c.push("flask", &dir);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(" !     bin/pre_compile failed (exit 3; see above)"),
        "{err}"
    );
    c.answer("flask", "/", "hello again from flask on python 3.11.");
}

/// Django the way Heroku's template has it: collectstatic at build time (served by
/// whitenoise), `DATABASE_URL` read by dj-database-url (psycopg2 from PyPI), here from the
/// Postgres its magrathea.yml declares, and `release: manage.py migrate` into it;
/// DISABLE_COLLECTSTATIC skips collectstatic.
fn django(c: &Ctx) {
    let dir = c.app("django");
    let err = c.push_ok("django", &dir);
    assert!(
        err.contains("python manage.py collectstatic --noinput")
            && err.contains("static files copied"),
        "{err}"
    );
    assert!(
        err.contains("Linking django-db into django (production) as DATABASE_URL"),
        "{err}"
    );
    c.answer(
        "django",
        "/",
        "django notes: 0 notes, 19 migrations applied on postgresql",
    );
    c.answer("django", "/static/css/site.css", "font-family");
    // The Procfile names no worker count: gunicorn takes WEB_CONCURRENCY, which the Python
    // buildpack's profile script sets as Heroku's does (a 512M dyno with 2 cpus: 2).
    let booted = |logs: &str| logs.matches("Booting worker with pid").count();
    let mut logs = c.logs("django", "web");
    for _ in 0..50 {
        if booted(&logs) >= 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        logs = c.logs("django", "web");
    }
    assert_eq!(booted(&logs), 2, "gunicorn workers:\n{logs}");

    c.s.ok(&c.s.admin, "config:set django DISABLE_COLLECTSTATIC=1");
    commit(&dir, "static/css/site.css", "body { margin: 0; }\n", "css");
    let err = c.push_ok("django", &dir);
    assert!(err.contains("Skipping Django collectstatic"), "{err}");
    assert!(!err.contains("static files copied"), "{err}");
    c.answer("django", "/", "migrations applied");
}

/// Express from npm (npm ci with the lock file, `npm run build`), extra Procfile types that
/// do not start by default (a worker, a clock, a one-shot task) and a release task that
/// writes under /app. node_modules comes from the cache on the next push.
fn express(c: &Ctx) {
    let dir = c.app("express");
    let err = c.push_ok("express", &dir);
    assert!(err.contains("Installing dependencies (npm ci)"), "{err}");
    assert!(err.contains("Running build (npm run build)"), "{err}");
    c.answer("express", "/", "built npm run build on node v");
    c.answer("express", "/", "release tasks run: 1");
    c.answer("express", "/robots.txt", "User-agent");
    // What Heroku's Node.js buildpack gives every process: the memory (MB) and one process
    // per 512 MB of it.
    let out = c.s.ssh(
        &c.s.admin,
        "run express -- printenv MEMORY_AVAILABLE WEB_CONCURRENCY",
        None,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "512\n1\n", "{out:?}");

    commit(
        &dir,
        "public/robots.txt",
        "User-agent: *\nDisallow: /admin\n",
        "robots",
    );
    let err = c.push_ok("express", &dir);
    assert!(
        err.contains("Dependencies unchanged: reusing the cached node_modules"),
        "{err}"
    );
    assert!(!err.contains("npm ci"), "{err}");
    c.answer("express", "/robots.txt", "Disallow: /admin");
    c.answer("express", "/", "release tasks run: 2");
    // NODE_MODULES_CACHE=false: the build cache is neither read nor kept (Heroku's switch).
    c.s.ok(&c.s.admin, "config:set express NODE_MODULES_CACHE=false");
    commit(&dir, "public/robots.txt", "User-agent: *\n", "robots again");
    let err = c.push_ok("express", &dir);
    assert!(
        err.contains("Not using the build cache (NODE_MODULES_CACHE=false)"),
        "{err}"
    );
    assert!(err.contains("Installing dependencies (npm ci)"), "{err}");
}

/// The stack's images must be there (scripts/test.sh builds them): a missing one fails here,
/// by name, rather than as a failed push.
fn require_stack(name: &str) {
    let image = format!("magrathea/stack-{name}-run:latest");
    let out = run(Command::new("docker").args(["image", "inspect", &image]));
    assert!(
        out.status.success(),
        "stack image {image} missing; run scripts/stack-{name}.sh (scripts/test.sh does)"
    );
}

/// Heroku's Python template as it is today, unchanged (no magrathea.yml): Django 5 on the
/// Python 3.13 `.python-version` asks for, which takes it to the trixie stack, gunicorn with
/// its config file, collectstatic at build time into WhiteNoise's compressed manifest
/// storage, which serves the hashed file.
fn trixie_django(c: &Ctx) {
    require_stack("trixie");
    let dir = c.app("trixie-django");
    let err = c.push_ok("tdjango", &dir);
    // No magrathea.yml: the Python it pins chooses the stack that has it.
    assert!(
        err.contains(".python-version asks for Python 3.13: building on stack trixie (Python 3.13; the default stack bookworm has 3.11;")
            && err.contains(".python-version: Python 3.13 (stack has 3.13."),
        "{err}"
    );
    assert!(
        err.contains("python manage.py collectstatic --noinput")
            && err.contains("1 static file copied to '/app/staticfiles', 1 post-processed"),
        "{err}"
    );
    let page = c.answer("tdjango", "/", "board on python 3.13.");
    assert!(page.contains("with django 5."), "{page}");
    // The stylesheet under its content-hashed name, from collectstatic's manifest.
    let css = page
        .split("href=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_default()
        .to_string();
    assert!(
        css.starts_with("/static/board/site.")
            && css.ends_with(".css")
            && css != "/static/board/site.css",
        "{page}"
    );
    c.answer("tdjango", &css, "font-family");
}

/// Heroku's Node template's shape on the trixie stack: Express with EJS views, `npm start`
/// from the Procfile, a lock file made by npm, and an engines range the stack's Node 20
/// satisfies (no warning).
fn trixie_express(c: &Ctx) {
    require_stack("trixie");
    let dir = c.app("trixie-express");
    let err = c.push_ok("texpress", &dir);
    assert!(
        err.contains("engines.node: 20.x || 22.x (this stack has node v20."),
        "{err}"
    );
    assert!(!err.contains("warning"), "{err}");
    assert!(err.contains("Installing dependencies (npm ci)"), "{err}");
    c.answer("texpress", "/", "express on node v20.");
    c.answer("texpress", "/stylesheets/main.css", "font-family");
    c.answer("texpress", "/times?n=3", "0 1 2");
}

/// A Go web service on the trixie stack's Go, as Heroku's Go buildpack builds it: net/http on
/// $PORT, a JSON health endpoint, google/uuid vendored by `go mod vendor` (from a local
/// `replace`: no module proxy is reachable where the fixture was made), the default web
/// process named after the module. The second push compiles only the changed package (the
/// build cache), and dropping vendor/ fails in one line suggesting `go mod vendor`.
fn go_service(c: &Ctx) {
    require_stack("trixie");
    // The packages `go install -v` compiled, one a line (git pads the remote's lines).
    let compiled = |err: &str| -> Vec<String> {
        err.lines()
            .map(|l| l.trim_start_matches("remote:").trim().to_string())
            .filter(|l| l.contains('/') && !l.contains(' ') && !l.contains(':'))
            .collect()
    };
    let dir = c.app("go-service");
    let err = c.push_ok("tally", &dir);
    for want in [
        "Using Go 1.24.",
        "Using vendored modules (vendor/modules.txt)",
        "Running: go install -v -tags heroku -mod=vendor github.com/magrathea-compat/tally",
        "packages of the standard library)",
        "Installed: bin/tally",
    ] {
        assert!(err.contains(want), "no {want:?} in:\n{err}");
    }
    let first = compiled(&err);
    assert!(
        first.contains(&"github.com/google/uuid".to_string())
            && first.contains(&"github.com/magrathea-compat/tally".to_string()),
        "{err}"
    );
    let health = c.answer("tally", "/health", "\"status\":\"ok\"");
    let v: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert!(v["go"].as_str().unwrap().starts_with("go1.24."), "{health}");
    assert_eq!(v["request"].as_str().unwrap().len(), 36, "{health}");
    let page = c.answer("tally", "/", " on go1.24.");
    assert!(page.starts_with("tally "), "{page}");
    let ps = c.s.ok(&c.s.admin, "ps tally --json");
    assert!(ps.contains("\"web.1\""), "{ps}");

    let main = std::fs::read_to_string(dir.join("main.go")).unwrap();
    commit(
        &dir,
        "main.go",
        &main.replace("tally %d", "tally again %d"),
        "reword",
    );
    let err = c.push_ok("tally", &dir);
    assert_eq!(
        compiled(&err),
        ["github.com/magrathea-compat/tally"],
        "{err}"
    );
    assert!(!err.contains("standard library"), "{err}");
    c.answer("tally", "/", "tally again ");

    // Without vendor/ the module proxy is asked, and it is unreachable here.
    git_local(&dir, &["rm", "-r", "-q", "vendor"]);
    let gomod = std::fs::read_to_string(dir.join("go.mod")).unwrap();
    let gomod: String = gomod
        .lines()
        .filter(|l| !l.starts_with("replace"))
        .map(|l| format!("{l}\n"))
        .collect();
    commit(&dir, "go.mod", &gomod, "dependencies from the proxy");
    let out = c.push("tally", &dir);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(" !     could not download the module's dependencies from ")
            && err.contains("vendor them (go mod vendor) and commit vendor/"),
        "{err}"
    );
    c.answer("tally", "/", "tally again");
}

/// Heroku's `// +heroku install ./cmd/...` layout: two binaries sharing an internal package,
/// a web and a worker named by the Procfile (no default web with two); GO_LINKER_SYMBOL
/// stamps the commit into the web binary.
fn go_workers(c: &Ctx) {
    require_stack("trixie");
    let dir = c.app("go-workers");
    c.s.ok(&c.s.admin, "apps:create relay");
    c.s.ok(&c.s.admin, "config:set relay GO_LINKER_SYMBOL=main.version");
    let commit_id = git_local(&dir, &["rev-parse", "HEAD"]);
    let err = c.push_ok("relay", &dir);
    assert!(
        err.contains("Running: go install -v -tags heroku ./cmd/...")
            && err.contains("Installed: bin/web bin/worker"),
        "{err}"
    );
    c.answer(
        "relay",
        "/",
        &format!(
            "relay web {}; the worker logs \"relay worker beat 1\"",
            commit_id.trim()
        ),
    );
    let t = Instant::now();
    while !c.logs("relay", "worker").contains("relay worker beat 2") {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no beat: {}",
            c.logs("relay", "worker")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A go.mod asking for a Go newer than the stack's is refused in one line naming both, and
/// nothing deploys (no toolchain is downloaded); without a stack named it builds on the stack
/// with Go, and on bookworm by name the missing Go is named. Then Dokku's Go sample shape
/// (no stack named, `web: bin/web`) builds there and answers.
fn go_too_new(c: &Ctx) {
    require_stack("trixie");
    let dir = c.app("go-too-new");
    let out = c.push("future", &dir);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(" !     go.mod asks for Go 1.99, newer than this stack's Go 1.24."),
        "{err}"
    );
    assert!(!err.contains("Released v"), "{err}");
    assert!(!err.contains("go install"), "{err}");
    // Bookworm's build image has no Go (Debian 12's 1.19 is too old for today's go.mod): a
    // Go app naming no stack builds on trixie all the same, as it would on Heroku or Dokku,
    // unchanged; one that names bookworm is told which stack has Go.
    git_local(&dir, &["rm", "-q", "magrathea.yml"]);
    git_local(&dir, &["commit", "-q", "-m", "the default stack"]);
    let out = c.push("future", &dir);
    let err = text(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(
                "-----> Go app: building on stack trixie (the default stack bookworm has no Go;"
            )
            && err.contains(" !     go.mod asks for Go 1.99, newer than this stack's Go 1.24."),
        "{err}"
    );
    commit(
        &dir,
        "magrathea.yml",
        "stack: bookworm\n",
        "bookworm, by name",
    );
    let out = c.push("future", &dir);
    let err = text(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(" !     go not found on stack bookworm; use a stack with Go (stack: trixie in magrathea.yml)"),
        "{err}"
    );

    // Dokku's Go sample shape, no stack named: a module of one main package, `web: bin/web`.
    git_local(&dir, &["rm", "-q", "magrathea.yml"]);
    std::fs::write(dir.join("go.mod"), "module dokku.me/web\n\ngo 1.23.3\n").unwrap();
    commit(
        &dir,
        "main.go",
        "package main\n\nimport (\n\t\"fmt\"\n\t\"net/http\"\n\t\"os\"\n\t\"runtime\"\n)\n\nfunc main() {\n\thttp.HandleFunc(\"/\", func(w http.ResponseWriter, r *http.Request) {\n\t\tfmt.Fprintf(w, \"go web on %s\", runtime.Version())\n\t})\n\thttp.ListenAndServe(\":\"+os.Getenv(\"PORT\"), nil)\n}\n",
        "a web server",
    );
    commit(&dir, "Procfile", "web: bin/web\n", "Procfile");
    let err = c.push_ok("future", &dir);
    assert!(err.contains("Go app: building on stack trixie"), "{err}");
    c.answer("future", "/", "go web on go1.24");
}

/// A worker and no web process, its formation in app.json: deploys, and the worker runs.
fn worker_only(c: &Ctx) {
    let dir = c.app("worker-only");
    c.push_ok("jobs", &dir);
    let ps = c.s.ok(&c.s.admin, "ps jobs --json");
    let rows: serde_json::Value = serde_json::from_str(&ps).unwrap();
    let procs: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["process"].as_str().unwrap())
        .collect();
    assert_eq!(procs, ["worker.1"], "{ps}");
    let t = Instant::now();
    while !c.logs("jobs", "worker").contains("worker heartbeat") {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "no heartbeat: {}",
            c.logs("jobs", "worker")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Dokku's sample-app shape: `.buildpacks` naming Heroku's own Node.js and Python
/// buildpacks by GitHub URL (the builtins run in their place: GitHub is not needed), a
/// `CHECKS` file (its path and content checks gate the deploy), a Procfile with comment
/// blocks, an inline comment, a one-shot type and `release:`, and app.json as Dokku and
/// Heroku's app setup read it: predeploy and postdeploy every deploy, `scripts.postdeploy`
/// once, `env` defaults and a generated secret on the first deploy (the first build sees
/// them too), `cron` said to be ignored. The repo's `.env` is never loaded.
fn dokku_multi(c: &Ctx) {
    let dir = c.app("dokku-multi");
    let err = c.push_ok("statuspage", &dir);
    for want in [
        "https://github.com/heroku/heroku-buildpack-nodejs: using the builtin nodejs buildpack",
        "https://github.com/heroku/heroku-buildpack-python.git: using the builtin python buildpack",
        "static/site.css: ",
        // The first build sees app.json's env as the first deploy sets it.
        "build config: banner All systems, session secret 64 chars",
        "app.json env (production): set STATUS_BANNER; generated SESSION_SECRET",
        "app.json cron: 1 scheduled task is not run here",
        "predeploy: assets present",
        "release: assets present; DYNO=release.1",
        "(GET /health)",
        "statuspage deployed at ",
        "Running first-deploy script (app.json scripts.postdeploy)",
        "seed: assets present",
    ] {
        assert!(err.contains(want), "no {want:?} in:\n{err}");
    }
    assert!(!err.contains("Fetching buildpack"), "{err}");
    let body = c.answer("statuspage", "/", "assets built by node v");
    assert!(
        body.contains("(All systems)")
            && body.contains("served by python 3.11")
            && body.contains("session secret 64 chars"),
        "{body}"
    );
    c.answer(
        "statuspage",
        "/static/site.css",
        ".up   { color: #1a7f37; }",
    );
    let ps = c.s.ok(&c.s.admin, "ps statuspage --json");
    let rows: serde_json::Value = serde_json::from_str(&ps).unwrap();
    let procs: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "process")
        .map(|r| r["process"].as_str().unwrap())
        .collect();
    assert_eq!(procs, ["web.1"], "{ps}");

    // The next deploy keeps the generated secret and runs scripts.postdeploy no more.
    commit(
        &dir,
        "assets/status.css",
        ".up   { color: #1a7f37; }\n.down { color: #cf222e; }\n.slow { color: #9a6700; }\n",
        "a colour for slow services",
    );
    let err = c.push_ok("statuspage", &dir);
    assert!(!err.contains("first-deploy script"), "{err}");
    assert!(
        err.contains("build config: banner All systems, session secret 64 chars"),
        "{err}"
    );
    assert!(!err.contains("app.json env"), "{err}");
    let digest = |b: &str| b.split("sha256 ").nth(1).map(str::to_string);
    let again = c.answer("statuspage", "/static/site.css", ".slow");
    assert!(again.contains(".up"), "{again}");
    assert_eq!(
        digest(&c.answer("statuspage", "/", "assets")),
        digest(&body)
    );

    // The CHECKS file gates the deploy: a content the new release does not serve fails it,
    // naming the file, and the live release keeps serving.
    commit(
        &dir,
        "CHECKS",
        "WAIT=1\nATTEMPTS=2\n/health all-clear\n",
        "stricter check",
    );
    let out = c.push("statuspage", &dir);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("CHECKS file"), "{err}");
    c.answer("statuspage", "/static/site.css", ".slow");
}

/// A Dokku static site: `.env` names Dokku's buildpack-nginx (the static builtin runs in its
/// place), `.static` marks it, and buildpack-nginx's settings choose what is served: the
/// built `_site/` (NGINX_ROOT), with index.html answering client-side routes
/// (NGINX_DEFAULT_REQUEST). The repo's other files are not served.
fn dokku_static(c: &Ctx) {
    let dir = c.app("dokku-static");
    c.s.ok(&c.s.admin, "apps:create fieldnotes");
    c.s.ok(
        &c.s.admin,
        "config:set fieldnotes NGINX_ROOT=_site NGINX_DEFAULT_REQUEST=index.html --no-restart",
    );
    let err = c.push_ok("fieldnotes", &dir);
    for want in [
        "https://github.com/dokku/buildpack-nginx: using the builtin static buildpack",
        "no static.json: serving _site/, NGINX_ROOT _site, NGINX_DEFAULT_REQUEST index.html",
    ] {
        assert!(err.contains(want), "no {want:?} in:\n{err}");
    }
    c.answer("fieldnotes", "/", "<h1>Field notes</h1>");
    c.answer("fieldnotes", "/docs/", "Field notes: docs");
    c.answer("fieldnotes", "/site.css", "Georgia");
    c.answer("fieldnotes", "/notes/2024/moss", "<h1>Field notes</h1>");
    for hidden in [
        "/README.md",
        "/_config.yml",
        "/.static",
        "/.env",
        "/missing.js",
    ] {
        let (status, body) = c.s.get("fieldnotes", hidden);
        assert_eq!(status, 404, "{hidden}: {body}");
    }
}

/// Binds $PORT only after 30 s (Heroku's boot timeout is 60 s).
fn slow_boot(c: &Ctx) {
    let dir = c.app("slow-boot");
    c.push_ok("slow", &dir);
    c.answer("slow", "/", "warmed up in 30s");
}

/// The site is a git submodule, fetched at build time from its URL.
fn submodule(c: &Ctx) {
    let theme = c.publish(&fixture_dir("submodule/theme"), "docs-theme.git");
    let dir = c.s.dir.path().join("src-submodule");
    let _ = fixture_repo(&dir, "compat/submodule/app");
    git_local(
        &dir,
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            &theme,
            "site",
        ],
    );
    git_local(&dir, &["commit", "-q", "-m", "site theme as a submodule"]);
    c.push_ok("docs", &dir);
    c.answer("docs", "/", "theme from the submodule");
}

/// A third-party bash buildpack (`set -euo pipefail`, arrays, BASH_SOURCE) named by git URL
/// in `.buildpacks`.
fn buildpack_by_url(c: &Ctx) {
    let url = c.publish(&fixture_dir("buildpacks/motd"), "heroku-buildpack-motd.git");
    let dir = c.app("motd-app");
    commit(
        &dir,
        ".buildpacks",
        &format!("{url}#main\n"),
        "buildpack by URL",
    );
    c.push_ok("motd", &dir);
    c.answer("motd", "/", "Deploys freeze at 17:00");
    c.answer("motd", "/", "with bash 5");
}

/// An apt-style bash buildpack (by URL) downloads a Debian package at build time, unpacks it
/// into /app/.apt, and the app runs it; then the builtin apt buildpack, named
/// `heroku-community/apt` as Heroku apps name it, does the same.
fn apt_buildpack(c: &Ctx) {
    let url = c.publish(&fixture_dir("buildpacks/apt"), "heroku-buildpack-apt.git");
    let dir = c.app("apt-app");
    commit(&dir, ".buildpacks", &format!("{url}\n"), "apt buildpack");
    let err = c.push_ok("greeter", &dir);
    assert!(err.contains("Installing hello_"), "{err}");
    c.answer("greeter", "/", "hello from a Debian package");

    // Named as Heroku apps name it (its registry name; GitHub is not needed), the builtin
    // apt buildpack installs the same Aptfile.
    commit(
        &dir,
        ".buildpacks",
        "heroku-community/apt\n",
        "Heroku's apt buildpack",
    );
    commit(
        &dir,
        "README.md",
        "# greeter\n\nGNU hello from Debian.\n",
        "again",
    );
    let err = c.push_ok("greeter", &dir);
    assert!(
        err.contains("heroku-community/apt: using the builtin apt buildpack")
            && err.contains("Downloading: hello")
            && err.contains("packages unpacked into .apt"),
        "{err}"
    );
    c.answer("greeter", "/", "hello from a Debian package");
}

/// composer.json whose dependencies cannot be fetched: the build fails, naming composer.
fn php_composer_unfetchable(c: &Ctx) {
    let dir = c.app("php-composer-unfetchable");
    let out = c.push("shop", &dir);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("composer"), "{err}");
    assert!(!err.contains("Released v"), "{err}");
    assert!(err.contains("pre-receive hook declined"), "{err}");
}

/// A real-time ASGI app (Starlette on uvicorn, from PyPI): a WebSocket echo and a
/// server-sent event stream through the router. The stream's second event waits for a
/// request the test makes only after it has read the first one, so a router that held the
/// response back until its end would never get there.
fn asgi_realtime(c: &Ctx) {
    use std::io::{Read, Write};
    let dir = c.app("asgi-realtime");
    c.push_ok("realtime", &dir);
    c.answer("realtime", "/", "hello from starlette");
    let host = "realtime.localhost";

    let ws = std::net::TcpStream::connect(("127.0.0.1", c.s.http_port)).unwrap();
    ws.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    assert_eq!(ws_echo(ws, host, "/ws", "hello"), "echo: hello");

    let mut sse = std::net::TcpStream::connect(("127.0.0.1", c.s.http_port)).unwrap();
    sse.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        sse,
        "GET /events HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    let mut read_until = |want: &str, got: &mut Vec<u8>| {
        let mut buf = [0u8; 4096];
        while !text(got).contains(want) {
            let n = sse
                .read(&mut buf)
                .unwrap_or_else(|e| panic!("waiting for {want:?}: {e}; got {}", text(got)));
            assert!(n > 0, "closed before {want:?}: {}", text(got));
            got.extend_from_slice(&buf[..n]);
        }
    };
    read_until("data: first", &mut got);
    let head = text(&got).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    c.answer("realtime", "/release", "released");
    // The second event, then the chunked stream's end.
    read_until("data: second", &mut got);
    read_until("0\r\n\r\n", &mut got);
}

/// Flask locked with uv (pyproject.toml + uv.lock, a dev group): the stack has no uv, so
/// the buildpack fetches its pinned uv from PyPI once; the dev group stays out. The second
/// push takes both the tool and the virtualenv from the cache.
fn uv_app(c: &Ctx) {
    let dir = c.app("uv-app");
    let err = c.push_ok("uvapp", &dir);
    assert!(err.contains("Installing uv"), "{err}");
    assert!(
        err.contains("Installing dependencies with uv (uv.lock)"),
        "{err}"
    );
    c.answer("uvapp", "/", "hello from a uv app; dev dependencies absent");
    commit(&dir, "README", "a Flask app\n", "readme");
    let err = c.push_ok("uvapp", &dir);
    assert!(
        err.contains("Dependencies unchanged: reusing the cached virtualenv"),
        "{err}"
    );
    assert!(!err.contains("Installing uv"), "{err}");
}

/// Flask locked with pipenv (Pipfile + Pipfile.lock, dev packages): its default packages
/// installed as the lock pins them, hashes checked, without pipenv.
fn pipenv_app(c: &Ctx) {
    let dir = c.app("pipenv-app");
    let err = c.push_ok("pipenvapp", &dir);
    assert!(
        err.contains("Installing dependencies from Pipfile.lock with pip"),
        "{err}"
    );
    // The Python the lock was made for (its [requires] python_version), read as Heroku does.
    assert!(
        err.contains("Pipfile.lock: Python 3.11 (stack has 3.11."),
        "{err}"
    );
    c.answer(
        "pipenvapp",
        "/",
        "hello from a pipenv app; dev dependencies absent",
    );
}

/// Express locked with classic yarn (yarn.lock v1), a build script and a dev dependency, no
/// Procfile (`npm start`, as on Heroku): the stack has no yarn, so yarn 1 comes from the npm
/// registry once, and the second push takes it and node_modules from the cache.
fn yarn_app(c: &Ctx) {
    let dir = c.app("yarn-app");
    let err = c.push_ok("yarnapp", &dir);
    assert!(err.contains("Installing yarn 1.22.22"), "{err}");
    assert!(err.contains("Installing dependencies (yarn)"), "{err}");
    c.answer(
        "yarnapp",
        "/",
        "hello from express (built with yarn); dev dependencies absent",
    );
    commit(&dir, "README", "an Express app\n", "readme");
    let err = c.push_ok("yarnapp", &dir);
    assert!(
        err.contains("Dependencies unchanged: reusing the cached node_modules"),
        "{err}"
    );
    assert!(!err.contains("Installing yarn"), "{err}");
}

/// Koa locked with pnpm, whose package.json names its pnpm (`packageManager`, corepack's
/// field): that version is fetched, not the buildpack's own.
fn pnpm_app(c: &Ctx) {
    let dir = c.app("pnpm-app");
    let err = c.push_ok("pnpmapp", &dir);
    assert!(err.contains("Installing pnpm 9.15.9"), "{err}");
    assert!(err.contains("Installing dependencies (pnpm)"), "{err}");
    c.answer("pnpmapp", "/", "hello from koa; dev dependencies absent");
}

/// Express locked with Yarn 4 in its default Plug'n'Play mode (no node_modules: the
/// packages stay zipped in .yarn/cache), Yarn the version packageManager names, started by
/// `npm start` (as on Heroku without a Procfile). The second push fills Yarn's cache from
/// the build cache: nothing is fetched again.
fn yarn_berry_app(c: &Ctx) {
    let dir = c.app("yarn-berry-app");
    let err = c.push_ok("berryapp", &dir);
    assert!(err.contains("Installing yarn 4.18.1"), "{err}");
    assert!(err.contains("YN0013"), "no packages fetched:\n{err}");
    c.answer("berryapp", "/", "hello from yarn berry");
    commit(&dir, "README", "an Express app\n", "readme");
    let err = c.push_ok("berryapp", &dir);
    assert!(!err.contains("Installing yarn"), "{err}");
    assert!(!err.contains("YN0013"), "packages fetched again:\n{err}");
    c.answer("berryapp", "/", "hello from yarn berry");
}

/// Next.js (app router, TypeScript, `next.config.ts`) from npm: `next build` at build time,
/// `npm start` (`next start` on $PORT), a page rendered per request and a route handler.
/// /app holds 500 MB mid-build and the slug packs to 150 MB (the slug limit is on the
/// compressed slug, as Heroku's); typescript stays, as Next.js compiles next.config.ts with
/// it at every start.
fn nextjs_app(c: &Ctx) {
    let dir = c.app("nextjs-app");
    let err = c.push_ok("nextjs", &dir);
    assert!(err.contains("Running build (npm run build)"), "{err}");
    assert!(
        err.contains("Keeping devDependencies: Next.js loads next.config.ts"),
        "{err}"
    );
    let page = c.answer("nextjs", "/", "Notes load on the server");
    assert!(page.contains("web.1"), "{page}");
    c.answer("nextjs", "/api/health", "\"status\":\"ok\"");
    c.answer("nextjs", "/robots.txt", "User-agent");
    // Heroku's Next.js advice: `.next/cache` in cacheDirectories (kept for the next build)
    // and out of the slug by heroku-cleanup, which runs last.
    let at = |s: &str| err.find(s).unwrap_or_else(|| panic!("no {s:?} in:\n{err}"));
    assert!(at("Caching cacheDirectories") < at("Running heroku-cleanup"));
    let out = c.s.ssh(&c.s.admin, "run nextjs -- ls -A .next", None);
    let listed = text(&out.stdout);
    assert!(
        listed.contains("BUILD_ID") && !listed.contains("cache"),
        "{listed}"
    );

    let notes = std::fs::read_to_string(dir.join("app/notes.ts")).unwrap();
    commit(
        &dir,
        "app/notes.ts",
        &notes.replace(
            "export const notes: Note[] = [",
            "export const notes: Note[] = [\n  { version: \"0.4.0\", summary: \"Built from a warm cache\" },",
        ),
        "a note",
    );
    let err = c.push_ok("nextjs", &dir);
    assert!(err.contains(".next/cache: restored"), "{err}");
    assert!(err.contains("Dependencies unchanged"), "{err}");
    c.answer("nextjs", "/", "Built from a warm cache");
}

/// Apps locked by Poetry, on a stack without it: Poetry 2's lock (2.1: each package's groups
/// and markers) and Poetry 1.8's (2.0: main packages found by walking pyproject's
/// dependencies, an extra's optional ones included), both made by the real tools against
/// a private index. Their main packages are installed by pip, pinned and hash-checked; the
/// dev group (pytest) is not.
fn poetry_apps(c: &Ctx) {
    let dir = c.app("poetry-app");
    let err = c.push_ok("inventory", &dir);
    assert!(
        err.contains("Installing dependencies from poetry.lock with pip (the stack has no poetry)"),
        "{err}"
    );
    assert!(
        !err.contains("pytest"),
        "the dev group was installed:\n{err}"
    );
    c.answer("inventory", "/", "inventory of 3 items, flask 3.");
    c.answer("inventory", "/items/nuts", "\"count\":950");

    let dir = c.app("poetry1-app");
    let err = c.push_ok("pricecheck", &dir);
    assert!(err.contains("from poetry.lock with pip"), "{err}");
    assert!(
        !err.contains("pytest"),
        "the dev group was installed:\n{err}"
    );
    c.answer("pricecheck", "/", "with socks support, flask 3.");
}

/// A Vite-built React single-page app deployed the way Heroku users deploy one: the nodejs
/// buildpack then static (`.buildpacks`), `npm run build` (vite from npm) writing dist/, and
/// heroku-buildpack-static's static.json served by nginx: dist/ as the root, every path
/// falling back to index.html, a redirect, a header on the hashed assets, HTTPS only.
fn vite_spa(c: &Ctx) {
    let dir = c.app("vite-spa");
    let err = c.push_ok("spa", &dir);
    assert!(err.contains("Running build (npm run build)"), "{err}");
    assert!(
        err.contains(
            "static.json: root dist/, https only, headers on 1 path(s), 1 redirect(s), 1 route(s)"
        ),
        "{err}"
    );
    // Over plain HTTP the router says so (X-Forwarded-Proto: http): the app sends the
    // client to HTTPS, deep links included.
    let t = Instant::now();
    loop {
        let head = c.s.head("spa", "/reports/42");
        if head.starts_with("http/1.1 301")
            && head.contains("location: https://spa.localhost/reports/42\r\n")
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "/reports/42: {head}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Behind HTTPS (the header the router sets then), asked inside a one-off dyno of the
    // release, started by its own web command.
    let script = r#"PORT=5099 sh .static/nginx.sh >/dev/null 2>&1 &
for i in 1 2 3 4 5 6 7 8 9 10; do curl -s -o /dev/null http://127.0.0.1:5099/ && break; sleep 0.5; done
js=/assets/$(cd dist/assets && ls *.js | head -n 1)
for p in /reports/42 "$js" /old-reports /static.json /.env /package.json; do
    echo "== $p"
    curl -s -D - -o /tmp/body -H 'X-Forwarded-Proto: https' "http://127.0.0.1:5099$p" | tr -d '\r'
    head -c 1000 /tmp/body
    echo
done
"#;
    let out = c.s.ssh(&c.s.admin, "run spa -- sh", Some(script));
    let all = text(&out.stdout);
    let answer = |path: &str| -> String {
        all.split("== ")
            .find(|s| s.starts_with(&format!("{path}\n")))
            .unwrap_or_else(|| panic!("no answer for {path} in:\n{all}"))
            .to_lowercase()
    };
    let deep = answer("/reports/42");
    assert!(
        deep.contains("http/1.1 200")
            && deep.contains("<title>field reports</title>")
            && deep.contains("<div id=\"root\"></div>"),
        "{deep}"
    );
    let js = all
        .split("== ")
        .find(|s| s.starts_with("/assets/index-") && s.contains(".js\n"))
        .unwrap_or_else(|| panic!("no hashed bundle in:\n{all}"))
        .to_lowercase();
    assert!(
        js.contains("http/1.1 200")
            && js.contains("content-type: application/javascript")
            && js.contains("cache-control: public, max-age=31536000, immutable")
            && js.contains("x-content-type-options: nosniff"),
        "{js}"
    );
    let old = answer("/old-reports");
    assert!(
        old.contains("http/1.1 302") && old.contains("location: /reports\n"),
        "{old}"
    );
    for hidden in ["/static.json", "/.env", "/package.json"] {
        let a = answer(hidden);
        assert!(a.contains("http/1.1 404"), "{a}");
    }
}

/// A PHP app as Heroku's PHP docs lay it out: composer.json (requiring ext-mysqli,
/// ext-pdo_mysql and ext-bcmath, which the stacks have), a front controller under `web/`
/// with Apache's `.htaccess` beside it (a rewrite, a header), a `.user.ini`, and
/// `web: heroku-php-apache2 web/` in the Procfile: php-fpm behind Apache httpd. It scales
/// to two web processes, a web process whose php-fpm dies is restarted, and the Procfile's
/// nginx variant (`heroku-php-nginx -C nginx_app.conf -F fpm_custom.conf web/`) serves what
/// nginx_app.conf says, with the pool's memory_limit from fpm_custom.conf.
fn heroku_php(c: &Ctx) {
    let dir = c.app("heroku-php");
    c.s.ok(&c.s.admin, "apps:create guestbook");
    c.s.ok(
        &c.s.admin,
        "config:set guestbook GUESTBOOK_STOP_TOKEN=t0k3n",
    );
    let err = c.push_ok("guestbook", &dir);
    assert!(err.contains("heroku-php-apache2: Apache/2.4."), "{err}");
    // PHP through php-fpm, with web/.user.ini applied.
    c.answer("guestbook", "/", "(fpm-fcgi), uploads up to 7M");
    c.answer("guestbook", "/entries/7", "\"entry\":7");
    c.answer("guestbook", "/assets/site.css", "font-family");
    let header = |server: &str| format!("x-guestbook-server: {server}\r\n");
    // Served by Apache itself, typed by mime.types, the .htaccess header on it.
    let css = c.s.head("guestbook", "/assets/site.css");
    assert!(
        css.contains("content-type: text/css") && css.contains(&header("apache")),
        "{css}"
    );
    let moved = c.s.head("guestbook", "/old-entries/7");
    assert!(
        moved.starts_with("http/1.1 301")
            && moved.contains("/entries/7\r\n")
            && moved.contains(&header("apache")),
        "{moved}"
    );
    let hidden = |statuses: &[(&str, u16)]| {
        for (path, want) in statuses {
            let (status, body) = c.s.get("guestbook", path);
            assert_eq!(status, *want, "{path}: {body}");
        }
    };
    // Dotfiles and composer's and the platform's files are refused by name (403, as on
    // Heroku's Apache config), wherever they are.
    hidden(&[
        ("/.htaccess", 403),
        ("/.env", 403),
        ("/.user.ini", 403),
        ("/composer.json", 403),
        ("/Procfile", 403),
    ]);
    let logs = c.logs("guestbook", "web");
    // Apache's access log; Heroku's worker count: 512M / memory_limit 128M.
    assert!(
        logs.contains("\"GET /entries/7 HTTP/1.")
            && logs.contains("4 php-fpm workers for 512M of memory, ")
            && logs.contains("memory_limit 128M"),
        "{logs}"
    );

    // Two web processes, both answering through the router.
    c.s.ok(&c.s.admin, "scale guestbook web=2");
    let t = Instant::now();
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 2 {
        let (status, body) = c.s.get("guestbook", "/entries/1");
        if status == 200 {
            if let Some(d) = body.split("\"served_by\":\"").nth(1) {
                seen.insert(d.split('"').next().unwrap_or_default().to_string());
            }
        }
        assert!(t.elapsed() < Duration::from_secs(120), "served by {seen:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["web.1", "web.2"]);

    // php-fpm dies in one of them: that process exits and is restarted.
    let restarts = || -> i64 {
        let ps = c.s.ok(&c.s.admin, "ps guestbook --json");
        let rows: serde_json::Value = serde_json::from_str(&ps).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["kind"] == "process")
            .map(|r| r["restarts"].as_i64().unwrap_or(0))
            .sum()
    };
    assert_eq!(restarts(), 0);
    c.s.get("guestbook", "/admin/stop-php?token=t0k3n");
    let t = Instant::now();
    while restarts() < 1 {
        assert!(t.elapsed() < Duration::from_secs(60), "no restart");
        std::thread::sleep(Duration::from_millis(250));
    }
    c.answer("guestbook", "/", "uploads up to 7M");
    let logs = c.logs("guestbook", "web");
    assert!(
        logs.contains("php-fpm exited (status 137); stopping"),
        "{logs}"
    );
    c.s.ok(&c.s.admin, "scale guestbook web=1");

    // The nginx variant: nginx_app.conf's rules, .user.ini still read by php-fpm, the
    // pool's memory_limit from fpm_custom.conf (and so half the workers).
    commit(
        &dir,
        "Procfile",
        "web: heroku-php-nginx -C nginx_app.conf -F fpm_custom.conf web/\n",
        "nginx",
    );
    c.push_ok("guestbook", &dir);
    let t = Instant::now();
    loop {
        let moved = c.s.head("guestbook", "/old-entries/7");
        if moved.starts_with("http/1.1 301") && moved.contains(&header("nginx")) {
            assert!(moved.contains("/entries/7\r\n"), "{moved}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "{moved}");
        std::thread::sleep(Duration::from_millis(250));
    }
    c.answer("guestbook", "/entries/8", "\"entry\":8");
    c.answer(
        "guestbook",
        "/",
        "(fpm-fcgi), uploads up to 7M, memory_limit 256M, mysqli loaded",
    );
    c.answer("guestbook", "/assets/site.css", "font-family");
    let logs = c.logs("guestbook", "web");
    assert!(
        logs.contains("2 php-fpm workers for 512M of memory, ")
            && logs.contains("memory_limit 256M"),
        "{logs}"
    );
    // nginx refuses dotfiles; the app's root is outside the document root (composer.json:
    // the front controller's 404).
    hidden(&[("/.env", 403), ("/.user.ini", 403), ("/composer.json", 404)]);
    // PHP's error_log() reaches the process's log once (php-fpm's, not nginx's as well).
    let logs = c.logs("guestbook", "web");
    assert_eq!(
        logs.matches("guestbook: no page at /composer.json").count(),
        1,
        "{logs}"
    );
    // In a one-off process of the release: Heroku's -h and -t, and heroku-php-nginx without
    // -C, whose default sends what is not a file to index.php (try_files).
    let script = r#"heroku-php-apache2 -h
heroku-php-nginx -p 5099 -t -C nginx_app.conf -F fpm_custom.conf web/
heroku-php-nginx -p 5098 web/ >/dev/null 2>&1 &
for i in $(seq 1 40); do curl -sf -o /dev/null http://127.0.0.1:5098/ && break; sleep 0.25; done
echo "front controller: $(curl -s http://127.0.0.1:5098/entries/9)"
"#;
    let out = c.s.ssh(&c.s.admin, "run guestbook -- sh", Some(script));
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        said.contains("Usage: heroku-php-apache2 [options] [DOCUMENT_ROOT]")
            && said.contains("heroku-php-nginx: configs ok")
            && said.contains("front controller: {\"entry\":9,"),
        "{said}"
    );
}

type Case = (&'static str, fn(&Ctx));

const CASES: &[Case] = &[
    ("flask-gunicorn", flask_gunicorn),
    ("worker-only", worker_only),
    ("dokku-multi", dokku_multi),
    ("dokku-static", dokku_static),
    ("php-composer-unfetchable", php_composer_unfetchable),
    ("submodule", submodule),
    ("buildpack-by-url", buildpack_by_url),
    ("apt-buildpack", apt_buildpack),
    ("slow-boot", slow_boot),
    ("express", express),
    ("django", django),
    ("asgi-realtime", asgi_realtime),
    ("uv-app", uv_app),
    ("pipenv-app", pipenv_app),
    ("yarn-app", yarn_app),
    ("pnpm-app", pnpm_app),
    ("yarn-berry-app", yarn_berry_app),
    ("trixie-django", trixie_django),
    ("trixie-express", trixie_express),
    ("go-service", go_service),
    ("go-workers", go_workers),
    ("go-too-new", go_too_new),
    ("nextjs-app", nextjs_app),
    ("poetry-apps", poetry_apps),
    ("heroku-php", heroku_php),
    ("vite-spa", vite_spa),
];
/// Cases waiting for platform work not on main yet, run only when named in COMPAT_CASES.
const PENDING: &[Case] = &[];
/// Run beside the others: they spend their time waiting for the app to bind.
const BESIDE: &[&str] = &["slow-boot"];

fn selected(name: &str, pending: bool) -> bool {
    match std::env::var("COMPAT_CASES") {
        Ok(list) if !list.trim().is_empty() => list.split(',').any(|c| c.trim() == name),
        _ => !pending,
    }
}

fn run_case(c: &Ctx, (name, f): Case) -> Option<String> {
    let t = Instant::now();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(c)));
    eprintln!(
        "compat case {name}: {} in {:.0?}",
        if r.is_ok() { "ok" } else { "FAILED" },
        t.elapsed()
    );
    r.err().map(|e| {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("{name}: {msg}")
    })
}

#[test]
fn real_apps_run_unchanged() {
    let s = Server::start_with(&["--default-stack", "bookworm"]);
    let served = s.dir.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let http = FileServer::start(&served);
    let c = Ctx {
        s: &s,
        http: &http,
        served,
    };
    let cases: Vec<Case> = CASES
        .iter()
        .map(|c| (c, false))
        .chain(PENDING.iter().map(|c| (c, true)))
        .filter(|((n, _), pending)| selected(n, *pending))
        .map(|(c, _)| *c)
        .collect();
    let (beside, in_turn): (Vec<Case>, Vec<Case>) =
        cases.into_iter().partition(|(n, _)| BESIDE.contains(n));
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = beside
            .into_iter()
            .map(|case| {
                let c = &c;
                scope.spawn(move || run_case(c, case))
            })
            .collect();
        let mut failed: Vec<String> = in_turn
            .into_iter()
            .filter_map(|case| run_case(&c, case))
            .collect();
        for h in handles {
            failed.extend(h.join().unwrap());
        }
        failed
    });
    assert!(
        failures.is_empty(),
        "{} compat case(s) failed:\n{}\n\nserver log:\n{}",
        failures.len(),
        failures.join("\n\n"),
        s.log()
    );
}
