//! Builds the dashboard (`app/`, TypeScript + vite) into `$OUT_DIR/dist`,
//! which `src/lib.rs` embeds: building Atoll builds its UI, so the binary
//! is all a node needs. Needs node 20 and npm; `ATOLL_SKIP_UI=1` builds a
//! binary whose dashboard page only says it was left out.

use std::path::{Path, PathBuf};
use std::process::Command;

const INPUTS: &[&str] = &[
    "app/src",
    "app/index.html",
    "app/public",
    "app/package.json",
    "app/package-lock.json",
    "app/vite.config.ts",
    "app/tsconfig.json",
];

fn main() {
    for input in INPUTS {
        println!("cargo:rerun-if-changed={input}");
    }
    println!("cargo:rerun-if-env-changed=ATOLL_SKIP_UI");
    let app = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("app");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("dist");
    if std::env::var_os("ATOLL_SKIP_UI").is_some_and(|v| !v.is_empty() && v != "0") {
        placeholder(&out);
        return;
    }
    if needs_install(&app) {
        run(&app, &["ci", "--no-audit", "--no-fund"], &out);
    }
    run(&app, &["run", "build"], &out);
}

/// `npm ci` when `node_modules` is missing or older than the lock file.
fn needs_install(app: &Path) -> bool {
    let modified = |p: PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (
        modified(app.join("node_modules/.package-lock.json")),
        modified(app.join("package-lock.json")),
    ) {
        (Some(installed), Some(lock)) => installed < lock,
        _ => true,
    }
}

fn run(app: &Path, args: &[&str], out: &Path) {
    let status = Command::new("npm")
        .args(args)
        .current_dir(app)
        .env("ATOLL_UI_OUT", out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "`npm {}` in {} failed ({s}); the dashboard needs node 20 and npm \
             (ATOLL_SKIP_UI=1 builds Atoll without it)",
            args.join(" "),
            app.display()
        ),
        Err(e) => panic!(
            "could not run npm ({e}); the dashboard needs node 20 and npm \
             (ATOLL_SKIP_UI=1 builds Atoll without it)"
        ),
    }
}

fn placeholder(out: &Path) {
    std::fs::create_dir_all(out).unwrap();
    std::fs::write(
        out.join("index.html"),
        "<!doctype html><title>Atoll</title><p>This atoll was built with \
         ATOLL_SKIP_UI: the dashboard is left out. The HTTP API under /v1 works.</p>",
    )
    .unwrap();
}
