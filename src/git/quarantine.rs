//! A push's objects made durable in the repository before the controller says yes, and refs
//! moved later with compare-and-swap: the two git halves of the push journal
//! (`controller/journal.rs`).
//!
//! git keeps a push's objects in a quarantine dir (`GIT_QUARANTINE_PATH`) until pre-receive
//! accepts, and deletes it when the push fails, also when the controller died mid-answer.
//! Once a release is live the pushed commit must outlive that, so its objects are linked into
//! the repository first. Unreferenced objects are harmless to git (gc prunes them in time),
//! and git's own migration of the quarantine tolerates objects that are already there.

use std::path::Path;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum QuarantineError {
    #[error("keeping the pushed objects: {0}")]
    Io(#[from] std::io::Error),
    #[error("git update-ref {0}: {1}")]
    UpdateRef(String, String),
}

/// Links (copies across filesystems) every object file of the quarantine dir `from` into the
/// repository's `objects/` dir, fsynced: loose objects, then packs with their index last
/// (git sees a pack only through its `.idx`). Files already there are left as they are.
/// Returns how many files were added.
pub fn keep_objects(repo: &Path, from: &Path) -> Result<usize, QuarantineError> {
    let objects = repo.join("objects");
    let mut added = 0;
    for e in std::fs::read_dir(from)?.flatten() {
        let name = e.file_name();
        let n = name.to_string_lossy();
        let is_fanout = n.len() == 2 && n.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_fanout || !e.file_type()?.is_dir() {
            continue;
        }
        added += keep_dir(&e.path(), &objects.join(&name), |_| 0)?;
    }
    // .pack (and .rev, .bitmap) before .idx, .keep not at all: a quarantine's keep files
    // guard its packs only while git receives.
    let rank = |n: &str| {
        if n.ends_with(".idx") {
            1
        } else {
            0
        }
    };
    let pack = from.join("pack");
    if pack.is_dir() {
        added += keep_dir(&pack, &objects.join("pack"), rank)?;
    }
    Ok(added)
}

/// Puts every regular file of `src` into `dst` in `rank` order, then fsyncs `dst`.
fn keep_dir(src: &Path, dst: &Path, rank: impl Fn(&str) -> u8) -> Result<usize, QuarantineError> {
    let mut files: Vec<(u8, std::ffi::OsString)> = std::fs::read_dir(src)?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name())
        .filter(|n| {
            let s = n.to_string_lossy();
            !s.starts_with("tmp_") && !s.ends_with(".keep") && !s.starts_with('.')
        })
        .map(|n| (rank(&n.to_string_lossy()), n))
        .collect();
    if files.is_empty() {
        return Ok(0);
    }
    files.sort();
    std::fs::create_dir_all(dst)?;
    let mut added = 0;
    for (_, name) in files {
        let (from, to) = (src.join(&name), dst.join(&name));
        if to.exists() {
            continue;
        }
        if std::fs::hard_link(&from, &to).is_err() {
            // Another filesystem: copy to a temp name, then rename into place.
            let tmp = dst.join(format!(".keep-{}", name.to_string_lossy()));
            std::fs::copy(&from, &tmp)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &to)?;
        }
        std::fs::File::open(&to)?.sync_all()?;
        added += 1;
    }
    std::fs::File::open(dst)?.sync_all()?;
    if let Some(parent) = dst.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(added)
}

/// `git update-ref <name> <new> <old>`: moves the ref only if it is still at `old` (all zeros:
/// only if it does not exist). Fails, changing nothing, when someone moved it since.
pub fn update_ref(repo: &Path, name: &str, new: &str, old: &str) -> Result<(), QuarantineError> {
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args([
            "update-ref",
            "-m",
            "magrathea: push journal",
            name,
            new,
            old,
        ])
        .env_remove("GIT_DIR")
        .env_remove("GIT_QUARANTINE_PATH")
        .env_remove("GIT_OBJECT_DIRECTORY")
        .env_remove("GIT_ALTERNATE_OBJECT_DIRECTORIES")
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(QuarantineError::UpdateRef(
            name.to_string(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// What a ref points at now; None when it does not exist.
pub fn ref_value(repo: &Path, name: &str) -> Option<String> {
    let r = git2::Repository::open_bare(repo).ok()?;
    let id = r.find_reference(name).ok()?.target()?;
    Some(id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Objects of another object dir (loose and packed) become readable in the repository,
    /// and refs move only from the value they are expected to have.
    #[test]
    fn kept_objects_are_in_the_repo_and_refs_move_by_compare_and_swap() {
        let t = tempfile::tempdir().unwrap();
        let (repo, work) = (t.path().join("r.git"), t.path().join("w"));
        std::fs::create_dir_all(&work).unwrap();
        git(t.path(), &["init", "-q", "--bare", repo.to_str().unwrap()]);
        git(&work, &["init", "-q"]);
        std::fs::write(work.join("a"), "1").unwrap();
        git(&work, &["add", "a"]);
        git(&work, &["commit", "-qm", "one"]);
        git(&work, &["repack", "-adq"]);
        std::fs::write(work.join("a"), "2").unwrap();
        git(&work, &["commit", "-qam", "two"]);
        let (one, two) = (
            git(&work, &["rev-parse", "HEAD~"]),
            git(&work, &["rev-parse", "HEAD"]),
        );
        let added = keep_objects(&repo, &work.join(".git/objects")).unwrap();
        assert!(added >= 3, "{added}");
        assert_eq!(keep_objects(&repo, &work.join(".git/objects")).unwrap(), 0);
        git(&repo, &["cat-file", "-e", &two]);
        git(&repo, &["cat-file", "-e", &format!("{one}^{{tree}}")]);

        let zero = "0".repeat(40);
        update_ref(&repo, "refs/heads/main", &one, &zero).unwrap();
        assert!(update_ref(&repo, "refs/heads/main", &two, &zero).is_err());
        assert!(update_ref(&repo, "refs/heads/main", &two, &two).is_err());
        assert_eq!(ref_value(&repo, "refs/heads/main").unwrap(), one);
        update_ref(&repo, "refs/heads/main", &two, &one).unwrap();
        assert_eq!(ref_value(&repo, "refs/heads/main").unwrap(), two);
        assert_eq!(ref_value(&repo, "refs/heads/nope"), None);
    }
}
