//! The receiving side of replication: storing a partition's batch on this
//! node, as its own data or as a hint for a down primary, at most once per
//! write id, in the write-ahead log first when there is one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow_flight::FlightData;
#[cfg(test)]
use atoll_store::wal::FsyncPolicy;
use atoll_store::wal::{Record, Wal};
use atoll_store::{Store, StoredBatch, Table};
use futures::{FutureExt, StreamExt, TryStreamExt};
use parking_lot::Mutex;

use crate::error::ClusterError;
use crate::membership::Membership;
use crate::messages::{PutCommand, PutDescriptor, PutFailures, PutMany};

/// How long a write waits for eviction to make room before it is stored
/// anyway (an acknowledged write must not fail for lack of memory). Well
/// under the coordinator's timeout: a held replica write that answered late
/// would fail the request it was holding back.
const ROOM_WAIT: Duration = Duration::from_secs(3);
const _: () = assert!(ROOM_WAIT.as_secs() * 3 <= crate::client::CALL_TIMEOUT.as_secs());

/// Writes held by this node for down primaries, kept apart from its own
/// data (they are not this node's to serve) until handed off. Their stores
/// are made like the node's own (sealing, packing, retention), and the
/// node's sealer and memory evictor treat them as data like its own.
pub struct Hints {
    by_primary: Mutex<BTreeMap<String, Arc<Store>>>,
    config: atoll_store::StoreConfig,
}

impl Hints {
    pub fn new(config: atoll_store::StoreConfig) -> Hints {
        Hints {
            by_primary: Mutex::default(),
            config,
        }
    }

    pub fn store_for(&self, primary: &str) -> Arc<Store> {
        self.by_primary
            .lock()
            .entry(primary.to_string())
            .or_insert_with(|| Arc::new(Store::new(self.config.clone())))
            .clone()
    }

    /// The hint store of every primary.
    pub fn stores(&self) -> Vec<(String, Arc<Store>)> {
        self.by_primary
            .lock()
            .iter()
            .map(|(p, s)| (p.clone(), s.clone()))
            .collect()
    }

    /// Rows held as hints, per primary.
    pub fn rows(&self) -> BTreeMap<String, u64> {
        self.per_primary(|t| t.rows())
    }

    /// Memory the hints' batches hold, per primary.
    pub fn memory_bytes(&self) -> BTreeMap<String, u64> {
        self.per_primary(|t| t.memory_bytes())
    }

    fn per_primary(&self, figure: impl Fn(&Table) -> u64) -> BTreeMap<String, u64> {
        self.by_primary
            .lock()
            .iter()
            .map(|(p, s)| (p.clone(), s.tables().iter().map(|t| figure(t)).sum()))
            .collect()
    }
}

/// This node as a replica.
pub struct LocalReplica {
    pub store: Arc<Store>,
    pub hints: Arc<Hints>,
    /// The write-ahead log, with `--data-dir`.
    pub wal: Option<Arc<Wal>>,
    /// Where this node says that it holds data, once it is gossiping.
    membership: std::sync::OnceLock<Arc<Membership>>,
    /// Live subscriptions, offered every write stored as this node's own.
    pub taps: Arc<crate::live::LiveTaps>,
}

impl LocalReplica {
    pub fn new(store: Arc<Store>, hints: Arc<Hints>, wal: Option<Arc<Wal>>) -> LocalReplica {
        LocalReplica {
            store,
            hints,
            wal,
            membership: std::sync::OnceLock::new(),
            taps: Default::default(),
        }
    }

    /// The same replica writing to `wal` from now on (once its records
    /// were recovered into the stores).
    pub fn with_wal(self, wal: Arc<Wal>) -> LocalReplica {
        LocalReplica {
            wal: Some(wal),
            ..self
        }
    }

    /// Starts telling the cluster whether this node holds data: at once
    /// if it recovered some, else with its first stored write.
    pub async fn publish_to(&self, membership: Arc<Membership>) {
        let recovered = self.store.tables().iter().any(|t| t.rows() > 0)
            || self.hints.rows().values().any(|r| *r > 0);
        if recovered {
            membership.mark_holds_data().await;
        }
        let _ = self.membership.set(membership);
    }

    /// Before a write is acknowledged: a node joining from now on must get
    /// this node's partitions by handoff.
    async fn mark_holds_data(&self) {
        if let Some(m) = self.membership.get() {
            m.mark_holds_data().await;
        }
    }

    /// Gossips another coordinator's report of missed writes as this
    /// node's own (`ACTION_MISSED`); answers how many pairs it names.
    pub async fn relay_missed(&self, report: crate::messages::MissedReport) -> usize {
        let Some(m) = self.membership.get() else {
            return 0;
        };
        let missed: std::collections::BTreeSet<(String, u32)> = report.missed.into_iter().collect();
        m.report_missed(&missed).await;
        missed.len()
    }

    /// Stores each part of `batch` (the parts' rows, in order); answers
    /// the parts that failed, with why.
    pub async fn write_many(
        &self,
        many: &PutMany,
        batch: &RecordBatch,
    ) -> Result<PutFailures, ClusterError> {
        // The counts come from a peer: checked, so that a wrong one is an
        // error and not an overflow or a slice past the batch's end.
        let rows = many
            .parts
            .iter()
            .try_fold(0usize, |sum, p| sum.checked_add(p.rows));
        if rows != Some(batch.num_rows()) {
            let named = rows.map_or("more than 2^64".to_string(), |r| r.to_string());
            return Err(ClusterError::BadMessage(format!(
                "the parts name {named} rows, the stream holds {}",
                batch.num_rows()
            )));
        }
        let mut offset = 0;
        let parts = many.parts.iter().map(|part| {
            let slice = batch.slice(offset, part.rows);
            offset += part.rows;
            (part.partition, slice, part.hint_for.as_deref())
        });
        Ok(self.write_parts(&many.table, parts.collect()).await)
    }

    /// Stores several partitions' batches of one table, each as `write`
    /// does, all at once so that they share the log's fsyncs; answers the
    /// partitions that failed, with why.
    pub async fn write_parts(
        &self,
        table: &str,
        parts: Vec<(u32, RecordBatch, Option<&str>)>,
    ) -> PutFailures {
        let writes = parts.into_iter().map(|(partition, batch, hint_for)| {
            let cmd = PutCommand {
                table: table.to_string(),
                partition,
            };
            async move {
                let offered = batch.clone();
                match self.write(&cmd, batch, hint_for).await {
                    Ok(rows) => {
                        self.offer_live(&cmd, &offered, rows, hint_for);
                        None
                    }
                    Err(e) => Some((partition, e.to_string())),
                }
            }
        });
        let failed = futures::future::join_all(writes).await;
        failed.into_iter().flatten().collect()
    }

    /// Stores one partition's batch, as this node's own rows or as a hint
    /// for `hint_for`; answers once it is in the log (with a data dir).
    /// Rows of a write the partition already holds (a retried request, a
    /// hint handed back twice) are not stored again. Returns the rows
    /// stored.
    pub async fn write(
        &self,
        cmd: &PutCommand,
        batch: RecordBatch,
        hint_for: Option<&str>,
    ) -> Result<usize, ClusterError> {
        if !self.store.wait_for_room(ROOM_WAIT).await {
            tracing::warn!("memory still over budget after waiting; storing anyway");
        }
        // Measured once: the stored batch keeps the measure.
        let stored = stored(batch.clone())?;
        self.store.added_memory(stored.plain_bytes() as u64);
        let target = self.target(hint_for);
        self.mark_holds_data().await;
        let Some(wal) = &self.wal else {
            return append(&target, &cmd.table, cmd.partition, stored);
        };
        let record = Record::Batch {
            table: cmd.table.clone(),
            partition: cmd.partition,
            hint_for: hint_for.map(str::to_string),
            batch,
        };
        let (lsn, rows) = wal
            .log(&record, || {
                append(&target, &cmd.table, cmd.partition, stored.clone())
            })
            .map_err(ClusterError::Wal)?;
        let rows = rows?;
        wal.wait(lsn).await.map_err(ClusterError::Wal)?;
        Ok(rows)
    }

    /// Rows a coordinator's write newly stored as this node's own go to its
    /// live subscriptions: not a write it already held, not a hint, and not
    /// what handoff or catch-up brings (those events were new elsewhere
    /// first, where they were followed).
    fn offer_live(
        &self,
        cmd: &PutCommand,
        batch: &RecordBatch,
        rows: usize,
        hint_for: Option<&str>,
    ) {
        if rows > 0 && hint_for.is_none() {
            self.taps.offer(&cmd.table, cmd.partition, batch);
        }
    }

    /// This node's own store, or the one of hints held for `hint_for`.
    fn target(&self, hint_for: Option<&str>) -> Arc<Store> {
        match hint_for {
            Some(primary) => self.hints.store_for(primary),
            None => self.store.clone(),
        }
    }

    /// Applies a record read back from the log or a snapshot.
    pub fn recover(&self, record: Record) {
        let outcome = match record {
            Record::Batch {
                table,
                partition,
                hint_for,
                batch,
            } => stored(batch)
                .and_then(|b| append(&self.target(hint_for.as_deref()), &table, partition, b))
                .map(|_| ()),
            Record::Drop { table, micros } => {
                self.drop_unlogged(&table, micros);
                Ok(())
            }
            Record::Settings {
                table,
                settings,
                version,
            } => self.recover_settings(&table, &settings, version),
        };
        if let Err(e) = outcome {
            tracing::error!(error = %e, "a logged record could not be applied; it is skipped");
        }
    }

    fn recover_settings(
        &self,
        table: &str,
        settings: &str,
        version: i64,
    ) -> Result<(), ClusterError> {
        let settings = serde_json::from_str(settings)
            .map_err(|e| ClusterError::BadMessage(format!("logged settings: {e}")))?;
        let t = self.store.get_or_create(table)?;
        t.set_settings(settings, version)?;
        Ok(())
    }

    /// Logs a table's settings as they now are (settings learnt from a
    /// peer by gossip), so that they survive a restart; a failure is
    /// logged (the peer still has them).
    pub fn log_settings(&self, table: &Table) {
        if let Err(e) = self.log_record(&settings_record(table)) {
            tracing::error!(error = %e, "cannot log table settings");
        }
    }

    /// Logs a table's settings and waits until the log holds them, as a
    /// write waits: a table change is acknowledged only once durable.
    pub async fn log_settings_durably(&self, table: &Table) -> Result<(), ClusterError> {
        let lsn = self.log_record(&settings_record(table))?;
        self.durable(lsn).await
    }

    fn log_record(&self, record: &Record) -> Result<Option<u64>, ClusterError> {
        match &self.wal {
            Some(wal) => Ok(Some(wal.log(record, || ()).map_err(ClusterError::Wal)?.0)),
            None => Ok(None),
        }
    }

    async fn durable(&self, lsn: Option<u64>) -> Result<(), ClusterError> {
        match (&self.wal, lsn) {
            (Some(wal), Some(lsn)) => wal.wait(lsn).await.map_err(ClusterError::Wal),
            _ => Ok(()),
        }
    }

    /// Drops a table here, its hints for other nodes too (handing them
    /// back would bring it back there), and logs the drop; false when this
    /// node had no such table.
    pub fn drop_table(&self, table: &str, micros: i64) -> bool {
        let found = self.drop_unlogged(table, micros);
        if found {
            self.log_drop(table, micros);
        }
        found
    }

    fn drop_unlogged(&self, table: &str, micros: i64) -> bool {
        for (_, hints) in self.hints.stores() {
            hints.drop_table(table, Some(micros));
        }
        self.store.drop_table(table, Some(micros))
    }

    /// Logs a table drop.
    fn log_drop(&self, table: &str, micros: i64) {
        if let Err(e) = self.log_record(&drop_record(table, micros)) {
            tracing::error!(error = %e, "cannot log a table drop");
        }
    }

    /// Drops a table here as [`LocalReplica::drop_table`] does, and waits
    /// until the log holds the drop (a `DELETE` is answered once durable).
    pub async fn drop_table_durably(&self, table: &str, micros: i64) -> Result<bool, ClusterError> {
        self.check_writable()?;
        if self.store.table(table).is_none() {
            return Ok(self.drop_unlogged(table, micros));
        }
        // Logged first: a log that refuses it leaves the table as it was.
        let lsn = self.log_record(&drop_record(table, micros))?;
        let found = self.drop_unlogged(table, micros);
        self.durable(lsn).await?;
        Ok(found)
    }

    /// Refuses a change while the write-ahead log fails (before anything
    /// is changed in memory).
    pub fn check_writable(&self) -> Result<(), ClusterError> {
        match self.wal.as_ref().and_then(|w| w.failure()) {
            Some(why) => Err(ClusterError::Wal(std::io::Error::other(why))),
            None => Ok(()),
        }
    }

    /// Every table (its settings, then its batches) and every hint, as a
    /// snapshot holds them.
    pub fn capture(&self) -> std::io::Result<Vec<Record>> {
        let mut out = Vec::new();
        capture_store(&self.store, None, &mut out)?;
        for (primary, store) in self.hints.stores() {
            capture_store(&store, Some(&primary), &mut out)?;
        }
        Ok(out)
    }
}

fn drop_record(table: &str, micros: i64) -> Record {
    Record::Drop {
        table: table.to_string(),
        micros,
    }
}

fn settings_record(table: &Table) -> Record {
    Record::Settings {
        table: table.name().to_string(),
        settings: serde_json::to_string(&table.settings()).unwrap_or_else(|_| "{}".into()),
        version: table.settings_version(),
    }
}

fn capture_store(
    store: &Store,
    hint_for: Option<&str>,
    out: &mut Vec<Record>,
) -> std::io::Result<()> {
    for table in store.tables() {
        if hint_for.is_none() {
            out.push(settings_record(&table));
        }
        for partition in 0..table.partitions() {
            let batches = table
                .partition_batches(partition)
                .map_err(std::io::Error::other)?;
            out.extend(batches.into_iter().map(|batch| Record::Batch {
                table: table.name().to_string(),
                partition,
                hint_for: hint_for.map(str::to_string),
                batch,
            }));
        }
    }
    Ok(())
}

fn stored(batch: RecordBatch) -> Result<StoredBatch, ClusterError> {
    Ok(StoredBatch::new(batch)?)
}

fn append(
    store: &Store,
    table: &str,
    partition: u32,
    batch: StoredBatch,
) -> Result<usize, ClusterError> {
    if partition >= store.partitions() {
        return Err(ClusterError::BadPartition {
            partition,
            partitions: store.partitions(),
        });
    }
    let t = store.get_or_create(table)?;
    t.absorb_schema(&batch.schema());
    Ok(t.append(partition, batch)?)
}

/// Reads a `do_put` stream: its command and its batches.
pub async fn read_put(
    stream: impl futures::Stream<Item = Result<FlightData, tonic::Status>> + Send + Unpin + 'static,
) -> Result<(PutDescriptor, Vec<RecordBatch>), tonic::Status> {
    let mut stream = stream.peekable();
    let first = std::pin::Pin::new(&mut stream)
        .peek()
        .await
        .ok_or_else(|| tonic::Status::invalid_argument("empty do_put"))?
        .as_ref()
        .map_err(|s| s.clone())?;
    let descriptor = first
        .flight_descriptor
        .as_ref()
        .and_then(|d| serde_json::from_slice::<PutDescriptor>(&d.cmd).ok())
        .ok_or_else(|| {
            tonic::Status::invalid_argument(
                "do_put needs a descriptor with table and partition (or parts)",
            )
        })?;
    let decoding = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
        stream.map_err(|s| arrow_flight::error::FlightError::Tonic(Box::new(s))),
    )
    .try_collect::<Vec<_>>();
    // Arrow's IPC decoder panics on some damaged buffer layouts (found by
    // `cluster/tests/fuzz.rs`): a damaged write is refused, not a panic.
    let batches = std::panic::AssertUnwindSafe(decoding)
        .catch_unwind()
        .await
        .map_err(|_| {
            tonic::Status::invalid_argument("damaged Arrow data: its buffers do not fit its layout")
        })?
        .map_err(|e| tonic::Status::invalid_argument(format!("bad Arrow data: {e}")))?;
    Ok((descriptor, batches))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::PutPart;
    use arrow::array::TimestampMicrosecondArray;
    use arrow::datatypes::{Field, Schema};

    fn batch(id: u64) -> RecordBatch {
        let schema = Schema::new(vec![Field::new(
            "time",
            atoll_store::ColumnType::Timestamp.data_type(),
            false,
        )]);
        let time = TimestampMicrosecondArray::from(vec![1, 2]).with_timezone("UTC");
        let b = RecordBatch::try_new(Arc::new(schema), vec![Arc::new(time)]).unwrap();
        atoll_store::writes::with_write_id(&b, id).unwrap()
    }

    fn cmd(partition: u32) -> PutCommand {
        PutCommand {
            table: "t".into(),
            partition,
        }
    }

    fn replica(wal: Option<Arc<Wal>>) -> LocalReplica {
        let store = Arc::new(Store::new(Default::default()));
        LocalReplica::new(store, Arc::new(Hints::new(Default::default())), wal)
    }

    #[tokio::test]
    async fn a_write_is_stored_once_per_partition() {
        let replica = replica(None);
        assert_eq!(replica.write(&cmd(1), batch(7), None).await.unwrap(), 2);
        assert_eq!(replica.write(&cmd(1), batch(7), None).await.unwrap(), 0);
        assert_eq!(replica.write(&cmd(2), batch(7), None).await.unwrap(), 2);
        assert_eq!(replica.write(&cmd(1), batch(8), None).await.unwrap(), 2);
        let t = replica.store.table("t").unwrap();
        assert_eq!(t.partition_rows()[1], 4);
        assert_eq!(t.write_ids(1).unwrap(), vec![7, 8]);
        replica
            .write(&cmd(1), batch(7), Some("other"))
            .await
            .unwrap();
        assert_eq!(
            replica.hints.rows()["other"],
            2,
            "a hint is not the same write as own data"
        );
    }

    #[tokio::test]
    async fn one_put_stores_each_part_where_it_names() {
        let replica = replica(None);
        let parts = [batch(7), batch(8), batch(9)];
        let rows = arrow::compute::concat_batches(&parts[0].schema(), &parts).unwrap();
        let part = |partition, hint_for: Option<&str>| PutPart {
            partition,
            rows: 2,
            hint_for: hint_for.map(str::to_string),
        };
        let many = PutMany {
            table: "t".into(),
            parts: vec![part(1, None), part(4, None), part(1, Some("n2"))],
        };
        let descriptor: PutDescriptor =
            serde_json::from_slice(&serde_json::to_vec(&many).unwrap()).unwrap();
        assert!(matches!(descriptor, PutDescriptor::Many(_)));
        assert_eq!(
            replica.write_many(&many, &rows).await.unwrap(),
            PutFailures::new()
        );
        let t = replica.store.table("t").unwrap();
        assert_eq!(t.write_ids(1).unwrap(), vec![7]);
        assert_eq!(t.write_ids(4).unwrap(), vec![8]);
        assert_eq!(replica.hints.rows()["n2"], 2, "the third part is a hint");
        let short = PutMany {
            parts: vec![part(2, None)],
            ..many
        };
        let err = replica.write_many(&short, &rows).await.unwrap_err();
        let err = err.to_string();
        assert!(err.contains("2 rows") && err.contains("6"), "{err}");
        // Counts whose sum overflows (a wrapped sum could match the rows
        // and slice past the batch) are refused, not a panic.
        let mut huge = part(2, None);
        huge.rows = usize::MAX;
        let overflowing = PutMany {
            parts: vec![part(2, None), huge],
            ..short
        };
        let err = replica.write_many(&overflowing, &rows).await.unwrap_err();
        assert!(err.to_string().contains("more than 2^64"), "{err}");
        let one: PutDescriptor =
            serde_json::from_slice(&serde_json::to_vec(&cmd(3)).unwrap()).unwrap();
        assert!(matches!(
            one,
            PutDescriptor::One(PutCommand { partition: 3, .. })
        ));
    }

    #[tokio::test]
    async fn what_was_logged_comes_back_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let open = |r: &mut Option<LocalReplica>| {
            let fresh = replica(None);
            let (wal, _) =
                Wal::open(dir.path(), FsyncPolicy::Always, |rec| fresh.recover(rec)).unwrap();
            *r = Some(LocalReplica {
                wal: Some(wal),
                ..fresh
            });
        };
        let mut r = None;
        open(&mut r);
        let first = r.as_ref().unwrap();
        first.write(&cmd(1), batch(1), None).await.unwrap();
        first.write(&cmd(3), batch(2), Some("n2")).await.unwrap();
        let t = first.store.table("t").unwrap();
        let retention = atoll_store::TableSettings {
            retention: Some("7d".into()),
            ..Default::default()
        };
        t.set_settings(retention.clone(), 5).unwrap();
        first.log_settings(&t);
        first.store.get_or_create("gone").unwrap();
        assert!(first.drop_table("gone", 9));
        first.write(&cmd(2), batch(3), None).await.unwrap();
        let wal = first.wal.clone().unwrap();
        wal.checkpoint(|| first.capture()).unwrap();
        first.write(&cmd(2), batch(4), None).await.unwrap();
        drop(r.take());
        drop(wal);
        open(&mut r);
        let again = r.as_ref().unwrap();
        let t = again.store.table("t").unwrap();
        assert_eq!(t.rows(), 6, "writes 1, 3 and 4");
        assert_eq!(t.write_ids(2).unwrap(), vec![3, 4]);
        assert_eq!((t.settings(), t.settings_version()), (retention, 5));
        assert_eq!(again.hints.rows()["n2"], 2);
        assert!(again.store.table("gone").is_none());
        assert_eq!(
            again.write(&cmd(2), batch(4), None).await.unwrap(),
            0,
            "still known"
        );
    }
}
