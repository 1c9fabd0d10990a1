//! Moving data between replicas, all by write ids (`atoll_store::writes`):
//!
//! - catch-up: a replica that is not complete for a partition (restarted,
//!   or a pending replica of a moving partition) asks the partition's other
//!   up replicas which writes they hold, fetches the rows of the writes it
//!   misses, and marks itself complete once it heard from all of them and
//!   at least one was complete (or every replica is up: after a restart of
//!   the whole cluster none is). Writes keep arriving meanwhile; a fetched
//!   write that also arrives live is stored once.
//! - anti-entropy: the same comparison, now and then, for complete
//!   partitions, so that a write that reached W replicas but not the third
//!   gets there.
//! - hinted handoff: a fallback pushes the rows it holds for a primary to
//!   it once it is back, then forgets them; the primary does not count as
//!   complete while any node still gossips hints for it.
//! - after a pending claim is promoted, a node drops the partitions it no
//!   longer replicates.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow_flight::Action;
use atoll_ring::Ring;
use atoll_store::Store;
use atoll_store::wal::{read_ipc, write_ipc};
use futures::{StreamExt, TryStreamExt};
use parking_lot::Mutex;
use serde::Serialize;

use crate::error::ClusterError;
use crate::keys::Stat;
use crate::membership::Member;
use crate::messages::{
    ACTION_FETCH, ACTION_IDS, ACTION_TABLES, FetchHeader, FetchRequest, IdsRequest, PutCommand,
    decode, encode,
};
use crate::replica::Hints;
use crate::replicate::Replicator;

/// One transfer under way, as `/v1/cluster` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Transfer {
    pub kind: &'static str,
    pub table: String,
    pub partition: u32,
    pub from: String,
    pub to: String,
    pub bytes_sent: usize,
    pub bytes_total: usize,
    /// Finished (it stays listed for `RECENT` after it ended, so that
    /// short transfers are seen too); false while under way.
    pub done: bool,
    #[serde(skip)]
    ended: Option<Instant>,
}

/// The partitions (held here) that other nodes report missed writes of
/// since this node last looked, and the newest such report of each
/// reporter, when there was one.
fn missed_here(
    me: &str,
    members: &[Member],
    held: &BTreeSet<u32>,
) -> Option<(BTreeSet<u32>, BTreeMap<String, i64>)> {
    let mut marked = BTreeSet::new();
    let mut newest: BTreeMap<String, i64> = BTreeMap::new();
    for report in crate::membership::unseen_missed(members).filter(|r| r.replica == me) {
        if held.contains(&report.partition) {
            marked.insert(report.partition);
        }
        let at = newest
            .entry(report.reporter.to_string())
            .or_insert(report.at);
        *at = (*at).max(report.at);
    }
    (!newest.is_empty()).then_some((marked, newest))
}

/// How long a finished transfer stays listed.
const RECENT: Duration = Duration::from_secs(30);

/// The answers of the three actions, on the serving side.
pub fn serve_action(store: &Store, action: &Action) -> Result<Vec<bytes::Bytes>, ClusterError> {
    match action.r#type.as_str() {
        ACTION_TABLES => {
            let names: Vec<String> = store
                .tables()
                .iter()
                .map(|t| t.name().to_string())
                .collect();
            Ok(vec![to_json(&names)?])
        }
        ACTION_IDS => {
            let req: IdsRequest = decode(&action.body)?;
            let ids = match store.table(&req.table) {
                Some(t) => t.write_ids(req.partition)?,
                None => Vec::new(),
            };
            Ok(vec![to_json(&ids)?])
        }
        ACTION_FETCH => {
            let req: FetchRequest = decode(&action.body)?;
            let wanted: HashSet<u64> = req.ids.into_iter().collect();
            let batches = match store.table(&req.table) {
                Some(t) => t.rows_of(req.partition, &wanted)?,
                None => Vec::new(),
            };
            let mut out = vec![bytes::Bytes::new()];
            let mut header = FetchHeader { rows: 0, bytes: 0 };
            for b in &batches {
                let mut ipc = Vec::new();
                write_ipc(b, &mut ipc).map_err(|e| ClusterError::Internal(e.to_string()))?;
                header.rows += b.num_rows();
                header.bytes += ipc.len();
                out.push(ipc.into());
            }
            out[0] = to_json(&header)?;
            Ok(out)
        }
        other => Err(ClusterError::BadMessage(format!(
            "unknown action {other:?}"
        ))),
    }
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<bytes::Bytes, ClusterError> {
    encode(value).map(Into::into)
}

/// Catch-up, anti-entropy and hinted handoff of one node.
pub struct Handoff {
    replicator: Arc<Replicator>,
    hints: Arc<Hints>,
    transfers: Mutex<BTreeMap<(String, u32, String), Transfer>>,
    last_full_check: Mutex<Option<Instant>>,
    /// Partitions caught up at once; 0 pauses catch-up and hinted handoff.
    limit: usize,
    /// Partitions this node held before it restarted: with no other
    /// replica to ask, what it recovered is all there is. A partition it
    /// was given (a move, a forced leave) with no replica to ask stays
    /// incomplete: its data is gone, and queries must say so.
    restarted: BTreeSet<u32>,
    /// Set once this node left the ring and handed over all it held.
    handed_back: std::sync::atomic::AtomicBool,
}

/// How often complete partitions are compared with their peers.
const ANTI_ENTROPY_EVERY: Duration = Duration::from_secs(30);

impl Handoff {
    pub fn new(
        replicator: Arc<Replicator>,
        hints: Arc<Hints>,
        limit: usize,
        restarted: BTreeSet<u32>,
    ) -> Arc<Handoff> {
        Arc::new(Handoff {
            replicator,
            hints,
            transfers: Mutex::default(),
            last_full_check: Mutex::default(),
            limit,
            restarted,
            handed_back: Default::default(),
        })
    }

    /// Transfers under way, and those that ended in the last 30 s.
    pub fn transfers(&self) -> Vec<Transfer> {
        let mut transfers = self.transfers.lock();
        transfers.retain(|_, t| t.ended.is_none_or(|e| e.elapsed() < RECENT));
        transfers.values().cloned().collect()
    }

    fn start_transfer(&self, key: &(String, u32, String), transfer: Transfer) {
        self.transfers.lock().insert(key.clone(), transfer);
    }

    fn progress(&self, key: &(String, u32, String), bytes: usize) {
        if let Some(t) = self.transfers.lock().get_mut(key) {
            t.bytes_sent += bytes;
        }
    }

    fn end_transfer(&self, key: &(String, u32, String)) {
        if let Some(t) = self.transfers.lock().get_mut(key) {
            t.done = true;
            t.ended = Some(Instant::now());
        }
    }

    /// Runs a round every second until `stop`.
    pub fn spawn(self: &Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => me.round().await,
                    _ = stop.changed() => return,
                }
            }
        });
    }

    async fn round(&self) {
        let membership = &self.replicator.membership;
        // First of all: marks made from here on (a ring change, a stall, a
        // report) survive what this round clears, whatever ring it
        // started with.
        let (mut incomplete, since) = membership.incomplete_since();
        let members = membership.members().await;
        self.gossip_hints().await;
        if self.limit > 0 {
            self.push_hints(&members).await;
        }
        if let Some(after) = membership.ring_after_leave() {
            self.leave_round(&after, &members).await;
            return;
        }
        let Some(ring) = membership.ring() else {
            return;
        };
        let n = ring.replicas(self.replicator.n);
        let me = membership.node_name().to_string();
        let held: BTreeSet<u32> = ring.held_by(&me, n).into_iter().collect();
        if self.limit > 0 {
            self.hand_back(&ring, n, &held, &members, true).await;
        }
        let routed = all_route_with(&ring, &members);
        self.forget_handled_reports(&ring, &members).await;
        if let Some((marked, seen)) = missed_here(&me, &members, &held) {
            tracing::warn!(
                partitions = ?marked,
                "other nodes could not write to this one: marked incomplete until caught up"
            );
            membership.mark_incomplete_for_missed(&marked, &seen).await;
            incomplete.extend(marked);
        }
        let mut cleared: BTreeSet<u32> = incomplete.difference(&held).copied().collect();
        let full = {
            let mut last = self.last_full_check.lock();
            let due = last.is_none_or(|t| t.elapsed() >= ANTI_ENTROPY_EVERY);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        for p in &cleared {
            incomplete.remove(p);
        }
        if self.limit > 0 {
            let due: Vec<u32> = held
                .iter()
                .copied()
                .filter(|p| full || incomplete.contains(p))
                .collect();
            let outcomes: Vec<(u32, Result<bool, ClusterError>)> = futures::stream::iter(due)
                .map(|p| {
                    let (ring, members) = (&ring, &members);
                    async move { (p, self.catch_up(ring, n, p, members).await) }
                })
                .buffer_unordered(self.limit)
                .collect()
                .await;
            let hints_pending = hints_pending_for(&me, &members);
            for (p, outcome) in outcomes {
                match outcome {
                    Ok(true)
                        if incomplete.contains(&p)
                            && !hints_pending
                            && (routed || !pending_here(&ring, n, p, &me)) =>
                    {
                        cleared.insert(p);
                        tracing::info!(partition = p, "caught up: complete again");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(partition = p, error = %e, "catch-up failed; retrying")
                    }
                }
            }
        }
        if !cleared.is_empty() {
            membership.clear_incomplete(&cleared, since).await;
        }
    }

    /// Drops this node's reports of missed writes once their replica acted
    /// on them (or left the ring).
    async fn forget_handled_reports(&self, ring: &Ring, members: &[Member]) {
        let me = self.replicator.membership.node_name();
        let Some(mine) = members.iter().find(|m| m.name == me) else {
            return;
        };
        let in_ring = ring.members();
        let handled: Vec<(String, u32)> = mine
            .missed
            .iter()
            .filter(|((node, _), at)| {
                !in_ring.contains(node)
                    || members
                        .iter()
                        .any(|m| &m.name == node && m.missed_seen.get(me).is_some_and(|s| s >= *at))
            })
            .map(|(k, _)| k.clone())
            .collect();
        if !handled.is_empty() {
            self.replicator.membership.forget_missed(&handled).await;
        }
    }

    /// The replicas of `p` other than this node.
    fn other_replicas<'r>(&self, ring: &'r Ring, n: usize, p: u32) -> Vec<&'r String> {
        let me = self.replicator.membership.node_name();
        ring.primaries(p, n)
            .into_iter()
            .filter(|r| r.as_str() != me)
            .collect()
    }

    /// Fetches the writes of partition `p` this node misses from its other
    /// up replicas; true when that makes it complete (every replica was
    /// asked and one of them was complete, or all replicas are up).
    async fn catch_up(
        &self,
        ring: &Ring,
        n: usize,
        p: u32,
        members: &[Member],
    ) -> Result<bool, ClusterError> {
        let replicas = self.other_replicas(ring, n, p);
        if replicas.is_empty() {
            return Ok(self.restarted.contains(&p));
        }
        let up = reachable(&replicas, members);
        let any_complete = up.iter().any(|m| !m.incomplete.contains(&p));
        let all_up = up.len() == replicas.len();
        if !any_complete && !all_up {
            return Ok(false);
        }
        // Every source is asked, even when one fails: a replica that
        // counts up but refuses this node (its clock too far off, a link
        // cut one way) must not keep it from the others' writes.
        let mut failed = None;
        for source in &up {
            if let Err(e) = self.fetch_missing(source, p).await {
                failed.get_or_insert(e);
            }
        }
        failed.map_or(Ok(true), Err)
    }

    async fn fetch_missing(&self, source: &Member, p: u32) -> Result<(), ClusterError> {
        let addr = source.flight_addr.as_deref().expect("filtered");
        let tables: Vec<String> = self.ask(addr, ACTION_TABLES, &()).await?;
        let store = &self.replicator.local.store;
        for table in tables {
            // Dropped here and not created again: the peer has not applied
            // the drop yet, and its rows must not bring the table back.
            if store.table(&table).is_none() && store.dropped_at(&table).is_some() {
                continue;
            }
            let theirs: Vec<u64> = self
                .ask(
                    addr,
                    ACTION_IDS,
                    &IdsRequest {
                        table: table.clone(),
                        partition: p,
                    },
                )
                .await?;
            let mine: HashSet<u64> = match store.table(&table) {
                Some(t) => t.write_ids(p)?.into_iter().collect(),
                None => HashSet::new(),
            };
            let missing: Vec<u64> = theirs.into_iter().filter(|id| !mine.contains(id)).collect();
            if missing.is_empty() {
                continue;
            }
            let request = FetchRequest {
                table: table.clone(),
                partition: p,
                ids: missing,
            };
            self.fetch(addr, &source.name, &request).await?;
        }
        Ok(())
    }

    /// Streams the rows of `request` from `from` into this node's store.
    async fn fetch(
        &self,
        addr: &str,
        from: &str,
        request: &FetchRequest,
    ) -> Result<(), ClusterError> {
        let body = encode(request)?;
        let peers = &self.replicator.peers;
        let mut results = peers.do_action(addr, ACTION_FETCH, body).await?;
        let failed = |s: tonic::Status| ClusterError::from_status(addr, &s);
        let header: FetchHeader = match results.try_next().await.map_err(failed)? {
            Some(first) => decode(&first.body)?,
            None => return Err(ClusterError::BadMessage("an empty fetch answer".into())),
        };
        let me = self.replicator.membership.node_name().to_string();
        let key = (request.table.clone(), request.partition, from.to_string());
        self.start_transfer(
            &key,
            Transfer {
                kind: "catch-up",
                table: request.table.clone(),
                partition: request.partition,
                from: from.to_string(),
                to: me,
                bytes_sent: 0,
                bytes_total: header.bytes,
                done: false,
                ended: None,
            },
        );
        let cmd = PutCommand {
            table: request.table.clone(),
            partition: request.partition,
        };
        let outcome = async {
            while let Some(r) = results.try_next().await.map_err(failed)? {
                let batch = read_ipc(&r.body)
                    .map_err(|e| ClusterError::BadMessage(format!("fetched rows: {e}")))?;
                self.replicator.local.write(&cmd, batch, None).await?;
                self.progress(&key, r.body.len());
            }
            Ok::<(), ClusterError>(())
        }
        .await;
        self.end_transfer(&key);
        outcome?;
        tracing::info!(table = %request.table, partition = request.partition, from, rows = header.rows, bytes = header.bytes, "fetched missing writes");
        Ok(())
    }

    /// Gossips the primaries this node holds hints for.
    async fn gossip_hints(&self) {
        let names: Vec<String> = self
            .hints
            .rows()
            .into_iter()
            .filter(|(_, rows)| *rows > 0)
            .map(|(p, _)| p)
            .collect();
        self.replicator
            .membership
            .set_stat(Stat::HintsFor, names.join(","))
            .await;
    }

    /// Hands the hints of every primary that is up back to it.
    async fn push_hints(&self, members: &[Member]) {
        for (primary, store) in self.hints.stores() {
            let Some(addr) = members
                .iter()
                .find(|m| m.name == primary && m.up)
                .and_then(|m| m.flight_addr.clone())
            else {
                continue;
            };
            for table in store.tables() {
                for p in 0..table.partitions() {
                    let batches = match table.partition_batches(p) {
                        Ok(b) => b,
                        Err(e) => {
                            tracing::error!(primary, partition = p, error = %e, "cannot read hints");
                            continue;
                        }
                    };
                    if batches.is_empty() {
                        continue;
                    }
                    let ids: HashSet<u64> = batches
                        .iter()
                        .flat_map(atoll_store::writes::ids_in)
                        .collect();
                    match self
                        .push("hint", &addr, &primary, table.name(), p, batches)
                        .await
                    {
                        Ok(()) => {
                            table.clear_partition_if(p, &ids);
                        }
                        Err(e) => {
                            tracing::warn!(primary, partition = p, error = %e, "hinted handoff failed; retrying");
                        }
                    }
                }
            }
        }
    }

    async fn push(
        &self,
        kind: &'static str,
        addr: &str,
        primary: &str,
        table: &str,
        p: u32,
        batches: Vec<RecordBatch>,
    ) -> Result<(), ClusterError> {
        let cmd = PutCommand {
            table: table.to_string(),
            partition: p,
        };
        let total: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
        let key = (table.to_string(), p, primary.to_string());
        let me = self.replicator.membership.node_name().to_string();
        self.start_transfer(
            &key,
            Transfer {
                kind,
                table: table.to_string(),
                partition: p,
                from: me,
                to: primary.to_string(),
                bytes_sent: 0,
                bytes_total: total,
                done: false,
                ended: None,
            },
        );
        let mut outcome = Ok(());
        for b in batches {
            let size = b.get_array_memory_size();
            outcome = self.replicator.send_batch(addr, &cmd, &b).await;
            if outcome.is_err() {
                break;
            }
            self.progress(&key, size);
        }
        self.end_transfer(&key);
        outcome
    }

    /// Once this node left the ring: hands every row it holds to the
    /// replicas `after` gives them (writes routed with an older ring may
    /// have reached it after the new replicas caught up from it).
    async fn leave_round(&self, after: &Ring, members: &[Member]) {
        if self.limit == 0 {
            return;
        }
        let n = after.replicas(self.replicator.n);
        let kept = self
            .hand_back(after, n, &BTreeSet::new(), members, false)
            .await;
        let hints = self.hints.rows().into_iter().any(|(_, rows)| rows > 0);
        self.handed_back
            .store(kept == 0 && !hints, std::sync::atomic::Ordering::Relaxed);
    }

    /// True once this node, having left, holds nothing more to hand over.
    pub fn handed_back(&self) -> bool {
        self.handed_back.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Hands the rows of partitions this node does not replicate (their
    /// claim moved on) to their up replicas, then forgets them. A write
    /// routed with the ring before a move can land here after the new
    /// replicas caught up; this is where it reaches them. Returns how many
    /// partitions still hold rows (no replica up, or a transfer failed).
    /// With `recheck`, a partition is dropped only if the ring in force
    /// then still does not give it to this node: a ring change during the
    /// transfers may have given it back.
    async fn hand_back(
        &self,
        ring: &Ring,
        n: usize,
        held: &BTreeSet<u32>,
        members: &[Member],
        recheck: bool,
    ) -> usize {
        let me = self.replicator.membership.node_name().to_string();
        let held_now = |p: u32| {
            recheck
                && self
                    .replicator
                    .membership
                    .ring()
                    .is_none_or(|r| r.held_by(&me, r.replicas(self.replicator.n)).contains(&p))
        };
        let mut kept = 0;
        for table in self.replicator.local.store.tables() {
            for p in (0..table.partitions()).filter(|p| !held.contains(p)) {
                let ids: HashSet<u64> = match table.write_ids(p) {
                    Ok(ids) => ids.into_iter().collect(),
                    Err(_) => continue,
                };
                if ids.is_empty() {
                    continue;
                }
                match self
                    .hand_back_partition(ring, n, &table, p, &ids, members)
                    .await
                {
                    Ok(()) if held_now(p) => {}
                    Ok(()) if table.clear_partition_if(p, &ids) => {
                        tracing::info!(
                            table = table.name(),
                            partition = p,
                            writes = ids.len(),
                            "handed a partition to its replicas and dropped it here"
                        );
                    }
                    Ok(()) => kept += 1,
                    Err(e) => {
                        tracing::warn!(table = table.name(), partition = p, error = %e, "hand-back failed; retrying");
                        kept += 1;
                    }
                }
            }
        }
        kept
    }

    /// Pushes to each up replica of `p` the writes of `ids` it lacks.
    async fn hand_back_partition(
        &self,
        ring: &Ring,
        n: usize,
        table: &atoll_store::Table,
        p: u32,
        ids: &HashSet<u64>,
        members: &[Member],
    ) -> Result<(), ClusterError> {
        let up = reachable(&self.other_replicas(ring, n, p), members);
        if up.is_empty() {
            return Err(ClusterError::unreachable(
                "(none)",
                format!("no replica of partition {p} is up"),
            ));
        }
        for replica in up {
            let addr = replica.flight_addr.as_deref().expect("filtered");
            let request = IdsRequest {
                table: table.name().to_string(),
                partition: p,
            };
            let theirs: HashSet<u64> = self
                .ask::<Vec<u64>>(addr, ACTION_IDS, &request)
                .await?
                .into_iter()
                .collect();
            let missing: HashSet<u64> = ids.difference(&theirs).copied().collect();
            if missing.is_empty() {
                continue;
            }
            let batches = table.rows_of(p, &missing)?;
            self.push("hand-back", addr, &replica.name, table.name(), p, batches)
                .await?;
        }
        Ok(())
    }

    async fn ask<T: serde::de::DeserializeOwned>(
        &self,
        addr: &str,
        kind: &str,
        body: &impl Serialize,
    ) -> Result<T, ClusterError> {
        self.replicator.peers.ask(addr, kind, encode(body)?).await
    }
}

/// True once every up node that routes writes routes them with `ring` or a
/// later one: from then on, writes reach `ring`'s pending replicas too.
fn all_route_with(ring: &Ring, members: &[Member]) -> bool {
    members
        .iter()
        .filter(|m| m.up)
        .all(|m| m.ring_epoch.is_none_or(|e| e >= ring.epoch()))
}

/// True when `me` is a pending replica of `p`: a replica it will be once
/// the move is put in force.
fn pending_here(ring: &Ring, n: usize, p: u32, me: &str) -> bool {
    ring.pending_replicas(p, n).iter().any(|r| r.as_str() == me)
}

/// The nodes of `names` that are up and can be reached over Flight.
fn reachable<'m>(names: &[&String], members: &'m [Member]) -> Vec<&'m Member> {
    names
        .iter()
        .filter_map(|name| {
            members
                .iter()
                .find(|m| m.name == **name && m.up && m.flight_addr.is_some())
        })
        .collect()
}

/// True while some up node gossips hints for `node`.
fn hints_pending_for(node: &str, members: &[Member]) -> bool {
    members.iter().any(|m| {
        m.up && m
            .stats
            .get(Stat::HintsFor.name())
            .is_some_and(|list| list.split(',').any(|n| n == node))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, up: bool, ring_epoch: Option<u64>) -> Member {
        Member {
            name: name.into(),
            up,
            ring_epoch,
            ..Default::default()
        }
    }

    #[test]
    fn a_pending_claim_is_routed_once_every_up_node_has_it() {
        let ring = Ring::new(8, &["a".into(), "b".into()]).unwrap();
        let moving = ring
            .claim_pending(&["a".into(), "b".into(), "c".into()])
            .unwrap();
        let e = moving.epoch();
        let behind = [member("a", true, Some(e)), member("b", true, Some(e - 1))];
        assert!(
            !all_route_with(&moving, &behind),
            "b still routes without c"
        );
        let caught = [
            member("a", true, Some(e)),
            member("b", true, Some(e)),
            member("c", true, None),
            member("d", false, Some(e - 1)),
        ];
        assert!(
            all_route_with(&moving, &caught),
            "a node without a ring routes nothing; a down one routes nothing"
        );
        let p = (0..8).find(|&p| moving.pending_owner(p).is_some()).unwrap();
        assert!(pending_here(&moving, 1, p, "c"));
        assert!(!pending_here(&moving, 1, p, moving.owner(p)));
    }
}
