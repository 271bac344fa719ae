//! `ps APP [--env E]` (viewer): the processes of an app's environment, as its nodes report
//! them, its formation, and the services linked into it (name, type, node, state). With
//! `--json`, one array: each process as before (`"kind": "process"`), then each service
//! (`"kind": "service"`, `service`, `type`, `node`, `state`).

use std::collections::BTreeMap;

use super::{table, CmdResult, Command, Ctx, Done, Mode, Need};
use crate::access::AppRole;
use crate::controller::view::Count;
use crate::names::{AppName, EnvName};

/// Processes of an app: node, release, state, uptime, restarts, port; and its services (viewer)
#[derive(Debug, clap::Args)]
pub struct Ps {
    app: AppName,
    #[arg(long, default_value = "production")]
    env: EnvName,
    #[arg(long)]
    json: bool,
}

impl Command for Ps {
    const NEED: Need = Need::App(AppRole::Viewer);
    const MODE: Mode = Mode::Streams;

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let (app, env, json): (&str, &str, bool) = (&self.app, &self.env, self.json);
        let procs = cx.core.processes(app, env).await?;
        let rows = procs.rows;
        let services = cx.core.env_services(app, env).await?;
        if json {
            let mut all: Vec<serde_json::Value> = vec![];
            for r in &rows {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                v["kind"] = "process".into();
                all.push(v);
            }
            for sv in &services {
                all.push(serde_json::json!({
                    "kind": "service", "service": sv.row.name, "type": sv.row.kind,
                    "node": sv.row.node, "state": sv.status.state,
                }));
            }
            return Ok(table::json(&all).into());
        }
        let (counts, nodes) = cx.core.formation(app, env).await?;
        let mut out = String::new();
        if rows.is_empty() {
            let why = if cx.core.is_stopped(app, env)? {
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
        if !services.is_empty() {
            let cells: Vec<Vec<String>> = services
                .iter()
                .map(|sv| {
                    vec![
                        sv.row.name.clone(),
                        sv.row.kind.clone(),
                        sv.row.node.clone(),
                        sv.status.state.clone(),
                    ]
                })
                .collect();
            out.push_str(&table::render(
                &["SERVICE", "TYPE", "NODE", "STATE"],
                &cells,
            ));
        }
        for u in procs.unreachable {
            out.push_str(&format!("warning: {u}\n"));
        }
        Ok(out.into())
    }
}

fn uptime(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formation_lines() {
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
