//! The figures each node gossips about itself every second (rows, memory,
//! hints, rows per partition, transfers under way), for `/v1/cluster` and
//! `atoll cluster status`. No decision rests on them: they lag.

use std::sync::Arc;
use std::time::Duration;

use atoll_store::Store;

use crate::handoff::Handoff;
use crate::keys::Stat;
use crate::membership::Membership;
use crate::replica::Hints;

/// Rows per partition, all tables together.
pub fn partition_rows(store: &Store) -> Vec<u64> {
    let mut total = vec![0u64; store.partitions() as usize];
    for t in store.tables() {
        for (p, rows) in t.partition_rows().into_iter().enumerate() {
            total[p] += rows;
        }
    }
    total
}

/// What one partition of one table holds here, by write: how many writes,
/// and a digest of their sorted ids. Replicas that hold the same writes
/// show the same digest, whatever order the rows came in.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WriteDigest {
    pub writes: usize,
    pub rows: u64,
    pub digest: String,
}

/// The write digests of every non-empty partition of every table, by
/// table and partition (`GET /v1/cluster/writes`: the check that replicas
/// agree, where gossiped row counts could agree by chance).
pub fn write_digests(
    store: &Store,
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<u32, WriteDigest>> {
    use sha2::Digest;
    let mut out = std::collections::BTreeMap::new();
    for t in store.tables() {
        let rows = t.partition_rows();
        let mut held = std::collections::BTreeMap::new();
        for (p, &r) in rows.iter().enumerate() {
            let Ok(ids) = t.write_ids(p as u32) else {
                continue;
            };
            if r == 0 && ids.is_empty() {
                continue;
            }
            let mut hash = sha2::Sha256::new();
            for id in &ids {
                hash.update(id.to_le_bytes());
            }
            let digest = crate::call_auth::hex(&hash.finalize()[..12]);
            let writes = ids.len();
            held.insert(
                p as u32,
                WriteDigest {
                    writes,
                    rows: r,
                    digest,
                },
            );
        }
        out.insert(t.name().to_string(), held);
    }
    out
}

/// Gossips this node's figures every second.
pub fn spawn(
    membership: Arc<Membership>,
    store: Arc<Store>,
    hints: Arc<Hints>,
    handoff: Arc<Handoff>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let tables = store.tables();
                    let rows: u64 = tables.iter().map(|t| t.rows()).sum();
                    // Hints are data this node holds: they count in its memory.
                    let memory: u64 = tables.iter().map(|t| t.memory_bytes()).sum::<u64>()
                        + hints.memory_bytes().values().sum::<u64>();
                    let hint_rows: u64 = hints.rows().values().sum();
                    membership.set_stat(Stat::Rows, rows).await;
                    membership.set_stat(Stat::MemoryBytes, memory).await;
                    membership.set_stat(Stat::HintRows, hint_rows).await;
                    let per_partition = partition_rows(&store)
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(",");
                    membership.set_stat(Stat::PartitionRows, per_partition).await;
                    let transfers = serde_json::to_string(&handoff.transfers()).unwrap_or_default();
                    membership.set_stat(Stat::Handoffs, transfers).await;
                }
                _ = stop.changed() => return,
            }
        }
    });
}
