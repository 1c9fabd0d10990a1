//! The benchmark harness at a tiny scale, on the debug build the tests make
//! anyway: it must run end to end (one node, 3-node clusters with N=1 and
//! N=3, in-process DataFusion, DuckDB when pip can install it, the
//! Honeycomb and OTLP doors) and all engines must agree. Timings are
//! printed, never asserted.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_harness_runs_end_to_end_and_the_engines_agree() {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_atoll-bench"));
    let atoll = bench.with_file_name("atoll");
    assert!(
        atoll.exists(),
        "{} is missing: run the whole workspace's tests (cargo test --workspace), which build it",
        atoll.display()
    );
    let out = bench.with_file_name("bench-smoke");
    let output = Command::new(&bench)
        .args(["--rows", "10000", "--runs", "1", "--out"])
        .arg(&out)
        .output()
        .expect("atoll-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for part in ["| Q8 |", "3 nodes N=1", "3 nodes N=3"] {
        assert!(stdout.contains(part), "{part} missing from\n{stdout}");
    }
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("atoll-vs-datafusion-10000.json")).expect("a JSON report"),
    )
    .unwrap();
    assert_eq!(report["events"], 10_000);
    assert_eq!(report["mismatches"], serde_json::json!([]));
    // Every peer ran (installed with pip; a peer that cannot be installed
    // is left out of a run, which this test does not accept).
    let engines: Vec<_> = report["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .map(|p| p["engine"].as_str().unwrap_or("?").to_string())
        .collect();
    assert_eq!(
        engines,
        [
            "DuckDB",
            "ClickHouse (chDB)",
            "polars",
            "DataFusion (pip, optimized)"
        ],
        "{stderr}"
    );
    assert!(out.join("atoll-vs-peers-10000.svg").exists(), "the chart");
    assert_eq!(report["clusters"].as_array().map(Vec::len), Some(2));
    // Honeycomb batches and OTLP spans of the same events, on one node and
    // on the N=3 cluster: every event stored.
    let doors = report["atoll"]["ingest_doors"]
        .as_array()
        .expect("door rates");
    assert_eq!(doors.len(), 4, "{doors:?}");
    for d in doors {
        assert_eq!(d["accepted"], 10_000, "{d}");
    }
    // Queries right after a bulk load and under steady ingest: all eight,
    // with ingest running meanwhile.
    for key in ["queries_after_load", "queries_under_ingest"] {
        let q = report["atoll"][key].as_array().expect(key);
        assert_eq!(q.len(), 8, "{key}");
        assert!(
            q.iter()
                .all(|t| t["median_ms"].as_f64().is_some_and(|m| m > 0.0)),
            "{key}"
        );
    }
    assert!(
        report["atoll"]["steady_ingest_events_per_s"]
            .as_f64()
            .is_some_and(|r| r > 0.0)
    );
    // Ingest with 0, 1 and 10 live views following: every event stored,
    // and the views read updates.
    let live = report["atoll"]["ingest_live"]
        .as_array()
        .expect("live rates");
    let views: Vec<_> = live.iter().map(|l| l["live_views"].as_u64()).collect();
    assert_eq!(views, [Some(0), Some(1), Some(10)]);
    for l in live {
        assert_eq!(l["accepted"], 10_000, "{l}");
        let read = l["updates_read"].as_u64().unwrap();
        assert!((read > 0) == (l["live_views"] != 0), "{l}");
    }
    println!("{stdout}");
}
