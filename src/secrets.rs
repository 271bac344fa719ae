//! Config values at rest: XChaCha20-Poly1305 with a 32-byte key kept in the data dir (0600).
//! Each value gets a fresh random nonce; the blob is `nonce || ciphertext+tag`.

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SecretError {
    #[error("config key {0}: {1}")]
    Key(String, String),
    #[error("a stored config value cannot be decrypted (wrong or replaced config.key?)")]
    Decrypt,
}

pub struct Sealer {
    cipher: XChaCha20Poly1305,
    /// The key of sealed streams (service backups), derived from the same file so that one
    /// key is all an operator keeps, but never used as is for both.
    stream: crate::sealstream::StreamKey,
}

impl Sealer {
    pub fn load_or_create(path: &Path) -> Result<Sealer, SecretError> {
        let shown = path.display().to_string();
        let key = match std::fs::read(path) {
            Ok(k) if k.len() == 32 => k,
            Ok(_) => return Err(SecretError::Key(shown, "must be exactly 32 bytes".into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let k = crate::keys::random_bytes(32);
                crate::fsutil::write_atomic(path, &k, 0o600)
                    .map_err(|e| SecretError::Key(shown.clone(), e.to_string()))?;
                k
            }
            Err(e) => return Err(SecretError::Key(shown, e.to_string())),
        };
        let cipher = XChaCha20Poly1305::new_from_slice(&key)
            .map_err(|e| SecretError::Key(shown, e.to_string()))?;
        Ok(Sealer {
            cipher,
            stream: stream_key(&key),
        })
    }

    /// The key for `sealstream` (backups): another key than config values', from the same
    /// file.
    pub fn stream_key(&self) -> &crate::sealstream::StreamKey {
        &self.stream
    }

    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let nonce = crate::keys::random_bytes(24);
        let mut out = nonce.clone();
        let ct = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plaintext)
            .expect("XChaCha20-Poly1305 encryption does not fail for in-memory buffers");
        out.extend_from_slice(&ct);
        out
    }

    pub fn open(&self, blob: &[u8]) -> Result<Vec<u8>, SecretError> {
        if blob.len() < 24 + 16 {
            return Err(SecretError::Decrypt);
        }
        let (nonce, ct) = blob.split_at(24);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), ct)
            .map_err(|_| SecretError::Decrypt)
    }
}

/// SHA-256 over a label and the key: the key is uniformly random, so this is a sound KDF for
/// one derived key (HKDF would add nothing here).
fn stream_key(key: &[u8]) -> crate::sealstream::StreamKey {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"magrathea sealstream v1\0");
    h.update(key);
    crate::sealstream::StreamKey(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let d = tempfile::tempdir().unwrap();
        let s = Sealer::load_or_create(&d.path().join("k")).unwrap();
        let blob = s.seal(b"hunter2");
        assert!(!blob.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(s.open(&blob).unwrap(), b"hunter2");
        assert_ne!(s.seal(b"hunter2"), blob, "fresh nonce each time");
        let mut bad = blob.clone();
        bad[30] ^= 1;
        assert!(s.open(&bad).is_err());
        let again = Sealer::load_or_create(&d.path().join("k")).unwrap();
        assert_eq!(again.open(&blob).unwrap(), b"hunter2");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(d.path().join("k"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
}
