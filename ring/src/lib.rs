//! The placement model of an Atoll cluster, riak_core style: a fixed hash
//! space cut into `2^k` partitions, claimed by the joined nodes.
//!
//! This crate knows nothing of Arrow or HTTP, so that placement rules can be
//! tested (and reasoned about) on their own.

pub mod claim;
pub mod hash;
pub mod membership;

pub use claim::{NodeId, Ring, RingError, Target, write_targets};
pub use hash::{PartitionId, partition_for_key};
pub use membership::{Member, Membership, MembershipConfig, MembershipError};

/// Partitions in a ring unless configured otherwise.
pub const DEFAULT_PARTITIONS: u32 = 64;
