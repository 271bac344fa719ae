//! `apps`: the apps the key can see.

use super::{table, CmdResult, Command, Ctx, Done, Need};
use crate::controller::view::{human, Usage};
use crate::timefmt::utc;

/// List the apps you can see
#[derive(Debug, clap::Args)]
pub struct Apps {
    #[arg(long)]
    json: bool,
}

impl Command for Apps {
    const NEED: Need = Need::Anyone;

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        let apps = cx.core.apps(cx.who)?;
        // The last day's traffic and the disk each app takes (see `usage`).
        let day = crate::timefmt::now() - 86_400;
        let usage: Vec<Option<Usage>> = apps
            .iter()
            .map(|(a, _)| cx.core.usage(&a.name, None, day).ok())
            .collect();
        if self.json {
            let v: Vec<_> = apps
                .iter()
                .zip(&usage)
                .map(|((a, role), u)| {
                    let (t, disk) = u
                        .as_ref()
                        .map(|u| (u.total.clone(), u.disk.total))
                        .unwrap_or_default();
                    serde_json::json!({"name": a.name, "role": role, "created_at": a.created_at,
                        "requests_24h": t.requests, "bytes_in_24h": t.bytes_in,
                        "bytes_out_24h": t.bytes_out, "disk": disk})
                })
                .collect();
            return Ok(table::json(&v).into());
        }
        if apps.is_empty() {
            return Ok(
                "no apps yet; create one with 'apps:create NAME' or just git push\n"
                    .to_string()
                    .into(),
            );
        }
        let rows: Vec<Vec<String>> = apps
            .iter()
            .zip(&usage)
            .map(|((a, role), u)| {
                let (req, out, disk) =
                    u.as_ref()
                        .map_or(("-".into(), "-".into(), "-".into()), |u| {
                            (
                                u.total.requests.to_string(),
                                human(u.total.bytes_out),
                                human(u.disk.total),
                            )
                        });
                vec![
                    a.name.clone(),
                    role.clone(),
                    utc(a.created_at),
                    req,
                    out,
                    disk,
                ]
            })
            .collect();
        Ok(table::render(
            &["APP", "ROLE", "CREATED", "REQUESTS/24H", "OUT/24H", "DISK"],
            &rows,
        )
        .into())
    }
}
