//! Query Prometheus metrics, registered in the node's registry.

use std::time::Instant;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct QueryMetrics {
    pub requests: IntCounterVec,
    pub seconds: HistogramVec,
    pub running: IntGauge,
    /// Fragments run for other nodes: completed, cancelled (the coordinator
    /// went away first) or refused.
    pub fragments: IntCounterVec,
}

impl QueryMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<QueryMetrics> {
        let m = QueryMetrics {
            requests: IntCounterVec::new(
                Opts::new("atoll_query_requests_total", "Query requests, per outcome"),
                &["outcome"],
            )?,
            seconds: HistogramVec::new(
                HistogramOpts::new("atoll_query_seconds", "Query latency, per outcome")
                    .buckets(prometheus::exponential_buckets(0.0005, 2.0, 18)?),
                &["outcome"],
            )?,
            running: IntGauge::new("atoll_queries_running", "Queries running now")?,
            fragments: IntCounterVec::new(
                Opts::new(
                    "atoll_fragments_total",
                    "Query fragments run for other nodes, per outcome",
                ),
                &["outcome"],
            )?,
        };
        registry.register(Box::new(m.fragments.clone()))?;
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.seconds.clone()))?;
        registry.register(Box::new(m.running.clone()))?;
        Ok(m)
    }
}

/// One query in the metrics, whichever door it came through: counted as
/// running until it ends, and as `cancelled` if its client goes away (or
/// cancels it) first, dropping this guard.
pub struct Counted {
    metrics: QueryMetrics,
    started: Instant,
    outcome: Option<&'static str>,
}

impl Counted {
    pub fn begin(metrics: &QueryMetrics) -> Counted {
        metrics.running.inc();
        Counted {
            metrics: metrics.clone(),
            started: Instant::now(),
            outcome: None,
        }
    }

    pub fn end(mut self, outcome: &'static str) {
        self.outcome = Some(outcome);
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let outcome = self.outcome.unwrap_or("cancelled");
        self.metrics.running.dec();
        self.metrics.requests.with_label_values(&[outcome]).inc();
        self.metrics
            .seconds
            .with_label_values(&[outcome])
            .observe(self.started.elapsed().as_secs_f64());
    }
}
