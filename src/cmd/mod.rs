//! The commands users run over SSH (`ssh paas CMD ...`), one file per family, like
//! mini-redis's `cmd/`. Parsing is strict: shell-words split, then clap `try_parse_from`;
//! never a shell, never `process::exit`. Each command states the access it needs; the
//! dispatcher checks it and audits every call, allowed or refused.

mod access;
mod apps;
mod audit;
mod builds;
mod config;
mod deploy;
mod info;
pub mod interactive;
mod keys;
mod logs;
mod nodes;
mod ps;
mod releases;
pub mod table;

use std::sync::Arc;

use clap::{CommandFactory, Parser, Subcommand};
use thiserror::Error;

use crate::access::{AppRole, Identity};
use crate::controller::Sink;
use crate::controller::{Core, CoreError};
use crate::names::InvalidName;

/// What a finished command sends back.
#[derive(Debug, Default)]
pub struct Reply {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub code: u32,
}

impl Reply {
    pub fn ok(s: impl Into<String>) -> Reply {
        Reply {
            stdout: s.into().into_bytes(),
            ..Default::default()
        }
    }
    pub fn err(msg: impl std::fmt::Display, code: u32) -> Reply {
        Reply {
            stderr: format!("{}\n", msg).into_bytes(),
            code,
            ..Default::default()
        }
    }
}

#[derive(Debug, Error)]
pub enum CmdError {
    #[error("error: {0}")]
    Invalid(String),
    #[error("error: {0}")]
    Core(#[from] CoreError),
    #[error("error: {0}")]
    Name(#[from] InvalidName),
}

impl CmdError {
    fn outcome(&self) -> &'static str {
        match self {
            CmdError::Core(CoreError::Denied(_)) => "denied",
            _ => "error",
        }
    }
}

pub type CmdResult = Result<String, CmdError>;

/// Top-level grammar. Command names carry a colon, Heroku style.
#[derive(Debug, Parser)]
#[command(
    name = "ssh paas",
    about = "Magrathea: git push to build and deploy. Commands over ssh:",
    no_binary_name = true,
    disable_help_subcommand = true,
    disable_version_flag = true,
    override_usage = "ssh paas COMMAND [ARGS...]\n       git push paas main",
    after_help = "Run 'ssh paas COMMAND --help' for a command's options."
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Show the commands, or one command's help
    Help { command: Option<String> },
    /// Show the server's version
    Version,
    /// Show which key you are authenticated as
    Whoami {
        #[arg(long)]
        json: bool,
    },
    /// List the apps you can see
    Apps {
        #[arg(long)]
        json: bool,
    },
    /// Create an app (admin)
    #[command(name = "apps:create")]
    AppsCreate { name: String },
    /// Show an app
    #[command(name = "apps:info")]
    AppsInfo {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Destroy an app and its repository (owner)
    #[command(name = "apps:destroy")]
    AppsDestroy {
        name: String,
        /// The app's name again, to confirm
        #[arg(long, value_name = "NAME")]
        confirm: Option<String>,
        /// Archive the data dirs on the nodes (outside every app's reach) instead of deleting them
        #[arg(long)]
        keep_data: bool,
    },
    /// List the registered keys (admin)
    Keys {
        #[arg(long)]
        json: bool,
    },
    /// Register a public key, read from stdin (admin)
    #[command(name = "keys:add")]
    KeysAdd {
        name: String,
        #[arg(long, default_value = "user", value_parser = ["admin", "user"])]
        role: String,
    },
    /// Remove a key and its grants (admin)
    #[command(name = "keys:remove")]
    KeysRemove { name: String },
    /// Show who has access to an app (owner)
    Access {
        app: String,
        #[arg(long)]
        json: bool,
    },
    /// Give a key a role on an app: viewer, deployer or owner (owner)
    #[command(name = "access:grant")]
    AccessGrant {
        app: String,
        key: String,
        #[arg(value_parser = ["viewer", "deployer", "owner"])]
        role: String,
        /// Limit this key's pushes to tags matching PATTERN (e.g. 'v*'); it may create
        /// them, not move or delete them
        #[arg(long, value_name = "PATTERN")]
        tags: Option<String>,
        /// With --tags: the key may also move (force) and delete its tags
        #[arg(long)]
        allow_retag: bool,
    },
    /// Take a key's access to an app away (owner)
    #[command(name = "access:revoke")]
    AccessRevoke { app: String, key: String },
    /// List an app's releases
    Releases {
        app: String,
        #[arg(long)]
        json: bool,
    },
    /// Show a release's manifest
    #[command(name = "releases:info")]
    ReleasesInfo {
        app: String,
        version: String,
        #[arg(long)]
        json: bool,
    },
    /// List an app's builds
    Builds {
        app: String,
        #[arg(short = 'n', default_value_t = 20)]
        n: i64,
        #[arg(long)]
        json: bool,
    },
    /// Show a build's log (default: the latest)
    #[command(name = "builds:log")]
    BuildsLog { app: String, id: Option<i64> },
    /// Cancel an app's running build (deployer)
    #[command(name = "builds:cancel")]
    BuildsCancel { app: String },
    /// Empty an app's build cache; its next build fetches its buildpacks again (deployer)
    #[command(name = "builds:purge-cache")]
    BuildsPurgeCache { app: String },
    /// Show config vars (owner)
    Config {
        app: String,
        #[arg(long, default_value = "production")]
        env: String,
        #[arg(long)]
        json: bool,
    },
    /// Show one config var (owner)
    #[command(name = "config:get")]
    ConfigGet {
        app: String,
        key: String,
        #[arg(long, default_value = "production")]
        env: String,
    },
    /// Set config vars; a change is a new release, rolled out (owner)
    #[command(name = "config:set")]
    ConfigSet {
        app: String,
        #[arg(value_name = "KEY=VALUE", required = true)]
        pairs: Vec<String>,
        #[arg(long, default_value = "production")]
        env: String,
        /// Store only; the next deploy picks it up
        #[arg(long)]
        no_restart: bool,
        /// Values are base64 (as Dokku's --encoded): decoded before they are stored
        #[arg(long)]
        encoded: bool,
    },
    /// Remove config vars; a change is a new release, rolled out (owner)
    #[command(name = "config:unset")]
    ConfigUnset {
        app: String,
        #[arg(value_name = "KEY", required = true)]
        keys: Vec<String>,
        #[arg(long, default_value = "production")]
        env: String,
        #[arg(long)]
        no_restart: bool,
    },
    /// Deploy an existing release to an environment (deployer)
    Deploy {
        app: String,
        version: String,
        #[arg(long, default_value = "production")]
        env: String,
    },
    /// Processes of an app: node, release, state, uptime, restarts, port (viewer)
    Ps {
        app: String,
        #[arg(long, default_value = "production")]
        env: String,
        #[arg(long)]
        json: bool,
    },
    /// Set process counts (web=3 worker=1), placed by free capacity, rolled out (owner)
    Scale {
        app: String,
        #[arg(value_name = "TYPE=COUNT", required = true)]
        counts: Vec<String>,
        #[arg(long, default_value = "production")]
        env: String,
    },
    /// Rolling restart: new processes first, then the old ones drain (owner)
    Restart {
        app: String,
        /// Only this process type
        ptype: Option<String>,
        #[arg(long, default_value = "production")]
        env: String,
    },
    /// Stop every process; release, config and data stay (owner)
    Stop {
        app: String,
        #[arg(long, default_value = "production")]
        env: String,
    },
    /// Start a stopped app again (owner)
    Start {
        app: String,
        #[arg(long, default_value = "production")]
        env: String,
    },
    /// Go back to the previous release, or to vN (deployer)
    Rollback {
        app: String,
        version: Option<String>,
        #[arg(long, default_value = "production")]
        env: String,
        /// Also restore the data snapshot taken before the current release
        #[arg(long)]
        with_data: bool,
    },
    /// List nodes (admin)
    Nodes {
        #[arg(long)]
        json: bool,
    },
    /// Add a node running 'magrathea agent' (admin); pins its host key
    #[command(name = "nodes:add")]
    NodesAdd {
        name: String,
        /// HOST:PORT of the agent
        addr: String,
        /// Labels for environment selectors, KEY=VALUE (repeatable)
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// At most this many processes (of all apps) on the node; without it, placement goes
        /// by the memory the node offers
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..=1000))]
        slots: Option<i64>,
    },
    /// Forget a node (admin)
    #[command(name = "nodes:remove")]
    NodesRemove { name: String },
    /// Show a node and what runs on it (admin)
    #[command(name = "nodes:info")]
    NodesInfo {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Print the controller's public key, for 'magrathea agent --controller-key' (admin)
    #[command(name = "nodes:key")]
    NodesKey,
    /// Open a shell in a running process of the live release (owner; needs ssh -t)
    Shell {
        app: String,
        /// The node to use (default: the first where the app is live)
        #[arg(long)]
        node: Option<String>,
        /// A process (web.2) or a type (web); default web.1, else the first
        #[arg(long)]
        process: Option<String>,
        #[arg(long, default_value = "production")]
        env: String,
    },
    /// Run a command in a one-off container of the live release: run APP -- CMD ARGS (owner)
    Run {
        app: String,
        #[arg(long, default_value = "production")]
        env: String,
        /// The command and its arguments, after '--'
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Build and deploy events and every process's output, merged in time order (viewer)
    Logs(logs::Args),
    /// Show the audit trail (admin; owners for their app)
    Audit {
        app: Option<String>,
        #[arg(short = 'n', default_value_t = 50)]
        n: i64,
        #[arg(long)]
        json: bool,
    },
}

/// The access a command needs.
enum Need<'a> {
    Anyone,
    Admin,
    App(&'a str, AppRole),
}

impl Cmd {
    fn need(&self) -> Need<'_> {
        use Cmd::*;
        match self {
            Help { .. } | Version | Whoami { .. } | Apps { .. } => Need::Anyone,
            AppsCreate { .. } | Keys { .. } | KeysAdd { .. } | KeysRemove { .. } => Need::Admin,
            Nodes { .. } | NodesAdd { .. } | NodesRemove { .. } | NodesInfo { .. } | NodesKey => {
                Need::Admin
            }
            Deploy { app, .. } | Rollback { app, .. } => Need::App(app, AppRole::Deployer),
            Ps { app, .. } => Need::App(app, AppRole::Viewer),
            Scale { app, .. } | Restart { app, .. } | Stop { app, .. } | Start { app, .. } => {
                Need::App(app, AppRole::Owner)
            }
            Config { app, .. }
            | ConfigGet { app, .. }
            | ConfigSet { app, .. }
            | ConfigUnset { app, .. } => Need::App(app, AppRole::Owner),
            AppsInfo { name, .. } => Need::App(name, AppRole::Viewer),
            AppsDestroy { name, .. } => Need::App(name, AppRole::Owner),
            Access { app, .. } | AccessGrant { app, .. } | AccessRevoke { app, .. } => {
                Need::App(app, AppRole::Owner)
            }
            Releases { app, .. }
            | ReleasesInfo { app, .. }
            | Builds { app, .. }
            | BuildsLog { app, .. } => Need::App(app, AppRole::Viewer),
            BuildsCancel { app } | BuildsPurgeCache { app } => Need::App(app, AppRole::Deployer),
            Shell { app, .. } | Run { app, .. } => Need::App(app, AppRole::Owner),
            Logs(a) => Need::App(&a.app, AppRole::Viewer),
            Audit { app: Some(app), .. } => Need::App(app, AppRole::Owner),
            Audit { app: None, .. } => Need::Admin,
        }
    }

    fn app(&self) -> Option<&str> {
        match self.need() {
            Need::App(a, _) => Some(a),
            _ => match self {
                Cmd::AppsCreate { name } => Some(name),
                _ => None,
            },
        }
    }

    /// Long-running commands whose progress streams to the client.
    pub fn is_streaming(&self) -> bool {
        matches!(
            self,
            Cmd::Deploy { .. }
                | Cmd::Logs(_)
                | Cmd::Rollback { .. }
                | Cmd::NodesAdd { .. }
                | Cmd::NodesInfo { .. }
                | Cmd::ConfigSet { .. }
                | Cmd::ConfigUnset { .. }
                | Cmd::AppsDestroy { .. }
                | Cmd::Ps { .. }
                | Cmd::Scale { .. }
                | Cmd::Restart { .. }
                | Cmd::Stop { .. }
                | Cmd::Start { .. }
        )
    }

    /// Sessions bridged to a node (`shell`, `run`): see [`start_interactive`].
    pub fn is_interactive(&self) -> bool {
        matches!(self, Cmd::Shell { .. } | Cmd::Run { .. })
    }

    /// Does this command read the client's stdin?
    pub fn wants_stdin(&self) -> bool {
        matches!(self, Cmd::KeysAdd { .. })
    }
}

/// Is `name` one of the commands? (Derived from the grammar, so it cannot drift.)
pub fn is_command(name: &str) -> bool {
    Cli::command()
        .get_subcommands()
        .any(|c| c.get_name() == name)
}

/// Parse an argv; on failure the reply to send (help is a success, bad usage is not).
pub fn parse(argv: &[String]) -> Result<Cmd, Reply> {
    match argv.first() {
        None => return Err(Reply::ok(help_text())),
        Some(first) if !first.starts_with('-') && !is_command(first) => {
            let shown: String = first.chars().filter(|c| !c.is_control()).take(60).collect();
            return Err(Reply::err(
                format!("error: unknown command '{shown}' (try 'help')"),
                1,
            ));
        }
        _ => {}
    }
    match Cli::try_parse_from(argv) {
        Ok(cli) => Ok(cli.cmd),
        Err(e) => {
            let text = e.render().to_string();
            match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    Err(Reply::ok(text))
                }
                _ => Err(Reply::err(one_line_usage_error(&text), 2)),
            }
        }
    }
}

/// clap's error, which spans several lines, as one: the message, what it lists, the usage.
/// clap quotes the offending argument as typed: its control characters (a `\r`, a terminal
/// escape) are dropped, as everywhere a user's input is echoed.
fn one_line_usage_error(text: &str) -> String {
    let mut msg = String::new();
    let mut usage = None;
    let clean: Vec<String> = text
        .lines()
        .map(|l| l.chars().filter(|c| !c.is_control()).collect())
        .collect();
    for l in clean.iter().map(|l| l.trim()).filter(|l| !l.is_empty()) {
        if let Some(u) = l.strip_prefix("Usage: ") {
            usage = Some(u.to_string());
        } else if l.starts_with("For more information") || l.starts_with("tip:") {
            continue;
        } else {
            if !msg.is_empty() {
                msg.push(' ');
            }
            msg.push_str(l);
        }
    }
    match usage {
        Some(u) => format!("{msg} (usage: {u})"),
        None => msg,
    }
}

pub fn help_text() -> String {
    let mut c = Cli::command();
    c.render_help().to_string()
}

/// Audit text for a command line. Config commands carry secrets in any shape (`K=V`,
/// `-E=V`, `KEY value`, a value where a key goes), so of their arguments only the command,
/// the app, the flags they know and key names are kept; every other one is `***`. An
/// unknown command keeps its name only. Elsewhere a `K=V` argument has its value hidden.
pub fn redact(argv: &[String]) -> String {
    let Some(first) = argv.first() else {
        return String::new();
    };
    // An unknown command's name is shown only if it looks like one (it may be a value).
    let name = if is_command(first)
        || (first.len() <= 60
            && first
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.')))
    {
        first.clone()
    } else {
        "***".to_string()
    };
    let rest = &argv[1..];
    let redacted: Vec<String> = if !is_command(first) {
        rest.iter().map(|_| "***".to_string()).collect()
    } else if first.starts_with("config") {
        redact_config(first, rest)
    } else {
        rest.iter()
            .map(|a| match a.split_once('=') {
                Some((k, _)) if !k.starts_with('-') => format!("{k}=***"),
                _ => a.clone(),
            })
            .collect()
    };
    std::iter::once(name)
        .chain(redacted)
        .collect::<Vec<_>>()
        .join(" ")
}

fn redact_config(cmd: &str, args: &[String]) -> Vec<String> {
    let key_shaped = |k: &str| {
        !k.is_empty()
            && k.len() <= 128
            && k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let name_shaped = |v: &str| crate::names::check("env", v).is_ok();
    let pairs = cmd == "config:set";
    // The command's own switches (flags without a value), from the grammar so the list
    // cannot drift: they are shown, anything else starting with '-' may hold a value.
    let switches: Vec<String> = Cli::command()
        .find_subcommand(cmd)
        .map(|c| {
            c.get_arguments()
                .filter(|a| !a.get_action().takes_values())
                .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
                .collect()
        })
        .unwrap_or_default();
    let (mut out, mut app_seen, mut env_next) = (vec![], false, false);
    for a in args {
        let shown = if env_next {
            env_next = false;
            if name_shaped(a) {
                a.clone()
            } else {
                "***".into()
            }
        } else if a == "--env" {
            env_next = true;
            a.clone()
        } else if let Some(v) = a.strip_prefix("--env=") {
            if name_shaped(v) {
                a.clone()
            } else {
                "--env=***".into()
            }
        } else if matches!(a.as_str(), "--help" | "-h" | "--") || switches.contains(a) {
            a.clone()
        } else if a.starts_with('-') {
            "***".into()
        } else if !app_seen {
            app_seen = true;
            if name_shaped(a) {
                a.clone()
            } else {
                "***".into()
            }
        } else if pairs {
            match a.split_once('=') {
                Some((k, _)) if key_shaped(k) => format!("{k}=***"),
                _ => "***".into(),
            }
        } else if key_shaped(a) {
            a.clone()
        } else {
            "***".into()
        };
        out.push(shown);
    }
    out
}

fn check(core: &Arc<Core>, who: &Identity, argv: &[String], cmd: &Cmd) -> Result<(), CmdError> {
    match cmd.need() {
        Need::Anyone => Ok(()),
        Need::Admin if who.is_admin() => Ok(()),
        Need::Admin => Err(CmdError::Core(CoreError::Denied(format!(
            "'{}' needs an admin key; key '{}' is not one",
            argv.first().map(String::as_str).unwrap_or(""),
            who.name
        )))),
        Need::App(a, role) => crate::names::check("app", a)
            .map_err(CmdError::from)
            .and_then(|a| {
                core.require(who, a, role, argv.first().map(String::as_str).unwrap_or(""))
                    .map(|_| ())
                    .map_err(CmdError::from)
            }),
    }
}

/// Check access, then record the command in the audit trail before it runs: a command
/// that cannot be recorded does not run (fails closed). The entry's id.
fn admit(
    core: &Arc<Core>,
    who: &Identity,
    argv: &[String],
    cmd: &Cmd,
    line: &str,
) -> Result<i64, CmdError> {
    check(core, who, argv, cmd)?;
    Ok(core.audit_open(who, cmd.app(), line, "")?)
}

/// The reply, with the outcome in the audit trail: on the entry `admit` opened, or (a
/// refusal) on a new one.
fn finish(
    core: &Arc<Core>,
    who: &Identity,
    app: Option<&str>,
    line: &str,
    opened: Option<i64>,
    result: CmdResult,
) -> Reply {
    let (outcome, detail) = match &result {
        Ok(_) => ("ok", String::new()),
        Err(e) => (e.outcome(), e.to_string()),
    };
    match opened {
        Some(id) => core.audit_close(id, outcome, &detail),
        None => core.audit(who, app, line, outcome, &detail),
    }
    match result {
        Ok(out) => Reply::ok(out),
        Err(e) => Reply::err(&e, 1),
    }
}

/// Check access, run, audit.
pub fn execute(core: &Arc<Core>, who: &Identity, argv: &[String], cmd: Cmd, stdin: &[u8]) -> Reply {
    let line = redact(argv);
    let app = cmd.app().map(str::to_string);
    let (opened, result) = match admit(core, who, argv, &cmd, &line) {
        Ok(id) => (Some(id), run(core, who, cmd, stdin)),
        Err(e) => (None, Err(e)),
    };
    finish(core, who, app.as_deref(), &line, opened, result)
}

/// A command line that never became a command (unparseable, unknown, bad usage) is
/// audited too, as `invalid`, with its redacted text and why in a word (the reply may
/// quote an argument, which may be a value).
pub fn audit_invalid(core: &Arc<Core>, who: &Identity, line: &str, why: &str) {
    core.audit(who, None, line, "invalid", why);
}

/// The same for streaming commands: progress goes to `out` as it happens.
pub async fn execute_streaming(
    core: &Arc<Core>,
    who: &Identity,
    argv: &[String],
    cmd: Cmd,
    out: &mut Sink,
) -> Reply {
    let line = redact(argv);
    let app = cmd.app().map(str::to_string);
    let opened = admit(core, who, argv, &cmd, &line);
    let id = opened.as_ref().ok().copied();
    let result = match opened {
        Err(e) => Err(e),
        Ok(_) => match cmd {
            Cmd::Deploy { app, version, env } => {
                deploy::deploy(core, &who.name, &app, &version, &env, out).await
            }
            Cmd::Rollback {
                app,
                version,
                env,
                with_data,
            } => {
                deploy::rollback(
                    core,
                    &who.name,
                    &app,
                    version.as_deref(),
                    &env,
                    with_data,
                    out,
                )
                .await
            }
            Cmd::NodesAdd {
                name,
                addr,
                labels,
                slots,
            } => nodes::add(core, &name, &addr, &labels, slots, out).await,
            Cmd::NodesInfo { name, json } => nodes::info(core, &name, json).await,
            Cmd::Logs(a) => logs::logs(core, a, out).await,
            Cmd::Ps { app, env, json } => ps::ps(core, &app, &env, json).await,
            Cmd::AppsDestroy {
                name,
                confirm,
                keep_data,
            } => apps::destroy(core, &name, confirm.as_deref(), keep_data, out).await,
            Cmd::Scale { app, counts, env } => {
                ps::scale(core, &who.name, &app, &counts, &env, out).await
            }
            Cmd::Restart { app, ptype, env } => {
                ps::restart(core, &who.name, &app, ptype.as_deref(), &env, out).await
            }
            Cmd::Stop { app, env } => ps::set_stopped(core, &who.name, &app, &env, true, out).await,
            Cmd::Start { app, env } => {
                ps::set_stopped(core, &who.name, &app, &env, false, out).await
            }
            Cmd::ConfigSet {
                app,
                pairs,
                env,
                no_restart,
                encoded,
            } => {
                let c = config::Change {
                    set: &pairs,
                    unset: &[],
                    no_restart,
                    encoded,
                };
                config::change(core, &who.name, &app, &env, c, out).await
            }
            Cmd::ConfigUnset {
                app,
                keys,
                env,
                no_restart,
            } => {
                let c = config::Change {
                    set: &[],
                    unset: &keys,
                    no_restart,
                    encoded: false,
                };
                config::change(core, &who.name, &app, &env, c, out).await
            }
            other => run(core, who, other, &[]),
        },
    };
    finish(core, who, app.as_deref(), &line, id, result)
}

fn run(core: &Arc<Core>, who: &Identity, cmd: Cmd, stdin: &[u8]) -> CmdResult {
    use Cmd::*;
    match cmd {
        Help { command } => info::help(command.as_deref()),
        Version => Ok(format!("magrathea {}\n", env!("CARGO_PKG_VERSION"))),
        Whoami { json } => info::whoami(who, json),
        Apps { json } => apps::list(core, who, json),
        AppsCreate { name } => apps::create(core, who, &name),
        AppsInfo { name, json } => apps::info(core, &name, json),
        Keys { json } => keys::list(core, json),
        KeysAdd { name, role } => keys::add(core, &name, &role, stdin),
        KeysRemove { name } => keys::remove(core, &name),
        Access { app, json } => access::list(core, &app, json),
        AccessGrant {
            app,
            key,
            role,
            tags,
            allow_retag,
        } => access::grant(core, &app, &key, &role, tags.as_deref(), allow_retag),
        AccessRevoke { app, key } => access::revoke(core, &app, &key),
        Audit { app, n, json } => audit::list(core, app.as_deref(), n, json),
        Releases { app, json } => releases::list(core, &app, json),
        ReleasesInfo { app, version, json } => releases::info(core, &app, &version, json),
        Builds { app, n, json } => builds::list(core, &app, n, json),
        BuildsLog { app, id } => builds::log(core, &app, id),
        BuildsCancel { app } => builds::cancel(core, &app),
        BuildsPurgeCache { app } => builds::purge_cache(core, &app),
        Nodes { json } => nodes::list(core, json),
        NodesRemove { name } => nodes::remove(core, &name),
        NodesKey => nodes::key(core),
        Config { app, env, json } => config::show(core, &app, &env, json),
        ConfigGet { app, key, env } => config::get(core, &app, &key, &env),
        Deploy { .. }
        | Rollback { .. }
        | NodesAdd { .. }
        | NodesInfo { .. }
        | Logs(_)
        | ConfigSet { .. }
        | ConfigUnset { .. }
        | AppsDestroy { .. }
        | Ps { .. }
        | Scale { .. }
        | Restart { .. }
        | Stop { .. }
        | Start { .. } => Err(CmdError::Invalid(
            "this command streams; internal routing error".into(),
        )),
        Shell { .. } | Run { .. } => Err(CmdError::Invalid(
            "this command is interactive; internal routing error".into(),
        )),
    }
}

/// `shell` and `run`: check access and find where to run, audited like every command (an
/// allowed session is recorded when it starts). The session to bridge, or the reply to send.
pub async fn start_interactive(
    core: &Arc<Core>,
    who: &Identity,
    argv: &[String],
    cmd: Cmd,
    pty: bool,
) -> Result<crate::controller::view::Session, Reply> {
    let line = redact(argv);
    let app = cmd.app().map(str::to_string);
    let opened = admit(core, who, argv, &cmd, &line);
    let id = opened.as_ref().ok().copied();
    let result = match opened {
        Err(e) => Err(e),
        Ok(_) => interactive::prepare(core, cmd, pty).await,
    };
    match (result, id) {
        (Ok(s), Some(id)) => {
            core.audit_close(id, "ok", &s.detail);
            Ok(s)
        }
        (Ok(s), None) => Ok(s),
        (Err(e), id) => Err(finish(core, who, app.as_deref(), &line, id, Err(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        shell_words::split(s).unwrap()
    }

    #[test]
    fn parsing() {
        assert!(matches!(
            parse(&argv("apps:create web")),
            Ok(Cmd::AppsCreate { .. })
        ));
        let e = parse(&argv("frobnicate")).unwrap_err();
        assert_eq!(e.code, 1);
        assert!(String::from_utf8_lossy(&e.stderr)
            .contains("unknown command 'frobnicate' (try 'help')"));
        let e = parse(&argv("apps:create")).unwrap_err();
        assert_eq!(e.code, 2);
        let msg = String::from_utf8_lossy(&e.stderr);
        assert_eq!(msg.trim_end().lines().count(), 1, "{msg}");
        assert!(
            msg.contains("<NAME>") && msg.contains("usage: apps:create"),
            "{msg}"
        );
        let h = parse(&argv("apps:create --help")).unwrap_err();
        assert_eq!(h.code, 0);
        assert!(String::from_utf8_lossy(&h.stdout).contains("apps:create"));
        assert!(parse(&argv("access:grant web bob god")).is_err());
        // Found by fuzzing: clap quotes a bad argument as typed, control characters and all.
        let e = parse(&["apps:create".into(), "a".into(), "b\r\x1b[2Jc".into()]).unwrap_err();
        let msg = String::from_utf8_lossy(&e.stderr);
        let line = msg.strip_suffix('\n').unwrap();
        assert!(!line.chars().any(char::is_control), "{msg:?}");
        assert!(line.contains("'bc'"), "{msg:?}");
        assert_eq!(parse(&[]).unwrap_err().code, 0);
        assert!(is_command("releases:info") && !is_command("releases:inf"));
    }

    #[test]
    fn redaction() {
        let cases = [
            (
                "config:set web A=secret --env=prod",
                "config:set web A=*** --env=prod",
            ),
            ("config:set web -E=secret", "config:set web ***"),
            ("config:set web KEY secret", "config:set web *** ***"),
            (
                "config:set web --env prod 'B=x y' =s",
                "config:set web --env prod B=*** ***",
            ),
            (
                "config:set web --no-restart -- A=s",
                "config:set web --no-restart -- A=***",
            ),
            ("config:set 'sec ret' A=b", "config:set *** A=***"),
            (
                "config:set web --env=s3cr=t A=b",
                "config:set web --env=*** A=***",
            ),
            (
                "config:set web --env 's3 cret' A=b",
                "config:set web --env *** A=***",
            ),
            ("config:get web KEY", "config:get web KEY"),
            (
                "config:set web --encoded A=czNjcmV0 --json",
                "config:set web --encoded A=*** ***",
            ),
            ("config --json web", "config --json web"),
            ("config:get web s3cr=t", "config:get web ***"),
            ("config:unset web A B -Xsecret", "config:unset web A B ***"),
            ("config:sett web A=secret", "config:sett *** ***"),
            ("configure web hunter2", "configure *** ***"),
            ("frobnicate A=secret hunter2", "frobnicate *** ***"),
            ("DB_URL=postgres://u:pw@h/db", "***"),
            (
                "config:set shop -E=s3 KEY s4 --env=prod B=s5",
                "config:set shop *** *** *** --env=prod B=***",
            ),
            ("apps:create web", "apps:create web"),
            ("deploy web v2 --env=staging", "deploy web v2 --env=staging"),
            ("run web -- env X=secret", "run web -- env X=***"),
        ];
        for (line, want) in cases {
            assert_eq!(redact(&argv(line)), want, "{line}");
        }
        assert_eq!(redact(&[]), "");
    }
}
