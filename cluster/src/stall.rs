//! A node that was frozen (a long pause of the process or its machine:
//! `SIGSTOP`, a VM stall) missed every write made meanwhile, and nothing
//! it holds says so: the other nodes saw it down and wrote around it, and
//! their reports of what it missed reach it only by gossip, after it
//! resumed. A watchdog ticking on a thread of its own notices the gap: the
//! partitions it holds are marked incomplete (catch-up clears them once the
//! other replicas were asked), and until the watchdog has ticked again,
//! queries coordinated here do not read this node's copies.
//!
//! The thread is the watchdog's alone: a task on the node's runtime went
//! unpolled for over a second while a bulk load kept every worker busy,
//! and the node, taking itself for frozen, refused every query. A frozen
//! process stops all its threads; a busy runtime does not delay a thread
//! that only sleeps. A node alone in its ring marks nothing: no other node
//! could have taken a write while it was frozen.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::Membership;

/// The watchdog's period.
const TICK: Duration = Duration::from_millis(100);
/// A gap between ticks longer than this is a stall.
pub const STALL: Duration = Duration::from_secs(1);

pub struct StallWatch {
    started: Instant,
    /// When the watchdog last ticked, ms after `started`.
    last_tick: AtomicU64,
}

impl StallWatch {
    pub fn new() -> Arc<StallWatch> {
        Arc::new(StallWatch {
            started: Instant::now(),
            last_tick: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// True while the watchdog is late: this node may have just resumed
    /// from a stall it has not acted on yet.
    pub fn suspect(&self) -> bool {
        self.now_ms()
            .saturating_sub(self.last_tick.load(Ordering::Relaxed))
            > STALL.as_millis() as u64
    }

    /// Starts the watchdog's thread; it marks through the current tokio
    /// runtime and ends when `stop` says so.
    pub fn spawn(
        self: &Arc<Self>,
        membership: Arc<Membership>,
        replicas: usize,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let runtime = tokio::runtime::Handle::current();
        // Marked before the tick counts: until then `suspect` holds, and
        // queries keep off this node's copies.
        self.start(stop, move |gap| {
            runtime.block_on(mark_held_incomplete(membership.clone(), replicas, gap));
        });
    }

    /// The watchdog's thread: `on_stall` with each gap found.
    fn start(
        self: &Arc<Self>,
        stop: tokio::sync::watch::Receiver<bool>,
        on_stall: impl Fn(u64) + Send + 'static,
    ) {
        let me = self.clone();
        me.last_tick.store(me.now_ms(), Ordering::Relaxed);
        let spawned = std::thread::Builder::new()
            .name("atoll-stall-watch".into())
            .spawn(move || {
                while !*stop.borrow() && stop.has_changed().is_ok() {
                    std::thread::sleep(TICK);
                    let now = me.now_ms();
                    let gap = now.saturating_sub(me.last_tick.load(Ordering::Relaxed));
                    if gap > STALL.as_millis() as u64 {
                        on_stall(gap);
                    }
                    me.last_tick.store(now, Ordering::Relaxed);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "the stall watchdog cannot start; stalls go unnoticed");
        }
    }
}

async fn mark_held_incomplete(membership: Arc<Membership>, replicas: usize, gap_ms: u64) {
    let Some(ring) = membership.ring() else {
        return;
    };
    if ring.members().len() < 2 {
        return;
    }
    let held = ring.held_by(membership.node_name(), ring.replicas(replicas));
    tracing::warn!(
        stalled_ms = gap_ms,
        partitions = held.len(),
        "this node was frozen: its partitions are incomplete until caught up"
    );
    membership.mark_incomplete(held).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A runtime whose only worker is busy for longer than a stall is not
    /// frozen: the watchdog's thread keeps ticking.
    #[test]
    fn a_busy_runtime_is_not_a_stall() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let watch = StallWatch::new();
        let stalls = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let counted = stalls.clone();
        watch.start(stopped, move |_| {
            counted.fetch_add(1, Ordering::Relaxed);
        });
        runtime.block_on(async {
            tokio::spawn(async {
                std::thread::sleep(STALL + STALL / 2);
            })
            .await
            .unwrap();
        });
        assert!(!watch.suspect(), "the watchdog kept ticking");
        assert_eq!(stalls.load(Ordering::Relaxed), 0);
        stop.send(true).unwrap();
    }
}
