//! Ingest while live views follow the table: the cost of Live mode for the
//! nodes that store events. Each view is read as fast as it comes (a page
//! that keeps up); a view's owners filter and aggregate every stored batch.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use serde_json::json;

/// A dashboard-like view: errors by service, their count and slowest.
fn spec() -> serde_json::Value {
    json!({
        "table": "events", "bucket_seconds": 60, "filter": "status >= 500",
        "group_by": ["service"],
        "aggregates": [{"fn": "count"}, {"fn": "max", "column": "duration_ms"}],
    })
}

/// Open views, each read by a task counting the updates it reads.
pub struct Views {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    updates: Arc<AtomicUsize>,
}

impl Views {
    /// Makes the table with `first` (an event of the load), then opens `n`
    /// views of it.
    pub async fn open(url: &str, first: &[u8], n: usize) -> Result<Views> {
        let client = reqwest::Client::new();
        let made = client
            .post(format!("{url}/v1/tables/events/events"))
            .header("content-type", "application/x-ndjson")
            .body(first.to_vec())
            .send()
            .await?;
        if !made.status().is_success() {
            bail!("the first event: {}", made.status());
        }
        let updates = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..n {
            let res = client
                .post(format!("{url}/v1/live"))
                .header("content-type", "application/json")
                .body(spec().to_string())
                .send()
                .await
                .context("opening a live view")?;
            if !res.status().is_success() {
                bail!("a live view: {} {}", res.status(), res.text().await?);
            }
            let counted = updates.clone();
            tasks.push(tokio::spawn(async move {
                let mut body = res.bytes_stream();
                while let Some(Ok(chunk)) = body.next().await {
                    let events = chunk.windows(5).filter(|w| w == b"data:").count();
                    counted.fetch_add(events, Ordering::Relaxed);
                }
            }));
        }
        Ok(Views { tasks, updates })
    }

    /// Closes the views; the updates they read.
    pub fn close(self) -> usize {
        for t in &self.tasks {
            t.abort();
        }
        self.updates.load(Ordering::Relaxed)
    }
}
