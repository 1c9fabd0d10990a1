//! A small web service that is itself a node of an Atoll ring.
//!
//! It serves a few API endpoints, records one event per request it serves
//! (endpoint, status, duration, user) into Atoll in process, and serves
//! `/latency`, its own p99 latency per endpoint from a query across the
//! ring — plus Atoll's dashboard and API on the same port, behind Atoll's
//! own authentication.
//!
//! Three of them as one cluster (README, "Embed Atoll in your service"):
//!
//! ```sh
//! cargo build --release -p atoll-node --example embedded_app
//! APP=target/release/examples/embedded_app
//! echo "an-admin-key-of-at-least-16-chars" > /tmp/admin.key
//! $APP --port 8080 --cluster-secret s3cret --admin-key-file /tmp/admin.key &
//! $APP --port 8090 --cluster-secret s3cret --admin-key-file /tmp/admin.key --seed 127.0.0.1:8082 &
//! $APP --port 8100 --cluster-secret s3cret --admin-key-file /tmp/admin.key --seed 127.0.0.1:8082 &
//! curl 'http://127.0.0.1:8090/api/checkout?user=u7'
//! curl http://127.0.0.1:8100/latency
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type};
use atoll_node::embed::{Client, EmbedError};
use atoll_node::{Node, NodeConfig};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use serde_json::{Value, json};

/// The application's own flags; Atoll's configuration is built from them
/// in code (`NodeConfig`), not parsed from a command line.
#[derive(Parser)]
struct Flags {
    /// The port the application serves on (127.0.0.1; 0 picks one);
    /// Atoll's internal Flight service takes the next port, its gossip the
    /// one after, unless given.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    #[arg(long)]
    flight_addr: Option<String>,
    #[arg(long)]
    gossip_addr: Option<String>,
    /// The gossip address of a running instance, to join its ring.
    #[arg(long)]
    seed: Vec<String>,
    #[arg(long)]
    cluster_secret: Option<String>,
    /// With an admin key, Atoll's routes need an API key (the application
    /// uses this one for its own writes and queries).
    #[arg(long)]
    admin_key_file: Option<PathBuf>,
    /// Keep Atoll's data (write-ahead log, ring) across restarts.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

const TABLE: &str = "requests";

#[derive(Clone)]
struct App {
    node: Arc<Node>,
    atoll: Client,
    events: tokio::sync::mpsc::Sender<Value>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let flags = Flags::parse();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", flags.port))
        .await
        .with_context(|| format!("cannot listen on port {}", flags.port))?;
    let addr = listener.local_addr()?;
    let config = NodeConfig {
        http_addr: addr.to_string(),
        node_name: Some(format!("app-{}", addr.port())),
        flight_addr: flags
            .flight_addr
            .clone()
            .unwrap_or_else(|| format!("127.0.0.1:{}", addr.port() + 1)),
        gossip_addr: flags
            .gossip_addr
            .clone()
            .unwrap_or_else(|| format!("127.0.0.1:{}", addr.port() + 2)),
        seeds: flags.seed.clone(),
        cluster_secret: flags.cluster_secret.clone(),
        admin_key_file: flags.admin_key_file.clone(),
        data_dir: flags.data_dir.clone(),
        ..NodeConfig::default()
    };
    let node = Arc::new(Node::embed(&config).await?);
    let key = match &flags.admin_key_file {
        Some(path) => Some(std::fs::read_to_string(path)?.trim().to_string()),
        None => None,
    };
    let atoll = node.client(key.as_deref())?;
    let (events, received) = tokio::sync::mpsc::channel(10_000);
    tokio::spawn(record(atoll.clone(), received));
    let app = App {
        node: node.clone(),
        atoll,
        events,
    };
    let routes = Router::new()
        .route("/api/hello", get(hello))
        .route("/api/checkout", get(checkout))
        .route("/api/users/{user}", get(user_page))
        .route("/owner/{user}", get(owner))
        .layer(axum::middleware::from_fn_with_state(app.clone(), timed))
        .route("/latency", get(latency_page))
        .route("/latency.json", get(latency_json))
        .with_state(app)
        // Atoll's dashboard and API, with its own checks, on this port.
        .merge(node.router());
    println!(
        "embedded_app {} serving on http://{addr}/ (gossip {})",
        node.name, node.gossip_addr
    );
    axum::serve(listener, routes)
        .with_graceful_shutdown(stop_signal())
        .await?;
    // Stays a member of the ring, as `atoll serve` on SIGTERM.
    node.shutdown().await
}

async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Times every request of the application's own routes and queues one
/// event for it: requests never wait for Atoll.
async fn timed(State(app): State<App>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let endpoint = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_string(),
        |p| p.as_str().to_string(),
    );
    let user = request.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("user="))
            .map(str::to_string)
    });
    let response = next.run(request).await;
    let event = json!({
        "endpoint": endpoint,
        "status": response.status().as_u16(),
        "duration_ms": started.elapsed().as_secs_f64() * 1000.0,
        "user": user,
        "served_by": app.node.name,
    });
    if app.events.try_send(event).is_err() {
        tracing::warn!("the event queue is full: an event was dropped");
    }
    response
}

/// Sends queued events in batches (up to 1,000, or every 100 ms), each
/// batch retried with its idempotency key until Atoll stores it.
async fn record(atoll: Client, mut received: tokio::sync::mpsc::Receiver<Value>) {
    let mut batch = Vec::new();
    let mut sequence = 0u64;
    let instance = uuid::Uuid::new_v4().simple().to_string();
    loop {
        let first = match received.recv().await {
            Some(e) => e,
            None => return,
        };
        batch.push(first);
        let deadline = tokio::time::sleep(Duration::from_millis(100));
        tokio::pin!(deadline);
        while batch.len() < 1_000 {
            tokio::select! {
                Some(e) = received.recv() => batch.push(e),
                _ = &mut deadline => break,
            }
        }
        sequence += 1;
        let key = format!("{instance}-{sequence}");
        let mut wait = Duration::from_millis(100);
        loop {
            match atoll.ingest_idempotent(TABLE, &batch, &key).await {
                Ok(done) if !done.quorum_failed && done.outcome.rejected.is_empty() => break,
                Ok(done) => tracing::warn!(
                    rejected = done.outcome.rejected_count(),
                    "some events were not stored; sending the batch again"
                ),
                Err(e) => tracing::warn!(error = %e, "cannot store events; retrying"),
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
        batch.clear();
    }
}

async fn hello() -> &'static str {
    "hello\n"
}

/// A slower endpoint, slower still for some users.
async fn checkout(Query(q): Query<std::collections::HashMap<String, String>>) -> Json<Value> {
    let user = q.get("user").cloned().unwrap_or_default();
    let slow = user.bytes().map(u64::from).sum::<u64>() % 5;
    tokio::time::sleep(Duration::from_millis(2 + slow * 3)).await;
    Json(json!({"user": user, "ok": true}))
}

/// A user's own page: the application's recent requests of that user, from
/// Atoll (with the SQL quoted by the application, not built from input).
async fn user_page(State(app): State<App>, Path(user): Path<String>) -> Response {
    if !user.chars().all(|c| c.is_ascii_alphanumeric()) {
        return (axum::http::StatusCode::BAD_REQUEST, "bad user\n").into_response();
    }
    let sql = format!("SELECT count(*) AS n FROM {TABLE} WHERE \"user\" = '{user}'");
    match app.atoll.query(&sql).await {
        Ok(answer) => {
            let n = answer
                .batches
                .first()
                .map_or(0, |b| b.column(0).as_primitive::<Int64Type>().value(0));
            Json(json!({"user": user, "requests": n})).into_response()
        }
        Err(e) => error_response(e),
    }
}

/// Which application servers hold a user's events (route by ownership).
async fn owner(State(app): State<App>, Path(user): Path<String>) -> Response {
    match app.node.owners(user.as_bytes()).await {
        Ok(owners) => Json(json!({
            "user": user,
            "partition": owners.partition,
            "owners": owners.replicas.iter().map(|o| json!({
                "name": o.name, "http_addr": o.http_addr, "up": o.up, "me": o.me,
            })).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => error_response(e),
    }
}

fn error_response(e: EmbedError) -> Response {
    use atoll_errors::Classified;
    let status = atoll_node::http::status(e.kind());
    (status, Json(json!({"error": e.to_string()}))).into_response()
}

/// p99 latency and requests per endpoint, across the ring.
async fn latency(app: &App) -> Result<Value, EmbedError> {
    let options = atoll_node::embed::QueryOptions {
        allow_partial: true,
        ..Default::default()
    };
    let answer = app
        .atoll
        .query_with(
            &format!(
                "SELECT endpoint, approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99_ms, count(*) AS requests FROM {TABLE} GROUP BY endpoint ORDER BY endpoint"
            ),
            options,
        )
        .await?;
    let mut rows = Vec::new();
    for b in &answer.batches {
        let endpoints = b.column(0).as_string::<i32>();
        let p99 = b.column(1).as_primitive::<Float64Type>();
        let n = b.column(2).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            rows.push(json!({
                "endpoint": endpoints.value(i),
                "p99_ms": (!p99.is_null(i)).then(|| p99.value(i)),
                "requests": n.value(i),
            }));
        }
    }
    Ok(json!({
        "node": app.node.name,
        "endpoints": rows,
        "coverage": answer.stats.coverage,
        "missing_partitions": answer.stats.missing_partitions,
    }))
}

async fn latency_json(State(app): State<App>) -> Response {
    match latency(&app).await {
        Ok(v) => Json(v).into_response(),
        // No request recorded yet: the table does not exist.
        Err(e) => error_response(e),
    }
}

async fn latency_page(State(app): State<App>) -> Response {
    let v = match latency(&app).await {
        Ok(v) => v,
        Err(e) => return error_response(e),
    };
    let rows: String = v["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            format!(
                "<tr><td>{}</td><td>{:.1}</td><td>{}</td></tr>",
                html_escape(r["endpoint"].as_str().unwrap_or("")),
                r["p99_ms"].as_f64().unwrap_or(f64::NAN),
                r["requests"]
            )
        })
        .collect();
    Html(format!(
        "<!doctype html><title>Latency</title><h1>p99 latency per endpoint</h1>\
         <p>Answered by {} from {:.0}% of the ring. <a href=\"/\">Atoll's dashboard</a></p>\
         <table><tr><th>endpoint</th><th>p99 ms</th><th>requests</th></tr>{rows}</table>",
        html_escape(v["node"].as_str().unwrap_or("")),
        v["coverage"].as_f64().unwrap_or(0.0) * 100.0
    ))
    .into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
