//! Accounting: the router's traffic figures written down as per-minute buckets (rolled up
//! by the store), the access log written into each app's event log, the disk an app uses,
//! and the disk quota a push is checked against.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{Core, CoreError};
use crate::node::proto::{DiskReply, DiskReq};
use crate::node::svcproto::ServiceStatusReq;
use crate::router::{AccessLine, Sample};
use crate::store::TrafficRow;

/// How often the figures are written down.
const FLUSH_EVERY: Duration = Duration::from_secs(60);
/// How often old buckets are rolled up.
const ROLL_UP_EVERY: Duration = Duration::from_secs(3600);
/// How long a node may take to say how much disk an app takes there.
const NODE_DISK_WAIT: Duration = Duration::from_secs(10);
/// The span of the buckets written.
const MINUTE: i64 = 60;
/// Access log lines written per batch.
const ACCESS_BATCH: usize = 512;
/// After a batch short of full, how long the access log waits before taking the next: a
/// busy router's lines are then written a few times a second in large batches, rather than
/// a few at a time, each with a wake-up and a write of its own taken from the request path.
const ACCESS_PACE: Duration = Duration::from_millis(100);

/// What `usage` shows: traffic per environment over the span asked for, and disk.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Usage {
    pub app: String,
    pub since: i64,
    pub envs: Vec<(String, Sample)>,
    pub total: Sample,
    pub disk: DiskUse,
}

/// Bytes an app takes on the controller, by what holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DiskUse {
    pub repo: u64,
    pub releases: u64,
    pub build_cache: u64,
    pub logs: u64,
    /// On the nodes where the app is live (None: not asked): unpacked releases, data dirs
    /// and archived process output.
    pub node_releases: Option<u64>,
    pub data: Option<u64>,
    pub node_logs: Option<u64>,
    /// Nodes that did not answer (their figures are missing from the sums).
    pub unmeasured: Vec<String>,
    /// Data dirs of the backing services the app declared (`magrathea.yml` `services:`),
    /// as their nodes report them (None: not asked).
    pub services: Option<u64>,
    pub total: u64,
}

impl DiskUse {
    /// `repo 1.0 MB, releases 2.0 MB, ...` for messages.
    pub fn parts(&self) -> String {
        use crate::build::human;
        let mut s = format!(
            "repo {}, releases {}, build cache {}, logs {}",
            human(self.repo),
            human(self.releases),
            human(self.build_cache),
            human(self.logs)
        );
        if let (Some(r), Some(d), Some(l)) = (self.node_releases, self.data, self.node_logs) {
            s += &format!(
                "; on nodes: releases {}, data {}, logs {}",
                human(r),
                human(d),
                human(l)
            );
        }
        if let Some(b) = self.services {
            s += &format!("; services {}", human(b));
        }
        if !self.unmeasured.is_empty() {
            s += &format!("; not measured on {}", self.unmeasured.join(", "));
        }
        s
    }

    /// Adds what the nodes reported.
    fn add_nodes(&mut self, reports: Vec<(String, Option<DiskReply>)>) {
        let mut sum = DiskReply::default();
        for (node, r) in reports {
            match r {
                Some(r) => {
                    sum.releases += r.releases;
                    sum.data += r.data;
                    sum.logs += r.logs;
                }
                None => self.unmeasured.push(node),
            }
        }
        self.node_releases = Some(sum.releases);
        self.data = Some(sum.data);
        self.node_logs = Some(sum.logs);
        self.total += sum.releases + sum.data + sum.logs;
    }
}

/// Figures already written down, per (app, env), so each flush stores only what is new.
pub(super) type Flushed = HashMap<(String, String), Sample>;

impl Core {
    /// `app`'s traffic since `since` (unix seconds), per environment (one, or all), plus
    /// what the router counted that is not written down yet, and its disk use.
    pub fn usage(&self, app: &str, env: Option<&str>, since: i64) -> Result<Usage, CoreError> {
        self.app(app)?;
        let mut envs = {
            // Held across the store read so a flush cannot move figures from memory to the
            // store in between (counting them twice or not at all).
            let flushed = self.lock_flushed();
            let mut envs = self.store.traffic(app, env, since)?;
            for (a, e, live) in self.router.traffic() {
                if a != app || env.is_some_and(|want| want != e) {
                    continue;
                }
                let new = unflushed(&flushed, &a, &e, &live);
                match envs.iter_mut().find(|(x, _)| *x == e) {
                    Some((_, s)) => s.add(&new),
                    None if !new.is_empty() => envs.push((e, new)),
                    None => {}
                }
            }
            envs
        };
        envs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut total = Sample::default();
        for (_, s) in &envs {
            total.add(s);
        }
        Ok(Usage {
            app: app.to_string(),
            since,
            envs,
            total,
            disk: self.disk_use(app),
        })
    }

    /// Writes what the router counted since the last flush into the minute bucket of `now`.
    pub fn flush_traffic(&self, now: i64) -> Result<(), CoreError> {
        let mut flushed = self.lock_flushed();
        let minute = now - now.rem_euclid(MINUTE);
        let current = self.router.traffic();
        let rows: Vec<TrafficRow> = current
            .iter()
            .filter_map(|(app, env, live)| {
                let new = unflushed(&flushed, app, env, live);
                (!new.is_empty()).then(|| TrafficRow {
                    app: app.clone(),
                    env: env.clone(),
                    span: MINUTE,
                    start: minute,
                    sample: new,
                })
            })
            .collect();
        if !rows.is_empty() {
            self.store.add_traffic(&rows)?;
        }
        for (app, env, live) in current {
            flushed.insert((app, env), live);
        }
        Ok(())
    }

    /// The last `n` lines of the app's access log.
    pub async fn access_events(&self, app: &str, n: usize) -> Vec<crate::eventlog::Event> {
        self.events(&access_log(app), n, |_| true).await
    }

    /// Follows the app's access log from its end.
    pub fn access_tailer(&self, app: &str) -> crate::eventlog::Tailer {
        self.event_tailer(&access_log(app))
    }

    /// Drops what the router counted for `app` and what was flushed of it (it is being
    /// destroyed).
    pub(super) fn forget_traffic(&self, app: &str, envs: &[String]) {
        for env in envs {
            self.router
                .forget_owner(&crate::deploy::route_key(app, env));
        }
        self.lock_flushed().retain(|(a, _), _| a != app);
    }

    fn lock_flushed(&self) -> std::sync::MutexGuard<'_, Flushed> {
        self.traffic_flushed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes `app` takes under the controller's data dir.
    pub fn disk_use(&self, app: &str) -> DiskUse {
        let logs = self.data.logs();
        let mut log_bytes = crate::fsutil::du(&logs.join("builds").join(app));
        for name in [app.to_string(), access_log(app)] {
            for f in crate::eventlog::files(&logs, &name) {
                log_bytes += crate::fsutil::du(&f);
            }
        }
        let mut d = DiskUse {
            repo: crate::fsutil::du(&self.data.repo(app)),
            releases: crate::fsutil::du(&self.data.releases(app)),
            build_cache: crate::fsutil::du(&self.data.cache(app)),
            logs: log_bytes,
            ..DiskUse::default()
        };
        d.total = d.repo + d.releases + d.build_cache + d.logs;
        d
    }

    /// Bytes `app` takes on the controller and on every node where an environment of it
    /// is live (each node asked at once, a few seconds at most).
    pub async fn disk_use_everywhere(self: &Arc<Self>, app: &str) -> Result<DiskUse, CoreError> {
        let (c, a) = (self.clone(), app.to_string());
        let mut d = tokio::task::spawn_blocking(move || c.disk_use(&a))
            .await
            .map_err(|e| CoreError::Other(e.into()))?;
        let nodes = self.all_nodes()?;
        let mut asks = tokio::task::JoinSet::new();
        for live in self.store.all_live()?.into_iter().filter(|l| l.app == app) {
            for n in nodes.iter().filter(|n| live.nodes.contains(&n.name)) {
                let client = self.node_client(n);
                let req = DiskReq {
                    app: crate::deploy::node_app(app, &live.env),
                };
                asks.spawn(async move {
                    let r = tokio::time::timeout(NODE_DISK_WAIT, client.send(&req)).await;
                    (client.name.clone(), r.ok().and_then(Result::ok))
                });
            }
        }
        d.add_nodes(asks.join_all().await);
        self.add_services_disk(app, &nodes, &mut d).await?;
        Ok(d)
    }

    /// The data dirs of the services `app` declared, each asked of its node (the size
    /// `services:info` shows); one that does not answer is named in `unmeasured`.
    async fn add_services_disk(
        &self,
        app: &str,
        nodes: &[crate::store::NodeRow],
        d: &mut DiskUse,
    ) -> Result<(), CoreError> {
        let mut asks = tokio::task::JoinSet::new();
        for row in self.store.services()? {
            if row.app.as_deref() != Some(app) {
                continue;
            }
            let who = format!("{} (service {})", row.node, row.name);
            let Some(n) = nodes.iter().find(|n| n.name == row.node) else {
                d.unmeasured.push(who);
                continue;
            };
            let client = self.node_client(n);
            let req = ServiceStatusReq { key: row.key };
            asks.spawn(async move {
                let r = tokio::time::timeout(NODE_DISK_WAIT, client.send(&req)).await;
                (who, r.ok().and_then(Result::ok).map(|s| s.size))
            });
        }
        let mut sum = 0;
        for (who, size) in asks.join_all().await {
            match size {
                Some(b) => sum += b,
                None => d.unmeasured.push(who),
            }
        }
        d.services = Some(sum);
        d.total += sum;
        Ok(())
    }

    /// A push to `app` is checked against its disk quota before anything is built: the
    /// repository holds the pushed objects by now. Over it, releases beyond the pinned,
    /// live and rollback ones are pruned first; still over, the push is refused with the
    /// figures.
    pub async fn check_disk_quota(self: &Arc<Self>, app: &str) -> Result<(), CoreError> {
        let Some(quota) = self.app_settings(app, super::edge::QUOTA_ENV)?.limits.disk else {
            return Ok(());
        };
        let mut used = self.disk_use_everywhere(app).await?;
        if used.total > quota {
            crate::release::prune(&self.data, &self.store, app, 0);
            used = self.disk_use_everywhere(app).await?;
        }
        if used.total > quota {
            use crate::build::human;
            return Err(CoreError::Invalid(format!(
                "disk quota exceeded: '{app}' would use {} of its {} ({}; old releases were pruned first); raise it with limits:set {app} disk=SIZE",
                human(used.total),
                human(quota),
                used.parts()
            )));
        }
        Ok(())
    }
}

/// What the router counted for (app, env) that is not written down yet. Counters that went
/// backwards (the route was handed to a new site) start over from zero.
fn unflushed(flushed: &Flushed, app: &str, env: &str, live: &Sample) -> Sample {
    match flushed.get(&(app.to_string(), env.to_string())) {
        Some(prev) if prev.requests <= live.requests && prev.bytes_out <= live.bytes_out => {
            live.since(prev)
        }
        _ => live.clone(),
    }
}

/// The controller's accounting task until shutdown: flushes the router's figures every
/// minute (and once more at the end), rolls old buckets up every hour, and writes the
/// access log into each app's event log as it comes.
pub async fn run(core: std::sync::Arc<Core>) {
    let mut access = core.router.take_access_log();
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    let mut roll = tokio::time::interval(ROLL_UP_EVERY);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    roll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch: Vec<AccessLine> = Vec::with_capacity(ACCESS_BATCH);
    let mut resume: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = core.shutdown().cancelled() => break,
            () = sleep_until(resume), if resume.is_some() => resume = None,
            _ = flush.tick() => flush_now(&core).await,
            _ = roll.tick() => {
                let c = core.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    if let Err(e) = c.store.roll_up_traffic(crate::timefmt::now()) {
                        tracing::warn!(error = %e, "cannot roll up traffic");
                    }
                }).await;
            }
            n = recv_some(&mut access, &mut batch), if resume.is_none() => {
                if n == 0 {
                    access = None;
                    continue;
                }
                let lines = std::mem::take(&mut batch);
                let logs = core.data.logs();
                let _ = tokio::task::spawn_blocking(move || write_access(&logs, lines)).await;
                if n < ACCESS_BATCH {
                    resume = Some(tokio::time::Instant::now() + ACCESS_PACE);
                }
            }
        }
    }
    // What came in while paused is written too.
    if let Some(rx) = access.as_mut() {
        rx.drain(&mut batch);
        if !batch.is_empty() {
            let logs = core.data.logs();
            let _ = tokio::task::spawn_blocking(move || write_access(&logs, batch)).await;
        }
    }
    flush_now(&core).await;
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn flush_now(core: &std::sync::Arc<Core>) {
    let c = core.clone();
    let _ = tokio::task::spawn_blocking(move || {
        if let Err(e) = c.flush_traffic(crate::timefmt::now()) {
            tracing::warn!(error = %e, "cannot write traffic figures");
        }
    })
    .await;
}

/// Up to a batch of access lines (waits for the first); 0 when the log is closed.
async fn recv_some(rx: &mut Option<crate::router::AccessLog>, into: &mut Vec<AccessLine>) -> usize {
    match rx {
        Some(rx) => rx.recv_many(into, ACCESS_BATCH).await,
        None => std::future::pending().await,
    }
}

/// The access log of `app` is an event log of its own (`<logs>/<app>.router.log`: an app
/// name has no dot), so a busy app's requests never push its build and deploy events out
/// of their budget.
pub(super) fn access_log(app: &str) -> String {
    format!("{app}.router")
}

fn write_access(logs: &Path, lines: Vec<AccessLine>) {
    let mut by_app: HashMap<String, Vec<String>> = HashMap::new();
    for l in lines {
        by_app
            .entry(l.app.to_string())
            .or_default()
            .push(l.to_string());
    }
    for (app, lines) in by_app {
        crate::eventlog::append(logs, &access_log(&app), "router", &lines);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_figures_are_flushed() {
        let mut f = Flushed::new();
        let live = Sample {
            requests: 5,
            bytes_out: 50,
            ..Default::default()
        };
        assert_eq!(unflushed(&f, "a", "production", &live), live);
        f.insert(("a".into(), "production".into()), live.clone());
        let later = Sample {
            requests: 7,
            bytes_out: 70,
            ..Default::default()
        };
        assert_eq!(unflushed(&f, "a", "production", &later).requests, 2);
        let reset = Sample {
            requests: 1,
            ..Default::default()
        };
        assert_eq!(unflushed(&f, "a", "production", &reset), reset);
    }
}
