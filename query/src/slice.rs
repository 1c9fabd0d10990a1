//! Time slices for query tasks.
//!
//! A query's operators run in one tokio task per stream, and tokio can only
//! cancel a task (client gone, deadline passed) or run another query's
//! task when it yields. Tokio's cooperative budget counts scan batches, not
//! time: behind a nested-loop join each batch may cost tens of
//! milliseconds at opt-level 0, so 128 of them kept a cancelled query
//! running for many seconds and starved every other query. Scans
//! therefore also yield once their task has run a slice of time since it
//! last waited.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;

/// How long a query task runs between chances to cancel or switch it.
pub const SLICE: Duration = Duration::from_millis(20);

pub struct TimeSliced<S> {
    inner: S,
    /// When the task last resumed after waiting; None until the next poll.
    since: Option<Instant>,
}

pub fn time_sliced<S>(inner: S) -> TimeSliced<S> {
    TimeSliced { inner, since: None }
}

impl<S: Stream + Unpin> Stream for TimeSliced<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        if now.duration_since(since) >= SLICE {
            self.since = None;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let item = Pin::new(&mut self.inner).poll_next(cx);
        if item.is_pending() {
            self.since = None;
        }
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn yields_once_a_slice_has_passed_and_loses_nothing() {
        let mut s = time_sliced(futures::stream::iter(0..4));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(s.poll_next_unpin(&mut cx), Poll::Ready(Some(0)));
        std::thread::sleep(SLICE);
        assert_eq!(s.poll_next_unpin(&mut cx), Poll::Pending);
        assert_eq!(s.poll_next_unpin(&mut cx), Poll::Ready(Some(1)));
        let rest: Vec<i32> = s.collect().await;
        assert_eq!(rest, vec![2, 3]);
    }
}
