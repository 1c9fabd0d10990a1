//! Real `atoll` processes for tests: started on an ephemeral port, killed
//! when dropped.
#![allow(dead_code)]

pub mod answers;
pub mod certs;
pub mod clients;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub struct Server {
    pub child: Child,
    pub flight_addr: String,
    pub gossip_addr: String,
    /// Where it serves OTLP/gRPC (`--otlp-grpc-addr`), if it does.
    pub otlp_grpc_addr: Option<String>,
    /// Where it serves Postgres clients (`--pg-addr`), if it does.
    pub pg_addr: Option<String>,
    pub flight_sql_addr: Option<String>,
    /// Its HTTP API, with the admin key it was started with (if any).
    pub api: Api,
}

/// A node's HTTP API, as one client (with one API key, or none) sees it.
#[derive(Clone)]
pub struct Api {
    pub url: String,
    pub client: reqwest::Client,
    pub key: Option<String>,
}

impl std::ops::Deref for Server {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

/// `atoll serve` on 127.0.0.1, every port picked by the system, the tests'
/// secret, and extra flags (later flags win).
pub fn atoll_serve(extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_atoll"));
    cmd.args([
        "serve",
        "--http-addr",
        "127.0.0.1:0",
        "--flight-addr",
        "127.0.0.1:0",
    ])
    .args([
        "--gossip-addr",
        "127.0.0.1:0",
        "--log",
        "warn",
        "--cluster-secret",
        "test-secret",
    ])
    .args(extra);
    cmd
}

/// A Flight client of a node's internal service.
pub async fn flight_client(
    addr: &str,
) -> arrow_flight::flight_service_client::FlightServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    arrow_flight::flight_service_client::FlightServiceClient::new(channel)
}

/// Signs an internal call of `method` (`DoGet`, `DoPut`, `DoAction`) to
/// the node whose Flight address is `to`, with the key of `secret`, as a
/// node does (`atoll_cluster::call_auth`).
#[allow(dead_code)]
pub fn sign_call<T>(request: &mut tonic::Request<T>, method: &str, secret: &str, to: &str) {
    use atoll_cluster::call_auth::{CALL_HEADER, CallKey};
    use atoll_cluster::messages::FLIGHT_SERVICE;
    let signed = CallKey::new(secret).sign(&format!("/{FLIGHT_SERVICE}/{method}"), to);
    request
        .metadata_mut()
        .insert(CALL_HEADER, signed.parse().unwrap());
}

/// Marks an internal call as speaking this build's protocol version (as
/// Atoll's own client does); the signature is added by the caller.
#[allow(dead_code)]
pub fn speak_protocol<T>(request: &mut tonic::Request<T>) {
    use atoll_cluster::messages::{PROTOCOL_HEADER, PROTOCOL_VERSION};
    request
        .metadata_mut()
        .insert(PROTOCOL_HEADER, PROTOCOL_VERSION.into());
}

/// Waits (at most 20 s, looking every 50 ms) until `done` holds; fails
/// naming `what` otherwise.
pub async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !done().await {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Server {
    /// Starts `atoll serve` on 127.0.0.1 with extra flags (later flags win,
    /// so `--gossip-addr` may be given).
    pub fn start(extra: &[&str]) -> Server {
        Self::try_start(extra).unwrap_or_else(|code| panic!("atoll exited with {code:?}"))
    }

    /// Like `start`, but a node that exits before it is ready gives its
    /// exit code. The node listens on ports the system picks and says
    /// which in its `--ready-file`.
    pub fn try_start(extra: &[&str]) -> Result<Server, Option<i32>> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ready =
            std::env::temp_dir().join(format!("atoll-test-ready-{}-{n}.json", std::process::id()));
        let _ = std::fs::remove_file(&ready);
        let mut child = atoll_serve(extra)
            .arg("--ready-file")
            .arg(&ready)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("atoll starts");
        let started = Instant::now();
        let said: Value = loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                let _ = std::fs::remove_file(&ready);
                break serde_json::from_str(&text).expect("the ready file is JSON");
            }
            if let Some(status) = child.try_wait().expect("wait") {
                return Err(status.code());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "atoll wrote no ready file within 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let addr = |key: &str| said[key].as_str().expect("an address").to_string();
        // Later flags win, as in the node.
        let flag = |name: &str| {
            extra
                .iter()
                .rposition(|a| *a == name)
                .and_then(|i| extra.get(i + 1))
                .map(|k| k.to_string())
        };
        // An HTTPS node's certificate chains to its `--tls-ca`, or is
        // `--tls-cert` itself.
        let mut client = reqwest::Client::builder().timeout(Duration::from_secs(120));
        if let Some(ca) = flag("--tls-ca").or_else(|| flag("--tls-cert")) {
            let pem = std::fs::read(ca).expect("the CA file");
            client = client.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        let client = client.build().unwrap();
        let key = flag("--admin-key");
        Ok(Server {
            child,
            flight_addr: addr("flight_addr"),
            gossip_addr: addr("gossip_addr"),
            otlp_grpc_addr: said["otlp_grpc_addr"].as_str().map(str::to_string),
            pg_addr: said["pg_addr"].as_str().map(str::to_string),
            flight_sql_addr: said["flight_sql_addr"].as_str().map(str::to_string),
            api: Api {
                url: addr("http_url"),
                client,
                key,
            },
        })
    }

    /// Sends a signal (`KILL`, `TERM`) and waits for the process to end.
    pub fn signal(&mut self, signal: &str) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(ok.success());
        self.child.wait().unwrap()
    }

    /// The exit status, if the process has ended.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("wait")
    }

    /// Waits (at most 20 s) for the process to stop by itself.
    pub async fn wait_exit(&mut self, why: &str) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(s) = self.try_wait() {
                return s;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "{why}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_none()
    }
}

impl Api {
    /// The same node, called with another API key.
    pub fn with_key(&self, key: &str) -> Api {
        Api {
            url: self.url.clone(),
            client: self.client.clone(),
            key: Some(key.to_string()),
        }
    }

    /// A request carrying this view's key.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.client.request(method, format!("{}{path}", self.url));
        match &self.key {
            Some(k) => req.bearer_auth(k),
            None => req,
        }
    }

    pub async fn cluster(&self) -> Value {
        let (status, body) = self.get("/v1/cluster").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// `POST /v1/cluster/leave` for `node`; the HTTP status.
    pub async fn leave(&self, node: &str, force: bool) -> u16 {
        let body = serde_json::json!({ "node": node, "force": force }).to_string();
        self.send(reqwest::Method::POST, "/v1/cluster/leave", &body)
            .await
            .0
    }

    pub async fn post_raw(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, Value) {
        let mut req = self.request(reqwest::Method::POST, path).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}")),
        )
    }

    /// Posts NDJSON (or any body) to a table's events.
    pub async fn ingest(&self, table: &str, body: impl Into<Vec<u8>>) -> (u16, Value) {
        self.post_raw(
            &format!("/v1/tables/{table}/events"),
            &[("content-type", "application/x-ndjson")],
            body.into(),
        )
        .await
    }

    pub async fn ingest_json(&self, table: &str, events: &Value) -> (u16, Value) {
        self.post_raw(
            &format!("/v1/tables/{table}/events"),
            &[("content-type", "application/json")],
            events.to_string().into(),
        )
        .await
    }

    pub async fn query_with(&self, body: Value) -> (u16, Value) {
        self.post_raw(
            "/v1/query",
            &[("content-type", "application/json")],
            body.to_string().into(),
        )
        .await
    }

    pub async fn query(&self, sql: &str) -> (u16, Value) {
        self.query_with(json!({ "sql": sql })).await
    }

    /// The rows of a query that must succeed.
    pub async fn rows(&self, sql: &str) -> Vec<Vec<Value>> {
        let (status, body) = self.query(sql).await;
        assert_eq!(status, 200, "{sql}: {body}");
        serde_json::from_value(body["rows"].clone()).unwrap()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.rows(sql).await[0][0].as_i64().expect("an integer")
    }

    /// The value of an unlabelled metric in `/metrics`.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, text) = self.get("/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Waits (at most 20 s) until `check` holds on the value of `name`.
    pub async fn wait_for_metric(&self, name: &str, check: impl Fn(f64) -> bool) -> f64 {
        let mut last = None;
        wait_until(name, async || {
            last = self.metric(name).await;
            last.is_some_and(&check)
        })
        .await;
        last.expect("checked")
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let res = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .expect("request");
        (res.status().as_u16(), res.text().await.unwrap())
    }

    /// Makes a key (`POST /v1/keys`); answers the key, shown once.
    pub async fn make_key(&self, name: &str, role: &str, tables: Option<&[&str]>) -> String {
        let mut body = json!({ "name": name, "role": role });
        if let Some(t) = tables {
            body["tables"] = json!(t);
        }
        let (status, v) = self
            .send(reqwest::Method::POST, "/v1/keys", &body.to_string())
            .await;
        assert_eq!(status, 201, "{v}");
        assert_eq!(v["name"], name);
        v["key"].as_str().expect("the key, shown once").to_string()
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, body: &str) -> (u16, Value) {
        let res = self
            .request(method, path)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The folder shared by every engine's benchmarks (`../shared` of the repo).
pub fn shared_dir() -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = repo.join("../shared");
    assert!(
        dir.join("bench/gen_events.py").exists(),
        "{} has no bench/gen_events.py",
        dir.display()
    );
    dir
}

/// Events from the shared generator, as NDJSON.
pub fn generated_events(rows: usize, seed: u64, extra: &[&str]) -> Vec<u8> {
    let out = Command::new("python3")
        .arg(shared_dir().join("bench/gen_events.py"))
        .args(["--rows", &rows.to_string(), "--seed", &seed.to_string()])
        .args(extra)
        .output()
        .expect("python3 runs the generator");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

pub struct Cluster {
    pub nodes: Vec<Option<Server>>,
    /// Each node's gossip port, as it reported once started: a node
    /// restarted under its name comes back on it.
    pub gossip: Vec<u16>,
    pub extra: Vec<String>,
    /// A cluster name of its own keeps a test's gossip out of every other
    /// test's.
    pub name: String,
}

impl Cluster {
    /// `n` nodes named n0.., all seeded by n0, with extra flags for each.
    pub async fn start(n: usize, extra: &[&str]) -> Cluster {
        Self::start_each(n, extra, |_| Vec::new()).await
    }

    /// Like `start`, with flags of node `i`'s own from `own(i)`.
    pub async fn start_each(
        n: usize,
        extra: &[&str],
        own: impl Fn(usize) -> Vec<String>,
    ) -> Cluster {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut c = Cluster {
            nodes: Vec::new(),
            gossip: Vec::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            name: format!("test-{}-{id}", std::process::id()),
        };
        for i in 0..n {
            let flags = own(i);
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            let node = c.launch(i, &flags);
            c.put(i, node);
        }
        c.wait_until("every node sees every node up", |v| up_count(v) == n)
            .await;
        c
    }

    /// Starts node `i` (named `ni`): on its earlier gossip port if it had
    /// one, else on one the system picks; seeded by n0 unless it is n0.
    pub fn launch(&self, i: usize, more: &[&str]) -> Server {
        let gossip = format!("127.0.0.1:{}", self.gossip.get(i).copied().unwrap_or(0));
        let seed = self.seed();
        let name = format!("n{i}");
        let mut args: Vec<&str> = vec![
            "--cluster-name",
            &self.name,
            "--node-name",
            &name,
            "--gossip-addr",
            &gossip,
            "--gossip-interval-ms",
            "100",
        ];
        if i > 0 {
            args.extend(["--seed", &seed]);
        }
        args.extend(self.extra.iter().map(String::as_str));
        args.extend(more);
        Server::start(&args)
    }

    /// Takes a started node as node `i` (the next one, or one restarted),
    /// keeping its gossip port.
    pub fn put(&mut self, i: usize, node: Server) {
        let port = node
            .gossip_addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a gossip port");
        if i == self.gossip.len() {
            self.gossip.push(port);
        } else {
            self.gossip[i] = port;
        }
        if i == self.nodes.len() {
            self.nodes.push(Some(node));
        } else {
            self.nodes[i] = Some(node);
        }
    }

    /// n0's gossip address, the seed of the others.
    pub fn seed(&self) -> String {
        format!("127.0.0.1:{}", self.gossip.first().copied().unwrap_or(0))
    }

    pub fn node(&self, i: usize) -> &Server {
        self.nodes[i].as_ref().expect("node running")
    }

    pub fn running(&self) -> impl Iterator<Item = &Server> {
        self.nodes.iter().flatten()
    }

    /// Waits (at most 20 s) until `check` holds on every running node's
    /// `/v1/cluster`.
    pub async fn wait_until(&self, what: &str, check: impl Fn(&Value) -> bool) -> Vec<Value> {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_some())
            .collect();
        self.wait_until_on(&running, what, check).await
    }

    /// The same, on some nodes only.
    pub async fn wait_until_on(
        &self,
        nodes: &[usize],
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let mut views = Vec::new();
            for &i in nodes {
                views.push(self.node(i).cluster().await);
            }
            if views.iter().all(&check) {
                return views;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "timed out waiting until {what}: {views:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until some node gossips rows (figures go out once a second):
    /// ring changes made after it see a cluster holding data.
    pub async fn wait_for_gossiped_rows(&self) {
        self.wait_until("rows are gossiped", |v| {
            v["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["rows"].as_u64() > Some(0))
        })
        .await;
    }
}

pub fn up_count(v: &Value) -> usize {
    v["nodes"]
        .as_array()
        .map_or(0, |ns| ns.iter().filter(|n| n["status"] == "up").count())
}

/// The owner of each partition in a `/v1/cluster` answer.
pub fn owners(v: &Value) -> Vec<String> {
    v["ring"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["owner"].as_str().unwrap().to_string())
        .collect()
}

pub fn status_of(v: &Value, name: &str) -> String {
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .map_or("absent".into(), |n| {
            n["status"].as_str().unwrap().to_string()
        })
}
