//! No acknowledged event lost: real nodes with data directories, real
//! SIGKILLs, and the handoffs that make replicas whole again (catch-up of a
//! restarted replica, hinted handoff, ownership handoff on join and leave).
//!
//! Each test is bounded by volume (at most 300,000 small events) and by
//! the 20 s waits of the support code.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Cluster, Server, owners, status_of, up_count};

/// The data directory of node `i` under `root`, as a flag pair.
fn data_dir(root: &std::path::Path, i: usize) -> [String; 2] {
    [
        "--data-dir".into(),
        root.join(format!("n{i}")).display().to_string(),
    ]
}

fn launch(cluster: &Cluster, root: &std::path::Path, i: usize) -> Server {
    let dir = data_dir(root, i);
    cluster.launch(i, &[dir[0].as_str(), dir[1].as_str()])
}

async fn start(n: usize, root: &std::path::Path, extra: &[&str]) -> Cluster {
    let mut cluster = Cluster::start(0, extra).await;
    for i in 0..n {
        let node = launch(&cluster, root, i);
        cluster.put(i, node);
    }
    cluster
        .wait_until("every node sees every node up", |v| up_count(v) == n)
        .await;
    cluster
}

/// One 1,000-event request of ids `first..first + 1000`.
fn request(first: usize) -> String {
    (first..first + 1000)
        .map(|id| format!("{{\"id\":{id},\"v\":{}}}\n", id % 97))
        .collect()
}

/// Sends one request to the first node of `order` that answers, retrying
/// exactly the events it reports rejected (or, with a key, resending the
/// whole request with the same Idempotency-Key) until all are acknowledged.
async fn send_until_acked(cluster: &Cluster, order: &[usize], first: usize, key: bool) {
    let mut pending: Vec<usize> = (first..first + 1000).collect();
    let started = Instant::now();
    let idempotency = format!("req-{first}");
    let mut attempt = 0;
    while !pending.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "events {first}.. never acknowledged"
        );
        let node = order[attempt % order.len()];
        attempt += 1;
        let Some(server) = cluster.nodes[node].as_ref() else {
            continue;
        };
        let body: String = if key {
            request(first)
        } else {
            pending
                .iter()
                .map(|id| format!("{{\"id\":{id},\"v\":{}}}\n", id % 97))
                .collect()
        };
        let mut call = server
            .client
            .post(format!("{}/v1/tables/ev/events", server.url))
            .header("content-type", "application/x-ndjson")
            .timeout(Duration::from_secs(10))
            .body(body);
        if key {
            call = call.header("idempotency-key", &idempotency);
        }
        let Ok(response) = call.send().await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let Ok(v) = response.json::<Value>().await else {
            continue;
        };
        let rejected: BTreeSet<usize> = v["rejected"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|e| e["index"].as_u64())
                    .map(|i| i as usize)
                    .collect()
            })
            .unwrap_or_default();
        if v["accepted"].is_null() {
            continue;
        }
        if key {
            if rejected.is_empty() {
                pending.clear();
            }
        } else {
            pending = pending
                .iter()
                .enumerate()
                .filter(|(i, _)| rejected.contains(i))
                .map(|(_, id)| *id)
                .collect();
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Sends `requests` requests (ids from 0), two at a time, killing node
/// `victim` with SIGKILL after half of them and restarting it 10 s later.
async fn ingest_through_a_kill(
    cluster: &mut Cluster,
    root: &std::path::Path,
    requests: usize,
    order: &[usize],
    victim: usize,
    key: bool,
) {
    let mut killed_at = None;
    for pair in (0..requests).collect::<Vec<_>>().chunks(2) {
        if pair[0] == requests / 2 {
            cluster.nodes[victim].as_mut().unwrap().signal("KILL");
            cluster.nodes[victim] = None;
            killed_at = Some(Instant::now());
        }
        if killed_at.is_some_and(|t| t.elapsed() >= Duration::from_secs(10))
            && cluster.nodes[victim].is_none()
        {
            cluster.nodes[victim] = Some(launch(cluster, root, victim));
        }
        let c = &*cluster;
        futures::future::join_all(
            pair.iter()
                .map(|r| send_until_acked(c, order, r * 1000, key)),
        )
        .await;
    }
    if cluster.nodes[victim].is_none() {
        let waited = killed_at.unwrap().elapsed();
        tokio::time::sleep(Duration::from_secs(10).saturating_sub(waited)).await;
        cluster.nodes[victim] = Some(launch(cluster, root, victim));
    }
}

/// Waits (at most 60 s: handoff on 2 loaded cores) until `check` holds on
/// every running node's `/v1/cluster`.
async fn wait_long(cluster: &Cluster, what: &str, check: impl Fn(&Value) -> bool) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let mut views = Vec::new();
        for s in cluster.running() {
            views.push(s.cluster().await);
        }
        if views.iter().all(&check) {
            return views;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting until {what}: {:?}",
            views
                .iter()
                .map(|v| (
                    v["node"].clone(),
                    v["epoch"].clone(),
                    v["moving_partitions"].clone(),
                    v["handoffs"].clone()
                ))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until every node is up and complete, and holds `rows` rows
/// itself (with N = the node count, each node holds every partition).
async fn wait_until_whole(cluster: &Cluster, rows: u64) {
    let n = cluster.nodes.len();
    let started = Instant::now();
    loop {
        let mut views = Vec::new();
        for s in cluster.running() {
            views.push(s.cluster().await);
        }
        let whole = views.iter().all(|v| {
            up_count(v) == n
                && v["local"]["rows"].as_u64() == Some(rows)
                && v["nodes"].as_array().unwrap().iter().all(|m| {
                    m["incomplete_partitions"]
                        .as_array()
                        .is_some_and(Vec::is_empty)
                })
        });
        if whole {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "replicas did not converge on {rows} rows: {:?}",
            views
                .iter()
                .map(|v| (v["node"].clone(), v["local"]["rows"].clone()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits (at most 15 s: a few handoff rounds, well under anti-entropy's
/// 30 s) until every running node answers `sql` with `expected`.
/// Each node answers `expected`, within 15 s: while a ring change spreads
/// a node may answer 503 (a replica not yet on its ring), and is asked
/// again, as a client would.
async fn every_node_answers(cluster: &Cluster, sql: &str, expected: &[Value]) {
    let started = Instant::now();
    for s in cluster.running() {
        loop {
            let (status, v) = s.query(sql).await;
            if status == 200 && v["rows"][0] == json!(expected) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "{} answers {status} {v}",
                s.url
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Every node (each a replica of every partition: N = the node count)
/// holds the same writes of `ev`, partition by partition, `rows` in all.
async fn same_writes_everywhere(cluster: &Cluster, rows: u64) {
    let mut held = Vec::new();
    for s in cluster.running() {
        let (status, body) = s.get("/v1/cluster/writes").await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        held.push(v["tables"]["ev"].clone());
    }
    let total: u64 = held[0]
        .as_object()
        .expect("partitions of ev")
        .values()
        .map(|p| p["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(total, rows, "{}", held[0]);
    assert!(
        held.iter().all(|h| *h == held[0]),
        "replicas hold different writes: {held:?}"
    );
}

async fn counts(s: &Server) -> (i64, i64) {
    let rows = s.rows("SELECT count(*), count(DISTINCT id) FROM ev").await;
    (rows[0][0].as_i64().unwrap(), rows[0][1].as_i64().unwrap())
}

/// 3 nodes, N=3, W=2: 300,000 events while a replica is killed and
/// restarted 10 s later. Every acknowledged id is there once, on every
/// replica once it caught up; the restarted node is complete and answers
/// the same. Then all three are killed at once and restarted: every
/// event is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_ingest_catches_up_and_nothing_is_lost() {
    let root = tempfile::tempdir().unwrap();
    let mut cluster = start(3, root.path(), &["--write-quorum", "2"]).await;
    ingest_through_a_kill(&mut cluster, root.path(), 300, &[0, 1], 2, false).await;
    let (all, distinct) = counts(cluster.node(0)).await;
    assert_eq!(distinct, 300_000, "every acknowledged id is there");
    wait_until_whole(&cluster, all as u64).await;
    for s in cluster.running() {
        assert_eq!(
            counts(s).await,
            (all, distinct),
            "{} answers the same",
            s.url
        );
    }
    let n2 = cluster.node(2).query("SELECT count(*) FROM ev").await.1;
    assert_eq!(n2["stats"]["coverage"], 1.0, "{n2}");
    same_writes_everywhere(&cluster, all as u64).await;

    for i in 0..3 {
        cluster.nodes[i].as_mut().unwrap().signal("KILL");
        cluster.nodes[i] = None;
    }
    for i in 0..3 {
        cluster.nodes[i] = Some(launch(&cluster, root.path(), i));
    }
    wait_until_whole(&cluster, all as u64).await;
    for s in cluster.running() {
        assert_eq!(
            counts(s).await,
            (all, distinct),
            "back after killing all three"
        );
    }
}

/// The entry node is killed mid-ingest; the client resends each failed
/// request whole, with its Idempotency-Key, to another node: no event is
/// stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resent_requests_with_their_keys_are_stored_once() {
    let root = tempfile::tempdir().unwrap();
    let mut cluster = start(3, root.path(), &["--write-quorum", "2"]).await;
    ingest_through_a_kill(&mut cluster, root.path(), 120, &[1, 0], 1, true).await;
    wait_until_whole(&cluster, 120_000).await;
    for s in cluster.running() {
        assert_eq!(counts(s).await, (120_000, 120_000));
    }
}

/// 4 nodes, N=2: writes for a down primary go to a fallback as hints; once
/// the primary is back they are handed to it and dropped by the fallback,
/// and the primary is complete again only after that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_are_handed_back_to_their_primary() {
    let root = tempfile::tempdir().unwrap();
    let mut cluster = start(4, root.path(), &["--replicas", "2", "--write-quorum", "2"]).await;
    assert_eq!(cluster.node(0).ingest("ev", request(0)).await.0, 200);
    cluster.nodes[3].as_mut().unwrap().signal("KILL");
    cluster.nodes[3] = None;
    cluster
        .wait_until("n3 is seen down", |v| status_of(v, "n3") == "down")
        .await;
    for r in 1..5 {
        let (status, v) = cluster.node(r % 3).ingest("ev", request(r * 1000)).await;
        assert_eq!((status, v["accepted"].as_u64()), (200, Some(1000)), "{v}");
    }
    let hinted = |v: &Value| v["local"]["hint_rows"]["n3"].as_u64().unwrap_or(0);
    let mut held = 0;
    for s in cluster.running() {
        held += hinted(&s.cluster().await);
    }
    assert!(held > 0, "fallbacks hold writes for n3");
    cluster.nodes[3] = Some(launch(&cluster, root.path(), 3));
    wait_long(&cluster, "hints handed back and n3 complete", |v| {
        up_count(v) == 4
            && hinted(v) == 0
            && v["nodes"].as_array().unwrap().iter().all(|m| {
                m["hint_rows"].as_u64().unwrap_or(0) == 0
                    && m["incomplete_partitions"]
                        .as_array()
                        .is_some_and(Vec::is_empty)
            })
    })
    .await;
    let total: u64 = {
        let mut sum = 0;
        for s in cluster.running() {
            sum += s.cluster().await["local"]["rows"].as_u64().unwrap();
        }
        sum
    };
    assert_eq!(
        total,
        2 * 5_000,
        "N=2 copies of every event, none left as hints"
    );
    for s in cluster.running() {
        assert_eq!(counts(s).await, (5_000, 5_000));
    }
}

/// A fourth node joins during ingest, then an old one leaves: partitions
/// are handed to their new owners before the new claim is in force, the
/// leaver stops only after, no acknowledged event is lost, handoff
/// progress is visible, and the data ends where the ring says. The client
/// resends a failed request whole with its Idempotency-Key (a write to the
/// leaver as it goes can fail after the other replica stored it), so every
/// event ends stored exactly N times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_and_a_leave_hand_partitions_over() {
    let root = tempfile::tempdir().unwrap();
    let mut cluster = start(3, root.path(), &["--replicas", "2"]).await;
    for r in 0..20 {
        send_until_acked(&cluster, &[0, 1], r * 1000, true).await;
    }
    cluster.wait_for_gossiped_rows().await;
    let node = launch(&cluster, root.path(), 3);
    cluster.put(3, node);
    let mut saw_moving = false;
    let mut saw_transfer = false;
    for r in 20..60 {
        send_until_acked(&cluster, &[0, 1], r * 1000, true).await;
        let v = cluster.node(0).cluster().await;
        saw_moving |= v["moving_partitions"].as_u64() > Some(0);
        saw_transfer |= v["handoffs"].as_array().is_some_and(|h| !h.is_empty());
    }
    let joined = wait_long(&cluster, "n3 owns its share and nothing moves", |v| {
        v["moving_partitions"] == 0 && owners(v).iter().filter(|o| *o == "n3").count() == 16
    })
    .await;
    assert!(saw_moving, "the join went through pending moves");
    assert_eq!(counts(cluster.node(3)).await, (60_000, 60_000));
    assert_eq!(cluster.node(0).leave("n1", false).await, 202);
    for r in 60..80 {
        send_until_acked(&cluster, &[0, 2], r * 1000, true).await;
        let v = cluster.node(0).cluster().await;
        saw_transfer |= v["handoffs"].as_array().is_some_and(|h| !h.is_empty());
    }
    let mut leaver = cluster.nodes[1].take().unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = leaver.try_wait() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "n1 did not stop after its handoff"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status:?}");
    let views = wait_long(&cluster, "a ring of n0, n2, n3 with nothing moving", |v| {
        v["moving_partitions"] == 0 && !owners(v).iter().any(|o| o == "n1")
    })
    .await;
    assert!(joined[0]["epoch"].as_u64() < views[0]["epoch"].as_u64());
    // A pending replica counts as caught up only once every node routes
    // writes to it, and former replicas hand late writes on before they
    // drop a partition: every node answers every event, once, within a
    // few handoff rounds (well before anti-entropy's 30 s).
    every_node_answers(
        &cluster,
        "SELECT count(*), count(DISTINCT id) FROM ev",
        &[json!(80_000), json!(80_000)],
    )
    .await;
    // Each node holds exactly the partitions the ring gives it (N=2).
    let started = Instant::now();
    loop {
        let mut placed = true;
        for s in cluster.running() {
            let v = s.cluster().await;
            let me = v["node"].as_str().unwrap().to_string();
            let held: BTreeSet<u64> = v["local"]["partition_rows"]
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.parse().unwrap())
                .collect();
            let expected: BTreeSet<u64> = v["ring"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| {
                    p["primaries"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|n| n == &json!(me))
                })
                .map(|p| p["partition"].as_u64().unwrap())
                .collect();
            placed &= held.is_subset(&expected) && v["local"]["rows"].as_u64().unwrap() > 0;
        }
        if placed {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "partitions not where the ring says"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut total = 0;
    for s in cluster.running() {
        total += s.cluster().await["local"]["rows"].as_u64().unwrap();
    }
    assert_eq!(
        total,
        2 * 80_000,
        "two copies of every event, on its replicas only"
    );
    assert!(saw_transfer, "handoff progress was visible in /v1/cluster");
}

/// A write routed with the ring from before a move can reach the former
/// replica after the new one caught up (its coordinator had not seen the
/// move yet). The former replica hands it to the partition's replicas and
/// then drops it: with N=1 it is the only copy, so dropping it unseen would
/// lose an acknowledged event. Every node answers it within a few rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_write_to_a_former_replica_is_handed_on() {
    use arrow::array::{ArrayRef, Int64Array, RecordBatch, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    let mut cluster = Cluster::start(2, &["--replicas", "1"]).await;
    let body: String = (0..2000).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    assert_eq!(cluster.node(0).ingest("late", body).await.0, 200);
    cluster.wait_for_gossiped_rows().await;
    let node = cluster.launch(2, &[]);
    cluster.put(2, node);
    let views = wait_long(&cluster, "n2 owns partitions and nothing moves", |v| {
        v["moving_partitions"] == 0 && owners(v).iter().any(|o| o == "n2")
    })
    .await;
    let partition = views[0]["ring"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["owner"] == "n2")
        .unwrap()["partition"]
        .as_u64()
        .unwrap() as u32;
    // The late write: three events of that partition, put straight into
    // n0's replica as a coordinator with the old ring would.
    let schema = Arc::new(Schema::new(vec![
        Field::new("i", DataType::Int64, true),
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ]));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![7_000, 7_001, 7_002])),
        Arc::new(TimestampMicrosecondArray::from(vec![now; 3]).with_timezone("UTC")),
    ];
    let batch = RecordBatch::try_new(schema, columns).unwrap();
    let batch = atoll_store::writes::with_write_id(&batch, 0x1a7e).unwrap();
    let cmd = atoll_cluster::messages::PutCommand {
        table: "late".into(),
        partition,
    };
    let data = atoll_cluster::replicate::encode(&cmd, &batch)
        .await
        .unwrap();
    let n0 = views[0]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "n0")
        .unwrap()["flight_addr"]
        .as_str()
        .unwrap()
        .to_string();
    let mut client = support::flight_client(&n0).await;
    let mut request = tonic::Request::new(futures::stream::iter(data));
    support::sign_call(&mut request, "DoPut", "test-secret", &n0);
    support::speak_protocol(&mut request);
    let response = client.do_put(request).await.unwrap().into_inner();
    let acks: Vec<_> = futures::TryStreamExt::try_collect(response).await.unwrap();
    assert_eq!(acks.len(), 1, "n0 acknowledged the write");
    // Anti-entropy cannot bring it (N=1: the partition has no other
    // replica); only the hand-back can, within a few 1 s rounds.
    every_node_answers(
        &cluster,
        "SELECT count(*), sum(i) FROM late",
        &[json!(2003), json!(1_999_000 + 21_003)],
    )
    .await;
    cluster
        .wait_until("n0 no longer holds the partition", |v| {
            v["node"] != "n0"
                || v["local"]["partition_rows"]
                    .get(partition.to_string())
                    .is_none()
        })
        .await;
}
