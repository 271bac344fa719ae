//! The release endpoint a swarm agent serves on the cluster's network: the release tarballs
//! it received, by app and release name, each behind a token of its own. Swarm tasks fetch
//! their release here (no registry, no shared disk); the runner checks the sha256 itself, so
//! the endpoint is trusted for availability only. The token reaches tasks only inside the
//! release's Swarm secret, never in a label or a plain variable. Joined agents (`join.rs`)
//! fetch the stack images here and report what they hold, with the cluster's join token.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::agent::error::AgentError;
use crate::agent::layout::check_release;

/// `<root>/tarballs/<app>/<release>.tar.gz`, its `.sha256` and its `.token` beside it.
#[derive(Clone, Debug)]
pub struct Tarballs {
    dir: PathBuf,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> AgentError + '_ {
    move |source| AgentError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Tarballs {
    pub fn new(root: &Path) -> Tarballs {
        Tarballs {
            dir: root.join("tarballs"),
        }
    }

    fn app_dir(&self, app: &str) -> Result<PathBuf, AgentError> {
        crate::names::check_node_app(app)?;
        Ok(self.dir.join(app))
    }

    pub fn tarball(&self, app: &str, release: &str) -> Result<PathBuf, AgentError> {
        check_release(release)?;
        Ok(self.app_dir(app)?.join(format!("{release}.tar.gz")))
    }

    fn token_path(&self, app: &str, release: &str) -> Result<PathBuf, AgentError> {
        check_release(release)?;
        Ok(self.app_dir(app)?.join(format!("{release}.token")))
    }

    pub fn has(&self, app: &str, release: &str) -> bool {
        self.tarball(app, release).is_ok_and(|p| p.is_file()) && self.digest(app, release).is_ok()
    }

    /// Keeps `tmp` (a received tarball) as the release's, if its bytes hash to `sha256`, with
    /// a fresh token; nothing is kept otherwise.
    pub fn keep(
        &self,
        app: &str,
        release: &str,
        sha256: &str,
        tmp: &Path,
    ) -> Result<(), AgentError> {
        use sha2::Digest;
        let dst = self.tarball(app, release)?;
        let mut f = std::fs::File::open(tmp).map_err(io_err(tmp))?;
        let mut h = sha2::Sha256::new();
        std::io::copy(&mut f, &mut h).map_err(io_err(tmp))?;
        let actual = hex::encode(h.finalize());
        if actual != sha256 {
            let _ = std::fs::remove_file(tmp);
            return Err(AgentError::Invalid(format!(
                "the received tarball of {release} hashes to {actual}, not {sha256}"
            )));
        }
        let dir = self.app_dir(app)?;
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let token_path = self.token_path(app, release)?;
        if !token_path.is_file() {
            let token = crate::keys::random_hex(32);
            crate::fsutil::write_atomic(&token_path, token.as_bytes(), 0o600)
                .map_err(io_err(&token_path))?;
        }
        let digest = self.digest_path(app, release)?;
        crate::fsutil::write_atomic(&digest, actual.as_bytes(), 0o600).map_err(io_err(&digest))?;
        std::fs::File::open(tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_err(tmp))?;
        std::fs::rename(tmp, &dst).map_err(io_err(&dst))?;
        Ok(())
    }

    fn digest_path(&self, app: &str, release: &str) -> Result<PathBuf, AgentError> {
        check_release(release)?;
        Ok(self.app_dir(app)?.join(format!("{release}.sha256")))
    }

    /// The full sha256 the release's bytes were verified against when received: what every
    /// task checks the endpoint's answer against.
    pub fn digest(&self, app: &str, release: &str) -> Result<String, AgentError> {
        let p = self.digest_path(app, release)?;
        let d = std::fs::read_to_string(&p).map_err(io_err(&p))?;
        crate::agent::layout::check_sha256(d.trim())
    }

    pub fn token(&self, app: &str, release: &str) -> Result<String, AgentError> {
        let p = self.token_path(app, release)?;
        std::fs::read_to_string(&p).map_err(io_err(&p))
    }

    /// Removes the tarballs (and tokens) of `app` whose release is not in `keep`.
    pub fn gc(&self, app: &str, keep: &[String]) {
        let Ok(dir) = self.app_dir(app) else { return };
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let release = name
                .strip_suffix(".tar.gz")
                .or_else(|| name.strip_suffix(".token"))
                .or_else(|| name.strip_suffix(".sha256"))
                .unwrap_or(&name);
            if !keep.iter().any(|k| k == release) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Every tarball of `app` and its environments (`purge`).
    pub fn purge(&self, app: &str) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if crate::names::node_app_of(&name) == Some(app) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    /// A temp file for a tarball being received.
    pub fn temp(&self) -> Result<(PathBuf, std::fs::File), AgentError> {
        std::fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        let p = self
            .dir
            .join(format!(".receiving-{}", crate::keys::random_hex(8)));
        let f = std::fs::File::create(&p).map_err(io_err(&p))?;
        Ok((p, f))
    }
}

/// A reader that copies what it reads into a file (a received tarball kept for the
/// endpoint while it is unpacked).
pub struct Tee<R> {
    pub inner: R,
    pub file: std::fs::File,
    pub failed: bool,
}

impl<R: std::io::Read> std::io::Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if !self.failed && self.file.write_all(&buf[..n]).is_err() {
            self.failed = true;
        }
        Ok(n)
    }
}

/// What the endpoint serves: release tarballs (a token per release) and, to joined agents
/// (the cluster's join token), the stack images and their reports (`images.rs`).
pub struct Served {
    pub tarballs: Tarballs,
    pub fleet: Arc<super::images::Fleet>,
    pub docker: crate::docker::Docker,
}

type Body = BoxBody<Bytes, std::io::Error>;

/// Serves `GET /releases/<app>/<release>.tar.gz` with `Authorization: Bearer <token>`, and
/// the `/cluster/` calls of joined agents, on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, served: Served) {
    let served = Arc::new(served);
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let t = served.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let t = t.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&t, req, peer).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let body = Full::new(Bytes::from(format!("{text}\n")))
        .map_err(|never| match never {})
        .boxed();
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r
}

/// A file's bytes as they are read (a stack image is hundreds of megabytes).
async fn file(path: &Path) -> Response<Body> {
    match tokio::fs::File::open(path).await {
        Ok(f) => {
            let stream = tokio_util::io::ReaderStream::new(f).map(|r| r.map(Frame::data));
            Response::new(BodyExt::boxed(StreamBody::new(stream)))
        }
        Err(_) => plain(StatusCode::NOT_FOUND, "not found"),
    }
}

fn bearer(req: &Request<hyper::body::Incoming>) -> String {
    req.headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string()
}

async fn answer(
    t: &Served,
    req: Request<hyper::body::Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    if let Some(rest) = path.strip_prefix("/cluster/") {
        if !constant_time_eq(t.fleet.token.as_bytes(), bearer(&req).as_bytes()) {
            tracing::warn!(%peer, "release endpoint: bad join token");
            return plain(StatusCode::FORBIDDEN, "bad join token");
        }
        return cluster(t, rest, req).await;
    }
    let Some((app, release)) = path
        .strip_prefix("/releases/")
        .and_then(|p| p.strip_suffix(".tar.gz"))
        .and_then(|p| p.split_once('/'))
    else {
        return plain(StatusCode::NOT_FOUND, "not found");
    };
    let given = bearer(&req);
    let Ok(token) = t.tarballs.token(app, release) else {
        return plain(StatusCode::NOT_FOUND, "no such release");
    };
    if !constant_time_eq(token.trim().as_bytes(), given.as_bytes()) {
        tracing::warn!(%peer, app, release, "release endpoint: bad token");
        return plain(StatusCode::FORBIDDEN, "bad token");
    }
    let Ok(path) = t.tarballs.tarball(app, release) else {
        return plain(StatusCode::NOT_FOUND, "no such release");
    };
    tracing::debug!(%peer, app, release, "release served");
    file(&path).await
}

/// A joined agent's calls: `GET images` (the list), `GET images/<id>.tar`, `POST nodes`
/// (its report).
async fn cluster(t: &Served, rest: &str, req: Request<hyper::body::Incoming>) -> Response<Body> {
    match (req.method().as_str(), rest) {
        ("GET", "images") => {
            let doc = serde_json::to_vec(&t.fleet.list()).unwrap_or_default();
            Response::new(
                Full::new(Bytes::from(doc))
                    .map_err(|never| match never {})
                    .boxed(),
            )
        }
        ("GET", r) if r.starts_with("images/") => {
            let id = r["images/".len()..].strip_suffix(".tar").unwrap_or("");
            match t.fleet.tar(id) {
                Some(p) => file(&p).await,
                None => plain(StatusCode::NOT_FOUND, "no such image"),
            }
        }
        ("POST", "nodes") => {
            let body = http_body_util::Limited::new(req.into_body(), 64 << 10);
            let Ok(bytes) = body.collect().await.map(|c| c.to_bytes()) else {
                return plain(StatusCode::BAD_REQUEST, "bad body");
            };
            let Ok(report) = serde_json::from_slice::<super::images::Report>(&bytes) else {
                return plain(StatusCode::BAD_REQUEST, "bad report");
            };
            match t.fleet.record(&t.docker, report).await {
                Ok(()) => plain(StatusCode::OK, "ok"),
                Err(e) => plain(StatusCode::BAD_REQUEST, &e.to_string()),
            }
        }
        _ => plain(StatusCode::NOT_FOUND, "not found"),
    }
}
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
