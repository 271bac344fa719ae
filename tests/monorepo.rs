//! Monorepos: several apps in one repository, each built from its own subdirectory
//! (`builds:set APP build-dir PATH`, Dokku's way, or the `APP_BASE` config var, Heroku's
//! monorepo buildpack's). Real git over ssh, real builds on the tiny stack.

mod util;

use util::*;

fn report(s: &Server, app: &str) -> serde_json::Value {
    serde_json::from_str(&s.ok(&s.admin, &format!("builds:report {app} --json"))).unwrap()
}

#[test]
fn build_dir_is_set_by_owners_checked_and_cleared() {
    let s = Server::start();
    s.ok(&s.admin, "apps:create shop");
    assert_eq!(report(&s, "shop")["build_dir"], serde_json::Value::Null);
    let out = s.ok(&s.admin, "builds:report shop");
    assert!(out.contains("build-dir:") && out.contains("none"), "{out}");

    // A trailing slash is dropped; the report shows what is stored.
    let out = s.ok(&s.admin, "builds:set shop build-dir apps/api/");
    assert!(out.contains("apps/api/"), "{out}");
    assert_eq!(report(&s, "shop")["build_dir"], "apps/api");
    assert!(s.ok(&s.admin, "builds:report shop").contains("apps/api/"));

    // Bad input: one line each, and nothing changes.
    for cmd in [
        "builds:set shop build-dir /srv/api",
        "builds:set shop build-dir ../api",
        "builds:set shop build-dir apps/../api",
        "builds:set shop build-dir ./api",
        "builds:set shop build-dir api/.",
        "builds:set shop build-dir a//b",
        "builds:set shop build-dir .git",
        "builds:set shop build-dir 'a\\b'",
        "builds:set shop build-dir a\u{1b}[31mb",
        &format!("builds:set shop build-dir {}", "x".repeat(300)),
        "builds:set shop stack api",
        "builds:set shop",
        "builds:set shop build-dir api web",
        "builds:set nope build-dir api",
    ] {
        let out = s.ssh(&s.admin, cmd, None);
        assert!(!out.status.success(), "{cmd} succeeded");
        let err = text(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{cmd}: one line: {err}");
        assert!(err.starts_with("error:"), "{cmd}: {err}");
        assert!(!err.contains('\u{1b}'), "{cmd}: {err}");
        assert_eq!(report(&s, "shop")["build_dir"], "apps/api", "{cmd}");
    }
    let err = text(
        &s.ssh(&s.admin, "builds:set shop build-dir ../api", None)
            .stderr,
    );
    assert!(err.contains("invalid build dir '../api'"), "{err}");

    // A viewer sees it but cannot set or clear it; nor can a deployer.
    let viewer = s.key("viewer");
    s.add_key(&viewer, "user");
    s.ok(&s.admin, "access:grant shop viewer viewer");
    let deployer = s.key("deployer");
    s.add_key(&deployer, "user");
    s.ok(&s.admin, "access:grant shop deployer deployer");
    assert!(s.ok(&viewer, "builds:report shop").contains("apps/api/"));
    for k in [&viewer, &deployer] {
        for cmd in ["builds:set shop build-dir web", "builds:set shop build-dir"] {
            let out = s.ssh(k, cmd, None);
            assert!(!out.status.success(), "{} may {cmd}", k.name);
            let err = text(&out.stderr);
            assert!(err.contains("owner"), "{cmd}: {err}");
        }
    }
    assert_eq!(report(&s, "shop")["build_dir"], "apps/api");
    let stranger = s.key("stranger");
    s.add_key(&stranger, "user");
    assert!(!s
        .ssh(&stranger, "builds:report shop", None)
        .status
        .success());

    // No value clears it (so does an empty one).
    s.ok(&s.admin, "builds:set shop build-dir");
    assert_eq!(report(&s, "shop")["build_dir"], serde_json::Value::Null);
    s.ok(&s.admin, "builds:set shop build-dir web");
    s.ok(&s.admin, "builds:set shop build-dir ''");
    assert_eq!(report(&s, "shop")["build_dir"], serde_json::Value::Null);

    // Every change is audited.
    let audit = s.ok(&s.admin, "audit shop");
    assert!(
        audit.contains("builds:set shop build-dir apps/api/"),
        "{audit}"
    );
}

/// (path, link target, content) of every entry of a release tarball.
fn entries(path: &std::path::Path) -> Vec<(String, Option<String>, Vec<u8>)> {
    use std::io::Read;
    let f = std::fs::File::open(path).unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let p = e.path().unwrap().display().to_string();
            let l = e.link_name().unwrap().map(|l| l.display().to_string());
            let mut buf = vec![];
            e.read_to_end(&mut buf).unwrap();
            (p, l, buf)
        })
        .collect()
}

fn tarball(s: &Server, app: &str, v: u64) -> std::path::PathBuf {
    let info: serde_json::Value =
        serde_json::from_str(&s.ok(&s.admin, &format!("releases:info {app} v{v} --json"))).unwrap();
    s.data
        .join("releases")
        .join(app)
        .join(info["file"].as_str().unwrap())
}

/// The app's release versions, newest first, and the one live in production.
fn versions(s: &Server, app: &str) -> (Vec<u64>, Option<u64>) {
    let v: serde_json::Value =
        serde_json::from_str(&s.ok(&s.admin, &format!("releases {app} --json"))).unwrap();
    let rows = v.as_array().unwrap();
    let all = rows
        .iter()
        .map(|r| r["version"].as_u64().unwrap())
        .collect();
    let live = rows
        .iter()
        .find(|r| r["live"].to_string().contains("production"))
        .map(|r| r["version"].as_u64().unwrap());
    (all, live)
}

/// A git repository served over git's dumb HTTP protocol, as a public host would.
fn publish(s: &Server, http: &FileServer, served: &std::path::Path, name: &str) -> String {
    let work = s.dir.path().join(format!("pub-{name}"));
    std::fs::create_dir_all(&work).unwrap();
    git_local(&work, &["init", "-q", "-b", "main"]);
    commit(
        &work,
        "style.css",
        "body { color: teal } /* theme */\n",
        "theme",
    );
    git_local(
        served,
        &["clone", "-q", "--bare", &work.display().to_string(), name],
    );
    git_local(&served.join(name), &["update-server-info"]);
    http.url(name)
}

/// One repository, two apps: `api/` (a Procfile app) and `web/` (a static site with a
/// submodule), beside a root README and root-level files of the platform that would break
/// either build if they were read.
fn monorepo(s: &Server, theme_url: &str) -> std::path::PathBuf {
    let dir = s.dir.path().join("mono");
    std::fs::create_dir_all(&dir).unwrap();
    git_local(&dir, &["init", "-q", "-b", "main"]);
    let files = [
        ("README.md", "# two apps in one repository\n"),
        // Read from the root, each of these fails the build or serves the wrong thing.
        (
            "Procfile",
            "web: echo the root Procfile must not run; exit 1\n",
        ),
        ("magrathea.yml", "stack: no-such-stack\n"),
        (".buildpacks", "https://127.0.0.1:9/no-such-buildpack.git\n"),
        (".slugignore", "index.html\n"),
        ("api/Procfile", "web: busybox httpd -f -p $PORT -h public\n"),
        ("api/public/index.html", "hello from api\n"),
        ("api/.slugignore", "*.psd\n"),
        ("api/art.psd", "big layered art\n"),
        ("web/index.html", "hello from web\n"),
    ];
    for (f, c) in files {
        let p = dir.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, c).unwrap();
    }
    // A link in the subtree that climbs out of it: it resolved in the repository, but
    // the app's tree ends at api/, so it reaches nothing of the repository.
    std::os::unix::fs::symlink("../../README.md", dir.join("api/public/readme")).unwrap();
    git_local(&dir, &["add", "-A"]);
    git_local(&dir, &["commit", "-q", "-m", "two apps"]);
    // A submodule inside web/ (fetched for web), and one outside both apps whose URL
    // answers nothing (fetched, it would fail the build).
    git_local(
        &dir,
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            theme_url,
            "web/theme",
        ],
    );
    let head = git_local(&dir, &["rev-parse", "HEAD"]).trim().to_string();
    git_local(
        &dir,
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{head},vendor/outside"),
        ],
    );
    let mut gm = std::fs::read_to_string(dir.join(".gitmodules")).unwrap();
    gm.push_str("[submodule \"outside\"]\n\tpath = vendor/outside\n\turl = http://127.0.0.1:9/outside.git\n");
    std::fs::write(dir.join(".gitmodules"), gm).unwrap();
    git_local(&dir, &["add", ".gitmodules"]);
    git_local(&dir, &["commit", "-q", "-m", "submodules"]);
    dir
}

fn push(s: &Server, dir: &std::path::Path, app: &str) -> (bool, String) {
    let out = s.git(&s.admin, dir, &["push", &s.url(app), "HEAD:main"]);
    (out.status.success(), text(&out.stderr))
}

#[test]
fn two_apps_build_from_their_own_subdirectories_of_one_repository() {
    let s = Server::start();
    let served = s.dir.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let http = FileServer::start(&served);
    let theme = publish(&s, &http, &served, "theme.git");
    let dir = monorepo(&s, &theme);
    for app in ["api", "web"] {
        s.ok(&s.admin, &format!("apps:create {app}"));
    }
    s.ok(&s.admin, "builds:set api build-dir api");
    s.ok(&s.admin, "builds:set web build-dir web/");

    // api: its own Procfile, .slugignore and page; nothing of the root or of web/.
    let (ok, err) = push(&s, &dir, "api");
    assert!(ok && err.contains("Released v1"), "{err}");
    assert!(
        err.contains("-----> Building from subdirectory api/ (build-dir)"),
        "{err}"
    );
    assert!(!err.contains("Fetching submodule"), "{err}");
    assert_eq!(s.get("api", "/"), (200, "hello from api\n".to_string()));
    let es = entries(&tarball(&s, "api", 1));
    let names: Vec<&str> = es.iter().map(|e| e.0.as_str()).collect();
    assert!(names.contains(&"app/public/index.html"), "{names:?}");
    for absent in ["README.md", "art.psd", "web", "api", "index.html", "vendor"] {
        assert!(
            !names.contains(&format!("app/{absent}").as_str()),
            "{absent} in {names:?}"
        );
    }
    let procfile = es.iter().find(|e| e.0 == "app/Procfile").unwrap();
    assert_eq!(procfile.2, b"web: busybox httpd -f -p $PORT -h public\n");
    // The link that climbed to the root README stays a link, to nothing of the
    // repository: what is outside api/ was never exported.
    let link = es.iter().find(|e| e.0 == "app/public/readme").unwrap();
    assert_eq!(link.1.as_deref(), Some("../../README.md"));
    for e in &es {
        assert!(
            !String::from_utf8_lossy(&e.2).contains("two apps in one repository"),
            "the root README leaked into {}",
            e.0
        );
    }
    let (code, body) = s.get("api", "/readme");
    assert!(
        code != 200 && !body.contains("two apps in one repository"),
        "{code} {body}"
    );

    // web: a static site, with the submodule under it and not the one outside it.
    let (ok, err) = push(&s, &dir, "web");
    assert!(ok && err.contains("Released v1"), "{err}");
    assert!(
        err.contains("-----> Building from subdirectory web/ (build-dir)"),
        "{err}"
    );
    assert!(err.contains("Fetching submodule theme from"), "{err}");
    assert!(!err.contains("outside"), "{err}");
    assert_eq!(s.get("web", "/"), (200, "hello from web\n".to_string()));
    let (code, css) = s.get("web", "/theme/style.css");
    assert_eq!(code, 200, "{css}");
    assert!(css.contains("theme"), "{css}");
    assert_eq!(s.get("api", "/"), (200, "hello from api\n".to_string()));

    // A build dir the pushed commit does not have: one line naming it and the commit;
    // the live release stays.
    s.ok(&s.admin, "builds:set web build-dir apps/web");
    let head = commit(&dir, "web/index.html", "hello again from web\n", "web v2");
    let (ok, err) = push(&s, &dir, "web");
    assert!(!ok, "{err}");
    let said: Vec<&str> = err.lines().filter(|l| l.contains("apps/web/")).collect();
    assert!(
        said.iter().any(|l| l.contains(&format!(
            "build dir apps/web/ is not a directory in commit {}",
            &head[..7]
        ))),
        "{err}"
    );
    assert!(!err.contains("cannot export"), "{err}");
    assert_eq!(versions(&s, "web"), (vec![1], Some(1)));
    assert_eq!(s.get("web", "/"), (200, "hello from web\n".to_string()));

    // Heroku's convention: APP_BASE, when no build dir is set.
    s.ok(&s.admin, "config:set web APP_BASE=web --no-restart");
    s.ok(&s.admin, "builds:set web build-dir");
    let (ok, err) = push(&s, &dir, "web");
    assert!(ok && err.contains("Released v2"), "{err}");
    assert!(
        err.contains("-----> Building from subdirectory web/ (APP_BASE)"),
        "{err}"
    );
    assert_eq!(
        s.get("web", "/"),
        (200, "hello again from web\n".to_string())
    );
    // An APP_BASE that is no relative path fails the build in one line, without its value.
    s.ok(
        &s.admin,
        "config:set web APP_BASE=/srv/www/web --no-restart",
    );
    commit(&dir, "web/notes.txt", "notes\n", "web notes");
    let (ok, err) = push(&s, &dir, "web");
    assert!(!ok, "{err}");
    assert!(
        err.contains("the APP_BASE config var is not a relative path"),
        "{err}"
    );
    assert!(!err.contains("/srv/www"), "{err}");
    assert_eq!(versions(&s, "web"), (vec![2, 1], Some(2)));
    // The build dir, once set, wins over APP_BASE.
    s.ok(&s.admin, "config:set web APP_BASE=nowhere --no-restart");
    s.ok(&s.admin, "builds:set web build-dir web");
    commit(&dir, "web/index.html", "hello thrice from web\n", "web v3");
    let (ok, err) = push(&s, &dir, "web");
    assert!(ok && err.contains("Released v3"), "{err}");
    assert!(err.contains("(build-dir)"), "{err}");
    assert_eq!(
        s.get("web", "/"),
        (200, "hello thrice from web\n".to_string())
    );
    // A tag on a commit cooked from web/ is not those bytes once the app builds from api/.
    s.ok(&s.admin, "builds:set web build-dir api");
    git_local(&dir, &["tag", "v1"]);
    let out = s.git(&s.admin, &dir, &["push", &s.url("web"), "v1"]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("deploying the same bytes"), "{err}");
    assert!(err.contains("Released v4"), "{err}");
    assert_eq!(s.get("web", "/"), (200, "hello from api\n".to_string()));
}
