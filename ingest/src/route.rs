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
    let mut order: Vec<u32> = (0..partitions.len() as u32).collect();
    order.sort_by_key(|&i| partitions[i as usize]);
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
