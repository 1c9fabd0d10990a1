//! SQL over Atoll tables.
//!
//! Owns: the DataFusion catalog over the store (`catalog`), the partition
//! scan (`scan`, with time pruning in `prune`), the read-only sandbox and
//! the per-query memory and time limits (`engine`, `pool`), the coverage
//! plan (`coverage`), the distributed split and its fan-out
//! (`distributed`), the join slicing (`slice`), and rendering results as
//! JSON values (`render`). `QueryEngine::start` is the one typed query API
//! that every SQL door calls.
//!
//! Must not know: HTTP or any wire protocol of the doors (`atoll-node`),
//! or how bytes reach another node (`atoll-cluster`'s client carries the
//! fragments; its service hands received ones to `engine::Fragments`).

pub mod catalog;
pub mod coverage;
pub mod distributed;
pub mod engine;
pub mod error;
pub mod metrics;
pub mod pool;
pub mod prune;
pub mod render;
pub mod scan;
pub mod slice;

pub use engine::{QueryConfig, QueryEngine, QueryStats};
pub use error::QueryError;
pub use metrics::QueryMetrics;
