//! A node that joins a cluster holding data must get its partitions by
//! handoff (as a pending owner), even when it joins right after the first
//! write: whether a member holds data is gossiped as its own key, set
//! before that write is acknowledged, not read from the once-a-second
//! figures (no figures are gossiped here at all).

use std::sync::Arc;

use arrow::array::{RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{Field, Schema};
use atoll_cluster::messages::PutCommand;
use atoll_cluster::{Hints, LocalReplica, Membership};
use atoll_store::Store;

mod support;

use support::{PARTITIONS, wait_until};

async fn member(name: &str, seeds: Vec<String>) -> (Arc<Membership>, std::net::SocketAddr) {
    let m = support::member("test", "s", name, seeds).await;
    let gossip_addr = m.gossip_addr();
    (m, gossip_addr)
}

fn batch() -> RecordBatch {
    let schema = Schema::new(vec![Field::new(
        "time",
        atoll_store::ColumnType::Timestamp.data_type(),
        false,
    )]);
    let time = TimestampMicrosecondArray::from(vec![1, 2]).with_timezone("UTC");
    let b = RecordBatch::try_new(Arc::new(schema), vec![Arc::new(time)]).unwrap();
    atoll_store::writes::with_write_id(&b, 7).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_right_after_the_first_write_moves_partitions_by_handoff() {
    let (a, a_addr) = member("a", vec![]).await;
    wait_until("a founds its ring", async || a.ring().is_some()).await;
    let config = atoll_store::StoreConfig {
        partitions: PARTITIONS,
        ..Default::default()
    };
    let store = Arc::new(Store::new(config.clone()));
    let local = LocalReplica::new(store, Arc::new(Hints::new(config)), None);
    local.publish_to(a.clone()).await;
    let cmd = PutCommand {
        table: "t".into(),
        partition: 0,
    };
    assert_eq!(local.write(&cmd, batch(), None).await.unwrap(), 2);

    let (b, _) = member("b", vec![a_addr.to_string()]).await;
    wait_until("b is put in the ring", async || {
        a.ring()
            .is_some_and(|r| r.members().iter().any(|m| m.as_str() == "b"))
    })
    .await;
    let ring = a.ring().unwrap();
    let pending = (0..PARTITIONS)
        .filter(|&p| ring.pending_owner(p).is_some_and(|o| o == "b"))
        .count();
    let owned = (0..PARTITIONS).filter(|&p| ring.owner(p) == "b").count();
    assert!(
        pending > 0 && owned == 0,
        "b must take partitions as a pending owner (pending {pending}, owned {owned})"
    );
    b.shutdown().await;
    a.shutdown().await;
}
