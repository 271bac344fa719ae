//! What can go wrong packing or unpacking a release, in messages that name the file or the
//! archive entry at fault and say what to do about it.

use std::io;
use std::path::{Path, PathBuf};

/// Errors from packing or unpacking a release. The messages name the file or the archive entry
/// at fault and say what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// An I/O error on a file we read or write.
    #[error("{}: {}", shown(.path.display()), shown(.source))]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The archive stream itself could not be read (corrupt or truncated).
    #[error(
        "release archive is corrupt or truncated: {}; fetch it again or rebuild the release",
        shown(.0)
    )]
    Archive(#[source] io::Error),
    /// Extracting one entry failed.
    #[error("unpacking archive entry {path:?}: {}", shown(.source))]
    Unpack {
        path: String,
        #[source]
        source: io::Error,
    },
    /// An archive entry that a release must not contain.
    #[error("refusing archive entry {path:?}: {reason}")]
    BadEntry { path: String, reason: String },
    /// The tarball's sha256 is not the one recorded for the release.
    #[error(
        "sha256 mismatch for {}: expected {expected}, got {actual}; \
         the file is corrupt or was tampered with, fetch it again",
        shown(.path.display())
    )]
    DigestMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    /// The expected digest given to us is not a sha256 in hex.
    #[error("{0:?} is not a sha256 digest (expected 64 hex characters)")]
    BadDigest(String),
    /// A socket, fifo or device file in the slug.
    #[error(
        "{}: is a socket, fifo or device file; a release may only contain regular files, \
         directories and symlinks, so remove it from the build output",
        shown(.0.display())
    )]
    Special(PathBuf),
    /// The compressed slug is over the server's limit (`serve --max-slug`).
    #[error(
        "the slug is {} compressed, over the {} limit; keep build tools, caches and test \
         data out of /app (devDependencies, `.slugignore`), or raise `serve --max-slug`",
        mb(*.size),
        mb(*.limit)
    )]
    TooLarge { size: u64, limit: u64 },
    /// The destination already exists (or, for `unpack`, is not empty).
    #[error(
        "{}: already exists (or is not empty); releases are unpacked into a fresh directory",
        shown(.0.display())
    )]
    Exists(PathBuf),
}

/// Text from an archive or a slug inside an error (entry names; tar's own messages, which
/// quote raw header fields) on one line: control characters escaped.
fn shown(s: impl std::fmt::Display) -> String {
    s.to_string()
        .chars()
        .flat_map(|c| {
            let esc = c.is_control().then(|| c.escape_default());
            esc.into_iter()
                .flatten()
                .chain((!c.is_control()).then_some(c))
        })
        .collect()
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / (1u64 << 20) as f64)
}

/// Builds the `map_err` closure for an I/O error on `path`.
pub(crate) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ReleaseError + '_ {
    move |source| ReleaseError::Io {
        path: path.to_path_buf(),
        source,
    }
}
