//! Atoll's own plan nodes besides the scan, one module each.

pub mod fanout;
pub mod group_keys;
pub mod one_key_aggregate;
pub mod remote;
pub mod time_slice;
