//! Exporting a pushed commit's tree to a directory with git2, reading the push's quarantined
//! objects (they are not in the repository until pre-receive says yes). Walks the tree; no
//! index, no checkout. Symlinks stay symlinks; `.slugignore` is honoured. Submodules are
//! listed with the URL `.gitmodules` gives them, for the build to fetch (`submodules.rs`).

use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository, Tree};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ExportError {
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    #[error("export: {0}")]
    Io(#[from] std::io::Error),
    #[error("refusing tree entry {0:?}")]
    BadEntry(String),
    /// The app's build dir is not a directory of the pushed commit.
    #[error("build dir {0}/ is not a directory in commit {1}")]
    NoBuildDir(String, String),
}

/// Where the pushed objects live while the push is in quarantine.
#[derive(Debug, Clone, Default)]
pub struct Quarantine {
    pub object_dir: Option<String>,
    pub alternates: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Exported {
    pub commit: String,
    /// Commit time: the release's file mtimes, so rebuilds are reproducible.
    pub commit_time: i64,
    pub files: usize,
    /// Gitlinks met in the tree, not exported: the build fetches them.
    pub submodules: Vec<Submodule>,
}

/// A submodule of the exported tree: where it goes, the commit recorded there, and its URL
/// from `.gitmodules` (None when `.gitmodules` has no entry for that path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submodule {
    pub path: String,
    pub commit: String,
    pub url: Option<String>,
}

pub fn open(repo: &Path, q: &Quarantine) -> Result<Repository, ExportError> {
    let r = Repository::open_bare(repo)?;
    {
        let odb = r.odb()?;
        if let Some(d) = &q.object_dir {
            odb.add_disk_alternate(d)?;
        }
        if let Some(alts) = &q.alternates {
            for a in alts.split(':').filter(|a| !a.is_empty()) {
                if Path::new(a).is_dir() {
                    odb.add_disk_alternate(a)?;
                }
            }
        }
    }
    Ok(r)
}

/// Peel a pushed object id (commit or annotated tag) to its commit id and time.
pub fn resolve(repo: &Repository, oid: &str) -> Result<(String, i64), ExportError> {
    let obj = repo.find_object(Oid::from_str(oid)?, None)?;
    let commit = obj.peel_to_commit()?;
    Ok((commit.id().to_string(), commit.time().seconds()))
}

/// The tree an app builds from: `commit`'s root, or the directory `base` in it (a tree
/// entry, looked up object by object: never a symlink, a submodule or a file).
fn app_tree<'r>(
    repo: &'r Repository,
    commit: &git2::Commit<'r>,
    base: Option<&str>,
) -> Result<Tree<'r>, ExportError> {
    let root = commit.tree()?;
    let Some(base) = base else {
        return Ok(root);
    };
    let missing = || {
        let id = commit.id().to_string();
        ExportError::NoBuildDir(base.to_string(), id[..7].to_string())
    };
    let entry = root.get_path(Path::new(base)).map_err(|_| missing())?;
    if entry.kind() != Some(ObjectType::Tree) {
        return Err(missing());
    }
    Ok(repo.find_tree(entry.id())?)
}

/// A regular file at the top of the app's tree (`commit`'s root, or its build dir `base`;
/// not a symlink, not a directory), read from the object database: for what must be known
/// before the tree is exported.
pub fn read_top_file(
    repo: &Repository,
    commit: &str,
    base: Option<&str>,
    name: &str,
) -> Option<Vec<u8>> {
    let c = repo.find_commit(Oid::from_str(commit).ok()?).ok()?;
    let tree = app_tree(repo, &c, base).ok()?;
    let entry = tree.get_name(name)?;
    if !matches!(entry.filemode(), 0o100644 | 0o100755) {
        return None;
    }
    let blob = repo.find_blob(entry.id()).ok()?;
    (blob.size() <= 1 << 20).then(|| blob.content().to_vec())
}

fn slugignore(repo: &Repository, tree: &Tree) -> Vec<String> {
    let Some(entry) = tree.get_name(".slugignore") else {
        return vec![];
    };
    let Ok(blob) = repo.find_blob(entry.id()) else {
        return vec![];
    };
    String::from_utf8_lossy(blob.content())
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_start_matches('/').trim_end_matches('/').to_string())
        .collect()
}

/// path -> url from the tree's `.gitmodules` (git's config syntax: `[submodule "name"]`
/// sections with `path = ...` and `url = ...`; quotes and comments handled, includes not).
fn gitmodules(repo: &Repository, tree: &Tree) -> std::collections::HashMap<String, String> {
    let Some(entry) = tree.get_name(".gitmodules") else {
        return Default::default();
    };
    let Ok(blob) = repo.find_blob(entry.id()) else {
        return Default::default();
    };
    parse_gitmodules(&String::from_utf8_lossy(blob.content()))
}

fn parse_gitmodules(text: &str) -> std::collections::HashMap<String, String> {
    let mut sections: Vec<(Option<String>, Option<String>)> = vec![];
    let mut in_submodule = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[') {
            in_submodule = section.trim_start().starts_with("submodule");
            if in_submodule {
                sections.push((None, None));
            }
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if !in_submodule {
            continue;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .unwrap_or(v)
            .to_string();
        let Some(cur) = sections.last_mut() else {
            continue;
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "path" => cur.0 = Some(v.trim_end_matches('/').to_string()),
            "url" => cur.1 = Some(v),
            _ => {}
        }
    }
    sections
        .into_iter()
        .filter_map(|(p, u)| Some((p?, u?)))
        .collect()
}

fn ignored(patterns: &[String], rel: &str) -> bool {
    let base = rel.rsplit('/').next().unwrap_or(rel);
    patterns.iter().any(|p| {
        if p.contains('/') {
            crate::names::glob_match(p, rel)
        } else {
            crate::names::glob_match(p, base)
        }
    })
}

/// Writes `commit`'s tree to `dst`, or only its directory `base` (a monorepo app's build
/// dir) as if it were the root: its `.slugignore`, its submodules (at paths relative to it;
/// those outside it are not listed), its links as they are. `q` names where the push's
/// objects are while it is in quarantine (the default when exporting from a plain
/// repository).
pub fn export(
    repo: &Repository,
    q: &Quarantine,
    commit: &str,
    base: Option<&str>,
    dst: &Path,
) -> Result<Exported, ExportError> {
    let c = repo.find_commit(Oid::from_str(commit)?)?;
    let time = c.time().seconds();
    let tree = app_tree(repo, &c, base)?;
    let patterns = slugignore(repo, &tree);
    std::fs::create_dir_all(dst)?;
    let mut out = Exported {
        commit: commit.to_string(),
        commit_time: time,
        files: 0,
        submodules: vec![],
    };
    let cx = Walk {
        repo,
        q,
        patterns: &patterns,
        mtime: time,
    };
    cx.walk(&tree, dst, "", &mut out)?;
    // `.gitmodules` is the repository's, at its root, with paths from there.
    let urls = gitmodules(repo, &c.tree()?);
    for s in &mut out.submodules {
        let from_root = match base {
            Some(b) => format!("{b}/{}", s.path),
            None => s.path.clone(),
        };
        s.url = urls.get(&from_root).cloned();
    }
    Ok(out)
}

/// One export's fixed inputs, so the recursive walk carries only where it is.
struct Walk<'a> {
    repo: &'a Repository,
    q: &'a Quarantine,
    patterns: &'a [String],
    mtime: i64,
}

impl Walk<'_> {
    fn walk(
        &self,
        tree: &Tree,
        dir: &Path,
        prefix: &str,
        out: &mut Exported,
    ) -> Result<(), ExportError> {
        let (repo, mtime) = (self.repo, self.mtime);
        for e in tree.iter() {
            let name = String::from_utf8_lossy(e.name_bytes()).into_owned();
            // git's fsck already refuses these; never trust that alone with a path.
            if name.is_empty()
                || name == "."
                || name == ".."
                || name.contains('/')
                || name.contains('\0')
                || name.eq_ignore_ascii_case(".git")
            {
                return Err(ExportError::BadEntry(format!("{prefix}{name}")));
            }
            let rel = format!("{prefix}{name}");
            if ignored(self.patterns, &rel) {
                continue;
            }
            let path: PathBuf = dir.join(&name);
            match (e.kind(), e.filemode()) {
                (Some(ObjectType::Tree), _) => {
                    std::fs::create_dir(&path)?;
                    let sub = repo.find_tree(e.id())?;
                    self.walk(&sub, &path, &format!("{rel}/"), out)?;
                }
                (Some(ObjectType::Blob), 0o120000) => {
                    let blob = repo.find_blob(e.id())?;
                    let target = std::ffi::OsStr::from_encoded_bytes_checked(blob.content());
                    std::os::unix::fs::symlink(target, &path)?;
                    out.files += 1;
                }
                (Some(ObjectType::Blob), mode) => {
                    write_blob(repo, self.q, e.id(), &path)?;
                    let perm = if mode == 0o100755 { 0o755 } else { 0o644 };
                    crate::fsutil::set_mode(&path, perm)?;
                    let f = std::fs::File::options().write(true).open(&path)?;
                    f.set_modified(
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime.max(0) as u64),
                    )?;
                    out.files += 1;
                }
                (Some(ObjectType::Commit), _) => out.submodules.push(Submodule {
                    path: rel,
                    commit: e.id().to_string(),
                    url: None,
                }),
                _ => return Err(ExportError::BadEntry(rel)),
            }
        }
        Ok(())
    }
}

/// Packed blobs above this size are copied out by a `git cat-file` child rather than read
/// whole by libgit2 (which cannot stream a packed object).
const STREAM_PACKED_ABOVE: usize = 8 << 20;

/// Writes a blob to `path` without holding it whole in controller memory: a loose object
/// (a small push's objects always are) is streamed from the object database; a big packed
/// one (git keeps a push of 100 objects or more as a pack) is copied by `git cat-file`, whose
/// memory is its own and, with a low `core.bigFileThreshold`, bounded too for a blob stored
/// whole in its pack. Small packed blobs are read whole: cheaper than a process.
fn write_blob(repo: &Repository, q: &Quarantine, id: Oid, path: &Path) -> Result<(), ExportError> {
    let odb = repo.odb()?;
    if let Ok((mut reader, _, ObjectType::Blob)) = odb.reader(id) {
        let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
        std::io::copy(&mut reader, &mut f)?;
        std::io::Write::flush(&mut f)?;
        return Ok(());
    }
    if odb.read_header(id)?.0 > STREAM_PACKED_ABOVE {
        return cat_file(repo.path(), q, id, path);
    }
    let blob = repo.find_blob(id)?;
    std::fs::write(path, blob.content())?;
    Ok(())
}

/// `git cat-file blob ID > path`, seeing the quarantined objects as alternates.
fn cat_file(git_dir: &Path, q: &Quarantine, id: Oid, path: &Path) -> Result<(), ExportError> {
    let alternates: Vec<&str> = q
        .object_dir
        .iter()
        .map(String::as_str)
        .chain(q.alternates.iter().flat_map(|a| a.split(':')))
        .filter(|a| !a.is_empty())
        .collect();
    let out = std::fs::File::create(path)?;
    let mut cmd = std::process::Command::new("git");
    cmd.arg("--git-dir")
        .arg(git_dir)
        .args(["-c", "core.bigFileThreshold=1m", "cat-file", "blob"])
        .arg(id.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(std::process::Stdio::piped());
    // Only what we say: never a GIT_DIR or object directory inherited from a hook.
    for v in [
        "GIT_DIR",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_QUARANTINE_PATH",
    ] {
        cmd.env_remove(v);
    }
    if !alternates.is_empty() {
        cmd.env("GIT_ALTERNATE_OBJECT_DIRECTORIES", alternates.join(":"));
    }
    let done = cmd.output()?;
    if !done.status.success() {
        let why = String::from_utf8_lossy(&done.stderr);
        return Err(ExportError::Io(std::io::Error::other(format!(
            "git cat-file blob {id}: {}",
            why.lines().next().unwrap_or("failed")
        ))));
    }
    Ok(())
}

trait FromBytes {
    fn from_encoded_bytes_checked(b: &[u8]) -> &std::ffi::OsStr;
}

impl FromBytes for std::ffi::OsStr {
    fn from_encoded_bytes_checked(b: &[u8]) -> &std::ffi::OsStr {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::OsStr::from_bytes(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitmodules_parsing() {
        let m = parse_gitmodules(
            "[submodule \"lib/shared\"]\n\tpath = lib/shared\n\turl = https://example.com/org/shared.git\n\
             # comment\n[core]\n\turl = nope\n[submodule \"x\"]\n\tpath = \"vendor/x/\"\n\turl = ../x.git\n\
             [submodule \"no-url\"]\n\tpath = y\n",
        );
        assert_eq!(m.len(), 2);
        assert_eq!(m["lib/shared"], "https://example.com/org/shared.git");
        assert_eq!(m["vendor/x"], "../x.git");
    }

    /// A commit of `files` ((path, content or link target, mode)), trees made as needed.
    fn commit_of(repo: &Repository, files: &[(&str, &str, i32)]) -> String {
        /// A file's path split in parts, its content and mode.
        type Entry<'a> = (Vec<&'a str>, &'a str, i32);
        fn tree(repo: &Repository, files: &[Entry]) -> Oid {
            let mut b = repo.treebuilder(None).unwrap();
            let mut dirs: std::collections::BTreeMap<&str, Vec<Entry>> = Default::default();
            for (parts, content, mode) in files {
                if parts.len() == 1 {
                    let id = match *mode {
                        0o160000 => Oid::from_str(content).unwrap(),
                        _ => repo.blob(content.as_bytes()).unwrap(),
                    };
                    b.insert(parts[0], id, *mode).unwrap();
                } else {
                    dirs.entry(parts[0])
                        .or_default()
                        .push((parts[1..].to_vec(), content, *mode));
                }
            }
            for (name, sub) in dirs {
                b.insert(name, tree(repo, &sub), 0o040000).unwrap();
            }
            b.write().unwrap()
        }
        let split: Vec<_> = files
            .iter()
            .map(|(p, c, m)| (p.split('/').collect::<Vec<_>>(), *c, *m))
            .collect();
        let t = repo.find_tree(tree(repo, &split)).unwrap();
        let sig = git2::Signature::new("t", "t@example.com", &git2::Time::new(1, 0)).unwrap();
        repo.commit(None, &sig, &sig, "c", &t, &[])
            .unwrap()
            .to_string()
    }

    #[test]
    fn a_build_dir_is_exported_as_the_root() {
        let d = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(d.path().join("r")).unwrap();
        let sub = "0123456789012345678901234567890123456789";
        let c = commit_of(
            &repo,
            &[
                ("Procfile", "web: root\n", 0o100644),
                (".slugignore", "*.txt\n", 0o100644),
                (
                    ".gitmodules",
                    "[submodule \"t\"]\n\tpath = apps/api/theme\n\turl = https://example.com/t.git\n\
                     [submodule \"o\"]\n\tpath = vendor/o\n\turl = https://example.com/o.git\n",
                    0o100644,
                ),
                ("apps/api/Procfile", "web: api\n", 0o100644),
                ("apps/api/.slugignore", "*.psd\n", 0o100644),
                ("apps/api/art.psd", "x", 0o100644),
                ("apps/api/notes.txt", "kept", 0o100644),
                ("apps/api/up", "../../Procfile", 0o120000),
                ("apps/api/theme", sub, 0o160000),
                ("apps/link", "api", 0o120000),
                ("vendor/o", sub, 0o160000),
            ],
        );
        let q = Quarantine::default();
        let dst = d.path().join("out");
        let x = export(&repo, &q, &c, Some("apps/api"), &dst).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&dst)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [".slugignore", "Procfile", "notes.txt", "up"]);
        assert_eq!(
            std::fs::read_to_string(dst.join("Procfile")).unwrap(),
            "web: api\n"
        );
        assert_eq!(
            std::fs::read_link(dst.join("up")).unwrap(),
            Path::new("../../Procfile")
        );
        assert_eq!(
            x.submodules,
            [Submodule {
                path: "theme".into(),
                commit: sub.into(),
                url: Some("https://example.com/t.git".into()),
            }]
        );
        assert_eq!(
            read_top_file(&repo, &c, Some("apps/api"), "Procfile").as_deref(),
            Some(&b"web: api\n"[..])
        );
        assert_eq!(
            read_top_file(&repo, &c, None, "Procfile").as_deref(),
            Some(&b"web: root\n"[..])
        );
        // Not a directory of the commit: missing, a file, a link to one, a submodule.
        for base in [
            "apps/web",
            "Procfile",
            "apps/link",
            "apps/api/theme",
            "apps/api/Procfile/x",
        ] {
            let e = export(&repo, &q, &c, Some(base), &d.path().join("no")).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("build dir {base}/ is not a directory in commit {}", &c[..7])
            );
            assert!(read_top_file(&repo, &c, Some(base), "Procfile").is_none());
        }
    }

    #[test]
    fn slugignore_patterns() {
        let p = vec![
            "*.psd".to_string(),
            "docs".to_string(),
            "test/fixtures".to_string(),
        ];
        assert!(ignored(&p, "art/logo.psd"));
        assert!(ignored(&p, "docs"));
        assert!(ignored(&p, "test/fixtures"));
        assert!(!ignored(&p, "test/unit"));
        assert!(!ignored(&p, "src/main.py"));
    }
}
