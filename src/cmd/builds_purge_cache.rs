//! `builds:purge-cache APP` (deployer).

use super::{CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::controller::view::human;
use crate::names::AppName;

/// Empty an app's build cache; its next build fetches its buildpacks again (deployer)
#[derive(Debug, clap::Args)]
pub struct BuildsPurgeCache {
    app: AppName,
}

impl Command for BuildsPurgeCache {
    const NEED: Need = Need::App(AppRole::Deployer);

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let app = &self.app;
        let freed = cx.core.purge_build_cache(app)?;
        Ok(format!(
            "purged the build cache of '{app}' ({}); its next build fetches its buildpacks again\n",
            human(freed)
        )
        .into())
    }
}
