//! Which partition each event goes to, and splitting a batch accordingly.

use std::borrow::Cow;

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use atoll_ring::hash::partition_for_hash;
use atoll_ring::partition_for_key;
use atoll_store::{StoredBatch, Table, TableSettings};

use crate::IngestError;
use crate::convert::{FlatEvent, Scalar};

/// The partition of each event: a random key spreads events uniformly; a
/// table's `partition_key` column keeps equal values together (a missing
/// value hashes like the empty string).
pub fn assign(
    settings: &TableSettings,
    partitions: u32,
    events: &[FlatEvent<'_>],
    idempotency_key: Option<&str>,
) -> Vec<u32> {
    let key = settings.partition_key.as_deref();
    assign_each(
        settings,
        partitions,
        events.iter().map(|e| e.index),
        idempotency_key,
        |n| {
            let value = key.and_then(|k| events[n].get(k));
            value.unwrap_or(&Scalar::Null).key_bytes()
        },
    )
}

/// The same for rows `0..rows` that are the events of those indexes;
/// `key_bytes(row)` is the row's partition key value as `key_bytes` gives
/// it.
pub fn assign_rows<'k>(
    settings: &TableSettings,
    partitions: u32,
    rows: usize,
    idempotency_key: Option<&str>,
    key_bytes: impl Fn(usize) -> Cow<'k, [u8]>,
) -> Vec<u32> {
    assign_each(settings, partitions, 0..rows, idempotency_key, key_bytes)
}

fn assign_each<K: AsRef<[u8]>>(
    settings: &TableSettings,
    partitions: u32,
    indexes: impl ExactSizeIterator<Item = usize>,
    idempotency_key: Option<&str>,
    key_bytes: impl Fn(usize) -> K,
) -> Vec<u32> {
    match (&settings.partition_key, idempotency_key) {
        (Some(_), _) => (0..indexes.len())
            .map(|n| partition_for_key(key_bytes(n).as_ref(), partitions))
            .collect(),
        // A retried request must route each event where it went the first
        // time: keys derive from (Idempotency-Key, event index).
        (None, Some(k)) => indexes
            .map(|i| partition_for_key(format!("{k}\u{0}{i}").as_bytes(), partitions))
            .collect(),
        (None, None) => indexes
            .map(|_| partition_for_hash(rand::random(), partitions))
            .collect(),
    }
}

/// Splits a batch by partition: one `take` that groups rows by partition,
/// then zero-copy slices. Each group comes with its rows' positions in
/// `batch`.
pub fn group_by_partition(
    batch: &RecordBatch,
    partitions: &[u32],
) -> Result<Vec<(u32, RecordBatch, Vec<usize>)>, IngestError> {
    let order = by_partition(partitions);
    let grouped = take_record_batch(batch, &UInt32Array::from(order.clone()))
        .map_err(atoll_store::StoreError::from)?;
    let mut out = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let p = partitions[order[start] as usize];
        let end = start
            + order[start..]
                .iter()
                .take_while(|&&i| partitions[i as usize] == p)
                .count();
        let rows = order[start..end].iter().map(|&i| i as usize).collect();
        out.push((p, grouped.slice(start, end - start), rows));
        start = end;
    }
    Ok(out)
}

/// Row positions ordered by partition, in row order within a partition (a
/// counting sort: partitions are few).
fn by_partition(partitions: &[u32]) -> Vec<u32> {
    let buckets = partitions.iter().max().map_or(0, |&p| p as usize + 1);
    let mut starts = vec![0usize; buckets + 1];
    for &p in partitions {
        starts[p as usize + 1] += 1;
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    let mut order = vec![0u32; partitions.len()];
    for (row, &p) in partitions.iter().enumerate() {
        order[starts[p as usize]] = row as u32;
        starts[p as usize] += 1;
    }
    order
}

/// Appends to each partition of this node's table the rows routed to it.
pub fn store_by_partition(
    table: &Table,
    batch: &RecordBatch,
    partitions: &[u32],
) -> Result<(), IngestError> {
    for (p, rows, _) in group_by_partition(batch, partitions)? {
        table.append(p, StoredBatch::new(rows)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::prepare;
    use serde_json::json;

    #[test]
    fn partition_key_keeps_equal_values_together() {
        let settings = TableSettings {
            partition_key: Some("user".into()),
            ..TableSettings::default()
        };
        let raw: Vec<_> = (0..200)
            .map(|i| json!({"user": format!("u{}", i % 5)}))
            .collect();
        let events: Vec<_> = raw
            .iter()
            .enumerate()
            .map(|(i, e)| prepare(i, e.as_object().unwrap(), 0).unwrap())
            .collect();
        let parts = assign(&settings, 64, &events, None);
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(*p, parts[i % 5]);
        }
    }

    #[test]
    fn rows_are_ordered_by_partition_then_row() {
        let partitions = [3, 0, 3, 1, 0, 3];
        assert_eq!(by_partition(&partitions), [1, 4, 3, 0, 2, 5]);
        assert!(by_partition(&[]).is_empty());
        let batch = RecordBatch::try_from_iter([(
            "x",
            std::sync::Arc::new(arrow::array::Int64Array::from(vec![0, 1, 2, 3, 4, 5])) as _,
        )])
        .unwrap();
        let groups = group_by_partition(&batch, &partitions).unwrap();
        let summary: Vec<_> = groups
            .iter()
            .map(|(p, b, rows)| (*p, b.num_rows(), rows.clone()))
            .collect();
        assert_eq!(
            summary,
            [(0, 2, vec![1, 4]), (1, 1, vec![3]), (3, 3, vec![0, 2, 5])]
        );
    }

    #[test]
    fn random_keys_spread_events() {
        let raw: Vec<_> = (0..6_400).map(|_| json!({"a": 1})).collect();
        let events: Vec<_> = raw
            .iter()
            .enumerate()
            .map(|(i, e)| prepare(i, e.as_object().unwrap(), 0).unwrap())
            .collect();
        let parts = assign(&TableSettings::default(), 64, &events, None);
        let keyed = assign(&TableSettings::default(), 64, &events, Some("req-1"));
        assert_eq!(
            keyed,
            assign(&TableSettings::default(), 64, &events, Some("req-1")),
            "a retry routes the same"
        );
        assert_ne!(
            keyed,
            assign(&TableSettings::default(), 64, &events, Some("req-2"))
        );
        let mut counts = [0; 64];
        parts.iter().for_each(|&p| counts[p as usize] += 1);
        assert!(counts.iter().all(|&c| c > 50 && c < 150), "{counts:?}");
    }
}
