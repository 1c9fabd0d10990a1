//! Reports of missed writes spread through the nodes that stored the
//! writes, not only through the coordinator's gossip; and a node that
//! hears no gossip while it counts peers up knows that it is deaf.

use std::sync::Arc;

use atoll_cluster::messages::MissedReport;
use atoll_cluster::{Hints, LocalReplica, Member};
use atoll_store::Store;

mod support;

use support::{PARTITIONS, wait_until};

fn replica() -> LocalReplica {
    let config = atoll_store::StoreConfig {
        partitions: PARTITIONS,
        ..Default::default()
    };
    let store = Arc::new(Store::new(config.clone()));
    LocalReplica::new(store, Arc::new(Hints::new(config)), None)
}

/// The report `b` gossips about `replica`/`partition`, as `a` hears it.
async fn heard(a: &atoll_cluster::Membership, replica: &str, partition: u32) -> Option<i64> {
    a.members()
        .await
        .into_iter()
        .find(|m| m.name == "b")?
        .missed
        .get(&(replica.to_string(), partition))
        .copied()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_report_is_gossiped_by_the_relay_at_its_own_time() {
    let a = support::member("relay", "s", "a", vec![]).await;
    wait_until("a founds its ring", async || a.ring().is_some()).await;
    let b = support::member("relay", "s", "b", vec![a.gossip_addr().to_string()]).await;
    let local = replica();
    local.publish_to(b.clone()).await;

    let report = |missed: Vec<(String, u32)>| MissedReport { missed };
    let before = atoll_store::now_micros();
    let pairs = vec![("c".to_string(), 3), ("c".to_string(), 5)];
    assert_eq!(local.relay_missed(report(pairs)).await, 2);
    wait_until("a hears b relay the report", async || {
        heard(&a, "c", 3).await.is_some() && heard(&a, "c", 5).await.is_some()
    })
    .await;
    let first = heard(&a, "c", 5).await.unwrap();
    assert!(first >= before, "reported at the relay's time");

    // Relayed again later: the report is renewed, so that a replica that
    // acted on the first one acts on this one too.
    wait_until("the clock moves on", async || {
        atoll_store::now_micros() > first
    })
    .await;
    local.relay_missed(report(vec![("c".into(), 5)])).await;
    wait_until("a hears the newer report", async || {
        heard(&a, "c", 5).await.is_some_and(|at| at > first)
    })
    .await;
    assert_eq!(
        heard(&a, "c", 3).await,
        Some(first),
        "the other is unchanged"
    );
}

/// Reports are compared with what their replica acted on per reporter:
/// one reporter's clock running behind another's does not hide its
/// reports.
#[test]
fn a_report_by_a_node_with_a_slow_clock_is_not_hidden_by_a_faster_one() {
    let member = |name: &str| Member {
        name: name.into(),
        up: true,
        ..Default::default()
    };
    let (mut fast, mut slow, mut replica) = (member("fast"), member("slow"), member("r"));
    fast.missed.insert(("r".into(), 1), 1_000_000);
    slow.missed.insert(("r".into(), 2), 955_000);
    // r acted on fast's report.
    replica.missed_seen.insert("fast".into(), 1_000_000);
    let members = [fast, slow, replica];
    let unseen: Vec<_> = atoll_cluster::membership::unseen_missed(&members)
        .map(|u| (u.replica, u.partition, u.reporter))
        .collect();
    assert_eq!(unseen, [("r", 2, "slow")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_hearing_no_gossip_while_peers_count_up_is_deaf() {
    let a = support::member("deaf", "s", "a", vec![]).await;
    wait_until("a founds its ring", async || a.ring().is_some()).await;
    let b = support::member("deaf", "s", "b", vec![a.gossip_addr().to_string()]).await;
    wait_until("a and b see each other up", async || {
        a.members().await.iter().filter(|m| m.up).count() == 2
            && b.members().await.iter().filter(|m| m.up).count() == 2
    })
    .await;
    // Hearing b every round, for longer than the deafness threshold.
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_millis(1_500) {
        assert!(!a.deaf(&a.members().await), "a hears b");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // A lone node never heard anyone: with a peer it counts up, it is deaf
    // (after the threshold); with none, or only peers it counts down, not.
    let lone = support::member("deaf-lone", "s", "x", vec![]).await;
    let up = |name: &str, up| Member {
        name: name.into(),
        up,
        ..Default::default()
    };
    wait_until("x counts as deaf with a peer up", async || {
        lone.deaf(&[up("x", true), up("y", true)])
    })
    .await;
    assert!(!lone.deaf(&[up("x", true)]), "alone, nobody to hear");
    assert!(
        !lone.deaf(&[up("x", true), up("y", false)]),
        "its peer is down"
    );
}
