//! `scale APP TYPE=COUNT... [--env E]` (owner): process counts, placed by free capacity and
//! rolled out (see `Core::scale`).

use std::collections::BTreeMap;

use super::{CmdError, CmdResult, Command, Ctx, Done, Mode, Need};
use crate::access::AppRole;
use crate::controller::view::Scaled;
use crate::controller::{counts_text, MAX_PER_TYPE};
use crate::names::{AppName, EnvName, ProcessType};

/// Set process counts (web=3 worker=1), placed by free capacity, rolled out (owner)
#[derive(Debug, clap::Args)]
pub struct Scale {
    app: AppName,
    #[arg(value_name = "TYPE=COUNT", required = true)]
    counts: Vec<String>,
    #[arg(long, default_value = "production")]
    env: EnvName,
}

impl Command for Scale {
    const NEED: Need = Need::App(AppRole::Owner);
    const MODE: Mode = Mode::Streams;

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let (app, env) = (&self.app, &self.env);
        let counts = parse_counts(&self.counts)?;
        let what = counts_text(&counts);
        Ok(match cx.core.scale(&cx.who.name, app, env, counts, cx.out).await? {
            Scaled::Remembered => format!(
                "{app} in {env} will run {what} (nothing is deployed yet; the first deploy starts them)\n"
            ),
            Scaled::Unchanged => "no change; nothing restarted\n".into(),
            Scaled::Rolled => format!("{app} in {env} now runs {what}\n"),
        }
        .into())
    }
}

/// `web=3 worker=1` into counts; the core checks the types against the live release's
/// Procfile (there is none before the first deploy).
fn parse_counts(pairs: &[String]) -> Result<BTreeMap<String, u32>, CmdError> {
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
        let t: ProcessType = t.parse()?;
        counts.insert(t.to_string(), n);
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::check_type;
    use crate::controller::view::Manifest;

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
            build_dir: None,
        };
        let c = parse_counts(&["web=3".into(), "worker=0".into()]).unwrap();
        assert_eq!(c, BTreeMap::from([("web".into(), 3), ("worker".into(), 0)]));
        for bad in ["web", "web=-1", "web=x", "web=101", "../x=1", "=1"] {
            assert!(parse_counts(&[bad.into()]).is_err(), "{bad}");
        }
        // Any well-formed type parses; the live release's Procfile decides.
        assert!(parse_counts(&["clock=1".into()]).is_ok());
        assert!(check_type("clock", &m).is_err());
        assert!(check_type("worker", &m).is_ok());
    }
}
