//! The built-in buildpacks, compiled into the binary and written to `<data>/buildpacks` at
//! start, so an installed binary does not depend on the source tree.

use std::path::{Path, PathBuf};

use crate::build::fetch::Remote;
use crate::fsutil;
use crate::safefs::{self, Kind};

/// Detection order (go after php, as in Heroku's default list: a repo with both a package.json
/// and a go.mod builds as on Heroku).
pub const BUILTIN: &[&str] = &["python", "nodejs", "php", "go", "static", "procfile"];
/// Builtins only an app's list names (never detected): `apt` installs an Aptfile's Debian
/// packages before the buildpack that builds the code, as heroku-buildpack-apt does.
pub const NAMED_ONLY: &[&str] = &["apt"];

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

const FILES: [[(&str, &str); 3]; 7] = [
    bp!("python"),
    bp!("nodejs"),
    bp!("php"),
    bp!("go"),
    bp!("static"),
    bp!("procfile"),
    bp!("apt"),
];
/// Files a builtin runs besides its three scripts (the php buildpack copies its web server
/// runner into the app).
const EXTRA: [(&str, &str); 1] = [(
    "php/bin/heroku-php",
    include_str!("../../buildpacks/php/bin/heroku-php"),
)];
const DRIVER: &str = include_str!("driver.sh");

pub fn install(dir: &Path) -> std::io::Result<()> {
    for (rel, text) in FILES.iter().flatten().chain(EXTRA.iter()) {
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
    /// A git repository or tarball by URL, fetched by the controller (`fetch.rs`).
    Url(Remote),
}

/// Where the build container sees the app (`BUILD_DIR`): where it runs, so absolute paths
/// a buildpack writes (console scripts' shebangs, `.profile.d`) hold at run time.
pub const APP_DIR: &str = "/app";
/// Where the build container sees this build's own copy of its buildpacks.
pub const STAGE_DIR: &str = "/buildpacks";

/// Copy the buildpacks a build runs into `stage` (mounted read-write at [`STAGE_DIR`]:
/// buildpacks write their `export` file, and sometimes more, into their own directory, so
/// each build gets a fresh copy) with the driver; returns their paths in the container.
/// `None`: every builtin, for detection. In-repo buildpacks stay where they are, in the app.
/// `fetched` maps a URL buildpack's cache key to its cached tree.
pub fn stage(
    installed: &Path,
    stage: &Path,
    list: Option<&[Buildpack]>,
    fetched: &std::collections::HashMap<String, PathBuf>,
) -> std::io::Result<Vec<String>> {
    std::fs::create_dir_all(stage)?;
    fsutil::write_atomic(&stage.join(".driver.sh"), DRIVER.as_bytes(), 0o755)?;
    let all: Vec<Buildpack> = BUILTIN.iter().map(|b| Buildpack::Builtin(b)).collect();
    let mut out = vec![];
    let mut used = std::collections::BTreeSet::new();
    for bp in list.unwrap_or(&all) {
        match bp {
            Buildpack::InRepo(p) => out.push(format!("{APP_DIR}/{p}")),
            Buildpack::Builtin(_) | Buildpack::Url(_) => {
                let (name, from) = match bp {
                    Buildpack::Url(r) => (
                        r.name(),
                        fetched.get(&r.key()).cloned().ok_or_else(|| {
                            std::io::Error::other(format!("{} was not fetched", r.spec))
                        })?,
                    ),
                    _ => (bp.name(), installed.join(bp.name())),
                };
                // The directory's name is the buildpack's name in build output.
                let mut dir = name.clone();
                let mut n = 1;
                while !used.insert(dir.clone()) {
                    n += 1;
                    dir = format!("{name}-{n}");
                }
                copy_tree(&from, &stage.join(&dir))?;
                out.push(format!("{STAGE_DIR}/{dir}"));
            }
        }
    }
    Ok(out)
}

/// `BUILDPACK_URL` from the repo's `.env` (`KEY=value` lines, `export ` and quotes allowed).
fn dotenv_buildpack_url(src: &Path) -> Result<Option<String>, String> {
    let text = safefs::read_text(src, ".env", 64 << 10).map_err(|e| e.to_string())?;
    Ok(text
        .and_then(|t| dotenv_value(&t, "BUILDPACK_URL"))
        .filter(|v| !v.is_empty()))
}

fn dotenv_value(text: &str, key: &str) -> Option<String> {
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if k.trim() != key {
            continue;
        }
        let v = v.trim();
        let v = if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"'))
                || (v.starts_with('\'') && v.ends_with('\'')))
        {
            &v[1..v.len() - 1]
        } else {
            v.split(" #").next().unwrap_or(v).trim()
        };
        found = Some(v.to_string());
    }
    found
}

/// A name a shell can export: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_env_name(k: &str) -> bool {
    let mut c = k.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// The slug file that applies the buildpacks' `config_vars` as defaults: sourced with the
/// rest of `.profile.d` in every process, the release command and `run`, first (by name),
/// and it sets a variable only when the app's config does not.
pub const CONFIG_DEFAULTS: &str = ".profile.d/000-buildpack-config-vars.sh";

pub fn write_config_defaults(
    slug: &Path,
    vars: &std::collections::BTreeMap<String, String>,
) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut text =
        String::from("# Written by the platform from the buildpacks' bin/release config_vars.\n");
    for (k, v) in vars.iter().filter(|(k, _)| is_env_name(k)) {
        let q = v.replace('\'', "'\\''");
        text.push_str(&format!("[ -n \"${{{k}+x}}\" ] || export {k}='{q}'\n"));
    }
    // The app (and its buildpacks) made this tree: never write through a link in it.
    let dir = slug.join(".profile.d");
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(std::io::Error::other(
                ".profile.d in the app is not a directory",
            ))
        }
        Err(_) => std::fs::create_dir(&dir)?,
    }
    let path = slug.join(CONFIG_DEFAULTS);
    if std::fs::symlink_metadata(&path).is_ok() {
        std::fs::remove_file(&path)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)?;
    f.write_all(text.as_bytes())
}

/// Copy a directory tree: files with their mode, symlinks as symlinks, nothing followed.
pub fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir(dst)?;
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let (from, to) = (e.path(), dst.join(e.file_name()));
        let t = e.file_type()?;
        if t.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else if t.is_dir() {
            copy_tree(&from, &to)?;
        } else if t.is_file() {
            let mode = e.metadata()?.permissions().mode() & 0o777;
            std::fs::copy(&from, &to)?;
            fsutil::set_mode(&to, mode)?;
        }
    }
    Ok(())
}

/// Resolve a name from magrathea.yml or `.buildpacks`: a built-in, or a relative path in
/// the repo that must stay inside it and hold `bin/compile`.
pub fn resolve(spec: &str, src: &Path) -> Result<Buildpack, String> {
    let s = spec.trim();
    if let Some(b) = BUILTIN.iter().chain(NAMED_ONLY).find(|b| **b == s) {
        return Ok(Buildpack::Builtin(b));
    }
    if let Some(b) = standin(s) {
        return Ok(Buildpack::Builtin(b));
    }
    if let Some(r) = Remote::parse(s) {
        return r.map(Buildpack::Url).map_err(|e| e.to_string());
    }
    // Echoed without control characters (a terminal escape in `.buildpacks`).
    let shown: String = s.chars().filter(|c| !c.is_control()).take(200).collect();
    if s.contains("://") {
        return Err(format!(
            "buildpack URL '{shown}': only https://, http:// and git:// URLs are fetched"
        ));
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
            "unknown buildpack '{shown}': use one of {} or a directory inside the repo",
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

/// The builtin that does the work of one of Heroku's own buildpacks (or Dokku's null one),
/// named as apps name them: by registry name (`heroku/python`), GitHub URL (any ref) or
/// registry tarball URL. Heroku's are made for Heroku's stack images and download runtimes
/// built for those, so fetching one here would fail (or build for the wrong system).
pub fn standin(spec: &str) -> Option<&'static str> {
    let s = spec.trim().to_ascii_lowercase();
    let s = s.split('#').next().unwrap_or("").trim_end_matches('/');
    let s = s.strip_suffix(".git").unwrap_or(s);
    let builtin = |lang: &str| match lang {
        "python" => Some("python"),
        "nodejs" => Some("nodejs"),
        "php" => Some("php"),
        "go" => Some("go"),
        "static" => Some("static"),
        "apt" => Some("apt"),
        _ => None,
    };
    // heroku/python, heroku-community/static: Heroku's buildpack registry names.
    if let Some(n) = s.strip_prefix("heroku/") {
        return builtin(n);
    }
    match s {
        "heroku-community/static" => return Some("static"),
        "heroku-community/apt" => return Some("apt"),
        _ => {}
    }
    let (_, rest) = s.split_once("://")?;
    let rest = rest.strip_prefix("www.").unwrap_or(rest);
    if let Some(repo) = rest.strip_prefix("github.com/") {
        return match repo {
            "dokku/buildpack-null" | "ryandotsmith/null-buildpack" => Some("procfile"),
            // Dokku's static sites: nginx serving the repo (NGINX_ROOT, NGINX_DEFAULT_REQUEST).
            "dokku/buildpack-nginx" | "progrium/buildpack-nginx" => Some("static"),
            _ => repo
                .strip_prefix("heroku/heroku-buildpack-")
                .and_then(builtin),
        };
    }
    // The registry's tarballs: .../buildpacks/heroku/python.tgz
    for host in [
        "buildpack-registry.s3.amazonaws.com/buildpacks/",
        "codon-buildpacks.s3.amazonaws.com/buildpacks/",
    ] {
        if let Some(name) = rest.strip_prefix(host).and_then(|n| n.strip_suffix(".tgz")) {
            return match name {
                "heroku-community/static" => Some("static"),
                "heroku-community/apt" => Some("apt"),
                _ => name.strip_prefix("heroku/").and_then(builtin),
            };
        }
    }
    None
}

impl Buildpack {
    /// As build output names it before its bin/detect does.
    pub fn name(&self) -> String {
        match self {
            Buildpack::Builtin(n) => n.to_string(),
            Buildpack::InRepo(p) => p.clone(),
            Buildpack::Url(r) => r.name(),
        }
    }
}

/// The buildpacks to run: the app's `BUILDPACK_URL` config var, else magrathea.yml's
/// `buildpacks:`, else `BUILDPACK_URL` in the repo's `.env` (Dokku's convention), else
/// `.buildpacks`, else a repo-local `.buildpack/`, else app.json's `buildpacks`, else None
/// (detect among the built-ins).
pub fn select(
    config: Option<&Vec<String>>,
    buildpack_url: Option<&str>,
    src: &Path,
) -> Result<Option<Vec<Buildpack>>, String> {
    let Some(list) = named(config, buildpack_url, src)? else {
        return Ok(None);
    };
    list.iter()
        .map(|s| resolve(s, src))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// What [`select`] resolves: the buildpacks as the app names them, where it names any.
pub fn named(
    config: Option<&Vec<String>>,
    buildpack_url: Option<&str>,
    src: &Path,
) -> Result<Option<Vec<String>>, String> {
    let list: Vec<String> = if let Some(u) = buildpack_url.filter(|u| !u.trim().is_empty()) {
        vec![u.trim().to_string()]
    } else if let Some(l) = config {
        l.clone()
    } else if let Some(u) = dotenv_buildpack_url(src)? {
        vec![u]
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
    } else if let Some(text) =
        safefs::read_text(src, "app.json", crate::appjson::MAX_SIZE as u64 + 1)
            .map_err(|e| e.to_string())?
    {
        // app.json's buildpacks, as Dokku (and Heroku's app setup) read them.
        crate::appjson::parse(&text)?.buildpack_urls()
    } else {
        return Ok(None);
    };
    Ok(Some(list).filter(|l| !l.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn herokus_buildpacks_are_the_builtins() {
        for (spec, want) in [
            ("heroku/python", "python"),
            ("heroku/nodejs", "nodejs"),
            ("heroku/go", "go"),
            ("heroku/php", "php"),
            ("heroku-community/static", "static"),
            ("https://github.com/heroku/heroku-buildpack-nodejs", "nodejs"),
            ("https://github.com/heroku/heroku-buildpack-nodejs.git", "nodejs"),
            ("https://github.com/heroku/heroku-buildpack-python.git#v250", "python"),
            ("http://github.com/heroku/heroku-buildpack-go/", "go"),
            ("git://github.com/heroku/heroku-buildpack-php.git", "php"),
            ("https://github.com/heroku/heroku-buildpack-static", "static"),
            (
                "https://buildpack-registry.s3.amazonaws.com/buildpacks/heroku/python.tgz",
                "python",
            ),
            (
                "https://codon-buildpacks.s3.amazonaws.com/buildpacks/heroku/nodejs.tgz",
                "nodejs",
            ),
            (
                "https://buildpack-registry.s3.amazonaws.com/buildpacks/heroku-community/static.tgz",
                "static",
            ),
            ("https://github.com/dokku/buildpack-null", "procfile"),
            ("heroku-community/apt", "apt"),
            ("https://github.com/heroku/heroku-buildpack-apt", "apt"),
            (
                "https://buildpack-registry.s3.amazonaws.com/buildpacks/heroku-community/apt.tgz",
                "apt",
            ),
            ("https://github.com/dokku/buildpack-nginx.git", "static"),
            ("https://github.com/progrium/buildpack-nginx", "static"),
            ("  HTTPS://GitHub.com/Heroku/heroku-buildpack-nodejs  ", "nodejs"),
        ] {
            assert_eq!(standin(spec), Some(want), "{spec}");
            let d = tempfile::tempdir().unwrap();
            assert_eq!(resolve(spec, d.path()), Ok(Buildpack::Builtin(want)), "{spec}");
        }
        // Others' buildpacks stay what they are: fetched by URL.
        for spec in [
            "heroku/ruby",
            "https://github.com/heroku/heroku-buildpack-google-chrome",
            "https://github.com/heroku/heroku-buildpack-ruby",
            "https://github.com/someone/heroku-buildpack-python",
            "https://gitlab.com/heroku/heroku-buildpack-python",
            "https://buildpack-registry.s3.amazonaws.com/buildpacks/heroku/ruby.tgz",
            "python",
        ] {
            assert_eq!(standin(spec), None, "{spec}");
        }
    }

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
        // Found by fuzzing: a bad name or URL was echoed with its control characters.
        for bad in ["n\x1b[2Jope", "ftp://h/\x1b[2Jx", "https://h/a\x1b[2J b"] {
            let e = resolve(bad, d.path()).unwrap_err();
            assert!(
                !e.chars().any(char::is_control) && e.contains("[2J"),
                "{e:?}"
            );
        }
        std::os::unix::fs::symlink("/", d.path().join("root")).unwrap();
        assert!(resolve("root", d.path()).is_err());
        std::fs::create_dir(d.path().join("slug")).unwrap();
        let vars = std::collections::BTreeMap::from([
            ("A".to_string(), "it's $HOME".to_string()),
            ("bad-name".to_string(), "x".to_string()),
        ]);
        write_config_defaults(&d.path().join("slug"), &vars).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                ". {0}; echo \"$A\"; B=set; A=mine; . {0}; echo \"$A\"",
                d.path().join("slug").join(CONFIG_DEFAULTS).display()
            ))
            .env_remove("A")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "it's $HOME\nmine\n");
        std::fs::create_dir(d.path().join("evil2")).unwrap();
        std::os::unix::fs::symlink(d.path().join("x"), d.path().join("evil2/.profile.d")).unwrap();
        assert!(write_config_defaults(&d.path().join("evil2"), &vars).is_err());
        assert_eq!(select(None, None, d.path()), Ok(None));
        std::fs::write(d.path().join(".buildpacks"), "# x\nbp\nstatic\n").unwrap();
        assert_eq!(
            select(None, None, d.path()).unwrap().unwrap(),
            vec![Buildpack::InRepo("bp".into()), Buildpack::Builtin("static")]
        );
        // BUILDPACK_URL: .env over .buildpacks, the config var over both.
        std::fs::write(
            d.path().join(".env"),
            "export BUILDPACK_URL='https://example.com/bp.git#v1'\nOTHER=1\n",
        )
        .unwrap();
        let one = |s: Vec<Buildpack>| match &s[..] {
            [Buildpack::Url(r)] => r.spec.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            one(select(None, None, d.path()).unwrap().unwrap()),
            "https://example.com/bp.git#v1"
        );
        assert_eq!(
            one(select(None, Some("http://h/x.tgz"), d.path())
                .unwrap()
                .unwrap()),
            "http://h/x.tgz"
        );
        assert_eq!(
            select(Some(&vec!["static".into()]), None, d.path()),
            Ok(Some(vec![Buildpack::Builtin("static")]))
        );
        assert!(resolve("file:///etc", d.path())
            .unwrap_err()
            .contains("https://"));
        let list = select(Some(&vec!["https://h/o/bp.git#v2".into()]), None, d.path());
        assert!(
            matches!(&list.unwrap().unwrap()[..], [Buildpack::Url(r)] if r.git_ref.as_deref() == Some("v2"))
        );
        // Heroku's own buildpacks and Dokku's null one, as apps name them, are the builtins.
        std::fs::write(
            d.path().join(".env"),
            "BUILDPACK_URL=https://github.com/heroku/heroku-buildpack-python.git#v270\n",
        )
        .unwrap();
        assert_eq!(
            select(None, None, d.path()),
            Ok(Some(vec![Buildpack::Builtin("python")]))
        );
        assert_eq!(dotenv_value("A=1\nA=\"2\"\n", "A").as_deref(), Some("2"));
        // app.json's buildpacks, when nothing else names any; a broken app.json says so.
        let j = tempfile::tempdir().unwrap();
        std::fs::write(
            j.path().join("app.json"),
            r#"{"buildpacks": [{"url": "heroku/nodejs"}, {"url": "https://github.com/heroku/heroku-buildpack-python"}]}"#,
        )
        .unwrap();
        assert_eq!(
            select(None, None, j.path()),
            Ok(Some(vec![
                Buildpack::Builtin("nodejs"),
                Buildpack::Builtin("python")
            ]))
        );
        std::fs::write(j.path().join(".buildpacks"), "static\n").unwrap();
        assert_eq!(
            select(None, None, j.path()),
            Ok(Some(vec![Buildpack::Builtin("static")]))
        );
        std::fs::remove_file(j.path().join(".buildpacks")).unwrap();
        std::fs::write(j.path().join("app.json"), r#"{"name": "x"}"#).unwrap();
        assert_eq!(select(None, None, j.path()), Ok(None));
        std::fs::write(j.path().join("app.json"), "{").unwrap();
        assert!(select(None, None, j.path())
            .unwrap_err()
            .starts_with("app.json: "));
        assert_eq!(dotenv_value("A=x # note\n", "A").as_deref(), Some("x"));
    }
}
