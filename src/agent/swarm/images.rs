//! The stack image on every swarm node, with no registry and no Docker API on the network.
//!
//! The operator loads the stack's run image on the manager (as on an SSH node); the swarm
//! agent there saves it once into `<root>/images/<image id>.tar` (its sha256 beside it) and
//! serves it on its release endpoint behind the cluster's join token. Every other node runs
//! `magrathea agent --swarm --join MANAGER_ENDPOINT` (`join.rs`): it lists the images, loads
//! the ones its engine lacks after checking the sha256 of the bytes and the image id, and
//! reports what it holds every few seconds. The manager sets the node label
//! `magrathea.image.<id>=1` on a node once its image is there, and every service carries the
//! constraint on that label: Swarm never places a task on a node without its image (a node
//! that joins later gets the image from its agent, then the label, then tasks), and
//! `prepare` waits until each ready node with an agent has it before creating services.
//! A node without an agent never gets the label, so nothing is scheduled there.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::query_parameters::UpdateNodeOptionsBuilder;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::agent::error::AgentError;
use crate::docker::Docker;

/// `magrathea.image.<first 16 hex digits of the image id>`.
pub const L_IMAGE: &str = "magrathea.image.";

/// A joined agent not heard from for this long is taken for gone.
pub const STALE: Duration = Duration::from_secs(8);

/// One image the manager distributes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageEntry {
    /// The name services run it by (`magrathea/stack-tiny:latest`).
    pub name: String,
    /// The image id's hex digits (the config digest, the same on every engine).
    pub id: String,
    /// sha256 of the saved tarball the endpoint serves.
    pub sha256: String,
    pub size: u64,
}

/// What a joined agent says about itself, every few seconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Its engine's swarm node id.
    pub node_id: String,
    /// Where the controller reaches its SSH side, and its host key's fingerprint.
    pub agent: String,
    pub fp: String,
    /// Ids (hex) of the distributed images its engine holds.
    pub images: Vec<String>,
}

/// A joined agent as the manager knows it.
#[derive(Debug, Clone)]
pub struct Joined {
    pub addr: String,
    pub fp: String,
    pub images: BTreeSet<String>,
    pub seen: Instant,
}

/// The manager's side: the saved images, the join token, the joined agents.
pub struct Fleet {
    dir: PathBuf,
    pub token: String,
    /// This engine's swarm node id and this agent's host key fingerprint.
    pub own_node: String,
    pub own_fp: String,
    agents: std::sync::Mutex<BTreeMap<String, Joined>>,
    saving: tokio::sync::Mutex<()>,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> AgentError + '_ {
    move |source| AgentError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The label a node carries once it holds the image `id`.
pub fn label(id: &str) -> String {
    format!("{L_IMAGE}{}", &id[..id.len().min(16)])
}

/// An image id as hex digits, `sha256:` dropped; None unless 64 of them.
pub fn id_hex(id: &str) -> Option<String> {
    let h = id.strip_prefix("sha256:").unwrap_or(id);
    (h.len() == 64
        && h.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    .then(|| h.to_string())
}

impl Fleet {
    /// Opens `<root>/images`, and the join token (`<root>/join_token`, made once).
    pub fn open(root: &Path, own_node: String, own_fp: String) -> Result<Fleet, AgentError> {
        let dir = root.join("images");
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let tp = root.join("join_token");
        let token = match std::fs::read_to_string(&tp) {
            Ok(t) if t.trim().len() >= 32 => t.trim().to_string(),
            _ => {
                let t = crate::keys::random_hex(32);
                crate::fsutil::write_atomic(&tp, t.as_bytes(), 0o600).map_err(io_err(&tp))?;
                t
            }
        };
        Ok(Fleet {
            dir,
            token,
            own_node,
            own_fp,
            agents: Default::default(),
            saving: Default::default(),
        })
    }

    /// The images served, from their `.json` records.
    pub fn list(&self) -> Vec<ImageEntry> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return vec![];
        };
        let mut out: Vec<ImageEntry> = rd
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// The saved tarball of image `id` (hex), if served.
    pub fn tar(&self, id: &str) -> Option<PathBuf> {
        let id = id_hex(id)?;
        let p = self.dir.join(format!("{id}.tar"));
        (p.is_file() && self.dir.join(format!("{id}.json")).is_file()).then_some(p)
    }

    /// The joined agents heard from lately, by swarm node id.
    pub fn agents(&self) -> BTreeMap<String, Joined> {
        let mut a = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        a.retain(|_, j| j.seen.elapsed() < STALE);
        a.clone()
    }

    /// `image` saved from this engine (once per image id), served to the other nodes, and
    /// this node labelled as holding it.
    pub async fn ensure_saved(
        &self,
        docker: &Docker,
        image: &str,
    ) -> Result<ImageEntry, AgentError> {
        let inspected = docker.raw().inspect_image(image).await.map_err(|e| {
            AgentError::Invalid(format!(
                "stack image {image} is not on the swarm manager's engine ({e}): load it \
                 there (docker load); the swarm agent copies it to every other node"
            ))
        })?;
        let id = inspected
            .id
            .as_deref()
            .and_then(id_hex)
            .ok_or_else(|| AgentError::Docker(format!("image {image}: no sha256 id")))?;
        let _one = self.saving.lock().await;
        let record = self.dir.join(format!("{id}.json"));
        let entry = match std::fs::read(&record)
            .ok()
            .and_then(|b| serde_json::from_slice::<ImageEntry>(&b).ok())
        {
            Some(e) if e.name == image && self.tar(&id).is_some() => e,
            _ => self.save(docker, image, &id).await?,
        };
        set_label(docker, &self.own_node, &label(&id)).await?;
        Ok(entry)
    }

    async fn save(&self, docker: &Docker, image: &str, id: &str) -> Result<ImageEntry, AgentError> {
        use sha2::Digest;
        let tmp = self
            .dir
            .join(format!(".saving-{}", crate::keys::random_hex(8)));
        let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        let mut h = sha2::Sha256::new();
        let mut size = 0u64;
        let mut s = docker.raw().export_image(image);
        while let Some(chunk) = s.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(AgentError::Docker(format!("saving {image}: {e}")));
                }
            };
            h.update(&chunk);
            size += chunk.len() as u64;
            if let Err(e) = f.write_all(&chunk) {
                let _ = std::fs::remove_file(&tmp);
                return Err(io_err(&tmp)(e));
            }
        }
        f.sync_all().map_err(io_err(&tmp))?;
        let dst = self.dir.join(format!("{id}.tar"));
        std::fs::rename(&tmp, &dst).map_err(io_err(&dst))?;
        let entry = ImageEntry {
            name: image.to_string(),
            id: id.to_string(),
            sha256: hex::encode(h.finalize()),
            size,
        };
        let record = self.dir.join(format!("{id}.json"));
        let doc = serde_json::to_vec(&entry).unwrap_or_default();
        crate::fsutil::write_atomic(&record, &doc, 0o600).map_err(io_err(&record))?;
        tracing::info!(image, id, size, "stack image saved for the swarm nodes");
        Ok(entry)
    }

    /// A joined agent's report: remembered, and its node labelled for each served image its
    /// engine holds.
    pub async fn record(&self, docker: &Docker, r: Report) -> Result<(), AgentError> {
        let served: BTreeSet<String> = self.list().into_iter().map(|e| e.id).collect();
        let held: BTreeSet<String> = r
            .images
            .iter()
            .filter_map(|i| id_hex(i))
            .filter(|i| served.contains(i))
            .collect();
        let node = docker
            .raw()
            .inspect_node(&r.node_id)
            .await
            .map_err(|e| AgentError::Invalid(format!("no swarm node {}: {e}", r.node_id)))?;
        let labels = node.spec.and_then(|s| s.labels).unwrap_or_default();
        for id in &held {
            if !labels.contains_key(&label(id)) {
                set_label(docker, &r.node_id, &label(id)).await?;
                tracing::info!(node = %r.node_id, image = %id, "swarm node holds the stack image");
            }
        }
        let mut a = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        a.insert(
            r.node_id,
            Joined {
                addr: r.agent,
                fp: r.fp,
                images: held,
                seen: Instant::now(),
            },
        );
        Ok(())
    }

    /// Waits (up to `within`) until every ready, active node with an agent (this one
    /// included) carries the image's label; says which nodes will not run it. Fails only
    /// when no node at all has it.
    pub async fn wait_spread(
        &self,
        docker: &Docker,
        entry: &ImageEntry,
        progress: &mpsc::Sender<String>,
        within: Duration,
    ) -> Result<(), AgentError> {
        let key = label(&entry.id);
        let start = Instant::now();
        loop {
            let nodes = super::tasks::nodes(docker).await?;
            let agents = self.agents();
            let ready: Vec<_> = nodes
                .iter()
                .filter(|n| n.state == "ready" && n.availability == "active")
                .collect();
            let with_agent = |id: &str| id == self.own_node || agents.contains_key(id);
            let missing: Vec<&str> = ready
                .iter()
                .filter(|n| with_agent(&n.id) && !n.labels.contains_key(&key))
                .map(|n| n.hostname.as_str())
                .collect();
            if missing.is_empty() || start.elapsed() > within {
                for n in ready.iter().filter(|n| !with_agent(&n.id)) {
                    let _ = progress
                        .send(format!(
                            "swarm node {} has no magrathea agent: nothing runs there (run \
                             `magrathea agent --swarm --join` on it)",
                            n.hostname
                        ))
                        .await;
                }
                for m in &missing {
                    let _ = progress
                        .send(format!(
                            "swarm node {m} does not hold {} yet: nothing runs there until it does",
                            entry.name
                        ))
                        .await;
                }
                let have = ready.iter().filter(|n| n.labels.contains_key(&key)).count();
                if have == 0 {
                    return Err(AgentError::Invalid(format!(
                        "no swarm node holds the stack image {}",
                        entry.name
                    )));
                }
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// Sets label `key=1` on swarm node `id` (read, change, write at the node's version; once
/// more if another writer came between).
pub async fn set_label(docker: &Docker, id: &str, key: &str) -> Result<(), AgentError> {
    let mut last = String::new();
    for _ in 0..3 {
        let node = docker
            .raw()
            .inspect_node(id)
            .await
            .map_err(|e| AgentError::Docker(format!("swarm node {id}: {e}")))?;
        let mut spec = node.spec.unwrap_or_default();
        let labels = spec.labels.get_or_insert_with(Default::default);
        if labels.get(key).map(String::as_str) == Some("1") {
            return Ok(());
        }
        labels.insert(key.to_string(), "1".to_string());
        let version = node.version.and_then(|v| v.index).unwrap_or(0) as i64;
        let opts = UpdateNodeOptionsBuilder::new().version(version).build();
        match docker.raw().update_node(id, spec, opts).await {
            Ok(()) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(AgentError::Docker(format!(
        "labelling swarm node {id}: {last}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_labels() {
        let h = "a".repeat(64);
        assert_eq!(id_hex(&format!("sha256:{h}")), Some(h.clone()));
        assert_eq!(id_hex("sha256:abc"), None);
        assert_eq!(id_hex(&"A".repeat(64)), None);
        assert_eq!(id_hex(&format!("{}/", &h[..63])), None);
        assert_eq!(label(&h), format!("magrathea.image.{}", &h[..16]));
    }
}
