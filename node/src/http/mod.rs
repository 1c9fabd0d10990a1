//! The HTTP doors of a node: every handler, over the typed ingest, query
//! and cluster APIs, and the one mapping of errors to HTTP statuses.

pub mod cluster;
pub mod guard;
pub mod honeycomb;
pub mod ingest;
pub mod keys;
pub mod live;
pub mod otlp;
pub mod query;
pub mod saved;

use atoll_errors::{Classified, ErrorKind};
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The HTTP status of each kind of failure: the only place that decides
/// it. `Unavailable` answers carry `Retry-After`.
pub fn status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadInput => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Mismatch => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::UnsupportedMedia => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorKind::LimitHit => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Any error of any crate, answered as `{"error": "..."}` with its
/// kind's status.
pub struct ApiError(Box<dyn Classified + Send + Sync>);

impl<E: Classified + Send + Sync + 'static> From<E> for ApiError {
    fn from(e: E) -> ApiError {
        ApiError(Box::new(e))
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ApiError {
    pub fn kind(&self) -> ErrorKind {
        self.0.kind()
    }

    /// The answer in a protocol's own error shape (`body`, of
    /// `content_type`), with the status and headers every answer of its
    /// kind has.
    pub fn with_body(self, content_type: &'static str, body: Vec<u8>) -> Response {
        let mut response = self.into_response();
        *response.body_mut() = axum::body::Body::from(body);
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = self.0.kind();
        if kind == ErrorKind::Internal {
            tracing::error!(error = %self.0, "internal error answered");
        }
        let body = Json(serde_json::json!({ "error": self.0.to_string() }));
        let mut response = (status(kind), body).into_response();
        if kind == ErrorKind::Unavailable {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// A request the doors themselves refuse (a body that is not the JSON an
/// endpoint takes, a node that is not in the ring).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DoorError {
    pub kind: ErrorKind,
    pub message: String,
}

impl DoorError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> DoorError {
        DoorError {
            kind,
            message: message.into(),
        }
    }
}

impl Classified for DoorError {
    fn kind(&self) -> ErrorKind {
        self.kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unavailable_answers_say_when_to_retry() {
        let busy = ApiError::from(DoorError::new(ErrorKind::Unavailable, "busy"));
        let r = busy.into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let bad = ApiError::from(DoorError::new(ErrorKind::BadInput, "bad")).into_response();
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        assert!(bad.headers().get(header::RETRY_AFTER).is_none());
    }
}
