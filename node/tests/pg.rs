//! The Postgres wire protocol door (`--pg-addr`) with the real `psql`
//! (Debian's postgresql-client, installed by `scripts/install-clients`):
//! answers equal to `/v1/query`'s, SCRAM with an API key's verifier,
//! roles and scopes, writes refused with a SQLSTATE.

mod support;

use std::process::{Command, Output};

use reqwest::Method;
use serde_json::{Value, json};
use support::{Api, Server};

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

async fn key(api: &Api, name: &str, role: &str, tables: Option<&[&str]>) -> String {
    let mut body = json!({"name": name, "role": role});
    if let Some(t) = tables {
        body["tables"] = json!(t);
    }
    let (status, v) = api.send(Method::POST, "/v1/keys", &body.to_string()).await;
    assert_eq!(status, 201, "{v}");
    v["key"].as_str().unwrap().to_string()
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
    let reader = key(&s, "grafana", "query", None).await;

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
    let writer = key(&s, "writer", "ingest", None).await;
    let refused = psql(&pg, "writer", &writer, "SELECT 1");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("42501"), "{err}");
    let scoped = key(&s, "scoped", "query", Some(&["other"])).await;
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
}

#[tokio::test]
async fn a_public_postgres_address_needs_keys() {
    let refused = Server::try_start(&["--pg-addr", "0.0.0.0:0"]);
    assert_eq!(refused.err(), Some(Some(1)));
}
