//! Places [`TimeSliceExec`]s: above every join, and around a nested-loop
//! join's inputs (why: `physical_plan::time_slice`). Registered after
//! [`super::distribute::Distribute`], so that the wrappers never sit inside
//! a subtree that could have been shipped to the owners.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::joins::NestedLoopJoinExec;
use datafusion::physical_plan::{ExecutionPlan, replace_children_if_necessary};

use crate::physical_plan::time_slice::{Role, TimeSliceExec};

#[derive(Debug, Default)]
pub struct SliceJoins;

impl PhysicalOptimizerRule for SliceJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if !node.name().ends_with("JoinExec") {
                return Ok(Transformed::no(node));
            }
            let node = match node.downcast_ref::<NestedLoopJoinExec>() {
                Some(join) => {
                    let build_rows = Arc::new(AtomicUsize::new(0));
                    let inputs = vec![
                        TimeSliceExec::wrap(join.left().clone(), Role::Build(build_rows.clone())),
                        TimeSliceExec::wrap(join.right().clone(), Role::Probe(build_rows)),
                    ];
                    replace_children_if_necessary(node, inputs)?
                }
                None => node,
            };
            Ok(Transformed::yes(TimeSliceExec::wrap(node, Role::Output)))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "atoll_slice_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
