//! Instance credentials at rest: XChaCha20-Poly1305 under a master key, with the instance id as
//! associated data, so a ciphertext copied onto another instance row does not decrypt. The key id
//! (a hash prefix of the key) is stored beside each ciphertext so a wrong or rotated-away key is
//! reported as such rather than as corruption.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use uuid::Uuid;

const AAD_PREFIX: &[u8] = b"quorum/instance-secret/v1/";
const NONCE_LEN: usize = 24;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("the master key must be 32 bytes, base64-encoded")]
    BadKey,
    #[error("the secret was sealed under another master key ({0})")]
    WrongKey(String),
    #[error("the secret does not decrypt for this instance (tampered or copied from another row)")]
    Undecryptable,
}

/// A sealed secret as stored: `nonce || ciphertext` and the id of the key that sealed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub bytes: Vec<u8>,
    pub key_id: String,
}

#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
    key_id: String,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBox")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl SecretBox {
    pub fn from_base64(encoded: &str) -> Result<Self, SecretError> {
        let bytes = STANDARD
            .decode(encoded.trim())
            .map_err(|_| SecretError::BadKey)?;
        Self::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SecretError> {
        let key: [u8; 32] = bytes.try_into().map_err(|_| SecretError::BadKey)?;
        let key_id = hex::encode(&Sha256::digest(key)[..6]);
        Ok(Self {
            cipher: XChaCha20Poly1305::new(&Key::from(key)),
            key_id,
        })
    }

    /// A fresh random key, base64-encoded.
    pub fn generate_key() -> String {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        STANDARD.encode(key)
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    fn aad(instance: Uuid) -> Vec<u8> {
        [AAD_PREFIX, instance.as_bytes()].concat()
    }

    pub fn seal(&self, instance: Uuid, secret: &SecretString) -> Sealed {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = Self::aad(instance);
        let payload = Payload {
            msg: secret.expose_secret().as_bytes(),
            aad: &aad,
        };
        #[expect(
            clippy::expect_used,
            reason = "encryption with a valid key and nonce cannot fail"
        )]
        let ct = self
            .cipher
            .encrypt(&XNonce::from(nonce), payload)
            .expect("encrypt");
        Sealed {
            bytes: [nonce.as_slice(), &ct].concat(),
            key_id: self.key_id.clone(),
        }
    }

    pub fn open(&self, instance: Uuid, sealed: &Sealed) -> Result<SecretString, SecretError> {
        if sealed.key_id != self.key_id {
            return Err(SecretError::WrongKey(sealed.key_id.clone()));
        }
        if sealed.bytes.len() < NONCE_LEN + 16 {
            return Err(SecretError::Undecryptable);
        }
        let (nonce, ct) = sealed.bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SecretError::Undecryptable)?;
        let aad = Self::aad(instance);
        let plain = self
            .cipher
            .decrypt(&XNonce::from(nonce), Payload { msg: ct, aad: &aad })
            .map_err(|_| SecretError::Undecryptable)?;
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| SecretError::Undecryptable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_bind_to_the_instance() {
        let b = SecretBox::from_base64(&SecretBox::generate_key()).expect("key");
        let (a, other) = (Uuid::new_v4(), Uuid::new_v4());
        let sealed = b.seal(a, &SecretString::from("hunter2-canary"));
        assert!(!sealed.bytes.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            b.open(a, &sealed).expect("open").expose_secret(),
            "hunter2-canary"
        );
        assert_eq!(
            b.open(other, &sealed).expect_err("moved"),
            SecretError::Undecryptable
        );
        let mut flipped = sealed.clone();
        flipped.bytes[30] ^= 1;
        assert_eq!(
            b.open(a, &flipped).expect_err("tampered"),
            SecretError::Undecryptable
        );
        let other_key = SecretBox::from_base64(&SecretBox::generate_key()).expect("key");
        assert!(matches!(
            other_key.open(a, &sealed),
            Err(SecretError::WrongKey(_))
        ));
        assert_ne!(
            b.seal(a, &SecretString::from("x")).bytes,
            b.seal(a, &SecretString::from("x")).bytes
        );
    }

    #[test]
    fn bad_keys_are_refused() {
        assert_eq!(
            SecretBox::from_base64("not base64!").expect_err("bad"),
            SecretError::BadKey
        );
        assert_eq!(
            SecretBox::from_base64(&STANDARD.encode([0u8; 16])).expect_err("short"),
            SecretError::BadKey
        );
    }
}
