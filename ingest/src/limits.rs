//! What one event may hold, and how much of a request's refusals an
//! answer lists. Honeycomb's limits are the model (2,000 fields, 64 KiB
//! strings); an event over them is rejected with the reason, and the rest
//! of its request is stored.

use crate::convert::{FlatEvent, Scalar};
use crate::error::BadEvent;

/// Fields of one event (a table has at most as many columns).
pub const MAX_FIELDS: usize = atoll_store::MAX_COLUMNS;
/// Bytes of one string value (or of one item of a string set).
pub const MAX_STRING_BYTES: usize = 64 << 10;
/// How far ahead of the node's clock an event's `time` may be: a stray
/// event from the year 2100 would otherwise hold its batch (and the
/// table's retention and eviction) hostage for a century.
pub const MAX_FUTURE_MICROS: i64 = 24 * 3600 * 1_000_000;
/// Rejections an answer lists; the rest are only counted
/// (`rejected_total`). A client that resends only its rejected events
/// needs them all: requests of up to this many events are listed whole.
pub const MAX_REJECTIONS_LISTED: usize = 1_000;

/// A string value is short enough.
pub fn string_ok(s: &str) -> bool {
    s.len() <= MAX_STRING_BYTES
}

/// A time is not too far ahead of `now`.
pub fn time_ok(time: i64, now: i64) -> bool {
    time <= now.saturating_add(MAX_FUTURE_MICROS)
}

/// Refuses an event over any limit, naming it.
pub fn check(event: &FlatEvent<'_>, now: i64) -> Result<(), BadEvent> {
    if event.fields.len() > MAX_FIELDS {
        return Err(BadEvent(format!(
            "the event has {} fields, over the limit of {MAX_FIELDS}",
            event.fields.len()
        )));
    }
    if !time_ok(event.time, now) {
        return Err(BadEvent(format!(
            "time {} is more than 24 hours ahead of this node's clock",
            atoll_store::rfc3339(event.time)
        )));
    }
    for (name, value) in &event.fields {
        let long = match value {
            Scalar::Str(s) => !string_ok(s),
            Scalar::StrList(items) => items.iter().flatten().any(|s| !string_ok(s)),
            _ => false,
        };
        if long {
            return Err(BadEvent(format!(
                "field {name:?} holds a string over the limit of {MAX_STRING_BYTES} bytes"
            )));
        }
    }
    Ok(())
}
