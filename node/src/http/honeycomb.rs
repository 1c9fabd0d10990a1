//! Honeycomb's Events API, so that libhoney clients (and anything else
//! speaking it) send to Atoll by changing only their API host:
//! `POST /1/events/{dataset}` (one JSON event) and `POST
//! /1/batch/{dataset}` (a JSON or MessagePack array), gzip or zstd, the key
//! in `X-Honeycomb-Team` (or
//! `Authorization: Bearer`). The dataset names the table
//! (`atoll_ingest::protocol::table_for`).
//!
//! A batch that began storing always answers 200 with one status per
//! event (202, or the status of its refusal with why): libhoney retries a
//! whole batch on 5xx and 429, which would store its stored events twice.

use std::time::Instant;

use atoll_auth::{Caller, Need};
use atoll_ingest::IngestError;
use atoll_ingest::honeycomb;
use atoll_ingest::protocol::{EventStatus, table_for};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde_json::{Value, json};

use super::ApiError;
use super::ingest::{IngestState, read_decoded};

pub fn router(state: IngestState) -> Router {
    Router::new()
        .route("/1/events/{dataset}", post(post_event))
        .route("/1/batch/{dataset}", post(post_batch))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn post_event(
    State(st): State<IngestState>,
    Extension(caller): Extension<Caller>,
    Path(dataset): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(&st, &caller, &dataset, &headers, body, Shape::Single).await
}

async fn post_batch(
    State(st): State<IngestState>,
    Extension(caller): Extension<Caller>,
    Path(dataset): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(&st, &caller, &dataset, &headers, body, Shape::Batch).await
}

/// Stores, counts and answers a request: one event answers 200 or its
/// refusal, a batch one status per event.
async fn handle(
    st: &IngestState,
    caller: &Caller,
    dataset: &str,
    headers: &HeaderMap,
    body: Body,
    shape: Shape,
) -> Response {
    let started = Instant::now();
    let response = match store(st, caller, dataset, headers, body, shape).await {
        Ok((table, statuses)) => {
            count(st, &table, &statuses);
            match shape {
                Shape::Batch => {
                    let answers: Vec<Value> = statuses.into_iter().map(answer).collect();
                    (StatusCode::OK, Json(answers)).into_response()
                }
                Shape::Single => match statuses.into_iter().next() {
                    Some(EventStatus::Refused { kind, error }) => {
                        ApiError::from(super::DoorError::new(kind, error)).into_response()
                    }
                    _ => (StatusCode::OK, Json(json!({}))).into_response(),
                },
            }
        }
        Err(e) => e.into_response(),
    };
    st.count_request(started, &response);
    response
}

#[derive(Clone, Copy)]
enum Shape {
    Single,
    Batch,
}

/// Reads, converts and stores a request; its table and one status per
/// event. An error here means nothing was stored.
async fn store(
    st: &IngestState,
    caller: &Caller,
    dataset: &str,
    headers: &HeaderMap,
    body: Body,
    shape: Shape,
) -> Result<(String, Vec<EventStatus>), ApiError> {
    let table = table_for(dataset)?;
    caller.may(Need::Ingest(&table))?;
    let turn = st.ingest.turn().await?;
    let body = read_decoded(&st.ingest, headers, body).await?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Shape::Single = shape {
        let event = honeycomb::single(
            &body,
            header("x-honeycomb-event-time"),
            header("x-honeycomb-samplerate"),
        )?;
        let statuses = st
            .ingest
            .made_events(&table, vec![event], body.len(), &turn)
            .await;
        return Ok((table, statuses));
    }
    let msgpack = header("content-type").is_some_and(|ct| ct.contains("msgpack"));
    // Parsing runs off the async threads (a body may be 64 MiB).
    let size = body.len();
    let batch = tokio::task::spawn_blocking(move || honeycomb::batch(body, msgpack))
        .await
        .map_err(|e| IngestError::task_failed("reading a Honeycomb batch", e))??;
    let batch = std::sync::Arc::new(batch);
    // Read and stored a chunk at a time: a large batch is never held as
    // parsed events whole.
    let mut statuses = Vec::with_capacity(batch.len());
    for range in batch.chunks() {
        let share = size * range.len() / batch.len().max(1);
        let (b, r) = (batch.clone(), range.clone());
        let made = tokio::task::spawn_blocking(move || b.read(r))
            .await
            .map_err(|e| IngestError::task_failed("reading a Honeycomb batch", e))?;
        statuses.extend(st.ingest.store_made(&table, made, share, &turn).await);
    }
    Ok((table, statuses))
}

fn count(st: &IngestState, table: &str, statuses: &[EventStatus]) {
    let stored = statuses.iter().filter(|s| s.is_stored()).count();
    st.count_events(table, stored, statuses.len() - stored);
}

/// One event's entry in a batch answer, as libhoney reads it.
fn answer(status: EventStatus) -> Value {
    match status {
        EventStatus::Stored => json!({ "status": 202 }),
        EventStatus::Refused { kind, error } => {
            json!({ "status": super::status(kind).as_u16(), "error": error })
        }
    }
}
