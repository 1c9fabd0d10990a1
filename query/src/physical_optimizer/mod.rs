//! Atoll's plan rewrites, registered on the session after DataFusion's
//! own, in this order.

pub mod count_rows;
pub mod distribute;
pub mod one_key_aggregate;
pub mod slice_joins;
