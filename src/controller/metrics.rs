//! The Prometheus text exposition (format 0.0.4) of the router, build, deploy and node
//! figures, written by hand: counters from the router's atomics, the rest from the store.

use std::fmt::Write as _;

use super::{Core, CoreError};
use crate::router::LATENCY_BOUNDS_MS;

/// A label value, escaped as the format wants (`\`, `"` and newlines).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

impl Core {
    /// Every figure, as one scrape.
    pub fn metrics(&self) -> Result<String, CoreError> {
        let mut out = String::with_capacity(4096);
        self.router_metrics(&mut out);
        let (builds, deploys) = self.store.pipeline_counts()?;
        head(
            &mut out,
            "magrathea_builds_total",
            "counter",
            "Builds by status.",
        );
        for (status, n) in builds {
            let _ = writeln!(
                out,
                "magrathea_builds_total{{status=\"{}\"}} {n}",
                label(&status)
            );
        }
        head(
            &mut out,
            "magrathea_deploys_total",
            "counter",
            "Deploys by status.",
        );
        for (status, n) in deploys {
            let _ = writeln!(
                out,
                "magrathea_deploys_total{{status=\"{}\"}} {n}",
                label(&status)
            );
        }
        let nodes = self.all_nodes()?;
        let live = self.store.all_live()?;
        head(
            &mut out,
            "magrathea_nodes",
            "gauge",
            "Nodes known to the controller.",
        );
        let _ = writeln!(out, "magrathea_nodes {}", nodes.len());
        head(
            &mut out,
            "magrathea_node_environments",
            "gauge",
            "App environments live on each node.",
        );
        for n in &nodes {
            let count = live.iter().filter(|l| l.nodes.contains(&n.name)).count();
            let _ = writeln!(
                out,
                "magrathea_node_environments{{node=\"{}\"}} {count}",
                label(&n.name)
            );
        }
        head(&mut out, "magrathea_apps", "gauge", "Apps.");
        let _ = writeln!(out, "magrathea_apps {}", self.store.count_apps()?);
        head(
            &mut out,
            "magrathea_live_environments",
            "gauge",
            "App environments live.",
        );
        let _ = writeln!(out, "magrathea_live_environments {}", live.len());
        Ok(out)
    }

    fn router_metrics(&self, out: &mut String) {
        let traffic = self.router.traffic();
        let (unrouted, dropped) = self.router.unrouted();
        let lbl = |app: &str, env: &str| format!("app=\"{}\",env=\"{}\"", label(app), label(env));
        head(
            out,
            "magrathea_router_requests_total",
            "counter",
            "Requests by app, environment and status class.",
        );
        for (app, env, s) in &traffic {
            for (i, n) in s.status.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "magrathea_router_requests_total{{{},class=\"{}xx\"}} {n}",
                    lbl(app, env),
                    i + 1
                );
            }
        }
        head(
            out,
            "magrathea_router_request_bytes_total",
            "counter",
            "Request body bytes read from clients.",
        );
        for (app, env, s) in &traffic {
            let _ = writeln!(
                out,
                "magrathea_router_request_bytes_total{{{}}} {}",
                lbl(app, env),
                s.bytes_in
            );
        }
        head(
            out,
            "magrathea_router_response_bytes_total",
            "counter",
            "Response body bytes sent to clients.",
        );
        for (app, env, s) in &traffic {
            let _ = writeln!(
                out,
                "magrathea_router_response_bytes_total{{{}}} {}",
                lbl(app, env),
                s.bytes_out
            );
        }
        let name = "magrathea_router_request_duration_seconds";
        head(out, name, "histogram", "Time to the response head.");
        for (app, env, s) in &traffic {
            let l = lbl(app, env);
            let mut cumulative = 0;
            for (i, n) in s.latency.iter().enumerate() {
                cumulative += n;
                let le = LATENCY_BOUNDS_MS
                    .get(i)
                    .map_or("+Inf".to_string(), |ms| format!("{}", *ms as f64 / 1000.0));
                let _ = writeln!(out, "{name}_bucket{{{l},le=\"{le}\"}} {cumulative}");
            }
            let _ = writeln!(out, "{name}_sum{{{l}}} {}", s.latency_us as f64 / 1e6);
            let _ = writeln!(out, "{name}_count{{{l}}} {cumulative}");
        }
        head(
            out,
            "magrathea_router_unrouted_requests_total",
            "counter",
            "Requests for hosts no app answers to.",
        );
        let _ = writeln!(out, "magrathea_router_unrouted_requests_total {unrouted}");
        head(
            out,
            "magrathea_router_access_log_dropped_total",
            "counter",
            "Access log lines dropped because the writer fell behind.",
        );
        let _ = writeln!(out, "magrathea_router_access_log_dropped_total {dropped}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn labels_are_escaped() {
        assert_eq!(super::label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
