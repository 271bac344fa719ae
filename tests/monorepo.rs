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
