//! Service backups (`services:backup`, `services:backups`, `services:restore`, and the ones
//! a release takes before its release command). A backup is the service's dump streamed
//! from its node (`service-dump`), sealed into a file under the data dir (`backup/`) and,
//! at the same time, restored into a throwaway instance on the node (`service-verify`): it
//! is recorded only when the dump is whole, the file reads back to it and the throwaway
//! instance took it. A restore checks the file's sha256 before anything else, then streams
//! the dump into the service (`service-load`) and takes a safety backup: Postgres loads it
//! into a new database while the safety backup runs, swapped in (`service-swap`) once both
//! are complete; the other types take the safety backup first.

use tokio::sync::mpsc;

use super::{Core, CoreError};
use crate::backup::{BackupWriter, Compression, Envelope};
use crate::node::proto::{
    DumpTarget, LoadReply, ServiceDumpReq, ServiceLoadReq, ServiceSettleReq, ServiceSwapReq,
    ServiceVerifyReq,
};
use crate::sink::Sink;
use crate::store::{BackupReason, BackupRow, NewBackup, ReleaseTag, ServiceRow};

/// Manual backups kept per service, and scheduled ones unless magrathea.yml says `keep`.
pub const KEEP: usize = 7;
/// Safety backups (taken before a restore) kept per service.
pub const KEEP_SAFETY: usize = 3;

/// How a service restored by `rollback --with-data` is put back if the rollback fails.
#[derive(Debug, Clone)]
pub enum RestoreUndo {
    /// A safety backup taken before the restore.
    Safety(BackupRow),
    /// The service (Postgres) kept what it replaced beside it (`service-settle`).
    Kept(String),
}

impl RestoreUndo {
    fn what(&self) -> String {
        match self {
            RestoreUndo::Safety(s) => format!("from safety backup #{}", s.id),
            RestoreUndo::Kept(_) => "the database the restore replaced".into(),
        }
    }
}

/// Why a backup is taken, and for which release.
#[derive(Debug, Clone)]
pub struct BackupAsk {
    pub reason: BackupReason,
    pub release: Option<ReleaseTag>,
    /// Restore it into a throwaway instance before it counts.
    pub verify: bool,
    pub keep: usize,
}

impl BackupAsk {
    pub fn manual(verify: bool) -> BackupAsk {
        BackupAsk {
            reason: BackupReason::Manual,
            release: None,
            verify,
            keep: KEEP,
        }
    }
}

pub(super) fn compression(kind: &str) -> Compression {
    match kind {
        // pg_dump's custom format is compressed (zlib) and an RDB is (LZF): again would
        // only cost time.
        "postgres" | "redis" => Compression::None,
        _ => Compression::Gzip,
    }
}

/// A load into this type of service either completes or leaves the service as it was (see
/// `agent::svcbackup`: Postgres restores into a new database swapped in at the end).
fn loads_atomically(kind: &str) -> bool {
    kind == "postgres"
}

pub(super) fn target(row: &ServiceRow) -> DumpTarget {
    DumpTarget {
        key: row.key.clone(),
        kind: row.kind.clone(),
        name: row.name.clone(),
    }
}

fn failed(row: &ServiceRow, what: &str, e: impl std::fmt::Display) -> CoreError {
    CoreError::Failed(format!(
        "backup of service '{}' failed: {what}: {e}",
        row.name
    ))
}

/// The dump's chunks to the sealing thread and, while it takes them, to the verification.
async fn tee(
    mut dump_rx: mpsc::Receiver<Vec<u8>>,
    seal_tx: mpsc::Sender<Vec<u8>>,
    mut verify_tx: Option<mpsc::Sender<Vec<u8>>>,
) {
    while let Some(c) = dump_rx.recv().await {
        if let Some(v) = &verify_tx {
            // A verification that gave up is reported by its own answer.
            if v.send(c.clone()).await.is_err() {
                verify_tx = None;
            }
        }
        if seal_tx.send(c).await.is_err() {
            break;
        }
    }
}

impl Core {
    /// A new backup of `name` (see the module doc); its catalog row.
    pub async fn backup_service(
        &self,
        name: &str,
        ask: BackupAsk,
        out: &mut Sink,
    ) -> Result<BackupRow, CoreError> {
        let (row, node) = self.service_and_node(name)?;
        let client = self.node_client(&node);
        let started = std::time::Instant::now();
        out.line(format!(
            "-----> Backing up {} ({}) on {}{}",
            row.name,
            row.kind,
            node.name,
            if ask.verify {
                ", verifying it in a throwaway instance"
            } else {
                ""
            }
        ))
        .await;
        let created = crate::timefmt::now();
        let dir = self.data().backups(&row.name);
        let env = Envelope {
            kind: row.kind.clone(),
            service: row.name.clone(),
            compression: compression(&row.kind),
            sql: false,
        };
        let key = self.sealer.stream_key().clone();
        // The dump's chunks (about 1 MiB each): to the sealing thread and, when verifying, to
        // the node's throwaway instance, both as they come. The verification's queue is the
        // longer one: the dump goes on while the throwaway instance starts.
        let (dump_tx, dump_rx) = mpsc::channel::<Vec<u8>>(4);
        let (seal_tx, mut seal_rx) = mpsc::channel::<Vec<u8>>(8);
        let (verify_tx, verify_rx) = mpsc::channel::<Vec<u8>>(48);
        let seal = tokio::task::spawn_blocking(move || {
            let mut w = BackupWriter::create(&dir, &key, &env)?;
            while let Some(c) = seal_rx.blocking_recv() {
                w.write(&c)?;
            }
            w.finish(&key)
        });
        let tee = tee(dump_rx, seal_tx, ask.verify.then_some(verify_tx));
        let dreq = ServiceDumpReq {
            target: target(&row),
        };
        let dump = async {
            let r = client.download(&dreq, dump_tx).await;
            (r, started.elapsed())
        };
        let vreq = ServiceVerifyReq {
            target: target(&row),
            image: row.image.clone(),
            uid: row.uid,
        };
        let verify = async {
            match ask.verify {
                true => Some(client.upload_stream(&vreq, verify_rx).await),
                false => None,
            }
        };
        let ((dumped, dump_time), (), verified) = tokio::join!(dump, tee, verify);
        let verify_time = started.elapsed();
        let sealed = seal.await.map_err(|e| failed(&row, "sealing", e))?;
        // Where a backup's time goes (scripts/bench-backup.sh prints these lines).
        tracing::info!(
            service = %row.name,
            dump_s = dump_time.as_secs_f64(),
            verify_s = ?ask.verify.then_some(verify_time.as_secs_f64()),
            sealed_s = started.elapsed().as_secs_f64(),
            "backup timing"
        );
        dumped.map_err(|e| failed(&row, "the dump", e))?;
        let sealed = sealed.map_err(|e| failed(&row, "sealing", e))?;
        let holds = match verified {
            Some(Ok(r)) => Some(r.holds),
            Some(Err(e)) => return Err(failed(&row, "it does not restore", e)),
            None => None,
        };
        let file = crate::backup::file_name(created);
        let (size, sha256) = (sealed.size, sealed.sha256.clone());
        sealed.keep(&file).map_err(|e| failed(&row, "storing", e))?;
        let id = self.store.add_backup(
            &NewBackup {
                service: &row.name,
                kind: &row.kind,
                reason: ask.reason,
                release: ask.release.clone(),
                file: &file,
                size,
                sha256: &sha256,
                verified: holds.is_some(),
            },
            created,
        )?;
        let verdict = match &holds {
            Some(h) => format!("verified: a throwaway instance restored it ({h})"),
            None => "not verified".into(),
        };
        out.line(format!(
            "-----> Backup #{id} of {}: {}, sha256 {}, {verdict}, in {:.1}s",
            row.name,
            crate::controller::view::human(size),
            &sha256[..12],
            started.elapsed().as_secs_f64()
        ))
        .await;
        self.prune_backups(&row.name, ask.keep);
        self.store
            .backup(&row.name, id)?
            .ok_or_else(|| CoreError::Failed(format!("backup #{id} vanished")))
    }

    /// Retention: the catalog first, then the files it no longer names (and leftovers of a
    /// crashed backup). A failure here never fails the backup that was just taken.
    /// `keep` manual backups; scheduled ones as the service's schedule says.
    pub(super) fn prune_backups(&self, service: &str, keep: usize) {
        let scheduled = self
            .store
            .service(service)
            .ok()
            .flatten()
            .and_then(|r| r.backup_keep)
            .map_or(KEEP, |k| k.max(1) as usize);
        let keep = crate::store::Keep {
            manual: keep,
            scheduled,
            safety: KEEP_SAFETY,
        };
        match self.store.prune_backups(service, keep) {
            Ok(_) => {}
            Err(e) => tracing::warn!(service, "pruning backups: {e}"),
        }
        if let Ok(known) = self.store.backup_files(service) {
            crate::backup::sweep(&self.data().backups(service), &known);
        }
    }

    /// One backup gone from the catalog, then its file.
    pub(super) fn forget_backup(&self, service: &str, id: i64) {
        match self.store.remove_backup(service, id) {
            Ok(Some(b)) => {
                let _ = std::fs::remove_file(self.data().backups(service).join(b.file));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(service, id, "forgetting a backup: {e}"),
        }
    }

    /// Before `version`'s release command: a verified backup of every service linked to
    /// `app` in `env`, tied to that release (see `deploy::Host::backup_linked`).
    pub async fn backup_linked(
        &self,
        app: &str,
        env: &str,
        version: i64,
        out: &mut Sink,
    ) -> Result<(), CoreError> {
        let mut names: Vec<String> = self
            .store
            .links(None)?
            .into_iter()
            .filter(|l| l.app == app && l.env == env)
            .map(|l| l.service)
            .collect();
        names.sort();
        names.dedup();
        for name in names {
            let ask = BackupAsk {
                reason: BackupReason::Release,
                release: Some(ReleaseTag {
                    app: app.to_string(),
                    env: env.to_string(),
                    version,
                }),
                verify: true,
                keep: KEEP,
            };
            self.backup_service(&name, ask, out).await?;
        }
        Ok(())
    }

    /// A release's backups (`releases:info`): those taken before its release command.
    pub fn release_backups(&self, app: &str, version: i64) -> Result<Vec<BackupRow>, CoreError> {
        Ok(self.store.backups_of_release(app, version)?)
    }

    /// A service's backups, newest first.
    pub fn service_backups(&self, name: &str) -> Result<Vec<BackupRow>, CoreError> {
        Ok(self.store.backups(name)?)
    }

    /// Puts backup `id` back into the running service. A file whose sha256 is not the
    /// catalog's is refused before anything happens. A safety backup is taken too (the way
    /// back from restoring the wrong backup). Postgres loads into a new database while the
    /// safety backup of the live one is taken, and that database replaces the live one only
    /// once both are complete: a failed load or a failed safety backup changes nothing. The
    /// other types take the safety backup first, then load. The safety backup's row and
    /// what the service holds after.
    pub async fn restore_service(
        &self,
        name: &str,
        id: i64,
        out: &mut Sink,
    ) -> Result<(BackupRow, String), CoreError> {
        let (row, node) = self.service_and_node(name)?;
        let b = self
            .store
            .backup(name, id)?
            .ok_or_else(|| CoreError::NotFound(format!("service '{name}' has no backup #{id}")))?;
        let what = format!("#{id} of {name}");
        // Checked (whole-file sha256, envelope) before the safety backup: a bad file
        // changes nothing at all.
        self.check_backup(&row, &b).await?;
        let ask = BackupAsk {
            reason: BackupReason::Safety,
            release: None,
            verify: false,
            keep: KEEP,
        };
        if loads_atomically(&row.kind) {
            return self.restore_staged(&row, &node, &b, ask, out).await;
        }
        let safety = self.backup_service(name, ask, out).await?;
        out.line(format!(
            "-----> Restoring backup {what} (safety backup #{} taken first)",
            safety.id
        ))
        .await;
        let holds = self.load_backup(&row, &node, &b, false, out).await.map_err(|e| {
            CoreError::Failed(format!(
                "{e}; the service may be partly restored: `services:restore {name} {}` puts back what it held",
                safety.id
            ))
        })?;
        Ok((safety, holds))
    }

    /// [`Core::restore_service`] of a Postgres service: the backup loaded into a new
    /// database beside the live one while the safety backup is taken, then swapped in once
    /// both are complete; if either fails, the new database is dropped and nothing changed.
    async fn restore_staged(
        &self,
        row: &ServiceRow,
        node: &crate::store::NodeRow,
        b: &BackupRow,
        ask: BackupAsk,
        out: &mut Sink,
    ) -> Result<(BackupRow, String), CoreError> {
        out.line(format!(
            "-----> Restoring backup #{} of {} into a new database while a safety backup of the live one is taken; it replaces the live one once both are complete",
            b.id, row.name
        ))
        .await;
        let unchanged =
            |e: CoreError| CoreError::Failed(format!("{e}; the service holds what it held before"));
        let started = std::time::Instant::now();
        let stage = async {
            let r = self.stream_backup(row, node, b, true, false).await;
            (r, started.elapsed())
        };
        let ((staged, load_time), safety) =
            tokio::join!(stage, self.backup_service(&row.name, ask, out));
        let ready = started.elapsed();
        let safety = match (staged, safety) {
            (Ok(_), Ok(safety)) => safety,
            (staged, safety) => {
                // Nothing was replaced; a failed load has dropped its database already.
                if let Err(e) = self.swap(row, node, true).await {
                    tracing::warn!(service = %row.name, "dropping a staged restore: {e}");
                }
                // Nor is a safety backup of what is still there needed.
                if let Ok(s) = &safety {
                    self.forget_backup(&row.name, s.id);
                }
                return Err(unchanged(
                    staged
                        .err()
                        .or(safety.err())
                        .unwrap_or_else(|| CoreError::Failed("the restore failed".into())),
                ));
            }
        };
        let holds = self.swap(row, node, false).await.map_err(unchanged)?;
        // Where a restore's time goes (scripts/bench-backup.sh prints these lines).
        tracing::info!(
            service = %row.name,
            load_s = load_time.as_secs_f64(),
            both_s = ready.as_secs_f64(),
            swapped_s = started.elapsed().as_secs_f64(),
            "restore timing"
        );
        out.line(format!(
            "-----> {} restored from backup #{} ({holds})",
            row.name, b.id
        ))
        .await;
        Ok((safety, holds))
    }

    /// A staged restore swapped in (what it replaced dropped after), or (`discard`) dropped;
    /// what the service holds after.
    async fn swap(
        &self,
        row: &ServiceRow,
        node: &crate::store::NodeRow,
        discard: bool,
    ) -> Result<String, CoreError> {
        let req = ServiceSwapReq {
            target: target(row),
            discard,
        };
        let reply = self
            .node_client(node)
            .send(&req)
            .await
            .map_err(|e| CoreError::Failed(e.to_string()))?;
        Ok(reply.holds)
    }

    /// `rollback --with-data`: the backups tied to `version` in `env` (taken before its
    /// release command) put back into their services, all or nothing: every file is checked
    /// before any service is touched; a Postgres service keeps the database it replaced
    /// beside it, the others get a safety backup first; when one restore fails, the services
    /// already restored are put back. What undoes them, for [`Core::undo_restores`] if the
    /// rollout then fails, else [`Core::settle_restores`].
    pub async fn restore_release_backups(
        &self,
        app: &str,
        env: &str,
        version: i64,
        out: &mut Sink,
    ) -> Result<Vec<RestoreUndo>, CoreError> {
        let backups = self.store.release_backups(app, env, version)?;
        if backups.is_empty() {
            out.line(format!(
                "-----> no service backups were taken before v{version} in {env}"
            ))
            .await;
            return Ok(vec![]);
        }
        let mut todo = vec![];
        for b in backups {
            let (row, node) = self.service_and_node(&b.service)?;
            self.check_backup(&row, &b).await?;
            todo.push((row, node, b));
        }
        let mut undos: Vec<RestoreUndo> = vec![];
        for (row, node, b) in &todo {
            let step = async {
                if loads_atomically(&row.kind) {
                    // All or nothing on the node: a failed load leaves nothing to undo.
                    self.load_backup(row, node, b, true, out).await?;
                    undos.push(RestoreUndo::Kept(row.name.clone()));
                    return Ok(());
                }
                let ask = BackupAsk {
                    reason: BackupReason::Safety,
                    release: None,
                    verify: false,
                    keep: KEEP,
                };
                let safety = self.backup_service(&row.name, ask, out).await?;
                undos.push(RestoreUndo::Safety(safety));
                self.load_backup(row, node, b, false, out).await.map(|_| ())
            };
            if let Err(e) = step.await {
                out.line(format!(" !     {e}")).await;
                self.undo_restores(&undos, out).await;
                return Err(e);
            }
        }
        Ok(undos)
    }

    /// Puts each service back as it was before [`Core::restore_release_backups`] (best
    /// effort, each said): a Postgres service's kept database takes its name back, the
    /// others get their safety backup.
    pub async fn undo_restores(&self, undos: &[RestoreUndo], out: &mut Sink) {
        for u in undos.iter().rev() {
            let (service, back) = match u {
                RestoreUndo::Safety(s) => (
                    &s.service,
                    match self.service_and_node(&s.service) {
                        Ok((row, node)) => self.load_backup(&row, &node, s, false, out).await,
                        Err(e) => Err(e),
                    },
                ),
                RestoreUndo::Kept(name) => (name, self.settle(name, true).await),
            };
            if let Err(e) = back {
                out.line(format!(
                    " !     {service} could not be put back ({}): {e}",
                    u.what()
                ))
                .await;
            }
        }
    }

    /// After a rollback that went live: the databases the restores replaced dropped (a
    /// failure only warns; the next restore of that service drops it too).
    pub async fn settle_restores(&self, undos: &[RestoreUndo]) {
        for u in undos {
            if let RestoreUndo::Kept(name) = u {
                if let Err(e) = self.settle(name, false).await {
                    tracing::warn!(service = %name, "dropping the database a restore replaced: {e}");
                }
            }
        }
    }

    async fn settle(&self, name: &str, undo: bool) -> Result<String, CoreError> {
        let (row, node) = self.service_and_node(name)?;
        let req = ServiceSettleReq {
            target: target(&row),
            undo,
        };
        let reply = self
            .node_client(&node)
            .send(&req)
            .await
            .map_err(|e| CoreError::Failed(e.to_string()))?;
        Ok(reply.holds)
    }

    /// The file of `b` is whole (its sha256 the catalog's) and a dump of `row`'s type.
    pub(super) async fn check_backup(
        &self,
        row: &ServiceRow,
        b: &BackupRow,
    ) -> Result<(), CoreError> {
        let path = self.data().backups(&row.name).join(&b.file);
        let key = self.sealer.stream_key().clone();
        let what = format!("#{} of {}", b.id, row.name);
        let (p, sha, w) = (path, b.sha256.clone(), what.clone());
        let (env, _) = tokio::task::spawn_blocking(move || crate::backup::open(&p, &sha, &key, &w))
            .await
            .map_err(|e| CoreError::Failed(e.to_string()))?
            .map_err(|e| CoreError::Invalid(e.to_string()))?;
        if env.kind != row.kind {
            return Err(CoreError::Invalid(format!(
                "backup {what} is a {} dump; service '{}' is {}",
                env.kind, row.name, row.kind
            )));
        }
        Ok(())
    }

    /// Streams backup `b` into the service; what it holds after.
    async fn load_backup(
        &self,
        row: &ServiceRow,
        node: &crate::store::NodeRow,
        b: &BackupRow,
        keep: bool,
        out: &mut Sink,
    ) -> Result<String, CoreError> {
        let reply = self.stream_backup(row, node, b, false, keep).await?;
        out.line(format!(
            "-----> {} restored from backup #{} ({})",
            row.name, b.id, reply.holds
        ))
        .await;
        Ok(reply.holds)
    }

    /// Backup `b`'s file opened (sha256 checked again, every chunk authenticated) and
    /// streamed to `service-load` on the service's node.
    async fn stream_backup(
        &self,
        row: &ServiceRow,
        node: &crate::store::NodeRow,
        b: &BackupRow,
        staged: bool,
        keep: bool,
    ) -> Result<LoadReply, CoreError> {
        let path = self.data().backups(&row.name).join(&b.file);
        let key = self.sealer.stream_key().clone();
        let (tx, rx) = mpsc::channel::<Vec<u8>>(8);
        let (sha, what) = (b.sha256.clone(), format!("#{} of {}", b.id, row.name));
        // The envelope says how the node loads it (plain SQL or the dump's own format).
        let (env_tx, env_rx) = tokio::sync::oneshot::channel::<Envelope>();
        let read = tokio::task::spawn_blocking(move || -> Result<(), String> {
            use std::io::Read;
            let (env, mut r) =
                crate::backup::open(&path, &sha, &key, &what).map_err(|e| e.to_string())?;
            let _ = env_tx.send(env);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = r
                    .read(&mut buf)
                    .map_err(|e| format!("backup {what}: {e}"))?;
                if n == 0 {
                    return Ok(());
                }
                if tx.blocking_send(buf[..n].to_vec()).is_err() {
                    return Err("the node stopped reading the backup".into());
                }
            }
        });
        let Ok(env) = env_rx.await else {
            let opened = read.await.map_err(|e| CoreError::Failed(e.to_string()))?;
            return Err(CoreError::Failed(
                opened
                    .err()
                    .unwrap_or_else(|| "the backup did not open".into()),
            ));
        };
        let req = ServiceLoadReq {
            target: target(row),
            keep,
            staged,
            foreign: b.reason == BackupReason::Import,
            sql: env.sql,
        };
        let loaded = self.node_client(node).upload_stream(&req, rx).await;
        let read = read.await.map_err(|e| CoreError::Failed(e.to_string()))?;
        let reply = loaded.map_err(|e| CoreError::Failed(e.to_string()))?;
        read.map_err(CoreError::Failed)?;
        Ok(reply)
    }
}
