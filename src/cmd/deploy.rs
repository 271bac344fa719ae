//! deploy, rollback (deployer).

use std::sync::Arc;

use super::{releases::parse_version, CmdError, CmdResult};
use crate::controller::Core;
use crate::deploy::{self, envs, RolloutOptions};
use crate::sink::Sink;

pub async fn deploy(
    core: &Arc<Core>,
    who: &str,
    app: &str,
    version: &str,
    env: &str,
    out: &mut Sink,
) -> CmdResult {
    crate::names::check("environment", env)?;
    let v = parse_version(version)?;
    let release = core
        .store()
        .release(app, v)?
        .ok_or_else(|| CmdError::Invalid(format!("'{app}' has no release v{v}")))?;
    let target = envs::target_of_release(&core.data(), &release, env);
    deploy::rollout(core, &release, &target, who, out, RolloutOptions::default())
        .await
        .map_err(CmdError::Invalid)?;
    Ok(format!("v{v} of {app} is live in {env}\n"))
}

pub async fn rollback(
    core: &Arc<Core>,
    who: &str,
    app: &str,
    version: Option<&str>,
    env: &str,
    with_data: bool,
    out: &mut Sink,
) -> CmdResult {
    crate::names::check("environment", env)?;
    let live = core
        .store()
        .live(app, env)?
        .ok_or_else(|| CmdError::Invalid(format!("nothing of '{app}' is live in {env}")))?;
    let v = match version {
        Some(v) => parse_version(v)?,
        None => live.previous.ok_or_else(|| {
            CmdError::Invalid(format!(
                "no previous release of '{app}' in {env} to roll back to"
            ))
        })?,
    };
    if v == live.version {
        return Err(CmdError::Invalid(format!("v{v} is already live in {env}")));
    }
    let release = core
        .store()
        .release(app, v)?
        .ok_or_else(|| CmdError::Invalid(format!("'{app}' has no release v{v} (pruned?)")))?;
    out.line(format!(
        "-----> Rolling {app} back from v{} to v{v} in {env}",
        live.version
    ))
    .await;
    let target = envs::target_of_release(&core.data(), &release, env);
    // The config that went live with that release comes back with it.
    let config = match core.store().release_config(app, v, env)? {
        Some(blob) => Some(core.open_map(&blob)?),
        None => None,
    };
    let opts = RolloutOptions {
        restore_data_from: with_data.then_some(live.version),
        config,
        skip_release_phase: true,
        background_tail: true,
        ..Default::default()
    };
    deploy::rollout(core, &release, &target, who, out, opts)
        .await
        .map_err(CmdError::Invalid)?;
    Ok(format!("rolled back: v{v} of {app} is live in {env}\n"))
}
