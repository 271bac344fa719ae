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
    /// Process counts for every environment (an environment's own `scale` wins per type).
    #[serde(default)]
    pub scale: Option<BTreeMap<String, u32>>,
    /// Memory limit of each process (`512M`, `1G`); placement reserves this much on a node.
    #[serde(default)]
    pub memory: Option<String>,
    /// CPUs each process may use (`0.5`, `2`; Docker's `--cpus`); placement counts it
    /// against a node's CPUs. Without it processes share the CPUs unlimited.
    #[serde(default)]
    pub cpu: Option<f64>,
    /// Services each environment gets on its first deploy, created and linked before the
    /// release command: `db: postgres`, `cache: redis`, `sql: mariadb`, or with a memory
    /// limit and scheduled backups
    /// `db: { type: postgres, memory: 1G, backup: { every: 24h, keep: 7 } }` (see
    /// `controller::services`).
    #[serde(default)]
    pub services: Option<BTreeMap<String, ServiceDecl>>,
}

/// One entry of `services:`: the type alone, or the type with a memory limit and a backup
/// schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceDecl {
    Type(String),
    Full(ServiceFull),
}

impl<'de> Deserialize<'de> for ServiceDecl {
    /// A string or a map, each with its own errors (an untagged enum would only say that
    /// nothing matched).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ServiceDecl;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a service type (postgres) or { type: postgres, memory: 1G, backup: { every: 24h, keep: 7 } }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ServiceDecl, E> {
                Ok(ServiceDecl::Type(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                m: A,
            ) -> Result<ServiceDecl, A::Error> {
                ServiceFull::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(ServiceDecl::Full)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceFull {
    #[serde(rename = "type")]
    pub kind: String,
    /// The service container's memory limit (`512M` when not given), which the server
    /// inside is tuned to (see `agent/services/entry.sh`).
    #[serde(default)]
    pub memory: Option<String>,
    #[serde(default)]
    pub backup: Option<BackupDecl>,
}

/// `backup: { every: 24h, keep: 7 }`: a backup every `every`, the newest `keep` scheduled
/// ones kept.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackupDecl {
    pub every: String,
    #[serde(default)]
    pub keep: Option<u32>,
}

/// A backup schedule, checked: seconds between backups, scheduled backups kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupSchedule {
    pub every: u64,
    pub keep: u32,
}

/// Scheduled backups kept when `keep` is not given.
pub const DEFAULT_BACKUP_KEEP: u32 = 7;

impl ServiceDecl {
    pub fn kind(&self) -> &str {
        match self {
            ServiceDecl::Type(t) => t,
            ServiceDecl::Full(f) => &f.kind,
        }
    }

    /// The memory limit in bytes, when given (already checked by [`parse`]).
    pub fn memory(&self) -> Option<i64> {
        match self {
            ServiceDecl::Full(ServiceFull {
                memory: Some(m), ..
            }) => parse_size(m),
            _ => None,
        }
    }

    /// The schedule (already checked by [`parse`]).
    pub fn schedule(&self) -> Option<BackupSchedule> {
        match self {
            ServiceDecl::Full(ServiceFull {
                backup: Some(b), ..
            }) => Some(BackupSchedule {
                every: parse_interval(&b.every)?,
                keep: b.keep.unwrap_or(DEFAULT_BACKUP_KEEP),
            }),
            _ => None,
        }
    }
}

/// `30s`, `15m`, `6h`, `1d`, `2w`: seconds.
pub fn parse_interval(s: &str) -> Option<u64> {
    let t = s.trim();
    let unit = t.chars().last()?;
    let (num, mult) = match unit {
        's' => (&t[..t.len() - 1], 1u64),
        'm' => (&t[..t.len() - 1], 60),
        'h' => (&t[..t.len() - 1], 3600),
        'd' => (&t[..t.len() - 1], 86_400),
        'w' => (&t[..t.len() - 1], 7 * 86_400),
        _ => return None,
    };
    let n: u64 = num.trim().parse().ok()?;
    n.checked_mul(mult)
        .filter(|s| (1..=366 * 86_400).contains(s))
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default)]
    pub path: Option<String>,
    /// Per request.
    #[serde(default)]
    pub timeout: Option<String>,
    /// How many requests, `interval` apart (the older way to say how long boot may take).
    #[serde(default)]
    pub attempts: Option<u32>,
    /// How long a web process has to answer (default 60s, Heroku's boot timeout).
    #[serde(default)]
    pub boot_timeout: Option<String>,
    /// Between requests (default 500ms).
    #[serde(default)]
    pub interval: Option<String>,
    /// The body must contain this.
    #[serde(default)]
    pub content: Option<String>,
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
    /// Run on this cluster (`clusters:add`) instead of nodes.
    #[serde(default)]
    pub cluster: Option<String>,
    /// With `cluster`: Swarm placement constraints on node labels
    /// (`node.labels.zone==eu-1`).
    #[serde(default)]
    pub placement: Option<Vec<String>>,
    #[serde(default)]
    pub scale: Option<BTreeMap<String, u32>>,
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
}

/// `512M`, `1G`, `1.5G`, `256MiB`, `64m`, `2048` (MiB): a memory size in bytes. Binary
/// units (M = MiB), as Docker reads them.
pub fn parse_size(s: &str) -> Option<i64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix("ib")
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(&t);
    let (num, mult) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 1i64 << 10),
        'm' => (&t[..t.len() - 1], 1 << 20),
        'g' => (&t[..t.len() - 1], 1 << 30),
        't' => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1 << 20),
    };
    let n: f64 = num.trim().parse().ok()?;
    let bytes = n * mult as f64;
    (n.is_finite() && n > 0.0 && bytes < (1i64 << 50) as f64).then_some(bytes as i64)
}

fn yaml_error(what: &str, e: impl std::fmt::Display) -> String {
    let msg = e.to_string();
    let first = msg.lines().next().unwrap_or("").trim();
    format!("{what}: {first}")
}

/// A service's memory limit: a size from 128 MiB (less starves MariaDB's own start) to 1 TiB.
pub fn service_memory(s: &str) -> Option<i64> {
    parse_size(s).filter(|b| (128 << 20..=1 << 40).contains(b))
}

/// The types `services:` may name.
pub const SERVICE_TYPES: [&str; 3] = ["postgres", "redis", "mariadb"];

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
    if let Some(m) = &c.memory {
        match parse_size(m) {
            Some(b) if (16 << 20..=1 << 40).contains(&b) => {}
            _ => {
                return Err(format!(
                    "magrathea.yml: memory: {m:?} is not a size from 16M to 1T (e.g. 256M, 1G)"
                ))
            }
        }
    }
    for (key, decl) in c.services.iter().flatten() {
        crate::names::check("service key", key)
            .map_err(|e| format!("magrathea.yml: services: {e}"))?;
        let kind = decl.kind();
        if !SERVICE_TYPES.contains(&kind) {
            return Err(format!(
                "magrathea.yml: services.{key}: unknown type {:?} (postgres, redis or mariadb)",
                kind.chars().take(40).collect::<String>()
            ));
        }
        if let ServiceDecl::Full(ServiceFull {
            memory: Some(m), ..
        }) = decl
        {
            if service_memory(m).is_none() {
                return Err(format!(
                    "magrathea.yml: services.{key}.memory: {:?} is not a size from 128M to 1T (e.g. 512M, 2G)",
                    m.chars().take(40).collect::<String>()
                ));
            }
        }
        if let ServiceDecl::Full(ServiceFull {
            backup: Some(b), ..
        }) = decl
        {
            if parse_interval(&b.every).is_none() {
                return Err(format!(
                    "magrathea.yml: services.{key}.backup.every: {:?} is not an interval (e.g. 24h, 6h, 30m, 7d)",
                    b.every.chars().take(40).collect::<String>()
                ));
            }
            if !(1..=1000).contains(&b.keep.unwrap_or(DEFAULT_BACKUP_KEEP)) {
                return Err(format!(
                    "magrathea.yml: services.{key}.backup.keep: keep 1 to 1000 backups"
                ));
            }
        }
    }
    if let Some(cpu) = c.cpu {
        if !(0.01..=1024.0).contains(&cpu) {
            return Err(format!(
                "magrathea.yml: cpu: {cpu} is not a CPU count from 0.01 to 1024 (e.g. 0.5, 2)"
            ));
        }
    }
    if let Some(h) = &c.healthcheck {
        if h.attempts.is_some() && h.boot_timeout.is_some() {
            return Err(
                "magrathea.yml: healthcheck: give boot_timeout or attempts, not both".into(),
            );
        }
        for (k, v) in [
            ("timeout", &h.timeout),
            ("boot_timeout", &h.boot_timeout),
            ("interval", &h.interval),
        ] {
            if let Some(v) = v {
                if parse_duration_ms(v).is_none() {
                    return Err(format!(
                        "magrathea.yml: healthcheck.{k}: {v:?} is not a duration (e.g. 30s, 500ms, 2m)"
                    ));
                }
            }
        }
    }
    if let Some(p) = &c.processes {
        for k in p.keys() {
            crate::names::check("process type", k).map_err(|e| format!("magrathea.yml: {e}"))?;
        }
    }
    for (name, e) in c.environments.iter().flatten() {
        check_placement(name, e)?;
    }
    let scales = c.scale.iter().chain(
        c.environments
            .iter()
            .flat_map(|e| e.values())
            .filter_map(|e| e.scale.as_ref()),
    );
    for s in scales {
        for k in s.keys() {
            crate::names::check("process type", k)
                .map_err(|e| format!("magrathea.yml scale: {e}"))?;
        }
    }
    Ok(c)
}

/// An environment runs on nodes or on one cluster, and only a cluster takes placement
/// constraints, each `node.labels.KEY==VALUE` (or `!=`) of plain words.
fn check_placement(env: &str, e: &Environment) -> Result<(), String> {
    let word = |w: &str| {
        !w.is_empty()
            && w.len() <= 64
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    if let Some(c) = &e.cluster {
        crate::names::check("cluster", c)
            .map_err(|err| format!("magrathea.yml environments.{env}.cluster: {err}"))?;
        if e.nodes.is_some() {
            return Err(format!(
                "magrathea.yml environments.{env}: give nodes or cluster, not both"
            ));
        }
    }
    for p in e.placement.iter().flatten() {
        if e.cluster.is_none() {
            return Err(format!(
                "magrathea.yml environments.{env}.placement: only a cluster takes placement constraints"
            ));
        }
        let ok = p.strip_prefix("node.labels.").is_some_and(|rest| {
            let (k, v) = rest
                .split_once("==")
                .or_else(|| rest.split_once("!="))
                .unwrap_or(("", ""));
            word(k) && word(v)
        });
        if !ok {
            return Err(format!(
                "magrathea.yml environments.{env}.placement: {:?} is not node.labels.KEY==VALUE (or !=)",
                p.chars().take(80).collect::<String>()
            ));
        }
    }
    Ok(())
}

/// A Procfile: `type: command` per line; `#` comments and blank lines ignored.
pub fn parse_procfile(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    // Windows editors start a UTF-8 file with a byte order mark; it is not part of `web`.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
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
            // Never echo control characters (or a whole line) back to a terminal.
            let shown: String = k.chars().filter(|c| !c.is_control()).take(60).collect();
            return Err(format!(
                "Procfile line {}: invalid process type '{shown}'",
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
    /// Scalars of any kind (`WEB_CONCURRENCY: 2`); see [`BuildpackRelease::config_vars`].
    #[serde(default, rename = "config_vars")]
    pub raw_config_vars: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub addons: Option<serde_json::Value>,
}

impl BuildpackRelease {
    /// `config_vars` as strings: numbers and booleans as written, null as empty, nested
    /// values as JSON.
    pub fn config_vars(&self) -> BTreeMap<String, String> {
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        };
        self.raw_config_vars
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), text(v)))
            .collect()
    }

    /// `addons` as names (`heroku-postgresql:mini`); anything else as JSON.
    pub fn addons(&self) -> Vec<String> {
        let items = match &self.addons {
            Some(serde_json::Value::Array(a)) => a.clone(),
            Some(serde_json::Value::Null) | None => vec![],
            Some(other) => vec![other.clone()],
        };
        items
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            })
            .collect()
    }
}

pub fn parse_release(text: &str) -> Result<BuildpackRelease, String> {
    if text.trim().is_empty() || text.trim() == "---" {
        return Ok(BuildpackRelease::default());
    }
    serde_saphyr::from_str(text).map_err(|e| yaml_error("bin/release output", e))
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
    // A duration too large for u64 is no duration (it overflowed, and panicked in tests).
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_short_and_with_a_backup_schedule() {
        let c = parse(
            "services:\n  db: { type: postgres, memory: 2G, backup: { every: 24h, keep: 3 } }\n  cache: redis\n  sql:\n    type: mariadb\n    backup: { every: 30m }\n",
        )
        .unwrap();
        let s = c.services.unwrap();
        assert_eq!(s["db"].kind(), "postgres");
        assert_eq!(
            s["db"].schedule(),
            Some(BackupSchedule {
                every: 86_400,
                keep: 3
            })
        );
        assert_eq!(s["db"].memory(), Some(2 << 30));
        assert_eq!(s["cache"].kind(), "redis");
        assert_eq!(s["cache"].schedule(), None);
        assert_eq!(s["cache"].memory(), None);
        assert_eq!(s["sql"].memory(), None);
        assert_eq!(s["sql"].schedule().unwrap().every, 1800);
        assert_eq!(s["sql"].schedule().unwrap().keep, DEFAULT_BACKUP_KEEP);
        for (bad, says) in [
            (
                "{ type: postgres, backup: { every: soon } }",
                "backup.every",
            ),
            (
                "{ type: postgres, backup: { every: 1h, keep: 0 } }",
                "backup.keep",
            ),
            ("{ type: mongo }", "unknown type"),
            ("{ type: postgres, memory: 64M }", "memory"),
            ("{ type: postgres, memory: lots }", "memory"),
            ("{ type: redis, memory: 2T }", "memory"),
            (
                "{ type: postgres, backups: { every: 1h } }",
                "unknown field",
            ),
            (
                "{ type: postgres, backup: { every: 1h, kept: 2 } }",
                "unknown field",
            ),
            ("[postgres]", "a service type"),
        ] {
            let e = parse(&format!("services:\n  db: {bad}\n")).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        assert_eq!(parse_interval("5s"), Some(5));
        assert_eq!(parse_interval("2w"), Some(14 * 86_400));
        assert_eq!(parse_interval("0h"), None);
        assert_eq!(parse_interval("24"), None);
        assert_eq!(parse_interval("99999999999999999d"), None);
    }

    #[test]
    fn an_environment_runs_on_nodes_or_one_cluster() {
        let ok = parse(
            "environments:\n  production: { cluster: sw, placement: [\"node.labels.zone==eu-1\", \"node.labels.gpu!=no\"] }\n",
        )
        .unwrap();
        let e = &ok.environments.unwrap()["production"];
        assert_eq!(e.cluster.as_deref(), Some("sw"));
        assert_eq!(e.placement.as_ref().unwrap().len(), 2);
        for (bad, says) in [
            ("{ cluster: sw, nodes: { env: prod } }", "not both"),
            ("{ placement: [\"node.labels.a==b\"] }", "only a cluster"),
            (
                "{ cluster: sw, placement: [\"node.role==manager\"] }",
                "node.labels.KEY==VALUE",
            ),
            (
                "{ cluster: sw, placement: [\"node.labels.a==b c\"] }",
                "node.labels.KEY==VALUE",
            ),
            ("{ cluster: \"Bad Name\" }", "cluster"),
        ] {
            let e = parse(&format!("environments:\n  production: {bad}\n")).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

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
    fn sizes() {
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("1.5g"), Some(3 << 29));
        assert_eq!(parse_size("256MiB"), Some(256 << 20));
        assert_eq!(parse_size("2048"), Some(2048 << 20));
        for bad in ["", "x", "-1G", "0", "1Q", "NaN"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
        assert!(parse("memory: 8K").is_err());
        assert!(parse("memory: 256M").is_ok());
        assert!(parse("cpu: 0.5").is_ok());
        assert!(parse("cpu: 0").is_err());
        assert!(parse("healthcheck: { attempts: 3, boot_timeout: 30s }").is_err());
        assert!(parse("healthcheck: { boot_timeout: soon }").is_err());
        assert!(parse("scale: { Web: 1 }").is_err());
    }

    #[test]
    fn procfile() {
        let p = parse_procfile("# c\nweb: busybox httpd -f -p $PORT\n\nworker:  sh -c 'x: y'\n")
            .unwrap();
        assert_eq!(p["web"], "busybox httpd -f -p $PORT");
        assert_eq!(p["worker"], "sh -c 'x: y'");
        assert!(parse_procfile("web").is_err());
        // Dokku's sample apps: comment blocks, an inline comment (left to the shell), a
        // one-shot type; a byte order mark and CRLF lines from a Windows editor.
        let p = parse_procfile(
            "\u{feff}###\r\n# dev\r\nweb: python3 web.py # inline\r\ncustom: echo -n\r\nrelease: touch /app/r\r\n\r\n#dj2: x\r\n",
        )
        .unwrap();
        assert_eq!(p.keys().collect::<Vec<_>>(), ["custom", "release", "web"]);
        assert_eq!(p["web"], "python3 web.py # inline");
        assert!(parse_procfile("Web: x").is_err());
        assert!(parse_procfile("web: a\nweb: b").is_err());
        // Found by fuzzing: the bad type was echoed with its control characters.
        let e = parse_procfile("w\x1b[2Jeb\r\x07x: a").unwrap_err();
        assert_eq!(e, "Procfile line 1: invalid process type 'w[2Jebx'");
    }

    #[test]
    fn release_output() {
        let r = parse_release(
            "---\naddons:\n  - heroku-postgresql:mini\nconfig_vars:\n  WEB_CONCURRENCY: 2\n  LANG: en_US.UTF-8\n  DEBUG: false\ndefault_process_types:\n  web: gunicorn app:app\n",
        )
        .unwrap();
        assert_eq!(
            r.config_vars(),
            BTreeMap::from([
                ("WEB_CONCURRENCY".into(), "2".into()),
                ("LANG".into(), "en_US.UTF-8".into()),
                ("DEBUG".into(), "false".into()),
            ])
        );
        assert_eq!(r.addons(), vec!["heroku-postgresql:mini".to_string()]);
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
