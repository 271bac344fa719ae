//! `routing:set APP [--env E] [--force-https on|off] [--hsts on|off|SECS] [--max-body
//! SIZE|off]` (owner): how the router serves an app's environment. What is not given stays.

use super::{CmdError, CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::controller::view::RouteSettings;
use crate::names::{AppName, EnvName};

/// HSTS max-age for `--hsts on`: a year, as browsers' preload lists expect.
const HSTS_ON: u32 = 31_536_000;

/// Routing of an app: HTTPS redirect, HSTS, request body limit (owner)
#[derive(Debug, clap::Args)]
pub struct RoutingSet {
    app: AppName,
    #[arg(long, default_value = "production")]
    env: EnvName,
    /// Redirect plain HTTP requests to HTTPS (308)
    #[arg(long, value_name = "on|off", value_parser = ["on", "off"])]
    force_https: Option<String>,
    /// Strict-Transport-Security on HTTPS answers: on (a year), off, or a max-age in seconds
    #[arg(long, value_name = "on|off|SECS")]
    hsts: Option<String>,
    /// Largest request body (e.g. 10M, 512K; a bare number is MiB), or off; past it: 413
    #[arg(long, value_name = "SIZE|off")]
    max_body: Option<String>,
}

impl Command for RoutingSet {
    const NEED: Need = Need::App(AppRole::Owner);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let (app, env) = (&self.app, &self.env);
        let mut s = cx.core.route_settings(app, env)?;
        if let Some(v) = &self.force_https {
            s.force_https = v == "on";
        }
        if let Some(v) = &self.hsts {
            s.hsts = match v.as_str() {
                "on" => HSTS_ON,
                "off" | "0" => 0,
                n => n.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    CmdError::Invalid(format!(
                        "--hsts takes on, off or a max-age in seconds, not '{}'",
                        n.chars()
                            .filter(|c| !c.is_control())
                            .take(20)
                            .collect::<String>()
                    ))
                })?,
            };
        }
        if let Some(v) = &self.max_body {
            s.max_body = match v.as_str() {
                "off" | "0" => 0,
                n => crate::appconfig::parse_size(n)
                    .map(|b| b as u64)
                    .ok_or_else(|| {
                        CmdError::Invalid(format!(
                            "--max-body takes a size (10M, 512K) or off, not '{}'",
                            n.chars()
                                .filter(|c| !c.is_control())
                                .take(20)
                                .collect::<String>()
                        ))
                    })?,
            };
        }
        cx.core.set_route_settings(app, env, &s)?;
        Ok(format!("{app} in {env}: {}\n", describe(&s)).into())
    }
}

/// One line: `force-https on, hsts max-age=300, max-body 10.0 MiB`.
pub(super) fn describe(s: &RouteSettings) -> String {
    format!(
        "force-https {}, hsts {}, max-body {}",
        if s.force_https { "on" } else { "off" },
        match s.hsts {
            0 => "off".to_string(),
            n => format!("max-age={n}"),
        },
        match s.max_body {
            0 => "off".to_string(),
            n => crate::controller::view::human(n),
        }
    )
}
