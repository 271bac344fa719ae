//! Reading files that someone else wrote: the exported tree of a push and what a build
//! container leaves behind. Both are hostile: a pushed symlink or one a buildpack makes can
//! point anywhere on the controller host (its SSH key, `config.key`), so nothing here follows
//! a link, leaves the root it was given, or reads more than a cap.
//!
//! On Linux 5.6+ one `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` does it; older kernels
//! walk the path one `openat(O_NOFOLLOW)` at a time, which refuses the same inputs.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use thiserror::Error;

/// Why a hostile file was not read. Messages name the file as the app sees it (relative to
/// its root), never a server path.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HostileFile {
    #[error("{0} is a symlink or passes through one; it must be a regular file")]
    Link(String),
    #[error("{0} is not a regular file")]
    NotFile(String),
    #[error("{0} is hard-linked; it must be a regular file of its own")]
    HardLink(String),
    #[error("{0} is larger than {1} bytes")]
    TooLarge(String, u64),
    #[error("{0}: the path must be relative and stay inside the tree")]
    BadPath(String),
    #[error("{0}: {1}")]
    Io(String, String),
}

/// What a path names beneath a root, without following links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Missing,
    File,
    Dir,
    /// A symlink, or a path that passes through one.
    Link,
    Other,
}

fn check_rel(rel: &str) -> Result<(), HostileFile> {
    let ok = !rel.is_empty()
        && !rel.starts_with('/')
        && !rel.contains('\0')
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(())
    } else {
        Err(HostileFile::BadPath(rel.to_string()))
    }
}

/// Opens `root/rel` (`O_PATH` when `path_only`) with no link followed at any step and never
/// outside `root`. `Ok(None)` when some component does not exist.
fn open_beneath(root: &Path, rel: &str, path_only: bool) -> Result<Option<OwnedFd>, HostileFile> {
    check_rel(rel)?;
    let io = |e: std::io::Error| HostileFile::Io(rel.to_string(), e.to_string());
    let root_fd = File::open(root).map_err(io)?;
    let flags = libc::O_CLOEXEC
        | libc::O_NOFOLLOW
        | if path_only {
            libc::O_PATH
        } else {
            libc::O_RDONLY | libc::O_NONBLOCK
        };
    let crel = std::ffi::CString::new(rel.as_bytes()).map_err(|_| check_rel("\0").unwrap_err())?;
    // `libc::open_how` is non-exhaustive; the kernel's layout is three u64s.
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: flags as u64,
        mode: 0,
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: valid fd, NUL-terminated path, `how` sized as passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root_fd.as_raw_fd(),
            crel.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd >= 0 {
        // SAFETY: the kernel just gave us this descriptor.
        return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd as i32) }));
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENOSYS) | Some(libc::EPERM) => walk_nofollow(&root_fd, rel, flags),
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => Ok(None),
        Some(libc::ELOOP) | Some(libc::EXDEV) => Err(HostileFile::Link(rel.to_string())),
        _ => Err(io(err)),
    }
}

/// The pre-5.6 way: one `openat(O_NOFOLLOW)` per component, directories opened `O_DIRECTORY`.
fn walk_nofollow(root: &File, rel: &str, flags: i32) -> Result<Option<OwnedFd>, HostileFile> {
    let parts: Vec<&str> = rel.split('/').collect();
    let mut cur: Option<OwnedFd> = None;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let dirfd = cur.as_ref().map_or(root.as_raw_fd(), |f| f.as_raw_fd());
        let c = std::ffi::CString::new(part.as_bytes()).unwrap_or_default();
        let fl = if last {
            flags
        } else {
            libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_PATH | libc::O_DIRECTORY
        };
        // SAFETY: valid dirfd and NUL-terminated name.
        let fd = unsafe { libc::openat(dirfd, c.as_ptr(), fl) };
        if fd < 0 {
            let err = std::io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::ENOENT) => Ok(None),
                Some(libc::ELOOP) | Some(libc::ENOTDIR) => Err(HostileFile::Link(rel.to_string())),
                _ => Err(HostileFile::Io(rel.to_string(), err.to_string())),
            };
        }
        // SAFETY: fresh descriptor from openat.
        cur = Some(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    // O_PATH|O_NOFOLLOW on a final symlink opens the link itself: refuse it.
    if let Some(fd) = &cur {
        let m = File::from(
            fd.try_clone()
                .map_err(|e| HostileFile::Io(rel.into(), e.to_string()))?,
        )
        .metadata()
        .map_err(|e| HostileFile::Io(rel.into(), e.to_string()))?;
        if m.file_type().is_symlink() {
            return Err(HostileFile::Link(rel.to_string()));
        }
    }
    Ok(cur)
}

/// What `root/rel` is, without following links: a symlink anywhere on the path is `Link`.
pub fn kind(root: &Path, rel: &str) -> Result<Kind, HostileFile> {
    let fd = match open_beneath(root, rel, true) {
        Ok(Some(fd)) => fd,
        Ok(None) => return Ok(Kind::Missing),
        Err(HostileFile::Link(_)) => return Ok(Kind::Link),
        Err(e) => return Err(e),
    };
    let m = File::from(fd)
        .metadata()
        .map_err(|e| HostileFile::Io(rel.into(), e.to_string()))?;
    let t = m.file_type();
    Ok(if t.is_file() {
        Kind::File
    } else if t.is_dir() {
        Kind::Dir
    } else if t.is_symlink() {
        Kind::Link
    } else {
        Kind::Other
    })
}

/// Reads the regular file `root/rel` if it exists: no symlink at any step, never outside
/// `root`, not hard-linked (a second name could be anything), at most `max` bytes.
pub fn read(root: &Path, rel: &str, max: u64) -> Result<Option<Vec<u8>>, HostileFile> {
    let Some(fd) = open_beneath(root, rel, false)? else {
        return Ok(None);
    };
    let f = File::from(fd);
    let io = |e: std::io::Error| HostileFile::Io(rel.to_string(), e.to_string());
    let m = f.metadata().map_err(io)?;
    if !m.file_type().is_file() {
        return Err(HostileFile::NotFile(rel.to_string()));
    }
    if m.nlink() > 1 {
        return Err(HostileFile::HardLink(rel.to_string()));
    }
    if m.len() > max {
        return Err(HostileFile::TooLarge(rel.to_string(), max));
    }
    let mut buf = Vec::with_capacity(m.len() as usize);
    // The file may grow after the stat: the cap holds on what is read, too.
    f.take(max + 1).read_to_end(&mut buf).map_err(io)?;
    if buf.len() as u64 > max {
        return Err(HostileFile::TooLarge(rel.to_string(), max));
    }
    Ok(Some(buf))
}

/// [`read`] as UTF-8 text (lossy: these files are shown and parsed, never executed here).
pub fn read_text(root: &Path, rel: &str, max: u64) -> Result<Option<String>, HostileFile> {
    Ok(read(root, rel, max)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

/// For messages: a path shown relative to its root, never the server's absolute path.
pub fn shown(rel: &Path) -> String {
    String::from_utf8_lossy(rel.as_os_str().as_bytes()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, std::path::PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(t.path().join("secret"), "CANARY").unwrap();
        std::fs::write(root.join("Procfile"), "web: ./server\n").unwrap();
        std::fs::write(root.join("sub/ok"), "fine").unwrap();
        (t, root)
    }

    #[test]
    fn reads_regular_files_only() {
        let (t, root) = tree();
        assert_eq!(
            read_text(&root, "Procfile", 100).unwrap().unwrap(),
            "web: ./server\n"
        );
        assert_eq!(read(&root, "sub/ok", 100).unwrap().unwrap(), b"fine");
        assert_eq!(read(&root, "nope", 100).unwrap(), None);
        assert_eq!(read(&root, "nope/deeper", 100).unwrap(), None);
        assert!(matches!(
            read(&root, "Procfile", 3),
            Err(HostileFile::TooLarge(..))
        ));
        assert!(matches!(
            read(&root, "sub", 100),
            Err(HostileFile::NotFile(_))
        ));

        // Absolute, relative and directory links, and `..`, all refused.
        symlink(t.path().join("secret"), root.join("abs")).unwrap();
        symlink("../secret", root.join("rel")).unwrap();
        symlink(t.path(), root.join("dirlink")).unwrap();
        symlink("Procfile", root.join("inside")).unwrap();
        for p in ["abs", "rel", "dirlink/secret", "inside"] {
            assert_eq!(read(&root, p, 100), Err(HostileFile::Link(p.into())), "{p}");
            assert_eq!(kind(&root, p).unwrap(), Kind::Link, "{p}");
        }
        for p in [
            "../secret",
            "/etc/passwd",
            "sub/../Procfile",
            "",
            "./Procfile",
        ] {
            assert!(
                matches!(read(&root, p, 100), Err(HostileFile::BadPath(_))),
                "{p}"
            );
        }
        std::fs::hard_link(root.join("sub/ok"), root.join("hard")).unwrap();
        assert_eq!(
            read(&root, "hard", 100),
            Err(HostileFile::HardLink("hard".into()))
        );
        assert_eq!(kind(&root, "sub").unwrap(), Kind::Dir);
        assert_eq!(kind(&root, "Procfile").unwrap(), Kind::File);
        assert_eq!(kind(&root, "missing").unwrap(), Kind::Missing);
    }

    #[test]
    fn fallback_walk_refuses_the_same() {
        let (t, root) = tree();
        symlink(t.path().join("secret"), root.join("abs")).unwrap();
        symlink(t.path(), root.join("dirlink")).unwrap();
        let r = File::open(&root).unwrap();
        let fl = libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_RDONLY;
        assert!(walk_nofollow(&r, "Procfile", fl).unwrap().is_some());
        assert!(walk_nofollow(&r, "nope", fl).unwrap().is_none());
        assert!(matches!(
            walk_nofollow(&r, "abs", fl),
            Err(HostileFile::Link(_))
        ));
        assert!(matches!(
            walk_nofollow(&r, "dirlink/secret", fl),
            Err(HostileFile::Link(_))
        ));
        let pl = libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_PATH;
        assert!(matches!(
            walk_nofollow(&r, "abs", pl),
            Err(HostileFile::Link(_))
        ));
    }
}
