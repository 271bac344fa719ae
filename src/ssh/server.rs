//! The accept loop: connection cap, keepalives, graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::PrivateKey;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

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

pub async fn serve(
    core: Arc<Core>,
    listener: TcpListener,
    host_key: PrivateKey,
    opts: ServerOptions,
) -> anyhow::Result<()> {
    let config = Arc::new(russh::server::Config {
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
    });
    let permits = Arc::new(Semaphore::new(opts.max_connections));
    loop {
        let (sock, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            _ = core.shutdown.cancelled() => break,
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
        let (config, core) = (config.clone(), core.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match russh::server::run_stream(config, sock, Conn::new(core, peer)).await {
                Ok(session) => {
                    if let Err(e) = session.await {
                        tracing::debug!(%peer, error = %e, "session ended with error");
                    }
                }
                Err(e) => tracing::debug!(%peer, error = %e, "handshake failed"),
            }
        });
    }
    Ok(())
}
