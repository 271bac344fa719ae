//! The app's `app.json` (Heroku's app manifest, as Dokku reads it): only the keys the
//! platform acts on. `formation` (process counts), `healthchecks` (Dokku's startup checks),
//! `scripts.dokku.predeploy`/`postdeploy`, `scripts.postdeploy` (once, on an environment's
//! first deploy), `buildpacks` (when nothing else names any), `env` (defaults, generated
//! secrets and required variables, on an environment's first deploy) and `cron` (refused
//! work: said at deploy). Every other key (`name`, `addons`, ...) is accepted and ignored,
//! as Dokku does. Comments are allowed (Dokku reads it as JSONC). The file arrives inside an
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
    /// `[{"url": "heroku/python"}, ...]`: the buildpacks, when nothing else names any.
    #[serde(default)]
    pub buildpacks: Option<Vec<BuildpackRef>>,
    /// Config vars the app declares; read through [`AppJson::env_vars`].
    #[serde(default)]
    pub env: Option<BTreeMap<String, serde_json::Value>>,
    /// Dokku's scheduled tasks (not run here).
    #[serde(default)]
    pub cron: Option<Vec<serde_json::Value>>,
    /// The web checks came from a `CHECKS` file, not from app.json.
    #[serde(skip)]
    pub checks_file: bool,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct BuildpackRef {
    #[serde(default)]
    pub url: String,
}

/// One variable of app.json's `env`: a plain value (`"WEB_CONCURRENCY": "5"`) or Heroku's
/// object form (`description`, `value`, `required`, `generator`, and Dokku's `sync`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnvVar {
    pub name: String,
    pub value: Option<String>,
    /// Heroku's and Dokku's default: a variable without a value must be given one.
    pub required: bool,
    /// `"generator": "secret"`: a random 64-character hex string.
    pub secret: bool,
    /// Dokku's `sync`: set to `value` on every deploy, not only the first.
    pub sync: bool,
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
    /// Heroku's (and Dokku's) run-once hook: after an environment's first deploy.
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

    /// The buildpacks app.json names, in order.
    pub fn buildpack_urls(&self) -> Vec<String> {
        self.buildpacks
            .iter()
            .flatten()
            .map(|b| b.url.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// The variables of `env`, checked: names a shell can export, scalar values, the
    /// `secret` generator only.
    pub fn env_vars(&self) -> Result<Vec<EnvVar>, String> {
        use serde_json::Value;
        let scalar = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        };
        let mut out = vec![];
        for (name, v) in self.env.iter().flatten() {
            let shown: String = name.chars().filter(|c| !c.is_control()).take(60).collect();
            let env_name = name.len() <= 128
                && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !env_name {
                return Err(format!("app.json env: '{shown}' is not a variable name"));
            }
            let mut e = EnvVar {
                name: name.clone(),
                required: true,
                ..EnvVar::default()
            };
            match v {
                Value::Object(o) => {
                    let bad =
                        |k: &str, want: &str| format!("app.json env.{shown}: {k} must be {want}");
                    e.value = match o.get("value") {
                        None | Some(Value::Null) => None,
                        Some(v) => Some(scalar(v).ok_or_else(|| bad("value", "a string"))?),
                    };
                    match o.get("required") {
                        None | Some(Value::Null) => {}
                        Some(Value::Bool(b)) => e.required = *b,
                        Some(_) => return Err(bad("required", "true or false")),
                    }
                    match o.get("sync") {
                        None | Some(Value::Null) => {}
                        Some(Value::Bool(b)) => e.sync = *b,
                        Some(_) => return Err(bad("sync", "true or false")),
                    }
                    match o.get("generator") {
                        None | Some(Value::Null) => {}
                        Some(Value::String(g)) if g == "secret" => e.secret = true,
                        Some(_) => return Err(bad("generator", "\"secret\"")),
                    }
                }
                Value::Null => {}
                other => {
                    e.value = Some(scalar(other).ok_or_else(|| {
                        format!("app.json env.{shown}: expected a string or an object")
                    })?)
                }
            }
            out.push(e);
        }
        Ok(out)
    }

    /// Heroku's `scripts.postdeploy` (a command, or `{"command": ...}`): run once, after an
    /// environment's first deploy.
    pub fn first_deploy_script(&self) -> Option<&str> {
        let v = self.scripts.as_ref()?.postdeploy.as_ref()?;
        let s = match v {
            serde_json::Value::String(s) => s.as_str(),
            serde_json::Value::Object(o) => o.get("command")?.as_str()?,
            _ => return None,
        };
        Some(s).filter(|s| !s.trim().is_empty())
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
    // Dokku reads app.json as JSONC: comments (and trailing commas) are allowed.
    let v: serde_json::Value = serde_json::from_str(text)
        .or_else(|e| serde_json::from_str(&strip_jsonc(text)).map_err(|_| e))
        .map_err(|e| format!("app.json: {e}"))?;
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
            // Only web's startup checks gate a deploy here; another type's checks (Dokku
            // runs them in its containers) are not run, so not refused either.
            let gates = t == "web" && c.kind.as_deref().is_none_or(|k| k == "startup");
            if c.command.is_some() && gates {
                return Err(format!(
                    "{at}: command checks are not supported; use a path check"
                ));
            }
        }
    }
    for s in [a.predeploy(), a.postdeploy(), a.first_deploy_script()]
        .into_iter()
        .flatten()
    {
        if s.contains('\0') {
            return Err("app.json scripts: a script holds a NUL byte".into());
        }
    }
    a.env_vars()?;
    for u in a.buildpack_urls() {
        if u.chars().any(char::is_control) {
            return Err("app.json buildpacks: a url holds control characters".into());
        }
    }
    Ok(a)
}

/// JSON with `//` and `/* */` comments and trailing commas made plain JSON: each becomes
/// spaces (newlines stay), so an error still points at the right line and column.
fn strip_jsonc(text: &str) -> String {
    let b = text.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let (mut i, mut in_str) = (0, false);
    while i < b.len() {
        let c = b[i];
        if in_str {
            out.push(c);
            if c == b'\\' && i + 1 < b.len() {
                out.push(b[i + 1]);
                i += 1;
            } else if c == b'"' {
                in_str = false;
            }
            i += 1;
            continue;
        }
        match (c, b.get(i + 1)) {
            (b'"', _) => {
                in_str = true;
                out.push(c);
                i += 1;
            }
            (b'/', Some(b'/')) => {
                while i < b.len() && b[i] != b'\n' {
                    out.push(b' ');
                    i += 1;
                }
            }
            (b'/', Some(b'*')) => {
                let end = text[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
                while i < end {
                    out.push(if b[i] == b'\n' { b'\n' } else { b' ' });
                    i += 1;
                }
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    strip_trailing_commas(&String::from_utf8(out).unwrap_or_default())
}

/// Trailing commas of plain JSON (no comments left) become spaces.
fn strip_trailing_commas(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let mut in_str = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if in_str {
            if c == b'\\' {
                i += 1;
            } else if c == b'"' {
                in_str = false;
            }
        } else if c == b'"' {
            in_str = true;
        } else if c == b',' {
            let next = b[i + 1..].iter().find(|x| !x.is_ascii_whitespace());
            if matches!(next, Some(b'}' | b']')) {
                out[i] = b' ';
            }
        }
        i += 1;
    }
    String::from_utf8(out).unwrap_or_default()
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
    fn jsonc_env_buildpacks_and_run_once_postdeploy() {
        // Dokku 0.37 reads app.json as JSONC; Heroku's and Dokku's env, buildpacks and
        // run-once postdeploy.
        let a = parse(
            r#"{
  // the app's manifest
  "name": "notes", /* shown nowhere */
  "buildpacks": [{"url": "heroku/nodejs"}, {"url": "heroku/python"},],
  "env": {
    "WEB_CONCURRENCY": "3",
    "PAGE_SIZE": 50,
    "SECRET_KEY": {"description": "signs cookies", "generator": "secret"},
    "DATABASE_URL": {"description": "a URL // not a comment", "required": true},
    "SENTRY_DSN": {"required": false},
    "FEATURES": {"value": "dark", "sync": true},
  },
  "scripts": {"postdeploy": {"command": "python manage.py loaddata seed", "size": "basic"}},
  "cron": [{"command": "python tasks.py", "schedule": "@daily"}],
}"#,
        )
        .unwrap();
        assert_eq!(a.buildpack_urls(), ["heroku/nodejs", "heroku/python"]);
        assert_eq!(
            a.first_deploy_script(),
            Some("python manage.py loaddata seed")
        );
        assert_eq!(a.cron.as_ref().map(Vec::len), Some(1));
        let env = a.env_vars().unwrap();
        let get = |n: &str| env.iter().find(|e| e.name == n).unwrap().clone();
        assert_eq!(get("WEB_CONCURRENCY").value.as_deref(), Some("3"));
        assert_eq!(get("PAGE_SIZE").value.as_deref(), Some("50"));
        assert!(get("SECRET_KEY").secret && get("SECRET_KEY").value.is_none());
        assert!(get("DATABASE_URL").required && get("DATABASE_URL").value.is_none());
        assert!(!get("SENTRY_DSN").required);
        assert!(get("FEATURES").sync);
        assert_eq!(
            parse(r#"{"scripts": {"postdeploy": "rake db:seed"}}"#)
                .unwrap()
                .first_deploy_script(),
            Some("rake db:seed")
        );
        // A comment marker inside a string is text; an unclosed comment is an error.
        let a =
            parse("{\"scripts\": {\"dokku\": {\"postdeploy\": \"curl https://x/y\"}}}").unwrap();
        assert_eq!(a.postdeploy(), Some("curl https://x/y"));
        for bad in [
            r#"{"env": {"my-var": "1"}}"#,
            r#"{"env": {"A": {"generator": "uuid"}}}"#,
            r#"{"env": {"A": {"required": "yes"}}}"#,
            r#"{"env": {"A": ["x"]}}"#,
            "{\"name\": 1 /* unclosed",
            "{\"a\": [1,,]}",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.starts_with("app.json"), "{bad}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
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
        // A worker's command check (Dokku runs it in the worker): never run here, not refused.
        let w = parse(r#"{"healthchecks": {"worker": [{"type": "startup", "command": ["pgrep", "celery"]}]}}"#)
            .unwrap();
        assert_eq!(w.startup_checks("worker").len(), 1);
    }
}
