//! Table schemas and settings are cluster-wide. Every node gossips a digest
//! of each table it knows; a node that sees a digest it has not absorbed
//! asks that node for the table's Arrow schema (Flight `get_schema`) and
//! takes it in by the same rule as a replica write (new columns added,
//! conflicts reconciled), and the newer settings. So a table or a column
//! first written through other nodes becomes known everywhere within a few
//! gossip rounds, also on nodes that hold none of its rows.
//!
//! Drops travel the same way: each node gossips when it dropped a table,
//! and a node that missed the drop (unreachable when it was forwarded)
//! drops its own copy if it was created before it heard of the drop; and
//! a copy created before a drop never brings the table back elsewhere.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::Schema;
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::{FlightDescriptor, SchemaAsIpc, SchemaResult};
use atoll_store::{Store, Table, TableSettings};
use xxhash_rust::xxh3::xxh3_64;

use crate::error::ClusterError;
use crate::membership::Member;
use crate::replica::LocalReplica;
use crate::replicate::Replicator;

const SETTINGS_KEY: &str = "atoll.settings";
const VERSION_KEY: &str = "atoll.settings_version";
const CREATED_KEY: &str = "atoll.created";

/// What a table is on this node: its columns, settings, and incarnation
/// (so that a table dropped and created again differs from the old one).
pub fn digest(table: &Table) -> String {
    let text = format!(
        "{:?}|{:?}|{}|{}",
        table.schema().columns(),
        table.settings(),
        table.settings_version(),
        table.created()
    );
    format!("{:016x}", xxh3_64(text.as_bytes()))
}

/// The table's Arrow schema, with its settings in the metadata.
pub fn arrow_schema(table: &Table) -> Schema {
    let settings = serde_json::to_string(&table.settings()).unwrap_or_default();
    let metadata = HashMap::from([
        (SETTINGS_KEY.to_string(), settings),
        (
            VERSION_KEY.to_string(),
            table.settings_version().to_string(),
        ),
        (CREATED_KEY.to_string(), table.created().to_string()),
    ]);
    table
        .schema()
        .arrow()
        .as_ref()
        .clone()
        .with_metadata(metadata)
}

/// The answer to a Flight `get_schema` for a table.
pub fn schema_result(table: &Table) -> Result<SchemaResult, ClusterError> {
    let schema = arrow_schema(table);
    SchemaAsIpc::new(&schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| ClusterError::Internal(e.to_string()))
}

/// Takes in a table's schema from another node. A table dropped here is
/// not brought back by a node whose copy was created before the drop (it
/// has not applied the drop yet): wall clocks are compared, so a table
/// created again within the clocks' skew of its drop is learnt here only
/// from the writes this node takes, not by gossip. True when the settings
/// changed.
pub fn absorb(store: &Store, name: &str, schema: &Schema) -> Result<bool, ClusterError> {
    let created = schema
        .metadata()
        .get(CREATED_KEY)
        .and_then(|c| c.parse::<i64>().ok());
    let dropped = store.dropped_at(name).map(|d| d.micros);
    if store.table(name).is_none()
        && let Some(dropped) = dropped
        && created.is_none_or(|c| c <= dropped)
    {
        return Ok(false);
    }
    let table = store.get_or_create(name)?;
    table.absorb_schema(schema);
    let settings = schema
        .metadata()
        .get(SETTINGS_KEY)
        .and_then(|s| serde_json::from_str::<TableSettings>(s).ok());
    let version = schema
        .metadata()
        .get(VERSION_KEY)
        .and_then(|v| v.parse::<i64>().ok());
    if let (Some(settings), Some(version)) = (settings, version)
        && version > table.settings_version()
    {
        return Ok(table.set_settings(settings, version)?);
    }
    Ok(false)
}

/// The Flight descriptor naming a table.
pub fn descriptor(table: &str) -> FlightDescriptor {
    FlightDescriptor::new_path(vec!["table".to_string(), table.to_string()])
}

/// Gossips this node's digests and absorbs what others know, every tick.
pub fn spawn(
    replicator: Arc<Replicator>,
    store: Arc<Store>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut seen = Seen::default();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tick.tick() => sync(&replicator, &store, &mut seen).await,
                _ = stop.changed() => return,
            }
        }
    });
}

/// What the sync knows of peers' digests.
#[derive(Default)]
struct Seen {
    /// (node, table) -> the digest last absorbed from that node.
    absorbed: HashMap<(String, String), String>,
    /// (node, table, drop time) -> when this node first heard of that
    /// drop (µs since the epoch, by this node's clock).
    tombstones: HashMap<(String, String, i64), i64>,
}

/// Drops made while this node was unreachable. A drop is named by the
/// time its entry node took it; one this node applied already (it was
/// forwarded here) is skipped, so a table created here after it stays. Of
/// a drop it missed, a table that existed before this node first heard of
/// the drop is the dropped one, and goes too: only this node's clock is
/// compared, so clock skew between nodes cannot drop a newer table.
fn apply_drops(local: &LocalReplica, members: &[Member], seen: &mut Seen) {
    let store = &local.store;
    let now = atoll_store::now_micros();
    for m in members {
        for (table, when) in &m.dropped {
            let key = (m.name.clone(), table.clone(), *when);
            let heard = *seen.tombstones.entry(key).or_insert(now);
            // Applied already (it was forwarded here), or a later drop was.
            if store.dropped_at(table).is_some_and(|d| d.micros >= *when) {
                continue;
            }
            if store.table(table).is_some_and(|t| t.created() < heard)
                && local.drop_table(table, *when)
            {
                tracing::info!(table, node = %m.name, "dropped a table another node dropped");
            }
        }
    }
}

async fn sync(replicator: &Replicator, store: &Store, seen: &mut Seen) {
    let membership = &replicator.membership;
    let mine: BTreeMap<String, String> = store
        .tables()
        .iter()
        .map(|t| (t.name().to_string(), digest(t)))
        .collect();
    membership.set_schemas(&mine).await;
    let dropped = store
        .dropped()
        .into_iter()
        .map(|(t, d)| (t, d.micros))
        .collect();
    membership.set_dropped(&dropped).await;
    let me = membership.node_name();
    let members = membership.members().await;
    apply_drops(&replicator.local, &members, seen);
    for m in members {
        let Some(addr) = m.flight_addr.as_deref().filter(|_| m.up && m.name != me) else {
            continue;
        };
        for (table, theirs) in &m.schemas {
            let key = (m.name.clone(), table.clone());
            if seen.absorbed.get(&key) == Some(theirs) {
                continue;
            }
            let outcome = match replicator.table_schema(addr, table).await {
                Ok(Some(schema)) => absorb(store, table, &schema).map(|settings_changed| {
                    if let (true, Some(t)) = (settings_changed, store.table(table)) {
                        replicator.local.log_settings(&t);
                    }
                }),
                // Dropped there since it gossiped the digest.
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => {
                    seen.absorbed.insert(key, theirs.clone());
                }
                Err(e) => {
                    tracing::warn!(node = %m.name, table, error = %e, "cannot absorb a table schema")
                }
            }
        }
    }
}
