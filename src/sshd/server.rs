//! The accept loop: connection budgets and the login grace time (`gate`), keepalives,
//! graceful shutdown. Generic over the russh handler, so the controller's front door and the
//! node agent share it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::keys::PrivateKey;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::gate::{Gate, Guarded, Limits, Ticket};

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

/// Accept connections until `shutdown`, each served by the handler `make` returns. The
/// handler gets the connection's [`Ticket`] and must call `authenticated()` when it accepts
/// a key and `rejected()` before it refuses one (see `gate`).
pub async fn accept_loop<H, F>(
    listener: TcpListener,
    config: Arc<russh::server::Config>,
    limits: Limits,
    shutdown: CancellationToken,
    make: F,
) where
    H: russh::server::Handler + Send + 'static,
    H::Error: std::fmt::Display,
    F: Fn(SocketAddr, Arc<Ticket>) -> H,
{
    let gate = Gate::new(limits);
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
        let ticket = gate.admit(peer.ip());
        let (config, handler) = (config.clone(), make(peer, ticket.clone()));
        tokio::spawn(async move {
            let sock = Guarded::new(sock, &ticket);
            let session = async {
                match russh::server::run_stream(config, sock, handler).await {
                    Ok(session) => {
                        if let Err(e) = session.await {
                            tracing::debug!(%peer, error = %e, "session ended with error");
                        }
                    }
                    Err(e) => tracing::debug!(%peer, error = %e, "handshake failed"),
                }
            };
            tokio::select! {
                _ = session => {}
                // Never finishes on its own: it only closes the socket, which ends `session`.
                _ = async { ticket.enforce_grace().await; std::future::pending::<()>().await } => {}
            }
        });
    }
}
