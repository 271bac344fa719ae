//! `services:create TYPE NAME [--env E] [--node N] [--memory SIZE]` (admin): a global
//! service, linked to apps with `services:link`.

use super::{CmdResult, Command, Ctx, Done, Mode, Need};
use crate::controller::ServiceAsk;
use crate::names::{EnvName, NodeName, ServiceName};

/// Create a service: postgres, redis or mariadb (admin)
#[derive(Debug, clap::Args)]
pub struct ServicesCreate {
    /// postgres, redis or mariadb
    #[arg(value_name = "TYPE")]
    kind: String,
    name: ServiceName,
    /// The environment it serves: it links only into that environment of an app
    #[arg(long, default_value = "production")]
    env: EnvName,
    /// The node it runs on (default: the one with the most free memory)
    #[arg(long)]
    node: Option<NodeName>,
    /// Its container's memory limit, which the server is tuned to (default 512M)
    #[arg(long, value_name = "SIZE", value_parser = memory_arg)]
    memory: Option<i64>,
}

fn memory_arg(s: &str) -> Result<i64, String> {
    crate::appconfig::service_memory(s)
        .ok_or_else(|| format!("{s:?} is not a size from 128M to 1T (e.g. 512M, 2G)"))
}

impl Command for ServicesCreate {
    const NEED: Need = Need::Admin;
    const MODE: Mode = Mode::Streams;

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let row = cx
            .core
            .create_service(
                &cx.who.name,
                &ServiceAsk {
                    kind: &self.kind,
                    name: &self.name,
                    env: &self.env,
                    node: self.node.as_deref(),
                    app: None,
                    memory: self.memory,
                },
                cx.out,
            )
            .await?;
        Ok(format!(
            "created {} service '{}' for {} on node {}; link it with services:link APP {}\n",
            row.kind, row.name, row.env, row.node, row.name
        )
        .into())
    }
}
