//! Service backup files: a dump streamed in, compressed when its format is not compressed
//! already, sealed (`sealstream`, the controller's key) into a temp file beside its final
//! place, hashed on the way, fsynced, read back and opened again to prove it gives the very
//! dump bytes back, and only then renamed into place. The catalog (`store/backups.rs`)
//! records it after that.
//!
//! The sealed plaintext starts with one JSON line, the [`Envelope`] (what the dump is and
//! how it is compressed), then the (compressed) dump.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::sealstream::{OpenReader, SealWriter, StreamKey};

#[derive(Debug, Error)]
pub enum BackupError {
    #[error("backup file {path}: {err}")]
    Io { path: String, err: io::Error },
    #[error("backup {what} is damaged or was changed: its sha256 is {actual}, it was {expected} when taken; refusing to use it")]
    Digest {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("backup {what} cannot be opened: {why}")]
    Sealed { what: String, why: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BackupError + '_ {
    move |err| BackupError::Io {
        path: path.display().to_string(),
        err,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// The dump format compresses itself (Postgres' custom format, Redis' RDB).
    None,
    Gzip,
}

/// The first line of a backup's plaintext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The service's type: what restores it (`postgres`, `redis`, `mariadb`).
    pub kind: String,
    pub service: String,
    pub compression: Compression,
    /// A Postgres dump in plain SQL (an import, `pg_dump > FILE`): replayed by psql, where
    /// the custom format is read by pg_restore.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sql: bool,
}

/// Counts and hashes what goes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(b)?;
        self.hash.update(&b[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum Body {
    Plain(Box<SealWriter<Hashing<File>>>),
    Gzip(Box<GzEncoder<SealWriter<Hashing<File>>>>),
}

/// A temp file in the backup directory, removed on drop unless kept.
pub struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Names of files in a backup directory that a crash can leave behind.
pub const TEMP_PREFIX: &str = ".partial-";

/// A backup being written: [`write`](Self::write) the dump's bytes as they come, then
/// [`finish`](Self::finish).
pub struct BackupWriter {
    body: Body,
    tmp: TempFile,
    dump_hash: Sha256,
    dump_len: u64,
}

/// A backup written, flushed and proven to open to its dump, not yet in place.
pub struct Sealed {
    tmp: TempFile,
    /// Bytes of the sealed file, and its sha256 (hex): what the catalog records.
    pub size: u64,
    pub sha256: String,
    /// Bytes of the dump as the service gave it, and their sha256.
    pub dump_len: u64,
    pub dump_sha256: String,
}

impl BackupWriter {
    /// Starts a backup in `dir` (created 0700 if missing).
    pub fn create(
        dir: &Path,
        key: &StreamKey,
        env: &Envelope,
    ) -> Result<BackupWriter, BackupError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        crate::fsutil::set_mode(dir, 0o700).map_err(io_err(dir))?;
        let path = dir.join(format!("{TEMP_PREFIX}{}", crate::keys::random_hex(8)));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        let tmp = TempFile { path, keep: false };
        let hashing = Hashing {
            inner: file,
            hash: Sha256::new(),
            len: 0,
        };
        let mut seal = SealWriter::new(key, hashing).map_err(io_err(&tmp.path))?;
        let mut line = serde_json::to_vec(env).unwrap_or_default();
        line.push(b'\n');
        seal.write_all(&line).map_err(io_err(&tmp.path))?;
        let body = match env.compression {
            Compression::None => Body::Plain(Box::new(seal)),
            // Fast: the dump is the bulk of a backup's time, not its size.
            Compression::Gzip => {
                Body::Gzip(Box::new(GzEncoder::new(seal, flate2::Compression::fast())))
            }
        };
        Ok(BackupWriter {
            body,
            tmp,
            dump_hash: Sha256::new(),
            dump_len: 0,
        })
    }

    /// More of the dump.
    pub fn write(&mut self, data: &[u8]) -> Result<(), BackupError> {
        self.dump_hash.update(data);
        self.dump_len += data.len() as u64;
        match &mut self.body {
            Body::Plain(w) => w.write_all(data),
            Body::Gzip(w) => w.write_all(data),
        }
        .map_err(io_err(&self.tmp.path))
    }

    /// Seals the last chunk, fsyncs, then reads the file back and opens it again: it must
    /// give the same dump bytes (so what is kept is what was dumped, through every layer).
    pub fn finish(self, key: &StreamKey) -> Result<Sealed, BackupError> {
        let path = self.tmp.path.clone();
        let seal = match self.body {
            Body::Plain(w) => *w,
            Body::Gzip(w) => w.finish().map_err(io_err(&path))?,
        };
        let hashing = seal.finish().map_err(io_err(&path))?;
        hashing.inner.sync_all().map_err(io_err(&path))?;
        let sealed = Sealed {
            tmp: self.tmp,
            size: hashing.len,
            sha256: hex::encode(hashing.hash.finalize()),
            dump_len: self.dump_len,
            dump_sha256: hex::encode(self.dump_hash.finalize()),
        };
        // One pass over the file: its bytes hashed as they are read, its dump opened.
        let what = "being written".to_string();
        let file = File::open(&path).map_err(io_err(&path))?;
        let seen = Arc::new(Mutex::new(Sha256::new()));
        let reader = HashRead {
            inner: file,
            hash: seen.clone(),
        };
        let (_, mut dump) = open_reader(reader, key, &what)?;
        let (len, digest) = hash_all(&mut dump).map_err(|e| BackupError::Sealed {
            what: what.clone(),
            why: e.to_string(),
        })?;
        drop(dump);
        let file_sha = hex::encode(
            seen.lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .finalize(),
        );
        if len != sealed.dump_len || digest != sealed.dump_sha256 || file_sha != sealed.sha256 {
            return Err(BackupError::Sealed {
                what,
                why: "reading it back does not give the dump that was written".into(),
            });
        }
        Ok(sealed)
    }
}

impl Sealed {
    /// Renames the file to `name` in its directory and fsyncs the directory: from here on
    /// the catalog may name it.
    pub fn keep(mut self, name: &str) -> Result<PathBuf, BackupError> {
        let dir = self
            .tmp
            .path
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let to = dir.join(name);
        crate::fsutil::rename_noreplace(&self.tmp.path, &to).map_err(io_err(&to))?;
        self.tmp.keep = true;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&dir))?;
        Ok(to)
    }

    /// Where the file is until it is kept (a verification may read it again).
    pub fn path(&self) -> &Path {
        &self.tmp.path
    }
}

/// A new backup file's name (the catalog's id comes after the file is in place).
pub fn file_name(created_at: i64) -> String {
    format!("{created_at}-{}.sealed", crate::keys::random_hex(6))
}

fn hash_all(r: &mut impl Read) -> io::Result<(u64, String)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok((total, hex::encode(h.finalize())));
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
}

/// The sha256 of a file, hex.
pub fn file_sha256(path: &Path) -> Result<String, BackupError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    Ok(hash_all(&mut f).map_err(io_err(path))?.1)
}

/// Opens a backup for reading its dump: the file's sha256 must be `sha256` (checked over
/// the whole file first, so a changed byte is refused before anything reads the dump),
/// then its plaintext is opened chunk by chunk (every chunk authenticated: a file changed
/// after the check still fails) and decompressed. `what` names it in errors (`#12`).
pub fn open(
    path: &Path,
    sha256: &str,
    key: &StreamKey,
    what: &str,
) -> Result<(Envelope, Box<dyn Read + Send>), BackupError> {
    let actual = file_sha256(path)?;
    if actual != sha256 {
        return Err(BackupError::Digest {
            what: what.to_string(),
            expected: sha256.to_string(),
            actual,
        });
    }
    let f = File::open(path).map_err(io_err(path))?;
    open_reader(f, key, what)
}

/// Hashes what is read through it, into a hash kept outside the reader chain.
struct HashRead<R> {
    inner: R,
    hash: Arc<Mutex<Sha256>>,
}

impl<R: Read> Read for HashRead<R> {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(b)?;
        self.hash
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .update(&b[..n]);
        Ok(n)
    }
}

fn open_reader(
    input: impl Read + Send + 'static,
    key: &StreamKey,
    what: &str,
) -> Result<(Envelope, Box<dyn Read + Send>), BackupError> {
    let sealed_err = |e: io::Error| BackupError::Sealed {
        what: what.to_string(),
        why: e.to_string(),
    };
    let reader =
        OpenReader::new(key, BufReader::with_capacity(1 << 20, input)).map_err(sealed_err)?;
    let mut reader = BufReader::with_capacity(256 * 1024, reader);
    let mut line = Vec::new();
    reader
        .by_ref()
        .take(4096)
        .read_until(b'\n', &mut line)
        .map_err(sealed_err)?;
    let env: Envelope = serde_json::from_slice(&line).map_err(|e| BackupError::Sealed {
        what: what.to_string(),
        why: format!("bad envelope: {e}"),
    })?;
    let body: Box<dyn Read + Send> = match env.compression {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(GzDecoder::new(reader)),
    };
    Ok((env, body))
}

/// Removes the temp files a crashed backup left in `dir`, and files no catalog row names
/// (`known`); what was removed.
pub fn sweep(dir: &Path, known: &[String]) -> Vec<String> {
    let mut gone = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return gone;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if known.contains(&name) {
            continue;
        }
        if fs::remove_file(e.path()).is_ok() {
            gone.push(name);
        }
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(c: Compression) -> Envelope {
        Envelope {
            kind: "postgres".into(),
            service: "db".into(),
            compression: c,
            sql: false,
        }
    }

    fn dump() -> Vec<u8> {
        (0..300_000u32)
            .flat_map(|i| format!("row {i};").into_bytes())
            .collect()
    }

    fn write(dir: &Path, k: &StreamKey, c: Compression, d: &[u8]) -> (PathBuf, Sealed) {
        let mut w = BackupWriter::create(dir, k, &env(c)).unwrap();
        for part in d.chunks(10_000) {
            w.write(part).unwrap();
        }
        let s = w.finish(k).unwrap();
        let p = s.path().to_path_buf();
        (p, s)
    }

    #[test]
    fn a_backup_round_trips_compressed_or_not_and_is_sealed() {
        let d = tempfile::tempdir().unwrap();
        let k = StreamKey([9; 32]);
        let data = dump();
        for c in [Compression::None, Compression::Gzip] {
            let (_, s) = write(&d.path().join("db"), &k, c, &data);
            assert_eq!(s.dump_len, data.len() as u64);
            let sha = s.sha256.clone();
            let size = s.size;
            let kept = s.keep(&file_name(1)).unwrap();
            assert_eq!(fs::metadata(&kept).unwrap().len(), size);
            let raw = fs::read(&kept).unwrap();
            assert!(!raw.windows(7).any(|w| w == b"row 12;"), "sealed");
            if c == Compression::Gzip {
                assert!(size < data.len() as u64 / 2, "compressed: {size}");
            }
            let (e, mut r) = open(&kept, &sha, &k, "#1").unwrap();
            assert_eq!(e, env(c));
            let mut back = Vec::new();
            r.read_to_end(&mut back).unwrap();
            assert_eq!(back, data);
        }
        // Only the kept files are left: no temp file.
        let names: Vec<_> = fs::read_dir(d.path().join("db")).unwrap().collect();
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn one_changed_byte_is_refused_before_anything_is_read() {
        let d = tempfile::tempdir().unwrap();
        let k = StreamKey([3; 32]);
        let (_, s) = write(d.path(), &k, Compression::Gzip, &dump());
        let sha = s.sha256.clone();
        let kept = s.keep("a.sealed").unwrap();
        let mut raw = fs::read(&kept).unwrap();
        let mid = raw.len() / 2;
        raw[mid] ^= 0x40;
        fs::write(&kept, &raw).unwrap();
        let e = open(&kept, &sha, &k, "#7").err().unwrap();
        assert!(matches!(e, BackupError::Digest { .. }), "{e}");
        assert!(e.to_string().contains("backup #7 is damaged"), "{e}");
        // With the catalog's digest changed to match, the seal still refuses it.
        let forged = file_sha256(&kept).unwrap();
        let (_, mut r) = open(&kept, &forged, &k, "#7").unwrap();
        let e = std::io::copy(&mut r, &mut std::io::sink()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }

    #[test]
    fn an_unfinished_backup_leaves_nothing_and_sweep_removes_leftovers() {
        let d = tempfile::tempdir().unwrap();
        let k = StreamKey([4; 32]);
        {
            let mut w = BackupWriter::create(d.path(), &k, &env(Compression::None)).unwrap();
            w.write(b"half a dump").unwrap();
        }
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
        fs::write(d.path().join(".partial-crashed"), b"x").unwrap();
        fs::write(d.path().join("old.sealed"), b"x").unwrap();
        fs::write(d.path().join("kept.sealed"), b"x").unwrap();
        let mut gone = sweep(d.path(), &["kept.sealed".to_string()]);
        gone.sort();
        assert_eq!(gone, vec![".partial-crashed", "old.sealed"]);
    }
}
