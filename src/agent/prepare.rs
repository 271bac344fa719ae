//! `prepare`: a release's processes started beside the running ones, web processes
//! health-checked, the others watched through a grace period; all or nothing.

use std::time::Duration;

use tokio::sync::mpsc;

use super::error::AgentError;
use super::runtime::{self, ProcessSpec, Running};
use super::AgentCtx;
use crate::docker::Docker;
use crate::node::proto::{PrepareReply, PrepareReq, Started};

/// Starts `req`'s processes beside the running ones and checks them; on any failure, what
/// it started is stopped again and the first failure is the answer.
pub(super) async fn prepare(
    ctx: &AgentCtx,
    req: PrepareReq,
    progress: &mpsc::Sender<String>,
) -> Result<PrepareReply, AgentError> {
    let lock = ctx.app_lock(&req.app);
    let _g = lock.lock().await;
    if !ctx.root.has_release(&req.app, &req.release) {
        return Err(AgentError::NotOnNode {
            app: req.app,
            release: req.release,
        });
    }
    let publish_ip = match req
        .publish_ip
        .as_deref()
        .map(str::parse::<std::net::IpAddr>)
    {
        None => None,
        Some(Ok(ip)) => Some(ip),
        Some(Err(_)) => return Err(AgentError::PublishIp(req.publish_ip.unwrap_or_default())),
    };
    let docker = ctx.docker().await?;
    let mut started: Vec<Running> = vec![];
    let mut failure = start_all(ctx, docker, &req, publish_ip, &mut started)
        .await
        .err();
    if failure.is_none() {
        failure = check_web(docker, &req, &started, progress).await.err();
    }
    if failure.is_none() && started.iter().any(|r| r.ptype != "web") {
        failure = check_grace(ctx, docker, &req, &started).await?.err();
    }
    if let Some(f) = failure {
        for r in &started {
            runtime::stop(docker, &r.container, Duration::from_secs(5)).await;
        }
        return Err(f);
    }
    Ok(PrepareReply {
        processes: started
            .into_iter()
            .map(|r| Started {
                container: r.container,
                ptype: r.ptype,
                index: r.index,
                port: r.port,
                addr: None,
            })
            .collect(),
    })
}

/// Starts every process of every group, in order, into `started`; stops at the first that
/// cannot start.
async fn start_all(
    ctx: &AgentCtx,
    docker: &Docker,
    req: &PrepareReq,
    publish_ip: Option<std::net::IpAddr>,
    started: &mut Vec<Running>,
) -> Result<(), AgentError> {
    let env: Vec<(String, String)> = req.env.clone().into_iter().collect();
    for g in &req.processes {
        let indices: Vec<u32> = if g.indices.is_empty() {
            (1..=g.count).collect()
        } else {
            g.indices.clone()
        };
        for index in indices {
            let spec = ProcessSpec {
                instance: ctx.instance.clone(),
                app: req.app.clone(),
                release: req.release.clone(),
                ptype: g.ptype.clone(),
                index,
                command: g.command.clone(),
                env: env.clone(),
                image: req.image.clone(),
                memory: req.memory,
                cpu: req.cpu,
                generation: req.generation,
                uid: req.uid,
                publish_ip,
            };
            match runtime::start(docker, &ctx.root, &spec).await {
                Ok(r) => started.push(r),
                Err(e) => {
                    return Err(AgentError::CannotStart {
                        process: format!("{}.{index}", g.ptype),
                        why: Box::new(e),
                    })
                }
            }
        }
    }
    Ok(())
}

/// Every started web process passes every startup check (app.json's, else `health`), in
/// order; the first that fails is the answer, after its last log lines as progress.
async fn check_web(
    docker: &Docker,
    req: &PrepareReq,
    started: &[Running],
    progress: &mpsc::Sender<String>,
) -> Result<(), AgentError> {
    let checks = if req.checks.is_empty() {
        vec![req.health.clone()]
    } else {
        req.checks.clone()
    };
    for r in started.iter().filter(|r| r.ptype == "web") {
        for h in &checks {
            let _ = progress
                .send(format!(
                    "health-checking web.{} on port {} (GET {})",
                    r.index, r.port, h.path
                ))
                .await;
            let probe = runtime::Probe {
                path: &h.path,
                timeout: Duration::from_millis(h.timeout_ms.max(100)),
                attempts: h.attempts.max(1),
                interval: Duration::from_millis(h.interval_ms.max(10)),
                initial_delay: Duration::from_millis(h.initial_delay_ms),
                content: h.content.as_deref(),
                strict: h.strict,
            };
            let alive = || still_up(docker, &r.container, &r.ptype, r.index);
            if let Err(e) = runtime::check_health(runtime::loopback(r.port), &probe, alive).await {
                // Why, in the app's own words: its last lines, before the verdict.
                let lines = runtime::last_lines(docker, &r.container, 20).await;
                if !lines.is_empty() {
                    let _ = progress
                        .send(format!("web.{}'s last log lines:", r.index))
                        .await;
                    for l in lines {
                        let _ = progress.send(format!("  | {l}")).await;
                    }
                }
                let setting = if h.setting.is_empty() {
                    "healthcheck in magrathea.yml".to_string()
                } else {
                    h.setting.clone()
                };
                return Err(AgentError::Unhealthy {
                    process: format!("web.{}", r.index),
                    why: e,
                    setting,
                });
            }
        }
    }
    Ok(())
}

/// The started processes other than web are still running, never restarted, after the
/// grace period. The outer error: the node could not tell (Docker did not answer).
async fn check_grace(
    ctx: &AgentCtx,
    docker: &Docker,
    req: &PrepareReq,
    started: &[Running],
) -> Result<Result<(), AgentError>, AgentError> {
    tokio::time::sleep(Duration::from_millis(req.grace_ms)).await;
    let live = runtime::list(docker, &ctx.instance, Some(&req.app)).await?;
    for r in started.iter().filter(|r| r.ptype != "web") {
        let ok = live
            .iter()
            .any(|p| p.container == r.container && p.state == "running" && p.restarts == 0);
        if !ok {
            return Ok(Err(AgentError::NotUp(format!("{}.{}", r.ptype, r.index))));
        }
    }
    Ok(Ok(()))
}

/// Ok while the process runs and has not been restarted; else what happened to it.
async fn still_up(docker: &Docker, container: &str, ptype: &str, index: u32) -> Result<(), String> {
    let Ok(info) = docker
        .raw()
        .inspect_container(
            container,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
    else {
        return Err(format!(
            "{ptype}.{index} is gone (its container was removed)"
        ));
    };
    let restarts = info.restart_count.unwrap_or(0);
    let state = info.state.unwrap_or_default();
    let running = state.running.unwrap_or(false);
    let code = state.exit_code.unwrap_or(0);
    if state.oom_killed.unwrap_or(false) {
        return Err(format!("{ptype}.{index} was killed: out of memory"));
    }
    if restarts > 0 {
        // The exit code is gone by now: the restart reset it.
        return Err(format!(
            "{ptype}.{index} exited before answering (restarted {restarts} time{} since)",
            if restarts == 1 { "" } else { "s" }
        ));
    }
    if !running {
        return Err(format!(
            "{ptype}.{index} exited (code {code}) before answering"
        ));
    }
    Ok(())
}
