//! What goes wrong on a node, in words for the user at the other end: every failed call is
//! answered with one of these, on one line.

use std::io;
use std::path::PathBuf;

use crate::names::InvalidName;
use crate::release::ReleaseError;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Name(#[from] InvalidName),
    #[error(
        "invalid release name '{0}': expected v<version>-<first 12 hex digits of the \
         tarball's sha256>, e.g. v3-0123456789ab"
    )]
    ReleaseName(String),
    #[error("'{0}' is not a sha256 digest (expected 64 hex characters)")]
    Digest(String),
    #[error(
        "release name {name} does not match sha256 {sha256}: the name must end with the \
         digest's first 12 hex digits"
    )]
    NameDigestMismatch { name: String, sha256: String },
    #[error(
        "release {app}/{name}: received {size} bytes with sha256 {actual}, expected {expected}; \
         the transfer was truncated or corrupted, send it again"
    )]
    DigestMismatch {
        app: String,
        name: String,
        size: u64,
        expected: String,
        actual: String,
    },
    #[error("release {name} of app {app} is not on this node; send it first")]
    NoRelease { app: String, name: String },
    #[error("release {app}/{name} is broken: {reason}; remove it and send it again")]
    BadRelease {
        app: String,
        name: String,
        reason: String,
    },
    #[error("snapshot '{label}' of app {app} does not exist")]
    NoSnapshot { app: String, label: String },
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Release(#[from] ReleaseError),
    /// A process spec, env var or health-check path that cannot be used as given.
    #[error("{0}")]
    Invalid(String),
    #[error("image '{0}' is not on this node; build or pull the stack image first")]
    NoImage(String),
    #[error("docker: {0}")]
    Docker(String),
    #[error("{what} did not finish within {after} and was killed")]
    Timeout { what: String, after: String },
    /// The Docker engine could not be reached.
    #[error(transparent)]
    Engine(#[from] crate::docker::DockerError),
    #[error(transparent)]
    Uid(#[from] crate::isolation::UidError),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("unknown agent verb '{0}'")]
    UnknownVerb(String),
    #[error("usage: {0}")]
    Usage(&'static str),
    #[error("release {release} of {app} is not on this node")]
    NotOnNode { app: String, release: String },
    #[error("publish_ip {0:?} is not an IP address")]
    PublishIp(String),
    #[error("unknown one-off kind {0:?}")]
    OneOffKind(String),
    #[error("cannot start {process}: {why}")]
    CannotStart {
        process: String,
        why: Box<AgentError>,
    },
    #[error(
        "{process} failed its health check ({why}); to give it longer or check another path, \
         set {setting}"
    )]
    Unhealthy {
        process: String,
        why: String,
        setting: String,
    },
    #[error("{0} did not stay up through the grace period")]
    NotUp(String),
    #[error("the controller went away; release command stopped")]
    ControllerGone,
    /// A task that died, a reply that did not serialize: not the caller's doing.
    #[error("{0}")]
    Internal(String),
}

#[cfg(test)]
mod tests {
    use super::AgentError;

    /// The words a failed prepare answers with are the ones users have always seen.
    #[test]
    fn prepare_failures_read_as_before() {
        let e = AgentError::CannotStart {
            process: "web.2".into(),
            why: Box::new(AgentError::NoImage("magrathea/stack-tiny".into())),
        };
        assert_eq!(
            e.to_string(),
            "cannot start web.2: image 'magrathea/stack-tiny' is not on this node; build or \
             pull the stack image first"
        );
        let e = AgentError::Unhealthy {
            process: "web.1".into(),
            why: "connection refused".into(),
            setting: "healthcheck.boot_timeout in magrathea.yml (default 60s)".into(),
        };
        assert_eq!(
            e.to_string(),
            "web.1 failed its health check (connection refused); to give it longer or check \
             another path, set healthcheck.boot_timeout in magrathea.yml (default 60s)"
        );
        assert_eq!(
            AgentError::NotUp("worker.1".into()).to_string(),
            "worker.1 did not stay up through the grace period"
        );
    }
}
