//! Ingest: bodies of events (JSON, NDJSON, compressed or not) become Arrow
//! batches of their table, grouped by partition, and are handed to the
//! cluster's replication.
//!
//! Owns: reading bodies (`body`, `decode`), schema-on-write conversion with
//! type inference, widening and time (`convert`, `typed`, `time`), routing
//! rows to partitions (`route`), the typed API every door calls (`api`),
//! and the events of the standard protocols: Honeycomb's Events API
//! (`honeycomb`, `msgpack`) and OTLP traces and logs (`otlp`), stored one
//! status per event (`protocol`).
//!
//! Must not know: HTTP (the doors are `atoll-node`'s), or how a batch
//! reaches the other nodes (`atoll-cluster`'s replicator does that).

pub mod api;
pub mod body;
pub mod convert;
pub mod decode;
pub mod error;
pub mod honeycomb;
pub mod idempotency;
pub mod limits;
pub mod metrics;
pub mod msgpack;
pub mod otlp;
pub mod protocol;
pub mod route;
pub mod time;
pub mod typed;

pub use api::{EventsBody, Ingest, Ingested, idempotency_key};
pub use convert::{IngestOutcome, Rejection, ingest_events};
pub use error::IngestError;
pub use metrics::IngestMetrics;
