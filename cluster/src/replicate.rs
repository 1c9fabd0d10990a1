//! Sending each partition's batch to its replicas: itself directly, the
//! others over Arrow Flight `do_put`, one call per node carrying every
//! partition of the request that node replicates. The sends run
//! concurrently; an event counts as accepted only once W replicas hold it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use arrow_flight::encode::{DictionaryHandling, FlightDataEncoderBuilder};
use arrow_flight::{FlightData, FlightDescriptor};
use atoll_ring::{Ring, Target, write_targets};
use atoll_store::writes::with_write_id;
use futures::TryStreamExt;

use crate::client::PeerClient;
use crate::error::ClusterError;
use crate::membership::Membership;
use crate::messages::{
    ACTION_MISSED, MissedNoted, MissedReport, PutCommand, PutFailures, PutMany, PutPart,
};
use crate::replica::LocalReplica;

/// Replication settings and the connections to other nodes.
pub struct Replicator {
    pub membership: Arc<Membership>,
    pub local: Arc<LocalReplica>,
    /// Replicas per partition (capped by the number of nodes).
    pub n: usize,
    /// Acknowledgements needed; None: a majority of the replicas.
    pub w: Option<usize>,
    pub peers: Arc<PeerClient>,
}

/// The outcome for one partition's events.
/// One partition's share of a request, marked with its write's id (None
/// when it could not be), and where it goes.
struct Write {
    partition: u32,
    batch: Option<RecordBatch>,
    events: Vec<usize>,
    targets: Vec<Target>,
}

/// One replica's share of one write: which write, where it goes, its rows.
struct Part<'a> {
    write: usize,
    partition: u32,
    target: &'a Target,
    batch: &'a RecordBatch,
}

pub struct Delivery {
    pub events: Vec<usize>,
    pub acks: usize,
    pub needed: usize,
    /// Why a replica did not take the write (`node: error`), the first one.
    pub failure: Option<String>,
}

/// How long a coordinator waits for a relay of its missed-write reports.
const RELAY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// W for N replicas: as configured (`--write-quorum`), or a majority.
pub fn write_quorum(n: usize, configured: Option<usize>) -> usize {
    configured.unwrap_or(n / 2 + 1).clamp(1, n)
}

impl Replicator {
    pub fn new(
        membership: Arc<Membership>,
        local: Arc<LocalReplica>,
        n: usize,
        w: Option<usize>,
        peers: Arc<PeerClient>,
    ) -> Replicator {
        Replicator {
            membership,
            local,
            n,
            w,
            peers,
        }
    }

    /// N and W on this ring.
    pub fn factors(&self, ring: &Ring) -> (usize, usize) {
        let n = ring.replicas(self.n);
        (n, write_quorum(n, self.w))
    }

    /// Writes each partition's rows to its replicas; one `Delivery` per
    /// partition, in no particular order.
    pub async fn deliver(
        &self,
        table: &str,
        groups: Vec<(u32, RecordBatch, Vec<usize>)>,
        idempotency_key: Option<&str>,
    ) -> Result<Vec<Delivery>, ClusterError> {
        let ring = self.membership.ring().ok_or(ClusterError::NotJoined)?;
        let members = self.membership.members().await;
        let up: HashSet<String> = members
            .iter()
            .filter(|m| m.up)
            .map(|m| m.name.clone())
            .collect();
        let flight: HashMap<String, String> = members
            .iter()
            .filter_map(|m| Some((m.name.clone(), m.flight_addr.clone()?)))
            .collect();
        let (n, w) = self.factors(&ring);
        let writes: Vec<Write> = groups
            .into_iter()
            .map(|(partition, batch, events)| {
                let id = write_id(idempotency_key, table, partition);
                let batch = with_write_id(&batch, id)
                    .inspect_err(|e| tracing::error!(error = %e, "cannot mark a write"))
                    .ok();
                let targets = write_targets(&ring, partition, n, |node| up.contains(node));
                Write {
                    partition,
                    batch,
                    events,
                    targets,
                }
            })
            .collect();
        let me = self.membership.node_name();
        let mut by_node: BTreeMap<&str, Vec<Part>> = BTreeMap::new();
        for (write, w) in writes.iter().enumerate() {
            let Some(batch) = &w.batch else { continue };
            for target in &w.targets {
                by_node.entry(target.node.as_str()).or_default().push(Part {
                    write,
                    partition: w.partition,
                    target,
                    batch,
                });
            }
        }
        let sends = by_node.into_iter().map(|(node, parts)| {
            let flight = &flight;
            async move {
                let failed: PutFailures = if node == me {
                    let here = parts.iter().map(|p| {
                        (p.partition, p.batch.clone(), p.target.hint_for.as_deref())
                    });
                    self.local.write_parts(table, here.collect()).await
                } else {
                    let sent = match flight.get(node) {
                        Some(addr) => self.put_many(addr, table, &parts).await,
                        None => Err(ClusterError::unreachable(node, "no Flight address known")),
                    };
                    sent.unwrap_or_else(|e| parts.iter().map(|p| (p.partition, e.to_string())).collect())
                };
                if let Some((partition, error)) = failed.iter().next() {
                    tracing::warn!(node, table, partitions = failed.len(), partition, error = %error, "replica write failed");
                }
                parts
                    .into_iter()
                    .map(|p| match failed.get(&p.partition) {
                        None => (p.write, p.target, None),
                        Some(error) => (p.write, p.target, Some(format!("{node}: {error}"))),
                    })
                    .collect::<Vec<_>>()
            }
        });
        let mut acks = vec![0; writes.len()];
        let mut failures: Vec<Option<String>> = vec![None; writes.len()];
        // The primaries each write reached itself (not through a hint).
        let mut reached: BTreeSet<(usize, &str)> = BTreeSet::new();
        // The other nodes that stored some of these writes.
        let mut holders: BTreeSet<&str> = BTreeSet::new();
        for (i, target, failure) in futures::future::join_all(sends).await.into_iter().flatten() {
            match failure {
                None => {
                    // A pending replica takes the write but does not count
                    // towards W; whether it got it counts all the same.
                    if !target.pending {
                        acks[i] += 1;
                    }
                    if target.node != me {
                        holders.insert(target.node.as_str());
                    }
                    if target.hint_for.is_none() {
                        reached.insert((i, target.node.as_str()));
                    }
                }
                Some(f) if !target.pending => {
                    failures[i].get_or_insert(f);
                }
                Some(_) => {}
            }
        }
        // Before any of these writes is acknowledged, say which replicas
        // did not get them: until they catch up, their copies are not
        // complete, and no query may count on them. That includes the
        // pending replicas of a moving partition: one that caught up
        // before this write and missed it would otherwise be promoted,
        // and read, without it. (A write that is not acknowledged leaves
        // nothing missing: its sender retries it.) A ring that changed
        // while the writes were under way counts too: a replica it added
        // may have caught up before these writes landed elsewhere.
        let later = self.membership.ring().filter(|r| r.epoch() != ring.epoch());
        let replicas_of = |r: &Ring, p: u32| -> Vec<String> {
            let n = r.replicas(self.n);
            r.primaries(p, n)
                .into_iter()
                .chain(r.pending_replicas(p, n))
                .cloned()
                .collect()
        };
        let missed: BTreeSet<(String, u32)> = writes
            .iter()
            .enumerate()
            .filter(|(i, write)| write.batch.is_some() && acks[*i] >= w)
            .flat_map(|(i, w)| {
                let reached = &reached;
                let mut replicas = replicas_of(&ring, w.partition);
                if let Some(later) = &later {
                    replicas.extend(replicas_of(later, w.partition));
                }
                replicas
                    .into_iter()
                    .filter(move |r| !reached.contains(&(i, r.as_str())))
                    .map(move |r| (r, w.partition))
            })
            .collect();
        if !missed.is_empty() {
            self.membership.report_missed(&missed).await;
            self.relay_missed(&missed, &holders, &flight).await;
        }
        Ok(writes
            .into_iter()
            .zip(acks.into_iter().zip(failures))
            .map(|(write, (acks, failure))| Delivery {
                events: write.events,
                acks,
                needed: w,
                failure,
            })
            .collect())
    }

    /// Hands the reports of missed writes to the nodes that stored these
    /// writes, which gossip them too: a coordinator whose gossip does not
    /// get out (UDP blocked, its peers' failure detectors not yet fired)
    /// can still reach replicas over Flight, and acknowledge writes that
    /// a replica missed, and then only the relays' gossip tells that
    /// replica and the other coordinators not to count on its copy. Best
    /// effort and bounded: a relay that does not answer in time is
    /// skipped (the report is in this node's gossip regardless).
    async fn relay_missed(
        &self,
        missed: &BTreeSet<(String, u32)>,
        holders: &BTreeSet<&str>,
        flight: &HashMap<String, String>,
    ) {
        let report = MissedReport {
            missed: missed.iter().cloned().collect(),
        };
        let Ok(body) = crate::messages::encode(&report) else {
            return;
        };
        let sends = holders
            .iter()
            .filter_map(|node| Some((*node, flight.get(*node)?)))
            .map(|(node, addr)| {
                let body = body.clone();
                async move {
                    let ask = self.peers.ask::<MissedNoted>(addr, ACTION_MISSED, body);
                    match tokio::time::timeout(RELAY_WAIT, ask).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            tracing::debug!(node, error = %e, "missed-write report not relayed")
                        }
                        Err(_) => tracing::debug!(node, "missed-write report not relayed in time"),
                    }
                }
            });
        futures::future::join_all(sends).await;
    }

    /// Another node's share of a request's writes, in one call (a call per
    /// partition made the calls, not the rows, the cost of replication:
    /// 128 per 5,000-event request with 64 partitions and N=3). Answers the
    /// partitions the node could not store, with why.
    async fn put_many(
        &self,
        addr: &str,
        table: &str,
        parts: &[Part<'_>],
    ) -> Result<PutFailures, ClusterError> {
        let Some(first) = parts.first() else {
            return Ok(BTreeMap::new());
        };
        let batch =
            arrow::compute::concat_batches(&first.batch.schema(), parts.iter().map(|p| p.batch))
                .map_err(|e| {
                    ClusterError::Internal(format!("cannot put the writes together: {e}"))
                })?;
        let many = PutMany {
            table: table.to_string(),
            parts: parts
                .iter()
                .map(|p| PutPart {
                    partition: p.partition,
                    rows: p.batch.num_rows(),
                    hint_for: p.target.hint_for.clone(),
                })
                .collect(),
        };
        let descriptor = serde_json::to_vec(&many).map_err(internal)?;
        let data = encode_with(descriptor, &batch).await?;
        let results = self.peers.do_put(addr, data).await?;
        match results.first() {
            Some(r) if !r.app_metadata.is_empty() => serde_json::from_slice(&r.app_metadata)
                .map_err(|e| ClusterError::BadMessage(format!("an unreadable answer: {e}"))),
            _ => Ok(PutFailures::new()),
        }
    }

    /// A table's schema and settings as another node knows them; None
    /// when it has no such table.
    pub async fn table_schema(
        &self,
        addr: &str,
        table: &str,
    ) -> Result<Option<Schema>, ClusterError> {
        let Some(result) = self
            .peers
            .get_schema(addr, crate::schemas::descriptor(table))
            .await?
        else {
            return Ok(None);
        };
        Schema::try_from(&result)
            .map(Some)
            .map_err(|e| ClusterError::BadMessage(format!("an unreadable schema: {e}")))
    }

    /// Sends one batch to a node as its own rows of a partition.
    pub async fn send_batch(
        &self,
        addr: &str,
        cmd: &PutCommand,
        batch: &RecordBatch,
    ) -> Result<(), ClusterError> {
        let data = encode(cmd, batch).await?;
        self.peers.do_put(addr, data).await.map(|_| ())
    }
}

fn internal(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Internal(e.to_string())
}

/// The id of one partition's share of a request: derived from the
/// request's idempotency key, so that a resent request carries the same ids
/// (and replicas that hold them take nothing twice); random without one.
fn write_id(idempotency_key: Option<&str>, table: &str, partition: u32) -> u64 {
    match idempotency_key {
        Some(key) => {
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            h.update(key.as_bytes());
            h.update(&[0]);
            h.update(table.as_bytes());
            h.update(&partition.to_le_bytes());
            h.digest()
        }
        None => rand::random(),
    }
}

/// The frames of a `do_put` of one batch. Dictionaries are sent as such
/// (the default would expand them), so that the write-id column arrives
/// with the type every replica stores.
pub async fn encode(
    cmd: &PutCommand,
    batch: &RecordBatch,
) -> Result<Vec<FlightData>, ClusterError> {
    encode_with(serde_json::to_vec(cmd).map_err(internal)?, batch).await
}

async fn encode_with(cmd: Vec<u8>, batch: &RecordBatch) -> Result<Vec<FlightData>, ClusterError> {
    FlightDataEncoderBuilder::new()
        .with_dictionary_handling(DictionaryHandling::Resend)
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(cmd)))
        .build(futures::stream::iter([Ok(batch.clone())]))
        .map_err(internal)
        .try_collect()
        .await
}
