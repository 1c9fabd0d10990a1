//! Time slices for query tasks.
//!
//! A query's operators run in one tokio task per stream, and tokio can only
//! cancel a task (client gone, deadline passed) or run another query's
//! task when it yields. Tokio's cooperative budget counts scan batches, not
//! time: behind a nested-loop join each batch may cost tens of
//! milliseconds at opt-level 0, so 128 of them kept a cancelled query
//! running for many seconds and starved every other query. Scans
//! therefore also yield once their task has run a slice of time since it
//! last waited.
//!
//! That is not enough behind a join: DataFusion's nested-loop join works a
//! whole probe batch against every build row before it asks its input
//! again (5,000 build rows by one 940-row batch took seconds at opt-level
//! 0, and a probe batch against a million build rows would take minutes
//! in any build), so a cancelled join query kept both query threads and
//! the next queries waited for it. A nested-loop join's probe side is
//! therefore cut into pieces of at most [`PAIRS_PER_STEP`] pairs against
//! its build side, and yields between pieces once a slice has passed; every join
//! also yields between its output batches (a cross join makes them
//! without asking its input). The rule that places these nodes is
//! `physical_optimizer::slice_joins`.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use datafusion::common::Result;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{Stream, StreamExt, TryStreamExt};

/// How long a query task runs between chances to cancel or switch it.
pub const SLICE: Duration = Duration::from_millis(20);

pub struct TimeSliced<S> {
    inner: S,
    /// When the task last resumed after waiting; None until the next poll.
    since: Option<Instant>,
}

pub fn time_sliced<S>(inner: S) -> TimeSliced<S> {
    TimeSliced { inner, since: None }
}

impl<S: Stream + Unpin> Stream for TimeSliced<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        if now.duration_since(since) >= SLICE {
            self.since = None;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let item = Pin::new(&mut self.inner).poll_next(cx);
        if item.is_pending() {
            self.since = None;
        }
        item
    }
}

/// Build rows times probe rows a nested-loop join works through between
/// chances to yield (a million pairs of a string comparison took ~0.5 s
/// at opt-level 0, so this is ~30 ms there).
pub const PAIRS_PER_STEP: usize = 1 << 16;

#[derive(Debug, Clone)]
pub enum Role {
    /// Above a join: yields between its output batches.
    Output,
    /// A nested-loop join's build side: counts its rows, which are all in
    /// before the first probe batch is asked for.
    Build(Arc<AtomicUsize>),
    /// A nested-loop join's probe side: cut into pieces of
    /// [`PAIRS_PER_STEP`] over the build rows, yielding between them.
    Probe(Arc<AtomicUsize>),
}

/// Passes its input's batches through, with the yields of its role.
#[derive(Debug)]
pub struct TimeSliceExec {
    input: Arc<dyn ExecutionPlan>,
    role: Role,
}

impl TimeSliceExec {
    pub fn wrap(input: Arc<dyn ExecutionPlan>, role: Role) -> Arc<dyn ExecutionPlan> {
        Arc::new(TimeSliceExec { input, role })
    }
}

impl DisplayAs for TimeSliceExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match self.role {
            Role::Output => write!(f, "TimeSliceExec: yields every {} ms", SLICE.as_millis()),
            Role::Build(_) => write!(f, "TimeSliceExec: counts the build rows"),
            Role::Probe(_) => write!(
                f,
                "TimeSliceExec: probes {PAIRS_PER_STEP} pairs at a time, yields every {} ms",
                SLICE.as_millis()
            ),
        }
    }
}

impl ExecutionPlan for TimeSliceExec {
    fn name(&self) -> &str {
        "TimeSliceExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(TimeSliceExec::wrap(children.remove(0), self.role.clone()))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let schema = input.schema();
        Ok(match &self.role {
            Role::Output => Box::pin(RecordBatchStreamAdapter::new(schema, time_sliced(input))),
            Role::Build(rows) => {
                let rows = rows.clone();
                let counted = input.inspect_ok(move |b| {
                    rows.fetch_add(b.num_rows(), Ordering::Relaxed);
                });
                Box::pin(RecordBatchStreamAdapter::new(schema, counted))
            }
            Role::Probe(build_rows) => {
                let build_rows = build_rows.clone();
                let pieces = input.flat_map(move |item| {
                    let step = PAIRS_PER_STEP / build_rows.load(Ordering::Relaxed).max(1);
                    futures::stream::iter(match item {
                        Ok(batch) => pieces(&batch, step.max(1)).into_iter().map(Ok).collect(),
                        Err(e) => vec![Err(e)],
                    })
                });
                Box::pin(RecordBatchStreamAdapter::new(schema, time_sliced(pieces)))
            }
        })
    }
}

/// A batch as slices of at most `rows` rows (zero-copy).
fn pieces(batch: &RecordBatch, rows: usize) -> Vec<RecordBatch> {
    (0..batch.num_rows())
        .step_by(rows)
        .map(|at| batch.slice(at, rows.min(batch.num_rows() - at)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn pieces_cover_a_batch_once_in_order() {
        let column = arrow::array::Int32Array::from_iter_values(0..10);
        let batch = RecordBatch::try_from_iter([("i", Arc::new(column) as _)]).unwrap();
        let cut = pieces(&batch, 4);
        let sizes: Vec<usize> = cut.iter().map(RecordBatch::num_rows).collect();
        assert_eq!(sizes, vec![4, 4, 2]);
        let back = arrow::compute::concat_batches(&batch.schema(), &cut).unwrap();
        assert_eq!(back, batch);
        assert_eq!(pieces(&batch, 10).len(), 1);
    }

    #[tokio::test]
    async fn yields_once_a_slice_has_passed_and_loses_nothing() {
        let mut s = time_sliced(futures::stream::iter(0..4));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(s.poll_next_unpin(&mut cx), Poll::Ready(Some(0)));
        std::thread::sleep(SLICE);
        assert_eq!(s.poll_next_unpin(&mut cx), Poll::Pending);
        assert_eq!(s.poll_next_unpin(&mut cx), Poll::Ready(Some(1)));
        let rest: Vec<i32> = s.collect().await;
        assert_eq!(rest, vec![2, 3]);
    }
}
