//! `usage APP [--env E] [--since 24h] [--json]` (viewer): the app's traffic as the router
//! counted it (requests by status class, body bytes in and out, latency) per environment,
//! and the disk it uses on the controller.

use super::{table, CmdError, CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::controller::view::{human, Sample, Usage};
use crate::names::{AppName, EnvName};
use crate::timefmt::utc;

/// Traffic (requests, bytes, latency) and disk use (viewer)
#[derive(Debug, clap::Args)]
pub struct UsageCmd {
    app: AppName,
    /// Only this environment (default: every one)
    #[arg(long)]
    env: Option<EnvName>,
    /// How far back (30m, 24h, 7d) or since an RFC 3339 time
    #[arg(long, default_value = "24h")]
    since: String,
    #[arg(long)]
    json: bool,
}

impl Command for UsageCmd {
    const NEED: Need = Need::App(AppRole::Viewer);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let since = since_secs(&self.since, crate::timefmt::now())?;
        let mut u = cx.core.usage(&self.app, self.env.as_deref(), since)?;
        u.disk = cx.core.disk_use_everywhere(&self.app).await?;
        if self.json {
            return Ok(table::json(&json(&u)).into());
        }
        Ok(render(&u).into())
    }
}

/// `--since` as unix seconds.
pub(crate) fn since_secs(s: &str, now: i64) -> Result<i64, CmdError> {
    let t = super::logs::parse_since(s, now).map_err(CmdError::Invalid)?;
    crate::timefmt::parse_rfc3339(&t)
        .map(|(secs, _)| secs)
        .ok_or_else(|| CmdError::Invalid(format!("--since: cannot read {t}")))
}

fn figures(s: &Sample) -> serde_json::Value {
    serde_json::json!({
        "requests": s.requests,
        "bytes_in": s.bytes_in,
        "bytes_out": s.bytes_out,
        "status": {
            "1xx": s.status[0], "2xx": s.status[1], "3xx": s.status[2],
            "4xx": s.status[3], "5xx": s.status[4],
        },
        "latency_ms": {
            "p50": s.quantile_ms(0.5), "p95": s.quantile_ms(0.95), "p99": s.quantile_ms(0.99),
            "mean": (s.requests > 0).then(|| s.latency_us as f64 / s.requests as f64 / 1000.0),
            "buckets_le_ms": crate::controller::view::LATENCY_BOUNDS_MS,
            "buckets": s.latency,
        },
    })
}

fn json(u: &Usage) -> serde_json::Value {
    let mut v = figures(&u.total);
    v["app"] = u.app.clone().into();
    v["since"] = u.since.into();
    v["envs"] = u
        .envs
        .iter()
        .map(|(env, s)| {
            let mut e = figures(s);
            e["env"] = env.clone().into();
            e
        })
        .collect();
    v["disk"] = serde_json::to_value(&u.disk).unwrap_or_default();
    v
}

fn latency(s: &Sample) -> String {
    let q = |q: f64| match s.quantile_ms(q) {
        Some(ms) => format!("<{ms}ms"),
        None if s.requests == 0 => "-".into(),
        None => ">10s".into(),
    };
    format!("{} / {}", q(0.5), q(0.99))
}

fn render(u: &Usage) -> String {
    let mut out = format!("traffic of {} since {}\n", u.app, utc(u.since));
    let mut rows: Vec<Vec<String>> = u.envs.iter().map(|(env, s)| row(env, s)).collect();
    if u.envs.len() > 1 {
        rows.push(row("total", &u.total));
    }
    if rows.is_empty() {
        out += "no requests\n";
    } else {
        out += &table::render(
            &[
                "ENV", "REQUESTS", "1XX", "2XX", "3XX", "4XX", "5XX", "IN", "OUT", "P50/P99",
            ],
            &rows,
        );
    }
    let d = &u.disk;
    out += &format!("disk: {} ({})\n", human(d.total), d.parts());
    out
}

fn row(env: &str, s: &Sample) -> Vec<String> {
    let mut r = vec![env.to_string(), s.requests.to_string()];
    r.extend(s.status.iter().map(u64::to_string));
    r.push(s.bytes_in.to_string());
    r.push(s.bytes_out.to_string());
    r.push(latency(s));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_times_only() {
        assert_eq!(since_secs("24h", 100_000).unwrap(), 100_000 - 86_400);
        assert_eq!(
            since_secs("2026-01-01T00:00:00Z", 0).unwrap(),
            1_767_225_600
        );
        for bad in ["", "-1h", "1y", "9999999999999d", "yesterday"] {
            assert!(since_secs(bad, 100_000).is_err(), "{bad}");
        }
    }
}
