//! Who may do what: API keys, their roles and table scopes.
//!
//! Owns: the key format and how keys are stored (a SHA-256 hash of the
//! secret for Atoll's doors, a SCRAM-SHA-256 verifier for the Postgres
//! door; the secret itself is shown once and kept nowhere), the registry
//! of keys with its merge rule (a revocation is a permanent tombstone, so
//! merging in any order, from any node or an old data dir, never brings a
//! revoked key back), and the decision whether a caller may do something
//! ([`Caller::may`]). [`Auth`] is what every door asks.
//!
//! Must not know: HTTP or any wire protocol (the doors read the key from
//! their own headers or handshakes), gossip or files (`atoll-cluster`
//! spreads and keeps the registry's records), tables or SQL (callers name
//! the tables a request touches).

mod caller;
mod error;
mod registry;
mod token;

pub use caller::{Caller, Need, Role};
pub use error::AuthError;
pub use registry::{KeyRecord, Registry, Verifier};
pub use token::Created;

use std::collections::HashMap;

use parking_lot::{Mutex, RwLock};

/// The authentication of one node: whether it is required, the bootstrap
/// admin key, and the cluster's keys.
pub struct Auth {
    admin: Option<String>,
    registry: RwLock<Registry>,
    /// When each key was last used on this node (ms since the epoch).
    last_used: Mutex<HashMap<String, i64>>,
}

impl Auth {
    /// With a bootstrap admin key every request needs a key; without one
    /// none does (the node decides where that is allowed).
    pub fn new(admin: Option<String>) -> Auth {
        Auth {
            admin,
            registry: RwLock::new(Registry::default()),
            last_used: Mutex::default(),
        }
    }

    pub fn required(&self) -> bool {
        self.admin.is_some()
    }

    /// The caller presenting `key` (None: no key sent), at `now_ms`.
    pub fn authenticate(&self, key: Option<&str>, now_ms: i64) -> Result<Caller, AuthError> {
        let Some(admin) = &self.admin else {
            return Ok(Caller::open());
        };
        let key = key
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(AuthError::Missing)?;
        if token::same_digest(key, admin) {
            return Ok(Caller::bootstrap_admin());
        }
        let caller = self.registry.read().verify(key)?;
        if let Some(id) = &caller.key_id {
            self.last_used.lock().insert(id.clone(), now_ms);
        }
        Ok(caller)
    }

    /// A caller authenticated earlier (a Postgres session's), as its key
    /// stands now: refused once revoked, with the role and tables it has
    /// now; counted as a use of the key.
    pub fn current(&self, caller: &Caller, now_ms: i64) -> Result<Caller, AuthError> {
        let Some(id) = &caller.key_id else {
            return Ok(caller.clone());
        };
        let caller = self.registry.read().caller_of(id)?;
        self.last_used.lock().insert(id.clone(), now_ms);
        Ok(caller)
    }

    pub fn registry(&self) -> &RwLock<Registry> {
        &self.registry
    }

    /// When each key was last used here.
    pub fn last_used(&self) -> HashMap<String, i64> {
        self.last_used.lock().clone()
    }
}
