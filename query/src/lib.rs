//! SQL over Atoll tables: the DataFusion catalog over the store, the
//! partition scan, the query sandbox and limits, and the HTTP query API.

pub mod catalog;
pub mod coverage;
pub mod distributed;
pub mod engine;
pub mod error;
pub mod http;
pub mod metrics;
pub mod pool;
pub mod prune;
pub mod render;
pub mod scan;
pub mod slice;

pub use engine::{QueryConfig, QueryEngine, QueryStats};
pub use error::QueryError;
pub use http::{QueryState, router};
pub use metrics::QueryMetrics;
