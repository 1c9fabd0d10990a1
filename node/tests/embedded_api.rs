//! The library's in-process door (`Node::embed`, `Node::client`), in this
//! test's own process: the same keys, roles, sandbox and limits as the
//! HTTP doors, typed answers and typed errors, and the router an
//! application merges.

use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use atoll_errors::{Classified, ErrorKind};
use atoll_node::embed::{EmbedError, QueryOptions};
use atoll_node::{Node, NodeConfig};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

const ADMIN: &str = "embedded-api-admin-key-0123456789";

async fn embedded() -> (Node, tokio::net::TcpListener) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = NodeConfig {
        http_addr: listener.local_addr().unwrap().to_string(),
        flight_addr: "127.0.0.1:0".into(),
        gossip_addr: "127.0.0.1:0".into(),
        admin_key: Some(ADMIN.into()),
        cluster_secret: Some("embedded-api".into()),
        memory_limit: Some("1GiB".parse().unwrap()),
        ..NodeConfig::default()
    };
    (
        Node::embed(&config).await.expect("the node starts"),
        listener,
    )
}

/// A request to the node's router, as the application's server would pass
/// it on.
async fn call(
    node: &Node,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", node.http_addr))
        .header("host", node.http_addr.to_string())
        .header("content-type", "application/json");
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let response = node
        .router()
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn kind<T>(r: Result<T, EmbedError>) -> ErrorKind {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.kind(),
    }
}

#[test]
fn the_default_config_is_the_binarys() {
    let config = NodeConfig::default();
    assert_eq!(config.http_addr, "127.0.0.1:7070");
    assert_eq!(config.replicas, 3);
    assert!(config.seeds.is_empty() && config.admin_key.is_none());
    assert_eq!(config.max_body_bytes.0, 64 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_door_is_a_door_like_the_others() {
    let (node, _listener) = embedded().await;

    // Keys: none or a wrong one is refused, as on HTTP.
    assert_eq!(kind(node.client(None)), ErrorKind::Unauthenticated);
    assert_eq!(
        kind(node.client(Some("not-a-key"))),
        ErrorKind::Unauthenticated
    );
    let admin = node.client(Some(ADMIN)).unwrap();

    // Events in: the good ones stored, a bad one named.
    let events = vec![
        json!({"user": "u1", "ms": 10}),
        json!({"user": "u2", "ms": 20}),
        json!(5),
        json!({"user": "u1", "ms": 30}),
    ];
    let done = admin.ingest("visits", &events).await.unwrap();
    assert_eq!(done.outcome.accepted, 3);
    assert_eq!(done.outcome.rejected.len(), 1);
    assert!(!done.quorum_failed);
    // Sent again with its idempotency key, a batch lands once.
    for _ in 0..2 {
        let done = admin
            .ingest_idempotent("visits", [json!({"user": "u3", "ms": 5})], "batch-1")
            .await
            .unwrap();
        assert_eq!(done.outcome.accepted, 1);
    }

    // Typed answers, and what they covered.
    let answer = admin
        .query("SELECT \"user\", count(*) AS n, sum(ms) AS ms FROM visits GROUP BY \"user\" ORDER BY \"user\"")
        .await
        .unwrap();
    assert_eq!(answer.rows(), 3);
    let b = &answer.batches[0];
    let users: Vec<&str> = b
        .column(0)
        .as_string::<i32>()
        .iter()
        .map(Option::unwrap)
        .collect();
    assert_eq!(users, ["u1", "u2", "u3"]);
    assert_eq!(b.column(1).as_primitive::<Int64Type>().values(), &[2, 1, 1]);
    assert_eq!(answer.stats.coverage, 1.0);
    let capped = admin
        .query_with(
            "SELECT * FROM visits",
            QueryOptions {
                max_rows: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((capped.rows(), capped.stats.truncated), (2, true));

    // The sandbox and limits of every door.
    assert_eq!(
        kind(admin.query("DROP TABLE visits").await),
        ErrorKind::BadInput
    );
    assert_eq!(
        kind(admin.query("SELECT nope FROM visits").await),
        ErrorKind::BadInput
    );
    assert_eq!(
        kind(
            admin
                .query_with(
                    "SELECT 1",
                    QueryOptions {
                        max_rows: Some(0),
                        ..Default::default()
                    }
                )
                .await
        ),
        ErrorKind::BadInput
    );
    assert_eq!(
        kind(admin.ingest("bad name!", [json!({"a": 1})]).await),
        ErrorKind::BadInput
    );
    assert_eq!(
        admin
            .query("SELECT count(*) FROM visits")
            .await
            .unwrap()
            .rows(),
        1
    );

    // Roles and scopes: a query key made through the merged router reads
    // but cannot write; a key limited to another table cannot read this one.
    let (status, made) = call(
        &node,
        "POST",
        "/v1/keys",
        Some(ADMIN),
        json!({"name": "reader", "role": "query"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let reader = node.client(made["key"].as_str()).unwrap();
    assert_eq!(
        reader
            .query("SELECT count(*) FROM visits")
            .await
            .unwrap()
            .rows(),
        1
    );
    assert_eq!(
        kind(reader.ingest("visits", [json!({"a": 1})]).await),
        ErrorKind::Forbidden
    );
    let (_, scoped) = call(
        &node,
        "POST",
        "/v1/keys",
        Some(ADMIN),
        json!({"name": "other", "role": "query", "tables": ["other"]}),
    )
    .await;
    let scoped = node.client(scoped["key"].as_str()).unwrap();
    assert_eq!(
        kind(scoped.query("SELECT count(*) FROM visits").await),
        ErrorKind::Forbidden
    );

    // A key revoked while a client holds it stops working at its next call.
    let (status, _) = call(&node, "DELETE", "/v1/keys/reader", Some(ADMIN), Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        kind(reader.query("SELECT 1").await),
        ErrorKind::Unauthenticated
    );

    // The router carries the guard: no key, no answer.
    let (status, _) = call(&node, "POST", "/v1/query", None, json!({"sql": "SELECT 1"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, v) = call(
        &node,
        "POST",
        "/v1/query",
        Some(ADMIN),
        json!({"sql": "SELECT count(*) FROM visits"}),
    )
    .await;
    assert_eq!((status, &v["rows"]), (StatusCode::OK, &json!([[4]])));

    // Ownership: one node owns every partition.
    let owners = node.owners(b"u1").await.unwrap();
    assert_eq!(owners.replicas.len(), 1);
    assert!(owners.replicas[0].me && owners.replicas[0].up);
    assert_eq!(owners.replicas[0].name, node.name);

    tokio::time::timeout(Duration::from_secs(20), node.shutdown())
        .await
        .expect("shutdown within 20 s")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedding_needs_the_address_the_application_serves_on() {
    let config = NodeConfig {
        http_addr: "127.0.0.1:0".into(),
        ..NodeConfig::default()
    };
    let err = Node::embed(&config).await.err().expect("refused");
    assert!(err.to_string().contains("not 0"), "{err}");
}
