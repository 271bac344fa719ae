//! The Docker facade (bollard). The rest of the code asks for "run this container to the
//! end, stream its lines, always clean up"; it never sees the Docker API.

use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A bind mount of `src` at `dst` in a container.
pub fn bind_mount(src: &std::path::Path, dst: &str, read_only: bool) -> Mount {
    Mount {
        typ: Some(MountType::BIND),
        source: Some(src.to_string_lossy().into_owned()),
        target: Some(dst.into()),
        read_only: Some(read_only),
        ..Default::default()
    }
}

#[derive(Debug, Error)]
pub enum DockerError {
    #[error("cannot reach the Docker engine ({0}); is dockerd running? (scripts/docker-up.sh starts one)")]
    Unreachable(String),
    #[error("docker: {0}")]
    Api(#[from] bollard::errors::Error),
}

#[derive(Clone)]
pub struct Docker {
    inner: bollard::Docker,
}

pub struct RunSpec {
    pub name: String,
    pub image: String,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    /// (host path, container path, read only)
    pub mounts: Vec<(String, String, bool)>,
    pub network: String,
    pub memory: Option<i64>,
    pub labels: Vec<(String, String)>,
    /// Runs as this uid (and gid), confined (see `isolation::confine`).
    pub uid: u32,
    /// The most processes (threads count) it may run at once.
    pub pids: i64,
    pub workdir: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    Exited(i64),
    OomKilled,
    TimedOut,
    Cancelled,
}

impl Docker {
    /// `DOCKER_HOST` if set, else the local socket; API version negotiated with the daemon.
    pub async fn connect() -> Result<Docker, DockerError> {
        let d = bollard::Docker::connect_with_defaults()
            .map_err(|e| DockerError::Unreachable(e.to_string()))?;
        let d = d
            .negotiate_version()
            .await
            .map_err(|e| DockerError::Unreachable(e.to_string()))?;
        d.ping()
            .await
            .map_err(|e| DockerError::Unreachable(e.to_string()))?;
        Ok(Docker { inner: d })
    }

    pub fn raw(&self) -> &bollard::Docker {
        &self.inner
    }

    /// The image id of a tag, if present.
    pub async fn image_id(&self, tag: &str) -> Result<Option<String>, DockerError> {
        match self.inner.inspect_image(tag).await {
            Ok(i) => Ok(i.id),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Image tags starting with `prefix`.
    pub async fn images(&self, prefix: &str) -> Result<Vec<(String, String)>, DockerError> {
        let list = self
            .inner
            .list_images(None::<bollard::query_parameters::ListImagesOptions>)
            .await?;
        let mut out = vec![];
        for i in list {
            for t in i.repo_tags {
                if t.starts_with(prefix) {
                    out.push((t, i.id.clone()));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every container, running or not, that matches one filter (`label` or `name`).
    pub async fn containers(
        &self,
        key: &str,
        values: Vec<String>,
    ) -> Result<Vec<bollard::models::ContainerSummary>, bollard::errors::Error> {
        let filters = std::collections::HashMap::from([(key, values)]);
        let opts = bollard::query_parameters::ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        self.inner.list_containers(Some(opts)).await
    }

    pub async fn remove(&self, name: &str) {
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        let _ = self.inner.remove_container(name, Some(opts)).await;
    }

    /// Create, start, stream output lines to `lines`, wait. The container is removed
    /// whatever happens (exit, error, timeout, cancel).
    pub async fn run(
        &self,
        spec: RunSpec,
        lines: mpsc::Sender<String>,
        cancel: CancellationToken,
        timeout: Duration,
    ) -> Result<RunOutcome, DockerError> {
        self.remove(&spec.name).await; // a leftover from a crashed controller
        let result = self.run_inner(&spec, lines, cancel, timeout).await;
        self.remove(&spec.name).await;
        result
    }

    async fn run_inner(
        &self,
        spec: &RunSpec,
        lines: mpsc::Sender<String>,
        cancel: CancellationToken,
        timeout: Duration,
    ) -> Result<RunOutcome, DockerError> {
        let mounts = spec
            .mounts
            .iter()
            .map(|(src, dst, ro)| Mount {
                typ: Some(MountType::BIND),
                source: Some(src.clone()),
                target: Some(dst.clone()),
                read_only: Some(*ro),
                ..Default::default()
            })
            .collect();
        let mut host = HostConfig {
            mounts: Some(mounts),
            network_mode: Some(spec.network.clone()),
            memory: spec.memory,
            memory_swap: spec.memory,
            ..Default::default()
        };
        let mut user = None;
        crate::isolation::confine(&mut user, &mut host, spec.uid, spec.pids);
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: Some(spec.cmd.clone()),
            env: Some(spec.env.clone()),
            user,
            working_dir: spec.workdir.clone(),
            labels: Some(spec.labels.iter().cloned().collect()),
            host_config: Some(host),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        self.inner.create_container(Some(opts), body).await?;
        self.inner.start_container(&spec.name, None).await?;

        let logs = self.inner.logs(
            &spec.name,
            Some(
                LogsOptionsBuilder::default()
                    .follow(true)
                    .stdout(true)
                    .stderr(true)
                    .build(),
            ),
        );
        let pump = async {
            let mut logs = std::pin::pin!(logs);
            let mut partial = crate::lines::LineBuf::default();
            while let Some(chunk) = logs.next().await {
                let Ok(chunk) = chunk else { break };
                for text in partial.push(&chunk.into_bytes()) {
                    let _ = lines.send(text).await;
                }
            }
            if let Some(rest) = partial.finish() {
                let _ = lines.send(rest).await;
            }
        };
        let outcome = tokio::select! {
            _ = pump => None,
            _ = cancel.cancelled() => Some(RunOutcome::Cancelled),
            _ = tokio::time::sleep(timeout) => Some(RunOutcome::TimedOut),
        };
        if let Some(o) = outcome {
            return Ok(o);
        }
        let code = match self
            .inner
            .wait_container(
                &spec.name,
                None::<bollard::query_parameters::WaitContainerOptions>,
            )
            .next()
            .await
        {
            Some(Ok(r)) => r.status_code,
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
            Some(Err(e)) => return Err(e.into()),
            None => -1,
        };
        let oom = self
            .inner
            .inspect_container(
                &spec.name,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .ok()
            .and_then(|i| i.state)
            .and_then(|s| s.oom_killed)
            .unwrap_or(false);
        Ok(if oom {
            RunOutcome::OomKilled
        } else {
            RunOutcome::Exited(code)
        })
    }
}
