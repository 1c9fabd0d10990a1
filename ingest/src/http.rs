//! HTTP routes that write: events in, table settings, table drops; and the
//! table listing.

use std::sync::Arc;
use std::time::Instant;

use atoll_store::{Store, StoreError, Table, TableSettings, validate_table_name};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::replicate::Replicator;
use crate::{IngestError, IngestMetrics, body, convert, route};

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
    let too_large = IngestError::TooLarge { limit, after: "" };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large);
    }
    let raw = axum::body::to_bytes(body, limit).await.map_err(|e| {
        if e.into_inner()
            .downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            IngestError::TooLarge { limit, after: "" }
        } else {
            IngestError::BadBody("the request body could not be read".into())
        }
    })?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("(not text)").to_string());
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("ndjson") || ct.contains("jsonl") || ct.contains("json-seq"));
    let idempotency_key = idempotency_key(headers)?;
    let key = idempotency_key.clone();
    let store = st.store.clone();
    let name = table.to_string();
    let converted = tokio::task::spawn_blocking(move || {
        let decoded = body::decode(encoding.as_deref(), &raw, limit)?;
        let events = body::parse(&decoded, ndjson)?;
        if events.iter().all(Result::is_err) && store.table(&name).is_none() {
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
            return Ok((nothing, Vec::new()));
        }
        let t = store.get_or_create(&name)?;
        let converted = convert::convert_events(&t, &events, now_micros(), key.as_deref())?;
        let groups = match &converted.batch {
            Some(batch) => route::group_by_partition(batch, &converted.partitions)?,
            None => Vec::new(),
        };
        Ok::<_, IngestError>((converted, groups))
    })
    .await
    .map_err(|e| IngestError::BadBody(format!("ingest task failed: {e}")))??;
    let (converted, groups) = converted;
    let mut outcome = convert::IngestOutcome {
        accepted: 0,
        rejected: converted.rejected,
    };
    let mut quorum_failed = false;
    for d in st
        .replicator
        .deliver(table, groups, idempotency_key.as_deref())
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
                    index: converted.events[row],
                    error: error.clone(),
                }));
        }
    }
    outcome.rejected.sort_by_key(|r| r.index);
    Ok((outcome, quorum_failed))
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

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// What `GET /v1/tables` says of a table.
pub fn describe(table: &Table) -> Value {
    let schema = table.schema();
    json!({
        "name": table.name(),
        "columns": schema.columns().iter().map(|(n, t)| json!({"name": n, "type": t.to_string()})).collect::<Vec<_>>(),
        "rows": table.rows(),
        "memory_bytes": table.memory_bytes(),
        "settings": table.settings(),
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

async fn put_table(
    State(st): State<IngestState>,
    Path(table): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, IngestError> {
    validate_table_name(&table)?;
    let settings: TableSettings = if body.iter().all(u8::is_ascii_whitespace) {
        TableSettings::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| IngestError::BadSettings(format!("invalid table settings: {e}")))?
    };
    let t = st.store.get_or_create(&table)?;
    t.set_settings(settings)?;
    Ok(Json(describe(&t)))
}

async fn delete_table(
    State(st): State<IngestState>,
    Path(table): Path<String>,
) -> Result<Response, IngestError> {
    if st.store.drop_table(&table) {
        Ok((StatusCode::OK, Json(json!({ "dropped": table }))).into_response())
    } else {
        Err(StoreError::NoSuchTable(table).into())
    }
}
