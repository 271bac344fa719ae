//! Traffic per app environment in time buckets, and each app's router settings document.
//!
//! The controller adds per-minute buckets; [`Store::roll_up_traffic`] folds minutes older
//! than [`MINUTES_KEPT`] into hours, hours older than [`HOURS_KEPT`] into days, and drops
//! days older than [`DAYS_KEPT`], so an app environment holds at most about
//! 2880 + 2160 + 1100 rows whatever its traffic.

use rusqlite::{params, Connection, OptionalExtension};

use super::{Result, Store};
use crate::router::{Sample, LATENCY_BUCKETS};

pub const MINUTE: i64 = 60;
pub const HOUR: i64 = 3600;
pub const DAY: i64 = 86400;
/// How long each resolution is kept before it is rolled up (or, days, dropped).
pub const MINUTES_KEPT: i64 = 2 * DAY;
pub const HOURS_KEPT: i64 = 90 * DAY;
pub const DAYS_KEPT: i64 = 3 * 365 * DAY;

/// Rows by status, with their count.
pub type StatusCounts = Vec<(String, u64)>;

/// One bucket of traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficRow {
    pub app: String,
    pub env: String,
    pub span: i64,
    pub start: i64,
    pub sample: Sample,
}

impl Store {
    /// Adds figures to their buckets (created as needed), in one transaction. Figures of an
    /// app that no longer exists are dropped.
    pub fn add_traffic(&self, rows: &[TrafficRow]) -> Result<()> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        for r in rows {
            let exists: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM apps WHERE name=?1)",
                [&r.app],
                |row| row.get(0),
            )?;
            if exists {
                add_in(&tx, r)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The sum of `app`'s buckets (of one environment, or each) that end after `since`,
    /// per environment.
    pub fn traffic(
        &self,
        app: &str,
        env: Option<&str>,
        since: i64,
    ) -> Result<Vec<(String, Sample)>> {
        let c = self.lock();
        let mut st = c.prepare(
            "SELECT app, env, span, start, requests, s1, s2, s3, s4, s5, bytes_in, bytes_out,
                    latency, latency_us
             FROM traffic WHERE app=?1 AND (?2 IS NULL OR env=?2) AND start + span > ?3
             ORDER BY env",
        )?;
        let rows = st
            .query_map(params![app, env, since], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut out: Vec<(String, Sample)> = vec![];
        for r in rows {
            match out.last_mut() {
                Some((e, s)) if *e == r.env => s.add(&r.sample),
                _ => out.push((r.env, r.sample)),
            }
        }
        Ok(out)
    }

    /// Folds old buckets into coarser ones and drops the oldest (see the module doc).
    /// Returns the rows removed.
    pub fn roll_up_traffic(&self, now: i64) -> Result<usize> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        let mut removed = 0;
        for (span, kept, into) in [(MINUTE, MINUTES_KEPT, HOUR), (HOUR, HOURS_KEPT, DAY)] {
            let old: Vec<TrafficRow> = {
                let mut st = tx.prepare(
                    "SELECT app, env, span, start, requests, s1, s2, s3, s4, s5, bytes_in,
                            bytes_out, latency, latency_us
                     FROM traffic WHERE span=?1 AND start < ?2",
                )?;
                let rows = st.query_map(params![span, now - kept], row)?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            for mut r in old {
                tx.execute(
                    "DELETE FROM traffic WHERE app=?1 AND env=?2 AND span=?3 AND start=?4",
                    params![r.app, r.env, r.span, r.start],
                )?;
                removed += 1;
                r.start -= r.start.rem_euclid(into);
                r.span = into;
                add_in(&tx, &r)?;
            }
        }
        removed += tx.execute(
            "DELETE FROM traffic WHERE span=?1 AND start < ?2",
            params![DAY, now - DAYS_KEPT],
        )?;
        tx.commit()?;
        Ok(removed)
    }

    /// An app environment's settings document (router policy and limits), if it has one.
    pub fn app_settings(&self, app: &str, env: &str) -> Result<Option<String>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT doc FROM app_settings WHERE app=?1 AND env=?2",
                [app, env],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Every settings document: (app, env, doc).
    pub fn all_app_settings(&self) -> Result<Vec<(String, String, String)>> {
        let c = self.lock();
        let mut st = c.prepare("SELECT app, env, doc FROM app_settings ORDER BY app, env")?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Replaces an app environment's settings document (only while the app exists).
    pub fn set_app_settings(&self, app: &str, env: &str, doc: &str) -> Result<()> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        let exists: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM apps WHERE name=?1)",
            [app],
            |r| r.get(0),
        )?;
        if !exists {
            return Err(super::StoreError::NotFound(format!(
                "app '{app}' does not exist"
            )));
        }
        tx.execute(
            "INSERT INTO app_settings(app, env, doc) VALUES(?1, ?2, ?3)
             ON CONFLICT(app, env) DO UPDATE SET doc=excluded.doc",
            params![app, env, doc],
        )?;
        tx.commit()?;
        Ok(())
    }
}

impl Store {
    pub fn count_apps(&self) -> Result<u64> {
        let n: i64 = self
            .lock()
            .query_row("SELECT count(*) FROM apps", [], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    /// Builds and deploys by status, for the metrics endpoint.
    pub fn pipeline_counts(&self) -> Result<(StatusCounts, StatusCounts)> {
        let c = self.lock();
        let count = |sql: &str| -> Result<Vec<(String, u64)>> {
            let mut st = c.prepare(sql)?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64)))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        };
        Ok((
            count("SELECT status, count(*) FROM builds GROUP BY status ORDER BY status")?,
            count("SELECT status, count(*) FROM deploys GROUP BY status ORDER BY status")?,
        ))
    }
}

fn row(r: &rusqlite::Row) -> rusqlite::Result<TrafficRow> {
    let latency: String = r.get(12)?;
    let mut hist = [0u64; LATENCY_BUCKETS];
    for (slot, n) in hist.iter_mut().zip(latency.split(',')) {
        *slot = n.parse().unwrap_or(0);
    }
    let u = |i: usize| -> rusqlite::Result<u64> { Ok(r.get::<_, i64>(i)?.max(0) as u64) };
    Ok(TrafficRow {
        app: r.get(0)?,
        env: r.get(1)?,
        span: r.get(2)?,
        start: r.get(3)?,
        sample: Sample {
            requests: u(4)?,
            status: [u(5)?, u(6)?, u(7)?, u(8)?, u(9)?],
            bytes_in: u(10)?,
            bytes_out: u(11)?,
            latency: hist,
            latency_us: u(13)?,
        },
    })
}

/// Adds `r` to its bucket, within a transaction.
fn add_in(tx: &Connection, r: &TrafficRow) -> Result<()> {
    let old = tx
        .query_row(
            "SELECT app, env, span, start, requests, s1, s2, s3, s4, s5, bytes_in, bytes_out,
                    latency, latency_us
             FROM traffic WHERE app=?1 AND env=?2 AND span=?3 AND start=?4",
            params![r.app, r.env, r.span, r.start],
            row,
        )
        .optional()?;
    let mut s = old.map(|o| o.sample).unwrap_or_default();
    s.add(&r.sample);
    let hist: Vec<String> = s.latency.iter().map(u64::to_string).collect();
    let i = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    tx.execute(
        "INSERT OR REPLACE INTO traffic(app, env, span, start, requests, s1, s2, s3, s4, s5,
            bytes_in, bytes_out, latency, latency_us)
         VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        params![
            r.app,
            r.env,
            r.span,
            r.start,
            i(s.requests),
            i(s.status[0]),
            i(s.status[1]),
            i(s.status[2]),
            i(s.status[3]),
            i(s.status[4]),
            i(s.bytes_in),
            i(s.bytes_out),
            hist.join(","),
            i(s.latency_us),
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(requests: u64, bytes: u64) -> Sample {
        Sample {
            requests,
            status: [0, requests, 0, 0, 0],
            bytes_in: bytes,
            bytes_out: 2 * bytes,
            latency: std::array::from_fn(|i| u64::from(i == 0) * requests),
            latency_us: 10 * requests,
        }
    }

    fn bucket(env: &str, start: i64, s: Sample) -> TrafficRow {
        TrafficRow {
            app: "web".into(),
            env: env.into(),
            span: MINUTE,
            start,
            sample: s,
        }
    }

    #[test]
    fn buckets_add_up_roll_up_and_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        s.create_app("web", "admin").unwrap();
        let now = 1_000 * DAY;
        let mut rows = vec![
            bucket("production", now - 60, sample(3, 100)),
            bucket("production", now - 60, sample(2, 10)),
            bucket("staging", now - 120, sample(1, 1)),
        ];
        // Three days of minutes, one request each: two days stay minutes, the third day
        // becomes 24 hours.
        for m in 0..(3 * 24 * 60) {
            rows.push(bucket("old", now - 3 * DAY + m * MINUTE, sample(1, 1)));
        }
        // Gone with its app.
        rows.push(TrafficRow {
            app: "gone".into(),
            ..bucket("production", now, sample(9, 9))
        });
        s.add_traffic(&rows).unwrap();
        let t = s.traffic("web", Some("production"), now - 3600).unwrap();
        assert_eq!(t, vec![("production".to_string(), sample(5, 110))]);
        assert_eq!(s.traffic("web", None, now - 3600).unwrap().len(), 3);
        assert!(s.traffic("gone", None, 0).unwrap().is_empty());
        assert!(s
            .traffic("web", Some("production"), now)
            .unwrap()
            .is_empty());

        let before = s.traffic("web", Some("old"), 0).unwrap();
        s.roll_up_traffic(now).unwrap();
        assert_eq!(s.traffic("web", Some("old"), 0).unwrap(), before);
        let n: i64 = s
            .lock()
            .query_row(
                "SELECT count(*) FROM traffic WHERE env='old' AND span=?1",
                [HOUR],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 24);
        // Far in the future everything has become days, and then nothing.
        s.roll_up_traffic(now + HOURS_KEPT + 2 * DAY).unwrap();
        assert_eq!(s.traffic("web", Some("old"), 0).unwrap(), before);
        s.roll_up_traffic(now + DAYS_KEPT + HOURS_KEPT + 2 * DAY)
            .unwrap();
        assert!(s.traffic("web", None, 0).unwrap().is_empty());

        s.set_app_settings("web", "production", "{}").unwrap();
        s.set_app_settings("web", "staging", "{\"maintenance\":true}")
            .unwrap();
        assert_eq!(
            s.app_settings("web", "production").unwrap().as_deref(),
            Some("{}")
        );
        assert_eq!(s.app_settings("web", "other").unwrap(), None);
        assert_eq!(s.all_app_settings().unwrap().len(), 2);
        assert!(s.set_app_settings("gone", "production", "{}").is_err());
        s.destroy_app("web").unwrap();
        assert!(s.all_app_settings().unwrap().is_empty());
    }

    #[test]
    fn settings_from_before_environments_become_productions() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let before = super::super::migrations::MIGRATIONS
            .iter()
            .position(|m| m.contains("app_settings_env"))
            .unwrap();
        {
            let c = rusqlite::Connection::open(&db).unwrap();
            let sql = super::super::migrations::MIGRATIONS[..before].join(";");
            c.execute_batch(&sql).unwrap();
            c.pragma_update(None, "user_version", before as i64)
                .unwrap();
            c.execute(
                "INSERT INTO apps(name, created_at, created_by) VALUES ('old', 1, 'root')",
                [],
            )
            .unwrap();
            c.execute(
                "INSERT INTO app_settings(app, doc) VALUES ('old', '{\"maintenance\":true}')",
                [],
            )
            .unwrap();
        }
        let s = Store::open(&db).unwrap();
        assert_eq!(
            s.all_app_settings().unwrap(),
            [(
                "old".to_string(),
                "production".to_string(),
                "{\"maintenance\":true}".to_string()
            )]
        );
    }
}
