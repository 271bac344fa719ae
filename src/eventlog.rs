//! The controller's per-app event log: every line of a build's and a deploy's output, as
//! JSON lines (`{"t","kind","release","line"}`) in `<data>/logs/<app>.log`, shown by `logs`
//! beside the processes' output. Kept within the same budget as the nodes' archives: when
//! the file passes half of it, it becomes `<app>.log.1` (replacing the older one).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// UTC RFC 3339, nine fraction digits (sorts as times do).
    pub t: String,
    /// `build` or `deploy`.
    pub kind: String,
    /// `v3`
    pub release: String,
    pub line: String,
}

/// `<logs>/<app>.log`
pub fn path(logs: &Path, app: &str) -> PathBuf {
    logs.join(format!("{app}.log"))
}

fn rotated(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

pub fn now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    crate::timefmt::rfc3339_nanos(d.as_secs() as i64, d.subsec_nanos())
}

/// Appends one command's output lines (a build or a deploy of one release) to an app's log.
pub struct EventLog {
    path: PathBuf,
    kind: String,
    release: String,
    budget: u64,
    /// Config var values: masked if a line ever holds one.
    secrets: Vec<String>,
    file: Option<File>,
}

/// A build's or a deploy's progress lines go here too while it runs.
impl crate::sink::Tee for EventLog {
    fn write(&mut self, line: &str) {
        EventLog::write(self, line)
    }
}

impl EventLog {
    pub fn open(logs: &Path, app: &str, kind: &str, version: i64) -> EventLog {
        let _ = std::fs::create_dir_all(logs);
        let path = path(logs, app);
        EventLog {
            file: Self::append(&path),
            path,
            kind: kind.into(),
            release: format!("v{version}"),
            budget: crate::lines::log_budget(),
            secrets: vec![],
        }
    }

    /// Lines about something other than a release (`certs`, labelled with the
    /// environment).
    pub fn open_labelled(logs: &Path, app: &str, kind: &str, label: &str) -> EventLog {
        let mut log = EventLog::open(logs, app, kind, 0);
        log.release = label.into();
        log
    }

    /// Values to mask in lines (short ones are left: they would mask ordinary words).
    pub fn mask<'a>(mut self, values: impl IntoIterator<Item = &'a String>) -> EventLog {
        self.secrets
            .extend(values.into_iter().filter(|v| v.len() >= 6).cloned());
        self
    }

    fn append(p: &Path) -> Option<File> {
        OpenOptions::new().create(true).append(true).open(p).ok()
    }

    pub fn write(&mut self, line: &str) {
        let mut line = line.to_string();
        for s in &self.secrets {
            if line.contains(s.as_str()) {
                line = line.replace(s.as_str(), "***");
            }
        }
        let ev = Event {
            t: now(),
            kind: self.kind.clone(),
            release: self.release.clone(),
            line,
        };
        let Ok(mut doc) = serde_json::to_string(&ev) else {
            return;
        };
        doc.push('\n');
        use std::os::unix::fs::MetadataExt;
        let ino = |m: std::io::Result<std::fs::Metadata>| m.map(|m| (m.ino(), m.len())).ok();
        match ino(std::fs::metadata(&self.path)) {
            Some((_, len)) if len >= self.budget / 2 => {
                let _ = std::fs::rename(&self.path, rotated(&self.path));
                self.file = Self::append(&self.path);
            }
            // Another writer rotated it (or it is gone): write to the new file.
            cur => {
                let mine = self.file.as_ref().and_then(|f| ino(f.metadata()));
                if cur.map(|c| c.0) != mine.map(|m| m.0) {
                    self.file = Self::append(&self.path);
                }
            }
        }
        let Some(f) = self.file.as_mut() else { return };
        // One write per line (O_APPEND), so concurrent writers never interleave a line.
        let _ = f.write_all(doc.as_bytes());
    }
}

/// The files of a log: the current one and the rotated one.
pub fn files(logs: &Path, app: &str) -> [PathBuf; 2] {
    let p = path(logs, app);
    [rotated(&p), p]
}

/// Appends lines of `kind` that belong to no release (the router's access log).
pub fn append(logs: &Path, app: &str, kind: &str, lines: &[String]) {
    let mut log = EventLog::open(logs, app, kind, 0);
    log.release = String::new();
    for l in lines {
        log.write(l);
    }
}

/// The last `n` events (that pass `keep`) of an app's log, oldest first.
pub fn tail(logs: &Path, app: &str, n: usize, keep: impl Fn(&Event) -> bool) -> Vec<Event> {
    let p = path(logs, app);
    let mut out = vec![];
    for f in [rotated(&p), p] {
        let Ok(file) = File::open(&f) else { continue };
        for l in BufReader::new(file).lines().map_while(Result::ok) {
            if let Ok(e) = serde_json::from_str::<Event>(&l) {
                if keep(&e) {
                    out.push(e);
                }
            }
        }
    }
    out.sort_by(|a, b| a.t.cmp(&b.t));
    let skip = out.len().saturating_sub(n);
    out.drain(..skip);
    out
}

/// Follows an app's log from its current end: each `poll` returns the events appended since.
pub struct Tailer {
    path: PathBuf,
    ino: u64,
    offset: u64,
}

impl Tailer {
    pub fn new(logs: &Path, app: &str) -> Tailer {
        use std::os::unix::fs::MetadataExt;
        let path = path(logs, app);
        let (ino, offset) = std::fs::metadata(&path)
            .map(|m| (m.ino(), m.len()))
            .unwrap_or((0, 0));
        Tailer { path, ino, offset }
    }

    pub fn poll(&mut self) -> Vec<Event> {
        use std::os::unix::fs::MetadataExt;
        let Ok(mut f) = File::open(&self.path) else {
            return vec![];
        };
        let Ok(m) = f.metadata() else { return vec![] };
        if m.ino() != self.ino || m.len() < self.offset {
            // Rotated: a new file, read from its start.
            self.ino = m.ino();
            self.offset = 0;
        }
        if m.len() == self.offset || f.seek(SeekFrom::Start(self.offset)).is_err() {
            return vec![];
        }
        let mut buf = vec![];
        if f.take(m.len() - self.offset).read_to_end(&mut buf).is_err() {
            return vec![];
        }
        // Only whole lines; a partly written one is read next time.
        let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
            return vec![];
        };
        self.offset += end as u64 + 1;
        buf[..=end]
            .split(|b| *b == b'\n')
            .filter_map(|l| serde_json::from_slice::<Event>(l).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_tail_follow_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut tailer = Tailer::new(d, "shop");
        let mut log = EventLog::open(d, "shop", "build", 3).mask([&"s3cr3t-value".to_string()]);
        log.write("-----> Building");
        log.write("token is s3cr3t-value");
        let got = tail(d, "shop", 10, |_| true);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].kind, "build");
        assert_eq!(got[0].release, "v3");
        assert_eq!(got[1].line, "token is ***");
        assert_eq!(tail(d, "shop", 1, |_| true)[0].line, "token is ***");
        assert!(tail(d, "shop", 10, |e| e.release == "v4").is_empty());
        let polled = tailer.poll();
        assert_eq!(polled.len(), 2);
        assert!(tailer.poll().is_empty());

        // A tiny budget rotates after every line; the tail still sees the last two.
        let mut log = EventLog::open(d, "shop", "deploy", 4);
        log.budget = 10;
        log.write("one");
        log.write("two");
        log.write("three");
        let got: Vec<String> = tail(d, "shop", 10, |_| true)
            .into_iter()
            .map(|e| e.line)
            .collect();
        assert_eq!(got, ["two", "three"]);
        assert!(!rotated(&rotated(&path(d, "shop"))).exists());
    }
}
