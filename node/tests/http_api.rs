//! The HTTP API of a real `atoll serve` process: ingest formats, every kind
//! of bad input, table management, query limits, Arrow answers, metrics.

mod support;

use std::io::Write;

use reqwest::Method;
use serde_json::{Value, json};
use support::Server;

#[tokio::test]
async fn object_array_and_ndjson_bodies() {
    let s = Server::start(&[]);
    assert_eq!(
        s.ingest_json("t", &json!({"a": 1})).await,
        (200, json!({"accepted": 1, "rejected": []}))
    );
    assert_eq!(
        s.ingest_json("t", &json!([{"a": 2}, {"a": 3}])).await.1["accepted"],
        2
    );
    let (status, body) = s.ingest("t", "{\"a\":4}\n\n   \n{\"a\":5}\r\n").await;
    assert_eq!(
        (status, body["accepted"].clone()),
        (200, json!(2)),
        "{body}"
    );
    // NDJSON sent as JSON is still read as NDJSON.
    let (status, body) = s
        .post_raw(
            "/v1/tables/t/events",
            &[("content-type", "application/json")],
            b"{\"a\":6}\n{\"a\":7}\n".to_vec(),
        )
        .await;
    assert_eq!((status, body["accepted"].clone()), (200, json!(2)));
    // Without a content type (what `curl -d` or a cross-site form sends
    // is form data): refused, naming the types taken.
    let (status, body) = s
        .post_raw("/v1/tables/t/events", &[], b"{\"a\":8}\n".to_vec())
        .await;
    assert_eq!(status, 415, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("application/x-ndjson"),
        "{body}"
    );
    assert_eq!(s.count("SELECT sum(a) FROM t").await, 28);
    assert_eq!(
        s.ingest_json("t", &json!([])).await,
        (200, json!({"accepted": 0, "rejected": []}))
    );
}

#[tokio::test]
async fn compressed_bodies() {
    let s = Server::start(&["--max-body-bytes", "64KiB"]);
    let ndjson = "{\"a\":1}\n".repeat(1000);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(ndjson.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    let zs = zstd::encode_all(ndjson.as_bytes(), 3).unwrap();
    for (enc, body) in [("gzip", gz), ("zstd", zs)] {
        let (status, v) = s
            .post_raw(
                "/v1/tables/c/events",
                &[
                    ("content-encoding", enc),
                    ("content-type", "application/x-ndjson"),
                ],
                body,
            )
            .await;
        assert_eq!(
            (status, v["accepted"].clone()),
            (200, json!(1000)),
            "{enc}: {v}"
        );
    }
    assert_eq!(s.count("SELECT count(*) FROM c").await, 2000);
    // A small body that inflates past the limit is refused whole.
    let bomb = "{\"a\":1}\n".repeat(20_000);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bomb.as_bytes()).unwrap();
    let (status, v) = s
        .post_raw(
            "/v1/tables/c/events",
            &[
                ("content-encoding", "gzip"),
                ("content-type", "application/x-ndjson"),
            ],
            gz.finish().unwrap(),
        )
        .await;
    assert_eq!(status, 413, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("after decompression"),
        "{v}"
    );
    let (status, v) = s
        .post_raw(
            "/v1/tables/c/events",
            &[
                ("content-encoding", "br"),
                ("content-type", "application/x-ndjson"),
            ],
            b"xx".to_vec(),
        )
        .await;
    assert_eq!(status, 415);
    assert!(v["error"].as_str().unwrap().contains("\"br\""), "{v}");
    let (status, v) = s
        .post_raw(
            "/v1/tables/c/events",
            &[
                ("content-encoding", "gzip"),
                ("content-type", "application/x-ndjson"),
            ],
            b"not gzip".to_vec(),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(
        s.count("SELECT count(*) FROM c").await,
        2000,
        "nothing of a refused body is stored"
    );
}

#[tokio::test]
async fn whole_request_errors_store_nothing() {
    let s = Server::start(&["--max-body-bytes", "1KiB"]);
    let (status, v) = s.ingest_json("ok", &json!({"a": 1})).await;
    assert_eq!(status, 200, "{v}");
    for (table, body, want, needle) in [
        ("ok", b"this is not json".to_vec(), 400, "body is not JSON"),
        ("ok", b"\"a string\"".to_vec(), 400, "got a string"),
        ("ok", b"[1, 2".to_vec(), 400, "body is not JSON"),
        ("bad.name", b"{\"a\":1}".to_vec(), 400, "invalid table name"),
        ("9lives", b"{\"a\":1}".to_vec(), 400, "invalid table name"),
        (
            "ok",
            vec![b' '; 2048],
            413,
            "larger than the limit of 1024 bytes",
        ),
    ] {
        let json = [("content-type", "application/json")];
        let (status, v) = s
            .post_raw(&format!("/v1/tables/{table}/events"), &json, body)
            .await;
        assert_eq!(status, want, "{v}");
        assert!(
            v["error"].as_str().unwrap().contains(needle),
            "{needle}: {v}"
        );
    }
    let (status, v) = s
        .post_raw(
            &format!("/v1/tables/{}/events", "x".repeat(65)),
            &[("content-type", "application/json")],
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(s.count("SELECT count(*) FROM ok").await, 1);
    let (_, tables) = s.get("/v1/tables").await;
    let tables: Value = serde_json::from_str(&tables).unwrap();
    assert_eq!(
        tables["tables"].as_array().unwrap().len(),
        1,
        "no table was created by a refused request"
    );
}

#[tokio::test]
async fn bad_events_are_rejected_alone_with_their_index() {
    let s = Server::start(&[]);
    s.ingest_json("e", &json!({"n": 1, "flag": true})).await;
    let long = "c".repeat(257);
    let lines = [
        json!({"n": 2}).to_string(),
        json!({"n": "two"}).to_string(),
        json!({"flag": {"nested": 1}, "n": 3}).to_string(),
        "{broken json".to_string(),
        json!({long.clone(): 1}).to_string(),
        json!({"time": "half past nine"}).to_string(),
        "[1,2]".to_string(),
        json!({"n": 4.5}).to_string(),
    ];
    let (status, v) = s.ingest("e", lines.join("\n")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["accepted"], 3, "{v}");
    let rejected = v["rejected"].as_array().unwrap();
    let by_index: Vec<(u64, &str)> = rejected
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["error"].as_str().unwrap()))
        .collect();
    assert_eq!(
        by_index.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![1, 3, 4, 5, 6]
    );
    assert_eq!(
        by_index[0].1,
        "column \"n\" is Int64, cannot store Utf8 in it"
    );
    assert!(by_index[1].1.contains("line 4: not JSON"), "{by_index:?}");
    assert!(
        by_index[2]
            .1
            .contains("257 bytes is longer than the limit of 256"),
        "{by_index:?}"
    );
    assert!(by_index[3].1.contains("\"half past nine\""), "{by_index:?}");
    assert!(
        by_index[4].1.contains("must be a JSON object"),
        "{by_index:?}"
    );
    // The object under a boolean column went to its own flattened column.
    assert_eq!(
        s.rows("SELECT sum(n), count(\"flag.nested\") FROM e").await,
        vec![vec![json!(10.5), json!(1)]]
    );
}

#[tokio::test]
async fn column_count_limit() {
    let s = Server::start(&[]);
    let wide: serde_json::Map<String, Value> =
        (0..1999).map(|i| (format!("c{i}"), json!(i))).collect();
    let (status, v) = s.ingest_json("w", &Value::Object(wide)).await;
    assert_eq!(
        (status, v["accepted"].clone()),
        (200, json!(1)),
        "1999 columns and time fit"
    );
    let (_, v) = s
        .ingest_json("w", &json!([{"one_too_many": 1}, {"c5": 5}]))
        .await;
    assert_eq!(v["accepted"], 1);
    assert!(
        v["rejected"][0]["error"]
            .as_str()
            .unwrap()
            .contains("over the limit of 2000 columns"),
        "{v}"
    );
}

#[tokio::test]
async fn table_settings_and_drops() {
    let s = Server::start(&[]);
    let (status, v) = s
        .send(
            Method::PUT,
            "/v1/tables/users",
            r#"{"partition_key": "user_id"}"#,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["settings"], json!({"partition_key": "user_id"}));
    let (status, v) = s
        .send(Method::PUT, "/v1/tables/users", r#"{"partition_kee": "x"}"#)
        .await;
    assert_eq!(status, 400);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `partition_kee`"),
        "{v}"
    );
    let (status, _) = s.send(Method::PUT, "/v1/tables/bad%20name", "{}").await;
    assert_eq!(status, 400);
    s.ingest_json(
        "users",
        &json!([{"user_id": "u1", "tags": ["a"]}, {"user_id": "u2"}]),
    )
    .await;
    let (status, v) = s
        .send(
            Method::PUT,
            "/v1/tables/users",
            r#"{"partition_key": "tags"}"#,
        )
        .await;
    assert_eq!(status, 400, "{v}");
    // The key in force may be set again; another, once events are stored,
    // may not: they were routed by the old one.
    let (status, v) = s
        .send(
            Method::PUT,
            "/v1/tables/users",
            r#"{"partition_key": "user_id"}"#,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    s.ingest_json("plain", &json!({"user_id": "u1"})).await;
    let (status, v) = s
        .send(
            Method::PUT,
            "/v1/tables/plain",
            r#"{"partition_key": "user_id"}"#,
        )
        .await;
    assert_eq!(status, 409, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("only be set before a table's first event"),
        "{v}"
    );
    assert_eq!(s.send(Method::DELETE, "/v1/tables/plain", "").await.0, 200);
    let (_, list) = s.get("/v1/tables").await;
    let list: Value = serde_json::from_str(&list).unwrap();
    let users = &list["tables"][0];
    assert_eq!(users["name"], "users");
    assert_eq!(users["rows"], 2);
    assert!(users["memory_bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        users["columns"],
        json!([{"name": "time", "type": "Timestamp"}, {"name": "tags", "type": "List<Utf8>"}, {"name": "user_id", "type": "Utf8"}]),
        "columns new in one event are added in key order"
    );
    let (status, v) = s.send(Method::DELETE, "/v1/tables/nope", "").await;
    assert_eq!(status, 404);
    assert_eq!(v["error"], "table \"nope\" does not exist");
    assert_eq!(s.send(Method::DELETE, "/v1/tables/users", "").await.0, 200);
    let (status, v) = s.query("SELECT * FROM users").await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("not found"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clients_read_their_writes() {
    let s = std::sync::Arc::new(Server::start(&[]));
    let clients: Vec<_> = (0..6)
        .map(|c| {
            let s = s.clone();
            tokio::spawn(async move {
                for r in 0..25 {
                    let body: String = (0..200)
                        .map(|i| format!("{{\"client\":{c},\"seq\":{}}}\n", r * 200 + i))
                        .collect();
                    let (status, v) = s.ingest("conc", body).await;
                    assert_eq!((status, v["accepted"].clone()), (200, json!(200)), "{v}");
                    let seen = s
                        .count(&format!("SELECT count(*) FROM conc WHERE client = {c}"))
                        .await;
                    assert_eq!(seen, (r + 1) * 200, "client {c} reads its own writes");
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(s.count("SELECT count(*) FROM conc").await, 6 * 25 * 200);
    assert_eq!(
        s.count("SELECT count(DISTINCT client * 100000 + seq) FROM conc")
            .await,
        30_000
    );
}

#[tokio::test]
async fn query_request_errors() {
    let s = Server::start(&[]);
    let json = [("content-type", "application/json")];
    let (status, v) = s.post_raw("/v1/query", &json, b"SELECT 1".to_vec()).await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("{\"sql\""), "{v}");
    let (status, v) = s.query_with(json!({"sql": "SELECT 1", "bogus": 1})).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(s.query("").await.0, 400);
    let (status, v) = s.query("SELEC 1").await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("SELEC"), "{v}");
    assert_eq!(s.rows("SELECT 1 + 1").await, vec![vec![json!(2)]]);
}

/// Per-request limits outside 1..=the node's are refused at the edge,
/// naming the field and the range: not clamped, and 0 is not "no limit"
/// (a zero timeout once reached the owners' timers as a zero period).
#[tokio::test]
async fn per_request_limits_out_of_range_are_refused() {
    let s = Server::start(&[]);
    for bad in [json!(0), json!(u64::MAX), json!(10_000_000_000_u64)] {
        let (status, v) = s
            .query_with(json!({"sql": "SELECT 1", "timeout_ms": bad}))
            .await;
        assert_eq!(status, 400, "timeout_ms {bad}: {v}");
        let error = v["error"].as_str().unwrap();
        assert!(
            error.contains("timeout_ms") && error.contains("1..="),
            "{error}"
        );
    }
    let (status, v) = s
        .query_with(json!({"sql": "SELECT 1", "max_rows": 0}))
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("max_rows"), "{v}");
    let (status, v) = s
        .query_with(json!({"sql": "SELECT 1", "timeout_ms": 1000, "max_rows": 1}))
        .await;
    assert_eq!(status, 200, "in range: {v}");
}

async fn load_numbers(s: &Server, table: &str, rows: usize) {
    for chunk in 0..rows.div_ceil(5000) {
        let body: String = (chunk * 5000..((chunk + 1) * 5000).min(rows))
            .map(|i| format!("{{\"i\":{i},\"s\":\"value-{i}\"}}\n"))
            .collect();
        assert_eq!(s.ingest(table, body).await.0, 200);
    }
}

#[tokio::test]
async fn json_rows_are_capped_and_arrow_streams_everything() {
    let s = Server::start(&["--max-result-rows", "100"]);
    load_numbers(&s, "n", 1000).await;
    let (_, v) = s.query("SELECT i FROM n").await;
    assert_eq!(v["rows"].as_array().unwrap().len(), 100);
    assert_eq!(v["stats"]["truncated"], true);
    assert_eq!(
        v["stats"]["rows_scanned"].as_u64().map(|r| r >= 100),
        Some(true)
    );
    let (_, v) = s
        .query_with(json!({"sql": "SELECT i FROM n", "max_rows": 10}))
        .await;
    assert_eq!(v["rows"].as_array().unwrap().len(), 10);
    let (_, v) = s.query("SELECT count(*) FROM n").await;
    assert_eq!(v["stats"]["truncated"], false);
    assert_eq!(v["stats"]["rows_scanned"], 1000);
    assert_eq!(v["stats"]["partitions_total"], 64);
    assert!(v["stats"]["elapsed_ms"].as_f64().unwrap() > 0.0);

    let res = s
        .client
        .post(format!("{}/v1/query", s.url))
        .header("accept", "application/vnd.apache.arrow.stream")
        .json(&json!({"sql": "SELECT i, s FROM n ORDER BY i"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["content-type"],
        "application/vnd.apache.arrow.stream"
    );
    let bytes = res.bytes().await.unwrap();
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    let batches: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
    assert_eq!(
        batches.iter().map(|b| b.num_rows()).sum::<usize>(),
        1000,
        "Arrow answers are not capped"
    );
    assert_eq!(batches[0].schema().field(1).name(), "s");
    // Errors still come as JSON when Arrow was asked for.
    let res = s
        .client
        .post(format!("{}/v1/query", s.url))
        .header("accept", "application/vnd.apache.arrow.stream")
        .json(&json!({"sql": "SELECT nope FROM n"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
}

#[tokio::test]
async fn time_filters_prune_batches() {
    let s = Server::start(&["--seal-rows", "10"]);
    let body: String = (0..2000)
        .map(|i| format!("{{\"time\":{},\"i\":{i}}}\n", 1_767_225_600 + i * 60))
        .collect();
    s.ingest("ts", body).await;
    let (_, v) = s
        .query("SELECT count(*) FROM ts WHERE time >= TIMESTAMP '2026-01-02T00:00:00Z'")
        .await;
    assert_eq!(
        v["rows"][0][0],
        2000 - 1440,
        "exact answers over many small sealed batches"
    );
    // Batches hold what one request brought to one partition: requests of
    // one hour each give batches that a filter on the last hour can skip.
    let s2 = Server::start(&[]);
    for hour in 0..10 {
        let body: String = (0..360)
            .map(|i| {
                format!(
                    "{{\"time\":{},\"i\":{i}}}\n",
                    1_767_225_600 + hour * 3600 + i * 10
                )
            })
            .collect();
        s2.ingest("ts", body).await;
    }
    let (_, v) = s2
        .query("SELECT count(*) FROM ts WHERE time >= TIMESTAMP '2026-01-01T09:00:00Z'")
        .await;
    assert_eq!(v["rows"][0][0], 360);
    assert_eq!(
        v["stats"]["rows_scanned"], 360,
        "only the last hour's batches were read: {v}"
    );
}

#[tokio::test]
async fn per_query_memory_cap() {
    let s = Server::start(&["--query-memory-per-query", "256KiB"]);
    load_numbers(&s, "big", 20_000).await;
    let (status, v) = s
        .query("SELECT s, count(*) FROM big GROUP BY s ORDER BY s")
        .await;
    assert_eq!(status, 422, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("query exceeded its memory cap"),
        "{v}"
    );
    assert_eq!(
        s.count("SELECT count(*) FROM big").await,
        20_000,
        "the node keeps serving"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_limit_and_admission() {
    let s = std::sync::Arc::new(Server::start(&[
        "--max-concurrent-queries",
        "1",
        "--query-queue-wait-ms",
        "200",
    ]));
    // 400M pairs: many seconds of work on any machine, so that the time
    // limit ends it (5,000 rows once finished inside the limit).
    load_numbers(&s, "x", 20_000).await;
    let slow = "SELECT count(*) FROM x a, x b WHERE a.i + b.i < 0";
    // One slow query holds the only slot: the next one waits, then gets 503.
    let holder = {
        let s = s.clone();
        tokio::spawn(async move { s.query_with(json!({"sql": slow, "timeout_ms": 1500})).await })
    };
    s.wait_for_metric("atoll_queries_running", |running| running >= 1.0)
        .await;
    let (status, v) = s.query("SELECT 1").await;
    assert_eq!(status, 503, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("too many queries"),
        "{v}"
    );
    let (status, v) = holder.await.unwrap();
    assert_eq!(status, 504, "{v}");
    assert_eq!(v["error"], "query exceeded its time limit of 1500 ms");
    assert_eq!(
        s.rows("SELECT 1").await,
        vec![vec![json!(1)]],
        "the slot is free again"
    );
}

/// CPU seconds the process has used so far (user + system), from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// A client that gives up on a slow query (a nested-loop join) cancels
/// it: the node stops working on it, counts it as cancelled, and answers
/// the next query. The join compares 200-byte strings and matches nothing,
/// so it never hands a batch up by itself: only the node's yields between
/// pieces of its probe side let the cancellation in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_query_stops_running() {
    let s = Server::start(&[]);
    let pad = "x".repeat(200);
    let body: String = (0..20_000)
        .map(|i| format!("{{\"i\":{i},\"s\":\"{pad}\"}}\n"))
        .collect();
    assert_eq!(s.ingest("x", body).await.0, 200);
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(1000))
        .build()
        .unwrap();
    let abandoned = impatient
        .post(format!("{}/v1/query", s.url))
        .json(&json!({"sql": "SELECT count(*) FROM x a JOIN x b ON a.i < b.i AND a.s <> b.s WHERE a.i < 5000"}))
        .send()
        .await;
    assert!(abandoned.is_err_and(|e| e.is_timeout()));
    // Idle again: some whole second, within ten, in which the node used
    // less than a third of a core (the join alone keeps a core busy).
    let pid = s.child.id();
    let mut idle = false;
    for _ in 0..10 {
        let before = cpu_seconds(pid);
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        if cpu_seconds(pid) - before < 0.33 {
            idle = true;
            break;
        }
    }
    assert!(idle, "the abandoned join kept running");
    let metrics = s.get("/metrics").await.1;
    assert!(
        metrics.contains("atoll_query_requests_total{outcome=\"cancelled\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("atoll_queries_running 0"), "{metrics}");
    assert_eq!(
        s.rows("SELECT count(*) FROM x").await,
        vec![vec![json!(20_000)]]
    );
}

/// `--retention` applies to tables without their own setting; a bad value
/// stops the node at start with a message.
#[tokio::test]
async fn node_retention_flag() {
    assert!(Server::try_start(&["--retention", "soon"]).is_err());
    let s = Server::start(&["--retention", "1h"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let body = format!(
        "{{\"time\":{},\"x\":1}}\n{{\"time\":{},\"x\":2}}\n",
        now - 7200,
        now - 60
    );
    assert_eq!(s.ingest("r", body).await.0, 200);
    assert_eq!(s.rows("SELECT x FROM r").await, vec![vec![json!(2)]]);
    let (status, v) = s
        .send(
            reqwest::Method::PUT,
            "/v1/tables/r",
            r#"{"retention": "3h"}"#,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["settings"]["retention"], "3h", "{v}");
    assert_eq!(
        s.count("SELECT count(*) FROM r").await,
        2,
        "the table's own setting wins"
    );
}

#[tokio::test]
async fn health_page_and_metrics() {
    let s = Server::start(&[]);
    assert_eq!(
        s.get("/healthz").await,
        (200, "{\"status\":\"ok\"}".to_string())
    );
    // The dashboard: its page and the script it names, both embedded.
    let (status, page) = s.get("/").await;
    assert_eq!(status, 200);
    let script = page
        .split("src=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .filter(|src| src.starts_with("/assets/"))
        .unwrap_or_else(|| panic!("no script under /assets/ in {page}"));
    let (status, js) = s.get(script).await;
    assert_eq!(status, 200);
    assert!(js.contains("/v1/query"), "the app calls the query API");
    assert_eq!(s.get("/assets/nope.js").await.0, 404);
    s.ingest("m", "{\"a\":1}\n{\"a\":\"x\"}\n").await;
    s.query("SELECT count(*) FROM m").await;
    s.query("DROP TABLE m").await;
    let (status, text) = s.get("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "atoll_events_accepted_total{table=\"m\"} 1",
        "atoll_events_rejected_total{table=\"m\"} 1",
        "atoll_ingest_requests_total{status=\"200\"} 1",
        "atoll_query_requests_total{outcome=\"ok\"} 1",
        "atoll_query_requests_total{outcome=\"refused\"} 1",
        "atoll_table_rows{table=\"m\"} 1",
        "atoll_ingest_request_seconds_count{status=\"200\"} 1",
        "atoll_query_seconds_count{outcome=\"ok\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(text.contains("atoll_table_memory_bytes{table=\"m\"}"));
}

/// Nothing a client sends may take the server down.
#[tokio::test]
async fn garbage_never_panics_the_server() {
    let mut s = Server::start(&["--max-body-bytes", "64KiB"]);
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let pieces = [
        "{",
        "}",
        "[",
        "]",
        "\"",
        ":",
        ",",
        "\n",
        "1e999",
        "-0",
        "null",
        "\"time\"",
        "true",
        "\\u0000",
        "é",
        "9223372036854775808",
        "{\"a\":",
        "\"a.b\"",
        " ",
    ];
    for round in 0..300 {
        let body: String = (0..(next() % 40))
            .map(|_| pieces[(next() % pieces.len() as u64) as usize])
            .collect();
        let (path, enc) = match round % 3 {
            0 => ("/v1/tables/g/events", "identity"),
            1 => ("/v1/tables/g/events", "gzip"),
            _ => ("/v1/query", "identity"),
        };
        let res = s
            .client
            .post(format!("{}{path}", s.url))
            .header("content-encoding", enc)
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(
            res.status().as_u16() < 500,
            "{} for round {round}",
            res.status()
        );
    }
    for sql in [
        "SELECT 1/0",
        "SELECT CAST('x' AS INT)",
        "SELECT * FROM g ORDER BY 1",
        "SELECT repeat('x', 100)",
    ] {
        s.query(sql).await;
    }
    assert!(s.alive());
    assert_eq!(s.get("/healthz").await.0, 200);
}

#[tokio::test]
async fn large_bodies_are_converted_piece_by_piece() {
    let s = Server::start(&[]);
    let mut lines: Vec<String> = (0..40_000).map(|i| format!("{{\"i\":{i}}}")).collect();
    lines[30_000] = "{not json".into();
    let body = lines.join("\n");
    for _ in 0..2 {
        let (status, v) = s
            .post_raw(
                "/v1/tables/big/events",
                &[
                    ("idempotency-key", "bulk-1"),
                    ("content-type", "application/x-ndjson"),
                ],
                body.clone().into_bytes(),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["accepted"], 39_999);
        assert_eq!(v["rejected"][0]["index"], 30_000);
        assert!(
            v["rejected"][0]["error"]
                .as_str()
                .unwrap()
                .starts_with("line 30001: not JSON"),
            "{v}"
        );
    }
    assert_eq!(
        s.count("SELECT count(*) FROM big").await,
        39_999,
        "the resent request landed once"
    );
    assert_eq!(s.count("SELECT count(DISTINCT i) FROM big").await, 39_999);
}
