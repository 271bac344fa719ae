//! deploy, rollback (deployer).

use std::sync::Arc;

use super::{releases::parse_version, CmdResult};
use crate::controller::{Core, Sink};

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
    core.deploy(who, app, v, env, out).await?;
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
    let version = version.map(parse_version).transpose()?;
    let v = core
        .rollback(who, app, version, env, with_data, out)
        .await?;
    Ok(format!("rolled back: v{v} of {app} is live in {env}\n"))
}
