//! A node's periodic work: one task per kind of work, one round every
//! period, until the node stops.

use std::future::Future;
use std::time::Duration;

/// Runs `round` every `period` (the first at once) until `stop` changes.
pub fn every<F, Fut>(period: Duration, mut stop: tokio::sync::watch::Receiver<bool>, mut round: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = tick.tick() => round().await,
                _ = stop.changed() => return,
            }
        }
    });
}
