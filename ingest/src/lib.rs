//! Ingest: HTTP bodies of JSON events become Arrow batches in the owning
//! partitions of their table.

pub mod body;
pub mod convert;
pub mod decode;
pub mod error;
pub mod handoff;
pub mod http;
pub mod metrics;
pub mod replica;
pub mod replicate;
pub mod route;
pub mod schemas;
pub mod time;
pub mod typed;

pub use convert::{IngestOutcome, Rejection, ingest_events};
pub use error::IngestError;
pub use http::{IngestState, router};
pub use metrics::IngestMetrics;
