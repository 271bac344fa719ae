//! The push journal's table: the ref updates of a push about to go live, recorded before it
//! does, so a crash between go-live and git moving the refs can be finished at the next
//! start (`controller/journal.rs`).

use rusqlite::params;

use super::{Result, Store};
use crate::timefmt::now;

/// One ref update of a journalled push: `name` from `old` to `new` (40 zeros: none).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RefMove {
    pub name: String,
    pub old: String,
    pub new: String,
}

/// A push whose verdict is not recorded yet.
#[derive(Debug, Clone)]
pub struct PushIntent {
    pub id: i64,
    pub push_id: String,
    pub app: String,
    pub refs: Vec<RefMove>,
    pub created_at: i64,
}

impl Store {
    /// Records a push's ref updates as pending, in one transaction; the intent's id.
    pub fn open_intent(&self, push_id: &str, app: &str, refs: &[RefMove]) -> Result<i64> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        tx.execute(
            "INSERT INTO push_intents(push_id, app, refs, state, created_at) VALUES (?1,?2,?3,'pending',?4)",
            params![
                push_id,
                app,
                serde_json::to_string(refs).unwrap_or_default(),
                now()
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(id)
    }

    /// Settles a pending intent: `done` (its verdict is recorded, or its refs were moved) or
    /// `dropped` (nothing of it went live). An intent already settled stays as it is.
    pub fn settle_intent(&self, id: i64, done: bool) -> Result<()> {
        let state = if done { "done" } else { "dropped" };
        self.lock().execute(
            "UPDATE push_intents SET state=?2, settled_at=?3 WHERE id=?1 AND state='pending'",
            params![id, state, now()],
        )?;
        Ok(())
    }

    /// Every pending intent, oldest first.
    pub fn pending_intents(&self) -> Result<Vec<PushIntent>> {
        let c = self.lock();
        let mut st = c.prepare(
            "SELECT id, push_id, app, refs, created_at FROM push_intents WHERE state='pending' ORDER BY id",
        )?;
        let rows = st
            .query_map([], |r| {
                let refs: String = r.get(3)?;
                Ok(PushIntent {
                    id: r.get(0)?,
                    push_id: r.get(1)?,
                    app: r.get(2)?,
                    refs: serde_json::from_str(&refs).unwrap_or_default(),
                    created_at: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intents_are_pending_until_settled_once() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(&t.path().join("s.db")).unwrap();
        let refs = vec![RefMove {
            name: "refs/heads/main".into(),
            old: "0".repeat(40),
            new: "a".repeat(40),
        }];
        let a = s.open_intent("p1", "web", &refs).unwrap();
        let b = s.open_intent("p2", "web", &refs).unwrap();
        let p = s.pending_intents().unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].id, p[0].push_id.as_str()), (a, "p1"));
        assert_eq!(p[0].refs, refs);
        s.settle_intent(a, true).unwrap();
        s.settle_intent(a, false).unwrap();
        let state: String = s
            .lock()
            .query_row("SELECT state FROM push_intents WHERE id=?1", [a], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(state, "done");
        assert_eq!(s.pending_intents().unwrap()[0].id, b);
    }
}
