//! Versioned schema migrations, tracked in `PRAGMA user_version`. Append only: never edit a
//! migration that has shipped.

use rusqlite::Connection;

pub(super) const MIGRATIONS: &[&str] = &[
    // 1: identity, apps, access, pushes, audit
    "CREATE TABLE keys(
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        fingerprint TEXT NOT NULL UNIQUE,
        public_key TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('admin','user')),
        created_at INTEGER NOT NULL);
     CREATE TABLE apps(
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        created_by TEXT NOT NULL);
     CREATE TABLE access(
        app_id INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
        key_id INTEGER NOT NULL REFERENCES keys(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('viewer','deployer','owner')),
        tags TEXT,
        PRIMARY KEY(app_id, key_id));
     CREATE TABLE pushes(
        id INTEGER PRIMARY KEY,
        app TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        key_name TEXT NOT NULL,
        refs TEXT NOT NULL,
        outcome TEXT NOT NULL,
        at INTEGER NOT NULL);
     CREATE TABLE audit(
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        fingerprint TEXT NOT NULL,
        key_name TEXT NOT NULL,
        app TEXT,
        command TEXT NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL);
     CREATE INDEX audit_app ON audit(app, id);",
    // 2: builds and cooked releases
    "CREATE TABLE builds(
        id INTEGER PRIMARY KEY,
        app TEXT NOT NULL,
        git_sha TEXT NOT NULL,
        git_ref TEXT NOT NULL,
        key_name TEXT NOT NULL,
        status TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '',
        release_version INTEGER,
        created_at INTEGER NOT NULL,
        finished_at INTEGER);
     CREATE INDEX builds_app ON builds(app, id);
     CREATE TABLE releases(
        id INTEGER PRIMARY KEY,
        app TEXT NOT NULL,
        version INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        tar_sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        git_sha TEXT NOT NULL,
        git_ref TEXT NOT NULL,
        build_id INTEGER,
        file TEXT NOT NULL,
        manifest TEXT NOT NULL,
        key_name TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'cooked',
        pinned INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        UNIQUE(app, version));",
    // 3: nodes, what is live where, deploys
    "CREATE TABLE nodes(
        name TEXT PRIMARY KEY,
        addr TEXT NOT NULL,
        labels TEXT NOT NULL DEFAULT '{}',
        host_fp TEXT NOT NULL,
        slots INTEGER NOT NULL DEFAULT 8,
        added_at INTEGER NOT NULL);
     CREATE TABLE live(
        app TEXT NOT NULL,
        env TEXT NOT NULL,
        version INTEGER NOT NULL,
        previous INTEGER,
        nodes TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY(app, env));
     CREATE TABLE deploys(
        id INTEGER PRIMARY KEY,
        app TEXT NOT NULL,
        env TEXT NOT NULL,
        version INTEGER NOT NULL,
        key_name TEXT NOT NULL,
        status TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '',
        started_at INTEGER NOT NULL,
        finished_at INTEGER);",
    // 4: config vars (encrypted), and the config each release went live with
    "CREATE TABLE config(
        app TEXT NOT NULL,
        env TEXT NOT NULL,
        name TEXT NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY(app, env, name));
     CREATE TABLE release_config(
        app TEXT NOT NULL,
        version INTEGER NOT NULL,
        env TEXT NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY(app, version, env));",
    // 5: process counts set by `scale`, and environments stopped by `stop`
    "CREATE TABLE formation(
        app TEXT NOT NULL,
        env TEXT NOT NULL,
        ptype TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY(app, env, ptype));
     CREATE TABLE app_state(
        app TEXT NOT NULL,
        env TEXT NOT NULL,
        stopped INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY(app, env));",
    // 6: a uid per app (see isolation.rs), never handed out twice: app_uids keeps every uid
    // ever given (AUTOINCREMENT never reuses a number, even after deletes). 1900000000 is
    // isolation::UID_BASE.
    "CREATE TABLE app_uids(
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        app TEXT NOT NULL,
        allocated_at INTEGER NOT NULL);
     ALTER TABLE apps ADD COLUMN uid INTEGER;
     INSERT INTO app_uids(app, allocated_at) SELECT name, created_at FROM apps ORDER BY id;
     UPDATE apps SET uid = 1900000000 + (SELECT max(seq) FROM app_uids u WHERE u.app = apps.name);
     CREATE UNIQUE INDEX apps_uid ON apps(uid);",
    // 7: a tag-limited key may move or delete its tags only when its grant says so
    "ALTER TABLE access ADD COLUMN allow_retag INTEGER NOT NULL DEFAULT 0;",
    // 8: the push journal: ref updates of a push about to go live, settled at the verdict or,
    // after a crash, at the next start (controller/journal.rs)
    "CREATE TABLE push_intents(
        id INTEGER PRIMARY KEY,
        push_id TEXT NOT NULL,
        app TEXT NOT NULL,
        refs TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending','done','dropped')),
        created_at INTEGER NOT NULL,
        settled_at INTEGER);
     CREATE INDEX push_intents_pending ON push_intents(state) WHERE state = 'pending';",
    // 9: the catalog of service backups (store/backups.rs): sealed files under
    // <data>/backups/<service>/, each with its sha256, why it was taken and, for one taken
    // before a release command, that release (app, environment, version)
    "CREATE TABLE service_backups(
        id INTEGER PRIMARY KEY,
        service TEXT NOT NULL,
        kind TEXT NOT NULL,
        reason TEXT NOT NULL CHECK (reason IN ('manual','scheduled','release','safety')),
        app TEXT,
        env TEXT,
        version INTEGER,
        file TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        verified INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL);
     CREATE INDEX service_backups_service ON service_backups(service, id);
     CREATE INDEX service_backups_release ON service_backups(app, version);",
    // 10: services (Postgres, Redis, MariaDB) and their links into apps' environments. A
    // service's `key` names its container and data dir on its node (random: a later service
    // of the same name never sees old data); its uid comes from app_uids, never reused. A
    // link's password is sealed, like config values.
    "CREATE TABLE services(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL CHECK (kind IN ('postgres','redis','mariadb')),
        env TEXT NOT NULL,
        app TEXT,
        node TEXT NOT NULL,
        key TEXT NOT NULL UNIQUE,
        uid INTEGER NOT NULL UNIQUE,
        image TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        created_by TEXT NOT NULL);
     CREATE TABLE service_links(
        service_id INTEGER NOT NULL REFERENCES services(id) ON DELETE CASCADE,
        app TEXT NOT NULL,
        env TEXT NOT NULL,
        var TEXT NOT NULL,
        user TEXT NOT NULL,
        secret BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY(service_id, app, env),
        UNIQUE(app, env, var));",
    // 11: traffic per app environment in buckets of `span` seconds from `start` (minutes,
    // rolled up into hours and days; store/usage.rs), and each app's router policy and
    // limits as one JSON document (maintenance, access lists, rate limits, disk quota)
    "CREATE TABLE traffic(
        app TEXT NOT NULL,
        env TEXT NOT NULL,
        span INTEGER NOT NULL,
        start INTEGER NOT NULL,
        requests INTEGER NOT NULL,
        s1 INTEGER NOT NULL, s2 INTEGER NOT NULL, s3 INTEGER NOT NULL,
        s4 INTEGER NOT NULL, s5 INTEGER NOT NULL,
        bytes_in INTEGER NOT NULL,
        bytes_out INTEGER NOT NULL,
        latency TEXT NOT NULL,
        latency_us INTEGER NOT NULL,
        PRIMARY KEY(app, env, span, start));
     CREATE TABLE app_settings(
        app TEXT PRIMARY KEY,
        doc TEXT NOT NULL);",
    // 12: the router: custom domains (a host belongs to one app at a time), certificates
    // (the private key sealed), and per-environment routing settings
    "CREATE TABLE domains(
        host TEXT PRIMARY KEY,
        app TEXT NOT NULL,
        env TEXT NOT NULL,
        added_at INTEGER NOT NULL);
     CREATE INDEX domains_app ON domains(app, env);
     CREATE TABLE certs(
        id INTEGER PRIMARY KEY,
        app TEXT NOT NULL,
        source TEXT NOT NULL CHECK (source IN ('given','acme')),
        names TEXT NOT NULL,
        not_before INTEGER NOT NULL,
        not_after INTEGER NOT NULL,
        chain TEXT NOT NULL,
        key BLOB NOT NULL,
        fingerprint TEXT NOT NULL,
        added_at INTEGER NOT NULL);
     CREATE INDEX certs_app ON certs(app);
     CREATE TABLE route_settings(
        app TEXT NOT NULL,
        env TEXT NOT NULL,
        force_https INTEGER NOT NULL DEFAULT 0,
        hsts INTEGER NOT NULL DEFAULT 0,
        max_body INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY(app, env));",
    // 13: automatic certificates (ACME): our account per directory (credentials sealed) and
    // the renewal state of each environment that has them (store/acme.rs)
    "CREATE TABLE acme_accounts(
        directory TEXT PRIMARY KEY,
        credentials BLOB NOT NULL,
        created_at INTEGER NOT NULL);
     CREATE TABLE acme_certs(
        app TEXT NOT NULL,
        env TEXT NOT NULL,
        domains TEXT NOT NULL DEFAULT '',
        issued_at INTEGER,
        not_after INTEGER,
        failures INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        last_error_at INTEGER,
        next_attempt INTEGER NOT NULL,
        enabled_at INTEGER NOT NULL,
        PRIMARY KEY(app, env));",
    // 14: the router's policy per environment (maintenance, access lists, request limits):
    // app_settings keyed by (app, env); what an app had applies to its production (which
    // also keeps the app's disk quota)
    "CREATE TABLE app_settings_env(
        app TEXT NOT NULL,
        env TEXT NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY(app, env));
     INSERT INTO app_settings_env(app, env, doc) SELECT app, 'production', doc FROM app_settings;
     DROP TABLE app_settings;
     ALTER TABLE app_settings_env RENAME TO app_settings;",
    // 15: scheduled service backups (magrathea.yml `backup: { every, keep }`): the schedule
    // on the service (seconds; scheduled backups kept) and the last failure, which
    // services:info shows; the next one is due from the newest scheduled backup in the
    // catalog (controller/schedule.rs)
    "ALTER TABLE services ADD COLUMN backup_every INTEGER;
     ALTER TABLE services ADD COLUMN backup_keep INTEGER;
     ALTER TABLE services ADD COLUMN backup_failures INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE services ADD COLUMN backup_error TEXT;
     ALTER TABLE services ADD COLUMN backup_error_at INTEGER;",
    // 16: clusters (a Docker Swarm through its swarm agent) in a table of their own; before,
    // a node row whose labels held the reserved `@cluster` key (user labels are checked
    // names, so only `clusters:add` wrote it)
    "CREATE TABLE clusters(
        name TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('swarm')),
        addr TEXT NOT NULL,
        host_fp TEXT NOT NULL,
        added_at INTEGER NOT NULL);
     INSERT INTO clusters(name, kind, addr, host_fp, added_at)
        SELECT name, 'swarm', addr, host_fp, added_at FROM nodes
        WHERE instr(labels, '\"@cluster\":') > 0;
     DELETE FROM nodes WHERE instr(labels, '\"@cluster\":') > 0;",
    // 17: a service's memory limit (NULL: the default, `SERVICE_MEMORY`)
    "ALTER TABLE services ADD COLUMN memory INTEGER;",
    // 18: the subdirectory of the pushed tree an app builds from (`builds:set APP build-dir
    // PATH`; NULL: the repository's root, or the `APP_BASE` config var)
    "ALTER TABLE apps ADD COLUMN build_dir TEXT;",
    // 19: backups may be imports (`services:import`: a dump made elsewhere); SQLite cannot
    // change a CHECK in place, so the catalog is copied into a table that allows them
    "CREATE TABLE service_backups_new(
        id INTEGER PRIMARY KEY,
        service TEXT NOT NULL,
        kind TEXT NOT NULL,
        reason TEXT NOT NULL CHECK (reason IN ('manual','scheduled','release','safety','import')),
        app TEXT,
        env TEXT,
        version INTEGER,
        file TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        verified INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL);
     INSERT INTO service_backups_new SELECT id, service, kind, reason, app, env, version, file,
        size, sha256, verified, created_at FROM service_backups;
     DROP TABLE service_backups;
     ALTER TABLE service_backups_new RENAME TO service_backups;
     CREATE INDEX service_backups_service ON service_backups(service, id);
     CREATE INDEX service_backups_release ON service_backups(app, version);",
];

pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let have: usize = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(have) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
