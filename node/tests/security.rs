//! API keys, roles and table scopes on every route; refusing to serve
//! publicly without keys; cross-site and DNS-rebinding refusals; keys
//! spread across a cluster, and revocations that hold through restarts.

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Api, Cluster, Server};

const ADMIN: &str = "test-admin-key-0123456789";

/// Waits (at most 20 s) until `path` answers `status` to `api`.
async fn wait_for_status(api: &Api, path: &str, status: u16, what: &str) {
    support::wait_until(what, async || api.get(path).await.0 == status).await;
}

#[tokio::test]
async fn a_node_refuses_to_serve_publicly_without_keys() {
    let refused = Server::try_start(&["--http-addr", "0.0.0.0:0"]);
    assert_eq!(refused.err(), Some(Some(1)), "no key, not loopback: exit 1");
    // Every door counts: OTLP/gRPC off loopback too.
    let refused = Server::try_start(&["--otlp-grpc-addr", "0.0.0.0:0"]);
    assert_eq!(
        refused.err(),
        Some(Some(1)),
        "OTLP/gRPC not loopback: exit 1"
    );
    let short = Server::try_start(&["--admin-key", "short"]);
    assert_eq!(short.err(), Some(Some(1)), "a short admin key is refused");
    let insecure = Server::start(&["--http-addr", "0.0.0.0:0", "--insecure-no-auth"]);
    assert_eq!(insecure.get("/v1/tables").await.0, 200, "explicitly open");
    let keyed = Server::start(&["--http-addr", "0.0.0.0:0", "--admin-key", ADMIN]);
    assert_eq!(keyed.get("/v1/tables").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_needs_a_key_and_roles_and_scopes_hold() {
    let s = Server::start(&["--admin-key", ADMIN]);
    let nobody = Api {
        key: None,
        ..s.api.clone()
    };
    // Without a key, or with a wrong one: 401 on every /v1 route and on
    // /metrics; /healthz and the dashboard stay open.
    for path in [
        "/v1/tables",
        "/v1/tables/web",
        "/v1/cluster",
        "/v1/cluster/writes",
        "/v1/keys",
        "/metrics",
    ] {
        assert_eq!(nobody.get(path).await.0, 401, "{path}");
        assert_eq!(
            s.with_key("atoll_0123456789abcdef_00").get(path).await.0,
            401,
            "{path}"
        );
    }
    for (method, path) in [
        (Method::POST, "/v1/query"),
        (Method::POST, "/v1/tables/web/events"),
        (Method::PUT, "/v1/tables/web"),
        (Method::DELETE, "/v1/tables/web"),
        (Method::POST, "/v1/cluster/leave"),
        (Method::POST, "/v1/keys"),
        (Method::DELETE, "/v1/keys/x"),
    ] {
        let (status, v) = nobody.send(method.clone(), path, "{}").await;
        assert_eq!(status, 401, "{method} {path}: {v}");
        assert!(v["error"].as_str().unwrap().contains("API key"), "{v}");
    }
    assert_eq!(nobody.get("/healthz").await.0, 200);
    assert_eq!(nobody.get("/").await.0, 200, "the dashboard's page");

    let ingest = s.with_key(&s.make_key("writer", "ingest", Some(&["web"])).await);
    let reader = s.with_key(&s.make_key("reader", "query", Some(&["web"])).await);
    let analyst = s.with_key(&s.make_key("analyst", "query", None).await);
    assert_eq!(ingest.ingest("web", "{\"a\":1}\n").await.0, 200);
    assert_eq!(
        s.ingest("jobs", "{\"b\":1}\n").await.0,
        200,
        "admin writes anywhere"
    );
    let (status, v) = ingest.ingest("jobs", "{\"b\":2}\n").await;
    assert_eq!(status, 403, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("limited to tables"),
        "{v}"
    );
    assert_eq!(
        ingest.query("SELECT 1").await.0,
        403,
        "ingest keys do not query"
    );
    assert_eq!(analyst.ingest("web", "{\"a\":2}\n").await.0, 403);

    assert_eq!(reader.rows("SELECT count(*) FROM web").await, [[json!(1)]]);
    for sql in [
        "SELECT count(*) FROM jobs",
        "SELECT * FROM web JOIN jobs ON true",
        "SELECT * FROM web WHERE a IN (SELECT b FROM jobs)",
        "SELECT table_name FROM information_schema.tables",
        "DESCRIBE jobs",
    ] {
        let (status, v) = reader.query(sql).await;
        assert_eq!(status, 403, "{sql}: {v}");
    }
    assert_eq!(
        analyst.rows("SELECT count(*) FROM jobs").await,
        [[json!(1)]]
    );
    let (_, listed) = reader.get("/v1/tables").await;
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let names: Vec<&str> = listed["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web"], "a scoped key lists its tables only");
    assert_eq!(reader.get("/v1/tables/jobs").await.0, 403);

    // Only admin keys change tables, keys and the cluster.
    for api in [&ingest, &reader, &analyst] {
        assert_eq!(api.send(Method::PUT, "/v1/tables/web", "{}").await.0, 403);
        assert_eq!(api.send(Method::DELETE, "/v1/tables/web", "").await.0, 403);
        let new_key = json!({"name": "x", "role": "admin"}).to_string();
        assert_eq!(api.send(Method::POST, "/v1/keys", &new_key).await.0, 403);
        assert_eq!(api.get("/v1/keys").await.0, 403);
        assert_eq!(api.leave("n0", true).await, 403);
    }
    assert_eq!(
        analyst.get("/metrics").await.0,
        200,
        "query keys see metrics"
    );
    // ...but not scoped ones: the cluster's state and metrics name every table.
    assert_eq!(reader.get("/metrics").await.0, 403);
    assert_eq!(reader.get("/v1/cluster").await.0, 403);
    assert_eq!(reader.get("/v1/cluster/writes").await.0, 403);
    // The Honeycomb header carries a key for ingest only.
    let honeycomb = nobody
        .request(Method::GET, "/v1/keys")
        .header("x-honeycomb-team", ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(honeycomb.status().as_u16(), 401);
    let upper = nobody
        .request(Method::GET, "/v1/keys")
        .header("authorization", format!("BEARER {ADMIN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(upper.status().as_u16(), 200, "the scheme in any case");

    // The listing never shows a secret.
    let (status, keys) = s.get("/v1/keys").await;
    assert_eq!(status, 200);
    assert!(!keys.contains(ingest.key.as_deref().unwrap()), "{keys}");
    let keys: Value = serde_json::from_str(&keys).unwrap();
    let writer = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "writer")
        .unwrap()
        .clone();
    assert_eq!(writer["role"], "ingest");
    assert_eq!(writer["tables"], json!(["web"]));
    assert!(writer["created"].as_i64().unwrap() > 0);
    assert!(writer["last_used"].as_i64().unwrap() >= writer["created"].as_i64().unwrap());
    assert!(writer.get("key").is_none() && writer.get("hash").is_none());

    // Names are unique; revoking frees the name and stops the key.
    let dup = json!({"name": "writer", "role": "query"}).to_string();
    assert_eq!(s.send(Method::POST, "/v1/keys", &dup).await.0, 409);
    assert_eq!(s.send(Method::DELETE, "/v1/keys/writer", "").await.0, 200);
    assert_eq!(ingest.ingest("web", "{\"a\":3}\n").await.0, 401);
    assert_eq!(s.send(Method::DELETE, "/v1/keys/writer", "").await.0, 404);

    let metrics = s.get("/metrics").await.1;
    for reason in ["missing", "invalid", "revoked", "forbidden"] {
        let line = format!("atoll_auth_failures_total{{reason=\"{reason}\"}}");
        assert!(metrics.contains(&line), "{reason}: {metrics}");
    }
}

#[tokio::test]
async fn cross_site_and_rebinding_requests_are_refused() {
    let s = Server::start(&[]);
    let port = s.url.rsplit(':').next().unwrap().to_string();
    let post = |content_type: &'static str, headers: Vec<(&'static str, String)>| {
        let mut req = s
            .request(Method::POST, "/v1/query")
            .header("content-type", content_type)
            .body(r#"{"sql": "SELECT 1"}"#);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(post("application/json", vec![]).await, 200);
    // What a form or a fetch without preflight of another site can send.
    for simple in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ] {
        assert_eq!(post(simple, vec![]).await, 415, "{simple}");
    }
    let no_type = s
        .request(Method::POST, "/v1/query")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(no_type.status().as_u16(), 415);
    // A page of another site, and a rebinding page (its own host name).
    let evil = vec![("origin", "http://evil.example".to_string())];
    assert_eq!(post("application/json", evil).await, 403);
    let rebound = vec![("host", format!("evil.example:{port}"))];
    assert_eq!(post("application/json", rebound).await, 403);
    let rebound_get = s
        .request(Method::GET, "/v1/tables")
        .header("host", format!("evil.example:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(rebound_get.status().as_u16(), 403);
    // The node's own page.
    let own = vec![("origin", format!("http://127.0.0.1:{port}"))];
    assert_eq!(post("application/json", own).await, 200);
    let localhost = vec![("host", format!("localhost:{port}"))];
    assert_eq!(post("application/json", localhost).await, 200);
    // Names given with --allowed-host are taken.
    let named = Server::start(&["--allowed-host", "atoll.internal"]);
    let res = named
        .request(Method::GET, "/v1/tables")
        .header("host", "atoll.internal:7070")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
}

/// Keys made through one node work on every node within seconds; a key
/// revoked through another stops everywhere as fast, and stays revoked
/// on a node restarted from its data dir, even from a copy of it taken
/// before the revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_spread_and_revocations_hold_across_a_cluster_and_restarts() {
    let root = tempfile::tempdir().unwrap();
    let dir = |i: usize| root.path().join(format!("n{i}")).display().to_string();
    let mut cluster = Cluster::start(0, &["--admin-key", ADMIN]).await;
    for i in 0..3 {
        let node = cluster.launch(i, &["--data-dir", &dir(i)]);
        cluster.put(i, node);
    }
    cluster
        .wait_until("every node sees every node up", |v| {
            support::up_count(v) == 3
        })
        .await;
    // Every node of the cluster requires a key on its routes.
    for i in 0..3 {
        let nobody = Api {
            key: None,
            ..cluster.node(i).api.clone()
        };
        for path in ["/v1/tables", "/v1/cluster", "/v1/keys"] {
            assert_eq!(nobody.get(path).await.0, 401, "n{i} {path}");
        }
        let (status, _) = nobody.query("SELECT 1").await;
        assert_eq!(status, 401, "n{i} query");
    }
    let key = cluster.node(0).make_key("spread", "query", None).await;
    for i in 0..3 {
        let api = cluster.node(i).with_key(&key);
        wait_for_status(&api, "/v1/tables", 200, &format!("the key works on n{i}")).await;
    }
    // A copy of n2's data dir while the key is active.
    let old = root.path().join("n2-old");
    copy_dir(std::path::Path::new(&dir(2)), &old);

    let (status, v) = cluster
        .node(1)
        .send(Method::DELETE, "/v1/keys/spread", "")
        .await;
    assert_eq!(status, 200, "{v}");
    for i in 0..3 {
        let api = cluster.node(i).with_key(&key);
        wait_for_status(&api, "/v1/tables", 401, &format!("revoked on n{i}")).await;
    }
    // Restarted from its own data dir, then from the copy taken before the
    // revocation: the key is refused from the first request on.
    for data in [dir(2), old.display().to_string()] {
        cluster.nodes[2] = None;
        let node = cluster.launch(2, &["--data-dir", &data]);
        let (status, body) = node.with_key(&key).get("/v1/tables").await;
        assert_eq!(status, 401, "{data}: {body}");
        cluster.put(2, node);
    }
    // A key made while n2 was away is known to it once back.
    cluster.nodes[2] = None;
    let late = cluster
        .node(0)
        .make_key("late", "ingest", Some(&["t"]))
        .await;
    let node = cluster.launch(2, &["--data-dir", &dir(2)]);
    let api = node.with_key(&late);
    assert_eq!(
        api.ingest("u", "{\"a\":1}\n").await.0,
        403,
        "known, with its scope"
    );
    cluster.put(2, node);
    cluster
        .wait_until("n2 is back up", |v| support::up_count(v) == 3)
        .await;
    let (status, v) = cluster
        .node(2)
        .with_key(&late)
        .ingest("t", "{\"a\":1}\n")
        .await;
    assert_eq!(status, 200, "{v}");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
