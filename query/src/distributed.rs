//! The distributed query path: the split of a physical plan at the partial
//! aggregate (or above the scan), the fan-out of fragments to the nodes of
//! the coverage plan over Arrow Flight `do_get`, and running a fragment
//! received from another node.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::decode::{DecodedPayload, FlightRecordBatchStream};
use atoll_store::Store;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::limit::LocalLimitExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties, SendableRecordBatchStream,
};
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::scan::{PartitionScanExec, ScanDescription};
use atoll_cluster::messages::FragmentStats;
use atoll_cluster::{ClusterError, PeerClient};

/// Nodes of one Atoll version plan alike; others are refused.
pub const ENGINE_VERSION: &str = concat!("atoll-", env!("CARGO_PKG_VERSION"), "-datafusion-55");

/// Encodes Atoll's own scan; nothing else is an extension.
#[derive(Debug)]
pub struct AtollCodec {
    pub store: Arc<Store>,
    pub streams: usize,
}

impl PhysicalExtensionCodec for AtollCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !inputs.is_empty() {
            return Err(DataFusionError::Plan(
                "a partition scan has no inputs".into(),
            ));
        }
        let (desc, schema) = split_frame(buf)?;
        let desc: ScanDescription = serde_json::from_slice(desc)
            .map_err(|e| DataFusionError::Plan(format!("bad scan description: {e}")))?;
        let schema = schema_from_ipc(schema)?;
        let time = crate::prune::TimeRange {
            from: desc.time_from,
            to: desc.time_to,
        };
        Ok(Arc::new(
            PartitionScanExec::new(
                self.store.clone(),
                &desc.table,
                schema,
                &desc.partitions,
                self.streams,
                time,
                desc.limit,
            )
            .with_kept_from(desc.kept_from),
        ))
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let scan = node.downcast_ref::<PartitionScanExec>().ok_or_else(|| {
            DataFusionError::Plan(format!("{} cannot be shipped to another node", node.name()))
        })?;
        let desc = serde_json::to_vec(&scan.describe())
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        buf.extend(frame(&desc, &schema_to_ipc(&scan.schema())?));
        Ok(())
    }
}

fn frame(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = (a.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(a);
    out.extend_from_slice(b);
    out
}

fn split_frame(buf: &[u8]) -> Result<(&[u8], &[u8])> {
    let bad = || DataFusionError::Plan("truncated fragment".into());
    let len = u32::from_le_bytes(
        buf.get(..4)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    ) as usize;
    let rest = &buf[4..];
    if rest.len() < len {
        return Err(bad());
    }
    Ok(rest.split_at(len))
}

fn schema_to_ipc(schema: &SchemaRef) -> Result<Vec<u8>> {
    let mut w = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), schema)?;
    w.finish()?;
    Ok(w.into_inner()?)
}

fn schema_from_ipc(bytes: &[u8]) -> Result<SchemaRef> {
    Ok(arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)?.schema())
}

/// What a `do_get` ticket carries besides the plan.
#[derive(Debug, Serialize, Deserialize)]
pub struct FragmentHeader {
    pub version: String,
    /// Milliseconds the fragment may run.
    pub timeout_ms: u64,
}

/// Plan nodes a fragment may hold: Atoll's scan and what runs above it up
/// to a partial aggregate or a top-K sort, and the merge of its streams.
/// Anything else (file scans above all) is refused.
pub fn check_fragment(plan: &Arc<dyn ExecutionPlan>) -> Result<()> {
    let mut refused = None;
    plan.apply(|node| {
        let merge = node.is::<CoalescePartitionsExec>() || node.is::<SortPreservingMergeExec>();
        if !shippable(node.as_ref()) && !merge {
            refused = Some(node.name().to_string());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    match refused {
        Some(name) => Err(DataFusionError::Plan(format!(
            "plan node {name} is not accepted from other nodes"
        ))),
        None => Ok(()),
    }
}

fn shippable(node: &dyn ExecutionPlan) -> bool {
    node.is::<PartitionScanExec>()
        || node.is::<FilterExec>()
        || node.is::<ProjectionExec>()
        || node.is::<LocalLimitExec>()
        || node
            .downcast_ref::<RepartitionExec>()
            .is_some_and(|r| matches!(r.partitioning(), Partitioning::RoundRobinBatch(_)))
        || node
            .downcast_ref::<AggregateExec>()
            .is_some_and(|a| *a.mode() == AggregateMode::Partial)
        || top_k(node).is_some()
}

/// A per-partition sort that keeps only its first rows (`ORDER BY ..
/// LIMIT k`): shipped, each owner answers its own k best rows.
fn top_k(node: &dyn ExecutionPlan) -> Option<&SortExec> {
    node.downcast_ref::<SortExec>()
        .filter(|s| s.fetch().is_some() && s.preserve_partitioning())
}

/// True when the whole subtree can run on the owners.
fn shippable_tree(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let children = plan.children();
    shippable(plan.as_ref())
        && (if children.is_empty() {
            plan.is::<PartitionScanExec>()
        } else {
            children.into_iter().all(shippable_tree)
        })
}

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
    pub alternates: std::collections::BTreeMap<u32, Vec<String>>,
    /// Flight address of each node.
    pub addresses: std::collections::BTreeMap<String, String>,
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
    pub nodes: parking_lot::Mutex<std::collections::BTreeMap<String, NodeStats>>,
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

/// Replaces the largest shippable subtrees (a partial aggregate and what is
/// below it, or the filter/projection chain above a scan) by a fan-out
/// over the coverage plan.
pub fn distribute(
    plan: Arc<dyn ExecutionPlan>,
    ctx: &FanoutContext,
) -> Result<Arc<dyn ExecutionPlan>> {
    if shippable_tree(&plan) {
        return Ok(Arc::new(FanoutExec::new(plan, ctx.clone())));
    }
    let children: Vec<Arc<dyn ExecutionPlan>> = plan
        .children()
        .into_iter()
        .map(|c| distribute(c.clone(), ctx))
        .collect::<Result<_>>()?;
    if children.is_empty() {
        return Ok(plan);
    }
    #[allow(deprecated)]
    plan.with_new_children(children)
}

/// Runs the same subtree once per node of the coverage plan, each over that
/// node's partitions: in process for the coordinator, over Flight for the
/// others. One output stream per node.
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
    fn new(subtree: Arc<dyn ExecutionPlan>, ctx: FanoutContext) -> FanoutExec {
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

/// The subtree with its scans restricted to `partitions`, merged into one
/// stream: in order (keeping the first k) when it ends in a top-K sort.
fn fragment(
    subtree: &Arc<dyn ExecutionPlan>,
    partitions: &[u32],
    streams: usize,
) -> Result<Arc<dyn ExecutionPlan>> {
    let restricted = subtree
        .clone()
        .transform_up(|node| match node.downcast_ref::<PartitionScanExec>() {
            Some(scan) => Ok(Transformed::yes(
                Arc::new(scan.restricted(partitions, streams)) as Arc<dyn ExecutionPlan>,
            )),
            None => Ok(Transformed::no(node)),
        })?
        .data;
    if let Some(ordering) = restricted.output_ordering() {
        let merge = SortPreservingMergeExec::new(ordering.clone(), restricted.clone())
            .with_fetch(top_k_fetch(&restricted));
        return Ok(Arc::new(merge));
    }
    Ok(Arc::new(CoalescePartitionsExec::new(restricted)))
}

/// The k of a top-K sort at the top of a subtree (under projections).
fn top_k_fetch(plan: &Arc<dyn ExecutionPlan>) -> Option<usize> {
    if let Some(sort) = top_k(plan.as_ref()) {
        return sort.fetch();
    }
    match plan.downcast_ref::<ProjectionExec>() {
        Some(p) => top_k_fetch(p.input()),
        None => None,
    }
}

/// Runs one node's share: in process for the coordinator, else over
/// Flight.
async fn run_share(
    ctx: &FanoutContext,
    subtree: &Arc<dyn ExecutionPlan>,
    place: &Placement,
    task: Arc<TaskContext>,
) -> Result<BatchStream> {
    let plan = fragment(subtree, &place.partitions, ctx.codec.streams)?;
    if place.node == ctx.me {
        return Ok(plan.execute(0, task)?.boxed());
    }
    let bytes = datafusion_proto::bytes::physical_plan_to_bytes_with_extension_codec(
        plan,
        ctx.codec.as_ref(),
    )?;
    remote(ctx, place, bytes.to_vec(), subtree.schema()).await
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
    let mut regrouped: std::collections::BTreeMap<String, Vec<u32>> = Default::default();
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

impl DisplayAs for FanoutExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let parts: Vec<String> = self
            .ctx
            .placements
            .iter()
            .map(|p| {
                format!(
                    "{}{}: {} partitions",
                    p.node,
                    if p.node == self.ctx.me {
                        " (local)"
                    } else {
                        ""
                    },
                    p.partitions.len()
                )
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
            return fragment(&self.subtree, &place.partitions, self.ctx.codec.streams)?
                .execute(0, context);
        }
        let (ctx, subtree) = (self.ctx.clone(), self.subtree.clone());
        let stream = futures::stream::once(run_with_retry(ctx, subtree, place, context)).flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

type BatchStream = futures::stream::BoxStream<'static, Result<RecordBatch>>;

async fn remote(
    ctx: &FanoutContext,
    place: &Placement,
    plan: Vec<u8>,
    expected: SchemaRef,
) -> Result<BatchStream> {
    let lost = |e: ClusterError| DataFusionError::External(Box::new(e));
    let addr = place.flight_addr.clone().ok_or_else(|| {
        lost(ClusterError::unreachable(
            &place.node,
            "no Flight address known",
        ))
    })?;
    let header = serde_json::to_vec(&FragmentHeader {
        version: ENGINE_VERSION.into(),
        timeout_ms: ctx.timeout.as_millis() as u64,
    })
    .map_err(|e| DataFusionError::Internal(e.to_string()))?;
    let response = ctx
        .peers
        .do_get(&addr, frame(&header, &plan))
        .await
        .map_err(lost)?;
    ctx.counters
        .remote_partitions
        .fetch_add(place.partitions.len() as u64, Ordering::Relaxed);
    let counters = ctx.counters.clone();
    let (node, partitions) = (place.node.clone(), place.partitions.len() as u64);
    let decoded = FlightRecordBatchStream::new_from_flight_data(
        response.map_err(|s| arrow_flight::error::FlightError::Tonic(Box::new(s))),
    )
    .into_inner();
    Ok(decoded
        .filter_map(move |item| {
            let (counters, expected, node) = (counters.clone(), expected.clone(), node.clone());
            async move {
                match item {
                    Ok(d) => match d.payload {
                        DecodedPayload::RecordBatch(b) => Some(conform(b, &expected)),
                        _ => {
                            if let Ok(stats) =
                                serde_json::from_slice::<FragmentStats>(&d.inner.app_metadata)
                            {
                                counters
                                    .remote_rows
                                    .fetch_add(stats.rows_scanned, Ordering::Relaxed);
                                let mut nodes = counters.nodes.lock();
                                let entry = nodes.entry(node.clone()).or_default();
                                entry.node = node;
                                entry.partitions += partitions;
                                entry.rows_scanned += stats.rows_scanned;
                                entry.elapsed_ms =
                                    Some(entry.elapsed_ms.unwrap_or(0.0).max(stats.elapsed_ms));
                            }
                            None
                        }
                    },
                    // A replica lost in the middle of its answer.
                    Err(e) => Some(Err(DataFusionError::External(Box::new(
                        ClusterError::unreachable(&node, e.to_string()),
                    )))),
                }
            }
        })
        .boxed())
}

/// Casts a received batch to the schema the coordinator planned (Flight
/// hydrates dictionaries, and nullability may differ).
fn conform(batch: RecordBatch, expected: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(expected.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                arrow::compute::cast(c, f.data_type())
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new_with_options(
        expected.clone(),
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

/// A fragment received from another node: its header and plan, checked.
pub fn decode_fragment(
    ticket: &[u8],
    ctx: &TaskContext,
    codec: &AtollCodec,
) -> Result<(FragmentHeader, Arc<dyn ExecutionPlan>)> {
    let (header, plan) = split_frame(ticket)?;
    let header: FragmentHeader = serde_json::from_slice(header)
        .map_err(|e| DataFusionError::Plan(format!("bad fragment header: {e}")))?;
    if header.timeout_ms == 0 {
        return Err(DataFusionError::Plan(
            "a fragment's timeout_ms must be at least 1".into(),
        ));
    }
    if header.version != ENGINE_VERSION {
        return Err(DataFusionError::Plan(format!(
            "this node runs {ENGINE_VERSION}, the fragment was planned by {}: upgrade the cluster to one version",
            header.version
        )));
    }
    let plan =
        datafusion_proto::bytes::physical_plan_from_bytes_with_extension_codec(plan, ctx, codec)?;
    check_fragment(&plan)?;
    Ok((header, plan))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::prelude::SessionContext;

    #[test]
    fn a_scan_survives_the_trip() {
        let store = Arc::new(Store::new(Default::default()));
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        let scan: Arc<dyn ExecutionPlan> = Arc::new(PartitionScanExec::new(
            store.clone(),
            "t",
            schema.clone(),
            &[1, 5, 9],
            2,
            crate::prune::TimeRange {
                from: Some(10),
                to: None,
            },
            Some(7),
        ));
        let codec = AtollCodec { store, streams: 2 };
        let plan: Arc<dyn ExecutionPlan> = Arc::new(CoalescePartitionsExec::new(scan));
        let bytes =
            datafusion_proto::bytes::physical_plan_to_bytes_with_extension_codec(plan, &codec)
                .unwrap();
        let header = serde_json::to_vec(&FragmentHeader {
            version: ENGINE_VERSION.into(),
            timeout_ms: 5,
        })
        .unwrap();
        let ctx = SessionContext::new();
        let (h, back) = decode_fragment(&frame(&header, &bytes), &ctx.task_ctx(), &codec).unwrap();
        assert_eq!(h.timeout_ms, 5);
        let scan = back.children()[0]
            .downcast_ref::<PartitionScanExec>()
            .unwrap()
            .describe();
        let mut parts = scan.partitions.clone();
        parts.sort();
        assert_eq!(parts, vec![1, 5, 9]);
        assert_eq!((scan.time_from, scan.limit), (Some(10), Some(7)));
        assert_eq!(back.schema(), schema);
    }

    #[test]
    fn other_versions_and_plan_nodes_are_refused() {
        let store = Arc::new(Store::new(Default::default()));
        let codec = AtollCodec { store, streams: 1 };
        let ctx = SessionContext::new();
        let header = serde_json::to_vec(&FragmentHeader {
            version: "atoll-0.0.0".into(),
            timeout_ms: 5,
        })
        .unwrap();
        let err = decode_fragment(&frame(&header, b""), &ctx.task_ctx(), &codec).unwrap_err();
        assert!(
            err.to_string()
                .contains("upgrade the cluster to one version"),
            "{err}"
        );
    }
}
