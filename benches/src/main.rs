//! `atoll-bench`: ingest rate, memory and Q1–Q8 latency of a real `atoll`
//! node, side by side with plain in-process DataFusion over the same events
//! in a MemTable, in one run. See docs/benchmarks.md.

use std::collections::HashMap;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

mod live_views;
mod peers;
mod sql_doors;
mod svg;
mod under_load;

use anyhow::{Context, Result, bail};
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Fields, Schema, TimeUnit};
use atoll_benches::doors::{self, Door};
use clap::Parser;
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(about = "Atoll beside in-process DataFusion: ingest, memory, Q1-Q8")]
struct Args {
    /// Events to generate with ../shared/bench/gen_events.py.
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    /// Read events from this NDJSON file instead of generating them.
    #[arg(long)]
    events: Option<PathBuf>,
    /// The atoll binary (default: the one built beside this program).
    #[arg(long)]
    atoll: Option<PathBuf>,
    /// Timed runs per query, after one warm-up.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Events per ingest request.
    #[arg(long, default_value_t = 5_000)]
    request_events: usize,
    /// Concurrent ingest clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Also run on a local cluster of this many nodes (0: skip), once per
    /// replica count in `--cluster-replicas`.
    #[arg(long, default_value_t = 3)]
    cluster_nodes: usize,
    /// Replica counts (N) of the cluster runs; N=1 spreads every query over
    /// all nodes, N=3 puts every partition on every node.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    cluster_replicas: Vec<usize>,
    /// Skip the peers (by default installed with pip into a virtualenv
    /// under `--out`, each skipped with a message if that fails).
    #[arg(long, alias = "no-duckdb")]
    no_peers: bool,
    /// The peers to run beside Atoll: duckdb, chdb (ClickHouse), polars,
    /// datafusion (the pip wheel, fully optimized).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "duckdb,chdb,polars,datafusion"
    )]
    peers: Vec<String>,
    /// Give every node a fresh data directory under this one (persistence
    /// on: the write-ahead log's cost shows in the ingest figures).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The nodes' `--fsync` policy, with `--data-dir`.
    #[arg(long, default_value = "always")]
    fsync: String,
    /// Every node's `--memory-limit`: stated, so that figures do not
    /// depend on the machine's memory (the node's default is half of it),
    /// and large enough that no benchmark evicts.
    #[arg(long, default_value = "4GiB")]
    memory_limit: String,
    /// A flag for every node started (repeatable), e.g.
    /// `--node-arg=--compress-after=never`.
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    node_args: Vec<String>,
}

/// `--memory-limit` and `--node-arg` of the run.
static NODE_ARGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// Time for the sealing passes after a load (sealing, compaction, packing
/// of cold batches) before memory is read.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(3);

/// `--data-dir` and `--fsync` of the run, for every node started.
static PERSISTENCE: std::sync::OnceLock<(PathBuf, String)> = std::sync::OnceLock::new();

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    NODE_ARGS.get_or_init(|| {
        let limit = ["--memory-limit".to_string(), args.memory_limit.clone()];
        limit.into_iter().chain(args.node_args.clone()).collect()
    });
    if let Some(dir) = &args.data_dir {
        PERSISTENCE.get_or_init(|| (dir.clone(), args.fsync.clone()));
    }
    std::fs::create_dir_all(&args.out)?;
    let events = match &args.events {
        Some(p) => p.clone(),
        None => generate(args.rows, &args.out)?,
    };
    let raw = std::fs::read(&events)?;
    let lines: Vec<&[u8]> = raw
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let queries = load_queries()?;
    let atoll_bin = args.atoll.clone().unwrap_or_else(|| sibling("atoll"));
    eprintln!(
        "{} events, {:.1} MB NDJSON, atoll at {}",
        lines.len(),
        raw.len() as f64 / 1e6,
        atoll_bin.display()
    );

    // Atoll: the events as NDJSON requests from several clients, then the
    // queries; then the same requests gzip-compressed into a fresh node.
    let bodies = chunks(&lines, usize::MAX, args.request_events);
    let counts: Vec<usize> = bodies
        .iter()
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .collect();
    let sql_doors = [
        "--pg-addr",
        "127.0.0.1:0",
        "--flight-sql-addr",
        "127.0.0.1:0",
    ];
    let node = Node::start_with(&atoll_bin, &sql_doors)?;
    let plain = ingest(&node.url, &bodies, &counts, args.clients, Door::Native).await?;
    tokio::time::sleep(SETTLE).await;
    let (rss, hwm) = node.memory()?;
    let mut atoll_q = Vec::new();
    for (tag, sql) in &queries {
        atoll_q.push((tag.clone(), time_atoll(&node.url, sql, args.runs).await?));
    }
    let door_times = sql_doors::time_doors(
        &node.url,
        node.flight_sql_addr
            .as_deref()
            .context("no Flight SQL address")?,
        node.pg_addr.as_deref().context("no Postgres address")?,
        &queries,
        args.runs,
    )
    .await?;
    drop(node);
    let gzipped = bodies.iter().map(|b| gzip(b)).collect::<Result<Vec<_>>>()?;
    let node = Node::start(&atoll_bin)?;
    let gz = ingest(&node.url, &gzipped, &counts, args.clients, Door::NativeGzip).await?;
    tokio::time::sleep(SETTLE).await;
    let (gz_rss, _) = node.memory()?;
    drop(node);
    // The other doors, each into a fresh node: Honeycomb batches and OTLP
    // spans of the same events.
    let honeycomb = doors::honeycomb_bodies(&bodies);
    let otlp = doors::otlp_bodies(&bodies)?;
    let mut door_rates = Vec::new();
    for (door, door_bodies) in [(Door::Honeycomb, &honeycomb), (Door::Otlp, &otlp)] {
        let node = Node::start(&atoll_bin)?;
        door_rates.push(ingest(&node.url, door_bodies, &counts, args.clients, door).await?);
    }

    // The queries right after a bulk load, then while ingest goes on at
    // half the rate the node reached above.
    let node = Node::start(&atoll_bin)?;
    ingest(&node.url, &bodies, &counts, args.clients, Door::Native).await?;
    let after_load = under_load::timings(&node.url, &queries, args.runs).await?;
    let half = plain["events_per_s"].as_f64().unwrap_or(0.0) / 2.0;
    let (under_ingest, steady) = under_load::while_ingesting(
        &node.url,
        &bodies,
        &counts,
        half.max(1.0),
        &queries,
        args.runs,
    )
    .await?;
    drop(node);

    // Ingest while 0, 1 and 10 live views follow the table.
    let first: Vec<u8> = lines
        .first()
        .map(|l| [l, &b"\n"[..]].concat())
        .unwrap_or_default();
    let mut live_rates = Vec::new();
    for views in [0usize, 1, 10] {
        let node = Node::start(&atoll_bin)?;
        let open = live_views::Views::open(&node.url, &first, views).await?;
        let mut rate = ingest(&node.url, &bodies, &counts, args.clients, Door::Native).await?;
        rate["live_views"] = json!(views);
        rate["updates_read"] = json!(open.close());
        live_rates.push(rate);
    }

    // The same on local clusters, entering and asking through the first node.
    let mut clusters = Vec::new();
    for &n in args
        .cluster_replicas
        .iter()
        .filter(|_| args.cluster_nodes > 1)
    {
        let cluster = LocalCluster::start(&atoll_bin, args.cluster_nodes, n).await?;
        let url = cluster.nodes[0].url.clone();
        let native = ingest(&url, &bodies, &counts, args.clients, Door::Native).await?;
        tokio::time::sleep(SETTLE).await;
        let rss: Vec<(u64, u64)> = cluster
            .nodes
            .iter()
            .map(|n| n.memory().unwrap_or((0, 0)))
            .collect();
        let mut q = Vec::new();
        for (tag, sql) in &queries {
            q.push((tag.clone(), time_atoll(&url, sql, args.runs).await?));
        }
        clusters.push((
            format!("{} nodes N={n}", args.cluster_nodes),
            native,
            rss,
            q,
        ));
        drop(cluster);
        if n == args.cluster_replicas.iter().copied().max().unwrap_or(n) {
            for (door, door_bodies) in [(Door::Honeycomb, &honeycomb), (Door::Otlp, &otlp)] {
                let cluster = LocalCluster::start(&atoll_bin, args.cluster_nodes, n).await?;
                let url = cluster.nodes[0].url.clone();
                let mut rate = ingest(&url, door_bodies, &counts, args.clients, door).await?;
                rate["cluster"] = json!(format!("{} nodes N={n}", args.cluster_nodes));
                door_rates.push(rate);
            }
        }
    }

    // Plain DataFusion over the same events in a MemTable.
    let (ctx, df_load, df_bytes) = datafusion_memtable(&events).await?;
    let mut df_q = Vec::new();
    for (tag, sql) in &queries {
        df_q.push((tag.clone(), time_datafusion(&ctx, sql, args.runs).await?));
    }
    let peer_runs = if args.no_peers {
        Vec::new()
    } else {
        peers::run(&args.out, &events, args.runs, &args.peers)?
    };
    // Exact queries must give DataFusion's answers; approximate ones are
    // checked against exact answers (DataFusion's percentile_cont and
    // count(DISTINCT)), since two sketches merged in another order may
    // differ from each other by more than either differs from the truth.
    let exact = exact_answers(&ctx, &queries).await?;
    let mut mismatches = Vec::new();
    let judge = |name: &str, q: &[(String, Timing)]| {
        let mut out = compare(q, &df_q);
        out.extend(check_approximate(q, &exact));
        out.into_iter()
            .map(|m| format!("{name}: {m}"))
            .collect::<Vec<_>>()
    };
    mismatches.extend(judge("DataFusion", &df_q));
    mismatches.extend(judge("Atoll", &atoll_q));
    for (name, _, _, q) in &clusters {
        mismatches.extend(judge(name, q));
    }
    // The peers' sketches are other algorithms (DuckDB's
    // approx_count_distinct errs by several %; polars answers exactly):
    // their approximate answers are reported, their exact ones must agree.
    let mut peer_approx = Vec::new();
    for p in &peer_runs {
        let name = peers::name(p);
        mismatches.extend(
            compare(&p.1, &df_q)
                .into_iter()
                .map(|m| format!("{name}: {m}")),
        );
        peer_approx.push(check_approximate(&p.1, &exact));
    }

    let report = json!({
        "events": lines.len(), "ndjson_bytes": raw.len(),
        "atoll": {
            "ingest_plain": plain, "ingest_gzip": gz, "ingest_doors": door_rates, "ingest_live": live_rates,
            "queries_after_load": after_load.iter().map(|(t, r)| json!({"query": t, "median_ms": r.median_ms})).collect::<Vec<_>>(),
            "queries_under_ingest": under_ingest.iter().map(|(t, r)| json!({"query": t, "median_ms": r.median_ms})).collect::<Vec<_>>(),
            "steady_ingest_events_per_s": steady,
            "rss_after_load_bytes": rss, "peak_rss_bytes": hwm, "rss_after_gzip_load_bytes": gz_rss,
            "queries": atoll_q.iter().map(|(t, r)| json!({"query": t, "median_ms": r.median_ms, "max_ms": r.max_ms, "engine_ms": r.engine_ms})).collect::<Vec<_>>(),
        },
        "datafusion": {
            "load_seconds": df_load, "arrow_bytes": df_bytes,
            "queries": df_q.iter().map(|(t, r)| json!({"query": t, "median_ms": r.median_ms, "max_ms": r.max_ms})).collect::<Vec<_>>(),
        },
        "peers": peer_runs.iter().zip(&peer_approx).map(|((info, q), approx)| json!({
            "engine": info["engine"], "version": info["version"], "load_seconds": info["load_seconds"],
            "approximate_answers_off_by_more_than_2_percent": approx,
            "queries": q.iter().map(|(t, r)| json!({"query": t, "median_ms": r.median_ms, "max_ms": r.max_ms})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "clusters": clusters.iter().map(|(name, ingest, rss, q)| json!({
            "cluster": name, "ingest_plain": ingest,
            "rss_after_load_bytes_all_nodes": rss.iter().map(|m| m.0).sum::<u64>(),
            "rss_after_load_bytes_per_node": rss.iter().map(|m| m.0).collect::<Vec<_>>(),
            "peak_rss_bytes_per_node": rss.iter().map(|m| m.1).collect::<Vec<_>>(),
            "queries": q.iter().map(|(t, r)| json!({"query": t, "median_ms": r.median_ms, "max_ms": r.max_ms, "engine_ms": r.engine_ms})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "sql_doors": sql_doors::report(&door_times),
        "mismatches": mismatches,
    });
    let path = args
        .out
        .join(format!("atoll-vs-datafusion-{}.json", lines.len()));
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    print_table(&report, &atoll_q, &df_q);
    if !peer_runs.is_empty() {
        peers::print(&peer_runs, &atoll_q);
        for (p, approx) in peer_runs.iter().zip(&peer_approx) {
            for m in approx {
                println!(
                    "{}'s answer is off the exact one by more than 2%: {m}",
                    peers::name(p)
                );
            }
        }
    }
    let picture = args.out.join(format!("atoll-vs-peers-{}.svg", lines.len()));
    std::fs::write(&picture, picture_of(&report, &atoll_q, &df_q, &peer_runs))?;
    eprintln!("chart: {}", picture.display());
    print_clusters(&clusters, &atoll_q, &df_q);
    print_doors(&report);
    print_live(&report);
    print_under_load(&atoll_q, &after_load, &under_ingest, steady);
    eprintln!("report: {}", path.display());
    if !report["mismatches"].as_array().unwrap().is_empty() {
        bail!(
            "answers differ between Atoll and DataFusion: {}",
            report["mismatches"]
        );
    }
    Ok(())
}

fn sibling(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    exe.parent().expect("a folder").join(name)
}

fn shared_bench() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/bench")
}

fn generate(rows: usize, out: &Path) -> Result<PathBuf> {
    let path = out.join(format!("events-{rows}.ndjson"));
    if !path.exists() {
        eprintln!("generating {rows} events...");
        // Written aside and renamed, so that an interrupted run never
        // leaves a short file that later runs would take as complete.
        let partial = path.with_extension("ndjson.partial");
        let status = Command::new("python3")
            .arg(shared_bench().join("gen_events.py"))
            .args(["--rows", &rows.to_string(), "--out"])
            .arg(&partial)
            .status()?;
        if !status.success() {
            bail!("gen_events.py failed");
        }
        std::fs::rename(&partial, &path)?;
    }
    Ok(path)
}

/// `(tag, sql)` of every query in the shared queries.sql.
fn load_queries() -> Result<Vec<(String, String)>> {
    let text =
        std::fs::read_to_string(shared_bench().join("queries.sql")).context("queries.sql")?;
    let mut out = Vec::new();
    let mut tag = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("-- Q") {
            tag = Some(format!("Q{}", rest.split(':').next().unwrap_or("")));
        } else if let Some(t) = tag.take() {
            out.push((t, line.trim().trim_end_matches(';').to_string()));
        }
    }
    Ok(out)
}

struct Node {
    child: Child,
    url: String,
    gossip_addr: String,
    /// The SQL doors, when asked for (`--pg-addr`, `--flight-sql-addr`).
    pg_addr: Option<String>,
    flight_sql_addr: Option<String>,
}

impl Node {
    fn start(bin: &Path) -> Result<Node> {
        Node::start_with(bin, &[])
    }

    /// `atoll serve` on ports the system picks, learnt from its
    /// `--ready-file`.
    fn start_with(bin: &Path, extra: &[&str]) -> Result<Node> {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut persistence = Vec::new();
        if let Some((root, fsync)) = PERSISTENCE.get() {
            let dir = root.join(format!("node-{n}"));
            let _ = std::fs::remove_dir_all(&dir);
            persistence = vec![
                "--data-dir".to_string(),
                dir.display().to_string(),
                "--fsync".to_string(),
                fsync.clone(),
            ];
        }
        let ready =
            std::env::temp_dir().join(format!("atoll-bench-ready-{}-{n}.json", std::process::id()));
        let _ = std::fs::remove_file(&ready);
        let mut child = Command::new(bin)
            .args([
                "serve",
                "--http-addr",
                "127.0.0.1:0",
                "--flight-addr",
                "127.0.0.1:0",
                "--gossip-addr",
                "127.0.0.1:0",
            ])
            .args(["--log", "warn"])
            .args(&persistence)
            .args(NODE_ARGS.get().map(Vec::as_slice).unwrap_or_default())
            .args(extra)
            .arg("--ready-file")
            .arg(&ready)
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let started = Instant::now();
        let said: Value = loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                let _ = std::fs::remove_file(&ready);
                break serde_json::from_str(&text)?;
            }
            if let Some(status) = child.try_wait()? {
                bail!("{} exited with {status} before it was ready", bin.display());
            }
            if started.elapsed() > std::time::Duration::from_secs(60) {
                bail!("{} wrote no ready file within 60 s", bin.display());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let addr = |key: &str| {
            said[key]
                .as_str()
                .map(str::to_string)
                .with_context(|| format!("no {key} in the ready file"))
        };
        Ok(Node {
            child,
            url: format!("http://{}", addr("http_addr")?),
            gossip_addr: addr("gossip_addr")?,
            pg_addr: addr("pg_addr").ok(),
            flight_sql_addr: addr("flight_sql_addr").ok(),
        })
    }

    /// Resident and peak resident memory, in bytes.
    fn memory(&self) -> Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kb = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        };
        Ok((
            kb("VmRSS:").unwrap_or(0) * 1024,
            kb("VmHWM:").unwrap_or(0) * 1024,
        ))
    }
}

/// Nodes on 127.0.0.1 forming one cluster, seeded by the first.
struct LocalCluster {
    nodes: Vec<Node>,
}

impl LocalCluster {
    async fn start(bin: &Path, count: usize, replicas: usize) -> Result<LocalCluster> {
        let name = format!("bench-{}-{replicas}", std::process::id());
        let replicas = replicas.to_string();
        let mut nodes: Vec<Node> = Vec::new();
        for i in 0..count {
            let node_name = format!("b{i}");
            let mut extra = vec![
                "--node-name",
                &node_name,
                "--cluster-name",
                &name,
                "--cluster-secret",
                "bench",
                "--replicas",
                &replicas,
            ];
            let seed = nodes.first().map(|n| n.gossip_addr.clone());
            if let Some(seed) = &seed {
                extra.extend(["--seed", seed]);
            }
            let node = Node::start_with(bin, &extra)?;
            nodes.push(node);
        }
        let cluster = LocalCluster { nodes };
        cluster.wait_formed(count).await?;
        Ok(cluster)
    }

    /// Until every node sees every node up and owning partitions.
    async fn wait_formed(&self, count: usize) -> Result<()> {
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let mut formed = true;
            for n in &self.nodes {
                let v: Value = client
                    .get(format!("{}/v1/cluster", n.url))
                    .send()
                    .await?
                    .json()
                    .await?;
                let ready = v["nodes"].as_array().map_or(0, |ns| {
                    ns.iter()
                        .filter(|m| m["status"] == "up" && m["owned_partitions"].as_u64() > Some(0))
                        .count()
                });
                formed &= ready == count;
            }
            if formed {
                return Ok(());
            }
            if started.elapsed().as_secs() > 60 {
                bail!("the local cluster did not form within a minute");
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// NDJSON bodies of at most `max_bytes` bytes and `max_events` events.
fn chunks(lines: &[&[u8]], max_bytes: usize, max_events: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut n = 0;
    for l in lines {
        if !cur.is_empty() && (cur.len() + l.len() + 1 > max_bytes || n == max_events) {
            out.push(std::mem::take(&mut cur));
            n = 0;
        }
        cur.extend_from_slice(l);
        cur.push(b'\n');
        n += 1;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn gzip(body: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(body)?;
    Ok(encoder.finish()?)
}

/// Sends the bodies through `door` from `clients` concurrent clients;
/// events/s counts stored events, MB/s the bytes sent (compressed, for
/// gzip). `events[i]`: the events of body i.
async fn ingest(
    url: &str,
    bodies: &[Vec<u8>],
    events: &[usize],
    clients: usize,
    door: Door,
) -> Result<Value> {
    let client = reqwest::Client::new();
    let bodies: Arc<Vec<(Vec<u8>, usize)>> =
        Arc::new(bodies.iter().cloned().zip(events.iter().copied()).collect());
    let bytes: usize = bodies.iter().map(|b| b.0.len()).sum();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (path, content_type) = door.target();
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (client, bodies, next, url) = (
                client.clone(),
                bodies.clone(),
                next.clone(),
                url.to_string(),
            );
            tokio::spawn(async move {
                let mut accepted = 0u64;
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((body, sent)) = bodies.get(i) else {
                        return Ok::<_, anyhow::Error>(accepted);
                    };
                    let mut request = client
                        .post(format!("{url}{path}"))
                        .header("content-type", content_type);
                    if door == Door::NativeGzip {
                        request = request.header("content-encoding", "gzip");
                    }
                    let res = request.body(body.clone()).send().await?;
                    accepted += door.accepted(&res.bytes().await?, *sent)?;
                }
            })
        })
        .collect();
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(json!({
        "door": door.name(), "requests": bodies.len(), "clients": clients, "gzip": door == Door::NativeGzip,
        "accepted": accepted, "seconds": secs,
        "events_per_s": accepted as f64 / secs, "mb_per_s": bytes as f64 / 1e6 / secs,
    }))
}

struct Timing {
    median_ms: f64,
    max_ms: f64,
    engine_ms: f64,
    rows: Vec<Vec<Value>>,
}

fn summarize(mut wall: Vec<f64>, mut engine: Vec<f64>, rows: Vec<Vec<Value>>) -> Timing {
    wall.sort_by(f64::total_cmp);
    engine.sort_by(f64::total_cmp);
    let median = |v: &[f64]| {
        if v.is_empty() {
            f64::NAN
        } else {
            v[v.len() / 2]
        }
    };
    Timing {
        median_ms: median(&wall),
        max_ms: *wall.last().unwrap_or(&f64::NAN),
        engine_ms: median(&engine),
        rows,
    }
}

async fn time_atoll(url: &str, sql: &str, runs: usize) -> Result<Timing> {
    let client = reqwest::Client::new();
    let (mut wall, mut engine, mut rows) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..=runs {
        let t = Instant::now();
        let res = client
            .post(format!("{url}/v1/query"))
            .json(&json!({"sql": sql}))
            .send()
            .await?;
        let v: Value = res.json().await?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if let Some(e) = v.get("error") {
            bail!("{sql}: {e}");
        }
        if run > 0 {
            wall.push(ms);
            engine.push(v["stats"]["elapsed_ms"].as_f64().unwrap_or(f64::NAN));
        }
        rows = serde_json::from_value(v["rows"].clone())?;
    }
    Ok(summarize(wall, engine, rows))
}

async fn time_datafusion(ctx: &SessionContext, sql: &str, runs: usize) -> Result<Timing> {
    let (mut wall, mut rows) = (Vec::new(), Vec::new());
    for run in 0..=runs {
        let t = Instant::now();
        let batches = ctx.sql(sql).await?.collect().await?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        if run > 0 {
            wall.push(ms);
        }
        rows.clear();
        for b in &batches {
            atoll_query::render::append_rows(b, &mut rows);
        }
    }
    Ok(summarize(wall.clone(), wall, rows))
}

/// The events as DataFusion reads them with an explicit schema (nested
/// `client` stays a struct: no query here uses it).
async fn datafusion_memtable(path: &Path) -> Result<(SessionContext, f64, usize)> {
    let utf8 = |n: &str| Field::new(n, DataType::Utf8, true);
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        utf8("service"),
        utf8("endpoint"),
        utf8("region"),
        utf8("host"),
        Field::new("status", DataType::Int64, true),
        Field::new("duration_ms", DataType::Float64, true),
        Field::new("bytes", DataType::Int64, true),
        utf8("user_id"),
        Field::new("is_mobile", DataType::Boolean, true),
        Field::new(
            "tags",
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            true,
        ),
        Field::new(
            "client",
            DataType::Struct(Fields::from(vec![utf8("name"), utf8("version")])),
            true,
        ),
    ]));
    let started = Instant::now();
    let file = BufReader::new(std::fs::File::open(path)?);
    let reader = arrow::json::ReaderBuilder::new(schema.clone())
        .with_batch_size(8192)
        .build(file)?;
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>()?;
    let bytes = batches.iter().map(RecordBatch::get_array_memory_size).sum();
    let parts = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut split = vec![Vec::new(); parts];
    for (i, b) in batches.into_iter().enumerate() {
        split[i % parts].push(b);
    }
    let table = MemTable::try_new(schema, split)?;
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(parts));
    ctx.register_table("events", Arc::new(table))?;
    Ok((ctx, started.elapsed().as_secs_f64(), bytes))
}

/// Compares the answers: exact queries cell by cell (floats to 1e-9),
/// approximate ones (approx_*) by their first column, values within 2%.
/// True for a query of the shared set that uses an approximate function.
fn is_approx(tag: &str) -> bool {
    load_queries()
        .ok()
        .and_then(|q| q.into_iter().find(|(t, _)| t == tag))
        .is_some_and(|(_, s)| s.contains("approx_"))
}

/// Exact queries cell by cell (floats to 1e-9); approximate ones are left
/// to `check_approximate`.
fn compare(a: &[(String, Timing)], b: &[(String, Timing)]) -> Vec<String> {
    let mut out = Vec::new();
    for ((tag, x), (_, y)) in a.iter().zip(b) {
        if is_approx(tag) {
            continue;
        }
        if x.rows.len() != y.rows.len()
            || x.rows
                .iter()
                .zip(&y.rows)
                .any(|(r, o)| !cells_close(r, o, 1e-9))
        {
            out.push(format!(
                "{tag}: {} rows vs {} rows, first {:?} vs {:?}",
                x.rows.len(),
                y.rows.len(),
                x.rows.first(),
                y.rows.first()
            ));
        }
    }
    out
}

/// Exact answers of an approximate query, by group (first column): at the
/// query's percentile, and at 0.02 below and above it (a sketch's rank
/// error).
type ExactRows = [HashMap<String, Vec<Value>>; 3];

async fn exact_answers(
    ctx: &SessionContext,
    queries: &[(String, String)],
) -> Result<HashMap<String, ExactRows>> {
    let mut out = HashMap::new();
    for (tag, sql) in queries.iter().filter(|(t, _)| is_approx(t)) {
        let mut variants: Vec<HashMap<String, Vec<Value>>> = Vec::new();
        for shift in [0.0, -0.02, 0.02] {
            let batches = ctx.sql(&exact_sql(sql, shift)).await?.collect().await?;
            let mut rows = Vec::new();
            for b in &batches {
                atoll_query::render::append_rows(b, &mut rows);
            }
            variants.push(rows.into_iter().map(|r| (r[0].to_string(), r)).collect());
        }
        let [mid, lo, hi]: ExactRows = variants.try_into().expect("three variants");
        out.insert(tag.clone(), [mid, lo, hi]);
    }
    Ok(out)
}

/// The exact form of an approximate query, over every group (no LIMIT),
/// with percentiles shifted by `shift`.
fn exact_sql(sql: &str, shift: f64) -> String {
    let mut sql = sql.replace("approx_distinct(", "count(DISTINCT ");
    let marker = "approx_percentile_cont(";
    while let Some(at) = sql.find(marker) {
        let start = at + marker.len();
        let end = start + sql[start..].find(')').unwrap_or(0);
        let p: f64 = sql[start..end].trim().parse().unwrap_or(0.5);
        let shifted = (p + shift).clamp(0.0, 1.0);
        sql = format!("{}percentile_cont({shifted}{}", &sql[..at], &sql[end..]);
    }
    match sql.rfind(" LIMIT ") {
        Some(at) => sql[..at].to_string(),
        None => sql,
    }
}

/// Each group of an approximate answer against the exact one: every cell
/// within 2% of it, or (for a percentile) between the exact values 0.02
/// below and above.
fn check_approximate(q: &[(String, Timing)], exact: &HashMap<String, ExactRows>) -> Vec<String> {
    let mut out = Vec::new();
    for (tag, t) in q {
        let Some([mid, lo, hi]) = exact.get(tag) else {
            continue;
        };
        for r in &t.rows {
            let key = r[0].to_string();
            let (Some(m), Some(l), Some(h)) = (mid.get(&key), lo.get(&key), hi.get(&key)) else {
                out.push(format!("{tag}: group {key} is not in the exact answer"));
                continue;
            };
            let fits = (1..r.len()).all(|i| {
                match (r[i].as_f64(), m[i].as_f64(), l[i].as_f64(), h[i].as_f64()) {
                    (Some(x), Some(e), Some(a), Some(b)) => {
                        (x - e).abs() <= 0.02 * e.abs().max(1e-12)
                            || (a.min(b)..=a.max(b)).contains(&x)
                    }
                    _ => r[i] == m[i],
                }
            });
            if !fits {
                out.push(format!(
                    "{tag}: {r:?}, exact {m:?} (rank -0.02: {l:?}, +0.02: {h:?})"
                ));
            }
        }
    }
    out
}

fn cells_close(a: &[Value], b: &[Value], tol: f64) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| match (x.as_f64(), y.as_f64()) {
                (Some(p), Some(q)) => (p - q).abs() <= tol * p.abs().max(q.abs()).max(1e-12),
                _ => x == y,
            })
}

/// The run's chart: every query's medians, ingest beside the peers' loads,
/// memory beside DataFusion's Arrow bytes.
fn picture_of(
    r: &Value,
    atoll: &[(String, Timing)],
    df: &[(String, Timing)],
    peer_runs: &[peers::PeerRun],
) -> String {
    let ms = |v: f64| format!("{v:.1} ms");
    let mut groups = Vec::new();
    for (i, (tag, a)) in atoll.iter().enumerate() {
        let mut bars = vec![(
            "Atoll (1 node, HTTP)".to_string(),
            a.median_ms,
            ms(a.median_ms),
        )];
        if let Some((_, d)) = df.get(i) {
            bars.push((
                "DataFusion (harness build)".into(),
                d.median_ms,
                ms(d.median_ms),
            ));
        }
        for p in peer_runs {
            if let Some((_, t)) = p.1.get(i) {
                bars.push((peers::name(p).to_string(), t.median_ms, ms(t.median_ms)));
            }
        }
        groups.push(svg::Group {
            label: format!("{tag} (ms, shorter is faster)"),
            bars,
        });
    }
    let events = r["events"].as_f64().unwrap_or(0.0);
    let rate = |v: f64| format!("{:.0}k events/s", v / 1e3);
    let mut ingest = vec![(
        "Atoll (HTTP, 4 clients)".to_string(),
        r["atoll"]["ingest_plain"]["events_per_s"]
            .as_f64()
            .unwrap_or(0.0),
        String::new(),
    )];
    let df_load = r["datafusion"]["load_seconds"].as_f64().unwrap_or(f64::NAN);
    ingest.push((
        "DataFusion (harness build)".into(),
        events / df_load,
        String::new(),
    ));
    for p in peer_runs {
        let s = p.0["load_seconds"].as_f64().unwrap_or(f64::NAN);
        ingest.push((peers::name(p).to_string(), events / s, String::new()));
    }
    for b in &mut ingest {
        b.2 = rate(b.1);
    }
    groups.push(svg::Group {
        label: "ingest / file load (events/s, longer is faster)".into(),
        bars: ingest,
    });
    let mb = |b: &Value| b.as_f64().unwrap_or(0.0) / 1e6;
    groups.push(svg::Group {
        label: "memory after load (MB)".into(),
        bars: vec![
            (
                "Atoll RSS".into(),
                mb(&r["atoll"]["rss_after_load_bytes"]),
                format!("{:.0} MB", mb(&r["atoll"]["rss_after_load_bytes"])),
            ),
            (
                "DataFusion Arrow bytes".into(),
                mb(&r["datafusion"]["arrow_bytes"]),
                format!("{:.0} MB", mb(&r["datafusion"]["arrow_bytes"])),
            ),
        ],
    });
    svg::chart(
        &format!("Atoll and its peers, {} events, one run", r["events"]),
        &groups,
    )
}

/// Name, ingest figures, (RSS, peak RSS) of each node after load, timings.
type ClusterRun = (String, Value, Vec<(u64, u64)>, Vec<(String, Timing)>);

fn print_clusters(clusters: &[ClusterRun], one: &[(String, Timing)], df: &[(String, Timing)]) {
    for (name, ingest, rss, q) in clusters {
        let per_node = |pick: fn(&(u64, u64)) -> u64| {
            rss.iter()
                .map(|m| format!("{:.0}", pick(m) as f64 / 1e6))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        println!(
            "\n{name}: ingest {:.0} events/s (same requests and clients); RSS after load {:.0} MB in all, per node {} MB (peak {} MB)\n",
            ingest["events_per_s"].as_f64().unwrap_or(0.0),
            rss.iter().map(|m| m.0).sum::<u64>() as f64 / 1e6,
            per_node(|m| m.0),
            per_node(|m| m.1),
        );
        println!(
            "| query | median ms (engine) | max ms | vs 1 node | vs DataFusion |\n| --- | --- | --- | --- | --- |"
        );
        for (((tag, c), (_, a)), (_, d)) in q.iter().zip(one).zip(df) {
            println!(
                "| {tag} | {:.1} ({:.1}) | {:.1} | {:.2}x | {:.2}x |",
                c.median_ms,
                c.engine_ms,
                c.max_ms,
                c.median_ms / a.median_ms,
                c.median_ms / d.median_ms
            );
        }
    }
}

fn print_table(r: &Value, atoll: &[(String, Timing)], df: &[(String, Timing)]) {
    let mb = |b: &Value| b.as_f64().unwrap_or(0.0) / 1e6;
    println!(
        "\n{} events, {:.0} MB NDJSON\n",
        r["events"],
        mb(&r["ndjson_bytes"])
    );
    println!("| ingest | Atoll events/s | Atoll MB/s |\n| --- | --- | --- |");
    for key in ["ingest_plain", "ingest_gzip"] {
        let i = &r["atoll"][key];
        println!(
            "| {} requests{}, {} client(s) | {:.0} | {:.1} |",
            i["requests"],
            if i["gzip"] == true { " (gzip)" } else { "" },
            i["clients"],
            i["events_per_s"].as_f64().unwrap_or(0.0),
            i["mb_per_s"].as_f64().unwrap_or(0.0)
        );
    }
    println!(
        "\nDataFusion loads the file into a MemTable in {:.2} s ({:.0} events/s, arrow-json, no HTTP).",
        r["datafusion"]["load_seconds"].as_f64().unwrap_or(0.0),
        r["events"].as_f64().unwrap_or(0.0)
            / r["datafusion"]["load_seconds"].as_f64().unwrap_or(1.0)
    );
    println!(
        "Memory: Atoll RSS after load {:.0} MB ({:.2}x the NDJSON; peak {:.0} MB); DataFusion MemTable Arrow size {:.0} MB.\n",
        mb(&r["atoll"]["rss_after_load_bytes"]),
        mb(&r["atoll"]["rss_after_load_bytes"]) / mb(&r["ndjson_bytes"]),
        mb(&r["atoll"]["peak_rss_bytes"]),
        mb(&r["datafusion"]["arrow_bytes"])
    );
    println!(
        "| query | Atoll median ms (engine) | Atoll max ms | DataFusion median ms | ratio |\n| --- | --- | --- | --- | --- |"
    );
    for ((tag, a), (_, d)) in atoll.iter().zip(df) {
        println!(
            "| {tag} | {:.1} ({:.1}) | {:.1} | {:.1} | {:.2}x |",
            a.median_ms,
            a.engine_ms,
            a.max_ms,
            d.median_ms,
            a.median_ms / d.median_ms
        );
    }
}

/// Queries after a bulk load and under steady ingest, beside idle.
fn print_under_load(
    idle: &[(String, Timing)],
    after: &[(String, Timing)],
    under: &[(String, Timing)],
    steady: f64,
) {
    println!(
        "\n| query | idle ms | right after a bulk load | vs idle | under ingest ({steady:.0} events/s) | vs idle |\n| --- | --- | --- | --- | --- | --- |"
    );
    for (((tag, i), (_, a)), (_, u)) in idle.iter().zip(after).zip(under) {
        println!(
            "| {tag} | {:.1} | {:.1} | {:.2}x | {:.1} | {:.2}x |",
            i.median_ms,
            a.median_ms,
            a.median_ms / i.median_ms,
            u.median_ms,
            u.median_ms / i.median_ms
        );
    }
}

/// Ingest with live views following, beside none.
fn print_live(r: &Value) {
    let rate = |v: &Value| v["events_per_s"].as_f64().unwrap_or(0.0);
    let runs = r["atoll"]["ingest_live"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let none = runs.first().map_or(0.0, rate);
    println!("\n| live views | events/s | vs none | updates read |\n| --- | --- | --- | --- |");
    for v in &runs {
        println!(
            "| {} | {:.0} | {:.2}x | {} |",
            v["live_views"],
            rate(v),
            rate(v) / none,
            v["updates_read"]
        );
    }
}

/// Each door's rate beside native NDJSON's on the same nodes.
fn print_doors(r: &Value) {
    let rate = |v: &Value| v["events_per_s"].as_f64().unwrap_or(0.0);
    let one = rate(&r["atoll"]["ingest_plain"]);
    let cluster = r["clusters"]
        .as_array()
        .and_then(|c| c.last())
        .map_or(0.0, |c| rate(&c["ingest_plain"]));
    println!("\n| door | where | events/s | vs NDJSON there |\n| --- | --- | --- | --- |");
    for d in r["atoll"]["ingest_doors"].as_array().into_iter().flatten() {
        let (place, native) = match d["cluster"].as_str() {
            Some(c) => (c.to_string(), cluster),
            None => ("1 node".to_string(), one),
        };
        println!(
            "| {} | {place} | {:.0} | {:.2}x |",
            d["door"].as_str().unwrap_or("?"),
            rate(d),
            rate(d) / native
        );
    }
}
