//! Scheduled service backups (`backup: { every: 24h, keep: 7 }` under a service in
//! `magrathea.yml`). The schedule lives on the service's row (set by each deploy of the
//! environment, `Core::declare_services`); when the next backup is due is computed from the
//! catalog alone: the newest scheduled backup (or the service's creation) plus `every`, so a
//! controller that restarts neither skips one nor takes one twice. A failed one is retried
//! after a backoff (a minute, doubling, never later than the schedule itself) and recorded on
//! the service (`services:info`), in the app's event log (`logs`) and in the audit trail;
//! retention (`keep` scheduled backups) is applied after each one, by `backup_service`.

use std::sync::Arc;
use std::time::Duration;

use super::backups::{BackupAsk, KEEP};
use super::{Core, Sink};
use crate::store::{Audit, BackupReason, ServiceRow};
use crate::timefmt::{now, utc};

/// The scheduler looks again at least this often.
const RESCAN: Duration = Duration::from_secs(600);
/// Longest one scheduled backup may take before it counts as failed.
const BACKUP_BOUND: Duration = Duration::from_secs(6 * 3600);

/// When `r`'s next scheduled backup is due (unix seconds), or None without a schedule.
pub fn next_due(r: &ServiceRow, last: Option<i64>) -> Option<i64> {
    let every = r.backup_every.filter(|e| *e > 0)?;
    let due = last.unwrap_or(r.created_at).max(r.created_at) + every;
    // After failures: a minute, doubling, at most the schedule's own interval.
    let retry = match (r.backup_failures, r.backup_error_at) {
        (n, Some(at)) if n > 0 => Some(at + (60i64 << (n - 1).clamp(0, 12)).min(every).max(1)),
        _ => None,
    };
    Some(retry.unwrap_or(due))
}

impl Core {
    /// Wakes the scheduler: a schedule changed.
    pub(super) fn wake_backups(&self) {
        self.backups_wake.notify_one();
    }

    /// One scheduled backup of `r`, recorded whatever its outcome.
    async fn scheduled_backup(&self, r: &ServiceRow) {
        let (tx, _) = tokio::sync::mpsc::channel::<String>(1);
        // Nobody watches it: its lines go nowhere (a closed channel).
        let mut quiet = Sink::new(tx);
        let ask = BackupAsk {
            reason: BackupReason::Scheduled,
            release: None,
            verify: true,
            keep: KEEP,
        };
        let result =
            tokio::time::timeout(BACKUP_BOUND, self.backup_service(&r.name, ask, &mut quiet))
                .await
                .unwrap_or_else(|_| {
                    Err(super::CoreError::Failed(format!(
                        "it did not finish within {} h",
                        BACKUP_BOUND.as_secs() / 3600
                    )))
                });
        let (line, outcome, error) = match &result {
            Ok(b) => (
                format!(
                    "scheduled backup #{} of {}: {}, sha256 {}, verified",
                    b.id,
                    r.name,
                    super::view::human(b.size),
                    &b.sha256[..12]
                ),
                "ok",
                None,
            ),
            Err(e) => {
                let e = e.to_string().replace('\n', " ");
                (
                    format!("scheduled backup of {} FAILED: {e}", r.name),
                    "failed",
                    Some(e),
                )
            }
        };
        if let Err(e) = self.store.backup_outcome(&r.name, error.as_deref()) {
            tracing::error!(service = %r.name, error = %e, "cannot record a scheduled backup");
        }
        let line = match self.store.service(&r.name).ok().flatten() {
            Some(now_row) if error.is_some() => {
                let last = self.store.last_scheduled_backup(&r.name).ok().flatten();
                let next = next_due(&now_row, last).map_or_else(|| "none".into(), utc);
                format!(
                    "{line} ({} in a row); next attempt {next}",
                    now_row.backup_failures
                )
            }
            _ => line,
        };
        match &error {
            Some(_) => tracing::warn!(service = %r.name, "{line}"),
            None => tracing::info!(service = %r.name, "{line}"),
        }
        if let Some(app) = &r.app {
            crate::eventlog::EventLog::open_labelled(&self.data.logs(), app, "backup", &r.env)
                .write(&line);
        }
        let command = format!("services:backup {} (scheduled)", r.name);
        let audit = Audit {
            fingerprint: "-",
            key_name: "scheduler",
            app: r.app.as_deref(),
            command: &command,
            outcome,
            detail: error.as_deref().unwrap_or(""),
        };
        if let Err(e) = self.store.audit(&audit) {
            tracing::error!(error = %e, "cannot audit a scheduled backup");
        }
    }

    /// The services with a schedule and when each is next due.
    fn backup_plan(&self) -> Vec<(ServiceRow, i64)> {
        let rows = self.store.services().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the services");
            vec![]
        });
        rows.into_iter()
            .filter_map(|r| {
                let last = self.store.last_scheduled_backup(&r.name).ok()?;
                let at = next_due(&r, last)?;
                Some((r, at))
            })
            .collect()
    }
}

/// The scheduler: sleeps until the next backup is due (or a deploy changed a schedule),
/// then takes what is due, one at a time. Stops with the server.
pub async fn scheduled_backups(core: Arc<Core>) {
    let shutdown = core.shutdown().clone();
    loop {
        for (r, at) in core.backup_plan() {
            if shutdown.is_cancelled() {
                return;
            }
            if at <= now() {
                core.scheduled_backup(&r).await;
            }
        }
        let next = core.backup_plan().iter().map(|(_, at)| *at).min();
        let wait = next.map_or(RESCAN, |at| {
            Duration::from_secs((at - now()).clamp(1, RESCAN.as_secs() as i64) as u64)
        });
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = core.backups_wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(every: Option<i64>, failures: i64, error_at: Option<i64>) -> ServiceRow {
        ServiceRow {
            id: 1,
            name: "shop-db".into(),
            kind: "postgres".into(),
            env: "production".into(),
            app: Some("shop".into()),
            node: "local".into(),
            key: "k".into(),
            uid: 1,
            image: "i".into(),
            created_at: 1000,
            created_by: "admin".into(),
            backup_every: every,
            backup_keep: Some(7),
            backup_failures: failures,
            backup_error: None,
            backup_error_at: error_at,
            memory: None,
        }
    }

    #[test]
    fn due_from_the_catalog_and_retried_after_failures() {
        let day = 86_400;
        assert_eq!(next_due(&row(None, 0, None), Some(5000)), None);
        // Never backed up: one interval after the service was created.
        assert_eq!(next_due(&row(Some(day), 0, None), None), Some(1000 + day));
        // From the newest scheduled backup: a restart computes the same time again.
        assert_eq!(
            next_due(&row(Some(day), 0, None), Some(5000)),
            Some(5000 + day)
        );
        // A failure at the due time: retried a minute later, then two, then four...
        let due = 5000 + day;
        assert_eq!(
            next_due(&row(Some(day), 1, Some(due)), Some(5000)),
            Some(due + 60)
        );
        assert_eq!(
            next_due(&row(Some(day), 3, Some(due + 180)), Some(5000)),
            Some(due + 180 + 240)
        );
        // ... never waiting longer than the schedule itself.
        assert_eq!(
            next_due(&row(Some(300), 9, Some(due)), Some(5000)),
            Some(due + 300)
        );
        // A failure recorded before a later success does not hold the next one back.
        assert_eq!(
            next_due(&row(Some(day), 0, Some(10)), Some(5000)),
            Some(5000 + day)
        );
    }
}
