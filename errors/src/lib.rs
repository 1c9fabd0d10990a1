//! What kind of failure an error is, shared by every Atoll crate.
//!
//! Each crate keeps its own `thiserror` enum with messages that name what
//! was wrong; each of those enums also says which [`ErrorKind`] it is.
//! The kind alone decides the answer a client gets: `atoll-node` maps it
//! to an HTTP status in one function, `atoll-cluster` to a gRPC code in
//! one function. So this crate owns the taxonomy and knows no HTTP, no
//! gRPC and no other crate (it has no dependencies at all).

use std::fmt;

/// The kinds of failure a request can meet, from the client's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request itself is wrong (a bad body, an unknown column, a
    /// limit outside its range): sending it again will not help.
    BadInput,
    /// A named thing (a table, a node) does not exist.
    NotFound,
    /// The request contradicts the current state (a partition key set on a
    /// table that already holds events).
    Conflict,
    /// The request repeats an earlier one's idempotency key with other
    /// content: it is not that request again, and not a new one either.
    Mismatch,
    /// No credentials, or credentials that are not valid.
    Unauthenticated,
    /// Valid credentials that do not allow this request.
    Forbidden,
    /// The body is larger than the configured limit.
    TooLarge,
    /// The body's encoding or media type is not one Atoll reads.
    UnsupportedMedia,
    /// The request is valid but went over a per-request limit (a query's
    /// memory cap): a narrower request may succeed.
    LimitHit,
    /// The request ran past its time limit.
    Timeout,
    /// The cluster cannot serve it right now (a quorum or a replica is
    /// missing, too many queries at once, out of memory): retry shortly.
    Unavailable,
    /// A bug or a failure inside Atoll.
    Internal,
}

impl ErrorKind {
    /// A short label, for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::BadInput => "bad_input",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Mismatch => "mismatch",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::UnsupportedMedia => "unsupported_media",
            ErrorKind::LimitHit => "limit_hit",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }

    /// Whether the same request may succeed later unchanged.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Unavailable | ErrorKind::Timeout)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// An error that knows its kind.
pub trait Classified: std::error::Error {
    fn kind(&self) -> ErrorKind;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_waiting_can_cure_unavailable_and_timeout() {
        let all = [
            ErrorKind::BadInput,
            ErrorKind::NotFound,
            ErrorKind::Conflict,
            ErrorKind::Mismatch,
            ErrorKind::Unauthenticated,
            ErrorKind::Forbidden,
            ErrorKind::TooLarge,
            ErrorKind::UnsupportedMedia,
            ErrorKind::LimitHit,
            ErrorKind::Timeout,
            ErrorKind::Unavailable,
            ErrorKind::Internal,
        ];
        let retryable: Vec<_> = all.into_iter().filter(|k| k.is_retryable()).collect();
        assert_eq!(retryable, [ErrorKind::Timeout, ErrorKind::Unavailable]);
        let labels: std::collections::BTreeSet<_> = all.iter().map(|k| k.label()).collect();
        assert_eq!(labels.len(), all.len(), "labels are distinct");
    }
}
