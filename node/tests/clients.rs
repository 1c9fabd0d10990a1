//! The real client libraries a team already uses, pointed at Atoll by
//! their endpoint setting alone: libhoney for Python and JavaScript
//! (Honeycomb's Events API) and the OpenTelemetry Python SDK's OTLP/HTTP
//! exporters, each into a 3-node cluster with API keys; plus OTLP/JSON
//! bodies made by hand and the error shapes of both protocols.
//!
//! The clients are installed by `scripts/install-clients` (the test
//! command runs it); without them these tests fail saying so.

mod support;

use std::process::Command;

use prost::Message;
use reqwest::Method;
use serde_json::{Value, json};
use support::clients::{clients_dir, python, run, script};
use support::{Api, Cluster};

const ADMIN: &str = "test-admin-key-0123456789";

/// An ingest key for the tables given, once every node knows it (an
/// empty Honeycomb batch stores nothing and needs the key).
async fn ingest_key(c: &Cluster, tables: &[&str]) -> String {
    let body = json!({"name": "senders", "role": "ingest", "tables": tables}).to_string();
    let (status, v) = c.node(0).send(Method::POST, "/v1/keys", &body).await;
    assert_eq!(status, 201, "{v}");
    let key = v["key"].as_str().unwrap().to_string();
    for node in c.running() {
        let api = node.with_key(&key);
        let path = format!("/1/batch/{}", tables[0]);
        support::wait_until("every node knows the key", async || {
            post(&api, &path, "application/json", b"[]".to_vec(), &[])
                .await
                .0
                == 200
        })
        .await;
    }
    key
}

/// Waits until `sql` (a count) gives `n` on `api` (tables and rows reach
/// the other nodes by gossip within a moment).
async fn wait_count(api: &Api, sql: &str, n: i64) {
    support::wait_until(&format!("{sql} = {n}"), async || {
        let (status, v) = api.query(sql).await;
        status == 200 && v["rows"][0][0] == n
    })
    .await;
}

async fn three_nodes() -> Cluster {
    Cluster::start(3, &["--admin-key", ADMIN]).await
}

fn all_accepted(statuses: &Value, count: usize) {
    let list = statuses.as_array().expect("a list of statuses");
    assert_eq!(list.len(), count, "{statuses}");
    for s in list {
        assert_eq!(s["status_code"], 202, "{statuses}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libhoney_python_sends_into_a_cluster() {
    let c = three_nodes().await;
    let key = ingest_key(&c, &["web_requests"]).await;
    // The dataset's name maps to the table `web_requests`; the key is
    // carried by libhoney's X-Honeycomb-Team header.
    let statuses = python(&[
        &script("libhoney_send.py"),
        &c.node(1).url,
        &key,
        "Web Requests",
        "250",
    ]);
    all_accepted(&statuses, 250);
    let q = c.node(2);
    wait_count(q, "SELECT count(*) FROM web_requests", 250).await;
    assert_eq!(
        q.count("SELECT count(*) FROM web_requests WHERE samplerate = 4")
            .await,
        50,
        "every 5th event was sent pre-sampled at 4"
    );
    // libhoney sends every event's sample rate, 1 included: stored as sent.
    assert_eq!(
        q.count("SELECT count(*) FROM web_requests WHERE samplerate = 1")
            .await,
        200
    );
    assert_eq!(
        q.count("SELECT sum(seq) FROM web_requests").await,
        (0..250).sum::<i64>()
    );
    let rows = q
        .rows("SELECT time, endpoint, status, duration_ms, user FROM web_requests WHERE seq = 0")
        .await;
    assert_eq!(
        rows,
        vec![vec![
            json!("2026-11-29T08:00:00.123456Z"),
            json!("/api/0"),
            json!(500),
            json!(0.0),
            json!("u0")
        ]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libhoney_javascript_sends_into_a_cluster() {
    let c = three_nodes().await;
    let key = ingest_key(&c, &["js"]).await;
    let node_modules = clients_dir().join("node/node_modules");
    let mut cmd = Command::new("node");
    cmd.env("NODE_PATH", &node_modules)
        .arg(script("libhoney_send.js"))
        .args([&c.node(2).url, &key, "js", "120"]);
    let statuses = run(cmd);
    all_accepted(&statuses, 120);
    let q = c.node(0);
    wait_count(q, "SELECT count(*) FROM js", 120).await;
    assert_eq!(
        q.count("SELECT count(*) FROM js WHERE samplerate = 2")
            .await,
        30
    );
    let rows = q.rows("SELECT time, endpoint FROM js WHERE seq = 0").await;
    assert_eq!(
        rows,
        vec![vec![json!("2026-11-29T08:30:00.250Z"), json!("/js/0")]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opentelemetry_sdk_exports_traces_and_logs_into_a_cluster() {
    let c = three_nodes().await;
    let key = ingest_key(&c, &["shop"]).await;
    let ids = python(&[
        &script("otel_send.py"),
        &c.node(1).url,
        &key,
        "Shop",
        "http",
    ]);
    check_shop(c.node(2), &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opentelemetry_sdk_exports_over_grpc() {
    let c = Cluster::start(
        2,
        &["--admin-key", ADMIN, "--otlp-grpc-addr", "127.0.0.1:0"],
    )
    .await;
    let key = ingest_key(&c, &["shop"]).await;
    let grpc = c
        .node(1)
        .otlp_grpc_addr
        .clone()
        .expect("OTLP/gRPC is served");
    let ids = python(&[&script("otel_send.py"), &grpc, &key, "Shop", "grpc"]);
    check_shop(c.node(0), &ids).await;
    // Without a key (or with one of another table's), nothing is stored.
    let other = {
        let body = json!({"name": "other", "role": "ingest", "tables": ["elsewhere"]}).to_string();
        let (status, v) = c.node(0).send(Method::POST, "/v1/keys", &body).await;
        assert_eq!(status, 201, "{v}");
        v["key"].as_str().unwrap().to_string()
    };
    let refused = python(&[&script("otel_send.py"), &grpc, &other, "Shop", "grpc"]);
    assert_eq!(refused["exported"], false, "{refused}");
    assert_eq!(c.node(0).count("SELECT count(*) FROM shop").await, 6);
    // No key, or a key without the ingest role: refused from the call's
    // metadata, before its message is read.
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    let query_key = {
        let body = json!({"name": "reader", "role": "query"}).to_string();
        let (status, v) = c.node(0).send(Method::POST, "/v1/keys", &body).await;
        assert_eq!(status, 201, "{v}");
        v["key"].as_str().unwrap().to_string()
    };
    support::wait_until("n1 knows the query key", async || {
        c.node(1).with_key(&query_key).get("/v1/tables").await.0 == 200
    })
    .await;
    let mut client = TraceServiceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let err = client
        .export(ExportTraceServiceRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    let mut request = tonic::Request::new(ExportTraceServiceRequest::default());
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {query_key}").parse().unwrap(),
    );
    let err = client.export(request).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    assert!(err.message().contains("ingest"), "{err}");
}

/// What `otel_send.py` made, read back from the table `shop` on `q`.
async fn check_shop(q: &Api, ids: &Value) {
    assert_eq!(ids["exported"], true, "{ids}");
    wait_count(q, "SELECT count(*) FROM shop", 6).await;
    let trace = ids["trace_id"].as_str().unwrap();
    let spans = q
        .rows(&format!(
            "SELECT name, \"trace.span_id\", \"trace.parent_id\", \"span.kind\", error, status_code, duration_ms \
             FROM shop WHERE \"meta.signal_type\" = 'trace' AND \"trace.trace_id\" = '{trace}' \
             AND \"meta.annotation_type\" IS NULL ORDER BY name"
        ))
        .await;
    assert_eq!(spans.len(), 3, "{spans:?}");
    let by_name = |n: &str| spans.iter().find(|r| r[0] == n).unwrap().clone();
    let (root, db, cache) = (
        by_name("GET /cart"),
        by_name("SELECT cart"),
        by_name("cache get"),
    );
    assert_eq!(root[1], ids["root"]);
    assert_eq!(root[2], Value::Null, "the root has no parent");
    assert_eq!(db[2], ids["root"], "children point at the root");
    assert_eq!(cache[2], ids["root"]);
    assert_eq!(
        (root[3].clone(), db[3].clone(), cache[3].clone()),
        (json!("server"), json!("client"), json!("internal"))
    );
    assert_eq!(
        (cache[4].clone(), cache[5].clone()),
        (json!(true), json!(2))
    );
    assert_eq!(
        (root[4].clone(), db[4].clone()),
        (json!(false), json!(false))
    );
    let root_ms = root[6].as_f64().unwrap();
    let children_ms = db[6].as_f64().unwrap() + cache[6].as_f64().unwrap();
    assert!(root_ms >= children_ms && children_ms > 0.0, "{spans:?}");
    // Attributes, typed; resource and scope fields on every span.
    let typed = q
        .rows(&format!(
            "SELECT \"http.status_code\" + 1, \"cart.value\" * 2, \"user.premium\", \"service.name\", \
             \"deployment.environment\", \"library.name\", \"library.version\" \
             FROM shop WHERE \"trace.span_id\" = '{}' AND \"meta.signal_type\" = 'trace'",
            ids["root"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        typed,
        vec![vec![
            json!(201),
            json!(25.0),
            json!(true),
            json!("Shop"),
            json!("test"),
            json!("shop.tracer"),
            json!("1.2.3")
        ]]
    );
    // The exception is a span event of the cache span.
    let events = q
        .rows(&format!(
            "SELECT name, \"trace.parent_id\", \"exception.type\", parent_name FROM shop \
             WHERE \"meta.annotation_type\" = 'span_event' AND \"trace.trace_id\" = '{trace}'"
        ))
        .await;
    assert_eq!(
        events,
        vec![vec![
            json!("exception"),
            ids["cache"].clone(),
            json!("KeyError"),
            json!("cache get")
        ]]
    );
    // Logs: the same table, one inside the request span.
    let logs = q
        .rows(
            "SELECT body, severity_text, \"trace.span_id\" FROM shop \
             WHERE \"meta.signal_type\" = 'log' ORDER BY time",
        )
        .await;
    assert_eq!(logs.len(), 2, "{logs:?}");
    assert_eq!(logs[0][0], "cart is slow for u7");
    assert_eq!(logs[0][1], "WARN");
    assert_eq!(logs[0][2], ids["root"]);
    assert_eq!(logs[1][0], "after the request");
    assert_eq!(logs[1][2], Value::Null);
}

/// `google.rpc.Status`, as an OTLP client reads an error answer.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

async fn post(
    api: &Api,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
    extra: &[(&str, &str)],
) -> (u16, String, Vec<u8>) {
    let mut req = api
        .request(Method::POST, path)
        .header("content-type", content_type)
        .body(body);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, res.bytes().await.unwrap().to_vec())
}

fn span(trace: &str, id: &str, start: Value, attr: Value) -> Value {
    json!({
        "traceId": trace, "spanId": id, "name": format!("op {id}"), "kind": 3,
        "startTimeUnixNano": start, "endTimeUnixNano": "1764406800500000000",
        "attributes": [{"key": "n", "value": attr}],
        "status": {}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_json_bodies_and_the_error_shapes_of_both_protocols() {
    let s = support::Server::start(&["--max-body-bytes", "64KiB"]);
    let trace = "0af7651916cd43dd8448eb211c80319c";
    // 64-bit integers as strings and as numbers, in one body; gzip.
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-api"}}]},
        "scopeSpans": [{"spans": [
            span(trace, "b7ad6b7169203331", json!("1764406800000000000"), json!({"intValue": "7"})),
            span(trace, "00f067aa0ba902b7", json!(1764406800250000000u64), json!({"intValue": 9})),
        ]}]
    }]});
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, body.to_string().as_bytes()).unwrap();
    let (status, ct, answer) = post(
        &s,
        "/v1/traces",
        "application/json",
        gz.finish().unwrap(),
        &[("content-encoding", "gzip")],
    )
    .await;
    assert_eq!(
        (status, ct.as_str()),
        (200, "application/json"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&answer).unwrap(),
        json!({}),
        "nothing refused"
    );
    let rows = s
        .rows(
            "SELECT \"trace.span_id\", n, duration_ms, \"span.kind\" FROM \"json-api\" ORDER BY n",
        )
        .await;
    assert_eq!(
        rows,
        vec![
            vec![
                json!("b7ad6b7169203331"),
                json!(7),
                json!(500.0),
                json!("client")
            ],
            vec![
                json!("00f067aa0ba902b7"),
                json!(9),
                json!(250.0),
                json!("client")
            ],
        ]
    );
    // A span whose attribute cannot be stored is refused alone, and said.
    let bad = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-api"}}]},
        "scopeSpans": [{"spans": [
            span(trace, "1111111111111111", json!("1764406801000000000"), json!({"stringValue": "seven"})),
            span(trace, "2222222222222222", json!("1764406801000000000"), json!({"intValue": "3"})),
        ]}]
    }]});
    let (status, _, answer) = post(
        &s,
        "/v1/traces",
        "application/json",
        bad.to_string().into_bytes(),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    let partial = &answer["partialSuccess"];
    assert_eq!(partial["rejectedSpans"], json!(1), "{answer}");
    assert!(
        partial["errorMessage"]
            .as_str()
            .unwrap()
            .contains("column \"n\""),
        "{answer}"
    );
    assert_eq!(s.count("SELECT count(*) FROM \"json-api\"").await, 3);
    // Rows copy their resource's fields: a small request whose rows would
    // take more than 4 x --max-body-bytes as text is refused whole.
    let spans: Vec<Value> = (0..20)
        .map(|i| {
            span(
                trace,
                &format!("{i:016x}"),
                json!("1764406801000000000"),
                json!({"intValue": "1"}),
            )
        })
        .collect();
    let wide = json!({"resourceSpans": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "json-api"}},
            {"key": "blob", "value": {"stringValue": "b".repeat(30_000)}}
        ]},
        "scopeSpans": [{"spans": spans}]
    }]});
    let (status, _, answer) = post(
        &s,
        "/v1/traces",
        "application/json",
        wide.to_string().into_bytes(),
        &[],
    )
    .await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&answer));
    assert!(String::from_utf8_lossy(&answer).contains("written as rows"));
    assert_eq!(
        s.count("SELECT count(*) FROM \"json-api\"").await,
        3,
        "nothing stored"
    );
    // Logs: a record without its own time takes its observed time.
    let logs = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [{
        "timeUnixNano": "0", "observedTimeUnixNano": 1764406802000000000u64,
        "severityNumber": 9, "severityText": "INFO", "body": {"stringValue": "hello"}
    }]}]}]});
    let (status, _, _) = post(
        &s,
        "/v1/logs",
        "application/json",
        logs.to_string().into_bytes(),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let rows = s
        .rows("SELECT time, body, \"service.name\" FROM unknown_service")
        .await;
    assert_eq!(
        rows,
        vec![vec![
            json!("2025-11-29T09:00:02Z"),
            json!("hello"),
            json!("unknown_service")
        ]]
    );

    // Undecodable bodies: 400 with a google.rpc.Status in the request's
    // encoding (INVALID_ARGUMENT); too large: 413 (RESOURCE_EXHAUSTED).
    let (status, ct, answer) = post(
        &s,
        "/v1/traces",
        "application/x-protobuf",
        vec![0xff, 0xff, 0xff],
        &[],
    )
    .await;
    assert_eq!((status, ct.as_str()), (400, "application/x-protobuf"));
    let rpc = RpcStatus::decode(answer.as_slice()).unwrap();
    assert_eq!(rpc.code, 3, "{rpc:?}");
    assert!(
        rpc.message
            .contains("not a protobuf ExportTraceServiceRequest"),
        "{rpc:?}"
    );
    let (status, _, answer) = post(
        &s,
        "/v1/logs",
        "application/json",
        b"{\"resourceLogs\": 1}".to_vec(),
        &[],
    )
    .await;
    assert_eq!(status, 400);
    let rpc: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(rpc["code"], 3, "{rpc}");
    // Honeycomb: a batch body that is not an array, a bad sample rate
    // header, a dataset that cannot name a table: 400 saying why. zstd
    // bodies are read (libhoney-go sends them).
    let (status, _, answer) = post(
        &s,
        "/1/batch/x",
        "application/json",
        b"{\"data\": {}}".to_vec(),
        &[],
    )
    .await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&answer).contains("JSON array"));
    let (status, _, answer) = post(
        &s,
        "/1/events/x",
        "application/json",
        b"{}".to_vec(),
        &[("x-honeycomb-samplerate", "often")],
    )
    .await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&answer).contains("X-Honeycomb-Samplerate"));
    let long = format!("/1/batch/{}", "d".repeat(70));
    let (status, _, answer) = post(&s, &long, "application/json", b"[]".to_vec(), &[]).await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&answer).contains("cannot name a table"));
    let batch =
        json!([{"data": {"k": 1}, "samplerate": 1}, {"data": {"k": 2}, "time": 1764406800}]);
    let zstd = zstd::encode_all(batch.to_string().as_bytes(), 3).unwrap();
    let (status, _, answer) = post(
        &s,
        "/1/batch/zz",
        "application/json",
        zstd,
        &[("content-encoding", "zstd")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&answer).unwrap(),
        json!([{"status": 202}, {"status": 202}])
    );
    assert_eq!(
        s.rows("SELECT k, samplerate, time FROM zz ORDER BY k")
            .await,
        vec![
            vec![
                json!(1),
                json!(1),
                s.rows("SELECT max(time) FROM zz WHERE k = 1").await[0][0].clone()
            ],
            vec![json!(2), Value::Null, json!("2025-11-29T09:00:00Z")],
        ]
    );
    // MessagePack batches (libhoney-go's), times as MessagePack
    // timestamps; an element that is not a map is refused alone.
    use rmpv::Value as Mp;
    let stamp = ((250_000_000u64 << 34) | 1_764_406_800)
        .to_be_bytes()
        .to_vec();
    let element = Mp::Map(vec![
        (
            Mp::from("data"),
            Mp::Map(vec![(Mp::from("m"), Mp::from(1))]),
        ),
        (Mp::from("time"), Mp::Ext(-1, stamp)),
        (Mp::from("samplerate"), Mp::from(5)),
    ]);
    let mut packed = Vec::new();
    rmpv::encode::write_value(&mut packed, &Mp::Array(vec![element, Mp::from("x")])).unwrap();
    let (status, _, answer) = post(&s, "/1/batch/mp", "application/msgpack", packed, &[]).await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer[0], json!({"status": 202}), "{answer}");
    assert_eq!(answer[1]["status"], 400, "{answer}");
    assert_eq!(
        s.rows("SELECT m, samplerate, time FROM mp").await,
        vec![vec![json!(1), json!(5), json!("2025-11-29T09:00:00.250Z")]]
    );
    // Last: the node answers before reading a body declared too large,
    // and closes the connection.
    let (status, _, answer) = post(
        &s,
        "/v1/traces",
        "application/x-protobuf",
        vec![0; 100 << 10],
        &[],
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(RpcStatus::decode(answer.as_slice()).unwrap().code, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_cannot_reach_its_replicas_is_answered_per_event_not_with_a_retry() {
    let mut c = Cluster::start(2, &["--replicas", "2", "--write-quorum", "2"]).await;
    c.nodes[1].as_mut().unwrap().signal("KILL");
    c.nodes[1] = None;
    c.wait_until("n1 is seen down", |v| support::status_of(v, "n1") == "down")
        .await;
    let n0 = c.node(0);
    let batch = json!([{"data": {"a": 1}}, {"data": {"a": 2}}]);
    let (status, _, answer) = post(
        n0,
        "/1/batch/q",
        "application/json",
        batch.to_string().into_bytes(),
        &[],
    )
    .await;
    assert_eq!(status, 200, "libhoney would retry a 5xx");
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    for e in answer.as_array().unwrap() {
        assert_eq!(e["status"], 503, "{answer}");
        assert!(
            e["error"].as_str().unwrap().contains("quorum not reached"),
            "{answer}"
        );
    }
    let spans = json!({"resourceSpans": [{"scopeSpans": [{"spans": [
        span("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", json!("1764406800000000000"), json!({"intValue": "1"}))
    ]}]}]});
    let (status, _, answer) = post(
        n0,
        "/v1/traces",
        "application/json",
        spans.to_string().into_bytes(),
        &[],
    )
    .await;
    assert_eq!(status, 200, "an exporter would retry a 503");
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(
        answer["partialSuccess"]["rejectedSpans"],
        json!(1),
        "{answer}"
    );
}
