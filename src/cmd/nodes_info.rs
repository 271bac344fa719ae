//! `nodes:info NAME` (admin): a node and what runs on it, as it reports it.

use super::{table, CmdResult, Command, Ctx, Done, Mode, Need};
use crate::names::NodeName;

/// Show a node and what runs on it (admin)
#[derive(Debug, clap::Args)]
pub struct NodesInfo {
    name: NodeName,
    #[arg(long)]
    json: bool,
}

impl Command for NodesInfo {
    const NEED: Need = Need::Admin;
    const MODE: Mode = Mode::Streams;

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let json = self.json;
        let (node, status) = cx.core.node_status(&self.name).await?;
        if json {
            return Ok(table::json(&serde_json::json!({ "node": node, "status": status })).into());
        }
        let mut s = format!(
            "node:     {}\naddress:  {}\nhost key: {}\n",
            node.name, node.addr, node.host_fp
        );
        if let Some(c) = status.capacity {
            let used: i64 = status
                .apps
                .values()
                .flat_map(|a| a.processes.iter())
                .filter(|p| p.state == "running" || p.state == "restarting")
                .map(|p| p.memory)
                .sum();
            s += &format!(
                "capacity: {} MiB memory ({} MiB given to processes, {} MiB reserved by services), {} CPUs{}\n",
                c.memory >> 20,
                used >> 20,
                status.services_memory >> 20,
                c.cpus,
                match node.slots {
                    0 => String::new(),
                    n => format!(", at most {n} processes"),
                }
            );
        }
        for (app, a) in &status.apps {
            s += &format!(
                "app {app}: current {}, unpacked {}\n",
                a.current.as_deref().unwrap_or("-"),
                a.releases.join(" ")
            );
            for p in &a.processes {
                s += &format!(
                    "  {}.{}  {}  port {}  {}\n",
                    p.ptype, p.index, p.release, p.port, p.state
                );
            }
        }
        Ok(s.into())
    }
}
