//! An app's logs: the controller's build and deploy events, and its processes' output from
//! every node of the environment, streamed (and, following, reconnected) per node.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{Core, CoreError};
use crate::eventlog::{self, Event};
use crate::node::client::NodeClient;
use crate::node::proto::{LogFrame, LogLine, LogsReq};

/// What to read, checked by the front end.
pub struct LogQuery<'a> {
    pub app: &'a str,
    pub env: &'a str,
    /// Only this node ('controller': only build and deploy events).
    pub node: Option<&'a str>,
    /// Only this process type (web) or process (web.1).
    pub process: Option<&'a str>,
    /// Only this release (`v3`).
    pub release: Option<&'a str>,
    /// Backlog lines per source.
    pub tail: usize,
    pub follow: bool,
}

/// What a node's stream reports.
pub enum NodeLog {
    Line(String, LogLine),
    /// The node sent its whole backlog; what follows is new.
    Live(String),
    Failed(String, String),
}

/// The node streams of one query. Dropping it aborts them and closes their connections.
pub struct NodeLogs {
    pub rx: mpsc::Receiver<NodeLog>,
    /// The nodes streaming.
    pub nodes: Vec<String>,
    _streams: JoinSet<()>,
}

impl Core {
    /// Opens a stream to every node of the environment (where it is live, and where its
    /// selector points), or to the one asked for.
    pub fn node_logs(&self, q: &LogQuery) -> Result<NodeLogs, CoreError> {
        let (app, env) = (q.app, q.env);
        let mut names: BTreeSet<String> = BTreeSet::new();
        if let Some(live) = self.store.live(app, env)? {
            names.extend(live.nodes);
        }
        if let Some(r) = self
            .store
            .list_releases(app)?
            .into_iter()
            .max_by_key(|r| r.version)
        {
            let target = crate::deploy::envs::target_of_release(&self.data, &r, env);
            names.extend(
                self.target_nodes(&target.selector)?
                    .into_iter()
                    .map(|n| n.name),
            );
        }
        let all = self.all_nodes()?;
        let mut nodes: Vec<NodeClient> = all
            .iter()
            .filter(|n| names.contains(&n.name))
            .map(|n| self.node_client(n))
            .collect();
        if let Some(want) = q.node {
            if want == "controller" {
                nodes.clear();
            } else {
                crate::names::check("node", want)?;
                nodes.retain(|c| c.name == want);
                if nodes.is_empty() {
                    return Err(CoreError::Invalid(format!(
                        "node '{want}' does not run '{app}' in {env}"
                    )));
                }
            }
        }
        let req = LogsReq {
            app: crate::deploy::node_app(app, env),
            tail: q.tail,
            follow: q.follow,
            process: q.process.map(str::to_string),
            release: q.release.map(str::to_string),
        };
        let (tx, rx) = mpsc::channel::<NodeLog>(1024);
        let mut streams = JoinSet::new();
        for c in &nodes {
            streams.spawn(node_stream(c.clone(), req.clone(), tx.clone()));
        }
        Ok(NodeLogs {
            rx,
            nodes: nodes.iter().map(|c| c.name.clone()).collect(),
            _streams: streams,
        })
    }

    /// The app's last `n` build and deploy events that `keep` wants.
    pub async fn events(
        &self,
        app: &str,
        n: usize,
        keep: impl Fn(&Event) -> bool + Send + 'static,
    ) -> Vec<Event> {
        let (d, app) = (self.data.logs(), app.to_string());
        tokio::task::spawn_blocking(move || eventlog::tail(&d, &app, n, keep))
            .await
            .unwrap_or_default()
    }

    /// Follows the app's event log from its end.
    pub fn event_tailer(&self, app: &str) -> eventlog::Tailer {
        eventlog::Tailer::new(&self.data.logs(), app)
    }
}

/// One node's stream: backlog, then (following) new lines; on a lost connection while
/// following, reconnects every few seconds and goes on after the last line it passed on.
async fn node_stream(client: NodeClient, mut req: LogsReq, tx: mpsc::Sender<NodeLog>) {
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
                        NodeLog::Line(node.clone(), l)
                    }
                    LogFrame::Live { .. } => {
                        live = true;
                        reported = false;
                        if !first {
                            continue;
                        }
                        NodeLog::Live(node.clone())
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
                let _ = tx.send(NodeLog::Failed(node.clone(), e.to_string())).await;
                reported = true;
            }
        } else if first {
            // A backlog without the live marker (an old agent): count it as complete.
            let _ = tx.send(NodeLog::Live(node.clone())).await;
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
