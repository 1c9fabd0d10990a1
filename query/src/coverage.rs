//! The coverage plan of a query (riak_core's coverage query): for every
//! partition exactly one replica that is up and complete, preferring the
//! coordinator, grouped by node; a partition of which the coordinator
//! sees fewer than N - W + 1 replicas up is missing.

use std::collections::{BTreeMap, BTreeSet};

use atoll_cluster::Member;
use atoll_ring::Ring;

/// Partitions per node, and the partitions no replica could cover.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    pub by_node: BTreeMap<String, Vec<u32>>,
    pub missing: Vec<u32>,
    /// The other usable replicas of each covered partition, for retries.
    pub alternates: BTreeMap<u32, Vec<String>>,
}

impl Coverage {
    /// The plan for the `needed` partitions (those the query's scans read;
    /// the others are never asked, nor missing).
    pub fn plan(
        ring: &Ring,
        (n, w): (usize, usize),
        members: &[Member],
        me: &str,
        needed: &BTreeSet<u32>,
    ) -> Coverage {
        // Replicas that a write did not reach, by a report their node has
        // not acted on yet: their copy may lack acknowledged events before
        // they even know it.
        let suspect: BTreeSet<(&str, u32)> = atoll_cluster::membership::unseen_missed(members)
            .map(|r| (r.replica, r.partition))
            .collect();
        // A replica still on an older ring than this one may not have
        // marked a partition it gains in this one as incomplete yet (it
        // marks them before it adopts a ring, so one that says it is on
        // this ring or a later one has). One on a later ring still holds
        // what this ring gives it: partitions are dropped only once every
        // node routes with the later ring.
        let same_ring = |m: &Member| m.name == me || m.ring_epoch >= Some(ring.epoch());
        let usable = |node: &str, p: u32| {
            members
                .iter()
                .any(|m| m.name == node && m.up && !m.incomplete.contains(&p) && same_ring(m))
                && !suspect.contains(&(node, p))
        };
        let mut cov = Coverage::default();
        let up = |node: &str| node == me || members.iter().any(|m| m.name == node && m.up);
        for p in needed.iter().copied().filter(|&p| p < ring.partitions()) {
            let replicas = ring.primaries(p, n);
            // An acknowledged write is on W replicas: unless this node sees
            // N - W + 1 of them up, all it can read may have missed it (this
            // node cut off from the others, their reports of missed writes
            // with them), and the partition counts as missing.
            let seen = replicas.iter().filter(|r| up(r)).count();
            if seen + w < replicas.len() + 1 {
                cov.missing.push(p);
                continue;
            }
            let pick = replicas
                .iter()
                .find(|r| r.as_str() == me && usable(me, p))
                .or_else(|| replicas.iter().find(|r| usable(r, p)));
            match pick {
                Some(node) => {
                    cov.by_node.entry((*node).clone()).or_default().push(p);
                    let others = replicas
                        .iter()
                        .filter(|r| *r != node && usable(r, p))
                        .map(|r| (*r).clone());
                    cov.alternates.insert(p, others.collect());
                }
                None => cov.missing.push(p),
            }
        }
        cov
    }

    /// True when the coordinator covers everything itself.
    pub fn is_local(&self, me: &str) -> bool {
        self.missing.is_empty() && self.by_node.keys().all(|n| n == me)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member on the tests' rings (epoch 1, `Ring::new`'s).
    fn member(name: &str, up: bool, incomplete: &[u32]) -> Member {
        Member {
            name: name.into(),
            up,
            incomplete: incomplete.iter().copied().collect(),
            ring_epoch: Some(1),
            ..Default::default()
        }
    }

    fn all(n: u32) -> BTreeSet<u32> {
        (0..n).collect()
    }

    #[test]
    fn only_needed_partitions_are_planned() {
        let names: Vec<String> = (0..3).map(|i| format!("n{i}")).collect();
        let ring = Ring::new(8, &names).unwrap();
        let members = vec![
            member("n0", true, &[]),
            member("n1", false, &[]),
            member("n2", true, &[]),
        ];
        // N=1: partition 1 lives on the down n1 alone, partition 0 on n0.
        let c = Coverage::plan(&ring, (1, 1), &members, "n2", &BTreeSet::from([0]));
        assert_eq!(c.missing, Vec::<u32>::new(), "{c:?}");
        assert_eq!(c.by_node.keys().collect::<Vec<_>>(), ["n0"], "{c:?}");
        let c = Coverage::plan(&ring, (1, 1), &members, "n2", &BTreeSet::from([0, 1]));
        assert_eq!(c.missing, vec![1]);
    }

    #[test]
    fn prefers_the_coordinator_then_any_complete_up_replica() {
        let names: Vec<String> = (0..3).map(|i| format!("n{i}")).collect();
        let ring = Ring::new(8, &names).unwrap();
        let all_up: Vec<Member> = names.iter().map(|n| member(n, true, &[])).collect();
        let c = Coverage::plan(&ring, (3, 2), &all_up, "n1", &all(8));
        assert!(c.is_local("n1"), "{c:?}");
        let c = Coverage::plan(&ring, (1, 1), &all_up, "n1", &all(8));
        assert_eq!(c.by_node.values().map(Vec::len).sum::<usize>(), 8);
        assert_eq!(
            c.by_node.len(),
            3,
            "N=1: every owner serves its own partitions"
        );
        let down = vec![
            member("n0", true, &[]),
            member("n1", false, &[]),
            member("n2", true, &[0, 1, 2, 3, 4, 5, 6, 7]),
        ];
        let c = Coverage::plan(&ring, (3, 2), &down, "n1", &all(8));
        assert_eq!(
            c.by_node.keys().collect::<Vec<_>>(),
            ["n0"],
            "down and incomplete replicas are not used"
        );
        let c = Coverage::plan(&ring, (1, 1), &down, "n0", &all(8));
        assert_eq!(
            c.missing.len(),
            5,
            "N=1 with two unusable nodes: their partitions are missing: {c:?}"
        );
    }

    #[test]
    fn a_coordinator_cut_off_from_the_other_replicas_answers_partially() {
        let names: Vec<String> = (0..3).map(|i| format!("n{i}")).collect();
        let ring = Ring::new(8, &names).unwrap();
        let alone = vec![
            member("n0", true, &[]),
            member("n1", false, &[]),
            member("n2", false, &[]),
        ];
        // N=3, W=2: a write acknowledged by n1 and n2 alone is not on n0.
        let c = Coverage::plan(&ring, (3, 2), &alone, "n0", &all(8));
        assert_eq!(c.missing.len(), 8, "{c:?}");
        // One other replica seen: every acknowledged write is on n0 or on
        // it (and a report of what n0 missed would be seen with it).
        let mut two = alone.clone();
        two[1].up = true;
        let c = Coverage::plan(&ring, (3, 2), &two, "n0", &all(8));
        assert!(c.missing.is_empty() && c.is_local("n0"), "{c:?}");
        // W=1: only every replica seen up is enough.
        let c = Coverage::plan(&ring, (3, 1), &two, "n0", &all(8));
        assert_eq!(c.missing.len(), 8, "{c:?}");
        // W=N: any replica holds every acknowledged write.
        let c = Coverage::plan(&ring, (3, 3), &alone, "n0", &all(8));
        assert!(c.missing.is_empty(), "{c:?}");
    }

    #[test]
    fn replicas_on_an_older_ring_are_not_used() {
        let names: Vec<String> = (0..3).map(|i| format!("n{i}")).collect();
        let ring = Ring::new(8, &names).unwrap();
        let mut members: Vec<Member> = names.iter().map(|n| member(n, true, &[])).collect();
        members[0].incomplete = all(8);
        members[1].ring_epoch = Some(0);
        members[2].ring_epoch = None;
        let c = Coverage::plan(&ring, (3, 2), &members, "n0", &all(8));
        assert_eq!(c.missing.len(), 8, "{c:?}");
        members[2].ring_epoch = Some(2);
        let c = Coverage::plan(&ring, (3, 2), &members, "n0", &all(8));
        assert_eq!(c.by_node.keys().collect::<Vec<_>>(), ["n2"], "{c:?}");
        // The coordinator reads its own copies, on its own ring.
        let c = Coverage::plan(&ring, (3, 2), &members, "n1", &all(8));
        assert!(c.is_local("n1"), "{c:?}");
    }

    #[test]
    fn a_replica_that_missed_writes_is_not_used_until_it_knows() {
        let names: Vec<String> = (0..3).map(|i| format!("n{i}")).collect();
        let ring = Ring::new(8, &names).unwrap();
        let mut members: Vec<Member> = names.iter().map(|n| member(n, true, &[])).collect();
        // n0 could not write partition 2 to n1 at t=100.
        members[0].missed.insert(("n1".into(), 2), 100);
        let c = Coverage::plan(&ring, (3, 2), &members, "n1", &all(8));
        assert_eq!(c.by_node.get("n1").map(Vec::len), Some(7), "{c:?}");
        assert!(!c.alternates[&2].contains(&"n1".to_string()), "{c:?}");
        // Once n1 has acted on it (marked partition 2 incomplete, then said
        // so), its incomplete mark is what counts.
        members[1].missed_seen.insert("n0".into(), 100);
        let c = Coverage::plan(&ring, (3, 2), &members, "n1", &all(8));
        assert!(c.is_local("n1"), "{c:?}");
        members[1].incomplete.insert(2);
        let c = Coverage::plan(&ring, (3, 2), &members, "n1", &all(8));
        assert_eq!(c.by_node.get("n1").map(Vec::len), Some(7), "{c:?}");
    }
}
