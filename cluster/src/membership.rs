//! Who is in the cluster, who is up, and which ring is current, learnt by
//! gossip (the `chitchat` crate, over UDP).
//!
//! Every node gossips its addresses, status, partition count, the highest
//! ring it knows and a few figures. The *claimant* (the lowest node name
//! among the up members) adds nodes that have joined to the ring and
//! publishes the new ring with the next epoch; every node adopts the
//! highest epoch it sees. Stopping a node does not change the ring.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chitchat::{
    ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, ProtocolVersion,
    spawn_chitchat,
};
use parking_lot::RwLock;
use serde::Serialize;
use xxhash_rust::xxh3::xxh3_64;

use atoll_ring::{NodeId, Ring};

use crate::gossip::GossipTransport;
use crate::keys::*;

#[derive(Debug, Clone)]
pub struct MembershipConfig {
    pub node_name: String,
    /// Nodes share this name and a secret; both go into the gossip cluster
    /// id, so gossip from another cluster or with another secret is ignored.
    pub cluster_name: String,
    pub secret: String,
    pub gossip_addr: SocketAddr,
    /// Where the other nodes send gossip, when not `gossip_addr`.
    pub gossip_advertise_addr: Option<SocketAddr>,
    pub seeds: Vec<String>,
    pub partitions: u32,
    pub http_addr: SocketAddr,
    /// The Flight address the other nodes dial (advertised).
    pub flight_addr: SocketAddr,
    pub gossip_interval: Duration,
    /// Replicas per partition (N), to know which partitions this node serves.
    pub replicas: usize,
    /// How long without heartbeats before a node is considered down (about).
    pub down_after: Duration,
    /// Where the node keeps its last gossip generation (in `--data-dir`).
    pub generation_file: Option<std::path::PathBuf>,
}

/// This node's incomplete partitions, and when each was last marked (a
/// count of marks), so that a catch-up does not clear a later mark.
#[derive(Debug, Default)]
struct Marks {
    set: BTreeSet<u32>,
    marked: BTreeMap<u32, u64>,
    count: u64,
}

/// A report of a missed write that its replica has not acted on yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnseenMissed<'m> {
    pub replica: &'m str,
    pub partition: u32,
    /// The node whose gossip carries the report, and its time there (µs,
    /// by that node's clock: reports are compared only with others of
    /// the same reporter, so skewed clocks cannot hide one).
    pub reporter: &'m str,
    pub at: i64,
}

/// Reports of missed writes (`Member::missed`) that the replica they name
/// has not acted on yet (newer than its `missed_seen` for that reporter).
pub fn unseen_missed(members: &[Member]) -> impl Iterator<Item = UnseenMissed<'_>> {
    let seen: BTreeMap<&str, &BTreeMap<String, i64>> = members
        .iter()
        .map(|m| (m.name.as_str(), &m.missed_seen))
        .collect();
    members.iter().flat_map(move |m| {
        let seen = seen.clone();
        m.missed.iter().filter_map(move |((node, p), at)| {
            let acted = seen
                .get(node.as_str())
                .and_then(|s| s.get(&m.name))
                .is_some_and(|s| at <= s);
            (!acted).then_some(UnseenMissed {
                replica: node.as_str(),
                partition: *p,
                reporter: m.name.as_str(),
                at: *at,
            })
        })
    })
}

/// Silence after which a node with live peers counts as deaf: five gossip
/// rounds (each brings datagrams from every live peer that gossips with
/// it), at least a second.
fn deaf_after(interval: Duration) -> Duration {
    (interval * 5).max(Duration::from_secs(1))
}

/// What the cluster knows of one node.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Member {
    pub name: NodeId,
    pub up: bool,
    pub http_addr: Option<String>,
    pub flight_addr: Option<String>,
    pub gossip_addr: Option<String>,
    /// Partitions this node does not hold every acknowledged write of.
    pub incomplete: BTreeSet<u32>,
    /// Writes this node coordinated that failed to reach a replica:
    /// (replica, partition) -> when, µs (`keys::MISSED_PREFIX`).
    pub missed: BTreeMap<(String, u32), i64>,
    /// Per reporter, the newest report of a missed write about this node
    /// it acted on (in the reporter's clock).
    pub missed_seen: BTreeMap<String, i64>,
    pub stats: BTreeMap<String, String>,
    /// Table -> digest of its columns and settings on this node.
    pub schemas: BTreeMap<String, String>,
    /// Table -> when this node dropped it (µs since the epoch).
    pub dropped: BTreeMap<String, i64>,
    /// Table -> (cut-off, when it was set): see `keys::CUTOFF_PREFIX`.
    pub cutoffs: BTreeMap<String, (i64, i64)>,
    /// The epoch of the ring this node routes writes with (None before it
    /// has one): a move's pending replicas wait for every node to route
    /// with the pending claim before they count as caught up.
    pub ring_epoch: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("gossip could not start on {addr}: {source}")]
    Start {
        addr: SocketAddr,
        source: anyhow::Error,
    },
}

/// A node's live view of the cluster.
pub struct Membership {
    config: MembershipConfig,
    handle: ChitchatHandle,
    ring: RwLock<Option<Arc<Ring>>>,
    /// Set when a peer uses another partition count: this node must not join.
    conflict: RwLock<Option<String>>,
    /// Set when the first ring this node heard already had it as a member:
    /// it was restarted (and, in memory, lost what it held).
    rejoined: std::sync::atomic::AtomicBool,
    /// Partitions this node does not hold every acknowledged write of.
    incomplete: RwLock<Marks>,
    /// Held while the incomplete set is changed and gossiped, so that the
    /// gossiped set is the last one made.
    publishing: tokio::sync::Mutex<()>,
    /// Nodes asked to leave the ring.
    leaving: RwLock<BTreeSet<String>>,
    /// Set once this node was in a ring and a later ring no longer has it.
    left: std::sync::atomic::AtomicBool,
    /// The ring that took this node out, once it left: where its rows go.
    after_leave: RwLock<Option<Arc<Ring>>>,
    /// Set once `KEY_HOLDS_DATA` is published.
    holds_data: std::sync::atomic::AtomicBool,
    /// Set once any member was heard to hold data.
    cluster_holds_data: std::sync::atomic::AtomicBool,
    /// Datagrams the gossip transport dropped, by reason.
    drops: crate::gossip::GossipDrops,
    heard: crate::gossip::LastHeard,
}

impl Membership {
    /// Starts gossiping. A node without seeds founds a cluster (a ring of
    /// itself); a node with seeds waits to be added by the claimant.
    /// `config.gossip_addr` may have port 0: the node then gossips on the
    /// port the system gave it ([`Membership::gossip_addr`]).
    pub async fn start(mut config: MembershipConfig) -> Result<Arc<Membership>, MembershipError> {
        let transport = GossipTransport::bind(config.gossip_addr, &config.secret)
            .await
            .map_err(|source| MembershipError::Start {
                addr: config.gossip_addr,
                source,
            })?;
        config.gossip_addr = transport.local_addr();
        let drops = transport.drops();
        let heard = transport.heard();
        let generation = next_generation(config.generation_file.as_deref()).map_err(|e| {
            MembershipError::Start {
                addr: config.gossip_addr,
                source: e.into(),
            }
        })?;
        let interval = config.gossip_interval;
        let chitchat_config = ChitchatConfig {
            chitchat_id: ChitchatId::new(
                config.node_name.clone(),
                generation,
                config.gossip_advertise_addr.unwrap_or(config.gossip_addr),
            ),
            cluster_id: cluster_id(&config.cluster_name, &config.secret),
            gossip_interval: interval,
            listen_addr: config.gossip_addr,
            seed_nodes: config.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: 8.0,
                sampling_window_size: 1_000,
                max_interval: config.down_after,
                initial_interval: interval * 2,
                dead_node_grace_period: Duration::from_secs(24 * 3600),
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: ProtocolVersion::V0,
        };
        let initial = vec![
            (KEY_HTTP.to_string(), config.http_addr.to_string()),
            (KEY_FLIGHT.to_string(), config.flight_addr.to_string()),
            (KEY_PARTITIONS.to_string(), config.partitions.to_string()),
        ];
        let handle = spawn_chitchat(chitchat_config, initial, &transport)
            .await
            .map_err(|source| MembershipError::Start {
                addr: config.gossip_addr,
                source,
            })?;
        let founding = config.seeds.is_empty();
        let membership = Arc::new(Membership {
            config,
            handle,
            ring: RwLock::new(None),
            conflict: RwLock::new(None),
            rejoined: Default::default(),
            incomplete: Default::default(),
            publishing: Default::default(),
            leaving: Default::default(),
            left: Default::default(),
            after_leave: Default::default(),
            holds_data: Default::default(),
            cluster_holds_data: Default::default(),
            drops,
            heard,
        });
        if founding {
            let ring = Ring::new(
                membership.config.partitions,
                std::slice::from_ref(&membership.config.node_name),
            )
            .expect("the partition count was validated");
            membership.adopt(ring).await;
        }
        let m = membership.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                m.refresh().await;
            }
        });
        Ok(membership)
    }

    pub fn node_name(&self) -> &str {
        &self.config.node_name
    }

    /// The count of gossip datagrams dropped unread, for `/metrics`.
    /// True when this node heard no gossip for several rounds while it
    /// still counts other members up: cut off from their gossip (a blocked
    /// UDP port, an inbound partition) before its failure detector says
    /// so. It does not know what they reported meanwhile (writes its
    /// copies missed), so queries coordinated here do not read its copies.
    pub fn deaf(&self, members: &[Member]) -> bool {
        let others_up = members
            .iter()
            .any(|m| m.up && m.name != self.config.node_name);
        others_up && self.heard.ago() > deaf_after(self.config.gossip_interval)
    }

    pub fn gossip_drops(&self) -> prometheus::IntCounterVec {
        self.drops.counter()
    }

    /// Where this node gossips (bound, so never port 0).
    pub fn gossip_addr(&self) -> SocketAddr {
        self.config.gossip_addr
    }

    /// The current ring, once this node knows one that includes it.
    pub fn ring(&self) -> Option<Arc<Ring>> {
        self.ring.read().clone()
    }

    /// Whether any member of the cluster was heard to hold data.
    pub fn cluster_holds_data(&self) -> bool {
        self.cluster_holds_data
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// True when this node came back into a ring that already had it.
    pub fn rejoined(&self) -> bool {
        self.rejoined.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Why this node cannot be part of the cluster it was pointed at.
    pub fn conflict(&self) -> Option<String> {
        self.conflict.read().clone()
    }

    /// Publishes a figure about this node (rows, memory...).
    pub async fn set_stat(&self, stat: Stat, value: impl ToString) {
        let key = format!("{STAT_PREFIX}{}", stat.name());
        let value = value.to_string();
        self.handle
            .with_chitchat(|c| c.self_node_state().set(key.clone(), value.clone()))
            .await;
    }

    /// Publishes a table's memory cut-off, or withdraws it (None).
    pub async fn set_cutoff(&self, table: &str, cutoff: Option<(i64, i64)>) {
        let key = format!("{CUTOFF_PREFIX}{table}");
        let value = cutoff.map_or(String::new(), |(cut, at)| format_cutoff(cut, at));
        self.handle
            .with_chitchat(|c| c.self_node_state().set(key.clone(), value.clone()))
            .await;
    }

    /// Says, from now on, that this node holds data (see `KEY_HOLDS_DATA`).
    pub async fn mark_holds_data(&self) {
        if self
            .holds_data
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        self.handle
            .with_chitchat(|c| c.self_node_state().set(KEY_HOLDS_DATA, "1"))
            .await;
    }

    /// Publishes the digest of every table this node knows, and forgets
    /// those of tables it no longer has.
    pub async fn set_schemas(&self, digests: &BTreeMap<String, String>) {
        self.handle
            .with_chitchat(|c| {
                let state = c.self_node_state();
                let stale: Vec<String> = state
                    .key_values()
                    .filter_map(|(k, _)| k.strip_prefix(SCHEMA_PREFIX))
                    .filter(|t| !digests.contains_key(*t))
                    .map(|t| format!("{SCHEMA_PREFIX}{t}"))
                    .collect();
                for key in stale {
                    state.delete(&key);
                }
                for (table, digest) in digests {
                    let key = format!("{SCHEMA_PREFIX}{table}");
                    if state.get(&key) != Some(digest.as_str()) {
                        state.set(key, digest);
                    }
                }
            })
            .await;
    }

    /// Stops publishing these entries under `prefix` (their keys are
    /// deleted, and chitchat forgets them after its grace period).
    pub async fn forget(&self, prefix: &str, names: &[String]) {
        self.handle
            .with_chitchat(|c| {
                let state = c.self_node_state();
                for name in names {
                    let key = format!("{prefix}{name}");
                    if state.get(&key).is_some() {
                        state.delete(&key);
                    }
                }
            })
            .await;
    }

    /// Publishes when this node dropped each table it dropped.
    pub async fn set_dropped(&self, dropped: &BTreeMap<String, i64>) {
        self.handle
            .with_chitchat(|c| {
                let state = c.self_node_state();
                for (table, micros) in dropped {
                    let key = format!("{DROPPED_PREFIX}{table}");
                    let value = micros.to_string();
                    if state.get(&key) != Some(value.as_str()) {
                        state.set(key, value);
                    }
                }
            })
            .await;
    }

    /// Marks partitions as not holding every acknowledged write.
    /// Partitions this node does not hold every acknowledged write of.
    pub fn incomplete(&self) -> BTreeSet<u32> {
        self.incomplete.read().set.clone()
    }

    /// The incomplete partitions and the mark count so far: clearing with
    /// [`Membership::clear_incomplete`] after work that started here
    /// leaves any partition marked since then marked.
    pub fn incomplete_since(&self) -> (BTreeSet<u32>, u64) {
        let marks = self.incomplete.read();
        (marks.set.clone(), marks.count)
    }

    /// Clears the marks of `partitions`, except those marked again after
    /// `since` (from [`Membership::incomplete_since`]): a catch-up that
    /// began before a ring change or a missed-write report must not
    /// clear the mark that change made.
    pub async fn clear_incomplete(&self, partitions: &BTreeSet<u32>, since: u64) {
        self.change_incomplete(|m| {
            for p in partitions {
                if m.marked.get(p).is_none_or(|at| *at <= since) {
                    m.set.remove(p);
                }
            }
        })
        .await;
    }

    async fn change_incomplete(&self, change: impl FnOnce(&mut Marks)) {
        let _turn = self.publishing.lock().await;
        let text = {
            let mut marks = self.incomplete.write();
            change(&mut marks);
            marks
                .set
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        self.handle
            .with_chitchat(|c| c.self_node_state().set(KEY_INCOMPLETE, text.clone()))
            .await;
    }

    /// Adds partitions to those marked incomplete.
    pub async fn mark_incomplete(&self, partitions: impl IntoIterator<Item = u32>) {
        self.change_incomplete(|m| {
            m.count += 1;
            for p in partitions {
                m.set.insert(p);
                m.marked.insert(p, m.count);
            }
        })
        .await;
    }

    /// Reports that writes did not reach these replicas of these
    /// partitions (now, by this node's clock): writes this node
    /// coordinated, or another coordinator's report relayed here
    /// (`ACTION_MISSED`).
    pub async fn report_missed(&self, missed: &BTreeSet<(String, u32)>) {
        let now = atoll_store::now_micros().to_string();
        self.handle
            .with_chitchat(|c| {
                let state = c.self_node_state();
                for (node, p) in missed {
                    state.set(format!("{MISSED_PREFIX}{node}/{p}"), &now);
                }
            })
            .await;
    }

    /// Forgets this node's reports that their replicas acted on.
    pub async fn forget_missed(&self, handled: &[(String, u32)]) {
        self.handle
            .with_chitchat(|c| {
                let state = c.self_node_state();
                for (node, p) in handled {
                    state.delete(&format!("{MISSED_PREFIX}{node}/{p}"));
                }
            })
            .await;
    }

    /// Marks partitions incomplete because of missed-write reports up to
    /// `seen` (per reporter, µs by its clock): the mark goes out before the
    /// watermark.
    pub async fn mark_incomplete_for_missed(
        &self,
        partitions: &BTreeSet<u32>,
        seen: &BTreeMap<String, i64>,
    ) {
        self.mark_incomplete(partitions.iter().copied()).await;
        self.handle
            .with_chitchat(|c| {
                let state = c.self_node_state();
                let mut all: BTreeMap<String, i64> = state
                    .get(KEY_MISSED_SEEN)
                    .and_then(|v| serde_json::from_str(v).ok())
                    .unwrap_or_default();
                for (reporter, at) in seen {
                    let had = all.entry(reporter.clone()).or_insert(*at);
                    *had = (*had).max(*at);
                }
                let text = serde_json::to_string(&all).unwrap_or_default();
                state.set(KEY_MISSED_SEEN, text);
            })
            .await;
    }

    /// Each known node's entries under `prefix` (prefix removed), its own
    /// included.
    pub async fn gossiped(&self, prefix: &str) -> Vec<BTreeMap<String, String>> {
        self.handle
            .with_chitchat(|c| {
                c.node_states()
                    .values()
                    .map(|state| prefixed(state, prefix))
                    .collect()
            })
            .await
    }

    /// Each other node's value of `key` with its entries under `prefix`
    /// (prefix removed), read at once from its latest generation's state.
    pub async fn gossiped_with(
        &self,
        key: &str,
        prefix: &str,
    ) -> Vec<(Option<String>, BTreeMap<String, String>)> {
        let me = self.node_name().to_string();
        self.handle
            .with_chitchat(|c| {
                let mut latest = latest_states(c);
                latest.remove(&me);
                latest
                    .into_values()
                    .map(|(_, state)| (state.get(key).map(str::to_string), prefixed(state, prefix)))
                    .collect()
            })
            .await
    }

    /// Publishes `entries` under `prefix` in this node's state (the ones
    /// that changed); other entries under it stay.
    pub async fn publish(&self, prefix: &str, entries: &BTreeMap<String, String>) {
        self.handle
            .with_chitchat(|c| {
                let state = c.self_node_state();
                for (name, value) in entries {
                    let key = format!("{prefix}{name}");
                    if state.get(&key) != Some(value.as_str()) {
                        state.set(key, value);
                    }
                }
            })
            .await;
    }

    /// Every node of the ring and every node gossiping, up or not.
    pub async fn members(&self) -> Vec<Member> {
        let ring = self.ring();
        self.handle
            .with_chitchat(|c| {
                let live: BTreeSet<String> =
                    c.live_nodes().map(|id| id.node_id.to_string()).collect();
                let latest = latest_states(c);
                let mut names: BTreeSet<String> = latest.keys().cloned().collect();
                if let Some(r) = &ring {
                    names.extend(r.members().into_iter().cloned());
                }
                names
                    .into_iter()
                    .map(|name| {
                        let found = latest.get(&name);
                        let get = |k: &str| found.and_then(|(_, s)| s.get(k)).map(str::to_string);
                        Member {
                            up: live.contains(&name),
                            http_addr: get(KEY_HTTP),
                            flight_addr: get(KEY_FLIGHT),
                            gossip_addr: found.map(|(id, _)| id.gossip_advertise_addr.to_string()),
                            incomplete: get(KEY_INCOMPLETE)
                                .map(|s| parse_partitions(&s))
                                .unwrap_or_default(),
                            missed: found
                                .map(|(_, s)| prefixed(s, MISSED_PREFIX))
                                .unwrap_or_default()
                                .into_iter()
                                .filter_map(|(k, v)| parse_missed(&k, &v))
                                .collect(),
                            missed_seen: get(KEY_MISSED_SEEN)
                                .and_then(|v| serde_json::from_str(&v).ok())
                                .unwrap_or_default(),
                            stats: found
                                .map(|(_, s)| prefixed(s, STAT_PREFIX))
                                .unwrap_or_default(),
                            schemas: found
                                .map(|(_, s)| prefixed(s, SCHEMA_PREFIX))
                                .unwrap_or_default(),
                            dropped: found
                                .map(|(_, s)| prefixed(s, DROPPED_PREFIX))
                                .unwrap_or_default()
                                .into_iter()
                                .filter_map(|(t, v)| Some((t, v.parse().ok()?)))
                                .collect(),
                            cutoffs: found
                                .map(|(_, s)| prefixed(s, CUTOFF_PREFIX))
                                .unwrap_or_default()
                                .into_iter()
                                .filter_map(|(t, v)| Some((t, parse_cutoff(&v)?)))
                                .collect(),
                            ring_epoch: get(KEY_RING)
                                .and_then(|r| r.split(';').next()?.parse().ok()),
                            name,
                        }
                    })
                    .collect()
            })
            .await
    }

    /// One gossip tick: adopt the highest ring seen, check partition counts,
    /// and if this node is the claimant, add newly joined nodes.
    async fn refresh(&self) {
        let me = self.config.node_name.clone();
        let partitions = self.config.partitions;
        let (best, live, conflict, any_data, leaving, forced, incomplete, epochs) = self
            .handle
            .with_chitchat(|c| {
                let mut best: Option<Ring> = None;
                let mut conflict = None;
                let mut any_data = false;
                let mut leaving = BTreeSet::new();
                let mut forced = BTreeSet::new();
                let mut incomplete: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
                let mut epochs: BTreeMap<String, Option<u64>> = BTreeMap::new();
                for (id, state) in c.node_states() {
                    // A node's marks count once it says it is on this ring
                    // (it marks what a ring gives it before adopting it):
                    // before that, its gossiped set may predate the ring.
                    let epoch = state.get(KEY_RING).and_then(decode_ring).map(|r| r.epoch());
                    let marks = state.get(KEY_INCOMPLETE).map(parse_partitions).unwrap_or_default();
                    incomplete.insert(id.node_id.to_string(), marks);
                    epochs.insert(id.node_id.to_string(), epoch);
                    for (k, v) in state.key_values() {
                        if let Some(node) = k.strip_prefix(LEAVE_PREFIX) {
                            leaving.insert(node.to_string());
                            if v == LEAVE_FORCED {
                                forced.insert(node.to_string());
                            }
                        }
                    }
                    any_data |= state.get(KEY_HOLDS_DATA) == Some("1");
                    if let Some(r) = state.get(KEY_RING).and_then(decode_ring).filter(|r| fits(r, partitions))
                        && best.as_ref().is_none_or(|b| ring_order(&r) > ring_order(b))
                    {
                        best = Some(r);
                    }
                    let theirs = state.get(KEY_PARTITIONS).and_then(|p| p.parse::<u32>().ok());
                    if let Some(n) = theirs.filter(|&n| n != partitions) {
                        conflict = Some(format!(
                            "node {} uses {n} partitions and this node {partitions}: a cluster's partition count is fixed",
                            id.node_id
                        ));
                    }
                }
                let live: BTreeSet<String> = c
                    .live_nodes()
                    .filter(|id| c.node_state(id).and_then(|s| s.get(KEY_PARTITIONS)) == Some(&partitions.to_string()))
                    .map(|id| id.node_id.to_string())
                    .collect();
                (best, live, conflict, any_data, leaving, forced, incomplete, epochs)
            })
            .await;
        *self.leaving.write() = leaving.clone();
        if any_data {
            self.cluster_holds_data
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let current = self.ring();
        if current.is_none() && conflict.is_some() {
            *self.conflict.write() = conflict;
            return;
        }
        if current.is_none() && best.as_ref().is_some_and(|b| b.members().contains(&me)) {
            self.rejoined
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let mut ring = match (best, current) {
            (Some(b), Some(c)) if ring_order(&b) <= ring_order(&c) => (*c).clone(),
            (Some(b), _) => b,
            (None, Some(c)) => (*c).clone(),
            (None, None) => return,
        };
        // The claimant is a live member of the ring: a node that just
        // started, and sees only itself live, must not claim for others.
        let in_ring = ring.members();
        let claimant = live
            .iter()
            .find(|n| !leaving.contains(*n) && in_ring.contains(n));
        if claimant == Some(&me) {
            let members: BTreeSet<&NodeId> = ring.members();
            let force = forced.iter().any(|f| members.contains(f));
            let handed_off = handed_off(&ring, self.config.replicas, &live, &incomplete, &epochs);
            ring = self.claim(ring, &live, &leaving, any_data && !force, handed_off);
        }
        let previous = self.ring();
        if previous.as_ref().is_none_or(|c| **c != ring) {
            if any_data && ring.members().contains(&me) {
                self.mark_moved(previous.as_deref(), &ring).await;
            }
            self.adopt(ring.clone()).await;
        }
        self.forget_done_leaves(&ring, &live).await;
    }

    /// A leave request is done once its node is out of the ring and no
    /// longer up: the request (kept by the node that took it) is withdrawn,
    /// so that the name may join again later as a new member.
    async fn forget_done_leaves(&self, ring: &Ring, live: &BTreeSet<String>) {
        let members = ring.members();
        self.handle
            .with_chitchat(|c| {
                let state = c.self_node_state();
                let done: Vec<String> = state
                    .key_values()
                    .filter_map(|(k, _)| k.strip_prefix(LEAVE_PREFIX))
                    .filter(|n| !live.contains(*n) && !members.iter().any(|m| m.as_str() == *n))
                    .map(|n| format!("{LEAVE_PREFIX}{n}"))
                    .collect();
                for key in done {
                    state.delete(&key);
                }
            })
            .await;
    }

    /// The claimant's step: the ring for the joined members that are not
    /// leaving. With `hold`, moving partitions stay with their owners and
    /// get pending owners (their data must follow them) until `handed_off`
    /// says every pending replica holds it; without, the claim is in force
    /// at once (a ring without data, or a forced leave).
    fn claim(
        &self,
        ring: Ring,
        live: &BTreeSet<String>,
        leaving: &BTreeSet<String>,
        hold: bool,
        handed_off: bool,
    ) -> Ring {
        let target: BTreeSet<NodeId> = ring
            .next()
            .unwrap_or(ring.owners())
            .iter()
            .cloned()
            .collect();
        let mut members = target.clone();
        members.extend(live.iter().cloned());
        members.retain(|m| !leaving.contains(m));
        if hold && handed_off && members == target {
            let next = ring.promote();
            tracing::info!(
                epoch = next.epoch(),
                "handoff complete: the pending claim is in force"
            );
            return next;
        }
        let promote = !hold && ring.next().is_some();
        if members.is_empty() || (members == target && !promote) {
            return ring;
        }
        let members: Vec<NodeId> = members.into_iter().collect();
        let next = if hold {
            ring.claim_pending(&members)
        } else {
            ring.claim(&members)
        };
        match next {
            Ok(next) => {
                let moving = (0..next.partitions())
                    .filter(|&p| next.pending_owner(p).is_some())
                    .count();
                tracing::info!(epoch = next.epoch(), members = ?members, moving, "claimed a new ring");
                next
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot claim a ring for the new members");
                ring
            }
        }
    }

    /// Partitions this node becomes a replica of when the ring changes, in
    /// a cluster that holds data, are not complete here: their data sits on
    /// the previous replicas until it is handed over. Coverage plans then
    /// avoid this node for them (a query fails or is partial rather than
    /// silently missing rows).
    async fn mark_moved(&self, previous: Option<&Ring>, next: &Ring) {
        let me = &self.config.node_name;
        let n = self.config.replicas;
        let before: BTreeSet<u32> = match previous {
            Some(r) => r.held_by(me, r.replicas(n)).into_iter().collect(),
            // First ring heard, already with this node in it (a restart, or
            // a join the claimant made before this node heard of it):
            // everything it holds is marked before it says it is on the
            // ring, so that no claimant takes it as complete meanwhile.
            None => BTreeSet::new(),
        };
        let after = next.held_by(me, next.replicas(n));
        let gained: Vec<u32> = after.into_iter().filter(|p| !before.contains(p)).collect();
        if gained.is_empty() {
            return;
        }
        tracing::warn!(
            partitions = gained.len(),
            "became a replica of partitions whose data is elsewhere: marked incomplete"
        );
        self.mark_incomplete(gained).await;
    }

    async fn adopt(&self, ring: Ring) {
        let encoded = encode_ring(&ring);
        let includes_me = ring.members().contains(&self.config.node_name);
        self.handle
            .with_chitchat(|c| c.self_node_state().set(KEY_RING, encoded.clone()))
            .await;
        if includes_me {
            *self.ring.write() = Some(Arc::new(ring));
        } else if self.ring().is_some() && self.leaving.read().contains(&self.config.node_name) {
            tracing::warn!(
                epoch = ring.epoch(),
                "this node is no longer in the ring: it left"
            );
            *self.after_leave.write() = Some(Arc::new(ring));
            self.left.store(true, std::sync::atomic::Ordering::Relaxed);
        } else if self.ring().is_some() {
            // Two claimants that briefly did not see each other live can
            // each claim the same epoch from different rings, and the one
            // that wins may lack a member. Nobody asked this node to leave:
            // the claimant, which sees it live, adds it back at its next
            // claim (members are the ring's plus the live nodes).
            tracing::warn!(
                epoch = ring.epoch(),
                "a ring without this node, which was not asked to leave; waiting to be claimed again"
            );
        }
    }

    /// Asks that `node` leave the ring; the claimant takes it out. Its
    /// partitions get pending owners and it keeps serving them until they
    /// are handed off, unless `force`: then the ring without it is in force
    /// at once, and what only it held is gone.
    pub async fn request_leave(&self, node: &str, force: bool) {
        let key = format!("{LEAVE_PREFIX}{node}");
        let value = if force { LEAVE_FORCED } else { "requested" };
        self.handle
            .with_chitchat(|c| c.self_node_state().set(key.clone(), value))
            .await;
    }

    /// Nodes asked to leave.
    pub fn leaving(&self) -> BTreeSet<String> {
        self.leaving.read().clone()
    }

    /// True once a ring without this node has replaced one with it.
    pub fn has_left(&self) -> bool {
        self.left.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The ring that took this node out, once it left.
    pub fn ring_after_leave(&self) -> Option<Arc<Ring>> {
        self.after_leave.read().clone()
    }

    pub async fn shutdown(&self) {
        let _ = self.handle.initiate_shutdown();
    }
}

/// This start's gossip generation: the clock's time (µs), but always past
/// the one the node used last (kept in `file`). Peers take a name's
/// highest generation as its current state: a node restarted with its
/// clock set back (by NTP, or 45 s off) had its new state ignored, its
/// incomplete marks and ring epoch with it.
fn next_generation(file: Option<&std::path::Path>) -> std::io::Result<u64> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let Some(file) = file else {
        return Ok(now);
    };
    let last = match std::fs::read_to_string(file) {
        Ok(text) => text.trim().parse::<u64>().unwrap_or(0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    let generation = now.max(last + 1);
    std::fs::write(file, generation.to_string())?;
    Ok(generation)
}

/// Each node name's state of its latest generation (a restarted node's
/// earlier states linger in gossip for a while).
fn latest_states(c: &chitchat::Chitchat) -> BTreeMap<String, (&ChitchatId, &chitchat::NodeState)> {
    let mut latest: BTreeMap<String, (&ChitchatId, &chitchat::NodeState)> = BTreeMap::new();
    for (id, state) in c.node_states() {
        let name = id.node_id.to_string();
        if latest
            .get(&name)
            .is_none_or(|(old, _)| old.generation_id < id.generation_id)
        {
            latest.insert(name, (id, state));
        }
    }
    latest
}

/// True when a ring has pending moves and every pending replica of every
/// moving partition is up and complete for it: the data followed the
/// partitions, and the pending claim may be put in force.
fn handed_off(
    ring: &Ring,
    n: usize,
    live: &BTreeSet<String>,
    incomplete: &BTreeMap<String, BTreeSet<u32>>,
    epochs: &BTreeMap<String, Option<u64>>,
) -> bool {
    if ring.next().is_none() {
        return false;
    }
    let n = ring.replicas(n);
    let on_this_ring = |node: &str| {
        epochs
            .get(node)
            .copied()
            .flatten()
            .is_some_and(|e| e >= ring.epoch())
    };
    (0..ring.partitions()).all(|p| {
        ring.pending_replicas(p, n).into_iter().all(|node| {
            live.contains(node)
                && on_this_ring(node)
                && incomplete.get(node).is_some_and(|i| !i.contains(&p))
        })
    })
}

/// Whether a gossiped ring may be adopted at all: this cluster's partition
/// count, an epoch (rings start at 1), and members that own partitions. A
/// ring that does not fit is ignored, whoever sends it.
fn fits(ring: &Ring, partitions: u32) -> bool {
    ring.partitions() == partitions && ring.epoch() >= 1 && !ring.members().is_empty()
}

/// The gossip cluster id: the name, and a hash of the name and secret.
pub fn cluster_id(name: &str, secret: &str) -> String {
    format!(
        "{name}-{:016x}",
        xxh3_64(format!("{name}\u{0}{secret}").as_bytes())
    )
}

/// Higher epochs win; equal epochs (two founders) are ordered by content so
/// that every node picks the same.
fn ring_order(r: &Ring) -> (u64, String) {
    (r.epoch(), encode_ring(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_gossips_a_later_generation_whatever_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gossip_generation");
        // The last start's generation is an hour ahead of this clock.
        let ahead = next_generation(None).unwrap() + 3_600_000_000;
        std::fs::write(&file, ahead.to_string()).unwrap();
        let next = next_generation(Some(&file)).unwrap();
        assert_eq!(next, ahead + 1);
        assert!(next_generation(Some(&file)).unwrap() > next);
    }

    #[test]
    fn rings_survive_encoding() {
        let names: Vec<NodeId> = ["b", "a", "c"].iter().map(|s| s.to_string()).collect();
        let ring = Ring::new(64, &names).unwrap().claim(&names[..2]).unwrap();
        assert_eq!(decode_ring(&encode_ring(&ring)), Some(ring.clone()));
        let moving = ring.claim_pending(&names).unwrap();
        assert!(moving.next().is_some());
        assert_eq!(decode_ring(&encode_ring(&moving)), Some(moving));
        assert_eq!(decode_ring("garbage"), None);
        assert!(fits(&ring, ring.partitions()));
        assert!(
            !fits(&ring, ring.partitions() * 2),
            "another partition count"
        );
    }

    #[test]
    fn a_pending_claim_is_handed_off_once_every_pending_replica_is_complete() {
        let names: Vec<NodeId> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let ring = Ring::new(16, &names[..3]).unwrap();
        assert!(
            !handed_off(
                &ring,
                1,
                &BTreeSet::new(),
                &BTreeMap::new(),
                &BTreeMap::new()
            ),
            "nothing pending"
        );
        let moving = ring.claim_pending(&names).unwrap();
        let gained: BTreeSet<u32> = (0..16)
            .filter(|&p| {
                moving
                    .pending_replicas(p, 1)
                    .iter()
                    .any(|n| n.as_str() == "d")
            })
            .collect();
        assert_eq!(gained.len(), 4);
        let live: BTreeSet<String> = names.iter().cloned().collect();
        let mut incomplete: BTreeMap<String, BTreeSet<u32>> =
            names.iter().map(|n| (n.clone(), BTreeSet::new())).collect();
        let mut epochs: BTreeMap<String, Option<u64>> = names
            .iter()
            .map(|n| (n.clone(), Some(moving.epoch())))
            .collect();
        incomplete.insert("d".into(), gained.clone());
        assert!(!handed_off(&moving, 1, &live, &incomplete, &epochs));
        incomplete.insert("d".into(), BTreeSet::new());
        assert!(handed_off(&moving, 1, &live, &incomplete, &epochs));
        // Its set, until it says it is on the pending ring, may predate it.
        epochs.insert("d".into(), Some(ring.epoch()));
        assert!(
            !handed_off(&moving, 1, &live, &incomplete, &epochs),
            "a pending replica not yet on the ring"
        );
        epochs.insert("d".into(), Some(moving.epoch()));
        let down: BTreeSet<String> = names[..3].iter().cloned().collect();
        assert!(
            !handed_off(&moving, 1, &down, &incomplete, &epochs),
            "a down pending replica"
        );
        let promoted = moving.promote();
        assert_eq!(promoted.epoch(), moving.epoch() + 1);
        assert_eq!(promoted.next(), None);
        assert_eq!(promoted.owners(), moving.next().unwrap());
    }

    #[test]
    fn the_secret_is_part_of_the_cluster_id() {
        assert_ne!(cluster_id("atoll", "s1"), cluster_id("atoll", "s2"));
        assert_eq!(cluster_id("atoll", "s1"), cluster_id("atoll", "s1"));
    }
}
