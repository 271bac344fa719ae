//! The commands users run over SSH (`ssh paas CMD ...`), one file per command, like
//! mini-redis's `cmd/`: each file holds the command's grammar (a clap `Args` struct, whose
//! doc comment is its help line), the access it needs and its handler ([`Command`]). This
//! file registers them ([`commands!`], one line each) and holds the one dispatch path:
//! parse (shell-words split, then clap `try_parse_from`; never a shell, never
//! `process::exit`), check the access, audit, run, audit the outcome. A handler parses what
//! clap cannot, calls `Core` and renders; it never reaches the store, a node or the rollout.

mod access;
mod access_grant;
mod access_revoke;
mod acl;
mod acl_change;
mod apps;
mod apps_create;
mod apps_destroy;
mod apps_info;
mod audit;
mod builds;
mod builds_cancel;
mod builds_log;
mod builds_purge_cache;
mod builds_report;
mod builds_set;
mod certs;
mod certs_add;
mod certs_auto;
mod certs_auto_disable;
mod certs_auto_enable;
mod certs_auto_refresh;
mod certs_remove;
mod clusters;
mod clusters_add;
mod clusters_info;
mod clusters_remove;
mod config;
mod config_change;
mod config_get;
mod deploy;
pub mod dokku;
mod domains;
mod domains_add;
mod domains_clear;
mod domains_remove;
mod help;
mod keys;
mod keys_add;
mod keys_remove;
mod limits;
mod limits_change;
mod logs;
mod maintenance;
mod nodes;
mod nodes_add;
mod nodes_info;
mod nodes_key;
mod nodes_remove;
mod ps;
mod rebuild;
mod redact;
mod releases;
mod releases_info;
mod restart;
mod rollback;
mod routing_set;
mod run;
mod scale;
mod services;
mod services_backup;
mod services_backups;
mod services_connect;
mod services_create;
mod services_destroy;
mod services_export;
mod services_import;
mod services_info;
mod services_link;
mod services_logs;
mod services_restore;
mod shell;
mod stop_start;
pub mod table;
mod usage;
mod version;
mod whoami;

use std::sync::Arc;

use clap::{CommandFactory, Parser, Subcommand};
use thiserror::Error;

use crate::access::{AppRole, Identity};
use crate::controller::view::Session;
use crate::controller::{Core, CoreError, Sink};
use crate::names::{InvalidHost, InvalidName, InvalidProcess, InvalidVersion};

pub use redact::redact;

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

pub type CmdResult<T = String> = Result<T, CmdError>;

/// The access a command needs. [`Core::require`] and the admin check are the only gates;
/// every command states its need here, and `roles.txt` shows them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    Anyone,
    Admin,
    /// This role (or more) on the app the command names.
    App(AppRole),
    /// This role on the app when one is named; admin without one.
    AppOrAdmin(AppRole),
    /// This role on the app of the service the command names (the app that declared it,
    /// or for viewers one it is linked to); admin for a global service's owner actions.
    Service(AppRole),
}

impl std::fmt::Display for Need {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Need::Anyone => f.write_str("anyone"),
            Need::Admin => f.write_str("admin"),
            Need::App(r) => write!(f, "{r} of the app"),
            Need::AppOrAdmin(r) => write!(f, "{r} of the app; admin without one"),
            Need::Service(r) => write!(f, "{r} of the service's app"),
        }
    }
}

/// How a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Short, blocking work (the store, small files): on a blocking thread; the output is
    /// sent at the end.
    Quick,
    /// Long: progress lines stream to the client as they happen; ends early when the
    /// client goes away (`logs -f`).
    Streams,
    /// Becomes a session on a node (`shell`, `run`) that the front end bridges.
    Session,
}

/// What a handler has to work with.
pub(crate) struct Ctx<'a> {
    pub core: &'a Arc<Core>,
    pub who: &'a Identity,
    /// Progress lines, sent as they happen.
    pub out: &'a mut Sink,
    /// What the client sent on stdin (commands that read it).
    pub stdin: &'a [u8],
    /// Whether the client asked for a terminal (`ssh -t`).
    pub pty: bool,
    /// The client's stdin and stdout as byte streams ([`Command::PIPE`] commands).
    pub pipe: Option<Pipe>,
}

/// A [`Command::PIPE`] command's byte streams: stdin as the client sends it (any size, to
/// its EOF), and stdout, written as is (progress lines go to stderr instead).
pub struct Pipe {
    pub stdin: tokio::sync::mpsc::Receiver<Vec<u8>>,
    pub stdout: tokio::sync::mpsc::Sender<Vec<u8>>,
}

/// What a handler hands back.
pub(crate) enum Done {
    Text(String),
    Session(Box<Session>),
}

impl From<String> for Done {
    fn from(s: String) -> Done {
        Done::Text(s)
    }
}

/// One command: its grammar (the `Args`), the access it needs, the app it is about, how it
/// runs, and its handler.
pub(crate) trait Command: clap::Args {
    const NEED: Need;
    const MODE: Mode = Mode::Quick;
    /// Whether it reads the client's stdin (buffered, small).
    const STDIN: bool = false;
    /// Whether it streams bytes: a dump in (stdin) or out (stdout); see [`Pipe`].
    const PIPE: bool = false;
    /// The app the command is about (checked against [`Need::App`], shown in the audit).
    fn app(&self) -> Option<&str> {
        None
    }
    /// The service the command is about (checked against [`Need::Service`]).
    fn service(&self) -> Option<&str> {
        None
    }
    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done>;
}

/// Registers the commands, in help order: `Variant(Type) = "name"`, then `| "alias"` for
/// each other name it answers to (Dokku's, so a team's scripts keep working). Generates the
/// grammar's subcommand enum and the one dispatch over it.
macro_rules! commands {
    ($($variant:ident($ty:ty) = $name:literal $(| $alias:literal)*,)*) => {
        #[derive(Debug, Subcommand)]
        pub enum Cmd {
            $(#[command(name = $name $(, alias = $alias)*)] $variant($ty),)*
        }

        impl Cmd {
            fn need(&self) -> Need {
                match self { $(Cmd::$variant(_) => <$ty as Command>::NEED,)* }
            }
            fn mode(&self) -> Mode {
                match self { $(Cmd::$variant(_) => <$ty as Command>::MODE,)* }
            }
            /// Does this command read the client's stdin?
            pub fn wants_stdin(&self) -> bool {
                match self { $(Cmd::$variant(_) => <$ty as Command>::STDIN,)* }
            }
            /// Does this command stream bytes ([`Pipe`])?
            pub fn pipes(&self) -> bool {
                match self { $(Cmd::$variant(_) => <$ty as Command>::PIPE,)* }
            }
            fn app(&self) -> Option<&str> {
                match self { $(Cmd::$variant(c) => c.app(),)* }
            }
            fn service(&self) -> Option<&str> {
                match self { $(Cmd::$variant(c) => c.service(),)* }
            }
            async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
                match self { $(Cmd::$variant(c) => c.apply(cx).await,)* }
            }
        }

        /// Every command's name and need, in help order.
        #[cfg(test)]
        fn role_table() -> Vec<(&'static str, Need)> {
            vec![$(($name, <$ty as Command>::NEED),)*]
        }
    };
}

commands! {
    Help(help::Help) = "help",
    Version(version::Version) = "version",
    Whoami(whoami::Whoami) = "whoami",
    Apps(apps::Apps) = "apps" | "apps:list",
    AppsCreate(apps_create::AppsCreate) = "apps:create",
    AppsInfo(apps_info::AppsInfo) = "apps:info",
    AppsDestroy(apps_destroy::AppsDestroy) = "apps:destroy",
    Keys(keys::Keys) = "keys",
    KeysAdd(keys_add::KeysAdd) = "keys:add",
    KeysRemove(keys_remove::KeysRemove) = "keys:remove",
    Access(access::Access) = "access",
    AccessGrant(access_grant::AccessGrant) = "access:grant",
    AccessRevoke(access_revoke::AccessRevoke) = "access:revoke",
    Releases(releases::Releases) = "releases",
    ReleasesInfo(releases_info::ReleasesInfo) = "releases:info",
    Builds(builds::Builds) = "builds",
    BuildsLog(builds_log::BuildsLog) = "builds:log",
    BuildsCancel(builds_cancel::BuildsCancel) = "builds:cancel",
    BuildsPurgeCache(builds_purge_cache::BuildsPurgeCache) = "builds:purge-cache",
    BuildsSet(builds_set::BuildsSet) = "builds:set",
    BuildsReport(builds_report::BuildsReport) = "builds:report",
    Config(config::Config) = "config" | "config:show",
    ConfigGet(config_get::ConfigGet) = "config:get",
    ConfigSet(config_change::ConfigSet) = "config:set",
    ConfigUnset(config_change::ConfigUnset) = "config:unset",
    Deploy(deploy::Deploy) = "deploy",
    Ps(ps::Ps) = "ps",
    Scale(scale::Scale) = "scale" | "ps:scale",
    Restart(restart::Restart) = "restart" | "ps:restart",
    Stop(stop_start::Stop) = "stop" | "ps:stop",
    Start(stop_start::Start) = "start" | "ps:start",
    Rollback(rollback::Rollback) = "rollback",
    Rebuild(rebuild::Rebuild) = "rebuild" | "ps:rebuild",
    Clusters(clusters::Clusters) = "clusters",
    ClustersAdd(clusters_add::ClustersAdd) = "clusters:add",
    ClustersRemove(clusters_remove::ClustersRemove) = "clusters:remove",
    ClustersInfo(clusters_info::ClustersInfo) = "clusters:info",
    Nodes(nodes::Nodes) = "nodes",
    NodesAdd(nodes_add::NodesAdd) = "nodes:add",
    NodesRemove(nodes_remove::NodesRemove) = "nodes:remove",
    NodesInfo(nodes_info::NodesInfo) = "nodes:info",
    NodesKey(nodes_key::NodesKey) = "nodes:key",
    Shell(shell::Shell) = "shell",
    Run(run::Run) = "run",
    Logs(logs::Logs) = "logs",
    Domains(domains::Domains) = "domains",
    DomainsAdd(domains_add::DomainsAdd) = "domains:add",
    DomainsRemove(domains_remove::DomainsRemove) = "domains:remove",
    DomainsClear(domains_clear::DomainsClear) = "domains:clear",
    Certs(certs::Certs) = "certs",
    CertsAdd(certs_add::CertsAdd) = "certs:add",
    CertsRemove(certs_remove::CertsRemove) = "certs:remove",
    CertsAuto(certs_auto::CertsAuto) = "certs:auto",
    CertsAutoEnable(certs_auto_enable::CertsAutoEnable) = "certs:auto:enable",
    CertsAutoDisable(certs_auto_disable::CertsAutoDisable) = "certs:auto:disable",
    CertsAutoRefresh(certs_auto_refresh::CertsAutoRefresh) = "certs:auto:refresh",
    RoutingSet(routing_set::RoutingSet) = "routing:set",
    Audit(audit::Audit) = "audit",
    Services(services::Services) = "services",
    ServicesCreate(services_create::ServicesCreate) = "services:create",
    ServicesInfo(services_info::ServicesInfo) = "services:info",
    ServicesDestroy(services_destroy::ServicesDestroy) = "services:destroy",
    ServicesLink(services_link::ServicesLink) = "services:link",
    ServicesUnlink(services_link::ServicesUnlink) = "services:unlink",
    ServicesLogs(services_logs::ServicesLogs) = "services:logs",
    ServicesConnect(services_connect::ServicesConnect) = "services:connect",
    ServicesBackup(services_backup::ServicesBackup) = "services:backup",
    ServicesBackups(services_backups::ServicesBackups) = "services:backups",
    ServicesRestore(services_restore::ServicesRestore) = "services:restore",
    ServicesImport(services_import::ServicesImport) = "services:import" | "postgres:import" | "redis:import" | "mysql:import" | "mariadb:import",
    ServicesExport(services_export::ServicesExport) = "services:export" | "postgres:export" | "redis:export" | "mysql:export" | "mariadb:export",
    Usage(usage::UsageCmd) = "usage",
    Limits(limits::Limits) = "limits",
    LimitsSet(limits_change::LimitsSet) = "limits:set",
    LimitsUnset(limits_change::LimitsUnset) = "limits:unset",
    MaintenanceOn(maintenance::MaintenanceOn) = "maintenance:on",
    MaintenanceOff(maintenance::MaintenanceOff) = "maintenance:off",
    Acl(acl::Acl) = "acl",
    AclAllow(acl_change::AclAllow) = "acl:allow",
    AclDeny(acl_change::AclDeny) = "acl:deny",
    AclRemove(acl_change::AclRemove) = "acl:remove",
}

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

impl Cmd {
    /// Long-running commands whose progress streams to the client.
    pub fn is_streaming(&self) -> bool {
        self.mode() == Mode::Streams
    }

    /// Sessions bridged to a node (`shell`, `run`): see [`Finished::Session`].
    pub fn is_interactive(&self) -> bool {
        self.mode() == Mode::Session
    }
}

/// Is `name` one of the commands? (Derived from the grammar, so it cannot drift.)
pub fn is_command(name: &str) -> bool {
    Cli::command()
        .get_subcommands()
        .any(|c| c.get_name() == name || c.get_all_aliases().any(|a| a == name))
}

/// A command line that did not become a command: the reply, and why in a word (for the
/// audit trail; none for help, which is no refusal).
struct Refused {
    reply: Reply,
    why: Option<&'static str>,
}

fn parse_why(argv: &[String]) -> Result<Cmd, Refused> {
    match argv.first() {
        None => {
            return Err(Refused {
                reply: Reply::ok(help_text()),
                why: None,
            })
        }
        Some(first) if !first.starts_with('-') && !is_command(first) => {
            let shown: String = first.chars().filter(|c| !c.is_control()).take(60).collect();
            return Err(Refused {
                reply: Reply::err(format!("error: unknown command '{shown}' (try 'help')"), 1),
                why: Some("unknown command"),
            });
        }
        _ => {}
    }
    let e = match Cli::try_parse_from(argv) {
        Ok(cli) => return Ok(cli.cmd),
        Err(e) => e,
    };
    use clap::error::ErrorKind;
    // A name (or version) the grammar refuses is said in its own words, as before the
    // parser checked them.
    if e.kind() == ErrorKind::ValueValidation {
        if let Some(src) = std::error::Error::source(&e) {
            let msg = src
                .downcast_ref::<InvalidName>()
                .map(ToString::to_string)
                .or_else(|| {
                    src.downcast_ref::<InvalidProcess>()
                        .map(ToString::to_string)
                })
                .or_else(|| {
                    src.downcast_ref::<InvalidVersion>()
                        .map(ToString::to_string)
                })
                .or_else(|| src.downcast_ref::<InvalidHost>().map(ToString::to_string));
            if let Some(msg) = msg {
                return Err(Refused {
                    reply: Reply::err(format!("error: {msg}"), 1),
                    why: Some("invalid name"),
                });
            }
        }
    }
    let text = e.render().to_string();
    Err(match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Refused {
            reply: Reply::ok(text),
            why: None,
        },
        _ => Refused {
            reply: Reply::err(one_line_usage_error(&text), 2),
            why: Some("bad usage"),
        },
    })
}

/// Parse an argv; on failure the reply to send (help is a success, bad usage is not).
pub fn parse(argv: &[String]) -> Result<Cmd, Reply> {
    parse_why(argv).map_err(|r| r.reply)
}

/// [`parse`], with a refusal (unknown command, bad usage, a bad name) audited as `invalid`,
/// with its redacted text and why in a word (the reply may quote an argument, which may be
/// a value).
pub fn parse_audited(core: &Arc<Core>, who: &Identity, argv: &[String]) -> Result<Cmd, Reply> {
    parse_why(argv).map_err(|r| {
        if let Some(why) = r.why {
            audit_invalid(core, who, &redact(argv), why);
        }
        r.reply
    })
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

/// A command line that never became a command (too long, unparseable, unknown, bad usage)
/// is audited too, as `invalid`, with its redacted text and why in a word.
pub fn audit_invalid(core: &Arc<Core>, who: &Identity, line: &str, why: &str) {
    core.audit(who, None, line, "invalid", why);
}

fn check(core: &Arc<Core>, who: &Identity, verb: &str, cmd: &Cmd) -> Result<(), CmdError> {
    let admin = || {
        if who.is_admin() {
            Ok(())
        } else {
            Err(CmdError::Core(CoreError::Denied(format!(
                "'{verb}' needs an admin key; key '{}' is not one",
                who.name
            ))))
        }
    };
    let on_app = |app: &str, role| {
        core.require(who, app, role, verb)
            .map(|_| ())
            .map_err(CmdError::from)
    };
    match (cmd.need(), cmd.app()) {
        (Need::Anyone, _) => Ok(()),
        (Need::Admin, _) | (Need::AppOrAdmin(_), None) => admin(),
        (Need::App(role), Some(app)) | (Need::AppOrAdmin(role), Some(app)) => on_app(app, role),
        (Need::App(_), None) => Err(CmdError::Invalid(format!(
            "internal error: '{verb}' names no app"
        ))),
        (Need::Service(role), _) => match cmd.service() {
            Some(name) => core
                .require_service(who, name, role, verb)
                .map(|_| ())
                .map_err(CmdError::from),
            None => Err(CmdError::Invalid(format!(
                "internal error: '{verb}' names no service"
            ))),
        },
    }
}

/// Check access, then record the command in the audit trail before it runs: a command
/// that cannot be recorded does not run (fails closed). The entry's id.
fn admit(
    core: &Arc<Core>,
    who: &Identity,
    verb: &str,
    cmd: &Cmd,
    line: &str,
) -> Result<i64, CmdError> {
    check(core, who, verb, cmd)?;
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

/// What the front end gives a command besides its line.
pub struct Io<'a> {
    /// Progress lines (streaming commands), sent as they happen.
    pub out: &'a mut Sink,
    /// The client's stdin, read when [`Cmd::wants_stdin`].
    pub stdin: &'a [u8],
    /// Whether the client asked for a terminal.
    pub pty: bool,
    /// The byte streams of a [`Cmd::pipes`] command.
    pub pipe: Option<Pipe>,
}

/// How a command ended.
pub enum Finished {
    Reply(Reply),
    /// An allowed `shell` or `run`, recorded as started: the front end bridges the user's
    /// channel to it.
    Session(Box<Session>),
}

/// The one dispatch path: check access, record, run, record the outcome; under a
/// `cmd{verb, app}` span, so everything a command does below is logged as its own.
pub async fn execute(
    core: &Arc<Core>,
    who: &Identity,
    argv: &[String],
    cmd: Cmd,
    io: Io<'_>,
) -> Finished {
    use tracing::Instrument;
    let verb = argv.first().map(String::as_str).unwrap_or("");
    let app = cmd.app().map(str::to_string);
    let span = tracing::info_span!("cmd", verb, app = app.as_deref().unwrap_or("-"));
    async {
        let started = std::time::Instant::now();
        tracing::debug!("command started");
        let done = dispatch(core, who, argv, verb, cmd, io).await;
        let code = match &done {
            Finished::Reply(r) => r.code,
            Finished::Session(_) => 0,
        };
        let ms = started.elapsed().as_millis() as u64;
        tracing::debug!(code, ms, "command done");
        done
    }
    .instrument(span)
    .await
}

async fn dispatch(
    core: &Arc<Core>,
    who: &Identity,
    argv: &[String],
    verb: &str,
    cmd: Cmd,
    io: Io<'_>,
) -> Finished {
    let line = redact(argv);
    let app = cmd.app().map(str::to_string);
    let id = match admit(core, who, verb, &cmd, &line) {
        Ok(id) => id,
        Err(e) => return Finished::Reply(finish(core, who, app.as_deref(), &line, None, Err(e))),
    };
    let mode = cmd.mode();
    let mut cx = Ctx {
        core,
        who,
        out: io.out,
        stdin: io.stdin,
        pty: io.pty,
        pipe: io.pipe,
    };
    let result = match mode {
        // Off the async workers: the store and the file system block.
        Mode::Quick => tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(cmd.apply(&mut cx))
        }),
        Mode::Streams | Mode::Session => cmd.apply(&mut cx).await,
    };
    let text = match result {
        Ok(Done::Session(s)) => {
            core.audit_close(id, "ok", &s.detail);
            return Finished::Session(s);
        }
        Ok(Done::Text(t)) => Ok(t),
        Err(e) => Err(e),
    };
    Finished::Reply(finish(core, who, app.as_deref(), &line, Some(id), text))
}

#[cfg(test)]
mod tests;
