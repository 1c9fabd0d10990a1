//! Idempotency keys: a retried request lands once; a key cannot be used to
//! drop someone else's writes, or to pass off other content as a retry.
//!
//! A key counts only for the API key that sent it (another client guessing
//! it makes a different write id), and a request's write ids are made from
//! the key and the hash of its decoded body: resent unchanged, it lands
//! once; the same key with another body makes other ids, and the node that
//! saw the first answers 422 rather than storing it.

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;

use crate::IngestError;

/// Keys a node remembers, with the hash of their body.
const REMEMBERED: usize = 100_000;

#[derive(Default)]
pub struct RecentKeys {
    seen: Mutex<(HashMap<String, u64>, VecDeque<String>)>,
}

impl RecentKeys {
    /// The key under which a request's pieces are stored: `key` as sent
    /// by `sender`, and the body's hash. Refuses a key this node saw with
    /// another body.
    pub fn scope(&self, sender: &str, key: &str, body: &[u8]) -> Result<String, IngestError> {
        let hash = xxhash_rust::xxh3::xxh3_64(body);
        let scoped = format!("{sender}\u{0}{key}");
        let mut guard = self.seen.lock();
        let (hashes, order) = &mut *guard;
        match hashes.get(&scoped) {
            Some(&earlier) if earlier != hash => {
                return Err(IngestError::KeyReused(key.to_string()));
            }
            Some(_) => {}
            None => {
                hashes.insert(scoped.clone(), hash);
                order.push_back(scoped.clone());
                if order.len() > REMEMBERED
                    && let Some(oldest) = order.pop_front()
                {
                    hashes.remove(&oldest);
                }
            }
        }
        Ok(format!("{scoped}\u{0}{hash:016x}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_its_senders_and_its_bodys() {
        let keys = RecentKeys::default();
        let a = keys.scope("writer", "k1", b"{\"a\":1}").unwrap();
        assert_eq!(
            keys.scope("writer", "k1", b"{\"a\":1}").unwrap(),
            a,
            "a retry"
        );
        let other = keys.scope("intruder", "k1", b"{\"a\":1}").unwrap();
        assert_ne!(other, a, "another sender's key is another key");
        let err = keys.scope("writer", "k1", b"{\"a\":2}").unwrap_err();
        assert!(err.to_string().contains("k1"), "{err}");
    }
}
