//! Opening a node's data directory: recovery before the node serves, and
//! the checkpoints that keep the log short.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use atoll_cluster::{Hints, LocalReplica};
use atoll_store::Store;
use atoll_store::wal::Wal;

use crate::ServeArgs;

/// Log growth below which no checkpoint is taken: a snapshot rewrites the
/// whole store, so it waits until the log is at least as large as the last
/// snapshot (each byte is then rewritten at most about twice).
const MIN_CHECKPOINT_BYTES: u64 = 64 << 20;

/// This node as a replica, its data recovered from `--data-dir` when given.
pub fn open(
    args: &ServeArgs,
    store: Arc<Store>,
    hints: Arc<Hints>,
) -> anyhow::Result<LocalReplica> {
    let local = LocalReplica::new(store, hints, None);
    let Some(dir) = &args.data_dir else {
        tracing::info!("no --data-dir: data is kept in memory only and lost when this node stops");
        return Ok(local);
    };
    let started = Instant::now();
    let (wal, recovered) = Wal::open(dir, args.fsync, |record| local.recover(record))
        .with_context(|| format!("cannot open the data directory {}", dir.display()))?;
    let rows: u64 = local.store.tables().iter().map(|t| t.rows()).sum();
    tracing::info!(
        dir = %dir.display(),
        rows,
        snapshot_records = recovered.snapshot_records,
        log_records = recovered.log_records,
        torn_tails_cut = recovered.torn.len(),
        seconds = started.elapsed().as_secs_f64(),
        fsync = ?args.fsync,
        "recovered the data directory"
    );
    Ok(local.with_wal(wal))
}

/// Takes a checkpoint whenever the log has outgrown the last snapshot.
pub fn spawn_checkpoints(local: Arc<LocalReplica>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Some(wal) = local.wal.clone() else {
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let (logged, snapshot) = wal.growth();
            if logged < MIN_CHECKPOINT_BYTES.max(snapshot) {
                continue;
            }
            let (wal, local) = (wal.clone(), local.clone());
            let started = Instant::now();
            match tokio::task::spawn_blocking(move || wal.checkpoint(|| local.capture())).await {
                Ok(Ok(bytes)) => tracing::info!(
                    bytes,
                    seconds = started.elapsed().as_secs_f64(),
                    "checkpoint: snapshot written, log truncated"
                ),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "checkpoint failed; the log keeps growing")
                }
                Err(e) => tracing::error!(error = %e, "checkpoint task failed"),
            }
        }
    });
}
