//! Terminals requested on SSH channels, shared by the front door and the node agent: the pty
//! asked for before an exec, and where window changes go once the exec's task runs.

use std::collections::HashMap;

use russh::ChannelId;
use tokio::sync::mpsc;

/// A terminal requested on a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pty {
    pub term: String,
    pub cols: u32,
    pub rows: u32,
}

/// Per-connection terminal state of an ssh handler.
#[derive(Default)]
pub struct Terminals {
    ptys: HashMap<ChannelId, Pty>,
    resizers: HashMap<ChannelId, mpsc::Sender<(u32, u32)>>,
}

impl Terminals {
    pub fn pty(&mut self, id: ChannelId, term: &str, cols: u32, rows: u32) {
        let term = sane_term(term);
        self.ptys.insert(id, Pty { term, cols, rows });
    }

    /// Called from the handler's callback: never waits (a full queue drops the change; the
    /// next one carries the final size anyway).
    pub fn resize(&mut self, id: ChannelId, cols: u32, rows: u32) {
        if let Some(tx) = self.resizers.get(&id) {
            let _ = tx.try_send((cols, rows));
        }
    }

    /// The channel's pty (if any) and the receiving end of its window changes.
    pub fn start(&mut self, id: ChannelId) -> (Option<Pty>, mpsc::Receiver<(u32, u32)>) {
        let (tx, rx) = mpsc::channel(16);
        self.resizers.insert(id, tx);
        (self.ptys.remove(&id), rx)
    }

    pub fn close(&mut self, id: ChannelId) {
        self.ptys.remove(&id);
        self.resizers.remove(&id);
    }
}

/// `TERM` as given if it looks like a terminal name, else `xterm`.
fn sane_term(term: &str) -> String {
    let ok = !term.is_empty()
        && term.len() <= 64
        && term
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b));
    if ok {
        term.to_string()
    } else {
        "xterm".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::sane_term;

    #[test]
    fn terminal_names() {
        assert_eq!(sane_term("xterm-256color"), "xterm-256color");
        assert_eq!(sane_term("x; rm -rf /"), "xterm");
    }
}
