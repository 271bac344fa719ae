//! The controller's side of the agent protocol, the node's host key pinned at `nodes:add`
//! (first contact) and checked on every connection after.
//!
//! Every verb is a typed request (`proto`): [`NodeClient::send`] sends one and returns its
//! reply type; `upload` is `send` with a file as stdin (`receive`), `stream` reads a
//! streaming verb's frames (`logs`), `session` runs an interactive one (`shell`, `run`).
//!
//! A `NodeClient` and its clones share one authenticated SSH connection and run each call
//! on a channel of its own (the agent takes up to 16 at once), so a rollout pays one
//! handshake per node rather than one per verb. The connection is opened on first use,
//! replaced when it broke (the node restarted), and goes away with the last clone.
//! `stream` and `session` keep a connection of their own (see there); `probe` too.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use thiserror::Error;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::proto::{encode, Request, SessionRequest, StreamRequest};

/// What a call to a node can end in, each naming the node: unreachable (check the node and
/// the network), a host key that changed (check the node, `nodes:remove` and add it again),
/// our key refused (start the agent with the right `--controller-key`), or the node's own
/// answer that it could not do what was asked.
#[derive(Debug, Error)]
pub enum NodeError {
    #[error("node {node} ({addr}) is unreachable: {why}")]
    Unreachable {
        node: String,
        addr: String,
        why: String,
    },
    #[error("node {node} presented host key {got}, but {pinned} is pinned; refusing")]
    HostKey {
        node: String,
        got: String,
        pinned: String,
    },
    #[error(
        "node {node}: refused the controller's key (was the agent started with \
         --controller-key from 'ssh paas nodes:key'?)"
    )]
    KeyRefused { node: String },
    /// The node answered, but not with the reply the verb has.
    #[error("node {node}: bad reply to '{command}': {why}")]
    BadReply {
        node: String,
        command: String,
        why: String,
    },
    /// The node's own answer: it could not do what was asked (one line, in its words).
    #[error("node {node}: {msg}")]
    Failed { node: String, msg: String },
}

/// A tunnel (`NodeClient::tunnel`): a byte stream both ways; it holds its connection.
pub struct Tunnel {
    pub stream: russh::ChannelStream<client::Msg>,
    _conn: Conn,
}

#[derive(Clone)]
pub struct NodeClient {
    pub name: String,
    pub addr: String,
    key: Arc<PrivateKey>,
    /// None only on first contact (`nodes:add`).
    pinned: Option<String>,
    timeout: Duration,
    /// The connection this client and its clones share. Locked only to look at it or to
    /// connect, so parallel calls wait for one handshake instead of each making their own,
    /// then open their channels on it side by side.
    conn: Arc<tokio::sync::Mutex<Option<Conn>>>,
}

/// An authenticated connection. Calls hold it (the `Arc`) while their channel is open; it
/// closes when the cache and every call have let go of it.
type Conn = Arc<client::Handle<Check>>;

/// How long opening a channel on a live connection may take; past it the connection is
/// taken for dead and replaced.
const CHANNEL_OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// A node that stops answering is taken for dead within seconds, not at the end of a call:
/// with nothing heard for `KEEPALIVE_INTERVAL`, a keepalive goes out, and after
/// `KEEPALIVE_MAX` unanswered ones the connection is closed. `PEER_SILENCE` bounds the
/// case keepalives cannot see: a peer that stopped reading while we write to it (writes
/// then block and nothing else gets a turn).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_MAX: usize = 3;
const PEER_SILENCE: Duration = Duration::from_secs(30);

/// Sending a release may take long over a slow link, but never this long without a single
/// block accepted by the node (a live node that stopped reading: a hung disk).
const TRANSFER_STALL: Duration = Duration::from_secs(60);

/// What the user sends into an interactive session.
#[derive(Debug)]
pub enum Input {
    Data(Vec<u8>),
    Eof,
    Resize { cols: u32, rows: u32 },
}

/// What an interactive session sends back.
#[derive(Debug)]
pub enum Output {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

enum Stdin {
    Bytes(Vec<u8>),
    File(PathBuf),
    /// Chunks as a producer makes them; its end (the sender dropped) is stdin's EOF.
    Stream(mpsc::Receiver<Vec<u8>>),
}

struct Check {
    pinned: Option<String>,
    seen: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Check {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let fp = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => crate::keys::fingerprint(key),
            PublicKeyOrCertificate::Certificate(_) => return Ok(false),
        };
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(fp.clone());
        Ok(self.pinned.as_ref().is_none_or(|p| *p == fp))
    }
}

impl NodeClient {
    pub fn new(name: &str, addr: &str, key: Arc<PrivateKey>, pinned: Option<String>) -> NodeClient {
        NodeClient {
            name: name.into(),
            addr: addr.into(),
            key,
            pinned,
            timeout: Duration::from_secs(600),
            conn: Arc::default(),
        }
    }

    /// The same client (and connection), with `d` for a node to answer a call (the upload
    /// has its own bound): for verbs that run long by design (a release command).
    pub fn answer_within(mut self, d: Duration) -> NodeClient {
        self.timeout = d;
        self
    }

    fn unreachable(&self, why: impl ToString) -> NodeError {
        NodeError::Unreachable {
            node: self.name.clone(),
            addr: self.addr.clone(),
            why: why.to_string(),
        }
    }

    /// Connect and return the node's host key fingerprint (for pinning).
    pub async fn probe(&self) -> Result<String, NodeError> {
        let seen = Arc::new(Mutex::new(None));
        let h = self.connect(seen.clone()).await?;
        let _ = h.disconnect(russh::Disconnect::ByApplication, "", "").await;
        let fp = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        fp.ok_or_else(|| self.unreachable("no host key seen"))
    }

    async fn connect(
        &self,
        seen: Arc<Mutex<Option<String>>>,
    ) -> Result<client::Handle<Check>, NodeError> {
        let config = Arc::new(client::Config {
            inactivity_timeout: Some(PEER_SILENCE),
            keepalive_interval: Some(KEEPALIVE_INTERVAL),
            keepalive_max: KEEPALIVE_MAX,
            nodelay: true,
            preferred: node_ciphers(),
            ..Default::default()
        });
        let check = Check {
            pinned: self.pinned.clone(),
            seen: seen.clone(),
        };
        let connect = client::connect(config, self.addr.as_str(), check);
        let mut h = match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Err(_) => return Err(self.unreachable("connect timed out")),
            Ok(Err(e)) => {
                let got = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
                if let (Some(got), Some(pinned)) = (got, &self.pinned) {
                    if got != *pinned {
                        return Err(NodeError::HostKey {
                            node: self.name.clone(),
                            got,
                            pinned: pinned.clone(),
                        });
                    }
                }
                return Err(self.unreachable(e));
            }
            Ok(Ok(h)) => h,
        };
        let auth = h
            .authenticate_publickey(
                "magrathea",
                PrivateKeyWithHashAlg::new(self.key.clone(), None),
            )
            .await
            .map_err(|e| self.unreachable(e))?;
        if !auth.success() {
            return Err(NodeError::KeyRefused {
                node: self.name.clone(),
            });
        }
        Ok(h)
    }

    /// The shared connection: the cached one if it is still open (and is not `broken`),
    /// else a new one, which replaces it in the cache. `true` when it was just made.
    async fn shared(&self, broken: Option<&Conn>) -> Result<(Conn, bool), NodeError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.is_closed() && !broken.is_some_and(|b| Arc::ptr_eq(b, c)) {
                return Ok((c.clone(), false));
            }
        }
        // Drop the dead one first: nothing is gained by keeping it while connecting.
        *slot = None;
        let c = Arc::new(self.connect(Arc::new(Mutex::new(None))).await?);
        *slot = Some(c.clone());
        Ok((c, true))
    }

    async fn open_on(&self, conn: &Conn) -> Result<russh::Channel<client::Msg>, NodeError> {
        match tokio::time::timeout(CHANNEL_OPEN_TIMEOUT, conn.channel_open_session()).await {
            Err(_) => Err(self.unreachable("opening a channel timed out")),
            Ok(r) => r.map_err(|e| self.unreachable(e)),
        }
    }

    /// A new channel on the shared connection. When the cached connection cannot open one
    /// (the node restarted, the network dropped it), it is dropped and the channel is
    /// opened on a new connection, once.
    async fn channel(&self) -> Result<(Conn, russh::Channel<client::Msg>), NodeError> {
        let (conn, fresh) = self.shared(None).await?;
        match self.open_on(&conn).await {
            Ok(ch) => return Ok((conn, ch)),
            Err(e) if fresh => return Err(e),
            Err(_) => {}
        }
        let (conn, _) = self.shared(Some(&conn)).await?;
        let ch = self.open_on(&conn).await?;
        Ok((conn, ch))
    }

    /// A tunnel through the node's agent (`direct-tcpip`): with a link key, to its one
    /// service whatever `host` says (see `agent::tunnel`). Opened on the shared connection,
    /// or once on a new one when that cannot open it.
    pub async fn tunnel(&self, host: &str, port: u16) -> Result<Tunnel, NodeError> {
        let open = |conn: Conn| async move {
            let ch = conn.channel_open_direct_tcpip(host, port.into(), "127.0.0.1", 0);
            match tokio::time::timeout(CHANNEL_OPEN_TIMEOUT, ch).await {
                Err(_) => Err(self.unreachable("opening a tunnel timed out")),
                Ok(r) => r
                    .map(|ch| Tunnel {
                        stream: ch.into_stream(),
                        _conn: conn,
                    })
                    .map_err(|e| self.unreachable(e)),
            }
        };
        let (conn, fresh) = self.shared(None).await?;
        match open(conn.clone()).await {
            Ok(t) => Ok(t),
            Err(e) if fresh => Err(e),
            Err(_) => open(self.shared(Some(&conn)).await?.0).await,
        }
    }

    /// One call: `req` to the node, its reply back.
    pub async fn send<R: Request>(&self, req: &R) -> Result<R::Reply, NodeError> {
        self.call(req, Stdin::Bytes(encode(req)), None).await
    }

    /// [`send`](Self::send), with the node's progress lines (`prepare`, `release-phase`)
    /// passed to `progress` as they come.
    pub async fn send_with_progress<R: Request>(
        &self,
        req: &R,
        progress: mpsc::Sender<String>,
    ) -> Result<R::Reply, NodeError> {
        self.call(req, Stdin::Bytes(encode(req)), Some(progress))
            .await
    }

    /// [`send`](Self::send) with `file` as stdin instead of the request (`receive`: the
    /// request is on the exec line).
    pub async fn upload<R: Request>(&self, req: &R, file: &Path) -> Result<R::Reply, NodeError> {
        self.call(req, Stdin::File(file.to_path_buf()), None).await
    }

    /// [`send`](Self::send) with `chunks` as stdin (`service-load`, `service-verify`: the
    /// request is on the exec line). The producer ends stdin by dropping its sender.
    pub async fn upload_stream<R: Request>(
        &self,
        req: &R,
        chunks: mpsc::Receiver<Vec<u8>>,
    ) -> Result<R::Reply, NodeError> {
        self.call(req, Stdin::Stream(chunks), None).await
    }

    /// `service-dump`: the dump's bytes to `out` as they come (in chunks of about
    /// [`DOWNLOAD_CHUNK`]); Ok once the node says it is
    /// whole (the bytes moved). On a connection of its own, like `stream` and for the same
    /// reason: `out` may be slow (sealing, a verification it feeds).
    pub async fn download(
        &self,
        req: &super::proto::ServiceDumpReq,
        out: mpsc::Sender<Vec<u8>>,
    ) -> Result<u64, NodeError> {
        let mut words = vec![super::proto::ServiceDumpReq::VERB.to_string()];
        words.extend(
            req.args()
                .iter()
                .map(|a| shell_words::quote(a).into_owned()),
        );
        let h = self.connect(Arc::new(Mutex::new(None))).await?;
        let mut ch = h
            .channel_open_session()
            .await
            .map_err(|e| self.unreachable(e))?;
        ch.exec(true, words.join(" "))
            .await
            .map_err(|e| self.unreachable(e))?;
        ch.eof().await.map_err(|e| self.unreachable(e))?;
        let (mut err, mut code, mut moved) = (String::new(), None, 0u64);
        // SSH packets (32 KiB) gathered into chunks of about DOWNLOAD_CHUNK: fewer, larger
        // hand-offs to whoever seals and verifies them.
        let mut chunk = Vec::with_capacity(DOWNLOAD_CHUNK);
        while let Some(msg) = ch.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    moved += data.len() as u64;
                    chunk.extend_from_slice(&data);
                    if chunk.len() >= DOWNLOAD_CHUNK - 64 * 1024 {
                        let full =
                            std::mem::replace(&mut chunk, Vec::with_capacity(DOWNLOAD_CHUNK));
                        if out.send(full).await.is_err() {
                            break;
                        }
                    }
                }
                ChannelMsg::ExtendedData { data, .. } => {
                    err.push_str(&String::from_utf8_lossy(&data));
                    if err.len() > 8192 {
                        err.drain(..err.len() - 4096);
                    }
                }
                ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        let _ = h.disconnect(russh::Disconnect::ByApplication, "", "").await;
        if code == Some(0) && !chunk.is_empty() && out.send(chunk).await.is_err() {
            return Err(NodeError::Failed {
                node: self.name.clone(),
                msg: "the dump's reader went away".into(),
            });
        }
        match code {
            Some(0) => Ok(moved),
            Some(_) => Err(NodeError::Failed {
                node: self.name.clone(),
                msg: err
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("the dump failed")
                    .trim()
                    .to_string(),
            }),
            None if out.is_closed() => Err(NodeError::Failed {
                node: self.name.clone(),
                msg: "the dump's reader went away".into(),
            }),
            None => Err(self.unreachable("connection lost before the dump was whole")),
        }
    }

    /// The exec line of a request: its verb, then its arguments, each quoted.
    fn exec_line<R: Request>(req: &R) -> String {
        let mut words = vec![R::VERB.to_string()];
        words.extend(
            req.args()
                .iter()
                .map(|a| shell_words::quote(a).into_owned()),
        );
        words.join(" ")
    }

    /// Run one verb. Progress lines (stderr) go to `progress`; the JSON reply is parsed.
    async fn call<R: Request>(
        &self,
        req: &R,
        stdin: Stdin,
        progress: Option<mpsc::Sender<String>>,
    ) -> Result<R::Reply, NodeError> {
        let command = Self::exec_line(req);
        let (code, out, err) = self.call_raw(&command, stdin, progress).await?;
        if code != 0 {
            let doc: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
            let msg = doc["error"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| err.lines().last().unwrap_or("failed").trim().to_string());
            return Err(NodeError::Failed {
                node: self.name.clone(),
                msg,
            });
        }
        serde_json::from_slice(&out).map_err(|e| NodeError::BadReply {
            node: self.name.clone(),
            command,
            why: e.to_string(),
        })
    }

    /// Run a streaming verb (`logs`): `req` is sent, then every frame goes to `frames` as it
    /// arrives (a line that is not one is skipped), with no overall timeout. Ends when the
    /// node closes the channel, or as soon as `frames`' receiver is dropped: the connection
    /// is then closed, which is how the node learns to stop.
    ///
    /// On a connection of its own, not the shared one: `lines` waits for a reader that may
    /// be slow (a user's terminal), and while this channel is not read, russh stops reading
    /// the whole connection, which would stall a rollout's calls to the node.
    pub async fn stream<R: StreamRequest>(
        &self,
        req: &R,
        frames: mpsc::Sender<R::Frame>,
    ) -> Result<(), NodeError> {
        let stdin = encode(req);
        let lines = frames;
        let h = self.connect(Arc::new(Mutex::new(None))).await?;
        let mut ch = h
            .channel_open_session()
            .await
            .map_err(|e| self.unreachable(e))?;
        ch.exec(true, R::VERB)
            .await
            .map_err(|e| self.unreachable(e))?;
        ch.data(&stdin[..]).await.map_err(|e| self.unreachable(e))?;
        ch.eof().await.map_err(|e| self.unreachable(e))?;
        let mut partial = crate::lines::LineBuf::default();
        let (mut last, mut err) = (String::new(), String::new());
        let (mut code, mut gone) = (None, false);
        loop {
            let msg = tokio::select! {
                m = ch.wait() => m,
                _ = lines.closed() => { gone = true; break }
            };
            match msg {
                Some(ChannelMsg::Data { data }) => {
                    for line in partial.push(&data) {
                        last = line;
                        let Ok(frame) = serde_json::from_str::<R::Frame>(&last) else {
                            continue;
                        };
                        if lines.send(frame).await.is_err() {
                            gone = true;
                            break;
                        }
                    }
                    if gone {
                        break;
                    }
                }
                Some(ChannelMsg::ExtendedData { data, .. }) => {
                    err = String::from_utf8_lossy(&data).trim().to_string();
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => code = Some(exit_status),
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            }
        }
        let _ = h.disconnect(russh::Disconnect::ByApplication, "", "").await;
        match code {
            _ if gone => Ok(()),
            Some(0) => Ok(()),
            Some(_) => {
                let doc: serde_json::Value = serde_json::from_str(&last).unwrap_or_default();
                let msg = doc["error"].as_str().map(str::to_string).unwrap_or(err);
                Err(NodeError::Failed {
                    node: self.name.clone(),
                    msg: if msg.is_empty() { "failed".into() } else { msg },
                })
            }
            None => Err(self.unreachable("connection lost before the node finished")),
        }
    }

    /// An interactive verb (`shell`, `run`; protocol in `proto`, before `ShellReq`): a pty
    /// on the channel if `pty`, the verb, `req` as the first line, then `input` (the
    /// user's bytes, EOF, window changes) goes to the node and its output to `output`, both
    /// as they come, with no overall timeout. Returns the remote exit status. When `input`
    /// closes first (the user went away) the connection is dropped, which ends the session
    /// on the node. On a connection of its own, like `call_lines` and for the same reason.
    pub async fn session<R: SessionRequest>(
        &self,
        req: &R,
        pty: Option<&crate::sshd::Pty>,
        mut input: mpsc::Receiver<Input>,
        output: mpsc::Sender<Output>,
    ) -> Result<u32, NodeError> {
        let h = self.connect(Arc::new(Mutex::new(None))).await?;
        let ch = h
            .channel_open_session()
            .await
            .map_err(|e| self.unreachable(e))?;
        if let Some(p) = pty {
            ch.request_pty(true, &p.term, p.cols, p.rows, 0, 0, &[])
                .await
                .map_err(|e| self.unreachable(e))?;
        }
        ch.exec(true, R::VERB)
            .await
            .map_err(|e| self.unreachable(e))?;
        let mut line = serde_json::to_vec(req).map_err(|e| NodeError::Failed {
            node: self.name.clone(),
            msg: e.to_string(),
        })?;
        line.push(b'\n');
        ch.data(&line[..]).await.map_err(|e| self.unreachable(e))?;
        let (mut rx, tx) = ch.split();
        let pump = async {
            while let Some(i) = input.recv().await {
                let r = match i {
                    Input::Data(d) => tx.data(&d[..]).await,
                    Input::Eof => tx.eof().await,
                    Input::Resize { cols, rows } => tx.window_change(cols, rows, 0, 0).await,
                };
                if r.is_err() {
                    // The node is gone; the reading side sees it too. Keep draining.
                    continue;
                }
            }
        };
        let read = async {
            let mut code = None;
            while let Some(msg) = rx.wait().await {
                let out = match msg {
                    ChannelMsg::Data { data } => Output::Stdout(data.to_vec()),
                    ChannelMsg::ExtendedData { data, .. } => Output::Stderr(data.to_vec()),
                    ChannelMsg::ExitStatus { exit_status } => {
                        code = Some(exit_status);
                        continue;
                    }
                    ChannelMsg::ExitSignal { .. } => {
                        code.get_or_insert(255);
                        continue;
                    }
                    ChannelMsg::Close => break,
                    _ => continue,
                };
                if output.send(out).await.is_err() {
                    return None;
                }
            }
            code
        };
        let code = tokio::select! {
            c = read => c,
            _ = pump => None,
        };
        let _ = h.disconnect(russh::Disconnect::ByApplication, "", "").await;
        code.ok_or_else(|| self.unreachable("the session ended without an exit status"))
    }

    /// One verb on a channel of the shared connection. Returns the exit status, stdout and
    /// stderr. A dead node ends it within seconds (keepalives, the connection closing); a
    /// live one gets `TRANSFER_STALL` per block of stdin and `self.timeout` for its answer.
    async fn call_raw(
        &self,
        command: &str,
        stdin: Stdin,
        progress: Option<mpsc::Sender<String>>,
    ) -> Result<(u32, Vec<u8>, String), NodeError> {
        let timed_out = || self.unreachable(format!("'{command}' timed out"));
        let (_conn, ch) = tokio::time::timeout(self.timeout, self.channel())
            .await
            .map_err(|_| timed_out())??;
        let (mut rx, tx) = ch.split();
        let r = self
            .exchange(&mut rx, &tx, command, stdin, progress, self.timeout)
            .await;
        if r.is_err() {
            // End this verb's channel (the node may still wait for its stdin), not the
            // connection other calls share. Not reading it any more first, so that the
            // connection cannot wait on it.
            drop(rx);
            let _ = tokio::time::timeout(CHANNEL_OPEN_TIMEOUT, tx.close()).await;
        }
        r
    }

    async fn exchange(
        &self,
        rx: &mut ChannelReadHalf,
        tx: &ChannelWriteHalf<client::Msg>,
        command: &str,
        stdin: Stdin,
        progress: Option<mpsc::Sender<String>>,
        answer_within: Duration,
    ) -> Result<(u32, Vec<u8>, String), NodeError> {
        let stalled = || {
            self.unreachable(format!(
                "'{command}': the node took no data for {}s",
                TRANSFER_STALL.as_secs()
            ))
        };
        // A write waits for the node to open its window; if the connection dies meanwhile,
        // russh never wakes it. So the upload runs beside the reading side, which does see
        // the end of the connection, and each block has `TRANSFER_STALL` to go out.
        let send = async {
            tx.exec(true, command)
                .await
                .map_err(|e| self.unreachable(e))?;
            match stdin {
                // Nothing at all, not an empty packet, for a request without fields.
                Stdin::Bytes(b) if b.is_empty() => {}
                Stdin::Bytes(b) => tokio::time::timeout(TRANSFER_STALL, tx.data(&b[..]))
                    .await
                    .map_err(|_| stalled())?
                    .map_err(|e| self.unreachable(e))?,
                Stdin::Stream(mut chunks) => {
                    while let Some(b) = chunks.recv().await {
                        tokio::time::timeout(TRANSFER_STALL, tx.data(&b[..]))
                            .await
                            .map_err(|_| stalled())?
                            .map_err(|e| self.unreachable(e))?;
                    }
                }
                Stdin::File(p) => {
                    let mut f = tokio::fs::File::open(&p)
                        .await
                        .map_err(|e| self.unreachable(e))?;
                    // Large reads: each one is a hop to tokio's blocking pool and back.
                    let mut buf = vec![0u8; 1 << 20];
                    loop {
                        let n = f.read(&mut buf).await.map_err(|e| self.unreachable(e))?;
                        if n == 0 {
                            break;
                        }
                        tokio::time::timeout(TRANSFER_STALL, tx.data(&buf[..n]))
                            .await
                            .map_err(|_| stalled())?
                            .map_err(|e| self.unreachable(e))?;
                    }
                }
            }
            tx.eof().await.map_err(|e| self.unreachable(e))
        };
        // The channel is read without ever waiting on `progress`: a channel left unread
        // stalls the whole connection, and with it the calls of other tasks.
        let (ltx, mut lrx) = mpsc::unbounded_channel::<String>();
        let want_progress = progress.is_some();
        let read = async move {
            let (mut out, mut err) = (Vec::new(), String::new());
            let mut partial = crate::lines::LineBuf::default();
            let mut code = None;
            while let Some(msg) = rx.wait().await {
                match msg {
                    ChannelMsg::Data { data } => out.extend_from_slice(&data),
                    ChannelMsg::ExtendedData { data, .. } => {
                        for s in partial.push(&data) {
                            if want_progress {
                                let _ = ltx.send(s.clone());
                            }
                            err.push_str(&s);
                            err.push('\n');
                        }
                    }
                    ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
                    ChannelMsg::Close => break,
                    _ => {}
                }
            }
            drop(ltx);
            if let Some(rest) = partial.finish() {
                err.push_str(&rest);
            }
            (code, out, err)
        };
        let forward = async {
            while let Some(l) = lrx.recv().await {
                if let Some(p) = &progress {
                    let _ = p.send(l).await;
                }
            }
        };
        let answer = async {
            let ((code, out, err), ()) = tokio::join!(read, forward);
            match code {
                Some(c) => Ok((c, out, err)),
                None => Err(self.unreachable("connection lost before the node answered")),
            }
        };
        tokio::pin!(answer);
        // The answer may come before the upload is done (the node refused the request).
        let sent = tokio::select! {
            r = send => r,
            r = &mut answer => return r,
        };
        sent?;
        tokio::time::timeout(answer_within, answer)
            .await
            .unwrap_or_else(|_| Err(self.unreachable(format!("'{command}' timed out"))))
    }
}

/// Tarballs are the bulk of what goes to nodes: AES-GCM (AES-NI and carry-less multiply on
/// any x86-64 or ARMv8 server) costs both ends less CPU per byte than chacha20-poly1305,
/// russh's first choice. Both are AEADs; the agent accepts either.
/// See [`NodeClient::download`].
pub const DOWNLOAD_CHUNK: usize = 1 << 20;

fn node_ciphers() -> russh::Preferred {
    russh::Preferred {
        cipher: std::borrow::Cow::Borrowed(&[
            russh::cipher::AES_256_GCM,
            russh::cipher::CHACHA20_POLY1305,
        ]),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::proto::{ReceiveReq, StatusReq};

    #[test]
    fn errors_name_the_node_in_one_line() {
        let e = NodeError::KeyRefused { node: "n1".into() };
        assert_eq!(
            e.to_string(),
            "node n1: refused the controller's key (was the agent started with \
             --controller-key from 'ssh paas nodes:key'?)"
        );
        let e = NodeError::BadReply {
            node: "n1".into(),
            command: "status".into(),
            why: "EOF".into(),
        };
        assert_eq!(e.to_string(), "node n1: bad reply to 'status': EOF");
    }

    #[test]
    fn exec_lines() {
        assert_eq!(NodeClient::exec_line(&StatusReq), "status");
        let r = ReceiveReq {
            app: "shop".into(),
            release: "v3-0123456789ab".into(),
            sha256: "0123456789ab".into(),
        };
        assert_eq!(
            NodeClient::exec_line(&r),
            "receive shop v3-0123456789ab 0123456789ab"
        );
    }
}
