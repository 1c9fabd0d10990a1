//! The Postgres wire protocol door (`--pg-addr`) with real clients,
//! installed by `scripts/install-clients`: Debian's `psql` (SCRAM with an
//! API key's verifier, roles and scopes, `\dt` and `\d`, writes refused
//! with a SQLSTATE) and psycopg 3 (the extended protocol: the shared
//! benchmark's queries, parameters, binary results, Grafana's catalog
//! queries, on one node and on every node of a ring, partial answers and
//! cancel requests), each answer equal to `/v1/query`'s.

mod support;

use std::process::{Command, Output};

use serde_json::{Value, json};
use support::answers::{assert_same_rows, benchmark, tolerance};
use support::clients::{python, python_with, script};
use support::{Cluster, Server, generated_events, status_of};

const ADMIN: &str = "test-admin-key-0123456789";

/// `psql` running `sql` as `user` with `password` against `addr`.
fn psql(addr: &str, user: &str, password: &str, sql: &str) -> Output {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let found = Command::new("psql").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "psql is missing: run scripts/install-clients (the test command does)"
    );
    Command::new("psql")
        .args(["-h", host, "-p", port, "-U", user, "-d", "atoll"])
        .args(["-X", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1"])
        .args(["-v", "VERBOSITY=verbose", "-c", sql])
        .env("PGPASSWORD", password)
        .env("PGSSLMODE", "disable")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_asks_through_the_engine_with_an_api_key() {
    let s = Server::start(&["--admin-key", ADMIN, "--pg-addr", "127.0.0.1:0"]);
    let pg = s.pg_addr.clone().expect("the Postgres door is served");
    let events: Vec<Value> = (0..50)
        .map(|i| json!({"service": if i % 2 == 0 {"api"} else {"web"}, "status": 200 + i % 3, "duration_ms": i as f64 / 2.0, "ok": i % 5 == 0}))
        .collect();
    let (status, v) = s.ingest_json("events", &json!(events)).await;
    assert_eq!(status, 200, "{v}");
    let reader = s.make_key("grafana", "query", None).await;

    // SCRAM: the user names the key; the answer is /v1/query's.
    let sql = "SELECT service, count(*), sum(duration_ms), bool_or(ok) FROM events GROUP BY service ORDER BY service";
    let out = stdout(&psql(&pg, "grafana", &reader, sql));
    let rows = s.rows(sql).await;
    let expected: Vec<String> = rows
        .iter()
        .map(|r| {
            let cell = |v: &Value| match v {
                Value::Bool(b) => {
                    if *b {
                        "t".to_string()
                    } else {
                        "f".to_string()
                    }
                }
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            r.iter().map(cell).collect::<Vec<_>>().join("|")
        })
        .collect();
    assert_eq!(out.lines().collect::<Vec<_>>(), expected);
    // Timestamps in Postgres's text form; session statements accepted.
    let out = stdout(&psql(
        &pg,
        "grafana",
        &reader,
        "SELECT max(time) FROM events",
    ));
    assert!(out.ends_with("+00") && out.contains(' '), "{out}");
    stdout(&psql(&pg, "grafana", &reader, "BEGIN"));
    stdout(&psql(&pg, "grafana", &reader, "SET application_name = 'x'"));

    // A wrong key, a key without the query role, a scoped key reading
    // another table, and writes: refused with their SQLSTATE.
    let wrong = psql(&pg, "grafana", "atoll_0000000000000000_00", "SELECT 1");
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr)
            .to_lowercase()
            .contains("password authentication failed"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    let writer = s.make_key("writer", "ingest", None).await;
    let refused = psql(&pg, "writer", &writer, "SELECT 1");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("42501"), "{err}");
    let scoped = s.make_key("scoped", "query", Some(&["other"])).await;
    let refused = psql(&pg, "scoped", &scoped, "SELECT count(*) FROM events");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("42501"), "{err}");
    let refused = psql(&pg, "grafana", &reader, "DROP TABLE events");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("42601"), "{err}");
    assert_eq!(
        s.count("SELECT count(*) FROM events").await,
        50,
        "nothing dropped"
    );
    // The bootstrap admin key has no verifier: in clear, from loopback.
    let out = stdout(&psql(&pg, "admin", ADMIN, "SELECT count(*) FROM events"));
    assert_eq!(out, "50");

    // psql's own catalog queries: the list of tables and a table's columns
    // with their Postgres types.
    let tables = stdout(&psql(&pg, "grafana", &reader, "\\dt"));
    assert_eq!(tables, "public|events|table|atoll");
    let columns = stdout(&psql(&pg, "grafana", &reader, "\\d events"));
    for line in [
        "time|timestamp with time zone||not null|",
        "service|text|||",
        "status|bigint|||",
        "duration_ms|double precision|||",
        "ok|boolean|||",
    ] {
        assert!(columns.lines().any(|l| l == line), "{line} in\n{columns}");
    }
    // A key limited to some tables cannot list the others.
    let refused = psql(&pg, "scoped", &scoped, "\\dt");
    assert!(!refused.status.success());

    // A key revoked while a session is open stops at its next statement.
    let (host, port) = pg.rsplit_once(':').unwrap();
    let dsn = format!(
        "host={host} port={port} user=grafana password={reader} dbname=atoll sslmode=disable"
    );
    let script = format!(
        r#"
import json, urllib.request, psycopg
conn = psycopg.connect({dsn:?}, autocommit=True)
first = conn.execute("SELECT count(*) FROM events").fetchall()
req = urllib.request.Request({url:?} + "/v1/keys/grafana", method="DELETE", headers={{"Authorization": "Bearer " + {admin:?}}})
urllib.request.urlopen(req).read()
try:
    conn.execute("SELECT count(*) FROM events").fetchall()
    print(json.dumps({{"first": first, "after": "answered"}}))
except psycopg.Error as e:
    print(json.dumps({{"first": first, "sqlstate": e.sqlstate}}))
"#,
        url = s.url,
        admin = ADMIN
    );
    let v = python(&["-c", &script]);
    assert_eq!(v["first"], json!([[50]]), "{v}");
    assert_eq!(v["sqlstate"], "28000", "{v}");
}

/// psycopg running `steps` (see tests/clients/pg_client.py) on `addr`.
fn psycopg(addr: &str, password: &str, steps: Value) -> Vec<Value> {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let dsn = format!(
        "host={host} port={port} user=atoll password={password} dbname=atoll sslmode=disable"
    );
    let out = python_with(
        &[&script("pg_client.py")],
        &json!({"dsn": dsn, "steps": steps}),
    );
    out["results"].as_array().unwrap().clone()
}

/// Q1–Q8 through psycopg on `pg` (Q8 also with binary results) equal
/// `/v1/query`'s answers on `http`.
async fn benchmark_answers_agree(pg: &str, http: &Server) {
    let queries = benchmark(http).await;
    let mut steps: Vec<Value> = queries.iter().map(|(_, q)| json!({"sql": q})).collect();
    steps.push(json!({"sql": queries[7].1, "binary": true}));
    let results = psycopg(pg, "", json!(steps));
    for (i, (tag, sql)) in queries.iter().enumerate() {
        let expected = http.rows(sql).await;
        assert!(!expected.is_empty(), "{tag} answers rows");
        assert_same_rows(tag, &results[i], &expected, tolerance(tag));
    }
    let expected = http.rows(&queries[7].1).await;
    assert_same_rows("Q8 in binary", &results[8], &expected, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_asks_the_benchmark_with_parameters_and_catalog_queries() {
    let s = Server::start(&["--pg-addr", "127.0.0.1:0"]);
    let pg = s.pg_addr.clone().expect("the Postgres door is served");
    let (status, v) = s.ingest("events", generated_events(20_000, 7, &[])).await;
    assert_eq!((status, v["accepted"].as_u64()), (200, Some(20_000)), "{v}");
    benchmark_answers_agree(&pg, &s).await;

    // Parameters, bound and typed: a number, a string, two timestamps.
    let queries = benchmark(&s).await;
    let (q3, q4, q8) = (&queries[2].1, &queries[3].1, &queries[7].1);
    let user = q8.split('\'').nth(1).unwrap();
    let results = psycopg(
        &pg,
        "",
        json!([
            {"sql": q3.replace("status >= 500", "status >= %s"), "params": [500]},
            {"sql": q8.replace(&format!("'{user}'"), "%s"), "params": [user], "binary": true},
            {"sql": q4.replace("TIMESTAMP '2026-01-01T06:00:00Z'", "%s").replace("TIMESTAMP '2026-01-01T07:00:00Z'", "%s"),
             "params": [{"ts": "2026-01-01T06:00:00Z"}, {"ts": "2026-01-01T07:00:00Z"}]},
            {"sql": "SELECT count(*) FROM events WHERE status = %s AND service = %s", "params": ["200", "api"]},
        ]),
    );
    assert_same_rows("Q3 with a parameter", &results[0], &s.rows(q3).await, 1e-9);
    assert_same_rows("Q8 with a parameter", &results[1], &s.rows(q8).await, 0.0);
    assert_same_rows("Q4 with parameters", &results[2], &s.rows(q4).await, 0.0);
    let typed = "SELECT count(*) FROM events WHERE status = 200 AND service = 'api'";
    assert_same_rows(
        "a number sent as text",
        &results[3],
        &s.rows(typed).await,
        0.0,
    );

    // Column types as Postgres clients know them (OIDs).
    let results = psycopg(
        &pg,
        "",
        json!([{"sql": "SELECT time, status, duration_ms, service, time > now() FROM events LIMIT 1"}]),
    );
    assert_eq!(
        results[0]["types"],
        json!([1184, 20, 701, 25, 16]),
        "{}",
        results[0]
    );

    // What Grafana's PostgreSQL data source asks for its pickers (its
    // own text), and what BI tools check at connect.
    let schema_filter = "quote_ident(table_schema) IN (\
        SELECT CASE WHEN trim(s[i]) = '\"$user\"' THEN user ELSE trim(s[i]) END \
        FROM generate_series(array_lower(string_to_array(current_setting('search_path'),','),1), \
        array_upper(string_to_array(current_setting('search_path'),','),1)) as i, \
        string_to_array(current_setting('search_path'),',') s)";
    let results = psycopg(
        &pg,
        "",
        json!([
            {"sql": format!("SELECT quote_ident(table_name) AS \"table\" FROM information_schema.tables \
                WHERE quote_ident(table_schema) NOT IN ('information_schema', 'pg_catalog', '_timescaledb_cache') \
                AND table_type = 'BASE TABLE' AND {schema_filter} ORDER BY 1")},
            {"sql": format!("SELECT quote_ident(column_name) AS \"column\", data_type AS \"type\" \
                FROM information_schema.columns WHERE CASE WHEN array_length(parse_ident('events'),1) = 2 \
                THEN quote_ident(table_schema) = (parse_ident('events'))[1] AND quote_ident(table_name) = (parse_ident('events'))[2] \
                ELSE quote_ident(table_name) = 'events' AND {schema_filter} END")},
            {"sql": "SELECT version(), current_schema(), current_database()"},
            {"sql": "SHOW server_version"},
            {"sql": "SELECT count(*) FROM events WHERE time BETWEEN '2026-01-01T06:00:00Z' AND '2026-01-01T07:00:00Z'"},
        ]),
    );
    assert_eq!(results[0]["rows"], json!([["events"]]), "{}", results[0]);
    let columns: Vec<Value> = s
        .rows("SELECT quote_ident(column_name) FROM information_schema.columns WHERE table_name = 'events' AND table_schema = 'public'")
        .await
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    let picked: Vec<Value> = results[1]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(picked, columns);
    let version = results[2]["rows"][0].as_array().unwrap();
    assert!(
        version[0]
            .as_str()
            .unwrap()
            .starts_with("PostgreSQL 16.0 (Atoll")
    );
    assert_eq!(version[1..], [json!("public"), json!("atoll")]);
    assert_eq!(results[3]["rows"], json!([["16.0"]]));
    let window = "SELECT count(*) FROM events WHERE time >= TIMESTAMP '2026-01-01T06:00:00Z' AND time <= TIMESTAMP '2026-01-01T07:00:00Z'";
    assert_same_rows(
        "Grafana's time filter",
        &results[4],
        &s.rows(window).await,
        0.0,
    );

    // Everything that writes is refused with a SQLSTATE; settings are
    // checked.
    let results = psycopg(
        &pg,
        "",
        json!([
            {"sql": "INSERT INTO events (service) VALUES ('x')"},
            {"sql": "CREATE TABLE t (a bigint)"},
            {"sql": "COPY events TO STDOUT"},
            {"sql": "SET atoll.allow_partial = perhaps"},
            {"sql": "SHOW no_such_setting"},
            {"sql": "SELECT count(*) FROM events"},
        ]),
    );
    let codes: Vec<&Value> = results[..5]
        .iter()
        .map(|r| &r["error"]["sqlstate"])
        .collect();
    assert_eq!(
        codes,
        [
            &json!("42601"),
            &json!("42601"),
            &json!("0A000"),
            &json!("22023"),
            &json!("42704")
        ]
    );
    assert_eq!(results[5]["rows"], json!([[20_000]]), "nothing was written");
}

/// A statement prepared before its table's column widened fails as
/// Postgres's does when a plan's result type changes (drivers prepare it
/// again), instead of sending float8 bytes described as int8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_statement_whose_columns_changed_is_refused_not_misread() {
    let s = Server::start(&["--pg-addr", "127.0.0.1:0"]);
    let pg = s.pg_addr.clone().expect("the Postgres door is served");
    let (status, v) = s.ingest_json("evo", &json!([{"n": 1}])).await;
    assert_eq!(status, 200, "{v}");
    let sql = "SELECT n FROM evo";
    let before = psycopg(
        &pg,
        "",
        json!([{"sql": sql, "prepare": true, "binary": true}]),
    );
    assert_eq!(before[0]["rows"], json!([[1]]), "{}", before[0]);
    // Same connection: prepare, widen the column, execute the prepared one.
    let (host, port) = pg.rsplit_once(':').unwrap();
    let dsn = format!("host={host} port={port} user=atoll password= dbname=atoll sslmode=disable");
    let script = format!(
        r#"
import json, urllib.request, psycopg
conn = psycopg.connect({dsn:?}, autocommit=True)
conn.prepare_threshold = 0
cur = conn.cursor(binary=True)
cur.execute("SELECT n FROM evo")
cur.fetchall()
req = urllib.request.Request({url:?} + "/v1/tables/evo/events", data=b'{{"n": 2.5}}', headers={{"Content-Type": "application/json"}})
urllib.request.urlopen(req).read()
try:
    cur.execute("SELECT n FROM evo")
    print(json.dumps({{"rows": cur.fetchall()}}))
except psycopg.Error as e:
    print(json.dumps({{"sqlstate": e.sqlstate, "message": str(e)}}))
"#,
        url = s.url
    );
    let v = python(&["-c", &script]);
    assert_eq!(v["sqlstate"], "0A000", "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("cached plan"),
        "{v}"
    );
    // Prepared afresh, it reads the widened column.
    let after = psycopg(
        &pg,
        "",
        json!([{"sql": "SELECT n FROM evo ORDER BY n", "prepare": true, "binary": true}]),
    );
    assert_eq!(after[0]["rows"], json!([[1.0], [2.5]]), "{}", after[0]);
}

/// On a ring with one replica: every node's Postgres door answers the
/// benchmark as `/v1/query` does; a cancel request stops a running query
/// on the owners; with a node down, a query says which partitions it
/// cannot read, unless the session allows a partial answer (then a
/// NOTICE says the coverage).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_of_a_ring_answers_and_partial_answers_are_asked_for() {
    let mut cluster = Cluster::start(3, &["--replicas", "1", "--pg-addr", "127.0.0.1:0"]).await;
    let (status, v) = cluster
        .node(1)
        .ingest("events", generated_events(20_000, 11, &[]))
        .await;
    assert_eq!((status, v["accepted"].as_u64()), (200, Some(20_000)), "{v}");
    for i in 0..3 {
        let pg = cluster
            .node(i)
            .pg_addr
            .clone()
            .expect("the Postgres door is served");
        benchmark_answers_agree(&pg, cluster.node(0)).await;
    }

    // A nested-loop join over 200-byte strings keeps the owners'
    // fragments streaming while the coordinator works; the client cancels
    // it (waiting longer each time if, under load, it had not reached the
    // owners yet), and an owner counts a fragment as cancelled.
    let pad = "x".repeat(200);
    let body: String = (0..60_000)
        .map(|i| format!("{{\"i\":{i},\"s\":\"{pad}\"}}\n"))
        .collect();
    assert_eq!(cluster.node(0).ingest("slow", body).await.0, 200);
    let cancelled = async |c: &Cluster| {
        let mut total = 0.0;
        for i in 1..3 {
            total += c
                .node(i)
                .metric("atoll_fragments_total{outcome=\"cancelled\"}")
                .await
                .unwrap_or(0.0);
        }
        total
    };
    let before = cancelled(&cluster).await;
    let pg0 = cluster.node(0).pg_addr.clone().unwrap();
    let slow =
        "SELECT count(*) FROM slow a JOIN slow b ON a.i < b.i AND a.s <> b.s WHERE a.i < 5000";
    let mut seen = false;
    let mut outcomes = Vec::new();
    for patience in [1.5, 3.0, 6.0] {
        let outcome = psycopg(&pg0, "", json!([{"sql": slow, "cancel_after": patience}])).remove(0);
        assert!(outcome.get("finished_before_cancel").is_none(), "{outcome}");
        assert_eq!(outcome["error"]["sqlstate"], "57014", "{outcome}");
        assert_eq!(outcome["still_running"], false, "{outcome}");
        outcomes.push(outcome);
        let started = std::time::Instant::now();
        while !seen && started.elapsed() < std::time::Duration::from_secs(5) {
            seen = cancelled(&cluster).await > before;
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        if seen {
            break;
        }
    }
    assert!(seen, "no fragment cancelled on an owner after {outcomes:?}");
    cluster
        .node(0)
        .wait_for_metric("atoll_queries_running", |n| n == 0.0)
        .await;

    // n2 goes down: its partitions have no other replica.
    cluster.nodes[2] = None;
    cluster
        .wait_until("n2 is seen down", |v| status_of(v, "n2") == "down")
        .await;
    let results = psycopg(
        &pg0,
        "",
        json!([
            {"sql": "SELECT count(*) FROM events"},
            {"sql": "SET atoll.allow_partial = on"},
            {"sql": "SELECT count(*) FROM events"},
        ]),
    );
    assert_eq!(results[0]["error"]["sqlstate"], "57P03", "{}", results[0]);
    assert!(
        results[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("partition"),
        "{}",
        results[0]
    );
    let partial = results[2]["rows"][0][0].as_i64().unwrap();
    assert!(partial > 0 && partial < 20_000, "{}", results[2]);
    let notices = results[2]["notices"].as_array().unwrap();
    assert!(
        notices
            .iter()
            .any(|n| n.as_str().unwrap().contains("coverage")),
        "{}",
        results[2]
    );
    let (_, v) = cluster
        .node(0)
        .query_with(json!({"sql": "SELECT count(*) FROM events", "allow_partial": true}))
        .await;
    assert_eq!(
        v["rows"][0][0].as_i64(),
        Some(partial),
        "the same partial answer as /v1/query: {v}"
    );
}

#[tokio::test]
async fn a_public_postgres_address_needs_keys() {
    let refused = Server::try_start(&["--pg-addr", "0.0.0.0:0"]);
    assert_eq!(refused.err(), Some(Some(1)));
}
