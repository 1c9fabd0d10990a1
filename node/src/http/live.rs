//! `POST /v1/live`: a live view's updates as Server-Sent Events, read with
//! `fetch` so that the key travels in `Authorization` like every other
//! call (`EventSource` cannot send headers). `docs/live.md`.

use std::convert::Infallible;
use std::time::Duration;

use atoll_auth::{Caller, Need};
use atoll_errors::ErrorKind;
use atoll_query::live::LiveSpec;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};

use super::query::QueryState;
use super::{ApiError, DoorError};

pub fn router(state: QueryState) -> Router {
    Router::new()
        .route("/v1/live", post(live))
        .with_state(state)
}

async fn live(
    State(st): State<QueryState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.may(Need::Query)?;
    let spec: LiveSpec = serde_json::from_slice(&body).map_err(|e| {
        DoorError::new(
            ErrorKind::BadInput,
            format!(
                "the body must be {{\"table\": ..., \"bucket_seconds\": ..., \"filter\": \"SQL condition\", \"group_by\": [...], \"aggregates\": [{{\"fn\": \"count\"|\"sum\"|\"min\"|\"max\", \"column\": ...}}]}}: {e}"
            ),
        )
    })?;
    caller.may(Need::Read(&spec.table))?;
    let stream = st.engine.live(spec, caller.tables.as_ref())?;
    tracing::info!(by = %caller.name, "live view started");
    // Dropping the response (the page closed) drops the stream, which
    // stops the subscriptions on every owner.
    let updates = futures::stream::unfold(stream, |mut s| async move {
        let update = s.next().await?;
        let event = Event::default()
            .json_data(&update)
            .unwrap_or_else(|e| Event::default().event("error").data(e.to_string()));
        Some((Ok::<_, Infallible>(event), s))
    });
    Ok(Sse::new(updates)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(2)))
        .into_response())
}
