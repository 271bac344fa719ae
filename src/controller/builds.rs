//! Builds as the front ends see them: the list, a build's log, cancelling the running one,
//! emptying the build cache.

use super::{Core, CoreError};
use crate::store::BuildRow;

impl Core {
    pub fn builds(&self, app: &str, n: i64) -> Result<Vec<BuildRow>, CoreError> {
        Ok(self.store.list_builds(app, n)?)
    }

    /// A build's log (default: the latest build's), its tail when it is huge.
    pub fn build_log(&self, app: &str, id: Option<i64>) -> Result<String, CoreError> {
        let build = match id {
            Some(id) => self.store.build(app, id)?,
            None => self.store.list_builds(app, 1)?.into_iter().next(),
        }
        .ok_or_else(|| CoreError::Invalid(format!("'{app}' has no such build")))?;
        let path = self
            .data
            .logs()
            .join("builds")
            .join(app)
            .join(format!("{}.log", build.id));
        let text = std::fs::read(&path)
            .map_err(|_| CoreError::Invalid(format!("build {} has no log", build.id)))?;
        // Keep the tail of huge logs.
        let start = text.len().saturating_sub(8 << 20);
        Ok(String::from_utf8_lossy(&text[start..]).into_owned())
    }

    /// Cancel the app's running build: its id.
    pub fn cancel_build(&self, app: &str) -> Result<i64, CoreError> {
        self.queue
            .cancel(app)
            .ok_or_else(|| CoreError::Invalid(format!("no build of '{app}' is running")))
    }

    /// Empty the app's build cache (its next build fetches its buildpacks again): the
    /// bytes freed.
    pub fn purge_build_cache(&self, app: &str) -> Result<u64, CoreError> {
        if self.queue.waiting(app) > 0 {
            return Err(CoreError::Invalid(format!(
                "a build of '{app}' is running or queued; wait for it or `builds:cancel {app}`"
            )));
        }
        crate::build::purge_cache(&self.data, app)
            .map_err(|e| CoreError::Invalid(format!("cannot purge the build cache: {e}")))
    }
}
