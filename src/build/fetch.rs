//! Buildpacks named by URL: a git repository (`https://host/org/repo.git#ref`, also without
//! `.git`) or a tarball (`.tgz`, `.tar.gz`). The controller fetches them (builds never
//! fetch their own buildpacks) into `<data>/buildpack-cache/<key>/`, one entry per URL and
//! ref, and reuses that copy until `builds:purge-cache` asks for a fresh one. A source that
//! cannot be reached fails the build at once, naming the URL, unless a copy is cached.
//!
//! git and curl run as child processes with an argument vector and a cleared environment,
//! like every other git the server spawns. curl rather than the in-tree HTTP client: public
//! buildpack tarballs are served over TLS and through redirects, which hyper alone does not
//! do here. Tarballs go through the release unpacker, which is built for hostile archives.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sha2::Digest;
use thiserror::Error;

use crate::fsutil;

/// A fetch that takes longer than this is abandoned (a stalled server must not hold a push).
const FETCH_TIMEOUT: Duration = Duration::from_secs(300);
/// The most a tarball may weigh.
const MAX_TARBALL: u64 = 512 << 20;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FetchError {
    #[error("buildpack URL '{0}': {1}")]
    BadUrl(String, String),
    #[error("cannot fetch buildpack {0}: {1}")]
    Unreachable(String, String),
    #[error("buildpack {0} has no bin/compile{1}")]
    NotABuildpack(String, String),
    #[error("buildpack cache: {0}")]
    Io(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Git,
    Tarball,
}

/// A buildpack named by URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// As the user wrote it (shown in output, part of the cache key).
    pub spec: String,
    /// Without the `#ref`.
    pub url: String,
    pub git_ref: Option<String>,
    pub source: Source,
}

impl Remote {
    /// `None` when `spec` is not a URL (a builtin name or a directory in the repo).
    pub fn parse(spec: &str) -> Option<Result<Remote, FetchError>> {
        let spec = spec.trim();
        let scheme = ["https://", "http://", "git://"].iter().find(|s| {
            spec.get(..s.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(s))
        })?;
        // Echoed without control characters (the very thing that may be wrong with it).
        let shown = || spec.chars().filter(|c| !c.is_control()).take(200).collect();
        let bad = |why: &str| Some(Err(FetchError::BadUrl(shown(), why.to_string())));
        if spec.len() > 2048 {
            return bad("longer than 2048 characters");
        }
        if spec
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "\\\"'`<>".contains(c))
        {
            return bad("has spaces, quotes or control characters");
        }
        let (url, git_ref) = match spec.split_once('#') {
            Some((u, r)) => (u, Some(r)),
            None => (spec, None),
        };
        let host = url[scheme.len()..].split('/').next().unwrap_or("");
        if host.is_empty() || host.starts_with('-') {
            return bad("has no host");
        }
        if let Some(r) = git_ref {
            let ok = !r.is_empty()
                && !r.starts_with('-')
                && !r.contains("..")
                && r.len() <= 200
                && r.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._/-+".contains(c));
            if !ok {
                return bad("the part after # must be a branch, tag or commit");
            }
        }
        let path = url[scheme.len()..]
            .split(['?', '#'])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let source = if path.ends_with(".tgz") || path.ends_with(".tar.gz") {
            if git_ref.is_some() {
                return bad("a tarball URL takes no #ref");
            }
            if scheme == &"git://" {
                return bad("tarballs are fetched over http(s)");
            }
            Source::Tarball
        } else {
            Source::Git
        };
        Some(Ok(Remote {
            spec: spec.to_string(),
            url: url.to_string(),
            git_ref: git_ref.map(String::from),
            source,
        }))
    }

    /// The cache entry's name: a hash of the URL and ref.
    pub fn key(&self) -> String {
        hex::encode(&sha2::Sha256::digest(self.spec.as_bytes())[..10])
    }

    /// A short name for output and the staged directory: the last path segment without
    /// `.git`, `.tgz` or `.tar.gz`.
    pub fn name(&self) -> String {
        let last = self
            .url
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("buildpack")
            .split('?')
            .next()
            .unwrap_or("");
        let lower = last.to_ascii_lowercase();
        let cut = [".tar.gz", ".tgz", ".git"]
            .iter()
            .find(|s| lower.ends_with(*s))
            .map_or(0, |s| s.len());
        let base: String = last[..last.len() - cut]
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let base = base.trim_start_matches('.');
        if base.is_empty() {
            "buildpack".into()
        } else {
            base.to_string()
        }
    }
}

/// The cached tree of `r` (fetching it when there is none, or when `refresh`), and a line
/// saying what happened.
pub async fn fetch(
    cache: &Path,
    r: &Remote,
    refresh: bool,
) -> Result<(PathBuf, String), FetchError> {
    let entry = cache.join(r.key());
    let tree = entry.join("tree");
    if !refresh && is_file(&tree, "bin/compile") {
        let what = std::fs::read_to_string(entry.join("fetched")).unwrap_or_default();
        return Ok((tree, format!("using cached {} {}", r.spec, what.trim())));
    }
    let io = |e: std::io::Error| FetchError::Io(e.to_string());
    std::fs::create_dir_all(cache).map_err(io)?;
    let tmp = cache.join(format!(".fetch-{}", crate::keys::random_hex(6)));
    std::fs::create_dir(&tmp).map_err(io)?;
    let result = fetch_into(r, &tmp).await;
    let what = match result {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    let _ = std::fs::write(tmp.join("fetched"), format!("{what}\n"));
    let _ = std::fs::write(tmp.join("source"), format!("{}\n", r.spec));
    // Into place without a window where the entry is missing: a fresh one by a no-replace
    // rename (a concurrent fetch of the same URL may have won: keep theirs), a refreshed
    // one by exchanging the two directories.
    let placed = match fsutil::rename_noreplace(&tmp, &entry) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if refresh {
                fsutil::rename_exchange(&tmp, &entry)
            } else {
                Ok(())
            }
        }
        Err(e) => Err(e),
    };
    // After an exchange, `tmp` holds the old copy; after a lost race, our own.
    let _ = crate::release::extract::remove_tree(&tmp);
    placed.map_err(io)?;
    Ok((tree, format!("fetched {} {what}", r.spec)))
}

async fn fetch_into(r: &Remote, dir: &Path) -> Result<String, FetchError> {
    let tree = dir.join("tree");
    let what = match r.source {
        Source::Git => fetch_git(r, dir, &tree).await?,
        Source::Tarball => fetch_tarball(r, dir, &tree).await?,
    };
    if is_file(&tree, "bin/compile") {
        Ok(what)
    } else {
        Err(FetchError::NotABuildpack(r.spec.clone(), String::new()))
    }
}

/// The environment git and curl get: nothing of the server's but PATH, the proxy and CA
/// settings, and a HOME of their own (no user or system git config).
fn child(program: &str, home: &Path) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(program);
    c.env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for k in [
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "GIT_SSL_CAINFO",
        "CURL_CA_BUNDLE",
    ] {
        if let Some(v) = std::env::var_os(k) {
            c.env(k, v);
        }
    }
    c
}

/// git with the transports a buildpack URL may use and nothing else (no `file://`, which
/// would read the server's own repositories, no `ext::`).
pub(crate) fn git(home: &Path) -> tokio::process::Command {
    let mut c = child("git", home);
    c.args([
        "-c",
        "protocol.allow=never",
        "-c",
        "protocol.https.allow=always",
        "-c",
        "protocol.http.allow=always",
        "-c",
        "protocol.git.allow=always",
        "-c",
        "advice.detachedHead=false",
        "-c",
        "http.lowSpeedLimit=1000",
        "-c",
        "http.lowSpeedTime=60",
    ]);
    c
}

/// Run to the end within [`FETCH_TIMEOUT`]; Err(last line of stderr) on failure.
pub(crate) async fn run(mut c: tokio::process::Command) -> Result<String, String> {
    let out = match tokio::time::timeout(FETCH_TIMEOUT, c.output()).await {
        Err(_) => return Err(format!("no answer within {}s", FETCH_TIMEOUT.as_secs())),
        Ok(Err(e)) => return Err(e.to_string()),
        Ok(Ok(o)) => o,
    };
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("failed")
        .trim_start_matches("fatal: ")
        .trim_start_matches("curl: ")
        .to_string();
    Err(last)
}

async fn fetch_git(r: &Remote, dir: &Path, tree: &Path) -> Result<String, FetchError> {
    let unreachable = |e: String| FetchError::Unreachable(r.url.clone(), e);
    // Shallow first: a branch or tag in one round trip. Servers that cannot (dumb HTTP) or
    // a ref that is a commit id take a full clone and a checkout.
    let mut shallow = git(dir);
    shallow.args(["clone", "--quiet", "--depth", "1"]);
    if let Some(b) = &r.git_ref {
        shallow.args(["--branch", b]);
    }
    shallow.arg("--").arg(&r.url).arg(tree);
    if let Err(first) = run(shallow).await {
        let _ = std::fs::remove_dir_all(tree);
        let mut full = git(dir);
        full.args(["clone", "--quiet", "--no-checkout", "--"])
            .arg(&r.url)
            .arg(tree);
        if let Err(e) = run(full).await {
            // The shallow attempt's error says more when the source is simply not there.
            let why = if first.contains("shallow") { e } else { first };
            return Err(unreachable(why));
        }
        let mut co = git(dir);
        co.arg("-C").arg(tree).args(["checkout", "--quiet"]);
        match &r.git_ref {
            Some(rf) => co.args([rf.as_str(), "--"]),
            None => co.args(["HEAD", "--"]),
        };
        run(co).await.map_err(|e| {
            unreachable(format!(
                "no ref '{}' there ({e})",
                r.git_ref.as_deref().unwrap_or("HEAD")
            ))
        })?;
    }
    let mut head = git(dir);
    head.arg("-C").arg(tree).args(["rev-parse", "HEAD"]);
    let commit = run(head).await.unwrap_or_default();
    crate::release::extract::remove_tree(&tree.join(".git"))
        .map_err(|e| FetchError::Io(e.to_string()))?;
    Ok(format!("(commit {})", commit.get(..12).unwrap_or(&commit)))
}

async fn fetch_tarball(r: &Remote, dir: &Path, tree: &Path) -> Result<String, FetchError> {
    let file = dir.join("download.tgz");
    let mut curl = child("curl", dir);
    curl.args([
        "--fail",
        "--silent",
        "--show-error",
        "--location",
        "--proto",
        "=http,https",
        "--proto-redir",
        "=http,https",
        "--max-redirs",
        "10",
        "--connect-timeout",
        "30",
        "--max-time",
        &FETCH_TIMEOUT.as_secs().to_string(),
        "--max-filesize",
        &MAX_TARBALL.to_string(),
        "--output",
    ])
    .arg(&file)
    .arg("--")
    .arg(&r.url);
    run(curl)
        .await
        .map_err(|e| FetchError::Unreachable(r.url.clone(), e))?;
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let unpack_dir = dir.join("unpacked");
    std::fs::create_dir(&unpack_dir).map_err(|e| FetchError::Io(e.to_string()))?;
    let (f, u) = (file.clone(), unpack_dir.clone());
    tokio::task::spawn_blocking(move || {
        let src = std::fs::File::open(&f)?;
        crate::release::extract::unpack_foreign(std::io::BufReader::new(src), &u)
            .map_err(|e| std::io::Error::other(e.to_string()))
    })
    .await
    .map_err(|e| FetchError::Io(e.to_string()))?
    .map_err(|e| {
        FetchError::NotABuildpack(r.spec.clone(), format!(" (not a usable tarball: {e})"))
    })?;
    let _ = std::fs::remove_file(&file);
    // A tarball holds the buildpack at its top, or in one directory (a forge's archive).
    let root = if is_file(&unpack_dir, "bin/compile") {
        unpack_dir.clone()
    } else {
        let entries: Vec<_> = std::fs::read_dir(&unpack_dir)
            .map_err(|e| FetchError::Io(e.to_string()))?
            .flatten()
            .collect();
        match entries.as_slice() {
            [one]
                if one.file_type().is_ok_and(|t| t.is_dir())
                    && is_file(&one.path(), "bin/compile") =>
            {
                one.path()
            }
            _ => return Err(FetchError::NotABuildpack(r.spec.clone(), String::new())),
        }
    };
    std::fs::rename(&root, tree).map_err(|e| FetchError::Io(e.to_string()))?;
    let _ = crate::release::extract::remove_tree(&unpack_dir);
    Ok(format!("({})", crate::build::human(size)))
}

/// `root/rel` is a regular file, reached without following any link (what was fetched is
/// someone else's tree).
fn is_file(root: &Path, rel: &str) -> bool {
    crate::safefs::kind(root, rel).is_ok_and(|k| k == crate::safefs::Kind::File)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_urls() {
        let r = Remote::parse("https://example.com/org/heroku-buildpack-apt.git#v2.1")
            .unwrap()
            .unwrap();
        assert_eq!(r.url, "https://example.com/org/heroku-buildpack-apt.git");
        assert_eq!(r.git_ref.as_deref(), Some("v2.1"));
        assert_eq!(r.source, Source::Git);
        assert_eq!(r.name(), "heroku-buildpack-apt");
        let r = Remote::parse("https://example.com/org/bp")
            .unwrap()
            .unwrap();
        assert_eq!((r.source, r.name().as_str()), (Source::Git, "bp"));
        let r = Remote::parse("http://127.0.0.1:8000/x/null-buildpack.tgz")
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.source, r.name().as_str()),
            (Source::Tarball, "null-buildpack")
        );
        assert_eq!(
            Remote::parse("HTTPS://h/a.tar.gz").unwrap().unwrap().source,
            Source::Tarball
        );
        assert_ne!(
            Remote::parse("https://h/a#v1").unwrap().unwrap().key(),
            Remote::parse("https://h/a#v2").unwrap().unwrap().key()
        );
        // Found by fuzzing: a multi-byte character inside the scheme's length panicked.
        for not_url in [
            "python",
            "./bp",
            "file:///etc",
            "ext::sh -c x",
            "https:/\u{e9}h/x",
            "git:/\u{e9}",
        ] {
            assert!(Remote::parse(not_url).is_none(), "{not_url}");
        }
        for bad in [
            "https://",
            "https:///x",
            "https://-oProxyCommand=x/y",
            "https://h/a#--upload-pack=x",
            "https://h/a#../x",
            "https://h/a b",
            "https://h/a.tgz#v1",
            "git://h/a.tgz",
        ] {
            assert!(
                matches!(Remote::parse(bad), Some(Err(FetchError::BadUrl(..)))),
                "{bad}"
            );
        }
    }
}
