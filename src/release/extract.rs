//! Safe unpacking of release tarballs on nodes.
//!
//! Release contents come from user builds, so every archive is untrusted. Besides the digest
//! check, [`unpack`] refuses (naming the entry): absolute paths, `..` or other non-plain path
//! components, duplicate entries, anything but regular files, directories and symlinks (hard
//! links, devices, fifos, sparse files, PAX global headers...), `app` or `manifest.json` as
//! symlinks, relative symlinks that leave the root when resolved from the link's own directory (following the
//! archive's earlier symlinks like the kernel would), a symlink placed where an earlier
//! symlink's resolution passed, and entries whose path goes through an extracted symlink.
//! `tar`'s own `Entry::unpack_in` checks stay underneath as a second line of defence.
//!
//! Modes are kept minus suid/sgid/sticky and group/other write (mask 0o7022); directories
//! always keep owner rwx so the tree can be written into and removed. Ownership and xattrs are
//! not restored; nothing is overwritten.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::EntryType;

use super::error::{io_at, ReleaseError};
use super::temp::{parent_dir, temp_name, RemoveOnDrop};

/// Mode bits never restored: suid, sgid, sticky, group/other write.
const MASK: u32 = 0o7022;
/// The most symlinks followed while resolving one target (Linux's limit).
const MAX_HOPS: usize = 40;

/// [`unpack_stream`] of the file at `tarball`.
pub fn unpack_verified(
    tarball: &Path,
    expected_sha256: &str,
    dst: &Path,
) -> Result<(), ReleaseError> {
    let file = File::open(tarball).map_err(io_at(tarball))?;
    unpack_stream(file, tarball, expected_sha256, dst)
}

/// Extracts the release tarball read from `src` into `dst`, which must not exist, in one
/// pass, hashing the bytes as they go by; `dst` appears only if their sha256 is
/// `expected_sha256` (hex).
///
/// Extraction goes into a temp dir beside `dst`, which is flushed to disk and renamed into
/// place (without replacing anything) once the digest matches; on a mismatch or any error the
/// temp dir is removed and `dst` is never created. One pass because a node receives large
/// releases: hashing a temp copy first and extracting it after cost three reads and a write
/// more per node. The extractor is built for hostile archives anyway, so unverified bytes in
/// a temp dir are safe. `what` names the source in a mismatch error.
pub fn unpack_stream(
    src: impl Read,
    what: &Path,
    expected_sha256: &str,
    dst: &Path,
) -> Result<(), ReleaseError> {
    let expected = expected_sha256.to_ascii_lowercase();
    if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ReleaseError::BadDigest(expected_sha256.to_string()));
    }
    match fs::symlink_metadata(dst) {
        Ok(_) => return Err(ReleaseError::Exists(dst.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_at(dst)(e)),
    }
    let parent = parent_dir(dst);
    let tmp = create_temp_dir(parent, dst)?;
    let guard = RemoveOnDrop(Some(tmp.clone()));
    let mut src = HashingReader {
        inner: BufReader::with_capacity(256 * 1024, src),
        hasher: Sha256::new(),
    };
    let unpacked = unpack(&mut src, &tmp);
    // Read to the end even after a refused entry: the sender is not left blocked, and a
    // damaged tarball is reported as what it is (a digest mismatch), not as its symptom.
    io::copy(&mut src, &mut io::sink()).map_err(io_at(what))?;
    let actual = hex::encode(src.hasher.finalize());
    if actual != expected {
        return Err(ReleaseError::DigestMismatch {
            path: what.to_path_buf(),
            expected,
            actual,
        });
    }
    unpacked?;
    // The tree must be on disk before its name is: a crash must not leave a release dir of
    // empty files behind a `current` link. One syncfs is far cheaper than a fsync per file.
    let dir = File::open(&tmp).map_err(io_at(&tmp))?;
    if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) } != 0 {
        return Err(io_at(&tmp)(io::Error::last_os_error()));
    }
    crate::fsutil::rename_noreplace(&tmp, dst).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists || e.raw_os_error() == Some(libc::ENOTEMPTY) {
            ReleaseError::Exists(dst.to_path_buf())
        } else {
            io_at(dst)(e)
        }
    })?;
    guard.disarm();
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(io_at(parent))?;
    Ok(())
}

/// Extracts the gzip-compressed release tar read from `src` into `dst`, an existing empty
/// directory. On error, `dst` may hold a partial tree: the caller removes it
/// ([`unpack_verified`] does).
pub fn unpack(src: impl Read, dst: &Path) -> Result<(), ReleaseError> {
    unpack_inner(src, dst, false)
}

/// [`unpack`] for archives made elsewhere (buildpack tarballs): the same checks, but
/// entries may start with `./`, as `tar -C dir -czf x.tgz .` writes them.
pub fn unpack_foreign(src: impl Read, dst: &Path) -> Result<(), ReleaseError> {
    unpack_inner(src, dst, true)
}

fn unpack_inner(src: impl Read, dst: &Path, dot_prefix: bool) -> Result<(), ReleaseError> {
    if fs::read_dir(dst).map_err(io_at(dst))?.next().is_some() {
        return Err(ReleaseError::Exists(dst.to_path_buf()));
    }
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(src));
    ar.set_overwrite(false);
    ar.set_preserve_ownerships(false);
    ar.set_preserve_permissions(true);
    ar.set_mask(MASK);
    ar.set_unpack_xattrs(false);
    ar.set_preserve_mtime(true);

    let mut tracker = Tracker::default();
    for entry in ar.entries().map_err(ReleaseError::Archive)? {
        let mut entry = entry.map_err(ReleaseError::Archive)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let bad = |reason: String| ReleaseError::BadEntry {
            path: name.clone(),
            reason,
        };
        let kind = entry.header().entry_type();
        let raw = entry.path_bytes().into_owned();
        let raw = match raw.strip_prefix(b"./") {
            Some(rest) if dot_prefix => {
                if rest.is_empty() && kind == EntryType::Directory {
                    continue; // the archive's root itself
                }
                rest.to_vec()
            }
            _ => raw,
        };
        let path = normal_path(&raw).map_err(bad)?;
        tracker.check_path(&path).map_err(bad)?;
        match kind {
            EntryType::Regular | EntryType::Directory => {}
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                tracker.check_symlink(&path, &target).map_err(bad)?;
            }
            other => {
                return Err(bad(format!(
                    "{other:?} entries are not allowed in a release \
                     (only regular files, directories and symlinks)"
                )))
            }
        }
        let unpacked = entry
            .unpack_in(dst)
            .map_err(|source| ReleaseError::Unpack {
                path: name.clone(),
                source,
            })?;
        if !unpacked {
            return Err(bad("tar refused to place it inside the destination".into()));
        }
        if kind == EntryType::Directory {
            // Keep owner rwx so later entries fit in and the tree can be removed.
            let mode = entry.header().mode().unwrap_or(0o755) & 0o777 & !MASK;
            let full = dst.join(&path);
            fs::set_permissions(&full, fs::Permissions::from_mode(mode | 0o700))
                .map_err(io_at(&full))?;
        }
    }
    // Read the gzip stream to its end so its CRC is checked.
    io::copy(&mut ar.into_inner(), &mut io::sink()).map_err(ReleaseError::Archive)?;
    Ok(())
}

/// The entry path as plain components, or why it is refused.
fn normal_path(raw: &[u8]) -> Result<PathBuf, String> {
    let p = Path::new(OsStr::from_bytes(raw));
    if p.is_absolute() {
        return Err("absolute paths are not allowed".into());
    }
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => return Err("`..` is not allowed in paths".into()),
            _ => return Err("paths may only hold plain names (no `.`, `/` or prefixes)".into()),
        }
    }
    if out.as_os_str().is_empty() {
        return Err("empty path".into());
    }
    Ok(out)
}

/// What the archive has placed so far, to judge the next entry.
#[derive(Default)]
pub(crate) struct Tracker {
    seen: HashSet<PathBuf>,
    /// Extracted symlinks: path -> target.
    links: HashMap<PathBuf, PathBuf>,
    /// Paths that some symlink's resolution went through as a directory; a symlink placed
    /// there later would redirect that earlier link.
    traversed: HashSet<PathBuf>,
}

impl Tracker {
    fn check_path(&mut self, path: &Path) -> Result<(), String> {
        for anc in path.ancestors().skip(1) {
            if self.links.contains_key(anc) {
                return Err(format!(
                    "its path goes through the symlink {:?}",
                    anc.to_string_lossy()
                ));
            }
        }
        if !self.seen.insert(path.to_path_buf()) {
            return Err("duplicate entry".into());
        }
        Ok(())
    }

    pub(crate) fn check_symlink(&mut self, path: &Path, target: &[u8]) -> Result<(), String> {
        let target = Path::new(OsStr::from_bytes(target));
        let shown = target.to_string_lossy();
        if target.as_os_str().is_empty() {
            return Err("symlink with an empty target".into());
        }
        if path == Path::new("app") || path == Path::new("manifest.json") {
            // Both are opened or bind-mounted by the node itself, on the host.
            return Err("the release's app/ and manifest.json may not be symlinks".into());
        }
        if target.is_absolute() {
            // Allowed: release content only ever runs inside a container, where an absolute
            // link resolves against the stack image (a Python venv links /usr/bin/python3).
            // Nothing is extracted through it (check_path), and relative links may not
            // resolve through it (RootDir below).
            self.links.insert(path.to_path_buf(), target.to_path_buf());
            return Ok(());
        }
        if self.traversed.contains(path) {
            return Err("a symlink here would redirect an earlier symlink".into());
        }
        let escapes = || format!("symlink target {shown:?} points outside the release");

        // Resolve lexically from the link's directory, following earlier links the way the
        // kernel would for every component but the last.
        let mut cur: Vec<OsString> = path
            .parent()
            .map(|p| p.iter().map(OsStr::to_os_string).collect())
            .unwrap_or_default();
        let mut queue: VecDeque<Component> = target.components().collect();
        let mut hops = 0;
        let mut used = Vec::new();
        while let Some(c) = queue.pop_front() {
            match c {
                Component::CurDir => {}
                Component::ParentDir => {
                    cur.pop().ok_or_else(escapes)?;
                }
                Component::Normal(n) => {
                    cur.push(n.to_os_string());
                    if queue.is_empty() {
                        continue;
                    }
                    let here: PathBuf = cur.iter().collect();
                    if let Some(t) = self.links.get(&here) {
                        hops += 1;
                        if hops > MAX_HOPS {
                            return Err(format!("symlink target {shown:?} loops"));
                        }
                        cur.pop();
                        for c in t.components().rev() {
                            queue.push_front(c);
                        }
                    } else {
                        used.push(here);
                    }
                }
                Component::RootDir | Component::Prefix(_) => return Err(escapes()),
            }
        }
        self.traversed.extend(used);
        self.links.insert(path.to_path_buf(), target.to_path_buf());
        Ok(())
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn create_temp_dir(parent: &Path, dst: &Path) -> Result<PathBuf, ReleaseError> {
    let mut tries = 0;
    loop {
        let tmp = temp_name(parent, dst, "unpack");
        match fs::create_dir(&tmp) {
            Ok(()) => return Ok(tmp),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 100 => tries += 1,
            Err(e) => return Err(io_at(&tmp)(e)),
        }
    }
}

/// Removes a directory tree, first giving every directory owner rwx so a hostile mode does not
/// block removal. Never follows symlinks.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    fn open_up(dir: &Path) {
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        if let Ok(rd) = fs::read_dir(dir) {
            for ent in rd.flatten() {
                if ent.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    open_up(&ent.path());
                }
            }
        }
    }
    if fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    open_up(path);
    fs::remove_dir_all(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::tarball::{pack, sha256_file};
    use std::io::Write;
    use std::os::unix::fs::{symlink, MetadataExt};
    use tar::Header;

    fn write(path: &Path, data: &[u8], mode: u32) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// (relative path, kind, content or link target, exec bit) for every entry, sorted.
    fn snapshot(root: &Path) -> Vec<(String, char, Vec<u8>, bool)> {
        fn go(root: &Path, dir: &Path, out: &mut Vec<(String, char, Vec<u8>, bool)>) {
            for ent in fs::read_dir(dir).unwrap() {
                let p = ent.unwrap().path();
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                let m = fs::symlink_metadata(&p).unwrap();
                if m.file_type().is_symlink() {
                    let t = fs::read_link(&p).unwrap();
                    out.push((rel, 'l', t.as_os_str().as_bytes().to_vec(), false));
                } else if m.is_dir() {
                    out.push((rel, 'd', vec![], false));
                    go(root, &p, out);
                } else {
                    let x = m.permissions().mode() & 0o111 != 0;
                    out.push((rel, 'f', fs::read(&p).unwrap(), x));
                }
            }
        }
        let mut out = Vec::new();
        go(root, root, &mut out);
        out.sort();
        out
    }

    #[test]
    fn roundtrip_restores_the_tree() {
        let t = tempfile::tempdir().unwrap();
        let s = t.path().join("slug");
        let long = "p".repeat(90) + "/" + &"q".repeat(90) + "/file.txt";
        write(&s.join("bin/run"), b"#!/bin/sh\n", 0o700);
        write(&s.join("lib/data.txt"), &vec![b'z'; 100_000], 0o600);
        write(&s.join(&long), b"long path", 0o644);
        write(&s.join("lib/mode"), b"m", 0o6777);
        fs::create_dir_all(s.join("empty")).unwrap();
        symlink("../bin/run", s.join("lib/run-link")).unwrap();
        symlink("lib/data.txt", s.join("data")).unwrap();
        symlink("lib", s.join("libdir")).unwrap();
        let long_target = "./".repeat(60) + "lib/data.txt";
        symlink(&long_target, s.join("long-link")).unwrap();
        fs::hard_link(s.join("bin/run"), s.join("bin/run2")).unwrap();

        let out = t.path().join("r.tar.gz");
        let packed = pack(&s, b"{\"app\":\"demo\"}", 1_700_000_000, &out).unwrap();
        let dst = t.path().join("nodes/r1");
        fs::create_dir(t.path().join("nodes")).unwrap();
        unpack_verified(&out, &packed.sha256.to_uppercase(), &dst).unwrap();

        assert_eq!(snapshot(&dst.join("app")), snapshot(&s));
        assert_eq!(
            fs::read(dst.join("manifest.json")).unwrap(),
            b"{\"app\":\"demo\"}"
        );
        let mode = |p: &str| fs::metadata(dst.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("app/bin/run"), 0o755);
        assert_eq!(mode("app/lib/data.txt"), 0o644);
        assert_eq!(mode("app/lib/mode"), 0o755);
        assert_eq!(mode("app/empty"), 0o755);
        let mtime = fs::metadata(dst.join("app/lib/data.txt")).unwrap().mtime();
        assert_eq!(mtime, 1_700_000_000);
        // Only `r1` appeared beside the destination: no temp dir left behind.
        assert_eq!(fs::read_dir(t.path().join("nodes")).unwrap().count(), 1);
        // And it refuses to unpack over an existing destination.
        assert!(matches!(
            unpack_verified(&out, &packed.sha256, &dst),
            Err(ReleaseError::Exists(_))
        ));
    }

    #[test]
    fn digest_mismatch_is_refused_and_dst_absent() {
        let t = tempfile::tempdir().unwrap();
        let s = t.path().join("slug");
        write(&s.join("a"), b"a", 0o644);
        let out = t.path().join("r.tar.gz");
        pack(&s, b"{}", 1, &out).unwrap();
        let nodes = t.path().join("nodes");
        fs::create_dir(&nodes).unwrap();
        let dst = nodes.join("r1");
        let wrong = "0".repeat(64);
        let err = unpack_verified(&out, &wrong, &dst).unwrap_err();
        assert!(matches!(err, ReleaseError::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&sha256_file(&out).unwrap()));
        assert!(matches!(
            unpack_verified(&out, "abc", &dst),
            Err(ReleaseError::BadDigest(_))
        ));
        assert_eq!(fs::read_dir(&nodes).unwrap().count(), 0);
    }

    /// One hand-made entry: raw name and link bytes, so `..` and `/abs` can be written.
    struct Raw<'a> {
        name: &'a str,
        kind: EntryType,
        link: &'a str,
        data: &'a [u8],
    }

    fn raw(name: &str, kind: EntryType) -> Raw<'_> {
        Raw {
            name,
            kind,
            link: "",
            data: b"",
        }
    }

    fn hostile(entries: &[Raw]) -> Vec<u8> {
        let mut ar = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = Header::new_gnu();
            let g = h.as_gnu_mut().unwrap();
            g.name[..e.name.len()].copy_from_slice(e.name.as_bytes());
            g.linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
            h.set_entry_type(e.kind);
            h.set_mode(if e.kind == EntryType::Directory {
                0o755
            } else {
                0o644
            });
            h.set_size(e.data.len() as u64);
            h.set_cksum();
            ar.append(&h, e.data).unwrap();
        }
        let tar = ar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        gz.finish().unwrap()
    }

    /// Unpacks `tgz` (digest correct) into `base/nodes/dst`; asserts it fails with an error
    /// naming `bad`, that `nodes` stays empty and `base` holds nothing new.
    fn assert_rejected(entries: &[Raw], bad: &str) -> String {
        let t = tempfile::tempdir().unwrap();
        let base = t.path();
        let tgz = hostile(entries);
        let file = base.join("evil.tar.gz");
        fs::write(&file, &tgz).unwrap();
        let nodes = base.join("nodes");
        fs::create_dir(&nodes).unwrap();
        let digest = sha256_file(&file).unwrap();
        let err = unpack_verified(&file, &digest, &nodes.join("dst")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(bad), "error {msg:?} should name {bad:?}");
        assert_eq!(fs::read_dir(&nodes).unwrap().count(), 0, "{msg}");
        let mut left: Vec<_> = fs::read_dir(base)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["evil.tar.gz", "nodes"], "{msg}");
        msg
    }

    #[test]
    fn corrupt_header_error_is_one_line() {
        // Found by fuzzing: tar quotes a raw header field in its error, newline and all.
        let mut h = Header::new_gnu();
        h.set_path("a").unwrap();
        h.set_size(0);
        h.set_cksum();
        let mut tar = h.as_bytes().to_vec();
        tar[148..156].copy_from_slice(b"x\ny\x1b    ");
        tar.extend_from_slice(&[0; 1024]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let t = tempfile::tempdir().unwrap();
        let msg = unpack(&gz.finish().unwrap()[..], t.path())
            .unwrap_err()
            .to_string();
        assert!(!msg.chars().any(char::is_control), "{msg:?}");
        assert!(msg.contains("x\\ny\\u{1b}"), "{msg}");
    }

    #[test]
    fn rejects_parent_dir_path() {
        let msg = assert_rejected(
            &[Raw {
                data: b"pwned",
                ..raw("../evil", EntryType::Regular)
            }],
            "../evil",
        );
        assert!(msg.contains("`..`"));
        let msg = assert_rejected(
            &[Raw {
                data: b"pwned",
                ..raw("a/../../evil", EntryType::Regular)
            }],
            "a/../../evil",
        );
        assert!(msg.contains("`..`"));
    }

    #[test]
    fn rejects_absolute_path() {
        let outside = tempfile::tempdir().unwrap();
        let abs = outside.path().join("abs");
        let name = abs.to_str().unwrap().to_string();
        let msg = assert_rejected(
            &[Raw {
                data: b"pwned",
                ..raw(&name, EntryType::Regular)
            }],
            &name,
        );
        assert!(msg.contains("absolute"));
        assert!(!abs.exists());
        assert_rejected(&[raw("/abs", EntryType::Regular)], "/abs");
    }

    #[test]
    fn rejects_write_through_absolute_symlink() {
        let msg = assert_rejected(
            &[
                Raw {
                    link: "/etc",
                    ..raw("x", EntryType::Symlink)
                },
                Raw {
                    data: b"root::0:0::/:/bin/sh\n",
                    ..raw("x/passwd", EntryType::Regular)
                },
            ],
            "\"x\"",
        );
        assert!(msg.contains("goes through the symlink"), "{msg}");
    }

    #[test]
    fn rejects_path_through_extracted_symlink() {
        let msg = assert_rejected(
            &[
                raw("d", EntryType::Directory),
                Raw {
                    link: "d",
                    ..raw("x", EntryType::Symlink)
                },
                Raw {
                    data: b"hi",
                    ..raw("x/f", EntryType::Regular)
                },
            ],
            "x/f",
        );
        assert!(msg.contains("goes through the symlink"));
    }

    #[test]
    fn app_and_manifest_may_not_be_links() {
        for top in ["app", "manifest.json"] {
            let msg = assert_rejected(
                &[Raw {
                    link: "/",
                    ..raw(top, EntryType::Symlink)
                }],
                top,
            );
            assert!(msg.contains("may not be symlinks"), "{msg}");
        }
    }

    #[test]
    fn rejects_escaping_symlinks() {
        let msg = assert_rejected(
            &[Raw {
                link: "../..",
                ..raw("a", EntryType::Symlink)
            }],
            "\"a\"",
        );
        assert!(msg.contains("outside the release"));
        assert_rejected(
            &[Raw {
                link: "../../x",
                ..raw("d/up", EntryType::Symlink)
            }],
            "d/up",
        );
        // Lexically inside, but `x/l` is itself a link to the root: `x/l/..` escapes.
        assert_rejected(
            &[
                Raw {
                    link: "..",
                    ..raw("x/l", EntryType::Symlink)
                },
                Raw {
                    link: "x/l/..",
                    ..raw("y", EntryType::Symlink)
                },
            ],
            "\"y\"",
        );
        // The same with the links in the other order.
        let msg = assert_rejected(
            &[
                Raw {
                    link: "x/l/..",
                    ..raw("y", EntryType::Symlink)
                },
                Raw {
                    link: "..",
                    ..raw("x/l", EntryType::Symlink)
                },
            ],
            "x/l",
        );
        assert!(msg.contains("redirect"));
    }

    #[test]
    fn rejects_hardlink_device_fifo_entries() {
        for (kind, name) in [
            (EntryType::Link, "Link"),
            (EntryType::Char, "Char"),
            (EntryType::Block, "Block"),
            (EntryType::Fifo, "Fifo"),
        ] {
            let mut e = raw("node", kind);
            if kind == EntryType::Link {
                e.link = "/etc/passwd";
            }
            let msg = assert_rejected(&[raw("ok", EntryType::Regular), e], "\"node\"");
            assert!(msg.contains(name), "{msg}");
        }
    }

    #[test]
    fn rejects_duplicates() {
        let msg = assert_rejected(
            &[
                Raw {
                    data: b"1",
                    ..raw("f", EntryType::Regular)
                },
                Raw {
                    data: b"2",
                    ..raw("./f", EntryType::Regular)
                },
            ],
            "./f",
        );
        assert!(msg.contains("plain names"));
        assert_rejected(
            &[
                raw("f", EntryType::Regular),
                Raw {
                    link: "g",
                    ..raw("f", EntryType::Symlink)
                },
            ],
            "duplicate",
        );
    }

    #[test]
    fn suid_and_readonly_dirs_are_tamed() {
        let mut ar = tar::Builder::new(Vec::new());
        for (name, kind, mode) in [
            ("ro/", EntryType::Directory, 0o555),
            ("ro/f", EntryType::Regular, 0o6777),
        ] {
            let mut h = Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_size(0);
            ar.append_data(&mut h, name, io::empty()).unwrap();
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&ar.into_inner().unwrap()).unwrap();
        let tgz = gz.finish().unwrap();
        let t = tempfile::tempdir().unwrap();
        unpack(&tgz[..], t.path()).unwrap();
        let mode = |p: &str| fs::metadata(t.path().join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("ro"), 0o755);
        assert_eq!(mode("ro/f"), 0o755);
        // A non-empty destination is refused.
        assert!(matches!(
            unpack(&tgz[..], t.path()),
            Err(ReleaseError::Exists(_))
        ));
    }
}
