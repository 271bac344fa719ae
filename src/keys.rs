//! SSH keys: parsing users' public keys, fingerprints, and the host/client key pairs the
//! binary generates for itself.

use std::io::Read;
use std::path::Path;

use anyhow::Context;
use russh::keys::ssh_key::{private::Ed25519Keypair, LineEnding};
use russh::keys::{HashAlg, PrivateKey, PublicKey};

use crate::fsutil;

/// A parsed public key: canonical text (no comment) and its SHA-256 fingerprint, which is the
/// identity. Comments never take part in a comparison.
#[derive(Debug, Clone)]
pub struct ParsedKey {
    pub openssh: String,
    pub fingerprint: String,
    pub comment: String,
}

pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

pub fn parse_public(text: &str) -> anyhow::Result<ParsedKey> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .context("no public key given (expected one line like 'ssh-ed25519 AAAA... comment')")?;
    let mut key = PublicKey::from_openssh(line)
        .map_err(|e| anyhow::anyhow!("not an OpenSSH public key ({e})"))?;
    let comment = key.comment().to_string();
    key.set_comment("");
    Ok(ParsedKey {
        fingerprint: fingerprint(&key),
        openssh: key.to_openssh()?.trim().to_string(),
        comment,
    })
}

fn random_seed() -> anyhow::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
    Ok(seed)
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("/dev/urandom must be readable");
    buf
}

/// Random bytes as hex (tokens); /dev/urandom is all we need on Linux.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("/dev/urandom must be readable");
    hex::encode(buf)
}

/// An Ed25519 key pair derived from `secret` (an Ed25519 key) and `context`: the same
/// inputs give the same pair, so a key handed out again is the one already in place. The
/// private key and the public key line, both OpenSSH text.
pub fn derived(secret: &PrivateKey, context: &str) -> anyhow::Result<(String, String)> {
    use sha2::Digest;
    let base = secret
        .key_data()
        .ed25519()
        .context("deriving a key needs an Ed25519 key")?;
    let mut h = sha2::Sha256::new();
    h.update(b"magrathea derived key\0");
    h.update(base.private.to_bytes());
    h.update(context.as_bytes());
    let mut key = PrivateKey::from(Ed25519Keypair::from_seed(&h.finalize().into()));
    key.set_comment(context);
    let private = key.to_openssh(LineEnding::LF)?.to_string();
    Ok((private, key.public_key().to_openssh()?))
}

/// Load the Ed25519 key at `path`, creating it (0600, atomically) if absent.
/// Returns the key and whether it was created.
pub fn load_or_create(path: &Path, comment: &str) -> anyhow::Result<(PrivateKey, bool)> {
    if path.exists() {
        let k = russh::keys::load_secret_key(path, None)
            .with_context(|| format!("cannot read key {}", path.display()))?;
        return Ok((k, false));
    }
    let mut key = PrivateKey::from(Ed25519Keypair::from_seed(&random_seed()?));
    key.set_comment(comment);
    let text = key.to_openssh(LineEnding::LF)?;
    fsutil::write_atomic(path, text.as_bytes(), 0o600)?;
    let mut public = key.public_key().clone();
    public.set_comment(comment);
    fsutil::write_atomic(
        &path.with_extension("pub"),
        format!("{}\n", public.to_openssh()?).as_bytes(),
        0o644,
    )?;
    Ok((key, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k2_other() -> PrivateKey {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(&dir.path().join("other"), "o").unwrap().0
    }

    #[test]
    fn comments_do_not_change_identity() {
        let dir = tempfile::tempdir().unwrap();
        let (k, created) = load_or_create(&dir.path().join("k"), "x").unwrap();
        assert!(created);
        let (k2, created) = load_or_create(&dir.path().join("k"), "x").unwrap();
        assert!(!created);
        assert_eq!(fingerprint(k.public_key()), fingerprint(k2.public_key()));
        let line = k.public_key().to_openssh().unwrap();
        let (a, pa) = derived(&k, "svc@n2").unwrap();
        assert_eq!((a.clone(), pa.clone()), derived(&k, "svc@n2").unwrap());
        assert_ne!(pa, derived(&k, "svc@n3").unwrap().1);
        assert_ne!(pa, derived(&k2_other(), "svc@n2").unwrap().1);
        let a = parse_public(&format!("{line} alice@laptop")).unwrap();
        let b = parse_public(&format!("\n# comment\n{line}\n")).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.openssh, b.openssh);
        assert!(parse_public("ssh-ed25519 notbase64").is_err());
        assert!(parse_public("").is_err());
    }
}
