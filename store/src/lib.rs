//! In-memory Arrow storage: per (table, partition) an append buffer that
//! seals into record batches, each with its time range for pruning.
//!
//! This crate knows no HTTP and no SQL: ingest hands it converted batches,
//! the query engine asks it for the batches of some partitions.

pub mod partition;
pub mod schema;
pub mod table;
pub mod wal;
pub mod writes;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

pub use partition::StoredBatch;
pub use schema::{
    ColumnType, MAX_COLUMNS, SAMPLE_RATE_COLUMN, SchemaChange, TIME_COLUMN, TableSchema,
};
pub use table::{Table, TableBytes, TableSettings, parse_retention};

/// Errors of the store, each naming what was wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error(
        "invalid table name {0:?}: use 1 to 64 characters of [A-Za-z0-9_-], starting with a letter or '_'"
    )]
    InvalidTableName(String),
    #[error("table {0:?} does not exist")]
    NoSuchTable(String),
    #[error("column {column:?} is {existing}, cannot store {incoming} in it")]
    TypeConflict {
        column: String,
        existing: ColumnType,
        incoming: ColumnType,
    },
    #[error("column name of {len} bytes is longer than the limit of {limit} bytes")]
    ColumnNameTooLong { len: usize, limit: usize },
    #[error(
        "column {column:?} would be column {count} of table {table:?}, over the limit of {limit} columns"
    )]
    TooManyColumns {
        table: String,
        column: String,
        count: usize,
        limit: usize,
    },
    #[error(
        "partition key {column:?} cannot be {found}: use a column of type Utf8, Int64 or Boolean"
    )]
    BadPartitionKey { column: String, found: ColumnType },
    #[error(
        "column {column:?} is {stored} on this node but the query was planned with {planned}: the table's schema changed since the planning node learnt it; run the query again"
    )]
    SchemaAhead {
        column: String,
        stored: ColumnType,
        planned: ColumnType,
    },
    #[error(
        "invalid retention {0:?}: use a duration such as \"90m\", \"24h\" or \"7d\" (more than zero)"
    )]
    BadRetention(String),
    #[error(
        "table {table:?} would be one too many: this node holds at most {limit} tables (--max-tables); drop unused ones"
    )]
    TooManyTables { table: String, limit: usize },
    #[error("column name {0:?} is reserved by Atoll")]
    ReservedColumn(String),
    #[error("arrow: {0}")]
    Arrow(String),
}

impl atoll_errors::Classified for StoreError {
    fn kind(&self) -> atoll_errors::ErrorKind {
        use atoll_errors::ErrorKind;
        match self {
            StoreError::NoSuchTable(_) => ErrorKind::NotFound,
            StoreError::SchemaAhead { .. } => ErrorKind::Unavailable,
            StoreError::Arrow(_) => ErrorKind::Internal,
            StoreError::TooManyTables { .. } => ErrorKind::LimitHit,
            StoreError::InvalidTableName(_)
            | StoreError::TypeConflict { .. }
            | StoreError::ColumnNameTooLong { .. }
            | StoreError::TooManyColumns { .. }
            | StoreError::BadPartitionKey { .. }
            | StoreError::BadRetention(_)
            | StoreError::ReservedColumn(_) => ErrorKind::BadInput,
        }
    }
}

impl From<arrow::error::ArrowError> for StoreError {
    fn from(e: arrow::error::ArrowError) -> Self {
        StoreError::Arrow(e.to_string())
    }
}

/// How the store seals its append buffers.
/// Partitions of a store unless configured otherwise (the cluster's ring
/// decides the real count and configures the store with it).
pub const DEFAULT_PARTITIONS: u32 = 64;

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub partitions: u32,
    /// An append buffer seals once it holds this many rows...
    pub seal_rows: usize,
    /// ...or once its oldest row waited this long.
    pub seal_age: Duration,
    /// How long events are kept (by their `time`) in tables without a
    /// `retention` setting; None: until dropped.
    pub retention: Option<Duration>,
    /// Sealed batches made (sealed or merged) at least this long ago are
    /// kept LZ4-compressed and decompressed when scanned; None: never.
    pub compress_after: Option<Duration>,
    /// Tables a store holds at most: each costs memory for its partitions
    /// even empty, and a client making a table per request would exhaust
    /// a node.
    pub max_tables: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            partitions: DEFAULT_PARTITIONS,
            seal_rows: 32 * 1024,
            seal_age: Duration::from_secs(1),
            retention: None,
            compress_after: None,
            max_tables: 1_000,
        }
    }
}

/// A time in µs since the epoch, as RFC 3339 (UTC).
pub fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_else(|| micros.to_string())
}

/// The wall clock, in µs since the epoch (the unit of `time` and of the
/// times that name table changes across nodes).
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// All tables of one node.
pub struct Store {
    config: StoreConfig,
    tables: RwLock<BTreeMap<String, Arc<Table>>>,
    /// When each table was last dropped here, so that a peer that still
    /// has it (it has not applied the drop yet) does not bring it back.
    dropped: RwLock<BTreeMap<String, Dropped>>,
    /// The memory budget of data as a gate for writers (`wait_for_room`):
    /// the budget, the memory last measured, and what writes added since.
    gate: MemoryGate,
}

/// Writers wait while the data's memory, as last measured plus what was
/// written since, is over the budget; the measurer opens the gate again.
#[derive(Default)]
struct MemoryGate {
    budget: std::sync::atomic::AtomicU64,
    measured: std::sync::atomic::AtomicU64,
    added: std::sync::atomic::AtomicU64,
    room: tokio::sync::Notify,
}

impl MemoryGate {
    fn over(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let budget = self.budget.load(Relaxed);
        budget > 0 && self.measured.load(Relaxed) + self.added.load(Relaxed) > budget
    }
}

/// When a table was dropped on this node.
#[derive(Debug, Clone, Copy)]
pub struct Dropped {
    pub at: std::time::Instant,
    /// The drop's name across the cluster: when (µs since the epoch) the
    /// node that took the `DELETE` took it.
    pub micros: i64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({} tables)", self.tables.read().len())
    }
}

impl Store {
    pub fn new(config: StoreConfig) -> Store {
        Store {
            config,
            tables: RwLock::new(BTreeMap::new()),
            dropped: RwLock::new(BTreeMap::new()),
            gate: MemoryGate::default(),
        }
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub fn partitions(&self) -> u32 {
        self.config.partitions
    }

    pub fn table(&self, name: &str) -> Option<Arc<Table>> {
        self.tables.read().get(name).cloned()
    }

    /// The table of that name, created empty (only `time`) when missing.
    pub fn get_or_create(&self, name: &str) -> Result<Arc<Table>, StoreError> {
        if let Some(t) = self.table(name) {
            return Ok(t);
        }
        validate_table_name(name)?;
        let mut tables = self.tables.write();
        if !tables.contains_key(name) && tables.len() >= self.config.max_tables {
            return Err(StoreError::TooManyTables {
                table: name.to_string(),
                limit: self.config.max_tables,
            });
        }
        let table = tables
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(Table::new(name, &self.config)));
        Ok(table.clone())
    }

    /// Drops a table and all its data; false when there was none.
    /// `when` (µs since the epoch) names the drop cluster-wide: the time
    /// the node that took the `DELETE` took it; now when None.
    pub fn drop_table(&self, name: &str, when: Option<i64>) -> bool {
        let found = self.tables.write().remove(name).is_some();
        if found {
            let micros = when.unwrap_or_else(now_micros);
            let at = std::time::Instant::now();
            self.dropped
                .write()
                .insert(name.to_string(), Dropped { at, micros });
        }
        found
    }

    /// When the table was last dropped on this node.
    pub fn dropped_at(&self, name: &str) -> Option<Dropped> {
        self.dropped.read().get(name).copied()
    }

    /// Every table dropped on this node, with when.
    pub fn dropped(&self) -> BTreeMap<String, Dropped> {
        self.dropped.read().clone()
    }

    pub fn tables(&self) -> Vec<Arc<Table>> {
        self.tables.read().values().cloned().collect()
    }

    /// Seals every append buffer that is old enough, drops batches past
    /// their table's retention, merges small sealed batches, then packs
    /// cold ones; run periodically. Returns the batches dropped, merged
    /// away or packed (their plain memory is free to return to the system).
    pub fn seal_aged(&self) -> usize {
        let now = now_micros();
        let mut gone = 0;
        for table in self.tables() {
            table.seal_aged(self.config.seal_age);
            gone += table.expire(now);
            gone += table.compact();
            if let Some(age) = self.config.compress_after {
                gone += table.pack_cold(age);
            }
        }
        gone
    }
}

/// Under memory pressure: what to pack and what to evict.
impl Store {
    /// Memory held by every table's batches.
    pub fn memory_bytes(&self) -> u64 {
        self.tables().iter().map(|t| t.memory_bytes()).sum()
    }

    /// Packs every plain sealed batch, whatever its age: compressing comes
    /// before dropping anything. `go_on` runs after each partition that
    /// packed some, and packing stops when it answers false: the caller
    /// hands the plain batches' memory back to the system there (the
    /// allocator would otherwise keep it while the packing allocates more:
    /// +300 MB over one pass of 170 MB) and measures again, so that writers
    /// need not wait for a whole pass. Returns how many were packed.
    pub fn pack_all(&self, go_on: &dyn Fn() -> bool) -> usize {
        let stopped = std::cell::Cell::new(false);
        let go_on = || {
            let go = go_on();
            stopped.set(!go);
            go
        };
        self.tables()
            .iter()
            .take_while(|_| !stopped.get())
            .map(|t| t.pack_all(&go_on))
            .sum()
    }

    /// Drops what retention and eviction cut-offs hide, now; returns the
    /// batches dropped or cut.
    pub fn expire(&self) -> usize {
        let now = now_micros();
        self.tables().iter().map(|t| t.expire(now)).sum()
    }
}

/// The event time (µs) before which the batches of `tables` hold about
/// `bytes`: evicting events older than it, in every one of them, frees
/// that much, oldest first whichever table (or store: a node's own, or the
/// hints it keeps for others) they are in. A batch counts in proportion to
/// its time range before the instant (its rows are taken as spread evenly
/// over its range), so that batches each spanning a long range do not make
/// it evict far more than needed. None when there are no batches.
pub fn eviction_cutoff<'a>(tables: impl IntoIterator<Item = &'a Table>, bytes: u64) -> Option<i64> {
    let mut extents = Vec::new();
    for t in tables {
        t.batch_extents(&mut extents);
    }
    let lo = extents.iter().map(|e| e.0).min()?;
    let hi = extents.iter().map(|e| e.1).max()?;
    let below = |cut: i64| -> u64 {
        extents
            .iter()
            .map(|&(min, max, b)| {
                if max < cut {
                    b
                } else if min >= cut {
                    0
                } else {
                    let share = (cut - min) as f64 / ((max - min) as f64 + 1.0);
                    (b as f64 * share) as u64
                }
            })
            .sum()
    };
    // The smallest instant with at least `bytes` before it.
    let (mut a, mut z) = (lo, hi.saturating_add(1));
    while a < z {
        let mid = a + (z - a) / 2;
        if below(mid) >= bytes {
            z = mid;
        } else {
            a = mid + 1;
        }
    }
    Some(a)
}

impl Store {
    /// Records the data's memory as just measured against `budget` (0: no
    /// budget), and lets waiting writers go when it is within.
    pub fn measured_memory(&self, used: u64, budget: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.gate.budget.store(budget, Relaxed);
        self.gate.measured.store(used, Relaxed);
        self.gate.added.store(0, Relaxed);
        if !self.gate.over() {
            self.gate.room.notify_waiters();
        }
    }

    /// Counts memory a write added, until the next measurement.
    pub fn added_memory(&self, bytes: u64) {
        self.gate
            .added
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Waits, at most `max`, while the data is over its memory budget:
    /// ingest slows down to the pace eviction frees memory at, rather than
    /// fail or outrun it. False if it waited in vain.
    pub async fn wait_for_room(&self, max: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + max;
        while self.gate.over() {
            let notified = self.gate.room.notified();
            if !self.gate.over() {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return !self.gate.over();
            }
        }
        true
    }
}

/// Table names: `[A-Za-z_][A-Za-z0-9_-]{0,63}`.
pub fn validate_table_name(name: &str) -> Result<(), StoreError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if first_ok && rest_ok && name.len() <= 64 {
        Ok(())
    } else {
        Err(StoreError::InvalidTableName(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        for ok in ["events", "_x", "a-b_c9", &"a".repeat(64)] {
            assert_eq!(validate_table_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "9a", "-a", "a.b", "a b", "ä", &"a".repeat(65), "../x"] {
            assert!(validate_table_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn create_and_drop() {
        let store = Store::new(StoreConfig::default());
        assert!(store.get_or_create("bad name").is_err());
        let t = store.get_or_create("events").unwrap();
        assert!(Arc::ptr_eq(&t, &store.get_or_create("events").unwrap()));
        assert_eq!(store.tables().len(), 1);
        assert!(store.drop_table("events", None));
        assert!(!store.drop_table("events", None));
        assert!(store.table("events").is_none());
    }
}
