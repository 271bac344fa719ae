//! The app's `app.json` (Heroku's app manifest, as Dokku reads it): only the keys the
//! platform acts on. `formation` (process counts), `healthchecks` (Dokku's startup checks)
//! and `scripts.dokku.predeploy`/`postdeploy`. Every other key (`name`, `env`, `addons`,
//! `buildpacks`, ...) is accepted and ignored, as Dokku does. The file arrives inside an
//! untrusted push: it is size-bounded and parsed into plain types with one-line errors.
//! Dokku's older `CHECKS` file is read here too ([`parse_checks`]): Dokku converts it into
//! web startup checks when app.json has none, and so does the platform.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Larger than this is refused (a manifest, not a data file).
pub const MAX_SIZE: usize = 256 << 10;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct AppJson {
    #[serde(default)]
    pub formation: Option<Formation>,
    #[serde(default)]
    pub healthchecks: Option<BTreeMap<String, Vec<Check>>>,
    #[serde(default)]
    pub scripts: Option<Scripts>,
    /// The web checks came from a `CHECKS` file, not from app.json.
    #[serde(skip)]
    pub checks_file: bool,
}

/// Heroku's object form (`{"web": {"quantity": 1, "size": "basic"}}`) or the older array
/// form (`[{"process": "web", "quantity": 1}]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Formation {
    Map(BTreeMap<String, FormationEntry>),
    List(Vec<FormationItem>),
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct FormationEntry {
    #[serde(default)]
    pub quantity: Option<u32>,
    /// Heroku's dyno size; recorded, not acted on (memory comes from magrathea.yml).
    #[serde(default)]
    pub size: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct FormationItem {
    pub process: String,
    #[serde(default)]
    pub quantity: Option<u32>,
    #[serde(default)]
    pub size: Option<String>,
}

/// One Dokku healthcheck (docker-container-healthchecker's format). Only `startup` checks
/// gate a deploy; `liveness`/`readiness` are Dokku's runtime checks and are ignored here.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Check {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub attempts: Option<u32>,
    /// Seconds between attempts.
    #[serde(default)]
    pub wait: Option<u64>,
    /// Seconds each attempt may take.
    #[serde(default)]
    pub timeout: Option<u64>,
    /// Seconds before the first attempt.
    #[serde(default, rename = "initialDelay")]
    pub initial_delay: Option<u64>,
    /// The body must contain this.
    #[serde(default)]
    pub content: Option<String>,
    /// A command check (run in the container); not supported, refused clearly.
    #[serde(default)]
    pub command: Option<serde_json::Value>,
    /// An uptime check: the process must stay up this many seconds.
    #[serde(default)]
    pub uptime: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Scripts {
    #[serde(default)]
    pub dokku: Option<DokkuScripts>,
    /// Heroku's review-app hook; recorded, not run (Dokku reads `scripts.dokku`).
    #[serde(default)]
    pub postdeploy: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct DokkuScripts {
    #[serde(default)]
    pub predeploy: Option<String>,
    #[serde(default)]
    pub postdeploy: Option<String>,
}

impl AppJson {
    /// Process counts it asks for, by type.
    pub fn formation(&self) -> BTreeMap<String, u32> {
        let mut out = BTreeMap::new();
        match &self.formation {
            Some(Formation::Map(m)) => {
                for (t, e) in m {
                    if let Some(q) = e.quantity {
                        out.insert(t.clone(), q);
                    }
                }
            }
            Some(Formation::List(l)) => {
                for i in l {
                    if let Some(q) = i.quantity {
                        out.insert(i.process.clone(), q);
                    }
                }
            }
            None => {}
        }
        out
    }

    /// The startup checks of process type `ptype`.
    pub fn startup_checks(&self, ptype: &str) -> Vec<&Check> {
        self.healthchecks
            .as_ref()
            .and_then(|h| h.get(ptype))
            .map(|v| {
                v.iter()
                    .filter(|c| c.kind.as_deref().is_none_or(|k| k == "startup"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Takes the web checks of a `CHECKS` file ([`parse_checks`]) when app.json has none
    /// of its own, as Dokku does.
    pub fn with_checks_file(mut self, checks: Vec<Check>) -> AppJson {
        let has_web = self
            .healthchecks
            .as_ref()
            .is_some_and(|h| h.contains_key("web"));
        if !checks.is_empty() && !has_web {
            self.healthchecks
                .get_or_insert_with(BTreeMap::new)
                .insert("web".into(), checks);
            self.checks_file = true;
        }
        self
    }

    pub fn predeploy(&self) -> Option<&str> {
        self.dokku_script(|d| d.predeploy.as_deref())
    }

    pub fn postdeploy(&self) -> Option<&str> {
        self.dokku_script(|d| d.postdeploy.as_deref())
    }

    fn dokku_script(&self, f: impl Fn(&DokkuScripts) -> Option<&str>) -> Option<&str> {
        self.scripts
            .as_ref()
            .and_then(|s| s.dokku.as_ref())
            .and_then(f)
            .filter(|s| !s.trim().is_empty())
    }
}

/// Parses and checks app.json. An empty file is an empty manifest.
pub fn parse(text: &str) -> Result<AppJson, String> {
    if text.trim().is_empty() {
        return Ok(AppJson::default());
    }
    if text.len() > MAX_SIZE {
        return Err("app.json: larger than 256 KiB".into());
    }
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("app.json: {e}"))?;
    if !v.is_object() {
        return Err("app.json: expected a JSON object at the top".into());
    }
    let a: AppJson = serde_json::from_value(v).map_err(|e| format!("app.json: {e}"))?;
    for t in a.formation().keys() {
        crate::names::check("process type", t).map_err(|e| format!("app.json formation: {e}"))?;
    }
    for (t, checks) in a.healthchecks.iter().flatten() {
        crate::names::check("process type", t)
            .map_err(|e| format!("app.json healthchecks: {e}"))?;
        for (i, c) in checks.iter().enumerate() {
            let at = format!("app.json healthchecks.{t}[{i}]");
            if let Some(k) = &c.kind {
                if !matches!(k.as_str(), "startup" | "liveness" | "readiness") {
                    return Err(format!(
                        "{at}: type {k:?} is not one of startup, liveness, readiness"
                    ));
                }
            }
            if let Some(p) = &c.path {
                if !p.starts_with('/') || p.bytes().any(|b| b <= b' ' || b == 0x7f) {
                    return Err(format!(
                        "{at}: path must start with '/' and hold no spaces or control characters"
                    ));
                }
            }
            if c.command.is_some() && c.kind.as_deref().is_none_or(|k| k == "startup") {
                return Err(format!(
                    "{at}: command checks are not supported; use a path check"
                ));
            }
        }
    }
    for s in [a.predeploy(), a.postdeploy()].into_iter().flatten() {
        if s.contains('\0') {
            return Err("app.json scripts.dokku: a script holds a NUL byte".into());
        }
    }
    Ok(a)
}

/// Dokku's `CHECKS` file, as Dokku converts it into app.json startup checks for web: a
/// path per line, optionally followed by text the answer must contain; `WAIT=`, `TIMEOUT=`
/// and `ATTEMPTS=` lines (seconds, seconds, a count) apply to every check; anything after a
/// `#` is a comment. A check written as a URL (`//host/path`, `https://host/path`) is made
/// against its path.
pub fn parse_checks(text: &str) -> Result<Vec<Check>, String> {
    if text.len() > MAX_SIZE {
        return Err("CHECKS: larger than 256 KiB".into());
    }
    let (mut wait, mut timeout, mut attempts) = (None, None, None);
    let mut checks = vec![];
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (i, line) in text.lines().enumerate() {
        let l = line.split('#').next().unwrap_or("").trim();
        if l.is_empty() {
            continue;
        }
        let at = || format!("CHECKS line {}", i + 1);
        let shown = |s: &str| {
            s.chars()
                .filter(|c| !c.is_control())
                .take(60)
                .collect::<String>()
        };
        if let Some((k @ ("WAIT" | "TIMEOUT" | "ATTEMPTS"), v)) =
            l.split_once('=').map(|(k, v)| (k.trim(), v))
        {
            let n: u64 = v
                .trim()
                .parse()
                .map_err(|_| format!("{}: {k}={} is not a whole number", at(), shown(v.trim())))?;
            match k {
                "WAIT" => wait = Some(n),
                "TIMEOUT" => timeout = Some(n),
                _ => attempts = Some(n.min(u32::MAX as u64) as u32),
            }
            continue;
        }
        let (target, content) = match l.split_once(char::is_whitespace) {
            Some((p, c)) => (p, Some(c.trim().to_string()).filter(|c| !c.is_empty())),
            None => (l, None),
        };
        // A URL's scheme and host name the app as Dokku's proxy knew it; the check itself
        // reaches the process directly, so only the path counts.
        let lower = target.to_ascii_lowercase();
        let rest = ["http://", "https://", "//"]
            .iter()
            .find(|p| lower.starts_with(*p))
            .map(|p| &target[p.len()..]);
        let path = match rest {
            Some(r) => r.find('/').map_or("/", |i| &r[i..]),
            None => target,
        };
        if !path.starts_with('/') || path.bytes().any(|b| b < b' ' || b == 0x7f) {
            return Err(format!(
                "{}: '{}' is not a path (write /path, optionally followed by text the answer must hold)",
                at(),
                shown(target)
            ));
        }
        checks.push(Check {
            kind: Some("startup".into()),
            name: Some(format!("check-{}", checks.len() + 1)),
            path: Some(path.to_string()),
            content,
            ..Check::default()
        });
    }
    for c in &mut checks {
        // 0 is Dokku's "not set".
        c.wait = wait.filter(|n| *n > 0);
        c.timeout = timeout.filter(|n| *n > 0);
        c.attempts = attempts.filter(|n| *n > 0);
    }
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heroku_and_dokku_keys() {
        let a = parse(
            r#"{"name": "x", "env": {"A": {"value": "1"}}, "addons": ["heroku-postgresql"],
                "formation": {"web": {"quantity": 2, "size": "standard-1x"}, "worker": {"quantity": 1}, "clock": {}},
                "scripts": {"dokku": {"predeploy": "./pre.sh", "postdeploy": "echo done"}, "postdeploy": "ignored"},
                "healthchecks": {"web": [{"type": "startup", "name": "ready", "path": "/health", "attempts": 4, "wait": 2, "timeout": 3, "content": "ok"},
                                         {"type": "liveness", "path": "/live"}]}}"#,
        )
        .unwrap();
        assert_eq!(
            a.formation(),
            BTreeMap::from([("web".into(), 2), ("worker".into(), 1)])
        );
        assert_eq!(a.predeploy(), Some("./pre.sh"));
        assert_eq!(a.postdeploy(), Some("echo done"));
        let c = a.startup_checks("web");
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].path.as_deref(), Some("/health"));
        assert_eq!(c[0].content.as_deref(), Some("ok"));
        assert!(a.startup_checks("worker").is_empty());

        let old = parse(r#"{"formation": [{"process": "worker", "quantity": 3}]}"#).unwrap();
        assert_eq!(old.formation(), BTreeMap::from([("worker".into(), 3)]));
        assert_eq!(parse("").unwrap(), AppJson::default());
        assert_eq!(parse("{}").unwrap(), AppJson::default());
    }

    #[test]
    fn dokkus_checks_file() {
        // The shape of Dokku's own sample apps' CHECKS files.
        let c = parse_checks(
            "WAIT=2 # wait 2 seconds\nTIMEOUT=5 # set timeout to 5 seconds\nATTEMPTS=2 # try 2 times\n\n/ python/http.server\n# /old\n/health\nhttps://example.com/path nodejs/express\n//localhost:5000 ok\n",
        )
        .unwrap();
        assert_eq!(c.len(), 4);
        assert_eq!(c[0].path.as_deref(), Some("/"));
        assert_eq!(c[0].content.as_deref(), Some("python/http.server"));
        assert_eq!(c[0].name.as_deref(), Some("check-1"));
        assert_eq!(
            (c[0].wait, c[0].timeout, c[0].attempts),
            (Some(2), Some(5), Some(2))
        );
        assert_eq!(c[1].path.as_deref(), Some("/health"));
        assert_eq!(c[1].content, None);
        assert_eq!(c[2].path.as_deref(), Some("/path"));
        assert_eq!(c[2].content.as_deref(), Some("nodejs/express"));
        assert_eq!(c[3].path.as_deref(), Some("/"));
        assert_eq!((c[3].wait, c[3].attempts), (Some(2), Some(2)));
        let only = parse_checks("ATTEMPTS=0\n/").unwrap();
        assert_eq!((only[0].attempts, only[0].wait), (None, None));
        assert!(parse_checks("# nothing\n\nWAIT=3\n").unwrap().is_empty());

        // app.json's own web checks win; else the file's become web's.
        let a = parse(r#"{"healthchecks": {"web": [{"path": "/up"}]}}"#).unwrap();
        let a = a.with_checks_file(c.clone());
        assert_eq!(a.startup_checks("web")[0].path.as_deref(), Some("/up"));
        assert!(!a.checks_file);
        let a = parse(r#"{"formation": {"web": {"quantity": 1}}}"#).unwrap();
        let a = a.with_checks_file(c);
        assert_eq!(a.startup_checks("web").len(), 4);
        assert!(a.checks_file);

        for bad in [
            "WAIT=soon\n/",
            "/ ok\nTIMEOUT=-1",
            "health ok",
            "/\x1b[2J ok\nhttp",
        ] {
            let e = parse_checks(bad).unwrap_err();
            assert!(e.starts_with("CHECKS line "), "{bad}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
            assert!(!e.chars().any(char::is_control), "{e:?}");
        }
    }

    #[test]
    fn bad_input_is_one_line() {
        for bad in [
            "{",
            "[]",
            r#"{"formation": {"Web": {"quantity": 1}}}"#,
            r#"{"formation": {"web": {"quantity": -1}}}"#,
            r#"{"healthchecks": {"web": [{"path": "health"}]}}"#,
            r#"{"healthchecks": {"web": [{"type": "sometimes"}]}}"#,
            r#"{"healthchecks": {"web": [{"command": ["true"]}]}}"#,
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.starts_with("app.json"), "{bad}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }
}
