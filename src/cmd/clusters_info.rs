//! `clusters:info NAME` (admin): the swarm's nodes (state, availability, role, labels, the
//! magrathea agent on each) and what runs where.

use super::{table, CmdResult, Command, Ctx, Done, Need};
use crate::names::NodeName;

/// A cluster's nodes and what runs where (admin)
#[derive(Debug, clap::Args)]
pub struct ClustersInfo {
    name: NodeName,
    #[arg(long)]
    json: bool,
}

impl Command for ClustersInfo {
    const NEED: Need = Need::Admin;

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let (c, info) = cx.core.cluster_info(&self.name).await?;
        if self.json {
            return Ok(table::json(&info).into());
        }
        let nodes: Vec<Vec<String>> = info
            .nodes
            .iter()
            .map(|n| {
                let labels: Vec<String> =
                    n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let here = info
                    .tasks
                    .iter()
                    .filter(|t| t.node.as_deref() == Some(n.hostname.as_str()))
                    .count();
                vec![
                    n.hostname.clone(),
                    n.addr.clone(),
                    n.state.clone(),
                    n.availability.clone(),
                    n.role.clone(),
                    labels.join(","),
                    match &n.agent {
                        Some(a) if a.addr.is_empty() => "cluster's".to_string(),
                        Some(a) => a.addr.clone(),
                        None => "-".to_string(),
                    },
                    here.to_string(),
                ]
            })
            .collect();
        let tasks: Vec<Vec<String>> = info
            .tasks
            .iter()
            .map(|t| {
                vec![
                    t.app.clone(),
                    format!("{}.{}", t.ptype, t.index),
                    t.release.clone(),
                    t.node.clone().unwrap_or_default(),
                    format!("{}:{}", t.addr.clone().unwrap_or_default(), t.port),
                    t.state.clone(),
                ]
            })
            .collect();
        let mut out = format!("cluster {} (swarm, agent {})\n", c.name, c.addr);
        out.push_str(&table::render(
            &[
                "NODE",
                "ADDRESS",
                "STATE",
                "AVAILABILITY",
                "ROLE",
                "LABELS",
                "AGENT",
                "TASKS",
            ],
            &nodes,
        ));
        out.push('\n');
        out.push_str(&table::render(
            &["APP", "PROCESS", "RELEASE", "NODE", "LISTENS", "STATE"],
            &tasks,
        ));
        Ok(out.into())
    }
}
