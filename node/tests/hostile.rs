//! Requests meant to take a node down: each gets a clear 4xx (or a
//! bounded error), the node keeps serving, and its memory stays bounded.

mod support;

use serde_json::json;
use support::Server;

/// Peak resident memory of a process, from /proc.
fn peak_resident(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test]
async fn functions_that_make_what_they_are_asked_for_are_bounded() {
    let s = Server::start(&[]);
    assert_eq!(
        s.ingest("t", "{\"n\":3}\n{\"n\":2000000000}\n").await.0,
        200
    );
    for (sql, function) in [
        ("SELECT cardinality(range(0, 3000000000))", "range"),
        ("SELECT repeat('x', 2000000000)", "repeat"),
        ("SELECT length(repeat('x', 1000000000))", "repeat"),
        (
            "SELECT count(*) FROM (SELECT unnest(range(0, 200000000)))",
            "range",
        ),
        (
            "SELECT cardinality(generate_series(1, 100000000))",
            "generate_series",
        ),
        (
            "SELECT cardinality(generate_series(TIMESTAMP '1970-01-01', TIMESTAMP '2100-01-01', INTERVAL '1 second'))",
            "generate_series",
        ),
        (
            "SELECT cardinality(array_repeat(1, 100000000))",
            "array_repeat",
        ),
        (
            "SELECT cardinality(array_resize([1], 100000000, 0))",
            "array_resize",
        ),
        ("SELECT length(lpad('', 1000000000, 'x'))", "lpad"),
        ("SELECT length(rpad('a', 300000000))", "rpad"),
        (
            "SELECT length(replace(repeat('x', 10000000), 'x', repeat('y', 100)))",
            "replace",
        ),
        (
            "SELECT length(regexp_replace(repeat('x', 1000000), '', repeat('y', 1000), 'g'))",
            "regexp_replace",
        ),
        // From a column: refused when the batch runs.
        ("SELECT length(repeat('x', n)) FROM t", "repeat"),
    ] {
        let (status, v) = s.query(sql).await;
        assert_eq!(status, 400, "{sql}: {v}");
        let error = v["error"].as_str().unwrap();
        assert!(
            error.contains(function) && error.contains("limit"),
            "{sql}: {error}"
        );
    }
    // Within the limit, the functions work as ever.
    assert_eq!(
        s.rows("SELECT cardinality(range(0, 1000))").await,
        [[json!(1000)]]
    );
    assert_eq!(s.rows("SELECT repeat('ab', 3)").await, [[json!("ababab")]]);
    assert_eq!(s.rows("SELECT lpad('7', 3, '0')").await, [[json!("007")]]);
    assert_eq!(
        s.rows("SELECT length(repeat('x', n)) FROM t WHERE n < 10")
            .await,
        [[json!(3)]]
    );
    assert_eq!(
        s.rows("SELECT cardinality(generate_series(DATE '2026-01-01', DATE '2026-12-31', INTERVAL '1 month'))")
            .await,
        [[json!(12)]]
    );
    let peak = peak_resident(s.child.id());
    assert!(peak < 1 << 30, "peak resident {} MiB", peak >> 20);
}

#[tokio::test]
async fn the_limit_is_a_flag() {
    let s = Server::start(&["--max-function-output", "1KiB"]);
    let (status, v) = s.query("SELECT repeat('x', 2000)").await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("1024"), "{v}");
    assert_eq!(
        s.rows("SELECT length(repeat('x', 1000))").await,
        [[json!(1000)]]
    );
}
