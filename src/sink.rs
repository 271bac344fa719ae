//! Progress lines: where a build's, a deploy's or a streaming command's output goes while it
//! runs. The pusher (or SSH client) gets every line through a channel; a build also keeps a
//! capped log file, and builds and deploys tee their lines into the app's event log.
//!
//! Plumbing: it knows no wire format. The channel carries whatever the front end speaks
//! (hook frames, SSH output) as long as it is made from a `String`.

use std::future::Future;
use std::io::Write;
use std::pin::Pin;

use tokio::sync::mpsc;

/// A log file stops there (the pusher still sees every line).
const MAX_LOG: u64 = 8 << 20;

/// Where a line goes besides the channel and the log file (the app's event log).
pub trait Tee: Send + Sync {
    fn write(&mut self, line: &str);
}

type BoxFut<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// The channel side, without its item type (so the Sink does not carry it).
trait Out: Send + Sync {
    fn send(&self, line: String) -> BoxFut<'_>;
    fn closed(&self) -> BoxFut<'_>;
    fn is_closed(&self) -> bool;
}

impl<T: From<String> + Send + 'static> Out for mpsc::Sender<T> {
    fn send(&self, line: String) -> BoxFut<'_> {
        Box::pin(async move {
            let _ = mpsc::Sender::send(self, T::from(line)).await;
        })
    }
    fn closed(&self) -> BoxFut<'_> {
        Box::pin(mpsc::Sender::closed(self))
    }
    fn is_closed(&self) -> bool {
        mpsc::Sender::is_closed(self)
    }
}

/// Where a build's or a deploy's output goes: the pusher (as `remote:` lines) and the logs.
pub struct Sink {
    tx: Box<dyn Out>,
    log: Option<std::fs::File>,
    /// Bytes written to `log`, which stops at [`MAX_LOG`].
    logged: u64,
    /// The app's event log (`logs`), while a build or deploy runs.
    tee: Option<Box<dyn Tee>>,
}

impl Sink {
    pub fn new<T: From<String> + Send + 'static>(tx: mpsc::Sender<T>) -> Sink {
        Sink {
            tx: Box::new(tx),
            log: None,
            logged: 0,
            tee: None,
        }
    }

    /// Every line from now on also goes to `file` (a build log), up to [`MAX_LOG`] bytes.
    pub fn log_to(&mut self, file: Option<std::fs::File>) {
        self.log = file;
        self.logged = 0;
    }

    /// Every line from now on also goes to `tee`; returns the one it replaces, to be put
    /// back with this same call when the nested build or deploy ends.
    pub fn set_tee(&mut self, tee: Option<Box<dyn Tee>>) -> Option<Box<dyn Tee>> {
        std::mem::replace(&mut self.tee, tee)
    }

    pub async fn line(&mut self, s: impl Into<String>) {
        let s = s.into();
        if let Some(f) = &mut self.log {
            self.logged += s.len() as u64 + 1;
            if self.logged <= MAX_LOG {
                let _ = writeln!(f, "{s}");
            } else {
                let _ = writeln!(
                    f,
                    "[build log truncated at {:.1} MB; the push showed every line]",
                    MAX_LOG as f64 / (1u64 << 20) as f64
                );
                self.log = None;
            }
        }
        if let Some(e) = &mut self.tee {
            e.write(&s);
        }
        self.tx.send(s).await;
    }

    /// Resolves when the receiver is dropped (the client went away).
    pub async fn gone(&self) {
        self.tx.closed().await
    }

    /// The pusher is gone (Ctrl-C): the sender's receiver was dropped.
    pub fn closed(&self) -> bool {
        self.tx.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<String>>>);
    impl Tee for Lines {
        fn write(&mut self, line: &str) {
            self.0.lock().unwrap().push(line.to_string());
        }
    }

    #[tokio::test]
    async fn lines_reach_the_channel_the_tee_and_the_log() {
        let (tx, mut rx) = mpsc::channel::<String>(8);
        let mut sink = Sink::new(tx);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
        let d = tempfile::tempdir().unwrap();
        sink.log_to(std::fs::File::create(d.path().join("log")).ok());
        assert!(sink.set_tee(Some(Box::new(Lines(seen.clone())))).is_none());
        sink.line("one").await;
        assert!(sink.set_tee(None).is_some());
        sink.line("two").await;
        assert_eq!(rx.recv().await.unwrap(), "one");
        assert_eq!(rx.recv().await.unwrap(), "two");
        assert_eq!(*seen.lock().unwrap(), ["one"]);
        let log = std::fs::read_to_string(d.path().join("log")).unwrap();
        assert_eq!(log, "one\ntwo\n");
        assert!(!sink.closed());
        drop(rx);
        assert!(sink.closed());
        sink.gone().await;
    }
}
