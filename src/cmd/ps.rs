//! ps (viewer); scale, restart, stop, start (owner). Every change to what runs is a rollout of
//! the live release: new processes start beside the old ones, pass their health checks on
//! every node, then the router moves and the old ones drain. All or nothing, like a deploy.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::task::JoinSet;

use super::{table, CmdError, CmdResult};
use crate::controller::Core;
use crate::deploy::{self, envs, Count, RolloutOptions};
use crate::node::proto::StatusReq;
use crate::release::Manifest;
use crate::sink::Sink;
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
        .store()
        .live(app, env)?
        .ok_or_else(|| CmdError::Invalid(format!("nothing of '{app}' is live in {env}")))?;
    let release = core
        .store()
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
            let r = client.send(&StatusReq).await;
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
    let (_, release) = live_of(core, app, env)?;
    let counts = deploy::current_formation(core, &release, env)
        .await
        .map_err(CmdError::Invalid)?;
    let mut out = String::new();
    if rows.is_empty() {
        let why = if core.store().stopped(app, env)? {
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
    // Every Procfile type, those at 0 too (Heroku's `ps` lists the formation the same way).
    if !counts.is_empty() {
        out.push_str(&format!(
            "formation: {}\n",
            formation_line(&counts, live.nodes.len())
        ));
    }
    for u in unreachable {
        out.push_str(&format!("warning: {u}\n"));
    }
    Ok(out)
}

/// `web=3 worker=1` into counts, each type checked against the live release's Procfile
/// (any well-formed type before the first deploy: there is no Procfile to check yet).
fn parse_counts(
    pairs: &[String],
    manifest: Option<&Manifest>,
) -> Result<BTreeMap<String, u32>, CmdError> {
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
        match manifest {
            Some(m) => check_type(t, m)?,
            None => {
                crate::names::check("process type", t)?;
            }
        }
        counts.insert(t.to_string(), n);
    }
    Ok(counts)
}

/// `web=1 worker=0` (a per-node web as `web=N` for N nodes, marked).
fn formation_line(counts: &BTreeMap<String, Count>, nodes: usize) -> String {
    counts
        .iter()
        .map(|(t, c)| match c {
            Count::Total(n) => format!("{t}={n}"),
            Count::PerNode if nodes == 1 => format!("{t}=1"),
            Count::PerNode => format!("{t}={nodes} (one per node)"),
        })
        .collect::<Vec<_>>()
        .join(" ")
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
    let target = envs::target_of_release(&core.data(), release, env);
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
    crate::names::check("environment", env)?;
    let what = |c: &BTreeMap<String, u32>| {
        c.iter()
            .map(|(t, n)| format!("{t}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    if core.store().live(app, env)?.is_none() {
        // Before the first deploy: remembered, and the first deploy runs these counts.
        let counts = parse_counts(pairs, None)?;
        let _held = core.deploy_lock(app, env).lock_owned().await;
        core.store().set_formation(app, env, &counts)?;
        return Ok(format!(
            "{app} in {env} will run {} (nothing is deployed yet; the first deploy starts them)\n",
            what(&counts)
        ));
    }
    let (_, release) = live_of(core, app, env)?;
    let counts = parse_counts(pairs, Some(&manifest_of(&release)?))?;
    let current = deploy::current_formation(core, &release, env)
        .await
        .map_err(CmdError::Invalid)?;
    let nodes = core.store().live(app, env)?.map_or(1, |l| l.nodes.len());
    let same = |t: &String, n: &u32| match current.get(t) {
        Some(Count::Total(m)) => m == n,
        Some(Count::PerNode) => nodes as u32 == *n && nodes == 1,
        None => false,
    };
    if counts.iter().all(|(t, n)| same(t, n)) {
        // Remembered all the same: an explicit count outranks app.json and magrathea.yml.
        core.store().set_formation(app, env, &counts)?;
        return Ok("no change; nothing restarted\n".into());
    }
    let what = what(&counts);
    out.line(format!("-----> Scaling {app} in {env} to {what}"))
        .await;
    let opts = RolloutOptions {
        formation: Some(counts),
        ..Default::default()
    };
    roll(core, who, &release, env, opts, out).await?;
    Ok(format!("{app} in {env} now runs {what}\n"))
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
    if core.store().stopped(app, env)? {
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
    if core.store().stopped(app, env)? == stop {
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
            config_vars: BTreeMap::new(),
            addons: vec![],
        };
        let c = parse_counts(&["web=3".into(), "worker=0".into()], Some(&m)).unwrap();
        assert_eq!(c, BTreeMap::from([("web".into(), 3), ("worker".into(), 0)]));
        for bad in [
            "web", "web=-1", "web=x", "web=101", "clock=1", "../x=1", "=1",
        ] {
            assert!(parse_counts(&[bad.into()], Some(&m)).is_err(), "{bad}");
        }
        // Before the first deploy any well-formed type is taken.
        assert!(parse_counts(&["clock=1".into()], None).is_ok());
        assert!(parse_counts(&["../x=1".into()], None).is_err());
        let f = BTreeMap::from([
            ("web".to_string(), Count::PerNode),
            ("worker".to_string(), Count::Total(0)),
        ]);
        assert_eq!(formation_line(&f, 1), "web=1 worker=0");
        assert_eq!(formation_line(&f, 3), "web=3 (one per node) worker=0");
    }

    #[test]
    fn uptimes() {
        assert_eq!(uptime(5), "5s");
        assert_eq!(uptime(125), "2m 5s");
        assert_eq!(uptime(7300), "2h 1m");
        assert_eq!(uptime(90_000), "1d 1h");
    }
}
