use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Whole-request failures of ingest and table management; per-event
/// problems are not errors but entries of `rejected`.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    BadBody(String),
    #[error("request body is larger than the limit of {limit} bytes{after}")]
    TooLarge { limit: usize, after: &'static str },
    #[error("unsupported Content-Encoding {0:?}: use gzip, zstd or identity")]
    UnsupportedEncoding(String),
    #[error("{0}")]
    BadSettings(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] atoll_store::StoreError),
}

impl IngestError {
    pub fn status(&self) -> StatusCode {
        use atoll_store::StoreError;
        match self {
            IngestError::BadBody(_) | IngestError::BadSettings(_) => StatusCode::BAD_REQUEST,
            IngestError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IngestError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            IngestError::Forbidden(_) => StatusCode::FORBIDDEN,
            IngestError::Conflict(_) => StatusCode::CONFLICT,
            IngestError::Store(StoreError::NoSuchTable(_)) => StatusCode::NOT_FOUND,
            IngestError::Store(StoreError::Arrow(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            IngestError::Store(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        (
            self.status(),
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}
