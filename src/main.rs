use clap::Parser;
use magrathea::cli::{Cli, Command, HookCmd};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    if let Command::Hook {
        hook: HookCmd::PreReceive,
    } = cli.command
    {
        // The hook is tiny and synchronous; no runtime, no logging setup.
        std::process::exit(magrathea::git::hook::pre_receive());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MAGRATHEA_LOG")
                .unwrap_or_else(|_| "info,russh=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Init {
            data,
            admin_key,
            admin_name,
        } => magrathea::serve::init(&data.data, admin_key, &admin_name),
        Command::Serve {
            data,
            listen,
            http,
            domain,
            max_connections,
            login,
            node_memory,
            metrics,
            build,
            router,
            acme,
        } => {
            let o = magrathea::serve::ServeOptions {
                listen,
                http,
                https: router.https.clone(),
                router: router.options(),
                domain,
                limits: login.limits(max_connections),
                node_memory,
                metrics,
                acme: acme.options(),
            };
            tokio::runtime::Runtime::new()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(magrathea::serve::serve(&data.data, o, build.limits())))
        }
        Command::Agent {
            root,
            listen,
            controller_key,
            login,
            memory,
            swarm,
            endpoint,
            join,
            join_token,
        } => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                rt.block_on(magrathea::agent::run(
                    root,
                    &listen,
                    &controller_key,
                    login.limits(64),
                    memory,
                    swarm.then(|| match join {
                        Some(endpoint) => magrathea::agent::SwarmMode::Join {
                            endpoint,
                            token: join_token.unwrap_or_default(),
                        },
                        None => magrathea::agent::SwarmMode::Manager {
                            endpoint: endpoint.unwrap_or_default(),
                        },
                    }),
                ))
            }),
        Command::Keys { cmd } => magrathea::serve::keys(cmd),
        Command::Doctor {
            data,
            listen,
            stacks,
        } => {
            let o = magrathea::doctor::Options {
                data: data.as_deref(),
                listen,
                stacks,
                min_free: 5 << 30,
            };
            let findings = tokio::runtime::Runtime::new()
                .map(|rt| rt.block_on(magrathea::doctor::run(&o)))
                .unwrap_or_default();
            for f in &findings {
                println!("{f}");
            }
            let failed = findings
                .iter()
                .filter(|f| f.level == magrathea::doctor::Level::Fail)
                .count();
            if failed > 0 {
                eprintln!("error: {failed} check(s) failed");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Hook { .. } => unreachable!(),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
