//! The benchmark harness's parts shared by `atoll-bench` and the criterion
//! benchmarks: the same events expressed for each ingest door (`doors`).

pub mod doors;
