//! Process formation as on Heroku and Dokku: `web=1` and every other Procfile type at 0
//! unless `scale`, magrathea.yml or app.json's `formation` ask otherwise; `scale` before the
//! first deploy; worker-only apps; one-shot types that never start. One server, the built-in
//! node, real git, ssh and Docker.

mod util;

use util::*;

fn ps(s: &Server, app: &str) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_str(&s.ok(&s.admin, &format!("ps {app} --json"))).unwrap();
    let mut names: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == "running")
        .map(|r| r["process"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn push(s: &Server, app: &str, files: &[(&str, &str)]) -> std::process::Output {
    let dir = s.dir.path().join(format!("src-{app}"));
    if !dir.exists() {
        repo(&dir);
    }
    for (f, body) in files {
        std::fs::write(dir.join(f), body).unwrap();
    }
    commit(&dir, "README", &format!("{files:?}"), "change");
    s.git(&s.admin, &dir, &["push", &s.url(app), "main"])
}

#[test]
fn formation_defaults_scale_before_deploy_app_json_and_worker_only_apps() {
    let s = Server::start();

    // Every Procfile type but web stays at 0: a one-shot type (exits at once) never starts,
    // so it cannot fail the deploy; `ps` still lists it.
    let procfile = "web: busybox httpd -f -p $PORT -h .\n\
                    worker: exec sleep 100000\n\
                    custom: echo -n\n";
    let out = push(
        &s,
        "site",
        &[("Procfile", procfile), ("index.html", "site\n")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(ps(&s, "site"), ["web.1"]);
    assert_eq!(s.get("site", "/").0, 200);
    let table = s.ok(&s.admin, "ps site");
    assert!(
        table.contains("formation: custom=0 web=1 worker=0"),
        "{table}"
    );

    // app.json asks for a worker; magrathea.yml outranks it; an explicit scale outranks both
    // and is remembered across deploys.
    let app_json = r#"{"name": "site", "formation": {"web": {"quantity": 1}, "worker": {"quantity": 2, "size": "basic"}}}"#;
    let out = push(&s, "site", &[("app.json", app_json)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(ps(&s, "site"), ["web.1", "worker.1", "worker.2"]);
    let out = push(&s, "site", &[("magrathea.yml", "scale: { worker: 1 }\n")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(ps(&s, "site"), ["web.1", "worker.1"]);
    let out = s.ok(&s.admin, "scale site worker=0 custom=0");
    assert!(out.contains("now runs custom=0 worker=0"), "{out}");
    assert_eq!(ps(&s, "site"), ["web.1"]);
    let out = push(&s, "site", &[("index.html", "again\n")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(ps(&s, "site"), ["web.1"], "scale is remembered");

    // A worker-only app: no web process, so no web health check; `scale` before the first
    // deploy is remembered and used by it.
    s.ok(&s.admin, "apps:create jobs");
    let out = s.ok(&s.admin, "scale jobs worker=2");
    assert!(out.contains("will run worker=2"), "{out}");
    let out = s.ssh(&s.admin, "scale jobs Worker=1", None);
    assert!(!out.status.success());
    assert_eq!(text(&out.stderr).trim().lines().count(), 1);
    let out = push(&s, "jobs", &[("Procfile", "worker: exec sleep 100000\n")]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("health-checking"), "{err}");
    assert_eq!(ps(&s, "jobs"), ["worker.1", "worker.2"]);

    // A worker-only app with app.json formation and nothing scaled.
    let out = push(
        &s,
        "mailer",
        &[
            ("Procfile", "worker: exec sleep 100000\nsetup: exit 3\n"),
            ("app.json", r#"{"formation": {"worker": {"quantity": 1}}}"#),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(ps(&s, "mailer"), ["worker.1"]);

    // A broken app.json is refused in one line, and the live release stays.
    let out = push(&s, "mailer", &[("app.json", "{\"formation\": ")]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("app.json"), "{err}");
    assert_eq!(ps(&s, "mailer"), ["worker.1"]);
}

/// Items of the dyno contract seen from a push: health checks that give a slow app time,
/// name the setting that changes them and show the app's last lines; app.json health checks
/// with `content`; predeploy/postdeploy scripts; a writable /app and DYNO in `run`;
/// `config:set --encoded`.
#[test]
fn health_checks_scripts_and_dyno_environment() {
    let s = Server::start();
    let httpd = "exec busybox httpd -f -p $PORT -h .";

    // A web process that takes 11 s to bind $PORT goes live (Heroku gives 60 s).
    let out = push(
        &s,
        "slow",
        &[
            ("Procfile", &format!("web: sleep 11; {httpd}\n")),
            ("index.html", "slow\n"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(s.get("slow", "/").0, 200);

    // The release command runs before the new processes start (Heroku's order): a web
    // process that needs its migration answers its first health check.
    let out = push(
        &s,
        "migrated",
        &[
            (
                "Procfile",
                &format!(
                    "web: test -e /data/migrated || exit 1; {httpd}\nrelease: touch /data/migrated\n"
                ),
            ),
            ("index.html", "migrated\n"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(s.get("migrated", "/").0, 200);

    // One that crashes on boot fails at once, with its last words and the setting to change.
    let out = push(
        &s,
        "crash",
        &[(
            "Procfile",
            "web: echo 'Error: Cannot find module express'; exit 1\n",
        )],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("Cannot find module express"), "{err}");
    assert!(
        err.contains("web.1 exited") && err.contains("before answering"),
        "{err}"
    );

    assert!(
        err.contains("healthcheck.boot_timeout in magrathea.yml"),
        "{err}"
    );

    // One that runs but never binds: magrathea.yml's boot_timeout decides how long (long
    // enough for its first line to be in its log on a loaded machine).
    let out = push(
        &s,
        "deaf",
        &[
            (
                "Procfile",
                "web: echo listening elsewhere; exec sleep 1000\n",
            ),
            ("magrathea.yml", "healthcheck: { boot_timeout: 8s }\n"),
        ],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("connection refused"), "{err}");
    assert!(err.contains("listening elsewhere"), "{err}");
    assert!(
        err.contains("healthcheck.boot_timeout in magrathea.yml"),
        "{err}"
    );

    // The default check (GET /) takes any answer below 500 as up, as on Heroku where an
    // app that answers is up: an app with nothing at / goes live.
    let out = push(
        &s,
        "pathy",
        &[(
            "Procfile",
            "web: mkdir -p /tmp/empty && exec busybox httpd -f -p $PORT -h /tmp/empty\n",
        )],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (status, _) = s.get("pathy", "/");
    assert!((400..500).contains(&status), "{status}");
    // A path the app names is its health check, and must answer 2xx or 3xx (Dokku's path
    // checks): a 404 there fails the deploy, naming the path; once it answers, it goes live.
    // The last attempt's answer is the one reported: the timeout leaves httpd time to be
    // up by then (else it would say "connection refused").
    let yml = "healthcheck: { path: /healthz, boot_timeout: 10s }\n";
    let out = push(
        &s,
        "pathy",
        &[
            ("Procfile", &format!("web: {httpd}\n")),
            ("magrathea.yml", yml),
            ("index.html", "pathy\n"),
        ],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("GET /healthz on port")
            && err.contains("status 404 (the health check path must answer 2xx or 3xx)"),
        "{err}"
    );
    assert!(err.contains("v1 still serves"), "{err}");
    let out = push(&s, "pathy", &[("healthz", "ok\n")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(s.get("pathy", "/"), (200, "pathy\n".to_string()));

    // app.json healthchecks (Dokku's format): the body must hold `content`. The last
    // attempt's answer is reported: the attempts span long enough for httpd to be up by
    // then on a loaded machine.
    let checks = r#"{"healthchecks": {"web": [{"type": "startup", "name": "ready", "path": "/health.txt", "content": "ok", "attempts": 4, "wait": 3, "timeout": 2}]}}"#;
    let out = push(
        &s,
        "checked",
        &[
            ("Procfile", &format!("web: {httpd}\n")),
            ("app.json", checks),
            ("health.txt", "starting\n"),
        ],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("does not contain \"ok\""), "{err}");
    assert!(
        err.contains("app.json healthchecks.web[0] (ready)"),
        "{err}"
    );
    let out = push(&s, "checked", &[("health.txt", "all ok\n")]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // predeploy, release command and postdeploy, each in a dyno of the new release with a
    // writable /app of its own; a failing postdeploy is reported, the release stays live.
    let scripts = r#"{"scripts": {"dokku": {"predeploy": "touch /app/pre.test && echo \"pre $DYNO\" > /data/order", "postdeploy": "echo \"post $DYNO\" >> /data/order; exit 4"}}}"#;
    let out = push(
        &s,
        "scripted",
        &[
            (
                "Procfile",
                &format!(
                    "web: {httpd}\nrelease: touch /app/release.test && echo \"release $DYNO $HOME\" >> /data/order\n"
                ),
            ),
            ("app.json", scripts),
            ("index.html", "scripted\n"),
        ],
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("postdeploy script (app.json scripts.dokku.postdeploy) failed (exit 4)"),
        "{err}"
    );
    let order = s.ok(&s.admin, "run scripted -- cat /data/order");
    assert_eq!(
        order,
        "pre predeploy.1\nrelease release.1 /app\npost postdeploy.1\n"
    );
    // `run` gets a dyno too; what it writes under /app is its own.
    let out = s.ok(
        &s.admin,
        "run scripted -- sh -c 'touch /app/run.test && echo $DYNO $HOME && ls /app'",
    );
    assert!(out.starts_with("run.1 /app\n"), "{out}");
    assert!(
        !out.contains("pre.test") && !out.contains("release.test"),
        "{out}"
    );
    // A failing predeploy aborts the deploy; the live release keeps serving.
    let failing = r#"{"scripts": {"dokku": {"predeploy": "echo no migrations today; exit 5"}}}"#;
    let out = push(&s, "scripted", &[("app.json", failing)]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("no migrations today"), "{err}");
    assert!(
        err.contains("predeploy script (app.json scripts.dokku.predeploy) failed (exit 5)"),
        "{err}"
    );
    assert!(err.contains("v1 still serves"), "{err}");
    assert_eq!(s.get("scripted", "/").0, 200);

    // config:set --encoded: base64 values, decoded; bad base64 changes nothing.
    let out = s.ok(
        &s.admin,
        "config:set scripted --no-restart --encoded MOTD=bGluZSBvbmUKbGluZSB0d28=",
    );
    assert!(out.contains("MOTD"), "{out}");
    assert_eq!(
        s.ok(&s.admin, "config:get scripted MOTD"),
        "line one\nline two\n"
    );
    let out = s.ssh(
        &s.admin,
        "config:set scripted --encoded MOTD=not*base64 OTHER=eA==",
        None,
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("base64"), "{err}");
    assert_eq!(
        s.ok(&s.admin, "config:get scripted MOTD"),
        "line one\nline two\n"
    );
    assert!(!s
        .ssh(&s.admin, "config:get scripted OTHER", None)
        .status
        .success());
}

/// The built-in node is sized from the machine (or `--node-memory`): twenty single-process
/// apps run side by side (the old fixed 8 slots refused the ninth), and an app whose
/// processes do not fit is refused with the numbers.
#[test]
fn twenty_apps_side_by_side_and_placement_by_memory() {
    let s = Server::start_with(&["--node-memory", "2G"]);
    let small = "memory: 64M\n";
    let names: Vec<String> = (1..=20).map(|i| format!("app{i:02}")).collect();
    // Four pushes at a time.
    for chunk in names.chunks(4) {
        std::thread::scope(|sc| {
            for n in chunk {
                let s = &s;
                sc.spawn(move || {
                    let out = push(
                        s,
                        n,
                        &[
                            ("Procfile", "web: exec busybox httpd -f -p $PORT -h .\n"),
                            ("magrathea.yml", small),
                            ("index.html", n),
                        ],
                    );
                    assert!(out.status.success(), "{n}: {}", text(&out.stderr));
                });
            }
        });
    }
    for n in &names {
        assert_eq!(s.get(n, "/"), (200, n.clone()), "{n}");
    }
    let info = s.ok(&s.admin, "nodes:info local");
    assert!(
        info.contains("capacity: 2048 MiB memory (1280 MiB given"),
        "{info}"
    );

    // 2048 - 20 × 64 = 768 MiB left: a 1G process does not fit.
    let out = push(
        &s,
        "big",
        &[
            ("Procfile", "web: exec busybox httpd -f -p $PORT -h .\n"),
            ("magrathea.yml", "memory: 1G\n"),
        ],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("not enough capacity"), "{err}");
    assert!(err.contains("768 MiB of 2048 MiB free"), "{err}");
    assert!(err.contains("each process gets 1024 MiB"), "{err}");

    // CPUs count for an app that asks for a share: more than the machine has never fits.
    let out = push(
        &s,
        "hog",
        &[
            ("Procfile", "web: exec busybox httpd -f -p $PORT -h .\n"),
            ("magrathea.yml", "memory: 64M\ncpu: 1024\n"),
        ],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("not enough capacity"), "{err}");
    assert!(err.contains("CPUs free"), "{err}");
}
