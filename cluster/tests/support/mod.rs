//! In-process gossip members for the cluster crate's tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_cluster::{Membership, MembershipConfig};

pub const PARTITIONS: u32 = 8;

/// A member of cluster `cluster` (secret `secret`) on a port the system
/// picks, gossiping every 50 ms.
pub async fn member(
    cluster: &str,
    secret: &str,
    name: &str,
    seeds: Vec<String>,
) -> Arc<Membership> {
    Membership::start(MembershipConfig {
        node_name: name.into(),
        cluster_name: cluster.into(),
        secret: secret.into(),
        gossip_addr: "127.0.0.1:0".parse().unwrap(),
        gossip_advertise_addr: None,
        seeds,
        partitions: PARTITIONS,
        http_addr: "127.0.0.1:1".parse().unwrap(),
        flight_addr: "127.0.0.1:2".parse().unwrap(),
        gossip_interval: Duration::from_millis(50),
        replicas: 1,
        down_after: Duration::from_secs(5),
        generation_file: None,
    })
    .await
    .unwrap()
}

/// Waits (at most 20 s) until `done`.
pub async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < Duration::from_secs(20), "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
