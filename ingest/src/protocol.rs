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
use crate::api::{Ingest, Turn};
use crate::error::BadEvent;
use crate::limits::MAX_REJECTIONS_LISTED;

/// An event a door made from its protocol's message, or why it could not.
pub type MadeEvent = Result<Map<String, Value>, BadEvent>;

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

/// Events are stored this many at a time, so that every refusal of a
/// request is listed (a native answer lists the first 1,000); doors that
/// can read their events lazily read this many at a time.
pub const EVENTS_AT_ONCE: usize = MAX_REJECTIONS_LISTED;
const CHUNK: usize = EVENTS_AT_ONCE;

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
        let mut statuses = Vec::with_capacity(events.len());
        let chunks = events.len().div_ceil(CHUNK).max(1);
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            let chunk: Vec<MadeEvent> = events.by_ref().take(CHUNK).collect();
            statuses.extend(self.made_chunk(table, chunk, size / chunks, turn).await);
        }
        statuses
    }

    async fn made_chunk(
        &self,
        table: &str,
        chunk: Vec<MadeEvent>,
        size: usize,
        turn: &Turn,
    ) -> Vec<EventStatus> {
        let mut statuses = vec![EventStatus::Stored; chunk.len()];
        match self.parsed_in_turn(table, chunk, size, turn).await {
            Ok(ingested) => {
                for r in ingested.outcome.rejected {
                    let kind = if r.unavailable {
                        ErrorKind::Unavailable
                    } else {
                        ErrorKind::BadInput
                    };
                    if let Some(s) = statuses.get_mut(r.index) {
                        *s = refused(kind, r.error);
                    }
                }
            }
            Err(e) => {
                for s in &mut statuses {
                    *s = refused(e.kind(), e.to_string());
                }
            }
        }
        statuses
    }
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
