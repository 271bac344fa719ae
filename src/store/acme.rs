//! Automatic certificates: the ACME account per directory (its credentials arrive sealed)
//! and, per app environment with `certs:auto:enable`, what was ordered and the renewal
//! state (failures in a row, the last error, the next attempt).

use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;

use super::{now, Result, Store};

/// One environment's automatic certificate.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AcmeRow {
    pub app: String,
    pub env: String,
    /// What the current certificate covers (empty before the first one).
    pub domains: Vec<String>,
    pub issued_at: Option<i64>,
    pub not_after: Option<i64>,
    /// Attempts failed in a row since the last success.
    pub failures: i64,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    /// When the next order (a renewal, or a retry) is due.
    pub next_attempt: i64,
}

const COLUMNS: &str =
    "app, env, domains, issued_at, not_after, failures, last_error, last_error_at, next_attempt";

fn row(r: &Row) -> rusqlite::Result<AcmeRow> {
    let domains: String = r.get(2)?;
    Ok(AcmeRow {
        app: r.get(0)?,
        env: r.get(1)?,
        domains: domains.split_whitespace().map(str::to_owned).collect(),
        issued_at: r.get(3)?,
        not_after: r.get(4)?,
        failures: r.get(5)?,
        last_error: r.get(6)?,
        last_error_at: r.get(7)?,
        next_attempt: r.get(8)?,
    })
}

impl Store {
    /// The sealed credentials of our account at `directory`.
    pub fn acme_account(&self, directory: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT credentials FROM acme_accounts WHERE directory=?1",
                [directory],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn set_acme_account(&self, directory: &str, sealed: &[u8]) -> Result<()> {
        self.lock().execute(
            "INSERT INTO acme_accounts(directory, credentials, created_at) VALUES(?1, ?2, ?3)
             ON CONFLICT(directory) DO UPDATE SET credentials=excluded.credentials",
            params![directory, sealed, now()],
        )?;
        Ok(())
    }

    pub fn forget_acme_account(&self, directory: &str) -> Result<()> {
        self.lock()
            .execute("DELETE FROM acme_accounts WHERE directory=?1", [directory])?;
        Ok(())
    }

    /// Turns automatic certificates on for an environment (again: due now).
    pub fn acme_enable(&self, app: &str, env: &str) -> Result<()> {
        self.lock().execute(
            "INSERT INTO acme_certs(app, env, next_attempt, enabled_at) VALUES(?1, ?2, ?3, ?3)
             ON CONFLICT(app, env) DO UPDATE SET next_attempt=excluded.next_attempt",
            params![app, env, now()],
        )?;
        Ok(())
    }

    /// Turns them off; false if they were not on.
    pub fn acme_disable(&self, app: &str, env: &str) -> Result<bool> {
        Ok(self.lock().execute(
            "DELETE FROM acme_certs WHERE app=?1 AND env=?2",
            params![app, env],
        )? > 0)
    }

    pub fn acme_cert(&self, app: &str, env: &str) -> Result<Option<AcmeRow>> {
        Ok(self
            .lock()
            .query_row(
                &format!("SELECT {COLUMNS} FROM acme_certs WHERE app=?1 AND env=?2"),
                params![app, env],
                row,
            )
            .optional()?)
    }

    /// Every environment with automatic certificates (of one app, or of all).
    pub fn acme_certs(&self, app: Option<&str>) -> Result<Vec<AcmeRow>> {
        let c = self.lock();
        let mut st = c.prepare(&format!(
            "SELECT {COLUMNS} FROM acme_certs WHERE ?1 IS NULL OR app=?1 ORDER BY app, env"
        ))?;
        let rows = st.query_map([app], row)?.collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// A certificate was issued: the failures are forgotten.
    pub fn acme_issued(
        &self,
        app: &str,
        env: &str,
        domains: &[String],
        not_after: i64,
        next_attempt: i64,
    ) -> Result<()> {
        self.lock().execute(
            "UPDATE acme_certs SET domains=?3, issued_at=?4, not_after=?5, failures=0,
                last_error=NULL, last_error_at=NULL, next_attempt=?6
             WHERE app=?1 AND env=?2",
            params![app, env, domains.join(" "), now(), not_after, next_attempt],
        )?;
        Ok(())
    }

    /// An attempt failed; returns the failures in a row, this one included.
    pub fn acme_failed(
        &self,
        app: &str,
        env: &str,
        error: &str,
        next_attempt: impl Fn(i64) -> i64,
    ) -> Result<i64> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        let failures: Option<i64> = tx
            .query_row(
                "SELECT failures FROM acme_certs WHERE app=?1 AND env=?2",
                params![app, env],
                |r| r.get(0),
            )
            .optional()?;
        // Turned off meanwhile: nothing to record.
        let Some(failures) = failures.map(|f| f + 1) else {
            return Ok(0);
        };
        tx.execute(
            "UPDATE acme_certs SET failures=?3, last_error=?4, last_error_at=?5, next_attempt=?6
             WHERE app=?1 AND env=?2",
            params![app, env, failures, error, now(), next_attempt(failures)],
        )?;
        tx.commit()?;
        Ok(failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enable_issue_fail_and_disable() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("db")).unwrap();
        assert_eq!(s.acme_account("https://ca/dir").unwrap(), None);
        s.set_acme_account("https://ca/dir", b"sealed").unwrap();
        s.set_acme_account("https://ca/dir", b"sealed2").unwrap();
        assert_eq!(
            s.acme_account("https://ca/dir").unwrap().unwrap(),
            b"sealed2"
        );

        s.acme_enable("web", "production").unwrap();
        let r = s.acme_cert("web", "production").unwrap().unwrap();
        assert!(r.domains.is_empty() && r.issued_at.is_none() && r.failures == 0);
        assert_eq!(
            s.acme_failed("web", "production", "boom", |n| n * 100)
                .unwrap(),
            1
        );
        assert_eq!(
            s.acme_failed("web", "production", "boom2", |n| n * 100)
                .unwrap(),
            2
        );
        let r = s.acme_cert("web", "production").unwrap().unwrap();
        assert_eq!((r.failures, r.next_attempt), (2, 200));
        assert_eq!(r.last_error.as_deref(), Some("boom2"));
        let domains = vec!["a.example.com".to_string(), "b.example.com".to_string()];
        s.acme_issued("web", "production", &domains, 5000, 4000)
            .unwrap();
        let r = s.acme_cert("web", "production").unwrap().unwrap();
        assert_eq!((r.failures, r.last_error, r.next_attempt), (0, None, 4000));
        assert_eq!(r.domains, domains);
        assert_eq!(s.acme_certs(Some("web")).unwrap().len(), 1);
        assert_eq!(s.acme_certs(Some("other")).unwrap().len(), 0);
        assert!(s.acme_disable("web", "production").unwrap());
        assert!(!s.acme_disable("web", "production").unwrap());
        assert_eq!(
            s.acme_failed("web", "production", "late", |n| n).unwrap(),
            0
        );
    }
}
