//! Deterministic release tarballs.
//!
//! A release is a gzip-compressed tar holding `manifest.json` at the root and the built slug
//! under `app/`. The same slug content and the same commit time always give byte-identical
//! output, whatever the filesystem's readdir order, the files' mtimes, owners or the umask:
//!
//! - entries are written in byte-wise order of their full path (`manifest.json` first, then
//!   `app/`, then the tree), so parents precede children;
//! - every header carries the commit time, uid/gid 0, empty user/group names and a normalised
//!   mode (directories 0755, files 0755 or 0644 by their exec bits, symlinks 0777);
//! - symlinks are stored as links with their target bytes unchanged and are never followed;
//!   hard-linked files become independent regular files; sockets, fifos and devices are an
//!   error ([`ReleaseError::Special`]);
//! - the gzip header has mtime 0, no file name and OS byte 255;
//! - the tar stream is compressed in parallel ([`pgzip`]: fixed-size chunks deflated
//!   independently on a few threads, written in order as one gzip member), so the bytes do
//!   not depend on the number of threads or on timing.
//!
//! Two digests come out: `sha256` of the `.tar.gz` bytes (what nodes verify before unpacking)
//! and `tar_sha256` of the uncompressed tar stream, which stays stable if the gzip backend or
//! its version changes the compressed bytes.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::error::{io_at, ReleaseError};
use super::pgzip::{self, ParGzEncoder};
use super::temp::{create_temp_file, parent_dir, RemoveOnDrop};
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

/// What [`pack`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    /// Hex sha256 of the `.tar.gz` file bytes.
    pub sha256: String,
    /// Hex sha256 of the uncompressed tar stream.
    pub tar_sha256: String,
    /// Size of the `.tar.gz` file in bytes.
    pub size: u64,
}

/// A [`Write`] adapter that hashes (sha256) every byte written through it.
pub struct Sha256Writer<W> {
    inner: W,
    hasher: Sha256,
}

impl<W> Sha256Writer<W> {
    pub fn new(inner: W) -> Self {
        Sha256Writer {
            inner,
            hasher: Sha256::new(),
        }
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Returns the inner writer and the digest of everything written so far.
    pub fn finish(self) -> (W, [u8; 32]) {
        (self.inner, self.hasher.finalize().into())
    }
}

impl<W: Write> Write for Sha256Writer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hex sha256 of everything `r` yields.
pub(crate) fn sha256_reader(mut r: impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Hex sha256 of the file at `path`.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    sha256_reader(File::open(path)?)
}

const IO_BUF: usize = 256 * 1024;
const MODE_DIR: u32 = 0o755;
const MODE_EXEC: u32 = 0o755;
const MODE_FILE: u32 = 0o644;
const MODE_LINK: u32 = 0o777;

/// Packs `slug_dir` under `app/` plus `manifest` as `manifest.json` at the root into `out`
/// (final path), every header carrying `mtime` (the commit time).
///
/// Writes `out` via a temp file in the same directory + fsync + rename + fsync(dir), so a crash
/// or an error never leaves a partial `out`.
pub fn pack(
    slug_dir: &Path,
    manifest: &[u8],
    mtime: u64,
    out: &Path,
) -> Result<Packed, ReleaseError> {
    pack_with(slug_dir, manifest, mtime, out, pgzip::Options::default())
}

/// [`pack`] with explicit compression options. The thread count never changes the bytes;
/// the level and chunk size do, so releases use [`pgzip::Options::default`].
pub fn pack_with(
    slug_dir: &Path,
    manifest: &[u8],
    mtime: u64,
    out: &Path,
    gz: pgzip::Options,
) -> Result<Packed, ReleaseError> {
    let meta = fs::metadata(slug_dir).map_err(io_at(slug_dir))?;
    if !meta.is_dir() {
        return Err(ReleaseError::Io {
            path: slug_dir.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "the slug is not a directory"),
        });
    }
    // Walk before creating anything, so a bad slug leaves no trace.
    let mut items = Vec::new();
    walk(slug_dir, Path::new(""), &mut items)?;
    items.sort_by(|a, b| {
        a.rel
            .as_os_str()
            .as_bytes()
            .cmp(b.rel.as_os_str().as_bytes())
    });

    let dir = parent_dir(out);
    let (tmp, file) = create_temp_file(dir, out)?;
    let guard = RemoveOnDrop(Some(tmp.clone()));
    let (packed, file) = write_archive(slug_dir, &items, manifest, mtime, file, &tmp, gz)?;
    file.sync_all().map_err(io_at(&tmp))?;
    drop(file);
    fs::rename(&tmp, out).map_err(io_at(out))?;
    guard.disarm();
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))?;
    Ok(packed)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
}

struct Item {
    /// Path relative to the slug root.
    rel: PathBuf,
    kind: Kind,
}

/// Collects every entry under `root/rel` without following symlinks; order does not matter,
/// the caller sorts. Uses `d_type`, so it costs no `stat` per entry.
fn walk(root: &Path, rel: &Path, items: &mut Vec<Item>) -> Result<(), ReleaseError> {
    let dir = root.join(rel);
    for ent in fs::read_dir(&dir).map_err(io_at(&dir))? {
        let ent = ent.map_err(io_at(&dir))?;
        let ft = ent.file_type().map_err(io_at(&ent.path()))?;
        let rel = rel.join(ent.file_name());
        let kind = if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else {
            return Err(ReleaseError::Special(root.join(&rel)));
        };
        items.push(Item {
            rel: rel.clone(),
            kind,
        });
        if kind == Kind::Dir {
            walk(root, &rel, items)?;
        }
    }
    Ok(())
}

fn base_header(kind: EntryType, mode: u32, size: u64, mtime: u64) -> Header {
    // A GNU header from zeroes: empty user/group names, zero device numbers.
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_size(size);
    h
}

/// `app/<rel>` (with a trailing `/` for directories) as raw bytes.
fn archive_name(rel: &Path, dir: bool) -> PathBuf {
    let mut name = b"app/".to_vec();
    name.extend_from_slice(rel.as_os_str().as_bytes());
    if dir && !rel.as_os_str().is_empty() {
        name.push(b'/');
    }
    PathBuf::from(OsString::from_vec(name))
}

type TarSink = BufWriter<Sha256Writer<ParGzEncoder<Sha256Writer<BufWriter<File>>>>>;

fn write_archive(
    root: &Path,
    items: &[Item],
    manifest: &[u8],
    mtime: u64,
    file: File,
    tmp: &Path,
    opts: pgzip::Options,
) -> Result<(Packed, File), ReleaseError> {
    let werr = |e: io::Error| io_at(tmp)(e);
    let gz = ParGzEncoder::new(
        Sha256Writer::new(BufWriter::with_capacity(IO_BUF, file)),
        opts,
    );
    let sink: TarSink = BufWriter::with_capacity(IO_BUF, Sha256Writer::new(gz));
    let mut ar = tar::Builder::new(sink);

    let mut h = base_header(EntryType::Regular, MODE_FILE, manifest.len() as u64, mtime);
    ar.append_data(&mut h, "manifest.json", manifest)
        .map_err(werr)?;
    let mut h = base_header(EntryType::Directory, MODE_DIR, 0, mtime);
    ar.append_data(&mut h, "app/", io::empty()).map_err(werr)?;

    // The node refuses a release whose relative links leave it (see `extract`); judging the
    // links here, in archive order with the node's own rules, fails the build instead of
    // storing a release that no node will take.
    let mut links = crate::release::extract::Tracker::default();
    for item in items {
        let src = root.join(&item.rel);
        let name = archive_name(&item.rel, item.kind == Kind::Dir);
        match item.kind {
            Kind::Dir => {
                let mut h = base_header(EntryType::Directory, MODE_DIR, 0, mtime);
                ar.append_data(&mut h, &name, io::empty()).map_err(werr)?;
            }
            Kind::Symlink => {
                let target = fs::read_link(&src).map_err(io_at(&src))?;
                let bytes = target.as_os_str().as_bytes();
                links
                    .check_symlink(&archive_name(&item.rel, false), bytes)
                    .map_err(|reason| ReleaseError::BadEntry {
                        path: crate::safefs::shown(&item.rel),
                        reason,
                    })?;
                append_symlink(&mut ar, &name, target.as_os_str().as_bytes(), mtime)
                    .map_err(werr)?;
            }
            Kind::File => append_file(&mut ar, &src, &name, mtime, tmp)?,
        }
    }

    ar.finish().map_err(werr)?;
    let sink = ar.into_inner().map_err(werr)?;
    let (gz, tar_digest) = sink
        .into_inner()
        .map_err(|e| werr(e.into_error()))?
        .finish();
    let (bufw, digest) = gz.finish().map_err(werr)?.finish();
    let file = bufw.into_inner().map_err(|e| werr(e.into_error()))?;
    let size = file.metadata().map_err(werr)?.len();
    Ok((
        Packed {
            sha256: hex::encode(digest),
            tar_sha256: hex::encode(tar_digest),
            size,
        },
        file,
    ))
}

/// Stores a symlink with its target bytes exactly as read (`Builder::append_link` would
/// normalise `a//b` or `a/./b`); long targets get a GNU `K` extension entry.
fn append_symlink<W: Write>(
    ar: &mut tar::Builder<W>,
    name: &Path,
    target: &[u8],
    mtime: u64,
) -> io::Result<()> {
    let mut h = base_header(EntryType::Symlink, MODE_LINK, 0, mtime);
    let slot = &mut h.as_gnu_mut().expect("GNU header").linkname;
    if target.len() > slot.len() {
        let mut ext = Header::new_gnu();
        let tag = b"././@LongLink";
        ext.as_gnu_mut().expect("GNU header").name[..tag.len()].copy_from_slice(tag);
        ext.set_mode(0o644);
        ext.set_uid(0);
        ext.set_gid(0);
        ext.set_mtime(0);
        ext.set_size(target.len() as u64 + 1);
        ext.set_entry_type(EntryType::GNULongLink);
        ext.set_cksum();
        ar.append(&ext, target.chain(&[0u8][..]))?;
        let n = slot.len();
        slot.copy_from_slice(&target[..n]);
    } else {
        slot[..target.len()].copy_from_slice(target);
    }
    // `append_data` sets the path (GNU long name if needed) and the checksum.
    ar.append_data(&mut h, name, io::empty())
}

/// Reads exactly `remaining` bytes from a file, keeping its own I/O error aside so the caller
/// can tell a failing source file from a failing output.
struct ExactFile<'a> {
    file: &'a mut File,
    remaining: u64,
    err: Option<io::Error>,
}

impl Read for ExactFile<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let res = match self.file.read(&mut buf[..want]) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while it was being packed",
            )),
            other => other,
        };
        match res {
            Ok(n) => {
                self.remaining -= n as u64;
                Ok(n)
            }
            Err(e) => {
                let kind = e.kind();
                self.err = Some(e);
                Err(io::Error::new(kind, "reading the source file failed"))
            }
        }
    }
}

fn append_file<W: Write>(
    ar: &mut tar::Builder<W>,
    src: &Path,
    name: &Path,
    mtime: u64,
    tmp: &Path,
) -> Result<(), ReleaseError> {
    // O_NOFOLLOW: if the file was swapped for a symlink since the walk, fail, never follow.
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(src)
        .map_err(io_at(src))?;
    let meta = file.metadata().map_err(io_at(src))?;
    if !meta.is_file() {
        return Err(ReleaseError::Special(src.to_path_buf()));
    }
    let mode = if meta.mode() & 0o111 != 0 {
        MODE_EXEC
    } else {
        MODE_FILE
    };
    let size = meta.len();
    let mut h = base_header(EntryType::Regular, mode, size, mtime);
    let mut data = ExactFile {
        file: &mut file,
        remaining: size,
        err: None,
    };
    if let Err(e) = ar.append_data(&mut h, name, &mut data) {
        return Err(match data.err.take() {
            Some(src_err) => io_at(src)(src_err),
            None => io_at(tmp)(e),
        });
    }
    // A file that grew while we read it would be silently truncated: refuse instead.
    let mut probe = [0u8; 1];
    match file.read(&mut probe) {
        Ok(0) => Ok(()),
        Ok(_) => Err(ReleaseError::Io {
            path: src.to_path_buf(),
            source: io::Error::other("file grew while it was being packed"),
        }),
        Err(e) => Err(io_at(src)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::time::{Duration, SystemTime};

    fn write(path: &Path, data: &[u8], mode: u32) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn set_mtime(path: &Path, secs: u64) {
        let f = File::options().write(true).open(path).unwrap();
        f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
            .unwrap();
    }

    /// Decompresses a `.tar.gz` and returns the tar bytes.
    fn tar_bytes(path: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(File::open(path).unwrap())
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    struct Seen {
        path: Vec<u8>,
        kind: EntryType,
        mode: u32,
        size: u64,
        mtime: u64,
        link: Option<Vec<u8>>,
    }

    fn entries(tar: &[u8]) -> Vec<Seen> {
        let mut ar = tar::Archive::new(tar);
        ar.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                assert_eq!(h.uid().unwrap(), 0);
                assert_eq!(h.gid().unwrap(), 0);
                assert_eq!(h.username_bytes(), Some(&b""[..]));
                assert_eq!(h.groupname_bytes(), Some(&b""[..]));
                Seen {
                    path: e.path_bytes().into_owned(),
                    kind: h.entry_type(),
                    mode: h.mode().unwrap(),
                    size: h.size().unwrap(),
                    mtime: h.mtime().unwrap(),
                    link: e.link_name_bytes().map(|l| l.into_owned()),
                }
            })
            .collect()
    }

    #[test]
    fn same_content_gives_identical_bytes() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        let long = "d".repeat(60) + "/" + &"e".repeat(70);

        // Tree A: created in one order, default modes.
        write(&a.join("bin/run"), b"#!/bin/sh\necho hi\n", 0o755);
        write(&a.join("lib/x.txt"), b"x", 0o644);
        write(&a.join("lib/a-b.txt"), b"ab", 0o644);
        write(&a.join(&long).join("f"), b"long", 0o644);
        write(&a.join("z"), b"zz", 0o644);
        fs::create_dir_all(a.join("empty")).unwrap();
        symlink("lib/x.txt", a.join("link")).unwrap();
        for (p, s) in [("bin/run", 1), ("lib/x.txt", 2), ("z", 3)] {
            set_mtime(&a.join(p), s);
        }

        // Tree B: same content, reverse order, other mtimes, modes 0600/0700 and 0700 dirs.
        fs::create_dir_all(b.join("empty")).unwrap();
        symlink("lib/x.txt", b.join("link")).unwrap();
        write(&b.join("z"), b"zz", 0o600);
        write(&b.join(&long).join("f"), b"long", 0o600);
        write(&b.join("lib/a-b.txt"), b"ab", 0o600);
        write(&b.join("lib/x.txt"), b"x", 0o600);
        write(&b.join("bin/run"), b"#!/bin/sh\necho hi\n", 0o700);
        for (p, s) in [("bin/run", 999), ("lib/x.txt", 12345), ("z", 1 << 30)] {
            set_mtime(&b.join(p), s);
        }
        for d in ["bin", "lib", "empty"] {
            fs::set_permissions(b.join(d), fs::Permissions::from_mode(0o700)).unwrap();
        }

        let pa = pack(&a, b"{\"v\":1}", 1_700_000_000, &t.path().join("a.tar.gz")).unwrap();
        let pb = pack(&b, b"{\"v\":1}", 1_700_000_000, &t.path().join("b.tar.gz")).unwrap();
        assert_eq!(pa, pb);
        assert_eq!(
            fs::read(t.path().join("a.tar.gz")).unwrap(),
            fs::read(t.path().join("b.tar.gz")).unwrap()
        );
        assert_eq!(pa.sha256, sha256_file(&t.path().join("a.tar.gz")).unwrap());
        assert_eq!(
            pa.size,
            fs::metadata(t.path().join("a.tar.gz")).unwrap().len()
        );
        let tar = tar_bytes(&t.path().join("a.tar.gz"));
        assert_eq!(pa.tar_sha256, sha256_reader(&tar[..]).unwrap());

        // A different commit time changes the digests.
        let pc = pack(&a, b"{\"v\":1}", 1_700_000_001, &t.path().join("c.tar.gz")).unwrap();
        assert_ne!(pa.tar_sha256, pc.tar_sha256);
    }

    #[test]
    fn entries_sorted_and_headers_normalised() {
        let t = tempfile::tempdir().unwrap();
        let s = t.path().join("slug");
        write(&s.join("lib/x.txt"), b"x", 0o600);
        write(&s.join("lib-a"), b"y", 0o640);
        write(&s.join("run"), b"r", 0o4750);
        symlink("run", s.join("a-link")).unwrap();
        let out = t.path().join("o.tar.gz");
        pack(&s, b"{}", 42, &out).unwrap();

        let raw = fs::read(&out).unwrap();
        assert_eq!(&raw[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);

        let seen = entries(&tar_bytes(&out));
        let names: Vec<_> = seen
            .iter()
            .map(|e| String::from_utf8(e.path.clone()).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "manifest.json",
                "app/",
                "app/a-link",
                "app/lib/",
                "app/lib-a",
                "app/lib/x.txt",
                "app/run"
            ]
        );
        let modes: Vec<_> = seen.iter().map(|e| e.mode).collect();
        assert_eq!(modes, [0o644, 0o755, 0o777, 0o755, 0o644, 0o644, 0o755]);
        assert!(seen.iter().all(|e| e.mtime == 42));
    }

    #[test]
    fn symlinks_are_stored_as_links_never_followed() {
        let t = tempfile::tempdir().unwrap();
        let s = t.path().join("slug");
        fs::create_dir_all(&s).unwrap();
        symlink("/etc/passwd", s.join("passwd")).unwrap();
        symlink("../x", s.join("up")).unwrap();
        symlink("a//b/./c", s.join("odd")).unwrap();
        let long_target = "t/".repeat(80) + "end";
        symlink(&long_target, s.join("long")).unwrap();
        let out = t.path().join("o.tar.gz");
        pack(&s, b"{}", 1, &out).unwrap();

        let tar = tar_bytes(&out);
        let seen = entries(&tar);
        let link = |name: &str| {
            let e = seen.iter().find(|e| e.path == name.as_bytes()).unwrap();
            assert_eq!(e.kind, EntryType::Symlink);
            assert_eq!(e.size, 0);
            String::from_utf8(e.link.clone().unwrap()).unwrap()
        };
        assert_eq!(link("app/passwd"), "/etc/passwd");
        assert_eq!(link("app/up"), "../x");
        assert_eq!(link("app/odd"), "a//b/./c");
        assert_eq!(link("app/long"), long_target);
        let host = fs::read(Path::new("/etc/passwd")).unwrap();
        let first_line = host.split(|&b| b == b'\n').next().unwrap();
        assert!(!first_line.is_empty());
        assert!(!tar.windows(first_line.len()).any(|w| w == first_line));
    }

    #[test]
    fn a_relative_link_out_of_the_release_is_refused_and_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        let s = t.path().join("slug");
        fs::create_dir_all(s.join("lib")).unwrap();
        symlink("../../../etc/passwd", s.join("lib/escape")).unwrap();
        let out = t.path().join("o.tar.gz");
        match pack(&s, b"{}", 1, &out) {
            Err(ReleaseError::BadEntry { path, reason }) => {
                assert_eq!(path, "lib/escape");
                assert!(reason.contains("points outside the release"), "{reason}");
            }
            other => panic!("expected a refused link, got {other:?}"),
        }
        assert_eq!(
            fs::read_dir(t.path()).unwrap().count(),
            1,
            "a temp file was left"
        );
    }

    #[test]
    fn hardlinks_become_regular_files() {
        let t = tempfile::tempdir().unwrap();
        let s = t.path().join("slug");
        write(&s.join("a"), b"shared", 0o644);
        fs::hard_link(s.join("a"), s.join("b")).unwrap();
        let out = t.path().join("o.tar.gz");
        pack(&s, b"{}", 1, &out).unwrap();
        let seen = entries(&tar_bytes(&out));
        for name in ["app/a", "app/b"] {
            let e = seen.iter().find(|e| e.path == name.as_bytes()).unwrap();
            assert_eq!((e.kind, e.size), (EntryType::Regular, 6));
        }
    }

    #[test]
    fn special_file_is_an_error_and_leaves_nothing() {
        let t = tempfile::tempdir().unwrap();
        let s = t.path().join("slug");
        write(&s.join("ok"), b"ok", 0o644);
        let fifo = s.join("sub/pipe");
        fs::create_dir_all(fifo.parent().unwrap()).unwrap();
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let outdir = t.path().join("out");
        fs::create_dir(&outdir).unwrap();
        let err = pack(&s, b"{}", 1, &outdir.join("o.tar.gz")).unwrap_err();
        match &err {
            ReleaseError::Special(p) => assert_eq!(p, &fifo),
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("sub/pipe"));
        assert_eq!(fs::read_dir(&outdir).unwrap().count(), 0);
    }

    /// A slug spanning many compression chunks: text files, incompressible files, one file
    /// bigger than a chunk, a symlink and an empty directory.
    fn big_slug(s: &Path) {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut rand = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        };
        for i in 0..40 {
            let text = format!("fn f{i}() -> u32 {{ {i} }}\n").repeat(200 + i * 37);
            write(&s.join(format!("src/m{i}.rs")), text.as_bytes(), 0o644);
        }
        for i in 0..6 {
            write(&s.join(format!("bin/b{i}")), &rand(150_000 + i), 0o755);
        }
        write(&s.join("big.bin"), &rand(1_300_000), 0o644);
        symlink("bin/b0", s.join("link")).unwrap();
        fs::create_dir_all(s.join("empty")).unwrap();
    }

    #[test]
    fn bytes_do_not_depend_on_thread_count() {
        let t = tempfile::tempdir().unwrap();
        let s = t.path().join("slug");
        big_slug(&s);
        for chunk_size in [64 << 10, pgzip::DEFAULT_CHUNK] {
            let opts = |threads| pgzip::Options {
                threads,
                chunk_size,
                ..pgzip::Options::default()
            };
            let one = t.path().join("one.tar.gz");
            let four = t.path().join("four.tar.gz");
            let p1 = pack_with(&s, b"{}", 7, &one, opts(1)).unwrap();
            let p4 = pack_with(&s, b"{}", 7, &four, opts(4)).unwrap();
            assert_eq!(p1, p4, "chunk {chunk_size}");
            assert_eq!(fs::read(&one).unwrap(), fs::read(&four).unwrap());
            assert_eq!(p1.sha256, sha256_file(&one).unwrap());
            assert_eq!(p1.tar_sha256, sha256_reader(&tar_bytes(&one)[..]).unwrap());
            assert_eq!(p1.size, fs::metadata(&one).unwrap().len());
        }
        // The default (machine-dependent thread count) gives the same bytes too.
        let one = t.path().join("one.tar.gz");
        let dflt = t.path().join("default.tar.gz");
        let p = pack(&s, b"{}", 7, &dflt).unwrap();
        assert_eq!(p.sha256, sha256_file(&one).unwrap());
    }

    #[test]
    fn gnu_tar_reads_a_packed_release() {
        let t = tempfile::tempdir().unwrap();
        let s = t.path().join("slug");
        big_slug(&s);
        let out = t.path().join("o.tar.gz");
        let opts = pgzip::Options {
            chunk_size: 64 << 10,
            ..pgzip::Options::default()
        };
        pack_with(&s, b"{\"v\":1}", 7, &out, opts).unwrap();

        let run = |args: &[&std::ffi::OsStr]| {
            let o = std::process::Command::new("tar")
                .args(args)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "tar {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            o.stdout
        };
        let list = run(&["tzf".as_ref(), out.as_os_str()]);
        let list = String::from_utf8(list).unwrap();
        assert!(list.starts_with("manifest.json\napp/\n"), "{list}");
        assert!(list.contains("app/big.bin\n") && list.contains("app/src/m39.rs\n"));
        let dst = t.path().join("x");
        fs::create_dir(&dst).unwrap();
        run(&[
            "xzf".as_ref(),
            out.as_os_str(),
            "-C".as_ref(),
            dst.as_os_str(),
        ]);
        assert_eq!(fs::read(dst.join("manifest.json")).unwrap(), b"{\"v\":1}");
        for f in ["big.bin", "bin/b5", "src/m0.rs", "src/m39.rs"] {
            assert_eq!(
                fs::read(dst.join("app").join(f)).unwrap(),
                fs::read(s.join(f)).unwrap()
            );
        }
        assert_eq!(
            fs::read_link(dst.join("app/link")).unwrap(),
            Path::new("bin/b0")
        );
        assert!(dst.join("app/empty").is_dir());
        // gzip's own integrity check (crc32 and length of the single member).
        let o = std::process::Command::new("gzip")
            .arg("-t")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    #[test]
    fn sha256_writer_matches_sha256_of_bytes() {
        let mut w = Sha256Writer::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let (inner, digest) = w.finish();
        assert_eq!(inner, b"hello world");
        assert_eq!(
            hex::encode(digest),
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
    }
}
