//! Builds and releases rows.

use rusqlite::{params, OptionalExtension};

use super::{Result, Store, StoreError};
use crate::timefmt::now;

#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildRow {
    pub id: i64,
    pub app: String,
    pub git_sha: String,
    pub git_ref: String,
    pub key_name: String,
    pub status: String,
    pub detail: String,
    pub release_version: Option<i64>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ReleaseRow {
    pub app: String,
    pub version: i64,
    pub sha256: String,
    pub tar_sha256: String,
    pub size: i64,
    pub git_sha: String,
    pub git_ref: String,
    pub build_id: Option<i64>,
    pub file: String,
    pub manifest: String,
    pub key_name: String,
    pub status: String,
    pub pinned: bool,
    pub created_at: i64,
}

pub struct NewRelease<'a> {
    pub app: &'a str,
    pub sha256: &'a str,
    pub tar_sha256: &'a str,
    pub size: i64,
    pub git_sha: &'a str,
    pub git_ref: &'a str,
    pub build_id: Option<i64>,
    pub manifest: &'a str,
    pub key_name: &'a str,
}

const BUILD_COLS: &str =
    "id, app, git_sha, git_ref, key_name, status, detail, release_version, created_at, finished_at";
const RELEASE_COLS: &str = "app, version, sha256, tar_sha256, size, git_sha, git_ref, build_id, file, manifest, key_name, status, pinned, created_at";

fn build_row(r: &rusqlite::Row) -> rusqlite::Result<BuildRow> {
    Ok(BuildRow {
        id: r.get(0)?,
        app: r.get(1)?,
        git_sha: r.get(2)?,
        git_ref: r.get(3)?,
        key_name: r.get(4)?,
        status: r.get(5)?,
        detail: r.get(6)?,
        release_version: r.get(7)?,
        created_at: r.get(8)?,
        finished_at: r.get(9)?,
    })
}

fn release_row(r: &rusqlite::Row) -> rusqlite::Result<ReleaseRow> {
    Ok(ReleaseRow {
        app: r.get(0)?,
        version: r.get(1)?,
        sha256: r.get(2)?,
        tar_sha256: r.get(3)?,
        size: r.get(4)?,
        git_sha: r.get(5)?,
        git_ref: r.get(6)?,
        build_id: r.get(7)?,
        file: r.get(8)?,
        manifest: r.get(9)?,
        key_name: r.get(10)?,
        status: r.get(11)?,
        pinned: r.get::<_, i64>(12)? != 0,
        created_at: r.get(13)?,
    })
}

impl Store {
    pub fn create_build(&self, app: &str, sha: &str, git_ref: &str, key: &str) -> Result<i64> {
        let c = self.lock();
        c.execute(
            "INSERT INTO builds(app, git_sha, git_ref, key_name, status, created_at) VALUES (?1,?2,?3,?4,'queued',?5)",
            params![app, sha, git_ref, key, now()],
        )?;
        Ok(c.last_insert_rowid())
    }

    pub fn set_build_status(
        &self,
        id: i64,
        status: &str,
        detail: &str,
        version: Option<i64>,
    ) -> Result<()> {
        let finished = matches!(status, "succeeded" | "failed" | "cancelled").then(now);
        self.lock().execute(
            "UPDATE builds SET status=?2, detail=?3, release_version=COALESCE(?4, release_version),
             finished_at=COALESCE(?5, finished_at) WHERE id=?1",
            params![id, status, detail, version, finished],
        )?;
        Ok(())
    }

    /// Builds left running by a controller that died are failed, not pending forever.
    pub fn fail_orphan_builds(&self) -> Result<usize> {
        Ok(self.lock().execute(
            "UPDATE builds SET status='failed', detail='controller restarted during the build', finished_at=?1
             WHERE status IN ('queued','running')",
            [now()],
        )?)
    }

    pub fn build(&self, app: &str, id: i64) -> Result<Option<BuildRow>> {
        Ok(self
            .lock()
            .query_row(
                &format!("SELECT {BUILD_COLS} FROM builds WHERE app=?1 AND id=?2"),
                params![app, id],
                build_row,
            )
            .optional()?)
    }

    pub fn list_builds(&self, app: &str, limit: i64) -> Result<Vec<BuildRow>> {
        let c = self.lock();
        let mut st = c.prepare(&format!(
            "SELECT {BUILD_COLS} FROM builds WHERE app=?1 ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = st
            .query_map(params![app, limit], build_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    pub fn next_release_version(&self, app: &str) -> Result<i64> {
        Ok(self.lock().query_row(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM releases WHERE app=?1",
            [app],
            |r| r.get(0),
        )?)
    }

    /// Records a cooked release whose file is already in place. Returns its version.
    pub fn insert_release(&self, r: &NewRelease, version: i64, file: &str) -> Result<()> {
        let c = self.lock();
        c.execute(
            &format!("INSERT INTO releases({RELEASE_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,'cooked',0,?12)"),
            params![
                r.app, version, r.sha256, r.tar_sha256, r.size, r.git_sha, r.git_ref, r.build_id, file,
                r.manifest, r.key_name, now()
            ],
        )
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                StoreError::Conflict(format!("release v{version} of '{}' already exists", r.app))
            }
            e => e.into(),
        })?;
        Ok(())
    }

    pub fn release(&self, app: &str, version: i64) -> Result<Option<ReleaseRow>> {
        Ok(self
            .lock()
            .query_row(
                &format!("SELECT {RELEASE_COLS} FROM releases WHERE app=?1 AND version=?2"),
                params![app, version],
                release_row,
            )
            .optional()?)
    }

    /// The newest release cooked from `git_sha`, if any (final mode reuses its bytes).
    pub fn release_by_commit(&self, app: &str, git_sha: &str) -> Result<Option<ReleaseRow>> {
        Ok(self
            .lock()
            .query_row(
                &format!("SELECT {RELEASE_COLS} FROM releases WHERE app=?1 AND git_sha=?2 ORDER BY version DESC LIMIT 1"),
                params![app, git_sha],
                release_row,
            )
            .optional()?)
    }

    pub fn list_releases(&self, app: &str) -> Result<Vec<ReleaseRow>> {
        let c = self.lock();
        let mut st = c.prepare(&format!(
            "SELECT {RELEASE_COLS} FROM releases WHERE app=?1 ORDER BY version DESC"
        ))?;
        let rows = st
            .query_map([app], release_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// The subdirectory of the pushed tree `app` builds from (`builds:set`), if set.
    pub fn build_dir(&self, app: &str) -> Result<Option<String>> {
        self.lock()
            .query_row("SELECT build_dir FROM apps WHERE name=?1", [app], |r| {
                r.get::<_, Option<String>>(0)
            })
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("app '{app}' does not exist")))
    }

    /// Sets (or, with `None`, clears) the subdirectory `app` builds from.
    pub fn set_build_dir(&self, app: &str, dir: Option<&str>) -> Result<()> {
        let n = self.lock().execute(
            "UPDATE apps SET build_dir=?2 WHERE name=?1",
            params![app, dir],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("app '{app}' does not exist")));
        }
        Ok(())
    }

    pub fn delete_release(&self, app: &str, version: i64) -> Result<()> {
        self.lock().execute(
            "DELETE FROM releases WHERE app=?1 AND version=?2",
            params![app, version],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_dir_is_per_app_and_goes_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        s.create_app("web", "root").unwrap();
        s.create_app("api", "root").unwrap();
        assert_eq!(s.build_dir("web").unwrap(), None);
        s.set_build_dir("web", Some("apps/web")).unwrap();
        assert_eq!(s.build_dir("web").unwrap().as_deref(), Some("apps/web"));
        assert_eq!(s.build_dir("api").unwrap(), None);
        s.set_build_dir("web", None).unwrap();
        assert_eq!(s.build_dir("web").unwrap(), None);
        s.set_build_dir("web", Some("web")).unwrap();
        s.destroy_app("web").unwrap();
        assert!(s.build_dir("web").is_err());
        assert!(s.set_build_dir("web", Some("x")).is_err());
        s.create_app("web", "root").unwrap();
        assert_eq!(s.build_dir("web").unwrap(), None);
    }
}
