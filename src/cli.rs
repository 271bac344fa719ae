//! The binary's own command line (not the SSH commands; those are in `cmd/`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "magrathea",
    version,
    about = "git push build and deploy server with an SSH front door"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Args)]
pub struct DataArg {
    /// The data directory
    #[arg(long, env = "MAGRATHEA_DATA", value_name = "DIR")]
    pub data: PathBuf,
}

// Parsed once per process: the size of `Serve`'s flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a data directory: host key, store, first admin key
    Init {
        #[command(flatten)]
        data: DataArg,
        /// Public key of the first admin (default: ~/.ssh/id_ed25519.pub, else id_rsa.pub)
        #[arg(long, value_name = "PATH")]
        admin_key: Option<PathBuf>,
        /// Name of the first admin key
        #[arg(long, default_value = "admin")]
        admin_name: String,
    },
    /// Run the controller: SSH front door, hook socket
    Serve {
        #[command(flatten)]
        data: DataArg,
        /// SSH listen address
        #[arg(long, default_value = "0.0.0.0:2222")]
        listen: String,
        /// HTTP router listen address (apps answer as APP.DOMAIN)
        #[arg(long, default_value = "0.0.0.0:8080")]
        http: String,
        /// Domain apps are served under
        #[arg(long, default_value = "localhost")]
        domain: String,
        /// Maximum concurrent authenticated SSH connections (unauthenticated ones have a
        /// budget of their own and cannot take these)
        #[arg(long, default_value_t = 256)]
        max_connections: usize,
        /// Memory the built-in node offers app processes (e.g. 16G; default: the machine's
        /// memory minus a tenth, at most 2G, for the system)
        #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
        node_memory: Option<i64>,
        /// Prometheus endpoint (GET /metrics) on an address of its own, e.g.
        /// 127.0.0.1:9100; keep it off public networks (off by default)
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
        #[command(flatten)]
        login: LoginArgs,
        #[command(flatten)]
        build: BuildArgs,
        #[command(flatten)]
        router: RouterArgs,
        #[command(flatten)]
        acme: AcmeArgs,
    },
    /// Run a node: accepts only the controller's key, runs releases in Docker
    Agent {
        /// The node's directory (apps, releases, data)
        #[arg(long, value_name = "DIR")]
        root: PathBuf,
        /// SSH listen address for the controller
        #[arg(long, default_value = "0.0.0.0:2300")]
        listen: String,
        /// The controller's public key (a file, or the key text; 'ssh paas nodes:key' prints it)
        #[arg(long, value_name = "KEY")]
        controller_key: String,
        #[command(flatten)]
        login: LoginArgs,
        /// Memory this node offers app processes (e.g. 16G; default: the machine's memory
        /// minus a tenth, at most 2G, for the system)
        #[arg(long, value_name = "SIZE", value_parser = parse_size_arg)]
        memory: Option<i64>,
        /// Run on a Docker Swarm manager: releases run as Swarm services of the local engine
        /// (DOCKER_HOST, else the default socket), placed by Swarm over its nodes
        #[arg(long)]
        swarm: bool,
        /// With --swarm: where swarm nodes fetch release tarballs, an address of this
        /// machine they reach (default: the --listen address, port + 1)
        #[arg(long, value_name = "ADDR", requires = "swarm", conflicts_with = "join")]
        endpoint: Option<String>,
        /// With --swarm, on a node other than the cluster agent's: the cluster agent's
        /// release endpoint (IP:PORT); stack images are loaded from there, and `shell`
        /// reaches this node's tasks through this agent
        #[arg(long, value_name = "ADDR", requires_all = ["swarm", "join_token"])]
        join: Option<String>,
        /// With --join: the cluster agent's join token (its <root>/join_token), or a file
        /// holding it
        #[arg(long, value_name = "TOKEN", requires = "join")]
        join_token: Option<String>,
    },
    /// Git hooks (run by git inside a push, not by hand)
    Hook {
        #[command(subcommand)]
        hook: HookCmd,
    },
    /// Manage keys offline, against the data directory (recovery)
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// Check this machine: git, Docker and its storage driver, clock, stack images, the data
    /// dir's owner, modes and free space, ports. One line per finding; exit 1 on a failure
    Doctor {
        /// The controller's data directory (leave out on a node)
        #[arg(long, env = "MAGRATHEA_DATA", value_name = "DIR")]
        data: Option<PathBuf>,
        /// Addresses the server will listen on
        #[arg(long = "listen", value_name = "ADDR")]
        listen: Vec<String>,
        /// Stacks whose build and run images must be present
        #[arg(long = "stack", value_name = "NAME", default_value = "bookworm")]
        stacks: Vec<String>,
    },
}

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// Seconds a connection may take to authenticate before it is closed (like sshd's
    /// LoginGraceTime)
    #[arg(long, default_value_t = 30, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub login_grace_time: u64,
    /// Unauthenticated connections kept from one address; a newer one displaces the oldest
    #[arg(long, default_value_t = 16, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10000))]
    pub max_unauthenticated_per_address: u64,
}

impl LoginArgs {
    pub fn limits(&self, max_connections: usize) -> crate::sshd::Limits {
        crate::sshd::Limits {
            max_connections: max_connections.max(1),
            login_grace: std::time::Duration::from_secs(self.login_grace_time),
            per_address: self.max_unauthenticated_per_address as usize,
            ..Default::default()
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct RouterArgs {
    /// HTTPS listen address for the router (certificates: certs:add; SNI; HTTP/2 by ALPN)
    #[arg(long, value_name = "ADDR")]
    pub https: Option<String>,
    /// Seconds an app has to start answering a request (else 504)
    #[arg(long, default_value_t = 60, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub request_timeout: u64,
    /// Seconds a client connection (keep-alive, HTTP/2) may sit without traffic before it
    /// is closed; also the time a client has to send a request's headers
    #[arg(long, default_value_t = 30, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub idle_timeout: u64,
    /// Seconds a WebSocket (or any upgraded connection) may sit without traffic either way
    /// before it is closed
    #[arg(long, default_value_t = 300, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub tunnel_idle_timeout: u64,
    /// A proxy in front of the router (load balancer, CDN) whose X-Forwarded-For names the
    /// client: from a peer in CIDR, the client is the rightmost address there outside every
    /// trusted block (for access lists, rate limits, X-Real-IP, the access log). Repeatable
    #[arg(long = "trusted-proxy", value_name = "CIDR", value_parser = parse_cidr_arg)]
    pub trusted_proxies: Vec<crate::router::Cidr>,
}

fn parse_cidr_arg(s: &str) -> Result<crate::router::Cidr, String> {
    s.parse()
}

impl RouterArgs {
    pub fn options(&self) -> crate::router::RouterOptions {
        crate::router::RouterOptions {
            upstream_timeout: std::time::Duration::from_secs(self.request_timeout),
            idle_timeout: std::time::Duration::from_secs(self.idle_timeout),
            tunnel_idle_timeout: std::time::Duration::from_secs(self.tunnel_idle_timeout),
            trusted_proxies: self.trusted_proxies.clone(),
            ..Default::default()
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Build time limit, in seconds
    #[arg(long, default_value_t = 900)]
    pub build_timeout: u64,
    /// Build container memory limit, in MiB
    #[arg(long, default_value_t = 2048)]
    pub build_memory: i64,
    /// Largest slug accepted, in MiB, compressed as Heroku measures it (a build whose /app
    /// grows past 4x it is stopped)
    #[arg(long, default_value_t = 500)]
    pub max_slug: u64,
    /// Largest build cache of an app, in MiB (a build whose /cache grows past it is stopped)
    #[arg(long, default_value_t = 1024)]
    pub max_cache: u64,
    /// Network for build containers: app (the app's own network: package registries, no
    /// other app) or none
    #[arg(long, default_value = "app", value_parser = ["app", "none"])]
    pub build_network: String,
    /// Builds running at once across apps (default: number of cores)
    #[arg(long)]
    pub parallel_builds: Option<usize>,
    /// Stack used when an app's magrathea.yml names none
    #[arg(long, default_value = "bookworm")]
    pub default_stack: String,
    /// Shortest interval between scheduled service backups a magrathea.yml may ask for
    /// (`backup: { every: .. }`), in seconds; lower it only for tests
    #[arg(long, default_value_t = 60, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub min_backup_interval: u64,
}

impl BuildArgs {
    pub fn limits(&self) -> crate::controller::Limits {
        let d = crate::controller::Limits::default();
        crate::controller::Limits {
            timeout: std::time::Duration::from_secs(self.build_timeout.max(1)),
            memory: self.build_memory.max(64) << 20,
            max_slug: self.max_slug.max(1) << 20,
            max_cache: self.max_cache.max(1) << 20,
            network: self.build_network.clone(),
            parallel: self.parallel_builds.unwrap_or(d.parallel).max(1),
            default_stack: self.default_stack.clone(),
            process_memory: d.process_memory,
            min_backup_interval: self.min_backup_interval,
        }
    }
}

/// Automatic certificates (`certs:auto:enable`).
#[derive(Debug, clap::Args)]
pub struct AcmeArgs {
    /// ACME directory URL certificates are ordered from
    #[arg(long, value_name = "URL", default_value = crate::acme::LETS_ENCRYPT)]
    pub acme_directory: String,
    /// Contact address for the ACME account (the CA's expiry notices)
    #[arg(long, value_name = "EMAIL")]
    pub acme_email: Option<String>,
    /// PEM CA certificate to trust for the ACME directory's HTTPS instead of the system's
    /// roots (a private or test CA)
    #[arg(long, value_name = "FILE")]
    pub acme_ca: Option<PathBuf>,
    /// Renew automatic certificates this many days before they expire (at most a third of
    /// a certificate's lifetime)
    #[arg(long, value_name = "DAYS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=365))]
    pub acme_renew_before: u64,
    /// How the CA checks a domain: http-01 (a token on the HTTP port) or tls-alpn-01 (a
    /// handshake on the HTTPS port, for hosts whose port 80 is closed)
    #[arg(long, value_name = "TYPE", value_enum, default_value_t = crate::acme::Challenge::Http01)]
    pub acme_challenge: crate::acme::Challenge,
}

impl AcmeArgs {
    pub fn options(&self) -> crate::acme::AcmeOptions {
        crate::acme::AcmeOptions {
            directory: self.acme_directory.clone(),
            email: self.acme_email.clone(),
            ca: self.acme_ca.clone(),
            renew_before: std::time::Duration::from_secs(self.acme_renew_before * 86400),
            challenge: self.acme_challenge,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum HookCmd {
    /// Hand a push's ref updates to the controller
    PreReceive,
}

#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Register a public key (from --key PATH, else stdin)
    Add {
        #[command(flatten)]
        data: DataArg,
        name: String,
        #[arg(long, default_value = "user", value_parser = ["admin", "user"])]
        role: String,
        #[arg(long, value_name = "PATH")]
        key: Option<PathBuf>,
    },
    /// List keys
    List {
        #[command(flatten)]
        data: DataArg,
    },
    /// Remove a key
    Remove {
        #[command(flatten)]
        data: DataArg,
        name: String,
    },
}

impl KeysCmd {
    pub fn data(&self) -> &std::path::Path {
        match self {
            KeysCmd::Add { data, .. } | KeysCmd::List { data } | KeysCmd::Remove { data, .. } => {
                &data.data
            }
        }
    }
}

fn parse_size_arg(s: &str) -> Result<i64, String> {
    crate::appconfig::parse_size(s)
        .filter(|b| *b >= 64 << 20)
        .ok_or_else(|| format!("'{s}' is not a memory size of at least 64M (e.g. 512M, 16G)"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
        crate::cmd::Cli::command().debug_assert();
    }
}
