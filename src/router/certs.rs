//! Certificate bundles: a PEM chain (leaf first) and its private key, read, checked and
//! turned into what rustls serves. Every refusal is one line a user can act on.

use std::sync::Arc;

use rustls::pki_types::pem::SectionKind;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CertError {
    #[error("the bundle is not PEM: {0}")]
    Pem(String),
    #[error("the bundle holds no certificate (expected -----BEGIN CERTIFICATE-----, leaf first, then its chain)")]
    NoCertificate,
    #[error(
        "the bundle holds no private key (expected -----BEGIN PRIVATE KEY----- after the chain)"
    )]
    NoKey,
    #[error("the bundle holds more than one private key; give only the certificate's own")]
    TwoKeys,
    #[error("certificate {0} cannot be read: {1}")]
    BadCertificate(usize, String),
    #[error("the private key cannot be used: {0}")]
    BadKey(String),
    #[error("the private key does not belong to the certificate (its public key differs)")]
    KeyMismatch,
    #[error("the chain is out of order: certificate {0} was not issued by certificate {1} (leaf first, then each issuer)")]
    ChainOrder(usize, usize),
    #[error("the certificate names no DNS host (no subjectAltName DNS entries)")]
    NoNames,
    #[error("the certificate expired on {0}")]
    Expired(String),
    #[error("the certificate is not valid before {0}")]
    NotYetValid(String),
}

/// A checked bundle.
#[derive(Clone)]
pub struct Bundle {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Arc<CertifiedKey>,
    /// The leaf's DNS names, lowercase (`*.example.com` for a wildcard).
    pub names: Vec<String>,
    pub not_before: i64,
    pub not_after: i64,
    /// sha256 of the leaf (DER), hex.
    pub fingerprint: String,
    /// The chain, re-encoded as PEM (what is stored).
    pub chain_pem: String,
    /// The private key, re-encoded as PEM (what is sealed).
    pub key_pem: String,
}

/// Reads a bundle (certificates and one private key, in any order, other sections
/// ignored), checks the key belongs to the leaf, the chain's order and that the leaf names
/// at least one host. Validity dates are read, not judged: see [`check_dates`].
pub fn parse_bundle(pem: &[u8]) -> Result<Bundle, CertError> {
    let mut rd = pem;
    let mut chain: Vec<CertificateDer<'static>> = vec![];
    let mut key: Option<PrivateKeyDer<'static>> = None;
    loop {
        match rustls::pki_types::pem::from_buf(&mut rd) {
            Ok(Some((kind, der))) => match kind {
                SectionKind::Certificate => chain.push(CertificateDer::from(der)),
                SectionKind::PrivateKey
                | SectionKind::RsaPrivateKey
                | SectionKind::EcPrivateKey => {
                    if key.is_some() {
                        return Err(CertError::TwoKeys);
                    }
                    key = private_key_der(kind, der);
                }
                _ => {}
            },
            Ok(None) => break,
            Err(e) => return Err(CertError::Pem(e.to_string())),
        }
    }
    if chain.is_empty() {
        return Err(CertError::NoCertificate);
    }
    let key = key.ok_or(CertError::NoKey)?;
    let key_pem = pem_section(section_of(&key), key.secret_der());
    let mut parsed = Vec::with_capacity(chain.len());
    for (i, c) in chain.iter().enumerate() {
        let (_, x) = x509_parser::parse_x509_certificate(c.as_ref())
            .map_err(|e| CertError::BadCertificate(i + 1, e.to_string()))?;
        parsed.push(x);
    }
    for i in 1..parsed.len() {
        if parsed[i - 1].issuer() != parsed[i].subject() {
            return Err(CertError::ChainOrder(i, i + 1));
        }
    }
    let leaf = &parsed[0];
    let names = dns_names(leaf);
    if names.is_empty() {
        return Err(CertError::NoNames);
    }
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain.clone(), key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => CertError::KeyMismatch,
        other => CertError::BadKey(other.to_string()),
    })?;
    use sha2::Digest;
    let chain_pem = chain
        .iter()
        .map(|c| pem_section(SectionKind::Certificate, c.as_ref()))
        .collect();
    Ok(Bundle {
        names,
        not_before: leaf.validity().not_before.timestamp(),
        not_after: leaf.validity().not_after.timestamp(),
        fingerprint: hex::encode(sha2::Sha256::digest(chain[0].as_ref())),
        key: Arc::new(certified),
        chain,
        chain_pem,
        key_pem,
    })
}

/// Refuses a certificate that is not valid at `now` (unix seconds).
pub fn check_dates(b: &Bundle, now: i64) -> Result<(), CertError> {
    if b.not_after <= now {
        return Err(CertError::Expired(crate::timefmt::utc(b.not_after)));
    }
    if b.not_before > now {
        return Err(CertError::NotYetValid(crate::timefmt::utc(b.not_before)));
    }
    Ok(())
}

/// Whether a certificate naming `names` is good for `host` (a host name or a one-level
/// wildcard, as `domains:add` takes them): an exact name, or for a plain host a wildcard
/// name covering its first label (RFC 6125: `*.example.com` covers `a.example.com`, not
/// `example.com` nor `a.b.example.com`).
pub fn covers(names: &[String], host: &str) -> bool {
    names.iter().any(|n| {
        n.eq_ignore_ascii_case(host)
            || (!host.starts_with("*.")
                && n.strip_prefix("*.").is_some_and(|rest| {
                    host.split_once('.')
                        .is_some_and(|(_, h)| h.eq_ignore_ascii_case(rest))
                }))
    })
}

fn dns_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let mut out: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|g| match g {
                GeneralName::DNSName(n) => Some(n.trim_end_matches('.').to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => vec![],
    };
    out.sort();
    out.dedup();
    out
}

fn section_of(key: &PrivateKeyDer<'_>) -> SectionKind {
    match key {
        PrivateKeyDer::Pkcs1(_) => SectionKind::RsaPrivateKey,
        PrivateKeyDer::Sec1(_) => SectionKind::EcPrivateKey,
        _ => SectionKind::PrivateKey,
    }
}

fn private_key_der(kind: SectionKind, der: Vec<u8>) -> Option<PrivateKeyDer<'static>> {
    match kind {
        SectionKind::PrivateKey => Some(PrivateKeyDer::Pkcs8(der.into())),
        SectionKind::RsaPrivateKey => Some(PrivateKeyDer::Pkcs1(der.into())),
        SectionKind::EcPrivateKey => Some(PrivateKeyDer::Sec1(der.into())),
        _ => None,
    }
}

fn pem_section(kind: SectionKind, der: &[u8]) -> String {
    let label = match kind {
        SectionKind::RsaPrivateKey => "RSA PRIVATE KEY",
        SectionKind::EcPrivateKey => "EC PRIVATE KEY",
        SectionKind::PrivateKey => "PRIVATE KEY",
        _ => "CERTIFICATE",
    };
    let b64 = base64_encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A CA and a leaf for `names` it signed (PEMs: leaf, CA, key); an expired one was
    /// valid through 2020 only.
    pub(crate) fn issue(names: &[&str], expired: bool) -> (String, String, String) {
        use rcgen::{date_time_ymd, BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "test ca");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        (p.not_before, p.not_after) = if expired {
            (date_time_ymd(2020, 1, 1), date_time_ymd(2020, 12, 31))
        } else {
            (date_time_ymd(2024, 1, 1), date_time_ymd(2200, 1, 1))
        };
        let leaf = p.signed_by(&key, &issuer).unwrap();
        (leaf.pem(), ca_cert.pem(), key.serialize_pem())
    }

    #[test]
    fn bundles_are_checked() {
        let now = crate::timefmt::now();
        let (leaf, ca, key) = issue(&["a.test", "*.b.test"], false);
        let b = parse_bundle(format!("{leaf}{ca}{key}").as_bytes()).unwrap();
        assert_eq!(b.names, ["*.b.test", "a.test"]);
        assert_eq!(b.chain.len(), 2);
        check_dates(&b, now).unwrap();
        // Key first is fine too; the re-encoded PEM parses back to the same bundle.
        let again = parse_bundle(format!("{key}{leaf}").as_bytes()).unwrap();
        assert_eq!(again.fingerprint, b.fingerprint);
        let round = parse_bundle(format!("{}{}", b.chain_pem, b.key_pem).as_bytes()).unwrap();
        assert_eq!(round.fingerprint, b.fingerprint);

        let (other_leaf, _, other_key) = issue(&["a.test"], false);
        assert_eq!(
            parse_bundle(format!("{leaf}{other_key}").as_bytes()).err(),
            Some(CertError::KeyMismatch)
        );
        assert_eq!(
            parse_bundle(format!("{leaf}{key}{other_key}").as_bytes()).err(),
            Some(CertError::TwoKeys)
        );
        assert_eq!(parse_bundle(leaf.as_bytes()).err(), Some(CertError::NoKey));
        assert_eq!(
            parse_bundle(key.as_bytes()).err(),
            Some(CertError::NoCertificate)
        );
        assert_eq!(parse_bundle(b"hello").err(), Some(CertError::NoCertificate));
        assert_eq!(
            parse_bundle(format!("{ca}{leaf}{key}").as_bytes()).err(),
            Some(CertError::ChainOrder(1, 2))
        );
        let _ = other_leaf;

        let (old, _, old_key) = issue(&["a.test"], true);
        let b = parse_bundle(format!("{old}{old_key}").as_bytes()).unwrap();
        let err = check_dates(&b, now).unwrap_err().to_string();
        assert!(err.starts_with("the certificate expired on "), "{err}");
        for e in [
            CertError::KeyMismatch.to_string(),
            err,
            CertError::NoKey.to_string(),
        ] {
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn wildcards_cover_one_label() {
        let names = vec!["*.example.com".to_string(), "example.org".to_string()];
        assert!(covers(&names, "a.example.com"));
        assert!(covers(&names, "*.example.com"));
        assert!(covers(&names, "EXAMPLE.org"));
        assert!(!covers(&names, "example.com"));
        assert!(!covers(&names, "a.b.example.com"));
        assert!(!covers(&names, "*.example.org"));
        assert!(!covers(&["a.example.com".to_string()], "*.example.com"));
    }

    #[test]
    fn base64_matches_the_standard() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
        ] {
            assert_eq!(base64_encode(i.as_bytes()), o);
        }
    }
}
