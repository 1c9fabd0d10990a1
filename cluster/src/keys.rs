//! Every key a node publishes by gossip, and how its value is written and
//! read: one place, so that a reader sees the whole gossiped state of a
//! node at once, and a key cannot be written one way and parsed another.
//!
//! A node's state is a flat map of string keys to string values
//! (chitchat's). Fixed keys name one fact each; prefixed keys
//! (`stat.NAME`, `schema.TABLE`, `dropped.TABLE`, `leave.NODE`,
//! `apikey.ID`, `keyused.ID`, `saved.ID`) hold one entry per name.

use std::collections::{BTreeMap, BTreeSet};

use atoll_ring::{NodeId, Ring};

pub const KEY_HTTP: &str = "http";
pub const KEY_FLIGHT: &str = "flight";
pub const KEY_PARTITIONS: &str = "partitions";
pub const KEY_RING: &str = "ring";
pub const KEY_INCOMPLETE: &str = "incomplete";
/// `missed.NODE/PARTITION`: when (µs since the epoch) a write this node
/// coordinated last failed to reach NODE, a replica of PARTITION (NODE was
/// down, cut off or paused): NODE may lack acknowledged events there until
/// it catches up. Deleted once NODE says it saw it (`missed_seen`).
pub const MISSED_PREFIX: &str = "missed.";
/// `missed_seen`: per reporter (a JSON object, node name -> µs by that
/// node's clock), the newest `missed.` report about this node it has acted
/// on (marked the partition incomplete, to catch up), set after
/// `incomplete`: a reader that has this value has that mark too.
pub const KEY_MISSED_SEEN: &str = "missed_seen";
/// `leave.NODE`: a request, made through any node, that NODE leave the ring.
pub const LEAVE_PREFIX: &str = "leave.";
/// The value of a `leave.NODE` key that does not wait for handoff.
pub const LEAVE_FORCED: &str = "forced";
/// Keys under this prefix are figures a node reports about itself.
pub const STAT_PREFIX: &str = "stat.";
/// `schema.TABLE`: a digest of a table's columns and settings on a node, so
/// that nodes notice a table or a column they do not know yet.
pub const SCHEMA_PREFIX: &str = "schema.";
/// `dropped.TABLE`: when (µs since the epoch) a node dropped a table, so
/// that nodes that missed the drop apply it to what they created before.
pub const DROPPED_PREFIX: &str = "dropped.";

/// `apikey.ID`: an API key's record (JSON of `atoll_auth::KeyRecord`: its
/// hash and verifier, never the key), or its tombstone. Every node
/// publishes every record it knows, so a key outlives the node that made
/// it.
pub const APIKEY_PREFIX: &str = "apikey.";
/// `keytally`: `RECORDS/REVOKED`, how many `apikey.ID` records this node
/// publishes and how many of them are tombstones, set after them. chitchat
/// sends a node's keys in the order they were set, so a node that has a
/// peer's tally has every record that tally counts (how a restarted node
/// knows it has caught up with revocations before serving).
pub const KEY_TALLY: &str = "keytally";
/// `keyused.ID`: when this node last saw the key used (ms since the
/// epoch), refreshed at most every few seconds.
pub const KEY_USED_PREFIX: &str = "keyused.";
/// `saved.KIND.HEXNAME`: a saved view or board of the dashboard (JSON of
/// `saved::Item`), or its tombstone; every node publishes every item it
/// knows.
pub const SAVED_PREFIX: &str = "saved.";

pub fn parse_partitions(text: &str) -> BTreeSet<u32> {
    text.split(',').filter_map(|p| p.parse().ok()).collect()
}

/// A node's keys under `prefix`, without it.
pub fn prefixed(state: &chitchat::NodeState, prefix: &str) -> BTreeMap<String, String> {
    state
        .key_values()
        .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_string(), v.to_string())))
        .collect()
}

/// `epoch;member,member,...;i,i,...[;i,i,...]`: owners (and the claim
/// partitions are moving to) as indexes into members.
pub fn encode_ring(r: &Ring) -> String {
    let members: Vec<&NodeId> = r.members().into_iter().collect();
    let indexes = |owners: &[NodeId]| {
        owners
            .iter()
            .map(|o| {
                let i = members.iter().position(|m| *m == o);
                i.expect("owner is a member").to_string()
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    let names: Vec<&str> = members.iter().map(|m| m.as_str()).collect();
    let mut text = format!("{};{};{}", r.epoch(), names.join(","), indexes(r.owners()));
    if let Some(next) = r.next() {
        text = format!("{text};{}", indexes(next));
    }
    text
}

pub fn decode_ring(s: &str) -> Option<Ring> {
    let mut parts = s.split(';');
    let epoch = parts.next()?.parse().ok()?;
    let members: Vec<&str> = parts.next()?.split(',').collect();
    let owners = |text: &str| {
        text.split(',')
            .map(|i| members.get(i.parse::<usize>().ok()?).map(|m| m.to_string()))
            .collect::<Option<Vec<_>>>()
    };
    let current = owners(parts.next()?)?;
    let next = match parts.next() {
        Some(text) => Some(owners(text)?),
        None => None,
    };
    Ring::from_parts(epoch, current, next)
}

/// `holds_data`: "1" once this node has stored a row of any table (its own
/// or a hint), set before the first write is acknowledged. A join into a
/// cluster where any member holds data must move partitions with handoff;
/// the figures under `stat.` lag by a second and cannot decide that.
pub const KEY_HOLDS_DATA: &str = "holds_data";

/// The figures a node reports about itself under `stat.NAME`, for
/// `/v1/cluster` and `atoll cluster status`; no decision rests on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    /// Rows of every table on this node.
    Rows,
    /// Memory held by the rows.
    MemoryBytes,
    /// Rows held for down primaries.
    HintRows,
    /// Rows per partition (all tables), comma-separated.
    PartitionRows,
    /// The handoff transfers under way, as JSON.
    Handoffs,
    /// The primaries this node holds hints for, comma-separated.
    HintsFor,
}

impl Stat {
    pub fn name(self) -> &'static str {
        match self {
            Stat::Rows => "rows",
            Stat::MemoryBytes => "memory_bytes",
            Stat::HintRows => "hint_rows",
            Stat::PartitionRows => "partition_rows",
            Stat::Handoffs => "handoffs",
            Stat::HintsFor => "hints_for",
        }
    }
}

/// A comma-separated list of numbers, as `Stat::PartitionRows` holds.
pub fn parse_counts(text: &str) -> Vec<u64> {
    text.split(',').map(|r| r.parse().unwrap_or(0)).collect()
}

/// `cutoff.TABLE`: `CUTOFF,SET_AT` (µs since the epoch both): events of
/// TABLE before CUTOFF were evicted for memory on this node, so every node
/// drops them too and answers alike. `SET_AT` lets a node ignore a cut-off
/// set before it dropped (and re-created) the table. Empty: withdrawn.
pub const CUTOFF_PREFIX: &str = "cutoff.";

pub fn format_cutoff(cut: i64, at: i64) -> String {
    format!("{cut},{at}")
}

/// A `missed.NODE/PARTITION` entry (prefix removed) and its time.
pub fn parse_missed(key: &str, value: &str) -> Option<((String, u32), i64)> {
    let (node, p) = key.rsplit_once('/')?;
    Some(((node.to_string(), p.parse().ok()?), value.parse().ok()?))
}

pub fn parse_cutoff(value: &str) -> Option<(i64, i64)> {
    let (cut, at) = value.split_once(',')?;
    Some((cut.parse().ok()?, at.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoffs_read_back() {
        assert_eq!(parse_cutoff(&format_cutoff(12, 34)), Some((12, 34)));
        assert_eq!(parse_cutoff(""), None);
        assert_eq!(parse_cutoff("x,1"), None);
    }
}
