//! Live views: a query's filter, groups and incremental aggregates
//! followed as events are stored, instead of asked again and again.
//!
//! Owners run [`tap::Tap`]s over each batch they store as their own
//! (`atoll_cluster::live` carries the subscription and its answers); the
//! coordinator follows one owner per partition ([`session`]) and merges
//! their [`gathered::Gathered`] into updates. `docs/live.md` says why.

pub mod gathered;
pub mod session;
pub mod spec;
pub mod tap;

use std::sync::Arc;

use atoll_errors::Classified;

pub use session::{LiveBucket, LiveStream, LiveUpdate};
pub use spec::{LiveAgg, LiveFn, LiveSpec};

use crate::engine::QueryEngine;

/// Compiles the subscriptions coordinators send this node.
pub struct Subscriptions(pub Arc<QueryEngine>);

impl atoll_cluster::live::LiveRunner for Subscriptions {
    fn start(
        &self,
        spec: &[u8],
    ) -> Result<Arc<dyn atoll_cluster::live::LiveTap>, Box<dyn Classified + Send + Sync>> {
        let spec: LiveSpec = serde_json::from_slice(spec).map_err(|e| {
            Box::new(crate::QueryError::BadRequest(format!(
                "a live subscription: {e}"
            ))) as Box<dyn Classified + Send + Sync>
        })?;
        let tap = self
            .0
            .live_tap(spec)
            .map_err(|e| Box::new(e) as Box<dyn Classified + Send + Sync>)?;
        Ok(Arc::new(tap))
    }
}
