//! One Atoll node, as the `atoll` binary and as a library.
//!
//! Owns: configuration and the CLI (`config`), the wiring of store,
//! cluster, ingest, query and dashboard behind the listeners (`Node`), the
//! doors (every HTTP handler in `http`, with the one mapping of error
//! kinds to HTTP statuses, OTLP over gRPC in `otlp_grpc`, the Postgres
//! wire protocol in `pg`, Arrow Flight SQL in `flight_sql`, the
//! in-process door of an embedding application in `embed`), the
//! write-ahead log's start-up (`durability`), the memory budget
//! (`memory`), metrics (`metrics`) and TLS (`tls`).
//!
//! Must not know: how events become Arrow (`atoll-ingest`), how SQL is
//! planned and split (`atoll-query`), or what travels between nodes
//! (`atoll-cluster`): it calls their typed APIs.

pub mod config;
pub mod durability;
pub mod embed;
pub mod flight_sql;
pub mod http;
pub mod memory;
pub mod metrics;
pub mod otlp_grpc;
pub mod pg;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use atoll_cluster::handoff::Handoff;
use atoll_cluster::service::{InternalService, service};
use atoll_cluster::{Hints, Membership, MembershipConfig, PeerClient, Replicator};
use atoll_ingest::{Ingest, IngestMetrics};
use atoll_query::engine::{ClusterHandle, Fragments};
use atoll_query::{QueryEngine, QueryMetrics};
use atoll_store::{Store, StoreConfig};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;

pub use config::ServeArgs;
use metrics::NodeMetrics;

/// A node's configuration: every flag of `atoll serve` as a field of the
/// same name; `NodeConfig::default()` is the binary's defaults (no
/// environment, no command line read).
pub type NodeConfig = ServeArgs;

/// A started node: where it listens, and how to stop it.
pub struct Node {
    pub http_addr: SocketAddr,
    /// `http://` or `https://` and the address: how clients reach the API.
    pub http_url: String,
    /// Where OTLP/gRPC is served (`--otlp-grpc-addr`), if it is.
    pub otlp_grpc_addr: Option<SocketAddr>,
    /// Where Postgres clients are served (`--pg-addr`), if they are.
    pub pg_addr: Option<SocketAddr>,
    /// Where Flight SQL clients are served (`--flight-sql-addr`), if they are.
    pub flight_sql_addr: Option<SocketAddr>,
    pub flight_addr: SocketAddr,
    pub gossip_addr: SocketAddr,
    pub name: String,
    /// Set when the secret was generated here (a founding node).
    pub generated_secret: Option<String>,
    pub store: Arc<Store>,
    membership: Arc<Membership>,
    handoff: Arc<Handoff>,
    transfer_limit: usize,
    replicas: usize,
    shutdown: tokio::sync::watch::Sender<bool>,
    /// Every HTTP door behind the guard.
    router: Router,
    doors: embed::Doors,
    /// The HTTP server, when the node serves its own listener.
    server: parking_lot::Mutex<Option<tokio::task::JoinHandle<std::io::Result<()>>>>,
}

impl Node {
    /// Binds, joins or founds the cluster, and starts serving, HTTP on
    /// its own listener (`http_addr`).
    pub async fn start(args: &ServeArgs) -> anyhow::Result<Node> {
        let listener = TcpListener::bind(&args.http_addr)
            .await
            .with_context(|| format!("cannot listen for HTTP on {}", args.http_addr))?;
        let http_addr = listener.local_addr()?;
        let node = Node::assemble(args, http_addr).await?;
        node.serve(listener, args)?;
        Ok(node)
    }

    /// Joins or founds the cluster and serves every door but HTTP: the
    /// application serves [`Node::router`] on its own listener, whose
    /// address is `http_addr` (a port, not 0: it is advertised to the
    /// other nodes and is the name the Host check accepts).
    pub async fn embed(args: &ServeArgs) -> anyhow::Result<Node> {
        let http_addr: SocketAddr = args.http_addr.parse().with_context(|| {
            format!(
                "http_addr {:?} must be the IP:PORT the application serves on",
                args.http_addr
            )
        })?;
        if http_addr.port() == 0 {
            bail!(
                "http_addr must be the port the application serves on, not 0: bind first, then pass its local address"
            );
        }
        Node::assemble(args, http_addr).await
    }

    async fn assemble(args: &ServeArgs, http_addr: SocketAddr) -> anyhow::Result<Node> {
        let (secret, generated_secret) = match (&args.cluster_secret, args.seeds.is_empty()) {
            (Some(s), _) => (s.clone(), None),
            (None, true) => {
                let s = uuid::Uuid::new_v4().simple().to_string();
                (s.clone(), Some(s))
            }
            (None, false) => bail!(
                "joining a cluster (--seed) needs its --cluster-secret (or ATOLL_CLUSTER_SECRET)"
            ),
        };
        tls::install_crypto_provider();
        let certificate = args.certificate()?;
        let internal_tls = args.internal_tls(certificate.as_ref())?;
        let budget = memory::MemoryBudget::from_args(args)?;
        tracing::info!(
            limit = %memory::mib(budget.limit),
            data = %memory::mib(budget.data() as usize),
            queries = %memory::mib(budget.queries),
            "memory limit (--memory-limit): data and running queries share it"
        );
        let otlp_grpc_listener = bind_optional(&args.otlp_grpc_addr, "OTLP/gRPC").await?;
        let pg_listener = bind_optional(&args.pg_addr, "Postgres clients").await?;
        let flight_sql_listener = bind_optional(&args.flight_sql_addr, "Flight SQL").await?;
        let mut doors = vec![http_addr];
        for l in otlp_grpc_listener
            .iter()
            .chain(&pg_listener)
            .chain(&flight_sql_listener)
        {
            doors.push(l.local_addr()?);
        }
        let auth = Arc::new(atoll_auth::Auth::new(args.admin_key(&doors)?));
        if !auth.required() && !http_addr.ip().is_loopback() {
            tracing::warn!(%http_addr, "serving WITHOUT API keys (--insecure-no-auth): anyone who reaches this port can read, write and drop everything");
        }
        let flight_listener = TcpListener::bind(&args.flight_addr)
            .await
            .with_context(|| format!("cannot listen for Flight on {}", args.flight_addr))?;
        let flight_addr = flight_listener.local_addr()?;
        let flight_advertised = args
            .flight_advertise_addr
            .as_deref()
            .map(|a| socket_addr(a, "--flight-advertise-addr"))
            .transpose()?
            .unwrap_or(flight_addr);
        let gossip_addr = socket_addr(&args.gossip_addr, "--gossip-addr")?;
        let gossip_advertise_addr = args
            .gossip_advertise_addr
            .as_deref()
            .map(|a| socket_addr(a, "--gossip-advertise-addr"))
            .transpose()?;
        let name = args
            .node_name
            .clone()
            .unwrap_or_else(|| http_addr.to_string());

        let store_config = StoreConfig {
            partitions: args.partitions,
            seal_rows: args.seal_rows,
            seal_age: args.seal_interval(),
            retention: args.retention,
            compress_after: args.compress_after.0,
            max_tables: args.max_tables,
        };
        let store = Arc::new(Store::new(store_config.clone()));
        let hints = Arc::new(Hints::new(store_config));
        let holdings = memory::Holdings::new(store.clone(), hints.clone());
        let local = Arc::new(durability::open(args, store.clone(), hints.clone())?);
        let membership = Membership::start(MembershipConfig {
            node_name: name.clone(),
            cluster_name: args.cluster_name.clone(),
            secret: secret.clone(),
            gossip_addr,
            gossip_advertise_addr,
            seeds: args.seeds.clone(),
            partitions: args.partitions,
            http_addr,
            flight_addr: flight_advertised,
            gossip_interval: Duration::from_millis(args.gossip_interval_ms),
            replicas: args.replicas,
            down_after: Duration::from_secs(10),
            generation_file: args.data_dir.as_ref().map(|d| d.join("gossip_generation")),
        })
        .await?;
        wait_for_ring(&membership).await?;
        local.publish_to(membership.clone()).await;
        let mut restarted = std::collections::BTreeSet::new();
        if membership.rejoined() && membership.cluster_holds_data() {
            // Back after a restart: whatever it recovered, it missed the
            // writes made while it was away, so it is not complete for its
            // partitions until it caught up from the other replicas.
            let ring = membership.ring().expect("joined");
            let n = ring.replicas(args.replicas);
            restarted = ring.held_by(&name, n).into_iter().collect();
            membership.mark_incomplete(restarted.iter().copied()).await;
            tracing::warn!(
                partitions = restarted.len(),
                "rejoined the ring: partitions marked incomplete until caught up"
            );
        }

        let peers = Arc::new(PeerClient::new(secret.clone(), internal_tls.as_ref()));
        let replicator = Arc::new(Replicator::new(
            membership.clone(),
            local.clone(),
            args.replicas,
            args.write_quorum,
            peers.clone(),
        ));
        let handoff = Handoff::new(
            replicator.clone(),
            hints.clone(),
            args.transfer_limit,
            restarted,
        );
        let registry = prometheus::Registry::new();
        let ingest = http::ingest::IngestState {
            ingest: Ingest {
                store: store.clone(),
                replicator: replicator.clone(),
                max_body_bytes: args.max_body_bytes.0,
                turns: Arc::new(tokio::sync::Semaphore::new(
                    args.max_concurrent_ingest.max(1),
                )),
                turn_wait: Duration::from_millis(args.ingest_queue_wait_ms),
                recent_keys: Default::default(),
            },
            metrics: IngestMetrics::new(&registry)?,
        };
        let stall = atoll_cluster::stall::StallWatch::new();
        let engine = Arc::new(
            QueryEngine::new(store.clone(), args.query_config(&budget)).with_cluster(
                ClusterHandle {
                    membership: membership.clone(),
                    replicas: args.replicas,
                    write_quorum: args.write_quorum,
                    stall: stall.clone(),
                    peers,
                    store: store.clone(),
                },
            ),
        );
        let engine_for_flight = engine.clone();
        let engine_for_pg = engine.clone();
        let query_metrics = QueryMetrics::new(&registry)?;
        let query = http::query::QueryState {
            engine: engine.clone(),
            metrics: query_metrics.clone(),
        };
        let eviction = memory::EvictionMetrics::new(&registry)?;
        registry.register(Box::new(membership.gossip_drops()))?;
        let guard = Arc::new(http::guard::Guard::new(
            auth.clone(),
            http_addr,
            &args.allowed_hosts,
            &args.allowed_origins,
            args.open_metrics,
            &registry,
        )?);
        let key_sync = atoll_cluster::api_keys::KeySync::open(
            auth.clone(),
            membership.clone(),
            args.data_dir.clone(),
        )
        .context("cannot read the API keys kept in --data-dir")?;
        let saved =
            atoll_cluster::saved::Saved::open(membership.clone(), &name, args.data_dir.clone())
                .context("cannot read the saved views kept in --data-dir")?;
        let node_metrics = NodeMetrics::new(
            registry,
            store.clone(),
            engine,
            ingest.metrics.clone(),
            (
                ingest.ingest.turns.clone(),
                args.max_concurrent_ingest.max(1),
            ),
            budget,
            local.taps.clone(),
        )?;
        local
            .taps
            .set_limit(args.max_live_sessions.saturating_mul(4));
        let cluster = http::cluster::ClusterState {
            membership: membership.clone(),
            replicator,
            store: store.clone(),
            hints: hints.clone(),
            handoff: handoff.clone(),
        };
        let wal = local.wal.clone();
        let otlp_grpc = otlp_grpc::OtlpGrpc {
            ingest: ingest.clone(),
            guard: guard.clone(),
        };
        let flight_sql = flight_sql::FlightSqlDoor::service(
            engine_for_pg.clone(),
            query_metrics.clone(),
            guard.clone(),
            store.clone(),
        )?;
        let doors = embed::Doors {
            ingest: ingest.clone(),
            query: query.clone(),
            auth: auth.clone(),
        };
        let app = Router::new()
            .route("/healthz", get(move || healthz(wal.clone())))
            .merge(metrics::router(node_metrics))
            .merge(http::cluster::router(cluster.clone()))
            .merge(http::honeycomb::router(ingest.clone()))
            .merge(http::otlp::router(ingest.clone()))
            .merge(http::ingest::router(ingest))
            .merge(http::live::router(query.clone()))
            .merge(http::query::router(query))
            .merge(http::keys::router(http::keys::KeysState {
                auth: auth.clone(),
                sync: key_sync.clone(),
            }))
            .merge(http::saved::router(saved.clone()))
            .merge(atoll_web_ui::router())
            .layer(axum::middleware::from_fn_with_state(
                guard,
                http::guard::guard,
            ));

        let (shutdown, _) = tokio::sync::watch::channel(false);
        {
            // A live view's response never ends by itself: end them all
            // when the node stops, so that the server's graceful shutdown
            // does not wait for them.
            let engine = engine_for_pg.clone();
            let mut stopping = shutdown.subscribe();
            tokio::spawn(async move {
                let _ = stopping.changed().await;
                engine.stop_live();
            });
        }
        spawn_sealer(holdings.clone(), shutdown.subscribe());
        stall.spawn(membership.clone(), args.replicas, shutdown.subscribe());
        durability::spawn_checkpoints(local.clone(), shutdown.subscribe());
        handoff.spawn(shutdown.subscribe());
        key_sync.catch_up(Duration::from_secs(10)).await;
        key_sync.spawn(shutdown.subscribe());
        saved.spawn(shutdown.subscribe());
        memory::Evictor::new(holdings, membership.clone(), budget, eviction)
            .spawn(shutdown.subscribe());
        atoll_cluster::schemas::spawn(
            cluster.replicator.clone(),
            store.clone(),
            shutdown.subscribe(),
        );
        atoll_cluster::stats::spawn(
            membership.clone(),
            store.clone(),
            hints.clone(),
            handoff.clone(),
            shutdown.subscribe(),
        );
        let flight = service(
            InternalService {
                local,
                fragments: Arc::new(Fragments(engine_for_flight.clone())),
                live: Arc::new(atoll_query::live::Subscriptions(engine_for_flight)),
                fragment_outcomes: query_metrics.fragments.clone(),
            },
            secret,
            flight_advertised.to_string(),
        );
        let flight_tls = match (&internal_tls, &certificate) {
            (Some(_), Some(cert)) => Some(cert.https()?),
            _ => None,
        };
        serve_grpc(
            tonic::transport::Server::builder().add_service(flight),
            flight_listener,
            flight_tls,
            shutdown.subscribe(),
            "Flight",
        )?;
        let otlp_grpc_addr = match otlp_grpc_listener {
            Some(listener) => {
                let bound = listener.local_addr()?;
                let tls = certificate.as_ref().map(|c| c.https()).transpose()?;
                let (traces, logs) = otlp_grpc.services();
                // Few streams per connection: each may carry a message of
                // up to --max-body-bytes.
                let router = tonic::transport::Server::builder()
                    .max_concurrent_streams(Some(4))
                    .concurrency_limit_per_connection(4)
                    .add_service(traces)
                    .add_service(logs);
                serve_grpc(router, listener, tls, shutdown.subscribe(), "OTLP/gRPC")?;
                Some(bound)
            }
            None => None,
        };
        let flight_sql_addr = match flight_sql_listener {
            Some(listener) => {
                let bound = listener.local_addr()?;
                let tls = certificate.as_ref().map(|c| c.https()).transpose()?;
                let router = tonic::transport::Server::builder().add_service(flight_sql);
                serve_grpc(router, listener, tls, shutdown.subscribe(), "Flight SQL")?;
                Some(bound)
            }
            None => None,
        };
        let pg_addr = match pg_listener {
            Some(listener) => {
                let bound = listener.local_addr()?;
                let tls = certificate.as_ref().map(|c| c.postgres()).transpose()?;
                pg::PgDoor::new(engine_for_pg, query_metrics.clone(), auth.clone(), tls)
                    .serve(listener, shutdown.subscribe());
                Some(bound)
            }
            None => None,
        };
        let scheme = if certificate.is_some() {
            "https"
        } else {
            "http"
        };
        Ok(Node {
            http_addr,
            http_url: format!("{scheme}://{http_addr}"),
            otlp_grpc_addr,
            pg_addr,
            flight_sql_addr,
            flight_addr,
            gossip_addr: membership.gossip_addr(),
            name,
            generated_secret,
            store,
            membership,
            handoff,
            transfer_limit: args.transfer_limit,
            replicas: args.replicas,
            shutdown,
            router: app,
            doors,
            server: parking_lot::Mutex::new(None),
        })
    }

    /// Serves the HTTP doors on `listener` (over TLS with a certificate)
    /// until the node stops.
    fn serve(&self, listener: TcpListener, args: &ServeArgs) -> anyhow::Result<()> {
        let mut http_stop = self.shutdown.subscribe();
        let stop = async move {
            let _ = http_stop.wait_for(|s| *s).await;
        };
        let app = self.router.clone();
        let server = match args.certificate()? {
            Some(cert) => {
                let listener = tls::TlsListener::new(listener, cert.https()?)?;
                let serving = axum::serve(listener, app).with_graceful_shutdown(stop);
                tokio::spawn(async move { serving.await })
            }
            None => {
                // No Nagle: an answer streamed in pieces (Arrow) must not
                // wait for the client's delayed ACK (40 ms a query).
                use axum::serve::ListenerExt;
                let listener = listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                let serving = axum::serve(listener, app).with_graceful_shutdown(stop);
                tokio::spawn(async move { serving.await })
            }
        };
        *self.server.lock() = Some(server);
        Ok(())
    }

    /// Every HTTP door (the dashboard, `/v1`, Honeycomb's and OTLP's
    /// routes, `/metrics`, `/healthz`) behind the node's guard (API keys,
    /// roles, Host and Origin checks, limits, metrics), to merge into an
    /// application's router.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// The in-process door, acting with `key` (None: no key), refused as
    /// an HTTP request with that key would be.
    pub fn client(&self, key: Option<&str>) -> Result<embed::Client, embed::EmbedError> {
        self.doors.client(key)
    }

    /// Which nodes hold the events whose partition key value is `key` (its
    /// text): the partition and its replicas, in the ring's order.
    pub async fn owners(&self, key: &[u8]) -> Result<embed::Owners, embed::EmbedError> {
        let ring = self
            .membership
            .ring()
            .ok_or_else(|| embed::EmbedError::NotReady("this node has no ring yet".into()))?;
        let members = self.membership.members().await;
        Ok(embed::Owners::of(
            &ring,
            self.replicas,
            &members,
            &self.name,
            key,
        ))
    }

    /// Asks the ring to take this node out (as `atoll cluster leave`);
    /// [`Node::left`] resolves once it is out and has handed its data on.
    pub async fn leave(&self) {
        self.membership.request_leave(&self.name, false).await;
    }

    /// Resolves once this node has been taken out of the ring and has
    /// handed what it still held to the new replicas (writes routed with
    /// the ring before the move may have reached it late). It waits at
    /// most `HAND_BACK_WAIT` for that, and not at all when handoff is
    /// paused.
    pub async fn left(&self) {
        while !self.membership.has_left() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if self.transfer_limit == 0 {
            return;
        }
        let handed = async {
            while !self.handoff.handed_back() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        if tokio::time::timeout(HAND_BACK_WAIT, handed).await.is_err() {
            tracing::warn!("left the ring, but could not hand over every row it held");
        }
    }

    /// Stops accepting requests and waits for those under way, as
    /// `SIGTERM` does: the node stays a member of the ring (the other
    /// replicas serve its partitions until it is back).
    pub async fn shutdown(&self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.membership.shutdown().await;
        let server = self.server.lock().take();
        if let Some(server) = server {
            server.await??;
        }
        Ok(())
    }
}

/// Healthy unless the write-ahead log fails (a full or failing disk):
/// then 503 saying why, while the node serves reads and refuses writes
/// until the log works again.
async fn healthz(wal: Option<Arc<atoll_store::wal::Wal>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match wal.and_then(|w| w.failure()) {
        None => Json(serde_json::json!({"status": "ok"})).into_response(),
        Some(why) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "unhealthy", "reason": why})),
        )
            .into_response(),
    }
}

/// How long a node that left waits to hand over its last rows.
const HAND_BACK_WAIT: Duration = Duration::from_secs(30);

/// A gossip or Flight address given as a flag. (A gossip address with
/// port 0: membership binds a port the system picks, and advertises it.)
fn socket_addr(addr: &str, flag: &str) -> anyhow::Result<SocketAddr> {
    addr.parse()
        .with_context(|| format!("{flag} {addr:?} is not IP:PORT"))
}

/// Waits until the claimant put this node in the ring, or a peer showed the
/// cluster cannot take it.
/// The listener of an optional door, when its address is given.
async fn bind_optional(addr: &Option<String>, what: &str) -> anyhow::Result<Option<TcpListener>> {
    match addr {
        Some(addr) => {
            Ok(Some(TcpListener::bind(addr).await.with_context(|| {
                format!("cannot listen for {what} on {addr}")
            })?))
        }
        None => Ok(None),
    }
}

/// Serves a gRPC router on `listener` until the node stops: over TLS
/// (`tls::TlsListener`: handshakes bounded in time and number) when `tls`
/// is given.
fn serve_grpc(
    router: tonic::transport::server::Router,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    what: &'static str,
) -> std::io::Result<()> {
    let stop = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let report = move |result: Result<(), tonic::transport::Error>| {
        if let Err(e) = result {
            tracing::error!(error = %e, "the {what} service stopped");
        }
    };
    match tls {
        Some(config) => {
            let incoming = tls::TlsListener::new(listener, config)?.into_stream();
            tokio::spawn(async move {
                report(router.serve_with_incoming_shutdown(incoming, stop).await)
            });
        }
        None => {
            // Without TCP_NODELAY, a fragment's small last messages wait
            // for the peer's delayed ACK: ~40 ms on every distributed query.
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            tokio::spawn(async move {
                report(router.serve_with_incoming_shutdown(incoming, stop).await)
            });
        }
    }
    Ok(())
}

async fn wait_for_ring(membership: &Membership) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(conflict) = membership.conflict() {
            bail!("refused to join the cluster: {conflict}");
        }
        if membership.ring().is_some() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "no ring was received from the seeds within 30 s: are they up, and is the cluster secret right?"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Hands memory freed by merged batches back to the system. glibc's
/// allocator keeps freed pages of its arenas, so without this the batches
/// merged away stayed resident: 5M events took 838 MB after compaction
/// against 713 MB without it.
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Seals append buffers that waited long enough, so that data arriving in
/// small requests still ends up in large batches.
fn spawn_sealer(holdings: memory::Holdings, mut stop: tokio::sync::watch::Receiver<bool>) {
    let period = holdings
        .own()
        .config()
        .seal_age
        .max(Duration::from_millis(50));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let h = holdings.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        if h.seal_aged() > 0 {
                            release_free_memory();
                        }
                    })
                    .await;
                }
                _ = stop.changed() => return,
            }
        }
    });
}
