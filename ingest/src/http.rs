//! HTTP routes that write: events in, table settings, table drops; and the
//! table listing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use atoll_store::{Store, StoreError, Table, TableSettings, now_micros, validate_table_name};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::replicate::Replicator;
use crate::{IngestError, IngestMetrics, body, convert, decode, route, typed};

#[derive(Clone)]
pub struct IngestState {
    pub store: Arc<Store>,
    pub replicator: Arc<Replicator>,
    pub metrics: IngestMetrics,
    /// Largest request body, before and after decompression.
    pub max_body_bytes: usize,
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

async fn post_events(
    State(st): State<IngestState>,
    Path(table): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let response = match receive(&st, &table, &headers, body).await {
        Ok((outcome, quorum_failed)) => {
            st.metrics
                .events_accepted
                .with_label_values(&[&table])
                .inc_by(outcome.accepted as u64);
            st.metrics
                .events_rejected
                .with_label_values(&[&table])
                .inc_by(outcome.rejected.len() as u64);
            let status = if quorum_failed {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            (status, Json(outcome)).into_response()
        }
        Err(e) => e.into_response(),
    };
    let status = response.status().as_u16().to_string();
    st.metrics.requests.with_label_values(&[&status]).inc();
    st.metrics
        .request_seconds
        .with_label_values(&[&status])
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn receive(
    st: &IngestState,
    table: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<(convert::IngestOutcome, bool), IngestError> {
    validate_table_name(table)?;
    let limit = st.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let raw = read_body(body, declared, limit).await?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("(not text)").to_string());
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("ndjson") || ct.contains("jsonl") || ct.contains("json-seq"));
    let idempotency_key = idempotency_key(headers)?;
    let decoded = if body::is_identity(encoding.as_deref()) {
        raw
    } else {
        let decoded =
            tokio::task::spawn_blocking(move || body::decode(encoding.as_deref(), &raw, limit))
                .await
                .map_err(|e| IngestError::BadBody(format!("ingest task failed: {e}")))??;
        Bytes::from(decoded)
    };
    let pieces = if body::is_ndjson(&decoded, ndjson) {
        body::ndjson_pieces(&decoded, PIECE_EVENTS)
            .into_iter()
            .map(|(first, r)| (Some(first), r))
            .collect()
    } else {
        vec![(None, 0..decoded.len())]
    };
    let mut outcome = convert::IngestOutcome {
        accepted: 0,
        rejected: Vec::new(),
    };
    let mut quorum_failed = false;
    let mut offset = 0;
    for (first_line, range) in pieces {
        let piece = decoded.slice(range);
        // Each piece is its own idempotent unit: a replica remembers
        // (key, table, partition), and two pieces may share a partition.
        let piece_key = idempotency_key
            .as_ref()
            .map(|k| format!("{k}\u{0}{offset}"));
        let (store, name, key) = (st.store.clone(), table.to_string(), piece_key.clone());
        let (converted, groups, events) = tokio::task::spawn_blocking(move || {
            convert_piece(&store, &name, &piece, first_line, key.as_deref())
        })
        .await
        .map_err(|e| IngestError::BadBody(format!("ingest task failed: {e}")))??;
        outcome
            .rejected
            .extend(converted.rejected.into_iter().map(|r| convert::Rejection {
                index: r.index + offset,
                ..r
            }));
        for d in st
            .replicator
            .deliver(table, groups, piece_key.as_deref())
            .await?
        {
            if d.acks >= d.needed {
                outcome.accepted += d.events.len();
            } else {
                quorum_failed = true;
                let error = format!("quorum not reached: {} of {} replicas", d.acks, d.needed);
                outcome
                    .rejected
                    .extend(d.events.iter().map(|&row| convert::Rejection {
                        index: converted.events[row] + offset,
                        error: error.clone(),
                    }));
            }
        }
        offset += events;
    }
    outcome.rejected.sort_by_key(|r| r.index);
    Ok((outcome, quorum_failed))
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

/// NDJSON bodies are converted this many events at a time, so that a large
/// request never holds more than a piece's parsed JSON in memory.
const PIECE_EVENTS: usize = 16_384;

type Groups = Vec<(u32, arrow::array::RecordBatch, Vec<usize>)>;

/// Parses and converts one piece of a body; answers the conversion, the
/// rows grouped by partition, and how many events the piece held. Event
/// indexes of the answer are relative to the piece.
fn convert_piece(
    store: &Store,
    table: &str,
    piece: &[u8],
    first_line: Option<usize>,
    key: Option<&str>,
) -> Result<(convert::Converted, Groups, usize), IngestError> {
    let arrival = now_micros();
    if first_line.is_some()
        && let Some(t) = store.table(table)
        && let Some(converted) = typed::convert_ndjson(&t, piece, arrival, key)
    {
        // The typed path takes a piece whole: every event accepted.
        let count = converted.events.len();
        let (converted, groups) = grouped(converted)?;
        return Ok((converted, groups, count));
    }
    match first_line {
        Some(first) => convert_flat(
            store,
            table,
            decode::ndjson_events(piece, first, arrival),
            key,
        ),
        None => {
            let parsed = body::parse(piece, false)?;
            convert_flat(store, table, convert::prepare_all(&parsed, arrival), key)
        }
    }
}

fn convert_flat(
    store: &Store,
    table: &str,
    events: Vec<Result<convert::FlatEvent<'_>, String>>,
    key: Option<&str>,
) -> Result<(convert::Converted, Groups, usize), IngestError> {
    let count = events.len();
    if events.iter().all(Result::is_err) && store.table(table).is_none() {
        let rejected = events
            .into_iter()
            .enumerate()
            .filter_map(|(index, e)| e.err().map(|error| convert::Rejection { index, error }))
            .collect();
        let nothing = convert::Converted {
            batch: None,
            partitions: vec![],
            events: vec![],
            rejected,
        };
        return Ok((nothing, Vec::new(), count));
    }
    let t = store.get_or_create(table)?;
    let converted = convert::convert_flat(&t, events, key)?;
    let (converted, groups) = grouped(converted)?;
    Ok((converted, groups, count))
}

/// A converted piece with its rows grouped by partition.
fn grouped(converted: convert::Converted) -> Result<(convert::Converted, Groups), IngestError> {
    let groups = match &converted.batch {
        Some(batch) => route::group_by_partition(batch, &converted.partitions)?,
        None => Vec::new(),
    };
    Ok((converted, groups))
}

/// The optional `Idempotency-Key` header: up to 256 visible ASCII chars.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, IngestError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 256 && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(k.to_string()))
        }
        _ => Err(IngestError::BadBody(
            "Idempotency-Key must be 1 to 256 visible ASCII characters".into(),
        )),
    }
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

async fn list_tables(State(st): State<IngestState>) -> Json<Value> {
    Json(json!({ "tables": st.store.tables().iter().map(|t| describe(t)).collect::<Vec<_>>() }))
}

async fn get_table(
    State(st): State<IngestState>,
    Path(table): Path<String>,
) -> Result<Json<Value>, IngestError> {
    let t = st
        .store
        .table(&table)
        .ok_or(StoreError::NoSuchTable(table))?;
    Ok(Json(describe(&t)))
}

/// Marks a table change forwarded by another node (its value is the
/// cluster secret), so that it is applied and not forwarded again.
pub const FORWARDED_HEADER: &str = "x-atoll-forwarded";
/// When a forwarded `PUT` or `DELETE` was taken (µs since the epoch), so
/// that every node gives the change the same version.
const CHANGE_TIME_HEADER: &str = "x-atoll-change-time";

/// Table changes apply on every node: the entry node applies a change, then
/// forwards it to the other up nodes. Answers whether this request was
/// itself forwarded (refusing a forged one).
fn forwarded(st: &IngestState, headers: &HeaderMap) -> Result<bool, IngestError> {
    match headers.get(FORWARDED_HEADER) {
        None => Ok(false),
        Some(v) if v.as_bytes() == st.replicator.secret.as_bytes() => Ok(true),
        Some(_) => Err(IngestError::Forbidden(
            "a forwarded table change needs the cluster secret".into(),
        )),
    }
}

/// Sends a table change to every other up node; answers the outcome of
/// each (true: applied there).
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
    let local = st.store.table(table);
    if local
        .as_ref()
        .and_then(|t| t.settings().partition_key)
        .as_ref()
        == Some(key)
    {
        return Ok(());
    }
    let mut rows = local.map_or(0, |t| t.rows());
    let me = st.replicator.membership.node_name().to_string();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .expect("client");
    for m in st.replicator.membership.members().await {
        let Some(addr) = m.http_addr.filter(|_| m.up && m.name != me) else {
            continue;
        };
        let url = format!("http://{addr}/v1/tables/{table}");
        if let Ok(res) = client.get(url).send().await
            && let Ok(v) = res.json::<Value>().await
        {
            rows += v["rows"].as_u64().unwrap_or(0);
        }
    }
    if rows > 0 {
        return Err(IngestError::Conflict(format!(
            "table {table:?} already holds {rows} events stored without partition key {key:?}: a partition key can only be set before a table's first event (drop the table first, or use a new one)"
        )));
    }
    Ok(())
}

/// The time a table change was taken: the entry node's, as forwarded.
fn change_time(headers: &HeaderMap, forwarded: bool) -> i64 {
    match headers.get(CHANGE_TIME_HEADER) {
        Some(v) if forwarded => v.to_str().ok().and_then(|v| v.parse().ok()).unwrap_or(0),
        _ => now_micros(),
    }
}

async fn forward(
    st: &IngestState,
    method: reqwest::Method,
    table: &str,
    body: Bytes,
    version: i64,
) -> BTreeMap<String, bool> {
    let me = st.replicator.membership.node_name().to_string();
    let peers: Vec<(String, String)> = st
        .replicator
        .membership
        .members()
        .await
        .into_iter()
        .filter(|m| m.up && m.name != me)
        .filter_map(|m| Some((m.name, m.http_addr?)))
        .collect();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("client");
    let sends = peers.into_iter().map(|(name, addr)| {
        let request = client
            .request(method.clone(), format!("http://{addr}/v1/tables/{table}"))
            .header(FORWARDED_HEADER, &st.replicator.secret)
            .header(CHANGE_TIME_HEADER, version)
            .body(body.clone());
        async move {
            let ok = match request.send().await {
                Ok(r) => r.status().is_success(),
                Err(e) => {
                    tracing::warn!(node = %name, error = %e, "table change not forwarded");
                    false
                }
            };
            (name, ok)
        }
    });
    futures::future::join_all(sends).await.into_iter().collect()
}

async fn put_table(
    State(st): State<IngestState>,
    Path(table): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, IngestError> {
    let forwarded = forwarded(&st, &headers)?;
    validate_table_name(&table)?;
    let settings: TableSettings = if body.iter().all(u8::is_ascii_whitespace) {
        TableSettings::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| IngestError::BadSettings(format!("invalid table settings: {e}")))?
    };
    let version = change_time(&headers, forwarded);
    let t = st.store.get_or_create(&table)?;
    t.check_settings(&settings)?;
    if !forwarded {
        refuse_late_partition_key(&st, &table, &settings).await?;
    }
    if t.set_settings(settings, version)? {
        st.replicator.local.log_settings(&t);
    }
    let mut answer = describe(&t);
    if !forwarded {
        let applied = forward(&st, reqwest::Method::PUT, &table, body, version).await;
        answer["applied_on"] = json!(applied);
    }
    Ok(Json(answer))
}

async fn delete_table(
    State(st): State<IngestState>,
    Path(table): Path<String>,
    headers: HeaderMap,
) -> Result<Response, IngestError> {
    let forwarded = forwarded(&st, &headers)?;
    let when = change_time(&headers, forwarded);
    let here = st.replicator.local.drop_table(&table, when);
    let elsewhere = if forwarded {
        BTreeMap::new()
    } else {
        forward(&st, reqwest::Method::DELETE, &table, Bytes::new(), when).await
    };
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
