use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use datafusion::common::DataFusionError;

use crate::pool::QUERY_CAP_EXCEEDED;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The SQL asks for something Atoll SQL does not allow.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("too many queries are running ({0} at once); try again shortly")]
    Busy(usize),
    #[error("query exceeded its time limit of {0} ms")]
    Timeout(u64),
    #[error(
        "{QUERY_CAP_EXCEEDED} of {cap} bytes; narrow it (filters, fewer groups, LIMIT) ({detail})"
    )]
    MemoryCap { cap: usize, detail: String },
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
}

impl QueryError {
    pub fn status(&self) -> StatusCode {
        match self {
            QueryError::Refused(_) | QueryError::BadRequest(_) => StatusCode::BAD_REQUEST,
            QueryError::Busy(_) | QueryError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            QueryError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            QueryError::MemoryCap { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            QueryError::DataFusion(e) => match e.find_root() {
                DataFusionError::ResourcesExhausted(_) => StatusCode::SERVICE_UNAVAILABLE,
                DataFusionError::Internal(_)
                | DataFusionError::IoError(_)
                | DataFusionError::External(_) => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            },
        }
    }

    /// A label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            QueryError::Refused(_) => "refused",
            QueryError::BadRequest(_) => "bad_request",
            QueryError::Busy(_) => "busy",
            QueryError::Unavailable(_) => "unavailable",
            QueryError::Timeout(_) => "timeout",
            QueryError::MemoryCap { .. } => "memory",
            QueryError::DataFusion(_) => "error",
        }
    }
}

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}
