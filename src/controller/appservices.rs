//! An app's side of its services: the ones `magrathea.yml` declares, created and linked
//! on each environment's first deploy (with their backup schedules); the services `ps`
//! shows beside the processes; the config as owners see it (a service URL's password
//! masked); and what `apps:destroy` does to them (its own destroyed with their data and
//! backups, its links to others dropped). The services themselves: `services.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::services::{kind, ServiceAsk, ServiceView};
use super::{Core, CoreError};
use crate::appconfig::ServiceDecl;
use crate::node::proto::SERVICE_MEMORY;
use crate::sink::Sink;
use crate::store::ServiceRow;

/// Config vars as shown, and the masked ones: (variable, service).
pub type ShownConfig = (BTreeMap<String, String>, Vec<(String, String)>);

impl Core {
    /// `services:` of `magrathea.yml`: each declared service of the app's environment
    /// created and linked if it is not yet (before the release command, so it can migrate),
    /// made again when its memory limit changed, and its backup schedule recorded (the app's services of `env` no longer declared with
    /// one lose theirs). Stored only: the rollout that follows takes the new config.
    pub async fn declare_services(
        self: &Arc<Self>,
        who: &str,
        app: &str,
        env: &str,
        declared: &BTreeMap<String, ServiceDecl>,
        out: &mut Sink,
    ) -> Result<(), CoreError> {
        let min = self.limits.min_backup_interval;
        for (key, decl) in declared {
            if let Some(s) = decl.schedule().filter(|s| s.every < min) {
                return Err(CoreError::Invalid(format!(
                    "services.{key}.backup.every in magrathea.yml: every {} s is more often than this server allows (at least {min} s)",
                    s.every
                )));
            }
        }
        let mut scheduled = vec![];
        for (key, decl) in declared {
            let kind_name = decl.kind();
            let k = kind(kind_name)?;
            let name = declared_name(app, env, key)?;
            let var = match declared.values().filter(|v| v.kind() == kind_name).count() {
                1 => k.var.to_string(),
                _ => format!("{}_URL", key.to_ascii_uppercase().replace('-', "_")),
            };
            let row = match self.store.service(&name)? {
                Some(r) if r.app.as_deref() == Some(app) && r.env == env && r.kind == k.name => r,
                Some(_) => {
                    return Err(CoreError::Invalid(format!(
                        "services.{key} in magrathea.yml: a service named '{name}' exists and is not {app}'s {} for {env}",
                        k.name
                    )))
                }
                None => {
                    let ask = ServiceAsk {
                        kind: k.name,
                        name: &name,
                        env,
                        node: None,
                        app: Some(app),
                        memory: decl.memory(),
                    };
                    self.create_service(who, &ask, out).await?
                }
            };
            if row.memory != decl.memory() {
                // The container is made again with the new limit; its data stays.
                self.store.set_service_memory(&name, decl.memory())?;
                let row = self.store.service(&name)?.unwrap_or(row.clone());
                out.line(format!(
                    "-----> {name}: memory limit {}, restarting it",
                    crate::build::human(row.memory.unwrap_or(SERVICE_MEMORY) as u64)
                ))
                .await;
                self.ensure_service(&row).await?;
            }
            let schedule = decl.schedule().map(|s| (s.every as i64, s.keep as i64));
            if schedule != row.backup_every.zip(row.backup_keep) {
                self.store.set_backup_schedule(&name, schedule)?;
                if let Some((every, keep)) = schedule {
                    out.line(format!(
                        "-----> {name}: a backup every {}, the newest {keep} kept",
                        interval_words(every)
                    ))
                    .await;
                }
            }
            scheduled.push(name.clone());
            let linked = self
                .store
                .links(Some(&name))?
                .iter()
                .any(|l| l.app == app && l.env == env);
            if !linked {
                self.link(who, row, app, Some(env), Some(&var), true, out)
                    .await?;
            }
        }
        for r in self.store.services()? {
            let undeclared = r.app.as_deref() == Some(app) && r.env == env;
            if undeclared && r.backup_every.is_some() && !scheduled.contains(&r.name) {
                self.store.set_backup_schedule(&r.name, None)?;
                out.line(format!("-----> {}: no more scheduled backups", r.name))
                    .await;
            }
        }
        self.wake_backups();
        Ok(())
    }

    /// The services of an app's environment as `ps` shows them beside its processes: the
    /// ones linked into it, with their state on their nodes.
    pub async fn env_services(&self, app: &str, env: &str) -> Result<Vec<ServiceView>, CoreError> {
        let mut out = vec![];
        for l in self.store.links(None)? {
            if l.app != app || l.env != env {
                continue;
            }
            if let Some(row) = self.store.service(&l.service)? {
                out.push(self.service_view(row, false).await?);
            }
        }
        Ok(out)
    }

    /// An environment's config as owners are shown it (`config`, `config:get`): a linked
    /// service's URL with its password masked (`postgres://u:****@host/db`). The names of
    /// the variables masked, with the service each comes from.
    pub fn config_shown(&self, app: &str, env: &str) -> Result<ShownConfig, CoreError> {
        let mut vars = self.config(app, env)?;
        let mut masked = vec![];
        for l in self.store.links(None)? {
            if l.app != app || l.env != env {
                continue;
            }
            if let Some(v) = vars.get_mut(&l.var) {
                *v = mask_password(v);
                masked.push((l.var.clone(), l.service.clone()));
            }
        }
        Ok((vars, masked))
    }

    /// `apps:destroy`: the app's own services (declared in its magrathea.yml) destroyed
    /// with their data and backups, and its links to other services dropped (their logins
    /// removed). Nothing is rolled out: the app is going. Refused, before anything changed,
    /// while one of its services is linked to another app. With `keep_backups`, the
    /// backups' files are moved out of the catalog's reach instead of deleted.
    pub async fn destroy_app_services(
        &self,
        app: &str,
        keep_backups: bool,
        out: &mut Sink,
    ) -> Result<(), CoreError> {
        let owned: Vec<ServiceRow> = self
            .store
            .services()?
            .into_iter()
            .filter(|r| r.app.as_deref() == Some(app))
            .collect();
        let links = self.store.links(None)?;
        for r in &owned {
            if let Some(l) = links.iter().find(|l| l.service == r.name && l.app != app) {
                return Err(CoreError::Invalid(format!(
                    "{app}'s service '{}' is linked to {} ({}); unlink it first (services:unlink {} {} --env {})",
                    r.name, l.app, l.env, l.app, r.name, l.env
                )));
            }
        }
        for l in links.iter().filter(|l| l.app == app) {
            let Some(row) = self.store.service(&l.service)? else {
                continue;
            };
            self.store.remove_link(&l.service, app, &l.env)?;
            if let Ok(uid) = self.app_uid(app) {
                self.unforward(&row, Some(uid)).await;
            }
            if owned.iter().any(|o| o.name == row.name) {
                continue;
            }
            if let Err(e) = self.service_user(&row, &l.user, None).await {
                out.line(format!(" !     the login stays on {}: {e}", row.name))
                    .await;
            }
            let _ = self.ensure_service(&row).await;
            out.line(format!(
                "-----> Unlinked {} from {app} ({})",
                row.name, l.env
            ))
            .await;
        }
        for r in owned {
            self.remove_service(&r, keep_backups).await?;
            out.line(format!(
                "-----> Service {} destroyed with its data and backups{}",
                r.name,
                if keep_backups {
                    " (backups archived)"
                } else {
                    ""
                }
            ))
            .await;
        }
        Ok(())
    }
}

/// `postgres://user:secret@host:5432/db` as `postgres://user:****@host:5432/db`.
pub fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((auth, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:****@{host}"),
        None => format!("{scheme}://****@{host}"),
    }
}

/// `86400` as `24h`, `90` as `90s`.
pub fn interval_words(secs: i64) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The name of the service `key` of `magrathea.yml` in `env`: `APP-KEY` in production,
/// `APP-ENV-KEY` elsewhere.
pub fn declared_name(app: &str, env: &str, key: &str) -> Result<String, CoreError> {
    let name = match env {
        "production" => format!("{app}-{key}"),
        _ => format!("{app}-{env}-{key}"),
    };
    if !crate::names::valid(&name) {
        return Err(CoreError::Invalid(format!(
            "services.{key} in magrathea.yml: its service would be named '{}', which is not a valid name (1-40 characters a-z, 0-9, '-'); use a shorter key",
            name.chars().take(60).collect::<String>()
        )));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_names() {
        assert_eq!(
            declared_name("shop", "production", "db").unwrap(),
            "shop-db"
        );
        assert_eq!(
            declared_name("shop", "staging", "db").unwrap(),
            "shop-staging-db"
        );
        assert!(declared_name("shop", "staging", &"x".repeat(40)).is_err());
    }

    #[test]
    fn urls_are_masked_and_intervals_said() {
        assert_eq!(
            mask_password("postgres://shop_production:s3cr3t@shop-db:5432/shop_db"),
            "postgres://shop_production:****@shop-db:5432/shop_db"
        );
        assert_eq!(
            mask_password("redis://u:p@q@h:6379"),
            "redis://u:****@h:6379"
        );
        assert_eq!(mask_password("not a url"), "not a url");
        assert_eq!(interval_words(86_400), "1d");
        assert_eq!(interval_words(7200), "2h");
        assert_eq!(interval_words(300), "5m");
        assert_eq!(interval_words(5), "5s");
    }
}
