//! `POST /v1/query`: JSON rows (capped), or an Arrow IPC stream, over the
//! query engine's typed API.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use arrow::ipc::writer::StreamWriter;
use atoll_auth::{Caller, Need};
use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use atoll_query::QueryError;
use atoll_query::engine::{Execution, QueryEngine};
use atoll_query::metrics::{Counted, QueryMetrics};
use atoll_query::render::append_rows;

use super::ApiError;

pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

#[derive(Clone)]
pub struct QueryState {
    pub engine: Arc<QueryEngine>,
    pub metrics: QueryMetrics,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryRequest {
    sql: String,
    /// A lower time limit than the node's, in milliseconds.
    timeout_ms: Option<u64>,
    /// Fewer JSON rows than the node's cap.
    max_rows: Option<usize>,
    /// Answer with the partitions that can be reached.
    allow_partial: Option<bool>,
}

pub fn router(state: QueryState) -> Router {
    Router::new()
        .route("/v1/query", post(query))
        .with_state(state)
}

async fn query(
    State(st): State<QueryState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = caller.may(Need::Query) {
        return ApiError::from(e).into_response();
    }
    let request = Counted::begin(&st.metrics);
    let arrow = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains(ARROW_STREAM));
    let result = run(&st, &body, arrow, caller.tables.as_ref()).await;
    request.end(match &result {
        Ok(_) => "ok",
        Err(e) => e.label(),
    });
    result.unwrap_or_else(|e| ApiError::from(e).into_response())
}

async fn run(
    st: &QueryState,
    body: &[u8],
    arrow: bool,
    tables: Option<&BTreeSet<String>>,
) -> Result<Response, QueryError> {
    let request: QueryRequest = serde_json::from_slice(body).map_err(|e| {
        QueryError::BadRequest(format!(
            "the body must be JSON like {{\"sql\": \"SELECT ...\"}}: {e}"
        ))
    })?;
    let timeout = request.timeout_ms.map(Duration::from_millis);
    let cap = max_rows(request.max_rows, st.engine.config().max_json_rows)?;
    let execution = st
        .engine
        .start(&request.sql, timeout, request.allow_partial, tables)
        .await?;
    if arrow {
        return arrow_response(execution).await;
    }
    json_response(execution, cap).await
}

/// The JSON rows a request may get: the node's cap, or fewer if asked.
/// A count outside 1..=the cap is refused, naming the range.
pub(crate) fn max_rows(asked: Option<usize>, cap: usize) -> Result<usize, QueryError> {
    match asked {
        None => Ok(cap),
        Some(n) if (1..=cap).contains(&n) => Ok(n),
        Some(n) => Err(QueryError::BadRequest(format!(
            "max_rows {n} is outside the allowed range 1..={cap} (this node's row cap)"
        ))),
    }
}

async fn json_response(mut execution: Execution, cap: usize) -> Result<Response, QueryError> {
    let schema = execution.schema();
    let (batches, truncated) = execution.first_rows(cap).await?;
    let mut rows = Vec::new();
    for batch in &batches {
        append_rows(batch, &mut rows);
    }
    let columns: Vec<Value> = schema
        .fields()
        .iter()
        .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
        .collect();
    let stats = execution.stats(truncated);
    Ok(Json(json!({ "columns": columns, "rows": rows, "stats": stats })).into_response())
}

/// Streams batches as they come; the first batch (or the end) is awaited
/// before answering so that planning and early errors still get a JSON
/// error with the right status.
async fn arrow_response(mut execution: Execution) -> Result<Response, QueryError> {
    let schema = execution.schema();
    let first = execution.next().await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let mut writer = match StreamWriter::try_new(Vec::new(), &schema) {
            Ok(w) => w,
            Err(e) => return drop(tx.send(Err(std::io::Error::other(e))).await),
        };
        let mut next = first;
        loop {
            let Some(batch) = next else { break };
            if let Err(e) = writer.write(&batch) {
                return drop(tx.send(Err(std::io::Error::other(e))).await);
            }
            let chunk = std::mem::take(writer.get_mut());
            if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                return; // the client went away: dropping `execution` cancels the query
            }
            next = match execution.next().await {
                Ok(n) => n,
                Err(e) => return drop(tx.send(Err(std::io::Error::other(e.to_string()))).await),
            };
        }
        let tail = writer.finish().map(|_| std::mem::take(writer.get_mut()));
        let _ = tx
            .send(tail.map(Bytes::from).map_err(std::io::Error::other))
            .await;
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ARROW_STREAM));
    Ok(response)
}
