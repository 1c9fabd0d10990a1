//! The node's memory budget (`--memory-limit`): running queries get a
//! pool within it, data the rest. Near the data budget, cold batches are
//! packed first; if that is not enough the oldest events are evicted,
//! across tables, by raising each table's "oldest kept" cut-off. The data
//! is all the node holds: its own tables and the hints it keeps for down
//! primaries ([`Holdings`]), which are sealed, packed and evicted by the
//! same oldest-first rule. The cut-offs are gossiped and every node
//! applies the latest one it hears of, so that replicas stay
//! interchangeable for coverage plans.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use atoll_cluster::Hints;
use atoll_cluster::Membership;
use atoll_store::{Store, Table};

use crate::config::{ByteSize, ConfigError, ServeArgs};

/// What a node may hold in memory, split between data and queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    pub limit: usize,
    /// The node-wide pool of running queries.
    pub queries: usize,
    /// One query's cap, within `queries`.
    pub per_query: usize,
}

impl MemoryBudget {
    /// From the flags: the limit defaults to half of the machine's memory
    /// (or of its cgroup's limit), the query pool to a quarter of the
    /// limit, one query's cap to half of the pool.
    pub fn from_args(args: &ServeArgs) -> Result<MemoryBudget, ConfigError> {
        let limit = match args.memory_limit {
            Some(ByteSize(l)) => l,
            None => machine_memory()
                .map(|m| m / 2)
                .ok_or(ConfigError::MachineMemory)?,
        };
        let queries = args.query_memory.map_or(limit / 4, |q| q.0);
        if queries >= limit {
            return Err(ConfigError::QueryMemory {
                queries: mib(queries),
                limit: mib(limit),
            });
        }
        let per_query = args
            .query_memory_per_query
            .map_or(queries / 2, |q| q.0)
            .min(queries);
        Ok(MemoryBudget {
            limit,
            queries,
            per_query,
        })
    }

    /// What the data may take.
    pub fn data(&self) -> u64 {
        (self.limit - self.queries) as u64
    }

    /// Above this, batches are packed and then the oldest evicted...
    fn high(&self) -> u64 {
        self.data() / 10 * 9
    }

    /// ...down to this.
    fn low(&self) -> u64 {
        self.data() / 4 * 3
    }

    /// Data is never evicted below this, whatever the process holds.
    fn floor(&self) -> u64 {
        self.data() / 4
    }

    /// Resident memory above which free memory is handed back at once.
    fn high_resident(&self) -> u64 {
        self.limit as u64 / 10 * 9
    }
}

/// This process's resident memory, from `/proc/self/statm`.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

pub fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// The machine's memory, or its cgroup's limit when lower.
fn machine_memory() -> Option<usize> {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })?;
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|f| std::fs::read_to_string(f).ok())
    .filter_map(|v| v.trim().parse::<usize>().ok())
    .min();
    Some(cgroup.map_or(total, |c| c.min(total)))
}

/// Whose data a store holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    Own,
    /// Hints kept for this primary.
    HintsFor(String),
}

/// All the data this node holds: its own tables and the hints it keeps
/// for down primaries. Hints are data: during a long outage of a primary
/// they grow like any table, so they are sealed, measured, packed, cut by
/// the cluster's cut-offs and evicted oldest first like the node's own
/// (otherwise a node would evict its own events to keep others' older
/// ones).
#[derive(Clone)]
pub struct Holdings {
    store: Arc<Store>,
    hints: Arc<Hints>,
}

impl Holdings {
    pub fn new(store: Arc<Store>, hints: Arc<Hints>) -> Holdings {
        Holdings { store, hints }
    }

    /// The node's own store (the one writers wait on for room).
    pub fn own(&self) -> &Arc<Store> {
        &self.store
    }

    fn stores(&self) -> Vec<(Holder, Arc<Store>)> {
        let hints = self.hints.stores().into_iter();
        std::iter::once((Holder::Own, self.store.clone()))
            .chain(hints.map(|(primary, s)| (Holder::HintsFor(primary), s)))
            .collect()
    }

    fn tables(&self) -> Vec<(Holder, Arc<Table>)> {
        self.stores()
            .into_iter()
            .flat_map(|(holder, s)| s.tables().into_iter().map(move |t| (holder.clone(), t)))
            .collect()
    }

    pub fn memory_bytes(&self) -> u64 {
        self.stores().iter().map(|(_, s)| s.memory_bytes()).sum()
    }

    /// Seals, expires, merges and packs every store (`Store::seal_aged`).
    pub fn seal_aged(&self) -> usize {
        self.stores().iter().map(|(_, s)| s.seal_aged()).sum()
    }

    /// Packs store after store while `go_on` says so (`Store::pack_all`).
    fn pack_all(&self, go_on: &dyn Fn() -> bool) {
        let stopped = std::cell::Cell::new(false);
        let go_on = || {
            let go = go_on();
            stopped.set(!go);
            go
        };
        for (_, s) in self.stores() {
            if stopped.get() {
                return;
            }
            s.pack_all(&go_on);
        }
    }

    fn expire(&self) {
        for (_, s) in self.stores() {
            s.expire();
        }
    }

    /// Raises cut-offs so that about `bytes` of the oldest events go,
    /// whoever's they are; answers the tables whose cut-off rose.
    pub fn evict_oldest(&self, bytes: u64) -> Vec<(Holder, String, i64)> {
        let tables = self.tables();
        let Some(cut) = atoll_store::eviction_cutoff(tables.iter().map(|(_, t)| &**t), bytes)
        else {
            return Vec::new();
        };
        tables
            .into_iter()
            .filter(|(_, t)| t.oldest_time().is_some_and(|oldest| oldest < cut) && t.keep_from(cut))
            .map(|(holder, t)| (holder, t.name().to_string(), cut))
            .collect()
    }

    /// Each table's cut-off, the highest of its own and its hints'.
    fn cutoffs(&self) -> BTreeMap<String, i64> {
        let mut cutoffs = BTreeMap::new();
        for (_, t) in self.tables() {
            if let Some(cut) = t.kept_from() {
                let at = cutoffs.entry(t.name().to_string()).or_insert(cut);
                *at = (*at).max(cut);
            }
        }
        cutoffs
    }

    /// Applies a cut-off to the table of that name, own and hints; true if
    /// one rose.
    fn keep_from(&self, table: &str, cut: i64) -> bool {
        let mut raised = false;
        for (_, s) in self.stores() {
            if let Some(t) = s.table(table) {
                raised |= t.keep_from(cut);
            }
        }
        raised
    }
}

/// Evictions made by this node.
#[derive(Clone)]
pub struct EvictionMetrics {
    pub evictions: prometheus::IntCounter,
}

impl EvictionMetrics {
    pub fn new(registry: &prometheus::Registry) -> prometheus::Result<EvictionMetrics> {
        let evictions = prometheus::IntCounter::new(
            "atoll_evictions_total",
            "Times this node evicted its oldest events to stay within --memory-limit",
        )?;
        registry.register(Box::new(evictions.clone()))?;
        Ok(EvictionMetrics { evictions })
    }
}

/// Keeps the node's data within its budget, and applies the cluster's
/// cut-offs; checks every 200 ms.
pub struct Evictor {
    gauge: Gauge,
    membership: Arc<Membership>,
    metrics: EvictionMetrics,
    /// The cut-offs this node gossips, with when it set them.
    gossiped: BTreeMap<String, (i64, i64)>,
    /// The data's bytes at the last round, and when free memory was last
    /// handed back on a quiet round.
    last_used: u64,
    trimmed_at: u64,
}

/// Measures the data against the budget, and tells writers waiting for
/// room (`Store::wait_for_room`) what it found.
#[derive(Clone)]
struct Gauge {
    holdings: Holdings,
    budget: MemoryBudget,
}

impl Gauge {
    /// Data held: this node's tables and the hints it keeps for others.
    fn used(&self) -> u64 {
        self.holdings.memory_bytes()
    }

    /// The data's memory as far as the budget is concerned: what its
    /// batches hold, plus how far the whole process is over 90% of the
    /// limit (buffers of requests in flight and the allocator's slack count
    /// against the data too) — unless the data is down to a quarter of its
    /// budget: what the process holds beyond that is not the data's to
    /// give back, and evicting more would empty the tables for nothing.
    /// Returns it with what the batches hold.
    fn pressure(&self) -> (u64, u64) {
        let used = self.used();
        let floor = self.budget.floor();
        let over = resident_bytes().map_or(0, |r| r.saturating_sub(self.budget.high_resident()));
        let pressure = if used > floor {
            used + over.min(used - floor)
        } else {
            used
        };
        (pressure, used)
    }

    /// Measures, and lets writers through if there is room; returns the
    /// pressure and what the batches hold.
    fn measure(&self) -> (u64, u64) {
        let (pressure, used) = self.pressure();
        self.holdings
            .own()
            .measured_memory(pressure, self.budget.data());
        (pressure, used)
    }
}

impl Evictor {
    pub fn new(
        holdings: Holdings,
        membership: Arc<Membership>,
        budget: MemoryBudget,
        metrics: EvictionMetrics,
    ) -> Evictor {
        Evictor {
            gauge: Gauge { holdings, budget },
            membership,
            metrics,
            gossiped: BTreeMap::new(),
            last_used: 0,
            trimmed_at: 0,
        }
    }

    pub fn spawn(mut self, mut stop: tokio::sync::watch::Receiver<bool>) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => self.round().await,
                    _ = stop.changed() => return,
                }
            }
        });
    }

    async fn round(&mut self) {
        // Ingest churns through buffers that the allocator keeps once
        // freed; near the limit they go back to the system at every check
        // rather than only when batches are sealed.
        let near_limit = resident_bytes().is_some_and(|r| r > self.gauge.budget.high_resident());
        if near_limit {
            let _ = tokio::task::spawn_blocking(crate::release_free_memory).await;
        }
        // Over the budget itself, writers are held: the excess goes at
        // once, because packing takes seconds and a held replica write must
        // answer its coordinator well within its timeout.
        let (mut pressure, used) = self.gauge.measure();
        self.trim_when_quiet(used, near_limit).await;
        if pressure > self.gauge.budget.data()
            && self.evict(self.evictable(pressure - self.gauge.budget.high(), used))
        {
            pressure = self.expire_and_measure(true).await;
        }
        if pressure > self.gauge.budget.high() {
            self.pack().await;
            let (pressure, used) = self.gauge.pressure();
            let mut raised = pressure > self.gauge.budget.high()
                && self.evict(self.evictable(pressure - self.gauge.budget.low(), used));
            raised |= self.apply_cluster_cutoffs().await;
            self.expire_and_measure(raised).await;
        } else if self.apply_cluster_cutoffs().await {
            self.expire_and_measure(true).await;
        }
        self.gossip().await;
    }

    /// Hands free memory back once writes stop: the seals' own trims run
    /// while requests are still freeing their buffers, and glibc kept
    /// those (5M events: 787 MB resident against 660 MB after a trim).
    /// A round whose data is the same as the last one's is quiet; one trim
    /// per quiet spell (none if this round has just trimmed).
    async fn trim_when_quiet(&mut self, used: u64, trimmed: bool) {
        if used == self.last_used && used != self.trimmed_at {
            self.trimmed_at = used;
            if !trimmed {
                let _ = tokio::task::spawn_blocking(crate::release_free_memory).await;
            }
        }
        self.last_used = used;
    }

    /// Packs sealed batches until all are packed or writes have pushed the
    /// data over its budget again (the next round evicts then).
    async fn pack(&self) {
        let gauge = self.gauge.clone();
        let _ = tokio::task::spawn_blocking(move || {
            gauge.holdings.pack_all(&|| {
                crate::release_free_memory();
                gauge.measure().0 <= gauge.budget.data()
            });
        })
        .await;
    }

    /// Of `excess` bytes, what may be evicted without going under the floor.
    fn evictable(&self, excess: u64, used: u64) -> u64 {
        excess.min(used.saturating_sub(self.gauge.budget.floor()))
    }

    /// Drops what raised cut-offs hide (if any rose), then measures again,
    /// so that writers waiting for room go once the work shows; answers the
    /// pressure measured.
    async fn expire_and_measure(&self, raised: bool) -> u64 {
        if raised {
            let holdings = self.gauge.holdings.clone();
            let _ = tokio::task::spawn_blocking(move || {
                holdings.expire();
                crate::release_free_memory();
            })
            .await;
        }
        self.gauge.measure().0
    }

    /// Evicts the oldest events, own or hints, that free `bytes`; true if
    /// a cut-off rose.
    fn evict(&self, bytes: u64) -> bool {
        let raised = self.gauge.holdings.evict_oldest(bytes);
        for (holder, table, cut) in &raised {
            tracing::info!(
                table,
                of = ?holder,
                kept_from = %atoll_store::rfc3339(*cut),
                budget = %mib(self.gauge.budget.data() as usize),
                "evicted the oldest events to stay within the memory limit"
            );
        }
        if !raised.is_empty() {
            self.metrics.evictions.inc();
        }
        !raised.is_empty()
    }

    /// Applies the latest cut-off any node gossips for each table; true if
    /// one rose here.
    async fn apply_cluster_cutoffs(&self) -> bool {
        let mut raised = false;
        for m in self.membership.members().await {
            for (table, &(cut, at)) in &m.cutoffs {
                let dropped_since = self
                    .gauge
                    .holdings
                    .own()
                    .dropped_at(table)
                    .is_some_and(|d| d.micros >= at);
                if !dropped_since {
                    raised |= self.gauge.holdings.keep_from(table, cut);
                }
            }
        }
        raised
    }

    /// Gossips the cut-off of every table that has one, and withdraws those
    /// of tables dropped here.
    async fn gossip(&mut self) {
        let now = atoll_store::now_micros();
        let mut current = BTreeMap::new();
        for (table, cut) in self.gauge.holdings.cutoffs() {
            let at = match self.gossiped.get(&table) {
                Some(&(c, at)) if c == cut => at,
                _ => now,
            };
            current.insert(table, (cut, at));
        }
        for (table, &(cut, at)) in &current {
            if self.gossiped.get(table) != Some(&(cut, at)) {
                self.membership.set_cutoff(table, Some((cut, at))).await;
            }
        }
        for table in self.gossiped.keys().filter(|t| !current.contains_key(*t)) {
            self.membership.set_cutoff(table, None).await;
        }
        self.gossiped = current;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn budget(flags: &[&str]) -> Result<MemoryBudget, String> {
        let cli = Cli::try_parse_from(std::iter::once("atoll").chain(flags.iter().copied()))
            .map_err(|e| e.to_string())?;
        MemoryBudget::from_args(&cli.serve).map_err(|e| e.to_string())
    }

    #[test]
    fn queries_count_within_the_limit() {
        let b = budget(&["--memory-limit", "256MiB"]).unwrap();
        assert_eq!(b.limit, 256 << 20);
        assert_eq!(b.queries, 64 << 20);
        assert_eq!(b.per_query, 32 << 20);
        assert_eq!(b.data(), 192 << 20);
        let b = budget(&["--memory-limit", "1GiB", "--query-memory", "100MiB"]).unwrap();
        assert_eq!((b.queries, b.per_query), (100 << 20, 50 << 20));
        let err = budget(&["--memory-limit", "100MiB", "--query-memory", "1GiB"]).unwrap_err();
        assert!(
            err.contains("--query-memory") && err.contains("--memory-limit"),
            "{err}"
        );
        let machine = budget(&[]).unwrap();
        assert!(machine.limit > 0 && machine.queries == machine.limit / 4);
    }
}

#[cfg(test)]
mod holdings_tests {
    use super::*;
    use arrow::array::{RecordBatch, TimestampMicrosecondArray};
    use arrow::datatypes::{Field, Schema};
    use atoll_store::{ColumnType, StoreConfig, StoredBatch};

    fn config() -> StoreConfig {
        StoreConfig {
            partitions: 4,
            seal_rows: 2,
            seal_age: Duration::ZERO,
            ..StoreConfig::default()
        }
    }

    fn holdings() -> Holdings {
        let store = Arc::new(Store::new(config()));
        Holdings::new(store, Arc::new(Hints::new(config())))
    }

    /// Events of table `t` at `times` (µs), in partition 0 of `store`.
    fn put(store: &Store, times: &[i64]) -> Arc<Table> {
        let t = store.get_or_create("t").unwrap();
        t.evolve(|s| ((), s.accept("t", []).unwrap()));
        let time = TimestampMicrosecondArray::from(times.to_vec()).with_timezone("UTC");
        let schema = Schema::new(vec![Field::new(
            "time",
            ColumnType::Timestamp.data_type(),
            false,
        )]);
        let batch = RecordBatch::try_new(Arc::new(schema), vec![Arc::new(time)]).unwrap();
        t.append(0, StoredBatch::new(batch).unwrap()).unwrap();
        t
    }

    #[test]
    fn the_oldest_events_go_first_hints_included() {
        let h = holdings();
        let own = put(h.own(), &[300, 399]);
        let hinted = put(&h.hints.store_for("n2"), &[100, 199]);
        let raised = h.evict_oldest(hinted.memory_bytes());
        assert_eq!(
            raised,
            vec![(Holder::HintsFor("n2".into()), "t".into(), 200)],
            "the older hints go, the node's own newer events stay"
        );
        assert_eq!(own.kept_from(), None);
        assert_eq!(h.cutoffs(), BTreeMap::from([("t".to_string(), 200)]));
        h.expire();
        assert_eq!((hinted.rows(), own.rows()), (0, 2));
    }

    #[test]
    fn own_events_go_first_when_they_are_the_oldest() {
        let h = holdings();
        let own = put(h.own(), &[100, 199]);
        let hinted = put(&h.hints.store_for("n2"), &[300, 399]);
        let raised = h.evict_oldest(own.memory_bytes());
        assert_eq!(raised, vec![(Holder::Own, "t".into(), 200)]);
        assert_eq!(hinted.kept_from(), None);
        // More than the oldest store holds: into the next one's oldest.
        let raised = h.evict_oldest(own.memory_bytes() + hinted.memory_bytes() / 4);
        assert!(
            raised
                .iter()
                .any(|(who, _, cut)| *who == Holder::HintsFor("n2".into()) && *cut > 300),
            "{raised:?}"
        );
    }

    #[test]
    fn hints_are_sealed_measured_and_cut_like_own_data() {
        // Buffers seal by age only, then pack at once.
        let packing = StoreConfig {
            seal_rows: 1000,
            compress_after: Some(Duration::ZERO),
            ..config()
        };
        let h = Holdings::new(
            Arc::new(Store::new(packing.clone())),
            Arc::new(Hints::new(packing)),
        );
        let hinted = put(&h.hints.store_for("n2"), &[100, 199]);
        let own = put(h.own(), &[300, 399]);
        assert_eq!(h.memory_bytes(), hinted.memory_bytes() + own.memory_bytes());
        assert_eq!(hinted.bytes().compressed, 0);
        h.seal_aged();
        assert!(
            hinted.bytes().compressed > 0,
            "the hints were sealed and packed"
        );
        assert!(h.keep_from("t", 250), "a cluster cut-off reaches the hints");
        assert_eq!(
            (hinted.kept_from(), own.kept_from()),
            (Some(250), Some(250))
        );
    }
}
