//! Nodes, live releases per environment, deploy records.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension};

use super::{Result, Store, StoreError};
use crate::timefmt::now;

#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeRow {
    pub name: String,
    pub addr: String,
    pub labels: BTreeMap<String, String>,
    pub host_fp: String,
    pub slots: i64,
    pub added_at: i64,
}

/// The label that marks a node row as a cluster (`clusters:add`): a swarm agent, one place
/// for the whole cluster. No label a user gives can have this name (labels are checked
/// names), so clusters need no table of their own.
pub const CLUSTER_LABEL: &str = "@cluster";

impl NodeRow {
    /// A cluster's row (`clusters:add`), not a node's.
    pub fn is_cluster(&self) -> bool {
        self.labels.contains_key(CLUSTER_LABEL)
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LiveRow {
    pub app: String,
    pub env: String,
    pub version: i64,
    pub previous: Option<i64>,
    pub nodes: Vec<String>,
    pub updated_at: i64,
}

fn node_row(r: &rusqlite::Row) -> rusqlite::Result<NodeRow> {
    let labels: String = r.get(2)?;
    Ok(NodeRow {
        name: r.get(0)?,
        addr: r.get(1)?,
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        host_fp: r.get(3)?,
        slots: r.get(4)?,
        added_at: r.get(5)?,
    })
}

fn live_row(r: &rusqlite::Row) -> rusqlite::Result<LiveRow> {
    let nodes: String = r.get(4)?;
    Ok(LiveRow {
        app: r.get(0)?,
        env: r.get(1)?,
        version: r.get(2)?,
        previous: r.get(3)?,
        nodes: serde_json::from_str(&nodes).unwrap_or_default(),
        updated_at: r.get(5)?,
    })
}

impl Store {
    pub fn add_node(&self, n: &NodeRow) -> Result<()> {
        self.lock()
            .execute(
                "INSERT INTO nodes(name, addr, labels, host_fp, slots, added_at) VALUES (?1,?2,?3,?4,?5,?6)",
                params![n.name, n.addr, serde_json::to_string(&n.labels).unwrap_or_default(), n.host_fp, n.slots, now()],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                    StoreError::Conflict(format!("a node named '{}' already exists", n.name))
                }
                e => e.into(),
            })?;
        Ok(())
    }

    pub fn remove_node(&self, name: &str) -> Result<()> {
        let n = self
            .lock()
            .execute("DELETE FROM nodes WHERE name=?1", [name])?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("no node named '{name}'")));
        }
        Ok(())
    }

    pub fn list_nodes(&self) -> Result<Vec<NodeRow>> {
        let c = self.lock();
        let mut st = c.prepare(
            "SELECT name, addr, labels, host_fp, slots, added_at FROM nodes ORDER BY name",
        )?;
        let rows = st
            .query_map([], node_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    pub fn set_live(
        &self,
        app: &str,
        env: &str,
        version: i64,
        nodes: &[String],
    ) -> Result<Option<i64>> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        let previous = set_live_in(&tx, app, env, version, nodes)?;
        tx.commit()?;
        Ok(previous)
    }

    pub fn live(&self, app: &str, env: &str) -> Result<Option<LiveRow>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT app, env, version, previous, nodes, updated_at FROM live WHERE app=?1 AND env=?2",
                params![app, env],
                live_row,
            )
            .optional()?)
    }

    pub fn all_live(&self) -> Result<Vec<LiveRow>> {
        let c = self.lock();
        let mut st = c.prepare(
            "SELECT app, env, version, previous, nodes, updated_at FROM live ORDER BY app, env",
        )?;
        let rows = st
            .query_map([], live_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    pub fn start_deploy(&self, app: &str, env: &str, version: i64, key: &str) -> Result<i64> {
        let c = self.lock();
        c.execute(
            "INSERT INTO deploys(app, env, version, key_name, status, started_at) VALUES (?1,?2,?3,?4,'running',?5)",
            params![app, env, version, key, now()],
        )?;
        Ok(c.last_insert_rowid())
    }

    pub fn finish_deploy(&self, id: i64, status: &str, detail: &str) -> Result<()> {
        self.lock().execute(
            "UPDATE deploys SET status=?2, detail=?3, finished_at=?4 WHERE id=?1",
            params![id, status, detail, now()],
        )?;
        Ok(())
    }

    /// The id of the last rollout of an environment that succeeded: its generation. Processes
    /// of a later generation were started by a rollout that did not finish.
    pub fn last_good_deploy(&self, app: &str, env: &str) -> Result<Option<i64>> {
        Ok(self
            .lock()
            .query_row(
                "SELECT MAX(id) FROM deploys WHERE app=?1 AND env=?2 AND status='succeeded'",
                params![app, env],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    pub fn fail_orphan_deploys(&self) -> Result<usize> {
        Ok(self.lock().execute(
            "UPDATE deploys SET status='failed', detail='controller restarted during the deploy', finished_at=?1
             WHERE status='running'",
            [now()],
        )?)
    }
}

/// Records `version` as live in (app, env) on `nodes`, the one it replaces as previous
/// (re-deploying the live version keeps the older one); the previous version. Part of a
/// transaction (see `Store::go_live`).
pub(super) fn set_live_in(
    tx: &rusqlite::Connection,
    app: &str,
    env: &str,
    version: i64,
    nodes: &[String],
) -> Result<Option<i64>> {
    let prev: Option<i64> = tx
        .query_row(
            "SELECT version FROM live WHERE app=?1 AND env=?2",
            params![app, env],
            |r| r.get(0),
        )
        .optional()?;
    // Re-deploying the live version keeps the older "previous" for rollback.
    let previous = match prev {
        Some(p) if p == version => tx
            .query_row(
                "SELECT previous FROM live WHERE app=?1 AND env=?2",
                params![app, env],
                |r| r.get(0),
            )
            .optional()?
            .flatten(),
        p => p,
    };
    tx.execute(
        "INSERT INTO live(app, env, version, previous, nodes, updated_at) VALUES (?1,?2,?3,?4,?5,?6)
         ON CONFLICT(app, env) DO UPDATE SET version=excluded.version, previous=excluded.previous,
         nodes=excluded.nodes, updated_at=excluded.updated_at",
        params![app, env, version, previous, serde_json::to_string(nodes).unwrap_or_default(), now()],
    )?;
    Ok(previous)
}
