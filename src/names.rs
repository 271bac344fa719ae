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

#[cfg(test)]
mod tests {
    use super::*;

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
