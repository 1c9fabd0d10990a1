//! Answers from SQL client libraries (psycopg, ADBC) compared with
//! `/v1/query`'s: the shared benchmark's queries, and cell equality that
//! reads timestamps as instants.

use serde_json::Value;

use super::Server;

/// The shared benchmark's queries, by their tag.
pub fn bench_query(tag: &str) -> String {
    let text = std::fs::read_to_string(super::shared_dir().join("bench/queries.sql")).unwrap();
    let mut lines = text.lines();
    lines
        .find(|l| l.starts_with(&format!("-- {tag}:")))
        .expect("tag present");
    lines
        .next()
        .expect("query after its tag")
        .trim_end_matches(';')
        .to_string()
}

pub const TAGS: [&str; 8] = ["Q1", "Q2", "Q3", "Q4", "Q5", "Q6", "Q7", "Q8"];

/// A cell from a client library equals one from `/v1/query`: the same instant, the
/// same number (within `tolerance`, relative), or the same value.
pub fn same_cell(pg: &Value, http: &Value, tolerance: f64) -> bool {
    let instant = |v: &Value| {
        v.as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    };
    match (pg, http) {
        (Value::Number(a), Value::Number(b)) => {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            (a - b).abs() <= tolerance * b.abs().max(1e-12)
        }
        _ => match (instant(pg), instant(http)) {
            (Some(a), Some(b)) => a == b,
            _ => pg == http,
        },
    }
}

pub fn assert_same_rows(what: &str, pg: &Value, http: &[Vec<Value>], tolerance: f64) {
    assert!(pg.get("error").is_none(), "{what}: {pg}");
    let rows = pg["rows"].as_array().unwrap();
    assert_eq!(rows.len(), http.len(), "{what}: {pg} vs {http:?}");
    for (a, b) in rows.iter().zip(http) {
        let a = a.as_array().unwrap();
        assert_eq!(a.len(), b.len(), "{what}");
        for (x, y) in a.iter().zip(b) {
            assert!(
                same_cell(x, y, tolerance),
                "{what}: {x} vs {y} in {a:?} vs {b:?}"
            );
        }
    }
}

/// Q5's p99 is a sketch merged in whatever order partial results arrive.
pub fn tolerance(tag: &str) -> f64 {
    if tag == "Q5" { 0.02 } else { 1e-9 }
}

/// Q1–Q8, Q8 asking for the busiest user (the shared one, `u4242`, is
/// not among this test's few events).
pub async fn benchmark(http: &Server) -> Vec<(&'static str, String)> {
    let busiest = http
        .rows("SELECT user_id FROM events GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 1")
        .await;
    let user = busiest[0][0].as_str().unwrap().to_string();
    TAGS.iter()
        .map(|t| (*t, bench_query(t).replace("'u4242'", &format!("'{user}'"))))
        .collect()
}
