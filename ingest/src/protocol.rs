//! The one path of events that a protocol door (the Honeycomb Events API,
//! OTLP) makes from its own format. The door turns each of its events into
//! a JSON object (or says why it cannot); they are stored as the events of
//! a native body are once parsed (`Ingest::parsed_in_turn`: the same
//! conversion, schema-on-write, limits and replication) and answered one
//! status per event, in order, as those protocols answer.

use atoll_errors::{Classified, ErrorKind};
use atoll_store::validate_table_name;
use serde_json::{Map, Value};

use crate::IngestError;
use crate::api::{EventsBody, Ingest, Ingested, Turn};
use crate::error::BadEvent;

/// An event a door made from its protocol's message, or why it could not.
pub type MadeEvent = Result<Map<String, Value>, BadEvent>;

/// An event as one line of JSON text (an object, no newline), or why a
/// door could not make it.
pub type MadeLine = Result<Vec<u8>, BadEvent>;

/// A door's events, in one of the two forms.
pub enum Made {
    Objects(Vec<MadeEvent>),
    Lines(Vec<MadeLine>),
}

impl Made {
    pub fn len(&self) -> usize {
        match self {
            Made::Objects(e) => e.len(),
            Made::Lines(l) => l.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What became of one event.
#[derive(Debug, Clone, PartialEq)]
pub enum EventStatus {
    Stored,
    /// Not stored: `kind` says whether the event itself was wrong
    /// (`BadInput`...) or the cluster could not take it now
    /// (`Unavailable`: W replicas not reached).
    Refused {
        kind: ErrorKind,
        error: String,
    },
}

impl EventStatus {
    pub fn is_stored(&self) -> bool {
        matches!(self, EventStatus::Stored)
    }
}

/// Doors that can read their events lazily (Honeycomb batches) read and
/// store this many at a time: a large request is never held parsed whole,
/// and each store replicates as many events in one round as a native
/// body's piece.
pub const EVENTS_AT_ONCE: usize = crate::api::PIECE_EVENTS;

impl Ingest {
    /// Stores a door's events in `table`; one status per event, in order.
    /// Never fails as a whole once it has begun: a chunk the cluster
    /// refuses is reported event by event, so that a client retrying a
    /// request that stored some of its events cannot store them twice.
    /// `size`: the bytes the events came in (counted as memory in flight).
    pub async fn made_events(
        &self,
        table: &str,
        events: Vec<MadeEvent>,
        size: usize,
        turn: &Turn,
    ) -> Vec<EventStatus> {
        let (chunks, share) = in_chunks(events, size);
        let mut out = Vec::new();
        for chunk in chunks {
            let n = chunk.len();
            let stored = self.parsed_in_turn(table, chunk, share, turn).await;
            out.extend(statuses(n, stored, Some));
        }
        out
    }

    /// Stores a door's events in either form; one status per event.
    pub async fn store_made(
        &self,
        table: &str,
        made: Made,
        size: usize,
        turn: &Turn,
    ) -> Vec<EventStatus> {
        match made {
            Made::Objects(events) => self.made_events(table, events, size, turn).await,
            Made::Lines(lines) => self.made_lines(table, lines, size, turn).await,
        }
    }

    /// Stores events a door could give as one line of JSON text each (a
    /// Honeycomb batch's), as a native NDJSON body: so that they take its
    /// typed fast path when they fit the table. One status per event.
    pub async fn made_lines(
        &self,
        table: &str,
        lines: Vec<MadeLine>,
        size: usize,
        turn: &Turn,
    ) -> Vec<EventStatus> {
        let (chunks, share) = in_chunks(lines, size);
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend(self.lines_chunk(table, chunk, share, turn).await);
        }
        out
    }

    async fn lines_chunk(
        &self,
        table: &str,
        chunk: Vec<MadeLine>,
        size: usize,
        turn: &Turn,
    ) -> Vec<EventStatus> {
        let n = chunk.len();
        let mut body = Vec::with_capacity(size + n);
        // The chunk's index of each line of the body, and the events that
        // could not be written as one.
        let mut at = Vec::with_capacity(n);
        let mut bad = Vec::new();
        for (i, line) in chunk.into_iter().enumerate() {
            match line {
                Ok(text) => {
                    body.extend_from_slice(&text);
                    body.push(b'\n');
                    at.push(i);
                }
                Err(e) => bad.push((i, e)),
            }
        }
        let stored = if at.is_empty() {
            Ok(Ingested::default())
        } else {
            let body = EventsBody {
                raw: body.into(),
                encoding: None,
                ndjson: true,
                idempotency_key: None,
                sender: String::new(),
                from_door: true,
            };
            self.events_in_turn(table, body, turn).await
        };
        let mut out = statuses(n, stored, |line| at.get(line).copied());
        for (i, e) in bad {
            out[i] = refused(ErrorKind::BadInput, e.0);
        }
        // Lines the body did not get (refused before) are not stored.
        out
    }
}

/// `items` cut into chunks of a native piece each, with each chunk's share
/// of `size`: a chunk is one piece of one store, so a chunk the cluster
/// refuses is answered event by event while the others stand.
fn in_chunks<T>(items: Vec<T>, size: usize) -> (Vec<Vec<T>>, usize) {
    let share = size / items.len().div_ceil(EVENTS_AT_ONCE).max(1);
    let mut chunks = Vec::new();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        chunks.push(items.by_ref().take(EVENTS_AT_ONCE).collect());
    }
    (chunks, share)
}

/// One status per event of a stored chunk of `n`; `index` maps an index of
/// the stored events to the chunk's.
fn statuses(
    n: usize,
    stored: Result<Ingested, IngestError>,
    index: impl Fn(usize) -> Option<usize>,
) -> Vec<EventStatus> {
    let mut out = vec![EventStatus::Stored; n];
    match stored {
        Ok(ingested) => {
            for r in ingested.outcome.rejected {
                let kind = if r.unavailable {
                    ErrorKind::Unavailable
                } else {
                    ErrorKind::BadInput
                };
                if let Some(s) = index(r.index).and_then(|i| out.get_mut(i)) {
                    *s = refused(kind, r.error);
                }
            }
        }
        Err(e) => {
            for s in &mut out {
                *s = refused(e.kind(), e.to_string());
            }
        }
    }
    out
}

fn refused(kind: ErrorKind, error: String) -> EventStatus {
    EventStatus::Refused { kind, error }
}

/// The table of a Honeycomb dataset or an OpenTelemetry `service.name`:
/// lowercased; every character other than a letter, a digit, `_` or `-`
/// becomes `_`; a name not starting with a letter or `_` gets a `_` in
/// front. `My Service.v2` -> `my_service_v2`, `2fa` -> `_2fa`. Names
/// longer than 64 characters after that are refused, not cut (two long
/// names must not land in one table by surprise).
pub fn table_for(name: &str) -> Result<String, IngestError> {
    let mut table: String = name
        .trim()
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !table.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        table.insert(0, '_');
    }
    validate_table_name(&table).map_err(|_| {
        IngestError::BadBody(format!(
            "{name:?} cannot name a table: at most 64 letters, digits, '_' or '-' once mapped (it maps to {table:?})"
        ))
    })?;
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_tables_by_one_rule() {
        for (name, table) in [
            ("requests", "requests"),
            ("My Service.v2", "my_service_v2"),
            ("2fa", "_2fa"),
            ("-x", "_-x"),
            ("checkout-api", "checkout-api"),
            ("café", "caf_"),
            ("", "_"),
        ] {
            assert_eq!(table_for(name).unwrap(), table, "{name}");
        }
        let err = table_for(&"a".repeat(65)).unwrap_err().to_string();
        assert!(err.contains("cannot name a table"), "{err}");
    }
}
