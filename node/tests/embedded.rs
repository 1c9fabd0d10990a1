//! Three processes of `examples/embedded_app.rs`, a web service that is a
//! node of the ring through the library (`Node::embed`): one cluster,
//! every app answering the same totals from its in-process queries,
//! killing one, stopping one, and Atoll's routes on the app's own port
//! refusing requests without a key.
//!
//! The example must be built first (`cargo build -p atoll-node --example
//! embedded_app`; `scripts/test` does): `cargo test` builds examples only
//! as test harnesses.

mod support;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{up_count, wait_until};

const KEY: &str = "embedded-app-admin-key-0123456789";

struct App {
    child: Child,
    url: String,
    gossip: String,
    http: reqwest::Client,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn example() -> PathBuf {
    let atoll = PathBuf::from(env!("CARGO_BIN_EXE_atoll"));
    let path = atoll.with_file_name("examples").join("embedded_app");
    assert!(
        path.exists(),
        "{} is missing: build it first with `cargo build -p atoll-node --example embedded_app` (scripts/test does)",
        path.display()
    );
    path
}

impl App {
    /// Starts one app on ports the system picks; it prints where it serves
    /// once its node is in the ring.
    fn start(secret: &str, key_file: &std::path::Path, seed: Option<&str>) -> App {
        let mut cmd = Command::new(example());
        cmd.args(["--port", "0", "--flight-addr", "127.0.0.1:0"])
            .args(["--gossip-addr", "127.0.0.1:0", "--cluster-secret", secret])
            .arg("--admin-key-file")
            .arg(key_file);
        if let Some(seed) = seed {
            cmd.args(["--seed", seed]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the example starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the app says where it serves within 60 s");
        // "embedded_app NAME serving on http://ADDR/ (gossip ADDR)"
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .trim_end_matches('/')
            .to_string();
        let gossip = line
            .rsplit(' ')
            .next()
            .unwrap()
            .trim()
            .trim_end_matches(')')
            .to_string();
        App {
            child,
            url,
            gossip,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    async fn get(&self, path: &str, key: Option<&str>) -> (u16, String) {
        let mut req = self.http.get(format!("{}{path}", self.url));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let r = req.send().await.expect("the app answers");
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn json(&self, path: &str, key: Option<&str>) -> (u16, Value) {
        let (status, body) = self.get(path, key).await;
        (
            status,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    /// Requests per endpoint, and the coverage, as this app's `/latency`
    /// reads them from the ring.
    async fn totals(&self) -> Option<(BTreeMap<String, i64>, f64)> {
        let (status, v) = self.json("/latency.json", None).await;
        if status != 200 {
            return None;
        }
        let totals = v["endpoints"]
            .as_array()?
            .iter()
            .map(|r| {
                (
                    r["endpoint"].as_str().unwrap().to_string(),
                    r["requests"].as_i64().unwrap(),
                )
            })
            .collect();
        Some((totals, v["coverage"].as_f64()?))
    }
}

/// Waits until every app answers `expected` from the whole ring.
async fn wait_for_totals(apps: &[&App], expected: &BTreeMap<String, i64>) {
    for app in apps {
        let started = std::time::Instant::now();
        loop {
            let seen = app.totals().await;
            if seen.as_ref() == Some(&(expected.clone(), 1.0)) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{} counts {seen:?}, not {expected:?}",
                app.url
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn drive(app: &App, n: usize, from: usize, expected: &mut BTreeMap<String, i64>) {
    for i in from..from + n {
        let (path, endpoint) = if i % 3 == 0 {
            ("/api/hello".to_string(), "/api/hello")
        } else {
            (format!("/api/checkout?user=u{}", i % 7), "/api/checkout")
        };
        let (status, _) = app.get(&path, None).await;
        assert_eq!(status, 200, "{path}");
        *expected.entry(endpoint.to_string()).or_default() += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_app_servers_are_one_ring() {
    let dir = std::env::temp_dir().join(format!("atoll-embedded-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("admin.key");
    std::fs::write(&key_file, KEY).unwrap();
    let secret = format!("embedded-{}", std::process::id());
    let a0 = App::start(&secret, &key_file, None);
    let a1 = App::start(&secret, &key_file, Some(&a0.gossip));
    let mut a2 = App::start(&secret, &key_file, Some(&a0.gossip));
    for app in [&a0, &a1, &a2] {
        wait_until("every app sees three members up", async || {
            let (status, v) = app.json("/v1/cluster", Some(KEY)).await;
            status == 200 && up_count(&v) == 3
        })
        .await;
    }

    // Atoll's routes on the app's port answer only with a key, and only
    // to this node's names; the app's own routes are the app's.
    for (path, what) in [
        ("/v1/cluster", "cluster state"),
        ("/v1/tables", "tables"),
        ("/metrics", "metrics"),
    ] {
        let (status, body) = a1.get(path, None).await;
        assert_eq!(status, 401, "{what} without a key: {body}");
    }
    let unkeyed = a1
        .http
        .post(format!("{}/v1/query", a1.url))
        .json(&serde_json::json!({"sql": "SELECT 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unkeyed.status(), 401);
    let write = a1
        .http
        .post(format!("{}/v1/tables/requests/events", a1.url))
        .header("content-type", "application/x-ndjson")
        .body("{\"endpoint\": \"forged\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 401);
    let wrong_host = a1
        .http
        .get(format!("{}/v1/cluster", a1.url))
        .bearer_auth(KEY)
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_host.status(), 403);
    let (status, page) = a1.get("/", None).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("<html") || page.contains("<!doctype"),
        "{page}"
    );

    // Requests served by every app are counted alike by every app.
    let mut expected = BTreeMap::new();
    drive(&a0, 60, 0, &mut expected).await;
    drive(&a1, 45, 60, &mut expected).await;
    drive(&a2, 30, 105, &mut expected).await;
    wait_for_totals(&[&a0, &a1, &a2], &expected).await;
    let (status, page) = a2.get("/latency", None).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("/api/checkout") && page.contains("100%"),
        "{page}"
    );
    let (_, v) = a2.json("/latency.json", None).await;
    for row in v["endpoints"].as_array().unwrap() {
        assert!(row["p99_ms"].as_f64().unwrap() > 0.0, "{v}");
    }

    // Ownership: every app names the same owners of a user's events.
    let (_, first) = a0.json("/owner/u3", None).await;
    assert_eq!(first["owners"].as_array().unwrap().len(), 3, "{first}");
    for app in [&a1, &a2] {
        let (_, v) = app.json("/owner/u3", None).await;
        assert_eq!(v["partition"], first["partition"]);
        let names = |v: &Value| -> Vec<String> {
            v["owners"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names(&v), names(&first));
    }
    // A user's page reads the ring in process: u3's checkouts, 19 of them
    // (i % 7 == 3 and i % 3 != 0 for i < 135).
    let u3 = (0..135).filter(|i| i % 7 == 3 && i % 3 != 0).count() as i64;
    let (_, v) = a1.json("/api/users/u3", None).await;
    assert_eq!(v["requests"], u3, "{v}");

    // Those requests were recorded too, by the app that served each.
    expected.insert("/owner/{user}".into(), 3);
    expected.insert("/api/users/{user}".into(), 1);
    wait_for_totals(&[&a0, &a1, &a2], &expected).await;

    // One app killed: the others keep answering, every event still
    // counted (three replicas), and keep recording.
    a2.child.kill().unwrap();
    a2.child.wait().unwrap();
    wait_for_totals(&[&a0, &a1], &expected).await;
    drive(&a0, 20, 200, &mut expected).await;
    drive(&a1, 20, 220, &mut expected).await;
    wait_for_totals(&[&a0, &a1], &expected).await;

    // A stopped app leaves cleanly and stays a member of the ring.
    let pid = a1.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut a1 = a1;
    wait_until("the app to stop after SIGTERM", async || {
        a1.child.try_wait().unwrap().is_some()
    })
    .await;
    let status = a1.child.wait().unwrap();
    assert!(status.success(), "stopped by SIGTERM: {status}");
    let (_, v) = a0.json("/v1/cluster", Some(KEY)).await;
    assert_eq!(v["nodes"].as_array().unwrap().len(), 3, "{v}");
    let _ = std::fs::remove_dir_all(&dir);
}
