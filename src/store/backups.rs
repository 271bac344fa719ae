//! The catalog of service backups: one row per sealed file under `<data>/backups/` (see
//! `backup/`), with its size and sha256, why it was taken and, for one taken before a
//! release command, which release. A row is added only once its file is in place (renamed,
//! fsynced), and removed before its file is deleted: a row always names a whole file.

use rusqlite::{params, OptionalExtension};

use super::{Result, Store};

/// Why a backup was taken; retention keeps each kind apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupReason {
    /// `services:backup`.
    Manual,
    /// `backup: { every: 24h }` in magrathea.yml.
    Scheduled,
    /// Before a release command (the data as the release before it left it).
    Release,
    /// Before a restore overwrote the service.
    Safety,
    /// A dump made elsewhere, brought in by `services:import` (kept like manual ones).
    Import,
}

impl BackupReason {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupReason::Manual => "manual",
            BackupReason::Scheduled => "scheduled",
            BackupReason::Release => "release",
            BackupReason::Safety => "safety",
            BackupReason::Import => "import",
        }
    }

    fn parse(s: &str) -> BackupReason {
        match s {
            "scheduled" => BackupReason::Scheduled,
            "release" => BackupReason::Release,
            "safety" => BackupReason::Safety,
            "import" => BackupReason::Import,
            _ => BackupReason::Manual,
        }
    }
}

/// How many backups of each reason retention keeps (release backups follow their release).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    pub manual: usize,
    pub scheduled: usize,
    pub safety: usize,
}

/// The release a backup was taken before (its release command's), in one environment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReleaseTag {
    pub app: String,
    pub env: String,
    pub version: i64,
}

/// A backup about to be recorded: its file is already in place.
#[derive(Debug, Clone)]
pub struct NewBackup<'a> {
    pub service: &'a str,
    /// The dump's format: the service's type (`postgres`, `redis`, `mariadb`).
    pub kind: &'a str,
    pub reason: BackupReason,
    pub release: Option<ReleaseTag>,
    /// The file's name under the service's backup directory.
    pub file: &'a str,
    pub size: u64,
    pub sha256: &'a str,
    /// Restored into a throwaway instance before it was recorded.
    pub verified: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupRow {
    pub id: i64,
    pub service: String,
    pub kind: String,
    pub reason: BackupReason,
    pub release: Option<ReleaseTag>,
    #[serde(skip)]
    pub file: String,
    pub size: u64,
    pub sha256: String,
    pub verified: bool,
    pub created_at: i64,
}

const COLUMNS: &str =
    "id, service, kind, reason, app, env, version, file, size, sha256, verified, created_at";

fn row(r: &rusqlite::Row) -> rusqlite::Result<BackupRow> {
    let (app, env, version): (Option<String>, Option<String>, Option<i64>) =
        (r.get(4)?, r.get(5)?, r.get(6)?);
    let release = match (app, env, version) {
        (Some(app), Some(env), Some(version)) => Some(ReleaseTag { app, env, version }),
        _ => None,
    };
    Ok(BackupRow {
        id: r.get(0)?,
        service: r.get(1)?,
        kind: r.get(2)?,
        reason: BackupReason::parse(&r.get::<_, String>(3)?),
        release,
        file: r.get(7)?,
        size: r.get::<_, i64>(8)? as u64,
        sha256: r.get(9)?,
        verified: r.get(10)?,
        created_at: r.get(11)?,
    })
}

impl Store {
    /// Records a backup whose file is in place; its id.
    pub fn add_backup(&self, b: &NewBackup, created_at: i64) -> Result<i64> {
        let c = self.lock();
        let rel = b.release.as_ref();
        c.execute(
            "INSERT INTO service_backups(service, kind, reason, app, env, version, file, size, sha256, verified, created_at)
             VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)",
            params![
                b.service,
                b.kind,
                b.reason.as_str(),
                rel.map(|r| &r.app),
                rel.map(|r| &r.env),
                rel.map(|r| r.version),
                b.file,
                b.size as i64,
                b.sha256,
                b.verified,
                created_at
            ],
        )?;
        Ok(c.last_insert_rowid())
    }

    /// A service's backups, newest first.
    pub fn backups(&self, service: &str) -> Result<Vec<BackupRow>> {
        let c = self.lock();
        let mut st = c.prepare(&format!(
            "SELECT {COLUMNS} FROM service_backups WHERE service=?1 ORDER BY id DESC"
        ))?;
        let rows = st
            .query_map([service], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    pub fn backup(&self, service: &str, id: i64) -> Result<Option<BackupRow>> {
        let c = self.lock();
        Ok(c.query_row(
            &format!("SELECT {COLUMNS} FROM service_backups WHERE service=?1 AND id=?2"),
            params![service, id],
            row,
        )
        .optional()?)
    }

    /// The backups taken before `version`'s release command in `env` (one per linked
    /// service), oldest first.
    pub fn release_backups(&self, app: &str, env: &str, version: i64) -> Result<Vec<BackupRow>> {
        let c = self.lock();
        let mut st = c.prepare(&format!(
            "SELECT {COLUMNS} FROM service_backups WHERE app=?1 AND env=?2 AND version=?3 ORDER BY id"
        ))?;
        let rows = st
            .query_map(params![app, env, version], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Every backup taken before a release command of `version`, in any environment.
    pub fn backups_of_release(&self, app: &str, version: i64) -> Result<Vec<BackupRow>> {
        let c = self.lock();
        let mut st = c.prepare(&format!(
            "SELECT {COLUMNS} FROM service_backups WHERE app=?1 AND version=?2 ORDER BY env, id"
        ))?;
        let rows = st
            .query_map(params![app, version], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// The retention policy, each reason apart: of a service's manual backups the newest
    /// `keep.manual` stay, of its scheduled ones the newest `keep.scheduled`, of its safety
    /// backups the newest `keep.safety`; a release's backups stay as long as the release's
    /// row does (release pruning decides, and never prunes a live release or the one a
    /// rollback goes to). The rows removed (their files are the caller's to delete, after
    /// this commits).
    pub fn prune_backups(&self, service: &str, keep: Keep) -> Result<Vec<BackupRow>> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        let mut gone = Vec::new();
        {
            let mut st = tx.prepare(&format!(
                "SELECT {COLUMNS} FROM service_backups b WHERE service=?1 AND (
                   (reason IN ('manual', 'import') AND id NOT IN (
                      SELECT id FROM service_backups WHERE service=?1
                      AND reason IN ('manual', 'import') ORDER BY id DESC LIMIT ?2))
                   OR (reason='scheduled' AND id NOT IN (
                      SELECT id FROM service_backups WHERE service=?1
                      AND reason='scheduled' ORDER BY id DESC LIMIT ?4))
                   OR (reason='safety' AND id NOT IN (
                      SELECT id FROM service_backups WHERE service=?1
                      AND reason='safety' ORDER BY id DESC LIMIT ?3))
                   OR (reason='release' AND NOT EXISTS (
                      SELECT 1 FROM releases r WHERE r.app=b.app AND r.version=b.version)))"
            ))?;
            let rows = st.query_map(
                params![
                    service,
                    keep.manual as i64,
                    keep.safety as i64,
                    keep.scheduled as i64
                ],
                row,
            )?;
            for r in rows {
                gone.push(r?);
            }
        }
        for b in &gone {
            tx.execute("DELETE FROM service_backups WHERE id=?1", [b.id])?;
        }
        tx.commit()?;
        Ok(gone)
    }

    /// One backup's row removed (an import that did not load); the row, if there was one.
    /// Its file is the caller's to delete, after.
    pub fn remove_backup(&self, service: &str, id: i64) -> Result<Option<BackupRow>> {
        let found = self.backup(service, id)?;
        if found.is_some() {
            self.lock().execute(
                "DELETE FROM service_backups WHERE service=?1 AND id=?2",
                params![service, id],
            )?;
        }
        Ok(found)
    }

    /// When the newest scheduled backup of a service was taken.
    pub fn last_scheduled_backup(&self, service: &str) -> Result<Option<i64>> {
        Ok(self.lock().query_row(
            "SELECT max(created_at) FROM service_backups WHERE service=?1 AND reason='scheduled'",
            [service],
            |r| r.get(0),
        )?)
    }

    /// Forgets every backup of a service (it is being destroyed); the rows removed, whose
    /// files are the caller's to delete.
    pub fn forget_backups(&self, service: &str) -> Result<Vec<BackupRow>> {
        let rows = self.backups(service)?;
        self.lock()
            .execute("DELETE FROM service_backups WHERE service=?1", [service])?;
        Ok(rows)
    }

    /// Every file name the catalog knows for a service (the rest of its directory is
    /// leftovers: temp files of a crashed backup, files of rows already pruned).
    pub fn backup_files(&self, service: &str) -> Result<Vec<String>> {
        let c = self.lock();
        let mut st = c.prepare("SELECT file FROM service_backups WHERE service=?1")?;
        let rows = st
            .query_map([service], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(s: &Store, reason: BackupReason, release: Option<ReleaseTag>, at: i64) -> i64 {
        let file = format!("{at}.mgbk");
        s.add_backup(
            &NewBackup {
                service: "db",
                kind: "postgres",
                reason,
                release,
                file: &file,
                size: 10,
                sha256: &"ab".repeat(32),
                verified: true,
            },
            at,
        )
        .unwrap()
    }

    #[test]
    fn retention_keeps_each_kind_apart_and_release_backups_follow_their_release() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("db")).unwrap();
        s.create_app("shop", "admin").unwrap();
        let tag = |v| {
            Some(ReleaseTag {
                app: "shop".into(),
                env: "production".into(),
                version: v,
            })
        };
        let m: Vec<i64> = (0..5)
            .map(|i| add(&s, BackupReason::Manual, None, 100 + i))
            .collect();
        let sched = add(&s, BackupReason::Scheduled, None, 200);
        let safe: Vec<i64> = (0..3)
            .map(|i| add(&s, BackupReason::Safety, None, 300 + i))
            .collect();
        // v1 has no release row (pruned long ago): its backup goes.
        let r1 = add(&s, BackupReason::Release, tag(1), 400);
        let keep = Keep {
            manual: 3,
            scheduled: 1,
            safety: 1,
        };
        let sched2 = add(&s, BackupReason::Scheduled, None, 201);
        let gone: Vec<i64> = s
            .prune_backups("db", keep)
            .unwrap()
            .iter()
            .map(|b| b.id)
            .collect();
        // Scheduled backups are counted apart: the older one goes, no manual one for it.
        let mut want = vec![m[0], m[1], sched, safe[0], safe[1], r1];
        want.sort();
        let mut got = gone.clone();
        got.sort();
        assert_eq!(got, want);
        let left: Vec<i64> = s.backups("db").unwrap().iter().map(|b| b.id).collect();
        assert_eq!(left, vec![sched2, safe[2], m[4], m[3], m[2]]);
        assert!(s.prune_backups("db", keep).unwrap().is_empty());
        assert_eq!(s.last_scheduled_backup("db").unwrap(), Some(201));
        assert_eq!(s.last_scheduled_backup("other").unwrap(), None);
        assert_eq!(s.backup("db", m[4]).unwrap().unwrap().created_at, 104);
        assert!(s.backup("other", m[4]).unwrap().is_none());
        assert_eq!(s.forget_backups("db").unwrap().len(), 5);
        assert!(s.backups("db").unwrap().is_empty());
    }

    #[test]
    fn backups_are_found_by_release_and_environment() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("db")).unwrap();
        let tag = |env: &str, v| {
            Some(ReleaseTag {
                app: "shop".into(),
                env: env.into(),
                version: v,
            })
        };
        let a = add(&s, BackupReason::Release, tag("production", 3), 1);
        let b = add(&s, BackupReason::Release, tag("staging", 3), 2);
        add(&s, BackupReason::Release, tag("production", 4), 3);
        let ids =
            |v: Vec<BackupRow>| -> Vec<i64> { v.into_iter().map(|b| b.id).collect::<Vec<_>>() };
        assert_eq!(
            ids(s.release_backups("shop", "production", 3).unwrap()),
            vec![a]
        );
        assert_eq!(ids(s.backups_of_release("shop", 3).unwrap()), vec![a, b]);
        let row = s.backup("db", a).unwrap().unwrap();
        assert_eq!(row.release, tag("production", 3));
        assert_eq!(row.reason, BackupReason::Release);
    }
}
