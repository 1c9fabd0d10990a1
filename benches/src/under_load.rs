//! Queries as users meet them: right after a bulk load (while sealed
//! batches are still being merged), and while events keep arriving at a
//! steady rate. Compared with the same queries on a settled, idle node.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::{Timing, time_atoll};

/// Each query's timing, in the order given.
pub type Timings = Vec<(String, Timing)>;

pub async fn timings(url: &str, queries: &[(String, String)], runs: usize) -> Result<Timings> {
    let mut out = Vec::new();
    for (tag, sql) in queries {
        out.push((tag.clone(), time_atoll(url, sql, runs).await?));
    }
    Ok(out)
}

/// The queries while one keep-alive client sends `bodies` (again and
/// again) at `rate` events/s; answers the timings and the rate reached.
pub async fn while_ingesting(
    url: &str,
    bodies: &[Vec<u8>],
    counts: &[usize],
    rate: f64,
    queries: &[(String, String)],
    runs: usize,
) -> Result<(Timings, f64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let sender = {
        let (url, stop, sent) = (url.to_string(), stop.clone(), sent.clone());
        let work: Vec<(Vec<u8>, usize)> =
            bodies.iter().cloned().zip(counts.iter().copied()).collect();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let started = Instant::now();
            for (body, n) in work.iter().cycle() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                // Paced: the events sent so far are due at this time.
                let due = Duration::from_secs_f64(sent.load(Ordering::Relaxed) as f64 / rate);
                tokio::time::sleep_until(tokio::time::Instant::from_std(started + due)).await;
                let ok = client
                    .post(format!("{url}/v1/tables/events/events"))
                    .header("content-type", "application/x-ndjson")
                    .body(body.clone())
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    sent.fetch_add(*n, Ordering::Relaxed);
                }
            }
        })
    };
    let started = Instant::now();
    let result = timings(url, queries, runs).await;
    stop.store(true, Ordering::Relaxed);
    let _ = sender.await;
    let reached = sent.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    Ok((result?, reached))
}
