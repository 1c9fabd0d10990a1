//! The placement model of an Atoll cluster, riak_core style: a fixed hash
//! space cut into `2^k` partitions, claimed by the joined nodes.
//!
//! Owns: the hash space, partitions, claim (partition -> owner, balanced,
//! minimal movement), epochs, preference lists and write targets.
//!
//! Must not know: Arrow, HTTP, gossip, or any I/O (no tokio, no sockets):
//! placement rules are pure functions, tested and reasoned about on their
//! own. Who is a member and which ring is current is `atoll-cluster`'s.

pub mod claim;
pub mod hash;

pub use claim::{NodeId, Ring, RingError, Target, write_targets};
pub use hash::{PartitionId, partition_for_key};

/// Partitions in a ring unless configured otherwise.
pub const DEFAULT_PARTITIONS: u32 = 64;
