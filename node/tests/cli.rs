//! The `atoll` command line: help, environment variables, clean stops.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn atoll() -> Command {
    Command::new(env!("CARGO_BIN_EXE_atoll"))
}

#[test]
fn help_names_every_flag_and_its_variable() {
    let out = atoll().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for (flag, env) in [
        ("--http-addr", "ATOLL_HTTP_ADDR"),
        ("--partitions", "ATOLL_PARTITIONS"),
        ("--max-body-bytes", "ATOLL_MAX_BODY_BYTES"),
        ("--memory-limit", "ATOLL_MEMORY_LIMIT"),
        ("--query-memory", "ATOLL_QUERY_MEMORY"),
        ("--query-memory-per-query", "ATOLL_QUERY_MEMORY_PER_QUERY"),
        ("--query-timeout-ms", "ATOLL_QUERY_TIMEOUT_MS"),
        ("--max-concurrent-queries", "ATOLL_MAX_CONCURRENT_QUERIES"),
        ("--max-result-rows", "ATOLL_MAX_RESULT_ROWS"),
    ] {
        assert!(
            help.contains(flag) && help.contains(env),
            "{flag} / {env} missing from\n{help}"
        );
    }
    let top = String::from_utf8(atoll().arg("--help").output().unwrap().stdout).unwrap();
    assert!(top.contains("serve"), "{top}");
}

#[test]
fn bad_flags_fail_with_a_message() {
    let out = atoll()
        .args(["serve", "--partitions", "48"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a power of two"));
    let out = atoll()
        .args(["serve", "--http-addr", "127.0.0.1:0"])
        .env("ATOLL_QUERY_MEMORY", "lots")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"lots\" is not a size"));
    let out = atoll()
        .args(["serve", "--http-addr", "127.0.0.1:0"])
        .args(["--memory-limit", "64MiB", "--query-memory", "1GiB"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must be less than --memory-limit"), "{err}");
}

#[test]
fn environment_sets_flags_and_sigterm_stops_cleanly() {
    let mut child = atoll()
        .args(["serve", "--log", "warn"])
        .env("ATOLL_HTTP_ADDR", "127.0.0.1:0")
        .env("ATOLL_FLIGHT_ADDR", "127.0.0.1:0")
        .env("ATOLL_GOSSIP_ADDR", "127.0.0.1:0")
        .env("ATOLL_MAX_RESULT_ROWS", "3")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("atoll listening on ")
        .unwrap()
        .to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rows = rt.block_on(async {
        let c = reqwest::Client::new();
        c.post(format!("{url}/v1/tables/t/events"))
            .header("content-type", "application/json")
            .body("[{\"a\":1},{\"a\":2},{\"a\":3},{\"a\":4}]")
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = c
            .post(format!("{url}/v1/query"))
            .header("content-type", "application/json")
            .body("{\"sql\":\"SELECT a FROM t\"}")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["rows"].as_array().unwrap().len()
    });
    assert_eq!(rows, 3, "ATOLL_MAX_RESULT_ROWS applies");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "atoll did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
}
