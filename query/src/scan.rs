//! `PartitionScanExec`: the leaf of every plan over an Atoll table. It names
//! the table, the columns, the time range and the partitions to read, never
//! the data, so that it can be shipped to the node that holds them.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{ArrayRef, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use atoll_store::schema::adapt_batch;
use atoll_store::{Store, StoredBatch};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::coop::cooperative;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType, SchedulingType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::stream;

use crate::physical_plan::time_slice::time_sliced;
use crate::prune::TimeRange;

/// A scan as shipped to another node (the schema travels apart, as Arrow
/// IPC).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ScanDescription {
    pub table: String,
    pub partitions: Vec<u32>,
    pub time_from: Option<i64>,
    pub time_to: Option<i64>,
    pub limit: Option<usize>,
    /// The coordinator's eviction cut-off of the table (see `kept_from`).
    #[serde(default)]
    pub kept_from: Option<i64>,
    /// Row counts instead of rows (see `PartitionScanExec::counting`).
    #[serde(default)]
    pub count_rows: bool,
}

/// What a scan read, for the query's `stats`.
#[derive(Debug, Default)]
pub struct ScanCounters {
    pub rows: AtomicU64,
    pub batches: AtomicU64,
    pub partitions: AtomicU64,
}

#[derive(Debug)]
pub struct PartitionScanExec {
    table: String,
    /// The columns to produce, typed as the table's schema was at planning.
    schema: SchemaRef,
    /// Partitions to read, one group per output stream.
    groups: Vec<Vec<u32>>,
    time: TimeRange,
    limit: Option<usize>,
    store: Arc<Store>,
    counters: Arc<ScanCounters>,
    properties: Arc<PlanProperties>,
    /// The table's eviction cut-off as the coordinator knew it when it
    /// planned: an owner that has not heard of it yet applies it before
    /// reading, so that every replica answers alike.
    kept_from: Option<i64>,
    /// Each stream answers one row: the number of rows it would have read,
    /// in every column of `schema` (the partial state of `count(*)`s).
    count_rows: bool,
}

impl PartitionScanExec {
    pub fn new(
        store: Arc<Store>,
        table: &str,
        schema: SchemaRef,
        partitions: &[u32],
        streams: usize,
        time: TimeRange,
        limit: Option<usize>,
    ) -> PartitionScanExec {
        let streams = streams.clamp(1, partitions.len().max(1));
        let mut groups = vec![Vec::new(); streams];
        for (i, p) in partitions.iter().enumerate() {
            groups[i % streams].push(*p);
        }
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(streams),
            EmissionType::Incremental,
            Boundedness::Bounded,
        )
        .with_scheduling_type(SchedulingType::Cooperative);
        PartitionScanExec {
            table: table.to_string(),
            schema,
            groups,
            time,
            limit,
            store,
            counters: Arc::default(),
            properties: Arc::new(properties),
            kept_from: None,
            count_rows: false,
        }
    }

    /// The same scan answering, per stream, how many rows it would read
    /// instead of reading them, in a batch of `schema` (Int64 columns: the
    /// partial state of `count(*)`s). Counting is exact without
    /// decompressing a packed batch, since a batch knows its rows; a
    /// batch cut by the table's retention is counted after the cut, as a
    /// scan reads it. `None` when this scan cannot (a time range or a
    /// limit: their batches are cut by row, not counted whole).
    pub fn counting(&self, schema: SchemaRef) -> Option<PartitionScanExec> {
        let counts = schema
            .fields()
            .iter()
            .all(|f| f.data_type() == &DataType::Int64);
        if !counts || self.time != TimeRange::default() || self.limit.is_some() {
            return None;
        }
        let mut scan = PartitionScanExec::new(
            self.store.clone(),
            &self.table,
            schema,
            &self.partitions(),
            self.groups.len(),
            self.time,
            None,
        );
        scan.counters = self.counters.clone();
        scan.count_rows = true;
        Some(scan.with_kept_from(self.kept_from))
    }

    pub fn counts_rows(&self) -> bool {
        self.count_rows
    }

    /// The scan, applying at least this eviction cut-off (µs).
    pub fn with_kept_from(mut self, kept_from: Option<i64>) -> PartitionScanExec {
        self.kept_from = kept_from;
        self
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn kept_from(&self) -> Option<i64> {
        self.kept_from
    }

    /// The same scan over other partitions (a node's share of a query).
    /// Its reads count in this scan's counters.
    /// Only partitions this scan reads are kept: a scan pruned to a few
    /// partitions stays pruned on every node.
    pub fn restricted(&self, partitions: &[u32], streams: usize) -> PartitionScanExec {
        let mine = self.partitions();
        let kept: Vec<u32> = partitions
            .iter()
            .copied()
            .filter(|p| mine.contains(p))
            .collect();
        let mut scan = PartitionScanExec::new(
            self.store.clone(),
            &self.table,
            self.schema.clone(),
            &kept,
            streams,
            self.time,
            self.limit,
        );
        scan.counters = self.counters.clone();
        scan.count_rows = self.count_rows;
        scan.with_kept_from(self.kept_from)
    }

    /// The partitions this scan reads, sorted.
    pub fn partitions(&self) -> Vec<u32> {
        let mut all: Vec<u32> = self.groups.iter().flatten().copied().collect();
        all.sort_unstable();
        all
    }

    /// What a fragment needs to rebuild this scan elsewhere.
    pub fn describe(&self) -> ScanDescription {
        ScanDescription {
            table: self.table.clone(),
            partitions: self.groups.iter().flatten().copied().collect(),
            time_from: self.time.from,
            time_to: self.time.to,
            limit: self.limit,
            kept_from: self.kept_from,
            count_rows: self.count_rows,
        }
    }

    pub fn counters(&self) -> &ScanCounters {
        &self.counters
    }

    pub fn partition_count(&self) -> usize {
        self.groups.iter().map(Vec::len).sum()
    }

    fn read(&self, partition: usize) -> Vec<StoredBatch> {
        let Some(table) = self.store.table(&self.table) else {
            return Vec::new();
        };
        if let Some(k) = self.kept_from {
            table.keep_from(k);
        }
        let group = &self.groups[partition];
        self.counters
            .partitions
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        table.batches(group, self.time.from, self.time.to)
    }
}

impl DisplayAs for PartitionScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let columns: Vec<&str> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        write!(
            f,
            "PartitionScanExec: table={}, partitions={}, columns=[{}]",
            self.table,
            self.partition_count(),
            columns.join(", ")
        )?;
        if self.time != TimeRange::default() {
            write!(f, ", time=[{:?}, {:?})", self.time.from, self.time.to)?;
        }
        if let Some(limit) = self.limit {
            write!(f, ", limit={limit}")?;
        }
        if self.count_rows {
            write!(f, ", rows counted")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for PartitionScanExec {
    fn name(&self) -> &str {
        "PartitionScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition >= self.groups.len() {
            return Err(DataFusionError::Internal(format!(
                "PartitionScanExec has no stream {partition}"
            )));
        }
        let batches = self.read(partition);
        if self.count_rows {
            return self.count(batches);
        }
        let schema = self.schema.clone();
        let counters = self.counters.clone();
        let mut remaining = self.limit.unwrap_or(usize::MAX);
        // Packed (cold) batches are decompressed here, one at a time and
        // only the planned columns, as the stream is read.
        let adapted = stream::iter(batches.into_iter().map_while(move |b| {
            if remaining == 0 {
                return None;
            }
            let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            let read = b.read(Some(&columns)).and_then(|batch| {
                let rows = batch.num_rows().min(remaining);
                remaining -= rows;
                counters.rows.fetch_add(rows as u64, Ordering::Relaxed);
                counters.batches.fetch_add(1, Ordering::Relaxed);
                adapt_batch(&batch.slice(0, rows), &schema)
            });
            Some(read.map_err(|e| DataFusionError::Execution(e.to_string())))
        }));
        Ok(Box::pin(cooperative(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            time_sliced(adapted),
        ))))
    }
}

impl PartitionScanExec {
    /// One stream's answer when counting: its rows in one row.
    fn count(&self, batches: Vec<StoredBatch>) -> Result<SendableRecordBatchStream> {
        let mut rows = 0usize;
        for b in &batches {
            // No columns: a packed batch is not decompressed, unless cut by
            // retention (then only its time column).
            let read = b
                .read(Some(&[]))
                .map_err(|e| DataFusionError::Execution(e.to_string()))?;
            rows += read.num_rows();
        }
        self.counters.rows.fetch_add(rows as u64, Ordering::Relaxed);
        self.counters
            .batches
            .fetch_add(batches.len() as u64, Ordering::Relaxed);
        let columns: Vec<ArrayRef> = (0..self.schema.fields().len())
            .map(|_| Arc::new(Int64Array::from(vec![rows as i64])) as ArrayRef)
            .collect();
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream::iter([Ok(batch)]),
        )))
    }
}

/// Sums rows read and partitions read over every scan in a plan.
pub fn scan_totals(plan: &Arc<dyn ExecutionPlan>) -> (u64, u64) {
    let mut totals = (0, 0);
    visit_scans(plan, &mut |scan| {
        totals.0 += scan.counters().rows.load(Ordering::Relaxed);
        totals.1 += scan.counters().partitions.load(Ordering::Relaxed);
    });
    totals
}

/// Calls `f` on every scan of a plan.
pub fn visit_scans(plan: &Arc<dyn ExecutionPlan>, f: &mut dyn FnMut(&PartitionScanExec)) {
    if let Some(scan) = plan.downcast_ref::<PartitionScanExec>() {
        f(scan);
    }
    plan.children().into_iter().for_each(|c| visit_scans(c, f));
}
