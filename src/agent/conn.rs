//! The agent's SSH side: the controller's key gets in; exec'd verbs go to `verbs` or,
//! for the interactive ones, to `session`; ptys and window changes are kept for those. A
//! link key (`tunnel`) gets in too, but may only open tunnels to its one service.

use std::collections::HashMap;
use std::sync::Arc;

use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId};
use tokio_util::sync::CancellationToken;

use super::AgentCtx;

pub(super) struct AgentConn {
    ctx: Arc<AgentCtx>,
    /// This connection's place at the gate (budgets, auth failure delays).
    ticket: Arc<crate::sshd::gate::Ticket>,
    authed: bool,
    /// Set when a link key authenticated: the service it may tunnel to, and nothing else.
    link: Option<super::tunnel::Target>,
    chans: HashMap<ChannelId, Channel<Msg>>,
    /// Ptys and window changes of `shell`/`run` channels.
    terms: crate::sshd::Terminals,
    /// Cancelled when this connection ends: the controller closed it, died (its kernel
    /// closes the socket), or stopped answering keepalives. A channel's own close is no such
    /// signal (a caller half-closes its channel as soon as its request is sent).
    gone: CancellationToken,
    _gone_on_drop: tokio_util::sync::DropGuard,
}

impl AgentConn {
    pub(super) fn new(ctx: Arc<AgentCtx>, ticket: Arc<crate::sshd::gate::Ticket>) -> AgentConn {
        let gone = CancellationToken::new();
        AgentConn {
            ctx,
            ticket,
            authed: false,
            link: None,
            chans: HashMap::new(),
            terms: Default::default(),
            _gone_on_drop: gone.clone().drop_guard(),
            gone,
        }
    }
}

impl russh::server::Handler for AgentConn {
    type Error = anyhow::Error;

    async fn auth_publickey_offered(
        &mut self,
        _u: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        let fp = crate::keys::fingerprint(offer.public_key);
        if fp == self.ctx.controller_fp || self.ctx.links.get(&fp).is_some() {
            return Ok(Auth::Accept);
        }
        self.ticket.rejected().await;
        Ok(Auth::reject())
    }

    async fn auth_password(&mut self, _user: &str, _pw: &str) -> Result<Auth, Self::Error> {
        self.ticket.rejected().await;
        Ok(Auth::reject())
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        _user: &str,
        _submethods: &str,
        _response: Option<russh::server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        self.ticket.rejected().await;
        Ok(Auth::reject())
    }

    async fn auth_publickey(
        &mut self,
        _u: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let fp = crate::keys::fingerprint(key.public_key);
        if fp != self.ctx.controller_fp {
            match self.ctx.links.get(&fp) {
                Some(t) => self.link = Some(t),
                None => {
                    self.ticket.rejected().await;
                    return Ok(Auth::reject());
                }
            }
        }
        // No room for another authenticated connection: refused, and the gate closes it.
        self.authed = self.ticket.authenticated();
        Ok(if self.authed {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _s: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.authed && self.link.is_none() && self.chans.len() < 16 {
            self.chans.insert(channel.id(), channel);
            reply.accept().await;
        }
        Ok(())
    }

    /// A link key's tunnel: whatever host and port it names, it reaches its own service's
    /// port on this node and nothing else. Anyone else's request is refused.
    #[allow(clippy::too_many_arguments)]
    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        _host: &str,
        _port: u32,
        _from: &str,
        _from_port: u32,
        reply: ChannelOpenHandle,
        _s: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(target) = self.link.clone().filter(|_| self.authed) else {
            return Ok(());
        };
        match super::tunnel::connect(&self.ctx, &target).await {
            Ok(mut tcp) => {
                reply.accept().await;
                let gone = self.gone.clone();
                tokio::spawn(async move {
                    let mut ch = channel.into_stream();
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut tcp, &mut ch) => {}
                        _ = gone.cancelled() => {}
                    }
                });
            }
            Err(e) => tracing::warn!(service = %target.key, "tunnel refused: {e}"),
        }
        Ok(())
    }

    async fn exec_request(
        &mut self,
        id: ChannelId,
        data: &[u8],
        s: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.chans.remove(&id) {
            Some(ch) => {
                s.channel_success(id)?;
                let line = String::from_utf8_lossy(data).into_owned();
                if super::session::is_interactive(&line) {
                    let (pty, resize) = self.terms.start(id);
                    let ctx = self.ctx.clone();
                    tokio::spawn(super::session::serve(ctx, ch, line, pty, resize));
                } else {
                    tokio::spawn(super::verbs::exec(
                        self.ctx.clone(),
                        ch,
                        line,
                        self.gone.clone(),
                    ));
                }
            }
            None => s.channel_failure(id)?,
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        id: ChannelId,
        term: &str,
        cols: u32,
        rows: u32,
        _pw: u32,
        _ph: u32,
        _modes: &[(russh::Pty, u32)],
        s: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.chans.contains_key(&id) {
            self.terms.pty(id, term, cols, rows);
            s.channel_success(id)?;
        } else {
            s.channel_failure(id)?;
        }
        Ok(())
    }

    async fn window_change_request(
        &mut self,
        id: ChannelId,
        cols: u32,
        rows: u32,
        _pw: u32,
        _ph: u32,
        _s: &mut Session,
    ) -> Result<(), Self::Error> {
        self.terms.resize(id, cols, rows);
        Ok(())
    }

    async fn channel_close(&mut self, id: ChannelId, _s: &mut Session) -> Result<(), Self::Error> {
        self.chans.remove(&id);
        self.terms.close(id);
        Ok(())
    }

    // Everything else a client may ask of a session channel is refused at once, never left
    // unanswered: the agent runs verbs (`exec`) and nothing more.
    async fn shell_request(&mut self, id: ChannelId, s: &mut Session) -> Result<(), Self::Error> {
        s.channel_failure(id)?;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        id: ChannelId,
        _name: &str,
        s: &mut Session,
    ) -> Result<(), Self::Error> {
        s.channel_failure(id)?;
        Ok(())
    }

    async fn env_request(
        &mut self,
        id: ChannelId,
        _name: &str,
        _value: &str,
        s: &mut Session,
    ) -> Result<(), Self::Error> {
        s.channel_failure(id)?;
        Ok(())
    }

    async fn x11_request(
        &mut self,
        id: ChannelId,
        _single: bool,
        _proto: &str,
        _cookie: &str,
        _screen: u32,
        s: &mut Session,
    ) -> Result<(), Self::Error> {
        s.channel_failure(id)?;
        Ok(())
    }
}
