//! The front door's server: the shared accept loop (`sshd::server`) with its handler.

use std::sync::Arc;

use russh::keys::PrivateKey;
use tokio::net::TcpListener;

use super::handler::Conn;
use crate::controller::Core;
use crate::sshd::server::{accept_loop, config};
use crate::sshd::Limits;

#[derive(Default)]
pub struct ServerOptions {
    pub limits: Limits,
}

pub async fn serve(
    core: Arc<Core>,
    listener: TcpListener,
    host_key: PrivateKey,
    opts: ServerOptions,
) -> anyhow::Result<()> {
    let shutdown = core.shutdown().clone();
    accept_loop(
        listener,
        config(host_key),
        opts.limits,
        shutdown,
        move |peer, ticket| Conn::new(core.clone(), peer, ticket),
    )
    .await;
    Ok(())
}
