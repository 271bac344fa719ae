//! The service's end of a link from another node (ARCHITECTURE.md, "Services across
//! nodes"): link keys, one per (service, remote node), handed over by the controller with
//! `service-links`. A link key gets into this agent's SSH server only to open tunnels to
//! its one service's port: no verb, no session (`conn.rs`). The other end is `forward.rs`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use super::error::AgentError;
use super::AgentCtx;
use crate::node::proto::{ServiceLinksReq, StoppedReply};

/// What a link key opens: service `key`'s port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub key: String,
    pub port: u16,
}

/// The link keys of this node's services, by fingerprint.
#[derive(Default)]
pub struct Links(RwLock<HashMap<String, Target>>);

/// `services/<key>/links.json`: the service's port and each remote node's public key.
#[derive(Default, Serialize, Deserialize)]
struct LinksFile {
    port: u16,
    keys: BTreeMap<String, String>,
}

fn fingerprint_of(line: &str) -> Result<String, AgentError> {
    crate::keys::parse_public(line)
        .map(|k| k.fingerprint)
        .map_err(|e| AgentError::Invalid(format!("link key: {e}")))
}

impl Links {
    /// What the key with fingerprint `fp` may open, if it is a link key.
    pub fn get(&self, fp: &str) -> Option<Target> {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        map.get(fp).cloned()
    }

    /// Every service's link keys, as stored under `services/` (at the agent's start).
    pub fn load(services: &Path) -> Links {
        let links = Links::default();
        for e in std::fs::read_dir(services).into_iter().flatten().flatten() {
            let key = e.file_name().to_string_lossy().into_owned();
            let Ok(text) = std::fs::read(e.path().join("links.json")) else {
                continue;
            };
            match serde_json::from_slice::<LinksFile>(&text) {
                Ok(f) => links.replace(&key, &f),
                Err(e) => tracing::warn!(service = %key, "links.json unreadable: {e}"),
            }
        }
        links
    }

    fn replace(&self, key: &str, file: &LinksFile) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, t| t.key != key);
        for line in file.keys.values() {
            if let Ok(fp) = fingerprint_of(line) {
                let port = file.port;
                map.insert(
                    fp,
                    Target {
                        key: key.into(),
                        port,
                    },
                );
            }
        }
    }

    /// Service `key` is gone: its link keys open nothing any more.
    pub fn forget(&self, key: &str) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, t| t.key != key);
    }
}

/// `service-links`: node `from`'s link key for service `key` set (or revoked), on disk
/// first, then in force.
pub async fn set(ctx: &AgentCtx, req: ServiceLinksReq) -> Result<StoppedReply, AgentError> {
    super::services::check_key(&req.key)?;
    crate::names::check("node", &req.from)?;
    let dir = super::services::service_dir(ctx, &req.key);
    if !dir.is_dir() {
        return Err(AgentError::Invalid(format!(
            "no service {} on this node",
            req.key
        )));
    }
    let path = dir.join("links.json");
    let mut file: LinksFile = std::fs::read(&path)
        .ok()
        .and_then(|t| serde_json::from_slice(&t).ok())
        .unwrap_or_default();
    file.port = req.port;
    match req.public_key {
        Some(line) => {
            fingerprint_of(&line)?;
            file.keys.insert(req.from, line);
        }
        None => {
            file.keys.remove(&req.from);
        }
    }
    let json = serde_json::to_vec_pretty(&file).expect("links serialize");
    crate::fsutil::write_atomic(&path, &json, 0o600).map_err(|source| AgentError::Io {
        path: path.clone(),
        source,
    })?;
    ctx.links.replace(&req.key, &file);
    Ok(StoppedReply { stopped: 0 })
}

/// A connection to the service `t` names: its container's address on this node.
pub async fn connect(ctx: &AgentCtx, t: &Target) -> Result<tokio::net::TcpStream, AgentError> {
    let docker = ctx.docker().await?;
    let name = super::services::container_name(&ctx.instance, &t.key);
    let c = docker
        .raw()
        .inspect_container(
            &name,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .map_err(|e| AgentError::Docker(format!("service {}: {e}", t.key)))?;
    let ip = c
        .network_settings
        .and_then(|n| n.networks)
        .into_iter()
        .flatten()
        .filter_map(|(_, n)| n.ip_address)
        .find(|ip| !ip.is_empty())
        .ok_or_else(|| AgentError::Docker(format!("service {} has no address", t.key)))?;
    tokio::net::TcpStream::connect((ip.as_str(), t.port))
        .await
        .map_err(|e| AgentError::Docker(format!("service {}: {e}", t.key)))
}
