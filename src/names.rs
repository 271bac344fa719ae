//! The one grammar every name (app, key, node, environment) is checked against before it
//! reaches a path, a query or a process argument.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "invalid {kind} name '{name}': use 1-40 characters a-z, 0-9 and '-', starting with a letter"
)]
pub struct InvalidName {
    pub kind: &'static str,
    pub name: String,
}

/// `^[a-z][a-z0-9-]{0,39}$`
pub fn valid(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 40
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// A node's name for one environment of an app: `app` (production) or `app.env`, each part
/// in the app grammar. The dot can never appear in an app name, so two apps never collide.
pub fn valid_node_app(name: &str) -> bool {
    match name.split_once('.') {
        Some((app, env)) => valid(app) && valid(env),
        None => valid(name),
    }
}

/// The app a valid node app name (`app` or `app.env`) belongs to.
pub fn node_app_of(name: &str) -> Option<&str> {
    if !valid_node_app(name) {
        return None;
    }
    Some(name.split_once('.').map_or(name, |(app, _)| app))
}

pub fn check_node_app(name: &str) -> Result<&str, InvalidName> {
    if valid_node_app(name) {
        Ok(name)
    } else {
        Err(InvalidName {
            kind: "app",
            name: name.chars().filter(|c| !c.is_control()).take(60).collect(),
        })
    }
}

pub fn check<'a>(kind: &'static str, name: &'a str) -> Result<&'a str, InvalidName> {
    if valid(name) {
        Ok(name)
    } else {
        Err(InvalidName {
            kind,
            // Never echo control characters back to a terminal.
            name: name.chars().filter(|c| !c.is_control()).take(60).collect(),
        })
    }
}

/// The repository argument git clients send: `myapp`, `myapp.git`, `/myapp.git`, `~/myapp`,
/// possibly quoted. Returns the bare app name, validated.
pub fn app_from_repo_arg(arg: &str) -> Result<&str, InvalidName> {
    let mut s = arg.trim();
    for q in ['\'', '"'] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            s = &s[1..s.len() - 1];
        }
    }
    let s = s.strip_prefix("~/").unwrap_or(s);
    let s = s.trim_start_matches('/');
    let s = s.strip_suffix(".git").unwrap_or(s);
    check("app", s)
}

/// A name checked against the grammar when it is made (by clap's parser, through
/// `FromStr`), so a function that takes one cannot be handed an unchecked string. Derefs to
/// `str` for reading.
macro_rules! checked_name {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl std::str::FromStr for $name {
            type Err = InvalidName;
            fn from_str(s: &str) -> Result<Self, InvalidName> {
                check($kind, s).map(|s| $name(s.to_string()))
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

checked_name!(
    /// An app's name.
    AppName,
    "app"
);
checked_name!(
    /// An environment's name (`production`, `staging`).
    EnvName,
    "environment"
);
checked_name!(
    /// A registered key's name.
    KeyName,
    "key"
);
checked_name!(
    /// A node's name.
    NodeName,
    "node"
);
checked_name!(
    /// A service's name (Postgres, Redis, MariaDB): its host name on the apps' networks.
    ServiceName,
    "service"
);
checked_name!(
    /// A Procfile process type (`web`, `worker`).
    ProcessType,
    "process type"
);

/// A process type (`web`) or one process of it (`web.2`): the type in the name grammar,
/// the number 1 to 99999.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessName(String);

#[derive(Debug, Error, PartialEq, Eq)]
#[error("--process '{0}': expected a process type (web) or process (web.1)")]
pub struct InvalidProcess(String);

impl std::str::FromStr for ProcessName {
    type Err = InvalidProcess;
    fn from_str(p: &str) -> Result<Self, InvalidProcess> {
        let (t, n) = match p.split_once('.') {
            Some((t, n)) => (t, Some(n)),
            None => (p, None),
        };
        let n_ok = n.is_none_or(|n| {
            !n.is_empty()
                && n.len() < 6
                && n.bytes().all(|b| b.is_ascii_digit())
                && n.parse::<u32>().is_ok_and(|n| n > 0)
        });
        if valid(t) && n_ok {
            Ok(ProcessName(p.to_string()))
        } else {
            Err(InvalidProcess(
                p.chars().filter(|c| !c.is_control()).take(40).collect(),
            ))
        }
    }
}

impl std::ops::Deref for ProcessName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// A release version as users write it: `v3` or `3`, from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version(pub i64);

#[derive(Debug, Error, PartialEq, Eq)]
#[error("'{0}' is not a release version (like v3)")]
pub struct InvalidVersion(String);

impl std::str::FromStr for Version {
    type Err = InvalidVersion;
    fn from_str(v: &str) -> Result<Self, InvalidVersion> {
        v.strip_prefix('v')
            .unwrap_or(v)
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .map(Version)
            .ok_or_else(|| InvalidVersion(v.chars().filter(|c| !c.is_control()).take(40).collect()))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// Glob with `*` (any run) and `?` (one char), used for tag patterns such as `v*`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        // `*` first: a `*` in the text must not consume the pattern's star as a literal.
        if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Tag patterns are names plus `*`, `?`, `.`, `_`: nothing that could mean more to git.
pub fn valid_tag_pattern(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 100
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || "*?.-_/".contains(c))
        && !p.contains("..")
}

/// A host name an app answers at (`www.example.com`), or a wildcard for one level under a
/// domain (`*.example.com`): lowercase ASCII labels of a-z, 0-9 and '-' (IDNs in their
/// `xn--` form), at least two labels, 253 characters at most. Stored lowercased, without a
/// trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostName(String);

#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid host '{0}': use a name like www.example.com or *.example.com (labels of a-z, 0-9 and '-', IDNs as xn--)")]
pub struct InvalidHost(String);

impl HostName {
    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }
}

/// Whether `h` (lowercase, no trailing dot) is a host name or one-level wildcard.
pub fn valid_host(h: &str) -> bool {
    let rest = h.strip_prefix("*.").unwrap_or(h);
    let labels: Vec<&str> = rest.split('.').collect();
    h.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
        // A top-level label is never all digits: that would be an IP address.
        && !labels[labels.len() - 1].bytes().all(|c| c.is_ascii_digit())
}

impl std::str::FromStr for HostName {
    type Err = InvalidHost;
    fn from_str(s: &str) -> Result<Self, InvalidHost> {
        let h = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
        if valid_host(&h) {
            Ok(HostName(h))
        } else {
            Err(InvalidHost(
                s.chars().filter(|c| !c.is_control()).take(60).collect(),
            ))
        }
    }
}

impl std::ops::Deref for HostName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for HostName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where in the pushed tree an app builds from (`builds:set APP build-dir PATH`, or the
/// `APP_BASE` config var): a relative path in normal form (no leading `/`, no empty, `.`
/// or `..` component, no `.git`), printable, at most [`BuildDir::MAX`] bytes. One trailing
/// `/` is accepted and dropped (`api/` is `api`). The export walks the tree object by
/// object, so it names a tree entry, never a path on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildDir(String);

#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid build dir '{0}': give a relative path inside the repository, like api or apps/web (no leading '/', no '.' or '..' parts, at most 255 characters)")]
pub struct InvalidBuildDir(String);

impl BuildDir {
    pub const MAX: usize = 255;
}

impl std::str::FromStr for BuildDir {
    type Err = InvalidBuildDir;
    fn from_str(s: &str) -> Result<Self, InvalidBuildDir> {
        let p = s.strip_suffix('/').unwrap_or(s);
        let ok = !p.is_empty()
            && p.len() <= Self::MAX
            && !p.chars().any(|c| c.is_control() || c == '\\')
            && p.split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".." && !c.eq_ignore_ascii_case(".git"))
            && p.trim() == p;
        if ok {
            Ok(BuildDir(p.to_string()))
        } else {
            Err(InvalidBuildDir(
                s.chars().filter(|c| !c.is_control()).take(60).collect(),
            ))
        }
    }
}

impl std::ops::Deref for BuildDir {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for BuildDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_dirs() {
        for (given, stored) in [
            ("api", "api"),
            ("api/", "api"),
            ("apps/web", "apps/web"),
            ("my app/src", "my app/src"),
            (".config", ".config"),
            ("a..b", "a..b"),
        ] {
            assert_eq!(given.parse::<BuildDir>().unwrap().to_string(), stored);
        }
        let long = "ab/".repeat(90);
        for bad in [
            "",
            "/",
            "/api",
            "api//",
            "a//b",
            ".",
            "./api",
            "api/.",
            "..",
            "../api",
            "api/../web",
            ".git",
            "api/.GIT/x",
            "a\nb",
            "a\u{1b}[31m",
            "a\\b",
            " api",
            "api ",
            &long,
        ] {
            assert!(bad.parse::<BuildDir>().is_err(), "{bad:?}");
        }
        let e = "a\u{1b}b/..".parse::<BuildDir>().unwrap_err().to_string();
        assert!(!e.contains('\u{1b}') && e.contains("ab/.."), "{e}");
        assert!("x".repeat(255).parse::<BuildDir>().is_ok());
        assert!("x".repeat(256).parse::<BuildDir>().is_err());
    }

    #[test]
    fn host_names() {
        for (given, stored) in [
            ("www.example.com", "www.example.com"),
            ("WWW.Example.COM.", "www.example.com"),
            ("*.example.com", "*.example.com"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("a-b.c0", "a-b.c0"),
        ] {
            assert_eq!(given.parse::<HostName>().unwrap().to_string(), stored);
        }
        assert!("*.example.com".parse::<HostName>().unwrap().is_wildcard());
        for bad in [
            "",
            "com",
            "*.com",
            "*",
            "a..b",
            "-a.com",
            "a-.com",
            "a.*.com",
            "**.a.com",
            "a_b.com",
            "b\u{fc}cher.de",
            "1.2.3.4",
            "a.com:80",
            "user@a.com",
            "a .com",
            "*example.com",
            ".a.com",
        ] {
            assert!(bad.parse::<HostName>().is_err(), "{bad}");
        }
        let long = format!("{}.com", vec!["a".repeat(63); 4].join("."));
        assert!(long.parse::<HostName>().is_err());
    }

    #[test]
    fn node_app_names() {
        for ok in ["shop", "shop.staging", "a.b"] {
            assert!(valid_node_app(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "shop.",
            ".staging",
            "a.b.c",
            "shop/../x",
            "Shop.staging",
            "a;b.c",
        ] {
            assert!(!valid_node_app(bad), "{bad}");
            assert!(check_node_app(bad).is_err());
        }
    }

    #[test]
    fn grammar() {
        for ok in ["a", "myapp", "my-app-2", &"a".repeat(40)] {
            assert!(valid(ok), "{ok}");
        }
        for bad in [
            "",
            "1app",
            "-a",
            "A",
            "a;b",
            "../x",
            "a/b",
            "a b",
            "a.b",
            &"a".repeat(41),
            "é",
        ] {
            assert!(!valid(bad), "{bad}");
        }
    }

    #[test]
    fn repo_args() {
        for arg in [
            "myapp",
            "myapp.git",
            "/myapp.git",
            "//myapp.git",
            "~/myapp",
            "'myapp'",
            "'/myapp.git'",
        ] {
            assert_eq!(app_from_repo_arg(arg), Ok("myapp"), "{arg}");
        }
        for arg in ["../x", "'a;b'", "/etc/passwd", "x/../../y", "", "~/"] {
            assert!(app_from_repo_arg(arg).is_err(), "{arg}");
        }
    }

    #[test]
    fn typed_names() {
        assert_eq!(&*"shop".parse::<AppName>().unwrap(), "shop");
        let e = "Shop".parse::<EnvName>().unwrap_err();
        assert_eq!(e.kind, "environment");
        assert!("a;b".parse::<NodeName>().is_err());
        for ok in [
            "web",
            "web.1",
            "worker.12",
            "clock-2.3",
            "web.01",
            "web.99999",
        ] {
            assert!(ok.parse::<ProcessName>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "web.",
            "web.0",
            "web.00",
            "web.x",
            ".1",
            "Web",
            "web.1.2",
            "a/b",
            "web.100000",
        ] {
            assert!(bad.parse::<ProcessName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("v*", "v1.2"));
        assert!(glob_match("v*", "v"));
        assert!(!glob_match("v*", "main"));
        assert!(glob_match("release-?", "release-1"));
        assert!(!glob_match("release-?", "release-12"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        // Found by fuzzing: a literal `*` in the text used up the pattern's star.
        assert!(glob_match("*", "*v1"));
        assert!(glob_match("v*", "v*x"));
        assert!(valid_tag_pattern("v*"));
        assert!(!valid_tag_pattern("v*;rm"));
    }
}
