//! `nodes:add NAME HOST:PORT [--label K=V]... [--slots N]` (admin): a node running
//! `magrathea agent`, its host key learnt on first contact and pinned. `nodes:add local`
//! brings the built-in node back after `nodes:remove local`.

use std::collections::BTreeMap;

use super::{CmdError, CmdResult, Command, Ctx, Done, Mode, Need};
use crate::controller::NewNode;
use crate::names::NodeName;

/// Add a node running 'magrathea agent' (admin); pins its host key
#[derive(Debug, clap::Args)]
pub struct NodesAdd {
    name: NodeName,
    /// HOST:PORT of the agent (none for `local`: that brings the built-in node back)
    addr: Option<String>,
    /// Labels for environment selectors, KEY=VALUE (repeatable)
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// At most this many processes (of all apps) on the node; without it, placement goes
    /// by the memory the node offers
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..=1000))]
    slots: Option<i64>,
}

impl Command for NodesAdd {
    const NEED: Need = Need::Admin;
    const MODE: Mode = Mode::Streams;

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let name = &self.name;
        if &**name == "local" {
            if self.addr.is_some() || !self.labels.is_empty() || self.slots.is_some() {
                return Err(CmdError::Invalid(
                    "'local' is the built-in node: `nodes:add local` (no address, labels or slots) brings it back; pick another name for an agent".into(),
                ));
            }
            cx.core.restore_local_node()?;
            return Ok("node 'local' (the built-in node) is a node again\n"
                .to_string()
                .into());
        }
        let addr = self.addr.as_deref().ok_or_else(|| {
            CmdError::Invalid(format!("nodes:add {name} needs the agent's HOST:PORT"))
        })?;
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
        let labels = parse_labels(&self.labels)?;
        cx.out
            .line(format!("-----> contacting {name} at {addr}"))
            .await;
        let fp = cx
            .core
            .add_node(NewNode {
                name: name.to_string(),
                addr: addr.to_string(),
                labels,
                // 0: no cap.
                slots: self.slots.unwrap_or(0),
            })
            .await?;
        Ok(format!("added node '{name}' ({addr}), host key {fp} pinned\n").into())
    }
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
