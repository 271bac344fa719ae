//! A release going live in an environment: every row that changes with it, in one
//! transaction (nothing half-written: a failure leaves the environment as it was).

use std::collections::BTreeMap;

use super::{config, formation, nodes, Result, Store};

/// What changes when a release goes live.
pub struct GoLive<'a> {
    pub app: &'a str,
    pub env: &'a str,
    pub version: i64,
    /// The nodes it runs on.
    pub nodes: &'a [String],
    /// The config it went live with, sealed as one blob (a rollback restores it).
    pub release_config: &'a [u8],
    /// The environment's config becomes this (sealed values), when given.
    pub config: Option<&'a BTreeMap<String, Vec<u8>>>,
    /// Process counts to remember (`scale`), merged over the environment's.
    pub formation: Option<&'a BTreeMap<String, u32>>,
    /// Whether the environment is stopped from now on, when given.
    pub stopped: Option<bool>,
}

impl Store {
    /// Records a release as live with everything that goes with it, or nothing; the version
    /// it replaces as live.
    pub fn go_live(&self, g: &GoLive) -> Result<Option<i64>> {
        let mut c = self.lock();
        let tx = c.transaction()?;
        let previous = nodes::set_live_in(&tx, g.app, g.env, g.version, g.nodes)?;
        config::set_release_config_in(&tx, g.app, g.version, g.env, g.release_config)?;
        if let Some(sealed) = g.config {
            config::replace_config_in(&tx, g.app, g.env, sealed)?;
        }
        if let Some(f) = g.formation {
            formation::set_formation_in(&tx, g.app, g.env, f)?;
        }
        if let Some(s) = g.stopped {
            formation::set_stopped_in(&tx, g.app, g.env, s)?;
        }
        tx.commit()?;
        Ok(previous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn going_live_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        let nodes = ["n1".to_string()];
        let config = BTreeMap::from([("K".to_string(), b"sealed".to_vec())]);
        let counts = BTreeMap::from([("web".to_string(), 2)]);
        let g = GoLive {
            app: "a",
            env: "production",
            version: 1,
            nodes: &nodes,
            release_config: b"blob",
            config: Some(&config),
            formation: Some(&counts),
            stopped: Some(true),
        };
        assert_eq!(s.go_live(&g).unwrap(), None);
        assert_eq!(s.live("a", "production").unwrap().unwrap().version, 1);
        assert_eq!(s.config_sealed("a", "production").unwrap(), config);
        assert_eq!(s.formation("a", "production").unwrap(), counts);
        assert!(s.stopped("a", "production").unwrap());
        assert_eq!(
            s.release_config("a", 1, "production").unwrap().as_deref(),
            Some(&b"blob"[..])
        );
        // A failing write (the table is gone) leaves every row as it was.
        s.lock().execute_batch("DROP TABLE app_state").unwrap();
        let g2 = GoLive {
            version: 2,
            release_config: b"blob2",
            config: Some(&BTreeMap::new()),
            ..g
        };
        assert!(s.go_live(&g2).is_err());
        assert_eq!(s.live("a", "production").unwrap().unwrap().version, 1);
        assert_eq!(s.config_sealed("a", "production").unwrap(), config);
        assert_eq!(s.release_config("a", 2, "production").unwrap(), None);
    }
}
