//! Durable file writes: temp file + fsync + rename + fsync of the directory, so a crash
//! leaves either the old file or the new one, never half of one.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()
}

pub fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Renames `from` to `to`, failing with `AlreadyExists` if `to` exists (plain `rename` would
/// replace an empty directory). renameat2(RENAME_NOREPLACE); on a filesystem without it,
/// check + rename (racy, but only between our own writers).
pub fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    match renameat2(from, to, libc::RENAME_NOREPLACE) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
            if fs::symlink_metadata(to).is_ok() {
                return Err(std::io::ErrorKind::AlreadyExists.into());
            }
            fs::rename(from, to)
        }
        r => r,
    }
}

/// Swaps `a` and `b` atomically: renameat2(RENAME_EXCHANGE). Filesystems without it fail
/// with EINVAL or ENOSYS, for the caller to fall back as it sees fit.
pub fn rename_exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    renameat2(a, b, libc::RENAME_EXCHANGE)
}

fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let f = std::ffi::CString::new(from.as_os_str().as_bytes())?;
    let t = std::ffi::CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: both are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EEXIST | libc::ENOTEMPTY) => Err(std::io::ErrorKind::AlreadyExists.into()),
        _ => Err(e),
    }
}

/// Bytes of the regular files under `p` (not following links; a file linked twice counts
/// once). Missing: 0.
pub fn du(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen: std::collections::HashSet<(u64, u64)> = Default::default();
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.filter_map(Result::ok).map(|e| e.path()));
            }
        } else if m.is_file() && (m.nlink() == 1 || seen.insert((m.dev(), m.ino()))) {
            total += m.len();
        }
    }
    total
}

#[cfg(test)]
mod du_tests {
    use super::du;

    #[test]
    fn du_counts_files_once_and_not_links() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir_all(p.join("a/b")).unwrap();
        std::fs::write(p.join("a/one"), vec![0u8; 100]).unwrap();
        std::fs::write(p.join("a/b/two"), vec![0u8; 20]).unwrap();
        std::fs::hard_link(p.join("a/one"), p.join("a/b/one-again")).unwrap();
        std::os::unix::fs::symlink("/etc", p.join("a/etc")).unwrap();
        assert_eq!(du(&p.join("a")), 120);
        assert_eq!(du(&p.join("a/one")), 100);
        assert_eq!(du(&p.join("missing")), 0);
    }
}
