//! A node's files (see DESIGN.md, "Node layout"):
//!
//! ```text
//! <root>/apps/<app>/releases/<vN>-<sha12>/   unpacked release: manifest.json + app/
//! <root>/apps/<app>/current -> releases/...  switched atomically (rename of a temp symlink)
//! <root>/apps/<app>/data/                    persistent data, mounted into processes
//! <root>/apps/<app>/snapshots/<label>/       data snapshots taken before a release phase
//! ```
//!
//! Every app, release and label string is checked before a path is built from it, so nothing
//! a client sends can name a file outside `<root>/apps/<app>`. Everything that becomes visible
//! under a real name (a release, `current`, a snapshot, a restored `data`) is prepared under a
//! dot-name and renamed into place, so a crash never leaves half of one under its real name.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::error::AgentError;
use crate::fsutil::{rename_exchange, rename_noreplace};
use crate::names;
use crate::release::extract::{remove_tree, unpack_stream};
use crate::release::temp::{temp_name, RemoveOnDrop};
use crate::release::ReleaseError;

fn chown_error(data: &Path, uid: u32, e: io::Error) -> AgentError {
    AgentError::Io {
        path: data.to_path_buf(),
        source: io::Error::new(
            e.kind(),
            format!(
                "cannot give the data dir to uid {uid} (the app's user): {e}; \
                 run the node as root"
            ),
        ),
    }
}

fn release_chown_error(path: &Path, uid: u32, e: io::Error) -> AgentError {
    AgentError::Io {
        path: path.to_path_buf(),
        source: io::Error::new(
            e.kind(),
            format!(
                "cannot give the release to uid {uid} (the app's user): {e}; run the node as root"
            ),
        ),
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> AgentError + '_ {
    move |source| AgentError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Never echo control characters (or megabytes) back to a terminal.
fn shown(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(60).collect()
}

/// `^v[0-9]{1,18}-[0-9a-f]{12}$`; returns the version number. The 18-digit cap keeps the
/// number in a u64 so releases sort numerically (v10 after v9).
pub fn check_release(name: &str) -> Result<u64, AgentError> {
    let bad = || AgentError::ReleaseName(shown(name));
    let rest = name.strip_prefix('v').ok_or_else(bad)?;
    let (num, sha) = rest.split_once('-').ok_or_else(bad)?;
    let num_ok = !num.is_empty() && num.len() <= 18 && num.bytes().all(|b| b.is_ascii_digit());
    let sha_ok = sha.len() == 12 && sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !num_ok || !sha_ok {
        return Err(bad());
    }
    num.parse().map_err(|_| bad())
}

/// 64 hex digits, returned lower-cased (the form release names and the store use).
pub fn check_sha256(s: &str) -> Result<String, AgentError> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(AgentError::Digest(shown(s)))
    }
}

#[derive(Debug, Clone)]
pub struct NodeRoot {
    root: PathBuf,
}

impl NodeRoot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        NodeRoot { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/apps/<app>`. Panics on an invalid app name: callers check names first (every
    /// method below does), so reaching here with one is a bug, never user input.
    pub fn app_dir(&self, app: &str) -> PathBuf {
        assert!(names::valid_node_app(app), "unchecked app name {app:?}");
        self.root.join("apps").join(app)
    }

    /// `<root>/apps/<app>/releases/<name>`; panics on unchecked names like [`Self::app_dir`].
    pub fn release_dir(&self, app: &str, name: &str) -> PathBuf {
        assert!(
            check_release(name).is_ok(),
            "unchecked release name {name:?}"
        );
        self.app_dir(app).join("releases").join(name)
    }

    /// `<root>/apps/<app>/data`. Only the path: [`Self::ensure_data_dir`] creates it.
    pub fn data_dir(&self, app: &str) -> PathBuf {
        self.app_dir(app).join("data")
    }

    /// `<root>/apps/<app>/logs`: archived output of the app's stopped processes (see
    /// `agent::logs`). Only the path; the archiver creates it.
    pub fn logs_dir(&self, app: &str) -> PathBuf {
        self.app_dir(app).join("logs")
    }

    fn snapshot_dir(&self, app: &str, label: &str) -> PathBuf {
        assert!(names::valid(label), "unchecked snapshot label {label:?}");
        self.app_dir(app).join("snapshots").join(label)
    }

    /// Creates the data dir if missing, owned by the app's uid (`isolation`) so its
    /// processes can write to it. An existing dir of that uid is left as it is (the app may
    /// have set its own modes). One owned by another app uid is a leftover of an earlier app
    /// of the same name: it is moved aside to `data.uid-<old uid>` (never handed over) and a
    /// fresh one is made. One owned by anything else (uid 1000, when every app ran as that
    /// user, or root) is the app's own from before per-app uids: given to the app's uid.
    pub fn ensure_data_dir(&self, app: &str, uid: u32) -> Result<PathBuf, AgentError> {
        use std::os::unix::fs::MetadataExt;
        names::check_node_app(app)?;
        let data = self.data_dir(app);
        if let Ok(m) = fs::symlink_metadata(&data) {
            let owner = m.uid();
            if owner == uid {
                return Ok(data);
            }
            let app_dir = self.app_dir(app);
            if owner > crate::isolation::UID_BASE && m.is_dir() {
                let aside = app_dir.join(format!("data.uid-{owner}"));
                tracing::warn!(
                    app,
                    owner,
                    uid,
                    "data dir of an earlier app of this name moved aside"
                );
                rename_noreplace(&data, &aside).map_err(io_at(&aside))?;
            } else if m.is_dir() {
                crate::isolation::chown_tree(&data, uid).map_err(|e| chown_error(&data, uid, e))?;
                return Ok(data);
            } else {
                return Err(io_at(&data)(io::Error::other("not a directory")));
            }
        }
        let app_dir = self.app_dir(app);
        fs::create_dir_all(&app_dir).map_err(io_at(&app_dir))?;
        // Prepared under a temp name so the dir never exists with the wrong owner.
        let tmp = temp_name(&app_dir, &data, "new");
        fs::create_dir(&tmp).map_err(io_at(&tmp))?;
        let guard = RemoveOnDrop(Some(tmp.clone()));
        std::os::unix::fs::chown(&tmp, Some(uid), Some(uid))
            .map_err(|e| chown_error(&data, uid, e))?;
        match rename_noreplace(&tmp, &data) {
            Ok(()) => guard.disarm(),
            // Another caller created it meanwhile: theirs is as good as ours.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_at(&data)(e)),
        }
        Ok(data)
    }

    pub fn has_release(&self, app: &str, name: &str) -> bool {
        names::valid_node_app(app)
            && check_release(name).is_ok()
            && self.release_dir(app, name).is_dir()
    }

    /// Streams a release tarball from `src` through [`unpack_stream`] into the release dir:
    /// hashed and extracted in one pass into a temp dir that becomes the release only if the
    /// sha256 matches. Idempotent: if the release is already unpacked, `src` is drained (so
    /// the sender is not left blocked) and this returns Ok. Returns the number of bytes
    /// received.
    pub fn receive(
        &self,
        app: &str,
        name: &str,
        sha256: &str,
        mut src: impl Read,
    ) -> Result<u64, AgentError> {
        names::check_node_app(app)?;
        check_release(name)?;
        let sha256 = check_sha256(sha256)?;
        if !name.ends_with(&sha256[..12]) {
            return Err(AgentError::NameDigestMismatch {
                name: name.to_string(),
                sha256,
            });
        }
        let dst = self.release_dir(app, name);
        if dst.is_dir() {
            return io::copy(&mut src, &mut io::sink()).map_err(io_at(&dst));
        }
        let releases = dst.parent().expect("release dir has a parent");
        fs::create_dir_all(releases).map_err(io_at(releases))?;
        // Counted here: the size goes into a mismatch's message too.
        let mut src = Counted(src, 0);
        match unpack_stream(&mut src, &dst, &sha256, &dst) {
            Ok(()) => Ok(src.1),
            Err(ReleaseError::DigestMismatch { actual, .. }) => Err(AgentError::DigestMismatch {
                app: app.to_string(),
                name: name.to_string(),
                size: src.1,
                expected: sha256,
                actual,
            }),
            // A concurrent receive of the same release won the rename: same bytes, done.
            Err(ReleaseError::Exists(_)) if dst.is_dir() => Ok(src.1),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives an unpacked release's `app/` tree to the app's uid, once: processes see it as
    /// the lower dir of their writable `/app` overlay, and on Heroku `/app` belongs to the
    /// dyno, so existing files must be the app's to change (in its own layer). The dir
    /// itself goes last: an interrupted walk is redone on the next start. Links are changed,
    /// never followed.
    pub fn own_release(&self, app: &str, name: &str, uid: u32) -> Result<(), AgentError> {
        use std::os::unix::fs::MetadataExt;
        names::check_node_app(app)?;
        check_release(name)?;
        let top = self.release_dir(app, name).join("app");
        let m = fs::symlink_metadata(&top).map_err(io_at(&top))?;
        if !m.is_dir() || (m.uid() == uid && m.gid() == uid) {
            return Ok(());
        }
        let mut stack = vec![top.clone()];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir).map_err(io_at(&dir))? {
                let p = e.map_err(io_at(&dir))?.path();
                let m = fs::symlink_metadata(&p).map_err(io_at(&p))?;
                if m.uid() != uid || m.gid() != uid {
                    std::os::unix::fs::lchown(&p, Some(uid), Some(uid))
                        .map_err(|e| release_chown_error(&p, uid, e))?;
                }
                if m.is_dir() {
                    stack.push(p);
                }
            }
        }
        std::os::unix::fs::lchown(&top, Some(uid), Some(uid))
            .map_err(|e| release_chown_error(&top, uid, e))
    }

    /// `releases/<name>/manifest.json`, parsed.
    pub fn manifest(&self, app: &str, name: &str) -> Result<serde_json::Value, AgentError> {
        names::check_node_app(app)?;
        check_release(name)?;
        if !self.has_release(app, name) {
            return Err(self.no_release(app, name));
        }
        let path = self.release_dir(app, name).join("manifest.json");
        let bad = |reason: String| AgentError::BadRelease {
            app: app.to_string(),
            name: name.to_string(),
            reason,
        };
        let bytes = fs::read(&path).map_err(|e| bad(format!("manifest.json: {e}")))?;
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("manifest.json: {e}")))
    }

    /// The release `current` points at, if it points at a well-formed release name.
    pub fn current(&self, app: &str) -> Option<String> {
        if !names::valid_node_app(app) {
            return None;
        }
        let target = fs::read_link(self.app_dir(app).join("current")).ok()?;
        let name = target.strip_prefix("releases").ok()?.to_str()?;
        check_release(name).ok()?;
        Some(name.to_string())
    }

    /// Points `<app>/current` at `releases/<name>` atomically: a temp symlink renamed over
    /// the old one (rename(2) replaces in one step, so readers see the old or the new
    /// release, never none). The target is relative so the node root can be moved.
    pub fn switch(&self, app: &str, name: &str) -> Result<(), AgentError> {
        names::check_node_app(app)?;
        check_release(name)?;
        if !self.has_release(app, name) {
            return Err(self.no_release(app, name));
        }
        let app_dir = self.app_dir(app);
        let current = app_dir.join("current");
        let tmp = temp_name(&app_dir, &current, "switch");
        symlink(Path::new("releases").join(name), &tmp).map_err(io_at(&tmp))?;
        if let Err(e) = fs::rename(&tmp, &current) {
            let _ = fs::remove_file(&tmp);
            return Err(io_at(&current)(e));
        }
        sync_dir(&app_dir)
    }

    /// Unpacked release names, oldest first (by version number).
    pub fn releases(&self, app: &str) -> Vec<String> {
        if !names::valid_node_app(app) {
            return vec![];
        }
        let Ok(rd) = fs::read_dir(self.app_dir(app).join("releases")) else {
            return vec![];
        };
        // Temp dirs of unpacks in progress start with '.', so they fail the name check.
        let mut out: Vec<(u64, String)> = rd
            .flatten()
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|n| check_release(&n).ok().map(|v| (v, n)))
            .collect();
        out.sort();
        out.into_iter().map(|(_, n)| n).collect()
    }

    /// Removes unpacked releases not in `keep`, never the current one. `keep` must also hold
    /// every release a process still runs from: its files vanish from the mount otherwise.
    /// Returns the removed names, oldest first.
    pub fn gc(&self, app: &str, keep: &[String]) -> Result<Vec<String>, AgentError> {
        names::check_node_app(app)?;
        let current = self.current(app);
        let mut removed = vec![];
        for name in self.releases(app) {
            if keep.contains(&name) || current.as_ref() == Some(&name) {
                continue;
            }
            let dir = self.release_dir(app, &name);
            // Renamed away first, so a half-deleted tree never passes for a release.
            let trash = temp_name(dir.parent().expect("has parent"), &dir, "gc");
            fs::rename(&dir, &trash).map_err(io_at(&dir))?;
            remove_tree(&trash).map_err(io_at(&trash))?;
            removed.push(name);
        }
        Ok(removed)
    }

    /// Removes every environment of `app` (`apps/<app>`, `apps/<app>.<env>`): each is renamed
    /// away first, so a crash mid-delete never leaves a half app under the name. With
    /// `keep_data` each data dir is first moved to `<root>/archive/<node app>-<time>-<rand>`,
    /// outside `apps/`, where no later app can reach it. Returns the node apps removed.
    pub fn purge(&self, app: &str, keep_data: bool) -> Result<Vec<String>, AgentError> {
        names::check("app", app)?;
        let apps = self.root.join("apps");
        let Ok(rd) = fs::read_dir(&apps) else {
            return Ok(vec![]);
        };
        let mut purged = vec![];
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if names::node_app_of(&name) != Some(app) {
                continue;
            }
            let dir = self.app_dir(&name);
            let data = self.data_dir(&name);
            if keep_data && fs::symlink_metadata(&data).is_ok_and(|m| m.is_dir()) {
                let archive = self.root.join("archive");
                fs::create_dir_all(&archive).map_err(io_at(&archive))?;
                let to = archive.join(format!(
                    "{name}-{}-{}",
                    crate::timefmt::now(),
                    crate::keys::random_hex(3)
                ));
                rename_noreplace(&data, &to).map_err(io_at(&to))?;
            }
            // A leading dot is no valid app name: the trash is never taken for an app.
            let trash = apps.join(format!(".purge-{name}-{}", crate::keys::random_hex(4)));
            fs::rename(&dir, &trash).map_err(io_at(&dir))?;
            remove_tree(&trash).map_err(io_at(&trash))?;
            purged.push(name);
        }
        purged.sort();
        Ok(purged)
    }

    /// Copies the data dir (created empty if missing) to `snapshots/<label>` with `cp -a`
    /// semantics (modes, owners, times, symlinks, hard links), via a temp dir swapped into
    /// place. An existing snapshot of that label is replaced: a retried deploy reuses its
    /// label, and nodes have no other way to clear one.
    pub fn snapshot_data(&self, app: &str, label: &str, uid: u32) -> Result<(), AgentError> {
        names::check_node_app(app)?;
        names::check("snapshot", label)?;
        let dst = self.snapshot_dir(app, label);
        let data = self.ensure_data_dir(app, uid)?;
        let snapshots = dst.parent().expect("has parent");
        fs::create_dir_all(snapshots).map_err(io_at(snapshots))?;
        let tmp = temp_name(snapshots, &dst, "copy");
        let guard = RemoveOnDrop(Some(tmp.clone()));
        copy_tree(&data, &tmp)?;
        swap_in(&tmp, &dst, guard)?;
        sync_dir(snapshots)
    }

    /// Replaces the data dir with a copy of snapshot `label` (the snapshot stays, so a
    /// restore can be repeated). The copy is swapped in with one renameat2(RENAME_EXCHANGE),
    /// so `data` is always either the old tree or the restored one. Stop the app's processes
    /// first: a running container keeps the old dir mounted.
    pub fn restore_data(&self, app: &str, label: &str) -> Result<(), AgentError> {
        names::check_node_app(app)?;
        names::check("snapshot", label)?;
        let snap = self.snapshot_dir(app, label);
        if !snap.is_dir() {
            return Err(AgentError::NoSnapshot {
                app: app.to_string(),
                label: label.to_string(),
            });
        }
        let app_dir = self.app_dir(app);
        let data = self.data_dir(app);
        let tmp = temp_name(&app_dir, &data, "restore");
        let guard = RemoveOnDrop(Some(tmp.clone()));
        copy_tree(&snap, &tmp)?;
        swap_in(&tmp, &data, guard)?;
        sync_dir(&app_dir)
    }

    /// Snapshot labels of `app`, sorted.
    pub fn snapshots(&self, app: &str) -> Vec<String> {
        if !names::valid_node_app(app) {
            return vec![];
        }
        let Ok(rd) = fs::read_dir(self.app_dir(app).join("snapshots")) else {
            return vec![];
        };
        let mut out: Vec<String> = rd
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| names::valid(n))
            .collect();
        out.sort();
        out
    }

    /// Removes snapshot `label`; Ok if it does not exist.
    pub fn remove_snapshot(&self, app: &str, label: &str) -> Result<(), AgentError> {
        names::check_node_app(app)?;
        names::check("snapshot", label)?;
        let dir = self.snapshot_dir(app, label);
        if fs::symlink_metadata(&dir).is_err() {
            return Ok(());
        }
        let trash = temp_name(dir.parent().expect("has parent"), &dir, "rm");
        fs::rename(&dir, &trash).map_err(io_at(&dir))?;
        remove_tree(&trash).map_err(io_at(&trash))
    }

    fn no_release(&self, app: &str, name: &str) -> AgentError {
        AgentError::NoRelease {
            app: app.to_string(),
            name: name.to_string(),
        }
    }
}

/// `cp -a -- src dst` (dst must not exist). The real cp keeps what a hand-written copy
/// would likely miss on app data: hard links, sparse files, xattrs, fifos and sockets.
fn copy_tree(src: &Path, dst: &Path) -> Result<(), AgentError> {
    let out = Command::new("cp")
        .arg("-a")
        .arg("--")
        .arg(src)
        .arg(dst)
        .output()
        .map_err(|e| AgentError::Io {
            path: src.to_path_buf(),
            source: io::Error::new(e.kind(), format!("cannot run cp: {e}")),
        })?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(AgentError::Io {
        path: src.to_path_buf(),
        source: io::Error::other(format!(
            "copying to {} failed ({}): {}",
            dst.display(),
            out.status,
            err.trim()
        )),
    })
}

/// Puts the prepared tree `tmp` (owned by `guard`) at `dst`, replacing whatever is there
/// with one renameat2(RENAME_EXCHANGE), so `dst` is always the old tree or the new one. The
/// old tree ends up at `tmp` and the guard removes it.
fn swap_in(tmp: &Path, dst: &Path, guard: RemoveOnDrop) -> Result<(), AgentError> {
    if fs::symlink_metadata(dst).is_err() {
        match rename_noreplace(tmp, dst) {
            Ok(()) => {
                guard.disarm();
                return Ok(());
            }
            // Appeared meanwhile: exchange with it below.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_at(dst)(e)),
        }
    }
    match rename_exchange(tmp, dst) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
            // The filesystem cannot exchange: two renames, with a short window without `dst`.
            let parent = dst.parent().unwrap_or(Path::new("."));
            let old = temp_name(parent, dst, "old");
            fs::rename(dst, &old).map_err(io_at(dst))?;
            if let Err(e) = fs::rename(tmp, dst) {
                let _ = fs::rename(&old, dst);
                return Err(io_at(dst)(e));
            }
            guard.disarm();
            let _ = remove_tree(&old);
            Ok(())
        }
        Err(e) => Err(io_at(dst)(e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), AgentError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

/// A reader that counts what went through it.
struct Counted<R>(R, u64);

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.read(buf)?;
        self.1 += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_names() {
        assert_eq!(check_release("v3-0123456789ab").unwrap(), 3);
        assert_eq!(
            check_release("v123456789012345678-0123456789ab").unwrap(),
            123456789012345678
        );
        for bad in [
            "",
            "v",
            "3-0123456789ab",
            "v-0123456789ab",
            "v3-0123456789AB",
            "v3-0123456789a",
            "v3-0123456789abc",
            "v3_0123456789ab",
            "v3-0123456789ab/..",
            "../v3-0123456789ab",
            "v1234567890123456789-0123456789ab",
            "v3-01234567\n9ab",
        ] {
            assert!(check_release(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn digests() {
        let d = "A".repeat(64);
        assert_eq!(check_sha256(&d).unwrap(), "a".repeat(64));
        assert!(check_sha256(&"a".repeat(63)).is_err());
        assert!(check_sha256(&"g".repeat(64)).is_err());
    }
}
