//! Process counts per environment (`scale`) and whether an environment is stopped.

use std::collections::BTreeMap;

use rusqlite::{params, Connection, OptionalExtension};

use super::{Result, Store};

impl Store {
    /// The counts `scale` set; types it never named are absent.
    pub fn formation(&self, app: &str, env: &str) -> Result<BTreeMap<String, u32>> {
        let c = self.lock();
        let mut st =
            c.prepare("SELECT ptype, count FROM formation WHERE app=?1 AND env=?2 ORDER BY ptype")?;
        let rows = st
            .query_map(params![app, env], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Record counts (merged over the existing ones) in one transaction.
    pub fn set_formation(
        &self,
        app: &str,
        env: &str,
        counts: &BTreeMap<String, u32>,
    ) -> Result<()> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        set_formation_in(&tx, app, env, counts)?;
        tx.commit()?;
        Ok(())
    }

    pub fn stopped(&self, app: &str, env: &str) -> Result<bool> {
        let v: Option<i64> = self
            .lock()
            .query_row(
                "SELECT stopped FROM app_state WHERE app=?1 AND env=?2",
                params![app, env],
                |r| r.get(0),
            )
            .optional()?;
        Ok(v.unwrap_or(0) != 0)
    }

    pub fn set_stopped(&self, app: &str, env: &str, stopped: bool) -> Result<()> {
        set_stopped_in(&self.lock(), app, env, stopped)
    }
}

/// Part of a transaction: see `Store::set_formation`.
pub(super) fn set_formation_in(
    tx: &Connection,
    app: &str,
    env: &str,
    counts: &BTreeMap<String, u32>,
) -> Result<()> {
    for (ptype, n) in counts {
        tx.execute(
            "INSERT INTO formation(app, env, ptype, count) VALUES (?1,?2,?3,?4)
             ON CONFLICT(app, env, ptype) DO UPDATE SET count=excluded.count",
            params![app, env, ptype, n],
        )?;
    }
    Ok(())
}

pub(super) fn set_stopped_in(c: &Connection, app: &str, env: &str, stopped: bool) -> Result<()> {
    c.execute(
        "INSERT INTO app_state(app, env, stopped) VALUES (?1,?2,?3)
         ON CONFLICT(app, env) DO UPDATE SET stopped=excluded.stopped",
        params![app, env, i64::from(stopped)],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formation_merges_and_stopped_toggles() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        assert!(s.formation("a", "production").unwrap().is_empty());
        s.set_formation("a", "production", &BTreeMap::from([("web".into(), 3)]))
            .unwrap();
        s.set_formation("a", "production", &BTreeMap::from([("worker".into(), 1)]))
            .unwrap();
        s.set_formation("a", "production", &BTreeMap::from([("web".into(), 2)]))
            .unwrap();
        assert_eq!(
            s.formation("a", "production").unwrap(),
            BTreeMap::from([("web".into(), 2), ("worker".into(), 1)])
        );
        assert!(s.formation("a", "staging").unwrap().is_empty());
        assert!(!s.stopped("a", "production").unwrap());
        s.set_stopped("a", "production", true).unwrap();
        assert!(s.stopped("a", "production").unwrap());
        s.set_stopped("a", "production", false).unwrap();
        assert!(!s.stopped("a", "production").unwrap());
    }
}
