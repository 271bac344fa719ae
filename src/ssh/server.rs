//! The accept loop: connection cap, keepalives, graceful shutdown. Generic over the russh
//! handler, so the controller's front door and the node agent share it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::PrivateKey;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::handler::Conn;
use crate::controller::Core;

pub struct ServerOptions {
    pub max_connections: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_connections: 256,
        }
    }
}

pub fn config(host_key: PrivateKey) -> Arc<russh::server::Config> {
    Arc::new(russh::server::Config {
        methods: russh::MethodSet::from(&[russh::MethodKind::PublicKey][..]),
        keys: vec![host_key],
        auth_rejection_time: Duration::from_millis(300),
        // OpenSSH probes with "none" first; answering it slowly only delays everyone.
        auth_rejection_time_initial: Some(Duration::ZERO),
        // `logs -f` and long builds may be silent for a long time; keepalives find dead peers.
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        nodelay: true,
        ..Default::default()
    })
}

/// Accept connections until `shutdown`, each served by the handler `make` returns.
pub async fn accept_loop<H, F>(
    listener: TcpListener,
    config: Arc<russh::server::Config>,
    max: usize,
    shutdown: CancellationToken,
    make: F,
) where
    H: russh::server::Handler + Send + 'static,
    H::Error: std::fmt::Display,
    F: Fn(SocketAddr) -> H,
{
    let permits = Arc::new(Semaphore::new(max));
    loop {
        let (sock, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached; refusing");
            drop(sock);
            continue;
        };
        let (config, handler) = (config.clone(), make(peer));
        tokio::spawn(async move {
            let _permit = permit;
            match russh::server::run_stream(config, sock, handler).await {
                Ok(session) => {
                    if let Err(e) = session.await {
                        tracing::debug!(%peer, error = %e, "session ended with error");
                    }
                }
                Err(e) => tracing::debug!(%peer, error = %e, "handshake failed"),
            }
        });
    }
}

pub async fn serve(
    core: Arc<Core>,
    listener: TcpListener,
    host_key: PrivateKey,
    opts: ServerOptions,
) -> anyhow::Result<()> {
    let shutdown = core.shutdown.clone();
    accept_loop(
        listener,
        config(host_key),
        opts.max_connections,
        shutdown,
        move |peer| Conn::new(core.clone(), peer),
    )
    .await;
    Ok(())
}
