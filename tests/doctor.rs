//! `magrathea doctor` against this machine: real git, real Docker, a real data dir.

mod util;

use std::process::Command;

use util::*;

#[test]
fn doctor_reports_one_line_per_finding_and_fails_on_what_is_missing() {
    require("git");
    require_docker();
    let t = tempfile::tempdir().unwrap();
    let admin = keygen(t.path(), "admin");
    let data = t.path().join("data");
    let out = run(Command::new(bin())
        .args(["init", "--data"])
        .arg(&data)
        .arg("--admin-key")
        .arg(admin.pub_path()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();

    let doctor = |stacks: &[&str]| {
        let mut c = Command::new(bin());
        c.arg("doctor").arg("--data").arg(&data);
        c.args(["--listen", &taken_addr]);
        for s in stacks {
            c.args(["--stack", s]);
        }
        run(&mut c)
    };
    let out = doctor(&["tiny"]);
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}\n{}", text(&out.stderr));
    for want in [
        "ok    git: git version",
        "ok    storage driver: overlay2",
        "ok    stack: tiny: magrathea/stack-tiny:latest",
        "ok    secret file: host_ed25519 is private",
        &format!("warn  port: {taken_addr} is in use"),
    ] {
        assert!(report.contains(want), "{want:?} not in:\n{report}");
    }
    for line in report.lines() {
        assert!(
            ["ok  ", "warn", "FAIL"].iter().any(|p| line.starts_with(p)),
            "{line}"
        );
    }

    // A missing stack and a key readable by others fail, each with its fix.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        data.join("host_ed25519"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = doctor(&["nope"]);
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("FAIL  stack: nope: no image; fix: run scripts/stack-nope.sh"),
        "{report}"
    );
    assert!(
        report.contains(
            "FAIL  secret file: host_ed25519 is readable by others (mode 644); fix: chmod 600 it"
        ),
        "{report}"
    );
    assert_eq!(text(&out.stderr).trim(), "error: 2 check(s) failed");
}
