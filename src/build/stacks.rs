//! Which stack an app builds on when its magrathea.yml names none: the server's default,
//! except where that stack cannot build the app as Heroku or Dokku would, unchanged, and
//! another can: a Go app goes to the stack with Go, and a Python app whose runtime.txt or
//! .python-version names a Python the default lacks goes to the stack that has it (or else
//! the nearest newer one). The languages each stack carries are those scripts/stack-NAME.sh
//! installs.

use std::path::Path;

use super::buildpacks::{select, Buildpack};
use crate::safefs::{self, Kind};

/// The stack whose build image carries Go (Debian 13's; bookworm's 1.19 is too old for
/// today's go.mod files, so that image has none).
pub const GO_STACK: &str = "trixie";

/// Each Debian stack's Python, major.minor.
const PYTHONS: &[(&str, (u32, u32))] = &[("bookworm", (3, 11)), ("trixie", (3, 13))];

/// The files the python builtin detects on (it is tried first).
const PYTHON_FILES: &[&str] = &[
    "requirements.txt",
    "pyproject.toml",
    "setup.py",
    "Pipfile",
    "Pipfile.lock",
];

/// The stack to build on instead of `default`, and why (a line for the build output).
pub fn choose(
    config: Option<&Vec<String>>,
    buildpack_url: Option<&str>,
    src: &Path,
    default: &str,
) -> Option<(&'static str, String)> {
    let named = select(config, buildpack_url, src).ok()?;
    let file = |p: &str| safefs::kind(src, p).ok() == Some(Kind::File);
    let uses = |b: &str, detected: bool| match &named {
        Some(list) => list.contains(&Buildpack::Builtin(match b {
            "go" => "go",
            _ => "python",
        })),
        None => detected,
    };
    // Detection tries python, nodejs and php before go.
    let before_go = PYTHON_FILES
        .iter()
        .chain(&["package.json", "index.php", "composer.json"])
        .any(|p| file(p));
    if default != GO_STACK && uses("go", file("go.mod") && !before_go) {
        return Some((
            GO_STACK,
            format!("Go app: building on stack {GO_STACK} (the default stack {default} has no Go; `stack:` in magrathea.yml chooses)"),
        ));
    }
    if !uses("python", PYTHON_FILES.iter().any(|p| file(p))) {
        return None;
    }
    let (from, want) = asked_python(src)?;
    let have = PYTHONS.iter().find(|(s, _)| *s == default)?.1;
    let exact = PYTHONS.iter().find(|(_, v)| *v == want);
    let newer = PYTHONS
        .iter()
        .filter(|(_, v)| v.0 == want.0 && v.1 > want.1)
        .min_by_key(|(_, v)| v.1);
    let stack = match exact {
        _ if have == want => return None,
        Some((s, _)) => *s,
        // The default stands in for an older Python 3 (with the buildpack's warning).
        None if have.0 == want.0 && have.1 > want.1 => return None,
        None => newer?.0,
    };
    let v = PYTHONS.iter().find(|(s, _)| *s == stack)?.1;
    Some((
        stack,
        format!(
            "{from} asks for Python {}.{}: building on stack {stack} (Python {}.{}; the default stack {default} has {}.{}; `stack:` in magrathea.yml chooses)",
            want.0, want.1, v.0, v.1, have.0, have.1
        ),
    ))
}

/// The Python runtime.txt or .python-version names (the file, and major.minor), as the
/// python builtin reads them.
fn asked_python(src: &Path) -> Option<(&'static str, (u32, u32))> {
    for (name, strip) in [(".python-version", ""), ("runtime.txt", "python-")] {
        let Ok(Some(text)) = safefs::read_text(src, name, 4096) else {
            continue;
        };
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))?;
        let v = line.strip_prefix(strip).unwrap_or(line);
        let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
        let (Some(Some(major)), Some(Some(minor))) = (parts.next(), parts.next()) else {
            return None;
        };
        return Some((name, (major, minor)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_apps_go_where_go_is() {
        let d = tempfile::tempdir().unwrap();
        let at = |c: Option<&Vec<String>>, url: Option<&str>, default: &str| {
            choose(c, url, d.path(), default).map(|(s, _)| s)
        };
        assert_eq!(at(None, None, "bookworm"), None);
        std::fs::write(d.path().join("go.mod"), "module dokku.me/web\n\ngo 1.23\n").unwrap();
        assert_eq!(at(None, None, "bookworm"), Some("trixie"));
        assert_eq!(at(None, None, "trixie"), None);
        assert_eq!(at(Some(&vec!["static".into()]), None, "bookworm"), None);
        assert_eq!(at(None, Some("heroku/go"), "bookworm"), Some("trixie"));
        // A package.json is detected before go.mod, as on Heroku.
        std::fs::write(d.path().join("package.json"), "{}").unwrap();
        assert_eq!(at(None, None, "bookworm"), None);
        std::fs::write(d.path().join(".buildpacks"), "nodejs\ngo\n").unwrap();
        assert_eq!(at(None, None, "bookworm"), Some("trixie"));
    }

    #[test]
    fn a_pinned_python_goes_where_it_is() {
        let d = tempfile::tempdir().unwrap();
        let at = |default: &str| choose(None, None, d.path(), default).map(|(s, _)| s);
        std::fs::write(d.path().join("requirements.txt"), "flask\n").unwrap();
        assert_eq!(at("bookworm"), None);
        // Heroku's Python template pins 3.13.
        std::fs::write(d.path().join(".python-version"), "# pinned\n3.13\n").unwrap();
        assert_eq!(at("bookworm"), Some("trixie"));
        assert_eq!(at("trixie"), None);
        let (_, why) = choose(None, None, d.path(), "bookworm").unwrap();
        assert!(why.starts_with(".python-version asks for Python 3.13: building on stack trixie (Python 3.13; the default stack bookworm has 3.11;"), "{why}");
        // 3.12: the nearest newer Python; 3.10: the default stands in; 3.11: where it is.
        std::fs::write(d.path().join(".python-version"), "3.12.4\n").unwrap();
        assert_eq!(at("bookworm"), Some("trixie"));
        std::fs::write(d.path().join(".python-version"), "3.10\n").unwrap();
        assert_eq!(at("bookworm"), None);
        std::fs::write(d.path().join(".python-version"), "3.11\n").unwrap();
        assert_eq!(at("trixie"), Some("bookworm"));
        // Nothing stands in for 3.14 or Python 2: the buildpack refuses them, in words.
        std::fs::write(d.path().join(".python-version"), "3.14\n").unwrap();
        assert_eq!(at("bookworm"), None);
        std::fs::remove_file(d.path().join(".python-version")).unwrap();
        std::fs::write(d.path().join("runtime.txt"), "python-3.13.1\n").unwrap();
        assert_eq!(at("bookworm"), Some("trixie"));
        std::fs::write(d.path().join("runtime.txt"), "python-2.7.18\n").unwrap();
        assert_eq!(at("bookworm"), None);
        // Not a Python app (the default's Node would change with the stack).
        std::fs::remove_file(d.path().join("requirements.txt")).unwrap();
        std::fs::write(d.path().join("package.json"), "{}").unwrap();
        std::fs::write(d.path().join("runtime.txt"), "python-3.13\n").unwrap();
        assert_eq!(at("bookworm"), None);
    }
}
