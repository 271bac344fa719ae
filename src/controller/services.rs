//! Services: Postgres, Redis and MariaDB next to the apps.
//!
//! A service has a global name (Dokku's way: `services:link APP NAME`) and serves one
//! environment: it links only into that environment of an app, so staging never touches
//! production's data. `magrathea.yml`'s `services:` creates one per environment on the
//! environment's first deploy (named `APP-KEY` in production, `APP-ENV-KEY` elsewhere,
//! owned by the app); `services:create` makes a global one (admin).
//!
//! A link is a login of its own on the service (`APP_ENV`, a generated password sealed in
//! the store) and a config var (`DATABASE_URL`, `REDIS_URL`, `MYSQL_URL` or `--as`) set like
//! `config:set`, so linking rolls a new release. The password is never printed but by
//! `services:info --show-credentials` (owner).
//!
//! The service runs on one node (the one with the most free memory, or `--node`) as a
//! container of the agent's (`agent::services`), on the networks of the apps linked to it.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::releases::{ConfigChange, ConfigOutcome};
use super::{Core, CoreError};
use crate::access::{AppRole, Identity};
use crate::node::proto::{
    ServiceDestroyReq, ServiceEnsureReq, ServiceSpec, ServiceStatus, ServiceStatusReq,
    ServiceUserReq, StatusReq,
};
use crate::sink::Sink;
use crate::store::{LinkRow, NewService, NodeRow, ServiceRow};

/// A service type: its image (the version is part of the name), the config var a link
/// sets by default, the URL scheme and the port.
pub struct Kind {
    pub name: &'static str,
    pub image: &'static str,
    pub var: &'static str,
    scheme: &'static str,
    pub(super) port: u16,
    /// Its URL names a database.
    database: bool,
}

pub const KINDS: [Kind; 3] = [
    Kind {
        name: "postgres",
        image: "magrathea/svc-postgres-15:latest",
        var: "DATABASE_URL",
        scheme: "postgres",
        port: 5432,
        database: true,
    },
    Kind {
        name: "redis",
        image: "magrathea/svc-redis-7:latest",
        var: "REDIS_URL",
        scheme: "redis",
        port: 6379,
        database: false,
    },
    Kind {
        name: "mariadb",
        image: "magrathea/svc-mariadb-10.11:latest",
        var: "MYSQL_URL",
        scheme: "mysql",
        port: 3306,
        database: true,
    },
];

use crate::node::proto::SERVICE_MEMORY;

/// What a new service is: `services:create`'s arguments, or a `magrathea.yml` declaration's.
#[derive(Debug, Clone, Copy)]
pub struct ServiceAsk<'a> {
    pub kind: &'a str,
    pub name: &'a str,
    /// The environment it serves.
    pub env: &'a str,
    /// The node asked for; None: the one with the most free memory.
    pub node: Option<&'a str>,
    /// The app declaring it; None: a global service (admin).
    pub app: Option<&'a str>,
    /// Its memory limit; None: the default (`SERVICE_MEMORY`).
    pub memory: Option<i64>,
}

pub fn kind(name: &str) -> Result<&'static Kind, CoreError> {
    KINDS.iter().find(|k| k.name == name).ok_or_else(|| {
        CoreError::Invalid(format!(
            "unknown service type '{}' (postgres, redis or mariadb)",
            name.chars()
                .filter(|c| !c.is_control())
                .take(40)
                .collect::<String>()
        ))
    })
}

/// A config var name a link may set: `A-Z`, `0-9`, `_`, not starting with a digit.
pub fn check_var(var: &str) -> Result<(), CoreError> {
    let b = var.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 64
        && !b[0].is_ascii_digit()
        && b.iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_');
    match ok {
        true => Ok(()),
        false => Err(CoreError::Invalid(format!(
            "invalid variable name '{}': use A-Z, 0-9 and '_' (DATABASE_URL)",
            var.chars()
                .filter(|c| !c.is_control())
                .take(60)
                .collect::<String>()
        ))),
    }
}

/// The login a link of `app`'s `env` uses: `app_env`, in the grammar the services accept.
fn login(app: &str, env: &str) -> String {
    let mut s = format!("{app}_{env}").replace('-', "_");
    s.truncate(63);
    s
}

/// 32 characters of `A-Za-z0-9` (190 bits).
fn password() -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    crate::keys::random_bytes(64)
        .into_iter()
        // 62 * 4 = 248: dropping 248..=255 keeps every character equally likely.
        .filter(|b| *b < 248)
        .take(32)
        .map(|b| ABC[(b % 62) as usize] as char)
        .collect()
}

/// The URL a link's processes get.
pub fn url(s: &ServiceRow, user: &str, password: &str) -> String {
    let k = kind(&s.kind).unwrap_or(&KINDS[0]);
    let db = match k.database {
        true => format!("/{}", s.name.replace('-', "_")),
        false => String::new(),
    };
    format!("{}://{user}:{password}@{}:{}{db}", k.scheme, s.name, k.port)
}

/// A service as `services` and `services:info` show it.
pub struct ServiceView {
    pub row: ServiceRow,
    pub status: ServiceStatus,
    pub links: Vec<LinkView>,
    /// Scheduled backups: when the newest was taken and the next is due.
    pub schedule: Option<ScheduleView>,
}

impl ServiceView {
    /// Its container's memory limit in bytes.
    pub fn memory(&self) -> i64 {
        self.row.memory.unwrap_or(SERVICE_MEMORY)
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ScheduleView {
    /// Seconds.
    pub every: i64,
    pub keep: i64,
    pub last: Option<i64>,
    pub next: Option<i64>,
    /// Failed in a row, the last error and when.
    pub failures: i64,
    pub error: Option<String>,
    pub error_at: Option<i64>,
}

pub struct LinkView {
    pub app: String,
    pub env: String,
    pub var: String,
    /// Only with `--show-credentials`.
    pub url: Option<String>,
}

impl Core {
    /// The service, if the caller holds `need` on its app (the app that declared it, or one
    /// it is linked to). A global service's owner-level actions are for admins. The error
    /// does not reveal whether a service the caller cannot see exists.
    pub fn require_service(
        &self,
        who: &Identity,
        name: &str,
        need: AppRole,
        action: &str,
    ) -> Result<ServiceRow, CoreError> {
        let row = self.store.service(name)?;
        if who.is_admin() {
            return row.ok_or_else(|| CoreError::NotFound(format!("no service named '{name}'")));
        }
        let denied = || {
            CoreError::Denied(format!(
                "service '{name}' does not exist or key '{}' may not {action} it",
                who.name
            ))
        };
        let row = row.ok_or_else(denied)?;
        let apps: Vec<String> = match (&row.app, need) {
            (Some(app), AppRole::Owner) => vec![app.clone()],
            (None, AppRole::Owner) => vec![],
            _ => row
                .app
                .iter()
                .cloned()
                .chain(self.store.links(Some(name))?.into_iter().map(|l| l.app))
                .collect(),
        };
        for app in apps {
            if matches!(self.store.grant(who, &app)?, Some(g) if g.role >= need) {
                return Ok(row);
            }
        }
        Err(denied())
    }

    pub(super) fn service_and_node(&self, name: &str) -> Result<(ServiceRow, NodeRow), CoreError> {
        let row = self
            .store
            .service(name)?
            .ok_or_else(|| CoreError::NotFound(format!("no service named '{name}'")))?;
        let node = self.service_node(&row)?;
        Ok((row, node))
    }

    pub(super) fn service_node(&self, row: &ServiceRow) -> Result<NodeRow, CoreError> {
        self.all_nodes()?
            .into_iter()
            .find(|n| n.name == row.node)
            .ok_or_else(|| {
                CoreError::Unavailable(format!(
                    "service '{}' runs on node '{}', which is no longer configured",
                    row.name, row.node
                ))
            })
    }

    fn spec(row: &ServiceRow) -> ServiceSpec {
        ServiceSpec {
            key: row.key.clone(),
            name: row.name.clone(),
            kind: row.kind.clone(),
            image: row.image.clone(),
            uid: row.uid,
            memory: row.memory.unwrap_or(SERVICE_MEMORY),
        }
    }

    /// The service running on its node, on the networks of exactly the apps linked to it.
    pub(super) async fn ensure_service(
        &self,
        row: &ServiceRow,
    ) -> Result<ServiceStatus, CoreError> {
        let mut uids = vec![];
        for l in self.store.links(Some(&row.name))? {
            // An app destroyed since has no network left to join.
            let Ok(uid) = self.app_uid(&l.app) else {
                continue;
            };
            if !uids.contains(&uid) {
                uids.push(uid);
            }
        }
        let node = self.service_node(row)?;
        let req = ServiceEnsureReq {
            spec: Self::spec(row),
            app_uids: uids,
        };
        self.node_client(&node)
            .send(&req)
            .await
            .map_err(|e| CoreError::Failed(format!("service '{}': {e}", row.name)))
    }

    /// The node a new service goes to: `want`, else the one with the most free memory;
    /// refused when that node has less free than the service's limit (`memory`).
    async fn place_service(&self, want: Option<&str>, memory: i64) -> Result<NodeRow, CoreError> {
        // A cluster (Swarm) runs app processes only; services run on nodes.
        let mut nodes: Vec<NodeRow> = self
            .all_nodes()?
            .into_iter()
            .filter(|n| !n.is_cluster())
            .collect();
        if let Some(w) = want {
            nodes.retain(|n| n.name == w);
            if nodes.is_empty() {
                return Err(CoreError::Invalid(format!("no node named '{w}'")));
            }
        }
        let mut best: Option<(i64, NodeRow)> = None;
        for n in nodes {
            let Ok(st) = self.node_client(&n).send(&StatusReq).await else {
                if want.is_some() {
                    // Asked for by name: its answer (or not) comes with the start.
                    return Ok(n);
                }
                continue;
            };
            let used: i64 = st
                .apps
                .values()
                .flat_map(|a| a.processes.iter())
                .filter(|p| p.state == "running" || p.state == "restarting")
                .map(|p| p.memory)
                .sum::<i64>()
                + st.services_memory;
            let free = st.capacity.map_or(i64::MAX / 2, |c| c.memory) - used;
            if best.as_ref().is_none_or(|(f, _)| free > *f) {
                best = Some((free, n));
            }
        }
        let (free, node) = best.ok_or_else(|| {
            CoreError::Unavailable("no node answers; cannot place the service".into())
        })?;
        if free < memory {
            return Err(CoreError::Invalid(format!(
                "the service needs {} of memory and node '{}' has {} free{}",
                crate::build::human(memory as u64),
                node.name,
                crate::build::human(free.max(0) as u64),
                if want.is_some() {
                    ""
                } else {
                    " (the most of any node)"
                }
            )));
        }
        Ok(node)
    }

    /// Creates a service and starts it; nothing is left if it cannot start.
    pub async fn create_service(
        &self,
        who: &str,
        ask: &ServiceAsk<'_>,
        out: &mut Sink,
    ) -> Result<ServiceRow, CoreError> {
        let ServiceAsk {
            kind: kind_name,
            name,
            env,
            node,
            app,
            memory,
        } = *ask;
        let k = kind(kind_name)?;
        crate::names::check("service", name)?;
        crate::names::check("environment", env)?;
        if self.store.service(name)?.is_some() {
            return Err(CoreError::Invalid(format!(
                "service '{name}' already exists"
            )));
        }
        let n = self
            .place_service(node, memory.unwrap_or(SERVICE_MEMORY))
            .await?;
        let key = crate::keys::random_hex(8);
        let row = self.store.create_service(&NewService {
            name,
            kind: k.name,
            env,
            app,
            node: &n.name,
            key: &key,
            image: k.image,
            by: who,
            memory,
        })?;
        out.line(format!(
            "-----> Starting {} service {name} for {env} on node {} ({} of memory)",
            k.name,
            n.name,
            crate::build::human(memory.unwrap_or(SERVICE_MEMORY) as u64)
        ))
        .await;
        if let Err(e) = self.ensure_service(&row).await {
            let req = ServiceDestroyReq {
                key: row.key.clone(),
                uid: row.uid,
            };
            let _ = self.node_client(&n).send(&req).await;
            let _ = self.store.delete_service(name);
            return Err(e);
        }
        Ok(row)
    }

    /// Every service the caller may see, with its state on its node.
    pub async fn list_services(&self, who: &Identity) -> Result<Vec<ServiceView>, CoreError> {
        let mut out = vec![];
        for row in self.store.services()? {
            if self
                .require_service(who, &row.name, AppRole::Viewer, "see")
                .is_err()
            {
                continue;
            }
            out.push(self.service_view(row, false).await?);
        }
        Ok(out)
    }

    /// One service, its state and links; the links' URLs (credentials) only when asked.
    pub async fn service_view(
        &self,
        row: ServiceRow,
        credentials: bool,
    ) -> Result<ServiceView, CoreError> {
        let status = match self.service_node(&row) {
            Ok(n) => {
                let req = ServiceStatusReq {
                    key: row.key.clone(),
                };
                match self.node_client(&n).send(&req).await {
                    Ok(s) => s,
                    Err(e) => ServiceStatus {
                        state: format!("unknown ({})", e.to_string().replace('\n', " ")),
                        ..Default::default()
                    },
                }
            }
            Err(_) => ServiceStatus {
                state: "node gone".into(),
                ..Default::default()
            },
        };
        let mut links = vec![];
        for l in self.store.links(Some(&row.name))? {
            let url = match credentials {
                true => Some(url(&row, &l.user, &self.open_secret(&l.secret)?)),
                false => None,
            };
            links.push(LinkView {
                app: l.app,
                env: l.env,
                var: l.var,
                url,
            });
        }
        let schedule = match (row.backup_every, row.backup_keep) {
            (Some(every), Some(keep)) => {
                let last = self.store.last_scheduled_backup(&row.name)?;
                Some(ScheduleView {
                    every,
                    keep,
                    last,
                    next: super::schedule::next_due(&row, last),
                    failures: row.backup_failures,
                    error: row.backup_error.clone(),
                    error_at: row.backup_error_at,
                })
            }
            _ => None,
        };
        Ok(ServiceView {
            row,
            status,
            links,
            schedule,
        })
    }

    fn open_secret(&self, blob: &[u8]) -> Result<String, CoreError> {
        let plain = self
            .sealer
            .open(blob)
            .map_err(|e| CoreError::Other(e.into()))?;
        Ok(String::from_utf8_lossy(&plain).into_owned())
    }

    /// Links a service into an app's environment: a login of its own on the service, then
    /// the config var, rolled out like `config:set` (stored only with `no_restart`).
    #[allow(clippy::too_many_arguments)]
    pub async fn link_service(
        self: &Arc<Self>,
        who: &Identity,
        app: &str,
        name: &str,
        env: Option<&str>,
        var: Option<&str>,
        no_restart: bool,
        out: &mut Sink,
    ) -> Result<ConfigOutcome, CoreError> {
        let row = self.require_service(who, name, AppRole::Viewer, "link")?;
        if !who.is_admin() && row.app.as_deref() != Some(app) {
            return Err(CoreError::Denied(format!(
                "service '{name}' is not {app}'s; only an admin links it"
            )));
        }
        self.link(&who.name, row, app, env, var, no_restart, out)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn link(
        self: &Arc<Self>,
        who: &str,
        row: ServiceRow,
        app: &str,
        env: Option<&str>,
        var: Option<&str>,
        no_restart: bool,
        out: &mut Sink,
    ) -> Result<ConfigOutcome, CoreError> {
        let name = row.name.as_str();
        let env = env.unwrap_or(&row.env);
        crate::names::check("environment", env)?;
        if env != row.env {
            return Err(CoreError::Invalid(format!(
                "service '{name}' serves {}; it cannot be linked into {env} (each environment gets its own)",
                row.env
            )));
        }
        let k = kind(&row.kind)?;
        let var = var.unwrap_or(k.var);
        check_var(var)?;
        let links = self.store.links(None)?;
        if links
            .iter()
            .any(|l| l.service == name && l.app == app && l.env == env)
        {
            return Err(CoreError::Invalid(format!(
                "service '{name}' is already linked to {app} in {env}"
            )));
        }
        if let Some(l) = links
            .iter()
            .find(|l| l.app == app && l.env == env && l.var == var)
        {
            return Err(CoreError::Invalid(format!(
                "{var} of {app} in {env} is service '{}''s already; pick another with --as",
                l.service
            )));
        }
        let user = login(app, env);
        let pw = password();
        let link = LinkRow {
            service: name.to_string(),
            app: app.to_string(),
            env: env.to_string(),
            var: var.to_string(),
            user: user.clone(),
            secret: self.sealer.seal(pw.as_bytes()),
            created_at: 0,
        };
        self.store.add_link(&link)?;
        let undo = |e: CoreError| {
            let row = &row;
            async move {
                let _ = self.store.remove_link(name, app, env);
                let _ = self.ensure_service(row).await;
                e
            }
        };
        out.line(format!("-----> Linking {name} into {app} ({env}) as {var}"))
            .await;
        // On the app's network, with its login.
        if let Err(e) = self.ensure_service(&row).await {
            return Err(undo(e).await);
        }
        if let Err(e) = self.service_user(&row, &user, Some(pw.clone())).await {
            return Err(undo(e).await);
        }
        let change = ConfigChange {
            set: BTreeMap::from([(var.to_string(), url(&row, &user, &pw))]),
            unset: vec![],
            no_restart,
        };
        match self.change_config(who, app, env, change, out).await {
            Ok(o) => Ok(o),
            Err(e) => {
                let _ = self.service_user(&row, &user, None).await;
                Err(undo(e).await)
            }
        }
    }

    pub(super) async fn service_user(
        &self,
        row: &ServiceRow,
        user: &str,
        password: Option<String>,
    ) -> Result<ServiceStatus, CoreError> {
        let node = self.service_node(row)?;
        let req = ServiceUserReq {
            key: row.key.clone(),
            user: user.to_string(),
            password,
        };
        self.node_client(&node)
            .send(&req)
            .await
            .map_err(|e| CoreError::Failed(format!("service '{}': {e}", row.name)))
    }

    /// Unlinks: the config var goes (a new release, rolled out), then the login.
    pub async fn unlink_service(
        self: &Arc<Self>,
        who: &str,
        app: &str,
        name: &str,
        env: Option<&str>,
        out: &mut Sink,
    ) -> Result<ConfigOutcome, CoreError> {
        let row = self
            .store
            .service(name)?
            .ok_or_else(|| CoreError::NotFound(format!("no service named '{name}'")))?;
        let env = env.unwrap_or(&row.env);
        let link = self
            .store
            .links(Some(name))?
            .into_iter()
            .find(|l| l.app == app && l.env == env)
            .ok_or_else(|| {
                CoreError::Invalid(format!("service '{name}' is not linked to {app} in {env}"))
            })?;
        out.line(format!("-----> Unlinking {name} from {app} ({env})"))
            .await;
        let change = ConfigChange {
            set: BTreeMap::new(),
            unset: vec![link.var.clone()],
            no_restart: false,
        };
        let outcome = self.change_config(who, app, env, change, out).await?;
        self.store.remove_link(name, app, env)?;
        if let Ok(uid) = self.app_uid(app) {
            self.unforward(&row, Some(uid)).await;
        }
        if let Err(e) = self.service_user(&row, &link.user, None).await {
            out.line(format!(" !     the login stays on the service: {e}"))
                .await;
        }
        let _ = self.ensure_service(&row).await;
        Ok(outcome)
    }

    /// Destroys a service and its data: refused while linked, unless `unlink`.
    pub async fn destroy_service(
        self: &Arc<Self>,
        who: &str,
        name: &str,
        unlink: bool,
        out: &mut Sink,
    ) -> Result<(), CoreError> {
        let row = self
            .store
            .service(name)?
            .ok_or_else(|| CoreError::NotFound(format!("no service named '{name}'")))?;
        let links = self.store.links(Some(name))?;
        if !links.is_empty() && !unlink {
            let to: Vec<String> = links
                .iter()
                .map(|l| format!("{} ({})", l.app, l.env))
                .collect();
            return Err(CoreError::Invalid(format!(
                "service '{name}' is linked to {}; unlink it first, or add --unlink",
                to.join(", ")
            )));
        }
        for l in &links {
            self.unlink_service(who, &l.app, name, Some(&l.env), out)
                .await?;
        }
        self.service_node(&row)?;
        self.remove_service(&row, false).await?;
        out.line(format!(
            "-----> Service {name} and its data and backups destroyed"
        ))
        .await;
        Ok(())
    }

    /// An unlinked service gone: its container and data on its node, its row, its backups.
    pub(super) async fn remove_service(
        &self,
        row: &ServiceRow,
        keep_backups: bool,
    ) -> Result<(), CoreError> {
        let name = &row.name;
        self.unforward(row, None).await;
        match self.service_node(row) {
            Ok(node) => {
                let req = ServiceDestroyReq {
                    key: row.key.clone(),
                    uid: row.uid,
                };
                self.node_client(&node)
                    .send(&req)
                    .await
                    .map_err(|e| CoreError::Failed(format!("service '{name}': {e}")))?;
            }
            // Its node was removed, and its container with it.
            Err(e) => tracing::warn!(service = %name, "{e}"),
        }
        self.store.delete_service(name)?;
        self.store.forget_backups(name)?;
        let dir = self.data().backups(name);
        if dir.exists() {
            // Out of the catalog's reach first: a later service of the same name starts with
            // no backups, whatever happens next.
            let aside = dir.with_file_name(format!(
                ".{}-{name}-{}",
                if keep_backups { "archived" } else { "trash" },
                crate::keys::random_hex(4)
            ));
            std::fs::rename(&dir, &aside).map_err(anyhow::Error::from)?;
            if !keep_backups {
                let _ = std::fs::remove_dir_all(&aside);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_vars_names_and_passwords() {
        assert!(kind("postgres").is_ok());
        let e = kind("mongo\x1b").err().unwrap().to_string();
        assert!(e.contains("unknown service type 'mongo'"), "{e}");
        assert!(check_var("DATABASE_URL").is_ok());
        assert!(check_var("1X").is_err() && check_var("a").is_err() && check_var("").is_err());
        assert_eq!(login("my-shop", "production"), "my_shop_production");
        let (a, b) = (password(), password());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()) && a != b);
    }
}
