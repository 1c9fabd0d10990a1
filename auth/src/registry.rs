//! The cluster's keys, as records that merge in any order.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::token::{self, Created};
use crate::{AuthError, Caller, Role};

/// One key as every node keeps it. Everything but `revoked` is fixed when
/// the key is made; `revoked`, once set, stays (a tombstone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// Tables the key is limited to; None: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<BTreeSet<String>>,
    /// Milliseconds since the epoch.
    pub created: i64,
    /// SHA-256 of the secret, hex.
    pub hash: String,
    /// SCRAM-SHA-256 verifier of the whole key (the Postgres door).
    pub scram: String,
    /// When it was revoked (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<i64>,
}

impl KeyRecord {
    pub fn active(&self) -> bool {
        self.revoked.is_none()
    }

    /// The caller this key stands for.
    fn caller(&self) -> Caller {
        Caller {
            name: self.name.clone(),
            role: self.role,
            tables: self.tables.clone(),
            key_id: Some(self.id.clone()),
        }
    }
}

/// Every key this node knows of, revoked ones included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    by_id: BTreeMap<String, KeyRecord>,
}

impl Registry {
    /// Makes a key. Names are unique among active keys.
    pub fn create(
        &mut self,
        name: &str,
        role: Role,
        tables: Option<BTreeSet<String>>,
        now_ms: i64,
    ) -> Result<Created, AuthError> {
        let name_ok = (1..=64).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !name_ok {
            return Err(AuthError::BadRequest(format!(
                "invalid key name {name:?}: use 1 to 64 characters of [A-Za-z0-9_.-]"
            )));
        }
        if role == Role::Admin && tables.is_some() {
            return Err(AuthError::BadRequest(
                "an admin key cannot be limited to tables: give ingest or query keys a scope"
                    .into(),
            ));
        }
        if tables.as_ref().is_some_and(BTreeSet::is_empty) {
            return Err(AuthError::BadRequest(
                "\"tables\" is empty: leave it out for all tables".into(),
            ));
        }
        if self.active_named(name).is_some() {
            return Err(AuthError::NameTaken(name.to_string()));
        }
        let (id, key) = token::generate();
        let (_, secret) = token::parse(&key).expect("a generated key parses");
        let record = KeyRecord {
            id: id.clone(),
            name: name.to_string(),
            role,
            tables,
            created: now_ms,
            hash: token::hash(secret),
            scram: token::scram_verifier(&key),
            revoked: None,
        };
        self.by_id.insert(id, record.clone());
        Ok(Created { record, key })
    }

    /// Revokes the active key of that name (every one: two nodes may each
    /// have made one of the same name at once); answers a tombstone.
    pub fn revoke(&mut self, name: &str, now_ms: i64) -> Result<KeyRecord, AuthError> {
        let mut revoked = None;
        for record in self
            .by_id
            .values_mut()
            .filter(|r| r.active() && r.name == name)
        {
            record.revoked = Some(now_ms);
            revoked = Some(record.clone());
        }
        revoked.ok_or_else(|| AuthError::NoSuchKey(name.to_string()))
    }

    /// Takes in a record another node (or the data dir) holds; true if
    /// this registry changed. A tombstone always wins, the earliest
    /// revocation time is kept, and nothing else of a record changes.
    pub fn merge(&mut self, record: KeyRecord) -> bool {
        match self.by_id.get_mut(&record.id) {
            None => {
                self.by_id.insert(record.id.clone(), record);
                true
            }
            Some(known) => {
                let revoked = match (known.revoked, record.revoked) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let changed = revoked != known.revoked;
                known.revoked = revoked;
                changed
            }
        }
    }

    /// The caller a key stands for.
    pub fn verify(&self, key: &str) -> Result<Caller, AuthError> {
        let (id, secret) = token::parse(key).ok_or(AuthError::Invalid)?;
        let record = self.by_id.get(id).ok_or(AuthError::Invalid)?;
        if !token::same(token::hash(secret).as_bytes(), record.hash.as_bytes()) {
            return Err(AuthError::Invalid);
        }
        if !record.active() {
            return Err(AuthError::Revoked);
        }
        Ok(record.caller())
    }

    /// The caller key `id` stands for now: its current role and tables,
    /// or why it no longer stands for one.
    pub fn caller_of(&self, id: &str) -> Result<Caller, AuthError> {
        let record = self.by_id.get(id).ok_or(AuthError::Invalid)?;
        if !record.active() {
            return Err(AuthError::Revoked);
        }
        Ok(record.caller())
    }

    /// Every record, tombstones included.
    pub fn records(&self) -> impl Iterator<Item = &KeyRecord> {
        self.by_id.values()
    }

    fn active_named(&self, name: &str) -> Option<&KeyRecord> {
        self.by_id.values().find(|r| r.active() && r.name == name)
    }

    /// The SCRAM verifier of the active key a Postgres user name stands
    /// for (the key's id, or its name: the newest active key of it), with
    /// the caller that key is.
    pub fn scram(&self, user: &str) -> Option<(Verifier, Caller)> {
        let record = match self.by_id.get(user).filter(|r| r.active()) {
            Some(r) => r,
            None => self
                .by_id
                .values()
                .filter(|r| r.active() && r.name == user)
                .max_by_key(|r| r.created)?,
        };
        let verifier = Verifier::parse(&record.scram)?;
        let caller = record.caller();
        Some((verifier, caller))
    }
}

/// A SCRAM-SHA-256 verifier, as RFC 5803 writes it and PostgreSQL keeps
/// passwords: never the key, only what checks a proof of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    pub salt: Vec<u8>,
    pub iterations: usize,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl Verifier {
    /// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse(text: &str) -> Option<Verifier> {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.decode(s).ok();
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        Some(Verifier {
            salt: b64(salt)?,
            iterations: iterations.parse().ok()?,
            stored_key: b64(stored)?,
            server_key: b64(server)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_works_until_revoked_and_names_are_unique() {
        let mut r = Registry::default();
        let made = r.create("ci", Role::Ingest, None, 1).unwrap();
        assert_eq!(r.verify(&made.key).unwrap().name, "ci");
        assert_eq!(
            r.create("ci", Role::Query, None, 2).unwrap_err(),
            AuthError::NameTaken("ci".into())
        );
        let mut wrong = made.key.clone();
        wrong.pop();
        wrong.push('x');
        assert_eq!(r.verify(&wrong), Err(AuthError::Invalid));
        assert_eq!(
            r.verify("atoll_0000000000000000_00"),
            Err(AuthError::Invalid)
        );
        let id = made.record.id.clone();
        assert_eq!(r.caller_of(&id).unwrap().name, "ci");
        r.revoke("ci", 3).unwrap();
        assert_eq!(r.verify(&made.key), Err(AuthError::Revoked));
        assert_eq!(r.caller_of(&id), Err(AuthError::Revoked));
        assert_eq!(r.caller_of("nope"), Err(AuthError::Invalid));
        assert!(
            r.create("ci", Role::Query, None, 4).is_ok(),
            "the name is free again"
        );
        // Two nodes made a key of one name at once: revoking revokes both.
        let mut other = Registry::default();
        let twin = other.create("ci", Role::Query, None, 5).unwrap();
        r.merge(twin.record);
        r.revoke("ci", 6).unwrap();
        assert_eq!(r.verify(&twin.key), Err(AuthError::Revoked));
        assert!(r.create("bad name", Role::Query, None, 4).is_err());
        let scoped_admin = Some(["t".to_string()].into());
        assert!(r.create("a", Role::Admin, scoped_admin, 4).is_err());
    }

    /// Records merged in any order, from any node, end alike, and a
    /// revoked key never comes back (a node restarting from an old data
    /// dir offers the record without its tombstone).
    #[test]
    fn merges_commute_and_tombstones_win() {
        let mut a = Registry::default();
        let made = a.create("k", Role::Query, None, 1).unwrap();
        let old = made.record.clone();
        let mut b = Registry::default();
        assert!(b.merge(old.clone()));
        let tomb = a.revoke("k", 5).unwrap();
        assert!(!a.merge(old.clone()), "the old record changes nothing");
        assert_eq!(a.verify(&made.key), Err(AuthError::Revoked));
        assert!(b.merge(tomb.clone()));
        assert!(!b.merge(old));
        assert_eq!(a, b);
        let mut early = tomb.clone();
        early.revoked = Some(3);
        assert!(a.merge(early));
        assert_eq!(a.records().next().unwrap().revoked, Some(3));
    }

    #[test]
    fn a_user_name_finds_its_key_s_verifier() {
        let mut r = Registry::default();
        let made = r.create("grafana", Role::Query, None, 1).unwrap();
        let (by_name, caller) = r.scram("grafana").unwrap();
        assert_eq!(caller.role, Role::Query);
        let (by_id, _) = r.scram(&made.record.id).unwrap();
        assert_eq!(by_name, by_id);
        assert_eq!(by_name.iterations, 4096);
        assert_eq!(
            (by_name.stored_key.len(), by_name.server_key.len()),
            (32, 32)
        );
        r.revoke("grafana", 2).unwrap();
        assert!(r.scram("grafana").is_none(), "revoked");
        assert!(r.scram("nobody").is_none());
    }
}
