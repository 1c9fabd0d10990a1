//! `GET /metrics`: the node's Prometheus registry, plus per-table gauges
//! read from the store at scrape time.

use std::sync::Arc;

use atoll_query::QueryEngine;
use atoll_store::Store;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

#[derive(Clone)]
pub struct NodeMetrics {
    registry: Registry,
    store: Arc<Store>,
    engine: Arc<QueryEngine>,
    ingest: atoll_ingest::IngestMetrics,
    /// The ingest turns and how many there are.
    turns: (Arc<tokio::sync::Semaphore>, usize),
    ingest_in_progress: IntGauge,
    table_rows: IntGaugeVec,
    table_memory: IntGaugeVec,
    table_bytes: IntGaugeVec,
    table_kept_from: IntGaugeVec,
    query_memory: IntGauge,
    data_memory: IntGauge,
    /// Live views coordinated here, and live subscriptions served here.
    live: (IntGauge, IntGauge, Arc<atoll_cluster::live::LiveTaps>),
}

impl NodeMetrics {
    pub fn new(
        registry: Registry,
        store: Arc<Store>,
        engine: Arc<QueryEngine>,
        ingest: atoll_ingest::IngestMetrics,
        turns: (Arc<tokio::sync::Semaphore>, usize),
        budget: crate::memory::MemoryBudget,
        taps: Arc<atoll_cluster::live::LiveTaps>,
    ) -> prometheus::Result<NodeMetrics> {
        let live_views = IntGauge::new(
            "atoll_live_views",
            "Live views this node coordinates (--max-live-sessions)",
        )?;
        let live_subscriptions = IntGauge::new(
            "atoll_live_subscriptions",
            "Live subscriptions this node serves as an owner",
        )?;
        registry.register(Box::new(live_views.clone()))?;
        registry.register(Box::new(live_subscriptions.clone()))?;
        let ingest_in_progress = IntGauge::new(
            "atoll_ingest_in_progress",
            "Ingest requests holding a turn (--max-concurrent-ingest)",
        )?;
        registry.register(Box::new(ingest_in_progress.clone()))?;
        let table_rows = IntGaugeVec::new(
            Opts::new("atoll_table_rows", "Rows held, per table"),
            &["table"],
        )?;
        let table_memory = IntGaugeVec::new(
            Opts::new("atoll_table_memory_bytes", "Memory held by data, per table"),
            &["table"],
        )?;
        let query_memory =
            IntGauge::new("atoll_query_memory_bytes", "Memory held by running queries")?;
        registry.register(Box::new(table_rows.clone()))?;
        registry.register(Box::new(table_memory.clone()))?;
        let table_bytes = IntGaugeVec::new(
            Opts::new(
                "atoll_table_bytes",
                "Memory of a table's batches by form: plain, compressed (as held), compressed_plain (the compressed ones decompressed)",
            ),
            &["table", "form"],
        )?;
        registry.register(Box::new(table_bytes.clone()))?;
        registry.register(Box::new(query_memory.clone()))?;
        let table_kept_from = IntGaugeVec::new(
            Opts::new(
                "atoll_table_kept_from_seconds",
                "The oldest event time kept after evictions for memory (seconds since the epoch), per table that had some",
            ),
            &["table"],
        )?;
        registry.register(Box::new(table_kept_from.clone()))?;
        let data_memory = IntGauge::new(
            "atoll_data_memory_bytes",
            "Memory held by the batches of this node's tables",
        )?;
        registry.register(Box::new(data_memory.clone()))?;
        for (name, help, value) in [
            ("atoll_memory_limit_bytes", "--memory-limit", budget.limit),
            (
                "atoll_memory_data_budget_bytes",
                "What data may take: the limit less the query pool",
                budget.data() as usize,
            ),
            (
                "atoll_query_memory_limit_bytes",
                "The pool of running queries (--query-memory)",
                budget.queries,
            ),
        ] {
            let gauge = IntGauge::new(name, help)?;
            gauge.set(value as i64);
            registry.register(Box::new(gauge))?;
        }
        Ok(NodeMetrics {
            registry,
            store,
            engine,
            ingest,
            turns,
            ingest_in_progress,
            table_rows,
            table_memory,
            table_bytes,
            table_kept_from,
            query_memory,
            data_memory,
            live: (live_views, live_subscriptions, taps),
        })
    }

    fn render(&self) -> String {
        self.table_rows.reset();
        self.table_memory.reset();
        self.table_bytes.reset();
        self.table_kept_from.reset();
        let (turns, all) = &self.turns;
        self.ingest_in_progress
            .set(all.saturating_sub(turns.available_permits()) as i64);
        self.ingest
            .retain_tables(|name| self.store.table(name).is_some());
        let mut data = 0;
        for t in self.store.tables() {
            if let Some(k) = t.kept_from() {
                self.table_kept_from
                    .with_label_values(&[t.name()])
                    .set(k / 1_000_000);
            }
            let bytes = t.bytes();
            for (form, value) in [
                ("plain", bytes.plain),
                ("compressed", bytes.compressed),
                ("compressed_plain", bytes.compressed_plain),
            ] {
                self.table_bytes
                    .with_label_values(&[t.name(), form])
                    .set(value as i64);
            }
            self.table_rows
                .with_label_values(&[t.name()])
                .set(t.rows() as i64);
            self.table_memory
                .with_label_values(&[t.name()])
                .set(bytes.held() as i64);
            data += bytes.held();
        }
        self.data_memory.set(data as i64);
        self.query_memory.set(self.engine.memory_in_use() as i64);
        self.live.0.set(self.engine.live_views() as i64);
        self.live.1.set(self.live.2.count() as i64);
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("Prometheus text is UTF-8")
    }
}

pub fn router(metrics: NodeMetrics) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(metrics)
}

/// Open with `--open-metrics` (no caller then), else for status keys.
async fn scrape(
    State(m): State<NodeMetrics>,
    caller: Option<axum::Extension<atoll_auth::Caller>>,
) -> Result<impl IntoResponse, crate::http::ApiError> {
    if let Some(caller) = caller {
        caller.may(atoll_auth::Need::Status)?;
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            TextEncoder::new().format_type().to_string(),
        )],
        m.render(),
    ))
}
