//! An aggregate grouped by one integer or string column, its groups found
//! by [`group_keys`](super::group_keys) instead of DataFusion's general
//! hash table.
//!
//! Dashboards group by one column far more often than by several
//! (`count by status`, `p99 by endpoint`, `top users`), and there
//! DataFusion's lookup of each row's group was most of the query: 60% of
//! `GROUP BY status` (hashing small integers), 70% of `GROUP BY user_id`
//! over 700k users (a hash table entry, then the string through an offset
//! into another buffer: two cache misses a row). Here an integer key
//! close to the others is an array index, and a string of up to 16
//! bytes is compared as one integer held in the table itself.
//!
//! The aggregates are DataFusion's own [`GroupsAccumulator`]s, fed group
//! indices as DataFusion feeds them, so the output (the key, then each
//! aggregate's partial state or final value) is the aggregate's own, and
//! the plan above is unchanged. A partial aggregate may answer a group
//! more than once (the final one merges), so when the query's memory pool
//! refuses more it emits the groups so far and starts over; a final one
//! cannot, and fails as DataFusion's would.
//!
//! A partial aggregate whose first [`PROBE_ROWS`] rows hold more than
//! [`SKIP_RATIO`] groups a row (user ids, trace ids) reduces little and
//! only makes the final one hash every key a second time: it then passes
//! each later row on as its own group's state, as DataFusion's does (at a
//! ratio of 0.8 there; Q7 of the benchmark, 5M events of 700k users, is
//! about 0.95 at the probe and took 11% less time skipping). Not on an
//! owner, whose output crosses the network: there fewer rows pay.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_plan::aggregates::{
    AggregateExec, AggregateInputMode, AggregateOutputMode, aggregate_expressions,
};
use datafusion::physical_plan::execution_plan::apply_expression_roots;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode, PlanProperties, RecordBatchStream,
    replace_children_if_necessary,
};
use futures::{Stream, StreamExt};

use super::group_keys::{self, GroupKeys};

/// Rows a partial aggregate reads before it decides whether to skip.
pub const PROBE_ROWS: usize = 100_000;

/// Groups per row read above which a partial aggregate skips.
pub const SKIP_RATIO: f64 = 0.5;

/// `count(*)` (a count of a non-null literal, not DISTINCT): its state is
/// the rows of each group, known without reading a column.
pub fn counts_rows(f: &AggregateFunctionExpr) -> bool {
    f.fun().name() == "count"
        && !f.is_distinct()
        && f.expressions().iter().all(|e| {
            e.downcast_ref::<Literal>()
                .is_some_and(|l| !l.value().is_null())
        })
}

#[derive(Debug)]
pub struct OneKeyAggregateExec {
    /// The aggregate this node computes: its mode, schema, expressions and
    /// display.
    agg: Arc<AggregateExec>,
    key: Arc<dyn PhysicalExpr>,
    key_type: DataType,
    /// A partial aggregate may pass rows on unaggregated.
    may_skip: bool,
    metrics: ExecutionPlanMetricsSet,
}

impl OneKeyAggregateExec {
    /// The node for `agg`, or None when it is not an aggregate of one
    /// integer or string key whose aggregates all have group accumulators
    /// (and no ordering, DISTINCT or limit of its own).
    pub fn try_new(agg: &AggregateExec, may_skip: bool) -> Option<Self> {
        let group = agg.group_expr();
        let eligible = group.expr().len() == 1
            && group.null_expr().is_empty()
            && group.groups().len() == 1
            && agg.limit_options().is_none()
            && *agg.input_order_mode() == InputOrderMode::Linear
            && agg.aggr_expr().iter().all(|f| {
                f.order_bys().is_empty() && !f.is_distinct() && f.groups_accumulator_supported()
            });
        if !eligible {
            return None;
        }
        let key = group.expr()[0].0.clone();
        // The input's schema: a final aggregate's `input_schema()` is the
        // one its partial aggregate read.
        let key_type = key.data_type(&agg.input().schema()).ok()?;
        group_keys::for_type(&key_type)?;
        Some(OneKeyAggregateExec {
            agg: Arc::new(agg.clone()),
            key,
            key_type,
            may_skip,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    pub fn mode(&self) -> &datafusion::physical_plan::aggregates::AggregateMode {
        self.agg.mode()
    }
}

impl DisplayAs for OneKeyAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let aggs: Vec<&str> = self.agg.aggr_expr().iter().map(|a| a.name()).collect();
        write!(
            f,
            "OneKeyAggregateExec: mode={:?}, gby=[{}], aggr=[{}]",
            self.agg.mode(),
            self.agg.group_expr().expr()[0].1,
            aggs.join(", ")
        )
    }
}

impl ExecutionPlan for OneKeyAggregateExec {
    fn name(&self) -> &str {
        "OneKeyAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.agg.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.agg.input()]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        apply_expression_roots([&self.key], f)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let agg = Arc::new(self.agg.as_ref().clone()) as Arc<dyn ExecutionPlan>;
        let agg = replace_children_if_necessary(agg, children)?;
        let agg = agg
            .downcast_ref::<AggregateExec>()
            .and_then(|agg| OneKeyAggregateExec::try_new(agg, self.may_skip))
            .ok_or_else(|| {
                DataFusionError::Internal("OneKeyAggregateExec lost its aggregate".into())
            })?;
        Ok(Arc::new(agg))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.agg.input().execute(partition, context.clone())?;
        let accumulators = self
            .agg
            .aggr_expr()
            .iter()
            .map(|f| f.create_groups_accumulator())
            .collect::<Result<Vec<_>>>()?;
        let raw = self.agg.mode().input_mode() == AggregateInputMode::Raw;
        let partial = self.agg.mode().output_mode() == AggregateOutputMode::Partial;
        let reservation = MemoryConsumer::new(format!("OneKeyAggregateExec[{partition}]"))
            .with_can_spill(partial)
            .register(context.memory_pool());
        Ok(Box::pin(OneKeyStream {
            schema: self.agg.schema(),
            input,
            key: self.key.clone(),
            raw,
            partial,
            probe: (raw && partial && self.may_skip).then_some(0),
            skipping: false,
            args: aggregate_expressions(self.agg.aggr_expr(), self.agg.mode(), 1)?,
            filters: self.agg.filter_expr().to_vec(),
            row_counts: (self.agg.aggr_expr().iter())
                .zip(self.agg.filter_expr())
                .map(|(f, filter)| raw && filter.is_none() && counts_rows(f))
                .collect(),
            groups: group_keys::for_type(&self.key_type).ok_or_else(|| {
                DataFusionError::Internal(format!("no group keys for {}", self.key_type))
            })?,
            accumulators,
            indices: Vec::new(),
            reservation,
            baseline: BaselineMetrics::new(&self.metrics, partition),
            done: false,
        }))
    }
}

struct OneKeyStream {
    schema: SchemaRef,
    input: SendableRecordBatchStream,
    key: Arc<dyn PhysicalExpr>,
    /// The input is rows (else partial states to merge).
    raw: bool,
    /// The output is partial states (else final values).
    partial: bool,
    /// Rows read while the partial aggregate may still decide to skip.
    probe: Option<usize>,
    /// Every row is passed on as its own group's state.
    skipping: bool,
    /// Each aggregate's arguments (or state columns).
    args: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    /// Which aggregates are `count(*)` over rows: fed a batch's counts per
    /// group.
    row_counts: Vec<bool>,
    groups: Box<dyn GroupKeys>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    indices: Vec<usize>,
    reservation: MemoryReservation,
    baseline: BaselineMetrics,
    done: bool,
}

impl OneKeyStream {
    fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        let keys = self.key.evaluate(batch)?.into_array(batch.num_rows())?;
        if self.row_counts.iter().all(|c| *c) {
            let (present, counts) = self.groups.count(&keys, &mut self.indices)?;
            let counts: ArrayRef = Arc::new(Int64Array::from(counts));
            let total = self.groups.groups();
            for acc in &mut self.accumulators {
                acc.merge_batch(std::slice::from_ref(&counts), &present, total)?;
            }
            return Ok(());
        }
        self.groups.assign(&keys, &mut self.indices)?;
        let total = self.groups.groups();
        let counted = self.count_rows(total);
        for i in 0..self.accumulators.len() {
            if let (Some((groups, counts)), true) = (&counted, self.row_counts[i]) {
                self.accumulators[i].merge_batch(std::slice::from_ref(counts), groups, total)?;
                continue;
            }
            let (values, filter) = self.arguments(i, batch)?;
            let acc = &mut self.accumulators[i];
            if !self.raw {
                acc.merge_batch(&values, &self.indices, total)?;
                continue;
            }
            let filter = filter.as_ref().map(|f| f.as_boolean());
            acc.update_batch(&values, &self.indices, filter, total)?;
        }
        Ok(())
    }

    /// Aggregate `i`'s arguments (or state columns) over `batch`, and over
    /// rows its FILTER's mask.
    fn arguments(
        &self,
        i: usize,
        batch: &RecordBatch,
    ) -> Result<(Vec<ArrayRef>, Option<ArrayRef>)> {
        let values = self.args[i]
            .iter()
            .map(|e| e.evaluate(batch)?.into_array(batch.num_rows()))
            .collect::<Result<Vec<ArrayRef>>>()?;
        let filter = match (&self.filters[i], self.raw) {
            (Some(f), true) => Some(f.evaluate(batch)?.into_array(batch.num_rows())?),
            _ => None,
        };
        Ok((values, filter))
    }

    /// The batch's rows per group (the groups it has, and their counts),
    /// when some aggregate is `count(*)`.
    fn count_rows(&self, groups: usize) -> Option<(Vec<usize>, ArrayRef)> {
        if !self.row_counts.contains(&true) {
            return None;
        }
        let (present, counts) = group_keys::histogram(&self.indices, groups);
        Some((present, Arc::new(Int64Array::from(counts))))
    }

    /// Accounts the memory held; false when the pool refuses it.
    fn reserve(&mut self) -> bool {
        let size = self.groups.bytes() + self.accumulators.iter().map(|a| a.size()).sum::<usize>();
        self.reservation.try_resize(size).is_ok()
    }

    fn emit(&mut self) -> Result<RecordBatch> {
        let mut columns = vec![self.groups.take()?];
        for acc in &mut self.accumulators {
            if self.partial {
                columns.extend(acc.state(EmitTo::All)?);
            } else {
                columns.push(acc.evaluate(EmitTo::All)?);
            }
        }
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        self.reservation.free();
        Ok(batch)
    }

    /// A batch as partial states, each row its own group.
    fn pass_on(&mut self, batch: &RecordBatch) -> Result<RecordBatch> {
        let keys = self.key.evaluate(batch)?.into_array(batch.num_rows())?;
        let mut columns = vec![keys];
        for (i, acc) in self.accumulators.iter().enumerate() {
            let (values, filter) = self.arguments(i, batch)?;
            let filter = filter.as_ref().map(|f| f.as_boolean());
            columns.extend(acc.convert_to_state(&values, filter)?);
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    /// Takes in one input batch; an output batch when the groups so far
    /// must leave first.
    fn take_in(&mut self, batch: &RecordBatch) -> Result<Option<RecordBatch>> {
        let elapsed = self.baseline.elapsed_compute().clone();
        let _timer = elapsed.timer();
        if self.skipping {
            return self.pass_on(batch).map(Some);
        }
        self.update(batch)?;
        if let Some(rows) = self.probe.as_mut() {
            *rows += batch.num_rows();
            if *rows >= PROBE_ROWS {
                self.skipping = self.groups.groups() as f64 > SKIP_RATIO * *rows as f64;
                self.probe = None;
                if self.skipping {
                    return self.emit().map(Some);
                }
            }
        }
        if self.reserve() {
            return Ok(None);
        }
        if !self.partial {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "the query's memory limit: {} groups of {} are more than it holds",
                self.groups.groups(),
                self.key
            )));
        }
        self.emit().map(Some)
    }

    fn next_batch(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<RecordBatch>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            match futures::ready!(self.input.poll_next_unpin(cx)) {
                Some(Ok(batch)) => match self.take_in(&batch) {
                    Ok(None) => {}
                    Ok(Some(out)) => return Poll::Ready(Some(Ok(out))),
                    Err(e) => {
                        self.done = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                },
                Some(Err(e)) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    self.done = true;
                    if self.groups.groups() > 0 {
                        return Poll::Ready(Some(self.emit()));
                    }
                }
            }
        }
    }
}

impl Stream for OneKeyStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.next_batch(cx);
        self.baseline.record_poll(polled)
    }
}

impl RecordBatchStream for OneKeyStream {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}
