//! What the router serves besides `APP.DOMAIN`: custom domains (a host belongs to one app
//! and environment at a time: the primary key says so), certificates (the private key
//! arrives and leaves sealed; the store never sees it in the clear) and per-environment
//! routing settings.

use rusqlite::{params, OptionalExtension};

use super::{Result, Store, StoreError};
use crate::timefmt::now;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DomainRow {
    pub host: String,
    pub app: String,
    pub env: String,
    pub added_at: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct CertRow {
    pub id: i64,
    pub app: String,
    /// `given` (certs:add) or `acme`.
    pub source: String,
    /// The certificate's DNS names (subject alternative names).
    pub names: Vec<String>,
    pub not_before: i64,
    pub not_after: i64,
    /// PEM, leaf first.
    #[serde(skip)]
    pub chain: String,
    /// The PEM private key, sealed.
    #[serde(skip)]
    pub key_sealed: Vec<u8>,
    /// sha256 of the leaf certificate (DER), hex.
    pub fingerprint: String,
    pub added_at: i64,
}

/// How the router treats one app's environment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RouteSettings {
    /// Plain HTTP requests are redirected to HTTPS.
    pub force_https: bool,
    /// `Strict-Transport-Security: max-age=N` on HTTPS answers; 0 = off.
    pub hsts: u32,
    /// Largest request body in bytes; 0 = no limit.
    pub max_body: u64,
}

impl Store {
    /// Every custom domain (all apps), by host.
    pub fn all_domains(&self) -> Result<Vec<DomainRow>> {
        let c = self.lock();
        let mut st = c.prepare("SELECT host, app, env, added_at FROM domains ORDER BY host")?;
        let rows = st
            .query_map([], |r| {
                Ok(DomainRow {
                    host: r.get(0)?,
                    app: r.get(1)?,
                    env: r.get(2)?,
                    added_at: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Adds hosts to an app's environment in one transaction: all or none. A host another
    /// app (or environment) holds is refused, naming it; one the same environment already
    /// has is left as it is.
    pub fn add_domains(&self, app: &str, env: &str, hosts: &[String]) -> Result<usize> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        let mut added = 0;
        for host in hosts {
            let owner: Option<(String, String)> = tx
                .query_row("SELECT app, env FROM domains WHERE host=?1", [host], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            match owner {
                Some((a, e)) if a == app && e == env => continue,
                Some((a, e)) if a == app => {
                    return Err(StoreError::Conflict(format!(
                        "{host} already belongs to {app} in {e}; domains:remove it there first"
                    )))
                }
                Some(_) => {
                    // Whose it is stays private: the caller may have no access to that app.
                    return Err(StoreError::Conflict(format!(
                        "{host} already belongs to another app"
                    )));
                }
                None => {}
            }
            tx.execute(
                "INSERT INTO domains(host, app, env, added_at) VALUES (?1,?2,?3,?4)",
                params![host, app, env, now()],
            )?;
            added += 1;
        }
        tx.commit()?;
        Ok(added)
    }

    /// Removes hosts of an app's environment in one transaction; a host it does not have is
    /// refused and nothing is removed.
    pub fn remove_domains(&self, app: &str, env: &str, hosts: &[String]) -> Result<()> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        for host in hosts {
            let n = tx.execute(
                "DELETE FROM domains WHERE host=?1 AND app=?2 AND env=?3",
                params![host, app, env],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!(
                    "{app} has no domain {host} in {env}"
                )));
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes every custom domain of an app's environment; how many there were.
    pub fn clear_domains(&self, app: &str, env: &str) -> Result<usize> {
        Ok(self.lock().execute(
            "DELETE FROM domains WHERE app=?1 AND env=?2",
            params![app, env],
        )?)
    }

    /// Every certificate (all apps).
    pub fn all_certs(&self) -> Result<Vec<CertRow>> {
        self.certs_where("1", [])
    }

    pub fn certs(&self, app: &str) -> Result<Vec<CertRow>> {
        self.certs_where("app=?1", [app])
    }

    fn certs_where<const N: usize>(&self, cond: &str, args: [&str; N]) -> Result<Vec<CertRow>> {
        let c = self.lock();
        let mut st = c.prepare(&format!(
            "SELECT id, app, source, names, not_before, not_after, chain, key, fingerprint, added_at
             FROM certs WHERE {cond} ORDER BY app, id"
        ))?;
        let rows = st
            .query_map(rusqlite::params_from_iter(args), |r| {
                let names: String = r.get(3)?;
                Ok(CertRow {
                    id: r.get(0)?,
                    app: r.get(1)?,
                    source: r.get(2)?,
                    names: serde_json::from_str(&names).unwrap_or_default(),
                    not_before: r.get(4)?,
                    not_after: r.get(5)?,
                    chain: r.get(6)?,
                    key_sealed: r.get(7)?,
                    fingerprint: r.get(8)?,
                    added_at: r.get(9)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Stores a certificate; one of the same app and source for the same set of names is
    /// replaced (a renewal, or the owner's new bundle), in the same transaction.
    pub fn put_cert(&self, cert: &CertRow) -> Result<i64> {
        let mut names = cert.names.clone();
        names.sort();
        names.dedup();
        let names = serde_json::to_string(&names).unwrap_or_default();
        let mut c = self.lock();
        let tx = c.transaction()?;
        tx.execute(
            "DELETE FROM certs WHERE app=?1 AND source=?2 AND names=?3",
            params![cert.app, cert.source, names],
        )?;
        tx.execute(
            "INSERT INTO certs(app, source, names, not_before, not_after, chain, key, fingerprint, added_at)
             VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)",
            params![
                cert.app,
                cert.source,
                names,
                cert.not_before,
                cert.not_after,
                cert.chain,
                cert.key_sealed,
                cert.fingerprint,
                now()
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(id)
    }

    pub fn remove_cert(&self, app: &str, id: i64) -> Result<()> {
        let n = self
            .lock()
            .execute("DELETE FROM certs WHERE app=?1 AND id=?2", params![app, id])?;
        if n == 0 {
            return Err(StoreError::NotFound(format!(
                "{app} has no certificate {id}"
            )));
        }
        Ok(())
    }

    /// Every environment's routing settings that differ from the defaults.
    pub fn all_route_settings(&self) -> Result<Vec<(String, String, RouteSettings)>> {
        let c = self.lock();
        let mut st =
            c.prepare("SELECT app, env, force_https, hsts, max_body FROM route_settings")?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    RouteSettings {
                        force_https: r.get(2)?,
                        hsts: r.get(3)?,
                        max_body: r.get::<_, i64>(4)?.max(0) as u64,
                    },
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    pub fn route_settings(&self, app: &str, env: &str) -> Result<RouteSettings> {
        Ok(self
            .lock()
            .query_row(
                "SELECT force_https, hsts, max_body FROM route_settings WHERE app=?1 AND env=?2",
                params![app, env],
                |r| {
                    Ok(RouteSettings {
                        force_https: r.get(0)?,
                        hsts: r.get(1)?,
                        max_body: r.get::<_, i64>(2)?.max(0) as u64,
                    })
                },
            )
            .optional()?
            .unwrap_or_default())
    }

    pub fn set_route_settings(&self, app: &str, env: &str, s: &RouteSettings) -> Result<()> {
        self.lock().execute(
            "INSERT INTO route_settings(app, env, force_https, hsts, max_body) VALUES (?1,?2,?3,?4,?5)
             ON CONFLICT(app, env) DO UPDATE SET force_https=?3, hsts=?4, max_body=?5",
            params![
                app,
                env,
                s.force_https,
                s.hsts,
                s.max_body.min(i64::MAX as u64) as i64
            ],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("db")).unwrap();
        (d, s)
    }

    fn hosts(h: &[&str]) -> Vec<String> {
        h.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_host_belongs_to_one_app_and_changes_are_all_or_nothing() {
        let (_d, s) = store();
        assert_eq!(
            s.add_domains("a", "production", &hosts(&["a.test", "*.a.test"]))
                .unwrap(),
            2
        );
        // Again: nothing new, no error.
        assert_eq!(
            s.add_domains("a", "production", &hosts(&["a.test"]))
                .unwrap(),
            0
        );
        let err = s
            .add_domains("b", "production", &hosts(&["b.test", "a.test"]))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "a.test already belongs to another app");
        assert!(s.add_domains("a", "staging", &hosts(&["a.test"])).is_err());
        // b.test was not added: all or nothing.
        assert_eq!(s.all_domains().unwrap().len(), 2);
        assert!(s
            .remove_domains("a", "production", &hosts(&["a.test", "nope.test"]))
            .is_err());
        assert_eq!(s.all_domains().unwrap().len(), 2);
        s.remove_domains("a", "production", &hosts(&["a.test"]))
            .unwrap();
        assert_eq!(s.clear_domains("a", "production").unwrap(), 1);
        assert!(s.all_domains().unwrap().is_empty());
    }

    #[test]
    fn certs_replace_the_same_names_and_settings_default() {
        let (_d, s) = store();
        let mut c = CertRow {
            id: 0,
            app: "a".into(),
            source: "given".into(),
            names: vec!["b.test".into(), "a.test".into()],
            not_before: 1,
            not_after: 2,
            chain: "pem".into(),
            key_sealed: vec![1, 2, 3],
            fingerprint: "f1".into(),
            added_at: 0,
        };
        s.put_cert(&c).unwrap();
        c.names = vec!["a.test".into(), "b.test".into()];
        c.fingerprint = "f2".into();
        let id = s.put_cert(&c).unwrap();
        c.source = "acme".into();
        s.put_cert(&c).unwrap();
        let all = s.certs("a").unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].id, id);
        assert_eq!(all[0].fingerprint, "f2");
        assert_eq!(all[0].key_sealed, [1, 2, 3]);
        s.remove_cert("a", id).unwrap();
        assert!(s.remove_cert("a", id).is_err());

        assert_eq!(
            s.route_settings("a", "production").unwrap(),
            RouteSettings::default()
        );
        let set = RouteSettings {
            force_https: true,
            hsts: 300,
            max_body: 1 << 20,
        };
        s.set_route_settings("a", "production", &set).unwrap();
        assert_eq!(s.route_settings("a", "production").unwrap(), set);
        assert_eq!(s.all_route_settings().unwrap().len(), 1);
        s.destroy_app("a").ok();
    }
}
