//! Service backups on the node (protocol in `node::backupproto`, `DumpTarget`):
//! `service-dump` streams a consistent dump of a running service to the controller,
//! `service-load` puts one back into it (a Postgres one possibly staged beside it, then
//! `service-swap`ped in), `service-settle` ends a load that kept what it replaced;
//! `service-verify` (`svcverify`) loads one into a throwaway instance of the service's
//! image. Dumps are never written to the node's disk, but into a throwaway instance's temp
//! data dir (which holds the restored data too, and goes with it): a Redis RDB, which the
//! server only reads from its data dir, and a Postgres archive being verified (`svcverify`).
//!
//! Every command runs in the service container as the service's uid, through the admin's
//! unix socket in `/run/svc` (see the services' entry script).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use futures_util::StreamExt;
use russh::server::Msg;
use russh::{ChannelReadHalf, ChannelWriteHalf};
use tokio::io::AsyncWriteExt;

use super::error::AgentError;
use super::AgentCtx;
use crate::docker::Docker;
use crate::node::proto::{
    DumpTarget, LoadReply, ServiceDumpReq, ServiceLoadReq, ServiceSettleReq, ServiceSwapReq,
};

/// Where the services' entry script is mounted (`scripts/service-images.sh`).
pub(super) const ENTRY_PATH: &str = "/usr/local/bin/magrathea-svc";
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The Redis admin's client, as the entry script sets it up.
const REDIS_CLI: &str = r#"export REDISCLI_AUTH="$(cat /data/.admin-pass)"
r() { redis-cli -s /run/svc/redis.sock --user admin --no-auth-warning "$@"; }
"#;

/// A consistent dump on stdout.
fn dump_script(kind: &str) -> Option<String> {
    Some(match kind {
        // zlib's fastest level: on table data it compresses about as well as the default
        // and costs a third of the time, which is most of a dump's.
        "postgres" => r#"exec pg_dump -Fc -Z1 -h /run/svc -U postgres -d "$MAGRATHEA_DB""#.into(),
        "mariadb" => concat!(
            "exec mariadb-dump --no-defaults -S /run/svc/mysqld.sock -u root ",
            r#"--single-transaction --quick --routines --triggers --events "$MAGRATHEA_DB""#
        )
        .into(),
        // BGSAVE (retried while another save runs), then wait for it to be counted.
        "redis" => format!(
            r#"{REDIS_CLI}
saves() {{ r INFO persistence | sed -n 's/^rdb_saves:\([0-9]*\).*/\1/p'; }}
before=$(saves)
# A server still starting (or gone) answers nothing: say so rather than wait forever.
[ -n "$before" ] || {{ echo "redis is not answering" >&2; exit 1; }}
n=0
until r BGSAVE | grep -q started; do
    n=$((n + 1)); [ $n -lt 600 ] || {{ echo "BGSAVE was not accepted" >&2; exit 1; }}
    sleep 0.2
done
until now=$(saves); [ -n "$now" ] || {{ echo "redis stopped answering" >&2; exit 1; }}
    [ "$now" -gt "$before" ] && r INFO persistence | grep -q '^rdb_bgsave_in_progress:0'; do
    sleep 0.1
done
r INFO persistence | grep -q '^rdb_last_bgsave_status:ok' || {{ echo "BGSAVE failed" >&2; exit 1; }}
exec cat /data/dump.rdb"#
        ),
        _ => return None,
    })
}

/// The dump on stdin loaded into a MariaDB service, live or throwaway (Postgres restores
/// go through [`pg_script`], Redis through [`load_rdb`]).
pub(super) fn load_script(kind: &str) -> Option<&'static str> {
    match kind {
        "mariadb" => {
            Some(r#"exec mariadb --no-defaults -S /run/svc/mysqld.sock -u root "$MAGRATHEA_DB""#)
        }
        _ => None,
    }
}

/// A Postgres restore script: [`PG_HEAD`] then `steps`. A restore into the running service is
/// [`PG_STAGE`] then [`PG_SWAP`]: the dump goes into a new database, in one transaction,
/// which then takes the live one's name in one step (connections to the old one ended), the
/// old one dropped after the answer: all or nothing, and what the backup does not hold
/// (tables created since) is gone. A failed load or swap leaves the live database as it was.
/// `services:restore` runs the two steps as two calls (`service-load ... staged`, then
/// `service-swap`), so its safety backup is taken while the load runs and the swap waits
/// for both.
fn pg_script(steps: &[&str]) -> String {
    let mut s = PG_HEAD.to_string();
    for step in steps {
        s.push_str(step);
    }
    s
}

/// The names every Postgres restore script uses. They are fixed, so what a crash left of an
/// earlier restore is found (and dropped) by the next; names are `[a-z0-9_]` (the entry
/// script checks `MAGRATHEA_DB`).
const PG_HEAD: &str = r#"set -eu
db=$MAGRATHEA_DB
new=${db}__mg_restoring
old=${db}__mg_before
q() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 -h /run/svc -U postgres -d postgres "$@" </dev/null; }
foreign=
sql=
"#;

/// Before [`PG_STAGE`]: the dump was made elsewhere (`services:import`, a dump from Heroku,
/// Dokku or any `pg_dump -Fc`). It names owners and grantees this server does not have, so
/// it loads without them, and everything it made is then handed to `svc_owner`, whom every
/// link acts as (what an extension made stays the extension's).
const PG_FOREIGN: &str = "foreign=1\n";

/// Before [`PG_STAGE`]: the dump is plain SQL (`pg_dump > FILE`, imported), replayed by
/// psql in one transaction, stopping at the first error.
const PG_SQL: &str = "sql=1\n";

/// The dump on stdin into a new database `$new`, in one transaction; dropped if that fails.
const PG_STAGE: &str = r#"q -c "DROP DATABASE IF EXISTS $new WITH (FORCE)" -c "DROP DATABASE IF EXISTS $old WITH (FORCE)"
q -c "CREATE DATABASE $new OWNER svc_owner TEMPLATE template0"
ok=1
# Index builds sort in memory where they can (the service has 512 MiB).
if [ -n "$sql" ]; then
    PGOPTIONS="-c maintenance_work_mem=128MB -c client_min_messages=warning" psql -X -q \
        -v ON_ERROR_STOP=1 --single-transaction -h /run/svc -U postgres -d "$new" -o /dev/null || ok=
else
    PGOPTIONS="-c maintenance_work_mem=128MB" pg_restore -h /run/svc -U postgres -d "$new" \
        --single-transaction --exit-on-error ${foreign:+--no-owner --no-privileges} || ok=
fi
if [ -n "$ok" ] && [ -n "$foreign" ]; then
    PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 -h /run/svc \
        -U postgres -d "$new" <<'SQL' || ok=
DO $own$
DECLARE q text;
BEGIN
  FOR q IN
    SELECT format('ALTER SCHEMA %I OWNER TO svc_owner', n.nspname)
      FROM pg_namespace n
     WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
       AND n.nspowner NOT IN ('svc_owner'::regrole, 'pg_database_owner'::regrole)
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass
                         AND d.objid = n.oid AND d.deptype = 'e')
    UNION ALL
    SELECT format('ALTER %s %s OWNER TO svc_owner',
                  CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                 WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE'
                                 WHEN 'c' THEN 'TYPE' ELSE 'TABLE' END, c.oid::regclass)
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
       AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
       AND c.relowner <> 'svc_owner'::regrole
       -- a serial's or identity's sequence goes with its table
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                         AND d.objid = c.oid AND d.deptype IN ('e', 'a', 'i'))
    UNION ALL
    SELECT format('ALTER ROUTINE %s OWNER TO svc_owner', p.oid::regprocedure)
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
       AND p.proowner <> 'svc_owner'::regrole
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                         AND d.objid = p.oid AND d.deptype = 'e')
    UNION ALL
    SELECT format('ALTER %s %s OWNER TO svc_owner',
                  CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, t.oid::regtype)
      FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
     WHERE t.typtype IN ('e', 'r', 'd') AND t.typowner <> 'svc_owner'::regrole
       AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
                         AND d.objid = t.oid AND d.deptype = 'e')
    UNION ALL
    SELECT format('ALTER LARGE OBJECT %s OWNER TO svc_owner', l.oid)
      FROM pg_largeobject_metadata l WHERE l.lomowner <> 'svc_owner'::regrole
  LOOP
    EXECUTE q;
  END LOOP;
END
$own$;
SQL
fi
if [ -z "$ok" ]; then
    q -c "DROP DATABASE IF EXISTS $new WITH (FORCE)" || true
    exit 1
fi
"#;

/// `$new` takes the live database's name: no new connections to the live one, the open ones
/// ended, then both renamed at once. The replaced database stays as `$old` until the agent
/// drops it, after its answer (see `load` and `swap`), or, kept, until a `service-settle`
/// drops it or puts it back.
const PG_SWAP: &str = r#"[ "$(q -At -c "SELECT count(*) FROM pg_database WHERE datname = '$new'")" = 1 ] ||
    { echo "there is no restored database to swap in; nothing changed" >&2; exit 1; }
if ! q -c "ALTER DATABASE $db ALLOW_CONNECTIONS false" \
    -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '$db' AND pid <> pg_backend_pid()" \
    -c "BEGIN" -c "ALTER DATABASE $db RENAME TO $old" -c "ALTER DATABASE $new RENAME TO $db" -c "COMMIT" >/dev/null
then
    q -c "ALTER DATABASE $db ALLOW_CONNECTIONS true" || true
    q -c "DROP DATABASE IF EXISTS $new WITH (FORCE)" || true
    echo "the restored database could not replace the live one; nothing changed" >&2
    exit 1
fi
"#;

/// A staged database dropped: the restore called off, nothing changed.
const PG_DISCARD: &str = r#"q -c "DROP DATABASE IF EXISTS $new WITH (FORCE)"
"#;

/// The database a load replaced, dropped (after a plain load, or by `service-settle`).
const PG_DROP_KEPT: &str = r#"q -c "DROP DATABASE IF EXISTS $old WITH (FORCE)"
"#;

/// `service-settle` with `undo`: the database a kept load replaced takes its name back in one
/// step (connections to the loaded one ended), the loaded one dropped.
const PG_UNDO_SWAP: &str = r#"gone=${db}__mg_undone
[ "$(q -At -c "SELECT count(*) FROM pg_database WHERE datname = '$old'")" = 1 ] ||
    { echo "it is not there any more" >&2; exit 1; }
q -c "DROP DATABASE IF EXISTS $gone WITH (FORCE)"
if ! q -c "ALTER DATABASE $db ALLOW_CONNECTIONS false" \
    -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '$db' AND pid <> pg_backend_pid()" \
    -c "BEGIN" -c "ALTER DATABASE $db RENAME TO $gone" -c "ALTER DATABASE $old RENAME TO $db" \
    -c "ALTER DATABASE $db ALLOW_CONNECTIONS true" -c "COMMIT" >/dev/null
then
    q -c "ALTER DATABASE $db ALLOW_CONNECTIONS true" || true
    echo "it could not take its name back" >&2
    exit 1
fi
q -c "DROP DATABASE $gone WITH (FORCE)" || echo "the undone database $gone is left behind" >&2
"#;

/// What a loaded instance holds, one line.
fn holds_script(kind: &str) -> &'static str {
    match kind {
        "postgres" => concat!(
            r#"n=$(psql -X -At -h /run/svc -U postgres -d "$MAGRATHEA_DB" -c "#,
            r#""SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog','information_schema')")"#,
            "\necho \"$n tables\""
        ),
        "mariadb" => concat!(
            r#"n=$(mariadb --no-defaults -S /run/svc/mysqld.sock -u root -N -e "#,
            r#""SELECT count(*) FROM information_schema.tables WHERE table_schema = '$MAGRATHEA_DB'")"#,
            "\necho \"$n tables\""
        ),
        _ => concat!(
            "export REDISCLI_AUTH=\"$(cat /data/.admin-pass)\"\n",
            "echo \"$(redis-cli -s /run/svc/redis.sock --user admin --no-auth-warning DBSIZE) keys\""
        ),
    }
}

pub(super) fn check(t: &DumpTarget) -> Result<(), AgentError> {
    let key_ok = (8..=32).contains(&t.key.len())
        && t.key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !key_ok {
        return Err(AgentError::Invalid("bad service key".into()));
    }
    crate::names::check("service", &t.name)?;
    match t.kind.as_str() {
        "postgres" | "redis" | "mariadb" => Ok(()),
        _ => Err(AgentError::Invalid("unknown service type".into())),
    }
}

pub(super) fn container(ctx: &AgentCtx, key: &str) -> String {
    format!("mg-{}-svc-{key}", ctx.instance)
}

pub(super) fn service_dir(ctx: &AgentCtx, key: &str) -> PathBuf {
    ctx.root.root().join("services").join(key)
}

pub(super) fn docker_err(what: &str) -> impl FnOnce(bollard::errors::Error) -> AgentError + '_ {
    move |e| AgentError::Docker(format!("{what}: {e}"))
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AgentError + '_ {
    move |source| AgentError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where an exec's stdin comes from and its stdout goes.
pub(super) enum Io<'a> {
    /// Nothing in; stdout collected (capped).
    Collect,
    /// The channel's data in (until its EOF); stdout collected.
    From(&'a mut ChannelReadHalf),
    /// Nothing in; stdout to the channel as it comes.
    To(&'a ChannelWriteHalf<Msg>),
}

/// `sh -c SCRIPT` in `container` as its user. Exit code, bytes moved (of stdin, or of
/// stdout to the channel), what was collected of stdout, stderr's last lines.
pub(super) async fn run(
    docker: &Docker,
    container: &str,
    script: &str,
    io: Io<'_>,
) -> Result<(i64, u64, String, String), AgentError> {
    let config = ExecConfig {
        attach_stdin: Some(matches!(io, Io::From(_))),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        cmd: Some(vec!["sh".into(), "-c".into(), script.into()]),
        ..Default::default()
    };
    let what = "exec in the service";
    let id = docker
        .raw()
        .create_exec(container, config)
        .await
        .map_err(docker_err(what))?
        .id;
    let started = docker
        .raw()
        .start_exec(&id, None::<StartExecOptions>)
        .await
        .map_err(docker_err(what))?;
    let StartExecResults::Attached { mut output, input } = started else {
        return Err(AgentError::Docker(
            "exec in the service did not attach".into(),
        ));
    };
    let (mut collected, mut err, mut moved) = (Vec::new(), Vec::new(), 0u64);
    let mut to = match &io {
        Io::To(tx) => Some(tx.make_writer()),
        _ => None,
    };
    let feed = async {
        let mut n = 0u64;
        // SSH packets are 32 KiB: written to the exec's stdin 1 MiB at a time.
        let mut input = tokio::io::BufWriter::with_capacity(1 << 20, input);
        if let Io::From(rx) = io {
            while let Some(msg) = rx.wait().await {
                match msg {
                    russh::ChannelMsg::Data { data } => {
                        n += data.len() as u64;
                        if input.write_all(&data).await.is_err() {
                            break;
                        }
                    }
                    russh::ChannelMsg::Eof | russh::ChannelMsg::Close => break,
                    _ => {}
                }
            }
        }
        // Flushes what is buffered, then closes the exec's stdin.
        let _ = input.shutdown().await;
        drop(input);
        n
    };
    let drain = async {
        while let Some(frame) = output.next().await {
            let Ok(frame) = frame else { break };
            match frame {
                bollard::container::LogOutput::StdErr { message } => {
                    err.extend_from_slice(&message);
                    if err.len() > 64 * 1024 {
                        err.drain(..err.len() - 16 * 1024);
                    }
                }
                other => {
                    let bytes = other.into_bytes();
                    match to.as_mut() {
                        Some(w) => {
                            moved += bytes.len() as u64;
                            if w.write_all(&bytes).await.is_err() {
                                return;
                            }
                        }
                        None if collected.len() < 1 << 20 => collected.extend_from_slice(&bytes),
                        None => {}
                    }
                }
            }
        }
        if let Some(w) = to.as_mut() {
            let _ = w.flush().await;
        }
    };
    let (fed, ()) = tokio::join!(feed, drain);
    moved += fed;
    let code = exit_code(docker, &id).await?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok((code, moved, text(&collected), text(&err)))
}

/// The exec's exit code, once Docker has seen it end (its output closing comes first, by a
/// few milliseconds: asked again soon, then less often, for 10 s at most).
async fn exit_code(docker: &Docker, id: &str) -> Result<i64, AgentError> {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        let i = docker
            .raw()
            .inspect_exec(id)
            .await
            .map_err(docker_err("exec in the service"))?;
        if i.running != Some(true) {
            return Ok(i.exit_code.unwrap_or(255));
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err(AgentError::Docker("exec in the service did not end".into()));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

pub(super) fn last_line(err: &str) -> String {
    err.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("failed")
        .trim()
        .chars()
        .take(300)
        .collect()
}

/// `service-dump`: the dump on the channel's stdout; the exit status says whether it is
/// whole (on failure the reason is the last stderr line, and the controller drops what it
/// got).
pub(super) async fn dump(
    ctx: &AgentCtx,
    req: ServiceDumpReq,
    tx: &ChannelWriteHalf<Msg>,
) -> Result<(), AgentError> {
    check(&req.target)?;
    let t = &req.target;
    let script =
        dump_script(&t.kind).ok_or_else(|| AgentError::Invalid("unknown service type".into()))?;
    let docker = ctx.docker().await?;
    let (code, _, _, err) = run(docker, &container(ctx, &t.key), &script, Io::To(tx)).await?;
    match code {
        0 => Ok(()),
        _ => Err(AgentError::Invalid(format!(
            "the dump failed: {}",
            last_line(&err)
        ))),
    }
}

/// `service-load`: the dump on stdin replaces the running service's data (or, `staged`,
/// waits beside it for a `service-swap`).
pub(super) async fn load(
    ctx: &AgentCtx,
    req: ServiceLoadReq,
    rx: &mut ChannelReadHalf,
) -> Result<LoadReply, AgentError> {
    check(&req.target)?;
    let t = &req.target;
    let pg = t.kind == "postgres";
    if req.staged && !pg {
        return Err(AgentError::Invalid(
            "only a Postgres service loads a backup staged".into(),
        ));
    }
    let docker = ctx.docker().await?;
    let name = container(ctx, &t.key);
    let began = std::time::Instant::now();
    let keep = req.keep && pg;
    let foreign = if req.foreign { PG_FOREIGN } else { "" };
    let sql = if req.sql { PG_SQL } else { "" };
    let script = match (pg, req.staged) {
        (true, true) => Some(pg_script(&[foreign, sql, PG_STAGE])),
        (true, false) => Some(pg_script(&[foreign, sql, PG_STAGE, PG_SWAP])),
        (false, _) => load_script(&t.kind).map(str::to_string),
    };
    let bytes = match script {
        Some(script) => {
            let (code, n, _, err) = run(docker, &name, &script, Io::From(rx)).await?;
            if code != 0 {
                return Err(AgentError::Invalid(format!(
                    "the restore failed: {}",
                    last_line(&err)
                )));
            }
            n
        }
        None => load_rdb(ctx, docker, t, rx).await?,
    };
    tracing::info!(
        service = %t.name,
        loaded_s = began.elapsed().as_secs_f64(),
        bytes,
        staged = req.staged,
        "backup restored into the service"
    );
    if req.staged {
        return Ok(LoadReply {
            bytes,
            holds: String::new(),
            kept: false,
        });
    }
    let holds = holds(docker, &name, &t.kind).await;
    if pg && !keep {
        drop_replaced(docker, &name);
    }
    Ok(LoadReply {
        bytes,
        holds,
        kept: keep,
    })
}

/// The restore is complete (committed, swapped in): the database it replaced goes after the
/// answer, its checkpoint on no one's clock. Should that fail, the next restore drops it
/// first.
fn drop_replaced(docker: &Docker, name: &str) {
    let (docker, name) = (docker.clone(), name.to_string());
    tokio::spawn(async move {
        match run(&docker, &name, &pg_script(&[PG_DROP_KEPT]), Io::Collect).await {
            Ok((0, ..)) => {}
            Ok((_, _, _, err)) => {
                tracing::warn!(container = %name, "dropping the replaced database: {}", last_line(&err))
            }
            Err(e) => tracing::warn!(container = %name, "dropping the replaced database: {e}"),
        }
    });
}

/// `service-swap`: the database a staged `service-load` made replaces the live one (which is
/// dropped after the answer), or, `discard`, is dropped.
pub(super) async fn swap(ctx: &AgentCtx, req: ServiceSwapReq) -> Result<LoadReply, AgentError> {
    check(&req.target)?;
    let t = &req.target;
    if t.kind != "postgres" {
        return Err(AgentError::Invalid(
            "only a Postgres service loads a backup staged".into(),
        ));
    }
    let docker = ctx.docker().await?;
    let name = container(ctx, &t.key);
    let began = std::time::Instant::now();
    let script = pg_script(&[if req.discard { PG_DISCARD } else { PG_SWAP }]);
    let (code, _, _, err) = run(docker, &name, &script, Io::Collect).await?;
    if code != 0 {
        return Err(AgentError::Invalid(format!(
            "the restore failed: {}",
            last_line(&err)
        )));
    }
    if req.discard {
        return Ok(LoadReply {
            bytes: 0,
            holds: String::new(),
            kept: false,
        });
    }
    tracing::info!(service = %t.name, swap_s = began.elapsed().as_secs_f64(), "restored database swapped in");
    let holds = holds(docker, &name, &t.kind).await;
    drop_replaced(docker, &name);
    Ok(LoadReply {
        bytes: 0,
        holds,
        kept: false,
    })
}

/// `service-settle`: what a `service-load` with `keep` replaced, dropped or put back.
/// Only Postgres keeps anything.
pub(super) async fn settle(ctx: &AgentCtx, req: ServiceSettleReq) -> Result<LoadReply, AgentError> {
    check(&req.target)?;
    let t = &req.target;
    let docker = ctx.docker().await?;
    let name = container(ctx, &t.key);
    if t.kind == "postgres" {
        let script = pg_script(&[match req.undo {
            true => PG_UNDO_SWAP,
            false => PG_DROP_KEPT,
        }]);
        let (code, _, _, err) = run(docker, &name, &script, Io::Collect).await?;
        if code != 0 {
            return Err(AgentError::Invalid(format!(
                "the replaced database: {}",
                last_line(&err)
            )));
        }
    }
    let holds = holds(docker, &name, &t.kind).await;
    Ok(LoadReply {
        bytes: 0,
        holds,
        kept: false,
    })
}

pub(super) async fn holds(docker: &Docker, container: &str, kind: &str) -> String {
    match run(docker, container, holds_script(kind), Io::Collect).await {
        Ok((0, _, out, _)) => out.trim().to_string(),
        _ => String::new(),
    }
}

/// Redis reads its data only at start, and with append-only files on (as services run) only
/// from them: the RDB becomes the base of a fresh append-only set (its manifest naming it),
/// swapped in while the server is stopped, and the service starts again.
async fn load_rdb(
    ctx: &AgentCtx,
    docker: &Docker,
    t: &DumpTarget,
    rx: &mut ChannelReadHalf,
) -> Result<u64, AgentError> {
    let data = service_dir(ctx, &t.key).join("data");
    let meta = std::fs::metadata(&data).map_err(io_err(&data))?;
    let uid = std::os::unix::fs::MetadataExt::uid(&meta);
    let staged = stage_rdb(&data, uid, rx).await?;
    let name = container(ctx, &t.key);
    let stop = bollard::query_parameters::StopContainerOptionsBuilder::default()
        .t(30)
        .build();
    docker
        .raw()
        .stop_container(&name, Some(stop))
        .await
        .map_err(docker_err("stopping the service"))?;
    let swapped = swap_in(&data, &staged);
    // Started again whatever happened: a failed swap leaves the old data in place.
    docker
        .raw()
        .start_container(
            &name,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .map_err(docker_err("starting the service"))?;
    let n = swapped?;
    wait_ready(docker, &name).await?;
    Ok(n)
}

/// The RDB from the channel as the base of a new append-only set in `data`, ready to be
/// swapped in: the staged dir and the RDB's size.
pub(super) async fn stage_rdb(
    data: &Path,
    uid: u32,
    rx: &mut ChannelReadHalf,
) -> Result<(PathBuf, u64), AgentError> {
    let staged = data.join(".appendonlydir.restore");
    let _ = std::fs::remove_dir_all(&staged);
    std::fs::create_dir(&staged).map_err(io_err(&staged))?;
    std::os::unix::fs::chown(&staged, Some(uid), Some(uid)).map_err(io_err(&staged))?;
    let n = receive_file(rx, &staged.join("appendonly.aof.1.base.rdb"), uid).await?;
    let manifest = staged.join("appendonly.aof.manifest");
    crate::fsutil::write_atomic(
        &manifest,
        b"file appendonly.aof.1.base.rdb seq 1 type b\n",
        0o600,
    )
    .map_err(io_err(&manifest))?;
    std::os::unix::fs::chown(&manifest, Some(uid), Some(uid)).map_err(io_err(&manifest))?;
    Ok((staged, n))
}

pub(super) fn swap_in(data: &Path, (staged, n): &(PathBuf, u64)) -> Result<u64, AgentError> {
    let aof = data.join("appendonlydir");
    match std::fs::remove_dir_all(&aof) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(&aof)(e)),
        _ => {}
    }
    std::fs::rename(staged, &aof).map_err(io_err(&aof))?;
    Ok(*n)
}

/// The channel's data into a new file owned by `uid` (0600), fsynced.
async fn receive_file(rx: &mut ChannelReadHalf, path: &Path, uid: u32) -> Result<u64, AgentError> {
    let mut f = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .await
        .map_err(io_err(path))?;
    let mut n = 0u64;
    while let Some(msg) = rx.wait().await {
        match msg {
            russh::ChannelMsg::Data { data } => {
                n += data.len() as u64;
                f.write_all(&data).await.map_err(io_err(path))?;
            }
            russh::ChannelMsg::Eof | russh::ChannelMsg::Close => break,
            _ => {}
        }
    }
    f.sync_all().await.map_err(io_err(path))?;
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).map_err(io_err(path))?;
    Ok(n)
}

pub(super) async fn wait_ready(docker: &Docker, container: &str) -> Result<(), AgentError> {
    let start = std::time::Instant::now();
    let ready = format!("{ENTRY_PATH} ready");
    loop {
        if let Ok((0, ..)) = run(docker, container, &ready, Io::Collect).await {
            return Ok(());
        }
        if start.elapsed() > READY_TIMEOUT {
            return Err(AgentError::Timeout {
                what: "the service's start".into(),
                after: format!("{}s", READY_TIMEOUT.as_secs()),
            });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
