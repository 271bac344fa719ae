//! The router on its own, for `scripts/bench-router.sh`: the same `Router` `magrathea serve`
//! runs (HTTP and HTTPS listeners, host routing, the upstream pool, accounting and the
//! access log), pointed at one upstream, without the controller around it.
//!
//! router_bench --http ADDR --https ADDR --bundle PEM --host NAME --upstream ADDR
//!              [--access-log FILE]
//!
//! With `--access-log`, the route is owned by an app environment (so every request is
//! counted in its traffic figures, as under `magrathea serve`) and the access log lines are
//! written to FILE in batches, the way the controller writes them into the app's log.
//! Like `magrathea serve`: the default runtime for the listeners (connections are served on
//! the router's own worker threads, a single-threaded runtime per core) and mimalloc.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use magrathea::router::{certs, tls, Router, RouterOptions};

// The allocator `magrathea` itself runs with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn required(args: &[String], name: &str) -> String {
    arg(args, name).unwrap_or_else(|| panic!("{name} is required"))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let host = required(&args, "--host");
    let upstream = required(&args, "--upstream")
        .parse()
        .expect("--upstream ADDR");
    let router = Router::new("bench.invalid".into(), RouterOptions::default());
    router.set_domains([(host.clone(), "bench".to_string())]);
    router.set_upstreams("bench", vec![upstream]);
    if let Some(path) = arg(&args, "--access-log") {
        router.set_owner("bench", "bench", "production");
        let mut rx = router.take_access_log().expect("the access log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("--access-log FILE");
        // Like the controller: a batch at a time, then a pause when it was not full.
        tokio::spawn(async move {
            let mut out = std::io::BufWriter::with_capacity(64 * 1024, file);
            let mut batch = Vec::with_capacity(512);
            while rx.recv_many(&mut batch, 512).await > 0 {
                let full = batch.len() == 512;
                for line in batch.drain(..) {
                    let _ = writeln!(out, "{line}");
                }
                if !full {
                    let _ = out.flush();
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        });
    }
    let pem = std::fs::read(required(&args, "--bundle")).expect("--bundle PEM");
    let bundle = certs::parse_bundle(&pem).expect("a certificate and key");
    router
        .certs()
        .replace(HashMap::from([(host, Arc::clone(&bundle.key))]));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let http = tokio::net::TcpListener::bind(required(&args, "--http"))
        .await
        .expect("--http");
    let https = tokio::net::TcpListener::bind(required(&args, "--https"))
        .await
        .expect("--https");
    let config = tls::server_config(Arc::clone(router.certs()));
    tokio::spawn(Arc::clone(&router).serve_tls(https, config, shutdown.clone()));
    println!("router_bench ready");
    router.serve(http, shutdown).await;
}
