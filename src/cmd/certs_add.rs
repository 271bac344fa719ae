//! `certs:add APP < bundle.pem` (owner): a certificate the owner got elsewhere: its chain
//! (leaf first) and private key in one PEM file. Checked before anything is kept: the key
//! must be the certificate's, the certificate valid now and for one of the app's hosts.

use super::{CmdError, CmdResult, Command, Ctx, Done, Need};
use crate::access::AppRole;
use crate::controller::view::CertSource;
use crate::names::AppName;

/// Add a TLS certificate: chain and key as PEM on stdin (owner)
#[derive(Debug, clap::Args)]
pub struct CertsAdd {
    app: AppName,
}

impl Command for CertsAdd {
    const NEED: Need = Need::App(AppRole::Owner);
    const STDIN: bool = true;

    fn app(&self) -> Option<&str> {
        Some(&self.app)
    }

    async fn apply(self, cx: &mut Ctx<'_>) -> CmdResult<Done> {
        if cx.stdin.is_empty() {
            return Err(CmdError::Invalid(format!(
                "no bundle on stdin; pipe the chain and key in: ssh paas certs:add {} < bundle.pem",
                self.app
            )));
        }
        let c = cx
            .core
            .install_cert(&self.app, CertSource::Given, cx.stdin)?;
        Ok(format!(
            "added certificate {} for {} (expires {}); serving {}\n",
            c.row.id,
            c.row.names.join(", "),
            crate::timefmt::utc(c.row.not_after),
            if c.serving.is_empty() {
                "no host yet".to_string()
            } else {
                c.serving.join(", ")
            }
        )
        .into())
    }
}
