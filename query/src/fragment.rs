//! What a fragment is: the part of a plan that runs on the owners of the
//! partitions (Atoll's scan and what runs above it up to a partial
//! aggregate or a top-K sort), the same rule on both sides of the wire —
//! the coordinator ships only such subtrees, an owner accepts only them.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::limit::LocalLimitExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, Partitioning};

use crate::scan::PartitionScanExec;

/// Plan nodes a fragment may hold, and the merge of its streams. Anything
/// else (file scans above all) is refused.
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
pub fn shippable_tree(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let children = plan.children();
    shippable(plan.as_ref())
        && (if children.is_empty() {
            plan.is::<PartitionScanExec>()
        } else {
            children.into_iter().all(shippable_tree)
        })
}

/// The subtree with its scans restricted to `partitions`, merged into one
/// stream: in order (keeping the first k) when it ends in a top-K sort.
pub fn restrict(
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
