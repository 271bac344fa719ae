//! ACME answers. HTTP-01: while an order is being validated, the router answers
//! `GET http://HOST/.well-known/acme-challenge/TOKEN` itself, for the host the token was
//! published for, before any app (or redirect) sees the request. TLS-ALPN-01: the challenge
//! certificate goes to the certificate store, which gives it to `acme-tls/1` handshakes
//! for its host (`tls.rs`).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use rustls::sign::CertifiedKey;

use super::proxy::ProxyBody;
use super::Router;

const PREFIX: &str = "/.well-known/acme-challenge/";

/// token -> (host, key authorization)
#[derive(Default)]
pub(super) struct Challenges(RwLock<HashMap<String, (String, String)>>);

impl Challenges {
    /// The answer to a request for `path` on `host`, if it is a published challenge.
    pub(super) fn answer(&self, host: &str, path: &str) -> Option<Response<ProxyBody>> {
        let token = path.strip_prefix(PREFIX)?;
        let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let (for_host, key_auth) = map.get(token)?;
        if !for_host.eq_ignore_ascii_case(host.trim_end_matches('.')) {
            return None;
        }
        // Exactly the key authorization: no trailing newline.
        let mut resp = Response::new(
            Full::new(Bytes::from(key_auth.clone()))
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *resp.status_mut() = StatusCode::OK;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        Some(resp)
    }
}

impl crate::acme::Responder for Router {
    fn publish(&self, host: &str, token: &str, key_auth: &str) {
        self.challenges
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token.into(), (host.to_ascii_lowercase(), key_auth.into()));
    }

    fn withdraw(&self, token: &str) {
        self.challenges
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(token);
    }

    fn publish_tls_alpn(&self, host: &str, cert_der: Vec<u8>, key_der: Vec<u8>) {
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key_der.into());
        match rustls::crypto::ring::sign::any_supported_type(&key) {
            Ok(signer) => {
                let cert = rustls::pki_types::CertificateDer::from(cert_der);
                let certified = CertifiedKey::new(vec![cert], signer);
                self.certs().publish_challenge(host, Arc::new(certified));
            }
            // rcgen made the key for ring: this would be a bug, and the check then fails.
            Err(e) => tracing::warn!(host, error = %e, "TLS-ALPN-01 key not usable"),
        }
    }

    fn withdraw_tls_alpn(&self, host: &str) {
        self.certs().withdraw_challenge(host);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acme::Responder;

    #[test]
    fn a_published_token_answers_for_its_host_only_until_withdrawn() {
        let r = Router::new("example.test".into(), Default::default());
        assert!(r
            .challenges
            .answer("a.example.com", "/.well-known/acme-challenge/t1")
            .is_none());
        r.publish("A.example.com", "t1", "t1.thumb");
        let resp = r
            .challenges
            .answer("a.example.com.", "/.well-known/acme-challenge/t1")
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(r
            .challenges
            .answer("b.example.com", "/.well-known/acme-challenge/t1")
            .is_none());
        assert!(r
            .challenges
            .answer("a.example.com", "/.well-known/acme-challenge/t2")
            .is_none());
        assert!(r.challenges.answer("a.example.com", "/t1").is_none());
        r.withdraw("t1");
        assert!(r
            .challenges
            .answer("a.example.com", "/.well-known/acme-challenge/t1")
            .is_none());
    }
}
