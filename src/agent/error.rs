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
}
