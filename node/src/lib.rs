//! One Atoll node: configuration, and the wiring of store, ingest, query,
//! dashboard and metrics behind one HTTP listener.

pub mod config;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use atoll_ingest::{IngestMetrics, IngestState};
use atoll_query::{QueryEngine, QueryMetrics, QueryState};
use atoll_store::{Store, StoreConfig};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;

pub use config::ServeArgs;
use metrics::NodeMetrics;

/// A started node: where it listens, and how to stop it.
pub struct Node {
    pub http_addr: SocketAddr,
    pub store: Arc<Store>,
    shutdown: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Node {
    /// Binds and starts serving; returns once the listener is bound.
    pub async fn start(args: &ServeArgs) -> anyhow::Result<Node> {
        let store = Arc::new(Store::new(StoreConfig {
            partitions: args.partitions,
            seal_rows: args.seal_rows,
            seal_age: args.seal_interval(),
        }));
        let registry = prometheus::Registry::new();
        let ingest = IngestState {
            store: store.clone(),
            metrics: IngestMetrics::new(&registry)?,
            max_body_bytes: args.max_body_bytes.0,
        };
        let engine = Arc::new(QueryEngine::new(store.clone(), args.query_config()));
        let query = QueryState {
            engine: engine.clone(),
            metrics: QueryMetrics::new(&registry)?,
        };
        let node_metrics = NodeMetrics::new(registry, store.clone(), engine)?;
        let app = Router::new()
            .route(
                "/healthz",
                get(|| async { Json(serde_json::json!({"status": "ok"})) }),
            )
            .merge(metrics::router(node_metrics))
            .merge(atoll_ingest::router(ingest))
            .merge(atoll_query::router(query))
            .merge(atoll_web_ui::router());
        let listener = TcpListener::bind(&args.http_addr)
            .await
            .with_context(|| format!("cannot listen for HTTP on {}", args.http_addr))?;
        let http_addr = listener.local_addr()?;
        let (shutdown, mut stopped) = tokio::sync::watch::channel(false);
        spawn_sealer(store.clone(), shutdown.subscribe());
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
        });
        Ok(Node {
            http_addr,
            store,
            shutdown,
            server,
        })
    }

    /// Stops accepting requests and waits for those under way.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.server.await??;
        Ok(())
    }
}

/// Seals append buffers that waited long enough, so that data arriving in
/// small requests still ends up in large batches.
fn spawn_sealer(store: Arc<Store>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let period = store
        .config()
        .seal_age
        .max(std::time::Duration::from_millis(50));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let s = store.clone();
                    let _ = tokio::task::spawn_blocking(move || s.seal_aged()).await;
                }
                _ = stop.changed() => return,
            }
        }
    });
}
