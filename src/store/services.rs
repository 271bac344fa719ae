//! Services (Postgres, Redis, MariaDB) and their links into apps' environments. A link's
//! password arrives and leaves sealed: the store never sees it in the clear.

use rusqlite::{params, OptionalExtension, Row};

use super::{Result, Store, StoreError};
use crate::timefmt::now;

#[derive(Debug, Clone, serde::Serialize)]
pub struct ServiceRow {
    pub id: i64,
    pub name: String,
    /// `postgres`, `redis`, `mariadb`.
    pub kind: String,
    /// The environment it serves: it links only into that environment of an app.
    pub env: String,
    /// The app that declared it in `magrathea.yml`; None: created by an admin.
    pub app: Option<String>,
    pub node: String,
    /// Names its container and data dir on the node.
    pub key: String,
    pub uid: u32,
    pub image: String,
    pub created_at: i64,
    pub created_by: String,
    /// Scheduled backups (`backup: { every, keep }` in magrathea.yml): seconds apart.
    pub backup_every: Option<i64>,
    /// Scheduled backups kept.
    pub backup_keep: Option<i64>,
    /// Scheduled backups failed in a row, the last one's error and when.
    pub backup_failures: i64,
    pub backup_error: Option<String>,
    pub backup_error_at: Option<i64>,
    /// Its container's memory limit in bytes; None: the default (`SERVICE_MEMORY`).
    pub memory: Option<i64>,
}

/// What `create_service` records (the uid is allocated there).
pub struct NewService<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub env: &'a str,
    pub app: Option<&'a str>,
    pub node: &'a str,
    pub key: &'a str,
    pub image: &'a str,
    pub by: &'a str,
    pub memory: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct LinkRow {
    pub service: String,
    pub app: String,
    pub env: String,
    /// The config var it sets (`DATABASE_URL`).
    pub var: String,
    /// The login the link uses on the service.
    pub user: String,
    /// Its password, sealed.
    pub secret: Vec<u8>,
    pub created_at: i64,
}

const SERVICE_COLS: &str = "id,name,kind,env,app,node,key,uid,image,created_at,created_by,
     backup_every,backup_keep,backup_failures,backup_error,backup_error_at,memory";

fn service_row(r: &Row) -> rusqlite::Result<ServiceRow> {
    Ok(ServiceRow {
        id: r.get(0)?,
        name: r.get(1)?,
        kind: r.get(2)?,
        env: r.get(3)?,
        app: r.get(4)?,
        node: r.get(5)?,
        key: r.get(6)?,
        uid: r.get(7)?,
        image: r.get(8)?,
        created_at: r.get(9)?,
        created_by: r.get(10)?,
        backup_every: r.get(11)?,
        backup_keep: r.get(12)?,
        backup_failures: r.get(13)?,
        backup_error: r.get(14)?,
        backup_error_at: r.get(15)?,
        memory: r.get(16)?,
    })
}

fn link_row(r: &Row) -> rusqlite::Result<LinkRow> {
    Ok(LinkRow {
        service: r.get(0)?,
        app: r.get(1)?,
        env: r.get(2)?,
        var: r.get(3)?,
        user: r.get(4)?,
        secret: r.get(5)?,
        created_at: r.get(6)?,
    })
}

const LINK_SELECT: &str = "SELECT s.name, l.app, l.env, l.var, l.user, l.secret, l.created_at
     FROM service_links l JOIN services s ON s.id = l.service_id";

impl Store {
    /// Records a service with a fresh uid (from the apps' sequence: never handed out twice).
    pub fn create_service(&self, s: &NewService) -> Result<ServiceRow> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        let at = now();
        let taken: bool = tx
            .query_row("SELECT 1 FROM services WHERE name=?1", [s.name], |_| Ok(()))
            .optional()?
            .is_some();
        if taken {
            return Err(StoreError::Conflict(format!(
                "service '{}' already exists",
                s.name
            )));
        }
        tx.execute(
            "INSERT INTO app_uids(app, allocated_at) VALUES (?1,?2)",
            params![format!("service:{}", s.name), at],
        )?;
        let uid = crate::isolation::UID_BASE as i64 + tx.last_insert_rowid();
        if uid > crate::isolation::UID_MAX as i64 {
            return Err(StoreError::Conflict("no uid left in the app range".into()));
        }
        tx.execute(
            "INSERT INTO services(name,kind,env,app,node,key,uid,image,created_at,created_by,memory)
             VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)",
            params![s.name, s.kind, s.env, s.app, s.node, s.key, uid, s.image, at, s.by, s.memory],
        )?;
        tx.commit()?;
        drop(c);
        self.service(s.name)?
            .ok_or_else(|| StoreError::NotFound(format!("service '{}' vanished", s.name)))
    }

    pub fn service(&self, name: &str) -> Result<Option<ServiceRow>> {
        Ok(self
            .lock()
            .query_row(
                &format!("SELECT {SERVICE_COLS} FROM services WHERE name=?1"),
                [name],
                service_row,
            )
            .optional()?)
    }

    pub fn services(&self) -> Result<Vec<ServiceRow>> {
        let c = self.lock();
        let mut st = c.prepare(&format!(
            "SELECT {SERVICE_COLS} FROM services ORDER BY name"
        ))?;
        let rows = st
            .query_map([], service_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Removes a service; refused while it is linked.
    pub fn delete_service(&self, name: &str) -> Result<()> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        let linked: i64 = tx.query_row(
            "SELECT count(*) FROM service_links l JOIN services s ON s.id = l.service_id
             WHERE s.name=?1",
            [name],
            |r| r.get(0),
        )?;
        if linked > 0 {
            return Err(StoreError::Conflict(format!(
                "service '{name}' is linked; unlink it first"
            )));
        }
        tx.execute("DELETE FROM services WHERE name=?1", [name])?;
        tx.commit()?;
        Ok(())
    }

    /// A service's memory limit (None: the default).
    pub fn set_service_memory(&self, name: &str, memory: Option<i64>) -> Result<()> {
        self.lock().execute(
            "UPDATE services SET memory=?2 WHERE name=?1",
            params![name, memory],
        )?;
        Ok(())
    }

    /// A service's backup schedule (None: no scheduled backups). A changed schedule starts
    /// with a clean failure record.
    pub fn set_backup_schedule(&self, name: &str, every_keep: Option<(i64, i64)>) -> Result<()> {
        let (every, keep) = (every_keep.map(|s| s.0), every_keep.map(|s| s.1));
        self.lock().execute(
            "UPDATE services SET backup_every=?2, backup_keep=?3,
               backup_failures = CASE WHEN backup_every IS ?2 THEN backup_failures ELSE 0 END,
               backup_error = CASE WHEN backup_every IS ?2 THEN backup_error ELSE NULL END,
               backup_error_at = CASE WHEN backup_every IS ?2 THEN backup_error_at ELSE NULL END
             WHERE name=?1",
            params![name, every, keep],
        )?;
        Ok(())
    }

    /// A scheduled backup's outcome: `Some(error)` counts a failure, `None` clears them.
    pub fn backup_outcome(&self, name: &str, error: Option<&str>) -> Result<()> {
        let c = self.lock();
        match error {
            Some(e) => c.execute(
                "UPDATE services SET backup_failures=backup_failures+1, backup_error=?2,
                   backup_error_at=?3 WHERE name=?1",
                params![name, e, now()],
            )?,
            None => c.execute(
                "UPDATE services SET backup_failures=0, backup_error=NULL, backup_error_at=NULL
                 WHERE name=?1",
                [name],
            )?,
        };
        Ok(())
    }

    pub fn add_link(&self, l: &LinkRow) -> Result<()> {
        let c = self.lock();
        let n = c.execute(
            "INSERT OR IGNORE INTO service_links(service_id,app,env,var,user,secret,created_at)
             SELECT id,?2,?3,?4,?5,?6,?7 FROM services WHERE name=?1",
            params![l.service, l.app, l.env, l.var, l.user, l.secret, now()],
        )?;
        if n == 0 {
            return Err(StoreError::Conflict(format!(
                "'{}' is already linked to {} in {}, or {} is taken there",
                l.service, l.app, l.env, l.var
            )));
        }
        Ok(())
    }

    pub fn remove_link(&self, service: &str, app: &str, env: &str) -> Result<bool> {
        let n = self.lock().execute(
            "DELETE FROM service_links WHERE app=?2 AND env=?3
             AND service_id = (SELECT id FROM services WHERE name=?1)",
            params![service, app, env],
        )?;
        Ok(n > 0)
    }

    /// Every link of a service, or (`service` None) of every service.
    pub fn links(&self, service: Option<&str>) -> Result<Vec<LinkRow>> {
        let c = self.lock();
        let mut st = c.prepare(&format!(
            "{LINK_SELECT} WHERE ?1 IS NULL OR s.name = ?1 ORDER BY s.name, l.app, l.env"
        ))?;
        let rows = st
            .query_map([service], link_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new<'a>(name: &'a str, key: &'a str) -> NewService<'a> {
        NewService {
            name,
            kind: "postgres",
            env: "production",
            app: Some("shop"),
            node: "local",
            key,
            image: "magrathea/svc-postgres-15:latest",
            by: "root",
            memory: None,
        }
    }

    #[test]
    fn services_links_and_uids() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db.sqlite")).unwrap();
        let app = s.create_app("shop", "root").unwrap();
        let a = s.create_service(&new("shop-db", "k1")).unwrap();
        assert_eq!(a.uid, app.uid + 1);
        assert!(matches!(
            s.create_service(&new("shop-db", "k2")),
            Err(StoreError::Conflict(_))
        ));
        let link = LinkRow {
            service: "shop-db".into(),
            app: "shop".into(),
            env: "production".into(),
            var: "DATABASE_URL".into(),
            user: "shop_production".into(),
            secret: vec![1, 2, 3],
            created_at: 0,
        };
        s.add_link(&link).unwrap();
        assert!(s.add_link(&link).is_err());
        assert!(matches!(
            s.delete_service("shop-db"),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(s.links(Some("shop-db")).unwrap().len(), 1);
        assert!(s.remove_link("shop-db", "shop", "production").unwrap());
        s.delete_service("shop-db").unwrap();
        // The same name again: a new uid and nothing of the old one.
        let b = s.create_service(&new("shop-db", "k3")).unwrap();
        assert!(b.uid > a.uid && b.id > a.id);
        assert_eq!(
            (b.backup_every, b.backup_keep, b.memory),
            (None, None, None)
        );
        s.set_service_memory("shop-db", Some(1 << 30)).unwrap();
        assert_eq!(s.service("shop-db").unwrap().unwrap().memory, Some(1 << 30));
        s.set_backup_schedule("shop-db", Some((60, 3))).unwrap();
        s.backup_outcome("shop-db", Some("node down")).unwrap();
        s.backup_outcome("shop-db", Some("node still down"))
            .unwrap();
        let r = s.service("shop-db").unwrap().unwrap();
        assert_eq!((r.backup_every, r.backup_keep), (Some(60), Some(3)));
        assert_eq!(r.backup_failures, 2);
        assert_eq!(r.backup_error.as_deref(), Some("node still down"));
        // The same schedule again keeps the record; another one starts clean.
        s.set_backup_schedule("shop-db", Some((60, 5))).unwrap();
        assert_eq!(s.service("shop-db").unwrap().unwrap().backup_failures, 2);
        s.set_backup_schedule("shop-db", Some((120, 5))).unwrap();
        let r = s.service("shop-db").unwrap().unwrap();
        assert_eq!((r.backup_failures, r.backup_error), (0, None));
        s.backup_outcome("shop-db", Some("x")).unwrap();
        s.backup_outcome("shop-db", None).unwrap();
        assert_eq!(s.service("shop-db").unwrap().unwrap().backup_failures, 0);
        assert!(s.links(None).unwrap().is_empty());
    }
}
