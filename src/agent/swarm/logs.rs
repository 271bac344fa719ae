//! `logs` on a swarm: the output of an environment's tasks, from the task log API (the
//! manager gathers it from every node), backlog first, then, with `follow`, every new line
//! of every task, tasks that start later (a scale, a rescheduled task) included.

use std::collections::HashSet;
use std::time::Duration;

use bollard::query_parameters::LogsOptionsBuilder;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::agent::logs::{frame_text, merge_last, push_frame, send, Filter};
use crate::docker::Docker;
use crate::node::proto::{LogFrame, LogLine, LogsReq, ProcInfo};

async fn tasks_of(docker: &Docker, req: &LogsReq, f: &Filter) -> Result<Vec<ProcInfo>, String> {
    let (_, all) = super::list_tasks(docker, true)
        .await
        .map_err(|e| e.to_string())?;
    Ok(all
        .into_iter()
        .filter(|p| p.app == req.app && f.matches(&format!("{}.{}", p.ptype, p.index), &p.release))
        .collect())
}

async fn task_lines(docker: &Docker, p: &ProcInfo, tail: usize) -> Vec<LogLine> {
    let opts = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .timestamps(true)
        .tail(&tail.to_string())
        .build();
    let process = format!("{}.{}", p.ptype, p.index);
    let mut out = vec![];
    let mut s = docker.raw().task_logs(&p.container, Some(opts));
    let read = async {
        while let Some(Ok(frame)) = s.next().await {
            push_frame(&mut out, &frame_text(frame), &process, &p.release);
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
    out
}

/// Follows one task's new lines into `tx` until it ends (or the set is dropped: the
/// request ended).
fn follow_task(
    set: &mut tokio::task::JoinSet<()>,
    docker: Docker,
    p: ProcInfo,
    since: i32,
    tx: mpsc::Sender<LogLine>,
) {
    set.spawn(async move {
        let opts = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .since(since)
            .build();
        let process = format!("{}.{}", p.ptype, p.index);
        let mut s = docker.raw().task_logs(&p.container, Some(opts));
        while let Some(Ok(frame)) = s.next().await {
            let mut lines = vec![];
            push_frame(&mut lines, &frame_text(frame), &process, &p.release);
            for l in lines {
                if tx.send(l).await.is_err() {
                    return;
                }
            }
        }
    });
}

pub async fn stream(
    docker: &Docker,
    req: &LogsReq,
    out: &mut (impl AsyncWriteExt + Unpin),
) -> Result<(), String> {
    let filter = Filter {
        process: req.process.clone(),
        release: req.release.clone(),
    };
    // Followed lines are those from the request on: a task found later (one that was
    // still starting, waiting for its health check) is read from then, not from when it
    // was found.
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i32)
        .unwrap_or(0);
    let tasks = tasks_of(docker, req, &filter).await?;
    let mut lines = vec![];
    if req.tail > 0 {
        for p in &tasks {
            lines.extend(task_lines(docker, p, req.tail).await);
        }
    }
    for l in merge_last(lines, req.tail) {
        send(out, &LogFrame::Line(l))
            .await
            .map_err(|e| e.to_string())?;
    }
    send(out, &LogFrame::Live { live: true })
        .await
        .map_err(|e| e.to_string())?;
    if !req.follow {
        return Ok(());
    }
    let (tx, mut rx) = mpsc::channel::<LogLine>(256);
    let mut followed: HashSet<String> = HashSet::new();
    let mut set = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            Some(l) = rx.recv() => {
                send(out, &LogFrame::Line(l)).await.map_err(|e| e.to_string())?;
            }
            _ = tick.tick() => {
                // Tasks that started since (the first tick: all of them).
                for p in tasks_of(docker, req, &filter).await.unwrap_or_default() {
                    let up = matches!(p.state.as_str(), "starting" | "running");
                    if up && followed.insert(p.container.clone()) {
                        follow_task(&mut set, docker.clone(), p, since, tx.clone());
                    }
                }
            }
        }
    }
}
