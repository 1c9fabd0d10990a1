//! Ingest's Prometheus metrics, registered in the node's registry.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct IngestMetrics {
    pub events_accepted: IntCounterVec,
    pub events_rejected: IntCounterVec,
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
}

impl IngestMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<IngestMetrics> {
        let m = IngestMetrics {
            events_accepted: IntCounterVec::new(
                Opts::new("atoll_events_accepted_total", "Events stored, per table"),
                &["table"],
            )?,
            events_rejected: IntCounterVec::new(
                Opts::new("atoll_events_rejected_total", "Events rejected, per table"),
                &["table"],
            )?,
            requests: IntCounterVec::new(
                Opts::new(
                    "atoll_ingest_requests_total",
                    "Ingest requests, per HTTP status",
                ),
                &["status"],
            )?,
            request_seconds: HistogramVec::new(
                HistogramOpts::new("atoll_ingest_request_seconds", "Ingest request latency")
                    .buckets(prometheus::exponential_buckets(0.0005, 2.0, 16)?),
                &["status"],
            )?,
        };
        registry.register(Box::new(m.events_accepted.clone()))?;
        registry.register(Box::new(m.events_rejected.clone()))?;
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.request_seconds.clone()))?;
        Ok(m)
    }
}

impl IngestMetrics {
    /// Forgets the per-table counters of tables that are gone (dropped here
    /// or through another node), so that their labels leave `/metrics`.
    pub fn retain_tables(&self, exists: impl Fn(&str) -> bool) {
        use prometheus::core::Collector;
        for counter in [&self.events_accepted, &self.events_rejected] {
            let gone: Vec<String> = counter
                .collect()
                .iter()
                .flat_map(|family| family.get_metric())
                .flat_map(|m| m.get_label())
                .filter(|l| l.name() == "table" && !exists(l.value()))
                .map(|l| l.value().to_string())
                .collect();
            for table in gone {
                let _ = counter.remove_label_values(&[&table]);
            }
        }
    }
}
