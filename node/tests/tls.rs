//! TLS: HTTPS for the API and dashboard, Flight between nodes over TLS
//! (a cluster CA with a certificate per node, or one shared certificate),
//! and `atoll cluster` reaching an HTTPS node. Certificates are made for
//! each run (rcgen).

mod support;

use std::process::Command;

use serde_json::json;
use support::certs::{Certs, NodeCert};
use support::clients::{python_with, script};
use support::{Cluster, Server};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

const ADMIN: &str = "test-admin-key-0123456789";

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

fn pair_flags(pair: &NodeCert) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        path(&pair.cert),
        "--tls-key".into(),
        path(&pair.key),
    ]
}

/// A correctly signed, harmless internal call (a table's row count) over
/// `channel`: Ok when the node's Flight service answered it.
async fn signed_call(channel: Channel, to: &str) -> Result<(), tonic::Status> {
    let mut client = arrow_flight::flight_service_client::FlightServiceClient::new(channel);
    let mut req = tonic::Request::new(arrow_flight::Action::new(
        "table.rows",
        r#"{"table": "web"}"#,
    ));
    support::speak_protocol(&mut req);
    support::sign_call(&mut req, "DoAction", "test-secret", to);
    client.do_action(req).await.map(|_| ())
}

async fn plain_channel(addr: &str) -> Result<(), String> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    signed_call(channel, addr).await.map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_a_ca_serves_https_and_calls_flight_over_tls() {
    let certs = Certs::new();
    let ca = path(&certs.ca());
    let pairs: Vec<NodeCert> = (0..3)
        .map(|i| certs.node(&format!("n{i}"), &["127.0.0.1", "localhost"]))
        .collect();
    // One replica per partition: every write to n0 for a partition it does
    // not own, and every query on n1, crosses Flight between nodes.
    let flags = [
        "--admin-key",
        ADMIN,
        "--internal-tls",
        "--tls-ca",
        &ca,
        "--replicas",
        "1",
    ];
    let c = Cluster::start_each(3, &flags, |i| pair_flags(&pairs[i])).await;
    for node in c.running() {
        assert!(node.url.starts_with("https://"), "{}", node.url);
    }

    let events: Vec<_> = (0..300)
        .map(|i| json!({"user": format!("u{i}"), "duration_ms": i}))
        .collect();
    let (status, v) = c.node(0).ingest_json("web", &json!(events)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["accepted"], 300, "{v}");
    let (status, v) = c
        .node(1)
        .query("SELECT count(*) AS n, sum(duration_ms) AS s FROM web")
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["rows"][0][0], 300, "{v}");
    assert_eq!(v["rows"][0][1], (0..300).sum::<i64>(), "{v}");
    assert_eq!(v["stats"]["coverage"], 1.0, "{v}");

    // The dashboard over HTTPS.
    let (status, page) = c.node(2).get("/").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("<html") || page.contains("<!doctype"),
        "{page}"
    );

    // Plain HTTP on the HTTPS port, and a client that does not trust the
    // cluster's CA, get nothing.
    let http = c.node(0).url.replacen("https://", "http://", 1);
    let plain = reqwest::get(format!("{http}/healthz")).await;
    assert!(
        plain.as_ref().map_or(true, |r| r.status() != 200),
        "plain HTTP answered: {plain:?}"
    );
    let untrusting = reqwest::get(format!("{}/healthz", c.node(0).url)).await;
    let err = untrusting.expect_err("a client without the CA must not connect");
    assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");

    // Flight: a plain-text client gets no answer; the same signed call
    // over TLS with the CA is answered (so the refusal is the encryption's).
    let flight = &c.node(1).flight_addr;
    let refused = plain_channel(flight).await;
    assert!(refused.is_err(), "plain Flight answered");
    let ca_pem = std::fs::read(certs.ca()).unwrap();
    let tls = Channel::from_shared(format!("https://{flight}"))
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    signed_call(tls, flight)
        .await
        .expect("a signed call over TLS");

    // `atoll cluster status` reaches an HTTPS node with the CA and a key,
    // and says why it cannot without the CA.
    let status = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_atoll"))
            .args(["cluster", "status", "--http-addr", &c.node(2).url])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = status(&["--ca-cert", &ca, "--api-key", ADMIN]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["n0", "n1", "n2"] {
        assert!(text.contains(name), "{text}");
    }
    let out = status(&["--api-key", ADMIN]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach"), "{err}");
    let out = status(&["--ca-cert", &ca]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("401"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_sharing_one_certificate_check_it_by_name() {
    let certs = Certs::new();
    // Every node checks its peers' certificate for the name
    // `--internal-tls-name` gives, not their IP address.
    let shared = certs.self_signed("shared", &["localhost", "127.0.0.1"]);
    let mut flags = pair_flags(&shared);
    flags.extend(["--internal-tls", "--internal-tls-name", "localhost"].map(String::from));
    flags.extend(["--replicas", "1"].map(String::from));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut c = Cluster::start(2, &flags).await;
    let events: Vec<_> = (0..100).map(|i| json!({"i": i})).collect();
    let (status, v) = c.node(0).ingest_json("web", &json!(events)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(c.node(1).count("SELECT count(*) FROM web").await, 100);
    // A node checking for a name the certificate does not carry cannot
    // reach its peers' Flight service: events it must hand to their
    // partitions are refused, saying why.
    let wrong = c.launch(2, &["--internal-tls-name", "elsewhere.example"]);
    c.put(2, wrong);
    c.wait_until("every node sees every node up", |v| {
        support::up_count(v) == 3
    })
    .await;
    let (status, v) = c.node(2).ingest_json("web", &json!(events)).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["accepted"], 0, "{v}");
    let why = v["rejected"][0]["error"].as_str().unwrap();
    assert!(why.contains("quorum not reached"), "{why}");
    assert!(why.contains("certificate"), "{why}");
}

#[test]
fn unusable_certificates_stop_the_node_with_a_reason() {
    let certs = Certs::new();
    let good = certs.node("good", &["127.0.0.1"]);
    let other = certs.node("other", &["127.0.0.1"]);
    let junk = certs.dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let cases: [(Vec<String>, &str); 5] = [
        (
            vec!["--internal-tls".into()],
            "--internal-tls needs --tls-cert and --tls-key",
        ),
        (vec!["--tls-cert".into(), path(&good.cert)], "--tls-key"),
        (
            vec![
                "--tls-cert".into(),
                path(&junk),
                "--tls-key".into(),
                path(&good.key),
            ],
            "holds no PEM certificate",
        ),
        (
            vec![
                "--tls-cert".into(),
                path(&good.cert),
                "--tls-key".into(),
                path(&junk),
            ],
            "holds no PEM private key",
        ),
        (
            vec![
                "--tls-cert".into(),
                path(&good.cert),
                "--tls-key".into(),
                path(&other.key),
            ],
            "do not make a usable pair",
        ),
    ];
    for (flags, says) in cases {
        let out = support::atoll_serve(&flags.iter().map(String::as_str).collect::<Vec<_>>())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} started");
        assert!(err.contains(says), "{flags:?}: {err}");
    }
}

/// With a certificate, the SQL doors speak TLS too: psql checking the
/// node's certificate and name (`sslmode=verify-full`), and ADBC over
/// `grpc+tls://` trusting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sql_doors_speak_tls_with_the_node_certificate() {
    let certs = Certs::new();
    let pair = certs.self_signed("n0", &["127.0.0.1", "localhost"]);
    let ca = path(&pair.cert);
    let mut flags = pair_flags(&pair);
    flags.extend(["--admin-key", ADMIN].map(String::from));
    flags.extend(
        [
            "--pg-addr",
            "127.0.0.1:0",
            "--flight-sql-addr",
            "127.0.0.1:0",
        ]
        .map(String::from),
    );
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let s = Server::start(&flags);
    let (status, v) = s.ingest_json("web", &json!([{"a": 1}, {"a": 2}])).await;
    assert_eq!(status, 200, "{v}");

    let pg = s.pg_addr.clone().unwrap();
    let port = pg.rsplit_once(':').unwrap().1;
    let out = Command::new("psql")
        .arg(format!(
            "host=localhost port={port} dbname=atoll user=admin sslmode=verify-full sslrootcert={ca}"
        ))
        .args(["-X", "-A", "-t", "-c", "SELECT count(*) FROM web"])
        .env("PGPASSWORD", ADMIN)
        .output()
        .expect("psql runs (scripts/install-clients installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");

    let flight_sql = s.flight_sql_addr.clone().unwrap();
    let port = flight_sql.rsplit_once(':').unwrap().1;
    let plan = json!({
        "uri": format!("grpc+tls://localhost:{port}"), "key": ADMIN,
        "tls_root_certs": std::fs::read_to_string(&ca).unwrap(),
        "steps": [{"sql": "SELECT count(*) AS n FROM web"}],
    });
    let out = python_with(&[&script("adbc_client.py")], &plan);
    assert_eq!(out["results"][0]["rows"], json!([[2]]), "{out}");
}
