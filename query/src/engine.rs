//! Runs one SQL query: admission, the read-only sandbox, per-query memory
//! and time limits, and the statistics of what it read.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use atoll_store::Store;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
};
use datafusion::common::ScalarValue;
use datafusion::execution::TaskContext;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::{SQLOptions, SessionConfig};
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::QueryError;
use crate::catalog::AtollSchema;
use crate::codec::{AtollCodec, decode_fragment};
use crate::pg_catalog::{PG_CATALOG, PgCatalogSchema};
use crate::physical_optimizer::count_rows::CountRows;
use crate::physical_optimizer::distribute::{CoverageInfo, Distribute, QuerySpread, Spread};
use crate::physical_optimizer::one_key_aggregate::OneKeyAggregate;
use crate::physical_optimizer::slice_joins::SliceJoins;
use crate::physical_plan::fanout::NodeStats;
use crate::pool::QueryPool;
use crate::scan::{scan_totals, visit_scans};

pub const CATALOG: &str = "atoll";
pub const SCHEMA: &str = "public";

/// Limits and parallelism of the query engine.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// Streams a scan is split into (DataFusion's target partitions).
    pub target_partitions: usize,
    /// Memory all running queries of the node may hold together.
    pub pool_bytes: usize,
    /// Memory one query may hold.
    pub query_bytes: usize,
    /// Longest a query may run; a request may ask for less.
    pub timeout: Duration,
    /// Queries running at once; more wait up to `queue_wait`, then get 503.
    pub max_concurrent: usize,
    pub queue_wait: Duration,
    /// Rows a JSON answer holds at most.
    pub max_json_rows: usize,
    /// Whether queries answer with the partitions they could reach when
    /// some have no reachable replica (a request may say otherwise).
    pub allow_partial: bool,
    /// Bytes one call of a function such as `repeat` or `range` may make
    /// for a batch (elements: a sixteenth of it); `bounded_functions`.
    pub max_function_bytes: usize,
    /// Live views this node coordinates at once (`live`).
    pub max_live_sessions: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            target_partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
            pool_bytes: 4 << 30,
            query_bytes: 2 << 30,
            timeout: Duration::from_secs(30),
            max_concurrent: 16,
            queue_wait: Duration::from_secs(2),
            max_json_rows: 10_000,
            allow_partial: false,
            max_function_bytes: 256 << 20,
            max_live_sessions: 16,
        }
    }
}

/// What a query read and how long it took, as answered in `stats`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueryStats {
    pub elapsed_ms: f64,
    pub rows_scanned: u64,
    pub partitions_scanned: u64,
    pub partitions_total: u64,
    pub truncated: bool,
    /// Fraction of the ring's partitions answered (1 unless partial).
    pub coverage: f64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_partitions: Vec<u32>,
    /// Per node, when the query ran on more than the coordinator.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeStats>,
    /// Per table read, the oldest event time kept after evictions for
    /// memory (RFC 3339), when some were made: older events are gone.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub kept_from: BTreeMap<String, String>,
}

/// What the engine needs to know of the cluster.
#[derive(Clone)]
pub struct ClusterHandle {
    pub membership: Arc<atoll_cluster::Membership>,
    pub replicas: usize,
    /// `--write-quorum` (None: a majority of N).
    pub write_quorum: Option<usize>,
    /// Whether this node may have just resumed from a stall.
    pub stall: Arc<atoll_cluster::stall::StallWatch>,
    /// The one client of the cluster's internal service.
    pub peers: Arc<atoll_cluster::PeerClient>,
    pub store: Arc<Store>,
}

type Batches = tokio::sync::mpsc::Receiver<datafusion::common::Result<RecordBatch>>;

/// Cancels a fragment when its request goes away.
/// Its admission permit is held as long as the fragment runs.
pub struct FragmentGuard {
    task: tokio::task::JoinHandle<()>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for FragmentGuard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct QueryEngine {
    cluster: Option<ClusterHandle>,
    /// Where query operators run, apart from the HTTP runtime.
    exec: Option<tokio::runtime::Runtime>,
    config: QueryConfig,
    base: SessionState,
    node_pool: Arc<dyn MemoryPool>,
    admission: Arc<Semaphore>,
    /// Fragments other nodes send run under an admission of their own,
    /// as many at once as local queries (sharing one would let two nodes
    /// that fan out to each other wait on each other's permits).
    fragment_admission: Arc<Semaphore>,
    /// Live views coordinated here.
    live_admission: Arc<Semaphore>,
    /// Set when the node stops: every live view ends.
    live_stop: tokio::sync::watch::Sender<bool>,
    /// The session live filters are planned in: the functions and limits
    /// of queries, and no tables (a filter reads one row, nothing else).
    live_state: SessionState,
}

impl QueryEngine {
    pub fn new(store: Arc<Store>, config: QueryConfig) -> QueryEngine {
        let session = SessionConfig::new()
            .with_information_schema(true)
            .with_create_default_catalog_and_schema(false)
            .with_default_catalog_and_schema(CATALOG, SCHEMA)
            .with_target_partitions(config.target_partitions.max(1));
        let catalog = MemoryCatalogProvider::new();
        catalog
            .register_schema(SCHEMA, Arc::new(AtollSchema::new(store.clone())))
            .expect("a fresh catalog takes a schema");
        catalog
            .register_schema(PG_CATALOG, Arc::new(PgCatalogSchema::new(store)))
            .expect("a fresh catalog takes a schema");
        let catalogs = MemoryCatalogProviderList::new();
        catalogs.register_catalog(CATALOG.to_string(), Arc::new(catalog));
        // No table functions: `generate_series` and `range` are unbounded
        // CPU and memory bombs, and Atoll has no other use for them.
        let mut base = SessionStateBuilder::new()
            .with_config(session)
            .with_catalog_list(Arc::new(catalogs))
            .with_default_features()
            .with_table_functions(HashMap::new())
            .with_physical_optimizer_rule(Arc::new(CountRows))
            .with_physical_optimizer_rule(Arc::new(Distribute))
            .with_physical_optimizer_rule(Arc::new(SliceJoins))
            .with_physical_optimizer_rule(Arc::new(OneKeyAggregate))
            .build();
        crate::bounded_functions::register(&mut base, config.max_function_bytes)
            .expect("the session takes functions");
        crate::pg_catalog::register_functions(&mut base).expect("the session takes functions");
        crate::approx_percentile::register(&mut base).expect("the session takes functions");
        let exec = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.target_partitions.max(1))
            // New queries and cancellations arrive from other threads, so
            // through the global queue: look at it every other task (tokio
            // tunes the default of 61 down only after 61 long polls, which
            // kept a cancelled join running for seconds).
            .global_queue_interval(2)
            .thread_name("atoll-query")
            .enable_all()
            .build()
            .expect("the query runtime starts");
        QueryEngine {
            cluster: None,
            exec: Some(exec),
            node_pool: Arc::new(GreedyMemoryPool::new(config.pool_bytes)),
            admission: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
            fragment_admission: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
            live_admission: Arc::new(Semaphore::new(config.max_live_sessions)),
            live_stop: tokio::sync::watch::Sender::new(false),
            live_state: SessionStateBuilder::new_from_existing(base.clone())
                .with_catalog_list(Arc::new(MemoryCatalogProviderList::new()))
                .build(),
            config,
            base,
        }
    }

    /// Starts a live view of `spec` for a caller limited to `tables` (if
    /// given): its filter is checked against the table here, then every
    /// owner of a coverage plan follows it (`live::session`).
    pub fn live(
        &self,
        spec: crate::live::LiveSpec,
        tables: Option<&BTreeSet<String>>,
    ) -> Result<crate::live::LiveStream, QueryError> {
        if tables.is_some_and(|t| !t.contains(&spec.table)) {
            return Err(QueryError::Forbidden(format!(
                "this key may not read table {:?}",
                spec.table
            )));
        }
        let Some(cluster) = &self.cluster else {
            return Err(QueryError::Refused(
                "live views need a node of a ring".into(),
            ));
        };
        let tap = self.live_tap(spec.clone())?;
        crate::live::tap::check_columns(&spec, &tap.schema())?;
        let permit = self
            .live_admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                QueryError::Unavailable(format!(
                    "this node serves {} live views already (--max-live-sessions)",
                    self.config.max_live_sessions
                ))
            })?;
        Ok(crate::live::session::start(
            cluster.clone(),
            spec,
            permit,
            self.live_stop.subscribe(),
        ))
    }

    /// Ends every live view (the node is stopping: their responses would
    /// never end by themselves).
    pub fn stop_live(&self) {
        self.live_stop.send_replace(true);
    }

    /// Live views this node coordinates now.
    pub fn live_views(&self) -> usize {
        self.config
            .max_live_sessions
            .saturating_sub(self.live_admission.available_permits())
    }

    /// A subscription's state on this node (checked against the table).
    pub fn live_tap(
        &self,
        spec: crate::live::LiveSpec,
    ) -> Result<crate::live::tap::Tap, QueryError> {
        spec.check()?;
        let Some(cluster) = &self.cluster else {
            return Err(QueryError::Refused(
                "live views need a node of a ring".into(),
            ));
        };
        crate::live::tap::Tap::new(spec, self.live_state.clone(), cluster.store.clone())
    }

    /// Makes queries span the cluster.
    pub fn with_cluster(mut self, cluster: ClusterHandle) -> QueryEngine {
        self.cluster = Some(cluster);
        self
    }

    fn exec_runtime(&self) -> &tokio::runtime::Runtime {
        self.exec
            .as_ref()
            .expect("the query runtime lives as long as the engine")
    }

    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    /// Bytes held by running queries.
    pub fn memory_in_use(&self) -> usize {
        self.node_pool.reserved()
    }

    /// Admits, plans and starts a query; its batches come from
    /// [`Execution::next`] until the deadline.
    /// `tables`, when given, are the only tables the query may read (the
    /// scope of the caller's key): one naming another is refused.
    pub async fn start(
        &self,
        sql: &str,
        timeout: Option<Duration>,
        allow_partial: Option<bool>,
        tables: Option<&BTreeSet<String>>,
    ) -> Result<Execution, QueryError> {
        self.start_bound(sql, Vec::new(), timeout, allow_partial, tables)
            .await
    }

    /// [`QueryEngine::start`] for a statement with `$1`-style parameters,
    /// bound to `params` (cast to the types the plan infers for them).
    pub async fn start_bound(
        &self,
        sql: &str,
        params: Vec<ScalarValue>,
        timeout: Option<Duration>,
        allow_partial: Option<bool>,
        tables: Option<&BTreeSet<String>>,
    ) -> Result<Execution, QueryError> {
        let started = Instant::now();
        let timeout = self.timeout(timeout)?;
        let deadline = tokio::time::Instant::from_std(started + timeout);
        if sql.trim().is_empty() {
            return Err(QueryError::BadRequest("sql is empty".into()));
        }
        let permit = tokio::time::timeout(
            self.config.queue_wait,
            self.admission.clone().acquire_owned(),
        )
        .await
        .map_err(|_| QueryError::Busy(self.config.max_concurrent))?
        .expect("the admission semaphore is never closed");
        let timeout_ms = timeout.as_millis() as u64;
        let pool = QueryPool::new(self.node_pool.clone(), self.config.query_bytes);
        let cap_hit = pool.cap_hit();
        let allow_partial = allow_partial.unwrap_or(self.config.allow_partial);
        let spread = self.spread(timeout, allow_partial).await?;
        let (plan, task_ctx) = tokio::time::timeout_at(
            deadline,
            self.plan(sql, params, pool, spread.clone(), tables),
        )
        .await
        .map_err(|_| QueryError::Timeout(timeout_ms))??;
        let coverage = spread.and_then(|s| s.planned.lock().take());
        let timed_out = Arc::new(AtomicBool::new(false));
        let limit = Limit {
            deadline,
            permit,
            timed_out: timed_out.clone(),
        };
        let (batches, task) = self.spawn_stream(plan.clone(), task_ctx, Some(limit));
        Ok(Execution {
            coverage,
            schema: plan.schema(),
            plan,
            batches,
            task,
            started,
            deadline,
            timeout_ms,
            cap: self.config.query_bytes,
            cap_hit,
            timed_out,
        })
    }

    /// A query's time limit: the node's, or a shorter one the request
    /// asked for. One outside 1 ms ..= the node's limit is refused (not
    /// clamped: a client asking for more than it can get should know).
    fn timeout(&self, asked: Option<Duration>) -> Result<Duration, QueryError> {
        let limit = self.config.timeout;
        match asked {
            None => Ok(limit),
            Some(t) if t >= Duration::from_millis(1) && t <= limit => Ok(t),
            Some(t) => Err(QueryError::BadRequest(format!(
                "timeout_ms {} is outside the allowed range 1..={} (this node's query time limit)",
                t.as_millis(),
                limit.as_millis()
            ))),
        }
    }

    /// Operators run on the query runtime: a CPU-bound one that seldom
    /// yields must not stall HTTP, timers or other requests. A query's
    /// task holds its admission slot and stops at its deadline by itself,
    /// so that a client that stops reading (a suspended Postgres portal, an
    /// unread stream) cannot keep the slot, the plan or its memory.
    fn spawn_stream(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        task_ctx: Arc<datafusion::execution::TaskContext>,
        limit: Option<Limit>,
    ) -> (Batches, tokio::task::JoinHandle<()>) {
        let (tx, batches) = tokio::sync::mpsc::channel(2);
        let task = self.exec_runtime().spawn(async move {
            let run = async {
                let mut stream = match execute_stream(plan, task_ctx) {
                    Ok(s) => s,
                    Err(e) => return drop(tx.send(Err(e)).await),
                };
                while let Some(item) = stream.next().await {
                    if tx.send(item).await.is_err() {
                        return;
                    }
                }
            };
            match limit {
                None => run.await,
                Some(limit) => {
                    let _slot = limit.permit;
                    if tokio::time::timeout_at(limit.deadline, run).await.is_err() {
                        limit.timed_out.store(true, Ordering::Relaxed);
                    }
                }
            }
        });
        (batches, task)
    }

    /// In a cluster: the ring and members as this query sees them, for
    /// the split (`physical_optimizer::distribute`).
    async fn spread(
        &self,
        timeout: Duration,
        allow_partial: bool,
    ) -> Result<Option<Arc<Spread>>, QueryError> {
        let Some(cluster) = &self.cluster else {
            return Ok(None);
        };
        let ring = cluster
            .membership
            .ring()
            .ok_or_else(|| QueryError::Unavailable("this node has not joined a ring yet".into()))?;
        let n = ring.replicas(cluster.replicas);
        let me = cluster.membership.node_name().to_string();
        let mut members = cluster.membership.members().await;
        let alone = ring.members().len() < 2;
        if !alone && (cluster.stall.suspect() || cluster.membership.deaf(&members)) {
            // Just resumed from a stall, or hearing no gossip: read the
            // other replicas (even with one replica a fallback node may
            // have taken hinted writes meanwhile). A node alone in its
            // ring missed nothing: no other node could take a write.
            for m in members.iter_mut().filter(|m| m.name == me) {
                m.incomplete = (0..ring.partitions()).collect();
            }
        }
        Ok(Some(Arc::new(Spread {
            n,
            w: atoll_cluster::replicate::write_quorum(n, cluster.write_quorum),
            ring,
            members,
            me,
            timeout,
            allow_partial,
            codec: Arc::new(AtollCodec {
                store: cluster.store.clone(),
                streams: self.config.target_partitions.max(1),
            }),
            peers: cluster.peers.clone(),
            planned: Default::default(),
        })))
    }

    /// Runs a fragment another node sent: decoded with Atoll's codec,
    /// checked node by node, on the query runtime. The plan is returned for
    /// its scan counters.
    pub fn run_fragment(
        &self,
        ticket: &[u8],
    ) -> Result<(Arc<dyn ExecutionPlan>, Batches, FragmentGuard, Duration), QueryError> {
        let Some(cluster) = &self.cluster else {
            return Err(QueryError::Refused(
                "this node takes no fragments: it is not in a cluster".into(),
            ));
        };
        // No waiting: a busy owner says so at once, and the coordinator
        // asks another replica.
        let permit = self
            .fragment_admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| QueryError::Busy(self.config.max_concurrent))?;
        let pool = QueryPool::new(self.node_pool.clone(), self.config.query_bytes);
        let task_ctx = self.task_context(&self.base, pool)?;
        let codec = AtollCodec {
            store: cluster.store.clone(),
            streams: self.config.target_partitions.max(1),
        };
        let (header, plan) = decode_fragment(ticket, &task_ctx, &codec)
            .map_err(|e| QueryError::Refused(e.strip_backtrace()))?;
        let plan = crate::physical_optimizer::one_key_aggregate::rewrite(plan, false)
            .map_err(|e| QueryError::Refused(e.strip_backtrace()))?;
        let (batches, task) = self.spawn_stream(plan.clone(), task_ctx, None);
        // The coordinator's limit, within this node's own.
        let timeout = Duration::from_millis(header.timeout_ms).min(self.config.timeout);
        let guard = FragmentGuard {
            task,
            _permit: permit,
        };
        Ok((plan, batches, guard, timeout))
    }

    /// What a statement would answer, without running it: its columns
    /// and the types of its parameters (None where the plan does not say).
    /// Refused as [`QueryEngine::start`] would refuse it.
    pub async fn describe(
        &self,
        sql: &str,
        tables: Option<&BTreeSet<String>>,
    ) -> Result<Described, QueryError> {
        let state = self.base.clone();
        let logical = self.logical_plan(&state, sql, tables).await?;
        let params = logical
            .get_parameter_types()
            .map_err(QueryError::from_planning)?;
        let mut types = vec![None; params.len()];
        for (name, t) in params {
            let index = name
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| (1..=types.len()).contains(n))
                .ok_or_else(|| {
                    QueryError::BadRequest(format!(
                        "parameter {name} is not numbered $1..${}",
                        types.len()
                    ))
                })?;
            types[index - 1] = t;
        }
        Ok(Described {
            schema: Arc::new(logical.schema().as_arrow().clone()),
            params: types,
        })
    }

    /// Parses and plans a statement, checked against the sandbox and the
    /// caller's scope.
    async fn logical_plan(
        &self,
        state: &SessionState,
        sql: &str,
        tables: Option<&BTreeSet<String>>,
    ) -> Result<LogicalPlan, QueryError> {
        if sql.trim().is_empty() {
            return Err(QueryError::BadRequest("sql is empty".into()));
        }
        let logical = state
            .create_logical_plan(sql)
            .await
            .map_err(refine_plan_error)?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&logical)
            .map_err(|e| {
                QueryError::Refused(format!("Atoll SQL is read-only: {}", e.strip_backtrace()))
            })?;
        if let Some(scope) = tables {
            within_scope(&logical, scope)?;
        }
        Ok(logical)
    }

    async fn plan(
        &self,
        sql: &str,
        params: Vec<ScalarValue>,
        pool: QueryPool,
        spread: Option<Arc<Spread>>,
        tables: Option<&BTreeSet<String>>,
    ) -> Result<(Arc<dyn ExecutionPlan>, Arc<TaskContext>), QueryError> {
        // One copy of the node's session per query, with its clock (`now()`)
        // and its view of the cluster set; the query's memory pool goes into
        // the task that runs it. (Rebuilding the session through a builder
        // re-registered every function on every query and fragment.)
        let mut state = self.base.clone();
        state.mark_start_execution();
        state
            .config_mut()
            .options_mut()
            .extensions
            .insert(QuerySpread(spread));
        let task_ctx = self.task_context(&state, pool)?;
        let logical = bind(self.logical_plan(&state, sql, tables).await?, params)?;
        let physical = state
            .create_physical_plan(&logical)
            .await
            .map_err(QueryError::from_planning)?;
        Ok((physical, task_ctx))
    }

    /// What runs a query's plan: the session's functions and settings,
    /// and the query's own memory pool within the node's.
    fn task_context(
        &self,
        state: &SessionState,
        pool: QueryPool,
    ) -> Result<Arc<TaskContext>, QueryError> {
        let pool = TrackConsumersPool::new(pool, NonZeroUsize::new(3).expect("non-zero"));
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(pool))
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()?;
        Ok(Arc::new(TaskContext::from(state).with_runtime(runtime)))
    }
}

/// What [`QueryEngine::describe`] tells of a statement.
pub struct Described {
    pub schema: arrow::datatypes::SchemaRef,
    pub params: Vec<Option<arrow::datatypes::DataType>>,
}

/// Binds parameters, each cast to the type the plan infers for it (a
/// client sends `'5'` for a number as often as `5`).
/// A plan without placeholders and without values is returned as it is
/// (the common case: one walk of the plan).
fn bind(plan: LogicalPlan, params: Vec<ScalarValue>) -> Result<LogicalPlan, QueryError> {
    let types = match plan.get_parameter_types() {
        Ok(types) => types,
        // Nothing to bind: the plan goes on as DataFusion planned it.
        Err(_) if params.is_empty() => return Ok(plan),
        Err(e) => return Err(QueryError::from_planning(e)),
    };
    if types.is_empty() && params.is_empty() {
        return Ok(plan);
    }
    if types.len() != params.len() {
        return Err(QueryError::BadRequest(format!(
            "the statement has {} parameter(s) and {} were given",
            types.len(),
            params.len()
        )));
    }
    let params = params
        .into_iter()
        .enumerate()
        .map(|(i, value)| match types.get(&format!("${}", i + 1)) {
            Some(Some(t)) if &value.data_type() != t => value.cast_to(t).map_err(|e| {
                QueryError::BadRequest(format!(
                    "parameter ${} ({value}) is not a {t}: {}",
                    i + 1,
                    e.strip_backtrace()
                ))
            }),
            _ => Ok(value),
        })
        .collect::<Result<Vec<_>, _>>()?;
    plan.with_param_values(params)
        .map_err(|e| QueryError::BadRequest(e.strip_backtrace()))
}

/// Refuses a plan that reads a table outside `scope` (information_schema
/// included: it would list the others).
fn within_scope(plan: &LogicalPlan, scope: &BTreeSet<String>) -> Result<(), QueryError> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    // DESCRIBE names a table without scanning it.
    if let LogicalPlan::DescribeTable(_) = plan {
        return Err(QueryError::Forbidden(
            "a key limited to some tables cannot DESCRIBE: query its tables instead".into(),
        ));
    }
    let mut outside = None;
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let t = &scan.table_name;
            let own =
                t.schema().is_none_or(|s| s == SCHEMA) && t.catalog().is_none_or(|c| c == CATALOG);
            if !own || !scope.contains(t.table()) {
                outside = Some(t.to_string());
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    match outside {
        Some(table) => Err(QueryError::Forbidden(format!(
            "this key may read only tables {:?}; the query reads {table}",
            scope.iter().collect::<Vec<_>>()
        ))),
        None => Ok(()),
    }
}

fn refine_plan_error(e: datafusion::common::DataFusionError) -> QueryError {
    let text = e.strip_backtrace();
    let lower = text.to_lowercase();
    if lower.contains("table function") && lower.contains("not found") {
        return QueryError::Refused(format!(
            "table functions such as generate_series and range are not available in Atoll SQL ({text})"
        ));
    }
    if lower.contains("only supports a single sql statement") {
        return QueryError::Refused("send one SQL statement per query".into());
    }
    QueryError::DataFusion(e)
}

impl Drop for QueryEngine {
    fn drop(&mut self) {
        if let Some(rt) = self.exec.take() {
            rt.shutdown_background();
        }
    }
}

/// A running query. Dropping it cancels it.
pub struct Execution {
    coverage: Option<CoverageInfo>,
    plan: Arc<dyn ExecutionPlan>,
    schema: arrow::datatypes::SchemaRef,
    batches: Batches,
    task: tokio::task::JoinHandle<()>,
    started: Instant,
    deadline: tokio::time::Instant,
    timeout_ms: u64,
    cap: usize,
    cap_hit: Arc<AtomicBool>,
    /// Set when the query's task stopped at the deadline.
    timed_out: Arc<AtomicBool>,
}

/// What a query's task holds and obeys: its admission slot, its deadline.
struct Limit {
    deadline: tokio::time::Instant,
    permit: OwnedSemaphorePermit,
    timed_out: Arc<AtomicBool>,
}

impl Drop for Execution {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Execution {
    pub fn schema(&self) -> arrow::datatypes::SchemaRef {
        self.schema.clone()
    }

    /// The next batch, or None at the end; fails past the deadline.
    pub async fn next(&mut self) -> Result<Option<RecordBatch>, QueryError> {
        match tokio::time::timeout_at(self.deadline, self.batches.recv()).await {
            Err(_) => Err(QueryError::Timeout(self.timeout_ms)),
            // The task stopped at the deadline (nobody was reading).
            Ok(None) if self.timed_out.load(Ordering::Relaxed) => {
                Err(QueryError::Timeout(self.timeout_ms))
            }
            Ok(None) => Ok(None),
            Ok(Some(Ok(batch))) => Ok(Some(batch)),
            Ok(Some(Err(e))) if self.cap_hit.load(Ordering::Relaxed) => {
                Err(QueryError::MemoryCap {
                    cap: self.cap,
                    detail: e.strip_backtrace(),
                })
            }
            Ok(Some(Err(e))) => Err(e.into()),
        }
    }

    /// The batches of the first `cap` rows, and whether rows were left out.
    pub async fn first_rows(&mut self, cap: usize) -> Result<(Vec<RecordBatch>, bool), QueryError> {
        let mut batches = Vec::new();
        let mut rows = 0;
        while let Some(batch) = self.next().await? {
            let room = cap - rows;
            if batch.num_rows() > room {
                batches.push(batch.slice(0, room));
                return Ok((batches, true));
            }
            rows += batch.num_rows();
            batches.push(batch);
        }
        Ok((batches, false))
    }

    pub fn stats(&self, truncated: bool) -> QueryStats {
        let (mut rows_scanned, mut partitions_scanned) = scan_totals(&self.plan);
        let mut partitions_total = 0;
        let mut kept_from = BTreeMap::new();
        visit_scans(&self.plan, &mut |s| {
            partitions_total += s.partition_count() as u64;
            if let Some(k) = s.kept_from() {
                kept_from.insert(s.table().to_string(), atoll_store::rfc3339(k));
            }
        });
        let (mut coverage, mut missing_partitions, mut nodes) = (1.0, Vec::new(), Vec::new());
        if let Some(info) = &self.coverage {
            nodes = self.node_stats(info, rows_scanned);
            rows_scanned += info.counters.remote_rows.load(Ordering::Relaxed);
            partitions_scanned += info.counters.remote_partitions.load(Ordering::Relaxed);
            missing_partitions = info.missing.clone();
            missing_partitions.extend(info.counters.failed_partitions.lock().iter());
            missing_partitions.sort_unstable();
            coverage = 1.0 - missing_partitions.len() as f64 / f64::from(info.total.max(1));
        }
        QueryStats {
            elapsed_ms: (self.started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
            rows_scanned,
            partitions_scanned,
            partitions_total,
            truncated,
            coverage: (coverage * 1000.0).round() / 1000.0,
            missing_partitions,
            nodes,
            kept_from,
        }
    }

    /// The coordinator's share (its local scans) and each owner's.
    fn node_stats(&self, info: &CoverageInfo, local_rows: u64) -> Vec<NodeStats> {
        let Some((me, partitions)) = &info.local else {
            return Vec::new();
        };
        let mut nodes = info.counters.nodes.lock().clone();
        if *partitions > 0 {
            nodes.insert(
                me.clone(),
                NodeStats {
                    node: me.clone(),
                    partitions: *partitions,
                    rows_scanned: local_rows,
                    elapsed_ms: None,
                },
            );
        }
        nodes.into_values().collect()
    }
}

/// The query engine runs the fragments the cluster's service receives.
pub struct Fragments(pub Arc<QueryEngine>);

impl atoll_cluster::service::FragmentRunner for Fragments {
    fn start(
        &self,
        ticket: &[u8],
    ) -> Result<
        atoll_cluster::service::RunningFragment,
        Box<dyn atoll_errors::Classified + Send + Sync>,
    > {
        let (plan, batches, guard, timeout) = self
            .0
            .run_fragment(ticket)
            .map_err(|e| Box::new(e) as Box<dyn atoll_errors::Classified + Send + Sync>)?;
        let batches = tokio_stream::wrappers::ReceiverStream::new(batches)
            .map(|b| b.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>))
            .boxed();
        let schema = plan.schema();
        Ok(atoll_cluster::service::RunningFragment {
            schema,
            batches,
            timeout,
            finish: Box::new(move || {
                let _running = guard;
                scan_totals(&plan).0
            }),
        })
    }
}
