//! Git plumbing: bridging `git receive-pack`/`upload-pack` to a byte channel, the hook
//! shim and its wire protocol. libgit2 cannot serve pushes, so the real `git` does.

pub mod export;
pub mod hook;
pub mod hookproto;
pub mod quarantine;
pub mod service;
