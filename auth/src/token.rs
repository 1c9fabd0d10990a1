//! API keys as strings, and what is kept of them.
//!
//! A key reads `atoll_<id>_<secret>`: the id (16 hex digits) finds the
//! record without trying every hash, the secret (256 random bits, hex) is
//! the part that proves. Kept: a SHA-256 of the secret (a fast hash is
//! right for 256 random bits; a slow one would only cost every request)
//! and, for the Postgres door's SCRAM-SHA-256, a verifier of the whole key
//! in PostgreSQL's own format.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::KeyRecord;

/// A key just made: its record, and the key itself, shown this once.
#[derive(Debug, Clone)]
pub struct Created {
    pub record: KeyRecord,
    pub key: String,
}

const PREFIX: &str = "atoll_";
const SCRAM_ITERATIONS: u32 = 4096;

/// A fresh id, and a key holding it.
pub(crate) fn generate() -> (String, String) {
    let mut bytes = [0u8; 40];
    rand::rng().fill_bytes(&mut bytes);
    let id = hex(&bytes[..8]);
    let secret = hex(&bytes[8..]);
    let key = format!("{PREFIX}{id}_{secret}");
    (id, key)
}

/// The id and secret of a key, if it is shaped like one.
pub(crate) fn parse(key: &str) -> Option<(&str, &str)> {
    let (id, secret) = key.strip_prefix(PREFIX)?.split_once('_')?;
    (id.len() == 16 && !secret.is_empty()).then_some((id, secret))
}

/// What is kept to check a key's secret.
pub(crate) fn hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Equality in constant time (no early exit an attacker could time).
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Equality of two strings through their SHA-256 digests: constant time
/// whatever their lengths (slices of different lengths compare at once).
pub(crate) fn same_digest(a: &str, b: &str) -> bool {
    same(&Sha256::digest(a.as_bytes()), &Sha256::digest(b.as_bytes()))
}

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (RFC 5803,
/// as PostgreSQL stores passwords) for `key` used as a password.
pub(crate) fn scram_verifier(key: &str) -> String {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(key.as_bytes(), &salt, SCRAM_ITERATIONS, &mut salted);
    let client_key = hmac_sha256(&salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac_sha256(&salted, b"Server Key");
    format!(
        "SCRAM-SHA-256${SCRAM_ITERATIONS}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key),
        STANDARD.encode(server_key)
    )
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back_and_differ() {
        let (id, key) = generate();
        let (id2, key2) = generate();
        assert_ne!((&id, &key), (&id2, &key2));
        let (pid, secret) = parse(&key).unwrap();
        assert_eq!(pid, id);
        assert_eq!(secret.len(), 64);
        assert_eq!(parse("atoll_short_x"), None);
        assert_eq!(parse("Bearer something"), None);
        assert!(same(hash(secret).as_bytes(), hash(secret).as_bytes()));
        assert!(!same(b"a", b"ab"));
    }

    /// RFC 7677's test vector: user "user", password "pencil", salt
    /// W22ZaJ0SNY7soEsUEjb6gQ== and 4096 iterations give this ServerKey
    /// and StoredKey.
    #[test]
    fn the_scram_verifier_follows_rfc_7677() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(b"pencil", &salt, 4096, &mut salted);
        let client_key = hmac_sha256(&salted, b"Client Key");
        let server_key = hmac_sha256(&salted, b"Server Key");
        // The proof and signature of the RFC's exchange, recomputed.
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let stored_key = Sha256::digest(&client_key);
        let signature = hmac_sha256(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        assert_eq!(
            STANDARD.encode(proof),
            "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        let server_signature = hmac_sha256(&server_key, auth_message.as_bytes());
        assert_eq!(
            STANDARD.encode(server_signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        let v = scram_verifier("some key");
        assert!(v.starts_with("SCRAM-SHA-256$4096:"), "{v}");
    }
}
