//! What the replay checks of gossip datagrams and internal calls remember:
//! each proof seen (a nonce, a tag) until its signed time has left the
//! window, forgotten in the order it expires, so that the memory kept is
//! what one window of genuine traffic holds and pruning costs only the
//! expired entries.

use std::collections::{BTreeSet, HashSet};
use std::hash::Hash;

pub(crate) struct Seen<K> {
    keys: HashSet<K>,
    expiring: BTreeSet<(i64, K)>,
}

impl<K> Default for Seen<K> {
    fn default() -> Self {
        Seen {
            keys: HashSet::new(),
            expiring: BTreeSet::new(),
        }
    }
}

impl<K: Hash + Eq + Ord + Copy> Seen<K> {
    /// Remembers `key` until `expires` (ms); false if it was seen and has
    /// not expired by `now`.
    pub(crate) fn insert(&mut self, key: K, expires: i64, now: i64) -> bool {
        while let Some(&(at, old)) = self.expiring.first() {
            if at >= now {
                break;
            }
            self.expiring.pop_first();
            self.keys.remove(&old);
        }
        if !self.keys.insert(key) {
            return false;
        }
        self.expiring.insert((expires, key));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_forgotten_in_time_order_once_expired() {
        let mut seen = Seen::default();
        assert!(seen.insert(1u64, 100, 0));
        assert!(seen.insert(2, 200, 0));
        assert!(!seen.insert(1, 100, 50), "not expired yet");
        // At 150 the first has expired (and is forgotten), the second not.
        assert!(seen.insert(3, 300, 150));
        assert_eq!(seen.keys.len(), 2);
        assert!(!seen.keys.contains(&1));
        assert!(!seen.insert(2, 200, 150));
        assert!(seen.insert(4, 400, 1_000));
        assert_eq!(seen.expiring.len(), 1, "everything before 1000 is gone");
        assert_eq!(seen.keys.len(), 1);
    }
}
