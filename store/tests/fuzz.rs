//! Fuzzing (proptest, stable Rust) of what the store reads from disk: log
//! segments and snapshots at recovery, and Arrow IPC. Any bytes give an
//! answer or an error, never a panic. `PROPTEST_CASES` sets the cases
//! (2,000 by default; `scripts/fuzz` runs more).

use std::io::Write;

use atoll_store::wal::{FsyncPolicy, Wal};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A frame as the log writes it (length, checksum, payload), so that the
/// payload reaches the record decoder.
fn framed(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Record-shaped payloads: a kind byte, then anything.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    (0u8..6, proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(kind, rest)| {
        let mut p = vec![kind];
        p.extend(rest);
        p
    })
}

fn recover(log: &[u8], snapshot: Option<&[u8]>) {
    let dir = tempfile::tempdir().unwrap();
    let mut f = std::fs::File::create(dir.path().join(format!("{:020}.log", 1))).unwrap();
    f.write_all(log).unwrap();
    if let Some(s) = snapshot {
        std::fs::write(dir.path().join(format!("{:020}.snapshot", 1)), s).unwrap();
    }
    if let Ok((wal, _)) = Wal::open(dir.path(), FsyncPolicy::Never, |_| ()) {
        drop(wal);
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_log_recovery_from_any_bytes(log in proptest::collection::vec(any::<u8>(), 0..2_000)) {
        recover(&log, None);
    }

    #[test]
    fn fuzz_log_recovery_from_well_framed_records(
        payloads in proptest::collection::vec(payload(), 0..8),
        tail in proptest::collection::vec(any::<u8>(), 0..40),
        as_snapshot in any::<bool>(),
    ) {
        let mut bytes: Vec<u8> = payloads.iter().flat_map(|p| framed(p)).collect();
        bytes.extend(tail);
        if as_snapshot {
            recover(b"", Some(&bytes));
        } else {
            recover(&bytes, None);
        }
    }

    #[test]
    fn fuzz_arrow_ipc_from_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2_000)) {
        let _ = atoll_store::wal::read_ipc(&bytes);
    }
}
