//! A rogue gossiper that knows the cluster's name and id but not its
//! secret sends the deltas that would drop a table, rewrite the ring and
//! make a node leave: the node drops every datagram unread (counted), and
//! its state does not change, while a member with the secret joins.

use std::time::Duration;

use atoll_cluster::keys::{DROPPED_PREFIX, KEY_RING, LEAVE_PREFIX, encode_ring};
use atoll_cluster::membership::cluster_id;
use chitchat::transport::UdpTransport;
use chitchat::{
    ChitchatConfig, ChitchatId, FailureDetectorConfig, ProtocolVersion, spawn_chitchat,
};

mod support;

use support::PARTITIONS;

async fn member(name: &str, seeds: Vec<String>) -> std::sync::Arc<atoll_cluster::Membership> {
    support::member("forged", "the-secret", name, seeds).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gossiper_without_the_secret_changes_nothing() {
    let a = member("a", vec![]).await;
    let ring_before = a.ring().unwrap();
    // The rogue: plain chitchat (no tags), the real cluster id, a ring of
    // its own at a higher epoch, a drop of table "t" and a leave of "a".
    let forged_ring = atoll_ring::Ring::new(PARTITIONS, &["rogue".to_string()]).unwrap();
    let mut forged_ring_text = encode_ring(&forged_ring);
    forged_ring_text.replace_range(..1, "9");
    let rogue_addr = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let rogue = spawn_chitchat(
        ChitchatConfig {
            chitchat_id: ChitchatId::new("rogue", u64::MAX / 2, rogue_addr),
            cluster_id: cluster_id("forged", "the-secret"),
            gossip_interval: Duration::from_millis(20),
            listen_addr: rogue_addr,
            seed_nodes: vec![a.gossip_addr().to_string()],
            failure_detector_config: FailureDetectorConfig::default(),
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: ProtocolVersion::V0,
        },
        vec![
            (KEY_RING.to_string(), forged_ring_text),
            (format!("{DROPPED_PREFIX}t"), i64::MAX.to_string()),
            (format!("{LEAVE_PREFIX}a"), "forced".to_string()),
        ],
        &UdpTransport,
    )
    .await
    .unwrap();
    // A member with the secret joins meanwhile: by the time it is seen,
    // the rogue had as many rounds to get in.
    let b = member("b", vec![a.gossip_addr().to_string()]).await;
    support::wait_until("b to join", async || {
        a.members().await.iter().any(|m| m.name == "b" && m.up)
    })
    .await;
    let dropped = a.gossip_drops().with_label_values(&["bad_tag"]).get();
    assert!(dropped > 0, "the rogue's datagrams were dropped unread");
    let members = a.members().await;
    assert!(members.iter().all(|m| m.name != "rogue"), "{members:?}");
    let ring = a.ring().unwrap();
    assert!(ring.members().iter().all(|m| m.as_str() != "rogue"));
    assert!(
        ring.epoch() >= ring_before.epoch() && ring.epoch() < 9,
        "not the forged epoch 9"
    );
    assert!(a.leaving().is_empty(), "no forged leave was taken");
    drop((rogue, b));
}
