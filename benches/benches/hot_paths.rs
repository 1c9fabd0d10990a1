//! Criterion micro-benchmarks of the hot paths, on the shared generator's
//! events: parsing and converting JSON to Arrow (ingest, both paths),
//! routing events to partitions (ring), appending and sealing batches
//! (store), and a grouped query whose partial aggregates are merged
//! (query). Run with `cargo bench -p atoll-benches`; `cargo test` runs
//! each once as a check.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use atoll_ingest::{body, convert, honeycomb, otlp, route, typed};
use atoll_query::{QueryConfig, QueryEngine};
use atoll_store::{Store, StoreConfig, TableSettings};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const EVENTS: usize = 16_384;

/// NDJSON of `rows` generator events, made once per machine.
fn generated(rows: usize) -> Vec<u8> {
    let path = std::env::temp_dir().join(format!("atoll-hot-paths-{rows}.ndjson"));
    if !path.exists() {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/bench/gen_events.py");
        let status = std::process::Command::new("python3")
            .arg(script)
            .args(["--rows", &rows.to_string(), "--out"])
            .arg(&path)
            .status()
            .expect("python3 runs the shared generator");
        assert!(status.success(), "gen_events.py failed");
    }
    std::fs::read(&path).expect("generated events")
}

fn ingest(c: &mut Criterion) {
    let body = generated(EVENTS);
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.bench_function("parse_ndjson_16k", |b| {
        b.iter(|| body::parse_ndjson(&body, 0))
    });
    let events = body::parse_ndjson(&body, 0);
    let store = Store::new(StoreConfig::default());
    let table = store.get_or_create("events").unwrap();
    g.bench_function("convert_16k", |b| {
        b.iter(|| convert::convert_events(&table, &events, 0, None).unwrap())
    });
    // Once the table has the events' columns, the typed path takes them.
    convert::ingest_events(&table, &events, 0).unwrap();
    let now = atoll_store::now_micros();
    g.bench_function("typed_16k", |b| {
        b.iter(|| typed::convert_ndjson(&table, &body, now, None).expect("typed"))
    });
    g.finish();
}

/// The same events through the protocol doors' conversions: a Honeycomb
/// batch into lines, an OTLP request into span rows, and those rows into
/// Arrow by the typed path.
fn doors(c: &mut Criterion) {
    let body = generated(EVENTS);
    let mut g = c.benchmark_group("doors");
    g.throughput(Throughput::Elements(EVENTS as u64));
    let batch = atoll_benches::doors::honeycomb_bodies(std::slice::from_ref(&body)).remove(0);
    g.bench_function("honeycomb_lines_16k", |b| {
        b.iter(|| {
            let parsed = honeycomb::batch(batch.clone().into(), false).unwrap();
            parsed.read(0..parsed.len())
        })
    });
    let request = atoll_benches::doors::otlp_bodies(std::slice::from_ref(&body))
        .unwrap()
        .remove(0);
    g.bench_function("otlp_decode_16k", |b| {
        b.iter(|| otlp::decode_traces(&request, otlp::Encoding::Protobuf).unwrap())
    });
    g.bench_function("otlp_span_rows_16k", |b| {
        b.iter(|| {
            otlp::span_rows(
                otlp::decode_traces(&request, otlp::Encoding::Protobuf).unwrap(),
                usize::MAX,
            )
        })
    });
    let rows = otlp::span_rows(
        otlp::decode_traces(&request, otlp::Encoding::Protobuf).unwrap(),
        usize::MAX,
    )
    .unwrap()
    .remove(0);
    let mut lines = Vec::new();
    for line in rows.events.into_iter().flatten() {
        lines.extend_from_slice(&line);
        lines.push(b'\n');
    }
    let store = Store::new(StoreConfig::default());
    let table = store.get_or_create("spans").unwrap();
    convert::ingest_events(&table, &body::parse_ndjson(&lines, 0), 0).unwrap();
    let now = atoll_store::now_micros();
    g.bench_function("otlp_typed_16k", |b| {
        b.iter(|| typed::convert_ndjson(&table, &lines, now, None).expect("typed"))
    });
    g.finish();
}

fn ring_and_store(c: &mut Criterion) {
    let body = generated(EVENTS);
    let events = body::parse_ndjson(&body, 0);
    let store = Store::new(StoreConfig::default());
    let table = store.get_or_create("events").unwrap();
    let converted = convert::convert_events(&table, &events, 0, None).unwrap();
    let batch = converted.batch.unwrap();
    let mut g = c.benchmark_group("route_and_store");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.bench_function("group_by_partition_16k", |b| {
        b.iter(|| route::group_by_partition(&batch, &converted.partitions).unwrap())
    });
    let keyed = TableSettings {
        partition_key: Some("user_id".into()),
        ..TableSettings::default()
    };
    let flat: Vec<_> = events
        .iter()
        .enumerate()
        .map(|(i, e)| convert::prepare(i, e.as_ref().unwrap(), 0).unwrap())
        .collect();
    g.bench_function("assign_by_key_16k", |b| {
        b.iter(|| route::assign(&keyed, 64, &flat, None))
    });
    for (name, requests) in [
        ("append_and_seal_16k", 1),
        ("append_and_seal_16k_in_32_requests", 32),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || Store::new(StoreConfig::default()),
                |fresh| append_and_seal(&fresh, &batch, &converted.partitions, requests),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

/// Appends `batch` to a fresh store's table as `requests` requests, then
/// seals: with many, each partition's buffer holds many requests' rows,
/// nearly in time order each, as a node gets them.
fn append_and_seal(fresh: &Store, batch: &RecordBatch, partitions: &[u32], requests: usize) {
    let t = fresh.get_or_create("events").unwrap();
    t.absorb_schema(batch.schema().as_ref());
    let size = batch.num_rows() / requests;
    for r in 0..requests {
        let rows = batch.slice(r * size, size);
        route::store_by_partition(&t, &rows, &partitions[r * size..(r + 1) * size]).unwrap();
    }
    fresh.seal_aged();
}

fn query(c: &mut Criterion) {
    let rows = 100_000;
    let body = generated(rows);
    let store = Arc::new(Store::new(StoreConfig {
        seal_age: Duration::ZERO,
        ..StoreConfig::default()
    }));
    let table = store.get_or_create("events").unwrap();
    let events = body::parse_ndjson(&body, 0);
    convert::ingest_events(&table, &events, 0).unwrap();
    store.seal_aged();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let engine = QueryEngine::new(store, QueryConfig::default());
    let mut g = c.benchmark_group("query_100k");
    g.throughput(Throughput::Elements(rows as u64));
    for (name, sql) in [
        (
            "group_by_status",
            "SELECT status, count(*) AS n FROM events GROUP BY status ORDER BY n DESC",
        ),
        (
            "p99_by_endpoint",
            "SELECT endpoint, approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99 FROM events GROUP BY endpoint ORDER BY p99 DESC LIMIT 10",
        ),
        (
            "top_users",
            "SELECT user_id, count(*) AS n FROM events GROUP BY user_id ORDER BY n DESC LIMIT 10",
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let mut run = engine.start(sql, None, None, None).await.unwrap();
                    let mut rows = 0;
                    while let Some(batch) = run.next().await.unwrap() {
                        rows += batch.num_rows();
                    }
                    rows
                })
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(3));
    targets = ingest, doors, ring_and_store, query
}
criterion_main!(benches);
