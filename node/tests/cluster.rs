//! Several real `atoll` processes on 127.0.0.1 forming a cluster over
//! gossip (UDP) and Flight (gRPC): membership, the ring, replicated ingest,
//! quorum, failures and refusals. Every wait is bounded.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Cluster, Server, generated_events, owners, status_of, up_count};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_one_ring_and_each_partition_lives_on_its_replicas() {
    let cluster = Cluster::start(3, &["--replicas", "2"]).await;
    let views = cluster
        .wait_until("all agree on one ring of 3", |v| {
            v["ring"][0]["primaries"].as_array().unwrap().len() == 2
        })
        .await;
    let epoch = &views[0]["epoch"];
    for v in &views {
        assert_eq!(&v["epoch"], epoch, "same epoch everywhere");
        assert_eq!(owners(v), owners(&views[0]), "same ring everywhere");
        assert_eq!(
            (v["replicas"].as_u64(), v["write_quorum"].as_u64()),
            (Some(2), Some(2))
        );
    }
    let text = status_text(cluster.node(1));
    assert!(
        text.contains("N=2 W=2") && text.lines().filter(|l| l.contains(" up ")).count() == 3,
        "{text}"
    );
    let counts: Vec<u64> = views[0]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["owned_partitions"].as_u64().unwrap())
        .collect();
    assert!(
        counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1,
        "balanced: {counts:?}"
    );

    // 30,000 events, a third through each node.
    let events = generated_events(30_000, 11, &[]);
    let lines: Vec<&[u8]> = events
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    for (i, chunk) in lines.chunks(10_000).enumerate() {
        let body = chunk.join(&b'\n');
        let (status, v) = cluster.node(i).ingest("events", body).await;
        assert_eq!((status, v["accepted"].as_u64()), (200, Some(10_000)), "{v}");
    }
    let mut total = 0;
    let mut holders: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in cluster.running() {
        let v = s.cluster().await;
        total += v["local"]["rows"].as_u64().unwrap();
        for (p, rows) in v["local"]["partition_rows"].as_object().unwrap() {
            assert!(rows.as_u64().unwrap() > 0);
            holders
                .entry(p.clone())
                .or_default()
                .insert(v["node"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(total, 2 * 30_000, "every event is on exactly N=2 nodes");
    for p in views[0]["ring"].as_array().unwrap() {
        let primaries: BTreeSet<String> = p["primaries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect();
        let key = p["partition"].to_string();
        assert_eq!(
            holders.get(&key),
            Some(&primaries),
            "partition {key} lives on its preference list"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_nodes_are_seen_down_and_quorum_decides_acks() {
    let mut cluster = Cluster::start(3, &[]).await;
    let epoch = cluster.node(0).cluster().await["epoch"].clone();
    let batch: String = (0..200).map(|i| format!("{{\"i\":{i}}}\n")).collect();

    let killed = Instant::now();
    cluster.nodes[2].as_mut().unwrap().signal("KILL");
    cluster.nodes[2] = None;
    cluster
        .wait_until("n2 is seen down", |v| status_of(v, "n2") == "down")
        .await;
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "down within 10 s, took {:?}",
        killed.elapsed()
    );
    let (status, v) = cluster.node(0).ingest("k", batch.clone()).await;
    assert_eq!(
        (status, v["accepted"].as_u64()),
        (200, Some(200)),
        "W=2 of N=3 still reached: {v}"
    );
    assert_eq!(
        cluster.node(1).cluster().await["epoch"],
        epoch,
        "a down node does not change the ring"
    );

    cluster.nodes[1].as_mut().unwrap().signal("KILL");
    cluster.nodes[1] = None;
    cluster
        .wait_until("n1 is seen down", |v| status_of(v, "n1") == "down")
        .await;
    let (status, v) = cluster.node(0).ingest("k", batch).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(
        v["accepted"], 0,
        "nothing is acknowledged without W replicas"
    );
    let rejected = v["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 200, "all listed, up to 1,000");
    assert!(v.get("rejected_total").is_none(), "{v}");
    assert_eq!(rejected[0]["error"], "quorum not reached: 1 of 2 replicas");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_keeps_the_ring_and_a_restarted_node_takes_its_place() {
    let mut cluster = Cluster::start(3, &[]).await;
    let before = cluster.node(0).cluster().await;
    let status = cluster.nodes[1].as_mut().unwrap().signal("TERM");
    assert!(status.success(), "a clean stop: {status:?}");
    cluster.nodes[1] = None;
    cluster
        .wait_until("n1 is seen down", |v| status_of(v, "n1") == "down")
        .await;
    let during = cluster.node(0).cluster().await;
    assert_eq!(during["epoch"], before["epoch"]);
    assert_eq!(owners(&during), owners(&before));
    cluster.nodes[1] = Some(cluster.launch(1, &[]));
    let after = cluster.wait_until("n1 is back", |v| up_count(v) == 3).await;
    assert_eq!(
        after[0]["epoch"], before["epoch"],
        "same place in the same ring"
    );
    assert_eq!(owners(&after[0]), owners(&before));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_node_gets_a_fair_share_with_little_movement() {
    let mut cluster = Cluster::start(3, &[]).await;
    let before = cluster.node(0).cluster().await;
    let node = cluster.launch(3, &[]);
    cluster.put(3, node);
    let views = cluster
        .wait_until("a ring of 4", |v| {
            v["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| n["owned_partitions"].as_u64() > Some(0))
                .count()
                == 4
        })
        .await;
    let after = &views[0];
    assert_eq!(
        after["epoch"].as_u64(),
        before["epoch"].as_u64().map(|e| e + 1)
    );
    let moved = owners(&before)
        .iter()
        .zip(owners(after))
        .filter(|(a, b)| **a != *b)
        .count();
    assert_eq!(
        moved, 16,
        "the new node takes 64/4 partitions, all from others"
    );
}

/// In a cluster holding data, a joiner gets pending partitions: the old
/// owners keep serving them (every row stays visible, even with N=1) while
/// the joiner already takes their new writes. A forced leave of the joiner
/// is in force at once. (Handoff is paused, so the moves stay pending; the
/// handoff tests let them complete.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_in_a_cluster_with_data_gets_pending_partitions() {
    let mut cluster = Cluster::start(3, &["--replicas", "1", "--transfer-limit", "0"]).await;
    let node0 = cluster.node(0);
    assert_eq!(
        node0.ingest("p", generated_events(3_000, 1, &[])).await.0,
        200
    );
    cluster.wait_for_gossiped_rows().await;
    let before = cluster.node(0).cluster().await;
    let node = cluster.launch(3, &["--replicas", "1"]);
    cluster.put(3, node);
    let views = cluster
        .wait_until("16 partitions moving to n3", |v| {
            v["moving_partitions"] == 16
        })
        .await;
    let after = &views[0];
    assert_eq!(
        after["epoch"].as_u64(),
        before["epoch"].as_u64().map(|e| e + 1)
    );
    assert_eq!(
        owners(after),
        owners(&before),
        "the old owners keep serving"
    );
    let moving: Vec<&Value> = after["ring"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| !p["pending_owner"].is_null())
        .collect();
    assert!(
        moving
            .iter()
            .all(|p| p["pending_owner"] == "n3" && p["pending_replicas"][0] == "n3")
    );
    let n3 = after["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "n3")
        .unwrap();
    assert_eq!(
        (
            n3["owned_partitions"].as_u64(),
            n3["pending_partitions"].as_u64()
        ),
        (Some(0), Some(16))
    );
    let started = Instant::now();
    while cluster.node(3).get("/v1/tables/p").await.0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "n3 never learnt of table p"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        cluster.node(3).count("SELECT count(*) AS c FROM p").await,
        3_000,
        "a node without rows of p knows its schema by gossip"
    );
    assert_eq!(
        cluster
            .node(1)
            .ingest("p", generated_events(3_000, 2, &[]))
            .await
            .0,
        200
    );
    let (status, v) = cluster.node(3).query("SELECT count(*) AS c FROM p").await;
    assert_eq!(
        (status, &v["rows"][0][0]),
        (200, &serde_json::json!(6_000)),
        "{v}"
    );
    assert_eq!(
        v["stats"]["coverage"], 1.0,
        "old owners cover everything: {v}"
    );
    let local = cluster.node(3).cluster().await["local"]["rows"]
        .as_u64()
        .unwrap();
    assert!(
        local > 0 && local < 6_000,
        "n3 took the new writes of its pending partitions: {local}"
    );
    let text = status_text(cluster.node(2));
    assert!(text.contains("(16 moving)"), "{text}");

    assert_eq!(cluster.node(0).leave("n3", true).await, 202);
    let mut leaver = cluster.nodes[3].take().unwrap();
    let views = cluster
        .wait_until("the ring without n3", |v| {
            v["moving_partitions"] == 0
                && v["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|n| n["name"] != "n3" || n["in_ring"] == false)
        })
        .await;
    leaver
        .wait_exit("n3 did not stop after a forced leave")
        .await;
    assert_eq!(owners(&views[0]), owners(&before), "nothing moved for good");
    assert_eq!(
        cluster.node(1).count("SELECT count(*) AS c FROM p").await,
        6_000
    );
}

#[tokio::test]
async fn a_node_with_another_partition_count_is_refused() {
    let cluster = Cluster::start(1, &[]).await;
    let seed = cluster.seed();
    let result = Server::try_start(&[
        "--cluster-name",
        &cluster.name,
        "--node-name",
        "odd",
        "--seed",
        &seed,
        "--partitions",
        "128",
    ]);
    assert_eq!(result.err(), Some(Some(1)), "the node exits with an error");
    let v = cluster.node(0).cluster().await;
    let in_ring = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["name"] == "odd" && n["in_ring"] == true);
    assert!(!in_ring, "the refused node is not in the ring: {v}");
}

#[tokio::test]
async fn another_secret_cannot_gossip_or_write() {
    let cluster = Cluster::start(1, &[]).await;
    let v = cluster.node(0).cluster().await;
    let flight = v["nodes"][0]["flight_addr"].as_str().unwrap().to_string();
    // Gossip: a node with another secret is in another cluster; it never
    // learns a ring, and the cluster never lists it.
    let seed = cluster.seed();
    let mut outsider = support::atoll_serve(&[
        "--cluster-name",
        &cluster.name,
        "--node-name",
        "outsider",
        "--seed",
        &seed,
    ])
    .args(["--cluster-secret", "wrong", "--log", "off"])
    .spawn()
    .unwrap();
    // A node with the right secret, started after the outsider, joins: by
    // then the outsider had as many rounds of gossip to get in.
    let insider = cluster.launch(1, &[]);
    let v = cluster
        .wait_until("n1 joins", |v| status_of(v, "n1") == "up")
        .await
        .remove(0);
    assert_eq!(status_of(&v, "outsider"), "absent", "{v}");
    drop(insider);
    let _ = outsider.kill();
    let _ = outsider.wait();
    // Flight: a do_put without the secret is refused, and stores nothing.
    let mut client = support::flight_client(&flight).await;
    let put = arrow_flight::FlightData {
        flight_descriptor: Some(arrow_flight::FlightDescriptor::new_cmd(
            r#"{"table":"x","partition":0}"#,
        )),
        ..Default::default()
    };
    let err = client
        .do_put(futures::stream::iter([put]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    assert_eq!(
        cluster.node(0).query("SELECT * FROM x").await.0,
        400,
        "no table x was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_makes_a_resent_request_land_once() {
    let cluster = Cluster::start(3, &[]).await;
    let body: String = (0..300).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    for entry in [0, 0, 1] {
        let (status, v) = cluster
            .node(entry)
            .post_raw(
                "/v1/tables/idem/events",
                &[
                    ("idempotency-key", "req-42"),
                    ("content-type", "application/x-ndjson"),
                ],
                body.clone().into_bytes(),
            )
            .await;
        assert_eq!((status, v["accepted"].as_u64()), (200, Some(300)), "{v}");
    }
    for s in cluster.running() {
        assert_eq!(
            s.count("SELECT count(*) FROM idem").await,
            300,
            "each replica holds each event once"
        );
    }
    let (status, _) = cluster.node(0).ingest("idem", body.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(
        cluster.node(0).count("SELECT count(*) FROM idem").await,
        600,
        "without the key, a resend lands again"
    );
    let (status, v) = cluster
        .node(0)
        .post_raw(
            "/v1/tables/idem/events",
            &[
                ("idempotency-key", "bad key"),
                ("content-type", "application/x-ndjson"),
            ],
            body.into_bytes(),
        )
        .await;
    assert_eq!(status, 400, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_holds_hints_for_a_down_primary() {
    let mut cluster = Cluster::start(4, &[]).await;
    cluster.nodes[3].as_mut().unwrap().signal("KILL");
    cluster.nodes[3] = None;
    cluster
        .wait_until("n3 is seen down", |v| status_of(v, "n3") == "down")
        .await;
    let body: String = (0..400).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    let (status, v) = cluster.node(0).ingest("h", body).await;
    assert_eq!((status, v["accepted"].as_u64()), (200, Some(400)), "{v}");
    let (mut own, mut hinted) = (0, 0);
    for s in cluster.running() {
        let local = &s.cluster().await["local"];
        own += local["rows"].as_u64().unwrap();
        for (primary, rows) in local["hint_rows"].as_object().unwrap() {
            assert_eq!(primary, "n3", "hints are only held for the down node");
            hinted += rows.as_u64().unwrap();
            let bytes = local["hint_bytes"][primary].as_u64().unwrap();
            assert!(
                bytes > 0 || rows == 0,
                "hints are measured as data: {local}"
            );
        }
    }
    assert!(hinted > 0, "n3 is a primary of 3/4 of the partitions");
    assert_eq!(
        own + hinted,
        3 * 400,
        "every event still has N=3 copies, some as hints"
    );
}

/// Schema skew: a column that only one node's partitions hold, and a
/// column widened (Int64 -> Float64) by rows that only one node holds. Every
/// node learns the union schema by gossip, and any coordinator answers over
/// it: the column reads as null elsewhere, the widened one as Float64.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_read_the_union_of_skewed_schemas() {
    let cluster = Cluster::start(3, &["--replicas", "1"]).await;
    let owner = keyed_table(&cluster, "skew", 300).await;
    let on_n1: Vec<String> = (0..100)
        .map(|i| format!("k{i}"))
        .filter(|k| owner(k) == "n1")
        .take(5)
        .collect();
    assert_eq!(on_n1.len(), 5, "some keys land on n1");
    let skewed: String = (0..50)
        .map(|i| format!("{{\"k\":\"{}\",\"v\":0.5,\"only\":\"x\"}}\n", on_n1[i % 5]))
        .collect();
    let (status, v) = cluster.node(1).ingest("skew", skewed).await;
    assert_eq!(status, 200, "{v}");
    for s in cluster.running() {
        let started = Instant::now();
        loop {
            let (_, body) = s.get("/v1/tables/skew").await;
            let t: Value = serde_json::from_str(&body).unwrap();
            let columns: BTreeMap<&str, &str> = t["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| (c["name"].as_str().unwrap(), c["type"].as_str().unwrap()))
                .collect();
            if columns.get("v") == Some(&"Float64") && columns.contains_key("only") {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{} never learnt the union schema: {t}",
                s.url
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let expected = serde_json::json!([350, 50, 44875.0]);
    for s in cluster.running() {
        let (status, v) = s
            .query("SELECT count(*), count(only), sum(v) FROM skew")
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["rows"][0], expected, "{v}");
        assert_eq!(v["columns"][2]["type"], "Float64", "{v}");
        let rows = s
            .rows("SELECT v, only FROM skew WHERE only IS NOT NULL LIMIT 2")
            .await;
        assert_eq!(
            rows,
            vec![vec![serde_json::json!(0.5), serde_json::json!("x")]; 2]
        );
        let nulls = s
            .count("SELECT count(*) FROM skew WHERE only IS NULL AND v >= 0")
            .await;
        assert_eq!(nulls, 300);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_settings_and_drops_apply_on_every_node() {
    let cluster = Cluster::start(3, &[]).await;
    let (status, v) = cluster
        .node(0)
        .send(
            reqwest::Method::PUT,
            "/v1/tables/s",
            r#"{"partition_key": "user"}"#,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["applied_on"], serde_json::json!({"n1": true, "n2": true}));
    for s in cluster.running() {
        let (status, body) = s.get("/v1/tables/s").await;
        assert_eq!(status, 200);
        assert!(body.contains(r#""partition_key":"user""#), "{body}");
    }
    cluster.node(2).ingest("s", "{\"user\":\"u1\"}\n").await;
    let (status, v) = cluster
        .node(1)
        .send(reqwest::Method::DELETE, "/v1/tables/s", "")
        .await;
    assert_eq!(status, 200, "{v}");
    for s in cluster.running() {
        assert_eq!(s.get("/v1/tables/s").await.0, 404, "dropped everywhere");
    }
    // Table changes travel between nodes as internal Flight actions: one
    // without the cluster secret, or of another protocol version, is
    // refused before it is read.
    let flight = cluster.node(0).cluster().await["nodes"][0]["flight_addr"]
        .as_str()
        .unwrap()
        .to_string();
    let mut client = support::flight_client(&flight).await;
    let change = serde_json::to_vec(
        &serde_json::json!({"table": "s", "version": i64::MAX, "change": "drop"}),
    )
    .unwrap();
    let action = || arrow_flight::Action::new("table.change", change.clone());
    // Signed with another secret, with the secret itself in clear (as
    // calls once carried it), or signed for another method: refused.
    let mut forged = tonic::Request::new(action());
    support::speak_protocol(&mut forged);
    support::sign_call(&mut forged, "DoAction", "guess", &flight);
    let err = client.do_action(forged).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    let mut clear = tonic::Request::new(action());
    support::speak_protocol(&mut clear);
    clear
        .metadata_mut()
        .insert("x-atoll-secret", "test-secret".parse().unwrap());
    let err = client.do_action(clear).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    let mut moved = tonic::Request::new(action());
    support::speak_protocol(&mut moved);
    support::sign_call(&mut moved, "DoGet", "test-secret", &flight);
    let err = client.do_action(moved).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    // Signed for another node's Flight address: refused here.
    let mut elsewhere = tonic::Request::new(action());
    support::speak_protocol(&mut elsewhere);
    support::sign_call(&mut elsewhere, "DoAction", "test-secret", "127.0.0.1:1");
    let err = client.do_action(elsewhere).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    assert!(err.message().contains("another node"), "{err}");
    // A correctly signed call (a harmless one: a row count), replayed:
    // refused the second time.
    let rows = || arrow_flight::Action::new("table.rows", r#"{"table": "s"}"#);
    let mut first = tonic::Request::new(rows());
    support::speak_protocol(&mut first);
    support::sign_call(&mut first, "DoAction", "test-secret", &flight);
    let replay = first.metadata().clone();
    client.do_action(first).await.unwrap();
    let mut again = tonic::Request::new(rows());
    *again.metadata_mut() = replay;
    let err = client.do_action(again).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    assert!(err.message().contains("replayed"), "{err}");
    let mut old = tonic::Request::new(action());
    support::sign_call(&mut old, "DoAction", "test-secret", &flight);
    old.metadata_mut()
        .insert("x-atoll-protocol", "0".parse().unwrap());
    let err = client.do_action(old).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().contains("protocol 0"), "{err}");
}

/// A retention set through one node applies on every node: rows older
/// than it leave every node's answers at once, and batches holding only
/// such rows are dropped from memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_applies_on_every_node() {
    let cluster = Cluster::start(3, &["--replicas", "1", "--seal-interval-ms", "100"]).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let events = |from: u64, n: u64| -> String {
        (0..n)
            .map(|i| format!("{{\"time\":{},\"i\":{i}}}\n", from + i))
            .collect()
    };
    let held = async || {
        let mut rows = 0;
        for s in cluster.running() {
            rows += s.cluster().await["local"]["rows"].as_u64().unwrap();
        }
        rows
    };
    // Two hours old; batches holding only them are dropped whole. (Old
    // rows merged into a batch of recent ones leave memory only once they
    // are a quarter of it: the store's unit tests cover that cut.)
    assert_eq!(
        cluster
            .node(0)
            .ingest("ret", events(now - 7200, 300))
            .await
            .0,
        200
    );
    for s in cluster.running() {
        assert_eq!(s.count("SELECT count(*) FROM ret").await, 300);
    }
    let (status, v) = cluster
        .node(1)
        .send(
            reqwest::Method::PUT,
            "/v1/tables/ret",
            r#"{"retention": "soon"}"#,
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("invalid retention \"soon\""),
        "{v}"
    );
    let (status, v) = cluster
        .node(1)
        .send(
            reqwest::Method::PUT,
            "/v1/tables/ret",
            r#"{"retention": "1h"}"#,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    for s in cluster.running() {
        assert_eq!(
            s.count("SELECT count(*) FROM ret").await,
            0,
            "hidden at once"
        );
    }
    // Each node drops its old batches at its next sealing pass.
    let started = Instant::now();
    while held().await != 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "old rows still held"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        cluster
            .node(2)
            .ingest("ret", events(now - 400, 300))
            .await
            .0,
        200
    );
    for s in cluster.running() {
        assert_eq!(s.count("SELECT count(*) FROM ret").await, 300);
        assert_eq!(
            s.count(&format!(
                "SELECT count(*) FROM ret WHERE time < to_timestamp({})",
                now - 3600
            ))
            .await,
            0
        );
    }
    assert_eq!(held().await, 300, "recent rows are kept");
    // Old and recent rows in one request (so in the same batches): the
    // rows count(*) counts without reading them are the rows a scan reads.
    let mixed = format!("{}{}", events(now - 7200, 100), events(now - 100, 50));
    assert_eq!(cluster.node(0).ingest("ret", mixed).await.0, 200);
    for s in cluster.running() {
        let (_, v) = s.query("SELECT count(*), count(i) FROM ret").await;
        assert_eq!(v["rows"][0], serde_json::json!([350, 350]), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_span_the_ring_and_say_when_they_are_partial() {
    let mut cluster = Cluster::start(3, &["--replicas", "1"]).await;
    let body: String = (0..3000)
        .map(|i| format!("{{\"i\":{i},\"g\":\"g{}\"}}\n", i % 7))
        .collect();
    let (status, v) = cluster.node(1).ingest("q", body).await;
    assert_eq!(status, 200, "{v}");
    // Each node holds a third; any node answers for all (tables are created
    // on every node by the replicas they receive, the entry node included).
    for s in cluster.running() {
        let (_, v) = s
            .query("SELECT count(*), sum(i), count(DISTINCT g) FROM q")
            .await;
        assert_eq!(v["rows"][0], serde_json::json!([3000, 4498500, 7]), "{v}");
        assert_eq!(v["stats"]["rows_scanned"], 3000, "{v}");
        assert_eq!(v["stats"]["partitions_scanned"], 64, "{v}");
        assert_eq!(v["stats"]["coverage"], 1.0);
        // Per node: who read which share; the shares add up.
        let nodes = v["stats"]["nodes"].as_array().expect("per-node stats");
        let names: BTreeSet<&str> = nodes.iter().map(|n| n["node"].as_str().unwrap()).collect();
        assert_eq!(names, BTreeSet::from(["n0", "n1", "n2"]), "{v}");
        let sum = |k: &str| nodes.iter().map(|n| n[k].as_u64().unwrap()).sum::<u64>();
        assert_eq!((sum("partitions"), sum("rows_scanned")), (64, 3000), "{v}");
        let remote = nodes
            .iter()
            .filter(|n| n["elapsed_ms"].as_f64().is_some())
            .count();
        assert_eq!(remote, 2, "owners report their own time: {v}");
    }
    let rows = cluster
        .node(0)
        .rows("SELECT i FROM q WHERE i >= 2990 ORDER BY i DESC LIMIT 3")
        .await;
    assert_eq!(
        rows,
        vec![
            vec![serde_json::json!(2999)],
            vec![serde_json::json!(2998)],
            vec![serde_json::json!(2997)]
        ]
    );

    // Through a projection over the top-K sort, in order from every node.
    for s in cluster.running() {
        let (_, v) = s
            .query("SELECT i, g FROM q ORDER BY i DESC, g LIMIT 10")
            .await;
        let got: Vec<i64> = v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[0].as_i64().unwrap())
            .collect();
        assert_eq!(got, (2990..3000).rev().collect::<Vec<_>>(), "{v}");
    }
    let (_, v) = cluster
        .node(0)
        .query("SELECT i, g FROM q ORDER BY i DESC, g LIMIT 3")
        .await;
    assert_eq!(
        v["rows"],
        serde_json::json!([[2999, "g3"], [2998, "g2"], [2997, "g1"]]),
        "{v}"
    );
    // EXPLAIN shows the split: the owners' part below the fan-out, which
    // names every node and its partitions; a top-K sort runs on the owners.
    let explain = |rows: Vec<Vec<Value>>| {
        rows.iter()
            .map(|r| {
                r.iter()
                    .map(|c| c.as_str().unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let grouped = explain(
        cluster
            .node(0)
            .rows("EXPLAIN SELECT g, count(*) FROM q GROUP BY g")
            .await,
    );
    let fanout = grouped
        .find("FanoutExec")
        .unwrap_or_else(|| panic!("{grouped}"));
    for part in ["n0 (local): ", "n1: ", "n2: "] {
        assert!(grouped.contains(part), "{grouped}");
    }
    let partial = grouped
        .find("mode=Partial")
        .unwrap_or_else(|| panic!("{grouped}"));
    let final_ = grouped
        .find("mode=Final")
        .unwrap_or_else(|| panic!("{grouped}"));
    assert!(
        final_ < fanout && fanout < partial,
        "final above, partial below: {grouped}"
    );
    let top = explain(
        cluster
            .node(0)
            .rows("EXPLAIN SELECT i FROM q ORDER BY i DESC LIMIT 3")
            .await,
    );
    let fanout = top.find("FanoutExec").unwrap_or_else(|| panic!("{top}"));
    let topk = top
        .find("SortExec: TopK")
        .unwrap_or_else(|| panic!("{top}"));
    assert!(fanout < topk, "the top-K sort runs on the owners: {top}");
    // The split is a rule of DataFusion's own planning: EXPLAIN VERBOSE
    // shows the plan after it, rule by rule.
    let verbose = explain(
        cluster
            .node(0)
            .rows("EXPLAIN VERBOSE SELECT count(*) FROM q")
            .await,
    );
    let after = verbose
        .find("physical_plan after atoll_distribute")
        .unwrap_or_else(|| panic!("{verbose}"));
    assert!(verbose[after..].contains("FanoutExec"), "{verbose}");
    // count(*) without a filter: each owner counts its partitions' rows
    // without reading them (the scan says so), the coordinator sums.
    let counted = explain(cluster.node(0).rows("EXPLAIN SELECT count(*) FROM q").await);
    let fanout = counted
        .find("FanoutExec")
        .unwrap_or_else(|| panic!("{counted}"));
    let scan = counted
        .find("rows counted")
        .unwrap_or_else(|| panic!("{counted}"));
    assert!(fanout < scan, "owners count: {counted}");
    let filtered = explain(
        cluster
            .node(0)
            .rows("EXPLAIN SELECT count(*) FROM q WHERE i > 5")
            .await,
    );
    assert!(!filtered.contains("rows counted"), "{filtered}");

    cluster.nodes[2].as_mut().unwrap().signal("KILL");
    cluster.nodes[2] = None;
    cluster
        .wait_until("n2 is seen down", |v| status_of(v, "n2") == "down")
        .await;
    let (status, v) = cluster.node(0).query("SELECT count(*) FROM q").await;
    assert_eq!(status, 503, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("no complete replica of partitions"),
        "{v}"
    );
    let (status, v) = cluster
        .node(0)
        .query_with(serde_json::json!({"sql": "SELECT count(*) FROM q", "allow_partial": true}))
        .await;
    assert_eq!(status, 200, "{v}");
    let coverage = v["stats"]["coverage"].as_f64().unwrap();
    let missing = v["stats"]["missing_partitions"].as_array().unwrap().len();
    assert!(coverage < 1.0 && missing > 0, "{v}");
    assert!((coverage - (1.0 - missing as f64 / 64.0)).abs() < 0.001);
    let counted = v["rows"][0][0].as_i64().unwrap();
    assert!(
        counted > 0 && counted < 3000,
        "only the reachable part: {counted}"
    );
}

#[tokio::test]
async fn fragments_are_refused_without_the_secret_or_with_foreign_plan_nodes() {
    let cluster = Cluster::start(1, &[]).await;
    let v = cluster.node(0).cluster().await;
    let flight = v["nodes"][0]["flight_addr"].as_str().unwrap().to_string();
    let mut client = support::flight_client(&flight).await;
    // A file scan: what datafusion-proto could describe, and Atoll refuses.
    let csv = std::env::temp_dir().join(format!("atoll-refuse-{}.csv", std::process::id()));
    std::fs::write(&csv, "a\n1\n").unwrap();
    let ctx = datafusion::prelude::SessionContext::new();
    let df = ctx
        .read_csv(csv.to_str().unwrap(), Default::default())
        .await
        .unwrap();
    let plan = df.create_physical_plan().await.unwrap();
    let bytes = datafusion_proto::bytes::physical_plan_to_bytes(plan).unwrap();
    let header = serde_json::to_vec(&atoll_query::codec::FragmentHeader {
        version: atoll_query::codec::ENGINE_VERSION.into(),
        timeout_ms: 1000,
    })
    .unwrap();
    let ticket = atoll_query::codec::frame(&header, &bytes);
    let err = client
        .do_get(arrow_flight::Ticket::new(ticket.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    let mut request = tonic::Request::new(arrow_flight::Ticket::new(ticket));
    support::sign_call(&mut request, "DoGet", "test-secret", &flight);
    support::speak_protocol(&mut request);
    let err = client.do_get(request).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(
        err.message().contains("is not accepted from other nodes"),
        "{err}"
    );
    let _ = std::fs::remove_file(csv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragment_on_a_dead_node_is_retried_on_another_replica() {
    let mut cluster = Cluster::start(3, &["--replicas", "2"]).await;
    let body: String = (0..2000).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    assert_eq!(cluster.node(0).ingest("r", body).await.0, 200);
    assert_eq!(cluster.node(0).count("SELECT count(*) FROM r").await, 2000);
    // Killed, and asked before gossip has noticed: the coverage plan still
    // names n2, its fragment fails to connect, and n2's partitions are read
    // from their other replica instead.
    cluster.nodes[2].as_mut().unwrap().signal("KILL");
    cluster.nodes[2] = None;
    let (status, v) = cluster
        .node(0)
        .query("SELECT count(*), sum(i) FROM r")
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["rows"][0], serde_json::json!([2000, 1999000]), "{v}");
    assert_eq!(v["stats"]["coverage"], 1.0);
}

/// A forced leave puts the ring without the node in force at once: the
/// partitions it held move to nodes that lack their data, which mark them
/// incomplete; with N=1 a full query then fails rather than missing rows
/// silently, and a partial one says what it covered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_forced_leave_nodes_do_not_answer_for_what_they_lack() {
    let mut cluster = Cluster::start(3, &["--replicas", "1"]).await;
    let body: String = (0..3000).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    assert_eq!(cluster.node(0).ingest("j", body).await.0, 200);
    // Wait until the figures are gossiped (once a second), then shrink.
    cluster.wait_for_gossiped_rows().await;
    let before = cluster.node(0).cluster().await;
    assert_eq!(cluster.node(0).leave("n2", true).await, 202);
    drop(cluster.nodes[2].take());
    let moved = owners(&before).iter().filter(|o| *o == "n2").count();
    let views = cluster
        .wait_until(
            "a ring of n0 and n1 with the moved partitions incomplete",
            |v| {
                let held: usize = v["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n["incomplete_partitions"].as_array().map_or(0, Vec::len))
                    .sum();
                v["moving_partitions"] == 0 && owners(v).iter().all(|o| o != "n2") && held == moved
            },
        )
        .await;
    let incomplete: usize = views[0]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["incomplete_partitions"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(incomplete, moved, "{:#}", views[0]);
    let (status, v) = cluster.node(0).query("SELECT count(*) FROM j").await;
    assert_eq!(status, 503, "{v}");
    let (status, v) = cluster
        .node(1)
        .query_with(serde_json::json!({"sql": "SELECT count(*) FROM j", "allow_partial": true}))
        .await;
    assert_eq!(status, 200, "{v}");
    let expected: f64 = 1.0 - moved as f64 / 64.0;
    assert_eq!(
        v["stats"]["coverage"].as_f64(),
        Some((expected * 1000.0).round() / 1000.0),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_asked_to_leave_is_taken_out_of_the_ring_and_stops() {
    let mut cluster = Cluster::start(4, &[]).await;
    let before = cluster.node(0).cluster().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_atoll"))
        .args([
            "cluster",
            "leave",
            "n3",
            "--http-addr",
            cluster.node(1).url.trim_start_matches("http://"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut leaver = cluster.nodes[3].take().unwrap();
    let views = cluster
        .wait_until("a ring of n0..n2", |v| {
            v["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|n| n["name"] != "n3" || n["owned_partitions"] == 0)
        })
        .await;
    assert_eq!(
        views[0]["epoch"].as_u64(),
        before["epoch"].as_u64().map(|e| e + 1)
    );
    let moved = owners(&before)
        .iter()
        .zip(owners(&views[0]))
        .filter(|(a, b)| **a != *b)
        .count();
    assert_eq!(moved, 16, "only what n3 held moves");
    let status = leaver.wait_exit("n3 did not stop after leaving").await;
    assert!(status.success(), "{status:?}");
    let (status, _) = cluster
        .node(0)
        .send(
            reqwest::Method::POST,
            "/v1/cluster/leave",
            r#"{"node": "nobody"}"#,
        )
        .await;
    assert_eq!(status, 404);
    // Once the cluster sees n3 gone, its leave request is withdrawn and the
    // name may join again, as a new member.
    cluster
        .wait_until("n3's leave is done", |v| {
            v["leave_requests"].as_array().is_some_and(Vec::is_empty)
        })
        .await;
    cluster.nodes[3] = Some(cluster.launch(3, &[]));
    cluster
        .wait_until("n3 is back in the ring", |v| {
            owners(v).iter().any(|o| o == "n3") && up_count(v) == 4
        })
        .await;
}

/// A coordinator that goes away mid-stream cancels the fragment on the
/// owner, and the owner counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_fragment_stream_is_cancelled_on_the_owner() {
    use arrow::datatypes::{DataType, Field, Schema};
    use atoll_query::codec::{AtollCodec, encode_fragment};
    use atoll_query::scan::PartitionScanExec;
    use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
    use futures::StreamExt;
    let cluster = Cluster::start(1, &[]).await;
    let body: String = (0..60_000)
        .map(|i| format!("{{\"time\":{},\"i\":{i}}}\n", 1_767_225_600 + i))
        .collect();
    assert_eq!(cluster.node(0).ingest("big", body).await.0, 200);
    let schema = std::sync::Arc::new(Schema::new(vec![
        Field::new(
            "time",
            atoll_store::ColumnType::Timestamp.data_type(),
            false,
        ),
        Field::new("i", DataType::Int64, true),
    ]));
    let store = std::sync::Arc::new(atoll_store::Store::new(Default::default()));
    let partitions: Vec<u32> = (0..64).collect();
    let scan = PartitionScanExec::new(
        store.clone(),
        "big",
        schema,
        &partitions,
        1,
        Default::default(),
        None,
    );
    let plan = std::sync::Arc::new(CoalescePartitionsExec::new(std::sync::Arc::new(scan)));
    let ticket = encode_fragment(plan, &AtollCodec { store, streams: 1 }, 10_000).unwrap();
    let flight = cluster.node(0).cluster().await["nodes"][0]["flight_addr"]
        .as_str()
        .unwrap()
        .to_string();
    let mut client = support::flight_client(&flight).await;
    let mut request = tonic::Request::new(arrow_flight::Ticket::new(ticket));
    support::sign_call(&mut request, "DoGet", "test-secret", &flight);
    support::speak_protocol(&mut request);
    let mut stream = client.do_get(request).await.unwrap().into_inner();
    assert!(
        stream.next().await.unwrap().is_ok(),
        "the fragment started streaming"
    );
    drop(stream);
    drop(client);
    let started = Instant::now();
    loop {
        let (_, metrics) = cluster.node(0).get("/metrics").await;
        if metrics.contains("atoll_fragments_total{outcome=\"cancelled\"} 1") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no cancelled fragment in\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client that gives up on a slow distributed query: the coordinator
/// drops the query, its fragment streams go with it, and the owner counts
/// its fragments as cancelled; both nodes go on answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_abandoned_by_its_client_cancels_its_fragments_on_the_owners() {
    let cluster = Cluster::start(2, &["--replicas", "1"]).await;
    // 200-byte strings: each owner's share (6 MB) is more than the
    // transport buffers, so an owner streaming to a slow reader waits.
    let pad = "x".repeat(200);
    let body: String = (0..60_000)
        .map(|i| format!("{{\"i\":{i},\"s\":\"{pad}\"}}\n"))
        .collect();
    assert_eq!(cluster.node(0).ingest("slow", body).await.0, 200);
    let cancelled = |metrics: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with("atoll_fragments_total{outcome=\"cancelled\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = cancelled(&cluster.node(1).get("/metrics").await.1);
    // A nested-loop join of 5,000 by 60,000 rows: the probe side's
    // fragments stay open while the coordinator works through it. Under
    // load the build side alone may outlast the client's patience (then no
    // probe fragment was sent yet): the client waits longer each time.
    let mut metrics = String::new();
    let mut seen = false;
    for patience in [1_500, 3_000, 6_000] {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(patience))
            .build()
            .unwrap();
        let abandoned = client
            .post(format!("{}/v1/query", cluster.node(0).url))
            .json(&serde_json::json!({
                "sql": "SELECT count(*) FROM slow a JOIN slow b ON a.i < b.i AND a.s <> b.s WHERE a.i < 5000"
            }))
            .send()
            .await;
        assert!(
            abandoned.is_err_and(|e| e.is_timeout()),
            "the query should still be running when the client leaves"
        );
        let started = Instant::now();
        while !seen && started.elapsed() < Duration::from_secs(5) {
            metrics = cluster.node(1).get("/metrics").await.1;
            seen = cancelled(&metrics) > before;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if seen {
            break;
        }
    }
    assert!(seen, "no fragment cancelled on the owner:\n{metrics}");
    for s in cluster.running() {
        assert_eq!(s.count("SELECT count(*) FROM slow").await, 60_000);
    }
}

/// N=3: a killed node's partitions are covered by the other replicas; back
/// without its data, it marks its partitions incomplete and coverage plans
/// keep avoiding it, so every node answers in full and right, itself
/// included (it holds only what was written after its return: handoff is
/// paused here, the handoff tests show it catching up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_without_its_data_is_not_used_for_coverage() {
    let mut cluster = Cluster::start(3, &["--transfer-limit", "0"]).await;
    let body = |from: usize, to: usize| -> String {
        (from..to).map(|i| format!("{{\"i\":{i}}}\n")).collect()
    };
    assert_eq!(cluster.node(0).ingest("r", body(0, 3000)).await.0, 200);
    cluster.nodes[2].as_mut().unwrap().signal("KILL");
    cluster.nodes[2] = None;
    cluster
        .wait_until("n2 is seen down", |v| status_of(v, "n2") == "down")
        .await;
    for s in cluster.running() {
        let (status, v) = s.query("SELECT count(*), sum(i) FROM r").await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["rows"][0], serde_json::json!([3000, 4498500]), "{v}");
        assert_eq!(v["stats"]["coverage"], 1.0, "{v}");
    }
    cluster.nodes[2] = Some(cluster.launch(2, &[]));
    cluster
        .wait_until("n2 is back with every partition incomplete", |v| {
            up_count(v) == 3
                && v["nodes"].as_array().unwrap().iter().any(|n| {
                    n["name"] == "n2" && n["incomplete_partitions"].as_array().unwrap().len() == 64
                })
        })
        .await;
    assert_eq!(cluster.node(2).ingest("r", body(3000, 4000)).await.0, 200);
    let local = cluster.node(2).cluster().await["local"]["rows"].as_u64();
    assert_eq!(
        local,
        Some(1000),
        "n2 holds only what came after its return"
    );
    for s in cluster.running() {
        let (status, v) = s.query("SELECT count(*), sum(i) FROM r").await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["rows"][0], serde_json::json!([4000, 7998000]), "{v}");
        let used: Vec<&str> = v["stats"]["nodes"]
            .as_array()
            .map(|ns| ns.iter().map(|n| n["node"].as_str().unwrap()).collect())
            .unwrap_or_default();
        assert!(!used.contains(&"n2"), "n2 must not cover anything yet: {v}");
    }
}

/// A filter on a table's partition key confines a query to the partitions
/// the key hashes to: only their owner is asked, so the query answers in
/// full even while nodes holding other partitions are down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_key_filter_asks_only_the_owner_of_its_partition() {
    let mut cluster = Cluster::start(3, &["--replicas", "1"]).await;
    let owner = keyed_table(&cluster, "keyed", 3000).await;
    // A key on n1, asked through n0.
    let key = (0..100)
        .map(|i| format!("k{i}"))
        .find(|k| owner(k) == "n1")
        .unwrap();
    let sql = format!("SELECT count(*), sum(v) FROM keyed WHERE k = '{key}'");
    let (status, v) = cluster.node(0).query(&sql).await;
    assert_eq!(status, 200, "{v}");
    let i: i64 = key[1..].parse().unwrap();
    let sum: i64 = (0..30).map(|j| i + 100 * j).sum();
    assert_eq!(v["rows"][0], serde_json::json!([30, sum]), "{v}");
    assert_eq!(v["stats"]["partitions_total"], 1, "{v}");
    let asked: Vec<&str> = v["stats"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(asked, ["n1"], "{v}");
    // With n2 down, the key on n1 still answers in full; one on n2 cannot.
    cluster.nodes[2].as_mut().unwrap().signal("KILL");
    cluster.nodes[2] = None;
    cluster
        .wait_until("n2 is seen down", |v| status_of(v, "n2") == "down")
        .await;
    let (status, v) = cluster.node(0).query(&sql).await;
    assert_eq!(
        (status, &v["stats"]["coverage"]),
        (200, &serde_json::json!(1.0)),
        "{v}"
    );
    let on_n2 = (0..100)
        .map(|i| format!("k{i}"))
        .find(|k| owner(k) == "n2")
        .unwrap();
    let (status, v) = cluster
        .node(0)
        .query(&format!(
            "SELECT count(*) FROM keyed WHERE k IN ('{key}', '{on_n2}')"
        ))
        .await;
    assert_eq!(status, 503, "{v}");
}

/// A node that was unreachable when a table was dropped drops its copy
/// once it is back (the drop is gossiped), and its copy never brings the
/// table back on the others; a table created again afterwards stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_missed_by_an_unreachable_node_is_applied_when_it_returns() {
    let cluster = Cluster::start(3, &[]).await;
    assert_eq!(cluster.node(0).ingest("gone", "{\"a\":1}\n").await.0, 200);
    let pid = |i: usize| cluster.node(i).child.id().to_string();
    let signal = |sig: &str, i: usize| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid(i)])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    signal("-STOP", 2);
    cluster
        .wait_until_on(&[0, 1], "n2 is seen down", |v| status_of(v, "n2") == "down")
        .await;
    let (status, v) = cluster
        .node(0)
        .send(reqwest::Method::DELETE, "/v1/tables/gone", "")
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["dropped_on"],
        serde_json::json!({"n1": true}),
        "n2 was not reachable"
    );
    signal("-CONT", 2);
    let started = Instant::now();
    while cluster.node(2).get("/v1/tables/gone").await.0 != 404 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "n2 kept the dropped table"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Schemas travel by gossip: once a table n2 creates after its return
    // is known everywhere, n2's gossip since its return has reached every
    // node, so its old copy of the table would have too.
    assert_eq!(cluster.node(2).ingest("marker", "{\"m\":1}\n").await.0, 200);
    wait_for_table_everywhere(&cluster, "marker", |_| true).await;
    for s in cluster.running() {
        let (status, body) = s.get("/v1/tables/gone").await;
        let node = s.cluster().await["node"].clone();
        assert_eq!(status, 404, "the table came back on {node}: {body}");
    }
    assert_eq!(cluster.node(1).ingest("gone", "{\"b\":2}\n").await.0, 200);
    wait_for_table_everywhere(&cluster, "gone", |body| body.contains("\"b\"")).await;
    assert_eq!(cluster.node(2).ingest("marker", "{\"m\":2}\n").await.0, 200);
    wait_for_table_everywhere(&cluster, "marker", |_| true).await;
    for s in cluster.running() {
        let (status, body) = s.get("/v1/tables/gone").await;
        assert_eq!(status, 200, "created again, it stays on {}", s.url);
        assert!(body.contains("\"b\"") && !body.contains("\"a\""), "{body}");
    }
}

/// Waits (at most 20 s) until every running node answers
/// `GET /v1/tables/{table}` with a body that passes `check`.
async fn wait_for_table_everywhere(cluster: &Cluster, table: &str, check: impl Fn(&str) -> bool) {
    let path = format!("/v1/tables/{table}");
    support::wait_until(&format!("{table} on every node"), async || {
        let mut everywhere = true;
        for s in cluster.running() {
            let (status, body) = s.get(&path).await;
            everywhere &= status == 200 && check(&body);
        }
        everywhere
    })
    .await;
}

/// A table keyed by `k` holding `rows` events (`k` = "k0".."k99" in turn,
/// `v` = their index), and which node owns the partition of a key.
async fn keyed_table(
    cluster: &Cluster,
    table: &str,
    rows: usize,
) -> impl Fn(&str) -> String + use<> {
    let path = format!("/v1/tables/{table}");
    let (status, v) = cluster
        .node(0)
        .send(reqwest::Method::PUT, &path, r#"{"partition_key": "k"}"#)
        .await;
    assert_eq!(status, 200, "{v}");
    let body: String = (0..rows)
        .map(|i| format!("{{\"k\":\"k{}\",\"v\":{i}}}\n", i % 100))
        .collect();
    assert_eq!(cluster.node(0).ingest(table, body).await.0, 200);
    let ring = cluster.node(0).cluster().await;
    move |key: &str| {
        let p = atoll_ring::partition_for_key(key.as_bytes(), 64) as usize;
        ring["ring"][p]["owner"].as_str().unwrap().to_string()
    }
}

/// What `atoll cluster status` prints, asked of `node`.
fn status_text(node: &Server) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_atoll"))
        .args(["cluster", "status", "--http-addr"])
        .arg(node.url.trim_start_matches("http://"))
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// The names of the saved views (or boards) a node lists.
async fn saved_names(node: &Server, kind: &str) -> Vec<String> {
    let (status, body) = node.get("/v1/saved").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v[kind]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

/// Saved views and boards are the cluster's: saved through one node they
/// are listed on every node, a deletion through another reaches all, a node
/// that was down when a view was saved learns it once back, and every node
/// keeps them across a restart with its data dir. Bad names and boards of
/// missing views are refused, naming what is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_views_and_boards_are_cluster_wide_and_survive_restarts() {
    use reqwest::Method;
    let root = tempfile::tempdir().unwrap();
    let dir = |i: usize| root.path().join(format!("n{i}")).display().to_string();
    let mut cluster = Cluster::start_each(3, &[], |i| vec!["--data-dir".into(), dir(i)]).await;
    let state =
        r#"{"state": "view=explore&table=events&range=1h&group=region&agg=p99%3Aduration_ms"}"#;
    let (status, v) = cluster
        .node(0)
        .send(Method::PUT, "/v1/saved/views/p99%20by%20region", state)
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["name"], "p99 by region");
    assert_eq!(v["by"], "n0");
    let board = r#"{"views": ["p99 by region"]}"#;
    let (status, v) = cluster
        .node(1)
        .send(Method::PUT, "/v1/saved/boards/on%20call", board)
        .await;
    assert!(
        status == 200 || status == 400,
        "saved, or refused while n1 has not heard of the view: {v}"
    );
    wait_until_all(&cluster, "the view on every node", |names| {
        names == ["p99 by region"]
    })
    .await;
    let (status, v) = cluster
        .node(1)
        .send(Method::PUT, "/v1/saved/boards/on%20call", board)
        .await;
    assert_eq!(status, 200, "{v}");
    for i in 0..3 {
        support::wait_until(&format!("the board on n{i}"), async || {
            saved_names(cluster.node(i), "boards").await == ["on call"]
        })
        .await;
    }
    let (_, body) = cluster.node(2).get("/v1/saved").await;
    let listed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        listed["views"][0]["state"],
        "view=explore&table=events&range=1h&group=region&agg=p99%3Aduration_ms"
    );
    assert_eq!(
        listed["boards"][0]["views"],
        serde_json::json!(["p99 by region"])
    );

    // Refusals name what is wrong.
    for (path, body, status, says) in [
        ("/v1/saved/views/%20x", state, 400, "spaces at either end"),
        (
            "/v1/saved/boards/b",
            r#"{"views": ["nope"]}"#,
            400,
            "no saved view named \"nope\"",
        ),
        (
            "/v1/saved/views/v",
            r#"{"sql": "x"}"#,
            400,
            "the body must be",
        ),
        ("/v1/saved/things/v", state, 404, "views or boards"),
    ] {
        let (got, v) = cluster.node(0).send(Method::PUT, path, body).await;
        assert_eq!(got, status, "{path}: {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{path}: {v}");
    }
    let (got, v) = cluster
        .node(0)
        .send(Method::DELETE, "/v1/saved/views/absent", "")
        .await;
    assert_eq!(got, 404, "{v}");

    // Saved while n2 is down: n2 learns it once back.
    cluster.nodes[2].as_mut().unwrap().signal("KILL");
    cluster.nodes[2] = None;
    let (status, v) = cluster
        .node(1)
        .send(
            Method::PUT,
            "/v1/saved/views/errors",
            r#"{"state": "view=sql&sql=SELECT%201"}"#,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let node = cluster.launch(2, &["--data-dir", &dir(2)]);
    cluster.put(2, node);
    wait_until_all(&cluster, "both views on every node", |names| {
        names == ["errors", "p99 by region"]
    })
    .await;

    // Deleted through n2: gone everywhere, and stays gone after every node
    // restarts from its data dir.
    let (status, v) = cluster
        .node(2)
        .send(Method::DELETE, "/v1/saved/views/errors", "")
        .await;
    assert_eq!(status, 200, "{v}");
    wait_until_all(&cluster, "the deletion on every node", |names| {
        names == ["p99 by region"]
    })
    .await;
    for i in 0..3 {
        cluster.nodes[i].as_mut().unwrap().signal("TERM");
        cluster.nodes[i] = None;
    }
    for i in 0..3 {
        let node = cluster.launch(i, &["--data-dir", &dir(i)]);
        assert_eq!(
            saved_names(&node, "views").await,
            ["p99 by region"],
            "n{i} from its data dir"
        );
        assert_eq!(
            saved_names(&node, "boards").await,
            ["on call"],
            "n{i} from its data dir"
        );
        cluster.put(i, node);
    }
}

async fn wait_until_all(cluster: &Cluster, what: &str, check: impl Fn(&[String]) -> bool) {
    for (i, node) in cluster.running().enumerate() {
        support::wait_until(&format!("{what} (node {i})"), async || {
            check(&saved_names(node, "views").await)
        })
        .await;
    }
}

/// `POST /v1/live`'s updates, read as a client reads Server-Sent Events.
struct LiveReader {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl LiveReader {
    async fn open(node: &Server, spec: Value) -> LiveReader {
        let res = node
            .request(reqwest::Method::POST, "/v1/live")
            .header("content-type", "application/json")
            .body(spec.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200);
        LiveReader {
            body: Box::pin(res.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The next update (bounded by 20 s).
    async fn next(&mut self) -> Value {
        use futures::StreamExt;
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let data: String = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if !data.is_empty() {
                    return serde_json::from_str(&data).unwrap();
                }
                continue;
            }
            let left = until.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.body.next())
                .await
                .expect("an update within 20 s")
                .expect("the stream goes on")
                .unwrap();
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Reads updates until `done` holds on the running totals, counting
    /// the first aggregate of every bucket.
    async fn count_until(&mut self, total: &mut f64, done: impl Fn(f64, &Value) -> bool) -> Value {
        loop {
            let u = self.next().await;
            *total += u["buckets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["values"][0].as_f64().unwrap_or(0.0))
                .sum::<f64>();
            if done(*total, &u) {
                return u;
            }
        }
    }
}

async fn subscriptions(node: &Server) -> f64 {
    node.metric("atoll_live_subscriptions")
        .await
        .unwrap_or(-1.0)
}

/// A live view coordinated by n0 follows events sent through n1 on every
/// owner (N=1), counts each once even when its reader did not read while
/// they came, reports the coverage it lost when an owner is killed, and
/// stops on every owner once its reader goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_view_follows_every_owner_and_stops_when_its_reader_goes() {
    let mut cluster = Cluster::start(3, &["--replicas", "1"]).await;
    let seed = (0..30)
        .map(|i| format!("{{\"id\": \"s{i}\", \"status\": 200, \"ms\": 1}}\n"))
        .collect::<String>();
    assert_eq!(cluster.node(1).ingest("lv", seed).await.0, 200);
    let spec = serde_json::json!({
        "table": "lv", "bucket_seconds": 60, "filter": "status >= 500",
        "aggregates": [{"fn": "count"}, {"fn": "max", "column": "ms"}],
    });
    let mut live = LiveReader::open(cluster.node(0), spec).await;
    let first = live.next().await;
    assert_eq!(first["coverage"], 1.0, "{first}");
    for i in 0..3 {
        cluster
            .node(i)
            .wait_for_metric("atoll_live_subscriptions", |v| v == 1.0)
            .await;
    }
    // Sent while the reader does not read: 5 requests of 2,000 events, a
    // tenth of them matching the filter.
    for r in 0..5 {
        let body: String = (0..2000)
            .map(|i| {
                let status = if i % 10 == 0 { 503 } else { 200 };
                format!("{{\"id\": \"e{r}-{i}\", \"status\": {status}, \"ms\": {i}}}\n")
            })
            .collect();
        let (status, v) = cluster.node(1).ingest("lv", body).await;
        assert_eq!((status, v["accepted"].as_i64()), (200, Some(2000)), "{v}");
    }
    let mut total = 0.0;
    let last = live
        .count_until(&mut total, |t, u| t >= 1000.0 || u["lagging"] == true)
        .await;
    assert_eq!(total, 1000.0, "each matching event counted once: {last}");
    // The max of matching events' `ms` (multiples of 10 below 2,000), not a count.
    let max = last["buckets"][0]["values"][1].as_f64();
    assert!(
        max.is_some_and(|m| m % 10.0 == 0.0 && m < 2000.0 && m > 1.0),
        "max(ms): {last}"
    );
    assert!(last["samples"].as_array().unwrap().len() <= 50, "{last}");

    // An owner killed: the view goes on, saying what it no longer follows.
    cluster.nodes[2].as_mut().unwrap().signal("KILL");
    cluster.nodes[2] = None;
    let mut ignored = 0.0;
    let partial = live
        .count_until(&mut ignored, |_, u| u["coverage"].as_f64().unwrap() < 1.0)
        .await;
    assert!(
        partial["missing_partitions"].as_u64().unwrap() > 0,
        "{partial}"
    );

    // The reader goes away: every owner stops following within seconds.
    drop(live);
    for i in 0..2 {
        support::wait_until(&format!("n{i} stops following"), async || {
            subscriptions(cluster.node(i)).await == 0.0
        })
        .await;
    }
    cluster
        .node(0)
        .wait_for_metric("atoll_live_views", |v| v == 0.0)
        .await;

    // A node stops on SIGTERM with a live view open (its response ends).
    let spec = serde_json::json!({"table": "lv", "bucket_seconds": 60});
    let mut open = LiveReader::open(cluster.node(1), spec).await;
    open.next().await;
    let node = cluster.nodes[1].as_mut().unwrap();
    let pid = node.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = node
        .wait_exit("n1 stops on SIGTERM although a live view is open")
        .await;
    assert!(status.success(), "{status}");
}

/// Behind NAT or a proxy, a node tells the others where to reach it:
/// `/v1/cluster` lists the advertised gossip and Flight addresses, not the
/// bound ones. (`scripts/chaos --mode loopback` runs whole clusters this
/// way, through its proxies.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_advertises_the_addresses_it_is_given() {
    let node = Server::start(&[
        "--flight-advertise-addr",
        "127.0.0.1:9",
        "--gossip-advertise-addr",
        "127.0.0.1:10",
    ]);
    let v = node.cluster().await;
    let me = &v["nodes"][0];
    assert_eq!(me["flight_addr"], "127.0.0.1:9", "{v}");
    assert_eq!(me["gossip_addr"], "127.0.0.1:10", "{v}");
    assert!(
        Server::try_start(&["--gossip-advertise-addr", "nowhere"]).is_err(),
        "an advertised address that is not IP:PORT is refused"
    );
}
