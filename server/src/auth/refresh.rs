//! Refresh tokens: opaque random strings; only their SHA-256 is stored.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Recognisable prefix so leaked tokens can be found by secret scanners and log checks.
pub const PREFIX: &str = "qrt_";
pub const COOKIE_NAME: &str = "quorum_refresh";
pub const COOKIE_PATH: &str = "/api/v1/auth";

pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether a presented value could be one of ours (cheap filter before a store lookup).
pub fn well_formed(token: &str) -> bool {
    token.len() == PREFIX.len() + 43
        && token.starts_with(PREFIX)
        && token[PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_well_formed() {
        let a = generate();
        assert!(well_formed(&a), "{a}");
        assert_ne!(a, generate());
        assert_eq!(hash(&a).len(), 64);
        assert!(!well_formed("qrt_short"));
        assert!(!well_formed(&format!("xyz_{}", &a[4..])));
    }
}
