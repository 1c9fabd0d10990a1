//! Live subscriptions on an owner: rows are offered to them as this node
//! stores its own partitions' writes, and what they gather goes to the
//! subscribing coordinator over a long `live.subscribe` action.
//!
//! The cluster carries a subscription's bytes and its answers only: what a
//! subscription keeps (filtered rows, partial aggregates) is the query
//! engine's, behind [`LiveRunner`] and [`LiveTap`]. Ingest never waits for
//! a subscriber: a stored batch is handed to each matching tap's queue
//! without blocking (an `Arc`'d batch), and a full queue drops the batch
//! and marks the tap as having lost rows, which its next answer says (the
//! page then falls back to querying). A tap's own state is bounded by the
//! engine; the queue by [`TAP_QUEUE`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arrow::array::RecordBatch;
use atoll_errors::{Classified, ErrorKind};
use futures::stream::BoxStream;

/// Batches waiting for one tap; more are dropped (and said lost).
pub const TAP_QUEUE: usize = 64;
/// How often a subscription's gatherings are sent.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// A message with nothing in it at least this often, so that each side
/// notices when the other went away.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// Compiles subscriptions. The query engine implements it.
pub trait LiveRunner: Send + Sync + 'static {
    fn start(&self, spec: &[u8]) -> Result<Arc<dyn LiveTap>, Box<dyn Classified + Send + Sync>>;
}

/// One subscription's state on this node.
pub trait LiveTap: Send + Sync {
    fn table(&self) -> &str;
    fn partitions(&self) -> &BTreeSet<u32>;
    /// Filters and gathers rows just stored (off the ingest path).
    fn apply(&self, batch: &RecordBatch);
    /// What was gathered since the last call, as the message to send; None
    /// when there is nothing. `lost` says batches were dropped meanwhile.
    fn take(&self, lost: bool) -> Option<Vec<u8>>;
}

#[derive(Debug, thiserror::Error)]
#[error("this node serves {0} live subscriptions already (--max-live-sessions)")]
pub struct TooManyTaps(usize);

impl Classified for TooManyTaps {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Unavailable
    }
}

struct Entry {
    id: u64,
    tap: Arc<dyn LiveTap>,
    queue: tokio::sync::mpsc::Sender<RecordBatch>,
    lost: Arc<AtomicBool>,
}

/// The taps of this node, offered every batch it stores as its own.
pub struct LiveTaps {
    entries: parking_lot::RwLock<Vec<Entry>>,
    next: AtomicU64,
    limit: std::sync::atomic::AtomicUsize,
}

impl Default for LiveTaps {
    fn default() -> LiveTaps {
        LiveTaps {
            entries: Default::default(),
            next: AtomicU64::new(1),
            limit: std::sync::atomic::AtomicUsize::new(64),
        }
    }
}

/// A tap while its subscription lasts: dropping it removes the tap.
pub struct Registered {
    taps: Arc<LiveTaps>,
    id: u64,
    tap: Arc<dyn LiveTap>,
    lost: Arc<AtomicBool>,
}

impl Registered {
    /// What the tap gathered since the last call (see [`LiveTap::take`]).
    pub fn take(&self) -> Option<Vec<u8>> {
        let lost = self.lost.swap(false, Ordering::Relaxed);
        self.tap.take(lost)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.taps.entries.write().retain(|e| e.id != self.id);
    }
}

impl LiveTaps {
    /// At most this many taps at once.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// How many subscriptions this node serves now.
    pub fn count(&self) -> usize {
        self.entries.read().len()
    }

    /// Adds a tap, and the task that applies its queued batches.
    pub fn register(self: &Arc<Self>, tap: Arc<dyn LiveTap>) -> Result<Registered, TooManyTaps> {
        let (queue, mut batches) = tokio::sync::mpsc::channel::<RecordBatch>(TAP_QUEUE);
        let lost = Arc::new(AtomicBool::new(false));
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        {
            let mut entries = self.entries.write();
            let limit = self.limit.load(Ordering::Relaxed);
            if entries.len() >= limit {
                return Err(TooManyTaps(limit));
            }
            entries.push(Entry {
                id,
                tap: tap.clone(),
                queue,
                lost: lost.clone(),
            });
        }
        let applying = tap.clone();
        // Ends when the entry (the queue's one sender) is removed.
        tokio::spawn(async move {
            while let Some(batch) = batches.recv().await {
                let tap = applying.clone();
                if tokio::task::spawn_blocking(move || tap.apply(&batch))
                    .await
                    .is_err()
                {
                    tracing::error!("a live subscription's filter panicked");
                }
            }
        });
        Ok(Registered {
            taps: self.clone(),
            id,
            tap,
            lost,
        })
    }

    /// Hands rows this node just stored in `partition` of `table` to the
    /// taps that follow them, without waiting.
    pub fn offer(&self, table: &str, partition: u32, batch: &RecordBatch) {
        let entries = self.entries.read();
        for e in entries.iter() {
            if e.tap.table() != table || !e.tap.partitions().contains(&partition) {
                continue;
            }
            if e.queue.try_send(batch.clone()).is_err() {
                e.lost.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// The answers of a subscription on this node: its gatherings every
/// [`FLUSH_EVERY`], an empty message at least every [`HEARTBEAT_EVERY`].
/// Dropping the stream (the coordinator went away) removes the tap.
pub fn answers(registered: Registered) -> BoxStream<'static, Vec<u8>> {
    let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(FLUSH_EVERY));
    let mut quiet = Duration::ZERO;
    Box::pin(futures::StreamExt::filter_map(ticks, move |_| {
        let message = match registered.take() {
            Some(m) => {
                quiet = Duration::ZERO;
                Some(m)
            }
            None => {
                quiet += FLUSH_EVERY;
                (quiet >= HEARTBEAT_EVERY).then(|| {
                    quiet = Duration::ZERO;
                    Vec::new()
                })
            }
        };
        futures::future::ready(message)
    }))
}
