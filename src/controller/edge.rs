//! What stands in front of an app, per environment: maintenance mode (with its page from
//! the repo), IP access lists, request rate limits and caps; and the app's disk quota. Kept
//! as one JSON document per app environment in the store (`app_settings`; the quota in
//! production's) and handed to the router as the policy of that environment's route
//! whenever it changes and at start.

use serde::{Deserialize, Serialize};

use super::{Core, CoreError};
use crate::deploy::route_key;
use crate::router::{Cidr, Policy, Rate, MAX_RATE};

/// The largest maintenance page taken from a repo.
pub const MAX_PAGE: usize = 64 << 10;
/// The file at the top of the app's repo that replaces the default maintenance text.
pub const PAGE_FILE: &str = "maintenance.html";
/// Access list entries an app may have.
const MAX_RULES: usize = 256;
/// The environment whose settings hold the app's disk quota.
pub const QUOTA_ENV: &str = "production";

/// An app's settings (what `maintenance:*`, `acl:*` and `limits:*` change).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AppSettings {
    pub maintenance: bool,
    /// The maintenance page read from the live release's commit when maintenance went on.
    pub page: Option<String>,
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    pub limits: AppLimits,
}

/// Per-app limits (`limits:set APP disk=2G rate=100 client-rate=10/m conns=50`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AppLimits {
    /// Bytes of disk the app may use (repo, releases, build cache, logs); a push past it is
    /// refused.
    pub disk: Option<u64>,
    /// Requests to the app every `rate_per` seconds (1 when absent).
    pub rate: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_per: Option<u32>,
    /// Requests from one client address every `client_rate_per` seconds (1 when absent).
    pub client_rate: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_rate_per: Option<u32>,
    /// Requests in progress at once.
    pub conns: Option<u32>,
}

/// The limit names `limits:set` takes, in display order.
pub const LIMIT_NAMES: [&str; 4] = ["disk", "rate", "client-rate", "conns"];

impl AppLimits {
    /// Sets one limit from its `limits:set` text: a size for `disk` (`2G`, `500M`; a bare
    /// number is MiB), a rate for `rate` and `client-rate` (`100`, `30/m`, `5/h`), a whole
    /// number for `conns`.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), CoreError> {
        let shown =
            |s: &str| -> String { s.chars().filter(|c| !c.is_control()).take(40).collect() };
        let rate = |v: &str| -> Result<(Option<u32>, Option<u32>), CoreError> {
            let r: Rate = v
                .parse()
                .map_err(|e: String| CoreError::Invalid(format!("{name}: {e}")))?;
            Ok((Some(r.n), (r.per != 1).then_some(r.per)))
        };
        match name {
            "disk" => {
                let bytes = crate::appconfig::parse_size(value).ok_or_else(|| {
                    CoreError::Invalid(format!(
                        "disk: '{}' is not a size (e.g. 500M, 2G)",
                        shown(value)
                    ))
                })?;
                if bytes == 0 {
                    return Err(CoreError::Invalid(
                        "disk must be more than 0 (limits:unset removes it)".into(),
                    ));
                }
                self.disk = Some(bytes as u64);
            }
            "rate" => (self.rate, self.rate_per) = rate(value)?,
            "client-rate" => (self.client_rate, self.client_rate_per) = rate(value)?,
            "conns" => {
                let n = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
                    value.parse::<u64>().ok()
                } else {
                    None
                }
                .ok_or_else(|| {
                    CoreError::Invalid(format!("conns: '{}' is not a whole number", shown(value)))
                })?;
                self.conns = Some(
                    u32::try_from(n)
                        .ok()
                        .filter(|n| (1..=MAX_RATE).contains(n))
                        .ok_or_else(|| {
                            CoreError::Invalid(format!(
                                "conns must be 1 to {MAX_RATE} (limits:unset removes it)"
                            ))
                        })?,
                );
            }
            _ => return Err(unknown_limit(name)),
        }
        Ok(())
    }

    pub fn unset(&mut self, name: &str) -> Result<(), CoreError> {
        match name {
            "disk" => self.disk = None,
            "rate" => (self.rate, self.rate_per) = (None, None),
            "client-rate" => (self.client_rate, self.client_rate_per) = (None, None),
            "conns" => self.conns = None,
            _ => return Err(unknown_limit(name)),
        }
        Ok(())
    }

    /// The request rate to the app, if limited.
    pub fn rate(&self) -> Option<Rate> {
        self.rate.map(|n| Rate {
            n,
            per: self.rate_per.unwrap_or(1),
        })
    }

    /// The request rate from one client address, if limited.
    pub fn client_rate(&self) -> Option<Rate> {
        self.client_rate.map(|n| Rate {
            n,
            per: self.client_rate_per.unwrap_or(1),
        })
    }
}

fn unknown_limit(name: &str) -> CoreError {
    let shown: String = name.chars().filter(|c| !c.is_control()).take(40).collect();
    CoreError::Invalid(format!(
        "unknown limit '{shown}' (one of: {})",
        LIMIT_NAMES.join(", ")
    ))
}

impl AppSettings {
    fn policy(&self) -> Policy {
        // Entries were checked when they were added; one that no longer parses is skipped.
        let blocks = |v: &[String]| v.iter().filter_map(|c| c.parse().ok()).collect();
        Policy {
            allow: blocks(&self.allow),
            deny: blocks(&self.deny),
            maintenance: self.maintenance,
            page: self.page.clone(),
            rate: self.limits.rate(),
            client_rate: self.limits.client_rate(),
            max_concurrent: self.limits.conns,
        }
    }
}

/// Which list `acl:*` changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclChange {
    Allow,
    Deny,
    Remove,
}

impl Core {
    /// An app environment's settings (the defaults if it has none).
    pub fn app_settings(&self, app: &str, env: &str) -> Result<AppSettings, CoreError> {
        self.app(app)?;
        Ok(match self.store.app_settings(app, env)? {
            Some(doc) => serde_json::from_str(&doc).map_err(anyhow::Error::from)?,
            None => AppSettings::default(),
        })
    }

    /// The environments of an app that have settings, with them.
    pub fn all_env_settings(&self, app: &str) -> Result<Vec<(String, AppSettings)>, CoreError> {
        self.app(app)?;
        let mut out = vec![];
        for (a, env, doc) in self.store.all_app_settings()? {
            if a == app {
                out.push((
                    env,
                    serde_json::from_str(&doc).map_err(anyhow::Error::from)?,
                ));
            }
        }
        Ok(out)
    }

    /// Reads, changes and stores an app environment's settings, then hands the router the
    /// new policy of that route. `change` refusing leaves everything as it was.
    fn change_settings(
        &self,
        app: &str,
        env: &str,
        change: impl FnOnce(&mut AppSettings) -> Result<(), CoreError>,
    ) -> Result<AppSettings, CoreError> {
        let mut s = self.app_settings(app, env)?;
        change(&mut s)?;
        let doc = serde_json::to_string(&s).map_err(anyhow::Error::from)?;
        self.store.set_app_settings(app, env, &doc)?;
        self.router.set_policy(&route_key(app, env), s.policy());
        Ok(s)
    }

    /// At start: every route's policy to the router.
    pub fn restore_policies(&self) -> Result<usize, CoreError> {
        let all = self.store.all_app_settings()?;
        for (app, env, doc) in &all {
            match serde_json::from_str::<AppSettings>(doc) {
                Ok(s) => self.router.set_policy(&route_key(app, env), s.policy()),
                Err(e) => {
                    tracing::error!(app = %app, env = %env, error = %e, "unreadable app settings")
                }
            }
        }
        Ok(all.len())
    }

    /// The limits of an app's environment, with the app's disk quota (kept with production).
    pub fn limits(&self, app: &str, env: &str) -> Result<AppLimits, CoreError> {
        let mut l = self.app_settings(app, env)?.limits;
        if env != QUOTA_ENV {
            l.disk = self.app_settings(app, QUOTA_ENV)?.limits.disk;
        }
        Ok(l)
    }

    /// The routes of `app` that have a policy (to take off the router when it goes).
    pub(super) fn policy_routes(&self, app: &str) -> Result<Vec<String>, CoreError> {
        Ok(self
            .store
            .all_app_settings()?
            .into_iter()
            .filter(|(a, _, _)| a == app)
            .map(|(_, env, _)| route_key(app, &env))
            .collect())
    }

    /// Maintenance of an environment on (with the page from its live release's
    /// `maintenance.html`, if it has one: returns whether it did) or off.
    pub fn set_maintenance(&self, app: &str, env: &str, on: bool) -> Result<bool, CoreError> {
        let page = if on {
            self.maintenance_page(app, env)?
        } else {
            None
        };
        let custom = page.is_some();
        self.change_settings(app, env, |s| {
            s.maintenance = on;
            s.page = page;
            Ok(())
        })?;
        Ok(custom)
    }

    /// `maintenance.html` at the top of the environment's live release's commit (of the
    /// directory it was built from), read from
    /// the repository's objects (a regular file, not a link; at most [`MAX_PAGE`], UTF-8).
    fn maintenance_page(&self, app: &str, env: &str) -> Result<Option<String>, CoreError> {
        let Some(live) = self.store.live(app, env)? else {
            return Ok(None);
        };
        let Some(rel) = self.store.release(app, live.version)? else {
            return Ok(None);
        };
        let repo = crate::git::export::open(
            &self.data.repo(app),
            &crate::git::export::Quarantine {
                object_dir: None,
                alternates: None,
            },
        )
        .map_err(|e| CoreError::Other(anyhow::anyhow!("cannot open the repository: {e}")))?;
        // A monorepo app's page is at the top of the directory its release was built from.
        let base = serde_json::from_str::<crate::release::Manifest>(&rel.manifest)
            .ok()
            .and_then(|m| m.build_dir);
        let Some(bytes) =
            crate::git::export::read_top_file(&repo, &rel.git_sha, base.as_deref(), PAGE_FILE)
        else {
            return Ok(None);
        };
        if bytes.len() > MAX_PAGE {
            return Err(CoreError::Invalid(format!(
                "{PAGE_FILE} is {} bytes; the most is {MAX_PAGE}",
                bytes.len()
            )));
        }
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| CoreError::Invalid(format!("{PAGE_FILE} is not UTF-8")))
    }

    /// Adds address blocks to the allow or deny list, or removes them from both. Every
    /// block is checked before anything changes. Returns the lists as they are now.
    pub fn change_acl(
        &self,
        app: &str,
        env: &str,
        change: AclChange,
        blocks: &[String],
    ) -> Result<AppSettings, CoreError> {
        let parsed: Vec<Cidr> = blocks
            .iter()
            .map(|b| b.parse::<Cidr>().map_err(CoreError::Invalid))
            .collect::<Result<_, _>>()?;
        self.change_settings(app, env, |s| {
            for c in parsed.iter().map(Cidr::to_string) {
                match change {
                    AclChange::Allow | AclChange::Deny => {
                        let list = if change == AclChange::Allow {
                            &mut s.allow
                        } else {
                            &mut s.deny
                        };
                        if !list.contains(&c) {
                            list.push(c);
                        }
                    }
                    AclChange::Remove => {
                        let before = s.allow.len() + s.deny.len();
                        s.allow.retain(|x| *x != c);
                        s.deny.retain(|x| *x != c);
                        if s.allow.len() + s.deny.len() == before {
                            return Err(CoreError::Invalid(format!(
                                "{c} is not in the access list of '{app}' in {env}"
                            )));
                        }
                    }
                }
            }
            if s.allow.len() + s.deny.len() > MAX_RULES {
                return Err(CoreError::Invalid(format!(
                    "an access list holds at most {MAX_RULES} entries"
                )));
            }
            Ok(())
        })
    }

    /// Sets and removes limits of an environment (all checked before anything changes).
    /// The disk quota is the app's, over all its environments: it is kept with production.
    pub fn change_limits(
        &self,
        app: &str,
        env: &str,
        set: &[(String, String)],
        unset: &[String],
    ) -> Result<AppLimits, CoreError> {
        let names = set.iter().map(|(n, _)| n).chain(unset);
        if env != QUOTA_ENV && names.into_iter().any(|n| n == "disk") {
            return Err(CoreError::Invalid(format!(
                "disk is the quota of the whole app, not of one environment: limits:set {app} disk=SIZE without --env"
            )));
        }
        self.change_settings(app, env, |s| {
            for (name, value) in set {
                s.limits.set(name, value)?;
            }
            for name in unset {
                s.limits.unset(name)?;
            }
            Ok(())
        })?;
        self.limits(app, env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked_and_settings_read_back() {
        let mut l = AppLimits::default();
        l.set("disk", "2G").unwrap();
        l.set("rate", "100").unwrap();
        l.set("client-rate", "5/h").unwrap();
        l.set("conns", "7").unwrap();
        let before = l.clone();
        for (name, v, want) in [
            ("disk", "0", "not a size"),
            ("disk", "lots", "not a size"),
            ("rate", "0", "1 to 1000000"),
            ("rate", "1099511627776", "1 to 1000000"),
            ("rate", "5/fortnight", "not a rate"),
            ("client-rate", "5/0s", "1s to 1d"),
            ("conns", "2000000", "1 to 1000000"),
            ("conns", "0", "1 to 1000000"),
            ("conns", "1.5", "not a whole number"),
            ("memory", "1", "unknown limit"),
        ] {
            let err = l.set(name, v).unwrap_err().to_string();
            assert!(
                err.contains(want) && err.lines().count() == 1,
                "{name}={v}: {err}"
            );
        }
        assert_eq!(l, before, "refusals change nothing");
        assert!(l.unset("bogus").is_err());
        let s = AppSettings {
            maintenance: true,
            allow: vec!["10.0.0.0/8".into()],
            limits: l.clone(),
            ..Default::default()
        };
        let doc = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<AppSettings>(&doc).unwrap(), s);
        assert_eq!(
            serde_json::from_str::<AppSettings>("{}").unwrap(),
            AppSettings::default()
        );
        // Documents written before rates had windows read as per second.
        let old: AppSettings =
            serde_json::from_str(r#"{"limits":{"rate":9,"client_rate":3}}"#).unwrap();
        assert_eq!(old.limits.rate(), Some(Rate { n: 9, per: 1 }));
        let p = s.policy();
        assert!(p.maintenance);
        assert_eq!(p.allow.len(), 1);
        assert_eq!(
            (p.rate, p.client_rate, p.max_concurrent),
            (
                Some(Rate { n: 100, per: 1 }),
                Some(Rate { n: 5, per: 3600 }),
                Some(7)
            )
        );
        l.unset("disk").unwrap();
        l.unset("client-rate").unwrap();
        assert_eq!(
            (l.disk, l.client_rate, l.client_rate_per),
            (None, None, None)
        );
    }
}
