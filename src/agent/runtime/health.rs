//! Startup checks: a web process probed on its port until it answers, stopping early
//! when the process exits; its last lines for the failure message.

use std::time::Duration;

use bollard::query_parameters::LogsOptionsBuilder;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::docker::Docker;

use super::secs;

/// The longest a health probe waits for its connection (see [`probe`]).
pub(super) const CONNECT_LIMIT: Duration = Duration::from_secs(1);

/// Waits between the extra probes of the first health-check interval, in milliseconds.
pub(super) const FIRST_STEPS: [u64; 4] = [20, 40, 80, 160];

/// GETs `path` from `127.0.0.1:port` (raw HTTP/1.0, `Host: localhost`) up to `attempts`
/// times, `interval` apart, each bounded by `timeout`. Healthy means any status below 500
/// (a 404 or a redirect still proves the app is up and answering). The error says what
/// happened on the last attempt. See [`check_health`].
pub async fn health_check(
    port: u16,
    path: &str,
    timeout: Duration,
    attempts: u32,
    interval: Duration,
) -> Result<(), String> {
    let probe = Probe {
        path,
        timeout,
        attempts,
        interval,
        initial_delay: Duration::ZERO,
        content: None,
        strict: false,
    };
    check_health(loopback(port), &probe, || async { Ok(()) }).await
}

/// A port on this machine's loopback, where a node's processes are probed.
pub fn loopback(port: u16) -> std::net::SocketAddr {
    (std::net::Ipv4Addr::LOCALHOST, port).into()
}

/// One startup check's schedule and what counts as healthy.
#[derive(Debug, Clone)]
pub struct Probe<'a> {
    pub path: &'a str,
    pub timeout: Duration,
    pub attempts: u32,
    pub interval: Duration,
    pub initial_delay: Duration,
    /// The body must contain this (as Dokku's `content`).
    pub content: Option<&'a str>,
    /// Only 2xx and 3xx pass (a path the app named); else any status below 500.
    pub strict: bool,
}

/// Runs `probe` against `port`. Before every attempt after the first, `alive` is asked
/// whether the process is still up: its error ends the check at once (a process that exited
/// will not start answering, and waiting out a 60 s boot timeout would only hide why).
///
/// Most processes listen within a few tens of milliseconds of their start, so the first
/// interval is spent probing at growing steps ([`FIRST_STEPS`]) rather than asleep: a deploy
/// does not wait half a second for an app that was ready long before. The schedule of the
/// counted attempts, and so how long a slow app is given, stays `attempts` × `interval`.
pub async fn check_health<F, Fut>(
    port: std::net::SocketAddr,
    p: &Probe<'_>,
    mut alive: F,
) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let path = p.path;
    if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!(
            "health check path {:?} must start with '/' and hold no spaces or control characters",
            path.chars().take(60).collect::<String>()
        ));
    }
    let (timeout, interval) = (p.timeout, p.interval);
    let connect_limit = CONNECT_LIMIT.min(timeout / 2);
    let limit = if p.strict { 400 } else { 500 };
    let healthy = |r: &Result<(u16, bool), String>| matches!(r, Ok((s, true)) if *s < limit);
    let attempts = p.attempts.max(1);
    if !p.initial_delay.is_zero() {
        tokio::time::sleep(p.initial_delay).await;
    }
    let started = std::time::Instant::now();
    let mut last = String::new();
    for attempt in 1..=attempts {
        if attempt == 2 {
            // Extra probes inside the first interval; the last one is attempt 2.
            let mut waited = Duration::ZERO;
            for step in FIRST_STEPS {
                let step = Duration::from_millis(step);
                if waited + step >= interval {
                    break;
                }
                tokio::time::sleep(step).await;
                waited += step;
                let r = tokio::time::timeout(timeout, probe(port, path, p.content, connect_limit));
                if let Ok(r) = r.await {
                    if healthy(&r) {
                        return Ok(());
                    }
                }
            }
            tokio::time::sleep(interval - waited).await;
        } else if attempt > 2 {
            tokio::time::sleep(interval).await;
        }
        if attempt > 1 {
            alive().await?;
        }
        last = match tokio::time::timeout(timeout, probe(port, path, p.content, connect_limit))
            .await
        {
            Ok(r) if healthy(&r) => return Ok(()),
            Ok(Ok((status, true))) if p.strict && status < 500 => {
                format!("status {status} (the health check path must answer 2xx or 3xx)")
            }
            Ok(Ok((status, true))) => format!("status {status}"),
            Ok(Ok((status, false))) => format!(
                "status {status}, but the body does not contain {:?}",
                p.content.unwrap_or_default()
            ),
            Ok(Err(e)) => e,
            Err(_) => format!("no answer within {}", secs(timeout)),
        };
    }
    Err(format!(
        "GET {path} on port {port}: {last} (after {attempts} attempt{} over {})",
        if attempts == 1 { "" } else { "s" },
        secs(started.elapsed())
    ))
}

/// The last `n` lines a container wrote (stdout and stderr), oldest first: what a failed
/// check shows so the pusher sees why without another command.
pub async fn last_lines(docker: &Docker, container: &str, n: usize) -> Vec<String> {
    let opts = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail(&n.to_string())
        .build();
    let mut out = vec![];
    let mut logs = std::pin::pin!(docker.raw().logs(container, Some(opts)));
    let mut buf = Vec::new();
    while let Some(Ok(frame)) = logs.next().await {
        buf.extend_from_slice(&frame.into_bytes());
    }
    for l in String::from_utf8_lossy(&buf).lines() {
        out.push(
            l.chars()
                .filter(|c| !c.is_control() || *c == '\t')
                .collect(),
        );
    }
    let skip = out.len().saturating_sub(n);
    out.split_off(skip)
}

/// One GET; the status code and whether the body holds `content` (true without one), or
/// what went wrong in words. The connection is bounded by `connect_limit`: the port is
/// DNATed into the app's network, so while a crashed process's container restarts, a SYN
/// goes to an address nobody holds and is never answered (a live container answers or
/// refuses at once).
pub(super) async fn probe(
    port: std::net::SocketAddr,
    path: &str,
    content: Option<&str>,
    connect_limit: Duration,
) -> Result<(u16, bool), String> {
    let connect = tokio::net::TcpStream::connect(port);
    let Ok(connected) = tokio::time::timeout(connect_limit, connect).await else {
        return Err(format!(
            "no connection within {} (nothing answers on $PORT: did the process exit? \
             its container may be restarting)",
            secs(connect_limit)
        ));
    };
    let mut s = connected.map_err(|e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            "connection refused (nothing listens on $PORT: did the process exit or bind \
                 another port?)"
                .to_string()
        }
        _ => format!("cannot connect: {e}"),
    })?;
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: localhost\r\nUser-Agent: magrathea-health\r\n\
         Connection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("sending the request failed: {e}"))?;
    // The status line matters, and the body only when its content is checked: read until
    // the end of the status line, or of the response (bounded).
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 4096];
    let limit = if content.is_some() { 1 << 20 } else { 4096 };
    while (content.is_some() || !buf.contains(&b'\n')) && buf.len() < limit {
        match s.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("reading the response failed: {e}")),
        }
    }
    let has_content = match content {
        None => true,
        Some(c) => {
            let body = buf
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(&buf[..0], |i| &buf[i + 4..]);
            body.windows(c.len().max(1)).any(|w| w == c.as_bytes())
        }
    };
    if buf.is_empty() {
        return Err("connection closed without a response".into());
    }
    let line = String::from_utf8_lossy(&buf);
    let line = line.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|c| c.parse::<u16>().ok()),
    ) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => Ok((code, has_content)),
        _ => Err(format!(
            "not an HTTP response: {:?}",
            line.chars()
                .filter(|c| !c.is_control())
                .take(60)
                .collect::<String>()
        )),
    }
}
