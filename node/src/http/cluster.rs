//! `GET /v1/cluster`: members, the ring, N and W, and what this node holds;
//! `POST /v1/cluster/leave`; and the `atoll cluster` commands' clients.

use std::collections::BTreeMap;
use std::sync::Arc;

use atoll_auth::{Caller, Need};
use atoll_cluster::handoff::Handoff;
use atoll_cluster::keys::{Stat, parse_counts};
use atoll_cluster::stats::partition_rows;
use atoll_cluster::{Hints, Membership, Replicator};
use atoll_errors::ErrorKind;
use atoll_store::Store;
use axum::Extension;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{ApiError, DoorError};

#[derive(Clone)]
pub struct ClusterState {
    pub membership: Arc<Membership>,
    pub replicator: Arc<Replicator>,
    pub store: Arc<Store>,
    pub hints: Arc<Hints>,
    pub handoff: Arc<Handoff>,
}

pub fn router(state: ClusterState) -> Router {
    Router::new()
        .route("/v1/cluster", get(cluster))
        .route("/v1/cluster/leave", axum::routing::post(leave))
        .route("/v1/cluster/writes", get(writes))
        .with_state(state)
}

/// `POST /v1/cluster/leave {"node": NAME, "force": false}`: asks the
/// claimant to take NAME out of the ring; NAME stops once a ring without it
/// is in force (at once with `force` or in a cluster without data, else
/// after its partitions are handed off).
async fn leave(
    State(st): State<ClusterState>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<axum::response::Response, ApiError> {
    caller.may(Need::Admin)?;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let body = serde_json::from_slice::<Value>(&body).unwrap_or_default();
    let force = body["force"].as_bool().unwrap_or(false);
    let Some(node) = body["node"].as_str().map(str::to_string) else {
        let usage = "the body must be {\"node\": \"NAME\", \"force\": false}";
        return Err(DoorError::new(ErrorKind::BadInput, usage).into());
    };
    if !st
        .membership
        .ring()
        .is_some_and(|r| r.members().contains(&node))
    {
        let missing = format!("node {node:?} is not in the ring");
        return Err(DoorError::new(ErrorKind::NotFound, missing).into());
    }
    st.membership.request_leave(&node, force).await;
    let reply = json!({"leaving": node, "force": force});
    Ok((StatusCode::ACCEPTED, Json(reply)).into_response())
}

/// `GET /v1/cluster/writes`: the writes this node holds, per table and
/// partition (count and digest of their ids), to compare replicas.
async fn writes(
    State(st): State<ClusterState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    caller.may(Need::Status)?;
    let tables = atoll_cluster::stats::write_digests(&st.store);
    Ok(Json(
        json!({"node": st.membership.node_name(), "tables": tables}),
    ))
}

async fn cluster(
    State(st): State<ClusterState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    caller.may(Need::Status)?;
    Ok(status(&st).await)
}

async fn status(st: &ClusterState) -> Json<Value> {
    let members = st.membership.members().await;
    let Some(ring) = st.membership.ring() else {
        return Json(json!({"node": st.membership.node_name(), "status": "joining"}));
    };
    let (n, w) = st.replicator.factors(&ring);
    let leaving = st.membership.leaving();
    let nodes: Vec<Value> = members
        .iter()
        .map(|m| {
            let stat = |k: Stat| m.stats.get(k.name()).and_then(|v| v.parse::<u64>().ok());
            json!({
                "name": m.name,
                "status": match (m.up, leaving.contains(&m.name), ring.members().contains(&m.name)) {
                    (false, _, _) => "down",
                    (true, true, _) => "leaving",
                    (true, false, true) => "up",
                    (true, false, false) => "joining",
                },
                "in_ring": ring.members().contains(&m.name),
                "http_addr": m.http_addr, "flight_addr": m.flight_addr, "gossip_addr": m.gossip_addr,
                "owned_partitions": ring.owners().iter().filter(|o| **o == m.name).count(),
                "pending_partitions": (0..ring.partitions()).filter(|&p| ring.pending_owner(p) == Some(&m.name)).count(),
                "primary_partitions": ring.partitions_of(&m.name, n).len(),
                "incomplete_partitions": m.incomplete,
                "rows": stat(Stat::Rows), "memory_bytes": stat(Stat::MemoryBytes), "hint_rows": stat(Stat::HintRows),
            })
        })
        .collect();
    // Rows of each partition on each node, as gossiped: replicas that
    // differ show divergence (or a handoff under way).
    let rows_of: BTreeMap<&str, Vec<u64>> = members
        .iter()
        .map(|m| {
            let rows = m
                .stats
                .get(Stat::PartitionRows.name())
                .map_or_else(Vec::new, |v| parse_counts(v));
            (m.name.as_str(), rows)
        })
        .collect();
    let preference: Vec<Value> = (0..ring.partitions())
        .map(|p| {
            let list = ring.preference_list(p);
            let (primaries, fallbacks) = list.split_at(n.min(list.len()));
            let pending = ring.pending_replicas(p, n);
            let replica_rows: BTreeMap<&str, Option<u64>> = primaries
                .iter()
                .chain(&pending)
                .map(|r| {
                    (
                        r.as_str(),
                        rows_of
                            .get(r.as_str())
                            .and_then(|rows| rows.get(p as usize).copied()),
                    )
                })
                .collect();
            json!({
                "partition": p, "owner": ring.owner(p), "pending_owner": ring.pending_owner(p),
                "primaries": primaries, "pending_replicas": pending, "fallbacks": fallbacks,
                "replica_rows": replica_rows,
            })
        })
        .collect();
    let handoffs: Vec<Value> = members
        .iter()
        .filter_map(|m| m.stats.get(Stat::Handoffs.name()))
        .filter_map(|v| serde_json::from_str::<Vec<Value>>(v).ok())
        .flatten()
        .collect();
    Json(json!({
        "node": st.membership.node_name(),
        "replicas": n,
        "write_quorum": w,
        "partitions": ring.partitions(),
        "epoch": ring.epoch(),
        "moving_partitions": (0..ring.partitions()).filter(|&p| ring.pending_owner(p).is_some()).count(),
        "leave_requests": leaving,
        "handoffs": handoffs,
        "nodes": nodes,
        "ring": preference,
        "local": local(st),
    }))
}

/// What this node holds, exactly (the gossiped figures lag by a second).
fn local(st: &ClusterState) -> Value {
    let per_partition: BTreeMap<u32, u64> = partition_rows(&st.store)
        .into_iter()
        .enumerate()
        .filter(|(_, rows)| *rows > 0)
        .map(|(p, rows)| (p as u32, rows))
        .collect();
    // Hints are evicted like the node's own data: per primary, the oldest
    // event time kept of each table whose hints were cut.
    let hints_kept_from: BTreeMap<String, BTreeMap<String, String>> = st
        .hints
        .stores()
        .into_iter()
        .map(|(primary, store)| {
            let cut = store
                .tables()
                .iter()
                .filter_map(|t| Some((t.name().to_string(), atoll_store::rfc3339(t.kept_from()?))))
                .collect::<BTreeMap<_, _>>();
            (primary, cut)
        })
        .filter(|(_, cut)| !cut.is_empty())
        .collect();
    json!({
        "rows": per_partition.values().sum::<u64>(),
        "partition_rows": per_partition,
        "hint_rows": st.hints.rows(),
        "hint_bytes": st.hints.memory_bytes(),
        "hints_kept_from": hints_kept_from,
    })
}

/// How `atoll cluster ...` reaches a node.
#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    /// Any node of the cluster: `host:port` (plain HTTP) or an `http://` or
    /// `https://` URL.
    #[arg(long, env = "ATOLL_HTTP_ADDR", default_value = "127.0.0.1:7070")]
    pub http_addr: String,
    /// API key (`status`: any key with the status role; `leave`: an admin
    /// key). Not needed on a node serving without keys.
    #[arg(long, env = "ATOLL_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Certificate (PEM) to trust for an `https://` node besides the
    /// system's: the cluster's CA or its self-signed certificate.
    #[arg(long, env = "ATOLL_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
}

impl Remote {
    /// A request to `path` on the node, with the key if one was given.
    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> anyhow::Result<reqwest::RequestBuilder> {
        let base = self.http_addr.trim_end_matches('/');
        let url = if base.starts_with("http://") || base.starts_with("https://") {
            format!("{base}{path}")
        } else {
            format!("http://{base}{path}")
        };
        let mut client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
        if let Some(path) = &self.ca_cert {
            let pem = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("cannot read --ca-cert {}: {e}", path.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| anyhow::anyhow!("--ca-cert {}: {e}", path.display()))?
            {
                client = client.add_root_certificate(cert);
            }
        }
        let req = client.build()?.request(method, url);
        Ok(match &self.api_key {
            Some(key) => req.bearer_auth(key),
            None => req,
        })
    }

    /// Sends `req`; the JSON answer of a 2xx, else the node's error.
    async fn call(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let res = req
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach {}: {e}", self.http_addr))?;
        let status = res.status();
        let v: Value = res.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let why = v["error"].as_str().unwrap_or("no reason given");
            anyhow::bail!("{} answered {status}: {why}", self.http_addr);
        }
        Ok(v)
    }
}

/// `atoll cluster status`: the cluster as one node sees it, for a person.
pub async fn status_text(remote: &Remote) -> anyhow::Result<String> {
    use std::fmt::Write;
    let v = remote
        .call(remote.request(reqwest::Method::GET, "/v1/cluster")?)
        .await?;
    let mut out = String::new();
    writeln!(
        out,
        "cluster: epoch {}, {} partitions ({} moving), N={} W={} (as seen by {})",
        v["epoch"],
        v["partitions"],
        v["moving_partitions"],
        v["replicas"],
        v["write_quorum"],
        v["node"].as_str().unwrap_or("?")
    )?;
    writeln!(
        out,
        "{:<16} {:<7} {:<22} {:>6} {:>8} {:>8} {:>10} {:>10} {:>8} {:>11}",
        "NODE",
        "STATUS",
        "HTTP",
        "OWNED",
        "PENDING",
        "PRIMARY",
        "ROWS",
        "MEMORY MB",
        "HINTS",
        "INCOMPLETE"
    )?;
    for n in v["nodes"].as_array().into_iter().flatten() {
        let num = |k: &str| n[k].as_u64().map_or("-".to_string(), |x| x.to_string());
        let mb = n["memory_bytes"]
            .as_u64()
            .map_or("-".to_string(), |b| format!("{:.1}", b as f64 / 1e6));
        writeln!(
            out,
            "{:<16} {:<7} {:<22} {:>6} {:>8} {:>8} {:>10} {:>10} {:>8} {:>11}",
            n["name"].as_str().unwrap_or("?"),
            n["status"].as_str().unwrap_or("?"),
            n["http_addr"].as_str().unwrap_or("-"),
            num("owned_partitions"),
            num("pending_partitions"),
            num("primary_partitions"),
            num("rows"),
            mb,
            num("hint_rows"),
            n["incomplete_partitions"].as_array().map_or(0, Vec::len),
        )?;
    }
    Ok(out)
}

/// `atoll cluster leave NODE [--force]`.
pub async fn leave_text(remote: &Remote, node: &str, force: bool) -> anyhow::Result<String> {
    let req = remote
        .request(reqwest::Method::POST, "/v1/cluster/leave")?
        .json(&json!({ "node": node, "force": force }));
    remote.call(req).await?;
    Ok(if force {
        format!("{node} is removed: the ring without it is in force at once, without handoff\n")
    } else {
        format!(
            "{node} is leaving: its partitions get pending owners; it keeps serving them until they are handed off, then stops (at once in a cluster without data)\n"
        )
    })
}
