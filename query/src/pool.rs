//! Query memory: one node-wide pool that all queries draw from, and a cap
//! per query inside it, so one query cannot starve the others.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

/// Marks errors from a query's own cap (the client's to fix) as opposed to
/// the node pool running dry (try again later).
pub const QUERY_CAP_EXCEEDED: &str = "query exceeded its memory cap";
pub const NODE_POOL_EXHAUSTED: &str = "the node's query memory pool is exhausted";

/// A query's view of the node pool: grows there, but never past `cap`.
#[derive(Debug)]
pub struct QueryPool {
    node: Arc<dyn MemoryPool>,
    cap: usize,
    used: AtomicUsize,
    /// Set once the query was refused memory by its own cap; operators may
    /// re-word the error (e.g. "while SpillPool"), so the engine asks this.
    cap_hit: Arc<AtomicBool>,
}

impl QueryPool {
    pub fn new(node: Arc<dyn MemoryPool>, cap: usize) -> QueryPool {
        QueryPool {
            node,
            cap,
            used: AtomicUsize::new(0),
            cap_hit: Arc::default(),
        }
    }

    /// A flag that turns true when this query hits its cap.
    pub fn cap_hit(&self) -> Arc<AtomicBool> {
        self.cap_hit.clone()
    }
}

impl fmt::Display for QueryPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "QueryPool(cap: {}, used: {})",
            self.cap,
            self.used.load(Ordering::Relaxed)
        )
    }
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "atoll-query"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.node.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.node.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.node.grow(reservation, additional);
        self.used.fetch_add(additional, Ordering::Relaxed);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.node.shrink(reservation, shrink);
        self.used.fetch_sub(shrink, Ordering::Relaxed);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let used = self.used.fetch_add(additional, Ordering::Relaxed);
        if used + additional > self.cap {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            self.cap_hit.store(true, Ordering::Relaxed);
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{QUERY_CAP_EXCEEDED} of {} bytes ({} in use, {} more asked by {})",
                self.cap,
                used,
                additional,
                reservation.consumer().name()
            )));
        }
        if let Err(e) = self.node.try_grow(reservation, additional) {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{NODE_POOL_EXHAUSTED}: {e}"
            )));
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::GreedyMemoryPool;

    #[test]
    fn cap_and_node_pool_both_bind() {
        let node: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(100));
        let a: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(node.clone(), 60));
        let b: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(node.clone(), 60));
        let ra = MemoryConsumer::new("a").register(&a);
        let rb = MemoryConsumer::new("b").register(&b);
        ra.try_grow(50).unwrap();
        let err = ra.try_grow(20).unwrap_err().to_string();
        assert!(err.contains(QUERY_CAP_EXCEEDED), "{err}");
        let err = rb.try_grow(55).unwrap_err().to_string();
        assert!(err.contains(NODE_POOL_EXHAUSTED), "{err}");
        rb.try_grow(50).unwrap();
        assert_eq!(node.reserved(), 100);
        drop(ra);
        assert_eq!(
            node.reserved(),
            50,
            "a finished query gives its memory back"
        );
        assert_eq!(b.reserved(), 50);
    }
}
