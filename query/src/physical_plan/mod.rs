//! Atoll's own plan nodes besides the scan, one module each.

pub mod fanout;
pub mod remote;
pub mod time_slice;
