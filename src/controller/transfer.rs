//! Dumps in and out of a service (`services:import`, `services:export`): how a team brings
//! its data from Heroku, Dokku or any server (`heroku pg:backups:download`, `dokku
//! postgres:export`, `pg_dump -Fc`, `redis-cli --rdb`, `mariadb-dump`), and takes it away
//! again, in the formats those tools read.
//!
//! An import is first stored whole as a sealed backup (so a client that goes away mid-way,
//! or a dump in the wrong format, changes nothing), then restored the way `services:restore`
//! restores one, safety backup included; a dump that does not load is removed again. An
//! export streams a fresh dump, or one stored backup opened (sha256 checked), as plain
//! bytes.

use std::io::Read;

use tokio::sync::mpsc;

use super::backups::{compression, target};
use super::{Core, CoreError};
use crate::backup::{BackupWriter, Compression, Envelope};
use crate::chunks::{ChunkReader, ChunkWriter};
use crate::node::proto::ServiceDumpReq;
use crate::sink::Sink;
use crate::store::{BackupReason, BackupRow, NewBackup, ServiceRow};

/// The newest archive format this PostgreSQL 15's `pg_restore` reads (1.14; PostgreSQL 16's
/// `pg_dump` writes 1.15).
const PG_ARCHIVE_MAX: (u8, u8) = (1, 14);
/// The newest RDB version Redis 7.0 reads (7.2 writes 11).
const RDB_MAX: u32 = 10;

/// Up to `n` bytes from the start of `r` (fewer only at its end).
fn head(r: &mut impl Read, n: usize) -> std::io::Result<Vec<u8>> {
    let mut h = Vec::with_capacity(n);
    r.take(n as u64).read_to_end(&mut h)?;
    Ok(h)
}

/// How a dump is loaded, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpFormat {
    /// The service's own (pg_dump's custom format, an RDB file, MariaDB's SQL).
    Native,
    /// A Postgres dump in plain SQL (`pg_dump > FILE`), replayed by psql.
    PlainSql,
}

/// Whether `head` (a dump's first bytes, gzip already undone) can be loaded into a `kind`
/// service, and how: a format its restore reads, in a version this server reads. The error
/// is the user's one line.
pub fn check_dump(kind: &str, head: &[u8]) -> Result<DumpFormat, String> {
    if head.is_empty() {
        return Err(
            "nothing on stdin: pipe the dump in (ssh paas services:import NAME < latest.dump)"
                .into(),
        );
    }
    match kind {
        "postgres" => {
            if !head.starts_with(b"PGDMP") {
                // Text (a multibyte character may be cut at the end of the head).
                let text = !head.contains(&0)
                    && std::str::from_utf8(head).map_or_else(|e| e.error_len().is_none(), |_| true);
                if text {
                    return Ok(DumpFormat::PlainSql);
                }
                return Err(
                    "not a pg_dump archive or SQL dump: a Postgres import is pg_dump's custom format (pg_dump -Fc, `heroku pg:backups:download`, `dokku postgres:export`) or plain SQL (pg_dump --no-owner --no-acl)".into(),
                );
            }
            if let (Some(&maj), Some(&min)) = (head.get(5), head.get(6)) {
                if (maj, min) > PG_ARCHIVE_MAX {
                    return Err(format!(
                        "the archive is format {maj}.{min}, made by a newer pg_dump than this service's PostgreSQL 15 reads (up to {}.{}): dump it with pg_dump 15, or as plain SQL (pg_dump --no-owner --no-acl)",
                        PG_ARCHIVE_MAX.0, PG_ARCHIVE_MAX.1
                    ));
                }
            }
            Ok(DumpFormat::Native)
        }
        "redis" => {
            let version = head
                .strip_prefix(b"REDIS")
                .and_then(|v| v.get(..4))
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse::<u32>().ok());
            match version {
                None => Err("not a Redis RDB file: a Redis import is what `redis-cli --rdb FILE` or `dokku redis:export` writes".into()),
                Some(v) if v > RDB_MAX => Err(format!(
                    "the RDB file is version {v}, made by a newer Redis than this service's 7.0 reads (up to {RDB_MAX})"
                )),
                Some(_) => Ok(DumpFormat::Native),
            }
        }
        "mariadb" => match head.contains(&0) {
            true => Err("not an SQL dump (binary data): a MariaDB import is what mariadb-dump or mysqldump writes".into()),
            false => Ok(DumpFormat::Native),
        },
        other => Err(format!("a {other} service takes no imports")),
    }
}

/// Reads a client's dump (gzip undone) into a new sealed backup file of `row`'s type,
/// refused before anything is written when its first bytes are not a dump of that type.
fn seal_import(
    rx: mpsc::Receiver<Vec<u8>>,
    dir: &std::path::Path,
    key: &crate::sealstream::StreamKey,
    row: &ServiceRow,
) -> Result<crate::backup::Sealed, String> {
    let mut input: Box<dyn Read> = Box::new(ChunkReader::new(rx));
    let io = |e: std::io::Error| format!("reading the dump: {e}");
    let mut first = head(&mut input, 4096).map_err(io)?;
    // `pg_dump | gzip`, `mysqldump | gzip`: read through.
    if first.starts_with(&[0x1f, 0x8b]) {
        let whole = std::io::Cursor::new(first).chain(input);
        input = Box::new(flate2::read::MultiGzDecoder::new(whole));
        first = head(&mut input, 4096).map_err(io)?;
    }
    let sql = check_dump(&row.kind, &first)? == DumpFormat::PlainSql;
    let env = Envelope {
        kind: row.kind.clone(),
        service: row.name.clone(),
        // SQL compresses well; the native formats compress themselves.
        compression: match sql {
            true => Compression::Gzip,
            false => compression(&row.kind),
        },
        sql,
    };
    let mut w = BackupWriter::create(dir, key, &env).map_err(|e| e.to_string())?;
    w.write(&first).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        w.write(&buf[..n]).map_err(|e| e.to_string())?;
    }
    w.finish(key).map_err(|e| e.to_string())
}

impl Core {
    /// `services:import`: the client's dump stored as a backup of `name` (reason `import`),
    /// then restored into the service like `services:restore` does; removed again if it
    /// does not load. The import's row, the safety backup's, and what the service holds.
    pub async fn import_service(
        &self,
        name: &str,
        stdin: mpsc::Receiver<Vec<u8>>,
        out: &mut Sink,
    ) -> Result<(BackupRow, BackupRow, String), CoreError> {
        let (row, _) = self.service_and_node(name)?;
        out.line(format!(
            "-----> Receiving a {} dump for {} (it is stored, then restored; nothing changes until it is whole)",
            row.kind, row.name
        ))
        .await;
        let created = crate::timefmt::now();
        let dir = self.data().backups(&row.name);
        let key = self.sealer.stream_key().clone();
        let r = row.clone();
        let sealed = tokio::task::spawn_blocking(move || seal_import(stdin, &dir, &key, &r))
            .await
            .map_err(|e| CoreError::Failed(e.to_string()))?
            .map_err(|e| CoreError::Invalid(format!("import into '{name}' refused: {e}")))?;
        let file = crate::backup::file_name(created);
        let (size, sha256, dump_len) = (sealed.size, sealed.sha256.clone(), sealed.dump_len);
        sealed
            .keep(&file)
            .map_err(|e| CoreError::Failed(format!("storing the import: {e}")))?;
        let id = self.store.add_backup(
            &NewBackup {
                service: &row.name,
                kind: &row.kind,
                reason: BackupReason::Import,
                release: None,
                file: &file,
                size,
                sha256: &sha256,
                verified: false,
            },
            created,
        )?;
        out.line(format!(
            "-----> Stored as backup #{id} of {}: {} received, sha256 {}",
            row.name,
            crate::controller::view::human(dump_len),
            &sha256[..12]
        ))
        .await;
        match self.restore_service(name, id, out).await {
            Ok((safety, holds)) => {
                self.prune_backups(&row.name, super::backups::KEEP);
                let import = self
                    .store
                    .backup(&row.name, id)?
                    .ok_or_else(|| CoreError::Failed(format!("backup #{id} vanished")))?;
                Ok((import, safety, holds))
            }
            Err(e) => {
                // A dump that does not load is no backup to keep.
                self.forget_backup(&row.name, id);
                let text = e.to_string();
                if text.contains("role \"") && text.contains("does not exist") {
                    return Err(CoreError::Failed(format!(
                        "{text}; the dump names roles of the host it came from: make it with --no-owner --no-acl"
                    )));
                }
                Err(e)
            }
        }
    }

    /// `services:export`: a fresh dump of `name` (or its backup `id`, opened) written to
    /// `data` as plain bytes; how many.
    pub async fn export_service(
        &self,
        name: &str,
        id: Option<i64>,
        data: mpsc::Sender<Vec<u8>>,
        out: &mut Sink,
    ) -> Result<u64, CoreError> {
        let (row, node) = self.service_and_node(name)?;
        let Some(id) = id else {
            out.line(format!("-----> Dumping {} ({})", row.name, row.kind))
                .await;
            let req = ServiceDumpReq {
                target: target(&row),
            };
            return self
                .node_client(&node)
                .download(&req, data)
                .await
                .map_err(|e| CoreError::Failed(format!("the dump of '{name}' failed: {e}")));
        };
        let b = self
            .store
            .backup(name, id)?
            .ok_or_else(|| CoreError::NotFound(format!("service '{name}' has no backup #{id}")))?;
        self.check_backup(&row, &b).await?;
        out.line(format!("-----> Opening backup #{id} of {}", row.name))
            .await;
        let path = self.data().backups(&row.name).join(&b.file);
        let key = self.sealer.stream_key().clone();
        let what = format!("#{id} of {name}");
        tokio::task::spawn_blocking(move || -> Result<u64, CoreError> {
            let (_, mut r) = crate::backup::open(&path, &b.sha256, &key, &what)
                .map_err(|e| CoreError::Invalid(e.to_string()))?;
            let mut w = ChunkWriter::new(data);
            std::io::copy(&mut r, &mut w)
                .map_err(|e| CoreError::Failed(format!("backup {what}: {e}")))?;
            Ok(w.written)
        })
        .await
        .map_err(|e| CoreError::Failed(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::{check_dump, DumpFormat};

    #[test]
    fn imports_are_checked_by_their_first_bytes() {
        // pg_dump 15's custom format (1.14) loads; 16's (1.15) is refused before anything.
        assert!(check_dump("postgres", b"PGDMP\x01\x0e\x00\x04\x08\x01\x01").is_ok());
        let newer = check_dump("postgres", b"PGDMP\x01\x0f\x00\x04\x08").unwrap_err();
        assert!(newer.contains("format 1.15"), "{newer}");
        let sql = check_dump("postgres", b"--\n-- PostgreSQL database dump\n");
        assert_eq!(sql, Ok(DumpFormat::PlainSql));
        // A head cut inside a multibyte character is still text.
        let cut = "-- caf\u{e9}".as_bytes().split_last().unwrap().1;
        assert_eq!(check_dump("postgres", cut), Ok(DumpFormat::PlainSql));
        assert!(check_dump("postgres", b"\x00\x01\x02")
            .unwrap_err()
            .starts_with("not a"));
        assert!(check_dump("redis", b"REDIS0010\xfa\x09redis-ver").is_ok());
        let rdb = check_dump("redis", b"REDIS0011\xfa").unwrap_err();
        assert!(rdb.contains("version 11"), "{rdb}");
        assert!(check_dump("redis", b"*1\r\n$4\r\nPING").is_err());
        assert!(check_dump("mariadb", b"-- MariaDB dump 10.19\n").is_ok());
        assert!(check_dump("mariadb", b"PGDMP\x01\x0e\x00").is_err());
        let empty = check_dump("postgres", b"").unwrap_err();
        assert!(empty.starts_with("nothing on stdin"), "{empty}");
    }
}
