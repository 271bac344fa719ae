//! Nodes: adding one (its host key learnt and pinned), removing one, asking one what runs
//! on it, and the controller's key the agents accept.

use std::collections::BTreeMap;

use super::{Core, CoreError};
use crate::node::client::NodeClient;
use crate::node::proto::{StatusReply, StatusReq};
use crate::store::{NodeRow, StoreError};

/// A node to add, checked by the front end.
pub struct NewNode {
    pub name: String,
    pub addr: String,
    pub labels: BTreeMap<String, String>,
    /// At most this many processes; 0: no cap.
    pub slots: i64,
}

impl Core {
    /// Every node (see [`Core::all_nodes`]), clusters aside.
    pub fn nodes(&self) -> Result<Vec<NodeRow>, CoreError> {
        Ok(self
            .all_nodes()?
            .into_iter()
            .filter(|n| !n.is_cluster())
            .collect())
    }

    /// The controller's public key in OpenSSH form, for `magrathea agent --controller-key`.
    pub fn controller_key(&self) -> Result<String, CoreError> {
        let mut k = self.client_key.public_key().clone();
        k.set_comment("magrathea-controller");
        k.to_openssh()
            .map_err(|e| CoreError::Invalid(e.to_string()))
    }

    /// First contact: learn the host key, check the agent accepts our key, then record the
    /// node with its host key pinned. The pinned fingerprint.
    pub async fn add_node(&self, node: NewNode) -> Result<String, CoreError> {
        let NewNode {
            name,
            addr,
            labels,
            slots,
        } = node;
        let probe = NodeClient::new(&name, &addr, self.client_key.clone(), None);
        let fp = probe
            .probe()
            .await
            .map_err(|e| CoreError::Invalid(e.to_string()))?;
        let pinned = NodeClient::new(&name, &addr, self.client_key.clone(), Some(fp.clone()));
        let _: StatusReply = pinned
            .send(&StatusReq)
            .await
            .map_err(|e| CoreError::Invalid(e.to_string()))?;
        self.store.add_node(&NodeRow {
            name,
            addr,
            labels,
            host_fp: fp.clone(),
            slots,
            added_at: 0,
        })?;
        Ok(fp)
    }

    /// Forget a node (its processes keep running until stopped there). The built-in node's
    /// removal is remembered in the data dir: the store's node table holds added nodes only.
    pub fn remove_node(&self, name: &str) -> Result<(), CoreError> {
        crate::names::check("node", name)?;
        if name == "local" {
            if self.local_removed() {
                return Err(CoreError::Invalid("no node named 'local'".into()));
            }
            crate::fsutil::write_atomic(&self.local_removed_marker(), b"removed\n", 0o600)
                .map_err(|e| CoreError::Invalid(format!("cannot remove node 'local': {e}")))?;
            return Ok(());
        }
        Ok(self.store.remove_node(name)?)
    }

    /// `nodes:add local`: the built-in node is a node again after `nodes:remove local` (its
    /// in-process agent never stopped; only the removal was remembered).
    pub fn restore_local_node(&self) -> Result<(), CoreError> {
        if !self.local_removed() {
            return Err(CoreError::Invalid("node 'local' is already a node".into()));
        }
        match std::fs::remove_file(self.local_removed_marker()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CoreError::Invalid(format!(
                "cannot bring node 'local' back: {e}"
            ))),
        }
    }

    /// A node and what it reports about itself.
    pub async fn node_status(&self, name: &str) -> Result<(NodeRow, StatusReply), CoreError> {
        let node = self
            .all_nodes()?
            .into_iter()
            .find(|n| n.name == name)
            .ok_or_else(|| CoreError::Invalid(format!("no node named '{name}'")))?;
        let status: StatusReply = self
            .node_client(&node)
            .send(&StatusReq)
            .await
            .map_err(|e| CoreError::Invalid(e.to_string()))?;
        Ok((node, status))
    }

    /// Where `nodes:remove local` is remembered: adding a node must not take the built-in one
    /// (and the apps running on it) out of the node list.
    pub fn local_removed_marker(&self) -> std::path::PathBuf {
        self.data.root().join("node").join("removed")
    }

    /// Whether the built-in node was removed with `nodes:remove local`.
    pub fn local_removed(&self) -> bool {
        self.local_removed_marker().exists()
    }

    /// The added nodes, the clusters (`NodeRow::is_cluster`) and the built-in `local` node
    /// (unless removed), by name.
    pub fn all_nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        let mut nodes = self.store.list_nodes()?;
        nodes.extend(self.store.list_clusters()?);
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        if !self.local_removed() {
            let local = self
                .local_node
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            nodes.extend(local);
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
        }
        Ok(nodes)
    }

    /// Nodes whose labels match every `k=v` of the selector. The built-in node has no labels;
    /// while it is the only node it takes every environment, as it always did.
    pub fn target_nodes(
        &self,
        selector: &std::collections::BTreeMap<String, String>,
    ) -> Result<Vec<NodeRow>, StoreError> {
        // Clusters are chosen by name (`cluster:`), never by labels.
        let nodes: Vec<NodeRow> = self
            .all_nodes()?
            .into_iter()
            .filter(|n| !n.is_cluster())
            .collect();
        let only_local = nodes.len() == 1 && nodes[0].name == "local";
        Ok(nodes
            .into_iter()
            .filter(|n| only_local || selector.iter().all(|(k, v)| n.labels.get(k) == Some(v)))
            .collect())
    }

    pub fn node_client(&self, n: &NodeRow) -> crate::node::client::NodeClient {
        crate::node::client::NodeClient::new(
            &n.name,
            &n.addr,
            self.client_key.clone(),
            Some(n.host_fp.clone()),
        )
    }
}
