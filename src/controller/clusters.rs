//! Clusters: a Docker Swarm reached through `magrathea agent --swarm` on a manager, added
//! with its host key pinned like a node's, in the store's table of clusters (one name space
//! with the nodes). Environments name one with `cluster:` in `magrathea.yml`.

use super::{Core, CoreError};
use crate::node::client::NodeClient;
use crate::node::proto::{ClusterReply, ClusterReq};
use crate::store::NodeRow;

impl Core {
    /// The clusters, by name.
    pub fn clusters(&self) -> Result<Vec<NodeRow>, CoreError> {
        Ok(self.store.list_clusters()?)
    }

    /// First contact as with a node (host key learnt, our key accepted), and the agent must
    /// run a swarm. The pinned fingerprint and the swarm's node count.
    pub async fn add_cluster(&self, name: &str, addr: &str) -> Result<(String, usize), CoreError> {
        crate::names::check("cluster", name)?;
        if name == "local" {
            return Err(CoreError::Invalid(
                "'local' is the built-in node's name".into(),
            ));
        }
        let probe = NodeClient::new(name, addr, self.client_key.clone(), None);
        let fp = probe
            .probe()
            .await
            .map_err(|e| CoreError::Invalid(e.to_string()))?;
        let pinned = NodeClient::new(name, addr, self.client_key.clone(), Some(fp.clone()));
        let info: ClusterReply = pinned
            .send(&ClusterReq)
            .await
            .map_err(|e| CoreError::Invalid(e.to_string()))?;
        self.store.add_cluster(name, "swarm", addr, &fp)?;
        Ok((fp, info.nodes.len()))
    }

    fn cluster(&self, name: &str) -> Result<NodeRow, CoreError> {
        self.clusters()?
            .into_iter()
            .find(|n| n.name == name)
            .ok_or_else(|| CoreError::Invalid(format!("no cluster named '{name}'")))
    }

    /// A cluster's nodes and what runs where.
    pub async fn cluster_info(&self, name: &str) -> Result<(NodeRow, ClusterReply), CoreError> {
        let c = self.cluster(name)?;
        let info = self
            .node_client(&c)
            .send(&ClusterReq)
            .await
            .map_err(|e| CoreError::Invalid(e.to_string()))?;
        Ok((c, info))
    }

    /// Forgets a cluster no environment runs on (its services are left to the swarm).
    pub fn remove_cluster(&self, name: &str) -> Result<(), CoreError> {
        let c = self.cluster(name)?;
        let users: Vec<String> = self
            .store
            .all_live()?
            .into_iter()
            .filter(|l| l.nodes.contains(&c.name))
            .map(|l| format!("{} ({})", l.app, l.env))
            .collect();
        if !users.is_empty() {
            return Err(CoreError::Invalid(format!(
                "cluster '{name}' runs {}; move or destroy those first",
                users.join(", ")
            )));
        }
        Ok(self.store.remove_cluster(name)?)
    }
}
