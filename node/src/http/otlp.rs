//! OpenTelemetry's OTLP/HTTP: `POST /v1/traces` and `POST /v1/logs`, as
//! protobuf (`application/x-protobuf`) or OTLP/JSON (`application/json`),
//! gzip or zstd, the key in `Authorization: Bearer` (or Honeycomb's
//! `X-Honeycomb-Team`). Spans and log records land in the table of their
//! resource's `service.name` (`atoll_ingest::otlp`, docs/otel.md).
//!
//! Answers follow the OTLP specification: 200 with an `Export*Response` in
//! the request's encoding, whose `partial_success` counts and names what
//! was refused; errors in a `google.rpc.Status` body, their HTTP status the
//! one every answer of their kind has (400 undecodable, 413 too large, 503
//! with `Retry-After` when the node is too busy to begin). A request that
//! stored anything answers 200: exporters retry 429/502/503/504, which
//! would store its spans twice.

use std::time::Instant;

use atoll_auth::{Caller, Need};
use atoll_ingest::IngestError;
use atoll_ingest::otlp::{self, Encoding, TableEvents};
use atoll_ingest::protocol::EventStatus;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message;

use super::ApiError;
use super::ingest::{IngestState, read_decoded};

pub fn router(state: IngestState) -> Router {
    Router::new()
        .route("/v1/traces", post(post_traces))
        .route("/v1/logs", post(post_logs))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// `google.rpc.Status`, the body of an OTLP error answer.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[derive(Clone, Copy)]
enum Signal {
    Traces,
    Logs,
}

async fn post_traces(
    State(st): State<IngestState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    export(st, caller, headers, body, Signal::Traces).await
}

async fn post_logs(
    State(st): State<IngestState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    export(st, caller, headers, body, Signal::Logs).await
}

async fn export(
    st: IngestState,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
    signal: Signal,
) -> Response {
    let started = Instant::now();
    let encoding = encoding(&headers);
    let response = match store(&st, &caller, &headers, body, signal, encoding).await {
        Ok((refused, message)) => success(signal, encoding, refused, message),
        Err(e) => failure(e, encoding),
    };
    st.count_request(started, &response);
    response
}

fn encoding(headers: &HeaderMap) -> Encoding {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().starts_with("application/json"));
    if json {
        Encoding::Json
    } else {
        Encoding::Protobuf
    }
}

/// Stores a request's spans or records; how many were refused and the
/// first reason. An error here means nothing was stored.
async fn store(
    st: &IngestState,
    caller: &Caller,
    headers: &HeaderMap,
    body: Body,
    signal: Signal,
    encoding: Encoding,
) -> Result<(i64, String), ApiError> {
    // The role before the body is read; each table once the rows say which.
    caller.may(Need::IngestSomewhere)?;
    let turn = st.ingest.turn().await?;
    let body = read_decoded(&st.ingest, headers, body).await?;
    let size = body.len();
    let limit = rows_limit(st);
    let tables = tokio::task::spawn_blocking(move || rows(&body, signal, encoding, limit))
        .await
        .map_err(|e| IngestError::task_failed("decoding an OTLP body", e))??;
    store_tables(st, caller, tables, size, &turn).await
}

/// Stores the rows of an OTLP request (of either transport): how many
/// spans or records were refused, and the first reason. Every table it
/// writes must be the caller's, checked before anything is stored; an
/// error means nothing was.
pub(crate) async fn store_tables(
    st: &IngestState,
    caller: &Caller,
    tables: Vec<TableEvents>,
    size: usize,
    turn: &atoll_ingest::api::Turn,
) -> Result<(i64, String), ApiError> {
    for t in &tables {
        caller.may(Need::Ingest(&t.table))?;
    }
    let (mut refused, mut first) = (0, None);
    let count = tables.len().max(1);
    for TableEvents {
        table,
        events,
        counted,
    } in tables
    {
        let statuses = st
            .ingest
            .made_lines(&table, events, size / count, turn)
            .await;
        let stored = statuses.iter().filter(|s| s.is_stored()).count();
        st.count_events(&table, stored, statuses.len() - stored);
        for (status, counts) in statuses.into_iter().zip(counted) {
            if let EventStatus::Refused { error, .. } = status {
                refused += i64::from(counts);
                first.get_or_insert_with(|| format!("{table}: {error}"));
            }
        }
    }
    Ok((refused, first.unwrap_or_default()))
}

fn rows(
    body: &[u8],
    signal: Signal,
    encoding: Encoding,
    limit: usize,
) -> Result<Vec<TableEvents>, IngestError> {
    match signal {
        Signal::Traces => otlp::span_rows(otlp::decode_traces(body, encoding)?, limit),
        Signal::Logs => otlp::log_rows(otlp::decode_logs(body, encoding)?, limit),
    }
}

/// What a request's rows may take as text: a few times its body's limit
/// (a span's row is a few times its protobuf: ids in hex, keys spelled
/// out, its resource's fields on every row).
pub(crate) fn rows_limit(st: &IngestState) -> usize {
    st.ingest.max_body_bytes.saturating_mul(4)
}

/// 200 with the signal's `Export*ServiceResponse`; `partial_success` set
/// when anything was refused.
fn success(signal: Signal, encoding: Encoding, refused: i64, message: String) -> Response {
    let partial = refused > 0 || !message.is_empty();
    let (proto, json) = match signal {
        Signal::Traces => {
            let r = ExportTraceServiceResponse {
                partial_success: partial.then_some(ExportTracePartialSuccess {
                    rejected_spans: refused,
                    error_message: message,
                }),
            };
            (r.encode_to_vec(), serde_json::to_vec(&r))
        }
        Signal::Logs => {
            let r = ExportLogsServiceResponse {
                partial_success: partial.then_some(ExportLogsPartialSuccess {
                    rejected_log_records: refused,
                    error_message: message,
                }),
            };
            (r.encode_to_vec(), serde_json::to_vec(&r))
        }
    };
    let (content_type, body) = match encoding {
        Encoding::Protobuf => ("application/x-protobuf", proto),
        // Nothing refused: `{}` (OTLP/JSON leaves out fields at their
        // defaults), not `{"partialSuccess": null}`.
        Encoding::Json if !partial => ("application/json", b"{}".to_vec()),
        Encoding::Json => ("application/json", json.unwrap_or_else(|_| b"{}".to_vec())),
    };
    let mut response = (StatusCode::OK, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// An error in a `google.rpc.Status` body of the request's encoding.
fn failure(e: ApiError, encoding: Encoding) -> Response {
    let status = RpcStatus {
        code: atoll_cluster::error::code(e.kind()) as i32,
        message: e.to_string(),
    };
    match encoding {
        Encoding::Protobuf => e.with_body("application/x-protobuf", status.encode_to_vec()),
        Encoding::Json => e.with_body(
            "application/json",
            serde_json::to_vec(&status).unwrap_or_default(),
        ),
    }
}
