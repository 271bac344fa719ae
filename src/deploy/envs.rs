//! Which pushes deploy where: environments from `magrathea.yml` (branch and tag rules, node
//! label selectors, scale, env labels), with Heroku-like defaults when there is no file.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use crate::appconfig::{self, parse_duration_ms, AppConfig};
use crate::appjson::{self, AppJson};
use crate::node::proto::{Health, BOOT_TIMEOUT_MS};

#[derive(Debug, Clone)]
pub struct EnvTarget {
    pub env: String,
    pub selector: BTreeMap<String, String>,
    /// A cluster instead of nodes (`cluster:` in magrathea.yml), with its placement
    /// constraints.
    pub cluster: Option<String>,
    pub placement: Vec<String>,
    pub scale: BTreeMap<String, u32>,
    pub vars: BTreeMap<String, String>,
    pub health: Health,
}

/// The web startup check `magrathea.yml` asks for (the default without a `healthcheck`).
fn health(config: &AppConfig) -> Health {
    let mut h = Health::default();
    let Some(c) = &config.healthcheck else {
        return h;
    };
    if let Some(p) = &c.path {
        if p.starts_with('/') && !p.contains(char::is_whitespace) {
            h.path = p.clone();
            h.strict = true;
        }
    }
    if let Some(ms) = c.timeout.as_deref().and_then(parse_duration_ms) {
        h.timeout_ms = ms.clamp(100, 120_000);
    }
    if let Some(ms) = c.interval.as_deref().and_then(parse_duration_ms) {
        h.interval_ms = ms.clamp(50, 60_000);
    }
    let boot = c
        .boot_timeout
        .as_deref()
        .and_then(parse_duration_ms)
        .map(|ms| ms.clamp(1_000, 3_600_000));
    match (c.attempts, boot) {
        (Some(a), _) => {
            h.attempts = a.clamp(1, 7_200);
            h.setting = "healthcheck.attempts in magrathea.yml".into();
        }
        (None, Some(ms)) => {
            h.attempts = ms.div_ceil(h.interval_ms).clamp(1, 72_000) as u32;
            h.setting = "healthcheck.boot_timeout in magrathea.yml".into();
        }
        (None, None) => {
            h.attempts = BOOT_TIMEOUT_MS.div_ceil(h.interval_ms).max(1) as u32;
        }
    }
    h.content = c.content.clone().filter(|s| !s.is_empty());
    h
}

/// app.json's startup checks for web (Dokku's format and defaults: 3 attempts, 5 s apart,
/// 5 s each), when magrathea.yml has no `healthcheck` of its own.
pub fn app_json_checks(config: &AppConfig, app_json: &AppJson) -> Vec<Health> {
    if config.healthcheck.is_some() {
        return vec![];
    }
    app_json
        .startup_checks("web")
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let name = c
                .name
                .as_deref()
                .map(|n| format!(" ({})", n.chars().take(60).collect::<String>()))
                .unwrap_or_default();
            // An uptime check: the process must still be up (and answering) after that long.
            let delay = c.initial_delay.unwrap_or(0).max(c.uptime.unwrap_or(0));
            Health {
                path: c.path.clone().unwrap_or_else(|| "/".into()),
                timeout_ms: c.timeout.unwrap_or(5).clamp(1, 120) * 1000,
                attempts: c.attempts.unwrap_or(3).clamp(1, 600),
                interval_ms: c.wait.unwrap_or(5).clamp(1, 600) * 1000,
                initial_delay_ms: delay.min(600) * 1000,
                content: c.content.clone().filter(|s| !s.is_empty()),
                strict: c.path.is_some(),
                setting: if app_json.checks_file {
                    format!(
                        "WAIT/ATTEMPTS/TIMEOUT of the CHECKS file (its check {})",
                        i + 1
                    )
                } else {
                    format!("attempts/wait/timeout of app.json healthchecks.web[{i}]{name}")
                },
            }
        })
        .collect()
}

pub fn target(config: &AppConfig, env: &str) -> EnvTarget {
    let e = config
        .environments
        .as_ref()
        .and_then(|m| m.get(env))
        .cloned()
        .unwrap_or_default();
    let mut scale = config.scale.clone().unwrap_or_default();
    scale.extend(e.scale.unwrap_or_default());
    EnvTarget {
        env: env.to_string(),
        selector: e.nodes.unwrap_or_default(),
        cluster: e.cluster,
        placement: e.placement.unwrap_or_default(),
        scale,
        vars: e.env.unwrap_or_default(),
        health: health(config),
    }
}

/// The environments a pushed ref deploys to.
pub fn for_ref(config: &AppConfig, git_ref: &str) -> Vec<EnvTarget> {
    let branch = git_ref.strip_prefix("refs/heads/");
    let tag = git_ref.strip_prefix("refs/tags/");
    match &config.environments {
        Some(envs) if !envs.is_empty() => envs
            .iter()
            .filter(|(_, e)| {
                branch.is_some_and(|b| e.branch.as_deref() == Some(b))
                    || tag.is_some_and(|t| {
                        e.tags
                            .as_deref()
                            .is_some_and(|p| crate::names::glob_match(p, t))
                    })
            })
            .map(|(name, _)| target(config, name))
            .collect(),
        _ => {
            let default = matches!(branch, Some("main" | "master"))
                || tag.is_some_and(|t| crate::names::glob_match("v*", t));
            if default {
                vec![target(config, "production")]
            } else {
                vec![]
            }
        }
    }
}

/// The app's `magrathea.yml` as cooked into a release (`app/magrathea.yml` in the tarball).
/// The environment `env` as the release's own magrathea.yml describes it.
pub fn target_of_release(
    data: &crate::paths::DataDir,
    release: &crate::store::ReleaseRow,
    env: &str,
) -> EnvTarget {
    target(
        &config_of_release(&data.releases(&release.app).join(&release.file)),
        env,
    )
}

/// What a release's own files say: its `magrathea.yml` and its `app.json` (an unreadable
/// app.json is kept as the error, so a deploy can refuse it in words).
#[derive(Debug, Clone)]
pub struct ReleaseMeta {
    pub config: AppConfig,
    pub app_json: Result<AppJson, String>,
}

pub fn config_of_release(tarball: &Path) -> AppConfig {
    meta_of_release(tarball).config
}

/// Releases never change once cooked (the file name carries the digest), so each is read
/// once per controller process: a rollback must not decompress a large tarball again.
pub fn meta_of_release(tarball: &Path) -> ReleaseMeta {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<std::path::PathBuf, ReleaseMeta>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(c) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(tarball) {
        return c.clone();
    }
    let c = read_meta_of_release(tarball);
    if tarball.is_file() {
        cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tarball.to_path_buf(), c.clone());
    }
    c
}

/// One pass over the tarball for `app/magrathea.yml` and `app/app.json`. Only regular file
/// entries count (a symlink of either name is never followed), each read up to its bound.
fn read_meta_of_release(tarball: &Path) -> ReleaseMeta {
    let mut meta = ReleaseMeta {
        config: AppConfig::default(),
        app_json: Ok(AppJson::default()),
    };
    let Ok(f) = std::fs::File::open(tarball) else {
        return meta;
    };
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let Ok(entries) = ar.entries() else {
        return meta;
    };
    let (mut seen_cfg, mut seen_json, mut seen_checks) = (false, false, false);
    let mut checks: Result<Vec<appjson::Check>, String> = Ok(vec![]);
    for e in entries.flatten() {
        let mut e = e;
        let Ok(path) = e.path().map(|p| p.into_owned()) else {
            continue;
        };
        let regular = e.header().entry_type() == tar::EntryType::Regular;
        if regular && path == Path::new("app/magrathea.yml") {
            let mut s = String::new();
            let _ = e.by_ref().take(256 << 10).read_to_string(&mut s);
            meta.config = appconfig::parse(&s).unwrap_or_default();
            seen_cfg = true;
        } else if regular && path == Path::new("app/app.json") {
            let mut b = Vec::new();
            let _ = e
                .by_ref()
                .take(appjson::MAX_SIZE as u64 + 1)
                .read_to_end(&mut b);
            meta.app_json = match String::from_utf8(b) {
                Ok(s) => appjson::parse(&s),
                Err(_) => Err("app.json: not UTF-8".into()),
            };
            seen_json = true;
        } else if regular && path == Path::new("app/CHECKS") {
            let mut b = Vec::new();
            let _ = e
                .by_ref()
                .take(appjson::MAX_SIZE as u64 + 1)
                .read_to_end(&mut b);
            checks = match String::from_utf8(b) {
                Ok(s) => appjson::parse_checks(&s),
                Err(_) => Err("CHECKS: not UTF-8".into()),
            };
            seen_checks = true;
        }
        if seen_cfg && seen_json && seen_checks {
            break;
        }
    }
    // Dokku's CHECKS file: web's startup checks when app.json has none.
    meta.app_json = match (meta.app_json, checks) {
        (Ok(a), Ok(c)) => Ok(a.with_checks_file(c)),
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    meta
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_to_environments() {
        let none = AppConfig::default();
        assert_eq!(for_ref(&none, "refs/heads/main")[0].env, "production");
        assert_eq!(for_ref(&none, "refs/tags/v1.4.0")[0].env, "production");
        assert!(for_ref(&none, "refs/heads/feature").is_empty());
        let c = appconfig::parse(
            "healthcheck: { path: /health, timeout: 2s, attempts: 3 }\nenvironments:\n  staging: { branch: main, nodes: { env: staging } }\n  production: { tags: \"v*\", nodes: { env: prod }, scale: { web: 2 }, env: { LOG_LEVEL: warn } }\n",
        )
        .unwrap();
        let s = for_ref(&c, "refs/heads/main");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].env, "staging");
        assert_eq!(s[0].selector["env"], "staging");
        let p = for_ref(&c, "refs/tags/v2");
        assert_eq!(p[0].env, "production");
        assert_eq!(p[0].scale["web"], 2);
        assert_eq!(p[0].vars["LOG_LEVEL"], "warn");
        assert_eq!(p[0].health.path, "/health");
        assert_eq!(p[0].health.timeout_ms, 2000);
        assert!(for_ref(&c, "refs/heads/dev").is_empty());
        assert_eq!(parse_duration_ms("500ms"), Some(500));
        assert_eq!(parse_duration_ms("2m"), Some(120_000));
        // Found by fuzzing: overflowed (a panic in debug builds, a wrapped value in release).
        assert_eq!(parse_duration_ms("999999999999999m"), None);
    }

    #[test]
    fn web_checks_from_app_json_or_checks_file() {
        let none = AppConfig::default();
        // docker-container-healthchecker's uptime check: up (and answering) after 10 s.
        let a = appjson::parse(
            r#"{"healthchecks": {"web": [{"type": "startup", "name": "up", "uptime": 10}]}}"#,
        )
        .unwrap();
        let h = app_json_checks(&none, &a);
        assert_eq!((h[0].initial_delay_ms, h[0].strict), (10_000, false));
        let a = AppJson::default()
            .with_checks_file(appjson::parse_checks("WAIT=1\nATTEMPTS=4\n/health ok").unwrap());
        let h = app_json_checks(&none, &a);
        assert_eq!(h.len(), 1);
        assert_eq!((h[0].path.as_str(), h[0].strict), ("/health", true));
        assert_eq!((h[0].attempts, h[0].interval_ms), (4, 1000));
        assert_eq!(h[0].content.as_deref(), Some("ok"));
        assert!(h[0].setting.contains("CHECKS file"), "{}", h[0].setting);
    }
}
