//! The fuzz targets: every parser that reads hostile input, each a function of raw bytes that
//! panics (a crash) when the code under test panics or breaks a property: errors are one
//! line without control characters, what parses round-trips, extraction stays inside its
//! destination and a refused archive leaves nothing.

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::Unstructured;
use clap::CommandFactory;
use magrathea::{appconfig, cmd, names};

use super::driver::{accepted, Target};

pub fn all() -> Vec<Target> {
    vec![
        Target {
            name: "command",
            run: command,
            seeds: command_seeds,
            dict: COMMAND_DICT,
            max_len: 1024,
        },
        Target {
            name: "names",
            run: name_grammar,
            seeds: names_seeds,
            dict: &["*", "?", "..", "/", ".git", "~/", "'", "\"", "-", "v1.*"],
            max_len: 256,
        },
        Target {
            name: "magrathea_yml",
            run: magrathea_yml,
            seeds: yml_seeds,
            dict: YAML_DICT,
            max_len: 8192,
        },
        Target {
            name: "procfile",
            run: procfile,
            seeds: procfile_seeds,
            dict: &[
                ":", "\n", "\r\n", "#", "web", "worker", " ", "\t", "Web", "web-2",
            ],
            max_len: 4096,
        },
        Target {
            name: "release_yaml",
            run: release_yaml,
            seeds: release_seeds,
            dict: YAML_DICT,
            max_len: 8192,
        },
        Target {
            name: "buildpack_spec",
            run: buildpack_spec,
            seeds: buildpack_seeds,
            dict: &[
                "https://", "http://", "git://", "HTTPS://", "#", "?", "/", ".git", ".tgz",
                ".tar.gz", "..", "./", "bp", "lnk", "é", "\u{1b}", "-", "@", ":",
            ],
            max_len: 4096,
        },
        Target {
            name: "app_json",
            run: app_json,
            seeds: app_json_seeds,
            dict: APP_JSON_DICT,
            max_len: 8192,
        },
        Target {
            name: "hook_frames",
            run: hook_frames,
            seeds: hook_seeds,
            dict: JSON_DICT,
            max_len: 4096,
        },
        Target {
            name: "node_frames",
            run: node_frames,
            seeds: node_seeds,
            dict: JSON_DICT,
            max_len: 4096,
        },
        Target {
            name: "sealed_stream",
            run: sealed_stream,
            seeds: sealed_seeds,
            dict: &["MGSEAL1\n", "\0\0\0\x10", "\0\0\0\x01", "\x7f\x7f\x7f\x7f"],
            max_len: 4096,
        },
        Target {
            name: "tar",
            run: tar,
            seeds: tar_seeds,
            dict: &[
                "ustar",
                "././@LongLink",
                "..",
                "/",
                "app/",
                "manifest.json",
                "path=",
            ],
            max_len: 64 << 10,
        },
    ]
}

/// An error meant for a user: non-empty, one line, no control characters.
fn one_line(what: &str, msg: &str) {
    assert!(!msg.trim().is_empty(), "{what}: empty error message");
    assert!(
        !msg.chars().any(char::is_control),
        "{what}: error is not one clean line: {msg:?}"
    );
}

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

// ---- SSH command lines (src/cmd/mod.rs, src/ssh/exec.rs) ----

const COMMAND_DICT: &[&str] = &[
    "s3cr3t-Value",
    " ",
    "'",
    "\"",
    "\\",
    "--",
    "--json",
    "--env",
    "--env=",
    "--help",
    "-h",
    "-n",
    "=",
    "web=3",
    "A=b",
    "apps:create",
    "config:set",
    "access:grant",
    "logs",
    "-f",
    "--since",
    "10m",
    "v3",
    "--confirm",
    "--tags",
    "v*",
    "run",
    "shell",
    "--node",
    "--process",
    "web.1",
    "\x1b[31m",
    "\n",
];

const COMMAND_VALUES: &[&str] = &[
    SECRET,
    "A=s3cr3t-Value",
    "--env=s3cr3t-Value",
    "web",
    "shop",
    "v3",
    "v0",
    "production",
    "staging",
    "A=b",
    "A=",
    "=b",
    "--",
    "-",
    "-n",
    "5",
    "-1",
    "99999999999999999999",
    "",
    "web=3",
    "worker=0",
    "web=-1",
    "--help",
    "-h",
    "--json",
    "10m",
    "1h",
    "-5m",
    "viewer",
    "owner",
    "god",
    "v*",
    "n1",
    "10.0.0.5:2300",
    "env=prod",
    "\u{1b}[2J",
    "a\nb",
    "a\rb",
    "\u{0}",
    "Shop",
    "../x",
    "é",
];

struct CommandSpec {
    names: Vec<String>,
    flags: Vec<Vec<String>>,
}

fn command_spec() -> &'static CommandSpec {
    static SPEC: OnceLock<CommandSpec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let c = cmd::Cli::command();
        let mut spec = CommandSpec {
            names: vec![],
            flags: vec![],
        };
        for sc in c.get_subcommands() {
            spec.names.push(sc.get_name().to_string());
            let mut flags = vec!["--help".to_string()];
            for a in sc.get_arguments() {
                if let Some(l) = a.get_long() {
                    flags.push(format!("--{l}"));
                }
                if let Some(s) = a.get_short() {
                    flags.push(format!("-{s}"));
                }
            }
            spec.flags.push(flags);
        }
        spec
    })
}

/// First byte even: the rest is a command line as an SSH client sends it. Odd: an argv built
/// from the grammar itself (real command names and flags, hostile values).
fn command(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return check_argv(&[]);
    };
    if mode % 2 == 0 {
        let line = text(rest);
        // The front door refuses longer lines before splitting (src/ssh/exec.rs).
        if line.len() > 16 << 10 {
            return;
        }
        if let Ok(argv) = shell_words::split(&line) {
            check_argv(&argv);
        }
        return;
    }
    let mut u = Unstructured::new(rest);
    let spec = command_spec();
    let i = u.choose_index(spec.names.len()).unwrap_or(0);
    let mut argv = vec![if u.ratio(1, 16).unwrap_or(false) {
        u.arbitrary::<String>().unwrap_or_default()
    } else {
        spec.names[i].clone()
    }];
    for _ in 0..u.int_in_range(0..=6).unwrap_or(0) {
        let arg = match u.int_in_range(0..=4).unwrap_or(0) {
            0 => u.choose(&spec.flags[i]).cloned().unwrap_or_default(),
            1 => format!(
                "{}={}",
                u.choose(&spec.flags[i]).cloned().unwrap_or_default(),
                u.choose(COMMAND_VALUES).copied().unwrap_or_default()
            ),
            2 => u.arbitrary::<String>().unwrap_or_default(),
            _ => u
                .choose(COMMAND_VALUES)
                .copied()
                .unwrap_or_default()
                .to_string(),
        };
        argv.push(arg);
    }
    check_argv(&argv);
}

/// A config value: the audit log must never show it.
const SECRET: &str = "s3cr3t-Value";

fn check_argv(argv: &[String]) {
    let audited = cmd::redact(argv);
    if let Some(first) = argv.first() {
        if first.starts_with("config") && cmd::is_command(first) {
            assert!(
                !audited.contains(SECRET),
                "audit shows a value: {audited:?}"
            );
        }
    }
    let _ = cmd::is_command(argv.first().map(String::as_str).unwrap_or(""));
    match cmd::parse(argv) {
        Ok(c) => {
            accepted();
            let _ = (c.is_streaming(), c.is_interactive(), c.wants_stdin());
        }
        Err(reply) if reply.code == 0 => {
            assert!(reply.stderr.is_empty(), "help wrote to stderr");
        }
        Err(reply) => {
            let err = String::from_utf8(reply.stderr).expect("command error is UTF-8");
            let line = err.strip_suffix('\n').expect("error ends with a newline");
            one_line("command", line);
            assert!(reply.stdout.is_empty(), "an error also wrote to stdout");
        }
    }
}

fn command_seeds() -> Vec<Vec<u8>> {
    let lines = [
        "apps:create web",
        "config:set shop A=s3cr3t-Value 'B=two s3cr3t-Value' --no-restart",
        "config:get shop A",
        "config:unset shop A B",
        "config shop --env=staging",
        "config --env staging --json shop",
        "access:grant shop ci deployer --tags 'v*'",
        "logs shop -f -n 50 --process web.1 --since 10m",
        "run shop -- python manage.py shell -c 'print(1)'",
        "scale shop web=3 worker=0",
        "rollback shop v3 --env staging --with-data",
        "nodes:add n1 10.0.0.5:2300 --label env=prod --slots 8",
        "apps:destroy shop --confirm shop",
        "keys:add alice --role admin",
        "help apps:create",
        "builds:log shop 12",
        "releases:info shop v7 --json",
        "frobnicate",
        "apps:create",
        "'unbalanced",
        "",
    ];
    let mut seeds: Vec<Vec<u8>> = lines
        .iter()
        .map(|l| [&[0u8][..], l.as_bytes()].concat())
        .collect();
    for i in 0..8u8 {
        seeds.push(vec![1, i * 7, 3, 2, 1, 0, 4, 4, 9, 200]);
    }
    seeds
}

// ---- Names (src/names.rs) ----

fn name_grammar(data: &[u8]) {
    let s = text(data);
    let chars: Vec<char> = s.chars().collect();
    let spec = !chars.is_empty()
        && chars.len() <= 40
        && chars[0].is_ascii_lowercase()
        && chars
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-');
    assert_eq!(names::valid(&s), spec, "names::valid({s:?})");
    match names::check("app", &s) {
        Ok(n) => {
            accepted();
            assert!(spec && n == s)
        }
        Err(e) => {
            assert!(!spec);
            one_line("names::check", &e.to_string());
            assert!(e.name.chars().count() <= 60, "echoes a long name back");
        }
    }
    match names::check_node_app(&s) {
        Ok(n) => assert!(!n.contains('/') && n != "." && n != ".."),
        Err(e) => one_line("names::check_node_app", &e.to_string()),
    }
    if let Ok(n) = names::app_from_repo_arg(&s) {
        assert!(names::valid(n), "repo arg gave {n:?}");
    }
    if names::valid_tag_pattern(&s) {
        assert!(!s.contains("..") && !s.chars().any(|c| c.is_control() || c.is_whitespace()));
    }
    // A build dir is a relative path in normal form that stays inside the tree it names.
    match s.parse::<names::BuildDir>() {
        Ok(d) => {
            assert!(!d.is_empty() && d.len() <= names::BuildDir::MAX);
            assert!(!d.starts_with('/') && !d.ends_with('/'));
            assert!(!d.chars().any(|c| c.is_control() || c == '\\'));
            assert!(d.split('/').all(|c| !c.is_empty()
                && c != "."
                && c != ".."
                && !c.eq_ignore_ascii_case(".git")));
            assert_eq!(d.parse::<names::BuildDir>().unwrap(), d, "normal form");
        }
        Err(e) => {
            one_line("BuildDir", &e.to_string());
            assert!(!e.to_string().chars().any(char::is_control));
        }
    }
    // Globs: a pattern matches itself, `*` matches anything, no wildcard means equality.
    let (p, t) = s.split_once('\u{0}').unwrap_or((&s, ""));
    let m = names::glob_match(p, t);
    if !p.contains(['*', '?']) {
        assert_eq!(m, p == t, "glob_match({p:?}, {t:?})");
    }
    assert!(names::glob_match(p, p), "glob_match({p:?}) on itself");
    assert!(names::glob_match("*", t));
}

fn names_seeds() -> Vec<Vec<u8>> {
    [
        "shop",
        "shop.staging",
        "a",
        &"a".repeat(40),
        &"a".repeat(41),
        "'/shop.git'",
        "~/shop",
        "v*\u{0}v1.2.3",
        "v?.*\u{0}v1.x",
        "Shop",
        "-shop",
        "sh\u{1b}op",
        "apps/api/",
        "apps/../api",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

// ---- magrathea.yml, Procfile, bin/release output (src/appconfig.rs) ----

const YAML_DICT: &[&str] = &[
    ": ",
    "\n",
    "\n  ",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\"",
    "'",
    "&a ",
    "*a",
    "!!str ",
    "!!map",
    "<<: *a",
    "|\n  ",
    ">-\n  ",
    "---\n",
    "...\n",
    "? ",
    "#",
    "~",
    "null",
    "true",
    "1e9",
    "4294967296",
    "-1",
    "0x1F",
    "stack",
    "buildpacks",
    "processes",
    "release",
    "healthcheck",
    "keep_releases",
    "data",
    "environments",
    "branch",
    "tags",
    "nodes",
    "scale",
    "env",
    "web",
    "default_process_types",
    "config_vars",
    "addons",
    "[[[[[[[[[[[[[[[[",
    "{a: {a: {a: {a: {a: ",
    "\t",
    "\r",
    "\u{feff}",
    "%YAML 1.2\n",
    "&x [*x, *x]",
    "memory",
    "boot_timeout",
    "interval",
    "timeout",
    "content",
    "attempts",
    "ms",
    "m",
    "s",
    "G",
    "T",
    "1.5",
    "99999999999999999m",
    "1e308G",
    "NaN",
    "inf",
];

fn magrathea_yml(data: &[u8]) {
    match appconfig::parse(&text(data)) {
        Ok(c) => {
            accepted();
            if let Some(s) = &c.stack {
                assert!(names::valid(s), "stack {s:?} accepted");
            }
            // What a push and a deploy do with it.
            use magrathea::deploy::envs;
            for r in ["refs/heads/main", "refs/tags/v1.2.3", "refs/heads/staging"] {
                for t in envs::for_ref(&c, r) {
                    assert!(t.health.attempts >= 1 && t.health.timeout_ms >= 1);
                }
            }
            let _ = envs::target(&c, "production");
            for k in c.processes.iter().flat_map(|p| p.keys()) {
                assert!(names::valid(k), "process type {k:?} accepted");
            }
        }
        Err(e) => one_line("magrathea.yml", &e),
    }
}

fn yml_seeds() -> Vec<Vec<u8>> {
    let template = include_str!("../../templates/magrathea.yml");
    let seeds = [
        template,
        include_str!("../fixtures/probe/magrathea.yml"),
        "stack: bookworm\nbuildpacks: [python]\nprocesses: { web: \"gunicorn app:app\" }\n\
         release: \"python manage.py migrate\"\nhealthcheck: { path: /health, timeout: 5s, \
         attempts: 10 }\nkeep_releases: 10\ndata: [uploads]\n",
        "environments:\n  staging: { branch: main, nodes: { env: staging } }\n  production:\n    \
         tags: \"v*\"\n    scale: { web: 2, worker: 1 }\n    env: { LOG_LEVEL: warn }\n",
        "processes:\n  web: &cmd gunicorn app:app\n  worker: *cmd\n",
        "memory: 512M\nscale: { web: 2 }\nhealthcheck:\n  path: /health\n  timeout: 5s\n  \
         boot_timeout: 2m\n  interval: 500ms\n  content: ok\n",
        "healthcheck: { timeout: 999999999999999m, interval: 10, boot_timeout: 90s }\n",
        "stack: x\nstack: y\n",
        "",
    ];
    let mut v: Vec<Vec<u8>> = seeds.iter().map(|s| s.as_bytes().to_vec()).collect();
    // Deep nesting: a parser that recurses per level must stop before the stack does.
    v.push(format!("data: {}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes());
    v.push(
        "environments: "
            .bytes()
            .chain("{a: ".repeat(3000).bytes())
            .collect(),
    );
    v
}

fn procfile(data: &[u8]) {
    match appconfig::parse_procfile(&text(data)) {
        Ok(map) => {
            accepted();
            let mut again = String::new();
            for (k, v) in &map {
                assert!(names::valid(k), "process type {k:?} accepted");
                assert!(!v.is_empty() && v.trim() == v && !v.contains('\n'), "{v:?}");
                again.push_str(&format!("{k}: {v}\n"));
            }
            assert_eq!(
                appconfig::parse_procfile(&again).as_ref(),
                Ok(&map),
                "Procfile does not round-trip"
            );
        }
        Err(e) => one_line("Procfile", &e),
    }
}

fn procfile_seeds() -> Vec<Vec<u8>> {
    [
        include_str!("../fixtures/procfile/Procfile"),
        include_str!("../fixtures/probe/Procfile"),
        "# comment\nweb: gunicorn app:app --bind 0.0.0.0:$PORT\nworker: celery -A proj worker \
         -l info\nrelease: python manage.py migrate\n",
        "web: node server.js\r\nclock: node clock.js\r\n",
        "web: sh -c 'x: y'\n\n   \nweb2:bundle exec puma -C config/puma.rb\n",
        "Web: x\n",
        "web\n",
        "web: a\nweb: b\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn release_yaml(data: &[u8]) {
    match appconfig::parse_release(&text(data)) {
        Ok(r) => {
            accepted();
            let _ = serde_json::to_string(&r.addons);
        }
        Err(e) => one_line("bin/release", &e),
    }
}

fn release_seeds() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = [
        "---\naddons: []\ndefault_process_types:\n  web: gunicorn app:app\n",
        "---\ndefault_process_types:\n  web: vendor/bin/heroku-php-apache2\n",
        "--- {}\n",
        "---\nconfig_vars:\n  PATH: /app/.heroku/python/bin:/usr/bin:/bin\n  LANG: C.UTF-8\n\
         addons:\n  - heroku-postgresql:mini\n  - { plan: redis, options: { a: [1, 2.5, \
         null, true] } }\n",
        "default_process_types: {}",
        "---",
        "",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    v.push(format!("addons: {}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes());
    v.push(
        "addons: "
            .bytes()
            .chain("- ".repeat(3000).bytes())
            .collect(),
    );
    v
}

// ---- Buildpack names in magrathea.yml and .buildpacks (src/build/buildpacks.rs, fetch.rs) ----

thread_local! {
    /// An export with a buildpack directory `bp` and a link to it, `lnk`.
    static EXPORT: tempfile::TempDir = {
        let d = scratch_dir();
        fs::create_dir_all(d.path().join("bp/bin")).unwrap();
        fs::write(d.path().join("bp/bin/compile"), "#!/bin/sh\n").unwrap();
        symlink("bp", d.path().join("lnk")).unwrap();
        d
    };
}

fn buildpack_spec(data: &[u8]) {
    use magrathea::build::buildpacks::{resolve, Buildpack};
    // `.buildpacks` is read a line at a time.
    for line in text(data).lines() {
        match EXPORT.with(|d| resolve(line, d.path())) {
            Ok(b) => {
                accepted();
                let name = b.name();
                assert!(
                    !name.is_empty() && !name.chars().any(char::is_control),
                    "{name:?}"
                );
                if let Buildpack::Url(r) = &b {
                    assert!(!r.key().is_empty());
                    assert!(!r.name().contains('/') && !r.name().starts_with('.'));
                }
            }
            Err(e) => one_line("buildpack", &e),
        }
    }
}

fn buildpack_seeds() -> Vec<Vec<u8>> {
    [
        "python",
        "https://github.com/heroku/heroku-buildpack-python.git",
        "https://github.com/heroku/heroku-buildpack-nodejs#v250",
        "https://example.com/buildpacks/apt.tgz",
        "https://codeload.example.com/owner/bp/tar.gz/refs/heads/main?x=1",
        "git://example.com/bp.git#main",
        "./bp",
        "bp/",
        "lnk",
        "../outside",
        "ssh://git@example.com/bp.git",
        "https://é.example/bp.git",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

// ---- app.json (src/appjson.rs) ----

const APP_JSON_DICT: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "null",
    "true",
    "-1",
    "1e400",
    "4294967296",
    "\"formation\":",
    "\"healthchecks\":",
    "\"scripts\":",
    "\"dokku\":",
    "\"predeploy\":",
    "\"postdeploy\":",
    "\"quantity\":",
    "\"process\":",
    "\"size\":",
    "\"type\":",
    "\"startup\"",
    "\"liveness\"",
    "\"path\":",
    "\"attempts\":",
    "\"wait\":",
    "\"timeout\":",
    "\"initialDelay\":",
    "\"content\":",
    "\"command\":",
    "\"web\"",
    "\"/health\"",
    "\\u0000",
    "\\n",
    "\\u001b",
];

fn app_json(data: &[u8]) {
    use magrathea::appjson;
    match appjson::parse(&text(data)) {
        Ok(a) => {
            accepted();
            for t in a.formation().keys() {
                assert!(names::valid(t), "formation type {t:?} accepted");
            }
            for (t, checks) in a.healthchecks.iter().flatten() {
                assert!(names::valid(t), "healthcheck type {t:?} accepted");
                for c in checks {
                    if let Some(p) = &c.path {
                        assert!(
                            p.starts_with('/') && !p.chars().any(char::is_control),
                            "{p:?}"
                        );
                    }
                }
                let _ = a.startup_checks(t);
            }
            for s in [a.predeploy(), a.postdeploy()].into_iter().flatten() {
                assert!(!s.contains('\0'));
            }
        }
        Err(e) => one_line("app.json", &e),
    }
    // Dokku's CHECKS file, the other source of web checks.
    match appjson::parse_checks(&text(data)) {
        Ok(checks) => {
            for c in checks {
                let p = c.path.unwrap_or_default();
                assert!(
                    p.starts_with('/') && !p.chars().any(char::is_control),
                    "{p:?}"
                );
            }
        }
        Err(e) => one_line("CHECKS", &e),
    }
}

fn app_json_seeds() -> Vec<Vec<u8>> {
    [
        "WAIT=2 # wait 2 seconds\nTIMEOUT=5\nATTEMPTS=2\n\n/ python/http.server\nhttps://example.com/path ok\n//localhost:5000\n",
        r#"{
  "name": "Small Sharp Tool",
  "description": "This app does one little thing, and does it well.",
  "keywords": ["productivity", "HTML5", "scalpel"],
  "repository": "https://example.com/jane/small-sharp-tool",
  "env": {
    "SECRET_TOKEN": {"description": "A secret key for verifying the integrity of signed cookies.", "generator": "secret"},
    "WEB_CONCURRENCY": {"description": "The number of processes to run.", "value": "5"}
  },
  "formation": {"web": {"quantity": 1, "size": "standard-1x"}, "worker": {"quantity": 2}},
  "addons": ["openredis", {"plan": "mongolab:shared-single-small", "as": "MONGO"}],
  "buildpacks": [{"url": "heroku/python"}],
  "scripts": {"postdeploy": "bundle exec rake bootstrap"}
}"#,
        r#"{"scripts": {"dokku": {"predeploy": "python manage.py migrate --noinput", "postdeploy": "python manage.py clearsessions"}},
 "healthchecks": {"web": [
   {"type": "startup", "name": "web check", "description": "Checking if the app responds to /health", "path": "/health", "attempts": 3, "wait": 5, "timeout": 5, "initialDelay": 2, "content": "ok"},
   {"type": "liveness", "command": ["/app/bin/check"]}
 ]}}"#,
        r#"{"formation": [{"process": "web", "quantity": 2}, {"process": "clock", "quantity": 0, "size": "basic"}]}"#,
        r#"{"healthchecks": {"web": [{"command": ["true"]}]}}"#,
        r#"{"healthchecks": {"Web": [{"path": "health"}]}}"#,
        "[]",
        "",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

// ---- Hook protocol (src/git/hookproto.rs) ----

const JSON_DICT: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "\\u0000",
    "\\ud800",
    "\\n",
    "null",
    "true",
    "-0",
    "1e400",
    "18446744073709551616",
    "-1",
    "4294967296",
    "65536",
    "\"app\":",
    "\"release\":",
    "\"out\":",
    "\"exit\":",
    "\"updates\":",
    "\"live\":",
    "\"error\":",
    "\"line\":",
    "[[[[[[[[[[[[[[[[[[[[",
    "shop",
    "v3-0123456789ab",
    "0000000000000000000000000000000000000000",
];

fn roundtrip<T: serde::Serialize + serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let v: T = serde_json::from_slice(bytes).ok()?;
    accepted();
    let once = serde_json::to_string(&v).expect("serializes");
    assert!(!once.contains('\n'), "a frame spans lines: {once:?}");
    let again: T = serde_json::from_str(&once).expect("its own output parses");
    assert_eq!(
        serde_json::to_string(&again).unwrap(),
        once,
        "does not round-trip"
    );
    Some(v)
}

/// Every hook parser on the same bytes: the pre-receive stdin, the request line the
/// controller reads and the frames the hook reads.
fn hook_frames(data: &[u8]) {
    use magrathea::git::hookproto::{parse_updates, Frame, HookRequest};
    let s = text(data);
    match parse_updates(&s) {
        Ok(updates) => {
            accepted();
            for u in updates {
                for oid in [&u.old, &u.new] {
                    assert!(
                        matches!(oid.len(), 40 | 64) && oid.bytes().all(|b| b.is_ascii_hexdigit())
                    );
                }
                assert!(u.name.starts_with("refs/") && !u.name.contains(char::is_whitespace));
            }
        }
        Err(e) => one_line("ref updates", &e),
    }
    let _ = roundtrip::<HookRequest>(data);
    if let Some(f) = roundtrip::<Frame>(data) {
        let line = f.to_line();
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        assert_eq!(serde_json::from_str::<Frame>(&line).unwrap(), f);
    }
    // Whatever the pipeline prints is sent as one frame line.
    let f = Frame::out(s);
    let line = f.to_line();
    assert_eq!(line.matches('\n').count(), 1, "{line:?}");
    assert_eq!(serde_json::from_str::<Frame>(&line).unwrap(), f);
}

fn hook_seeds() -> Vec<Vec<u8>> {
    let z = "0".repeat(40);
    let a = "a1b2".repeat(10);
    [
        format!("{z} {a} refs/heads/main\n{a} {z} refs/tags/v1\n"),
        format!("{a} {} refs/heads/feature/x\n", "b".repeat(64)),
        format!(
            "{{\"push_id\":\"p1\",\"token\":\"t\",\"updates\":[{{\"old\":\"{z}\",\"new\":\"{a}\",\
             \"name\":\"refs/heads/main\"}}],\"object_dir\":\"/x/objects/incoming-1\",\
             \"alternates\":null,\"push_options\":[\"ci.skip\"]}}"
        ),
        "{\"out\":\"-----> Building with python\\r\\n\"}".into(),
        "{\"exit\":1}".into(),
        "{\"out\":\"\",\"exit\":0}".into(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect()
}

// ---- Node protocol (src/node/proto.rs, and what the agent does with a request) ----

/// A node root with one app, `shop`, and its live release. Per thread, so it is removed
/// when the thread ends (statics never drop).
struct NodeFixture {
    _dir: tempfile::TempDir,
    root: magrathea::agent::layout::NodeRoot,
}

const FIXTURE_RELEASE: &str = "v1-0123456789ab";

thread_local! {
    static NODE: NodeFixture = {
        let dir = scratch_dir();
        let app = dir.path().join("apps/shop");
        fs::create_dir_all(app.join("releases").join(FIXTURE_RELEASE).join("app")).unwrap();
        fs::write(
            app.join("releases").join(FIXTURE_RELEASE).join("manifest.json"),
            "{\"app\":\"shop\"}",
        )
        .unwrap();
        symlink(format!("releases/{FIXTURE_RELEASE}"), app.join("current")).unwrap();
        let root = magrathea::agent::layout::NodeRoot::new(dir.path());
        NodeFixture { _dir: dir, root }
    };
}

/// What the agent does with the names in a request before touching anything: check them,
/// then look them up under its root.
fn node_lookups(app: &str, release: &str, keep: &[String]) {
    use magrathea::agent::layout::{check_release, check_sha256};
    let root = NODE.with(|f| f.root.clone());
    let root = &root;
    if let Err(e) = check_release(release) {
        one_line("release name", &e.to_string());
    }
    if let Err(e) = check_sha256(release) {
        one_line("sha256", &e.to_string());
    }
    let _ = root.has_release(app, release);
    let _ = root.current(app);
    let _ = root.releases(app);
    let _ = root.snapshots(app);
    match root.manifest(app, release) {
        Ok(_) => assert!(app == "shop" && release == FIXTURE_RELEASE),
        Err(e) => one_line("manifest", &e.to_string()),
    }
    if app != "shop" {
        // The fixture's app is left alone so every run sees the same tree.
        if let Err(e) = root.gc(app, keep) {
            one_line("gc", &e.to_string());
        }
    }
}

/// Every request the agent parses and every reply the controller parses, on the same bytes.
fn node_frames(data: &[u8]) {
    use magrathea::node::proto::*;
    if let Some(r) = roundtrip::<RetireReq>(data) {
        node_lookups(&r.app, &r.release, &r.only);
    }
    if let Some(r) = roundtrip::<AbortReq>(data) {
        node_lookups(&r.app, &r.release, &[]);
    }
    if let Some(r) = roundtrip::<SwitchReq>(data) {
        node_lookups(&r.app, &r.release, &[]);
    }
    // A request without fields is sent as nothing at all.
    let _ = decode::<StatusReq>(data);
    if let Some(r) = roundtrip::<GcReq>(data) {
        node_lookups(&r.app, "", &r.keep);
    }
    if let Some(r) = roundtrip::<RestoreDataReq>(data) {
        node_lookups(&r.app, &r.label, &[]);
    }
    if let Some(r) = roundtrip::<PrepareReq>(data) {
        node_lookups(&r.app, &r.release, &[]);
    }
    if let Some(r) = roundtrip::<ReleasePhaseReq>(data) {
        node_lookups(&r.app, &r.release, &[]);
    }
    if let Some(r) = roundtrip::<ShellReq>(data) {
        node_lookups(&r.app, &r.release, &[]);
    }
    if let Some(r) = roundtrip::<RunReq>(data) {
        node_lookups(&r.app, &r.release, &r.argv);
    }
    if let Some(r) = roundtrip::<LogsReq>(data) {
        node_lookups(&r.app, r.release.as_deref().unwrap_or(""), &[]);
    }
    let _ = roundtrip::<LogFrame>(data);
    let _ = roundtrip::<PrepareReply>(data);
    let _ = roundtrip::<SwitchReply>(data);
    let _ = roundtrip::<CodeReply>(data);
    let _ = roundtrip::<StatusReply>(data);
    let _ = roundtrip::<StoppedReply>(data);
    let _ = roundtrip::<PurgeReply>(data);
    let _ = roundtrip::<RestoreReply>(data);
    let _ = roundtrip::<ReceiveReply>(data);
    // The controller's reading of a failed call: `{"error": ...}` or anything else.
    let doc: serde_json::Value = serde_json::from_slice(data).unwrap_or_default();
    let _ = doc["error"].as_str();
}

fn node_seeds() -> Vec<Vec<u8>> {
    [
        "{\"app\":\"shop\",\"release\":\"v1-0123456789ab\",\"generation\":3,\"only\":[\"web\"]}",
        "{\"app\":\"shop.staging\",\"keep\":[\"v1-0123456789ab\",\"v2-aaaaaaaaaaaa\"]}",
        "{\"app\":\"shop\",\"label\":\"pre-v3\",\"if_exists\":true}",
        "{\"app\":\"shop\",\"release\":\"v3-0123456789ab\",\"image\":\"magrathea/stack-bookworm\",\
         \"processes\":[{\"ptype\":\"web\",\"command\":\"gunicorn app:app\",\"count\":2,\
         \"indices\":[1,2]}],\"env\":{\"PORT\":\"5000\"},\"memory\":536870912,\"health\":\
         {\"path\":\"/\",\"timeout_ms\":5000,\"attempts\":20},\"grace_ms\":1000,\"generation\":7,\
         \"uid\":1900000001}",
        "{\"app\":\"shop\",\"release\":\"v3-0123456789ab\",\"image\":\"i\",\"command\":\"migrate\",\
         \"env\":{},\"memory\":0,\"timeout_ms\":600000,\"snapshot\":\"pre-v3\",\"uid\":1900000001}",
        "{\"app\":\"shop\",\"tail\":100,\"follow\":true,\"process\":\"web.1\",\"release\":\"v3\"}",
        "{\"app\":\"shop\",\"release\":\"v1-0123456789ab\",\"image\":\"i\",\"argv\":[\"bash\"],\
         \"env\":{},\"memory\":1,\"uid\":1900000001}",
        "{\"t\":\"2026-01-01T00:00:00.000000000Z\",\"process\":\"web.1\",\"release\":\
         \"v3-0123456789ab\",\"line\":\"GET / 200\"}",
        "{\"live\":true}",
        "{\"error\":\"no such app\"}",
        "{\"instance\":\"abc\",\"apps\":{\"shop\":{\"current\":\"v1-0123456789ab\",\"releases\":[],\
         \"processes\":[{\"container\":\"c\",\"app\":\"shop\",\"release\":\"v1\",\"ptype\":\"web\",\
         \"index\":1,\"port\":5000,\"state\":\"running\",\"started_at\":\"x\",\"restarts\":0}]}}}",
        "{\"processes\":[{\"container\":\"c\",\"ptype\":\"web\",\"index\":1,\"port\":5000}]}",
        "{\"previous\":null}",
        "{\"code\":-1}",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

// ---- Release tarball extraction (src/release/extract.rs) ----

/// A temp dir on tmpfs when there is one: extraction creates and removes trees per run.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("magrathea-fuzz-")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    tempfile::Builder::new()
        .prefix("magrathea-fuzz-")
        .tempdir()
        .unwrap()
}

/// `base/{outside, l1/l2/dst}`: extraction goes to `dst`; everything else must stay as it
/// is. Absolute link targets the generator writes point into `outside`.
struct Sandbox {
    _dir: tempfile::TempDir,
    base: PathBuf,
    outside: PathBuf,
    l1: PathBuf,
    l2: PathBuf,
    dst: PathBuf,
}

thread_local! {
    static SANDBOX: Sandbox = {
        let dir = scratch_dir();
        let base = dir.path().to_path_buf();
        let (outside, l1) = (base.join("outside"), base.join("l1"));
        let l2 = l1.join("l2");
        fs::create_dir(&outside).unwrap();
        fs::create_dir_all(&l2).unwrap();
        let dst = l2.join("dst");
        Sandbox { _dir: dir, base, outside, l1, l2, dst }
    };
}

fn listing(dir: &Path) -> Vec<OsString> {
    let mut v: Vec<OsString> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    v.sort();
    v
}

fn remove_all(path: &Path) {
    fn open_up(p: &Path) {
        if let Ok(m) = fs::symlink_metadata(p) {
            if m.is_dir() {
                let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o700));
                for e in fs::read_dir(p).into_iter().flatten().flatten() {
                    open_up(&e.path());
                }
            }
        }
    }
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            open_up(path);
            fs::remove_dir_all(path).unwrap();
        }
        Ok(_) => fs::remove_file(path).unwrap(),
        Err(_) => {}
    }
}

/// Leaves exactly `outside/` (empty) and `l1/l2/` (empty) in the sandbox.
fn reset(sb: &Sandbox) {
    for (dir, keep) in [(&sb.base, &["l1", "outside"][..]), (&sb.l1, &["l2"][..])] {
        for n in listing(dir) {
            if !keep.iter().any(|k| n == *k) {
                remove_all(&dir.join(n));
            }
        }
    }
    for dir in [&sb.outside, &sb.l2] {
        for n in listing(dir) {
            remove_all(&dir.join(n));
        }
    }
}

/// Every relative symlink in the tree resolves (as far as it resolves on the host) inside
/// `root`: its target's directory, or the target itself when it ends in `.` or `..`.
fn check_links(root: &Path, dir: &Path) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = fs::symlink_metadata(&p).unwrap();
        if m.file_type().is_symlink() {
            let t = fs::read_link(&p).unwrap();
            if t.is_absolute() {
                // Resolves inside the container's image, never on the host (see extract.rs).
                continue;
            }
            let joined = p.parent().unwrap().join(&t);
            let probe = match t.components().next_back() {
                Some(Component::Normal(_)) => joined.parent().unwrap().to_path_buf(),
                _ => joined,
            };
            if let Ok(real) = probe.canonicalize() {
                assert!(
                    real.starts_with(root),
                    "symlink {p:?} -> {t:?} resolves to {real:?}, outside the release"
                );
            }
        } else if m.is_dir() {
            check_links(root, &p);
        }
    }
}

fn gzip(tar: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    gz.write_all(tar).unwrap();
    gz.finish().unwrap()
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// First byte mod 3: 0 builds an archive from the rest (hostile names, links, types, pax
/// and GNU long-name records), 1 takes the rest as a tar stream, 2 as the gzip stream. The
/// archive is unpacked with its correct digest, as a node would.
fn tar(data: &[u8]) {
    let (mode, rest) = data.split_first().map(|(m, r)| (*m, r)).unwrap_or((0, &[]));
    SANDBOX.with(|sb| {
        reset(sb);
        let gz = match mode % 3 {
            0 => gzip(&gen_tar(&mut Unstructured::new(rest), &sb.outside)),
            1 => gzip(rest),
            _ => rest.to_vec(),
        };
        if mode & 0x80 != 0 {
            // A buildpack tarball fetched by URL (src/build/fetch.rs): same rules, `./`
            // prefixes allowed; the caller removes what a refused one left.
            fs::create_dir(&sb.dst).unwrap();
            let r = magrathea::release::extract::unpack_foreign(&gz[..], &sb.dst);
            assert_eq!(
                listing(&sb.base),
                ["l1", "outside"],
                "wrote beside the buildpack"
            );
            assert_eq!(listing(&sb.l1), ["l2"], "wrote beside the buildpack");
            assert_eq!(listing(&sb.l2), ["dst"], "wrote beside the buildpack");
            assert!(listing(&sb.outside).is_empty(), "wrote through a link");
            match r {
                Ok(()) => {
                    accepted();
                    check_links(&sb.dst.canonicalize().unwrap(), &sb.dst);
                }
                Err(e) => one_line("extract", &e.to_string()),
            }
            return;
        }
        let r = magrathea::release::extract::unpack_stream(
            &gz[..],
            Path::new("fuzz.tar.gz"),
            &sha256_hex(&gz),
            &sb.dst,
        );
        assert_eq!(
            listing(&sb.base),
            ["l1", "outside"],
            "wrote beside the release"
        );
        assert_eq!(listing(&sb.l1), ["l2"], "wrote beside the release");
        assert!(listing(&sb.outside).is_empty(), "wrote through a link");
        match r {
            Ok(()) => {
                accepted();
                assert_eq!(listing(&sb.l2), ["dst"], "left a temp dir");
                check_links(&sb.dst.canonicalize().unwrap(), &sb.dst);
            }
            Err(e) => {
                assert!(
                    listing(&sb.l2).is_empty(),
                    "a refused archive left {:?}",
                    listing(&sb.l2)
                );
                one_line("extract", &e.to_string());
            }
        }
    })
}

const COMPS: &[&str] = &[
    "app",
    "app",
    "app",
    "manifest.json",
    "bin",
    "lib",
    "a",
    "b",
    "..",
    "..",
    ".",
    "",
    "outside",
    "dst",
    "l1",
    "l2",
    "x y",
    "ü",
    "-",
    "a\nb",
    "\u{1b}[2J",
];

/// Names that are fine in an entry path: archives made of these get past the path checks
/// and exercise the link rules and the extraction itself.
const TAME: &[&str] = &["app", "app", "a", "b", "c", "bin", "lib", "manifest.json"];

fn gen_path(u: &mut Unstructured, leading_app: bool, tame: bool) -> Vec<u8> {
    let mut p = Vec::new();
    if tame {
        let n = u.int_in_range(1..=3).unwrap_or(1);
        for i in 0..n {
            if i > 0 {
                p.push(b'/');
            }
            p.extend_from_slice(u.choose(TAME).unwrap_or(&"a").as_bytes());
        }
        return p;
    }
    if u.ratio(1, 10).unwrap_or(false) {
        p.push(b'/');
    } else if leading_app && u.ratio(1, 2).unwrap_or(false) {
        p.extend_from_slice(b"app/");
    }
    let n = u.int_in_range(1..=4).unwrap_or(1);
    for i in 0..n {
        if i > 0 {
            p.push(b'/');
        }
        match u.int_in_range(0..=20).unwrap_or(0) {
            0 => {
                let n = u.int_in_range(90..=260).unwrap_or(100);
                p.extend(std::iter::repeat_n(b'p', n))
            }
            1 => {
                let n = u.int_in_range(1..=6).unwrap_or(1);
                p.extend(u.bytes(n).unwrap_or(b"z"))
            }
            _ => p.extend_from_slice(u.choose(COMPS).unwrap_or(&"a").as_bytes()),
        }
    }
    if u.ratio(1, 10).unwrap_or(false) {
        p.push(b'/');
    }
    p
}

fn gen_target(u: &mut Unstructured, outside: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    if u.ratio(1, 4).unwrap_or(false) {
        let o = outside.as_os_str().as_bytes();
        return match u.int_in_range(0..=4).unwrap_or(0) {
            0 => o.to_vec(),
            1 => [o, b"/x"].concat(),
            2 => b"/".to_vec(),
            3 => b"/usr/bin/python3".to_vec(),
            _ => [o, b"/../outside"].concat(),
        };
    }
    gen_path(u, false, false)
}

/// A relative link among the tame names, climbing now and then.
fn tame_target(u: &mut Unstructured) -> Vec<u8> {
    let mut p = Vec::new();
    let n = u.int_in_range(1..=4).unwrap_or(1);
    for i in 0..n {
        if i > 0 {
            p.push(b'/');
        }
        let c = match u.int_in_range(0..=5).unwrap_or(0) {
            0 | 1 => "..",
            2 => ".",
            _ => u.choose(TAME).unwrap_or(&"a"),
        };
        p.extend_from_slice(c.as_bytes());
    }
    p
}

fn header(name: &[u8], link: &[u8], kind: u8, mode: u32, size: u64) -> [u8; 512] {
    let mut h = tar::Header::new_gnu();
    {
        let g = h.as_gnu_mut().unwrap();
        let n = name.len().min(100);
        g.name[..n].copy_from_slice(&name[..n]);
        let l = link.len().min(100);
        g.linkname[..l].copy_from_slice(&link[..l]);
    }
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    *h.as_bytes()
}

fn append(out: &mut Vec<u8>, hdr: &[u8; 512], data: &[u8]) {
    out.extend_from_slice(hdr);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    // The length counts itself: grow it until it is stable.
    let body = 1 + key.len() + 1 + value.len() + 1;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

fn gen_tar(u: &mut Unstructured, outside: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let tame = u.arbitrary::<bool>().unwrap_or(false);
    let mut seen = std::collections::HashSet::new();
    let n = u.int_in_range(1..=12).unwrap_or(1);
    for _ in 0..n {
        let wild = u.ratio(1, 16).unwrap_or(false);
        let name = gen_path(u, true, tame && !wild);
        if tame && !wild && !seen.insert(name.clone()) {
            continue;
        }
        let kind = match u.int_in_range(0..=15).unwrap_or(0) {
            0..=4 => b'0',
            5..=7 => b'5',
            8..=11 => b'2',
            _ if tame && !wild => b'0',
            12 => b'1',
            13 => *u.choose(b"3467Sg\0AM").unwrap_or(&b'6'),
            14 => u.arbitrary::<u8>().unwrap_or(b'0'),
            _ => b'0',
        };
        let link = match kind {
            b'1' | b'2' if tame && !u.ratio(1, 8).unwrap_or(false) => tame_target(u),
            b'1' | b'2' => gen_target(u, outside),
            _ => Vec::new(),
        };
        let data: Vec<u8> = if kind == b'0' {
            let n = u.int_in_range(0..=40).unwrap_or(0);
            u.bytes(n).unwrap_or(b"").to_vec()
        } else {
            Vec::new()
        };
        if u.ratio(1, if tame { 32 } else { 8 }).unwrap_or(false) {
            // A pax header overriding the next entry's path or link name.
            let mut recs = Vec::new();
            if u.ratio(1, 2).unwrap_or(false) {
                recs.extend(pax_record("path", &gen_path(u, true, false)));
            }
            if u.ratio(1, 2).unwrap_or(false) {
                recs.extend(pax_record("linkpath", &gen_target(u, outside)));
            }
            if u.ratio(1, 4).unwrap_or(false) {
                recs.extend(pax_record("size", b"99999999999"));
            }
            let kind = if u.ratio(1, 4).unwrap_or(false) {
                b'g'
            } else {
                b'x'
            };
            append(
                &mut out,
                &header(b"pax", b"", kind, 0o644, recs.len() as u64),
                &recs,
            );
        }
        if name.len() > 100 || u.ratio(1, 16).unwrap_or(false) {
            let mut long = name.clone();
            long.push(0);
            let h = header(b"././@LongLink", b"", b'L', 0o644, long.len() as u64);
            append(&mut out, &h, &long);
        }
        if link.len() > 100 {
            let mut long = link.clone();
            long.push(0);
            let h = header(b"././@LongLink", b"", b'K', 0o644, long.len() as u64);
            append(&mut out, &h, &long);
        }
        let mode = if u.ratio(1, 4).unwrap_or(false) {
            u.arbitrary::<u32>().unwrap_or(0) & 0o7777
        } else if kind == b'5' {
            0o755
        } else {
            0o644
        };
        let size = if u.ratio(1, 16).unwrap_or(false) {
            data.len() as u64 + u.int_in_range(0..=600).unwrap_or(1)
        } else {
            data.len() as u64
        };
        append(&mut out, &header(&name, &link, kind, mode, size), &data);
    }
    if !u.ratio(1, 8).unwrap_or(false) {
        out.extend_from_slice(&[0; 1024]);
    }
    out
}

/// Raw tar streams (mode 1) of the shapes an attacker tries first: each must be refused, or
/// extracted harmlessly. Absolute targets point into the sandbox's `outside`.
fn hostile_seeds() -> Vec<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let outside = SANDBOX.with(|sb| sb.outside.clone());
    let o = outside.as_os_str().as_bytes();
    let abs_file = [o, b"/abs"].concat();
    // (name, type flag, link target or content)
    type Entry<'a> = (&'a [u8], u8, &'a [u8]);
    let shapes: Vec<Vec<Entry>> = vec![
        vec![(b"../evil", b'0', b"")],
        vec![(&abs_file, b'0', b"")],
        vec![
            (b"app", b'5', b""),
            (b"app/lnk", b'2', o),
            (b"app/lnk/x", b'0', b""),
        ],
        vec![(b"top", b'2', b"..")],
        vec![(b"app", b'5', b""), (b"app/up", b'2', b"../../..")],
        vec![
            (b"app", b'5', b""),
            (b"app/a", b'2', b"b"),
            (b"app/b", b'2', b".."),
            (b"app/c", b'2', b"a/../.."),
        ],
        vec![(b"app", b'5', b""), (b"app/l", b'2', b"d/../../..")],
        vec![
            (b"app", b'5', b""),
            (b"app/x", b'2', b"d/../y"),
            (b"app/d", b'2', b"../.."),
        ],
        vec![
            (b"app", b'5', b""),
            (b"app/abs", b'2', b"/"),
            (b"app/rel", b'2', b"abs/etc"),
        ],
        vec![(b"app", b'2', b"lib")],
        vec![(b"manifest.json", b'2', b"app/x")],
        vec![
            (b"app", b'5', b""),
            (b"app/a", b'0', b"a"),
            (b"app/h", b'1', b"app/a"),
        ],
        vec![
            (b"app", b'5', b""),
            (b"app/f", b'6', b""),
            (b"app/c", b'3', b""),
        ],
        vec![
            (b"app", b'5', b""),
            (b"app/a", b'0', b"1"),
            (b"app/a", b'0', b"2"),
        ],
        vec![
            (b"app", b'5', b""),
            (b"app/a", b'5', b""),
            (b"app/a/../../x", b'0', b""),
        ],
        vec![
            (b"app", b'5', b""),
            (b"app/ok", b'2', b"../manifest.json"),
            (b"manifest.json", b'0', b"{}"),
        ],
    ];
    let mut seeds = Vec::new();
    for entries in shapes {
        let mut t = vec![1u8];
        for (name, kind, link_or_data) in entries {
            let (link, data) = if matches!(kind, b'1' | b'2') {
                (link_or_data, &b""[..])
            } else {
                (&b""[..], link_or_data)
            };
            let mode = if kind == b'5' { 0o755 } else { 0o644 };
            append(
                &mut t,
                &header(name, link, kind, mode, data.len() as u64),
                data,
            );
        }
        t.extend_from_slice(&[0; 1024]);
        seeds.push(t);
    }
    // A pax record renaming an innocent entry to `../x`.
    let mut t = vec![1u8];
    let rec = pax_record("path", b"../x");
    append(
        &mut t,
        &header(b"pax", b"", b'x', 0o644, rec.len() as u64),
        &rec,
    );
    append(&mut t, &header(b"app", b"", b'0', 0o644, 0), b"");
    t.extend_from_slice(&[0; 1024]);
    seeds.push(t);
    seeds
}

fn tar_seeds() -> Vec<Vec<u8>> {
    // A release as the packer makes it, from a slug shaped like a Python app's.
    let t = scratch_dir();
    let s = t.path().join("slug");
    let w = |p: &str, data: &[u8], mode: u32| {
        let p = s.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    };
    w("Procfile", b"web: gunicorn app:app\n", 0o644);
    w(
        "app.py",
        b"from flask import Flask\napp = Flask(__name__)\n",
        0o644,
    );
    w(
        ".heroku/python/bin/gunicorn",
        b"#!/app/.heroku/python/bin/python\n",
        0o755,
    );
    w(
        ".profile.d/python.sh",
        b"export PATH=$HOME/.heroku/python/bin:$PATH\n",
        0o644,
    );
    w(&("deep/".repeat(30) + "file.txt"), b"long path", 0o600);
    fs::create_dir_all(s.join("empty")).unwrap();
    symlink("/usr/bin/python3", s.join(".heroku/python/bin/python")).unwrap();
    symlink("python", s.join(".heroku/python/bin/python3")).unwrap();
    symlink("../app.py", s.join(".profile.d/app-link")).unwrap();
    fs::hard_link(s.join("app.py"), s.join("wsgi.py")).unwrap();
    let out = t.path().join("r.tar.gz");
    magrathea::release::tarball::pack(&s, b"{\"app\":\"shop\",\"version\":3}", 1_700_000_000, &out)
        .unwrap();
    let gz = fs::read(&out).unwrap();
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut raw)
        .unwrap();
    let mut seeds = vec![[&[1u8][..], &raw].concat(), [&[2u8][..], &gz].concat()];
    seeds.extend(hostile_seeds());
    // The same shapes as buildpack tarballs (mode | 0x80), and one as `tar -C dir -czf x .`
    // writes it: `./` first, then `./bin/compile`.
    let foreign: Vec<Vec<u8>> = seeds
        .iter()
        .map(|s| [&[s[0] | 0x80][..], &s[1..]].concat())
        .collect();
    seeds.extend(foreign);
    let mut t = vec![0x81u8];
    append(&mut t, &header(b"./", b"", b'5', 0o755, 0), b"");
    append(&mut t, &header(b"./bin/", b"", b'5', 0o755, 0), b"");
    append(
        &mut t,
        &header(b"./bin/compile", b"", b'0', 0o755, 10),
        b"#!/bin/sh\n",
    );
    append(&mut t, &header(b"./bin/detect", b"", b'2', 0o777, 0), b"");
    t.extend_from_slice(&[0; 1024]);
    seeds.push(t);
    for i in 0..24u8 {
        let bytes: Vec<u8> = (0..96u32)
            .map(|j| (j as u8).wrapping_mul(i.wrapping_add(31)).wrapping_add(i))
            .collect();
        seeds.push([&[0u8][..], &bytes].concat());
    }
    seeds
}

/// The key every sealed seed is made with (a stream under another key only ever fails).
const SEAL_KEY: magrathea::sealstream::StreamKey = magrathea::sealstream::StreamKey([7; 32]);

/// Sealed streams of small chunks (so one input holds many): empty, one short chunk, ending
/// on a chunk boundary (an empty last chunk), several chunks. Made once: their nonce
/// prefixes are random, and [`sealed_stream`] knows them.
fn sealed_corpus() -> &'static Vec<(Vec<u8>, Vec<u8>)> {
    static SEEDS: OnceLock<Vec<(Vec<u8>, Vec<u8>)>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let plain = |n: usize| (0..n).map(|i| (i * 37 % 251) as u8).collect::<Vec<u8>>();
        [(0, 16), (5, 16), (32, 16), (100, 16), (300, 64), (1, 1)]
            .into_iter()
            .map(|(n, chunk)| {
                let p = plain(n);
                let mut w = magrathea::sealstream::SealWriter::with_chunk_size(
                    &SEAL_KEY,
                    Vec::new(),
                    chunk,
                )
                .unwrap();
                w.write_all(&p).unwrap();
                (w.finish().unwrap(), p)
            })
            .collect()
    })
}

fn sealed_seeds() -> Vec<Vec<u8>> {
    sealed_corpus().iter().map(|(s, _)| s.clone()).collect()
}

/// The sealed-stream decryptor (service backups, `sealstream`) on hostile bytes: it never
/// panics, every failure is `InvalidData`, and it opens nothing but a stream sealed as it is
/// (a changed, cut, reordered or appended byte of a seed is refused), giving its plaintext.
/// `verify` agrees with reading.
fn sealed_stream(data: &[u8]) {
    use magrathea::sealstream::{verify, OpenReader};
    use sha2::Digest;
    let read = OpenReader::new(&SEAL_KEY, data).and_then(|mut r| {
        let mut out = Vec::new();
        // Odd read sizes: what is handed out must not depend on them.
        let mut buf = [0u8; 7];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    });
    let checked = verify(&SEAL_KEY, data);
    match (&read, &checked) {
        (Ok(plain), Ok((len, digest))) => {
            let seed = sealed_corpus().iter().find(|(s, _)| s == data);
            let Some((_, want)) = seed else {
                panic!(
                    "opened a stream that was never sealed: {} bytes",
                    data.len()
                );
            };
            assert_eq!(plain, want, "a seed opened to other bytes");
            assert_eq!(*len, plain.len() as u64);
            assert_eq!(*digest, <[u8; 32]>::from(sha2::Sha256::digest(plain)));
        }
        (Err(a), Err(b)) => {
            for e in [a, b] {
                assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
                let msg = e.to_string();
                assert!(
                    !msg.contains('\n') && !msg.chars().any(char::is_control),
                    "{msg:?}"
                );
            }
        }
        _ => panic!(
            "reading and verify disagree: {:?} / {:?}",
            read.as_ref().map(Vec::len),
            checked.as_ref().map(|c| c.0)
        ),
    }
}
