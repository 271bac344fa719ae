//! Which pushes deploy where: environments from `magrathea.yml` (branch and tag rules, node
//! label selectors, scale, env labels), with Heroku-like defaults when there is no file.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use crate::appconfig::{self, AppConfig};
use crate::node::proto::Health;

#[derive(Debug, Clone)]
pub struct EnvTarget {
    pub env: String,
    pub selector: BTreeMap<String, String>,
    pub scale: BTreeMap<String, u32>,
    pub vars: BTreeMap<String, String>,
    pub health: Health,
}

/// "5s", "500ms", "2m", "10" (seconds).
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else {
        (s, 1000)
    };
    num.trim().parse::<u64>().ok().map(|n| n * mult)
}

fn health(config: &AppConfig) -> Health {
    let mut h = Health::default();
    if let Some(c) = &config.healthcheck {
        if let Some(p) = &c.path {
            if p.starts_with('/') && !p.contains(char::is_whitespace) {
                h.path = p.clone();
            }
        }
        if let Some(ms) = c.timeout.as_deref().and_then(parse_duration_ms) {
            h.timeout_ms = ms.clamp(100, 120_000);
        }
        if let Some(a) = c.attempts {
            h.attempts = a.clamp(1, 600);
        }
    }
    h
}

pub fn target(config: &AppConfig, env: &str) -> EnvTarget {
    let e = config
        .environments
        .as_ref()
        .and_then(|m| m.get(env))
        .cloned()
        .unwrap_or_default();
    EnvTarget {
        env: env.to_string(),
        selector: e.nodes.unwrap_or_default(),
        scale: e.scale.unwrap_or_default(),
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

/// Releases never change once cooked (the file name carries the digest), so each is read
/// once per controller process: a rollback must not decompress a large tarball again.
pub fn config_of_release(tarball: &Path) -> AppConfig {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<std::path::PathBuf, AppConfig>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(c) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(tarball) {
        return c.clone();
    }
    let c = read_config_of_release(tarball);
    if tarball.is_file() {
        cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tarball.to_path_buf(), c.clone());
    }
    c
}

fn read_config_of_release(tarball: &Path) -> AppConfig {
    let Ok(f) = std::fs::File::open(tarball) else {
        return AppConfig::default();
    };
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let Ok(entries) = ar.entries() else {
        return AppConfig::default();
    };
    for e in entries.flatten() {
        let mut e = e;
        let is_cfg = e
            .path()
            .map(|p| p == Path::new("app/magrathea.yml"))
            .unwrap_or(false);
        if is_cfg && e.header().entry_type() == tar::EntryType::Regular {
            let mut s = String::new();
            let _ = e.by_ref().take(256 << 10).read_to_string(&mut s);
            return appconfig::parse(&s).unwrap_or_default();
        }
    }
    AppConfig::default()
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
    }
}
