//! The app's own `magrathea.yml` (optional, repo root), the Procfile, and buildpack `release`
//! output. All of it arrives inside untrusted pushes, so it is parsed with serde-saphyr
//! (panic-free, duplicate keys rejected) into plain types, with clear errors.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    #[serde(default)]
    pub stack: Option<String>,
    #[serde(default)]
    pub buildpacks: Option<Vec<String>>,
    #[serde(default)]
    pub processes: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub release: Option<String>,
    #[serde(default)]
    pub healthcheck: Option<HealthCheck>,
    #[serde(default)]
    pub keep_releases: Option<u32>,
    #[serde(default)]
    pub data: Option<Vec<String>>,
    #[serde(default)]
    pub environments: Option<BTreeMap<String, Environment>>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub attempts: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    #[serde(default)]
    pub branch: Option<String>,
    #[serde(default)]
    pub tags: Option<String>,
    #[serde(default)]
    pub nodes: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub scale: Option<BTreeMap<String, u32>>,
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
}

fn yaml_error(what: &str, e: impl std::fmt::Display) -> String {
    let msg = e.to_string();
    let first = msg.lines().next().unwrap_or("").trim();
    format!("{what}: {first}")
}

pub fn parse(text: &str) -> Result<AppConfig, String> {
    if text.trim().is_empty() {
        return Ok(AppConfig::default());
    }
    if text.len() > 256 << 10 {
        return Err("magrathea.yml: larger than 256 KiB".into());
    }
    let c: AppConfig = serde_saphyr::from_str(text).map_err(|e| yaml_error("magrathea.yml", e))?;
    if let Some(s) = &c.stack {
        crate::names::check("stack", s).map_err(|e| format!("magrathea.yml: {e}"))?;
    }
    if let Some(p) = &c.processes {
        for k in p.keys() {
            crate::names::check("process type", k).map_err(|e| format!("magrathea.yml: {e}"))?;
        }
    }
    Ok(c)
}

/// A Procfile: `type: command` per line; `#` comments and blank lines ignored.
pub fn parse_procfile(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let Some((k, v)) = l.split_once(':') else {
            return Err(format!("Procfile line {}: expected 'type: command'", i + 1));
        };
        let (k, v) = (k.trim(), v.trim());
        if !crate::names::valid(k) {
            return Err(format!(
                "Procfile line {}: invalid process type '{k}'",
                i + 1
            ));
        }
        if v.is_empty() {
            return Err(format!("Procfile line {}: empty command for '{k}'", i + 1));
        }
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("Procfile line {}: '{k}' defined twice", i + 1));
        }
    }
    Ok(out)
}

/// What a buildpack's `bin/release` prints.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct BuildpackRelease {
    #[serde(default)]
    pub default_process_types: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub config_vars: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub addons: Option<serde_json::Value>,
}

pub fn parse_release(text: &str) -> Result<BuildpackRelease, String> {
    if text.trim().is_empty() || text.trim() == "---" {
        return Ok(BuildpackRelease::default());
    }
    serde_saphyr::from_str(text).map_err(|e| yaml_error("bin/release output", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_config() {
        let c = parse(
            "stack: bookworm\nbuildpacks: [python]\nprocesses: { web: \"gunicorn app:app\" }\nrelease: \"python manage.py migrate\"\nhealthcheck: { path: /health, timeout: 5s, attempts: 10 }\nkeep_releases: 10\ndata: [uploads]\nenvironments:\n  staging: { branch: main, nodes: { env: staging } }\n  production: { tags: \"v*\", nodes: { env: prod }, scale: { web: 2 }, env: { LOG_LEVEL: warn } }\n",
        )
        .unwrap();
        assert_eq!(c.stack.as_deref(), Some("bookworm"));
        assert_eq!(
            c.environments.unwrap()["production"]
                .scale
                .as_ref()
                .unwrap()["web"],
            2
        );
        assert!(parse("stak: x").unwrap_err().contains("magrathea.yml"));
        assert!(parse("stack: x\nstack: y").is_err(), "duplicate keys");
        assert!(parse("stack: ../x").is_err());
        assert_eq!(parse("").unwrap(), AppConfig::default());
    }

    #[test]
    fn procfile() {
        let p = parse_procfile("# c\nweb: busybox httpd -f -p $PORT\n\nworker:  sh -c 'x: y'\n")
            .unwrap();
        assert_eq!(p["web"], "busybox httpd -f -p $PORT");
        assert_eq!(p["worker"], "sh -c 'x: y'");
        assert!(parse_procfile("web").is_err());
        assert!(parse_procfile("Web: x").is_err());
        assert!(parse_procfile("web: a\nweb: b").is_err());
    }

    #[test]
    fn release_output() {
        let r = parse_release("---\ndefault_process_types:\n  web: npm start\n").unwrap();
        assert_eq!(r.default_process_types.unwrap()["web"], "npm start");
        assert_eq!(parse_release("").unwrap(), BuildpackRelease::default());
        assert_eq!(
            parse_release("default_process_types: {}")
                .unwrap()
                .default_process_types
                .unwrap()
                .len(),
            0
        );
    }
}
