//! SQL over Atoll tables.
//!
//! Owns: the DataFusion catalog over the store (`catalog`), the partition
//! scan (`scan`, with time pruning in `prune`), the read-only sandbox and
//! the per-query memory and time limits (`engine`, `pool`, and
//! `bounded_functions` for functions whose output size is an argument), the coverage
//! plan (`coverage`), the plan rewrites registered on the session
//! (`physical_optimizer`: counting rows, the distributed split, the join
//! slicing, one-key aggregates), Atoll's plan nodes (`physical_plan`: the
//! fan-out, the remote fragment, the time-sliced wrapper, the aggregate of
//! one key and its group index), `approx_percentile_cont` with a group
//! accumulator (`approx_percentile`), what a fragment may hold (`fragment`) and its
//! bytes on the wire (`codec`), rendering results as JSON values
//! (`render`), the Postgres catalog clients browse (`pg_catalog`), and
//! live views followed on the owners as events are stored (`live`).
//! `QueryEngine::start` (`start_bound` with `$n` parameters, `describe` to
//! plan without running) is the one typed query API that every SQL door
//! calls.
//!
//! Must not know: HTTP or any wire protocol of the doors (`atoll-node`),
//! or how bytes reach another node (`atoll-cluster`'s client carries the
//! fragments; its service hands received ones to `engine::Fragments`).

pub mod approx_percentile;
pub mod bounded_functions;
pub mod catalog;
pub mod codec;
pub mod coverage;
pub mod engine;
pub mod error;
pub mod fragment;
pub mod live;
pub mod metrics;
pub mod pg_catalog;
pub mod physical_optimizer;
pub mod physical_plan;
pub mod pool;
pub mod prune;
pub mod render;
pub mod scan;

/// The values `$n` parameters are bound to.
pub use datafusion::common::ScalarValue;
pub use engine::{Described, QueryConfig, QueryEngine, QueryStats};
pub use error::QueryError;
pub use metrics::QueryMetrics;
