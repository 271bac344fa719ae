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

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use magrathea::router::{certs, tls, Router, RouterOptions};

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
        tokio::spawn(async move {
            let mut out = std::io::BufWriter::with_capacity(64 * 1024, file);
            let mut batch = Vec::with_capacity(1024);
            while rx.recv_many(&mut batch, 1024).await > 0 {
                for line in batch.drain(..) {
                    let _ = writeln!(out, "{line}");
                }
                let _ = out.flush();
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
