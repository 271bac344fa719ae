//! `limits:set APP NAME=VALUE...` and `limits:unset APP NAME...` (owner): the app's disk
//! quota (`disk=2G`: a push that would take the app past it is refused) and request limits
//! enforced by the router (`rate=N` requests a second to the app, `client-rate=N` from one
//! client address, `conns=N` requests in progress). Every value is checked before any
//! changes.

use super::{CmdError, CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::names::AppName;

/// Set limits: disk=2G rate=100 client-rate=10 conns=50 (owner)
#[derive(Debug, clap::Args)]
pub struct LimitsSet {
    app: AppName,
    #[arg(value_name = "NAME=VALUE", required = true)]
    pairs: Vec<String>,
}

/// Remove limits: disk rate client-rate conns (owner)
#[derive(Debug, clap::Args)]
pub struct LimitsUnset {
    app: AppName,
    #[arg(value_name = "NAME", required = true)]
    names: Vec<String>,
}

impl Command for LimitsSet {
    const NEED: Need = Need::App(AppRole::Owner);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let set = parse_pairs(&self.pairs)?;
        let l = cx.core.change_limits(&self.app, &set, &[])?;
        Ok(format!("limits of {}:\n{}", self.app, super::limits::render(&l)).into())
    }
}

impl Command for LimitsUnset {
    const NEED: Need = Need::App(AppRole::Owner);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let l = cx.core.change_limits(&self.app, &[], &self.names)?;
        Ok(format!("limits of {}:\n{}", self.app, super::limits::render(&l)).into())
    }
}

/// `disk=2G rate=100` into (name, value): sizes for `disk` (K, M, G, T; a bare number is
/// MiB), whole numbers for the rest. The core checks names and ranges.
fn parse_pairs(pairs: &[String]) -> Result<Vec<(String, u64)>, CmdError> {
    let shown = |s: &str| {
        s.chars()
            .filter(|c| !c.is_control())
            .take(40)
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|p| {
            let (name, value) = p.split_once('=').ok_or_else(|| {
                CmdError::Invalid(format!("'{}' is not NAME=VALUE (e.g. disk=2G)", shown(p)))
            })?;
            let v = if name == "disk" {
                crate::appconfig::parse_size(value).map(|b| b as u64)
            } else {
                value.parse::<u64>().ok()
            };
            let v = v.ok_or_else(|| {
                CmdError::Invalid(format!(
                    "{}: '{}' is not a {}",
                    shown(name),
                    shown(value),
                    if name == "disk" {
                        "size (e.g. 500M, 2G)"
                    } else {
                        "whole number"
                    }
                ))
            })?;
            Ok((name.to_string(), v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_parse_sizes_and_numbers() {
        let p = parse_pairs(&["disk=2G".into(), "rate=10".into(), "disk=100K".into()]).unwrap();
        assert_eq!(
            p,
            [
                ("disk".into(), 2 << 30),
                ("rate".into(), 10),
                ("disk".into(), 100 << 10)
            ]
        );
        for bad in [
            "disk",
            "disk=",
            "disk=-1G",
            "disk=lots",
            "rate=1.5",
            "rate=-3",
            "=3",
        ] {
            // "=3" parses here; the core refuses the empty name.
            if bad != "=3" {
                assert!(parse_pairs(&[bad.into()]).is_err(), "{bad}");
            }
        }
    }
}
