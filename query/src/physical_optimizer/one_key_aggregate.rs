//! Places [`OneKeyAggregateExec`]: an aggregate grouped by one integer or
//! string key finds its groups without DataFusion's general hash table
//! (why: `physical_plan::one_key_aggregate`).
//!
//! Fragments travel as DataFusion's own nodes, so the rule leaves what a
//! [`FanoutExec`] ships alone; the node that runs a fragment (an owner,
//! or the coordinator for its own share) applies [`rewrite`] to it.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;

use crate::physical_plan::fanout::FanoutExec;
use crate::physical_plan::one_key_aggregate::OneKeyAggregateExec;

#[derive(Debug, Default)]
pub struct OneKeyAggregate;

impl PhysicalOptimizerRule for OneKeyAggregate {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        rewrite(plan, true)
    }

    fn name(&self) -> &str {
        "atoll_one_key_aggregate"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `plan` with every eligible aggregate outside a fan-out's shipped
/// subtree computed by [`OneKeyAggregateExec`]; `may_skip` is false for a
/// fragment run for another node (its output crosses the network).
pub fn rewrite(plan: Arc<dyn ExecutionPlan>, may_skip: bool) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_down(|node| {
        if node.is::<FanoutExec>() {
            return Ok(Transformed::new(node, false, TreeNodeRecursion::Jump));
        }
        let dense = node
            .downcast_ref::<AggregateExec>()
            .and_then(|agg| OneKeyAggregateExec::try_new(agg, may_skip));
        Ok(match dense {
            Some(dense) => Transformed::yes(Arc::new(dense) as Arc<dyn ExecutionPlan>),
            None => Transformed::no(node),
        })
    })
    .map(|t| t.data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int32Array, Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::physical_plan::aggregates::AggregateMode;
    use datafusion::physical_plan::collect;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// Rows whose keys are near each other, far apart, negative and null,
    /// and a key with more distinct values than one emission holds.
    fn table() -> MemTable {
        let schema = Arc::new(Schema::new(vec![
            Field::new("status", DataType::Int64, true),
            Field::new("small", DataType::Int32, true),
            Field::new("wide", DataType::Int64, false),
            Field::new("v", DataType::Int64, true),
        ]));
        let rows = 3 * (1 << 16);
        let status: Int64Array = (0..rows)
            .map(|i| match i % 11 {
                0 => None,
                1 => Some(-5),
                2 => Some(1 << 40),
                3 => Some(i64::MIN),
                _ => Some(200 + (i % 7) * 100),
            })
            .collect();
        let small: Int32Array = (0..rows)
            .map(|i| (i % 5 != 0).then_some((i % 3) as i32))
            .collect();
        let wide = Int64Array::from_iter_values((0..rows).map(|i| (i * 7919) % (rows / 2)));
        let v: Int64Array = (0..rows)
            .map(|i| (i % 4 != 0).then_some(i % 1000))
            .collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(status),
                Arc::new(small),
                Arc::new(wide),
                Arc::new(v),
            ],
        )
        .unwrap();
        let parts = (0..4)
            .map(|p| {
                let len = batch.num_rows() / 4;
                (0..len)
                    .step_by(1000)
                    .map(|at| batch.slice(p * len + at, 1000.min(len - at)))
                    .collect()
            })
            .collect();
        MemTable::try_new(schema, parts).unwrap()
    }

    #[tokio::test]
    async fn answers_as_the_hash_aggregate_does() {
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
        ctx.register_table("t", Arc::new(table())).unwrap();
        let queries = [
            "SELECT status, count(*) FROM t GROUP BY status ORDER BY status",
            "SELECT small, count(v), sum(v), min(v), max(v), avg(v) FROM t GROUP BY small ORDER BY small",
            "SELECT status / 100 AS s, count(*) FILTER (WHERE v > 500), sum(v) FILTER (WHERE small = 1) FROM t GROUP BY s ORDER BY s",
            "SELECT wide, count(*), sum(v) FROM t GROUP BY wide ORDER BY wide",
            // Counts only: small spans counted by offset, without group
            // indices; no aggregate at all.
            "SELECT coalesce(v, 0) % 50 AS w, count(*), count(1) FROM t GROUP BY w ORDER BY w",
            "SELECT small FROM t GROUP BY small ORDER BY small",
            "SELECT small, count(*) FROM t WHERE status > 1000 GROUP BY small ORDER BY small",
            "SELECT arrow_cast(status, 'Utf8') AS s, count(*), sum(v) FROM t GROUP BY s ORDER BY s",
            "SELECT arrow_cast('user ' || CAST(wide AS VARCHAR) || CASE WHEN wide % 3 = 0 THEN ' with a longer name' ELSE '' END, 'Utf8') AS u, count(*), max(v) FROM t GROUP BY u ORDER BY u",
            // Planned as two aggregates, the outer one of a single key.
            "SELECT small, count(DISTINCT v) FROM t GROUP BY small ORDER BY small",
        ];
        for sql in queries {
            // Two plans: a plan's repartitions run once.
            let df = ctx.sql(sql).await.unwrap();
            let plan = df.clone().create_physical_plan().await.unwrap();
            let dense = rewrite(df.create_physical_plan().await.unwrap(), true).unwrap();
            assert!(has_one_key(&dense), "{sql} is not rewritten");
            let expected = collect(plan, ctx.task_ctx()).await.unwrap();
            let got = collect(dense, ctx.task_ctx()).await.unwrap();
            let (expected, got) = (
                pretty_format_batches(&expected).unwrap().to_string(),
                pretty_format_batches(&got).unwrap().to_string(),
            );
            assert_eq!(got, expected, "{sql}");
            assert!(expected.lines().count() > 4, "{sql}: {expected}");
        }
    }

    /// Within a small memory pool a partial aggregate answers its groups
    /// early (and the answer stays right); a final one, which cannot, fails
    /// with the pool's error instead of growing past it.
    #[tokio::test]
    async fn memory_bounds_partial_and_final_aggregates() {
        use datafusion::execution::runtime_env::RuntimeEnvBuilder;
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(3 << 20, 1.0)
            .build_arc()
            .unwrap();
        let config = SessionConfig::new().with_target_partitions(2);
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        ctx.register_table("t", Arc::new(table())).unwrap();
        let sql = "SELECT wide % 40000 AS w, count(*) FROM t GROUP BY w";
        let plan = plan_of(&ctx, sql).await;
        let partial = find_one_key(&rewrite(plan, true).unwrap(), AggregateMode::Partial);
        let batches = collect(partial, ctx.task_ctx()).await.unwrap();
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let counted: i64 = batches
            .iter()
            .map(|b| {
                arrow::compute::sum(b.column(1).as_primitive::<arrow::datatypes::Int64Type>())
                    .unwrap()
            })
            .sum();
        assert_eq!(counted, 3 * (1 << 16), "every row counted once");
        assert!(
            batches.len() > 2 && rows > 40_000,
            "{} batches, {rows} rows",
            batches.len()
        );

        let sql = "SELECT wide, count(*) FROM t GROUP BY wide";
        let plan = plan_of(&ctx, sql).await;
        let err = collect(rewrite(plan, true).unwrap(), ctx.task_ctx())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("memory"), "{err}");
    }

    /// Keys mostly distinct: after its probe the partial aggregate passes
    /// rows on (unless told not to), and the answer is the same.
    #[tokio::test]
    async fn a_partial_aggregate_of_distinct_keys_skips() {
        // Two streams of 150,000 rows, 120,000 keys each.
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let part = |p: i64| -> Vec<RecordBatch> {
            (0..150)
                .map(|b| {
                    let rows = (0..1000).map(|r| p * 150_000 + b * 1000 + r);
                    let k = Int64Array::from_iter_values(rows.clone().map(|i| i % 120_000));
                    let v = Int64Array::from_iter_values(rows.map(|i| i % 7));
                    RecordBatch::try_new(schema.clone(), vec![Arc::new(k), Arc::new(v)]).unwrap()
                })
                .collect()
        };
        let table = MemTable::try_new(schema.clone(), vec![part(0), part(1)]).unwrap();
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
        ctx.register_table("t", Arc::new(table)).unwrap();
        let sql = "SELECT k, count(*), sum(v), max(v) FROM t GROUP BY k ORDER BY k";
        let df = ctx.sql(sql).await.unwrap();
        let expected = df.clone().collect().await.unwrap();
        // Without skipping each stream answers its 120,000 groups; skipping,
        // the 100,000 of its probe and then its last 50,000 rows one each.
        for (may_skip, rows_out) in [(true, 300_000), (false, 240_000)] {
            let plan = rewrite(df.clone().create_physical_plan().await.unwrap(), may_skip).unwrap();
            let got = collect(plan.clone(), ctx.task_ctx()).await.unwrap();
            assert_eq!(
                pretty_format_batches(&got).unwrap().to_string(),
                pretty_format_batches(&expected).unwrap().to_string()
            );
            let partial = find_one_key(&plan, AggregateMode::Partial);
            let out = partial.metrics().unwrap().output_rows().unwrap();
            assert_eq!(out, rows_out, "may skip: {may_skip}");
        }
    }

    async fn plan_of(ctx: &SessionContext, sql: &str) -> Arc<dyn ExecutionPlan> {
        let df = ctx.sql(sql).await.unwrap();
        df.create_physical_plan().await.unwrap()
    }

    fn has_one_key(plan: &Arc<dyn ExecutionPlan>) -> bool {
        let mut found = false;
        plan.apply(|n| {
            found |= n.is::<OneKeyAggregateExec>();
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        found
    }

    fn find_one_key(plan: &Arc<dyn ExecutionPlan>, mode: AggregateMode) -> Arc<dyn ExecutionPlan> {
        let mut found = None;
        plan.apply(|n| {
            if n.downcast_ref::<OneKeyAggregateExec>()
                .is_some_and(|o| *o.mode() == mode)
            {
                found = Some(n.clone());
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        found.expect("a one-key aggregate of that mode")
    }

    #[tokio::test]
    async fn other_aggregates_are_left_alone() {
        let ctx = SessionContext::new();
        ctx.register_table("t", Arc::new(table())).unwrap();
        for sql in [
            "SELECT small, array_agg(v ORDER BY v) FROM t GROUP BY small",
            "SELECT small, wide, count(*) FROM t GROUP BY small, wide",
            "SELECT CAST(v AS DOUBLE) AS d, count(*) FROM t GROUP BY d",
            "SELECT count(*) FROM t",
        ] {
            let dense = rewrite(plan_of(&ctx, sql).await, true).unwrap();
            assert!(!has_one_key(&dense), "{sql} was rewritten");
        }
    }
}
