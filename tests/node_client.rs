//! `NodeClient` reuses one SSH connection for all the calls of a client and its clones,
//! reconnects when it broke, and lets it go with the last clone. An in-process agent sits
//! behind a TCP relay that counts connections and can cut them (a node restart, as the
//! client sees it).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use magrathea::node::client::{NodeClient, NodeError};
use magrathea::node::proto::StatusReq;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

#[derive(Default)]
struct Relay {
    accepted: AtomicUsize,
    open: AtomicUsize,
    conns: Mutex<Vec<JoinHandle<()>>>,
}

impl Relay {
    /// Cut every relayed connection, both ends.
    fn cut(&self) {
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}

struct Open(Arc<Relay>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn relay(to: String) -> (String, Arc<Relay>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let r = Arc::new(Relay::default());
    let r2 = r.clone();
    tokio::spawn(async move {
        while let Ok((mut a, _)) = l.accept().await {
            r2.accepted.fetch_add(1, Ordering::SeqCst);
            r2.open.fetch_add(1, Ordering::SeqCst);
            let guard = Open(r2.clone());
            let to = to.clone();
            let h = tokio::spawn(async move {
                let _guard = guard;
                if let Ok(mut b) = TcpStream::connect(&to).await {
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                }
            });
            r2.conns.lock().unwrap().push(h);
        }
    });
    (addr, r)
}

/// Polls `f` (a minute at most: a bound on a hang).
async fn wait_until(what: &str, f: impl Fn() -> bool) {
    for _ in 0..1200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn calls_share_one_connection_and_reconnect_after_it_broke() {
    let dir = tempfile::tempdir().unwrap();
    let (ckey, _) = magrathea::keys::load_or_create(&dir.path().join("ctl"), "ctl").unwrap();
    let (hkey, _) = magrathea::keys::load_or_create(&dir.path().join("host"), "host").unwrap();
    let host_fp = magrathea::keys::fingerprint(hkey.public_key());
    let root = dir.path().join("node");
    std::fs::create_dir_all(root.join("apps")).unwrap();
    let ctx = Arc::new(magrathea::agent::AgentCtx::new(
        root,
        magrathea::keys::fingerprint(ckey.public_key()),
    ));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent_addr = l.local_addr().unwrap().to_string();
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(magrathea::agent::serve_on(
        ctx,
        l,
        hkey,
        shutdown.clone(),
        Default::default(),
    ));
    let (addr, relay) = relay(agent_addr).await;
    let ckey = Arc::new(ckey);
    let client = NodeClient::new("n1", &addr, ckey.clone(), Some(host_fp.clone()));
    let status = |c: NodeClient| async move { c.send(&StatusReq).await };

    // Parallel calls from clones: one handshake, one channel each.
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..12 {
        set.spawn(status(client.clone()));
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    for _ in 0..3 {
        status(client.clone()).await.unwrap();
    }
    assert_eq!(relay.accepted.load(Ordering::SeqCst), 1);

    // The connection breaks (the node restarted): the next call reconnects on its own.
    relay.cut();
    status(client.clone()).await.unwrap();
    status(client.clone()).await.unwrap();
    assert_eq!(relay.accepted.load(Ordering::SeqCst), 2);

    // Another client has a connection of its own; the pinned key is still checked.
    let wrong = NodeClient::new("n1", &addr, ckey.clone(), Some("SHA256:nope".into()));
    match status(wrong).await {
        Err(NodeError::HostKey { got, .. }) => assert_eq!(got, host_fp),
        other => panic!("expected a host key error, got {:?}", other.err()),
    }
    wait_until("the refused connection is gone", || {
        relay.open.load(Ordering::SeqCst) == 1
    })
    .await;

    // The last clone gone, so is the connection.
    drop(client);
    wait_until("the shared connection is closed", || {
        relay.open.load(Ordering::SeqCst) == 0
    })
    .await;
    shutdown.cancel();
}
