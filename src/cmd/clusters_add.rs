//! `clusters:add NAME --swarm HOST:PORT` (admin): a Docker Swarm, through the
//! `magrathea agent --swarm` on one of its managers; its host key learnt and pinned.

use super::{CmdError, CmdResult, Command, Ctx, Done, Mode, Need};
use crate::names::NodeName;

/// Add a Docker Swarm cluster through its 'magrathea agent --swarm' (admin)
#[derive(Debug, clap::Args)]
pub struct ClustersAdd {
    name: NodeName,
    /// HOST:PORT of the swarm agent on a manager node
    #[arg(long, value_name = "HOST:PORT")]
    swarm: String,
}

impl Command for ClustersAdd {
    const NEED: Need = Need::Admin;
    const MODE: Mode = Mode::Streams;

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let (name, addr) = (&self.name, &self.swarm);
        let ok = addr.rsplit_once(':').is_some_and(|(h, p)| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-[]:".contains(c))
                && p.parse::<u16>().is_ok()
        });
        if !ok {
            return Err(CmdError::Invalid(format!("'{addr}' is not HOST:PORT")));
        }
        cx.out
            .line(format!(
                "-----> contacting the swarm agent of {name} at {addr}"
            ))
            .await;
        let (fp, nodes) = cx.core.add_cluster(name, addr).await?;
        Ok(format!(
            "added cluster '{name}' (swarm, {nodes} node{}, agent {addr}), host key {fp} pinned\n",
            if nodes == 1 { "" } else { "s" }
        )
        .into())
    }
}
