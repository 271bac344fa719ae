//! The release module's temp files, in one place: names beside their target, removal on
//! drop unless disarmed, and the `.cooking-*` tarballs a crash may leave (swept at start).

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::{io_at, ReleaseError};

/// A release tarball being cooked is written under this prefix in its app's releases dir,
/// then renamed to its final name; anything left with it is a crash's leftover.
pub(crate) const COOKING_PREFIX: &str = ".cooking-";

/// A fresh name for a tarball being cooked in `dir`.
pub(crate) fn cooking_path(dir: &Path) -> PathBuf {
    dir.join(format!(
        "{COOKING_PREFIX}{}.tar.gz",
        crate::keys::random_hex(6)
    ))
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A unique name beside `target`: `.<name>.<tag>-<pid>-<n>`.
pub(crate) fn temp_name(dir: &Path, target: &Path, tag: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "release".into());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}.{tag}-{}-{n}", std::process::id()))
}

pub(crate) fn create_temp_file(dir: &Path, out: &Path) -> Result<(PathBuf, File), ReleaseError> {
    let mut tries = 0;
    loop {
        let tmp = temp_name(dir, out, "tmp");
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 100 => tries += 1,
            Err(e) => return Err(io_at(&tmp)(e)),
        }
    }
}

/// Removes the path on drop unless disarmed.
pub(crate) struct RemoveOnDrop(pub(crate) Option<PathBuf>);

impl RemoveOnDrop {
    pub(crate) fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => {
                    let _ = crate::release::extract::remove_tree(&p);
                }
                Ok(_) => {
                    let _ = fs::remove_file(&p);
                }
                Err(_) => {}
            }
        }
    }
}
