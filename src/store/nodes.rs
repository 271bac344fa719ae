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

/// The label that marks a row as a cluster's (`clusters:add`: a swarm agent, one place for
/// the whole cluster) where clusters and nodes are listed together (`Core::all_nodes`).
/// Clusters are stored in a table of their own (`list_clusters`); this label is never
/// stored. No label a user gives can have this name (labels are checked names).
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

fn conflict(kind: &str, name: &str) -> StoreError {
    StoreError::Conflict(format!("a {kind} named '{name}' already exists"))
}

impl Store {
    pub fn add_node(&self, n: &NodeRow) -> Result<()> {
        let c = self.lock();
        // One name space for nodes and clusters: environments name either.
        let cluster: Option<i64> = c
            .query_row("SELECT 1 FROM clusters WHERE name=?1", [&n.name], |r| {
                r.get(0)
            })
            .optional()?;
        if cluster.is_some() {
            return Err(conflict("cluster", &n.name));
        }
        c.execute(
                "INSERT INTO nodes(name, addr, labels, host_fp, slots, added_at) VALUES (?1,?2,?3,?4,?5,?6)",
                params![n.name, n.addr, serde_json::to_string(&n.labels).unwrap_or_default(), n.host_fp, n.slots, now()],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                    conflict("node", &n.name)
                }
                e => e.into(),
            })?;
        Ok(())
    }

    /// A cluster (`kind`: `swarm`) reached through its agent at `addr`, host key pinned.
    pub fn add_cluster(&self, name: &str, kind: &str, addr: &str, host_fp: &str) -> Result<()> {
        let c = self.lock();
        let node: Option<i64> = c
            .query_row("SELECT 1 FROM nodes WHERE name=?1", [name], |r| r.get(0))
            .optional()?;
        if node.is_some() {
            return Err(conflict("node", name));
        }
        c.execute(
            "INSERT INTO clusters(name, kind, addr, host_fp, added_at) VALUES (?1,?2,?3,?4,?5)",
            params![name, kind, addr, host_fp, now()],
        )
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                conflict("cluster", name)
            }
            e => e.into(),
        })?;
        Ok(())
    }

    pub fn remove_cluster(&self, name: &str) -> Result<()> {
        let n = self
            .lock()
            .execute("DELETE FROM clusters WHERE name=?1", [name])?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("no cluster named '{name}'")));
        }
        Ok(())
    }

    /// The clusters, as rows that say so (`NodeRow::is_cluster`), by name.
    pub fn list_clusters(&self) -> Result<Vec<NodeRow>> {
        let c = self.lock();
        let mut st =
            c.prepare("SELECT name, kind, addr, host_fp, added_at FROM clusters ORDER BY name")?;
        let rows = st
            .query_map([], |r| {
                Ok(NodeRow {
                    name: r.get(0)?,
                    labels: BTreeMap::from([(CLUSTER_LABEL.to_string(), r.get(1)?)]),
                    addr: r.get(2)?,
                    host_fp: r.get(3)?,
                    slots: 0,
                    added_at: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusters_have_their_own_table_and_share_the_name_space() {
        let dir = tempfile::tempdir().unwrap();
        let st = Store::open(&dir.path().join("s.db")).unwrap();
        let node = |name: &str| NodeRow {
            name: name.into(),
            addr: "10.0.0.1:2300".into(),
            labels: BTreeMap::from([("zone".to_string(), "a".to_string())]),
            host_fp: "SHA256:x".into(),
            slots: 0,
            added_at: 0,
        };
        st.add_node(&node("n1")).unwrap();
        st.add_cluster("sw", "swarm", "10.0.0.5:2300", "SHA256:y")
            .unwrap();
        assert!(matches!(
            st.add_node(&node("sw")),
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            st.add_cluster("n1", "swarm", "a:1", "f"),
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            st.add_cluster("sw", "swarm", "a:1", "f"),
            Err(StoreError::Conflict(_))
        ));
        let nodes = st.list_nodes().unwrap();
        assert_eq!(nodes.len(), 1);
        assert!(!nodes[0].is_cluster());
        let c = st.list_clusters().unwrap();
        assert_eq!(c.len(), 1);
        assert!(c[0].is_cluster() && c[0].addr == "10.0.0.5:2300" && c[0].host_fp == "SHA256:y");
        st.remove_cluster("sw").unwrap();
        assert!(st.list_clusters().unwrap().is_empty());
        assert!(st.remove_cluster("sw").is_err());
    }

    #[test]
    fn the_migration_moves_cluster_rows_out_of_nodes() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        // The schema before migration 16, with a node and a cluster row of that time.
        for sql in &super::super::migrations::MIGRATIONS[..15] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 15).unwrap();
        conn.execute_batch(
            "INSERT INTO nodes(name, addr, labels, host_fp, slots, added_at)
               VALUES ('n1', '10.0.0.1:2300', '{\"zone\":\"a\"}', 'SHA256:x', 0, 5),
                      ('sw', '10.0.0.5:2300', '{\"@cluster\":\"swarm\"}', 'SHA256:y', 0, 7);",
        )
        .unwrap();
        super::super::migrations::migrate(&mut conn).unwrap();
        let nodes: Vec<String> = conn
            .prepare("SELECT name FROM nodes")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(nodes, vec!["n1".to_string()]);
        let c: (String, String, String, String, i64) = conn
            .query_row(
                "SELECT name, kind, addr, host_fp, added_at FROM clusters",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        assert_eq!(
            c,
            (
                "sw".into(),
                "swarm".into(),
                "10.0.0.5:2300".into(),
                "SHA256:y".into(),
                7
            )
        );
    }
}
