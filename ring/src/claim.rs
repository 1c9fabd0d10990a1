//! Which node owns which partition, and the preference list of a partition.
//!
//! The ring depends only on the joined members: stopping a node does not
//! change it. A new ring is derived from the previous one so that a join or
//! a leave moves about `1/n` of the partitions, never a reshuffle.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::hash::PartitionId;

/// A node's stable name in the cluster.
pub type NodeId = String;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RingError {
    #[error("the partition count must be a power of two between 1 and 65536, got {0}")]
    BadPartitionCount(u32),
    #[error("a ring needs at least one member")]
    NoMembers,
    #[error(
        "{members} members cannot share {partitions} partitions: at most one node per partition"
    )]
    TooManyMembers { members: usize, partitions: u32 },
}

/// Partition -> owner, versioned by an epoch; and, while partitions are
/// moving, the claim they are moving to.
///
/// `owners` serve reads and count towards write quorums. `next` is the
/// claim for the members the ring is becoming: a partition whose owner
/// differs there has a *pending owner*, which receives every new write but
/// serves nothing until the partition's data has been handed to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ring {
    epoch: u64,
    owners: Vec<NodeId>,
    #[serde(default)]
    next: Option<Vec<NodeId>>,
}

impl Ring {
    /// The first ring of a cluster: owners striped round-robin, so that
    /// neighbouring partitions have distinct owners.
    pub fn new(partitions: u32, members: &[NodeId]) -> Result<Ring, RingError> {
        let members = sorted_members(partitions, members)?;
        let owners = (0..partitions as usize)
            .map(|p| members[p % members.len()].clone())
            .collect();
        Ok(Ring {
            epoch: 1,
            owners,
            next: None,
        })
    }

    /// The next ring for a new member set, in force at once: partitions
    /// move as few as balance allows (counts per node differ by at most
    /// one). Right for a ring that holds no data yet.
    pub fn claim(&self, members: &[NodeId]) -> Result<Ring, RingError> {
        let owners = claim_owners(&self.owners, members)?;
        let changed = owners != self.owners || self.next.is_some();
        Ok(Ring {
            epoch: self.epoch + u64::from(changed),
            owners,
            next: None,
        })
    }

    /// The next ring for a new member set when data must follow the
    /// partitions: the current owners keep serving, and the new claim
    /// becomes `next` until handoff promotes it. The claim starts from the
    /// serving owners, so the data to move stays minimal however many
    /// joins and leaves pile up before a handoff.
    pub fn claim_pending(&self, members: &[NodeId]) -> Result<Ring, RingError> {
        let next = claim_owners(&self.owners, members)?;
        let next = (next != self.owners).then_some(next);
        let changed = next != self.next;
        Ok(Ring {
            epoch: self.epoch + u64::from(changed),
            owners: self.owners.clone(),
            next,
        })
    }

    /// The ring with its pending claim in force: what handoff ends with.
    pub fn promote(&self) -> Ring {
        match &self.next {
            Some(next) => Ring {
                epoch: self.epoch + 1,
                owners: next.clone(),
                next: None,
            },
            None => self.clone(),
        }
    }

    /// The owner a partition is moving to, if it is moving.
    pub fn pending_owner(&self, partition: PartitionId) -> Option<&NodeId> {
        let next = &self.next.as_ref()?[partition as usize];
        (*next != self.owners[partition as usize]).then_some(next)
    }

    /// The claim partitions are moving to, if any are.
    pub fn next(&self) -> Option<&[NodeId]> {
        self.next.as_deref()
    }

    /// Nodes that will be primaries of `partition` once pending moves
    /// complete and are not now: they take its writes but serve nothing.
    pub fn pending_replicas(&self, partition: PartitionId, n: usize) -> Vec<&NodeId> {
        let Some(next) = &self.next else {
            return Vec::new();
        };
        let now = self.primaries(partition, n);
        preference_walk(next, partition)
            .into_iter()
            .take(n)
            .filter(|node| !now.contains(node))
            .collect()
    }

    /// Partitions `node` is a primary or a pending replica of.
    pub fn held_by(&self, node: &str, n: usize) -> Vec<PartitionId> {
        (0..self.partitions())
            .filter(|&p| {
                self.primaries(p, n)
                    .into_iter()
                    .chain(self.pending_replicas(p, n))
                    .any(|m| m.as_str() == node)
            })
            .collect()
    }
}

/// Claims `members` from `owners`, moving as few partitions as balance
/// allows.
fn claim_owners(current: &[NodeId], members: &[NodeId]) -> Result<Vec<NodeId>, RingError> {
    let partitions = current.len() as u32;
    let members = sorted_members(partitions, members)?;
    let targets = target_counts(current, &members, partitions);
    let mut kept: BTreeMap<&NodeId, usize> = BTreeMap::new();
    let mut owners: Vec<Option<NodeId>> = Vec::with_capacity(current.len());
    for owner in current {
        let count = kept.entry(owner).or_default();
        if targets.get(owner).is_some_and(|&t| *count < t) {
            *count += 1;
            owners.push(Some(owner.clone()));
        } else {
            owners.push(None);
        }
    }
    let mut deficits: Vec<(NodeId, usize)> = members
        .iter()
        .map(|m| (m.clone(), targets[m] - kept.get(m).copied().unwrap_or(0)))
        .filter(|(_, d)| *d > 0)
        .collect();
    for p in 0..owners.len() {
        if owners[p].is_none() {
            let node = pick_for_slot(&owners, p, &mut deficits);
            owners[p] = Some(node);
        }
    }
    Ok(owners
        .into_iter()
        .map(|o| o.expect("every slot claimed"))
        .collect())
}

impl Ring {
    /// A ring as gossiped: its epoch, the owner of each partition and the
    /// claim partitions are moving to.
    pub fn from_parts(epoch: u64, owners: Vec<NodeId>, next: Option<Vec<NodeId>>) -> Option<Ring> {
        let fits = next.as_ref().is_none_or(|n| n.len() == owners.len());
        (owners.len().is_power_of_two() && epoch > 0 && fits).then_some(Ring {
            epoch,
            owners,
            next,
        })
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn partitions(&self) -> u32 {
        self.owners.len() as u32
    }

    pub fn owner(&self, partition: PartitionId) -> &NodeId {
        &self.owners[partition as usize]
    }

    pub fn owners(&self) -> &[NodeId] {
        &self.owners
    }

    /// The replicas a partition actually has for a configured N: N, but
    /// never more than the ring has serving nodes, nor fewer than one.
    pub fn replicas(&self, n: usize) -> usize {
        let serving: BTreeSet<&NodeId> = self.owners.iter().collect();
        n.clamp(1, serving.len().max(1))
    }

    /// The distinct members of the ring, serving or pending, sorted.
    pub fn members(&self) -> BTreeSet<&NodeId> {
        self.owners
            .iter()
            .chain(self.next.iter().flatten())
            .collect()
    }

    /// Every distinct serving node, walking clockwise from `partition`: the
    /// first `n` are the primaries, the rest the fallbacks in order.
    pub fn preference_list(&self, partition: PartitionId) -> Vec<&NodeId> {
        preference_walk(&self.owners, partition)
    }

    /// The first `n` distinct nodes clockwise from `partition`.
    pub fn primaries(&self, partition: PartitionId, n: usize) -> Vec<&NodeId> {
        let mut list = self.preference_list(partition);
        list.truncate(n);
        list
    }

    /// Partitions whose primaries (for replication factor `n`) include `node`.
    pub fn partitions_of(&self, node: &str, n: usize) -> Vec<PartitionId> {
        (0..self.partitions())
            .filter(|&p| self.primaries(p, n).iter().any(|m| m.as_str() == node))
            .collect()
    }
}

fn preference_walk(owners: &[NodeId], partition: PartitionId) -> Vec<&NodeId> {
    let len = owners.len();
    let mut seen = Vec::new();
    for step in 0..len {
        let owner = &owners[(partition as usize + step) % len];
        if !seen.contains(&owner) {
            seen.push(owner);
        }
    }
    seen
}

fn sorted_members(partitions: u32, members: &[NodeId]) -> Result<Vec<NodeId>, RingError> {
    if !partitions.is_power_of_two() || partitions > 65_536 {
        return Err(RingError::BadPartitionCount(partitions));
    }
    let members: Vec<NodeId> = members
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if members.is_empty() {
        return Err(RingError::NoMembers);
    }
    if members.len() > partitions as usize {
        return Err(RingError::TooManyMembers {
            members: members.len(),
            partitions,
        });
    }
    Ok(members)
}

/// How many partitions each member should own: `P / n`, and one more for
/// the `P % n` members that already own the most (so they lose nothing).
fn target_counts(
    owners: &[NodeId],
    members: &[NodeId],
    partitions: u32,
) -> BTreeMap<NodeId, usize> {
    let n = members.len();
    let base = partitions as usize / n;
    let extra = partitions as usize % n;
    let mut by_current: Vec<(usize, &NodeId)> = members
        .iter()
        .map(|m| (owners.iter().filter(|o| *o == m).count(), m))
        .collect();
    by_current.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    by_current
        .into_iter()
        .enumerate()
        .map(|(i, (_, m))| (m.clone(), base + usize::from(i < extra)))
        .collect()
}

/// Picks the node with the largest deficit that does not already own a
/// neighbouring partition, so preference lists stay distinct.
fn pick_for_slot(owners: &[Option<NodeId>], p: usize, deficits: &mut [(NodeId, usize)]) -> NodeId {
    let len = owners.len();
    let prev = owners[(p + len - 1) % len].as_ref();
    let next = owners[(p + 1) % len].as_ref();
    let candidates = deficits.iter().enumerate().filter(|(_, (_, d))| *d > 0);
    let best = candidates
        .clone()
        .filter(|(_, (m, _))| Some(m) != prev && Some(m) != next)
        .max_by_key(|(i, (_, d))| (*d, std::cmp::Reverse(*i)))
        .or_else(|| candidates.max_by_key(|(i, (_, d))| (*d, std::cmp::Reverse(*i))))
        .map(|(i, _)| i)
        .expect("deficits cover every unclaimed partition");
    deficits[best].1 -= 1;
    deficits[best].0.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(n: usize) -> Vec<NodeId> {
        (0..n).map(|i| format!("node-{i:02}")).collect()
    }

    fn counts(ring: &Ring) -> Vec<usize> {
        ring.members()
            .iter()
            .map(|m| ring.owners().iter().filter(|o| o == m).count())
            .collect()
    }

    fn moved(a: &Ring, b: &Ring) -> usize {
        a.owners()
            .iter()
            .zip(b.owners())
            .filter(|(x, y)| x != y)
            .count()
    }

    #[test]
    fn single_node_owns_everything() {
        let ring = Ring::new(64, &names(1)).unwrap();
        assert!(ring.owners().iter().all(|o| o == "node-00"));
        assert_eq!(ring.preference_list(5), vec!["node-00"]);
    }

    #[test]
    fn refuses_bad_partition_counts() {
        assert_eq!(
            Ring::new(48, &names(1)),
            Err(RingError::BadPartitionCount(48))
        );
        assert_eq!(Ring::new(64, &[]), Err(RingError::NoMembers));
    }

    #[test]
    fn unchanged_membership_keeps_the_epoch() {
        let ring = Ring::new(64, &names(3)).unwrap();
        assert_eq!(ring.claim(&names(3)).unwrap(), ring);
    }

    #[test]
    fn a_pending_claim_keeps_the_owners_serving() {
        let ring = Ring::new(64, &names(3)).unwrap();
        let joined = ring.claim_pending(&names(4)).unwrap();
        assert_eq!(joined.epoch(), ring.epoch() + 1);
        assert_eq!(
            joined.owners(),
            ring.owners(),
            "the old owners keep serving"
        );
        assert_eq!(joined.next(), Some(ring.claim(&names(4)).unwrap().owners()));
        assert_eq!(joined.members().len(), 4, "the joiner is in the ring");
        assert_eq!(joined.replicas(3), 3);
        let moving: Vec<u32> = (0..64)
            .filter(|&p| joined.pending_owner(p).is_some())
            .collect();
        assert_eq!(moving.len(), 16);
        assert!(
            moving
                .iter()
                .all(|&p| joined.pending_owner(p).unwrap() == "node-03")
        );
        let p = moving[0];
        assert!(
            joined
                .pending_replicas(p, 1)
                .iter()
                .any(|n| *n == "node-03")
        );
        let targets = write_targets(&joined, p, 1, |_| true);
        assert_eq!(
            targets.len(),
            2,
            "the owner and the pending owner: {targets:?}"
        );
        assert!(!targets[0].pending && targets[1].pending && targets[1].node == "node-03");
        assert_eq!(
            joined.held_by("node-03", 3).len(),
            (0..64)
                .filter(|&q| !joined.pending_replicas(q, 3).is_empty())
                .count()
        );
        assert_eq!(
            joined.claim_pending(&names(4)).unwrap(),
            joined,
            "nothing new"
        );
        let done = joined.claim(&names(4)).unwrap();
        assert_eq!(
            done.owners(),
            joined.next().unwrap(),
            "promotion applies the claim"
        );
        assert_eq!(done.next(), None);
        assert_eq!(done.epoch(), joined.epoch() + 1);
    }

    #[test]
    fn a_pending_leave_keeps_the_leaver_until_handoff() {
        let ring = Ring::new(64, &names(4)).unwrap();
        let leaving = ring.claim_pending(&names(3)).unwrap();
        assert!(leaving.members().iter().any(|m| *m == "node-03"));
        assert!(leaving.next().unwrap().iter().all(|o| o != "node-03"));
        assert_eq!(leaving.owners(), ring.owners());
        let back = leaving.claim_pending(&names(4)).unwrap();
        assert_eq!(back.next(), None, "cancelling the leave cancels the moves");
        assert_eq!(back.owners(), ring.owners());
    }

    proptest! {
        #[test]
        fn claim_is_balanced_distinct_and_moves_little(nodes in 1usize..=16, k in 3u32..=10, n in 1usize..=5) {
            let partitions = 1u32 << k;
            prop_assume!(nodes < partitions as usize);
            let ring = Ring::new(partitions, &names(nodes)).unwrap();
            let grown = ring.claim(&names(nodes + 1)).unwrap();
            let shrunk = grown.claim(&names(nodes)).unwrap();
            for r in [&ring, &grown, &shrunk] {
                let c = counts(r);
                prop_assert!(c.iter().max().unwrap() - c.iter().min().unwrap() <= 1, "unbalanced {:?}", c);
                let members = r.members().len();
                for p in 0..partitions {
                    let prim = r.primaries(p, n);
                    prop_assert_eq!(prim.len(), n.min(members));
                    let distinct: BTreeSet<_> = prim.iter().collect();
                    prop_assert_eq!(distinct.len(), prim.len());
                }
            }
            // A join moves what the new node must take, a leave what it held.
            let fair = (partitions as usize).div_ceil(nodes + 1);
            prop_assert!(moved(&ring, &grown) <= fair, "join moved {} > {}", moved(&ring, &grown), fair);
            prop_assert!(moved(&grown, &shrunk) <= fair, "leave moved {} > {}", moved(&grown, &shrunk), fair);
            prop_assert_eq!(grown.epoch(), ring.epoch() + 1);
        }
    }
}

/// Where one replica of a partition's write goes: the node, the down
/// primary it stands in for when it is a fallback, and whether it is a
/// pending replica (it takes the write, but does not count towards W).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub node: NodeId,
    pub hint_for: Option<NodeId>,
    pub pending: bool,
}

/// The replicas a write of `partition` goes to: each of the first `n`
/// preference-list nodes that is up, and for each one down, the next up
/// fallback, holding a hint for it (fewer than `n` when too few are up);
/// then every up pending replica, so that a moving partition's new owner
/// misses no write made while it waits for the data from before.
pub fn write_targets(
    ring: &Ring,
    partition: PartitionId,
    n: usize,
    up: impl Fn(&str) -> bool,
) -> Vec<Target> {
    let list = ring.preference_list(partition);
    let n = n.min(list.len());
    let (primaries, fallbacks) = list.split_at(n);
    let mut spare = fallbacks.iter().filter(|f| up(f));
    let mut targets = Vec::with_capacity(n);
    for p in primaries {
        if up(p) {
            targets.push(Target {
                node: (*p).clone(),
                hint_for: None,
                pending: false,
            });
        } else if let Some(f) = spare.next() {
            targets.push(Target {
                node: (*f).clone(),
                hint_for: Some((*p).clone()),
                pending: false,
            });
        }
    }
    for node in ring.pending_replicas(partition, n) {
        if up(node) && !targets.iter().any(|t| t.node == *node) {
            targets.push(Target {
                node: node.clone(),
                hint_for: None,
                pending: true,
            });
        }
    }
    targets
}

#[cfg(test)]
mod target_tests {
    use super::*;

    #[test]
    fn fallbacks_stand_in_for_down_primaries() {
        let names: Vec<NodeId> = (0..4).map(|i| format!("n{i}")).collect();
        let ring = Ring::new(8, &names).unwrap();
        // partition 0: n0, n1, n2 primaries; n3 fallback.
        let all = write_targets(&ring, 0, 3, |_| true);
        assert_eq!(
            all.iter().map(|t| t.node.as_str()).collect::<Vec<_>>(),
            ["n0", "n1", "n2"]
        );
        let one_down = write_targets(&ring, 0, 3, |n| n != "n1");
        assert_eq!(
            one_down[1],
            Target {
                node: "n3".into(),
                hint_for: Some("n1".into()),
                pending: false,
            }
        );
        let two_down = write_targets(&ring, 0, 3, |n| n != "n1" && n != "n2");
        assert_eq!(two_down.len(), 2, "one fallback for two down primaries");
    }
}
