//! Services end to end, with real servers: one app declaring Postgres, Redis and MariaDB in
//! its magrathea.yml, pushed to production and staging of one server; its release command
//! migrates and its web process reads and writes through the injected URLs.

mod util;

use std::path::Path;
use std::process::Command;

use util::*;

/// The web answer of `path` once it is 200 (a service restarting answers 503 meanwhile).
fn get_ok(s: &Server, host: &str, path: &str) -> String {
    let mut last = (0, String::new());
    for _ in 0..240 {
        last = s.get(host, path);
        if last.0 == 200 {
            return last.1;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    panic!(
        "GET {host}{path}: {} {}\nserver log:\n{}",
        last.0,
        last.1,
        s.log()
    );
}

fn services_json(s: &Server, key: &Key) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(&s.ok(key, "services --json")).unwrap();
    v.as_array().unwrap().clone()
}

/// The container of the service with this host name on the server's built-in node.
fn service_container(s: &Server, name: &str) -> String {
    let inst = node_instance(&s.data.join("node")).unwrap();
    let out = run(Command::new("docker").args([
        "ps",
        "-aq",
        "--filter",
        &format!("name=mg-{inst}-svc-"),
    ]));
    for id in text(&out.stdout).split_whitespace() {
        let h = run(Command::new("docker").args(["inspect", "-f", "{{.Config.Hostname}}", id]));
        if text(&h.stdout).trim() == name {
            return id.to_string();
        }
    }
    panic!("no container for service {name}");
}

fn inspect(id: &str, fmt: &str) -> String {
    let out = run(Command::new("docker").args(["inspect", "-f", fmt, id]));
    text(&out.stdout).trim().to_string()
}

/// Every file under `dir` (gzip files unpacked) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut hits = vec![];
    let Ok(rd) = std::fs::read_dir(dir) else {
        return hits;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            hits.extend(files_containing(&p, needle));
            continue;
        }
        let mut bytes = std::fs::read(&p).unwrap_or_default();
        if p.to_string_lossy().ends_with(".gz") {
            let out = run(Command::new("gzip").arg("-dc").arg(&p));
            bytes = out.stdout;
        }
        if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            hits.push(p.display().to_string());
        }
    }
    hits
}

#[test]
fn declared_services_are_created_linked_isolated_and_kept_running() {
    let s = Server::start();
    let dir = s.dir.path().join("shop");
    fixture_repo(&dir, "services");
    git_local(&dir, &["remote", "add", "paas", &s.url("shop")]);
    let push = s.git_ok(&s.admin, &dir, &["push", "paas", "main"]);
    let push_out = text(&push.stderr);
    assert!(
        push_out.contains("Linking shop-db into shop (production) as DATABASE_URL"),
        "{push_out}"
    );
    assert!(
        push_out.contains("migrated postgres, mariadb and redis"),
        "{push_out}"
    );

    // The release command's rows, and the web process writing and reading through the URLs.
    for kind in ["pg", "my", "redis"] {
        assert_eq!(get_ok(&s, "shop", &format!("/{kind}")), "migrated\n");
        get_ok(&s, "shop", &format!("/{kind}/add?v=alpha"));
        assert_eq!(get_ok(&s, "shop", &format!("/{kind}")), "migrated,alpha\n");
    }

    // Listed as objects; three, in production, running.
    let list = services_json(&s, &s.admin);
    let names: Vec<&str> = list.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["shop-cache", "shop-db", "shop-sql"], "{list:?}");
    for v in &list {
        assert_eq!(v["env"], "production");
        assert_eq!(v["node"], "local");
        assert_eq!(v["state"], "running", "{v}");
    }
    // The app's disk use counts its services' data dirs, as their node measures them.
    let u: serde_json::Value = serde_json::from_str(&s.ok(&s.admin, "usage shop --json")).unwrap();
    let services = u["disk"]["services"].as_u64().unwrap_or(0);
    assert!(services > 1 << 20, "{u}");
    assert!(u["disk"]["total"].as_u64().unwrap() > services, "{u}");
    assert!(s.ok(&s.admin, "usage shop").contains("; services "));
    let info = s.ok(&s.admin, "services:info shop-db");
    assert!(info.contains("version      15."), "{info}");
    assert!(!info.contains("postgres://"), "{info}");
    // Each server sized to its container's limit: the default, and the one declared.
    assert!(info.contains("memory       512.0 MB"), "{info}");
    assert_eq!(
        svc_exec(
            &s,
            "shop-db",
            "psql -h /run/svc -U postgres -Atc 'SHOW shared_buffers'"
        ),
        "128MB"
    );
    assert_eq!(
        svc_exec(&s, "shop-sql", "mariadb --no-defaults -S /run/svc/mysqld.sock -u root -Nse 'SELECT @@innodb_buffer_pool_size'"),
        (256 << 20).to_string()
    );
    let cache = service_container(&s, "shop-cache");
    assert_eq!(
        inspect(&cache, "{{.HostConfig.Memory}}"),
        (256 << 20).to_string()
    );
    assert_eq!(redis_maxmemory(&s), (192 << 20).to_string());
    let mem: Vec<_> = list.iter().map(|v| v["memory"].as_i64().unwrap()).collect();
    assert_eq!(mem, [256 << 20, 512 << 20, 512 << 20], "{list:?}");

    // The credentials: only with the flag, only for an owner.
    let creds = s.ok(&s.admin, "services:info shop-db --show-credentials");
    let url = creds
        .split_whitespace()
        .find(|w| w.starts_with("postgres://shop_production:"))
        .unwrap_or_else(|| panic!("{creds}"))
        .to_string();
    let password = url["postgres://shop_production:".len()..]
        .split('@')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(password.len(), 32, "{url}");
    let viewer = keygen(s.dir.path(), "viewer");
    s.add_key(&viewer, "user");
    s.ok(&s.admin, "access:grant shop viewer viewer");
    assert!(s.ok(&viewer, "services:info shop-db").contains("shop-db"));
    let denied = s.ssh(&viewer, "services:info shop-db --show-credentials", None);
    assert!(!denied.status.success());
    let msg = text(&denied.stderr);
    assert!(
        msg.contains("access denied:") && !msg.contains(&password),
        "{msg}"
    );
    // The data itself is the owner's too: a viewer gets no dump, and nothing is read.
    let denied = s.ssh(&viewer, "services:export shop-db", None);
    assert!(!denied.status.success() && denied.stdout.is_empty());
    assert!(
        text(&denied.stderr).contains("access denied:"),
        "{}",
        text(&denied.stderr)
    );
    assert_eq!(services_json(&s, &viewer).len(), 3);
    let stranger = keygen(s.dir.path(), "stranger");
    s.add_key(&stranger, "user");
    assert!(services_json(&s, &stranger).is_empty());
    assert!(!s
        .ssh(&stranger, "services:info shop-db", None)
        .status
        .success());

    // Refused while linked; bad input changes nothing.
    let out = s.ssh(&s.admin, "services:destroy shop-db --confirm shop-db", None);
    assert!(!out.status.success());
    let msg = text(&out.stderr);
    assert!(msg.contains("is linked to shop (production)"), "{msg}");
    assert_eq!(msg.trim_end().lines().count(), 1, "{msg}");
    for (cmd, says) in [
        ("services:create mongo x", "unknown service type 'mongo'"),
        (
            "services:create postgres 'Bad;name'",
            "invalid service name",
        ),
        ("services:create postgres shop-db", "already exists"),
        (
            "services:link shop shop-db --as 'lower'",
            "invalid variable name",
        ),
        (
            "services:create postgres x --node nowhere",
            "no node named 'nowhere'",
        ),
        (
            "services:create redis x --memory 64M",
            "not a size from 128M to 1T",
        ),
        (
            "services:create redis x --memory 1T",
            "the service needs 1048576.0 MB of memory and node 'local' has",
        ),
    ] {
        let out = s.ssh(&s.admin, cmd, None);
        let msg = text(&out.stderr);
        assert!(!out.status.success() && msg.contains(says), "{cmd}: {msg}");
        assert_eq!(msg.trim_end().lines().count(), 1, "{cmd}: {msg}");
    }
    assert_eq!(services_json(&s, &s.admin).len(), 3);

    // Another app cannot reach the service: not by name, not by address.
    let other = s.dir.path().join("other");
    repo(&other);
    git_local(&other, &["add", "-A"]);
    git_local(&other, &["commit", "-q", "-m", "other"]);
    git_local(&other, &["remote", "add", "paas", &s.url("other")]);
    s.git_ok(&s.admin, &other, &["push", "paas", "main"]);
    let pg = service_container(&s, "shop-db");
    let ips = inspect(
        &pg,
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
    );
    for target in std::iter::once("shop-db").chain(ips.split_whitespace()) {
        let probe = format!(
            "run other -- sh -c 'busybox nc -w 3 {target} 5432 </dev/null && echo CONNECTED || echo REFUSED'"
        );
        let out = s.ssh(&s.admin, &probe, None);
        let said = text(&out.stdout);
        assert!(
            said.contains("REFUSED") && !said.contains("CONNECTED"),
            "{target}: {said} {}",
            text(&out.stderr)
        );
    }

    // Killed: Docker brings it back and the app reconnects.
    let pid: u32 = inspect(&pg, "{{.State.Pid}}").parse().unwrap();
    signal(pid, 9);
    get_ok(&s, "shop", "/pg/add?v=after-kill");
    assert_eq!(get_ok(&s, "shop", "/pg"), "migrated,alpha,after-kill\n");
    let restarts: i64 = inspect(&pg, "{{.RestartCount}}").parse().unwrap();
    assert!(restarts >= 1, "restarts {restarts}");

    // Staging gets instances of its own: none of production's rows.
    git_local(&dir, &["tag", "v1"]);
    s.git_ok(&s.admin, &dir, &["push", "paas", "v1"]);
    assert_eq!(get_ok(&s, "shop-staging", "/pg"), "migrated\n");
    assert_eq!(get_ok(&s, "shop-staging", "/my"), "migrated\n");
    assert_eq!(get_ok(&s, "shop", "/my"), "migrated,alpha\n");
    let staging: Vec<_> = services_json(&s, &s.admin)
        .into_iter()
        .filter(|v| v["env"] == "staging")
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        staging,
        ["shop-staging-cache", "shop-staging-db", "shop-staging-sql"]
    );
    let out = s.ssh(
        &s.admin,
        "services:link shop shop-staging-db --env production --as STAGING_URL",
        None,
    );
    assert!(
        text(&out.stderr).contains("serves staging"),
        "{}",
        text(&out.stderr)
    );

    // An unlink the app cannot live with (its release command needs REDIS_URL) is refused
    // by the rollout, and nothing changes.
    let out = s.ssh(
        &s.admin,
        "services:destroy shop-staging-cache --confirm shop-staging-cache --unlink",
        None,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("release command failed"),
        "{}",
        text(&out.stderr)
    );
    assert!(s
        .ok(&s.admin, "config shop --env staging")
        .contains("REDIS_URL="));
    assert_eq!(services_json(&s, &s.admin).len(), 6);

    // A global service: created by an admin, linked under another name (a new release),
    // unlinked and destroyed: the variable and the container go.
    s.ok(&s.admin, "services:create redis extra --env staging");
    let linked = s.ok(&s.admin, "services:link shop extra --as EXTRA_URL");
    assert!(linked.contains("is live with it"), "{linked}");
    assert!(s
        .ok(&s.admin, "config shop --env staging")
        .contains("EXTRA_URL="));
    let extra = service_container(&s, "extra");
    s.ok(&s.admin, "services:destroy extra --confirm extra --unlink");
    assert!(!s
        .ok(&s.admin, "config shop --env staging")
        .contains("EXTRA_URL"));
    let gone = run(Command::new("docker").args(["inspect", &extra]));
    assert!(!gone.status.success(), "container {extra} still there");
    // Each release command ran against staging's own database, never production's.
    let rows = get_ok(&s, "shop-staging", "/pg");
    assert!(
        rows.starts_with("migrated,migrated") && !rows.contains("alpha"),
        "{rows}"
    );

    ps_logs_connect_and_masked_config(&s, &password);

    // No password anywhere but services:info --show-credentials: not in config (masked),
    // logs, audit, build output, tarballs, the server's log or files.
    for key in [&s.admin] {
        for cmd in [
            "logs shop -n 1000",
            "audit",
            "builds:log shop",
            "releases shop",
            "config shop",
            "config shop --json",
            "config:get shop DATABASE_URL",
            "apps:info shop",
            "apps:info shop --json",
            "releases:info shop 1",
            "releases:info shop 1 --json",
        ] {
            let out = s.ok(key, cmd);
            assert!(!out.contains(&password), "{cmd} shows the password");
        }
    }
    assert!(
        !push_out.contains(&password),
        "the push output shows the password"
    );
    assert!(
        !s.log().contains(&password),
        "the server log shows the password"
    );
    for sub in ["releases", "logs", "builds"] {
        let hits = files_containing(&s.data.join(sub), &password);
        assert!(hits.is_empty(), "the password is in {hits:?}");
    }

    a_new_memory_limit_remakes_the_container(&s, &dir);
    orm_app_migrates_through_database_url(&s);
    destroy_takes_the_apps_services_and_backups(&s);
}

/// Runs `cmd` in the service's container (as the service's uid) and gives its stdout.
fn svc_exec(s: &Server, name: &str, cmd: &str) -> String {
    let c = service_container(s, name);
    let out = run(Command::new("docker").args(["exec", &c, "sh", "-c", cmd]));
    assert!(out.status.success(), "{cmd}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

fn redis_maxmemory(s: &Server) -> String {
    let out = svc_exec(
        s,
        "shop-cache",
        "REDISCLI_AUTH=$(cat /data/.admin-pass) redis-cli -s /run/svc/redis.sock --user admin --no-auth-warning CONFIG GET maxmemory",
    );
    out.lines().nth(1).unwrap_or_default().to_string()
}

/// A memory limit changed in magrathea.yml: the next deploy makes the service's container
/// again with it, the server sized to it, and its data kept.
fn a_new_memory_limit_remakes_the_container(s: &Server, dir: &Path) {
    let before = get_ok(s, "shop", "/redis");
    let old = service_container(s, "shop-cache");
    let yml = std::fs::read_to_string(dir.join("magrathea.yml")).unwrap();
    std::fs::write(
        dir.join("magrathea.yml"),
        yml.replace("memory: 256M", "memory: 384M"),
    )
    .unwrap();
    git_local(dir, &["commit", "-qam", "more memory for the cache"]);
    let push = s.git_ok(&s.admin, dir, &["push", "paas", "main"]);
    let said = text(&push.stderr);
    assert!(
        said.contains("shop-cache: memory limit 384.0 MB, restarting it"),
        "{said}"
    );
    let new = service_container(s, "shop-cache");
    assert_ne!(new, old, "the container was not made again");
    assert_eq!(
        inspect(&new, "{{.HostConfig.Memory}}"),
        (384 << 20).to_string()
    );
    assert_eq!(redis_maxmemory(s), (288 << 20).to_string());
    // Everything it held, and the new release command's item after it.
    assert_eq!(
        get_ok(s, "shop", "/redis"),
        format!("{},migrated\n", before.trim_end())
    );
    let info = s.ok(&s.admin, "services:info shop-cache");
    assert!(info.contains("memory       384.0 MB"), "{info}");
}

/// `ps` lists the services beside the processes, `services:logs` shows the server's
/// output, `services:connect` runs psql on a terminal, and `config` masks the passwords.
fn ps_logs_connect_and_masked_config(s: &Server, password: &str) {
    let ps = s.ok(&s.admin, "ps shop");
    for want in [
        "SERVICE",
        "shop-db",
        "postgres",
        "shop-cache",
        "shop-sql",
        "mariadb",
    ] {
        assert!(ps.contains(want), "{want}: {ps}");
    }
    let v: serde_json::Value = serde_json::from_str(&s.ok(&s.admin, "ps shop --json")).unwrap();
    let all = v.as_array().unwrap();
    let svcs: Vec<&serde_json::Value> = all.iter().filter(|r| r["kind"] == "service").collect();
    assert_eq!(svcs.len(), 3, "{v}");
    let db = svcs.iter().find(|r| r["service"] == "shop-db").unwrap();
    assert_eq!(
        (&db["type"], &db["node"], &db["state"]),
        (&"postgres".into(), &"local".into(), &"running".into()),
        "{db}"
    );
    assert!(
        all.iter()
            .any(|r| r["kind"] == "process" && r["process"] == "web.1"),
        "{v}"
    );

    let logs = s.ok(&s.admin, "services:logs shop-db -n 200");
    assert!(logs.contains("ready to accept connections"), "{logs}");
    assert!(!logs.contains(password), "services:logs shows the password");

    // psql on a terminal (ssh -tt), fed from stdin.
    let mut args = vec!["-tt".to_string()];
    args.extend(s.ssh_args(&s.admin));
    args.extend(["git@127.0.0.1".into(), "services:connect shop-db".into()]);
    let mut child = Command::new("ssh")
        .args(&args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut sin = child.stdin.take().unwrap();
        // No pager: the terminal has no size here.
        sin.write_all(b"\\pset pager off\nSELECT 40 + 2 AS answer;\n\\q\n")
            .unwrap();
        // Held open until psql has quit: an early EOF would end the session first.
        let out = child.wait_with_output().unwrap();
        drop(sin);
        let o = text(&out.stdout);
        assert!(
            o.contains("answer") && o.contains("42") && o.contains("(1 row)"),
            "services:connect: {o}{}",
            text(&out.stderr)
        );
    }
    let out = s.ssh(&s.admin, "services:connect shop-db", None);
    assert!(
        text(&out.stderr).contains("needs a terminal"),
        "{}",
        text(&out.stderr)
    );

    // config, config --json and config:get: the URL with its password masked, and a note.
    let config = s.ok(&s.admin, "config shop");
    assert!(
        config.contains("DATABASE_URL=postgres://shop_production:****@shop-db:5432/shop_db"),
        "{config}"
    );
    assert!(
        config.contains("services:info shop-db --show-credentials"),
        "{config}"
    );
    let get = s.ok(&s.admin, "config:get shop DATABASE_URL");
    assert!(
        get.starts_with("postgres://shop_production:****@shop-db"),
        "{get}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&s.ok(&s.admin, "config shop --json")).unwrap();
    assert!(
        json["REDIS_URL"]
            .as_str()
            .unwrap()
            .contains(":****@shop-cache"),
        "{json}"
    );
}

/// A Flask + SQLAlchemy app (Flask-Migrate, Alembic migrations, gunicorn) from PyPI: its
/// release command `flask db upgrade` migrates the declared Postgres through DATABASE_URL.
fn orm_app_migrates_through_database_url(s: &Server) {
    let dir = s.dir.path().join("notes");
    fixture_repo(&dir, "services-orm");
    let push = s.git_ok(&s.admin, &dir, &["push", &s.url("notes"), "main"]);
    let out = text(&push.stderr);
    assert!(out.contains("Running upgrade 0001 -> 0002"), "{out}");
    assert_eq!(get_ok(s, "notes", "/notes"), "seeded*\n");
    get_ok(s, "notes", "/notes/add?text=hello");
    assert_eq!(get_ok(s, "notes", "/notes"), "seeded*,hello\n");
}

/// `apps:destroy` takes the app's own services with their data and backups, unlinks it from
/// a service it shares, and a later app of the same name sees none of them.
fn destroy_takes_the_apps_services_and_backups(s: &Server) {
    let a = &s.admin;
    s.ok(a, "services:create redis shared");
    s.ok(a, "services:link shop shared --as SHARED_URL");
    s.ok(a, "services:backup shop-db --no-verify");
    assert!(s.data.join("backups/shop-db").is_dir());
    let out = s.ok(a, "apps:destroy shop --confirm shop");
    assert!(out.contains("destroyed app 'shop'"), "{out}");
    let left: Vec<_> = services_json(s, a)
        .into_iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    assert!(left.iter().all(|n| !n.starts_with("shop-")), "{left:?}");
    let shared = services_json(s, a)
        .into_iter()
        .find(|v| v["name"] == "shared")
        .unwrap();
    assert_eq!(shared["links"].as_array().unwrap().len(), 0, "{shared}");
    assert!(!s.data.join("backups/shop-db").exists());
    let left = service_containers(&s.data.join("node"));
    assert_eq!(left.len(), 2, "left: shared and notes-db: {left:?}");
    // The same name again: no services, no backups.
    s.ok(a, "apps:create shop");
    assert!(services_json(s, a).iter().all(|v| v["app"] != "shop"));
    let out = s.ssh(a, "services:backups shop-db", None);
    assert!(!out.status.success(), "{}", text(&out.stdout));
}
