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

/// A tmpfs of its own, unmounted when dropped (after the node using it).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = std::env::temp_dir().join(format!("atoll-full-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "this test fills a disk: it needs to mount a tmpfs (run the tests as root, as CI does)"
        );
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Fills `dir`'s disk; answers the filler's path.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    path
}

async fn health(s: &Server) -> (u16, serde_json::Value) {
    let (status, body) = s.get("/healthz").await;
    (status, serde_json::from_str(&body).unwrap())
}

/// A full disk turns the node read-only and unhealthy, saying why; it
/// recovers by itself once there is room, and what it acknowledged (and
/// what it could not, once written) is back after a kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_acknowledgements_until_there_is_room() {
    let disk = Tmpfs::mount("16m");
    let data = disk.0.join("data");
    let mut s = start(&data, &["--fsync", "always"]);
    let events = |from: usize| -> String {
        (from..from + 100)
            .map(|i| format!("{{\"id\":{i}}}\n"))
            .collect()
    };
    assert_eq!(s.ingest("ev", events(0)).await.0, 200);
    let filler = fill(&disk.0);
    let (status, v) = s.ingest("ev", events(100)).await;
    assert_eq!(status, 503, "nothing acknowledged on a full disk: {v}");
    let (status, h) = health(&s).await;
    assert_eq!(status, 503, "{h}");
    assert!(h["reason"].as_str().unwrap().contains("space"), "{h}");
    // Refused at once while the log fails: its buffer does not grow.
    let (status, _) = s.ingest("ev", events(200)).await;
    assert_eq!(status, 503);
    // Table changes wait for the log like events: refused, nothing changed.
    let (status, v) = s
        .send(
            reqwest::Method::PUT,
            "/v1/tables/ev",
            r#"{"retention": "30d"}"#,
        )
        .await;
    assert_eq!(status, 503, "{v}");
    let (status, v) = s.send(reqwest::Method::DELETE, "/v1/tables/ev", "").await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(
        s.get("/v1/tables/ev").await.0,
        200,
        "the table is still there"
    );
    assert_eq!(
        s.rows("SELECT count(*) FROM ev WHERE id < 100").await,
        [[json!(100)]],
        "reads go on"
    );
    std::fs::remove_file(filler).unwrap();
    support::wait_until("the node to recover", async || health(&s).await.0 == 200).await;
    assert_eq!(s.ingest("ev", events(300)).await.0, 200);
    s.signal("KILL");
    let s = start(&data, &["--fsync", "always"]);
    let kept = s
        .rows("SELECT count(*) FROM ev WHERE id < 100 OR id >= 300")
        .await;
    assert_eq!(kept, [[json!(200)]], "every acknowledged event is back");
    let refused = s
        .count("SELECT count(*) FROM ev WHERE id >= 200 AND id < 300")
        .await;
    assert_eq!(
        refused, 0,
        "a write refused while the log failed was never stored"
    );
}
