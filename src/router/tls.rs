//! The certificates the HTTPS listener serves, chosen by SNI. The controller computes which
//! certificate answers for which host (from the store: custom domains, given and ACME
//! certificates) and hands the whole table over with [`CertStore::replace`]; a handshake
//! reads it without blocking on anything else. A host with no certificate gets no
//! handshake (rustls aborts it), never another host's certificate. A handshake asking for
//! ALPN `acme-tls/1` (a CA's TLS-ALPN-01 check) gets the challenge certificate published for
//! its host and nothing else; the connection is closed after it (`listen.rs`).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

/// Host (lowercase; `*.example.com` for a wildcard) -> the certificate that answers for it.
pub type CertTable = HashMap<String, Arc<CertifiedKey>>;

/// The ALPN protocol of a TLS-ALPN-01 check (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

#[derive(Default, Debug)]
pub struct CertStore {
    table: RwLock<Arc<CertTable>>,
    /// Host -> the TLS-ALPN-01 challenge certificate published for it (during an order).
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl CertStore {
    /// Swaps the whole table in one step: a handshake sees the old one or the new one.
    pub fn replace(&self, table: CertTable) {
        *self.table.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(table);
    }

    /// The certificate for an SNI name: the exact host, else the wildcard one level up.
    pub fn get(&self, sni: &str) -> Option<Arc<CertifiedKey>> {
        let table = Arc::clone(&self.table.read().unwrap_or_else(PoisonError::into_inner));
        let sni = sni.trim_end_matches('.').to_ascii_lowercase();
        if let Some(c) = table.get(&sni) {
            return Some(Arc::clone(c));
        }
        let (_, parent) = sni.split_once('.')?;
        table.get(&format!("*.{parent}")).cloned()
    }

    /// From now on, an `acme-tls/1` handshake for `host` gets `key`.
    pub fn publish_challenge(&self, host: &str, key: Arc<CertifiedKey>) {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let mut map = self
            .challenges
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        map.insert(host, key);
    }

    pub fn withdraw_challenge(&self, host: &str) {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let mut map = self
            .challenges
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        map.remove(&host);
    }

    fn challenge(&self, sni: &str) -> Option<Arc<CertifiedKey>> {
        let sni = sni.trim_end_matches('.').to_ascii_lowercase();
        let map = self
            .challenges
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(&sni).cloned()
    }

    /// The hosts with a certificate, sorted.
    pub fn hosts(&self) -> Vec<String> {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        let mut hosts: Vec<String> = table.keys().cloned().collect();
        hosts.sort();
        hosts
    }
}

#[derive(Debug)]
struct Resolver(Arc<CertStore>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name()?;
        // A check offers `acme-tls/1` alone (RFC 8737 section 3); a browser never does.
        let mut alpn = hello.alpn().into_iter().flatten();
        if alpn.next() == Some(ACME_TLS_ALPN) && alpn.next().is_none() {
            return self.0.challenge(sni);
        }
        self.0.get(sni)
    }
}

/// rustls with ring, its safe defaults (TLS 1.2 and 1.3, no legacy suites), certificates
/// from `store`, and ALPN offering HTTP/2 first (and `acme-tls/1`, which only a CA's check
/// asks for).
pub fn server_config(store: Arc<CertStore>) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver(store)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_then_one_level_wildcard() {
        let (leaf, _, key) = super::super::certs::tests::issue(&["a.test"], false);
        let b = super::super::certs::parse_bundle(format!("{leaf}{key}").as_bytes()).unwrap();
        let store = CertStore::default();
        store.replace(HashMap::from([
            ("a.test".to_string(), Arc::clone(&b.key)),
            ("*.w.test".to_string(), Arc::clone(&b.key)),
        ]));
        assert!(store.get("A.TEST.").is_some());
        assert!(store.get("x.w.test").is_some());
        assert!(store.get("w.test").is_none());
        assert!(store.get("y.x.w.test").is_none());
        assert!(store.get("b.test").is_none());
        assert_eq!(store.hosts(), ["*.w.test", "a.test"]);
    }
}
