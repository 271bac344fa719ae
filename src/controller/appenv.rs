//! app.json's `env`, as Heroku's app setup and Dokku's first deploy read it: on an
//! environment's first deploy each variable its config lacks gets app.json's value, or a
//! generated secret (`"generator": "secret"`: 64 hex characters), and a required one with
//! neither fails the deploy in one line naming it; `sync` variables are set on every deploy.
//! Stored only (values never shown): the rollout that follows takes the new config. Also
//! where app.json's `cron`, which nothing here runs, is said to be ignored.

use std::collections::BTreeMap;

use super::{Core, CoreError};
use crate::appjson::EnvVar;
use crate::sink::Sink;
use crate::store::ReleaseRow;

/// What one variable becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Set {
    Value(String),
    Secret,
}

/// The variables to set, by name: on a first deploy those the config (or magrathea.yml's
/// environment labels) lacks, later only `sync` ones whose value changed. Required ones
/// without a value are the error.
fn changes(
    vars: &[EnvVar],
    config: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
    first: bool,
) -> Result<Vec<(String, Set)>, Vec<String>> {
    let mut out = vec![];
    let mut missing = vec![];
    for v in vars {
        let have = config.get(&v.name).or_else(|| labels.get(&v.name));
        match (&v.value, have) {
            (Some(val), Some(h)) if v.sync && h != val => {
                out.push((v.name.clone(), Set::Value(val.clone())))
            }
            (Some(val), None) if v.sync || first => {
                out.push((v.name.clone(), Set::Value(val.clone())))
            }
            (None, None) if first && v.secret => out.push((v.name.clone(), Set::Secret)),
            (None, None) if first && v.required => missing.push(v.name.clone()),
            _ => {}
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing)
    }
}

impl Core {
    /// app.json's `env` into `env`'s config (see the module comment), before the rollout of
    /// `release` reads it. An app.json that cannot be read is left to the rollout to refuse.
    pub async fn declare_env(
        &self,
        app: &str,
        env: &str,
        release: &ReleaseRow,
        labels: &BTreeMap<String, String>,
        out: &mut Sink,
    ) -> Result<(), CoreError> {
        let tarball = self.data.releases(app).join(&release.file);
        let meta =
            tokio::task::spawn_blocking(move || crate::deploy::envs::meta_of_release(&tarball))
                .await
                .map_err(|e| CoreError::Other(e.into()))?;
        let Ok(a) = meta.app_json else {
            return Ok(());
        };
        if let Some(n) = a.cron.as_ref().map(Vec::len).filter(|n| *n > 0) {
            out.line(format!(
                " !     app.json cron: {n} scheduled task{} not run here (no scheduler); run {} from a clock or worker process",
                if n == 1 { " is" } else { "s are" },
                if n == 1 { "it" } else { "them" }
            ))
            .await;
        }
        let vars = a.env_vars().map_err(CoreError::Invalid)?;
        if vars.is_empty() {
            return Ok(());
        }
        let first = self.store.live(app, env)?.is_none();
        let mut config = self.config(app, env)?;
        let todo = changes(&vars, &config, labels, first).map_err(|missing| {
            CoreError::Invalid(format!(
                "app.json env: {} required and not set in {env}: config:set {app} {} --env {env}, or give {} a value in app.json",
                missing.join(", "),
                missing.iter().map(|m| format!("{m}=...")).collect::<Vec<_>>().join(" "),
                if missing.len() == 1 { "it" } else { "them" }
            ))
        })?;
        if todo.is_empty() {
            return Ok(());
        }
        let (mut set, mut made) = (vec![], vec![]);
        for (name, what) in todo {
            let value = match what {
                Set::Value(v) => {
                    set.push(name.clone());
                    v
                }
                Set::Secret => {
                    made.push(name.clone());
                    hex::encode(crate::keys::random_bytes(32))
                }
            };
            config.insert(name, value);
        }
        self.replace_config(app, env, &config)?;
        let mut said = vec![];
        if !set.is_empty() {
            said.push(format!("set {}", set.join(", ")));
        }
        if !made.is_empty() {
            said.push(format!("generated {}", made.join(", ")));
        }
        out.line(format!("-----> app.json env ({env}): {}", said.join("; ")))
            .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(name: &str, value: Option<&str>, required: bool, secret: bool, sync: bool) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: value.map(String::from),
            required,
            secret,
            sync,
        }
    }

    #[test]
    fn first_deploy_defaults_secrets_and_required() {
        let vars = [
            var("WEB_CONCURRENCY", Some("3"), true, false, false),
            var("SECRET_KEY", None, true, true, false),
            var("SENTRY_DSN", None, false, false, false),
            var("FEATURES", Some("dark"), true, false, true),
            var("LOG_LEVEL", Some("info"), true, false, false),
        ];
        let config = BTreeMap::from([("LOG_LEVEL".to_string(), "debug".to_string())]);
        let none = BTreeMap::new();
        assert_eq!(
            changes(&vars, &config, &none, true).unwrap(),
            vec![
                ("WEB_CONCURRENCY".into(), Set::Value("3".into())),
                ("SECRET_KEY".into(), Set::Secret),
                ("FEATURES".into(), Set::Value("dark".into())),
            ]
        );
        // Later deploys: only sync variables, and only when they changed.
        assert!(
            changes(&vars, &config, &none, false).unwrap()
                == vec![("FEATURES".into(), Set::Value("dark".into()))]
        );
        let synced = BTreeMap::from([("FEATURES".to_string(), "dark".to_string())]);
        assert!(changes(&vars, &synced, &none, false).unwrap().is_empty());
        let changed = BTreeMap::from([("FEATURES".to_string(), "light".to_string())]);
        assert_eq!(changes(&vars, &changed, &none, false).unwrap().len(), 1);

        // A required variable without a value: set in the config, by a label, or missing.
        let need = [
            var("DATABASE_URL", None, true, false, false),
            var("API_TOKEN", None, true, false, false),
        ];
        assert_eq!(
            changes(&need, &none, &none, true).unwrap_err(),
            ["DATABASE_URL", "API_TOKEN"]
        );
        let linked = BTreeMap::from([("DATABASE_URL".to_string(), "postgres://x".to_string())]);
        let labels = BTreeMap::from([("API_TOKEN".to_string(), "t".to_string())]);
        assert!(changes(&need, &linked, &labels, true).unwrap().is_empty());
        assert!(changes(&need, &none, &none, false).unwrap().is_empty());
    }
}
