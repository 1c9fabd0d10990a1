//! Runs the `.slt` corpus in `tests/slt/` through the HTTP API of a real
//! node. Besides SQL, a record may hold one of these Atoll directives:
//!
//! - `INGEST <table>` then NDJSON lines: posts them; the count is the number
//!   of accepted events (`statement count N`), and any rejection fails the
//!   record unless it is `INGEST_PARTIAL`, which reports the count only.
//! - `INGEST_GENERATED <table> <rows> <seed>`: events of the shared generator.
//! - `PUT_TABLE <table> <json>` / `DROP_TABLE <table>`: table management.
//!
//! Floats are printed with 10 significant digits (Python's `%.10g`), since
//! summation order varies; NULL as `NULL`, the empty string as `(empty)`.

mod support;

use std::path::PathBuf;

use serde_json::Value;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};
use support::{Cluster, Server, generated_events};

#[derive(Debug)]
pub struct SltError(String);

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SltError {}

struct HttpDb {
    url: String,
    client: reqwest::Client,
}

impl HttpDb {
    /// Sends a request; a non-2xx answer becomes the error `slt` matches
    /// against (`statement error <regex>`), with the status in front.
    async fn call(&self, req: reqwest::RequestBuilder) -> Result<Value, SltError> {
        let res = req.send().await.map_err(|e| SltError(e.to_string()))?;
        let status = res.status();
        let v: Value = res.json().await.map_err(|e| SltError(e.to_string()))?;
        if !status.is_success() {
            return Err(SltError(format!(
                "{status}: {}",
                v["error"].as_str().unwrap_or_default()
            )));
        }
        Ok(v)
    }

    async fn ingest(
        &self,
        table: &str,
        body: Vec<u8>,
        partial: bool,
    ) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let url = format!("{}/v1/tables/{table}/events", self.url);
        let v = self
            .call(
                self.client
                    .post(url)
                    .header("content-type", "application/x-ndjson")
                    .body(body),
            )
            .await?;
        if !partial && !v["rejected"].as_array().is_none_or(Vec::is_empty) {
            return Err(SltError(format!("events rejected: {}", v["rejected"])));
        }
        Ok(DBOutput::StatementComplete(
            v["accepted"].as_u64().unwrap_or(0),
        ))
    }

    async fn admin(
        &self,
        method: reqwest::Method,
        table: &str,
        body: &str,
    ) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let url = format!("{}/v1/tables/{table}", self.url);
        let request = self.client.request(method, url);
        let json = request.header("content-type", "application/json");
        self.call(json.body(body.to_string())).await?;
        Ok(DBOutput::StatementComplete(0))
    }

    async fn query(&self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let url = format!("{}/v1/query", self.url);
        let v = self
            .call(
                self.client
                    .post(url)
                    .json(&serde_json::json!({ "sql": sql })),
            )
            .await?;
        let types = v["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| column_type(c["type"].as_str().unwrap_or_default()))
            .collect();
        let rows = v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().iter().map(cell).collect())
            .collect();
        Ok(DBOutput::Rows { types, rows })
    }
}

fn column_type(t: &str) -> DefaultColumnType {
    if t.starts_with("Int") || t.starts_with("UInt") {
        DefaultColumnType::Integer
    } else if t.starts_with("Float") || t.starts_with("Decimal") {
        DefaultColumnType::FloatingPoint
    } else {
        DefaultColumnType::Text
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::String(s) if s.is_empty() => "(empty)".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_f64() => g10(n.as_f64().unwrap()),
        other => other.to_string(),
    }
}

/// Python's `'%.10g' % f`.
fn g10(f: f64) -> String {
    if f == 0.0 {
        return "0".into();
    }
    let sci = format!("{f:.9e}");
    let (mantissa, exp) = sci.split_once('e').unwrap();
    let exp: i32 = exp.parse().unwrap();
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if (-4..10).contains(&exp) {
        trim(&format!("{:.*}", (9 - exp) as usize, f))
    } else {
        format!(
            "{}e{}{:02}",
            trim(mantissa),
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        )
    }
}

#[async_trait::async_trait]
impl AsyncDB for HttpDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let (first, rest) = sql.split_once('\n').unwrap_or((sql, ""));
        let words: Vec<&str> = first.split_whitespace().collect();
        match words.as_slice() {
            ["INGEST", table] => self.ingest(table, rest.as_bytes().to_vec(), false).await,
            ["INGEST_PARTIAL", table] => self.ingest(table, rest.as_bytes().to_vec(), true).await,
            ["INGEST_GENERATED", table, rows, seed] => {
                self.ingest(
                    table,
                    generated_events(rows.parse().unwrap(), seed.parse().unwrap(), &[]),
                    false,
                )
                .await
            }
            ["PUT_TABLE", table, ..] => {
                let body = first.splitn(3, ' ').nth(2).unwrap_or("");
                self.admin(reqwest::Method::PUT, table, body).await
            }
            ["DROP_TABLE", table] => self.admin(reqwest::Method::DELETE, table, "").await,
            _ => self.query(sql).await,
        }
    }

    async fn shutdown(&mut self) {}

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await
    }
}

fn slt_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    files
}

/// Runs every file against a fresh node; reports all failing files at once.
pub async fn run_corpus(label: &str, url: &str) {
    let mut failures = Vec::new();
    for file in slt_files() {
        let url = url.to_string();
        let mut runner = sqllogictest::Runner::new(move || {
            let url = url.clone();
            async move {
                Ok::<_, SltError>(HttpDb {
                    url,
                    client: reqwest::Client::new(),
                })
            }
        });
        runner.add_label("atoll");
        runner.add_label(label);
        match runner.run_file_async(&file).await {
            Ok(()) => eprintln!("ok   {label} {}", file.display()),
            Err(e) => failures.push(format!("{}: {}", file.display(), e.display(true))),
        }
    }
    assert!(
        failures.is_empty(),
        "{} .slt files failed on {label}:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_corpus_on_one_node() {
    let server = Server::start(&["--seal-rows", "100"]);
    run_corpus("single", &server.url).await;
}

/// The same corpus on one node that keeps every sealed batch compressed
/// (packed as it is sealed): scans of packed and plain batches answer alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_corpus_on_one_node_with_compressed_batches() {
    let server = Server::start(&[
        "--seal-rows",
        "100",
        "--seal-interval-ms",
        "20",
        "--compress-after",
        "0s",
    ]);
    run_corpus("compressed", &server.url).await;
    let (_, metrics) = server.get("/metrics").await;
    let compressed: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("atoll_table_bytes{") && l.contains("form=\"compressed\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(
        compressed > 0,
        "the corpus was read from packed batches:\n{metrics}"
    );
}

/// The same corpus through one node of a 3-node ring where every node holds
/// every partition (N=3): answers must not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_corpus_on_three_nodes_with_three_replicas() {
    let cluster = Cluster::start(3, &["--seal-rows", "100", "--replicas", "3"]).await;
    run_corpus("ring-n3", &cluster.node(1).url).await;
}

/// And where each partition lives on one node only (N=1): every query is
/// split, and the owners' partial answers merged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_corpus_on_three_nodes_with_one_replica() {
    let cluster = Cluster::start(3, &["--seal-rows", "100", "--replicas", "1"]).await;
    run_corpus("ring-n1", &cluster.node(0).url).await;
}

#[test]
fn g10_matches_python() {
    for (f, s) in [
        (1.5, "1.5"),
        (963.2175, "963.2175"),
        (566.7380769230768, "566.7380769"),
        (221.60999999999999, "221.61"),
        (1e-5, "1e-05"),
        (123456789012.0, "1.23456789e+11"),
        (0.0001234, "0.0001234"),
        (-2.0, "-2"),
        (100.0, "100"),
    ] {
        assert_eq!(g10(f), s, "{f}");
    }
}
