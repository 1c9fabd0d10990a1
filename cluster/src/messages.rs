//! Every message one node sends another over the internal Flight service,
//! and the names of its actions, in one place.
//!
//! Messages are serde types carried as JSON in Flight descriptors, action
//! bodies, tickets and `app_metadata`. The protocol as a whole is
//! versioned: the one client sends [`PROTOCOL_VERSION`] in the
//! [`PROTOCOL_HEADER`] metadata of every call, and the service refuses a
//! call of another version before reading any of it. A change to any
//! message here bumps the version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The version of every message below.
pub const PROTOCOL_VERSION: u32 = 1;
/// gRPC metadata naming the caller's protocol version.
pub const PROTOCOL_HEADER: &str = "x-atoll-protocol";
/// The gRPC service every internal call goes to (Arrow Flight's).
pub const FLIGHT_SERVICE: &str = "arrow.flight.protocol.FlightService";

/// What a replica write names: its table and partition (the write's id
/// travels in the batch, see `atoll_store::writes`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PutCommand {
    pub table: String,
    pub partition: u32,
}

/// Several partitions' writes to one node in one `do_put`: the stream's
/// rows are the parts' rows, in order. A coordinator sends each replica
/// node one per request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PutMany {
    pub table: String,
    pub parts: Vec<PutPart>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PutPart {
    pub partition: u32,
    pub rows: usize,
    /// The down primary this node holds the part for, if it is a fallback.
    pub hint_for: Option<String>,
}

/// What a `do_put` names.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PutDescriptor {
    Many(PutMany),
    One(PutCommand),
}

/// Flight action: a live subscription (its body the query engine's bytes);
/// answered by a stream that lasts as long as the caller reads it.
pub const ACTION_LIVE: &str = "live.subscribe";

/// Flight action: the tables of a node.
pub const ACTION_TABLES: &str = "handoff.tables";
/// Flight action: the write ids a node holds of a (table, partition).
pub const ACTION_IDS: &str = "handoff.ids";
/// Flight action: the rows of some writes of a (table, partition); the
/// first result is a `FetchHeader`, each further one a batch.
pub const ACTION_FETCH: &str = "handoff.fetch";

#[derive(Debug, Serialize, Deserialize)]
pub struct IdsRequest {
    pub table: String,
    pub partition: u32,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FetchRequest {
    pub table: String,
    pub partition: u32,
    pub ids: Vec<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FetchHeader {
    pub rows: usize,
    pub bytes: usize,
}

/// Flight action: a table change (settings or drop) made through another
/// node, to apply here; the body is a [`TableChange`].
pub const ACTION_TABLE_CHANGE: &str = "table.change";
/// Flight action: the rows a node holds of a table (`TableRows`), so that
/// a partition key is refused once any node stored events without it.
pub const ACTION_TABLE_ROWS: &str = "table.rows";

/// A table change made through one node, applied on every other with the
/// entry node's time as its version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableChange {
    pub table: String,
    /// When the entry node took the change (µs since the epoch).
    pub version: i64,
    pub change: Change,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Settings(atoll_store::TableSettings),
    Drop,
}

/// The answer to a `TableChange`: whether this node had something to
/// change (a drop of a table it never had is not applied).
#[derive(Debug, Serialize, Deserialize)]
pub struct ChangeApplied {
    pub applied: bool,
}

/// Flight action: a coordinator's reports of replicas that missed writes
/// it is about to acknowledge, sent to the replicas that did get them, so
/// that the reports spread even when the coordinator's own gossip does not
/// get out (`MissedReport`, answered by `MissedNoted`).
pub const ACTION_MISSED: &str = "writes.missed";

#[derive(Debug, Serialize, Deserialize)]
pub struct MissedReport {
    /// (replica, partition) pairs. The relay reports them at its own
    /// time: each node's reports are in its own clock.
    pub missed: Vec<(String, u32)>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MissedNoted {
    pub noted: usize,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TableRows {
    pub table: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RowCount {
    pub rows: u64,
}

/// Sent after a query fragment's last batch: what the owner read.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct FragmentStats {
    pub rows_scanned: u64,
    #[serde(default)]
    pub elapsed_ms: f64,
}

/// A `PutMany` answer: the parts a replica could not store, with why.
pub type PutFailures = BTreeMap<u32, String>;

/// A message as the bytes that carry it.
pub fn encode<T: Serialize + ?Sized>(message: &T) -> Result<Vec<u8>, crate::ClusterError> {
    serde_json::to_vec(message).map_err(|e| crate::ClusterError::Internal(e.to_string()))
}

/// A message from the bytes a peer sent.
pub fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, crate::ClusterError> {
    serde_json::from_slice(body)
        .map_err(|e| crate::ClusterError::BadMessage(format!("an unreadable message: {e}")))
}
