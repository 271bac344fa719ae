//! Config vars: values arrive and leave here already sealed; the store never sees plaintext.

use std::collections::BTreeMap;

use rusqlite::{params, Connection, OptionalExtension};

use super::{Result, Store};

impl Store {
    /// All (name, sealed value) of an app's environment.
    pub fn config_sealed(&self, app: &str, env: &str) -> Result<BTreeMap<String, Vec<u8>>> {
        let c = self.lock();
        let mut st =
            c.prepare("SELECT name, value FROM config WHERE app=?1 AND env=?2 ORDER BY name")?;
        let rows = st
            .query_map(params![app, env], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Replace an environment's whole config in one transaction.
    pub fn replace_config(
        &self,
        app: &str,
        env: &str,
        sealed: &BTreeMap<String, Vec<u8>>,
    ) -> Result<()> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        replace_config_in(&tx, app, env, sealed)?;
        tx.commit()?;
        Ok(())
    }

    pub fn set_release_config(
        &self,
        app: &str,
        version: i64,
        env: &str,
        sealed: &[u8],
    ) -> Result<()> {
        set_release_config_in(&self.lock(), app, version, env, sealed)
    }

    pub fn release_config(&self, app: &str, version: i64, env: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT value FROM release_config WHERE app=?1 AND version=?2 AND env=?3",
                params![app, version, env],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// A new release version for the same bytes (a config change): Heroku's "same slug, new
    /// config" release.
    pub fn copy_release(&self, app: &str, from: i64, key_name: &str) -> Result<i64> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        let version: i64 = tx.query_row(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM releases WHERE app=?1",
            [app],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO releases(app, version, sha256, tar_sha256, size, git_sha, git_ref, build_id, file,
                manifest, key_name, status, pinned, created_at)
             SELECT app, ?3, sha256, tar_sha256, size, git_sha, git_ref, build_id, file, manifest, ?4,
                'cooked', 0, ?5 FROM releases WHERE app=?1 AND version=?2",
            params![app, from, version, key_name, crate::timefmt::now()],
        )?;
        tx.commit()?;
        Ok(version)
    }

    /// Is this tarball file still referenced by another release row?
    pub fn file_in_use(&self, app: &str, file: &str, except: i64) -> Result<bool> {
        Ok(self.lock().query_row(
            "SELECT EXISTS(SELECT 1 FROM releases WHERE app=?1 AND file=?2 AND version<>?3)",
            params![app, file, except],
            |r| r.get(0),
        )?)
    }
}

/// Part of a transaction: see `Store::replace_config`.
pub(super) fn replace_config_in(
    tx: &Connection,
    app: &str,
    env: &str,
    sealed: &BTreeMap<String, Vec<u8>>,
) -> Result<()> {
    tx.execute(
        "DELETE FROM config WHERE app=?1 AND env=?2",
        params![app, env],
    )?;
    for (k, v) in sealed {
        tx.execute(
            "INSERT INTO config(app, env, name, value) VALUES (?1,?2,?3,?4)",
            params![app, env, k, v],
        )?;
    }
    Ok(())
}

/// The config a release went live with in an environment (one sealed blob).
pub(super) fn set_release_config_in(
    c: &Connection,
    app: &str,
    version: i64,
    env: &str,
    sealed: &[u8],
) -> Result<()> {
    c.execute(
        "INSERT INTO release_config(app, version, env, value) VALUES (?1,?2,?3,?4)
         ON CONFLICT(app, version, env) DO UPDATE SET value=excluded.value",
        params![app, version, env, sealed],
    )?;
    Ok(())
}
