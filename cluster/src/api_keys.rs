//! The cluster's API keys, spread by gossip and kept in the data dir.
//!
//! Keys are cluster-wide: a key made through any node works on every node
//! within a gossip round or two, and a revoked one stops everywhere as
//! fast. Every node publishes every record it knows under `apikey.ID`
//! (tombstones included, forever) and merges every record it hears of by
//! the registry's rule, in which a tombstone always wins: so neither a
//! node that was down during a revocation nor one restarted from an old
//! data dir can bring a revoked key back. With `--data-dir` the records
//! are also kept in `keys.json`, written whole on every change.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use atoll_auth::{Auth, KeyRecord};

use crate::keys::{APIKEY_PREFIX, KEY_TALLY, KEY_USED_PREFIX};
use crate::membership::Membership;

/// How often a node merges what it hears, and how stale a published
/// last-used time may get.
const ROUND: Duration = Duration::from_millis(250);
const USED_EVERY_MS: i64 = 5_000;

/// A record as published: its text, and its revocation then (the only
/// part of a record that changes).
struct Published {
    text: String,
    revoked: Option<i64>,
}

pub struct KeySync {
    auth: Arc<Auth>,
    membership: Arc<Membership>,
    file: Option<PathBuf>,
    /// Last-used times as last published.
    used: parking_lot::Mutex<BTreeMap<String, i64>>,
    /// One save at a time (a request's and the round's), so that an older
    /// snapshot of the records is never renamed over a newer one.
    saving: parking_lot::Mutex<()>,
    /// Each record as this node last published it: once the nodes agree
    /// they all publish the same text, and a round reads only what differs
    /// (no parsing or writing of every record every round).
    published: parking_lot::Mutex<BTreeMap<String, Published>>,
}

impl KeySync {
    /// Takes in the records kept in `dir` (if any) before serving.
    pub fn open(
        auth: Arc<Auth>,
        membership: Arc<Membership>,
        dir: Option<PathBuf>,
    ) -> std::io::Result<Arc<KeySync>> {
        let file = dir.map(|d| d.join("keys.json"));
        if let Some(path) = &file
            && path.exists()
        {
            let records: Vec<KeyRecord> = serde_json::from_slice(&std::fs::read(path)?)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
            let mut registry = auth.registry().write();
            for r in records {
                registry.merge(r);
            }
        }
        Ok(Arc::new(KeySync {
            auth,
            membership,
            file,
            used: Default::default(),
            saving: Default::default(),
            published: Default::default(),
        }))
    }

    /// Keeps and publishes the registry as it is now: call after a key
    /// was made or revoked here.
    pub async fn changed(&self) -> std::io::Result<()> {
        self.save()?;
        self.publish().await;
        Ok(())
    }

    /// Merges, keeps and publishes, every round.
    pub fn spawn(self: Arc<Self>, stop: tokio::sync::watch::Receiver<bool>) {
        crate::rounds::every(ROUND, stop, move || {
            let this = self.clone();
            async move { this.round().await }
        });
    }

    /// Merges what it hears, keeps and publishes (also once at start, before
    /// serving, so that a node back from an old data dir learns every
    /// revocation before it answers a request).
    pub async fn round(&self) {
        let heard = self.membership.gossiped(APIKEY_PREFIX).await;
        let mut changed = false;
        {
            let published = self.published.lock();
            let mut registry = self.auth.registry().write();
            for (id, record) in heard.iter().flatten() {
                if published.get(id).is_some_and(|p| p.text == *record) {
                    continue;
                }
                if let Ok(r) = serde_json::from_str::<KeyRecord>(record) {
                    changed |= registry.merge(r);
                }
            }
        }
        if changed && let Err(e) = self.save() {
            tracing::error!(error = %e, "cannot keep the API keys in the data dir");
        }
        self.publish().await;
        self.publish_used().await;
    }

    /// Before serving: merges rounds until this node has every record each
    /// peer it hears of publishes (by their tallies, `keys::KEY_TALLY`), so
    /// that a node back from an old data dir cannot accept a key revoked
    /// while it was away. Waits at most `bound`, then serves with what it
    /// has and says so.
    pub async fn catch_up(&self, bound: Duration) {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            self.round().await;
            let behind = self.peers_behind().await;
            if behind == 0 {
                // What arrived between the merge and the count is merged
                // too.
                self.round().await;
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    peers = behind,
                    "serving before every peer's API key records arrived: a key revoked while this node was away may work here for a few more seconds"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Peers whose tally is not yet matched by the records heard of them
    /// (a peer whose tally has not arrived counts as behind).
    async fn peers_behind(&self) -> usize {
        let heard = self
            .membership
            .gossiped_with(KEY_TALLY, APIKEY_PREFIX)
            .await;
        heard
            .iter()
            .filter(|(tally, records)| {
                let revoked = records
                    .values()
                    .filter(|r| {
                        serde_json::from_str::<KeyRecord>(r).is_ok_and(|r| r.revoked.is_some())
                    })
                    .count();
                tally.as_deref() != Some(tally_text(records.len(), revoked).as_str())
            })
            .count()
    }

    /// Publishes the records new or changed since the last time, then the
    /// tally of what it publishes.
    async fn publish(&self) {
        let (fresh, tally): (BTreeMap<String, String>, String) = {
            let mut published = self.published.lock();
            let registry = self.auth.registry().read();
            let mut fresh = BTreeMap::new();
            for r in registry.records() {
                if published.get(&r.id).is_some_and(|p| p.revoked == r.revoked) {
                    continue;
                }
                if let Ok(text) = serde_json::to_string(r) {
                    let revoked = r.revoked;
                    published.insert(
                        r.id.clone(),
                        Published {
                            text: text.clone(),
                            revoked,
                        },
                    );
                    fresh.insert(r.id.clone(), text);
                }
            }
            let revoked = published.values().filter(|p| p.revoked.is_some()).count();
            (fresh, tally_text(published.len(), revoked))
        };
        if !fresh.is_empty() {
            self.membership.publish(APIKEY_PREFIX, &fresh).await;
        }
        let tally = BTreeMap::from([(KEY_TALLY.to_string(), tally)]);
        self.membership.publish("", &tally).await;
    }

    async fn publish_used(&self) {
        let mut fresh = BTreeMap::new();
        {
            let mut used = self.used.lock();
            for (id, at) in self.auth.last_used() {
                if used.get(&id).is_none_or(|p| at - p >= USED_EVERY_MS) {
                    used.insert(id.clone(), at);
                    fresh.insert(id, at.to_string());
                }
            }
        }
        if !fresh.is_empty() {
            self.membership.publish(KEY_USED_PREFIX, &fresh).await;
        }
    }

    /// When each key was last used on any node.
    pub async fn last_used(&self) -> BTreeMap<String, i64> {
        let mut latest: BTreeMap<String, i64> = BTreeMap::new();
        let heard = self.membership.gossiped(KEY_USED_PREFIX).await;
        let here = self.auth.last_used().into_iter();
        let gossiped = heard
            .into_iter()
            .flatten()
            .filter_map(|(id, at)| Some((id, at.parse().ok()?)));
        for (id, at) in here.chain(gossiped) {
            let e = latest.entry(id).or_insert(at);
            *e = (*e).max(at);
        }
        latest
    }

    fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let _one = self.saving.lock();
        let records: Vec<KeyRecord> = self.auth.registry().read().records().cloned().collect();
        let bytes = serde_json::to_vec(&records).map_err(std::io::Error::other)?;
        replace_file(path, &bytes)
    }
}

/// Writes `bytes` to `path` whole or not at all: a crash leaves the old
/// file or the new one, never half of one.
pub(crate) fn replace_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, bytes)?;
    std::fs::File::open(&partial)?.sync_all()?;
    std::fs::rename(&partial, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn tally_text(records: usize, revoked: usize) -> String {
    format!("{records}/{revoked}")
}
