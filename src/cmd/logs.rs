//! `logs APP [-f] [-n N] [--process TYPE] [--node N] [--env E] [--release vN] [--since 10m]`
//! (viewer): the app's build and deploy events (the controller's event log) and its
//! processes' output from every node of the environment, merged in time order, one line
//! each: `2026-11-23T13:20:46.761Z n1 web.1 v3: listening`. With `-f`, new lines follow as
//! they are written, across deploys and node restarts, until the client goes away.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{releases::parse_version, CmdError, CmdResult};
use crate::controller::Core;
use crate::eventlog::{self, Event};
use crate::node::client::NodeClient;
use crate::node::proto::{LogFrame, LogLine, LogsReq};
use crate::sink::Sink;

/// The most backlog lines one request may ask for.
const MAX_LINES: usize = 100_000;

#[derive(Debug, clap::Args)]
pub struct Args {
    pub app: String,
    /// Keep following new lines (across deploys) until interrupted
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// How many lines of backlog
    #[arg(short = 'n', default_value_t = 100)]
    pub n: usize,
    /// Only this process type (web) or process (web.1)
    #[arg(long)]
    pub process: Option<String>,
    /// Only this node ('controller': only build and deploy events)
    #[arg(long)]
    pub node: Option<String>,
    #[arg(long, default_value = "production")]
    pub env: String,
    /// Only this release (v3)
    #[arg(long)]
    pub release: Option<String>,
    /// Only lines this recent (30s, 10m, 2h, 1d) or since an RFC 3339 time
    #[arg(long)]
    pub since: Option<String>,
}

/// `--since`: a duration ago (`90s`, `10m`, `2h`, `1d`) or an RFC 3339 time, as the
/// normalized RFC 3339 string lines are compared with. `now` is unix seconds.
pub fn parse_since(s: &str, now: i64) -> Result<String, String> {
    let s = s.trim();
    if let Some((secs, nanos)) = crate::timefmt::parse_rfc3339(s) {
        return Ok(crate::timefmt::rfc3339_nanos(secs, nanos));
    }
    let bad = || {
        format!(
            "--since '{}': expected a duration like 30s, 10m, 2h, 1d or an RFC 3339 time",
            s.chars()
                .filter(|c| !c.is_control())
                .take(40)
                .collect::<String>()
        )
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: i64 = num.parse().map_err(|_| bad())?;
    let mult = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let ago = n
        .checked_mul(mult)
        .filter(|a| *a <= 100 * 365 * 86_400)
        .ok_or_else(bad)?;
    Ok(crate::timefmt::rfc3339_nanos(now - ago, 0))
}

/// `web` or `web.1`.
fn check_process(p: &str) -> Result<(), CmdError> {
    let (ptype, index) = match p.split_once('.') {
        Some((t, i)) => (t, Some(i)),
        None => (p, None),
    };
    let index_ok = index.is_none_or(|i| i.parse::<u32>().is_ok_and(|n| n > 0));
    if crate::names::valid(ptype) && index_ok {
        return Ok(());
    }
    Err(CmdError::Invalid(format!(
        "--process '{}': expected a process type (web) or process (web.1)",
        p.chars()
            .filter(|c| !c.is_control())
            .take(40)
            .collect::<String>()
    )))
}

/// RFC 3339 with milliseconds, as shown: `2026-11-23T13:20:46.761Z`.
fn shown_time(t: &str) -> String {
    match t.get(..23) {
        Some(head) if t.len() > 23 => format!("{head}Z"),
        _ => t.to_string(),
    }
}

/// `v3-0123456789ab` -> `v3`.
fn short_release(r: &str) -> &str {
    r.split_once('-').map_or(r, |(v, _)| v)
}

/// One output line, tagged.
pub fn render_line(node: &str, l: &LogLine) -> String {
    format!(
        "{} {node} {} {}: {}",
        shown_time(&l.t),
        l.process,
        short_release(&l.release),
        l.line
    )
}

pub fn render_event(e: &Event) -> String {
    format!(
        "{} controller {} {}: {}",
        shown_time(&e.t),
        e.kind,
        e.release,
        e.line
    )
}

/// Backlog items from several sources, in time order, the last `n`.
pub fn merge(mut items: Vec<(String, String)>, n: usize) -> Vec<(String, String)> {
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let skip = items.len().saturating_sub(n);
    items.drain(..skip);
    items
}

enum Msg {
    Line(String, LogLine),
    Live(String),
    Failed(String, String),
}

pub async fn logs(core: &Arc<Core>, a: Args, out: &mut Sink) -> CmdResult {
    let app = a.app.clone();
    crate::names::check("environment", &a.env)?;
    if let Some(p) = &a.process {
        check_process(p)?;
    }
    let release = match &a.release {
        Some(r) => Some(format!("v{}", parse_version(r)?)),
        None => None,
    };
    let since = match &a.since {
        Some(s) => Some(parse_since(s, crate::timefmt::now()).map_err(CmdError::Invalid)?),
        None => None,
    };
    let n = a.n.min(MAX_LINES);

    // The environment's nodes: where it is live, and where its selector points.
    let mut names: BTreeSet<String> = BTreeSet::new();
    if let Some(live) = core.store().live(&app, &a.env)? {
        names.extend(live.nodes);
    }
    if let Some(r) = core
        .store()
        .list_releases(&app)?
        .into_iter()
        .max_by_key(|r| r.version)
    {
        let target = crate::deploy::envs::target_of_release(&core.data(), &r, &a.env);
        names.extend(
            core.target_nodes(&target.selector)?
                .into_iter()
                .map(|n| n.name),
        );
    }
    let all = core.all_nodes()?;
    let mut nodes: Vec<NodeClient> = all
        .iter()
        .filter(|n| names.contains(&n.name))
        .map(|n| core.node_client(n))
        .collect();
    let events_wanted = a.process.is_none() && a.node.as_deref().is_none_or(|n| n == "controller");
    if let Some(want) = a.node.as_deref() {
        if want == "controller" {
            nodes.clear();
        } else {
            crate::names::check("node", want)?;
            nodes.retain(|c| c.name == want);
            if nodes.is_empty() {
                return Err(CmdError::Invalid(format!(
                    "node '{want}' does not run '{app}' in {}",
                    a.env
                )));
            }
        }
    }

    let req = LogsReq {
        app: crate::deploy::node_app(&app, &a.env),
        tail: n,
        follow: a.follow,
        process: a.process.clone(),
        release: release.clone(),
    };
    let (tx, mut rx) = mpsc::channel::<Msg>(1024);
    // Dropped on every way out, which aborts the node streams and closes their connections.
    let mut streams = JoinSet::new();
    for c in &nodes {
        streams.spawn(node_stream(c.clone(), req.clone(), tx.clone()));
    }
    drop(tx);

    let keep_event = |e: &Event| release.as_ref().is_none_or(|r| *r == e.release);
    let logs_dir = core.data().logs();
    let mut tailer = eventlog::Tailer::new(&logs_dir, &app);
    let mut items: Vec<(String, String)> = vec![];
    let mut last_event = String::new();
    if events_wanted {
        let evs = {
            let (d, app) = (logs_dir.clone(), app.clone());
            let rel = release.clone();
            tokio::task::spawn_blocking(move || {
                eventlog::tail(&d, &app, n, |e| {
                    rel.as_ref().is_none_or(|r| *r == e.release)
                })
            })
            .await
            .unwrap_or_default()
        };
        for e in evs {
            last_event = last_event.max(e.t.clone());
            items.push((e.t.clone(), render_event(&e)));
        }
    }
    let fresh = |t: &str| since.as_ref().is_none_or(|s| t >= s.as_str());

    // Backlog: until every node has sent its own (or failed).
    let mut waiting: HashSet<String> = nodes.iter().map(|c| c.name.clone()).collect();
    let mut failures = vec![];
    while !waiting.is_empty() {
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = out.gone() => return Ok(String::new()),
        };
        match msg {
            Some(Msg::Line(node, l)) => items.push((l.t.clone(), render_line(&node, &l))),
            Some(Msg::Live(node)) => {
                waiting.remove(&node);
            }
            Some(Msg::Failed(node, e)) => {
                waiting.remove(&node);
                failures.push(format!(" !     {node}: {e}"));
            }
            None => break,
        }
    }
    items.retain(|(t, _)| fresh(t));
    for (_, line) in merge(items, n) {
        out.line(line).await;
    }
    for f in failures {
        out.line(f).await;
    }
    if !a.follow {
        return Ok(String::new());
    }

    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut nodes_done = false;
    loop {
        tokio::select! {
            m = rx.recv(), if !nodes_done => match m {
                Some(Msg::Line(node, l)) if fresh(&l.t) => out.line(render_line(&node, &l)).await,
                Some(Msg::Failed(node, e)) => out.line(format!(" !     {node}: {e} (retrying)")).await,
                Some(_) => {}
                // No node streams (only events): keep following those.
                None => {
                    if !events_wanted {
                        return Ok(String::new());
                    }
                    nodes_done = true;
                }
            },
            _ = tick.tick(), if events_wanted => {
                for e in tailer.poll() {
                    if e.t > last_event && keep_event(&e) {
                        last_event = e.t.clone();
                        out.line(render_event(&e)).await;
                    }
                }
            }
            _ = out.gone() => return Ok(String::new()),
        }
        if out.closed() {
            return Ok(String::new());
        }
    }
}

/// One node's stream: backlog, then (following) new lines; on a lost connection while
/// following, reconnects every few seconds and goes on after the last line it passed on.
async fn node_stream(client: NodeClient, mut req: LogsReq, tx: mpsc::Sender<Msg>) {
    let node = client.name.clone();
    let mut first = true;
    let mut last: Option<String> = None;
    let mut reported = false;
    loop {
        let (ltx, mut lrx) = mpsc::channel::<LogFrame>(1024);
        let call = client.stream(&req, ltx);
        let relay = async {
            let mut live = false;
            while let Some(frame) = lrx.recv().await {
                let msg = match frame {
                    LogFrame::Line(l) => {
                        // A reconnect's backlog repeats what was passed on before.
                        let old = last.as_ref().is_some_and(|t| l.t <= *t);
                        if !first && !live && old {
                            continue;
                        }
                        if !old {
                            last = Some(l.t.clone());
                        }
                        Msg::Line(node.clone(), l)
                    }
                    LogFrame::Live { .. } => {
                        live = true;
                        reported = false;
                        if !first {
                            continue;
                        }
                        Msg::Live(node.clone())
                    }
                    // The error also ends the call, which reports it.
                    LogFrame::Error { .. } => continue,
                };
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
        };
        let (result, ()) = tokio::join!(call, relay);
        if tx.is_closed() {
            return;
        }
        if let Err(e) = result {
            if !reported || first {
                let _ = tx.send(Msg::Failed(node.clone(), e.to_string())).await;
                reported = true;
            }
        } else if first {
            // A backlog without the live marker (an old agent): count it as complete.
            let _ = tx.send(Msg::Live(node.clone())).await;
        }
        if !req.follow {
            return;
        }
        first = false;
        // After a reconnect: the node's recent backlog, minus what was already passed on.
        req.tail = req.tail.max(1000);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = tx.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since() {
        let now = 1_700_000_000;
        assert_eq!(
            parse_since("10m", now).unwrap(),
            crate::timefmt::rfc3339_nanos(now - 600, 0)
        );
        assert_eq!(
            parse_since("2h", now).unwrap(),
            crate::timefmt::rfc3339_nanos(now - 7200, 0)
        );
        assert_eq!(
            parse_since("1d", now).unwrap(),
            crate::timefmt::rfc3339_nanos(now - 86_400, 0)
        );
        assert_eq!(
            parse_since("45", now).unwrap(),
            crate::timefmt::rfc3339_nanos(now - 45, 0)
        );
        assert_eq!(
            parse_since("2023-11-14T22:13:20Z", now).unwrap(),
            "2023-11-14T22:13:20.000000000Z"
        );
        for bad in [
            "",
            "m",
            "10x",
            "-5m",
            "1.5h",
            "99999999999999d",
            "yesterday",
        ] {
            assert!(parse_since(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn rendering_and_merge() {
        let l = LogLine {
            t: "2026-11-23T13:20:46.761234567Z".into(),
            process: "web.1".into(),
            release: "v3-0123456789ab".into(),
            line: "listening".into(),
        };
        assert_eq!(
            render_line("n1", &l),
            "2026-11-23T13:20:46.761Z n1 web.1 v3: listening"
        );
        let e = Event {
            t: "2026-11-23T13:20:40.000000000Z".into(),
            kind: "build".into(),
            release: "v3".into(),
            line: "-----> Building".into(),
        };
        assert_eq!(
            render_event(&e),
            "2026-11-23T13:20:40.000Z controller build v3: -----> Building"
        );
        let items = vec![
            ("b".to_string(), "2".to_string()),
            ("a".to_string(), "1".to_string()),
            ("c".to_string(), "3".to_string()),
        ];
        let got: Vec<String> = merge(items.clone(), 10).into_iter().map(|x| x.1).collect();
        assert_eq!(got, ["1", "2", "3"]);
        let got: Vec<String> = merge(items, 2).into_iter().map(|x| x.1).collect();
        assert_eq!(got, ["2", "3"]);
    }

    #[test]
    fn processes() {
        assert!(check_process("web").is_ok());
        assert!(check_process("web.2").is_ok());
        for bad in ["", "Web", "web.", "web.0", "web.x", ".1", "a/b"] {
            assert!(check_process(bad).is_err(), "{bad}");
        }
    }
}
