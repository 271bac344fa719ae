//! Services reached from the nodes they do not run on (ARCHITECTURE.md, "Services across
//! nodes"): before a rollout, every service linked to the environment gets a forwarder on
//! each of the rollout's nodes other than its own, with a link key of that node's which
//! the service's node accepts for tunnels to that one service. Unlinked or destroyed, the
//! forwarders go.

use super::services::kind;
use super::{Core, CoreError};
use crate::node::proto::{ForwardApp, ServiceForwardReq, ServiceLinksReq, ServiceUnforwardReq};
use crate::store::ServiceRow;

impl Core {
    /// Every service linked to `app`'s `env` reachable from each node in `nodes` (names; a
    /// cluster is skipped: services reach swarm tasks only on their own node), under its
    /// name, with the app's processes on the `image` stack. The link key of a (service,
    /// node) is derived from the controller's key, so a rollout hands out the key already
    /// in place and running forwarders carry on; the service's node learns it before the
    /// forwarder uses it.
    pub async fn reach_services(
        &self,
        app: &str,
        env: &str,
        nodes: &[String],
        image: &str,
    ) -> Result<(), CoreError> {
        let uid = self.app_uid(app)?;
        let all = self.all_nodes()?;
        for l in self.store.links(None)? {
            if l.app != app || l.env != env {
                continue;
            }
            let Some(row) = self.store.service(&l.service)? else {
                continue;
            };
            let home = self.service_node(&row)?;
            let port = kind(&row.kind)?.port;
            for n in all.iter().filter(|n| nodes.contains(&n.name)) {
                if n.name == home.name || n.is_cluster() {
                    continue;
                }
                let fail = |e: crate::node::client::NodeError| {
                    CoreError::Failed(format!(
                        "service '{}' cannot be reached from node {}: {e}",
                        row.name, n.name
                    ))
                };
                let context = format!("link {} {}", row.key, n.name);
                let (private, public) =
                    crate::keys::derived(&self.client_key, &context).map_err(CoreError::Other)?;
                let grant = ServiceLinksReq {
                    key: row.key.clone(),
                    port,
                    from: n.name.clone(),
                    public_key: Some(public),
                };
                self.node_client(&home).send(&grant).await.map_err(fail)?;
                let forward = ServiceForwardReq {
                    key: row.key.clone(),
                    name: row.name.clone(),
                    port,
                    node: home.name.clone(),
                    addr: home.addr.clone(),
                    host_fp: home.host_fp.clone(),
                    private_key: private,
                    apps: vec![ForwardApp {
                        app: app.to_string(),
                        uid,
                        image: image.to_string(),
                    }],
                };
                self.node_client(n).send(&forward).await.map_err(fail)?;
            }
        }
        Ok(())
    }

    /// `row`'s forwarders gone from every node but its own: the ones of the app with `uid`,
    /// or all (the service destroyed). A node that does not answer keeps its forwarder,
    /// which then reaches a service that refuses the unlinked app's login. Once no link
    /// is left, the service's node also stops accepting every node's link key (the service
    /// destroyed, its node forgets them with it).
    pub(super) async fn unforward(&self, row: &ServiceRow, uid: Option<u32>) {
        let Ok(nodes) = self.all_nodes() else {
            return;
        };
        let others: Vec<_> = nodes
            .iter()
            .filter(|n| n.name != row.node && !n.is_cluster())
            .collect();
        for n in &others {
            let req = ServiceUnforwardReq {
                key: row.key.clone(),
                uid,
            };
            if let Err(e) = self.node_client(n).send(&req).await {
                tracing::warn!(service = %row.name, node = %n.name, "forwarder not removed: {e}");
            }
        }
        let unlinked = uid.is_some()
            && self
                .store
                .links(Some(&row.name))
                .is_ok_and(|links| links.is_empty());
        if unlinked {
            self.revoke_link_keys(row, &others).await;
        }
    }

    /// The service's node accepts no link key from `nodes` any more.
    async fn revoke_link_keys(&self, row: &ServiceRow, nodes: &[&crate::store::NodeRow]) {
        let (Ok(home), Ok(k)) = (self.service_node(row), kind(&row.kind)) else {
            return;
        };
        for n in nodes {
            let revoke = ServiceLinksReq {
                key: row.key.clone(),
                port: k.port,
                from: n.name.clone(),
                public_key: None,
            };
            if let Err(e) = self.node_client(&home).send(&revoke).await {
                tracing::warn!(service = %row.name, node = %n.name, "link key not revoked: {e}");
            }
        }
    }
}
