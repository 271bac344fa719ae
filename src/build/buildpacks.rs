//! The built-in buildpacks, compiled into the binary and written to `<data>/buildpacks` at
//! start, so an installed binary does not depend on the source tree.

use std::path::Path;

use crate::fsutil;
use crate::safefs::{self, Kind};

/// Detection order.
pub const BUILTIN: &[&str] = &["python", "nodejs", "php", "static", "procfile"];

macro_rules! bp {
    ($name:literal) => {
        [
            (
                concat!($name, "/bin/detect"),
                include_str!(concat!("../../buildpacks/", $name, "/bin/detect")),
            ),
            (
                concat!($name, "/bin/compile"),
                include_str!(concat!("../../buildpacks/", $name, "/bin/compile")),
            ),
            (
                concat!($name, "/bin/release"),
                include_str!(concat!("../../buildpacks/", $name, "/bin/release")),
            ),
        ]
    };
}

const FILES: [[(&str, &str); 3]; 5] = [
    bp!("python"),
    bp!("nodejs"),
    bp!("php"),
    bp!("static"),
    bp!("procfile"),
];
const DRIVER: &str = include_str!("driver.sh");

pub fn install(dir: &Path) -> std::io::Result<()> {
    for (rel, text) in FILES.iter().flatten() {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap_or(dir))?;
        fsutil::write_atomic(&p, text.as_bytes(), 0o755)?;
    }
    fsutil::write_atomic(&dir.join(".driver.sh"), DRIVER.as_bytes(), 0o755)
}

/// A buildpack as the build container sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Buildpack {
    Builtin(&'static str),
    /// A directory inside the app's repo (third-party buildpacks, unchanged).
    InRepo(String),
}

impl Buildpack {
    pub fn container_path(&self) -> String {
        match self {
            Buildpack::Builtin(n) => format!("/buildpacks/{n}"),
            Buildpack::InRepo(p) => format!("/build/{p}"),
        }
    }
}

/// Resolve a name from magrathea.yml or `.buildpacks`: a built-in, or a relative path in
/// the repo that must stay inside it and hold `bin/compile`.
pub fn resolve(spec: &str, src: &Path) -> Result<Buildpack, String> {
    let s = spec.trim();
    if let Some(b) = BUILTIN.iter().find(|b| **b == s) {
        return Ok(Buildpack::Builtin(b));
    }
    let rel = s.trim_start_matches("./").trim_end_matches('/');
    let ok = !rel.is_empty()
        && !rel.starts_with('/')
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
        && rel
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
    if !ok {
        return Err(format!(
            "unknown buildpack '{s}': use one of {} or a directory inside the repo",
            BUILTIN.join(", ")
        ));
    }
    // Refuse links at every step: the path must be a real directory inside the export.
    let kind = |p: &str| safefs::kind(src, p).map_err(|e| e.to_string());
    match kind(rel)? {
        Kind::Dir => {}
        Kind::Missing => return Err(format!("buildpack directory '{rel}' is not in the repo")),
        Kind::Link => {
            return Err(format!(
                "buildpack directory '{rel}' is a symlink or passes through one; commit the directory itself"
            ))
        }
        _ => return Err(format!("buildpack '{rel}' is not a directory")),
    }
    if kind(&format!("{rel}/bin/compile"))? != Kind::File {
        return Err(format!("buildpack directory '{rel}' has no bin/compile"));
    }
    Ok(Buildpack::InRepo(rel.to_string()))
}

/// The buildpacks to run: magrathea.yml's list, else `.buildpacks`, else a repo-local
/// `.buildpack/`, else None (detect among the built-ins).
pub fn select(config: Option<&Vec<String>>, src: &Path) -> Result<Option<Vec<Buildpack>>, String> {
    let list: Vec<String> = if let Some(l) = config {
        l.clone()
    } else if let Some(text) =
        safefs::read_text(src, ".buildpacks", 64 << 10).map_err(|e| e.to_string())?
    {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect()
    } else if safefs::kind(src, ".buildpack/bin/compile").map_err(|e| e.to_string())? == Kind::File
    {
        vec![".buildpack".into()]
    } else {
        return Ok(None);
    };
    if list.is_empty() {
        return Ok(None);
    }
    list.iter()
        .map(|s| resolve(s, src))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolving() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("bp/bin")).unwrap();
        std::fs::write(d.path().join("bp/bin/compile"), "#!/bin/sh\n").unwrap();
        assert_eq!(
            resolve("python", d.path()),
            Ok(Buildpack::Builtin("python"))
        );
        assert_eq!(
            resolve("./bp", d.path()),
            Ok(Buildpack::InRepo("bp".into()))
        );
        for bad in ["../x", "/etc", "bp/../..", "nope", "a;b"] {
            assert!(resolve(bad, d.path()).is_err(), "{bad}");
        }
        std::os::unix::fs::symlink("/", d.path().join("root")).unwrap();
        assert!(resolve("root", d.path()).is_err());
        assert_eq!(select(None, d.path()), Ok(None));
        std::fs::write(d.path().join(".buildpacks"), "# x\nbp\nstatic\n").unwrap();
        assert_eq!(
            select(None, d.path()).unwrap().unwrap(),
            vec![Buildpack::InRepo("bp".into()), Buildpack::Builtin("static")]
        );
    }
}
