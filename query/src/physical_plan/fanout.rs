//! The fan-out: the one plan node where a distributed query leaves the
//! coordinator. It runs the subtree below it (a fragment) once per node of
//! the coverage plan, each over that node's partitions, and retries a
//! node's partitions on their other replicas when it cannot be reached.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use atoll_cluster::{ClusterError, PeerClient};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;
use serde::Serialize;

use super::remote::{BatchStream, run_remote};
use crate::codec::{AtollCodec, encode_fragment};
use crate::fragment::restrict;
use crate::physical_optimizer::one_key_aggregate;

/// Where fragments go: one group per node.
#[derive(Debug, Clone)]
pub struct Placement {
    pub node: String,
    pub flight_addr: Option<String>,
    pub partitions: Vec<u32>,
}

/// Everything the fan-out needs beyond the plan.
#[derive(Clone)]
pub struct FanoutContext {
    pub me: String,
    pub placements: Vec<Placement>,
    pub codec: Arc<AtollCodec>,
    pub timeout: Duration,
    /// Answer with what could be reached instead of failing.
    pub allow_partial: bool,
    /// Other usable replicas of each partition, in order of preference.
    pub alternates: BTreeMap<u32, Vec<String>>,
    /// Flight address of each node.
    pub addresses: BTreeMap<String, String>,
    /// The one client of the cluster's internal service.
    pub peers: Arc<PeerClient>,
    pub counters: Arc<FanoutCounters>,
}

/// Figures from the fragments run on other nodes.
#[derive(Debug, Default)]
pub struct FanoutCounters {
    pub remote_rows: AtomicU64,
    pub remote_partitions: AtomicU64,
    pub failed_partitions: parking_lot::Mutex<Vec<u32>>,
    /// What each node that answered a fragment read, by node name.
    pub nodes: parking_lot::Mutex<BTreeMap<String, NodeStats>>,
}

/// One node's part of a distributed query, as answered in `stats.nodes`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct NodeStats {
    pub node: String,
    pub partitions: u64,
    pub rows_scanned: u64,
    /// The owner's own time for its fragment (absent for the coordinator,
    /// whose share runs inside the query's `elapsed_ms`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<f64>,
}

/// Runs the same subtree once per node of the coverage plan: in process
/// for the coordinator, over Flight for the others. One output stream per
/// node.
pub struct FanoutExec {
    subtree: Arc<dyn ExecutionPlan>,
    ctx: FanoutContext,
    properties: Arc<PlanProperties>,
}

impl fmt::Debug for FanoutExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FanoutExec({} nodes)", self.ctx.placements.len())
    }
}

impl FanoutExec {
    pub fn new(subtree: Arc<dyn ExecutionPlan>, ctx: FanoutContext) -> FanoutExec {
        // Each node's stream is in the subtree's order (a top-K fragment
        // merges its streams in order), so the merge above can rely on it.
        let mut equivalences = EquivalenceProperties::new(subtree.schema());
        if let Some(ordering) = subtree.output_ordering() {
            equivalences.add_ordering(ordering.iter().cloned());
        }
        let properties = PlanProperties::new(
            equivalences,
            Partitioning::UnknownPartitioning(ctx.placements.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        FanoutExec {
            subtree,
            ctx,
            properties: Arc::new(properties),
        }
    }

    pub fn counters(&self) -> &FanoutCounters {
        &self.ctx.counters
    }
}

impl DisplayAs for FanoutExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let parts: Vec<String> = self
            .ctx
            .placements
            .iter()
            .map(|p| {
                let local = if p.node == self.ctx.me {
                    " (local)"
                } else {
                    ""
                };
                format!("{}{local}: {} partitions", p.node, p.partitions.len())
            })
            .collect();
        write!(
            f,
            "FanoutExec: runs the subtree below on [{}]",
            parts.join(", ")
        )
    }
}

impl ExecutionPlan for FanoutExec {
    fn name(&self) -> &str {
        "FanoutExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.subtree]
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
        Ok(Arc::new(FanoutExec::new(
            children.remove(0),
            self.ctx.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let schema = self.schema();
        let Some(place) = self.ctx.placements.get(partition).cloned() else {
            return Ok(Box::pin(RecordBatchStreamAdapter::new(
                schema,
                futures::stream::empty(),
            )));
        };
        if place.node == self.ctx.me {
            return run_here(&self.subtree, &place, self.ctx.codec.streams, context);
        }
        let (ctx, subtree) = (self.ctx.clone(), self.subtree.clone());
        let stream = futures::stream::once(run_with_retry(ctx, subtree, place, context)).flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// The coordinator's own share, in process: its scans narrowed to its
/// partitions, its one-key aggregates placed (a shipped subtree is
/// DataFusion's nodes only).
fn run_here(
    subtree: &Arc<dyn ExecutionPlan>,
    place: &Placement,
    streams: usize,
    task: Arc<TaskContext>,
) -> Result<SendableRecordBatchStream> {
    let plan = restrict(subtree, &place.partitions, streams)?;
    one_key_aggregate::rewrite(plan, true)?.execute(0, task)
}

/// Runs one node's share: in process for the coordinator, else over
/// Flight.
async fn run_share(
    ctx: &FanoutContext,
    subtree: &Arc<dyn ExecutionPlan>,
    place: &Placement,
    task: Arc<TaskContext>,
) -> Result<BatchStream> {
    if place.node == ctx.me {
        return Ok(run_here(subtree, place, ctx.codec.streams, task)?.boxed());
    }
    let plan = restrict(subtree, &place.partitions, ctx.codec.streams)?;
    let ticket = encode_fragment(plan, &ctx.codec, ctx.timeout.as_millis() as u64)?;
    let counters = ctx.counters.clone();
    run_remote(&ctx.peers, place, ticket, subtree.schema(), counters).await
}

/// A node's share, and when its node cannot be reached, the same
/// partitions on their next replicas (once); what is still unreached is
/// missing (with partial results allowed) or an error.
async fn run_with_retry(
    ctx: FanoutContext,
    subtree: Arc<dyn ExecutionPlan>,
    place: Placement,
    task: Arc<TaskContext>,
) -> BatchStream {
    let first = match run_share(&ctx, &subtree, &place, task.clone()).await {
        Ok(s) => return s,
        Err(e) => e,
    };
    tracing::warn!(node = %place.node, error = %first, "fragment failed; trying other replicas");
    let mut regrouped: BTreeMap<String, Vec<u32>> = Default::default();
    let mut unreached = Vec::new();
    for p in &place.partitions {
        match ctx
            .alternates
            .get(p)
            .and_then(|alts| alts.iter().find(|n| **n != place.node))
        {
            Some(node) => regrouped.entry(node.clone()).or_default().push(*p),
            None => unreached.push(*p),
        }
    }
    let mut streams = Vec::new();
    for (node, partitions) in regrouped {
        let retry = Placement {
            flight_addr: ctx.addresses.get(&node).cloned(),
            node,
            partitions,
        };
        match run_share(&ctx, &subtree, &retry, task.clone()).await {
            Ok(s) => streams.push(s),
            Err(e) => {
                tracing::warn!(node = %retry.node, error = %e, "retry failed");
                unreached.extend(retry.partitions);
            }
        }
    }
    if !unreached.is_empty() {
        if !ctx.allow_partial {
            unreached.sort_unstable();
            // Unavailable, not a bad query: the same query may succeed
            // once a replica is back.
            let lost = ClusterError::unreachable(
                &place.node,
                format!(
                    "no replica could run partitions {unreached:?} ({})",
                    first.strip_backtrace()
                ),
            );
            let error = DataFusionError::External(Box::new(lost));
            return futures::stream::once(async move { Err(error) }).boxed();
        }
        ctx.counters.failed_partitions.lock().extend(unreached);
    }
    futures::stream::iter(streams).flatten().boxed()
}
