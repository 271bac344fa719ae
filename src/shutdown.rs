//! SIGTERM and SIGINT, for `serve` and `agent`.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// The stop signals, registered before a server announces that it listens: a signal sent
/// the moment the "listening" line appears must stop it gracefully, not kill it outright
/// (the default action before a handler exists).
pub struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    pub fn register() -> std::io::Result<Self> {
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the first SIGTERM or SIGINT.
    pub async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
