//! A node that was frozen (a long pause of the process or its machine:
//! `SIGSTOP`, a VM stall) missed every write made meanwhile, and nothing
//! it holds says so: the other nodes saw it down and wrote around it, and
//! their reports of what it missed reach it only by gossip, after it
//! resumed. A watchdog ticking on the node's runtime notices the gap: the
//! partitions it holds are marked incomplete (catch-up clears them once the
//! other replicas were asked), and until the watchdog has ticked again,
//! queries coordinated here do not read this node's copies.

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

    pub fn spawn(
        self: &Arc<Self>,
        membership: Arc<Membership>,
        replicas: usize,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let me = self.clone();
        me.last_tick.store(me.now_ms(), Ordering::Relaxed);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return,
                }
                let now = me.now_ms();
                let gap = now.saturating_sub(me.last_tick.load(Ordering::Relaxed));
                if gap > STALL.as_millis() as u64 {
                    mark_held_incomplete(&membership, replicas, gap).await;
                }
                me.last_tick.store(now, Ordering::Relaxed);
            }
        });
    }
}

async fn mark_held_incomplete(membership: &Membership, replicas: usize, gap_ms: u64) {
    let Some(ring) = membership.ring() else {
        return;
    };
    let held = ring.held_by(membership.node_name(), ring.replicas(replicas));
    tracing::warn!(
        stalled_ms = gap_ms,
        partitions = held.len(),
        "this node was frozen: its partitions are incomplete until caught up"
    );
    membership.mark_incomplete(held).await;
}
