//! The real client programs tests drive (`tests/clients/`), and the
//! virtualenv and npm folder `scripts/install-clients` puts them in.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

pub fn clients_dir() -> PathBuf {
    let dir = std::env::var_os("ATOLL_CLIENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/clients"));
    assert!(
        dir.join("installed-v4").exists(),
        "the client libraries are not installed in {}: run scripts/install-clients (the test command does)",
        dir.display()
    );
    dir
}

pub fn script(name: &str) -> String {
    format!("{}/tests/clients/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs a client program; its stdout as JSON.
pub fn run(mut cmd: Command) -> Value {
    let out = cmd.output().expect("the client program starts");
    answer(&format!("{cmd:?}"), &out)
}

/// The last line a client program that succeeded printed, as JSON.
fn answer(what: &str, out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{what} printed no JSON ({e}): {stdout}"))
}

pub fn python(args: &[&str]) -> Value {
    let mut cmd = Command::new(clients_dir().join("venv/bin/python"));
    cmd.args(args);
    run(cmd)
}

/// A Python client program fed `input` (JSON) on stdin; its stdout as JSON.
pub fn python_with(args: &[&str], input: &Value) -> Value {
    let mut child = Command::new(clients_dir().join("venv/bin/python"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the client program starts");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input.to_string().as_bytes())
        .expect("the client program reads its plan");
    let out = child.wait_with_output().expect("the client program ends");
    answer(&format!("{args:?}"), &out)
}
