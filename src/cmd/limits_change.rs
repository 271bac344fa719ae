//! `limits:set APP NAME=VALUE... [--env E]` and `limits:unset APP NAME... [--env E]`
//! (owner): the app's disk quota (for all its environments: refused with `--env`) (`disk=2G`: a push that would take the app past it is refused) and request limits
//! enforced by the router per environment (`rate=N[/WINDOW]` requests to it, `client-rate=N[/WINDOW]`
//! from one client address, a window being `s`, `m`, `h`, `d` or e.g. `10m`; `conns=N`
//! requests in progress). Every value is checked before anything changes.

use super::{CmdError, CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::names::{AppName, EnvName};

/// Set limits: disk=2G rate=100 client-rate=10/m conns=50 (owner)
#[derive(Debug, clap::Args)]
pub struct LimitsSet {
    app: AppName,
    #[arg(value_name = "NAME=VALUE", required = true)]
    pairs: Vec<String>,
    /// The environment (default: production)
    #[arg(long, default_value = "production")]
    env: EnvName,
}

/// Remove limits: disk rate client-rate conns (owner)
#[derive(Debug, clap::Args)]
pub struct LimitsUnset {
    app: AppName,
    #[arg(value_name = "NAME", required = true)]
    names: Vec<String>,
    /// The environment (default: production)
    #[arg(long, default_value = "production")]
    env: EnvName,
}

impl Command for LimitsSet {
    const NEED: Need = Need::App(AppRole::Owner);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let set = parse_pairs(&self.pairs)?;
        let l = cx.core.change_limits(&self.app, &self.env, &set, &[])?;
        Ok(shown(&self.app, &self.env, &l))
    }
}

impl Command for LimitsUnset {
    const NEED: Need = Need::App(AppRole::Owner);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let l = cx
            .core
            .change_limits(&self.app, &self.env, &[], &self.names)?;
        Ok(shown(&self.app, &self.env, &l))
    }
}

/// `disk=2G rate=100` into (name, value); the core checks names and values.
fn parse_pairs(pairs: &[String]) -> Result<Vec<(String, String)>, CmdError> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
            _ => Err(CmdError::Invalid(format!(
                "'{}' is not NAME=VALUE (e.g. disk=2G, rate=100/s)",
                p.chars()
                    .filter(|c| !c.is_control())
                    .take(40)
                    .collect::<String>()
            ))),
        })
        .collect()
}

/// What `limits:set` and `limits:unset` answer: the environment's limits after the change.
fn shown(app: &AppName, env: &EnvName, l: &crate::controller::view::AppLimits) -> Done {
    format!("limits of {app} in {env}:\n{}", super::limits::render(l)).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_split_at_the_first_equals() {
        let p = parse_pairs(&["disk=2G".into(), "rate=10/m".into(), "x==1".into()]).unwrap();
        assert_eq!(
            p,
            [
                ("disk".into(), "2G".into()),
                ("rate".into(), "10/m".into()),
                ("x".into(), "=1".into())
            ]
        );
        for bad in ["disk", "=3", ""] {
            assert!(parse_pairs(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
