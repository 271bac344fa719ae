//! Releases as the front ends see them: the live release of an app's environment, the
//! release list, and the use cases that make a release live: deploy, rollback, and a config
//! change (config as a new release, rolled out like a deploy).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Core, CoreError};
use crate::deploy::{self, envs, RolloutOptions};
use crate::release::Manifest;
use crate::sink::Sink;
use crate::store::{LiveRow, ReleaseRow};

/// An environment's live release: what is live where, and the release itself.
pub struct Live {
    pub live: LiveRow,
    pub release: ReleaseRow,
}

impl Live {
    /// The release's manifest (kept as JSON in the store).
    pub fn manifest(&self) -> Result<Manifest, CoreError> {
        serde_json::from_str(&self.release.manifest).map_err(|e| {
            CoreError::Invalid(format!("bad manifest of v{}: {e}", self.release.version))
        })
    }
}

/// A release and the environments it is live in.
pub struct Listed {
    pub release: ReleaseRow,
    pub live_in: Vec<String>,
}

/// What a config change did.
pub enum ConfigOutcome {
    Unchanged,
    /// Stored, not rolled out (nothing live, or `--no-restart`): the changed keys.
    Stored(String),
    /// Live as this new release.
    Released(i64),
}

/// What `config:set` / `config:unset` asks for, checked and decoded by the front end.
pub struct ConfigChange {
    pub set: BTreeMap<String, String>,
    pub unset: Vec<String>,
    /// Store only; the next deploy picks it up.
    pub no_restart: bool,
}

impl Core {
    /// The one "what is live" query: nothing live is an error that says so.
    pub fn live_release(&self, app: &str, env: &str) -> Result<Live, CoreError> {
        crate::names::check("environment", env)?;
        let live = self
            .store
            .live(app, env)?
            .ok_or_else(|| CoreError::Invalid(format!("nothing of '{app}' is live in {env}")))?;
        let release = self
            .store
            .release(app, live.version)?
            .ok_or_else(|| CoreError::Invalid(format!("live release v{} is gone", live.version)))?;
        Ok(Live { live, release })
    }

    /// Whether anything of the app is live in `env` (nothing is before the first deploy).
    pub fn is_live(&self, app: &str, env: &str) -> Result<bool, CoreError> {
        Ok(self.store.live(app, env)?.is_some())
    }

    /// Whether the environment was stopped (`stop`).
    pub fn is_stopped(&self, app: &str, env: &str) -> Result<bool, CoreError> {
        Ok(self.store.stopped(app, env)?)
    }

    /// The environments an app is live in.
    pub fn live_envs(&self, app: &str) -> Result<Vec<String>, CoreError> {
        Ok(self
            .store
            .all_live()?
            .into_iter()
            .filter(|l| l.app == app)
            .map(|l| l.env)
            .collect())
    }

    pub fn releases(&self, app: &str) -> Result<Vec<Listed>, CoreError> {
        let rows = self.store.list_releases(app)?;
        let live = self.store.all_live()?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let live_in = live
                    .iter()
                    .filter(|l| l.app == app && l.version == r.version)
                    .map(|l| l.env.clone())
                    .collect();
                Listed {
                    release: r,
                    live_in,
                }
            })
            .collect())
    }

    pub fn release(&self, app: &str, version: i64) -> Result<ReleaseRow, CoreError> {
        self.store
            .release(app, version)?
            .ok_or_else(|| CoreError::Invalid(format!("'{app}' has no release v{version}")))
    }

    /// Deploy an existing release to an environment.
    pub async fn deploy(
        self: &Arc<Self>,
        who: &str,
        app: &str,
        version: i64,
        env: &str,
        out: &mut Sink,
    ) -> Result<(), CoreError> {
        crate::names::check("environment", env)?;
        let release = self.release(app, version)?;
        let target = envs::target_of_release(&self.data, &release, env);
        // Its declared services, created and linked in this environment if missing, as a
        // push does, before its release command.
        let config = envs::config_of_release(&self.data.releases(&release.app).join(&release.file));
        self.declare_services(who, app, env, &config.services.unwrap_or_default(), out)
            .await?;
        self.declare_env(app, env, &release, &target.vars, out)
            .await?;
        deploy::rollout(self, &release, &target, who, out, RolloutOptions::default())
            .await
            .map_err(|e| CoreError::Failed(e.to_string()))
    }

    /// Builds the commit live in `env` again, with today's buildpacks, stack and build config
    /// (Dokku's `ps:rebuild`: after a build-time config var changed, say), as a push of it
    /// would, then deploys the new release there. The version it made.
    pub async fn rebuild(
        self: &Arc<Self>,
        who: &str,
        app: &str,
        env: &str,
        out: &mut Sink,
    ) -> Result<i64, CoreError> {
        crate::names::check("environment", env)?;
        let live = self.store.live(app, env)?.ok_or_else(|| {
            CoreError::Invalid(format!(
                "'{app}' has nothing live in {env} to rebuild; push it first"
            ))
        })?;
        let was = self.release(app, live.version)?;
        out.line(format!(
            "-----> Rebuilding {} ({}, live in {env} as v{})",
            &was.git_sha[..was.git_sha.len().min(7)],
            was.git_ref.trim_start_matches("refs/heads/"),
            was.version
        ))
        .await;
        let req = crate::build::BuildRequest {
            app: app.to_string(),
            object: was.git_sha.clone(),
            git_ref: was.git_ref.clone(),
            key_name: who.to_string(),
            // The commit is in the repository already: nothing is in quarantine.
            quarantine: Default::default(),
            config_vars: Default::default(),
        };
        // Stopped by `builds:cancel`, like a push's build.
        let cancel = tokio_util::sync::CancellationToken::new();
        let new = crate::build::build(self, req, out, cancel)
            .await
            .map_err(|e| CoreError::Failed(e.to_string()))?;
        self.deploy(who, app, new.version, env, out).await?;
        Ok(new.version)
    }

    /// Back to `version`, or to the previous release; its config comes back with it. The
    /// version rolled back to.
    pub async fn rollback(
        self: &Arc<Self>,
        who: &str,
        app: &str,
        version: Option<i64>,
        env: &str,
        with_data: bool,
        out: &mut Sink,
    ) -> Result<i64, CoreError> {
        crate::names::check("environment", env)?;
        let live = self
            .store
            .live(app, env)?
            .ok_or_else(|| CoreError::Invalid(format!("nothing of '{app}' is live in {env}")))?;
        let v = match version {
            Some(v) => v,
            None => live.previous.ok_or_else(|| {
                CoreError::Invalid(format!(
                    "no previous release of '{app}' in {env} to roll back to"
                ))
            })?,
        };
        if v == live.version {
            return Err(CoreError::Invalid(format!("v{v} is already live in {env}")));
        }
        let release = self
            .store
            .release(app, v)?
            .ok_or_else(|| CoreError::Invalid(format!("'{app}' has no release v{v} (pruned?)")))?;
        out.line(format!(
            "-----> Rolling {app} back from v{} to v{v} in {env}",
            live.version
        ))
        .await;
        let target = envs::target_of_release(&self.data, &release, env);
        // The config that went live with that release comes back with it.
        let config = match self.store.release_config(app, v, env)? {
            Some(blob) => Some(self.open_map(&blob)?),
            None => None,
        };
        // The services' data as it was before the live release's release command, like the
        // data dir below (all or nothing, undone if the rollout fails).
        let undos = match with_data {
            true => {
                self.restore_release_backups(app, env, live.version, out)
                    .await?
            }
            false => vec![],
        };
        let opts = RolloutOptions {
            restore_data_from: with_data.then_some(live.version),
            config,
            skip_release_phase: true,
            background_tail: true,
            ..Default::default()
        };
        if let Err(e) = deploy::rollout(self, &release, &target, who, out, opts).await {
            if !undos.is_empty() {
                out.line(" !     the rollback failed; putting the services' data back")
                    .await;
                self.undo_restores(&undos, out).await;
            }
            return Err(CoreError::Failed(e.to_string()));
        }
        self.settle_restores(&undos).await;
        Ok(v)
    }

    /// Apply a config change; when something changed and something is live (and a restart
    /// is wanted), it is a new release (the live one with the new config), rolled out.
    pub async fn change_config(
        self: &Arc<Self>,
        who: &str,
        app: &str,
        env: &str,
        change: ConfigChange,
        out: &mut Sink,
    ) -> Result<ConfigOutcome, CoreError> {
        crate::names::check("environment", env)?;
        let held = self.deploy_lock(app, env).lock_owned().await;
        let before = self.config(app, env)?;
        let mut after = before.clone();
        after.extend(change.set);
        for k in &change.unset {
            after.remove(k);
        }
        if after == before {
            return Ok(ConfigOutcome::Unchanged);
        }
        let changed: Vec<&String> = after
            .keys()
            .chain(before.keys())
            .filter(|k| after.get(*k) != before.get(*k))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let names = changed
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let live = self.store.live(app, env)?;
        let Some(live) = live.filter(|_| !change.no_restart) else {
            self.replace_config(app, env, &after)?;
            return Ok(ConfigOutcome::Stored(names));
        };
        let current = self
            .store
            .release(app, live.version)?
            .ok_or_else(|| CoreError::Invalid(format!("live release v{} is gone", live.version)))?;
        let version = self.store.copy_release(app, live.version, who)?;
        let release = self
            .store
            .release(app, version)?
            .ok_or_else(|| CoreError::Invalid(format!("release v{version} vanished")))?;
        out.line(format!(
            "-----> {names} changed; releasing v{version} of {app} (v{} with new config)",
            current.version
        ))
        .await;
        drop(held);
        let target = envs::target_of_release(&self.data, &release, env);
        let opts = RolloutOptions {
            config: Some(after),
            ..Default::default()
        };
        if let Err(e) = deploy::rollout(self, &release, &target, who, out, opts).await {
            // Nothing went live: the config stays as it was, and the unused release goes.
            let _ = self.store.delete_release(app, version);
            return Err(CoreError::Invalid(format!("config not changed: {e}")));
        }
        Ok(ConfigOutcome::Released(version))
    }
}
