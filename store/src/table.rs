//! A table: its schema, its settings and one partition store per ring
//! partition, each behind its own lock so that concurrent ingest into one
//! table does not serialize.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::partition::{Partition, StoredBatch};
use crate::schema::{ColumnType, SchemaChange, TableSchema};
use crate::{StoreConfig, StoreError};

/// Settings of a table, set with `PUT /v1/tables/{table}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSettings {
    /// A column whose value, instead of a random key, picks the partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_key: Option<String>,
    /// How long events are kept, by their `time` ("90m", "24h", "7d");
    /// none: the node's `--retention`, else until the table is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
}

impl TableSettings {
    /// The retention as a duration, if set and valid.
    pub fn retention(&self) -> Option<Duration> {
        self.retention.as_deref().and_then(parse_retention)
    }
}

/// A retention: a humantime duration of more than zero.
pub fn parse_retention(text: &str) -> Option<Duration> {
    humantime::parse_duration(text.trim())
        .ok()
        .filter(|d| !d.is_zero())
}

/// Open batches in a partition's buffer beyond which a scan seals it.
const SEAL_ON_READ: usize = 8;

/// A table's memory by form of its batches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TableBytes {
    /// Plain Arrow batches.
    pub plain: u64,
    /// Packed (LZ4-compressed) batches, as held.
    pub compressed: u64,
    /// What the packed batches take once decompressed.
    pub compressed_plain: u64,
}

impl TableBytes {
    /// Memory held, in either form.
    pub fn held(&self) -> u64 {
        self.plain + self.compressed
    }
}

pub struct Table {
    name: String,
    /// When this incarnation of the table was created here (µs since the
    /// epoch): a table dropped and created again is another table.
    created: i64,
    schema: RwLock<Arc<TableSchema>>,
    /// Held while a schema change is decided, so two requests adding the
    /// same column cannot both win with different types.
    evolving: Mutex<()>,
    /// The settings and when they were set (microseconds, by the node that
    /// took the `PUT`): between nodes, the latest wins.
    settings: RwLock<(TableSettings, i64)>,
    partitions: Box<[Mutex<Partition>]>,
    seal_rows: usize,
    /// The node's retention, for a table without its own.
    default_retention: Option<Duration>,
    /// Age after which sealed batches are packed (`StoreConfig`).
    compress_after: Option<Duration>,
    /// Events before this (µs) were evicted to keep a node within its
    /// memory budget, here or on another node (`i64::MIN`: none). Every
    /// replica applies the cluster's latest cut-off, so that any replica
    /// answers like any other.
    kept_from: std::sync::atomic::AtomicI64,
}

impl Table {
    pub(crate) fn new(name: &str, config: &StoreConfig) -> Table {
        Table {
            name: name.to_string(),
            created: crate::now_micros(),
            schema: RwLock::new(Arc::new(TableSchema::default())),
            evolving: Mutex::new(()),
            settings: RwLock::new((TableSettings::default(), 0)),
            partitions: (0..config.partitions)
                .map(|_| Mutex::new(Partition::default()))
                .collect(),
            seal_rows: config.seal_rows,
            default_retention: config.retention,
            compress_after: config.compress_after,
            kept_from: std::sync::atomic::AtomicI64::new(i64::MIN),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn created(&self) -> i64 {
        self.created
    }

    pub fn schema(&self) -> Arc<TableSchema> {
        self.schema.read().clone()
    }

    /// Runs `decide` against the current schema. When it changes the schema,
    /// `decide` runs once more under the evolution lock against the then
    /// current schema, and its outcome is installed; so `decide` must be a
    /// pure function of the schema it is given.
    pub fn evolve<R>(
        &self,
        decide: impl Fn(&mut TableSchema) -> (R, SchemaChange),
    ) -> (R, Arc<TableSchema>) {
        let snapshot = self.schema();
        let mut draft = (*snapshot).clone();
        let (result, change) = decide(&mut draft);
        if change == SchemaChange::None {
            return (result, snapshot);
        }
        let _guard = self.evolving.lock();
        let mut draft = (*self.schema()).clone();
        let (result, change) = decide(&mut draft);
        let installed = Arc::new(draft);
        if change == SchemaChange::Changed {
            *self.schema.write() = installed.clone();
        }
        (result, installed)
    }

    /// Takes in the columns of a batch written by another node: new columns
    /// are added; a type conflict resolves by the cluster rule (Int64 and
    /// Float64 give Float64, anything else Utf8), so any node reads any
    /// replica's batches.
    pub fn absorb_schema(&self, schema: &arrow::datatypes::Schema) {
        let incoming = || {
            schema
                .fields()
                .iter()
                .filter(|f| f.name() != crate::writes::WRITE_COLUMN)
                .filter_map(|f| Some((f.name(), ColumnType::from_data_type(f.data_type())?)))
        };
        // Nearly always nothing changes (a node's own writes, a replica's
        // writes of known columns): checked without copying the schema.
        let current = self.schema();
        if incoming().all(|(name, ty)| current.column_type(name) == Some(ty)) {
            return;
        }
        let fields: Vec<(String, ColumnType)> =
            incoming().map(|(name, ty)| (name.clone(), ty)).collect();
        self.evolve(|s| ((), s.reconcile(&self.name, &fields)));
    }

    pub fn settings(&self) -> TableSettings {
        self.settings.read().0.clone()
    }

    /// When the settings were set (0: never).
    pub fn settings_version(&self) -> i64 {
        self.settings.read().1
    }

    /// Sets the settings unless newer ones are in place; true when set.
    pub fn set_settings(&self, settings: TableSettings, version: i64) -> Result<bool, StoreError> {
        self.check_settings(&settings)?;
        let mut current = self.settings.write();
        if version < current.1 {
            return Ok(false);
        }
        *current = (settings, version);
        Ok(true)
    }

    /// Events with `time` before this (µs) are past retention at `now`:
    /// scans do not read them and `expire` drops whole batches of them.
    /// Every replica computes it from the same gossiped setting and its
    /// own clock, so they agree to within their clocks' difference.
    pub fn retention_cutoff(&self, now: i64) -> Option<i64> {
        let retention = self.settings().retention().or(self.default_retention)?;
        Some(now.saturating_sub(retention.as_micros().min(i64::MAX as u128) as i64))
    }

    /// The oldest event time kept after evictions for memory (µs), if any
    /// were made.
    pub fn kept_from(&self) -> Option<i64> {
        let v = self.kept_from.load(std::sync::atomic::Ordering::Relaxed);
        (v != i64::MIN).then_some(v)
    }

    /// Raises the eviction cut-off to `cutoff` (it never goes back); true
    /// when it rose. Scans hide older rows at once; the next `expire` drops
    /// them.
    pub fn keep_from(&self, cutoff: i64) -> bool {
        self.kept_from
            .fetch_max(cutoff, std::sync::atomic::Ordering::Relaxed)
            < cutoff
    }

    /// Events before this (µs) are not served at `now`: past retention, or
    /// evicted for memory.
    pub fn visible_from(&self, now: i64) -> Option<i64> {
        // None orders below any Some.
        self.retention_cutoff(now).max(self.kept_from())
    }

    /// Drops (or cuts) the sealed batches past retention or the eviction
    /// cut-off; returns how many.
    pub(crate) fn expire(&self, now: i64) -> usize {
        let Some(cutoff) = self.visible_from(now) else {
            return 0;
        };
        self.each_partition("expiring old rows", |p| p.expire(cutoff))
    }

    /// The oldest event time held, if any.
    pub fn oldest_time(&self) -> Option<i64> {
        self.partitions
            .iter()
            .filter_map(|p| p.lock().stored().map(|b| b.time_min).min())
            .min()
    }

    /// The batches' time ranges and memory, for choosing what to evict:
    /// `(time_min, time_max, bytes)`. Append buffers count too (they hold
    /// memory, and their old rows go once they are sealed).
    pub(crate) fn batch_extents(&self, out: &mut Vec<(i64, i64, u64)>) {
        for part in self.partitions.iter() {
            out.extend(
                part.lock()
                    .stored()
                    .map(|b| (b.time_min, b.time_max, b.memory_bytes() as u64)),
            );
        }
    }

    /// Runs `step` on every partition, summing what it reports; a failing
    /// step is logged and leaves that partition as it was.
    fn each_partition(
        &self,
        what: &str,
        step: impl Fn(&mut Partition) -> Result<usize, StoreError>,
    ) -> usize {
        let mut total = 0;
        for part in self.partitions.iter() {
            total += self.logged(what, step(&mut part.lock()));
        }
        total
    }

    /// A count, or 0 with the failure logged.
    fn logged(&self, what: &str, done: Result<usize, StoreError>) -> usize {
        done.unwrap_or_else(|e| {
            tracing::error!(table = %self.name, error = %e, "{what} failed; the batches stay as they were");
            0
        })
    }

    /// Whether the settings fit the table's columns.
    pub fn check_settings(&self, settings: &TableSettings) -> Result<(), StoreError> {
        if let Some(r) = &settings.retention
            && parse_retention(r).is_none()
        {
            return Err(StoreError::BadRetention(r.clone()));
        }
        if let Some(column) = &settings.partition_key
            && let Some(found @ (ColumnType::StringList | ColumnType::Timestamp)) =
                self.schema().column_type(column)
        {
            return Err(StoreError::BadPartitionKey {
                column: column.clone(),
                found,
            });
        }
        Ok(())
    }

    pub fn partitions(&self) -> u32 {
        self.partitions.len() as u32
    }

    /// Appends the rows of a batch whose write the partition does not hold
    /// yet to its append buffer, sealing it when full; returns the rows
    /// taken.
    pub fn append(&self, partition: u32, batch: StoredBatch) -> Result<usize, StoreError> {
        // Rows before the eviction cut-off would never be served, and
        // storing them would undo the eviction (a catch-up from a replica
        // that has not applied it yet would bring them back).
        let batch = match self.kept_from() {
            Some(k) if batch.time_min < k => batch.since(k)?,
            _ => batch,
        };
        if batch.rows() == 0 {
            return Ok(0);
        }
        let mut p = self.partition(partition)?.lock();
        let rows = p.append(batch)?;
        if p.open_rows() >= self.seal_rows {
            p.seal(&self.schema())?;
            self.pack_if_eager(&mut p)?;
        }
        Ok(rows)
    }

    fn partition(&self, partition: u32) -> Result<&Mutex<Partition>, StoreError> {
        self.partitions.get(partition as usize).ok_or_else(|| {
            StoreError::Arrow(format!(
                "partition {partition} is outside this table's {} partitions",
                self.partitions.len()
            ))
        })
    }

    /// The ids of the writes a partition holds, in order.
    pub fn write_ids(&self, partition: u32) -> Result<Vec<u64>, StoreError> {
        let mut ids: Vec<u64> = self
            .partition(partition)?
            .lock()
            .write_ids()
            .iter()
            .copied()
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// A partition's rows of the writes in `wanted`.
    pub fn rows_of(
        &self,
        partition: u32,
        wanted: &std::collections::HashSet<u64>,
    ) -> Result<Vec<arrow::array::RecordBatch>, StoreError> {
        self.partition(partition)?.lock().rows_of(wanted)
    }

    /// Every batch of a partition, sealed or not.
    pub fn partition_batches(
        &self,
        partition: u32,
    ) -> Result<Vec<arrow::array::RecordBatch>, StoreError> {
        match self.partitions.get(partition as usize) {
            Some(p) => p.lock().all_batches(),
            None => Ok(Vec::new()),
        }
    }

    /// Forgets a partition's rows and writes if the writes it holds are
    /// exactly `ids` (none arrived since they were read); true if so.
    pub fn clear_partition_if(&self, partition: u32, ids: &std::collections::HashSet<u64>) -> bool {
        let Some(p) = self.partitions.get(partition as usize) else {
            return false;
        };
        let mut p = p.lock();
        if p.write_ids() != ids {
            return false;
        }
        *p = Partition::default();
        true
    }

    /// Forgets a partition's rows and writes: this node no longer holds it.
    pub fn clear_partition(&self, partition: u32) -> usize {
        match self.partitions.get(partition as usize) {
            Some(p) => std::mem::take(&mut *p.lock()).rows(),
            None => 0,
        }
    }

    /// The batches of `partitions` that may hold rows with `time` in
    /// `[from, to)` (microseconds), in the schema they were written with.
    pub fn batches(
        &self,
        partitions: &[u32],
        from: Option<i64>,
        to: Option<i64>,
    ) -> Vec<StoredBatch> {
        let schema = self.schema();
        let cutoff = self.visible_from(crate::now_micros());
        let from = match cutoff {
            Some(cutoff) => Some(from.map_or(cutoff, |f| f.max(cutoff))),
            None => from,
        };
        let mut out = Vec::new();
        for &p in partitions {
            if let Some(part) = self.partitions.get(p as usize) {
                let mut part = part.lock();
                // Many small requests leave many small batches in a buffer,
                // and a scan pays per batch (a million rows in 13,000
                // batches took 58 ms to count, sealed 4 ms): seal them now,
                // once, rather than make every query pay.
                if part.open_batches() > SEAL_ON_READ
                    && let Err(e) = part
                        .seal(&schema)
                        .and_then(|()| self.pack_if_eager(&mut part))
                {
                    tracing::error!(table = %self.name, error = %e, "sealing failed; the buffer stays open");
                }
                part.batches(from, to, &mut out);
            }
        }
        match cutoff {
            Some(cutoff) => out
                .into_iter()
                .filter_map(|b| match b.since(cutoff) {
                    Ok(b) => (b.rows() > 0).then_some(b),
                    Err(e) => {
                        tracing::error!(table = %self.name, error = %e, "cannot apply retention to a batch; it is skipped");
                        None
                    }
                })
                .collect(),
            None => out,
        }
    }

    pub(crate) fn seal_aged(&self, age: Duration) {
        let schema = self.schema();
        for part in self.partitions.iter() {
            let mut p = part.lock();
            if p.open_for().is_some_and(|t| t >= age)
                && let Err(e) = p.seal(&schema).and_then(|()| self.pack_if_eager(&mut p))
            {
                tracing::error!(table = %self.name, error = %e, "sealing failed; the buffer stays open");
            }
        }
    }

    /// With `compress_after` zero, batches are packed as they are sealed
    /// (else by the sealing pass once they are old enough).
    fn pack_if_eager(&self, p: &mut Partition) -> Result<(), StoreError> {
        if self.compress_after == Some(Duration::ZERO) {
            p.pack_cold(Duration::ZERO)?;
        }
        Ok(())
    }

    /// Packs sealed batches made at least `age` ago; returns how many.
    pub(crate) fn pack_cold(&self, age: Duration) -> usize {
        self.each_partition("packing cold batches", |p| p.pack_cold(age))
    }

    /// Packs every plain sealed batch, calling `go_on` (with no partition
    /// locked: it may measure the table) after each partition that packed
    /// some, and stopping when it answers false.
    pub(crate) fn pack_all(&self, go_on: &dyn Fn() -> bool) -> usize {
        let mut total = 0;
        for part in self.partitions.iter() {
            let packed = self.logged("packing batches", part.lock().pack_cold(Duration::ZERO));
            total += packed;
            if packed > 0 && !go_on() {
                break;
            }
        }
        total
    }

    /// Memory of the table's batches: plain ones, packed ones, and what the
    /// packed ones would take plain.
    pub fn bytes(&self) -> TableBytes {
        let mut out = TableBytes::default();
        for part in self.partitions.iter() {
            for b in part.lock().stored() {
                if b.is_packed() {
                    out.compressed += b.memory_bytes() as u64;
                    out.compressed_plain += b.plain_bytes() as u64;
                } else {
                    out.plain += b.memory_bytes() as u64;
                }
            }
        }
        out
    }

    /// Merges small sealed batches, partition by partition; returns the
    /// batches merged away.
    pub(crate) fn compact(&self) -> usize {
        let schema = self.schema();
        self.each_partition("compaction", |p| p.compact(&schema, self.seal_rows))
    }

    /// Rows held, per partition.
    pub fn partition_rows(&self) -> Vec<u64> {
        self.partitions
            .iter()
            .map(|p| p.lock().rows() as u64)
            .collect()
    }

    pub fn rows(&self) -> u64 {
        self.partitions.iter().map(|p| p.lock().rows() as u64).sum()
    }

    pub fn memory_bytes(&self) -> u64 {
        self.bytes().held()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, RecordBatch, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema};

    fn batch(times: &[i64], x: Option<&[i64]>) -> StoredBatch {
        let mut fields = vec![Field::new("time", ColumnType::Timestamp.data_type(), false)];
        let mut cols: Vec<arrow::array::ArrayRef> = vec![Arc::new(
            TimestampMicrosecondArray::from(times.to_vec()).with_timezone("UTC"),
        )];
        if let Some(x) = x {
            fields.push(Field::new("x", DataType::Int64, true));
            cols.push(Arc::new(Int64Array::from(x.to_vec())));
        }
        StoredBatch::new(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap())
            .unwrap()
    }

    fn table(seal_rows: usize) -> Table {
        let config = StoreConfig {
            partitions: 4,
            seal_rows,
            seal_age: Duration::ZERO,
            retention: None,
            compress_after: None,
            ..StoreConfig::default()
        };
        let t = Table::new("t", &config);
        t.evolve(|s| ((), s.accept("t", [("x", ColumnType::Int64)]).unwrap()));
        t
    }

    #[test]
    fn slices_count_only_their_own_rows() {
        use crate::partition::slice_bytes;
        use arrow::array::{ArrayRef, ListBuilder, StringBuilder};
        let mut tags = ListBuilder::new(StringBuilder::new());
        for i in 0..1000 {
            tags.values().append_value(format!("tag-{i}"));
            tags.values().append_value("x");
            tags.append(true);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(0..1000)),
            Arc::new(tags.finish()),
        ];
        let batch = RecordBatch::try_from_iter(["n", "tags"].into_iter().zip(columns)).unwrap();
        let whole = slice_bytes(&batch);
        let parts: usize = (0..10)
            .map(|k| slice_bytes(&batch.slice(k * 100, 100)))
            .sum();
        assert!(whole > 2 * 8000, "{whole}");
        assert!(
            parts.abs_diff(whole) < whole / 20,
            "ten slices {parts} vs whole {whole}"
        );
        assert!(
            batch.slice(0, 100).get_array_memory_size() > whole,
            "arrow counts a slice's whole buffers"
        );
    }

    #[test]
    fn an_eviction_cut_off_hides_drops_and_keeps_out_older_rows() {
        let t = table(2);
        t.append(0, batch(&[1, 2], Some(&[1, 2]))).unwrap();
        t.append(0, batch(&[10, 11], Some(&[10, 11]))).unwrap();
        t.append(1, batch(&[3, 4, 12, 13], Some(&[3, 4, 12, 13])))
            .unwrap();
        assert_eq!(t.pack_cold(Duration::ZERO), 3);
        assert!(t.keep_from(10));
        assert!(!t.keep_from(5), "a cut-off never goes back");
        assert_eq!(t.kept_from(), Some(10));
        let seen: usize = t
            .batches(&[0, 1], None, None)
            .iter()
            .map(|b| b.plain().unwrap().num_rows())
            .sum();
        assert_eq!(seen, 4, "scans hide older rows at once");
        assert_eq!(
            t.expire(crate::now_micros()),
            2,
            "one batch dropped, one cut"
        );
        assert_eq!(t.rows(), 4);
        assert_eq!(t.bytes().plain, 0, "the cut batch stays packed");
        assert_eq!(
            t.append(0, batch(&[3, 12], Some(&[3, 12]))).unwrap(),
            1,
            "a row before the cut-off is not stored"
        );
        assert_eq!(t.append(0, batch(&[5], Some(&[5]))).unwrap(), 0);
    }

    #[test]
    fn eviction_takes_the_oldest_events_first_across_tables() {
        let eviction_cutoff = |store: &crate::Store, bytes| {
            crate::eviction_cutoff(store.tables().iter().map(|t| &**t), bytes)
        };
        let store = crate::Store::new(StoreConfig {
            partitions: 4,
            seal_rows: 2,
            ..StoreConfig::default()
        });
        let old = store.get_or_create("old").unwrap();
        let new = store.get_or_create("new").unwrap();
        old.append(0, batch(&[100, 199], None)).unwrap();
        new.append(0, batch(&[300, 399], None)).unwrap();
        new.append(1, batch(&[400, 499], None)).unwrap();
        let old_bytes = old.memory_bytes();
        let cut = eviction_cutoff(&store, old_bytes).unwrap();
        assert_eq!(cut, 200, "all of the old table's batch, nothing newer");
        let cut = eviction_cutoff(&store, old_bytes + new.memory_bytes() / 4).unwrap();
        assert!(
            (300..400).contains(&cut),
            "{cut}: into the newer table's oldest batch"
        );
        assert_eq!(eviction_cutoff(&store, u64::MAX), Some(500), "everything");
        assert!(eviction_cutoff(&crate::Store::new(StoreConfig::default()), 1).is_none());
    }

    #[test]
    fn sealed_batches_are_in_time_order_and_scans_read_their_range_only() {
        let t = table(4);
        t.append(1, batch(&[5, 1], Some(&[50, 10]))).unwrap();
        t.append(1, batch(&[3, 2], Some(&[30, 20]))).unwrap();
        let all = t.batches(&[1], None, None);
        assert_eq!(all.len(), 1);
        assert!(all[0].sorted);
        let all0 = all[0].plain().unwrap();
        let x = all0.column_by_name("x").unwrap();
        let x = x.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(
            x.values().to_vec(),
            vec![10, 20, 30, 50],
            "rows follow time"
        );
        let some = t.batches(&[1], Some(2), Some(4));
        assert_eq!(some.len(), 1);
        assert_eq!(some[0].rows(), 2, "only times 2 and 3");
        assert!(t.batches(&[1], Some(6), None).is_empty());
    }

    #[test]
    fn a_scan_seals_a_buffer_of_many_small_batches() {
        let t = table(1_000);
        for i in 0..=SEAL_ON_READ as i64 {
            t.append(2, batch(&[i], Some(&[i]))).unwrap();
        }
        let batches = t.batches(&[2], None, None);
        assert_eq!(batches.len(), 1, "sealed by the scan");
        assert_eq!(batches[0].plain().unwrap().num_rows(), SEAL_ON_READ + 1);
        assert_eq!(t.rows(), SEAL_ON_READ as u64 + 1);
    }

    #[test]
    fn seals_by_rows_and_keeps_every_row() {
        let t = table(4);
        t.append(1, batch(&[1, 2], Some(&[1, 2]))).unwrap();
        t.append(1, batch(&[3], None)).unwrap();
        assert_eq!(
            t.batches(&[1], None, None).len(),
            2,
            "not sealed below the threshold"
        );
        t.append(1, batch(&[4], Some(&[4]))).unwrap();
        let batches = t.batches(&[1], None, None);
        assert_eq!(batches.len(), 1, "sealed into one batch");
        assert_eq!((batches[0].time_min, batches[0].time_max), (1, 4));
        assert_eq!(batches[0].plain().unwrap().num_columns(), 2);
        assert_eq!(t.rows(), 4);
        assert!(t.batches(&[0, 2, 3], None, None).is_empty());
    }

    #[test]
    fn seals_by_age() {
        let t = table(1_000);
        t.append(0, batch(&[1], None)).unwrap();
        t.append(0, batch(&[2], None)).unwrap();
        t.seal_aged(Duration::ZERO);
        assert_eq!(t.batches(&[0], None, None).len(), 1);
    }

    #[test]
    fn compaction_merges_small_sealed_batches_and_keeps_every_row() {
        let t = table(8);
        // Sealed one by one by age: five batches of 1 row (small: under 8/4).
        for i in [5, 1, 4, 2, 3] {
            t.append(3, batch(&[i], (i != 4).then_some(&[i * 10])))
                .unwrap();
            t.seal_aged(Duration::ZERO);
        }
        // A batch of 2 rows (not small) stays as it is.
        t.append(3, batch(&[7, 6], Some(&[70, 60]))).unwrap();
        t.seal_aged(Duration::ZERO);
        assert_eq!(t.batches(&[3], None, None).len(), 6);
        assert_eq!(t.compact(), 4, "five small batches become one");
        assert_eq!(t.compact(), 0, "nothing small left to merge");
        let batches = t.batches(&[3], None, None);
        let merged = batches
            .iter()
            .find(|b| b.rows() == 5)
            .expect("one batch of 5 rows");
        assert!(merged.sorted);
        assert_eq!((merged.time_min, merged.time_max), (1, 5));
        let merged_rows = merged.plain().unwrap();
        let x = merged_rows.column_by_name("x").unwrap();
        let x = x.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(
            x.iter().collect::<Vec<_>>(),
            vec![Some(10), Some(20), Some(30), None, Some(50)],
            "rows in time order, the one without x as NULL"
        );
        assert_eq!(t.rows(), 7);
        assert_eq!(
            t.batches(&[3], Some(2), Some(4))[0].rows(),
            2,
            "time slices still work"
        );
    }

    #[test]
    fn compaction_stops_at_the_target_size() {
        let t = table(8);
        for i in 0..10 {
            t.append(0, batch(&[i], Some(&[i]))).unwrap();
            t.partitions[0].lock().seal(&t.schema()).unwrap();
        }
        assert_eq!(
            t.compact(),
            8,
            "ten batches of 1 row become two of 8 and 2 rows"
        );
        let mut sizes: Vec<usize> = t
            .batches(&[0], None, None)
            .iter()
            .map(StoredBatch::rows)
            .collect();
        sizes.sort();
        assert_eq!(sizes, vec![2, 8]);
    }

    #[test]
    fn retention_hides_old_rows_at_once_and_drops_old_batches() {
        let t = table(2);
        let now = crate::now_micros();
        let hour = 3_600_000_000;
        // One sealed batch wholly old, one straddling the cutoff, one new.
        t.append(0, batch(&[now - 3 * hour, now - 2 * hour], None))
            .unwrap();
        t.append(1, batch(&[now - 2 * hour, now - 10], None))
            .unwrap();
        t.append(2, batch(&[now - 20, now - 10], None)).unwrap();
        let rows = |t: &Table| -> usize {
            t.batches(&[0, 1, 2, 3], None, None)
                .iter()
                .map(StoredBatch::rows)
                .sum()
        };
        assert_eq!(rows(&t), 6);
        let mut settings = TableSettings {
            retention: Some("soon".into()),
            ..TableSettings::default()
        };
        assert!(matches!(
            t.set_settings(settings.clone(), 1),
            Err(StoreError::BadRetention(_))
        ));
        settings.retention = Some("0s".into());
        assert!(
            t.set_settings(settings.clone(), 1).is_err(),
            "zero is refused"
        );
        settings.retention = Some("1h".into());
        assert!(t.set_settings(settings, 1).unwrap());
        assert_eq!(rows(&t), 3, "scans skip rows past retention at once");
        assert_eq!(
            t.expire(now),
            2,
            "the old batch dropped, the half-old one cut"
        );
        assert_eq!(t.rows(), 3);
        assert_eq!(rows(&t), 3);
        // A batch with under a quarter of old rows is left whole.
        t.append(
            3,
            batch(&[now - 2 * hour, now - 4, now - 3, now - 2, now - 1], None),
        )
        .unwrap();
        t.seal_aged(Duration::ZERO);
        assert_eq!(t.expire(now), 0);
        assert_eq!(t.rows(), 8);
        assert_eq!(rows(&t), 7);
    }

    #[test]
    fn the_store_retention_applies_to_tables_without_their_own() {
        let store = crate::Store::new(StoreConfig {
            partitions: 1,
            retention: Some(Duration::from_secs(60)),
            ..StoreConfig::default()
        });
        let t = store.get_or_create("t").unwrap();
        let now = crate::now_micros();
        t.append(0, batch(&[now - 120_000_000, now], None)).unwrap();
        let cutoff = t.retention_cutoff(now).unwrap();
        assert_eq!(cutoff, now - 60_000_000);
        assert_eq!(t.batches(&[0], None, None)[0].rows(), 1);
    }

    #[test]
    fn a_write_is_taken_once_and_forgotten_with_its_rows() {
        let t = table(2);
        let marked = |times: &[i64], id| {
            let b = batch(times, None).plain().unwrap();
            StoredBatch::new(crate::writes::with_write_id(&b, id).unwrap()).unwrap()
        };
        let now = crate::now_micros();
        let hour = 3_600_000_000;
        assert_eq!(t.append(0, marked(&[now - 3 * hour], 1)).unwrap(), 1);
        assert_eq!(
            t.append(0, marked(&[now - 3 * hour], 1)).unwrap(),
            0,
            "a repeat"
        );
        assert_eq!(t.append(0, marked(&[now - 10, now - 5], 2)).unwrap(), 2);
        assert_eq!(t.write_ids(0).unwrap(), vec![1, 2]);
        assert_eq!(t.rows(), 3, "sealed at 2 rows, every row once");
        let wanted = std::collections::HashSet::from([2]);
        let rows: usize = t
            .rows_of(0, &wanted)
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(rows, 2, "the rows of write 2 only");
        // Write 1 alone in an old batch: dropped by retention, its id too.
        t.append(0, marked(&[now - 3 * hour], 3)).unwrap();
        t.seal_aged(Duration::ZERO);
        let day = TableSettings {
            retention: Some("1h".into()),
            ..TableSettings::default()
        };
        t.set_settings(day, 1).unwrap();
        t.expire(now);
        assert_eq!(t.write_ids(0).unwrap(), vec![2]);
        assert!(t.clear_partition_if(0, &wanted));
        assert_eq!(t.rows(), 0);
    }

    /// A batch with a column of every stored type, some values null.
    fn every_type(times: &[i64]) -> StoredBatch {
        use arrow::array::{BooleanArray, Float64Array, ListBuilder, StringArray, StringBuilder};
        let n = times.len();
        let mut tags = ListBuilder::new(StringBuilder::new());
        for i in 0..n {
            if i % 3 == 0 {
                tags.append_null();
            } else {
                tags.values().append_value(format!("t{i}"));
                tags.values().append_null();
                tags.append(true);
            }
        }
        let columns: Vec<arrow::array::ArrayRef> = vec![
            Arc::new(TimestampMicrosecondArray::from(times.to_vec()).with_timezone("UTC")),
            Arc::new(Int64Array::from_iter(
                (0..n as i64).map(|i| (i % 4 != 0).then_some(i * 7)),
            )),
            Arc::new(Float64Array::from_iter(
                (0..n).map(|i| (i % 5 != 0).then_some(i as f64 / 3.0)),
            )),
            Arc::new(StringArray::from_iter(
                (0..n).map(|i| (i % 2 == 0).then(|| format!("s{}", i % 11))),
            )),
            Arc::new(BooleanArray::from_iter(
                (0..n).map(|i| (i % 6 != 0).then_some(i % 2 == 0)),
            )),
            Arc::new(tags.finish()),
        ];
        let fields: Vec<Field> = [
            ("time", ColumnType::Timestamp),
            ("i", ColumnType::Int64),
            ("f", ColumnType::Float64),
            ("s", ColumnType::Utf8),
            ("b", ColumnType::Boolean),
            ("tags", ColumnType::StringList),
        ]
        .iter()
        .map(|(n, t)| Field::new(*n, t.data_type(), *n != "time"))
        .collect();
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        let batch = crate::writes::with_write_id(&batch, 99).unwrap();
        StoredBatch::new(batch).unwrap().sorted_by_time().unwrap()
    }

    #[test]
    fn a_packed_batch_reads_back_as_it_was() {
        let plain = every_type(&(0..1000).map(|i| i * 10).collect::<Vec<_>>());
        let packed = plain.pack().unwrap();
        assert!(packed.is_packed());
        assert!(
            packed.memory_bytes() * 10 < plain.memory_bytes() * 6,
            "{} packed against {} plain",
            packed.memory_bytes(),
            plain.memory_bytes()
        );
        assert_eq!(packed.plain_bytes(), plain.memory_bytes());
        assert_eq!(
            packed.plain().unwrap(),
            plain.plain().unwrap(),
            "every column type"
        );
        assert_eq!(packed.write_ids(), plain.write_ids());
        let encoded = crate::partition::dictionary_encoded(&plain.plain().unwrap()).unwrap();
        assert!(
            matches!(
                encoded.schema().field_with_name("s").unwrap().data_type(),
                DataType::Dictionary(..)
            ),
            "11 distinct strings in 1,000 rows are packed as a dictionary"
        );
        let distinct: Vec<String> = (0..1000).map(|i| format!("v{i}")).collect();
        let wide = RecordBatch::try_from_iter([(
            "u",
            Arc::new(arrow::array::StringArray::from(distinct)) as arrow::array::ArrayRef,
        )])
        .unwrap();
        let wide = crate::partition::dictionary_encoded(&wide).unwrap();
        assert_eq!(
            wide.schema().field(0).data_type(),
            &DataType::Utf8,
            "all distinct: plain"
        );
        let some = packed.read(Some(&["s"])).unwrap();
        let names: Vec<String> = some
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names,
            vec!["time", "s"],
            "only the columns asked for, and time"
        );
        // A time window cuts a packed batch when it is read, as a plain one.
        let (a, b) = (
            plain.within(Some(2_000), Some(5_005)),
            packed.within(Some(2_000), Some(5_005)),
        );
        assert_eq!(a.plain().unwrap(), b.plain().unwrap());
        assert_eq!(b.plain().unwrap().num_rows(), 301);
        let narrower = b.within(Some(3_000), None);
        assert_eq!(narrower.plain().unwrap().num_rows(), 201);
    }

    #[test]
    fn a_table_answers_the_same_with_packed_batches() {
        let eager = Table::new(
            "t",
            &StoreConfig {
                partitions: 1,
                seal_rows: 64,
                seal_age: Duration::ZERO,
                retention: None,
                compress_after: Some(Duration::ZERO),
                ..StoreConfig::default()
            },
        );
        let plain = table(64);
        for t in [&eager, &plain] {
            for chunk in 0..10 {
                let times: Vec<i64> = (0..50).map(|i| (i * 37 + chunk * 11) % 1000).collect();
                let b = every_type(&times).plain().unwrap();
                let b = crate::writes::with_write_id(&b, chunk as u64).unwrap();
                t.absorb_schema(&b.schema());
                t.append(0, StoredBatch::new(b).unwrap()).unwrap();
            }
            t.seal_aged(Duration::ZERO);
            t.compact();
        }
        assert!(
            eager.bytes().compressed > 0 && eager.bytes().plain == 0,
            "{:?}",
            eager.bytes()
        );
        assert_eq!(plain.bytes().compressed, 0);
        let rows = |t: &Table, from, to| -> Vec<RecordBatch> {
            let mut out: Vec<RecordBatch> = t
                .batches(&[0], from, to)
                .iter()
                .map(|b| b.plain().unwrap())
                .collect();
            out.sort_by_key(|b| b.num_rows());
            out
        };
        for (from, to) in [(None, None), (Some(100), Some(400)), (Some(999), None)] {
            let (a, b) = (rows(&eager, from, to), rows(&plain, from, to));
            let count = |v: &[RecordBatch]| v.iter().map(|b| b.num_rows()).sum::<usize>();
            assert_eq!(count(&a), count(&b), "{from:?}..{to:?}");
        }
        assert_eq!(eager.write_ids(0).unwrap(), plain.write_ids(0).unwrap());
        let wanted = std::collections::HashSet::from([3]);
        let of = |t: &Table| {
            t.rows_of(0, &wanted)
                .unwrap()
                .iter()
                .map(|b| b.num_rows())
                .sum::<usize>()
        };
        assert_eq!(of(&eager), 50);
        assert_eq!(of(&plain), 50);
        assert_eq!(eager.rows(), 500);
    }

    #[test]
    fn time_ranges_prune_batches() {
        let t = table(1);
        t.append(0, batch(&[10, 20], None)).unwrap();
        t.append(0, batch(&[30, 40], None)).unwrap();
        assert_eq!(t.batches(&[0], Some(25), None).len(), 1);
        assert_eq!(t.batches(&[0], None, Some(20)).len(), 1);
        assert_eq!(t.batches(&[0], Some(20), Some(31)).len(), 2);
        assert_eq!(t.batches(&[0], Some(41), None).len(), 0);
    }

    #[test]
    fn list_columns_cannot_be_partition_keys() {
        let t = table(1);
        t.evolve(|s| {
            (
                (),
                s.accept("t", [("tags", ColumnType::StringList)]).unwrap(),
            )
        });
        let err = t
            .set_settings(
                TableSettings {
                    partition_key: Some("tags".into()),
                    ..TableSettings::default()
                },
                1,
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("\"tags\" cannot be List<Utf8>"),
            "{err}"
        );
        let user = TableSettings {
            partition_key: Some("user".into()),
            ..TableSettings::default()
        };
        assert!(t.set_settings(user, 5).unwrap());
        assert!(
            !t.set_settings(TableSettings::default(), 4).unwrap(),
            "older settings lose"
        );
        assert_eq!(t.settings().partition_key.as_deref(), Some("user"));
        assert_eq!(t.settings_version(), 5);
    }
}
