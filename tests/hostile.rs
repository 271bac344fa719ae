//! Hostile pushes: files the controller reads from a pushed tree or from a build's output
//! (Procfile, magrathea.yml, .buildpacks, the buildpacks' meta files) that are symlinks or
//! hard links to files on the controller host. Nothing of those files may reach the pusher,
//! a viewer, the logs, a manifest or a tarball; the push fails with a message saying why.

mod util;

use std::path::Path;

use util::*;

/// Every file under `dir` whose bytes contain `needle` (symlinks are not followed).
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut hits = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let bytes = std::fs::read(e.path()).unwrap_or_default();
                let gz = e.path().extension().is_some_and(|x| x == "gz");
                let plain = if gz {
                    let mut out = vec![];
                    use std::io::Read;
                    let _ = flate2::read::GzDecoder::new(&bytes[..]).read_to_end(&mut out);
                    out
                } else {
                    bytes
                };
                if plain.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    hits.push(e.path().display().to_string());
                }
            }
        }
    }
    hits
}

/// An in-repo buildpack (bash-free: the tiny stack has busybox sh) whose compile step does
/// what `$1/attack` says to the build output, the way a malicious or careless buildpack could.
const COMPILE: &str = r#"#!/bin/sh
set -eu
build=$1
attack=$(cat "$build/attack")
canary=$(cat "$build/canary-path")
echo "-----> hostile buildpack: $attack"
case "$attack" in
  meta-abs) rm -f /meta/buildpacks; ln -s "$canary" /meta/buildpacks ;;
  meta-rel) echo second >>/meta/buildpacks; ln -s ../../../canary.txt /meta/release-2.yml ;;
  meta-hard) rm -f /meta/buildpacks; echo name > /meta/x; ln /meta/x /meta/buildpacks ;;
  procfile-rel) rm -f "$build/Procfile"; ln -s ../../../canary.txt "$build/Procfile" ;;
  escape) ln -s ../../../../etc/passwd "$build/escape" ;;
  flood)
    # 50 MB without a newline, then 9 MB of 1 kB lines: linear time, bounded memory, a cut
    # line and a capped build log; the build itself is fine.
    head -c 50000000 /dev/zero | tr '\0' x; echo
    line=$(head -c 1000 /dev/zero | tr '\0' y)
    i=0; while [ $i -lt 9000 ]; do echo "$line"; i=$((i + 1)); done ;;
esac
"#;

#[test]
fn symlinks_to_host_files_leak_nothing() {
    let s = Server::start();
    let canary = format!("CANARY-{}", std::process::id());
    // One on the host outside the data dir (absolute links) and one inside it, where the
    // controller's own keys live (relative links from a build dir reach it).
    let outside = s.dir.path().join("host-secret");
    std::fs::write(&outside, format!("{canary}-abs\n")).unwrap();
    std::fs::write(s.data.join("canary.txt"), format!("{canary}-rel\n")).unwrap();

    let mut n = 0;
    let mut push = |setup: &dyn Fn(&Path), expect: &str| {
        n += 1;
        let app = format!("hostile{n}");
        let dir = repo(&s.dir.path().join(format!("{app}-src")));
        setup(&dir);
        git_local(&dir, &["add", "-A"]);
        git_local(&dir, &["commit", "-q", "-m", "hostile"]);
        let out = s.git(&s.admin, &dir, &["push", &s.url(&app), "main"]);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{app}: push went through:\n{err}");
        assert!(
            err.contains(expect),
            "{app}: expected {expect:?} in:\n{err}"
        );
        assert!(
            !err.contains(&canary),
            "{app}: canary leaked to the pusher:\n{err}"
        );
        // No absolute server path in what the pusher sees.
        let data = s.data.display().to_string();
        assert!(!err.contains(&data), "{app}: server path shown:\n{err}");
        let rels = s.ok(&s.admin, &format!("releases {app} --json"));
        assert_eq!(rels.trim(), "[]", "{app}: a release was stored");
        for cmd in [format!("builds:log {app}"), format!("logs {app} -n 1000")] {
            let o = s.ssh(&s.admin, &cmd, None);
            let all = text(&o.stdout) + &text(&o.stderr);
            assert!(!all.contains(&canary), "{app}: canary in `{cmd}`:\n{all}");
        }
        app
    };

    let link = |name: &'static str, target: String| {
        move |d: &Path| {
            let _ = std::fs::remove_file(d.join(name));
            std::os::unix::fs::symlink(&target, d.join(name)).unwrap();
        }
    };
    let abs = outside.display().to_string();
    // Pushed trees: git symlinks where the controller reads a file.
    push(&link("Procfile", abs.clone()), "Procfile is a symlink");
    push(
        &link("magrathea.yml", abs.clone()),
        "magrathea.yml is a symlink",
    );
    push(
        &link(".buildpacks", abs.clone()),
        ".buildpacks is a symlink",
    );
    push(
        &link("Procfile", "../../../canary.txt".into()),
        "Procfile is a symlink",
    );
    // A buildpack directory reached through a link is refused too.
    push(
        &|d: &Path| {
            std::os::unix::fs::symlink("/usr", d.join("bp")).unwrap();
            std::fs::write(d.join(".buildpacks"), "bp\n").unwrap();
        },
        "is a symlink or passes through one",
    );

    // Build output: a buildpack turns the files the controller reads into links.
    let hostile_bp = |attack: &'static str| {
        let abs = abs.clone();
        move |d: &Path| {
            let bin = d.join(".buildpack/bin");
            std::fs::create_dir_all(&bin).unwrap();
            for (f, body) in [
                ("detect", "#!/bin/sh\necho hostile\n"),
                ("compile", COMPILE),
                (
                    "release",
                    "#!/bin/sh\nprintf -- '---\\ndefault_process_types:\\n  web: busybox httpd -f -p $PORT\\n'\n",
                ),
            ] {
                std::fs::write(bin.join(f), body).unwrap();
                let mut p = std::fs::metadata(bin.join(f)).unwrap().permissions();
                std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o755);
                std::fs::set_permissions(bin.join(f), p).unwrap();
            }
            std::fs::write(d.join("attack"), attack).unwrap();
            std::fs::write(d.join("canary-path"), &abs).unwrap();
        }
    };
    push(&hostile_bp("meta-abs"), "buildpacks is a symlink");
    // (release-2.yml: the driver writes release-1.yml after compile, and the build, which
    // runs as the app's uid, cannot create the file a release-1.yml link points at.)
    push(&hostile_bp("meta-rel"), "release-2.yml is a symlink");
    push(&hostile_bp("meta-hard"), "buildpacks is hard-linked");
    push(&hostile_bp("procfile-rel"), "Procfile is a symlink");
    // A relative link out of the slug fails the build (the node would refuse the release).
    push(&hostile_bp("escape"), "points outside the release");

    // Nothing the controller keeps or logs holds the canary.
    let mut hits = vec![];
    for sub in ["releases", "logs", "builds"] {
        hits.extend(files_containing(&s.data.join(sub), &canary));
    }
    assert!(hits.is_empty(), "canary stored in {hits:?}");
    assert!(!s.log().contains(&canary), "canary in the server log");

    // A flood of output: one endless line is cut, the build log stops at its cap, and the
    // build goes through.
    let dir = repo(&s.dir.path().join("flood-src"));
    hostile_bp("flood")(&dir);
    git_local(&dir, &["add", "-A"]);
    git_local(&dir, &["commit", "-q", "-m", "flood"]);
    let out = s.git_ok(&s.admin, &dir, &["push", &s.url("flood"), "main"]);
    let err = text(&out.stderr);
    assert!(err.contains("[... line cut: "), "no cut line");
    assert!(err.contains("Released v1"), "flood build failed");
    let logs: Vec<_> = std::fs::read_dir(s.data.join("logs/builds/flood"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(logs.len(), 1);
    let log = std::fs::read_to_string(logs[0].path()).unwrap();
    assert!(
        log.len() <= (8 << 20) + 200,
        "build log is {} bytes",
        log.len()
    );
    assert!(
        log.trim_end().ends_with("the push showed every line]"),
        "no truncation notice"
    );

    // The same server still builds an honest app.
    let dir = repo(&s.dir.path().join("honest-src"));
    git_local(&dir, &["add", "-A"]);
    git_local(&dir, &["commit", "-q", "-m", "honest"]);
    let out = s.git_ok(&s.admin, &dir, &["push", &s.url("honest"), "main"]);
    assert!(
        text(&out.stderr).contains("Released v1"),
        "{}",
        text(&out.stderr)
    );
}
