//! App lifecycle: the list a key sees, create, and destroy with every node cleaned first.

use super::{init_repo, Core, CoreError};
use crate::access::Identity;
use crate::node::proto::PurgeReq;
use crate::sink::Sink;
use crate::store::AppRow;

impl Core {
    /// The apps `who` can see, with the role it has on each ("" for an admin's).
    pub fn apps(&self, who: &Identity) -> Result<Vec<(AppRow, String)>, CoreError> {
        Ok(self.store.list_apps(who)?)
    }

    pub fn app(&self, name: &str) -> Result<AppRow, CoreError> {
        self.store
            .app(name)?
            .ok_or_else(|| CoreError::Invalid(format!("app '{name}' does not exist")))
    }

    pub fn create_app(&self, who: &Identity, app: &str) -> Result<(), CoreError> {
        crate::names::check("app", app).map_err(|e| CoreError::Other(e.into()))?;
        // The repository first: an app row never points at a missing repo.
        if !self.data.repo(app).exists() {
            init_repo(&self.data, app)?;
        }
        self.store.create_app(app, &who.name)?;
        Ok(())
    }

    /// The uid an app's builds and processes run as (see `isolation`).
    pub fn app_uid(&self, app: &str) -> Result<u32, CoreError> {
        match self.store.app(app)? {
            Some(a) => Ok(a.uid),
            None => Err(CoreError::NotFound(format!("app '{app}' does not exist"))),
        }
    }

    /// Deletes the app from the store (one transaction) and everything of it under the data
    /// dir: releases, build cache, build logs, event log, repository.
    fn destroy_app(&self, app: &str) -> Result<(), CoreError> {
        let policies = self.policy_routes(app)?;
        self.store.destroy_app(app)?;
        for key in policies {
            self.router.set_policy(&key, Default::default());
        }
        // Its domains and certificates went with its rows.
        self.refresh_routing()?;
        let _ = std::fs::remove_dir_all(self.data.releases(app));
        let _ = std::fs::remove_dir_all(self.data.cache(app));
        let _ = std::fs::remove_dir_all(self.data.logs().join("builds").join(app));
        // Its event log and its access log (see usage.rs).
        for name in [app.to_string(), super::usage::access_log(app)] {
            for f in crate::eventlog::files(&self.data.logs(), &name) {
                let _ = std::fs::remove_file(f);
            }
        }
        let repo = self.data.repo(app);
        if repo.exists() {
            // Move aside first so a crash mid-delete never leaves a half repo under the name.
            let trash = self
                .data
                .repos()
                .join(format!(".trash-{app}-{}", crate::keys::random_hex(4)));
            std::fs::rename(&repo, &trash).map_err(anyhow::Error::from)?;
            let _ = std::fs::remove_dir_all(&trash);
        }
        Ok(())
    }

    /// Stops the app everywhere (its services first, then routes, then every process of
    /// every environment on every node) and removes everything of it on the nodes
    /// (releases, data, snapshots, process logs, its services' containers and data) and on
    /// the controller (repository, releases, build cache and logs, event log, its services'
    /// backups, store rows), so a later app of the same name starts from nothing. A node
    /// that cannot be cleaned stops the destroy before anything on the controller is
    /// deleted, so it can be retried.
    pub async fn destroy_app_everywhere(
        &self,
        name: &str,
        keep_data: bool,
        out: &mut Sink,
    ) -> Result<(), CoreError> {
        if self.store.app(name)?.is_none() {
            return Err(CoreError::Invalid(format!("app '{name}' does not exist")));
        }
        let envs = self.live_envs(name)?;
        // Its own services (declared in its magrathea.yml) go with their data and backups,
        // its links to others are dropped; refused, with nothing changed, while another app
        // uses one of its services.
        self.destroy_app_services(name, keep_data, out).await?;
        let mut held = vec![];
        for env in &envs {
            held.push(self.deploy_lock(name, env).lock_owned().await);
        }
        for env in &envs {
            self.router.remove_app(&crate::deploy::route_key(name, env));
        }
        // A later app of the same name starts with no figures (and, once the store forgot
        // this one, no policy).
        self.forget_traffic(name, &envs);
        // Every node, not only those it is live on: an environment moved elsewhere, or a
        // failed first deploy, can have left releases or data behind.
        let uid = self.app_uid(name)?;
        let req = PurgeReq {
            app: name.to_string(),
            keep_data,
            uid: Some(uid),
        };
        for n in self.all_nodes()? {
            let r = self.node_client(&n).send(&req).await;
            match r {
                Ok(v) => {
                    if !v.purged.is_empty() {
                        out.line(format!("-----> {}: {name} stopped and removed", n.name))
                            .await;
                    }
                }
                Err(e) => {
                    return Err(CoreError::Invalid(format!(
                        "node {}: {e}; '{name}' was not destroyed (its routes are off; retry when the node is back, or nodes:remove it)",
                        n.name
                    )))
                }
            }
        }
        self.destroy_app(name)?;
        // Its builds' network (its uid is never given out again, so neither is the network).
        if let Ok(d) = crate::docker::Docker::connect().await {
            crate::isolation::remove_network(d.raw(), &self.instance, uid).await;
        }
        drop(held);
        Ok(())
    }
}
