//! The split of a query across the ring, as a physical optimizer rule: the
//! largest subtrees that can run on the owners (a partial aggregate and
//! what is below it, or the filter/projection chain above a scan) are
//! replaced by a [`FanoutExec`] over the coverage plan of the partitions
//! the query's scans read. Being a rule, it runs inside DataFusion's own
//! planning, so `EXPLAIN` (and `EXPLAIN VERBOSE`, rule by rule) shows the
//! plan that runs.
//!
//! Rules see only the session's options, and membership is read
//! asynchronously: the engine takes a [`Spread`] (the ring and members as
//! they are when the query starts) and hands it to the rule as the
//! [`QuerySpread`] option of that query's session. Without one (a single
//! node) the rule changes nothing.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use atoll_cluster::{Member, PeerClient};
use atoll_ring::Ring;
use datafusion::common::config::{ConfigEntry, ConfigExtension, ConfigOptions, ExtensionOptions};
use datafusion::common::{DataFusionError, Result};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;

use crate::QueryError;
use crate::codec::AtollCodec;
use crate::coverage::Coverage;
use crate::fragment::shippable_tree;
use crate::physical_plan::fanout::{FanoutContext, FanoutCounters, FanoutExec, Placement};
use crate::scan::visit_scans;

/// The cluster as one query sees it, and what the split planned.
pub struct Spread {
    pub ring: Arc<Ring>,
    pub members: Vec<Member>,
    /// Replicas of each partition.
    pub n: usize,
    /// Replicas that hold a write when it is acknowledged.
    pub w: usize,
    pub me: String,
    pub timeout: Duration,
    pub allow_partial: bool,
    pub codec: Arc<AtollCodec>,
    pub peers: Arc<PeerClient>,
    /// The coverage the rule planned, for the query's statistics.
    pub planned: parking_lot::Mutex<Option<CoverageInfo>>,
}

impl fmt::Debug for Spread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Spread({} members, me {})", self.members.len(), self.me)
    }
}

/// The coverage of a query in a cluster.
pub struct CoverageInfo {
    /// Partitions the query needed (its scans read).
    pub total: u32,
    pub missing: Vec<u32>,
    /// The coordinator's name and its share of partitions, when the query
    /// fanned out.
    pub local: Option<(String, u64)>,
    pub counters: Arc<FanoutCounters>,
}

/// One query's [`Spread`] as a session option. It is shared, not copied,
/// by the session's clones (planning and the running query see the same
/// one); it cannot be set from SQL.
#[derive(Debug, Clone, Default)]
pub struct QuerySpread(pub Option<Arc<Spread>>);

impl ConfigExtension for QuerySpread {
    const PREFIX: &'static str = "atoll_spread";
}

impl ExtensionOptions for QuerySpread {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, _value: &str) -> Result<()> {
        Err(DataFusionError::Configuration(format!(
            "{}.{key} is set by Atoll itself",
            Self::PREFIX
        )))
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        Vec::new()
    }
}

#[derive(Debug, Default)]
pub struct Distribute;

impl PhysicalOptimizerRule for Distribute {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(spread) = config
            .extensions
            .get::<QuerySpread>()
            .and_then(|s| s.0.clone())
        else {
            return Ok(plan);
        };
        // Only the partitions the scans read (all, unless a partition key
        // filter narrowed them) are planned: the rest are not asked at all.
        let mut needed = BTreeSet::new();
        visit_scans(&plan, &mut |s| needed.extend(s.partitions()));
        let coverage = Coverage::plan(
            &spread.ring,
            (spread.n, spread.w),
            &spread.members,
            &spread.me,
            &needed,
        );
        if !coverage.missing.is_empty() && !spread.allow_partial {
            return Err(DataFusionError::External(Box::new(
                QueryError::Unavailable(format!(
                    "no complete replica of partitions {:?} is reachable; ask with \"allow_partial\": true for the rest",
                    coverage.missing
                )),
            )));
        }
        let mut info = CoverageInfo {
            total: needed.len() as u32,
            missing: coverage.missing.clone(),
            local: None,
            counters: Default::default(),
        };
        let plan = if coverage.is_local(&spread.me) {
            plan
        } else {
            let mine = coverage.by_node.get(&spread.me).map_or(0, Vec::len);
            info.local = Some((spread.me.clone(), mine as u64));
            split(plan, &fanout_context(&spread, coverage, &info))?
        };
        *spread.planned.lock() = Some(info);
        Ok(plan)
    }

    fn name(&self) -> &str {
        "atoll_distribute"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

fn fanout_context(spread: &Spread, coverage: Coverage, info: &CoverageInfo) -> FanoutContext {
    let address = |node: &str| {
        spread
            .members
            .iter()
            .find(|m| m.name == node)
            .and_then(|m| m.flight_addr.clone())
    };
    let placements = coverage
        .by_node
        .iter()
        .map(|(node, partitions)| Placement {
            node: node.clone(),
            flight_addr: address(node),
            partitions: partitions.clone(),
        })
        .collect();
    FanoutContext {
        me: spread.me.clone(),
        placements,
        codec: spread.codec.clone(),
        timeout: spread.timeout,
        allow_partial: spread.allow_partial,
        counters: info.counters.clone(),
        alternates: coverage.alternates,
        addresses: spread
            .members
            .iter()
            .filter_map(|m| Some((m.name.clone(), m.flight_addr.clone()?)))
            .collect::<BTreeMap<_, _>>(),
        peers: spread.peers.clone(),
    }
}

/// Replaces the largest shippable subtrees by a fan-out.
fn split(plan: Arc<dyn ExecutionPlan>, ctx: &FanoutContext) -> Result<Arc<dyn ExecutionPlan>> {
    if shippable_tree(&plan) {
        return Ok(Arc::new(FanoutExec::new(plan, ctx.clone())));
    }
    let children: Vec<Arc<dyn ExecutionPlan>> = plan
        .children()
        .into_iter()
        .map(|c| split(c.clone(), ctx))
        .collect::<Result<_>>()?;
    if children.is_empty() {
        return Ok(plan);
    }
    #[allow(deprecated)]
    plan.with_new_children(children)
}
