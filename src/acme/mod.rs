//! Automatic certificates: an ACME (RFC 8555) client for HTTP-01 or TLS-ALPN-01 (RFC 8737)
//! orders, on `instant-acme` (rustls with ring). It knows nothing of apps or the store: the
//! controller hands it the account's saved credentials, the domains to order and a
//! [`Responder`] that serves the challenges (the router: the token at
//! `/.well-known/acme-challenge/TOKEN` on its HTTP port, or the challenge certificate made
//! here to a handshake asking for `acme-tls/1` on its HTTPS port), and gets back the
//! certificate chain and its key. When to renew and how long to wait after a failure are
//! here too ([`renew_at`], [`retry_delay`]), as pure functions.

use std::path::PathBuf;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use thiserror::Error;

/// Where certificates come from (`serve --acme-*`).
#[derive(Clone, Debug)]
pub struct AcmeOptions {
    /// The directory URL (Let's Encrypt's by default).
    pub directory: String,
    /// Contact for the account (expiry notices from the CA), without `mailto:`.
    pub email: Option<String>,
    /// A PEM CA certificate to trust for the directory's HTTPS instead of the system's
    /// roots (a private or test CA).
    pub ca: Option<PathBuf>,
    /// Renew this long before expiry (at most a third of the certificate's lifetime).
    pub renew_before: Duration,
    /// How the CA checks that we answer for a domain.
    pub challenge: Challenge,
}

/// The challenge orders are validated with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Challenge {
    /// A token over plain HTTP on port 80 (the router's HTTP listener).
    #[default]
    #[value(name = "http-01")]
    Http01,
    /// A certificate made for the check, in a TLS handshake on port 443 (the router's
    /// HTTPS listener): for hosts whose port 80 is closed.
    #[value(name = "tls-alpn-01")]
    TlsAlpn01,
}

impl Challenge {
    fn kind(self) -> ChallengeType {
        match self {
            Challenge::Http01 => ChallengeType::Http01,
            Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Challenge::Http01 => "HTTP-01",
            Challenge::TlsAlpn01 => "TLS-ALPN-01",
        }
    }
}

pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

impl Default for AcmeOptions {
    fn default() -> Self {
        AcmeOptions {
            directory: LETS_ENCRYPT.into(),
            email: None,
            ca: None,
            renew_before: Duration::from_secs(30 * 86400),
            challenge: Challenge::default(),
        }
    }
}

#[derive(Debug, Error)]
pub enum AcmeError {
    #[error("ACME account at {0}: {1}")]
    Account(String, String),
    #[error("{0}")]
    Order(String),
    #[error("the ACME server sent a certificate that cannot be read: {0}")]
    Certificate(String),
    #[error("the ACME order did not finish within {0} s")]
    Timeout(u64),
}

/// Serves the challenges' answers while an order is being validated.
pub trait Responder: Send + Sync {
    /// From now on, `http://HOST/.well-known/acme-challenge/TOKEN` answers `key_auth`.
    fn publish(&self, host: &str, token: &str, key_auth: &str);
    fn withdraw(&self, token: &str);
    /// From now on, a TLS handshake for `host` that asks for ALPN `acme-tls/1` gets this
    /// certificate (its DER, and its key's PKCS#8 DER) and nothing else.
    fn publish_tls_alpn(&self, host: &str, cert_der: Vec<u8>, key_der: Vec<u8>);
    fn withdraw_tls_alpn(&self, host: &str);
}

/// The self-signed certificate a TLS-ALPN-01 check expects (RFC 8737 section 3): `host` as
/// its only name and the SHA-256 of the key authorization in the critical
/// `acmeIdentifier` extension. DER of the certificate and of its key (PKCS#8).
pub fn tls_alpn_certificate(host: &str, digest: &[u8]) -> Result<(Vec<u8>, Vec<u8>), AcmeError> {
    let bad = |e: rcgen::Error| AcmeError::Order(format!("the TLS-ALPN-01 certificate: {e}"));
    let key = rcgen::KeyPair::generate().map_err(bad)?;
    let mut params = rcgen::CertificateParams::new(vec![host.to_string()]).map_err(bad)?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let cert = params.self_signed(&key).map_err(bad)?;
    Ok((cert.der().to_vec(), key.serialize_der()))
}

/// A certificate just issued.
pub struct Issued {
    /// Leaf first, then the intermediates.
    pub chain_pem: String,
    pub key_pem: String,
    pub not_before: i64,
    pub not_after: i64,
}

/// An ACME account, ready for orders.
pub struct Client {
    account: Account,
    challenge: Challenge,
}

/// Longest one order may take, validation included.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);

impl Client {
    /// Opens the account whose `saved` credentials (JSON) the caller kept, or registers a
    /// new one; then the second value holds the credentials to keep (sealed: they hold the
    /// account's private key).
    pub async fn open(
        o: &AcmeOptions,
        saved: Option<&[u8]>,
    ) -> Result<(Client, Option<Vec<u8>>), AcmeError> {
        let fail =
            |e: &dyn std::fmt::Display| AcmeError::Account(o.directory.clone(), e.to_string());
        let failed = |e: instant_acme::Error| AcmeError::Account(o.directory.clone(), describe(&e));
        let builder = || match &o.ca {
            Some(ca) => Account::builder_with_root(ca),
            None => Account::builder(),
        };
        if let Some(saved) = saved {
            let creds: AccountCredentials = serde_json::from_slice(saved).map_err(|e| fail(&e))?;
            let account = builder()
                .map_err(failed)?
                .from_credentials(creds)
                .await
                .map_err(failed)?;
            let challenge = o.challenge;
            return Ok((Client { account, challenge }, None));
        }
        let contact = o.email.as_ref().map(|e| format!("mailto:{e}"));
        let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
        let (account, creds) = builder()
            .map_err(failed)?
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                o.directory.clone(),
                None,
            )
            .await
            .map_err(failed)?;
        let json = serde_json::to_vec(&creds).map_err(|e| fail(&e))?;
        let challenge = o.challenge;
        Ok((Client { account, challenge }, Some(json)))
    }

    /// Orders one certificate for `domains` with the account's kind of challenge, served by
    /// `responder`. The answers are withdrawn whatever happens.
    pub async fn issue(
        &self,
        domains: &[String],
        responder: &dyn Responder,
    ) -> Result<Issued, AcmeError> {
        let mut published = Published {
            responder,
            tokens: vec![],
            alpn_hosts: vec![],
        };
        let order = self.order(domains, &mut published);
        let (chain_pem, key_pem) = tokio::time::timeout(ORDER_TIMEOUT, order)
            .await
            .map_err(|_| AcmeError::Timeout(ORDER_TIMEOUT.as_secs()))??;
        let (not_before, not_after) = validity(&chain_pem)?;
        Ok(Issued {
            chain_pem,
            key_pem,
            not_before,
            not_after,
        })
    }

    async fn order(
        &self,
        domains: &[String],
        published: &mut Published<'_>,
    ) -> Result<(String, String), AcmeError> {
        let fail = |e: instant_acme::Error| AcmeError::Order(describe(&e));
        let ids: Vec<Identifier> = domains.iter().cloned().map(Identifier::Dns).collect();
        let mut order = self
            .account
            .new_order(&NewOrder::new(&ids))
            .await
            .map_err(fail)?;
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(fail)?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(AcmeError::Order(format!(
                        "the authorization of {} is {other:?}",
                        authz.identifier()
                    )))
                }
            }
            let host = authz.identifier().to_string();
            let mut challenge = authz.challenge(self.challenge.kind()).ok_or_else(|| {
                AcmeError::Order(format!(
                    "the ACME server offers no {} check for {host}",
                    self.challenge.name()
                ))
            })?;
            let key_auth = challenge.key_authorization();
            match self.challenge {
                Challenge::Http01 => published.add(&host, &challenge.token, key_auth.as_str()),
                Challenge::TlsAlpn01 => {
                    let (cert, key) = tls_alpn_certificate(&host, key_auth.digest().as_ref())?;
                    published.add_tls_alpn(&host, cert, key);
                }
            }
            challenge.set_ready().await.map_err(fail)?;
        }
        let polling = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .timeout(ORDER_TIMEOUT);
        let status = order.poll_ready(&polling).await.map_err(fail)?;
        if status != OrderStatus::Ready {
            return Err(AcmeError::Order(order_failure(&mut order).await));
        }
        let key_pem = order.finalize().await.map_err(fail)?;
        let chain_pem = order.poll_certificate(&polling).await.map_err(fail)?;
        Ok((chain_pem, key_pem))
    }
}

/// Why an order went invalid, from its authorizations' failed challenges (the CA's own
/// words, e.g. the address it could not reach).
async fn order_failure(order: &mut instant_acme::Order) -> String {
    let mut why = vec![];
    let mut authorizations = order.authorizations();
    while let Some(Ok(authz)) = authorizations.next().await {
        for c in &authz.challenges {
            if let Some(e) = &c.error {
                why.push(format!("{}: {}", authz.identifier(), problem_text(e)));
            }
        }
    }
    if why.is_empty() {
        "the ACME server refused the order (it went invalid)".into()
    } else {
        format!("validation failed: {}", why.join("; "))
    }
}

fn problem_text(p: &instant_acme::Problem) -> String {
    let text = p
        .detail
        .clone()
        .or_else(|| p.r#type.clone())
        .unwrap_or_else(|| "no detail".into());
    one_line(&text)
}

/// An error with its causes (a refused connection says so, not just "client error").
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    one_line(&text)
}

/// Someone else's text on one line of printable characters, bounded.
fn one_line(s: &str) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    flat.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The answers one order published; withdrawn when it ends, whatever the outcome.
struct Published<'a> {
    responder: &'a dyn Responder,
    tokens: Vec<String>,
    alpn_hosts: Vec<String>,
}

impl Published<'_> {
    fn add(&mut self, host: &str, token: &str, key_auth: &str) {
        self.responder.publish(host, token, key_auth);
        self.tokens.push(token.to_owned());
    }

    fn add_tls_alpn(&mut self, host: &str, cert: Vec<u8>, key: Vec<u8>) {
        self.responder.publish_tls_alpn(host, cert, key);
        self.alpn_hosts.push(host.to_owned());
    }
}

impl Drop for Published<'_> {
    fn drop(&mut self) {
        for t in &self.tokens {
            self.responder.withdraw(t);
        }
        for h in &self.alpn_hosts {
            self.responder.withdraw_tls_alpn(h);
        }
    }
}

/// The leaf's validity (unix seconds) from a PEM chain.
pub fn validity(chain_pem: &str) -> Result<(i64, i64), AcmeError> {
    let bad = |e: &dyn std::fmt::Display| AcmeError::Certificate(e.to_string());
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes()).map_err(|e| bad(&e))?;
    let cert = pem.parse_x509().map_err(|e| bad(&e))?;
    let v = cert.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// When a certificate valid from `not_before` to `not_after` is due for renewal: `window`
/// before it expires, but never sooner than two thirds into its life (a CA that issues
/// short-lived certificates would otherwise have us renew for ever).
pub fn renew_at(not_before: i64, not_after: i64, window: Duration) -> i64 {
    let lifetime = (not_after - not_before).max(0);
    let window = (window.as_secs() as i64).min(lifetime / 3);
    not_after - window
}

/// Seconds to wait after the `failures`-th failure in a row: one minute, doubling, at most
/// six hours (Let's Encrypt's rate limits allow 5 failed validations an hour).
pub fn retry_delay(failures: u32) -> i64 {
    const FIRST: i64 = 60;
    const MOST: i64 = 6 * 3600;
    FIRST
        .saturating_mul(1i64 << failures.saturating_sub(1).min(20))
        .min(MOST)
}

/// Hosts an HTTP-01 or TLS-ALPN-01 order can cover: not wildcards (those need DNS-01), not
/// IP addresses.
pub fn orderable(host: &str) -> bool {
    !host.starts_with("*.") && host.contains('.') && host.parse::<std::net::IpAddr>().is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_thirty_days_before_expiry_or_a_third_of_a_short_life() {
        let day = 86400;
        let w = Duration::from_secs(30 * day as u64);
        // A 90-day certificate: 30 days before it expires.
        assert_eq!(renew_at(0, 90 * day, w), 60 * day);
        // A 6-day one: two days before.
        assert_eq!(renew_at(0, 6 * day, w), 4 * day);
        // A 45-second test certificate: after 30 s.
        assert_eq!(renew_at(1000, 1045, w), 1030);
        // Nonsense validity does not renew before it starts.
        assert_eq!(renew_at(1000, 900, w), 900);
    }

    #[test]
    fn retries_back_off_exponentially_and_are_capped() {
        let seq: Vec<i64> = (1..=6).map(retry_delay).collect();
        assert_eq!(seq, [60, 120, 240, 480, 960, 1920]);
        assert_eq!(retry_delay(0), 60);
        assert_eq!(retry_delay(30), 6 * 3600);
        assert_eq!(retry_delay(u32::MAX), 6 * 3600);
    }

    #[test]
    fn only_plain_host_names_are_ordered() {
        assert!(orderable("www.example.com"));
        assert!(!orderable("*.example.com"));
        assert!(!orderable("localhost"));
        assert!(!orderable("127.0.0.1"));
    }

    #[test]
    fn the_tls_alpn_certificate_names_the_host_and_carries_the_digest() {
        let digest = [7u8; 32];
        let (der, key) = tls_alpn_certificate("a.example.com", &digest).unwrap();
        assert!(!key.is_empty());
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("the acmeIdentifier extension");
        assert!(ext.critical);
        // An OCTET STRING of the 32 bytes.
        assert_eq!(ext.value[..2], [0x04, 32]);
        assert_eq!(ext.value[2..], digest);
        let names = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(names.value.general_names.len(), 1);
        assert_eq!(
            format!("{}", names.value.general_names[0]),
            "DNSName(a.example.com)"
        );
    }

    #[test]
    fn validity_comes_from_the_leaf() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.example.com".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2030, 1, 1);
        params.not_after = rcgen::date_time_ymd(2030, 4, 1);
        let pem = params.self_signed(&key).unwrap().pem();
        let (nb, na) = validity(&format!("{pem}{pem}")).unwrap();
        assert_eq!(nb, 1_893_456_000);
        assert_eq!(na - nb, 90 * 86400);
        assert!(validity("not a certificate").is_err());
    }
}
