//! Git submodules of a pushed commit, fetched at build time from the URLs in `.gitmodules`
//! (over the server's network) and exported at the commit the superproject records,
//! recursively. Each URL's objects are kept in a bare repository under
//! `<data>/submodule-cache/`, so a commit already fetched costs no network the next time.
//! Only https://, http:// and git:// URLs are fetched: `file://` would read the server's
//! own repositories, and ssh needs credentials the server does not have.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::Digest;

use crate::build::fetch;
use crate::git::export::{self, Submodule};

/// Nesting and count limits: a submodule graph is pushed by the user.
const MAX_DEPTH: usize = 8;
const MAX_SUBMODULES: usize = 200;

/// One lock per cache repository: two builds fetching into one repo would fight over refs.
fn lock_for(repo: &Path) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: Mutex<Option<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>> = Mutex::new(None);
    let mut g = LOCKS.lock().unwrap_or_else(|p| p.into_inner());
    g.get_or_insert_with(HashMap::new)
        .entry(repo.to_path_buf())
        .or_default()
        .clone()
}

/// The URL, if it is one the server may fetch.
fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("./") || url.starts_with("../") {
        return Err(format!(
            "its URL {url} is relative to the remote it was cloned from, which a push does not \
             have; use an absolute https:// URL in .gitmodules"
        ));
    }
    let lower = url.to_ascii_lowercase();
    if !["https://", "http://", "git://"]
        .iter()
        .any(|s| lower.starts_with(s) && lower.len() > s.len())
    {
        return Err(format!(
            "its URL {url} is not fetched (only https://, http:// and git:// URLs are; \
             ssh needs keys the server does not have)"
        ));
    }
    if url.starts_with('-')
        || url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return Err(format!("its URL {url:?} is malformed"));
    }
    Ok(())
}

fn has_commit(repo: &Path, commit: &str) -> bool {
    let Ok(r) = git2::Repository::open_bare(repo) else {
        return false;
    };
    let found = git2::Oid::from_str(commit)
        .ok()
        .is_some_and(|o| r.find_commit(o).is_ok());
    found
}

/// The cache repository of `url`, holding `commit` (fetched if needed).
async fn ensure(cache: &Path, url: &str, commit: &str) -> Result<PathBuf, String> {
    let name = hex::encode(&sha2::Sha256::digest(url.as_bytes())[..12]);
    let repo = cache.join(format!("{name}.git"));
    let lock = lock_for(&repo);
    let _held = lock.lock().await;
    let (r, c) = (repo.clone(), commit.to_string());
    let present = tokio::task::spawn_blocking(move || has_commit(&r, &c))
        .await
        .unwrap_or(false);
    if present {
        return Ok(repo);
    }
    if !repo.exists() {
        std::fs::create_dir_all(cache).map_err(|e| e.to_string())?;
        let tmp = cache.join(format!(".init-{}", crate::keys::random_hex(6)));
        git2::Repository::init_bare(&tmp).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &repo).map_err(|e| e.to_string())?;
    }
    // Every branch and tag (what a plain clone gets), then the commit itself for servers
    // that let a client ask for a commit nobody advertises.
    let mut all = fetch::git(cache);
    all.arg("-C").arg(&repo).args([
        "fetch",
        "--quiet",
        "--no-tags",
        "--",
        url,
        "+refs/heads/*:refs/fetched/heads/*",
        "+refs/tags/*:refs/fetched/tags/*",
    ]);
    fetch::run(all).await?;
    let (r, c) = (repo.clone(), commit.to_string());
    if tokio::task::spawn_blocking(move || has_commit(&r, &c))
        .await
        .unwrap_or(false)
    {
        return Ok(repo);
    }
    let mut one = fetch::git(cache);
    one.arg("-C")
        .arg(&repo)
        .args(["fetch", "--quiet", "--no-tags", "--", url, commit]);
    match fetch::run(one).await {
        Ok(_) => Ok(repo),
        Err(_) => Err(format!("commit {} is not there", &commit[..7])),
    }
}

/// Fetch and export every submodule of the tree exported at `dst`, and theirs. `say`
/// receives progress lines. The error names the submodule and its URL.
pub async fn fetch_all(
    cache: &Path,
    dst: &Path,
    top: Vec<Submodule>,
    mut say: impl FnMut(String),
) -> Result<usize, String> {
    let mut queue: Vec<(usize, Submodule)> = top.into_iter().map(|s| (1, s)).collect();
    queue.reverse();
    let mut done = 0;
    while let Some((depth, sub)) = queue.pop() {
        done += 1;
        if done > MAX_SUBMODULES || depth > MAX_DEPTH {
            return Err(format!(
                "more than {MAX_SUBMODULES} submodules, or nested deeper than {MAX_DEPTH}"
            ));
        }
        let fail = |why: String| format!("submodule '{}': {why}", sub.path);
        let url = sub
            .url
            .clone()
            .ok_or_else(|| fail("no URL for this path in .gitmodules".into()))?;
        check_url(&url).map_err(fail)?;
        say(format!(
            "-----> Fetching submodule {} from {url} at {}",
            sub.path,
            &sub.commit[..7]
        ));
        let repo = ensure(cache, &url, &sub.commit)
            .await
            .map_err(|e| fail(format!("cannot fetch {url}: {e}")))?;
        let (c, at) = (sub.commit.clone(), dst.join(&sub.path));
        let exported = tokio::task::spawn_blocking(move || {
            let r = git2::Repository::open_bare(&repo).map_err(export::ExportError::from)?;
            export::export(&r, &export::Quarantine::default(), &c, None, &at)
        })
        .await
        .map_err(|e| fail(e.to_string()))?
        .map_err(|e| fail(e.to_string()))?;
        // Its own submodules, found at paths relative to it.
        for mut s in exported.submodules.into_iter().rev() {
            s.path = format!("{}/{}", sub.path, s.path);
            queue.push((depth + 1, s));
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_the_server_fetches() {
        assert!(check_url("https://example.com/org/lib.git").is_ok());
        assert!(check_url("git://example.com/lib").is_ok());
        for bad in [
            "../lib.git",
            "./lib",
            "git@example.com:org/lib.git",
            "ssh://git@example.com/lib",
            "file:///srv/git/lib",
            "/srv/git/lib",
            "ext::sh -c touch% /tmp/x",
            "https://",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }
}
