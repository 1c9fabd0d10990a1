//! Where a key lands on the ring.

use xxhash_rust::xxh3::xxh3_64;

/// Index of a partition, `0..partitions`.
pub type PartitionId = u32;

/// Maps a key to its partition.
///
/// The high bits of a 64-bit hash pick the partition, so that partition `p`
/// owns the contiguous slice `[p * 2^64/P, (p+1) * 2^64/P)` of the hash
/// space, as in riak_core. `partitions` must be a power of two.
pub fn partition_for_key(key: &[u8], partitions: u32) -> PartitionId {
    partition_for_hash(xxh3_64(key), partitions)
}

/// Maps an already computed 64-bit hash to its partition.
pub fn partition_for_hash(hash: u64, partitions: u32) -> PartitionId {
    debug_assert!(partitions.is_power_of_two());
    let bits = partitions.trailing_zeros();
    if bits == 0 {
        0
    } else {
        (hash >> (64 - bits)) as PartitionId
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spread_over_all_partitions() {
        let mut counts = [0u32; 64];
        for i in 0..64_000u32 {
            counts[partition_for_key(&i.to_le_bytes(), 64) as usize] += 1;
        }
        // 1,000 expected per partition; a uniform hash stays well inside 20%.
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn one_partition_takes_everything() {
        assert_eq!(partition_for_key(b"anything", 1), 0);
    }

    #[test]
    fn same_key_same_partition() {
        assert_eq!(
            partition_for_key(b"user-7", 256),
            partition_for_key(b"user-7", 256)
        );
    }
}
