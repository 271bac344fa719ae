//! HTTP-01 answers: while an ACME order is being validated, the router answers
//! `GET http://HOST/.well-known/acme-challenge/TOKEN` itself, for the host the token was
//! published for, before any app (or redirect) sees the request.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

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
