//! ps (viewer); scale, restart, stop, start (owner). Every change to what runs is a rollout of
//! the live release: new processes start beside the old ones, pass their health checks on
//! every node, then the router moves and the old ones drain. All or nothing, like a deploy.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::task::JoinSet;

use super::{table, CmdError, CmdResult};
use crate::build::Sink;
use crate::controller::Core;
use crate::deploy::{self, envs, RolloutOptions};
use crate::node::client::Stdin;
use crate::node::proto::StatusReply;
use crate::release::Manifest;
use crate::store::{LiveRow, ReleaseRow};

/// More than this per type is surely a typo.
const MAX_PER_TYPE: u32 = 100;

#[derive(serde::Serialize)]
struct PsRow {
    process: String,
    node: String,
    release: String,
    state: String,
    uptime_secs: Option<i64>,
    restarts: i64,
    port: u16,
}

fn live_of(core: &Arc<Core>, app: &str, env: &str) -> Result<(LiveRow, ReleaseRow), CmdError> {
    crate::names::check("environment", env)?;
    let live = core
        .store
        .live(app, env)?
        .ok_or_else(|| CmdError::Invalid(format!("nothing of '{app}' is live in {env}")))?;
    let release = core
        .store
        .release(app, live.version)?
        .ok_or_else(|| CmdError::Invalid(format!("live release v{} is gone", live.version)))?;
    Ok((live, release))
}

fn uptime(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

pub async fn ps(core: &Arc<Core>, app: &str, env: &str, json: bool) -> CmdResult {
    let (live, _) = live_of(core, app, env)?;
    let nodes = core.all_nodes()?;
    let mut set = JoinSet::new();
    for n in nodes.iter().filter(|n| live.nodes.contains(&n.name)) {
        let client = core.node_client(n);
        set.spawn(async move {
            let r: Result<StatusReply, _> = client.call("status", Stdin::Empty, None).await;
            (client.name.clone(), r)
        });
    }
    let mut rows = vec![];
    let mut unreachable = vec![];
    let now = crate::timefmt::now();
    while let Some(r) = set.join_next().await {
        let Ok((node, r)) = r else { continue };
        let status = match r {
            Ok(s) => s,
            Err(e) => {
                unreachable.push(e.to_string());
                continue;
            }
        };
        let Some(a) = status.apps.get(&crate::deploy::node_app(app, env)) else {
            continue;
        };
        for p in &a.processes {
            let up = crate::timefmt::parse_rfc3339(&p.started_at)
                .filter(|_| p.state == "running")
                .map(|(t, _)| (now - t).max(0));
            rows.push(PsRow {
                process: format!("{}.{}", p.ptype, p.index),
                node: node.clone(),
                release: p.release.split('-').next().unwrap_or("").to_string(),
                state: p.state.clone(),
                uptime_secs: up,
                restarts: p.restarts,
                port: p.port,
            });
        }
    }
    rows.sort_by(|a, b| {
        let key = |r: &PsRow| {
            let (t, i) = r.process.rsplit_once('.').unwrap_or((&r.process, "0"));
            (t.to_string(), i.parse::<u32>().unwrap_or(0), r.node.clone())
        };
        key(a).cmp(&key(b))
    });
    if json {
        return Ok(table::json(&rows));
    }
    let mut out = String::new();
    if rows.is_empty() {
        let why = if core.store.stopped(app, env)? {
            " (stopped; `start` runs it)"
        } else {
            ""
        };
        out.push_str(&format!("no processes of {app} in {env}{why}\n"));
    } else {
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.process.clone(),
                    r.node.clone(),
                    r.release.clone(),
                    r.state.clone(),
                    r.uptime_secs.map(uptime).unwrap_or_else(|| "-".into()),
                    r.restarts.to_string(),
                    r.port.to_string(),
                ]
            })
            .collect();
        out.push_str(&table::render(
            &[
                "PROCESS", "NODE", "RELEASE", "STATE", "UPTIME", "RESTARTS", "PORT",
            ],
            &cells,
        ));
    }
    for u in unreachable {
        out.push_str(&format!("warning: {u}\n"));
    }
    Ok(out)
}

/// `web=3 worker=1` into counts, each type checked against the live release's Procfile.
fn parse_counts(pairs: &[String], manifest: &Manifest) -> Result<BTreeMap<String, u32>, CmdError> {
    let mut counts = BTreeMap::new();
    for pair in pairs {
        let (t, n) = pair.split_once('=').ok_or_else(|| {
            CmdError::Invalid(format!(
                "'{}' is not TYPE=COUNT (e.g. web=3)",
                pair.chars().take(40).collect::<String>()
            ))
        })?;
        let n: u32 = n
            .parse()
            .ok()
            .filter(|n| *n <= MAX_PER_TYPE)
            .ok_or_else(|| {
                CmdError::Invalid(format!("{t}: the count must be 0 to {MAX_PER_TYPE}"))
            })?;
        check_type(t, manifest)?;
        counts.insert(t.to_string(), n);
    }
    Ok(counts)
}

/// A process type the live release's Procfile defines.
fn check_type(t: &str, manifest: &Manifest) -> Result<(), CmdError> {
    crate::names::check("process type", t)?;
    if !manifest.processes.contains_key(t) {
        let known: Vec<&str> = manifest.processes.keys().map(String::as_str).collect();
        return Err(CmdError::Invalid(format!(
            "the live release has no process type '{t}' (it has: {})",
            known.join(", ")
        )));
    }
    Ok(())
}

fn manifest_of(release: &ReleaseRow) -> Result<Manifest, CmdError> {
    serde_json::from_str(&release.manifest)
        .map_err(|e| CmdError::Invalid(format!("bad manifest of v{}: {e}", release.version)))
}

async fn roll(
    core: &Arc<Core>,
    who: &str,
    release: &ReleaseRow,
    env: &str,
    mut opts: RolloutOptions,
    out: &mut Sink,
) -> Result<(), CmdError> {
    opts.skip_release_phase = true;
    let target = envs::target_of_release(&core.data, release, env);
    deploy::rollout(core, release, &target, who, out, opts)
        .await
        .map_err(CmdError::Invalid)
}

pub async fn scale(
    core: &Arc<Core>,
    who: &str,
    app: &str,
    pairs: &[String],
    env: &str,
    out: &mut Sink,
) -> CmdResult {
    let (_, release) = live_of(core, app, env)?;
    let counts = parse_counts(pairs, &manifest_of(&release)?)?;
    let current = core.store.formation(app, env)?;
    if counts.iter().all(|(t, n)| current.get(t) == Some(n)) {
        return Ok("no change; nothing restarted\n".into());
    }
    let what: Vec<String> = counts.iter().map(|(t, n)| format!("{t}={n}")).collect();
    out.line(format!(
        "-----> Scaling {app} in {env} to {}",
        what.join(" ")
    ))
    .await;
    let opts = RolloutOptions {
        formation: Some(counts),
        ..Default::default()
    };
    roll(core, who, &release, env, opts, out).await?;
    Ok(format!("{app} in {env} now runs {}\n", what.join(" ")))
}

pub async fn restart(
    core: &Arc<Core>,
    who: &str,
    app: &str,
    ptype: Option<&str>,
    env: &str,
    out: &mut Sink,
) -> CmdResult {
    let (_, release) = live_of(core, app, env)?;
    if core.store.stopped(app, env)? {
        return Err(CmdError::Invalid(format!(
            "{app} is stopped in {env}; `start {app}` runs it"
        )));
    }
    if let Some(t) = ptype {
        check_type(t, &manifest_of(&release)?)?;
    }
    out.line(format!(
        "-----> Restarting {} of {app} in {env} (new processes first, then the old ones drain)",
        ptype.unwrap_or("every process")
    ))
    .await;
    let opts = RolloutOptions {
        only: ptype.map(str::to_string),
        ..Default::default()
    };
    roll(core, who, &release, env, opts, out).await?;
    Ok(format!(
        "restarted {} of {app} in {env}\n",
        ptype.unwrap_or("every process")
    ))
}

/// `stop` (true) and `start` (false).
pub async fn set_stopped(
    core: &Arc<Core>,
    who: &str,
    app: &str,
    env: &str,
    stop: bool,
    out: &mut Sink,
) -> CmdResult {
    let (_, release) = live_of(core, app, env)?;
    if core.store.stopped(app, env)? == stop {
        let state = if stop { "stopped" } else { "running" };
        return Ok(format!(
            "{app} is already {state} in {env}; nothing changed\n"
        ));
    }
    let opts = RolloutOptions {
        stopped: Some(stop),
        ..Default::default()
    };
    roll(core, who, &release, env, opts, out).await?;
    Ok(if stop {
        format!("{app} is stopped in {env}; its release and data are kept\n")
    } else {
        format!("{app} is running in {env} again\n")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_checked_against_the_procfile() {
        let m = Manifest {
            app: "a".into(),
            git_sha: "x".into(),
            stack: "tiny".into(),
            stack_image: "i".into(),
            buildpacks: vec![],
            processes: BTreeMap::from([("web".into(), "w".into()), ("worker".into(), "k".into())]),
            release: None,
        };
        let c = parse_counts(&["web=3".into(), "worker=0".into()], &m).unwrap();
        assert_eq!(c, BTreeMap::from([("web".into(), 3), ("worker".into(), 0)]));
        for bad in [
            "web", "web=-1", "web=x", "web=101", "clock=1", "../x=1", "=1",
        ] {
            assert!(parse_counts(&[bad.into()], &m).is_err(), "{bad}");
        }
    }

    #[test]
    fn uptimes() {
        assert_eq!(uptime(5), "5s");
        assert_eq!(uptime(125), "2m 5s");
        assert_eq!(uptime(7300), "2h 1m");
        assert_eq!(uptime(90_000), "1d 1h");
    }
}
