//! Requests meant to take a node down: each gets a clear 4xx (or a
//! bounded error), the node keeps serving, and its memory stays bounded.

mod support;

use serde_json::json;
use support::Server;

/// Peak resident memory of a process, from /proc.
fn peak_resident(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test]
async fn functions_that_make_what_they_are_asked_for_are_bounded() {
    let s = Server::start(&[]);
    assert_eq!(
        s.ingest("t", "{\"n\":3}\n{\"n\":2000000000}\n").await.0,
        200
    );
    for (sql, function) in [
        ("SELECT cardinality(range(0, 3000000000))", "range"),
        ("SELECT repeat('x', 2000000000)", "repeat"),
        ("SELECT length(repeat('x', 1000000000))", "repeat"),
        (
            "SELECT count(*) FROM (SELECT unnest(range(0, 200000000)))",
            "range",
        ),
        (
            "SELECT cardinality(generate_series(1, 100000000))",
            "generate_series",
        ),
        (
            "SELECT cardinality(generate_series(TIMESTAMP '1970-01-01', TIMESTAMP '2100-01-01', INTERVAL '1 second'))",
            "generate_series",
        ),
        (
            "SELECT cardinality(array_repeat(1, 100000000))",
            "array_repeat",
        ),
        (
            "SELECT cardinality(array_resize([1], 100000000, 0))",
            "array_resize",
        ),
        ("SELECT length(lpad('', 1000000000, 'x'))", "lpad"),
        ("SELECT length(rpad('a', 300000000))", "rpad"),
        (
            "SELECT length(replace(repeat('x', 10000000), 'x', repeat('y', 100)))",
            "replace",
        ),
        (
            "SELECT length(regexp_replace(repeat('x', 1000000), '', repeat('y', 1000), 'g'))",
            "regexp_replace",
        ),
        // From a column: refused when the batch runs.
        ("SELECT length(repeat('x', n)) FROM t", "repeat"),
    ] {
        let (status, v) = s.query(sql).await;
        assert_eq!(status, 400, "{sql}: {v}");
        let error = v["error"].as_str().unwrap();
        assert!(
            error.contains(function) && error.contains("limit"),
            "{sql}: {error}"
        );
    }
    // Within the limit, the functions work as ever.
    assert_eq!(
        s.rows("SELECT cardinality(range(0, 1000))").await,
        [[json!(1000)]]
    );
    assert_eq!(s.rows("SELECT repeat('ab', 3)").await, [[json!("ababab")]]);
    assert_eq!(s.rows("SELECT lpad('7', 3, '0')").await, [[json!("007")]]);
    assert_eq!(
        s.rows("SELECT length(repeat('x', n)) FROM t WHERE n < 10")
            .await,
        [[json!(3)]]
    );
    assert_eq!(
        s.rows("SELECT cardinality(generate_series(DATE '2026-01-01', DATE '2026-12-31', INTERVAL '1 month'))")
            .await,
        [[json!(12)]]
    );
    let peak = peak_resident(s.child.id());
    assert!(peak < 1 << 30, "peak resident {} MiB", peak >> 20);
}

#[tokio::test]
async fn the_limit_is_a_flag() {
    let s = Server::start(&["--max-function-output", "1KiB"]);
    let (status, v) = s.query("SELECT repeat('x', 2000)").await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("1024"), "{v}");
    assert_eq!(
        s.rows("SELECT length(repeat('x', 1000))").await,
        [[json!(1000)]]
    );
}

#[tokio::test]
async fn a_compressed_flood_of_bad_lines_is_answered_in_bounded_memory() {
    use std::io::Write;
    let s = Server::start(&[]);
    let lines = 2_000_000;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    for _ in 0..lines / 1000 {
        gz.write_all("1\n".repeat(1000).as_bytes()).unwrap();
    }
    let body = gz.finish().unwrap();
    assert!(body.len() < 64 << 10, "{} bytes sent", body.len());
    let (status, v) = s
        .post_raw(
            "/v1/tables/flood/events",
            &[
                ("content-encoding", "gzip"),
                ("content-type", "application/x-ndjson"),
            ],
            body,
        )
        .await;
    assert_eq!(
        status,
        200,
        "{}",
        &v.to_string()[..200.min(v.to_string().len())]
    );
    assert_eq!(v["accepted"], 0);
    assert_eq!(
        v["rejected"].as_array().unwrap().len(),
        1000,
        "the first 1,000 listed"
    );
    assert_eq!(v["rejected_total"], lines, "all counted");
    assert_eq!(v["rejected"][999]["index"], 999);
    let peak = peak_resident(s.child.id());
    assert!(peak < 1 << 30, "peak resident {} MiB", peak >> 20);
    assert_eq!(s.rows("SELECT 1").await, [[json!(1)]], "still serving");
}

#[tokio::test]
async fn events_over_the_limits_are_rejected_alone() {
    let s = Server::start(&[]);
    let wide: serde_json::Map<String, serde_json::Value> =
        (0..2001).map(|i| (format!("f{i}"), json!(i))).collect();
    let long = "x".repeat((64 << 10) + 1);
    let future = "2100-01-01T00:00:00Z";
    let body = [
        json!({"ok": 1}),
        serde_json::Value::Object(wide),
        json!({"s": long}),
        json!({"tags": ["a", long]}),
        json!({"time": future, "ok": 2}),
        json!({"ok": 3}),
    ]
    .iter()
    .map(|e| e.to_string())
    .collect::<Vec<_>>()
    .join("\n");
    let (status, v) = s.ingest("lim", body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["accepted"], 2, "{v}");
    let reasons: Vec<(u64, String)> = v["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                r["error"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(reasons.len(), 4, "{v}");
    assert!(reasons[0].1.contains("2001 fields"), "{reasons:?}");
    assert!(reasons[1].1.contains("65536 bytes"), "{reasons:?}");
    assert!(reasons[2].1.contains("65536 bytes"), "{reasons:?}");
    assert!(
        reasons[3].1.contains("ahead of this node's clock"),
        "{reasons:?}"
    );
    // The typed path (a table whose schema fits) refuses them too.
    let again = format!("{{\"ok\":4}}\n{{\"ok\":5,\"time\":\"{future}\"}}\n");
    let (_, v) = s.ingest("lim", again).await;
    assert_eq!(
        (v["accepted"].clone(), v["rejected"][0]["index"].clone()),
        (json!(1), json!(1)),
        "{v}"
    );
    assert_eq!(s.rows("SELECT sum(ok) FROM lim").await, [[json!(8)]]);
}

#[tokio::test]
async fn table_requests_are_bounded() {
    let s = Server::start(&["--max-tables", "3"]);
    let big = format!("{{\"retention\": \"{}\"}}", "7".repeat(70 << 10));
    let (status, v) = s.send(reqwest::Method::PUT, "/v1/tables/t1", &big).await;
    assert_eq!(status, 413, "{v}");
    let (status, v) = s.send(reqwest::Method::PUT, "/v1/tables/t1", "").await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(
        s.get("/v1/tables/t1").await.0,
        404,
        "an empty PUT creates nothing"
    );
    assert_eq!(
        s.send(reqwest::Method::DELETE, "/v1/tables/bad%20name", "")
            .await
            .0,
        400
    );
    for t in ["t1", "t2", "t3"] {
        assert_eq!(s.ingest(t, "{\"a\":1}\n").await.0, 200);
    }
    let (status, v) = s.ingest("t4", "{\"a\":1}\n").await;
    assert_eq!(status, 422, "{v}");
    assert!(v["error"].as_str().unwrap().contains("--max-tables"), "{v}");
    assert_eq!(
        s.ingest("t1", "{\"a\":2}\n").await.0,
        200,
        "existing tables go on"
    );
    // A dropped table's per-table metrics go away.
    let (_, metrics) = s.get("/metrics").await;
    assert!(metrics.contains("atoll_events_accepted_total{table=\"t2\"}"));
    assert_eq!(
        s.send(reqwest::Method::DELETE, "/v1/tables/t2", "").await.0,
        200
    );
    let (_, metrics) = s.get("/metrics").await;
    assert!(!metrics.contains("table=\"t2\""), "{metrics}");
}

#[tokio::test]
async fn idempotency_keys_are_their_senders_and_their_bodys() {
    let admin = "hostile-admin-key-0123456789";
    let s = Server::start(&["--admin-key", admin]);
    let mut keys = Vec::new();
    for name in ["one", "two"] {
        let body = json!({"name": name, "role": "ingest"}).to_string();
        let (status, v) = s.send(reqwest::Method::POST, "/v1/keys", &body).await;
        assert_eq!(status, 201, "{v}");
        keys.push(s.with_key(v["key"].as_str().unwrap()));
    }
    let post = |api: &support::Api, body: &'static str| {
        let api = api.clone();
        async move {
            api.post_raw(
                "/v1/tables/idem/events",
                &[
                    ("content-type", "application/x-ndjson"),
                    ("idempotency-key", "k-1"),
                ],
                body.as_bytes().to_vec(),
            )
            .await
        }
    };
    assert_eq!(post(&keys[0], "{\"v\":1}\n").await.0, 200);
    assert_eq!(post(&keys[0], "{\"v\":1}\n").await.0, 200, "a retry");
    let (status, v) = post(&keys[0], "{\"v\":2}\n").await;
    assert_eq!(status, 422, "same key, other body: {v}");
    // Another client using the same key does not make these writes vanish.
    assert_eq!(post(&keys[1], "{\"v\":1}\n").await.0, 200);
    assert_eq!(
        s.rows("SELECT count(*), sum(v) FROM idem").await,
        [[json!(2), json!(2)]]
    );
}

#[tokio::test]
async fn zstd_windows_are_bounded() {
    let s = Server::start(&[]);
    let mut encoder = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
    encoder
        .set_parameter(zstd::stream::raw::CParameter::WindowLog(27))
        .unwrap();
    std::io::Write::write_all(&mut encoder, "{\"a\":1}\n".repeat(10).as_bytes()).unwrap();
    let body = encoder.finish().unwrap();
    let (status, v) = s
        .post_raw(
            "/v1/tables/z/events",
            &[
                ("content-encoding", "zstd"),
                ("content-type", "application/x-ndjson"),
            ],
            body,
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("16 MiB"), "{v}");
}

/// Ingest queues before it refuses: with one turn taken by a slow upload,
/// the next request waits, gets 503 with Retry-After past the wait, and
/// none of its events are stored; once the turn is free it goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_queues_then_refuses_whole_requests() {
    let s = Server::start(&[
        "--max-concurrent-ingest",
        "1",
        "--ingest-queue-wait-ms",
        "300",
    ]);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let slow = s
        .request(reqwest::Method::POST, "/v1/tables/q/events")
        .header("content-type", "application/x-ndjson")
        .body(reqwest::Body::wrap_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .send();
    let slow = tokio::spawn(slow);
    tx.send(Ok(b"{\"a\":1}\n".to_vec())).await.unwrap();
    s.wait_for_metric("atoll_ingest_in_progress", |n| n >= 1.0)
        .await;
    let res = s
        .request(reqwest::Method::POST, "/v1/tables/q/events")
        .header("content-type", "application/x-ndjson")
        .body("{\"a\":100}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    tx.send(Ok(b"{\"a\":2}\n".to_vec())).await.unwrap();
    drop(tx);
    let done = slow.await.unwrap().unwrap();
    assert_eq!(done.status().as_u16(), 200);
    assert_eq!(
        s.ingest("q", "{\"a\":3}\n").await.0,
        200,
        "the turn is free again"
    );
    assert_eq!(
        s.rows("SELECT sum(a) FROM q").await,
        [[json!(6)]],
        "nothing of the refused one"
    );
}
