//! `count(*)` without a filter answered from the rows each batch holds,
//! not by reading them: the partial aggregate over a plain scan becomes a
//! scan that counts ([`PartitionScanExec::counting`]). Registered before
//! [`super::distribute::Distribute`], so that owners count their own
//! partitions and the coordinator sums their answers as it would partial
//! counts: coverage, retention and replicas are those of any query.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};

use crate::physical_plan::one_key_aggregate::counts_rows;
use crate::scan::PartitionScanExec;

#[derive(Debug, Default)]
pub struct CountRows;

impl PhysicalOptimizerRule for CountRows {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let counting = node
                .downcast_ref::<AggregateExec>()
                .filter(|a| counts_rows_only(a))
                .and_then(|a| {
                    let scan = a.input().downcast_ref::<PartitionScanExec>()?;
                    scan.counting(a.schema())
                });
            Ok(match counting {
                Some(scan) => Transformed::yes(Arc::new(scan) as Arc<dyn ExecutionPlan>),
                None => Transformed::no(node),
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "atoll_count_rows"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A partial aggregate of `count(*)`s (a count of a non-null literal) and
/// nothing else: no groups, no FILTER, no DISTINCT.
fn counts_rows_only(agg: &AggregateExec) -> bool {
    *agg.mode() == AggregateMode::Partial
        && agg.group_expr().is_empty()
        && agg.filter_expr().iter().all(Option::is_none)
        && !agg.aggr_expr().is_empty()
        && agg.aggr_expr().iter().all(|f| counts_rows(f))
}
