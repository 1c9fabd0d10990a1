//! The dashboard's saved views and boards: named, cluster-wide, kept in the
//! data dir.
//!
//! Spread the way API keys are (`api_keys`): every node publishes every
//! item it knows under `saved.ID` and merges every item it hears of, so an
//! item outlives the node it was saved on and reaches a node that was down
//! when it was saved. The newer change of a name wins (its time, then the
//! node's name, so that every node picks the same one); a deletion is a
//! tombstone, kept like any item for `TOMBSTONE_DAYS` (longer than a node
//! is expected to stay away), that wins over older saves and loses to a
//! newer save of the name. With `--data-dir` the items are also kept in
//! `saved.json`, written whole on every change.
//!
//! The limits bound what each node holds and gossips: an item's size, the
//! live items and the tombstones are counted by the node taking the
//! request (saves made through several nodes within a gossip round may go
//! a little over), and items heard by gossip are checked like requests.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use atoll_errors::{Classified, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::keys::SAVED_PREFIX;
use crate::membership::Membership;

const ROUND: Duration = Duration::from_millis(250);
/// Longest name of a view or a board, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Largest view (its URL query string), in bytes: an item travels whole in
/// one gossip datagram.
pub const MAX_STATE_BYTES: usize = 8 * 1024;
/// Most views on one board.
pub const MAX_BOARD_VIEWS: usize = 50;
/// Most items (views and boards, deletions not counted) in a cluster.
pub const MAX_ITEMS: usize = 500;
/// Most deletions remembered at once (a tombstone is a name and a time).
pub const MAX_TOMBSTONES: usize = 5_000;
/// How long a deletion is remembered: a node away for longer than this,
/// back with an old data dir, brings the deleted item back.
pub const TOMBSTONE_DAYS: i64 = 7;
const TOMBSTONE_MICROS: i64 = TOMBSTONE_DAYS * 86_400 * 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    View,
    Board,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Board => "board",
        }
    }
}

/// A saved view or board, or the tombstone of one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub kind: Kind,
    pub name: String,
    /// A view: the dashboard's state, as its URL's query string.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// A board: the names of its views, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub views: Vec<String>,
    /// When it was last changed (µs since the epoch).
    pub updated: i64,
    /// The node that changed it.
    pub by: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

impl Item {
    /// Its gossip key's name: kind and name, the name in hex (any text
    /// may name a view; gossip keys stay plain).
    fn id(&self) -> String {
        id(self.kind, &self.name)
    }

    /// Whether this change is newer than `other` (of the same name).
    fn newer_than(&self, other: &Item) -> bool {
        (self.updated, &self.by) > (other.updated, &other.by)
    }
}

fn id(kind: Kind, name: &str) -> String {
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{}.{hex}", kind.name())
}

#[derive(Debug, thiserror::Error)]
pub enum SavedError {
    #[error("{0}")]
    Invalid(String),
    #[error("no saved {} named {name:?}", kind.name())]
    NotFound { kind: Kind, name: String },
    #[error("the cluster keeps at most {MAX_ITEMS} saved views and boards: delete some first")]
    Full,
    #[error(
        "more than {MAX_TOMBSTONES} saved views and boards were deleted in the last {TOMBSTONE_DAYS} days: try again later"
    )]
    TooManyDeletions,
    #[error("cannot keep the saved views in the data dir: {0}")]
    Io(#[from] std::io::Error),
}

impl Classified for SavedError {
    fn kind(&self) -> ErrorKind {
        match self {
            SavedError::Invalid(_) => ErrorKind::BadInput,
            SavedError::NotFound { .. } => ErrorKind::NotFound,
            SavedError::Full | SavedError::TooManyDeletions => ErrorKind::LimitHit,
            SavedError::Io(_) => ErrorKind::Internal,
        }
    }
}

/// A name people can read and type: 1 to 100 characters, no control
/// characters, no spaces at either end.
pub fn validate_name(what: &str, name: &str) -> Result<(), SavedError> {
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME_CHARS {
        return Err(SavedError::Invalid(format!(
            "a {what}'s name has 1 to {MAX_NAME_CHARS} characters, {name:?} has {n}"
        )));
    }
    if name.chars().any(char::is_control) || name.trim() != name {
        return Err(SavedError::Invalid(format!(
            "a {what}'s name has no control characters and no spaces at either end: {name:?}"
        )));
    }
    // A browser resolves `.` and `..` in a URL's path before sending it.
    if name == "." || name == ".." {
        return Err(SavedError::Invalid(format!(
            "a {what} may not be named {name:?}"
        )));
    }
    Ok(())
}

fn validate_state(state: &str) -> Result<(), SavedError> {
    if state.is_empty() || state.len() > MAX_STATE_BYTES {
        return Err(SavedError::Invalid(format!(
            "a view's state has 1 to {MAX_STATE_BYTES} bytes, this one {}",
            state.len()
        )));
    }
    Ok(())
}

fn validate_board(name: &str, views: &[String]) -> Result<(), SavedError> {
    validate_name("board", name)?;
    if views.len() > MAX_BOARD_VIEWS {
        return Err(SavedError::Invalid(format!(
            "a board shows at most {MAX_BOARD_VIEWS} views, not {}",
            views.len()
        )));
    }
    views.iter().try_for_each(|v| validate_name("view", v))
}

/// Whether an item (heard by gossip, or read from the data dir) keeps the
/// limits a request would have to.
fn valid(item: &Item) -> bool {
    let ok = match item.kind {
        _ if item.deleted => validate_name(item.kind.name(), &item.name),
        Kind::View => validate_name("view", &item.name).and_then(|_| validate_state(&item.state)),
        Kind::Board => validate_board(&item.name, &item.views),
    };
    ok.is_ok() && item.by.len() <= 256
}

/// A tombstone older than `TOMBSTONE_DAYS` at `now`.
fn expired(item: &Item, now: i64) -> bool {
    item.deleted && item.updated < now.saturating_sub(TOMBSTONE_MICROS)
}

pub struct Saved {
    membership: Arc<Membership>,
    node: String,
    file: Option<PathBuf>,
    items: parking_lot::RwLock<BTreeMap<String, Item>>,
    /// One save at a time, so that an older snapshot is never renamed over
    /// a newer one.
    saving: parking_lot::Mutex<()>,
    /// Each item's text as this node last published it.
    published: parking_lot::Mutex<BTreeMap<String, String>>,
}

impl Saved {
    /// Takes in the items kept in `dir` (if any).
    pub fn open(
        membership: Arc<Membership>,
        node: &str,
        dir: Option<PathBuf>,
    ) -> std::io::Result<Arc<Saved>> {
        let file = dir.map(|d| d.join("saved.json"));
        let mut items = BTreeMap::new();
        if let Some(path) = &file
            && path.exists()
        {
            let kept: Vec<Item> = serde_json::from_slice(&std::fs::read(path)?)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
            for item in kept.into_iter().filter(valid) {
                merge(&mut items, item);
            }
        }
        Ok(Arc::new(Saved {
            membership,
            node: node.to_string(),
            file,
            items: parking_lot::RwLock::new(items),
            saving: Default::default(),
            published: Default::default(),
        }))
    }

    /// The views and boards (not the deleted ones), by kind and name.
    pub fn list(&self) -> Vec<Item> {
        let mut live: Vec<Item> = self
            .items
            .read()
            .values()
            .filter(|i| !i.deleted)
            .cloned()
            .collect();
        live.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        live
    }

    /// Saves a view (its dashboard state) under `name`, replacing one of
    /// that name.
    pub async fn save_view(&self, name: &str, state: &str) -> Result<Item, SavedError> {
        validate_name("view", name)?;
        validate_state(state)?;
        self.change(Kind::View, name, |item| item.state = state.to_string())
            .await
    }

    /// Saves a board of the named views (each must be saved), replacing one
    /// of that name.
    pub async fn save_board(&self, name: &str, views: &[String]) -> Result<Item, SavedError> {
        validate_board(name, views)?;
        {
            let items = self.items.read();
            if let Some(missing) = views
                .iter()
                .find(|v| items.get(&id(Kind::View, v)).is_none_or(|i| i.deleted))
            {
                return Err(SavedError::Invalid(format!(
                    "board {name:?}: no saved view named {missing:?}"
                )));
            }
        }
        self.change(Kind::Board, name, |item| item.views = views.to_vec())
            .await
    }

    /// Deletes a saved view or board: a tombstone, so that every node
    /// forgets it.
    pub async fn delete(&self, kind: Kind, name: &str) -> Result<Item, SavedError> {
        if self
            .items
            .read()
            .get(&id(kind, name))
            .is_none_or(|i| i.deleted)
        {
            return Err(SavedError::NotFound {
                kind,
                name: name.to_string(),
            });
        }
        self.change(kind, name, |item| item.deleted = true).await
    }

    /// Writes a new version of the item `name`, newer than any this node
    /// knows, keeps it and publishes it; if it cannot be kept, it is not
    /// published either.
    async fn change(
        &self,
        kind: Kind,
        name: &str,
        fill: impl FnOnce(&mut Item),
    ) -> Result<Item, SavedError> {
        let key = id(kind, name);
        let (item, before) = {
            let mut items = self.items.write();
            let before = items.get(&key).cloned();
            let mut item = Item {
                kind,
                name: name.to_string(),
                state: String::new(),
                views: Vec::new(),
                updated: atoll_store::now_micros()
                    .max(before.as_ref().map_or(0, |b| b.updated.saturating_add(1))),
                by: self.node.clone(),
                deleted: false,
            };
            fill(&mut item);
            let was_live = before.as_ref().is_some_and(|b| !b.deleted);
            let count = |deleted: bool| items.values().filter(|i| i.deleted == deleted).count();
            if item.deleted && count(true) >= MAX_TOMBSTONES {
                return Err(SavedError::TooManyDeletions);
            }
            if !item.deleted && !was_live && count(false) >= MAX_ITEMS {
                return Err(SavedError::Full);
            }
            items.insert(key.clone(), item.clone());
            (item, before)
        };
        if let Err(e) = self.save() {
            let mut items = self.items.write();
            match before {
                Some(b) => items.insert(key, b),
                None => items.remove(&key),
            };
            return Err(e.into());
        }
        self.publish().await;
        Ok(item)
    }

    /// Merges, keeps and publishes, every round.
    pub fn spawn(self: Arc<Self>, stop: tokio::sync::watch::Receiver<bool>) {
        crate::rounds::every(ROUND, stop, move || {
            let this = self.clone();
            async move { this.round().await }
        });
    }

    /// Merges what it hears (only what differs from what it publishes),
    /// forgets expired tombstones, keeps and publishes.
    pub async fn round(&self) {
        let heard = self.membership.gossiped(SAVED_PREFIX).await;
        let now = atoll_store::now_micros();
        let mut changed = false;
        let forgotten: Vec<String> = {
            let mut published = self.published.lock();
            let mut items = self.items.write();
            for (key, text) in heard.iter().flatten() {
                if published.get(key) == Some(text) {
                    continue;
                }
                match serde_json::from_str::<Item>(text) {
                    Ok(item) if item.id() == *key && valid(&item) && !expired(&item, now) => {
                        changed |= merge(&mut items, item)
                    }
                    Ok(_) => {}
                    Err(_) => tracing::warn!(key, "a saved item heard by gossip cannot be read"),
                }
            }
            let old: Vec<String> = items
                .iter()
                .filter(|(_, i)| expired(i, now))
                .map(|(k, _)| k.clone())
                .collect();
            for key in &old {
                items.remove(key);
                published.remove(key);
            }
            old
        };
        if (changed || !forgotten.is_empty())
            && let Err(e) = self.save()
        {
            tracing::error!(error = %e, "cannot keep the saved views in the data dir");
        }
        if !forgotten.is_empty() {
            self.membership.forget(SAVED_PREFIX, &forgotten).await;
        }
        self.publish().await;
    }

    async fn publish(&self) {
        let fresh: BTreeMap<String, String> = {
            let mut published = self.published.lock();
            let items = self.items.read();
            let mut fresh = BTreeMap::new();
            for (key, item) in items.iter() {
                let Ok(text) = serde_json::to_string(item) else {
                    continue;
                };
                if published.get(key) != Some(&text) {
                    published.insert(key.clone(), text.clone());
                    fresh.insert(key.clone(), text);
                }
            }
            fresh
        };
        if !fresh.is_empty() {
            self.membership.publish(SAVED_PREFIX, &fresh).await;
        }
    }

    fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let _one = self.saving.lock();
        let items: Vec<Item> = self.items.read().values().cloned().collect();
        let bytes = serde_json::to_vec(&items).map_err(std::io::Error::other)?;
        crate::api_keys::replace_file(path, &bytes)
    }
}

/// Takes `item` if it is newer than what `items` holds of its name.
fn merge(items: &mut BTreeMap<String, Item>, item: Item) -> bool {
    let key = item.id();
    if items.get(&key).is_some_and(|known| !item.newer_than(known)) {
        return false;
    }
    items.insert(key, item);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(name: &str, updated: i64, by: &str, deleted: bool) -> Item {
        Item {
            kind: Kind::View,
            name: name.into(),
            state: format!("view=explore&at={updated}"),
            views: vec![],
            updated,
            by: by.into(),
            deleted,
        }
    }

    #[test]
    fn the_newer_change_wins_whatever_the_order_heard() {
        let a = item("p99", 10, "n1", false);
        let b = item("p99", 20, "n0", false);
        let gone = item("p99", 30, "n2", true);
        let again = item("p99", 40, "n0", false);
        for order in [
            [&a, &b, &gone, &again],
            [&again, &gone, &b, &a],
            [&gone, &a, &again, &b],
        ] {
            let mut items = BTreeMap::new();
            for i in order {
                merge(&mut items, i.clone());
            }
            assert_eq!(items.values().next(), Some(&again));
        }
        // A tombstone wins over what was saved before it.
        let mut items = BTreeMap::new();
        merge(&mut items, b.clone());
        assert!(merge(&mut items, gone.clone()));
        assert!(!merge(&mut items, a));
        assert!(items.values().next().unwrap().deleted);
    }

    #[test]
    fn ties_are_broken_by_the_node_so_every_node_keeps_the_same() {
        let x = item("v", 5, "n0", false);
        let y = item("v", 5, "n1", true);
        let (mut one, mut two) = (BTreeMap::new(), BTreeMap::new());
        merge(&mut one, x.clone());
        merge(&mut one, y.clone());
        merge(&mut two, y.clone());
        merge(&mut two, x);
        assert_eq!(one, two);
        assert_eq!(one.values().next(), Some(&y));
    }

    #[test]
    fn names_are_any_text_people_can_read() {
        assert!(validate_name("view", "p99 by endpoint, \"prod\" ✓").is_ok());
        for bad in ["", " padded", "tab\there", &"x".repeat(MAX_NAME_CHARS + 1)] {
            let e = validate_name("view", bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::BadInput, "{bad:?}");
        }
        assert!(validate_name("view", "..").is_err());
        assert_eq!(id(Kind::Board, "a.b"), "board.612e62");
    }

    #[test]
    fn items_heard_are_held_to_the_limits_and_deletions_expire() {
        let mut big = item("v", 1, "n0", false);
        assert!(valid(&big));
        big.state = "x".repeat(MAX_STATE_BYTES + 1);
        assert!(!valid(&big), "a state over the limit");
        let board = Item {
            kind: Kind::Board,
            views: vec!["a".into(); MAX_BOARD_VIEWS + 1],
            ..item("b", 1, "n0", false)
        };
        assert!(!valid(&board), "a board over the limit");
        let day = 86_400 * 1_000_000;
        let gone = item("v", 10 * day, "n0", true);
        assert!(!expired(&gone, 10 * day + TOMBSTONE_MICROS));
        assert!(expired(&gone, 10 * day + TOMBSTONE_MICROS + 1));
        assert!(
            !expired(&item("v", 0, "n0", false), i64::MAX),
            "only deletions expire"
        );
    }
}
