//! `magrathea agent --swarm --join MANAGER_ENDPOINT`: the agent on a swarm node other than
//! the one the cluster's agent runs on. Its SSH side is a node's (only the controller's key),
//! used for `shell` into the tasks on its engine. Every few seconds it asks the manager's
//! release endpoint for the stack images (with the cluster's join token), loads into its
//! engine those it lacks (the bytes checked against their sha256 before `docker load`, the
//! image id after), and reports its node, its SSH address and host key, and the images it
//! holds; the manager then labels the node so Swarm places tasks there (`images.rs`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

use super::images::{id_hex, ImageEntry, Report};
use crate::docker::Docker;

/// A joined agent's settings.
pub struct Join {
    /// The manager's release endpoint (`IP:PORT`).
    pub endpoint: String,
    pub token: String,
    /// This agent's SSH address as the controller reaches it, and its host key.
    pub agent: String,
    pub fp: String,
    /// Where downloads land before they are loaded.
    pub dir: PathBuf,
}

/// How often a joined agent reports (and looks for new images).
pub const EVERY: Duration = Duration::from_secs(2);

/// Runs until the process ends.
pub async fn run(docker: Docker, join: Join, node_id: String) {
    let mut last_err = String::new();
    loop {
        match once(&docker, &join, &node_id).await {
            Ok(()) if !last_err.is_empty() => {
                tracing::info!("joined the cluster's agent again");
                last_err.clear();
            }
            Ok(()) => {}
            Err(e) if e != last_err => {
                tracing::warn!(endpoint = %join.endpoint, "cluster agent: {e}");
                last_err = e;
            }
            Err(_) => {}
        }
        tokio::time::sleep(EVERY).await;
    }
}

async fn once(docker: &Docker, join: &Join, node_id: &str) -> Result<(), String> {
    let list: Vec<ImageEntry> = serde_json::from_slice(&call(join, "GET", "images", None).await?)
        .map_err(|e| format!("image list: {e}"))?;
    let mut held = vec![];
    for e in list {
        let Some(id) = id_hex(&e.id) else { continue };
        if docker
            .raw()
            .inspect_image(&format!("sha256:{id}"))
            .await
            .is_err()
        {
            load(docker, join, &e, &id).await?;
        }
        held.push(id);
    }
    let report = Report {
        node_id: node_id.to_string(),
        agent: join.agent.clone(),
        fp: join.fp.clone(),
        images: held,
    };
    let body = serde_json::to_vec(&report).unwrap_or_default();
    call(join, "POST", "nodes", Some(body)).await?;
    Ok(())
}

/// One image: downloaded while hashed, refused unless the sha256 matches, loaded, and its
/// id checked.
async fn load(docker: &Docker, join: &Join, e: &ImageEntry, id: &str) -> Result<(), String> {
    use sha2::Digest;
    std::fs::create_dir_all(&join.dir).map_err(|x| format!("{}: {x}", join.dir.display()))?;
    let tmp = join
        .dir
        .join(format!(".image-{}", crate::keys::random_hex(8)));
    let _gone = Remove(&tmp);
    let mut f = std::fs::File::create(&tmp).map_err(|x| format!("{}: {x}", tmp.display()))?;
    let mut h = sha2::Sha256::new();
    let mut body = request(join, "GET", &format!("images/{id}.tar"), None).await?;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|x| format!("downloading {}: {x}", e.name))?;
        if let Ok(data) = frame.into_data() {
            h.update(&data);
            f.write_all(&data)
                .map_err(|x| format!("{}: {x}", tmp.display()))?;
        }
    }
    drop(f);
    let got = hex::encode(h.finalize());
    if got != e.sha256 {
        return Err(format!(
            "the stack image {} from {} hashes to {got}, not {}: refused",
            e.name, join.endpoint, e.sha256
        ));
    }
    let file = tokio::fs::File::open(&tmp)
        .await
        .map_err(|x| format!("{}: {x}", tmp.display()))?;
    let opts = bollard::query_parameters::ImportImageOptionsBuilder::new()
        .quiet(true)
        .build();
    let mut s =
        docker
            .raw()
            .import_image_stream(opts, tokio_util::io::ReaderStream::new(file), None);
    while let Some(r) = s.next().await {
        r.map_err(|x| format!("docker load {}: {x}", e.name))?;
    }
    docker
        .raw()
        .inspect_image(&format!("sha256:{id}"))
        .await
        .map_err(|x| format!("{} loaded, but image {id} is not there: {x}", e.name))?;
    tracing::info!(image = %e.name, id, "stack image loaded from the cluster's agent");
    Ok(())
}

struct Remove<'a>(&'a Path);

impl Drop for Remove<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

async fn call(
    join: &Join,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Vec<u8>, String> {
    let b = request(join, method, path, body).await?;
    let c = tokio::time::timeout(Duration::from_secs(30), b.collect())
        .await
        .map_err(|_| format!("{path}: no answer within 30s"))?
        .map_err(|e| format!("{path}: {e}"))?;
    Ok(c.to_bytes().to_vec())
}

/// One request to `/cluster/PATH` on the manager's endpoint; the body of a 200 answer.
async fn request(
    join: &Join,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<hyper::body::Incoming, String> {
    let stream = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(&join.endpoint),
    )
    .await
    .map_err(|_| format!("cannot reach {} within 5s", join.endpoint))?
    .map_err(|e| format!("cannot reach {}: {e}", join.endpoint))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{}: {e}", join.endpoint))?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(format!("/cluster/{path}"))
        .header(hyper::header::HOST, &join.endpoint)
        .header(
            hyper::header::AUTHORIZATION,
            format!("Bearer {}", join.token),
        )
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
        .await
        .map_err(|_| format!("{path}: no answer within 30s"))?
        .map_err(|e| format!("{path}: {e}"))?;
    let status = resp.status();
    if status != StatusCode::OK {
        let text = resp
            .into_body()
            .collect()
            .await
            .map(|c| String::from_utf8_lossy(&c.to_bytes()).trim().to_string())
            .unwrap_or_default();
        return Err(format!(
            "{path}: {status} {}",
            text.chars().take(200).collect::<String>()
        ));
    }
    Ok(resp.into_body())
}
