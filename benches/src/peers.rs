//! The engines a user could pick instead, each at its best, over the same
//! file and questions: DuckDB, ClickHouse (chDB), polars and DataFusion as
//! shipped (the `datafusion` wheel, fully optimized), each in process
//! through its Python package (`peers/*_peer.py`, installed with pip into
//! a virtualenv under `--out`). A peer that cannot be installed or fails is
//! left out of the run with a message that says so.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{Timing, shared_bench};

/// Each peer: its name on the command line, its script, the modules it
/// imports and the packages that bring them.
pub const PEERS: [(&str, &str, &str, &[&str]); 4] = [
    ("duckdb", "duckdb_peer.py", "duckdb", &["duckdb"]),
    ("chdb", "chdb_peer.py", "chdb", &["chdb"]),
    ("polars", "polars_peer.py", "polars", &["polars"]),
    (
        "datafusion",
        "datafusion_peer.py",
        "datafusion, pyarrow",
        &["datafusion", "pyarrow"],
    ),
];

/// A peer's run: what it says of itself (engine, version, load seconds)
/// and its timings.
pub type PeerRun = (Value, Vec<(String, Timing)>);

fn quiet(c: &mut Command) -> bool {
    c.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs the `wanted` peers; those that cannot run are left out, loudly.
pub fn run(out: &Path, events: &Path, runs: usize, wanted: &[String]) -> Result<Vec<PeerRun>> {
    let venv = out.join("venv");
    let python = venv.join("bin/python");
    let ready =
        |module: &str| quiet(Command::new(&python).args(["-c", &format!("import {module}")]));
    let mut done = Vec::new();
    for (name, script, module, packages) in PEERS.iter().filter(|p| wanted.iter().any(|w| w == p.0))
    {
        if !ready(module) {
            eprintln!(
                "installing {} into {} ...",
                packages.join(", "),
                venv.display()
            );
            let made =
                python.exists() || quiet(Command::new("python3").args(["-m", "venv"]).arg(&venv));
            let installed = made
                && quiet(
                    Command::new(venv.join("bin/pip"))
                        .args(["install", "-q"])
                        .args(*packages),
                );
            if !installed || !ready(module) {
                eprintln!(
                    "{name}: could not be installed with pip into {}; the run goes on without it",
                    venv.display()
                );
                continue;
            }
        }
        match run_one(&python, script, events, runs) {
            Ok(r) => done.push(r),
            Err(e) => eprintln!("{name}: failed, the run goes on without it: {e:#}"),
        }
    }
    Ok(done)
}

fn run_one(python: &Path, script: &str, events: &Path, runs: usize) -> Result<PeerRun> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("peers")
        .join(script);
    let output = Command::new(python)
        .arg(&script)
        .arg(events)
        .arg(shared_bench().join("queries.sql"))
        .arg(runs.to_string())
        .output()?;
    if !output.status.success() {
        bail!("{}", String::from_utf8_lossy(&output.stderr));
    }
    let v: Value = serde_json::from_slice(&output.stdout)?;
    let queries = v["queries"]
        .as_array()
        .context("queries")?
        .iter()
        .map(|q| {
            let ms = |k: &str| q[k].as_f64().unwrap_or(f64::NAN);
            let timing = Timing {
                median_ms: ms("median_ms"),
                max_ms: ms("max_ms"),
                engine_ms: ms("median_ms"),
                rows: serde_json::from_value(q["rows"].clone()).unwrap_or_default(),
            };
            (q["query"].as_str().unwrap_or("?").to_string(), timing)
        })
        .collect();
    Ok((v, queries))
}

/// The engine's name a peer gave.
pub fn name(run: &PeerRun) -> &str {
    run.0["engine"].as_str().unwrap_or("?")
}

/// Per query, the best peer's median and its name.
pub fn best(peers: &[PeerRun], query: usize) -> Option<(f64, &str)> {
    peers
        .iter()
        .filter_map(|p| Some((p.1.get(query)?.1.median_ms, name(p))))
        .filter(|(ms, _)| ms.is_finite())
        .min_by(|a, b| a.0.total_cmp(&b.0))
}

/// Atoll beside every peer, per query, and the ratio to the best.
pub fn print(peers: &[PeerRun], atoll: &[(String, Timing)]) {
    for p in peers {
        println!(
            "\n{} {} loads the file in {:.2} s.",
            name(p),
            p.0["version"].as_str().unwrap_or("?"),
            p.0["load_seconds"].as_f64().unwrap_or(0.0)
        );
    }
    let heads: Vec<&str> = peers.iter().map(name).collect();
    println!(
        "\n| query | Atoll 1 node | {} | best peer | Atoll / best |\n| --- | --- |{} --- | --- |",
        heads.join(" | "),
        " --- |".repeat(heads.len())
    );
    for (i, (tag, a)) in atoll.iter().enumerate() {
        let cells: Vec<String> = peers
            .iter()
            .map(|p| {
                p.1.get(i)
                    .map_or("-".into(), |(_, t)| format!("{:.1}", t.median_ms))
            })
            .collect();
        let (best_ms, who) = best(peers, i).unwrap_or((f64::NAN, "-"));
        println!(
            "| {tag} | {:.1} | {} | {who} | {:.2}x |",
            a.median_ms,
            cells.join(" | "),
            a.median_ms / best_ms
        );
    }
}
