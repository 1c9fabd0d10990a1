//! HTTP routes that write: events in, table settings, table drops; and the
//! table listing. Each reads its request and calls the typed ingest or
//! cluster API.

use std::sync::Arc;
use std::time::Instant;

use atoll_auth::{Caller, Need};
use atoll_cluster::Replicator;
use atoll_ingest::{EventsBody, Ingest, IngestError, IngestMetrics};
use atoll_store::{Store, StoreError, Table, TableSettings, now_micros, validate_table_name};
use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{Value, json};

use super::ApiError;

#[derive(Clone)]
pub struct IngestState {
    pub ingest: Ingest,
    pub metrics: IngestMetrics,
}

impl IngestState {
    fn store(&self) -> &Arc<Store> {
        &self.ingest.store
    }

    fn replicator(&self) -> &Arc<Replicator> {
        &self.ingest.replicator
    }
}

pub fn router(state: IngestState) -> Router {
    Router::new()
        .route("/v1/tables", get(list_tables))
        .route(
            "/v1/tables/{table}",
            get(get_table).put(put_table).delete(delete_table),
        )
        .route("/v1/tables/{table}/events", post(post_events))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

impl IngestState {
    /// Counts a request's events (native or of a protocol door).
    pub(crate) fn count_events(&self, table: &str, accepted: usize, rejected: usize) {
        self.metrics
            .events_accepted
            .with_label_values(&[table])
            .inc_by(accepted as u64);
        self.metrics
            .events_rejected
            .with_label_values(&[table])
            .inc_by(rejected as u64);
    }

    /// Counts and times a request by its answer's status.
    pub(super) fn count_request(&self, started: Instant, response: &Response) {
        self.count_status(started, response.status().as_u16());
    }

    /// Counts and times a request by its status (a gRPC door's: the HTTP
    /// status its error kind has everywhere else).
    pub(crate) fn count_status(&self, started: Instant, status: u16) {
        let status = status.to_string();
        self.metrics.requests.with_label_values(&[&status]).inc();
        self.metrics
            .request_seconds
            .with_label_values(&[&status])
            .observe(started.elapsed().as_secs_f64());
    }
}

/// A protocol door's body, read whole and decompressed (`Content-Encoding`
/// gzip or zstd), within `--max-body-bytes` before and after.
pub(super) async fn read_decoded(
    ingest: &Ingest,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, IngestError> {
    let (raw, encoding) = read_raw(ingest, headers, body).await?;
    atoll_ingest::body::inflate(encoding, raw, ingest.max_body_bytes).await
}

/// A request's body as sent (within `--max-body-bytes`) and its
/// `Content-Encoding`.
async fn read_raw(
    ingest: &Ingest,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Bytes, Option<String>), IngestError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let raw = read_body(body, declared, ingest.max_body_bytes).await?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("(not text)").to_string());
    Ok((raw, encoding))
}

/// Who sent a request, as idempotency keys and logs name them.
pub(crate) fn sender(caller: &Caller) -> String {
    caller.key_id.clone().unwrap_or_else(|| caller.name.clone())
}

async fn post_events(
    State(st): State<IngestState>,
    Extension(caller): Extension<Caller>,
    Path(table): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(e) = caller.may(Need::Ingest(&table)) {
        return ApiError::from(e).into_response();
    }
    let started = Instant::now();
    let response = match receive(&st, &caller, &table, &headers, body).await {
        Ok(atoll_ingest::Ingested {
            outcome,
            quorum_failed,
        }) => {
            st.count_events(&table, outcome.accepted, outcome.rejected_count());
            let status = if quorum_failed {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            (status, Json(outcome)).into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    };
    st.count_request(started, &response);
    response
}

async fn receive(
    st: &IngestState,
    caller: &Caller,
    table: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<atoll_ingest::Ingested, IngestError> {
    validate_table_name(table)?;
    // The turn first: bodies waiting for one are not held in memory.
    let turn = st.ingest.turn().await?;
    let (raw, encoding) = read_raw(&st.ingest, headers, body).await?;
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("ndjson") || ct.contains("jsonl") || ct.contains("json-seq"));
    let idempotency_key =
        atoll_ingest::idempotency_key(headers.get("idempotency-key").map(|v| v.as_bytes()))?;
    let body = EventsBody {
        raw,
        encoding,
        ndjson,
        idempotency_key,
        sender: sender(caller),
        from_door: false,
    };
    st.ingest.events_in_turn(table, body, &turn).await
}

/// The whole body, into one buffer of its declared length (up to 16 MiB
/// ahead of the bytes: a length is only a claim): collecting its chunks
/// into a growing buffer copied a large body about twice more. A body
/// declared or found over `limit` is refused.
async fn read_body(
    body: Body,
    declared: Option<usize>,
    limit: usize,
) -> Result<Bytes, IngestError> {
    let too_large = || IngestError::TooLarge { limit, after: "" };
    let declared = declared.unwrap_or(0);
    if declared > limit {
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(declared.min(16 << 20));
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk =
            chunk.map_err(|_| IngestError::BadBody("the request body could not be read".into()))?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// What `GET /v1/tables` says of a table.
pub fn describe(table: &Table) -> Value {
    let schema = table.schema();
    let bytes = table.bytes();
    json!({
        "name": table.name(),
        "columns": schema.columns().iter().map(|(n, t)| json!({"name": n, "type": t.to_string()})).collect::<Vec<_>>(),
        "rows": table.rows(),
        "memory_bytes": bytes.held(),
        "bytes": bytes,
        "settings": table.settings(),
        // Events before this were evicted to stay within memory (null:
        // none were).
        "kept_from": table.kept_from().map(atoll_store::rfc3339),
    })
}

/// The tables the caller's key reaches.
async fn list_tables(
    State(st): State<IngestState>,
    Extension(caller): Extension<Caller>,
) -> Json<Value> {
    let tables = st.store().tables();
    let seen = tables.iter().filter(|t| caller.sees(t.name()));
    Json(json!({ "tables": seen.map(|t| describe(t)).collect::<Vec<_>>() }))
}

async fn get_table(
    State(st): State<IngestState>,
    Extension(caller): Extension<Caller>,
    Path(table): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.may(Need::Describe(&table))?;
    let t = st
        .store()
        .table(&table)
        .ok_or(StoreError::NoSuchTable(table))?;
    Ok(Json(describe(&t)))
}

/// A partition key is taken only while the table holds no events on any
/// up node: events stored before it were routed at random, and queries
/// that filter on the key read only the partitions it hashes to.
async fn refuse_late_partition_key(
    st: &IngestState,
    table: &str,
    settings: &TableSettings,
) -> Result<(), IngestError> {
    let Some(key) = &settings.partition_key else {
        return Ok(());
    };
    let local = st.store().table(table);
    if local
        .as_ref()
        .and_then(|t| t.settings().partition_key)
        .as_ref()
        == Some(key)
    {
        return Ok(());
    }
    let rows = local.map_or(0, |t| t.rows())
        + atoll_cluster::tables::rows_elsewhere(st.replicator(), table).await;
    if rows > 0 {
        return Err(IngestError::Conflict(format!(
            "table {table:?} already holds {rows} events stored without partition key {key:?}: a partition key can only be set before a table's first event (drop the table first, or use a new one)"
        )));
    }
    Ok(())
}

/// Table settings are a few fields: a body past this is not one.
const MAX_SETTINGS_BYTES: usize = 64 << 10;

async fn put_table(
    State(st): State<IngestState>,
    Extension(caller): Extension<Caller>,
    Path(table): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    caller.may(Need::Admin)?;
    validate_table_name(&table)?;
    // Read whole (up to 1 MiB) before refusing a body over the limit: an
    // answer sent while the client is still sending reaches it as a reset
    // connection rather than as the 413.
    let too_large = || IngestError::TooLarge {
        limit: MAX_SETTINGS_BYTES,
        after: "",
    };
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .map_err(|_| too_large())?;
    if body.len() > MAX_SETTINGS_BYTES {
        return Err(too_large().into());
    }
    // An empty PUT names nothing to set, and must not create a table.
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(IngestError::BadSettings(
            "the body must be the table's settings, e.g. {\"retention\": \"7d\"} or {\"partition_key\": \"user_id\"} ({} for the defaults)".into(),
        )
        .into());
    }
    let settings: TableSettings = serde_json::from_slice(&body)
        .map_err(|e| IngestError::BadSettings(format!("invalid table settings: {e}")))?;
    if let Some(t) = st.store().table(&table) {
        t.check_settings(&settings)?;
    }
    refuse_late_partition_key(&st, &table, &settings).await?;
    let applied =
        atoll_cluster::tables::put_settings(st.replicator(), &table, settings, now_micros())
            .await?;
    let t = st
        .store()
        .table(&table)
        .ok_or(StoreError::NoSuchTable(table))?;
    let mut answer = describe(&t);
    answer["applied_on"] = json!(applied);
    Ok(Json(answer))
}

async fn delete_table(
    State(st): State<IngestState>,
    Extension(caller): Extension<Caller>,
    Path(table): Path<String>,
) -> Result<Response, ApiError> {
    caller.may(Need::Admin)?;
    validate_table_name(&table)?;
    let (here, elsewhere) =
        atoll_cluster::tables::drop_table(st.replicator(), &table, now_micros()).await?;
    if here || elsewhere.values().any(|ok| *ok) {
        Ok((
            StatusCode::OK,
            Json(json!({ "dropped": table, "dropped_on": elsewhere })),
        )
            .into_response())
    } else {
        Err(StoreError::NoSuchTable(table).into())
    }
}
