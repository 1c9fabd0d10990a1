//! The cluster's errors, and the one mapping of error kinds to gRPC codes
//! (and back, for what a peer answered).

use atoll_errors::{Classified, ErrorKind};
use atoll_store::StoreError;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("this node has not joined a ring yet")]
    NotJoined,
    /// A call to another node failed; `kind` is what the peer answered
    /// (or `Unavailable` when it could not be reached).
    #[error("node at {addr}: {message}")]
    Peer {
        addr: String,
        kind: ErrorKind,
        message: String,
    },
    /// A peer sent a message that cannot be read.
    #[error("{0}")]
    BadMessage(String),
    #[error("partition {partition} is outside this node's ring of {partitions} partitions")]
    BadPartition { partition: u32, partitions: u32 },
    #[error(
        "the peer speaks internal protocol {theirs}, this node {ours}: run one Atoll version across the cluster"
    )]
    Protocol { theirs: String, ours: u32 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("write-ahead log: {0}")]
    Wal(std::io::Error),
    #[error("{0}")]
    Internal(String),
}

impl Classified for ClusterError {
    fn kind(&self) -> ErrorKind {
        match self {
            ClusterError::NotJoined => ErrorKind::Unavailable,
            ClusterError::Peer { kind, .. } => *kind,
            ClusterError::BadMessage(_)
            | ClusterError::BadPartition { .. }
            | ClusterError::Protocol { .. } => ErrorKind::BadInput,
            ClusterError::Store(e) => e.kind(),
            ClusterError::Wal(_) => ErrorKind::Unavailable,
            ClusterError::Internal(_) => ErrorKind::Internal,
        }
    }
}

impl ClusterError {
    /// What a failed call to the node at `addr` says.
    pub fn from_status(addr: &str, status: &Status) -> ClusterError {
        ClusterError::Peer {
            addr: addr.to_string(),
            kind: kind_of(status.code()),
            message: status.message().to_string(),
        }
    }

    /// A call that could not be made at all (no address, a bad one).
    pub fn unreachable(addr: &str, message: impl Into<String>) -> ClusterError {
        ClusterError::Peer {
            addr: addr.to_string(),
            kind: ErrorKind::Unavailable,
            message: message.into(),
        }
    }
}

/// The gRPC code of each kind: the only place that decides it.
pub fn code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::BadInput | ErrorKind::UnsupportedMedia => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::Conflict => Code::FailedPrecondition,
        ErrorKind::Mismatch => Code::Aborted,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::Forbidden => Code::PermissionDenied,
        ErrorKind::TooLarge | ErrorKind::LimitHit => Code::ResourceExhausted,
        ErrorKind::Timeout => Code::DeadlineExceeded,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::Internal => Code::Internal,
    }
}

/// The kind of failure a peer's answer reports (the inverse of [`code`]).
pub fn kind_of(code: Code) -> ErrorKind {
    match code {
        Code::InvalidArgument | Code::OutOfRange => ErrorKind::BadInput,
        Code::NotFound => ErrorKind::NotFound,
        Code::FailedPrecondition | Code::AlreadyExists => ErrorKind::Conflict,
        Code::Aborted => ErrorKind::Mismatch,
        Code::Unauthenticated => ErrorKind::Unauthenticated,
        Code::PermissionDenied => ErrorKind::Forbidden,
        Code::ResourceExhausted => ErrorKind::LimitHit,
        Code::DeadlineExceeded => ErrorKind::Timeout,
        Code::Unavailable | Code::Cancelled => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    }
}

/// Any classified error as the status a peer receives.
pub fn status(error: &(impl Classified + ?Sized)) -> Status {
    Status::new(code(error.kind()), error.to_string())
}

impl From<ClusterError> for Status {
    fn from(e: ClusterError) -> Status {
        status(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_survives_the_trip_through_a_code() {
        for kind in [
            ErrorKind::BadInput,
            ErrorKind::NotFound,
            ErrorKind::Conflict,
            ErrorKind::Mismatch,
            ErrorKind::Unauthenticated,
            ErrorKind::Forbidden,
            ErrorKind::LimitHit,
            ErrorKind::Timeout,
            ErrorKind::Unavailable,
            ErrorKind::Internal,
        ] {
            assert_eq!(kind_of(code(kind)), kind, "{kind}");
        }
    }
}
