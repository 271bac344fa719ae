//! App output on a node: the `logs` verb, and the archive of stopped processes' output.
//!
//! A running process's output is in Docker's json-file log. Before [`runtime::stop`] removes
//! a container it calls [`archive`], which copies the container's lines (with Docker's
//! timestamps) to `<root>/apps/<app>/logs/<stop time>-<container>.jsonl`, one [`LogLine`]
//! per line, and then drops the oldest files while the app's archive is over its budget
//! (`MAGRATHEA_LOG_BUDGET` bytes, default 100 MB). So a release's lines outlive its
//! containers.
//!
//! `logs` streams JSON lines ([`LogFrame`]): the backlog (archived and current lines, the
//! last `tail`, merged by time), `{"live":true}`, then with `follow` every new line of the
//! app's containers, including containers started later, until the channel closes.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::query_parameters::{InspectContainerOptions, LogsOptionsBuilder};
use futures_util::StreamExt;
use russh::server::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::layout::NodeRoot;
use super::runtime;
use crate::docker::Docker;
use crate::node::proto::{LogFrame, LogLine, LogsReq};
use crate::timefmt::{parse_rfc3339, rfc3339_nanos};

/// The label `runtime::start` puts on process containers: where their output is archived.
pub const L_LOGS: &str = "magrathea.logs";

pub(crate) fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339_nanos(d.as_secs() as i64, d.subsec_nanos())
}

/// Normalizes an RFC 3339 time to [`rfc3339_nanos`] form (so strings sort as times).
pub fn normalize_time(t: &str) -> Option<String> {
    parse_rfc3339(t).map(|(s, n)| rfc3339_nanos(s, n))
}

/// One line as Docker returns it with `timestamps`: `<RFC 3339> <text>`. The time is
/// normalized; a line without a readable time gets none.
pub fn split_docker_line(raw: &str) -> (Option<String>, &str) {
    match raw.split_once(' ') {
        Some((t, rest)) => match normalize_time(t) {
            Some(t) => (Some(t), rest),
            None => (None, raw),
        },
        None => match normalize_time(raw) {
            Some(t) => (Some(t), ""),
            None => (None, raw),
        },
    }
}

/// What a request selects: a process type (`web`) or process (`web.1`), and a version
/// (`v3`) or release name (`v3-0123456789ab`).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub process: Option<String>,
    pub release: Option<String>,
}

impl Filter {
    pub fn matches(&self, process: &str, release: &str) -> bool {
        let p_ok = match &self.process {
            None => true,
            Some(p) if p.contains('.') => process == p,
            Some(p) => process.split_once('.').map_or(process, |(t, _)| t) == p,
        };
        let r_ok = match &self.release {
            None => true,
            Some(r) if r.contains('-') => release == r,
            Some(r) => release == r || release.split_once('-').map(|(v, _)| v) == Some(r),
        };
        p_ok && r_ok
    }
}

/// Sorts by time (stable: lines of one process with the same time keep their order),
/// drops exact duplicates, and keeps the last `n`.
pub fn merge_last(mut lines: Vec<LogLine>, n: usize) -> Vec<LogLine> {
    lines.sort_by(|a, b| a.t.cmp(&b.t));
    let mut seen = HashSet::new();
    lines.retain(|l| seen.insert((l.t.clone(), l.process.clone(), l.line.clone())));
    let skip = lines.len().saturating_sub(n);
    lines.drain(..skip);
    lines
}

/// Archive file name: `<secs>.<nanos>-<container>.jsonl`, so names sort by stop time.
fn archive_name(secs: i64, nanos: u32, container: &str) -> String {
    format!("{secs:012}.{nanos:09}-{container}.jsonl")
}

/// The stop time of an archive file, as a normalized RFC 3339 string.
fn archive_time(name: &str) -> Option<String> {
    let (stamp, _) = name.split_once('-')?;
    let (s, n) = stamp.split_once('.')?;
    Some(rfc3339_nanos(s.parse().ok()?, n.parse().ok()?))
}

/// Archive files of a dir, oldest first, with their sizes.
fn archive_files(dir: &Path) -> Vec<(String, u64)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut files: Vec<(String, u64)> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let meta = e.metadata().ok()?;
            (meta.is_file() && name.ends_with(".jsonl") && archive_time(&name).is_some())
                .then_some((name, meta.len()))
        })
        .collect();
    files.sort();
    files
}

/// Removes the oldest archive files while the dir holds more than `budget` bytes; the
/// newest file always stays. Returns the removed names.
pub fn trim(dir: &Path, budget: u64) -> Vec<String> {
    let files = archive_files(dir);
    let mut total: u64 = files.iter().map(|(_, s)| s).sum();
    let mut removed = vec![];
    for (name, size) in files.iter().take(files.len().saturating_sub(1)) {
        if total <= budget {
            break;
        }
        if std::fs::remove_file(dir.join(name)).is_ok() {
            removed.push(name.clone());
        }
        total -= size;
    }
    removed
}

/// Writes `lines` as a new archive file in `dir` (temp file + rename), then trims the dir.
pub fn write_archive(dir: &Path, container: &str, lines: &[LogLine], budget: u64) {
    if lines.is_empty() {
        return;
    }
    if let Err(e) = std::fs::create_dir_all(dir) {
        tracing::warn!(dir = %dir.display(), "cannot create the log archive: {e}");
        return;
    }
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let name = archive_name(d.as_secs() as i64, d.subsec_nanos(), container);
    let tmp = dir.join(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        for l in lines {
            serde_json::to_writer(&mut w, l)?;
            w.write_all(b"\n")?;
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, dir.join(&name))
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!(container, "cannot archive logs: {e}");
        return;
    }
    trim(dir, budget);
}

/// The last `tail` archived lines that pass `filter`, oldest first. Files are read newest
/// first; reading stops once `tail` lines newer than the next file's stop time are held.
pub fn read_archive(dir: &Path, tail: usize, filter: &Filter) -> Vec<LogLine> {
    if tail == 0 {
        return vec![];
    }
    let mut got: Vec<LogLine> = vec![];
    for (name, _) in archive_files(dir).into_iter().rev() {
        if got.len() >= tail {
            let stop = archive_time(&name).unwrap_or_default();
            got.sort_by(|a, b| b.t.cmp(&a.t));
            got.truncate(tail);
            // Every line of this file (and of older ones) is older than what we hold.
            if got.last().is_some_and(|l| l.t > stop) {
                break;
            }
        }
        let Ok(f) = std::fs::File::open(dir.join(&name)) else {
            continue;
        };
        for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
            if let Ok(l) = serde_json::from_str::<LogLine>(&line) {
                if filter.matches(&l.process, &l.release) {
                    got.push(l);
                }
            }
        }
    }
    merge_last(got, tail)
}

/// The facts a process container's labels hold.
struct Labels {
    process: String,
    release: String,
    logs: Option<PathBuf>,
}

fn labels_of(labels: &HashMap<String, String>) -> Option<Labels> {
    let get = |k: &str| labels.get(k).cloned();
    let app = get("magrathea.app")?;
    let logs = get(L_LOGS).map(PathBuf::from).filter(|p| {
        // Our own label, but check it points where an app's log dir is.
        crate::names::valid_node_app(&app)
            && p.is_absolute()
            && p.ends_with(Path::new("apps").join(&app).join("logs"))
    });
    Some(Labels {
        process: format!("{}.{}", get("magrathea.process")?, get("magrathea.index")?),
        release: get("magrathea.release")?,
        logs,
    })
}

pub(crate) fn frame_text(frame: LogOutput) -> String {
    String::from_utf8_lossy(&frame.into_bytes()).into_owned()
}

/// A container's lines (all, or the last `tail`), with times.
async fn container_lines(
    docker: &Docker,
    container: &str,
    process: &str,
    release: &str,
    tail: Option<usize>,
) -> Vec<LogLine> {
    let opts = LogsOptionsBuilder::default()
        .follow(false)
        .stdout(true)
        .stderr(true)
        .timestamps(true)
        .tail(&tail.map_or("all".to_string(), |n| n.to_string()))
        .build();
    let mut out = vec![];
    let mut stream = std::pin::pin!(docker.raw().logs(container, Some(opts)));
    while let Some(Ok(frame)) = stream.next().await {
        push_frame(&mut out, &frame_text(frame), process, release);
    }
    out
}

pub(crate) fn push_frame(out: &mut Vec<LogLine>, text: &str, process: &str, release: &str) {
    for raw in text.split_terminator('\n') {
        let (t, line) = split_docker_line(raw);
        out.push(LogLine {
            t: t.unwrap_or_else(now_rfc3339),
            process: process.to_string(),
            release: release.to_string(),
            line: line.trim_end_matches('\r').to_string(),
        });
    }
}

/// Copies a stopped container's output to its app's archive. Called by `runtime::stop`
/// before the container is removed. Containers without the logs label are skipped.
pub async fn archive(docker: &Docker, container: &str) {
    let Ok(info) = docker
        .raw()
        .inspect_container(container, None::<InspectContainerOptions>)
        .await
    else {
        return;
    };
    let labels = info.config.and_then(|c| c.labels).unwrap_or_default();
    let Some(Labels {
        process,
        release,
        logs: Some(dir),
    }) = labels_of(&labels)
    else {
        return;
    };
    let lines = container_lines(docker, container, &process, &release, None).await;
    let container = container.to_string();
    let _ = tokio::task::spawn_blocking(move || {
        write_archive(&dir, &container, &lines, crate::lines::log_budget());
    })
    .await;
}

/// The `logs` verb. Reads the request from the channel, streams frames, and returns when
/// the backlog is sent (without `follow`) or the channel closes.
pub async fn serve(
    docker: Result<&Docker, String>,
    root: &NodeRoot,
    instance: &str,
    swarm: bool,
    mut rx: ChannelReadHalf,
    tx: ChannelWriteHalf<Msg>,
) {
    // The request, up to EOF. Not `make_reader`: we must see the close that follows.
    let mut buf = vec![];
    let mut closed = false;
    loop {
        match rx.wait().await {
            Some(ChannelMsg::Data { data }) if buf.len() < 64 << 10 => buf.extend_from_slice(&data),
            Some(ChannelMsg::Data { .. }) => {}
            Some(ChannelMsg::Eof) => break,
            Some(ChannelMsg::Close) | None => {
                closed = true;
                break;
            }
            Some(_) => {}
        }
    }
    if closed {
        return;
    }
    let gone = async move {
        loop {
            if matches!(rx.wait().await, Some(ChannelMsg::Close) | None) {
                break;
            }
        }
    };
    let mut out = tx.make_writer();
    let result = match serde_json::from_slice::<LogsReq>(&buf) {
        Err(e) => Err(format!("bad request: {e}")),
        Ok(req) => match (crate::names::check_node_app(&req.app), docker) {
            (Err(e), _) => Err(e.to_string()),
            (_, Err(e)) => Err(e),
            (Ok(_), Ok(docker)) if swarm => {
                tokio::select! {
                    r = super::swarm::logs::stream(docker, &req, &mut out) => r,
                    _ = gone => Ok(()),
                }
            }
            (Ok(_), Ok(docker)) => {
                tokio::select! {
                    r = stream(docker, root, instance, &req, &mut out) => r,
                    _ = gone => Ok(()),
                }
            }
        },
    };
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            let f = LogFrame::Error {
                error: e.replace('\n', " "),
            };
            let _ = send(&mut out, &f).await;
            1
        }
    };
    let _ = out.flush().await;
    let _ = tx.exit_status(code).await;
    let _ = tx.eof().await;
    let _ = tx.close().await;
}

pub(crate) async fn send(
    out: &mut (impl AsyncWriteExt + Unpin),
    f: &LogFrame,
) -> std::io::Result<()> {
    let mut s = serde_json::to_string(f).map_err(std::io::Error::other)?;
    s.push('\n');
    out.write_all(s.as_bytes()).await?;
    out.flush().await
}

/// Follower tasks, aborted when this is dropped (so none outlives the request).
#[derive(Default)]
struct Followers(HashMap<String, tokio::task::JoinHandle<()>>);

impl Drop for Followers {
    fn drop(&mut self) {
        for h in self.0.values() {
            h.abort();
        }
    }
}

async fn stream(
    docker: &Docker,
    root: &NodeRoot,
    instance: &str,
    req: &LogsReq,
    out: &mut (impl AsyncWriteExt + Unpin),
) -> Result<(), String> {
    let filter = Filter {
        process: req.process.clone(),
        release: req.release.clone(),
    };
    // Backlog. `seen` is, per container, the time before which its lines were either sent
    // or deliberately left out: the follower sends only later ones.
    let started = now_rfc3339();
    let procs = runtime::list(docker, instance, Some(&req.app))
        .await
        .map_err(|e| e.to_string())?;
    let mut lines = {
        let (dir, tail, f) = (root.logs_dir(&req.app), req.tail, filter.clone());
        tokio::task::spawn_blocking(move || read_archive(&dir, tail, &f))
            .await
            .map_err(|e| e.to_string())?
    };
    let seen: Arc<Mutex<HashMap<String, String>>> = Default::default();
    for p in &procs {
        let process = format!("{}.{}", p.ptype, p.index);
        seen.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(p.container.clone(), started.clone());
        if !filter.matches(&process, &p.release) || req.tail == 0 {
            continue;
        }
        let got = container_lines(docker, &p.container, &process, &p.release, Some(req.tail)).await;
        if let Some(last) = got.last() {
            let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
            if last.t > started {
                s.insert(p.container.clone(), last.t.clone());
            }
        }
        lines.extend(got);
    }
    for l in merge_last(lines, req.tail) {
        send(out, &LogFrame::Line(l))
            .await
            .map_err(|e| e.to_string())?;
    }
    send(out, &LogFrame::Live { live: true })
        .await
        .map_err(|e| e.to_string())?;
    if !req.follow {
        return Ok(());
    }

    let (ltx, mut lrx) = mpsc::channel::<LogLine>(1024);
    let mut followers = Followers::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            Some(l) = lrx.recv() => {
                // A write that fails means the controller is gone.
                send(out, &LogFrame::Line(l)).await.map_err(|e| e.to_string())?;
            }
            _ = tick.tick() => {
                let Ok(procs) = runtime::list(docker, instance, Some(&req.app)).await else {
                    continue;
                };
                let live: HashSet<&str> = procs.iter().map(|p| p.container.as_str()).collect();
                followers.0.retain(|c, h| {
                    let keep = live.contains(c.as_str()) || !h.is_finished();
                    if !keep {
                        h.abort();
                    }
                    keep
                });
                for p in &procs {
                    let process = format!("{}.{}", p.ptype, p.index);
                    if !filter.matches(&process, &p.release) || p.state != "running" {
                        continue;
                    }
                    if followers.0.get(&p.container).is_some_and(|h| !h.is_finished()) {
                        continue;
                    }
                    let task = follow_one(
                        docker.clone(),
                        p.container.clone(),
                        process,
                        p.release.clone(),
                        seen.clone(),
                        ltx.clone(),
                    );
                    followers.0.insert(p.container.clone(), tokio::spawn(task));
                }
            }
        }
    }
}

/// Follows one container's output from after what was already sent (its `seen` time).
async fn follow_one(
    docker: Docker,
    container: String,
    process: String,
    release: String,
    seen: Arc<Mutex<HashMap<String, String>>>,
    tx: mpsc::Sender<LogLine>,
) {
    let after = seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&container)
        .cloned();
    let since = after
        .as_deref()
        .and_then(parse_rfc3339)
        .map_or(0, |(s, _)| (s - 1).clamp(0, i32::MAX as i64) as i32);
    let opts = LogsOptionsBuilder::default()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .timestamps(true)
        .since(since)
        .build();
    let mut stream = std::pin::pin!(docker.raw().logs(&container, Some(opts)));
    let mut last = after;
    while let Some(Ok(frame)) = stream.next().await {
        let mut got = vec![];
        push_frame(&mut got, &frame_text(frame), &process, &release);
        for l in got {
            if last.as_ref().is_some_and(|t| l.t <= *t) {
                continue;
            }
            last = Some(l.t.clone());
            seen.lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(container.clone(), l.t.clone());
            if tx.send(l).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(t: &str, p: &str, text: &str) -> LogLine {
        LogLine {
            t: t.into(),
            process: p.into(),
            release: "v1-0123456789ab".into(),
            line: text.into(),
        }
    }

    #[test]
    fn merging() {
        let a = vec![
            line("2024-01-01T00:00:03.000000000Z", "web.1", "c"),
            line("2024-01-01T00:00:01.000000000Z", "web.1", "a"),
            line("2024-01-01T00:00:02.000000000Z", "web.2", "b"),
            line("2024-01-01T00:00:02.000000000Z", "web.2", "b"),
            line("2024-01-01T00:00:04.000000000Z", "web.1", "d"),
        ];
        let got: Vec<String> = merge_last(a.clone(), 10)
            .into_iter()
            .map(|l| l.line)
            .collect();
        assert_eq!(got, ["a", "b", "c", "d"]);
        let got: Vec<String> = merge_last(a, 2).into_iter().map(|l| l.line).collect();
        assert_eq!(got, ["c", "d"]);
    }

    #[test]
    fn docker_lines() {
        let (t, l) = split_docker_line("2024-05-01T12:00:00.5Z hello world");
        assert_eq!(t.as_deref(), Some("2024-05-01T12:00:00.500000000Z"));
        assert_eq!(l, "hello world");
        let (t, l) = split_docker_line("no time here");
        assert!(t.is_none());
        assert_eq!(l, "no time here");
        let (t, l) = split_docker_line("2024-05-01T12:00:00Z");
        assert!(t.is_some());
        assert_eq!(l, "");
    }

    #[test]
    fn filters() {
        let f = |p: Option<&str>, r: Option<&str>| Filter {
            process: p.map(String::from),
            release: r.map(String::from),
        };
        assert!(f(None, None).matches("web.1", "v3-0123456789ab"));
        assert!(f(Some("web"), None).matches("web.2", "v3-0123456789ab"));
        assert!(!f(Some("web"), None).matches("worker.1", "v3-0123456789ab"));
        assert!(f(Some("web.2"), None).matches("web.2", "x"));
        assert!(!f(Some("web.2"), None).matches("web.1", "x"));
        assert!(f(None, Some("v3")).matches("web.1", "v3-0123456789ab"));
        assert!(!f(None, Some("v3")).matches("web.1", "v31-0123456789ab"));
        assert!(f(None, Some("v3-0123456789ab")).matches("web.1", "v3-0123456789ab"));
    }

    #[test]
    fn archive_and_budget() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mk = |secs: i64, c: &str, text: &str| {
            let name = archive_name(secs, 0, c);
            let l = line(&rfc3339_nanos(secs - 1, 0), "web.1", text);
            std::fs::write(
                d.join(name),
                format!("{}\n", serde_json::to_string(&l).unwrap()),
            )
            .unwrap();
        };
        mk(1_700_000_100, "mg-a-v1-web-1", "old");
        mk(1_700_000_200, "mg-a-v2-web-1", "mid");
        mk(1_700_000_300, "mg-a-v3-web-1", "new");
        let all = read_archive(d, 10, &Filter::default());
        let texts: Vec<&str> = all.iter().map(|l| l.line.as_str()).collect();
        assert_eq!(texts, ["old", "mid", "new"]);
        let last = read_archive(d, 1, &Filter::default());
        assert_eq!(last[0].line, "new");
        let size = std::fs::metadata(d.join(archive_name(1_700_000_100, 0, "mg-a-v1-web-1")))
            .unwrap()
            .len();
        // Room for two files: the oldest goes.
        let removed = trim(d, size * 2 + 1);
        assert_eq!(removed, [archive_name(1_700_000_100, 0, "mg-a-v1-web-1")]);
        // The newest file stays even over budget.
        trim(d, 1);
        let left: Vec<String> = archive_files(d).into_iter().map(|(n, _)| n).collect();
        assert_eq!(left, [archive_name(1_700_000_300, 0, "mg-a-v3-web-1")]);
        // write_archive adds a file and trims.
        write_archive(d, "mg-a-v4-web-1", &[line(&now_rfc3339(), "web.1", "x")], 1);
        let left = archive_files(d);
        assert_eq!(left.len(), 1);
        assert!(left[0].0.ends_with("mg-a-v4-web-1.jsonl"));
    }
}
