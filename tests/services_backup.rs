//! Service backups end to end with the real binary, its built-in node and the service
//! images (scripts/service-images.sh), on one server: a Postgres and a Redis service. Backup
//! (verified in a throwaway instance), a destructive change, restore: the data is back (and,
//! for Postgres, a table made after the backup is gone); a backup with one byte changed is
//! refused on restore and nothing changes. Then an app on
//! the bookworm stack with a declared Postgres: a release whose migration drops a column,
//! and `rollback --with-data` brings the old code and the old schema back together. A
//! MariaDB round trip, and scheduled backups from magrathea.yml (the server allows short
//! intervals: `--min-backup-interval 1`): taken on time, retention held, a failure shown in
//! `services:info`, `logs` and the audit trail.

mod util;

use std::process::Command;

use util::{commit, node_instance, repo, run, service_containers, text, Server};

/// `docker exec` in the service container named `name` (its host name); stdout.
fn exec(server: &Server, name: &str, script: &str) -> String {
    let inst = node_instance(&server.data.join("node")).expect("the built-in node's root");
    let ids = run(Command::new("docker").args([
        "ps",
        "-q",
        "--filter",
        &format!("label=magrathea.instance={inst}"),
        "--filter",
        "label=magrathea.service",
    ]));
    let id = text(&ids.stdout)
        .split_whitespace()
        .find(|id| {
            let h = run(Command::new("docker").args(["inspect", "-f", "{{.Config.Hostname}}", id]));
            text(&h.stdout).trim() == name
        })
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no running container of service {name}"));
    let out = run(Command::new("docker").args(["exec", &id, "sh", "-c", script]));
    assert!(
        out.status.success(),
        "{script}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout).trim().to_string()
}

fn psql(server: &Server, sql: &str) -> String {
    let script = format!(
        "psql -X -At -v ON_ERROR_STOP=1 -h /run/svc -U postgres -d \"$MAGRATHEA_DB\" -c \"{sql}\""
    );
    exec(server, "db", &script)
}

fn redis(server: &Server, args: &str) -> String {
    let script = format!(
        "REDISCLI_AUTH=$(cat /data/.admin-pass) redis-cli -s /run/svc/redis.sock --user admin --no-auth-warning {args}"
    );
    exec(server, "cache", &script)
}

fn mariadb(server: &Server, sql: &str) -> String {
    let script = format!(
        "mariadb --no-defaults -S /run/svc/mysqld.sock -u root -N -B \"$MAGRATHEA_DB\" -e \"{sql}\""
    );
    exec(server, "sql", &script)
}

fn backups(server: &Server, name: &str) -> Vec<serde_json::Value> {
    let out = server.ok(&server.admin, &format!("services:backups {name} --json"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn backups_restore_refuse_tampering_and_follow_releases() {
    let server = Server::start_with(&["--min-backup-interval", "1"]);
    let a = &server.admin;
    server.ok(a, "services:create postgres db");
    psql(
        &server,
        "CREATE TABLE t(id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g",
    );

    let out = server.ok(a, "services:backup db");
    assert!(out.contains("backup #"), "{out}");
    let list = backups(&server, "db");
    assert_eq!(list.len(), 1, "{list:?}");
    let b = &list[0];
    let id = b["id"].as_i64().unwrap();
    assert!(
        b["size"].as_u64().unwrap() > 0 && b["created"].is_string(),
        "{b}"
    );
    assert_eq!(b["sha256"].as_str().unwrap().len(), 64, "{b}");
    assert_eq!(b["verified"], true, "verified in a throwaway instance: {b}");
    // Sealed at rest: no row's text shows in the file.
    let dir = server.data.join("backups/db");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let sealed = std::fs::read(&files[0]).unwrap();
    assert!(
        !sealed.windows(6).any(|w| w == b"CREATE"),
        "the dump is sealed"
    );

    // A destructive change and a table made after the backup, then the restore: the rows
    // are back, the later table is gone (the database is replaced as a whole), and a safety
    // backup of what it held was taken first.
    psql(&server, "DROP TABLE t");
    psql(&server, "CREATE TABLE later(x int)");
    let out = server.ok(a, &format!("services:restore db {id}"));
    assert!(out.contains("restored backup"), "{out}");
    assert_eq!(psql(&server, "SELECT count(*) FROM t"), "5000");
    assert_eq!(psql(&server, "SELECT to_regclass('later') IS NULL"), "t");
    // The replaced database is dropped just after the answer.
    let left = || {
        psql(
            &server,
            "SELECT count(*) FROM pg_database WHERE strpos(datname, '__mg_') > 0",
        )
    };
    for _ in 0..100 {
        if left() == "0" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    assert_eq!(left(), "0", "no staging or replaced database left");
    let list = backups(&server, "db");
    assert_eq!(list.len(), 2, "the backup and a safety backup: {list:?}");
    assert_eq!(
        list.iter().filter(|b| b["reason"] == "safety").count(),
        1,
        "{list:?}"
    );

    // One byte changed: refused with a clear message, the service and the catalog as they were.
    psql(&server, "INSERT INTO t VALUES (0, 'after')");
    let mut bad = sealed.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    std::fs::write(&files[0], &bad).unwrap();
    let out = server.ssh(a, &format!("services:restore db {id}"), None);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("is damaged or was changed"), "{err}");
    assert_eq!(
        psql(&server, "SELECT count(*) FROM t"),
        "5001",
        "nothing restored"
    );
    assert_eq!(
        backups(&server, "db").len(),
        2,
        "no new safety backup either"
    );
    let out = server.ssh(a, "services:restore db 999", None);
    assert!(
        text(&out.stderr).contains("no backup #999"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(&files[0], &sealed).unwrap();
    a_failed_safety_backup_changes_nothing(&server, id);
    a_broken_index_definition_fails_verification(&server);

    // Redis: an RDB after BGSAVE, restored by a restart from it.
    server.ok(a, "services:create redis cache");
    redis(&server, "SET k1 v1");
    redis(&server, "SET k2 v2");
    let out = server.ok(a, "services:backup cache");
    assert!(out.contains("backup #"), "{out}");
    let id = backups(&server, "cache")[0]["id"].as_i64().unwrap();
    redis(&server, "FLUSHALL");
    redis(&server, "SET other 1");
    server.ok(a, &format!("services:restore cache {id}"));
    assert_eq!(redis(&server, "GET k1"), "v1");
    assert_eq!(redis(&server, "EXISTS other"), "0");

    // MariaDB: a gzipped mariadb-dump, replayed.
    // Dokku's words for it (its mysql plugin): the same service.
    server.ok(a, "mysql:create sql");
    assert!(server.ok(a, "mysql:info sql").contains("mariadb"));
    let out = server.ssh(a, "mysql:link sql", None);
    assert_eq!(
        (out.status.code(), text(&out.stderr).trim()),
        (Some(2), "error: usage: mysql:link SERVICE APP")
    );
    mariadb(
        &server,
        "CREATE TABLE t(id INT PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'one'), (2, 'two')",
    );
    server.ok(a, "services:backup sql");
    let id = backups(&server, "sql")[0]["id"].as_i64().unwrap();
    mariadb(&server, "DROP TABLE t");
    server.ok(a, &format!("services:restore sql {id}"));
    assert_eq!(
        mariadb(&server, "SELECT group_concat(v ORDER BY id) FROM t"),
        "one,two"
    );

    rollback_with_data_brings_code_and_schema_back_together(&server);
    scheduled_backups_run_keep_and_fail_visibly(&server);
    imports_and_exports_move_data_in_and_out(&server);
}

/// `docker exec -i` in service `name`'s container, `input` on its stdin; stdout as bytes.
fn exec_stdin(server: &Server, name: &str, script: &str, input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new("docker")
        .args([
            "exec",
            "-i",
            &container_of(server, name),
            "sh",
            "-c",
            script,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{script}: {}", text(&out.stderr));
    out.stdout
}

/// `docker exec` in service `name`'s container; stdout as bytes (a dump).
fn exec_bytes(server: &Server, name: &str, script: &str) -> Vec<u8> {
    let out =
        run(Command::new("docker").args(["exec", &container_of(server, name), "sh", "-c", script]));
    assert!(out.status.success(), "{script}: {}", text(&out.stderr));
    out.stdout
}

/// `ssh paas ARGS < stdin` that must fail: its stderr.
fn refused(server: &Server, args: &str, stdin: &[u8]) -> String {
    let out = server.ssh_bytes(&server.admin, args, Some(stdin));
    assert!(
        !out.status.success(),
        "{args} succeeded: {}",
        text(&out.stderr)
    );
    text(&out.stderr)
}

/// What a team brings from Heroku or Dokku, and takes away: `services:import` loads a dump
/// made elsewhere (a Postgres one with owners, grants and an extension this server has no
/// roles for: everything ends up the service's own), `services:export` writes one the
/// service's own tools read; Redis and a gzipped MariaDB dump too. Bad input is refused in
/// one line and changes nothing.
fn imports_and_exports_move_data_in_and_out(server: &Server) {
    let a = &server.admin;
    // A database as another host has it: its own owner role, a grantee, an extension.
    let made = "psql -X -q -v ON_ERROR_STOP=1 -h /run/svc -U postgres -d postgres \
        -c 'CREATE ROLE u8heroku LOGIN' -c 'CREATE ROLE reader' \
        -c 'CREATE DATABASE herokudb OWNER u8heroku' && \
        psql -X -q -v ON_ERROR_STOP=1 -h /run/svc -U postgres -d herokudb \
        -c 'CREATE EXTENSION citext' -c 'SET ROLE u8heroku' \
        -c \"CREATE TYPE mood AS ENUM ('ok', 'meh')\" -c 'CREATE SCHEMA reporting' \
        -c 'CREATE TABLE users (id serial PRIMARY KEY, email citext UNIQUE NOT NULL, m mood)' \
        -c 'CREATE TABLE reporting.daily (d date, n int)' \
        -c 'CREATE VIEW user_count AS SELECT count(*) AS n FROM users' \
        -c \"INSERT INTO users (email, m) SELECT 'U' || g || '@Example.com', 'ok' FROM generate_series(1, 300) g\" \
        -c 'GRANT SELECT ON users TO reader' && \
        pg_dump -Fc -h /run/svc -U postgres -d herokudb";
    let dump = exec_bytes(server, "db", made);
    assert!(dump.starts_with(b"PGDMP"));
    let owned = exec_bytes(server, "db", "pg_dump -h /run/svc -U postgres -d herokudb");
    let plain = exec_bytes(
        server,
        "db",
        "pg_dump --no-owner --no-acl -h /run/svc -U postgres -d herokudb | gzip",
    );
    // Gone from here, as they are from any host the dumps are brought to.
    exec(
        server,
        "db",
        "psql -X -q -v ON_ERROR_STOP=1 -h /run/svc -U postgres -d postgres \
         -c 'DROP DATABASE herokudb' -c 'DROP ROLE u8heroku' -c 'DROP ROLE reader'",
    );
    let before = backups(server, "db").len();

    // Refused before anything is stored: nothing, not a dump at all, a newer pg_dump's.
    let err = refused(server, "services:import db", b"");
    assert!(err.contains("nothing on stdin"), "{err}");
    let err = refused(server, "services:import db", b"\x00\x01binary\x00");
    assert!(err.contains("not a pg_dump archive or SQL dump"), "{err}");
    let mut newer = dump.clone();
    newer[6] = 15;
    let err = refused(server, "services:import db", &newer);
    assert!(err.contains("format 1.15"), "{err}");
    // Plain SQL that names the other host's roles: it stops at the first, says how to
    // dump it, and nothing changes.
    let rows = psql(server, "SELECT count(*) FROM t");
    let err = refused(server, "services:import db", &owned);
    assert!(
        err.contains("role \"u8heroku\" does not exist") && err.contains("--no-owner --no-acl"),
        "{err}"
    );
    assert_eq!(psql(server, "SELECT count(*) FROM t"), rows);
    // A whole header and a cut body: stored, fails to load, removed again; the live
    // database is as it was.
    let err = refused(server, "services:import db", &dump[..dump.len() * 2 / 3]);
    assert!(
        err.contains("the service holds what it held before"),
        "{err}"
    );
    assert_eq!(psql(server, "SELECT count(*) FROM t"), rows);
    assert_eq!(
        backups(server, "db").len(),
        before,
        "nothing new in the catalog"
    );

    // Dokku's name for it; the import replaces the database, owned as the service's own.
    let out = server.ssh_bytes(a, "postgres:import db", Some(&dump));
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stderr),
        server.log()
    );
    assert!(
        text(&out.stderr).contains("imported into db as backup #"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        psql(
            server,
            "SELECT count(*) FROM users WHERE email = 'u7@example.COM'"
        ),
        "1"
    );
    assert_eq!(
        psql(server, "SELECT to_regclass('t') IS NULL"),
        "t",
        "the old tables are gone"
    );
    let owners = psql(
        server,
        "SELECT string_agg(DISTINCT pg_get_userbyid(relowner), ',') FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE nspname IN ('public', 'reporting') AND relkind IN ('r', 'v', 'S')",
    );
    assert_eq!(owners, "svc_owner");
    // What every link acts as can use all of it.
    assert_eq!(
        psql(
            server,
            "SET ROLE svc_owner; INSERT INTO users (email, m) VALUES ('new@x.io', 'meh'); \
             INSERT INTO reporting.daily VALUES (now(), 1); SELECT n FROM user_count"
        )
        .lines()
        .last(),
        Some("301")
    );
    let list = backups(server, "db");
    assert!(list.iter().any(|b| b["reason"] == "import"), "{list:?}");

    // Plain SQL as Heroku's docs have people make it, gzipped: replayed by psql.
    let out = server.ssh_bytes(a, "services:import db", Some(&plain));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        psql(server, "SELECT count(*) FROM users"),
        "300",
        "the SQL's rows, not the 301 before"
    );
    assert_eq!(
        psql(
            server,
            "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'users'"
        ),
        "svc_owner"
    );

    // Export: what pg_restore reads, with the rows in it; progress on stderr only.
    let out = server.ssh(a, "services:export db", None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.starts_with(b"PGDMP"), "stdout is the archive");
    assert!(
        text(&out.stderr).contains("exported "),
        "{}",
        text(&out.stderr)
    );
    let toc = exec_stdin(server, "db", "pg_restore -l", &out.stdout);
    assert!(
        text(&toc).contains("TABLE DATA public users"),
        "{}",
        text(&toc)
    );

    // Redis: a stored backup exported as the RDB it holds, imported back after a flush.
    let id = backups(server, "cache")
        .iter()
        .find(|b| b["reason"] == "manual")
        .and_then(|b| b["id"].as_i64())
        .expect("the manual backup of cache");
    let out = server.ssh(a, &format!("redis:export cache --backup {id}"), None);
    assert!(
        out.status.success() && out.stdout.starts_with(b"REDIS"),
        "{}",
        text(&out.stderr)
    );
    redis(server, "FLUSHALL");
    let out = server.ssh_bytes(a, "services:import cache", Some(&out.stdout));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(redis(server, "GET k1"), "v1");
    let err = refused(server, "services:import cache", &dump);
    assert!(err.contains("not a Redis RDB file"), "{err}");

    // MariaDB: the SQL it exports, gzipped the way people keep dumps, imported back.
    let out = server.ssh(a, "mysql:export sql", None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("CREATE TABLE"), "plain SQL");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &out.stdout).unwrap();
    let gz = gz.finish().unwrap();
    mariadb(server, "DROP TABLE t");
    let out = server.ssh_bytes(a, "services:import sql", Some(&gz));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        mariadb(server, "SELECT group_concat(v ORDER BY id) FROM t"),
        "one,two"
    );
}

/// `chattr +i` on a directory: even root cannot create files in it, until dropped.
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn new(dir: &std::path::Path) -> Immutable {
        let out = run(Command::new("chattr").arg("+i").arg(dir));
        assert!(out.status.success(), "chattr: {}", text(&out.stderr));
        Immutable(dir.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// A Postgres restore loads the backup while its safety backup is taken, and swaps only
/// once both are done: with the safety backup unable to be stored, the restore fails, the
/// live database is as it was, the loaded one is gone, and the catalog has nothing new.
fn a_failed_safety_backup_changes_nothing(server: &Server, id: i64) {
    let a = &server.admin;
    psql(server, "DELETE FROM t WHERE id > 100");
    let before = backups(server, "db").len();
    let out = {
        let _frozen = Immutable::new(&server.data.join("backups/db"));
        server.ssh(a, &format!("services:restore db {id}"), None)
    };
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("backup of service 'db' failed") && err.contains("holds what it held before"),
        "{err}"
    );
    assert_eq!(
        psql(server, "SELECT count(*) FROM t"),
        "101",
        "nothing restored"
    );
    assert_eq!(
        psql(
            server,
            "SELECT count(*) FROM pg_database WHERE strpos(datname, '__mg_') > 0"
        ),
        "0",
        "the loaded database was dropped"
    );
    assert_eq!(backups(server, "db").len(), before, "no new backup");
    // And with the safety backup stored, the same restore goes through.
    server.ok(a, &format!("services:restore db {id}"));
    assert_eq!(psql(server, "SELECT count(*) FROM t"), "5000");
}

/// A dump whose index definition cannot be executed on restore (an SQL function inlined as
/// the index is defined, calling another by a name the restore's empty search path does not
/// find): the verification runs the archive's post-data statements and refuses the backup,
/// though its tables and rows load.
fn a_broken_index_definition_fails_verification(server: &Server) {
    let a = &server.admin;
    psql(
        server,
        "CREATE FUNCTION g(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT \\$1 + 1'; \
         CREATE FUNCTION f(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT g(\\$1)'; \
         CREATE TABLE fx(x int); INSERT INTO fx VALUES (1); CREATE INDEX fx_f ON fx (f(x))",
    );
    let before = backups(server, "db").len();
    let out = server.ssh(a, "services:backup db", None);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("does not restore")
            && err.contains("indexes and constraints do not restore")
            && err.contains("g(integer) does not exist"),
        "{err}"
    );
    assert_eq!(backups(server, "db").len(), before, "not recorded");
    psql(
        server,
        "DROP TABLE fx; DROP FUNCTION f(int); DROP FUNCTION g(int)",
    );
}

/// The container of the service named `name`, running or not.
fn container_of(server: &Server, name: &str) -> String {
    service_containers(&server.data.join("node"))
        .into_iter()
        .find(|id| {
            let h = run(Command::new("docker").args(["inspect", "-f", "{{.Config.Hostname}}", id]));
            text(&h.stdout).trim() == name
        })
        .unwrap_or_else(|| panic!("no container of service {name}"))
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !f() {
        assert!(
            std::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// `db: { type: redis, backup: { every: 2s, keep: 2 } }`: scheduled backups appear, only the
/// newest two stay (the release backups aside), they go on after a restart, and a failing
/// one is said in services:info, logs and audit. `deploy --env` creates the declared
/// service of the environment it promotes to.
fn scheduled_backups_run_keep_and_fail_visibly(server: &Server) {
    let a = &server.admin;
    let dir = repo(&server.dir.path().join("src-sched"));
    commit(
        &dir,
        "magrathea.yml",
        "services:\n  db:\n    type: redis\n    backup: { every: 2s, keep: 2 }\n",
        "scheduled",
    );
    let push = server.git_ok(a, &dir, &["push", &server.url("sched"), "main"]);
    let out = text(&push.stderr);
    assert!(
        out.contains("sched-db: a backup every 2s, the newest 2 kept"),
        "{out}"
    );
    let scheduled = |server: &Server| -> Vec<i64> {
        backups(server, "sched-db")
            .iter()
            .filter(|b| b["reason"] == "scheduled")
            .map(|b| b["id"].as_i64().unwrap())
            .collect()
    };
    let mut seen = std::collections::BTreeSet::new();
    wait_for("three scheduled backups", 90, || {
        let now = scheduled(server);
        assert!(now.len() <= 2, "keep: 2 holds: {now:?}");
        seen.extend(now);
        seen.len() >= 3
    });
    let info = server.ok(a, "services:info sched-db");
    assert!(info.contains("every 2s, the newest 2 kept"), "{info}");
    assert!(info.contains("next backup"), "{info}");
    let logs = server.ok(a, "logs sched -n 500");
    assert!(logs.contains("scheduled backup #"), "{logs}");

    // A stopped service: the scheduled backup fails, and says so everywhere.
    let id = container_of(server, "sched-db");
    run(Command::new("docker").args(["stop", "-t", "1", &id]));
    wait_for("a failed scheduled backup in services:info", 60, || {
        server
            .ok(a, "services:info sched-db")
            .contains("backup error")
    });
    let logs = server.ok(a, "logs sched -n 500");
    assert!(
        logs.contains("scheduled backup of sched-db FAILED"),
        "{logs}"
    );
    let audit = server.ok(a, "audit");
    assert!(
        audit.contains("services:backup sched-db (scheduled)") && audit.contains("failed"),
        "{audit}"
    );
    run(Command::new("docker").args(["start", &id]));
    wait_for("backups again once the service is back", 150, || {
        !server
            .ok(a, "services:info sched-db")
            .contains("backup error")
    });

    // Promoted to another environment: its own declared service, created as by a push.
    let out = server.ok(a, "deploy sched v1 --env qa");
    assert!(out.contains("live in qa"), "{out}");
    let list = server.ok(a, "services --json");
    assert!(list.contains("\"sched-qa-db\""), "{list}");
}

/// What the app's page says: its version, the columns of `items`, the prices.
const WEB: &str = r#"<?php
$db = pg_connect(getenv('DATABASE_URL'));
$cols = pg_fetch_all_columns(pg_query($db, "SELECT column_name FROM information_schema.columns WHERE table_name = 'items' ORDER BY ordinal_position"));
$rows = pg_fetch_all(pg_query($db, 'SELECT * FROM items ORDER BY id')) ?: [];
echo 'VERSION ' . implode(',', $cols) . ' ' . json_encode($rows) . "\n";
"#;

fn rollback_with_data_brings_code_and_schema_back_together(server: &Server) {
    let a = &server.admin;
    let dir = repo(&server.dir.path().join("src-shop"));
    std::fs::write(
        dir.join("magrathea.yml"),
        "stack: bookworm\nservices:\n  db: postgres\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("Procfile"),
        "release: php migrate.php\nweb: php -S 0.0.0.0:$PORT web.php\n",
    )
    .unwrap();
    std::fs::write(dir.join("web.php"), WEB.replace("VERSION", "v1")).unwrap();
    let v1 = r#"<?php
$db = pg_connect(getenv('DATABASE_URL'));
pg_query($db, 'CREATE TABLE IF NOT EXISTS items(id int PRIMARY KEY, name text, price int)');
pg_query($db, "INSERT INTO items VALUES (1, 'towel', 42) ON CONFLICT DO NOTHING");
"#;
    commit(&dir, "migrate.php", v1, "v1");
    server.git_ok(a, &dir, &["push", &server.url("shop"), "main"]);
    let (code, body) = server.get("shop", "/");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("v1 id,name,price") && body.contains("42"),
        "{body}"
    );

    // v2's migration drops a column: its backup of shop-db is taken before it runs.
    std::fs::write(dir.join("web.php"), WEB.replace("VERSION", "v2")).unwrap();
    let v2 = "<?php\npg_query(pg_connect(getenv('DATABASE_URL')), 'ALTER TABLE items DROP COLUMN IF EXISTS price');\n";
    commit(&dir, "migrate.php", v2, "v2 drops price");
    server.git_ok(a, &dir, &["push", &server.url("shop"), "main"]);
    let (_, body) = server.get("shop", "/");
    assert!(
        body.contains("v2 id,name ") && !body.contains("42"),
        "{body}"
    );
    let info = server.ok(a, "releases:info shop 2");
    assert!(
        info.contains("shop-db #"),
        "releases:info names the backup: {info}"
    );

    let out = server.ok(a, "rollback shop --with-data");
    assert!(out.contains("rolled back"), "{out}");
    let (code, body) = server.get("shop", "/");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("v1 id,name,price") && body.contains("42"),
        "old code and old schema, with the dropped column's data: {body}"
    );
    // Postgres needed no safety dump: the replaced database was kept until the rollout went
    // live, then dropped.
    let list = backups(server, "shop-db");
    assert!(list.iter().all(|b| b["reason"] != "safety"), "{list:?}");
    let left = exec(
        server,
        "shop-db",
        "psql -X -At -h /run/svc -U postgres -d postgres -c \"SELECT count(*) FROM pg_database WHERE strpos(datname, '__mg_') > 0\"",
    );
    assert_eq!(left, "0", "the replaced database was dropped");
}
