//! `logs APP [-f] [-n N] [--process TYPE] [--node N] [--env E] [--release vN] [--since 10m]`
//! (viewer): the app's build and deploy events (the controller's event log) and its
//! processes' output from every node of the environment, merged in time order, one line
//! each: `2026-11-23T13:20:46.761Z n1 web.1 v3: listening`. With `-f`, new lines follow as
//! they are written, across deploys and node restarts, until the client goes away.

use std::collections::HashSet;
use std::time::Duration;

use super::{CmdError, CmdResult, Command, Ctx, Done, Mode, Need};
use crate::access::AppRole;
use crate::controller::view::{Event, LogLine, LogQuery, NodeLog, NodeLogs, Tailer};
use crate::controller::Sink;
use crate::names::{AppName, EnvName, NodeName, ProcessName, Version};

/// The most backlog lines one request may ask for.
const MAX_LINES: usize = 100_000;

/// Build and deploy events and every process's output, merged in time order (viewer)
#[derive(Debug, clap::Args)]
pub struct Logs {
    app: AppName,
    /// Keep following new lines (across deploys) until interrupted
    #[arg(short = 'f', long)]
    follow: bool,
    /// How many lines of backlog
    #[arg(short = 'n', default_value_t = 100)]
    n: usize,
    /// Only this process type (web) or process (web.1); 'router' for the access log
    #[arg(long)]
    process: Option<ProcessName>,
    /// Only this node ('controller': only build and deploy events)
    #[arg(long)]
    node: Option<NodeName>,
    #[arg(long, default_value = "production")]
    env: EnvName,
    /// Only this release (v3)
    #[arg(long)]
    release: Option<Version>,
    /// Only lines this recent (30s, 10m, 2h, 1d) or since an RFC 3339 time
    #[arg(long)]
    since: Option<String>,
}

impl Command for Logs {
    const NEED: Need = Need::App(AppRole::Viewer);
    const MODE: Mode = Mode::Streams;

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let a = self;
        let release = a.release.map(|v| v.to_string());
        let since = match &a.since {
            Some(s) => Some(parse_since(s, crate::timefmt::now()).map_err(CmdError::Invalid)?),
            None => None,
        };
        let n = a.n.min(MAX_LINES);
        // The router's access log is the controller's, not any node's.
        let router_only = a.process.as_deref() == Some("router");
        let events_wanted = router_only
            || (a.process.is_none() && a.node.as_deref().is_none_or(|n| n == "controller"));
        let core = cx.core;
        // Dropped on every way out, which aborts the node streams and closes their connections.
        let mut streams = core.node_logs(&LogQuery {
            app: &a.app,
            env: &a.env,
            node: if router_only {
                Some("controller")
            } else {
                a.node.as_deref()
            },
            process: a.process.as_deref().filter(|_| !router_only),
            release: release.as_deref(),
            tail: n,
            follow: a.follow,
        })?;
        let mut follow = Follow {
            tailer: if router_only {
                core.access_tailer(&a.app)
            } else {
                core.event_tailer(&a.app)
            },
            last_event: String::new(),
            events_wanted,
            release,
            since,
        };
        let mut items: Vec<(String, String)> = vec![];
        if events_wanted {
            let rel = follow.release.clone();
            let evs = if router_only {
                core.access_events(&a.app, n).await
            } else {
                core.events(&a.app, n, move |e| {
                    rel.as_ref().is_none_or(|r| *r == e.release)
                })
                .await
            };
            for e in evs {
                follow.last_event = follow.last_event.max(e.t.clone());
                items.push((e.t.clone(), render_event(&e)));
            }
        }
        let fresh = |t: &str| follow.fresh(t);
        if backlog(&mut streams, items, n, &fresh, cx.out).await && a.follow {
            follow.run(&mut streams, cx.out).await;
        }
        Ok(String::new().into())
    }
}

/// Following, after the backlog: new lines from the nodes and new events, as they come.
struct Follow {
    tailer: Tailer,
    /// The time of the last event passed on.
    last_event: String,
    events_wanted: bool,
    /// Only this release (`v3`).
    release: Option<String>,
    /// Only lines from this time on (RFC 3339).
    since: Option<String>,
}

impl Follow {
    fn fresh(&self, t: &str) -> bool {
        self.since.as_ref().is_none_or(|s| t >= s.as_str())
    }

    /// Until the client goes away (or nothing is left to follow).
    async fn run(&mut self, streams: &mut NodeLogs, out: &mut Sink) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut nodes_done = false;
        loop {
            tokio::select! {
                m = streams.rx.recv(), if !nodes_done => match m {
                    Some(NodeLog::Line(node, l)) if self.fresh(&l.t) => out.line(render_line(&node, &l)).await,
                    Some(NodeLog::Failed(node, e)) => out.line(format!(" !     {node}: {e} (retrying)")).await,
                    Some(_) => {}
                    // No node streams (only events): keep following those.
                    None => {
                        if !self.events_wanted {
                            return;
                        }
                        nodes_done = true;
                    }
                },
                _ = tick.tick(), if self.events_wanted => {
                    for e in self.tailer.poll() {
                        let wanted = self.release.as_ref().is_none_or(|r| *r == e.release);
                        if e.t > self.last_event && wanted {
                            self.last_event = e.t.clone();
                            out.line(render_event(&e)).await;
                        }
                    }
                }
                _ = out.gone() => return,
            }
            if out.closed() {
                return;
            }
        }
    }
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
    // The router's access lines belong to no release.
    let sep = if e.release.is_empty() { "" } else { " " };
    format!(
        "{} controller {}{sep}{}: {}",
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

/// The backlog: until every node has sent its own (or failed), merged with the events in
/// `items`, the last `n`. False when the client went away meanwhile.
async fn backlog(
    streams: &mut NodeLogs,
    mut items: Vec<(String, String)>,
    n: usize,
    fresh: &impl Fn(&str) -> bool,
    out: &mut Sink,
) -> bool {
    let mut waiting: HashSet<String> = streams.nodes.iter().cloned().collect();
    let mut failures = vec![];
    while !waiting.is_empty() {
        let msg = tokio::select! {
            m = streams.rx.recv() => m,
            _ = out.gone() => return false,
        };
        match msg {
            Some(NodeLog::Line(node, l)) => items.push((l.t.clone(), render_line(&node, &l))),
            Some(NodeLog::Live(node)) => {
                waiting.remove(&node);
            }
            Some(NodeLog::Failed(node, e)) => {
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
    true
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
}
