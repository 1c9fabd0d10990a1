//! One (table, partition): an append buffer of small batches as ingest
//! delivers them, sealed into larger batches by size or age. Sealed
//! batches are sorted by `time`, so that a scan with a time range reads a
//! slice of them rather than all their rows.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::array::{Array, RecordBatch, RecordBatchOptions, TimestampMicrosecondArray};
use arrow::compute::{concat_batches, max, min, sort_to_indices, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::StoreError;
use crate::schema::{TIME_COLUMN, TableSchema, adapt_batch};
use crate::writes::{self, WRITE_COLUMN};

/// A batch and the range of its `time` column, so that scans with a time
/// filter can skip it without reading it. A cold sealed batch is kept
/// *packed* (Arrow IPC, LZ4-compressed) and decompressed when read, only
/// the columns a scan asks for.
#[derive(Debug, Clone)]
pub struct StoredBatch {
    data: Data,
    /// Smallest and largest `time`, microseconds since the epoch (UTC).
    pub time_min: i64,
    pub time_max: i64,
    /// Rows are in `time` order (sealed batches), so that a scan reads only
    /// the rows of its time range.
    pub sorted: bool,
    /// The `[from, to)` still to cut from a packed batch once it is read.
    window: (Option<i64>, Option<i64>),
    /// When these rows were put together (appended, sealed or merged): a
    /// batch is cold once this is old enough.
    made: Instant,
}

#[derive(Debug, Clone)]
enum Data {
    /// With its memory, measured once when first asked: the budget's
    /// measure walks every batch five times a second.
    Plain(RecordBatch, std::sync::OnceLock<usize>),
    Packed(Arc<Packed>),
}

impl Data {
    fn plain(batch: RecordBatch) -> Data {
        Data::Plain(batch, std::sync::OnceLock::new())
    }
}

/// A cold batch in LZ4-compressed Arrow IPC, with what the store needs of
/// it without decompressing it.
#[derive(Debug)]
struct Packed {
    ipc: Vec<u8>,
    schema: SchemaRef,
    rows: usize,
    plain_bytes: usize,
    ids: HashSet<u64>,
}

impl StoredBatch {
    /// Wraps a batch whose `time` column is a non-null Timestamp(µs).
    pub fn new(batch: RecordBatch) -> Result<StoredBatch, StoreError> {
        let time = time_column(&batch)
            .filter(|c| c.null_count() == 0)
            .ok_or_else(|| {
                StoreError::Arrow("a stored batch needs a non-null time column".into())
            })?;
        let (time_min, time_max) = (min(time).unwrap_or(i64::MAX), max(time).unwrap_or(i64::MIN));
        Ok(StoredBatch {
            data: Data::plain(batch),
            time_min,
            time_max,
            sorted: false,
            window: (None, None),
            made: Instant::now(),
        })
    }

    /// The rows as a plain batch (decompressed if packed).
    pub fn plain(&self) -> Result<RecordBatch, StoreError> {
        self.read(None)
    }

    /// The rows, with at least the named columns (all when None): a packed
    /// batch decompresses only those.
    pub fn read(&self, columns: Option<&[&str]>) -> Result<RecordBatch, StoreError> {
        let packed = match &self.data {
            Data::Plain(b, _) => return Ok(b.clone()),
            Data::Packed(p) => p,
        };
        if columns.is_some_and(|c| c.is_empty()) && self.window == (None, None) {
            // count(*) and the like: the row count is known without
            // decompressing anything.
            return rebuilt(vec![], vec![], packed.rows);
        }
        let projection: Option<Vec<usize>> = columns.map(|names| {
            packed
                .schema
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| f.name() == TIME_COLUMN || names.contains(&f.name().as_str()))
                .map(|(i, _)| i)
                .collect()
        });
        let batch = crate::wal::read_ipc_projected(&packed.ipc, projection)
            .map_err(|e| StoreError::Arrow(format!("a packed batch cannot be read: {e}")))?;
        let batch = undictionary(batch, &packed.schema)?;
        let (from, to) = self.window;
        if from.is_none() && to.is_none() {
            return Ok(batch);
        }
        Ok(time_slice(&batch, from, to))
    }

    /// The plain batch, if this one is not packed.
    fn plain_ref(&self) -> Option<&RecordBatch> {
        match &self.data {
            Data::Plain(b, _) => Some(b),
            Data::Packed(_) => None,
        }
    }

    pub fn schema(&self) -> SchemaRef {
        match &self.data {
            Data::Plain(b, _) => b.schema(),
            Data::Packed(p) => p.schema.clone(),
        }
    }

    pub fn is_packed(&self) -> bool {
        matches!(self.data, Data::Packed(_))
    }

    /// The ids of the writes whose rows this batch holds.
    pub fn write_ids(&self) -> HashSet<u64> {
        match &self.data {
            Data::Plain(b, _) => writes::ids_in(b),
            Data::Packed(p) => p.ids.clone(),
        }
    }

    /// The same rows packed (a sorted, plain batch; others stay as they
    /// are).
    pub(crate) fn pack(&self) -> Result<StoredBatch, StoreError> {
        let Some(batch) = self.plain_ref().filter(|_| self.sorted) else {
            return Ok(self.clone());
        };
        let mut ipc = Vec::new();
        crate::wal::write_ipc(&dictionary_encoded(batch)?, &mut ipc)
            .map_err(|e| StoreError::Arrow(format!("cannot pack a batch: {e}")))?;
        ipc.shrink_to_fit();
        let packed = Packed {
            schema: batch.schema(),
            rows: batch.num_rows(),
            plain_bytes: self.plain_bytes(),
            ids: writes::ids_in(batch),
            ipc,
        };
        Ok(StoredBatch {
            data: Data::Packed(Arc::new(packed)),
            ..self.clone()
        })
    }

    /// The `time` column of a plain batch.
    fn times(&self) -> Result<TimestampMicrosecondArray, StoreError> {
        let batch = self.plain()?;
        Ok(time_column(&batch).expect("checked at creation").clone())
    }

    /// The same rows in `time` order; no copy when they already are (events
    /// of one in-order stream).
    pub(crate) fn sorted_by_time(self) -> Result<StoredBatch, StoreError> {
        if self.sorted {
            return Ok(self);
        }
        let times = self.times()?;
        if times.nulls().is_none() && times.values().is_sorted() {
            return Ok(StoredBatch {
                sorted: true,
                ..self
            });
        }
        let order = sort_to_indices(&times, None, None)?;
        Ok(StoredBatch {
            data: Data::plain(take_record_batch(&self.plain()?, &order)?),
            sorted: true,
            made: Instant::now(),
            ..self
        })
    }

    /// The rows in `[from, to)` of a sorted batch (all of an unsorted one),
    /// without copying; a packed batch is cut when it is read.
    pub(crate) fn within(&self, from: Option<i64>, to: Option<i64>) -> StoredBatch {
        let inside =
            from.is_none_or(|f| f <= self.time_min) && to.is_none_or(|t| t > self.time_max);
        if inside || !self.sorted {
            return self.clone();
        }
        let Some(batch) = self.plain_ref() else {
            let narrower = |a: Option<i64>, b: Option<i64>, pick: fn(i64, i64) -> i64| match (a, b)
            {
                (Some(a), Some(b)) => Some(pick(a, b)),
                (a, b) => a.or(b),
            };
            return StoredBatch {
                window: (
                    narrower(self.window.0, from, i64::max),
                    narrower(self.window.1, to, i64::min),
                ),
                ..self.clone()
            };
        };
        StoredBatch {
            data: Data::plain(time_slice(batch, from, to)),
            ..self.clone()
        }
    }

    /// Only the rows at or after `cutoff`, copied out of an unsorted batch
    /// when it holds older ones (sorted batches are sliced by `within`).
    pub(crate) fn since(self, cutoff: i64) -> Result<StoredBatch, StoreError> {
        if self.time_min >= cutoff || self.sorted {
            return Ok(self);
        }
        let keep: arrow::array::BooleanArray = self
            .times()?
            .iter()
            .map(|t| t.map(|t| t >= cutoff))
            .collect();
        let batch = arrow::compute::filter_record_batch(&self.plain()?, &keep)?;
        StoredBatch::new(batch)
    }

    /// True when some row may fall in `[from, to)` (microseconds).
    pub fn overlaps(&self, from: Option<i64>, to: Option<i64>) -> bool {
        from.is_none_or(|f| self.time_max >= f) && to.is_none_or(|t| self.time_min < t)
    }

    /// Rows held (of a packed batch cut by a window: before the cut).
    pub fn rows(&self) -> usize {
        match &self.data {
            Data::Plain(b, _) => b.num_rows(),
            Data::Packed(p) => p.rows,
        }
    }

    /// Memory held: the compressed bytes of a packed batch.
    pub fn memory_bytes(&self) -> usize {
        match &self.data {
            Data::Plain(..) => self.plain_bytes(),
            Data::Packed(p) => p.ipc.len(),
        }
    }

    /// Memory the rows take plain (for a packed batch: before packing).
    pub fn plain_bytes(&self) -> usize {
        match &self.data {
            Data::Plain(b, bytes) => *bytes.get_or_init(|| slice_bytes(b)),
            Data::Packed(p) => p.plain_bytes,
        }
    }
}

/// The batch with its low-cardinality string columns (at most one
/// distinct value per `DICTIONARY_ROWS` rows) dictionary-encoded, for
/// packing: on the generator's events, dictionaries take packed batches
/// from 58.5 to 38.1 MB per million events.
pub(crate) fn dictionary_encoded(batch: &RecordBatch) -> Result<RecordBatch, StoreError> {
    let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let few = column
            .as_string_opt::<i32>()
            .is_some_and(|c| at_most_distinct(c, batch.num_rows() / DICTIONARY_ROWS));
        if few {
            fields.push(field.as_ref().clone().with_data_type(dictionary.clone()));
            columns.push(arrow::compute::cast(column, &dictionary)?);
            continue;
        }
        fields.push(field.as_ref().clone());
        columns.push(column.clone());
    }
    rebuilt(fields, columns, batch.num_rows())
}

/// Whether a string column holds at most `limit` distinct values; stops at
/// the first one over, so that a column of unique strings costs a tenth of
/// a full dictionary build.
fn at_most_distinct(column: &arrow::array::StringArray, limit: usize) -> bool {
    let mut seen = HashSet::with_capacity(limit.min(1024));
    column.iter().flatten().all(|v| {
        seen.insert(v);
        seen.len() <= limit
    })
}

/// A batch of these columns (keeping its row count when there are none).
fn rebuilt(
    fields: Vec<Field>,
    columns: Vec<arrow::array::ArrayRef>,
    rows: usize,
) -> Result<RecordBatch, StoreError> {
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        columns,
        &options,
    )?)
}

/// Rows per distinct value at which a packed string column is stored as
/// a dictionary.
const DICTIONARY_ROWS: usize = 10;

/// A packed batch as read back, with its dictionary-encoded columns
/// decoded to the types of `schema` (scans see the table's types).
fn undictionary(batch: RecordBatch, schema: &Schema) -> Result<RecordBatch, StoreError> {
    let wanted = |f: &Field| {
        schema
            .field_with_name(f.name())
            .map_or(f.data_type(), |w| w.data_type())
            .clone()
    };
    let read = batch.schema();
    if read.fields().iter().all(|f| &wanted(f) == f.data_type()) {
        return Ok(batch);
    }
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in read.fields().iter().zip(batch.columns()) {
        let wanted = wanted(field);
        columns.push(if &wanted == field.data_type() {
            column.clone()
        } else {
            arrow::compute::cast(column, &wanted)?
        });
        fields.push(field.as_ref().clone().with_data_type(wanted));
    }
    rebuilt(fields, columns, batch.num_rows())
}

/// The memory of a batch's rows. Ingest splits a request's batch into
/// zero-copy slices, one per partition; each slice would report the whole
/// request's buffers (64 times over with 64 partitions), so a slice counts
/// only its own part of them.
pub fn slice_bytes(batch: &RecordBatch) -> usize {
    batch.columns().iter().map(column_bytes).sum()
}

/// `data_bytes` of one column, read off the array for the common types:
/// ingest measures every partition's slice of every request, and building
/// the `ArrayData` to measure it cost more than the measure.
fn column_bytes(c: &arrow::array::ArrayRef) -> usize {
    let nulls = if c.null_count() > 0 {
        c.len().div_ceil(8)
    } else {
        0
    };
    if let Some(width) = c.data_type().primitive_width() {
        return c.len() * width + nulls;
    }
    match c.data_type() {
        DataType::Boolean => c.len().div_ceil(8) + nulls,
        DataType::Utf8 => {
            let offsets = c.as_string::<i32>().value_offsets();
            let values = offsets[offsets.len() - 1] - offsets[0];
            offsets.len() * 4 + values as usize + nulls
        }
        _ => data_bytes(&c.to_data()),
    }
}

/// `get_slice_memory_size`, but a list counts only its slice of the values
/// (arrow counts all of them).
fn data_bytes(d: &arrow::array::ArrayData) -> usize {
    if let DataType::List(_) = d.data_type() {
        let offsets = &d.buffer::<i32>(0)[..=d.len()];
        let (start, end) = (offsets[0] as usize, offsets[d.len()] as usize);
        let values = d.child_data()[0].slice(start, end - start);
        let nulls = d.nulls().map_or(0, |_| d.len().div_ceil(8));
        return (d.len() + 1) * 4 + nulls + data_bytes(&values);
    }
    d.get_slice_memory_size()
        .unwrap_or_else(|_| d.get_array_memory_size())
}

/// The rows of a batch sorted by `time` (with its `time` column) that fall
/// in `[from, to)`, without copying.
fn time_slice(batch: &RecordBatch, from: Option<i64>, to: Option<i64>) -> RecordBatch {
    let values = time_column(batch)
        .expect("sorted batches keep their time")
        .values();
    let lo = from.map_or(0, |f| values.partition_point(|&v| v < f));
    let hi = to.map_or(values.len(), |t| values.partition_point(|&v| v < t));
    batch.slice(lo, hi.saturating_sub(lo))
}

fn time_column(batch: &RecordBatch) -> Option<&TimestampMicrosecondArray> {
    batch
        .column_by_name(TIME_COLUMN)
        .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
}

#[derive(Default)]
pub(crate) struct Partition {
    sealed: Vec<StoredBatch>,
    open: Vec<StoredBatch>,
    open_rows: usize,
    open_since: Option<Instant>,
    /// The writes whose rows this partition took (see `writes`).
    writes: HashSet<u64>,
}

impl Partition {
    /// Appends the rows of `batch` whose write this partition does not
    /// hold yet; returns how many that was.
    pub(crate) fn append(&mut self, batch: StoredBatch) -> Result<usize, StoreError> {
        let ids = batch.write_ids();
        let batch = if ids.iter().any(|id| self.writes.contains(id)) {
            let fresh = |id: Option<u64>| id.is_none_or(|id| !self.writes.contains(&id));
            match writes::rows_where(&batch.plain()?, fresh)? {
                Some(fresh) => StoredBatch::new(fresh)?,
                None => return Ok(0),
            }
        } else {
            batch
        };
        self.writes.extend(ids);
        let rows = batch.rows();
        self.open_rows += rows;
        self.open.push(batch);
        self.open_since.get_or_insert_with(Instant::now);
        Ok(rows)
    }

    /// The writes this partition holds rows of (or held: rows dropped by
    /// retention leave their id behind, so they are not fetched again).
    pub(crate) fn write_ids(&self) -> &HashSet<u64> {
        &self.writes
    }

    /// Its rows of the writes in `wanted`.
    pub(crate) fn rows_of(&self, wanted: &HashSet<u64>) -> Result<Vec<RecordBatch>, StoreError> {
        let mut out = Vec::new();
        for b in self.sealed.iter().chain(&self.open) {
            if b.write_ids().iter().any(|id| wanted.contains(id)) {
                let wanted = |id: Option<u64>| id.is_some_and(|id| wanted.contains(&id));
                out.extend(writes::rows_where(&b.plain()?, wanted)?);
            }
        }
        Ok(out)
    }

    /// Every batch, as a snapshot of the partition.
    pub(crate) fn all_batches(&self) -> Result<Vec<RecordBatch>, StoreError> {
        self.sealed
            .iter()
            .chain(&self.open)
            .map(StoredBatch::plain)
            .collect()
    }

    /// Every batch, sealed or not.
    pub(crate) fn stored(&self) -> impl Iterator<Item = &StoredBatch> {
        self.sealed.iter().chain(&self.open)
    }

    /// Packs the plain sealed batches made at least `age` ago; returns how
    /// many.
    pub(crate) fn pack_cold(&mut self, age: Duration) -> Result<usize, StoreError> {
        let mut packed = 0;
        for b in &mut self.sealed {
            if !b.is_packed() && b.sorted && b.made.elapsed() >= age {
                *b = b.pack()?;
                packed += 1;
            }
        }
        Ok(packed)
    }

    pub(crate) fn open_rows(&self) -> usize {
        self.open_rows
    }

    pub(crate) fn open_batches(&self) -> usize {
        self.open.len()
    }

    pub(crate) fn open_for(&self) -> Option<Duration> {
        self.open_since.map(|t| t.elapsed())
    }

    /// Merges the append buffer into one batch holding the columns its
    /// batches have, typed as the table's current schema says.
    pub(crate) fn seal(&mut self, schema: &TableSchema) -> Result<(), StoreError> {
        if self.open.is_empty() {
            return Ok(());
        }
        self.sealed.push(merge(&self.open, schema)?);
        self.open.clear();
        self.open_rows = 0;
        self.open_since = None;
        Ok(())
    }

    /// Merges runs of small sealed batches (under a quarter of `target`
    /// rows each, as a slow trickle of events seals them) into batches of
    /// up to `target` rows: a query pays per batch, and a merged batch is
    /// no longer small, so no row is merged more than about twice. The
    /// batches stay as they were if a merge fails. Returns the batches
    /// merged away.
    pub(crate) fn compact(
        &mut self,
        schema: &TableSchema,
        target: usize,
    ) -> Result<usize, StoreError> {
        let small = target / 4;
        if self.sealed.iter().filter(|b| b.rows() < small).count() < 2 {
            return Ok(0);
        }
        let mut out = Vec::with_capacity(self.sealed.len());
        let mut run: Vec<StoredBatch> = Vec::new();
        let mut run_rows = 0;
        for b in &self.sealed {
            if b.rows() >= small {
                out.push(b.clone());
                continue;
            }
            if run_rows + b.rows() > target {
                out.push(merge(&run, schema)?);
                run.clear();
                run_rows = 0;
            }
            run_rows += b.rows();
            run.push(b.clone());
        }
        if !run.is_empty() {
            out.push(merge(&run, schema)?);
        }
        let merged = self.sealed.len() - out.len();
        self.sealed = out;
        Ok(merged)
    }

    /// Drops sealed batches whose rows are all before `cutoff` (µs), and
    /// rewrites a sorted batch without its rows before it once they are a
    /// quarter of it or more (scans skip them anyway; rewriting only past a
    /// quarter bounds both the memory they hold and the copying as the
    /// cutoff advances). Returns the batches dropped or rewritten.
    pub(crate) fn expire(&mut self, cutoff: i64) -> Result<usize, StoreError> {
        let before = self.sealed.len();
        let (old, kept): (Vec<StoredBatch>, Vec<StoredBatch>) = std::mem::take(&mut self.sealed)
            .into_iter()
            .partition(|b| b.time_max < cutoff);
        self.sealed = kept;
        // The ids of writes wholly gone are forgotten, or the set would
        // grow for ever (a write's rows share one batch).
        let mut gone: HashSet<u64> = old.iter().flat_map(StoredBatch::write_ids).collect();
        let mut changed = before - self.sealed.len();
        for b in &mut self.sealed {
            if !b.sorted || b.time_min >= cutoff {
                continue;
            }
            let kept = b.within(Some(cutoff), None);
            // Only `time` is read to count them (a packed batch is not
            // decompressed whole unless it is cut).
            let kept_rows = kept.read(Some(&[TIME_COLUMN]))?.num_rows();
            if (b.rows() - kept_rows) * 4 < b.rows() {
                continue;
            }
            // A slice would keep the old rows' buffers alive: copy.
            let kept = kept.plain()?;
            let copied = concat_batches(&kept.schema(), [&kept])?;
            let left = writes::ids_in(&copied);
            gone.extend(b.write_ids().difference(&left));
            let cut = StoredBatch {
                sorted: true,
                ..StoredBatch::new(copied)?
            };
            // A packed batch stays packed: cutting it must not make it
            // bigger (eviction cuts batches to free memory).
            *b = if b.is_packed() { cut.pack()? } else { cut };
            changed += 1;
        }
        for id in gone {
            self.writes.remove(&id);
        }
        Ok(changed)
    }

    /// Every batch, sealed or not, that may hold rows in `[from, to)`.
    pub(crate) fn batches(&self, from: Option<i64>, to: Option<i64>, out: &mut Vec<StoredBatch>) {
        out.extend(
            self.sealed
                .iter()
                .chain(&self.open)
                .filter(|b| b.overlaps(from, to))
                .map(|b| b.within(from, to))
                .filter(|b| b.rows() > 0),
        );
    }

    pub(crate) fn rows(&self) -> usize {
        self.sealed.iter().map(StoredBatch::rows).sum::<usize>() + self.open_rows
    }
}

/// One batch, sorted by time, of the rows of `batches`, with the columns
/// they have, typed as the table's current schema says.
fn merge(batches: &[StoredBatch], schema: &TableSchema) -> Result<StoredBatch, StoreError> {
    if let [only] = batches {
        return only.clone().sorted_by_time();
    }
    let target = union_schema(batches, schema);
    let adapted = batches
        .iter()
        .map(|b| adapt_batch(&b.plain()?, &target))
        .collect::<Result<Vec<_>, _>>()?;
    let (time_min, time_max) = batches.iter().fold((i64::MAX, i64::MIN), |(lo, hi), b| {
        (lo.min(b.time_min), hi.max(b.time_max))
    });
    StoredBatch {
        data: Data::plain(concat_batches(&target, &adapted)?),
        time_min,
        time_max,
        sorted: false,
        window: (None, None),
        made: Instant::now(),
    }
    .sorted_by_time()
}

fn union_schema(batches: &[StoredBatch], schema: &TableSchema) -> SchemaRef {
    let fields = schema
        .arrow()
        .fields()
        .iter()
        .filter(|f| {
            batches
                .iter()
                .any(|b| b.schema().column_with_name(f.name()).is_some())
        })
        .cloned()
        .chain(
            batches
                .iter()
                .find_map(|b| b.schema().field_with_name(WRITE_COLUMN).ok().cloned())
                .map(std::sync::Arc::new),
        )
        .collect::<Vec<_>>();
    std::sync::Arc::new(Schema::new(fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenth_distinct_is_the_dictionary_line() {
        let column = |distinct: usize| {
            let values = (0..1000).map(|i| (i % 7 != 0).then(|| format!("v{}", i % distinct)));
            let batch = RecordBatch::try_from_iter([(
                "s",
                Arc::new(arrow::array::StringArray::from_iter(values)) as arrow::array::ArrayRef,
            )])
            .unwrap();
            dictionary_encoded(&batch)
                .unwrap()
                .schema()
                .field(0)
                .data_type()
                .clone()
        };
        assert!(
            matches!(column(100), DataType::Dictionary(..)),
            "100 in 1,000 rows"
        );
        assert_eq!(column(101), DataType::Utf8, "101 in 1,000 rows");
    }

    #[test]
    fn the_quick_measure_of_a_slice_is_arrows() {
        use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
        let rows = 100;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter(
                (0..rows).map(|i| (i % 3 != 0).then_some(i)),
            )),
            Arc::new(Float64Array::from_iter_values((0..rows).map(|i| i as f64))),
            Arc::new(BooleanArray::from_iter(
                (0..rows).map(|i| (i % 5 != 0).then_some(i % 2 == 0)),
            )),
            Arc::new(StringArray::from_iter(
                (0..rows).map(|i| (i % 4 != 0).then(|| "x".repeat(i as usize % 9))),
            )),
        ];
        for column in columns {
            for (offset, len) in [(0, 100), (7, 31), (99, 1), (50, 0)] {
                let slice = column.slice(offset, len);
                assert_eq!(
                    column_bytes(&slice),
                    data_bytes(&slice.to_data()),
                    "{} [{offset}, +{len})",
                    column.data_type()
                );
            }
        }
    }

    #[test]
    fn rows_already_in_time_order_are_not_copied() {
        let stored = |times: Vec<i64>| {
            let time = arrow::array::TimestampMicrosecondArray::from(times).with_timezone("UTC");
            let n = arrow::array::Int64Array::from_iter_values(0..time.len() as i64);
            let batch = RecordBatch::try_from_iter([
                ("time", Arc::new(time) as arrow::array::ArrayRef),
                ("n", Arc::new(n) as arrow::array::ArrayRef),
            ])
            .unwrap();
            StoredBatch::new(batch).unwrap()
        };
        let values_ptr =
            |b: &StoredBatch| b.plain().unwrap().column(1).to_data().buffers()[0].as_ptr();
        let in_order = stored(vec![1, 2, 2, 5]);
        let before = values_ptr(&in_order);
        let sorted = in_order.sorted_by_time().unwrap();
        assert!(sorted.sorted);
        assert_eq!(values_ptr(&sorted), before, "the same buffers");
        let shuffled = stored(vec![5, 1, 3, 2]).sorted_by_time().unwrap();
        let n = shuffled
            .plain()
            .unwrap()
            .column(1)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .values()
            .to_vec();
        assert_eq!(n, [1, 3, 2, 0]);
        assert!(shuffled.sorted);
    }
}
