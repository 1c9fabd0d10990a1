//! The receiving side of replication: storing a partition's batch on this
//! node, as its own data or as a hint for a down primary, at most once per
//! idempotency key.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow_flight::FlightData;
use atoll_store::{Store, StoredBatch};
use futures::{StreamExt, TryStreamExt};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// How long a replica remembers the (idempotency key, table, partition)
/// batches it stored.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(600);

/// What a replica write names: its table and partition, and the request's
/// idempotency key if it had one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PutCommand {
    pub table: String,
    pub partition: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// Writes held by this node for down primaries, kept apart from its own
/// data (they are not this node's to serve) until handed off.
pub struct Hints {
    by_primary: Mutex<BTreeMap<String, Arc<Store>>>,
    partitions: u32,
}

impl Hints {
    pub fn new(partitions: u32) -> Hints {
        Hints {
            by_primary: Mutex::default(),
            partitions,
        }
    }

    pub fn store_for(&self, primary: &str) -> Arc<Store> {
        let partitions = self.partitions;
        self.by_primary
            .lock()
            .entry(primary.to_string())
            .or_insert_with(|| {
                Arc::new(Store::new(atoll_store::StoreConfig {
                    partitions,
                    ..Default::default()
                }))
            })
            .clone()
    }

    /// Rows held as hints, per primary.
    pub fn rows(&self) -> BTreeMap<String, u64> {
        self.by_primary
            .lock()
            .iter()
            .map(|(p, s)| (p.clone(), s.tables().iter().map(|t| t.rows()).sum()))
            .collect()
    }
}

type DedupKey = (String, String, u32, Option<String>);

/// This node as a replica.
pub struct LocalReplica {
    pub store: Arc<Store>,
    pub hints: Arc<Hints>,
    seen: Mutex<HashMap<DedupKey, Instant>>,
}

impl LocalReplica {
    pub fn new(store: Arc<Store>, hints: Arc<Hints>) -> LocalReplica {
        LocalReplica {
            store,
            hints,
            seen: Mutex::default(),
        }
    }

    /// Stores one partition's batch; a batch of a key already stored for
    /// this (table, partition) within the window is acknowledged again
    /// without storing it twice.
    pub fn write(
        &self,
        cmd: &PutCommand,
        batch: RecordBatch,
        hint_for: Option<&str>,
    ) -> Result<(), String> {
        let key = cmd.idempotency_key.as_ref().map(|k| {
            (
                k.clone(),
                cmd.table.clone(),
                cmd.partition,
                hint_for.map(str::to_string),
            )
        });
        if let Some(k) = &key {
            let mut seen = self.seen.lock();
            seen.retain(|_, at| at.elapsed() < IDEMPOTENCY_WINDOW);
            if seen.contains_key(k) {
                return Ok(());
            }
        }
        let target = match hint_for {
            Some(primary) => self.hints.store_for(primary),
            None => self.store.clone(),
        };
        append(&target, &cmd.table, cmd.partition, batch)?;
        if let Some(k) = key {
            self.seen.lock().insert(k, Instant::now());
        }
        Ok(())
    }
}

fn append(store: &Store, table: &str, partition: u32, batch: RecordBatch) -> Result<(), String> {
    if partition >= store.partitions() {
        return Err(format!(
            "partition {partition} is outside this node's ring of {}",
            store.partitions()
        ));
    }
    let t = store.get_or_create(table).map_err(|e| e.to_string())?;
    t.absorb_schema(&batch.schema());
    t.append(
        partition,
        StoredBatch::new(batch).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())
}

/// Reads a `do_put` stream: its command and its batches.
pub async fn read_put(
    stream: impl futures::Stream<Item = Result<FlightData, tonic::Status>> + Send + Unpin + 'static,
) -> Result<(PutCommand, Vec<RecordBatch>), tonic::Status> {
    let mut stream = stream.peekable();
    let first = std::pin::Pin::new(&mut stream)
        .peek()
        .await
        .ok_or_else(|| tonic::Status::invalid_argument("empty do_put"))?
        .as_ref()
        .map_err(|s| s.clone())?;
    let cmd = first
        .flight_descriptor
        .as_ref()
        .and_then(|d| serde_json::from_slice::<PutCommand>(&d.cmd).ok())
        .ok_or_else(|| {
            tonic::Status::invalid_argument("do_put needs a descriptor with table and partition")
        })?;
    let batches = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
        stream.map_err(|s| arrow_flight::error::FlightError::Tonic(Box::new(s))),
    )
    .try_collect::<Vec<_>>()
    .await
    .map_err(|e| tonic::Status::invalid_argument(format!("bad Arrow data: {e}")))?;
    Ok((cmd, batches))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::TimestampMicrosecondArray;
    use arrow::datatypes::{Field, Schema};

    fn batch() -> RecordBatch {
        let schema = Schema::new(vec![Field::new(
            "time",
            atoll_store::ColumnType::Timestamp.data_type(),
            false,
        )]);
        let time = TimestampMicrosecondArray::from(vec![1, 2]).with_timezone("UTC");
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(time)]).unwrap()
    }

    #[test]
    fn a_retried_key_is_stored_once_per_partition() {
        let store = Arc::new(Store::new(Default::default()));
        let replica = LocalReplica::new(store.clone(), Arc::new(Hints::new(64)));
        let cmd = |p, k: Option<&str>| PutCommand {
            table: "t".into(),
            partition: p,
            idempotency_key: k.map(Into::into),
        };
        replica.write(&cmd(1, Some("k")), batch(), None).unwrap();
        replica.write(&cmd(1, Some("k")), batch(), None).unwrap();
        replica.write(&cmd(2, Some("k")), batch(), None).unwrap();
        replica.write(&cmd(1, None), batch(), None).unwrap();
        replica.write(&cmd(1, None), batch(), None).unwrap();
        assert_eq!(
            store.table("t").unwrap().partition_rows()[1],
            2 + 4,
            "without a key every write lands"
        );
        assert_eq!(store.table("t").unwrap().partition_rows()[2], 2);
        replica
            .write(&cmd(1, Some("k")), batch(), Some("other"))
            .unwrap();
        assert_eq!(
            replica.hints.rows()["other"],
            2,
            "a hint is not the same write as own data"
        );
    }
}
