use atoll_cluster::ClusterError;
use atoll_errors::{Classified, ErrorKind};

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
    Conflict(String),
    #[error(
        "Idempotency-Key {0:?} was used before with another body: send new events with a new key"
    )]
    KeyReused(String),
    /// Too many requests decoding at once waited too long for a turn.
    #[error(
        "too many ingest requests are being decoded at once; none of this one's events were stored: try again shortly"
    )]
    Busy(usize),
    /// A bug: a conversion task panicked or was lost. Logged where made.
    #[error("internal error while {0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] atoll_store::StoreError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

impl Classified for IngestError {
    fn kind(&self) -> ErrorKind {
        match self {
            IngestError::BadBody(_) | IngestError::BadSettings(_) => ErrorKind::BadInput,
            IngestError::TooLarge { .. } => ErrorKind::TooLarge,
            IngestError::UnsupportedEncoding(_) => ErrorKind::UnsupportedMedia,
            IngestError::Conflict(_) => ErrorKind::Conflict,
            IngestError::Busy(_) => ErrorKind::Unavailable,
            IngestError::KeyReused(_) => ErrorKind::Mismatch,
            IngestError::Internal(_) => ErrorKind::Internal,
            IngestError::Store(e) => e.kind(),
            IngestError::Cluster(e) => e.kind(),
        }
    }
}

/// Why one event of a body was rejected (the others still count): an
/// entry of the answer's `rejected`, never a whole-request failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadEvent(pub String);

/// The reason, as the answer words it.
impl std::ops::Deref for BadEvent {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for BadEvent {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for BadEvent {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl IngestError {
    /// A conversion task that did not finish (it panicked): a bug, so it
    /// is logged here and answered as an internal error.
    pub fn task_failed(what: &str, e: impl std::fmt::Display) -> IngestError {
        tracing::error!(error = %e, "ingest task failed while {what}");
        IngestError::Internal(what.to_string())
    }
}
