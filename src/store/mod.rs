//! The SQLite store. Only the controller process opens it (plus the offline
//! `magrathea keys` recovery commands). Every multi-row change is one transaction.

mod acme;
mod backups;
mod builds;
mod config;
mod formation;
mod golive;
mod intents;
mod migrations;
mod nodes;
mod routing;
mod services;
mod usage;

pub use acme::AcmeRow;
pub use golive::GoLive;
pub use intents::{PushIntent, RefMove};
pub use nodes::{LiveRow, NodeRow, CLUSTER_LABEL};
pub use routing::{CertRow, DomainRow, RouteSettings};
pub use services::{LinkRow, NewService, ServiceRow};

pub use backups::{BackupReason, BackupRow, Keep, NewBackup, ReleaseTag};
pub use builds::{BuildRow, NewRelease, ReleaseRow};
pub use usage::TrafficRow;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};
use thiserror::Error;

use crate::access::{AppRole, Grant, Identity, KeyRole};
use crate::timefmt::now;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

pub struct Store {
    conn: Mutex<Connection>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyRow {
    pub id: i64,
    pub name: String,
    pub fingerprint: String,
    pub role: String,
    pub public_key: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AppRow {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
    pub created_by: String,
    /// The uid (and gid) its builds and processes run as; see `isolation`.
    pub uid: u32,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AccessRow {
    pub key: String,
    pub role: String,
    pub tags: Option<String>,
    pub allow_retag: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub fingerprint: String,
    pub key_name: String,
    pub app: Option<String>,
    pub command: String,
    pub outcome: String,
    pub detail: String,
}

/// One audit entry about to be written.
#[derive(Debug, Clone, Default)]
pub struct Audit<'a> {
    pub fingerprint: &'a str,
    pub key_name: &'a str,
    pub app: Option<&'a str>,
    pub command: &'a str,
    pub outcome: &'a str,
    pub detail: &'a str,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let store = Store {
            conn: Mutex::new(conn),
        };
        migrations::migrate(&mut store.lock())?;
        Ok(store)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions roll
        // back), so a poisoned mutex is still a usable connection.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- keys ----

    pub fn add_key(&self, name: &str, fp: &str, openssh: &str, role: KeyRole) -> Result<KeyRow> {
        let c = self.lock();
        if let Some(n) = c
            .query_row("SELECT name FROM keys WHERE fingerprint=?1", [fp], |r| {
                r.get::<_, String>(0)
            })
            .optional()?
        {
            return Err(StoreError::Conflict(format!(
                "this public key is already registered as '{n}'"
            )));
        }
        let exists: bool = c.query_row(
            "SELECT EXISTS(SELECT 1 FROM keys WHERE name=?1)",
            [name],
            |r| r.get(0),
        )?;
        if exists {
            return Err(StoreError::Conflict(format!(
                "a key named '{name}' already exists"
            )));
        }
        c.execute(
            "INSERT INTO keys(name, fingerprint, public_key, role, created_at) VALUES (?1,?2,?3,?4,?5)",
            params![name, fp, openssh, role.as_str(), now()],
        )?;
        drop(c);
        self.key_by_name(name)?
            .ok_or_else(|| StoreError::NotFound(format!("key '{name}' vanished")))
    }

    fn key_row(r: &rusqlite::Row) -> rusqlite::Result<KeyRow> {
        Ok(KeyRow {
            id: r.get(0)?,
            name: r.get(1)?,
            fingerprint: r.get(2)?,
            role: r.get(3)?,
            public_key: r.get(4)?,
            created_at: r.get(5)?,
        })
    }

    pub fn key_by_name(&self, name: &str) -> Result<Option<KeyRow>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT id,name,fingerprint,role,public_key,created_at FROM keys WHERE name=?1",
                [name],
                Self::key_row,
            )
            .optional()?)
    }

    pub fn identity_by_fingerprint(&self, fp: &str) -> Result<Option<Identity>> {
        let row = self
            .lock()
            .query_row(
                "SELECT id,name,fingerprint,role,public_key,created_at FROM keys WHERE fingerprint=?1",
                [fp],
                Self::key_row,
            )
            .optional()?;
        Ok(row.map(|k| Identity {
            key_id: k.id,
            role: k.role.parse().unwrap_or(KeyRole::User),
            name: k.name,
            fingerprint: k.fingerprint,
        }))
    }

    pub fn list_keys(&self) -> Result<Vec<KeyRow>> {
        let c = self.lock();
        let mut st = c.prepare(
            "SELECT id,name,fingerprint,role,public_key,created_at FROM keys ORDER BY name",
        )?;
        let rows = st
            .query_map([], Self::key_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Removes a key and its grants. Refuses to remove the last admin key.
    pub fn remove_key(&self, name: &str) -> Result<()> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        let role: Option<String> = tx
            .query_row("SELECT role FROM keys WHERE name=?1", [name], |r| r.get(0))
            .optional()?;
        let Some(role) = role else {
            return Err(StoreError::NotFound(format!("no key named '{name}'")));
        };
        if role == "admin" {
            let admins: i64 =
                tx.query_row("SELECT COUNT(*) FROM keys WHERE role='admin'", [], |r| {
                    r.get(0)
                })?;
            if admins <= 1 {
                return Err(StoreError::Conflict(format!(
                    "'{name}' is the last admin key; add another admin first"
                )));
            }
        }
        tx.execute("DELETE FROM keys WHERE name=?1", [name])?;
        tx.commit()?;
        Ok(())
    }

    pub fn count_keys(&self) -> Result<i64> {
        Ok(self
            .lock()
            .query_row("SELECT COUNT(*) FROM keys", [], |r| r.get(0))?)
    }

    // ---- apps ----

    fn app_row(r: &rusqlite::Row) -> rusqlite::Result<AppRow> {
        Ok(AppRow {
            id: r.get(0)?,
            name: r.get(1)?,
            created_at: r.get(2)?,
            created_by: r.get(3)?,
            uid: r.get(4)?,
        })
    }

    pub fn create_app(&self, name: &str, by: &str) -> Result<AppRow> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        let at = now();
        let n = tx.execute(
            "INSERT OR IGNORE INTO apps(name, created_at, created_by) VALUES (?1,?2,?3)",
            params![name, at, by],
        )?;
        if n == 0 {
            return Err(StoreError::Conflict(format!("app '{name}' already exists")));
        }
        // A fresh uid, never given to any app before (not even one of the same name).
        tx.execute(
            "INSERT INTO app_uids(app, allocated_at) VALUES (?1,?2)",
            params![name, at],
        )?;
        let uid = crate::isolation::UID_BASE as i64 + tx.last_insert_rowid();
        if uid > crate::isolation::UID_MAX as i64 {
            return Err(StoreError::Conflict(
                "no app uid left in the app range".into(),
            ));
        }
        tx.execute("UPDATE apps SET uid=?1 WHERE name=?2", params![uid, name])?;
        tx.commit()?;
        drop(c);
        self.app(name)?
            .ok_or_else(|| StoreError::NotFound(format!("app '{name}' vanished")))
    }

    pub fn app(&self, name: &str) -> Result<Option<AppRow>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT id,name,created_at,created_by,uid FROM apps WHERE name=?1",
                [name],
                Self::app_row,
            )
            .optional()?)
    }

    /// Apps this identity can see (all, for admins).
    pub fn list_apps(&self, who: &Identity) -> Result<Vec<(AppRow, String)>> {
        let c = self.lock();
        let mut st = c.prepare(
            "SELECT a.id,a.name,a.created_at,a.created_by,a.uid, COALESCE(g.role, '') FROM apps a
             LEFT JOIN access g ON g.app_id=a.id AND g.key_id=?1 ORDER BY a.name",
        )?;
        let rows: Vec<(AppRow, String)> = st
            .query_map([who.key_id], |r| {
                Ok((Self::app_row(r)?, r.get::<_, String>(5)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows
            .into_iter()
            .filter_map(|(a, role)| {
                if who.is_admin() {
                    Some((a, "admin".to_string()))
                } else if role.is_empty() {
                    None
                } else {
                    Some((a, role))
                }
            })
            .collect())
    }

    pub fn destroy_app(&self, name: &str) -> Result<()> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        let n = tx.execute("DELETE FROM apps WHERE name=?1", [name])?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("app '{name}' does not exist")));
        }
        // Tables keyed by app name: an app created later under the same name starts clean.
        for t in [
            "config",
            "release_config",
            "formation",
            "app_state",
            "releases",
            "builds",
            "live",
            "deploys",
            "traffic",
            "app_settings",
            "domains",
            "certs",
            "route_settings",
            "acme_certs",
        ] {
            tx.execute(&format!("DELETE FROM {t} WHERE app=?1"), [name])?;
        }
        tx.commit()?;
        Ok(())
    }

    // ---- access ----

    /// The effective grant of `who` on `app`, if any.
    pub fn grant(&self, who: &Identity, app: &str) -> Result<Option<Grant>> {
        if who.is_admin() {
            return Ok(Some(Grant::admin()));
        }
        let row: Option<(String, Option<String>, bool)> = self
            .lock()
            .query_row(
                "SELECT g.role, g.tags, g.allow_retag FROM access g JOIN apps a ON a.id=g.app_id
                 WHERE a.name=?1 AND g.key_id=?2",
                params![app, who.key_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        Ok(row.and_then(|(role, tags, allow_retag)| {
            Some(Grant {
                role: role.parse::<AppRole>().ok()?,
                tags,
                allow_retag,
            })
        }))
    }

    pub fn set_access(
        &self,
        app: &str,
        key: &str,
        role: AppRole,
        tags: Option<&str>,
        allow_retag: bool,
    ) -> Result<()> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        let app_id: i64 = tx
            .query_row("SELECT id FROM apps WHERE name=?1", [app], |r| r.get(0))
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("app '{app}' does not exist")))?;
        let key_id: i64 = tx
            .query_row("SELECT id FROM keys WHERE name=?1", [key], |r| r.get(0))
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("no key named '{key}'")))?;
        tx.execute(
            "INSERT INTO access(app_id,key_id,role,tags,allow_retag) VALUES (?1,?2,?3,?4,?5)
             ON CONFLICT(app_id,key_id) DO UPDATE SET role=excluded.role, tags=excluded.tags,
                allow_retag=excluded.allow_retag",
            params![app_id, key_id, role.as_str(), tags, allow_retag],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn revoke_access(&self, app: &str, key: &str) -> Result<()> {
        let n = self.lock().execute(
            "DELETE FROM access WHERE app_id=(SELECT id FROM apps WHERE name=?1)
             AND key_id=(SELECT id FROM keys WHERE name=?2)",
            params![app, key],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!(
                "key '{key}' has no access to app '{app}'"
            )));
        }
        Ok(())
    }

    pub fn list_access(&self, app: &str) -> Result<Vec<AccessRow>> {
        let c = self.lock();
        let mut st = c.prepare(
            "SELECT k.name, g.role, g.tags, g.allow_retag FROM access g
             JOIN apps a ON a.id=g.app_id
             JOIN keys k ON k.id=g.key_id WHERE a.name=?1 ORDER BY k.name",
        )?;
        let rows = st
            .query_map([app], |r| {
                Ok(AccessRow {
                    key: r.get(0)?,
                    role: r.get(1)?,
                    tags: r.get(2)?,
                    allow_retag: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    // ---- pushes and audit ----

    pub fn record_push(
        &self,
        app: &str,
        who: &Identity,
        refs: &impl serde::Serialize,
        outcome: &str,
    ) -> Result<i64> {
        let c = self.lock();
        c.execute(
            "INSERT INTO pushes(app, fingerprint, key_name, refs, outcome, at) VALUES (?1,?2,?3,?4,?5,?6)",
            params![
                app,
                who.fingerprint,
                who.name,
                serde_json::to_string(refs).unwrap_or_default(),
                outcome,
                now()
            ],
        )?;
        Ok(c.last_insert_rowid())
    }

    /// Insert an audit entry; its id.
    pub fn audit(&self, a: &Audit) -> Result<i64> {
        let c = self.lock();
        c.execute(
            "INSERT INTO audit(at, fingerprint, key_name, app, command, outcome, detail)
             VALUES (?1,?2,?3,?4,?5,?6,?7)",
            params![
                now(),
                a.fingerprint,
                a.key_name,
                a.app,
                a.command,
                a.outcome,
                a.detail
            ],
        )?;
        Ok(c.last_insert_rowid())
    }

    /// Set the outcome of an entry written before its command ran.
    pub fn audit_outcome(&self, id: i64, outcome: &str, detail: &str) -> Result<()> {
        self.lock().execute(
            "UPDATE audit SET outcome=?2, detail=?3 WHERE id=?1",
            params![id, outcome, detail],
        )?;
        Ok(())
    }

    pub fn list_audit(&self, app: Option<&str>, limit: i64) -> Result<Vec<AuditRow>> {
        let c = self.lock();
        let mut st = c.prepare(
            "SELECT id, at, fingerprint, key_name, app, command, outcome, detail FROM audit
             WHERE (?1 IS NULL OR app=?1) ORDER BY id DESC LIMIT ?2",
        )?;
        let mut rows: Vec<AuditRow> = st
            .query_map(params![app, limit], |r| {
                Ok(AuditRow {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    fingerprint: r.get(2)?,
                    key_name: r.get(3)?,
                    app: r.get(4)?,
                    command: r.get(5)?,
                    outcome: r.get(6)?,
                    detail: r.get(7)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        rows.reverse();
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(s: &Store, name: &str) -> Identity {
        let k = s.key_by_name(name).unwrap().unwrap();
        s.identity_by_fingerprint(&k.fingerprint).unwrap().unwrap()
    }

    #[test]
    fn keys_apps_access() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        s.add_key("root", "SHA256:a", "ssh-ed25519 A", KeyRole::Admin)
            .unwrap();
        s.add_key("bob", "SHA256:b", "ssh-ed25519 B", KeyRole::User)
            .unwrap();
        assert!(matches!(
            s.add_key("bob2", "SHA256:b", "x", KeyRole::User),
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            s.add_key("bob", "SHA256:c", "x", KeyRole::User),
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(s.remove_key("root"), Err(StoreError::Conflict(_))));
        s.create_app("web", "root").unwrap();
        assert!(s.create_app("web", "root").is_err());
        let bob = ident(&s, "bob");
        assert_eq!(s.grant(&bob, "web").unwrap(), None);
        assert!(s.list_apps(&bob).unwrap().is_empty());
        s.set_access("web", "bob", AppRole::Deployer, Some("v*"), false)
            .unwrap();
        let g = s.grant(&bob, "web").unwrap().unwrap();
        assert_eq!(g.role, AppRole::Deployer);
        assert_eq!(g.tags.as_deref(), Some("v*"));
        assert_eq!(s.list_apps(&bob).unwrap().len(), 1);
        s.revoke_access("web", "bob").unwrap();
        assert_eq!(s.grant(&bob, "web").unwrap(), None);
        s.set_access("web", "bob", AppRole::Viewer, None, false)
            .unwrap();
        s.destroy_app("web").unwrap();
        assert!(s.list_access("web").unwrap().is_empty());
        // Reopening runs no migration twice.
        drop(s);
        let s = Store::open(&dir.path().join("db")).unwrap();
        assert_eq!(s.count_keys().unwrap(), 2);
    }

    #[test]
    fn app_uids_are_never_reused() {
        use crate::isolation::UID_BASE;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        // An app created before uids existed gets one from the migration.
        {
            let c = Connection::open(&db).unwrap();
            let sql = migrations::MIGRATIONS[..5].join(";");
            c.execute_batch(&sql).unwrap();
            c.pragma_update(None, "user_version", 5).unwrap();
            c.execute(
                "INSERT INTO apps(name, created_at, created_by) VALUES ('old', 1, 'root')",
                [],
            )
            .unwrap();
        }
        let s = Store::open(&db).unwrap();
        assert_eq!(s.app("old").unwrap().unwrap().uid, UID_BASE + 1);
        let a = s.create_app("web", "root").unwrap();
        let b = s.create_app("api", "root").unwrap();
        assert_eq!((a.uid, b.uid), (UID_BASE + 2, UID_BASE + 3));
        // Destroyed, then created again under the same name: a new uid, as is one for
        // the next app (AUTOINCREMENT never goes back, even for the highest number).
        s.destroy_app("api").unwrap();
        assert_eq!(s.create_app("api", "root").unwrap().uid, UID_BASE + 4);
        s.destroy_app("api").unwrap();
        s.destroy_app("web").unwrap();
        assert_eq!(s.create_app("web", "root").unwrap().uid, UID_BASE + 5);
        assert!(s.create_app("web", "root").is_err());
        assert_eq!(s.app("web").unwrap().unwrap().uid, UID_BASE + 5);
    }
}
