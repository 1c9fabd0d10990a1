//! Runs one SQL query: admission, the read-only sandbox, per-query memory
//! and time limits, and the statistics of what it read.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use atoll_store::Store;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::QueryError;
use crate::catalog::AtollSchema;
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
}

pub struct QueryEngine {
    /// Where query operators run, apart from the HTTP runtime.
    exec: Option<tokio::runtime::Runtime>,
    config: QueryConfig,
    base: SessionState,
    node_pool: Arc<dyn MemoryPool>,
    admission: Arc<Semaphore>,
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
            .register_schema(SCHEMA, Arc::new(AtollSchema::new(store)))
            .expect("a fresh catalog takes a schema");
        let catalogs = MemoryCatalogProviderList::new();
        catalogs.register_catalog(CATALOG.to_string(), Arc::new(catalog));
        // No table functions: `generate_series` and `range` are unbounded
        // CPU and memory bombs, and Atoll has no other use for them.
        let base = SessionStateBuilder::new()
            .with_config(session)
            .with_catalog_list(Arc::new(catalogs))
            .with_default_features()
            .with_table_functions(HashMap::new())
            .build();
        let exec = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.target_partitions.max(1))
            .thread_name("atoll-query")
            .enable_all()
            .build()
            .expect("the query runtime starts");
        QueryEngine {
            exec: Some(exec),
            node_pool: Arc::new(GreedyMemoryPool::new(config.pool_bytes)),
            admission: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
            config,
            base,
        }
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
    pub async fn start(
        &self,
        sql: &str,
        timeout: Option<Duration>,
    ) -> Result<Execution, QueryError> {
        let started = Instant::now();
        let timeout = timeout.map_or(self.config.timeout, |t| t.min(self.config.timeout));
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
        let (plan, ctx) = tokio::time::timeout_at(deadline, self.plan(sql, pool))
            .await
            .map_err(|_| QueryError::Timeout(timeout_ms))??;
        // Operators run on the query runtime: a CPU-bound one that seldom
        // yields must not stall HTTP, timers or other requests.
        let (tx, batches) = tokio::sync::mpsc::channel(2);
        let to_run = plan.clone();
        let task = self.exec_runtime().spawn(async move {
            let mut stream = match execute_stream(to_run, ctx.task_ctx()) {
                Ok(s) => s,
                Err(e) => return drop(tx.send(Err(e)).await),
            };
            while let Some(item) = stream.next().await {
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        });
        Ok(Execution {
            schema: plan.schema(),
            plan,
            batches,
            task,
            started,
            deadline,
            timeout_ms,
            cap: self.config.query_bytes,
            cap_hit,
            _permit: permit,
        })
    }

    async fn plan(
        &self,
        sql: &str,
        pool: QueryPool,
    ) -> Result<(Arc<dyn ExecutionPlan>, SessionContext), QueryError> {
        let ctx = SessionContext::new_with_state(self.session(pool)?);
        let state = ctx.state();
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
        let physical = state.create_physical_plan(&logical).await?;
        Ok((physical, ctx))
    }

    fn session(&self, pool: QueryPool) -> Result<SessionState, QueryError> {
        let pool = TrackConsumersPool::new(pool, NonZeroUsize::new(3).expect("non-zero"));
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(pool))
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()?;
        Ok(SessionStateBuilder::new_from_existing(self.base.clone())
            .with_runtime_env(runtime)
            .build())
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
    plan: Arc<dyn ExecutionPlan>,
    schema: arrow::datatypes::SchemaRef,
    batches: tokio::sync::mpsc::Receiver<datafusion::common::Result<RecordBatch>>,
    task: tokio::task::JoinHandle<()>,
    started: Instant,
    deadline: tokio::time::Instant,
    timeout_ms: u64,
    cap: usize,
    cap_hit: Arc<AtomicBool>,
    _permit: OwnedSemaphorePermit,
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

    pub fn stats(&self, truncated: bool) -> QueryStats {
        let (rows_scanned, partitions_scanned) = scan_totals(&self.plan);
        let mut partitions_total = 0;
        visit_scans(&self.plan, &mut |s| {
            partitions_total += s.partition_count() as u64
        });
        QueryStats {
            elapsed_ms: (self.started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
            rows_scanned,
            partitions_scanned,
            partitions_total,
            truncated,
        }
    }
}
