//! Q5 and Q6 of the shared benchmark use approximate functions: their
//! answers are checked against exact ones (computed in plain Python by
//! `scripts/bench-answers.py`): distinct counts within 2% of the value, p99
//! within 2% of the value or of the rank (between the exact p97 and the
//! maximum: a sketch over a dozen values reports the top one, which can be
//! more than 2% above the interpolated p99).

mod support;

use serde_json::Value;
use support::{Cluster, Server, generated_events};

fn query(tag: &str) -> String {
    let text = std::fs::read_to_string(support::shared_dir().join("bench/queries.sql")).unwrap();
    let mut lines = text.lines();
    lines
        .find(|l| l.starts_with(&format!("-- {tag}:")))
        .expect("tag present");
    lines.next().expect("query after its tag").to_string()
}

fn within(actual: f64, exact: f64, tolerance: f64) -> bool {
    (actual - exact).abs() <= tolerance * exact.abs().max(1e-9)
}

fn expected() -> Value {
    serde_json::from_str(include_str!("bench_approx_expected.json")).expect("expected answers")
}

async fn load(entry: &Server, expected: &Value) {
    let rows = expected["rows"].as_u64().unwrap();
    let events = generated_events(rows as usize, expected["seed"].as_u64().unwrap(), &[]);
    let (status, v) = entry.ingest("events", events).await;
    assert_eq!((status, v["accepted"].as_u64()), (200, Some(rows)), "{v}");
}

#[tokio::test]
async fn approximate_queries_are_close_to_exact_answers() {
    let expected = expected();
    let s = Server::start(&[]);
    load(&s, &expected).await;
    check_approximate(&s, &expected).await;
}

/// With N=1 every partition lives on one of three nodes: the sketches are
/// built on the owners and merged on the coordinator, and must stay within
/// the same bounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approximate_queries_merged_across_three_nodes_stay_close() {
    let expected = expected();
    let cluster = Cluster::start(3, &["--replicas", "1"]).await;
    load(cluster.node(1), &expected).await;
    let (_, v) = cluster.node(0).query(&query("Q6")).await;
    assert_eq!(v["stats"]["nodes"].as_array().map(Vec::len), Some(3), "{v}");
    check_approximate(cluster.node(0), &expected).await;
}

async fn check_approximate(s: &Server, expected: &Value) {
    let q6 = s.rows(&query("Q6")).await;
    assert_eq!(q6.len(), expected["Q6"].as_object().unwrap().len());
    for row in &q6 {
        let exact = expected["Q6"][row[0].as_str().unwrap()].as_f64().unwrap();
        let approx = row[1].as_f64().unwrap();
        assert!(
            within(approx, exact, 0.02),
            "Q6 {}: {approx} vs exact {exact}",
            row[0]
        );
    }

    let q5 = s.rows(&query("Q5")).await;
    assert_eq!(q5.len(), 10);
    let mut exact_top: Vec<(&String, f64)> = expected["Q5"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(ep, e)| (ep, e["p99"].as_f64().unwrap()))
        .collect();
    exact_top.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    let exact_top: Vec<&String> = exact_top.iter().take(10).map(|e| e.0).collect();
    let mut overlap = 0;
    for row in &q5 {
        let ep = row[0].as_str().unwrap();
        let e = &expected["Q5"][ep];
        assert_eq!(row[2], e["n"], "Q5 {ep}: counts are exact");
        let (approx, exact) = (row[1].as_f64().unwrap(), e["p99"].as_f64().unwrap());
        let (p97, max) = (e["p97"].as_f64().unwrap(), e["max"].as_f64().unwrap());
        assert!(
            within(approx, exact, 0.02) || (p97..=max).contains(&approx),
            "Q5 {ep}: p99 {approx} vs exact {exact} (p97 {p97}, max {max})"
        );
        overlap += usize::from(exact_top.iter().any(|t| t.as_str() == ep));
    }
    assert!(
        overlap >= 9,
        "Q5's top 10 shares only {overlap} endpoints with the exact top 10"
    );
}
