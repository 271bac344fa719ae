//! Releases: immutable tarballs named `v<N>-<sha12>.tar.gz` under `<data>/releases/<app>/`.
//! This module is the only writer of that directory.

mod error;
pub mod extract;
pub mod pgzip;
pub mod tarball;
pub(crate) mod temp;

pub use error::ReleaseError;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::paths::DataDir;
use crate::store::{NewRelease, ReleaseRow, Store};

/// The manifest inside the tarball: only what the content determines, so the same commit
/// built with the same stack and buildpacks gives the same bytes. Version, ref and who
/// pushed live in the store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub app: String,
    pub git_sha: String,
    pub stack: String,
    pub stack_image: String,
    pub buildpacks: Vec<String>,
    pub processes: BTreeMap<String, String>,
    pub release: Option<String>,
    /// Defaults from the buildpacks' `bin/release` `config_vars` (the app's config wins).
    /// Left out when empty, so releases built before this field keep their bytes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config_vars: BTreeMap<String, String>,
    /// `bin/release` `addons`: recorded, never provisioned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addons: Vec<String>,
    /// The subdirectory of the commit the app was built from (a monorepo app's); left out
    /// for the root, so those releases keep their bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_dir: Option<String>,
}

pub fn file_name(version: i64, sha256: &str) -> String {
    format!("v{version}-{}.tar.gz", &sha256[..12])
}

/// Where a release came from: recorded in the store beside it, never in its bytes.
pub struct Origin<'a> {
    pub git_ref: &'a str,
    pub build_id: Option<i64>,
    /// The key that pushed it.
    pub key_name: &'a str,
}

/// Pack the slug, name it, record it. The file is in place (fsynced, renamed) before the
/// row exists; a crash in between leaves an unreferenced file, never a dangling row. A
/// tarball over `max_size` bytes (compressed, Heroku's measure of a slug) is refused:
/// [`ReleaseError::TooLarge`], nothing recorded.
pub async fn cook(
    data: &DataDir,
    store: &Store,
    manifest: &Manifest,
    slug: &Path,
    mtime: i64,
    max_size: u64,
    origin: &Origin<'_>,
) -> anyhow::Result<ReleaseRow> {
    let dir = data.releases(&manifest.app);
    std::fs::create_dir_all(&dir)?;
    let tmp = temp::cooking_path(&dir);
    let json = serde_json::to_vec_pretty(manifest)?;
    let packed = {
        let (slug, tmp) = (slug.to_path_buf(), tmp.clone());
        tokio::task::spawn_blocking(move || tarball::pack(&slug, &json, mtime.max(0) as u64, &tmp))
            .await??
    };
    crate::failpoint::hit("pack");
    if packed.size > max_size {
        let _ = std::fs::remove_file(&tmp);
        return Err(ReleaseError::TooLarge {
            size: packed.size,
            limit: max_size,
        }
        .into());
    }
    let version = store.next_release_version(&manifest.app)?;
    let name = file_name(version, &packed.sha256);
    let dst = dir.join(&name);
    let placed = std::fs::rename(&tmp, &dst).and_then(|_| std::fs::File::open(&dir)?.sync_all());
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    let row = NewRelease {
        app: &manifest.app,
        sha256: &packed.sha256,
        tar_sha256: &packed.tar_sha256,
        size: packed.size as i64,
        git_sha: &manifest.git_sha,
        git_ref: origin.git_ref,
        build_id: origin.build_id,
        manifest: &serde_json::to_string(manifest)?,
        key_name: origin.key_name,
    };
    if let Err(e) = store.insert_release(&row, version, &name) {
        let _ = std::fs::remove_file(&dst);
        return Err(e.into());
    }
    store
        .release(&manifest.app, version)?
        .ok_or_else(|| anyhow::anyhow!("release v{version} vanished"))
}

/// Keep the newest `keep` releases; never delete one that is pinned, or live or the
/// rollback target in any environment.
pub fn prune(data: &DataDir, store: &Store, app: &str, keep: usize) {
    let Ok(all) = store.list_releases(app) else {
        return;
    };
    // From the live table: a release row's own status stays 'cooked' whatever runs it.
    let Ok(live) = store.all_live() else {
        return;
    };
    let protected: std::collections::HashSet<i64> = live
        .iter()
        .filter(|l| l.app == app)
        .flat_map(|l| [Some(l.version), l.previous])
        .flatten()
        .collect();
    for r in all.iter().skip(keep) {
        if r.pinned || protected.contains(&r.version) {
            continue;
        }
        // Config releases share their slug's file: delete it with its last row.
        if !store.file_in_use(app, &r.file, r.version).unwrap_or(true) {
            let _ = std::fs::remove_file(data.releases(app).join(&r.file));
        }
        let _ = store.delete_release(app, r.version);
    }
}
