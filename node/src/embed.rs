//! Atoll inside an application: the in-process door. An embedding
//! service writes and queries through a [`Client`] that it gets from its
//! [`Node`](crate::Node) with an API key, exactly as a remote client
//! would, minus the HTTP hop: the key is checked by the same `Auth` (and
//! checked again on every call, so a revoked key stops working), events
//! go through the same typed ingest (limits, turns, replication, quorum),
//! SQL through the same engine (sandbox, time and memory limits, coverage),
//! and both count in the same metrics. Only the transport differs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use atoll_auth::{Auth, AuthError, Caller, Need};
use atoll_errors::{Classified, ErrorKind};
use atoll_ingest::{EventsBody, IngestError, Ingested};
use atoll_query::metrics::Counted;
use atoll_query::{QueryError, QueryStats};

use crate::http::ingest::{IngestState, sender};
use crate::http::query::QueryState;

/// What the in-process API can fail with: the crate's typed errors, each
/// of the kind its HTTP door would answer with.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Query(#[from] QueryError),
    /// An event that cannot be written as JSON (a map with non-text keys).
    #[error("event {index} cannot be sent: {reason}")]
    Event { index: usize, reason: String },
    /// The node has no ring yet, or the key names no partition.
    #[error("{0}")]
    NotReady(String),
}

impl Classified for EmbedError {
    fn kind(&self) -> ErrorKind {
        match self {
            EmbedError::Auth(e) => e.kind(),
            EmbedError::Ingest(e) => e.kind(),
            EmbedError::Query(e) => e.kind(),
            EmbedError::Event { .. } => ErrorKind::BadInput,
            EmbedError::NotReady(_) => ErrorKind::Unavailable,
        }
    }
}

/// The doors' state, shared by every client of a node.
#[derive(Clone)]
pub(crate) struct Doors {
    pub ingest: IngestState,
    pub query: QueryState,
    pub auth: Arc<Auth>,
}

/// The application acting with one API key (or as anyone, on a node
/// without authentication). Cheap to clone; safe to share across tasks.
#[derive(Clone)]
pub struct Client {
    caller: Caller,
    doors: Doors,
}

/// How a query runs; the defaults are those of `POST /v1/query`.
#[derive(Debug, Clone, Default)]
pub struct QueryOptions {
    /// A lower time limit than the node's.
    pub timeout: Option<Duration>,
    /// Answer from the partitions that can be reached (see `stats`'s
    /// coverage) instead of failing when some cannot.
    pub allow_partial: bool,
    /// Keep at most this many rows (at most the node's row cap,
    /// `--max-result-rows`, which is also the default); `stats.truncated`
    /// says when rows were left out.
    pub max_rows: Option<usize>,
}

/// A query's answer: its rows as Arrow batches, and what it covered.
#[derive(Debug, Clone)]
pub struct Answer {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub stats: QueryStats,
}

impl Answer {
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

impl Doors {
    /// A client for `key` (None: no key), refused as an HTTP request
    /// with that key would be.
    pub(crate) fn client(&self, key: Option<&str>) -> Result<Client, EmbedError> {
        let caller = self.auth.authenticate(key, now_ms())?;
        Ok(Client {
            caller,
            doors: self.clone(),
        })
    }
}

/// Events as an NDJSON body, one JSON value a line.
fn ndjson<E: serde::Serialize>(events: impl IntoIterator<Item = E>) -> Result<Vec<u8>, EmbedError> {
    let mut body = Vec::new();
    for (index, event) in events.into_iter().enumerate() {
        serde_json::to_writer(&mut body, &event).map_err(|e| EmbedError::Event {
            index,
            reason: e.to_string(),
        })?;
        body.push(b'\n');
    }
    Ok(body)
}

fn now_ms() -> i64 {
    atoll_store::now_micros() / 1000
}

impl Client {
    /// The key's name and role, as the node sees them now.
    pub fn caller(&self) -> Result<Caller, EmbedError> {
        Ok(self.doors.auth.current(&self.caller, now_ms())?)
    }

    /// The caller as its key stands now, allowed `need`.
    fn allowed(&self, need: Need<'_>) -> Result<Caller, EmbedError> {
        let caller = self.caller()?;
        caller.may(need)?;
        Ok(caller)
    }

    /// Stores events in `table` (created by its first event), each a JSON
    /// object as `POST /v1/tables/{table}/events` takes them. Events that
    /// cannot be stored are in the outcome's `rejected`, the rest stored;
    /// `quorum_failed` says some were not held by W replicas (those are
    /// rejected too, and may be sent again).
    pub async fn ingest<E: serde::Serialize>(
        &self,
        table: &str,
        events: impl IntoIterator<Item = E>,
    ) -> Result<Ingested, EmbedError> {
        self.ingest_ndjson(table, ndjson(events)?, None).await
    }

    /// [`Client::ingest`] with an idempotency key: sent again with the same
    /// key and events (after an error or a failed quorum), the events are
    /// stored once.
    pub async fn ingest_idempotent<E: serde::Serialize>(
        &self,
        table: &str,
        events: impl IntoIterator<Item = E>,
        key: &str,
    ) -> Result<Ingested, EmbedError> {
        self.ingest_ndjson(table, ndjson(events)?, Some(key)).await
    }

    /// Stores an NDJSON body (one event a line) in `table`; with an
    /// idempotency key, a retried call lands once (as the HTTP header).
    pub async fn ingest_ndjson(
        &self,
        table: &str,
        body: impl Into<bytes::Bytes>,
        idempotency_key: Option<&str>,
    ) -> Result<Ingested, EmbedError> {
        let caller = self.allowed(Need::Ingest(table))?;
        let st = &self.doors.ingest;
        let started = Instant::now();
        let idempotency_key = atoll_ingest::idempotency_key(idempotency_key.map(str::as_bytes))?;
        let result = st
            .ingest
            .events(
                table,
                EventsBody {
                    raw: body.into(),
                    encoding: None,
                    ndjson: true,
                    idempotency_key,
                    sender: sender(&caller),
                    from_door: false,
                },
            )
            .await;
        let status = match &result {
            Ok(done) => {
                let outcome = &done.outcome;
                st.count_events(table, outcome.accepted, outcome.rejected_count());
                if done.quorum_failed { 503 } else { 200 }
            }
            Err(e) => crate::http::status(e.kind()).as_u16(),
        };
        st.count_status(started, status);
        Ok(result?)
    }

    /// Runs SQL across the ring, as `POST /v1/query` does.
    pub async fn query(&self, sql: &str) -> Result<Answer, EmbedError> {
        self.query_with(sql, QueryOptions::default()).await
    }

    pub async fn query_with(&self, sql: &str, options: QueryOptions) -> Result<Answer, EmbedError> {
        let caller = self.allowed(Need::Query)?;
        let st = &self.doors.query;
        let request = Counted::begin(&st.metrics);
        let result = self.run(&caller, sql, options).await;
        request.end(match &result {
            Ok(_) => "ok",
            Err(e) => e.label(),
        });
        Ok(result?)
    }

    async fn run(
        &self,
        caller: &Caller,
        sql: &str,
        options: QueryOptions,
    ) -> Result<Answer, QueryError> {
        let engine = &self.doors.query.engine;
        let cap = crate::http::query::max_rows(options.max_rows, engine.config().max_json_rows)?;
        let mut execution = engine
            .start(
                sql,
                options.timeout,
                Some(options.allow_partial),
                caller.tables.as_ref(),
            )
            .await?;
        let schema = execution.schema();
        let (batches, truncated) = execution.first_rows(cap).await?;
        let stats = execution.stats(truncated);
        Ok(Answer {
            schema,
            batches,
            stats,
        })
    }
}

/// Where the events of one partition key value live.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Owners {
    pub partition: u32,
    /// The partition's N replicas, in the ring's preference order (the
    /// first is its owner).
    pub replicas: Vec<Owner>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Owner {
    pub name: String,
    /// Its HTTP address (IP:PORT) as it advertises it (None until gossip
    /// says).
    pub http_addr: Option<String>,
    /// Seen up by this node's gossip.
    pub up: bool,
    /// This node.
    pub me: bool,
}

impl Owners {
    pub(crate) fn of(
        ring: &atoll_ring::Ring,
        n: usize,
        members: &[atoll_cluster::Member],
        me: &str,
        key: &[u8],
    ) -> Owners {
        let partition = atoll_ring::partition_for_key(key, ring.partitions());
        let replicas = ring
            .primaries(partition, ring.replicas(n))
            .into_iter()
            .map(|name| {
                let member = members.iter().find(|m| &m.name == name);
                Owner {
                    name: name.clone(),
                    http_addr: member.and_then(|m| m.http_addr.clone()),
                    up: member.is_some_and(|m| m.up),
                    me: name == me,
                }
            })
            .collect();
        Owners {
            partition,
            replicas,
        }
    }
}
