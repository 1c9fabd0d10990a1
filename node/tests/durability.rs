//! Durability of one node with `--data-dir`: what a node acknowledged is
//! back after a SIGKILL, a torn log tail is cut, table settings and drops
//! survive.

mod support;

use std::io::Write;

use serde_json::json;
use support::Server;

fn start(dir: &std::path::Path, extra: &[&str]) -> Server {
    let mut args = vec!["--data-dir", dir.to_str().unwrap(), "--node-name", "solo"];
    args.extend(extra);
    Server::start(&args)
}

/// Sends `requests` NDJSON requests of `per` events each, four at a time;
/// answers the ids acknowledged.
async fn send_events(s: &Server, first: usize, requests: usize, per: usize) -> Vec<usize> {
    let mut acked = Vec::new();
    for chunk in (0..requests).collect::<Vec<_>>().chunks(4) {
        let sends = chunk.iter().map(|r| {
            let ids: Vec<usize> = (0..per).map(|i| first + r * per + i).collect();
            let body: String = ids
                .iter()
                .map(|id| {
                    format!(
                        "{{\"id\":{id},\"service\":\"s{}\",\"ms\":{}}}\n",
                        id % 7,
                        id % 1000
                    )
                })
                .collect();
            async move { (ids, s.ingest("ev", body).await) }
        });
        for (ids, (status, v)) in futures::future::join_all(sends).await {
            assert_eq!(status, 200, "{v}");
            assert_eq!(v["accepted"], json!(ids.len()), "{v}");
            acked.extend(ids);
        }
    }
    acked
}

async fn count(s: &Server) -> Vec<Vec<serde_json::Value>> {
    s.rows("SELECT count(*), count(DISTINCT id), sum(ms) FROM ev")
        .await
}

#[tokio::test]
async fn acknowledged_events_survive_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path(), &[]);
    let acked = send_events(&s, 0, 12, 1_000).await;
    let (status, v) = s
        .send(
            reqwest::Method::PUT,
            "/v1/tables/ev",
            r#"{"retention": "3650d"}"#,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(s.ingest("gone", "{\"x\":1}\n").await.0, 200);
    assert_eq!(
        s.send(reqwest::Method::DELETE, "/v1/tables/gone", "")
            .await
            .0,
        200
    );
    s.signal("KILL");

    let mut s = start(dir.path(), &[]);
    let expected_sum: usize = acked.iter().map(|id| id % 1000).sum();
    assert_eq!(
        count(&s).await,
        vec![vec![
            json!(acked.len()),
            json!(acked.len()),
            json!(expected_sum)
        ]]
    );
    let (_, tables) = s.get("/v1/tables").await;
    let tables: serde_json::Value = serde_json::from_str(&tables).unwrap();
    let names: Vec<&str> = tables["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["ev"], "the dropped table stays dropped");
    assert_eq!(tables["tables"][0]["settings"]["retention"], "3650d");

    // More writes after recovery, then a kill mid-way through a second
    // batch of requests: everything acknowledged is back.
    let more = send_events(&s, 100_000, 4, 500).await;
    s.signal("KILL");
    let s = start(dir.path(), &[]);
    let rows = count(&s).await;
    assert_eq!(rows[0][0], json!(acked.len() + more.len()));
    assert_eq!(rows[0][1], json!(acked.len() + more.len()));
}

#[tokio::test]
async fn a_torn_log_tail_is_cut_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path(), &["--fsync", "interval=20"]);
    let acked = send_events(&s, 0, 3, 100).await;
    s.signal("KILL");
    // A crash mid-write leaves half a frame at the end of the log.
    let log = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .expect("a log segment");
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(&[200, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9])
        .unwrap();
    drop(f);
    let s = start(dir.path(), &[]);
    assert_eq!(
        s.count("SELECT count(*) FROM ev").await,
        acked.len() as i64,
        "the good records are read, the torn one is not"
    );
    assert_eq!(send_events(&s, 1_000, 1, 10).await.len(), 10);
    assert_eq!(
        s.count("SELECT count(*) FROM ev").await,
        acked.len() as i64 + 10
    );
}

#[tokio::test]
async fn bad_fsync_policies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        Server::try_start(&[
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--fsync",
            "sometimes"
        ])
        .is_err()
    );
}
