//! `magrathea init` and `magrathea serve`: setting up and running the controller.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::access::KeyRole;
use crate::controller::{hookserver, Core};
use crate::paths::DataDir;
use crate::store::Store;

const PRE_RECEIVE: &str = include_str!("../hooks/pre-receive");

pub fn init(data: &Path, admin_key: Option<PathBuf>, admin_name: &str) -> anyhow::Result<()> {
    let dd = DataDir::new(data);
    crate::names::check("key", admin_name)?;
    std::fs::create_dir_all(data).with_context(|| format!("cannot create {}", data.display()))?;
    crate::fsutil::set_mode(data, 0o700)?;
    let (host, new_host) = crate::keys::load_or_create(&dd.host_key(), "magrathea-host")?;
    let (_, new_client) = crate::keys::load_or_create(&dd.client_key(), "magrathea-controller")?;
    let store = Store::open(&dd.db())?;
    for d in [dd.repos(), dd.logs(), dd.run(), dd.builds()] {
        std::fs::create_dir_all(d)?;
    }
    let fp = crate::keys::fingerprint(host.public_key());
    if store.count_keys()? > 0 {
        if new_host || new_client {
            println!("repaired missing keys in {}", data.display());
        } else {
            println!("{} is already initialised; nothing changed", data.display());
        }
        println!("host key {fp}");
        return Ok(());
    }
    let path = match admin_key {
        Some(p) => p,
        None => default_admin_key().context(
            "no admin key: pass --admin-key PATH (no ~/.ssh/id_ed25519.pub or id_rsa.pub found)",
        )?,
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let key = crate::keys::parse_public(&text).with_context(|| format!("{}", path.display()))?;
    store.add_key(admin_name, &key.fingerprint, &key.openssh, KeyRole::Admin)?;
    println!("initialised {}", data.display());
    println!("host key {fp}");
    println!("admin key '{admin_name}' {}", key.fingerprint);
    Ok(())
}

fn default_admin_key() -> Option<PathBuf> {
    let home = PathBuf::from(std::env::var_os("HOME")?);
    ["id_ed25519.pub", "id_rsa.pub"]
        .iter()
        .map(|f| home.join(".ssh").join(f))
        .find(|p| p.exists())
}

/// The hook shims belong to this binary, not to the source tree: write them on every start.
fn install_hooks(dd: &DataDir) -> anyhow::Result<()> {
    std::fs::create_dir_all(dd.hooks())?;
    crate::fsutil::write_atomic(
        &dd.hooks().join("pre-receive"),
        PRE_RECEIVE.as_bytes(),
        0o755,
    )?;
    Ok(())
}

/// What `magrathea serve` listens on.
pub struct ServeOptions {
    pub listen: String,
    pub http: String,
    /// The router's HTTPS listen address, if any.
    pub https: Option<String>,
    pub router: crate::router::RouterOptions,
    pub domain: String,
    /// SSH connection budgets and the login grace time.
    pub limits: crate::sshd::Limits,
    /// Memory the built-in node offers (default: sized from the machine).
    pub node_memory: Option<i64>,
    /// Where the Prometheus endpoint listens (none: no endpoint).
    pub metrics: Option<String>,
    /// Where automatic certificates come from.
    pub acme: crate::acme::AcmeOptions,
}

pub async fn serve(
    data: &Path,
    o: ServeOptions,
    limits: crate::controller::Limits,
) -> anyhow::Result<()> {
    let listen = o.listen.as_str();
    if o.acme.challenge == crate::acme::Challenge::TlsAlpn01 && o.https.is_none() {
        bail!("--acme-challenge tls-alpn-01 is answered on the HTTPS port: give --https ADDR too");
    }
    // Absolute, always: git resolves a relative core.hooksPath against the repository, and
    // a hook git cannot find is silently skipped, which would let pushes bypass us.
    let data = &std::fs::canonicalize(data).unwrap_or_else(|_| data.to_path_buf());
    let dd = DataDir::new(data);
    if !dd.db().exists() || !dd.host_key().exists() {
        bail!(
            "{} is not initialised; run: magrathea init --data {}",
            data.display(),
            data.display()
        );
    }
    let (host_key, _) = crate::keys::load_or_create(&dd.host_key(), "magrathea-host")?;
    install_hooks(&dd)?;
    crate::build::buildpacks::install(&dd.buildpacks())?;
    std::fs::create_dir_all(dd.builds())?;
    let bin = std::env::current_exe().context("cannot find my own binary")?;
    let router = crate::router::Router::new(o.domain.clone(), o.router.clone());
    let core = Arc::new(Core::open(dd, bin, limits, router.clone())?);
    // Custom domains, routing settings and certificates, before the first request.
    core.refresh_routing()?;
    core.set_acme(o.acme.clone());
    // What a crash left of builds goes before any new build can start.
    let swept = crate::reconcile::sweep_files(core.data())
        + crate::reconcile::sweep_build_containers(core.instance()).await;
    if swept > 0 {
        tracing::warn!(swept, "removed what interrupted builds left behind");
    }
    let journal = crate::reconcile::pending_pushes(&core);
    let hook_listener = hookserver::bind(&core)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let (http, https, metrics) = bind_http(&o).await?;
    // The embedded default: with no nodes added, this machine is node `local`, served by an
    // in-process agent through the same SSH protocol as any remote node.
    // The built-in node outlives the controller's shutdown signal: pushes still running
    // deploy to it. It stops once they are done.
    let local_stop = tokio_util::sync::CancellationToken::new();
    start_local_node(&core, &o.limits, o.node_memory, local_stop.clone()).await?;
    let stop = crate::shutdown::StopSignals::register().context("cannot handle SIGTERM")?;
    println!(
        "magrathea {} serving {}",
        env!("CARGO_PKG_VERSION"),
        data.display()
    );
    println!(
        "host key {}",
        crate::keys::fingerprint(host_key.public_key())
    );
    println!("ssh listening on {}", listener.local_addr()?);
    tokio::spawn(hookserver::serve(core.clone(), hook_listener));
    if let Some(m) = metrics {
        println!("metrics listening on {}", m.local_addr()?);
        tokio::spawn(crate::metrics::serve(core.clone(), m));
    }
    core.restore_policies()?;
    let accounting = tokio::spawn(crate::controller::usage::run(core.clone()));
    start_router(&router, http, https, &o.domain, core.shutdown())?;
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tokio::spawn(crate::controller::renewals(core.clone()));
    // Default hosts get their certificates as their environments get routes.
    tokio::spawn(core.clone().follow_routes());
    tokio::spawn(crate::controller::scheduled_backups(core.clone()));
    {
        let core = core.clone();
        tokio::spawn(async move {
            // Routes first, so apps answer at once; then the nodes are brought in line with
            // the store (a crash mid-rollout), and the routes follow what that changed.
            crate::deploy::restore_routes(&core).await;
            if crate::reconcile::reconcile_nodes(&core, journal).await > 0 {
                crate::deploy::restore_routes(&core).await;
            }
        });
    }
    // Swarm moves tasks on its own; routes of environments on clusters follow them.
    tokio::spawn(crate::deploy::follow_clusters(
        core.clone(),
        core.shutdown().clone(),
    ));
    let ssh = tokio::spawn(crate::ssh::serve(
        core.clone(),
        listener,
        host_key,
        crate::ssh::ServerOptions {
            limits: o.limits.clone(),
        },
    ));
    stop.wait().await;
    tracing::info!("shutting down: no new pushes; waiting for running ones");
    core.shutdown().cancel();
    let _ = ssh.await;
    core.tasks().close();
    if tokio::time::timeout(Duration::from_secs(600), core.tasks().wait())
        .await
        .is_err()
    {
        tracing::warn!("pushes still running after 10 minutes; stopping anyway");
    }
    let _ = accounting.await;
    local_stop.cancel();
    let _ = std::fs::remove_file(core.data().hook_socket());
    println!("stopped");
    Ok(())
}

type Listener = tokio::net::TcpListener;

/// The HTTP listeners: the router's `--http` and, when given, `--https`, and `--metrics`.
async fn bind_http(
    o: &ServeOptions,
) -> anyhow::Result<(Listener, Option<Listener>, Option<Listener>)> {
    let http = Listener::bind(&o.http)
        .await
        .with_context(|| format!("cannot listen on {} (--http)", o.http))?;
    let mut optional = vec![];
    for (addr, flag) in [(&o.https, "--https"), (&o.metrics, "--metrics")] {
        optional.push(match addr {
            Some(addr) => Some(
                Listener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} ({flag})"))?,
            ),
            None => None,
        });
    }
    let metrics = optional.pop().flatten();
    let https = optional.pop().flatten();
    Ok((http, https, metrics))
}

/// Serves the router on its listeners until `shutdown`, and says where.
fn start_router(
    router: &Arc<crate::router::Router>,
    http: tokio::net::TcpListener,
    https: Option<tokio::net::TcpListener>,
    domain: &str,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    println!(
        "http listening on {} (apps at http://APP.{domain})",
        http.local_addr()?
    );
    tokio::spawn(router.clone().serve(http, shutdown.clone()));
    if let Some(https) = https {
        println!(
            "https listening on {} (apps at https://APP.{domain} and their domains)",
            https.local_addr()?
        );
        router.set_https_port(Some(https.local_addr()?.port()));
        let config = crate::router::tls::server_config(router.certs().clone());
        tokio::spawn(router.clone().serve_tls(https, config, shutdown.clone()));
    }
    Ok(())
}

async fn start_local_node(
    core: &Arc<Core>,
    limits: &crate::sshd::Limits,
    memory: Option<i64>,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let root = core.data().root().join("node");
    std::fs::create_dir_all(root.join("apps"))?;
    let (host_key, _) =
        crate::keys::load_or_create(&root.join("host_ed25519"), "magrathea-local-node")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let fp = crate::keys::fingerprint(core.client_key().public_key());
    let ctx = Arc::new(crate::agent::AgentCtx::new(root, fp).with_memory(memory));
    core.set_local_node(crate::store::NodeRow {
        name: "local".into(),
        addr: addr.to_string(),
        labels: Default::default(),
        host_fp: crate::keys::fingerprint(host_key.public_key()),
        // No process cap: placement goes by the memory the node offers.
        slots: 0,
        added_at: 0,
    });
    tokio::spawn(crate::agent::serve_on(
        ctx,
        listener,
        host_key,
        stop,
        // Only the controller connects to it; the login grace time is the operator's.
        crate::sshd::Limits {
            max_connections: 64,
            login_grace: limits.login_grace,
            ..Default::default()
        },
    ));
    Ok(())
}

/// `magrathea keys ...` against the data dir, for when no admin key is left.
pub fn keys(cmd: crate::cli::KeysCmd) -> anyhow::Result<()> {
    use crate::cli::KeysCmd;
    let data = &cmd.data().to_path_buf();
    let dd = DataDir::new(data);
    if !dd.db().exists() {
        bail!(
            "{} is not initialised; run: magrathea init --data {}",
            data.display(),
            data.display()
        );
    }
    let store = Store::open(&dd.db())?;
    match cmd {
        KeysCmd::Add {
            name, role, key, ..
        } => {
            crate::names::check("key", &name)?;
            let text = match key {
                Some(p) => std::fs::read_to_string(&p)
                    .with_context(|| format!("cannot read {}", p.display()))?,
                None => std::io::read_to_string(std::io::stdin())?,
            };
            let parsed = crate::keys::parse_public(&text)?;
            let role: KeyRole = role.parse().map_err(anyhow::Error::msg)?;
            store.add_key(&name, &parsed.fingerprint, &parsed.openssh, role)?;
            println!(
                "added key '{name}' ({}, {})",
                role.as_str(),
                parsed.fingerprint
            );
        }
        KeysCmd::List { .. } => {
            for k in store.list_keys()? {
                println!("{}\t{}\t{}", k.name, k.role, k.fingerprint);
            }
        }
        KeysCmd::Remove { name, .. } => {
            store.remove_key(&name)?;
            println!("removed key '{name}'");
        }
    }
    Ok(())
}
