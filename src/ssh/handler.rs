//! The russh `Handler`: a thin translator from callbacks to per-channel tasks. State per
//! connection is the authenticated identity and the channels not yet given to a task, and
//! the connection's span (peer; key and fingerprint once authenticated), under which every
//! channel's task runs, warpgate style: `MAGRATHEA_LOG=debug` follows one connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId};
use tracing::Instrument;

use super::exec::{self, ExecRequest};
use crate::access::Identity;
use crate::controller::Core;
use crate::sshd::gate::Ticket;
use crate::sshd::Terminals;

const MAX_CHANNELS: usize = 8;

pub struct Conn {
    core: Arc<Core>,
    peer: SocketAddr,
    /// This connection's place at the gate (budgets, auth failure delays).
    ticket: Arc<Ticket>,
    who: Option<Identity>,
    chans: HashMap<ChannelId, Chan>,
    /// Ptys (`ssh -t`) and the window changes that go to the channel's task (`shell`, `run`).
    terms: Terminals,
    /// `ssh{peer, key, fp}`: the parent of everything this connection does.
    span: tracing::Span,
}

#[derive(Default)]
struct Chan {
    channel: Option<Channel<Msg>>,
    git_protocol: Option<String>,
}

impl Conn {
    pub fn new(core: Arc<Core>, peer: SocketAddr, ticket: Arc<Ticket>) -> Conn {
        Conn {
            core,
            peer,
            ticket,
            who: None,
            chans: HashMap::new(),
            terms: Terminals::default(),
            span: tracing::info_span!(
                "ssh",
                %peer,
                key = tracing::field::Empty,
                fp = tracing::field::Empty
            ),
        }
    }

    fn lookup(&self, key: &russh::keys::PublicKey) -> Option<Identity> {
        let fp = crate::keys::fingerprint(key);
        match self.core.identity(&fp) {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(parent: &self.span, error = %e, "key lookup failed");
                None
            }
        }
    }

    fn start(&mut self, id: ChannelId, command: Option<String>) -> bool {
        let (Some(who), Some(chan)) = (self.who.clone(), self.chans.get_mut(&id)) else {
            return false;
        };
        let Some(channel) = chan.channel.take() else {
            return false; // a second exec on one channel
        };
        let (term, resize) = self.terms.start(id);
        let req = ExecRequest {
            who,
            command,
            pty: term.is_some(),
            term,
            resize,
            git_protocol: chan.git_protocol.clone(),
        };
        let core = self.core.clone();
        tokio::spawn(exec::run(core, channel, req).instrument(self.span.clone()));
        true
    }
}

impl russh::server::Handler for Conn {
    type Error = anyhow::Error;

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.lookup(offer.public_key).is_some() {
            return Ok(Auth::Accept);
        }
        let fp = crate::keys::fingerprint(offer.public_key);
        tracing::info!(parent: &self.span, peer = %self.peer, user, fp = %fp, "unknown key refused");
        self.core
            .audit_unknown_key(&fp, &self.peer.ip().to_string());
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
        _user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        // The identity is recorded only here, after the signature was verified.
        match self.lookup(key.public_key) {
            // No room for another authenticated connection: refused, and the gate closes it.
            Some(_) if !self.ticket.authenticated() => Ok(Auth::reject()),
            Some(who) => {
                self.span.record("key", who.name.as_str());
                self.span.record("fp", who.fingerprint.as_str());
                tracing::debug!(parent: &self.span, peer = %self.peer, key = %who.name, "authenticated");
                self.who = Some(who);
                Ok(Auth::Accept)
            }
            None => {
                let fp = crate::keys::fingerprint(key.public_key);
                self.core
                    .audit_unknown_key(&fp, &self.peer.ip().to_string());
                self.ticket.rejected().await;
                Ok(Auth::reject())
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _s: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.who.is_none() || self.chans.len() >= MAX_CHANNELS {
            return Ok(()); // dropping `reply` rejects the channel
        }
        self.chans.insert(
            channel.id(),
            Chan {
                channel: Some(channel),
                ..Default::default()
            },
        );
        reply.accept().await;
        Ok(())
    }

    async fn env_request(
        &mut self,
        id: ChannelId,
        name: &str,
        value: &str,
        s: &mut Session,
    ) -> Result<(), Self::Error> {
        // Only git's protocol version passes; every other variable is ignored.
        let ok = name == "GIT_PROTOCOL"
            && value.len() < 64
            && value.split(':').all(|p| {
                p.strip_prefix("version=")
                    .is_some_and(|v| v.bytes().all(|b| b.is_ascii_digit()))
            });
        match self.chans.get_mut(&id) {
            Some(c) if ok => {
                c.git_protocol = Some(value.to_string());
                s.channel_success(id)?;
            }
            _ => s.channel_failure(id)?,
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
        _m: &[(russh::Pty, u32)],
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

    async fn shell_request(&mut self, id: ChannelId, s: &mut Session) -> Result<(), Self::Error> {
        // A bare `ssh paas` gets the help.
        if self.start(id, None) {
            s.channel_success(id)?;
        } else {
            s.channel_failure(id)?;
        }
        Ok(())
    }

    async fn exec_request(
        &mut self,
        id: ChannelId,
        data: &[u8],
        s: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = String::from_utf8_lossy(data).into_owned();
        // The reply is queued before anything the task writes: the session loop runs the
        // task's messages only after this callback returns.
        if self.start(id, Some(command)) {
            s.channel_success(id)?;
        } else {
            s.channel_failure(id)?;
        }
        Ok(())
    }

    // What the front door does not do gets a failure reply at once, not silence (a client
    // waiting for an answer would hang): sftp and other subsystems, X11 forwarding.
    async fn subsystem_request(
        &mut self,
        id: ChannelId,
        name: &str,
        s: &mut Session,
    ) -> Result<(), Self::Error> {
        tracing::debug!(parent: &self.span, subsystem = %name.chars().take(40).collect::<String>(), "subsystem refused");
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

    async fn channel_close(&mut self, id: ChannelId, _s: &mut Session) -> Result<(), Self::Error> {
        self.chans.remove(&id);
        self.terms.close(id);
        Ok(())
    }
}
