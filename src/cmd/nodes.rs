//! nodes, nodes:add, nodes:remove, nodes:info, nodes:key (admin).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{table, CmdError, CmdResult};
use crate::controller::{Core, NewNode, Sink};

pub fn list(core: &Arc<Core>, json: bool) -> CmdResult {
    let nodes = core.nodes()?;
    if json {
        return Ok(table::json(&nodes));
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vec![
                n.name.clone(),
                n.addr.clone(),
                labels.join(","),
                match n.slots {
                    0 => "-".to_string(),
                    n => n.to_string(),
                },
                n.host_fp.clone(),
            ]
        })
        .collect();
    Ok(table::render(
        &["NODE", "ADDRESS", "LABELS", "SLOTS", "HOST KEY"],
        &rows,
    ))
}

pub fn key(core: &Arc<Core>) -> CmdResult {
    Ok(format!("{}\n", core.controller_key()?))
}

fn parse_labels(labels: &[String]) -> Result<BTreeMap<String, String>, CmdError> {
    let mut out = BTreeMap::new();
    for l in labels {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| CmdError::Invalid(format!("label '{l}' is not KEY=VALUE")))?;
        crate::names::check("label", k)?;
        crate::names::check("label value", v)?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

pub async fn add(
    core: &Arc<Core>,
    name: &str,
    addr: &str,
    labels: &[String],
    slots: Option<i64>,
    out: &mut Sink,
) -> CmdResult {
    crate::names::check("node", name)?;
    if name == "local" {
        return Err(CmdError::Invalid(
            "'local' is the built-in node's name; pick another".into(),
        ));
    }
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| CmdError::Invalid(format!("'{addr}' is not HOST:PORT")))?;
    let ok_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-[]:".contains(c));
    if !ok_host || port.parse::<u16>().is_err() {
        return Err(CmdError::Invalid(format!("'{addr}' is not HOST:PORT")));
    }
    let labels = parse_labels(labels)?;
    out.line(format!("-----> contacting {name} at {addr}"))
        .await;
    let fp = core
        .add_node(NewNode {
            name: name.to_string(),
            addr: addr.to_string(),
            labels,
            // 0: no cap.
            slots: slots.unwrap_or(0),
        })
        .await?;
    Ok(format!(
        "added node '{name}' ({addr}), host key {fp} pinned\n"
    ))
}

pub fn remove(core: &Arc<Core>, name: &str) -> CmdResult {
    core.remove_node(name)?;
    Ok(format!(
        "removed node '{name}' (its processes keep running until stopped there)\n"
    ))
}

pub async fn info(core: &Arc<Core>, name: &str, json: bool) -> CmdResult {
    let (node, status) = core.node_status(name).await?;
    if json {
        return Ok(table::json(
            &serde_json::json!({ "node": node, "status": status }),
        ));
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
            "capacity: {} MiB memory ({} MiB given to processes), {} CPUs{}\n",
            c.memory >> 20,
            used >> 20,
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
    Ok(s)
}
