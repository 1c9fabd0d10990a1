//! A live view on the coordinator: one subscription per owner of a
//! coverage plan (one up, complete replica per partition, as for queries),
//! their gatherings merged and sent on as updates every 250 ms.
//!
//! The plan is made again every 2 s and whenever an owner's stream fails
//! or stays silent past its heartbeat: a down replica's partitions move to
//! another replica, or count as missing (each update says its coverage).
//! A reader slower than the updates never holds the owners back: what it
//! has not taken is merged into the next update (counts add up), which
//! says `lagging`; rows dropped on an owner's full queue say so too, and
//! the page then re-queries.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use atoll_cluster::messages::ACTION_LIVE;
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::StreamMap;

use super::gathered::Gathered;
use super::spec::LiveSpec;
use crate::coverage::Coverage;
use crate::engine::ClusterHandle;

const FLUSH: Duration = Duration::from_millis(250);
const REPLAN: Duration = Duration::from_secs(2);
/// An owner silent this long (it sends a heartbeat every 2 s) is treated
/// as failed.
const SILENT: Duration = Duration::from_secs(6);
/// A failed owner is left out of plans this long, twice as long after
/// each further failure (at most `BENCHED_MAX`).
const BENCHED: Duration = Duration::from_secs(5);
const BENCHED_MAX: Duration = Duration::from_secs(60);
/// How long opening a subscription on an owner may take.
const OPEN_WAIT: Duration = Duration::from_secs(3);
/// Updates waiting for the reader; past them, the reader is lagging.
const UPDATES_WAITING: usize = 4;

/// One aggregate row of an update: a time bucket (seconds since the
/// epoch), group values, one value per aggregate of the spec.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LiveBucket {
    pub t: i64,
    pub group: Vec<Option<String>>,
    pub values: Vec<Option<f64>>,
}

/// What changed since the last update.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LiveUpdate {
    /// Added to the chart: counts and sums add, min and max combine.
    pub buckets: Vec<LiveBucket>,
    /// New matching events, oldest first.
    pub samples: Vec<Map<String, Value>>,
    /// Share of the table's partitions followed.
    pub coverage: f64,
    pub missing_partitions: usize,
    /// The reader fell behind: this update holds several updates' worth
    /// (counts still exact).
    pub lagging: bool,
    /// Events were dropped on the way (a full queue on an owner, an owner
    /// resubscribed while the plan changed): counts may be low until the
    /// page queries again.
    pub lost: bool,
    /// More groups than a live view keeps: some were not counted.
    pub overflow: bool,
}

/// A live view's updates, as long as it is read; dropping it stops the
/// subscriptions on every owner.
pub struct LiveStream {
    updates: mpsc::Receiver<LiveUpdate>,
    task: tokio::task::JoinHandle<()>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl LiveStream {
    pub async fn next(&mut self) -> Option<LiveUpdate> {
        self.updates.recv().await
    }
}

impl Drop for LiveStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) fn start(
    cluster: ClusterHandle,
    spec: LiveSpec,
    permit: tokio::sync::OwnedSemaphorePermit,
    stop: tokio::sync::watch::Receiver<bool>,
) -> LiveStream {
    let (tx, updates) = mpsc::channel(UPDATES_WAITING);
    let task = tokio::spawn(Follow::new(cluster, spec, tx).run(stop));
    LiveStream {
        updates,
        task,
        _permit: permit,
    }
}

/// An owner's answers (the stream map's key names the owner): a gathering,
/// a heartbeat (None), or the end of its stream (an error).
type Answers = BoxStream<'static, Result<Option<Gathered>, String>>;

struct Follow {
    cluster: ClusterHandle,
    spec: LiveSpec,
    tx: mpsc::Sender<LiveUpdate>,
    plan: BTreeMap<String, Vec<u32>>,
    missing: usize,
    total: usize,
    sources: StreamMap<String, Answers>,
    heard: HashMap<String, Instant>,
    /// Owners left out of plans: until when, and for how long last time.
    benched: HashMap<String, (Instant, Duration)>,
    pending: Gathered,
    lagging: bool,
    /// The missing partitions the reader was last told of (None: nothing
    /// sent yet).
    told_missing: Option<usize>,
}

impl Follow {
    fn new(cluster: ClusterHandle, spec: LiveSpec, tx: mpsc::Sender<LiveUpdate>) -> Follow {
        Follow {
            cluster,
            spec,
            tx,
            plan: BTreeMap::new(),
            missing: 0,
            total: 0,
            sources: StreamMap::new(),
            heard: HashMap::new(),
            benched: HashMap::new(),
            pending: Gathered::default(),
            lagging: false,
            told_missing: None,
        }
    }

    async fn run(mut self, mut stop: tokio::sync::watch::Receiver<bool>) {
        self.replan().await;
        let mut flush = tokio::time::interval(FLUSH);
        let mut replan = tokio::time::interval(REPLAN);
        loop {
            tokio::select! {
                _ = self.tx.closed() => return,
                // The node is stopping: the stream ends, so that its
                // response does too.
                _ = stop.changed() => return,
                Some((node, answer)) = self.sources.next() => self.heard_from(node, answer).await,
                _ = flush.tick() => {
                    if !self.flush() {
                        return;
                    }
                }
                _ = replan.tick() => {
                    let now = Instant::now();
                    let silent: Vec<String> = self
                        .heard
                        .iter()
                        .filter(|(_, at)| now.duration_since(**at) > SILENT)
                        .map(|(n, _)| n.clone())
                        .collect();
                    for node in silent {
                        tracing::warn!(node, "a live subscription's owner went silent");
                        self.bench(&node);
                    }
                    self.replan().await;
                }
            }
        }
    }

    async fn heard_from(&mut self, node: String, answer: Result<Option<Gathered>, String>) {
        match answer {
            Ok(g) => {
                self.heard.insert(node, Instant::now());
                if let Some(g) = g {
                    self.pending.merge(g);
                }
            }
            Err(why) => {
                tracing::warn!(node, why, "a live subscription's owner stopped answering");
                self.bench(&node);
                self.replan().await;
            }
        }
    }

    /// Leaves an owner out of plans for a while (longer each time in a
    /// row); what it gathered and did not send is lost.
    fn bench(&mut self, node: &str) {
        let last = self.benched.get(node).map(|b| b.1);
        let wait = last.map_or(BENCHED, |d| (d * 2).min(BENCHED_MAX));
        self.benched
            .insert(node.to_string(), (Instant::now() + wait, wait));
        self.unsubscribe(node);
    }

    /// Stops following an owner; what it gathered and did not send is
    /// lost, and the next update says so.
    fn unsubscribe(&mut self, node: &str) {
        self.heard.remove(node);
        if self.sources.remove(node).is_some() {
            self.pending.lost = true;
        }
    }

    /// Sends what is pending, or an empty update when the coverage changed
    /// (the first says it); false once the reader is gone.
    fn flush(&mut self) -> bool {
        if self.pending.is_empty() && self.told_missing == Some(self.missing) {
            return true;
        }
        let update = self.update();
        match self.tx.try_send(update) {
            Ok(()) => {
                self.pending = Gathered::default();
                self.lagging = false;
                self.told_missing = Some(self.missing);
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.lagging = true;
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn update(&self) -> LiveUpdate {
        let mut buckets = Vec::with_capacity(self.pending.buckets.len());
        let mut keys: Vec<_> = self.pending.buckets.iter().collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        for ((t, group), states) in keys {
            buckets.push(LiveBucket {
                t: *t,
                group: group.clone(),
                values: self
                    .spec
                    .aggregates
                    .iter()
                    .zip(states)
                    .map(|(a, s)| a.value(s))
                    .collect(),
            });
        }
        LiveUpdate {
            buckets,
            samples: self.pending.samples.clone(),
            coverage: if self.total == 0 {
                1.0
            } else {
                (self.total - self.missing) as f64 / self.total as f64
            },
            missing_partitions: self.missing,
            lagging: self.lagging,
            lost: self.pending.lost,
            overflow: self.pending.overflow,
        }
    }

    /// The coverage plan without benched owners; subscribes again the
    /// owners whose partitions changed, and only them.
    async fn replan(&mut self) {
        let now = Instant::now();
        // A bench that ended is remembered a while, for the next one's
        // length.
        self.benched.retain(|_, (until, wait)| *until + *wait > now);
        let Some(ring) = self.cluster.membership.ring() else {
            return;
        };
        let mut members = self.cluster.membership.members().await;
        for m in &mut members {
            if self
                .benched
                .get(&m.name)
                .is_some_and(|(until, _)| *until > now)
            {
                m.up = false;
            }
        }
        let me = self.cluster.membership.node_name().to_string();
        let all: BTreeSet<u32> = (0..ring.partitions()).collect();
        let n = ring.replicas(self.cluster.replicas);
        let w = atoll_cluster::replicate::write_quorum(n, self.cluster.write_quorum);
        let cov = Coverage::plan(&ring, (n, w), &members, &me, &all);
        self.total = all.len();
        self.missing = cov.missing.len();
        if cov.by_node == self.plan {
            return;
        }
        let addrs: HashMap<String, String> = members
            .iter()
            .filter_map(|m| Some((m.name.clone(), m.flight_addr.clone()?)))
            .collect();
        let before = std::mem::replace(&mut self.plan, cov.by_node);
        for node in before.keys() {
            if !self.plan.contains_key(node) {
                self.unsubscribe(node);
            }
        }
        for (node, partitions) in self.plan.clone() {
            if before.get(&node) == Some(&partitions) && self.sources.contains_key(&node) {
                continue;
            }
            let Some(addr) = addrs.get(&node) else {
                continue;
            };
            let mut spec = self.spec.clone();
            spec.partitions = partitions.into_iter().collect();
            self.unsubscribe(&node);
            // Opened as the stream is first polled: a plan never waits on
            // the network.
            let answers = subscribe(self.cluster.clone(), addr.clone(), spec);
            self.sources.insert(node.clone(), answers);
            self.heard.insert(node, now);
        }
    }
}

/// An owner's answers as a stream (opened when first polled, within
/// `OPEN_WAIT`) that ends with an error item.
fn subscribe(cluster: ClusterHandle, addr: String, spec: LiveSpec) -> Answers {
    let body = serde_json::to_vec(&spec).unwrap_or_default();
    let opened = async move {
        match tokio::time::timeout(OPEN_WAIT, cluster.peers.subscribe(&addr, ACTION_LIVE, body))
            .await
        {
            Ok(Ok(s)) => answers(s),
            Ok(Err(e)) => failed(e.to_string()),
            Err(_) => failed(format!("no answer within {} s", OPEN_WAIT.as_secs())),
        }
    };
    Box::pin(stream::once(opened).flatten())
}

fn failed(why: String) -> Answers {
    Box::pin(stream::once(async move { Err(why) }))
}

fn answers<E: std::fmt::Display>(
    answers: impl futures::Stream<Item = Result<arrow_flight::Result, E>> + Send + 'static,
) -> Answers {
    let items = answers.map(|item| match item {
        Ok(r) if r.body.is_empty() => Ok(None),
        Ok(r) => serde_json::from_slice::<Gathered>(&r.body)
            .map(Some)
            .map_err(|e| format!("an unreadable live message: {e}")),
        Err(s) => Err(s.to_string()),
    });
    Box::pin(items.chain(failed("the stream ended".to_string())))
}
