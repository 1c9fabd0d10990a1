//! The coverage plan of a query (riak_core's coverage query): for every
//! partition exactly one replica that is up and complete, preferring the
//! coordinator, grouped by node.

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
        n: usize,
        members: &[Member],
        me: &str,
        needed: &BTreeSet<u32>,
    ) -> Coverage {
        let usable = |node: &str, p: u32| {
            members
                .iter()
                .any(|m| m.name == node && m.up && !m.incomplete.contains(&p))
        };
        let mut cov = Coverage::default();
        for p in needed.iter().copied().filter(|&p| p < ring.partitions()) {
            let replicas = ring.primaries(p, n);
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

    fn member(name: &str, up: bool, incomplete: &[u32]) -> Member {
        Member {
            name: name.into(),
            up,
            incomplete: incomplete.iter().copied().collect(),
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
        let c = Coverage::plan(&ring, 1, &members, "n2", &BTreeSet::from([0]));
        assert_eq!(c.missing, Vec::<u32>::new(), "{c:?}");
        assert_eq!(c.by_node.keys().collect::<Vec<_>>(), ["n0"], "{c:?}");
        let c = Coverage::plan(&ring, 1, &members, "n2", &BTreeSet::from([0, 1]));
        assert_eq!(c.missing, vec![1]);
    }

    #[test]
    fn prefers_the_coordinator_then_any_complete_up_replica() {
        let names: Vec<String> = (0..3).map(|i| format!("n{i}")).collect();
        let ring = Ring::new(8, &names).unwrap();
        let all_up: Vec<Member> = names.iter().map(|n| member(n, true, &[])).collect();
        let c = Coverage::plan(&ring, 3, &all_up, "n1", &all(8));
        assert!(c.is_local("n1"), "{c:?}");
        let c = Coverage::plan(&ring, 1, &all_up, "n1", &all(8));
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
        let c = Coverage::plan(&ring, 3, &down, "n1", &all(8));
        assert_eq!(
            c.by_node.keys().collect::<Vec<_>>(),
            ["n0"],
            "down and incomplete replicas are not used"
        );
        let c = Coverage::plan(&ring, 1, &down, "n0", &all(8));
        assert_eq!(
            c.missing.len(),
            5,
            "N=1 with two unusable nodes: their partitions are missing: {c:?}"
        );
    }
}
