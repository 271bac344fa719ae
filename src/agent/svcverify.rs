//! A backup's verification on the node (`service-verify`, see `svcbackup` for the other
//! backup verbs): the dump restored into a throwaway instance of the service's image (no
//! network, its own temp data dir in the service's dir, tuned for loading, removed after).
//!
//! What a verification proves, per type:
//! - Postgres: the archive is whole and readable by the image's own `pg_restore`, and every
//!   statement in it runs on the image's own server, from the one stream (stored in the
//!   instance's data dir as it comes, see [`PG_VERIFY`]), as two loads: its pre-data and data
//!   sections into the throwaway's
//!   database (every table, type, function and sequence created, and every row loaded
//!   through the server's COPY, so each value is checked against its column's type, length
//!   and the encoding, in one transaction), and its schema (pre-data and post-data) into a
//!   second, empty database, so every index, constraint, trigger, rule and
//!   materialized-view definition is executed too. What it does not redo is building the
//!   post-data objects over the full data: a unique or foreign-key constraint is not
//!   re-checked against the rows (they held in the consistent snapshot the dump was taken
//!   from), and an expression or a predicate evaluated per row in an index, or a
//!   materialized view's query, runs on no rows, so a per-row failure (a plpgsql function
//!   that depends on the search path, say) is not seen; one that fails as the index is
//!   defined (an SQL function inlined then, as in `tests/services_backup.rs`) is. That work
//!   is most of a restore's time beyond the load (index sorts), and it is what the restore
//!   itself still does in full before anything is replaced.
//! - MariaDB: the whole dump replayed into the throwaway's database.
//! - Redis: the RDB as the base of the throwaway's append-only set, read at its start.
//!
//! In every case the instance must answer afterwards with what it holds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::CreateContainerOptionsBuilder;
use russh::ChannelReadHalf;

use super::error::AgentError;
use super::svcbackup::{
    check, docker_err, holds, io_err, last_line, load_script, run, service_dir, stage_rdb, swap_in,
    wait_ready, Io, ENTRY_PATH,
};
use super::AgentCtx;
use crate::docker::Docker;
use crate::node::proto::{LoadReply, ServiceVerifyReq};

/// The label of a throwaway instance (its value: the service's key).
const L_VERIFY: &str = "magrathea.service-verify";
/// Labels of a throwaway instance: its data dir's name in its service's dir, and (Postgres)
/// its template cluster's.
const L_DIR: &str = "magrathea.service-verify-dir";
const L_TEMPLATE: &str = "magrathea.service-verify-template";
/// A throwaway instance's data dir in its service's dir: this, then a random suffix.
const VERIFY_DIR: &str = "verify-";
/// A throwaway Postgres instance's template cluster in its service's dir: this, then a key.
const TEMPLATE_DIR: &str = "template-";

/// A Postgres verification (see the module doc). The dump on stdin is stored in the
/// instance's data dir as it comes (`cat`, never held back by a load), and the instance
/// waited for (it starts as this runs: no polling from outside). The data load reads the
/// file as it grows (`tail --pid`: to its end once the stream is whole), from the first
/// bytes on; the schema load, and its database, start once the stream is whole, beside the
/// data load's last part, from the file (seekable: only the archive's table of contents is
/// read). Neither load waits on the other. stdout: `ready_ms=N` (how long the server took to
/// answer), then `holds=...` (what the data database holds). A failure ends with one line on
/// stderr saying which load failed and why.
const PG_VERIFY: &str = r#"set -eu
db=$MAGRATHEA_DB
schema=${db}__mg_schema
arch=/data/archive.dump
t0=$(date +%s%N)
# Background jobs get /dev/null as stdin unless given another: the dump, through fd 3.
# The file exists before the data load's tail opens it: `tail -f` gives up on a file that
# is not there yet, and the background cat may not have run by then (a warm instance
# answers at once).
: >"$arch"
exec 3<&0
cat <&3 >>"$arch" &
stored=$!
exec 3<&-
n=0
until pg_isready -q -h /run/svc -U postgres; do
    n=$((n + 1)); [ $n -lt 2400 ] || { echo "the throwaway instance did not start" >&2; exit 1; }
    sleep 0.05
done
echo "ready_ms=$((($(date +%s%N) - t0) / 1000000))"
q() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 -h /run/svc -U postgres -d postgres "$@" </dev/null; }
{ tail -s 0.02 -c +1 -f --pid=$stored "$arch" |
    pg_restore -h /run/svc -U postgres -d "$db" --section=pre-data --section=data \
        --single-transaction --exit-on-error; } 2>/data/data.err &
data_pid=$!
whole=0
wait $stored || whole=$?
[ $whole = 0 ] || { echo "the dump did not arrive whole" >&2; exit 1; }
schema_rc=0
{ q -c "CREATE DATABASE $schema OWNER svc_owner TEMPLATE template0" &&
    pg_restore -h /run/svc -U postgres -d "$schema" --schema-only --single-transaction \
        --exit-on-error "$arch"; } 2>/data/schema.err || schema_rc=$?
data=0
wait $data_pid || data=$?
if [ $data != 0 ]; then
    why=$(sed -n 's/.*ERROR: *//p' /data/data.err | head -n 1)
    echo "its tables and rows do not load: ${why:-$(grep -v '^$' /data/data.err | tail -n 1 | cut -c1-300)}" >&2
    exit 1
fi
if [ $schema_rc != 0 ]; then
    why=$(sed -n 's/.*ERROR: *//p' /data/schema.err | head -n 1)
    cmd=$(sed -n 's/^Command was: //p' /data/schema.err | head -n 1 | cut -c1-200)
    echo "its indexes and constraints do not restore: ${why:-$(tail -n 1 /data/schema.err)}${cmd:+ (in: $cmd)}" >&2
    exit 1
fi
rm -f "$arch"
# The instance answers with what it holds (nothing said if it does not).
n=$(psql -X -At -h /run/svc -U postgres -d "$db" -c "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog','information_schema')") || n=
[ -z "$n" ] || echo "holds=$n tables"
"#;

/// Settings that make a throwaway instance load faster (nothing of it must survive a crash).
/// Postgres starts with its own (`MAGRATHEA_THROWAWAY`, the entry script).
fn fast_script(kind: &str) -> Option<&'static str> {
    match kind {
        "mariadb" => Some(concat!(
            "mariadb --no-defaults -S /run/svc/mysqld.sock -u root ",
            "-e 'SET GLOBAL innodb_flush_log_at_trx_commit = 0'"
        )),
        _ => None,
    }
}

/// A throwaway instance: its container and temp data dir go when this is dropped.
struct Throwaway<'a> {
    docker: &'a Docker,
    name: String,
    dir: PathBuf,
    /// Kept running (a service's warm instance, see [`start_warm`]): not removed on drop.
    kept: bool,
}

impl Drop for Throwaway<'_> {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let (raw, name, dir) = (
            self.docker.raw().clone(),
            self.name.clone(),
            self.dir.clone(),
        );
        let opts = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        // Drop cannot wait; the removal finishes on the runtime, then the dir goes.
        tokio::spawn(async move {
            let _ = raw.remove_container(&name, Some(opts)).await;
            let _ = tokio::fs::remove_dir_all(&dir).await;
        });
    }
}

/// The throwaway instances of the service with this key (a verification or a template being
/// made), removed before its directory goes (`service-destroy`).
pub async fn remove_throwaways(ctx: &AgentCtx, docker: &Docker, key: &str) {
    let labels = vec![
        format!("magrathea.instance={}", ctx.instance),
        format!("{L_VERIFY}={key}"),
    ];
    if let Ok(list) = docker.containers("label", labels).await {
        for id in list.into_iter().filter_map(|c| c.id) {
            docker.remove(&id).await;
        }
    }
}

/// At the agent's start, before any call: the throwaway instances (containers and data dirs)
/// a crash or a kill left behind. How many containers went.
pub async fn sweep_throwaways(ctx: &AgentCtx, docker: &Docker) -> usize {
    let labels = vec![
        format!("magrathea.instance={}", ctx.instance),
        L_VERIFY.to_string(),
    ];
    let mut n = 0;
    if let Ok(list) = docker.containers("label", labels).await {
        for id in list.into_iter().filter_map(|c| c.id) {
            docker.remove(&id).await;
            n += 1;
        }
    }
    let services = ctx.root.root().join("services");
    for svc in std::fs::read_dir(&services).into_iter().flatten().flatten() {
        for e in std::fs::read_dir(svc.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name();
            let name = name.to_str().unwrap_or_default();
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            // A template stays; a copy into it a crash cut short does not.
            let left = match name.starts_with(TEMPLATE_DIR) {
                true => std::fs::read_dir(e.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter(|c| c.file_name().to_str().is_some_and(|n| n.starts_with("pg.")))
                    .map(|c| c.path())
                    .collect(),
                false if name.starts_with(VERIFY_DIR) => vec![e.path()],
                false => vec![],
            };
            for path in left {
                if let Err(err) = std::fs::remove_dir_all(&path) {
                    tracing::warn!(path = %path.display(), "a throwaway instance's data: {err}");
                }
            }
        }
    }
    n
}

/// Where a service's throwaway Postgres instances keep the cluster the first of them
/// initialised, for the next to start from a copy (`initdb` is most of a start): one per
/// image and entry script, so a new version of either starts afresh (and the old one goes).
fn template_dir(sdir: &Path, image_id: &str, script: &[u8]) -> PathBuf {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(image_id.as_bytes());
    h.update([0]);
    h.update(script);
    let key = hex::encode(h.finalize());
    sdir.join(format!("{TEMPLATE_DIR}{}", &key[..12]))
}

/// The template dir for this image and script, made (the service's uid's) if missing;
/// templates of other versions removed.
fn ensure_template(
    sdir: &Path,
    image_id: &str,
    script: &[u8],
    uid: u32,
) -> Result<PathBuf, AgentError> {
    let tpl = template_dir(sdir, image_id, script);
    if !tpl.exists() {
        for e in std::fs::read_dir(sdir).into_iter().flatten().flatten() {
            let stale = e
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(TEMPLATE_DIR));
            if stale {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        std::fs::create_dir_all(&tpl).map_err(io_err(&tpl))?;
        std::os::unix::fs::chown(&tpl, Some(uid), Some(uid)).map_err(io_err(&tpl))?;
    }
    Ok(tpl)
}

/// After `service-ensure` of a Postgres service: its warm instance started in the
/// background if it has none (the first one makes the template cluster too), so even its
/// first verification finds an instance up.
pub fn warm_instance(ctx: &AgentCtx, docker: &Docker, req: ServiceVerifyReq) {
    if req.target.kind == "postgres" {
        start_warm(
            ctx.instance.clone(),
            service_dir(ctx, &req.target.key),
            docker.clone(),
            req,
        );
    }
}

/// The name of a service's warm instance: a throwaway Postgres instance started ahead (after
/// each verification, and by `service-ensure`), which the next verification takes instead
/// of waiting for a start (a container, a copy of the template cluster, the server's
/// startup: a second or more on a loaded node, on the backup's clock). One per service at
/// most (the name), removed after [`WARM_FOR`] unused.
fn warm_name(instance: &str, key: &str) -> String {
    format!("mg-{instance}-svcverify-{key}-warm")
}

/// How long a warm instance waits to be taken before it goes.
const WARM_FOR: std::time::Duration = std::time::Duration::from_secs(15 * 60);

fn random_name(instance: &str) -> String {
    format!("mg-{instance}-svcverify-{}", crate::keys::random_hex(6))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string()
}

/// In the background: `req`'s service gets a warm instance, unless it has one; it goes
/// after [`WARM_FOR`] if no verification took it.
fn start_warm(instance: String, sdir: PathBuf, docker: Docker, req: ServiceVerifyReq) {
    tokio::spawn(async move {
        let name = warm_name(&instance, &req.target.key);
        if docker.raw().inspect_container(&name, None).await.is_ok() {
            return;
        }
        let started = async {
            let mut tw = throwaway(&instance, &sdir, &docker, &req, name.clone()).await?;
            start(&docker, &tw.name).await?;
            tw.kept = true;
            let id = docker
                .raw()
                .inspect_container(&name, None)
                .await
                .map_err(docker_err("a warm throwaway instance"))?
                .id;
            Ok::<_, AgentError>((id, tw.dir.clone()))
        };
        let (id, dir) = match started.await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(service = %req.target.name, "starting a warm throwaway instance: {e}");
                return;
            }
        };
        tokio::time::sleep(WARM_FOR).await;
        // Still this one under the warm name (no verification took it), and taken here the
        // way a verification takes it (renamed), so none can take it while it goes.
        let now = docker.raw().inspect_container(&name, None).await;
        if !now.is_ok_and(|c| c.id.is_some() && c.id == id) {
            return;
        }
        let gone = random_name(&instance);
        if rename(&docker, &name, &gone).await {
            drop(Throwaway {
                docker: &docker,
                name: gone,
                dir,
                kept: false,
            });
        }
    });
}

/// Container `from` renamed `to`; false if it was not there (or `to` is taken). Atomic in
/// dockerd: of two renames of one container, one succeeds.
async fn rename(docker: &Docker, from: &str, to: &str) -> bool {
    let opts = bollard::query_parameters::RenameContainerOptionsBuilder::default()
        .name(to)
        .build();
    docker.raw().rename_container(from, opts).await.is_ok()
}

/// Takes the service's warm instance, if it has one that is running and was made from the
/// template this image and script would use. Renaming it is the taking: of two
/// verifications at once, one gets it. One that does not fit is removed.
async fn take_warm<'a>(
    instance: &str,
    sdir: &Path,
    docker: &'a Docker,
    req: &ServiceVerifyReq,
) -> Option<Throwaway<'a>> {
    let name = random_name(instance);
    if !rename(docker, &warm_name(instance, &req.target.key), &name).await {
        return None;
    }
    let info = docker.raw().inspect_container(&name, None).await.ok();
    let labels = info
        .as_ref()
        .and_then(|c| c.config.as_ref()?.labels.clone())
        .unwrap_or_default();
    let dir = labels
        .get(L_DIR)
        .filter(|d| d.starts_with(VERIFY_DIR) && !d.contains('/'))
        .map(|d| sdir.join(d));
    let Some(dir) = dir else {
        docker.remove(&name).await;
        return None;
    };
    let tw = Throwaway {
        docker,
        name,
        dir,
        kept: false,
    };
    let running = info.and_then(|c| c.state?.running) == Some(true);
    let image_id = docker.image_id(&req.image).await.ok().flatten()?;
    let script = std::fs::read(sdir.join("magrathea-svc")).ok()?;
    let tpl = file_name(&template_dir(sdir, &image_id, &script));
    (running && labels.get(L_TEMPLATE) == Some(&tpl)).then_some(tw)
}

/// Creates (not starts) a throwaway instance of `req`'s image, its data dir `data`.
async fn throwaway<'a>(
    instance: &str,
    sdir: &Path,
    docker: &'a Docker,
    req: &ServiceVerifyReq,
    name: String,
) -> Result<Throwaway<'a>, AgentError> {
    let t = &req.target;
    crate::isolation::check_uid(req.uid)?;
    let Some(image_id) = docker.image_id(&req.image).await? else {
        return Err(AgentError::NoImage(req.image.clone()));
    };
    let entry = sdir.join("magrathea-svc");
    let Ok(script) = std::fs::read(&entry) else {
        return Err(AgentError::Invalid(
            "the service is not on this node".into(),
        ));
    };
    let dir = sdir.join(format!("{VERIFY_DIR}{}", crate::keys::random_hex(6)));
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let mut tw = Throwaway {
        docker,
        name,
        dir: dir.clone(),
        kept: false,
    };
    let mut labels = HashMap::from([
        ("magrathea.instance".to_string(), instance.to_string()),
        (L_VERIFY.to_string(), t.key.clone()),
        (L_DIR.to_string(), file_name(&dir)),
    ]);
    std::os::unix::fs::chown(&dir, Some(req.uid), Some(req.uid)).map_err(io_err(&dir))?;
    let mut mounts = vec![
        crate::docker::bind_mount(&dir, "/data", false),
        crate::docker::bind_mount(&entry, ENTRY_PATH, true),
    ];
    if t.kind == "postgres" {
        let tpl = ensure_template(sdir, &image_id, &script, req.uid)?;
        mounts.push(crate::docker::bind_mount(&tpl, "/template", false));
        labels.insert(L_TEMPLATE.to_string(), file_name(&tpl));
    }
    let mut body = ContainerCreateBody {
        image: Some(req.image.clone()),
        cmd: Some(vec![ENTRY_PATH.into(), "run".into()]),
        env: Some(vec![
            format!("MAGRATHEA_SERVICE_TYPE={}", t.kind),
            format!("MAGRATHEA_DB={}", t.name.replace('-', "_")),
            "MAGRATHEA_THROWAWAY=1".into(),
            "HOME=/data".into(),
        ]),
        labels: Some(labels),
        host_config: Some(HostConfig {
            mounts: Some(mounts),
            network_mode: Some("none".into()),
            init: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    crate::isolation::confine_body(&mut body, req.uid, crate::isolation::PROCESS_PIDS);
    let opts = CreateContainerOptionsBuilder::default()
        .name(&tw.name)
        .build();
    if let Err(e) = docker.raw().create_container(Some(opts), body).await {
        // Not ours to remove: a container of that name is another's (a warm instance).
        tw.kept = true;
        let _ = std::fs::remove_dir_all(&tw.dir);
        return Err(docker_err("creating a throwaway instance")(e));
    }
    Ok(tw)
}

/// Starts the throwaway instance `name`.
async fn start(docker: &Docker, name: &str) -> Result<(), AgentError> {
    docker
        .raw()
        .start_container(
            name,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .map_err(docker_err("starting a throwaway instance"))
}

/// `service-verify`: the dump on stdin restored into a throwaway instance (see the module
/// doc), which must then hold something. Postgres and MariaDB start first and the dump
/// streams into them; an RDB is written into the data dir before Redis starts (it reads it
/// at start).
pub(super) async fn verify(
    ctx: &AgentCtx,
    req: ServiceVerifyReq,
    rx: &mut ChannelReadHalf,
) -> Result<LoadReply, AgentError> {
    check(&req.target)?;
    let docker = ctx.docker().await?;
    let sdir = service_dir(ctx, &req.target.key);
    if req.target.kind != "postgres" {
        let tw = throwaway(
            &ctx.instance,
            &sdir,
            docker,
            &req,
            random_name(&ctx.instance),
        )
        .await?;
        return load(docker, tw, false, &req, rx).await;
    }
    let (tw, warm) = match take_warm(&ctx.instance, &sdir, docker, &req).await {
        Some(tw) => (tw, true),
        None => {
            let name = random_name(&ctx.instance);
            (
                throwaway(&ctx.instance, &sdir, docker, &req, name).await?,
                false,
            )
        }
    };
    let r = load(docker, tw, warm, &req, rx).await;
    // The next verification's instance starts once this one is done (not during it: it
    // would take CPU from the load).
    start_warm(ctx.instance.clone(), sdir, docker.clone(), req);
    r
}

/// [`verify`] in the throwaway instance `tw` (`started`: already running).
async fn load(
    docker: &Docker,
    tw: Throwaway<'_>,
    started: bool,
    req: &ServiceVerifyReq,
    rx: &mut ChannelReadHalf,
) -> Result<LoadReply, AgentError> {
    let kind = req.target.kind.clone();
    let start = || async {
        match started {
            true => Ok(()),
            false => start(docker, &tw.name).await,
        }
    };
    let began = std::time::Instant::now();
    // What the instance holds after: a Postgres verification's script says it (one exec
    // less on the backup's clock), the others are asked.
    let (bytes, ready, said) = if kind == "redis" {
        let staged = stage_rdb(&tw.dir, req.uid, rx).await?;
        let n = swap_in(&tw.dir, &staged)?;
        start().await?;
        wait_ready(docker, &tw.name).await?;
        (n, None, None)
    } else {
        start().await?;
        // Postgres waits for its server itself; MariaDB is waited for, then tuned.
        let script = match load_script(&kind) {
            Some(s) => {
                wait_ready(docker, &tw.name).await?;
                if let Some(fast) = fast_script(&kind) {
                    let _ = run(docker, &tw.name, fast, Io::Collect).await;
                }
                s
            }
            None => PG_VERIFY,
        };
        let (code, n, out, err) = run(docker, &tw.name, script, Io::From(rx)).await?;
        if code != 0 {
            return Err(AgentError::Invalid(format!(
                "the backup does not restore: {}",
                last_line(&err)
            )));
        }
        let ready = out
            .lines()
            .find_map(|l| l.strip_prefix("ready_ms="))
            .and_then(|ms| ms.trim().parse::<f64>().ok())
            .map(|ms| ms / 1000.0);
        let said = out
            .lines()
            .find_map(|l| l.strip_prefix("holds="))
            .map(|h| h.trim().to_string());
        (n, ready, said)
    };
    tracing::info!(
        service = %req.target.name,
        warm = started,
        ready_s = ?ready,
        loaded_s = began.elapsed().as_secs_f64(),
        bytes,
        "backup verification: throwaway instance ready, dump loaded"
    );
    let holds = match said {
        Some(h) => h,
        None if kind == "postgres" => String::new(),
        None => holds(docker, &tw.name, &kind).await,
    };
    if holds.is_empty() {
        return Err(AgentError::Invalid(
            "the backup restored, but the throwaway instance does not answer".into(),
        ));
    }
    drop(tw);
    Ok(LoadReply {
        bytes,
        holds,
        kept: false,
    })
}
