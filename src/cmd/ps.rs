//! ps (viewer); scale, restart, stop, start (owner). Every change to what runs is a rollout of
//! the live release (see the core's formation use cases).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{table, CmdError, CmdResult};
use crate::controller::view::{Count, Manifest, Scaled};
use crate::controller::{check_type, counts_text, Core, Sink, MAX_PER_TYPE};

fn uptime(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

pub async fn ps(core: &Arc<Core>, app: &str, env: &str, json: bool) -> CmdResult {
    let procs = core.processes(app, env).await?;
    let rows = procs.rows;
    if json {
        return Ok(table::json(&rows));
    }
    let (counts, nodes) = core.formation(app, env).await?;
    let mut out = String::new();
    if rows.is_empty() {
        let why = if core.is_stopped(app, env)? {
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
        out.push_str(&format!("formation: {}\n", formation_line(&counts, nodes)));
    }
    for u in procs.unreachable {
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

pub async fn scale(
    core: &Arc<Core>,
    who: &str,
    app: &str,
    pairs: &[String],
    env: &str,
    out: &mut Sink,
) -> CmdResult {
    crate::names::check("environment", env)?;
    let counts = parse_counts(pairs, None)?;
    let what = counts_text(&counts);
    Ok(match core.scale(who, app, env, counts, out).await? {
        Scaled::Remembered => format!(
            "{app} in {env} will run {what} (nothing is deployed yet; the first deploy starts them)\n"
        ),
        Scaled::Unchanged => "no change; nothing restarted\n".into(),
        Scaled::Rolled => format!("{app} in {env} now runs {what}\n"),
    })
}

pub async fn restart(
    core: &Arc<Core>,
    who: &str,
    app: &str,
    ptype: Option<&str>,
    env: &str,
    out: &mut Sink,
) -> CmdResult {
    core.restart(who, app, env, ptype, out).await?;
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
    if !core.set_stopped(who, app, env, stop, out).await? {
        let state = if stop { "stopped" } else { "running" };
        return Ok(format!(
            "{app} is already {state} in {env}; nothing changed\n"
        ));
    }
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
