//! The router on its own, for `scripts/bench-router.sh`: the same `Router` `magrathea serve`
//! runs (HTTP and HTTPS listeners, host routing, the upstream pool, accounting), pointed at
//! one upstream, without the controller around it.
//!
//! router_bench --http ADDR --https ADDR --bundle PEM --host NAME --upstream ADDR

use std::collections::HashMap;
use std::sync::Arc;

use magrathea::router::{certs, tls, Router, RouterOptions};

fn arg(args: &[String], name: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .unwrap_or_else(|| panic!("{name} is required"))
        .clone()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let host = arg(&args, "--host");
    let upstream = arg(&args, "--upstream").parse().expect("--upstream ADDR");
    let router = Router::new("bench.invalid".into(), RouterOptions::default());
    router.set_domains([(host.clone(), "bench".to_string())]);
    router.set_upstreams("bench", vec![upstream]);
    let pem = std::fs::read(arg(&args, "--bundle")).expect("--bundle PEM");
    let bundle = certs::parse_bundle(&pem).expect("a certificate and key");
    router
        .certs()
        .replace(HashMap::from([(host, Arc::clone(&bundle.key))]));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let http = tokio::net::TcpListener::bind(arg(&args, "--http"))
        .await
        .expect("--http");
    let https = tokio::net::TcpListener::bind(arg(&args, "--https"))
        .await
        .expect("--https");
    let config = tls::server_config(Arc::clone(router.certs()));
    tokio::spawn(Arc::clone(&router).serve_tls(https, config, shutdown.clone()));
    println!("router_bench ready");
    router.serve(http, shutdown).await;
}
