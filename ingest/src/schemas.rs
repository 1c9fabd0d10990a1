//! Table schemas and settings are cluster-wide. Every node gossips a digest
//! of each table it knows; a node that sees a digest it has not absorbed
//! asks that node for the table's Arrow schema (Flight `get_schema`) and
//! takes it in by the same rule as a replica write (new columns added,
//! conflicts reconciled), and the newer settings. So a table or a column
//! first written through other nodes becomes known everywhere within a few
//! gossip rounds, also on nodes that hold none of its rows.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::Schema;
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::{FlightDescriptor, SchemaAsIpc, SchemaResult};
use atoll_store::{Store, Table, TableSettings};
use xxhash_rust::xxh3::xxh3_64;

use crate::replicate::Replicator;

const SETTINGS_KEY: &str = "atoll.settings";
const VERSION_KEY: &str = "atoll.settings_version";

/// What a table is, as far as other nodes need to agree on it.
pub fn digest(table: &Table) -> String {
    let text = format!(
        "{:?}|{:?}|{}",
        table.schema().columns(),
        table.settings(),
        table.settings_version()
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
    ]);
    table
        .schema()
        .arrow()
        .as_ref()
        .clone()
        .with_metadata(metadata)
}

/// The answer to a Flight `get_schema` for a table.
pub fn schema_result(table: &Table) -> Result<SchemaResult, String> {
    let schema = arrow_schema(table);
    SchemaAsIpc::new(&schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| e.to_string())
}

/// Takes in a table's schema from another node.
pub fn absorb(store: &Store, name: &str, schema: &Schema) -> Result<(), String> {
    let table = store.get_or_create(name).map_err(|e| e.to_string())?;
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
        table
            .set_settings(settings, version)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
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
        // (node, table) -> the digest last absorbed from that node.
        let mut absorbed: HashMap<(String, String), String> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tick.tick() => sync(&replicator, &store, &mut absorbed).await,
                _ = stop.changed() => return,
            }
        }
    });
}

async fn sync(
    replicator: &Replicator,
    store: &Store,
    absorbed: &mut HashMap<(String, String), String>,
) {
    let membership = &replicator.membership;
    let mine: BTreeMap<String, String> = store
        .tables()
        .iter()
        .map(|t| (t.name().to_string(), digest(t)))
        .collect();
    membership.set_schemas(&mine).await;
    let me = membership.node_name();
    for m in membership.members().await {
        let Some(addr) = m.flight_addr.as_deref().filter(|_| m.up && m.name != me) else {
            continue;
        };
        for (table, theirs) in &m.schemas {
            let key = (m.name.clone(), table.clone());
            if mine.get(table) == Some(theirs) || absorbed.get(&key) == Some(theirs) {
                continue;
            }
            let outcome = match replicator.table_schema(addr, table).await {
                Ok(schema) => absorb(store, table, &schema),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => {
                    absorbed.insert(key, theirs.clone());
                }
                Err(e) => {
                    tracing::warn!(node = %m.name, table, error = %e, "cannot absorb a table schema")
                }
            }
        }
    }
}
