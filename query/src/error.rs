use atoll_cluster::ClusterError;
use atoll_errors::{Classified, ErrorKind};
use datafusion::common::DataFusionError;

use crate::pool::QUERY_CAP_EXCEEDED;
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The SQL asks for something Atoll SQL does not allow.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    BadRequest(String),
    /// The caller's key does not reach a table the query reads.
    #[error("{0}")]
    Forbidden(String),
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

impl Classified for QueryError {
    fn kind(&self) -> ErrorKind {
        match self {
            QueryError::Refused(_) | QueryError::BadRequest(_) => ErrorKind::BadInput,
            QueryError::Forbidden(_) => ErrorKind::Forbidden,
            QueryError::Busy(_) | QueryError::Unavailable(_) => ErrorKind::Unavailable,
            QueryError::Timeout(_) => ErrorKind::Timeout,
            QueryError::MemoryCap { .. } => ErrorKind::LimitHit,
            QueryError::DataFusion(e) => datafusion_kind(e),
        }
    }
}

/// What went wrong inside DataFusion, as a kind: an error of Atoll's own
/// carried through it (a replica lost mid-query, a store error) keeps its
/// kind; a planning or execution error of the query itself is bad input.
fn datafusion_kind(e: &DataFusionError) -> ErrorKind {
    match e.find_root() {
        DataFusionError::ResourcesExhausted(_) => ErrorKind::Unavailable,
        DataFusionError::External(inner) => {
            if let Some(c) = inner.downcast_ref::<ClusterError>() {
                c.kind()
            } else if let Some(s) = inner.downcast_ref::<atoll_store::StoreError>() {
                s.kind()
            } else {
                ErrorKind::Internal
            }
        }
        DataFusionError::Internal(_) | DataFusionError::IoError(_) => ErrorKind::Internal,
        _ => ErrorKind::BadInput,
    }
}

impl QueryError {
    /// A planning error; one of Atoll's own raised inside DataFusion's
    /// planning (the split refusing a query no replica can answer) comes
    /// back as itself.
    pub fn from_planning(e: DataFusionError) -> QueryError {
        match e {
            DataFusionError::External(inner) => match inner.downcast::<QueryError>() {
                Ok(own) => *own,
                Err(inner) => QueryError::DataFusion(DataFusionError::External(inner)),
            },
            DataFusionError::Context(_, inner) => QueryError::from_planning(*inner),
            e => QueryError::DataFusion(e),
        }
    }

    /// A label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            QueryError::Refused(_) => "refused",
            QueryError::BadRequest(_) => "bad_request",
            QueryError::Forbidden(_) => "forbidden",
            QueryError::Busy(_) => "busy",
            QueryError::Unavailable(_) => "unavailable",
            QueryError::Timeout(_) => "timeout",
            QueryError::MemoryCap { .. } => "memory",
            QueryError::DataFusion(_) => "error",
        }
    }
}
