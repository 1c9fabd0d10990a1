//! The typed ingest API every door calls: a body of events for a table
//! becomes Arrow batches, grouped by partition and handed to the cluster's
//! replication, piece by piece. Doors (HTTP, the embedded API) only read
//! their request into an [`EventsBody`].

use crate::error::BadEvent;
use std::sync::Arc;

use arrow::array::RecordBatch;
use atoll_cluster::Replicator;
use atoll_store::{Store, now_micros, validate_table_name};
use bytes::Bytes;

use crate::convert::{self, IngestOutcome, Rejection};
use crate::limits::MAX_REJECTIONS_LISTED;
use crate::{IngestError, body, decode, route, typed};

/// NDJSON bodies are converted this many events at a time, so that a large
/// request never holds more than a piece's parsed JSON in memory.
pub const PIECE_EVENTS: usize = 16_384;

/// One request's events, as its door read them.
pub struct EventsBody {
    /// The body as received (compressed or not).
    pub raw: Bytes,
    /// `Content-Encoding`, when one was named.
    pub encoding: Option<String>,
    /// The request said it is NDJSON (its content type).
    pub ndjson: bool,
    /// Makes a retried request land once (see `idempotency_key`).
    pub idempotency_key: Option<String>,
    /// Who sent it (the API key's id, or its name): idempotency keys count
    /// per sender (`idempotency`).
    pub sender: String,
    /// Made by a protocol door (`protocol`) from a request it already held
    /// to its limits: every rejected event is listed, not only the first
    /// 1,000 (the door answers one status per event), and the size is not
    /// checked again (JSON text of OTLP rows is larger than the protobuf it
    /// came from; `otlp` bounds it).
    pub from_door: bool,
}

/// What became of a request's events.
#[derive(Default)]
pub struct Ingested {
    pub outcome: IngestOutcome,
    /// Some events were not held by W replicas (they are in `rejected`).
    pub quorum_failed: bool,
}

/// The ingest side of a node.
#[derive(Clone)]
pub struct Ingest {
    pub store: Arc<Store>,
    pub replicator: Arc<Replicator>,
    /// Largest request body, before and after decompression.
    pub max_body_bytes: usize,
    /// Requests decoded and stored at once (`--max-concurrent-ingest`).
    pub turns: Arc<tokio::sync::Semaphore>,
    /// How long a request waits for its turn (`--ingest-queue-wait-ms`).
    pub turn_wait: std::time::Duration,
    pub recent_keys: Arc<crate::idempotency::RecentKeys>,
}

/// One request's turn to decode and store its body.
pub struct Turn {
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// How long a body waits for memory before it is decoded anyway.
const ROOM_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

type Groups = Vec<(u32, RecordBatch, Vec<usize>)>;

impl Ingest {
    /// Stores a body of events in `table` (created by its first event).
    /// An event counts as accepted once W replicas hold it; every other
    /// event is in `rejected` with why.
    pub async fn events(&self, table: &str, body: EventsBody) -> Result<Ingested, IngestError> {
        let turn = self.turn().await?;
        self.events_in_turn(table, body, &turn).await
    }

    /// A turn to decode and store a body (`--max-concurrent-ingest`): a
    /// door that reads the body itself takes it before reading. Waits at
    /// most `turn_wait`, then answers Busy (nothing stored).
    pub async fn turn(&self) -> Result<Turn, IngestError> {
        let permit = tokio::time::timeout(self.turn_wait, self.turns.clone().acquire_owned())
            .await
            .map_err(|_| IngestError::Busy(self.turns.available_permits()))?
            .expect("the ingest semaphore is never closed");
        Ok(Turn { _permit: permit })
    }

    /// [`Ingest::events`] with a turn already had (its holder gives it back
    /// once done).
    pub async fn events_in_turn(
        &self,
        table: &str,
        body: EventsBody,
        _turn: &Turn,
    ) -> Result<Ingested, IngestError> {
        validate_table_name(table)?;
        let limit = self.max_body_bytes;
        if body.raw.len() > limit && !body.from_door {
            return Err(IngestError::TooLarge { limit, after: "" });
        }
        // While writes outrun eviction, a body waits (a little) before it
        // is decoded, and what it decodes to counts until the next
        // measurement: bodies in flight are memory too.
        self.store.wait_for_room(ROOM_WAIT).await;
        let decoded = body::inflate(body.encoding, body.raw, limit).await?;
        self.store.added_memory(decoded.len() as u64);
        let key = match &body.idempotency_key {
            Some(k) => Some(self.recent_keys.scope(&body.sender, k, &decoded)?),
            None => None,
        };
        let pieces: Vec<Piece> = if body::is_ndjson(&decoded, body.ndjson) {
            body::ndjson_pieces(&decoded, PIECE_EVENTS)
                .into_iter()
                .map(|(first, r)| Piece::Lines(first, r))
                .collect()
        } else if let Some(elements) = body::array_pieces(&decoded, PIECE_EVENTS) {
            elements?.into_iter().map(Piece::Elements).collect()
        } else {
            vec![Piece::Whole]
        };
        let listed = if body.from_door {
            usize::MAX
        } else {
            MAX_REJECTIONS_LISTED
        };
        self.store_pieces(table, pieces, decoded, key, listed).await
    }

    /// Events already parsed (a protocol door's, `protocol`), stored as a
    /// body's are; `size` is what they took on the wire, counted as memory
    /// in flight like a body.
    pub async fn parsed_in_turn(
        &self,
        table: &str,
        events: Vec<body::ParsedEvent>,
        size: usize,
        _turn: &Turn,
    ) -> Result<Ingested, IngestError> {
        validate_table_name(table)?;
        self.store.wait_for_room(ROOM_WAIT).await;
        self.store.added_memory(size as u64);
        let mut pieces = Vec::new();
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            pieces.push(Piece::Parsed(events.by_ref().take(PIECE_EVENTS).collect()));
        }
        self.store_pieces(table, pieces, Bytes::new(), None, usize::MAX)
            .await
    }

    /// Converts and replicates a body's pieces in order (`decoded`: the
    /// bytes they are ranges of); `key`: the request's idempotency key;
    /// `listed`: how many rejections the answer lists at most.
    async fn store_pieces(
        &self,
        table: &str,
        pieces: Vec<Piece>,
        decoded: Bytes,
        key: Option<String>,
        listed: usize,
    ) -> Result<Ingested, IngestError> {
        let mut outcome = IngestOutcome {
            accepted: 0,
            rejected: Vec::new(),
            rejected_total: None,
        };
        let mut rejected_total = 0;
        let mut quorum_failed = false;
        let mut offset = 0;
        for piece in pieces {
            // Each piece is its own idempotent unit: a replica remembers
            // (key, table, partition), and two pieces may share a partition.
            let piece_key = key.as_ref().map(|k| format!("{k}\u{0}{offset}"));
            let (store, name, key) = (self.store.clone(), table.to_string(), piece_key.clone());
            let whole = decoded.clone();
            let (converted, groups, events) = tokio::task::spawn_blocking(move || {
                convert_piece(&store, &name, &whole, &piece, key.as_deref())
            })
            .await
            .map_err(|e| IngestError::task_failed("converting events", e))??;
            let mut rejected: Vec<Rejection> = converted
                .rejected
                .into_iter()
                .map(|r| Rejection {
                    index: r.index + offset,
                    ..r
                })
                .collect();
            for d in self
                .replicator
                .deliver(table, groups, piece_key.as_deref())
                .await?
            {
                if d.acks >= d.needed {
                    outcome.accepted += d.events.len();
                } else {
                    quorum_failed = true;
                    let mut error =
                        format!("quorum not reached: {} of {} replicas", d.acks, d.needed);
                    if let Some(why) = &d.failure {
                        error.push_str(&format!(" ({why})"));
                    }
                    rejected.extend(d.events.iter().map(|&row| Rejection {
                        index: converted.events[row] + offset,
                        error: error.clone(),
                        unavailable: true,
                    }));
                }
            }
            // Pieces come in order: the first rejections of the body are
            // those of the first pieces.
            rejected.sort_by_key(|r| r.index);
            rejected_total += rejected.len();
            let room = listed.saturating_sub(outcome.rejected.len());
            outcome.rejected.extend(rejected.into_iter().take(room));
            offset += events;
        }
        if rejected_total > outcome.rejected.len() {
            outcome.rejected_total = Some(rejected_total);
        }
        Ok(Ingested {
            outcome,
            quorum_failed,
        })
    }
}

/// The optional idempotency key of a request: up to 256 visible ASCII
/// characters.
pub fn idempotency_key(value: Option<&[u8]>) -> Result<Option<String>, IngestError> {
    let Some(v) = value else {
        return Ok(None);
    };
    match std::str::from_utf8(v) {
        Ok(k) if !k.is_empty() && k.len() <= 256 && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(k.to_string()))
        }
        _ => Err(IngestError::BadBody(
            "Idempotency-Key must be 1 to 256 visible ASCII characters".into(),
        )),
    }
}

/// A part of a body converted on its own.
enum Piece {
    /// NDJSON lines, the number of the first and their bytes.
    Lines(usize, std::ops::Range<usize>),
    /// Elements of a JSON array.
    Elements(Vec<std::ops::Range<usize>>),
    /// The body as one JSON document (an object).
    Whole,
    /// Events a protocol door made, already parsed.
    Parsed(Vec<body::ParsedEvent>),
}

/// Parses and converts one piece of a body; answers the conversion, the
/// rows grouped by partition, and how many events the piece held. Event
/// indexes of the answer are relative to the piece.
fn convert_piece(
    store: &Store,
    table: &str,
    body: &[u8],
    piece: &Piece,
    key: Option<&str>,
) -> Result<(convert::Converted, Groups, usize), IngestError> {
    let arrival = now_micros();
    match piece {
        Piece::Lines(first, range) => {
            let lines = &body[range.clone()];
            if let Some(t) = store.table(table)
                && let Some(converted) = typed::convert_ndjson(&t, lines, arrival, key)
            {
                // The typed path takes a piece whole: every event accepted.
                let count = converted.events.len();
                let (converted, groups) = grouped(converted)?;
                return Ok((converted, groups, count));
            }
            let events = decode::ndjson_events(lines, *first, arrival);
            convert_flat(store, table, events, key)
        }
        Piece::Elements(ranges) => {
            let parsed = body::parse_elements(body, ranges);
            convert_flat(store, table, convert::prepare_all(&parsed, arrival), key)
        }
        Piece::Whole => {
            let parsed = body::parse(body, false)?;
            convert_flat(store, table, convert::prepare_all(&parsed, arrival), key)
        }
        Piece::Parsed(parsed) => {
            convert_flat(store, table, convert::prepare_all(parsed, arrival), key)
        }
    }
}

fn convert_flat(
    store: &Store,
    table: &str,
    events: Vec<Result<convert::FlatEvent<'_>, BadEvent>>,
    key: Option<&str>,
) -> Result<(convert::Converted, Groups, usize), IngestError> {
    let count = events.len();
    if events.iter().all(Result::is_err) && store.table(table).is_none() {
        let rejected = events
            .into_iter()
            .enumerate()
            .filter_map(|(index, e)| {
                e.err().map(|error| Rejection {
                    index,
                    error: error.0,
                    unavailable: false,
                })
            })
            .collect();
        let nothing = convert::Converted {
            batch: None,
            partitions: vec![],
            events: vec![],
            rejected,
        };
        return Ok((nothing, Vec::new(), count));
    }
    let t = store.get_or_create(table)?;
    let converted = convert::convert_flat(&t, events, key)?;
    let (converted, groups) = grouped(converted)?;
    Ok((converted, groups, count))
}

/// A converted piece with its rows grouped by partition.
fn grouped(converted: convert::Converted) -> Result<(convert::Converted, Groups), IngestError> {
    let groups = match &converted.batch {
        Some(batch) => route::group_by_partition(batch, &converted.partitions)?,
        None => Vec::new(),
    };
    Ok((converted, groups))
}
