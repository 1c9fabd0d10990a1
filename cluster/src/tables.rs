//! Table changes are cluster-wide: the entry node applies a change (new
//! settings, a drop), then sends it to every other up node as a Flight
//! action with the entry node's time as its version, so that every node
//! orders the changes alike. A node that was down catches up through the
//! gossiped schema digests and drop times (`schemas`).

use std::collections::BTreeMap;

use atoll_store::TableSettings;

use crate::error::ClusterError;
use crate::messages::{
    ACTION_TABLE_CHANGE, ACTION_TABLE_ROWS, Change, ChangeApplied, RowCount, TableChange, TableRows,
};
use crate::replica::LocalReplica;
use crate::replicate::Replicator;

/// Applies a change on this node; true when it changed something (a drop
/// of a table this node never had changes nothing).
/// Answers once the change is in the write-ahead log (when there is one),
/// like a write: a change this node cannot log is an error (503).
pub async fn apply(local: &LocalReplica, change: &TableChange) -> Result<bool, ClusterError> {
    match &change.change {
        Change::Settings(settings) => {
            local.check_writable()?;
            let t = local.store.get_or_create(&change.table)?;
            t.check_settings(settings)?;
            if t.set_settings(settings.clone(), change.version)? {
                local.log_settings_durably(&t).await?;
            }
            Ok(true)
        }
        Change::Drop => {
            local
                .drop_table_durably(&change.table, change.version)
                .await
        }
    }
}

/// A table's new settings, applied here and then on every other up node;
/// answers which nodes applied them.
pub async fn put_settings(
    replicator: &Replicator,
    table: &str,
    settings: TableSettings,
    version: i64,
) -> Result<BTreeMap<String, bool>, ClusterError> {
    let change = TableChange {
        table: table.to_string(),
        version,
        change: Change::Settings(settings),
    };
    apply(&replicator.local, &change).await?;
    Ok(forward(replicator, &change).await)
}

/// Drops a table here (durably) and on every other up node; answers
/// whether it was here, and which other nodes had it.
pub async fn drop_table(
    replicator: &Replicator,
    table: &str,
    version: i64,
) -> Result<(bool, BTreeMap<String, bool>), ClusterError> {
    let change = TableChange {
        table: table.to_string(),
        version,
        change: Change::Drop,
    };
    let here = replicator.local.drop_table_durably(table, version).await?;
    Ok((here, forward(replicator, &change).await))
}

/// Sends a change to every other up node; answers the outcome of each
/// (true: applied there). A node that misses it learns it by gossip.
async fn forward(replicator: &Replicator, change: &TableChange) -> BTreeMap<String, bool> {
    let body = match crate::messages::encode(change) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a table change");
            return BTreeMap::new();
        }
    };
    let peers = other_up_nodes(replicator).await;
    let sends = peers.into_iter().map(|(name, addr)| {
        let body = body.clone();
        async move {
            let answer = replicator
                .peers
                .ask::<ChangeApplied>(&addr, ACTION_TABLE_CHANGE, body)
                .await;
            let applied = match answer {
                Ok(a) => a.applied,
                Err(e) => {
                    tracing::warn!(node = %name, error = %e, "table change not forwarded");
                    false
                }
            };
            (name, applied)
        }
    });
    futures::future::join_all(sends).await.into_iter().collect()
}

/// Rows of `table` held by the other up nodes (unreachable ones count 0).
pub async fn rows_elsewhere(replicator: &Replicator, table: &str) -> u64 {
    let request = TableRows {
        table: table.to_string(),
    };
    let body = crate::messages::encode(&request).unwrap_or_default();
    let mut rows = 0;
    for (_, addr) in other_up_nodes(replicator).await {
        if let Ok(c) = replicator
            .peers
            .ask::<RowCount>(&addr, ACTION_TABLE_ROWS, body.clone())
            .await
        {
            rows += c.rows;
        }
    }
    rows
}

/// The answer to `ACTION_TABLE_ROWS` on this node.
pub fn rows_here(local: &LocalReplica, request: &TableRows) -> RowCount {
    RowCount {
        rows: local.store.table(&request.table).map_or(0, |t| t.rows()),
    }
}

async fn other_up_nodes(replicator: &Replicator) -> Vec<(String, String)> {
    let me = replicator.membership.node_name().to_string();
    replicator
        .membership
        .members()
        .await
        .into_iter()
        .filter(|m| m.up && m.name != me)
        .filter_map(|m| Some((m.name, m.flight_addr?)))
        .collect()
}
