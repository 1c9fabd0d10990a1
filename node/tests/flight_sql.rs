//! The Arrow Flight SQL door (`--flight-sql-addr`) with ADBC's Flight SQL
//! driver and pyarrow (installed by `scripts/install-clients`): the shared
//! benchmark's queries read into Arrow tables equal to `/v1/query`'s, on
//! one node and on every node of a ring; parameters; the catalog ADBC
//! browses; API keys by bearer token (role and table scope); writes
//! refused; a node down refused unless the partial answer is asked for.

mod support;

use serde_json::{Value, json};
use support::answers::{assert_same_rows, benchmark, tolerance};
use support::clients::{python_with, script};
use support::{Cluster, Server, generated_events, status_of};

const ADMIN: &str = "test-admin-key-0123456789";

/// ADBC running `steps` (see tests/clients/adbc_client.py) on `addr`.
fn adbc(addr: &str, key: Option<&str>, headers: Value, steps: Value) -> Vec<Value> {
    let plan =
        json!({"uri": format!("grpc://{addr}"), "key": key, "headers": headers, "steps": steps});
    run_plan(&plan)
}

fn run_plan(plan: &Value) -> Vec<Value> {
    let out = python_with(&[&script("adbc_client.py")], plan);
    out["results"].as_array().unwrap().clone()
}

/// Q1–Q8 through ADBC on `addr` equal `/v1/query`'s answers on `http`.
async fn benchmark_answers_agree(addr: &str, key: Option<&str>, http: &Server) {
    let queries = benchmark(http).await;
    let steps: Vec<Value> = queries.iter().map(|(_, q)| json!({"sql": q})).collect();
    let results = adbc(addr, key, json!({}), json!(steps));
    for (i, (tag, sql)) in queries.iter().enumerate() {
        let expected = http.rows(sql).await;
        assert!(!expected.is_empty(), "{tag} answers rows");
        assert_same_rows(tag, &results[i], &expected, tolerance(tag));
    }
}

fn error(result: &Value) -> String {
    result["error"]
        .as_str()
        .unwrap_or_else(|| panic!("an error, not {result}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adbc_reads_the_benchmark_into_arrow_with_an_api_key() {
    let s = Server::start(&["--admin-key", ADMIN, "--flight-sql-addr", "127.0.0.1:0"]);
    let addr = s.flight_sql_addr.clone().expect("Flight SQL is served");
    let (status, v) = s.ingest("events", generated_events(20_000, 5, &[])).await;
    assert_eq!((status, v["accepted"].as_u64()), (200, Some(20_000)), "{v}");
    let (status, v) = s.ingest_json("other", &json!([{"a": 1}])).await;
    assert_eq!(status, 200, "{v}");
    let reader = s.make_key("notebook", "query", None).await;
    benchmark_answers_agree(&addr, Some(&reader), &s).await;

    // Arrow types as the engine made them; parameters bound by ADBC.
    let queries = benchmark(&s).await;
    let q8 = &queries[7].1;
    let user = q8.split('\'').nth(1).unwrap();
    let results = adbc(
        &addr,
        Some(&reader),
        json!({}),
        json!([
            {"sql": q8.replace(&format!("'{user}'"), "?"), "params": [user]},
            {"sql": "SELECT count(*) AS n FROM events WHERE status >= ? AND service <> ?", "params": [500, "nope"]},
            {"objects": true},
            {"sql": "DROP TABLE events"},
        ]),
    );
    assert_same_rows("Q8 with a parameter", &results[0], &s.rows(q8).await, 0.0);
    assert_eq!(
        results[0]["types"][0], "timestamp[us, tz=UTC]",
        "{}",
        results[0]
    );
    let n = s
        .count("SELECT count(*) FROM events WHERE status >= 500 AND service <> 'nope'")
        .await;
    assert_eq!(results[1]["rows"], json!([[n]]));
    let tables = results[2]["tables"].as_object().unwrap();
    assert_eq!(
        tables.keys().collect::<Vec<_>>(),
        ["atoll.public.events", "atoll.public.other"]
    );
    assert!(
        tables["atoll.public.events"]
            .as_array()
            .unwrap()
            .contains(&json!("duration_ms"))
    );
    assert!(error(&results[3]).contains("read-only"), "{}", results[3]);
    assert_eq!(s.count("SELECT count(*) FROM events").await, 20_000);

    // The key as a Basic handshake's password: answered with the token.
    let results = run_plan(&json!({
        "uri": format!("grpc://{addr}"), "basic": ["notebook", reader],
        "steps": [{"sql": "SELECT count(*) FROM other"}],
    }));
    assert_eq!(results[0]["rows"], json!([[1]]), "{}", results[0]);

    // No key, a wrong key, a key without the query role, a scoped key
    // reading another table: refused; the scoped key sees its table only.
    let count = json!([{"sql": "SELECT count(*) FROM events"}]);
    let refused = adbc(&addr, None, json!({}), count.clone());
    assert!(
        error(&refused[0]).contains("UNAUTHENTICATED"),
        "{}",
        refused[0]
    );
    let refused = adbc(
        &addr,
        Some("atoll_0000000000000000_00"),
        json!({}),
        count.clone(),
    );
    assert!(
        error(&refused[0]).contains("UNAUTHENTICATED"),
        "{}",
        refused[0]
    );
    let writer = s.make_key("writer", "ingest", None).await;
    let refused = adbc(&addr, Some(&writer), json!({}), count.clone());
    assert!(
        error(&refused[0]).contains("PermissionDenied"),
        "{}",
        refused[0]
    );
    let scoped = s.make_key("scoped", "query", Some(&["other"])).await;
    let results = adbc(
        &addr,
        Some(&scoped),
        json!({}),
        json!([{"sql": "SELECT count(*) FROM events"}, {"sql": "SELECT count(*) FROM other"}, {"objects": true}]),
    );
    assert!(
        error(&results[0]).contains("PermissionDenied"),
        "{}",
        results[0]
    );
    assert_eq!(results[1]["rows"], json!([[1]]));
    let tables: Vec<&String> = results[2]["tables"].as_object().unwrap().keys().collect();
    assert_eq!(tables, ["atoll.public.other"]);
}

/// Every node's Flight SQL door answers the benchmark as `/v1/query`
/// does; with a node down (one replica), a query says which partitions
/// it cannot read unless the `atoll-allow-partial` header asks for what
/// can be read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_of_a_ring_answers_over_flight_sql() {
    let mut cluster =
        Cluster::start(3, &["--replicas", "1", "--flight-sql-addr", "127.0.0.1:0"]).await;
    let (status, v) = cluster
        .node(2)
        .ingest("events", generated_events(20_000, 13, &[]))
        .await;
    assert_eq!((status, v["accepted"].as_u64()), (200, Some(20_000)), "{v}");
    for i in 0..3 {
        let addr = cluster.node(i).flight_sql_addr.clone().expect("served");
        benchmark_answers_agree(&addr, None, cluster.node(0)).await;
    }
    cluster.nodes[1] = None;
    cluster
        .wait_until("n1 is seen down", |v| status_of(v, "n1") == "down")
        .await;
    let addr = cluster.node(0).flight_sql_addr.clone().unwrap();
    let count = json!([{"sql": "SELECT count(*) FROM events"}]);
    let refused = adbc(&addr, None, json!({}), count.clone());
    assert!(error(&refused[0]).contains("partition"), "{}", refused[0]);
    let partial = adbc(&addr, None, json!({"atoll-allow-partial": "true"}), count);
    let n = partial[0]["rows"][0][0].as_i64().unwrap();
    assert!(n > 0 && n < 20_000, "{}", partial[0]);
    let (_, v) = cluster
        .node(0)
        .query_with(json!({"sql": "SELECT count(*) FROM events", "allow_partial": true}))
        .await;
    assert_eq!(v["rows"][0][0].as_i64(), Some(n), "{v}");
}

/// Queries started at GetFlightInfo wait for a DoGet that never comes: at
/// most the waiting room's places, and only until their time limit, after
/// which their admission slots are free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_left_waiting_free_their_slots() {
    let s = Server::start(&[
        "--flight-sql-addr",
        "127.0.0.1:0",
        "--max-concurrent-queries",
        "2",
        "--query-queue-wait-ms",
        "200",
        "--query-timeout-ms",
        "1500",
    ]);
    let rows: Vec<Value> = (0..20_000).map(|i| json!({"i": i})).collect();
    let (status, v) = s.ingest_json("x", &json!(rows)).await;
    assert_eq!(status, 200, "{v}");
    let addr = s.flight_sql_addr.clone().unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = arrow_flight::sql::client::FlightSqlServiceClient::new(channel);
    // Two slow joins start and wait; nobody fetches them.
    let slow = "SELECT count(*) FROM x a, x b WHERE a.i + b.i < 0";
    for _ in 0..2 {
        client.execute(slow.to_string(), None).await.unwrap();
    }
    let (status, v) = s.query("SELECT 1").await;
    assert_eq!(status, 503, "both slots are held: {v}");
    support::wait_until("the waiting queries stop at their time limit", async || {
        s.query("SELECT 1").await.0 == 200
    })
    .await;
    // And they leave the waiting room (counted as cancelled).
    s.wait_for_metric("atoll_queries_running", |n| n == 0.0)
        .await;
}
