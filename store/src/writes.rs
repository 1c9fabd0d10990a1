//! Write ids. Every batch a coordinator delivers to a partition's replicas
//! carries the id of that write in a hidden column, the same id on every
//! replica. Rows keep it through sealing, sorting and merging, so a replica
//! can say exactly which writes it holds, take a write it already holds
//! only once (a retried request, a hint handed back, a catch-up racing with
//! live writes), and fetch from a peer only the rows of the writes it
//! misses.
//!
//! The column is a dictionary (u32 keys into the batch's u64 ids), so it
//! costs 4 bytes a row; it is not part of the table's schema, so queries
//! never see it.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, DictionaryArray, RecordBatch, UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, UInt32Type};

use crate::StoreError;

/// The hidden column of write ids.
pub const WRITE_COLUMN: &str = "__write";

pub fn write_id_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::UInt32), Box::new(DataType::UInt64))
}

pub fn write_field() -> Field {
    Field::new(WRITE_COLUMN, write_id_type(), true)
}

/// The batch with every row marked as write `id` (replacing any mark).
pub fn with_write_id(batch: &RecordBatch, id: u64) -> Result<RecordBatch, StoreError> {
    let rows = batch.num_rows();
    let ids = DictionaryArray::<UInt32Type>::try_new(
        UInt32Array::from(vec![0u32; rows]),
        Arc::new(UInt64Array::from(vec![id])),
    )?;
    let schema = batch.schema();
    let mut fields: Vec<_> = schema
        .fields()
        .iter()
        .filter(|f| f.name() != WRITE_COLUMN)
        .cloned()
        .collect();
    let mut columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .filter(|(f, _)| f.name() != WRITE_COLUMN)
        .map(|(_, c)| c.clone())
        .collect();
    fields.push(Arc::new(write_field()));
    columns.push(Arc::new(ids));
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// The batch's write-id column: a key per row into the batch's ids.
fn ids_of(batch: &RecordBatch) -> Option<(&DictionaryArray<UInt32Type>, &UInt64Array)> {
    let ids = batch
        .column_by_name(WRITE_COLUMN)?
        .as_any()
        .downcast_ref::<DictionaryArray<UInt32Type>>()?;
    let values = ids.values().as_any().downcast_ref::<UInt64Array>()?;
    Some((ids, values))
}

/// Each row's write id (None for a row without one).
pub fn row_ids(batch: &RecordBatch) -> Vec<Option<u64>> {
    let Some((ids, values)) = ids_of(batch) else {
        return vec![None; batch.num_rows()];
    };
    ids.keys()
        .iter()
        .map(|k| k.map(|k| values.value(k as usize)))
        .collect()
}

/// The distinct write ids of a batch's rows.
pub fn ids_in(batch: &RecordBatch) -> HashSet<u64> {
    let Some((ids, values)) = ids_of(batch) else {
        return HashSet::new();
    };
    // Which dictionary entries some row uses (a sliced or filtered batch
    // keeps entries no row uses any more), without a per-row hash.
    let mut used = vec![false; values.len()];
    for k in ids.keys().iter().flatten() {
        used[k as usize] = true;
    }
    used.iter()
        .zip(values.iter())
        .filter_map(|(&u, id)| if u { id } else { None })
        .collect()
}

/// The rows of `batch` whose write id (None: the row has none) passes
/// `keep`; None when no row is left.
pub fn rows_where(
    batch: &RecordBatch,
    keep: impl Fn(Option<u64>) -> bool,
) -> Result<Option<RecordBatch>, StoreError> {
    let ids = row_ids(batch);
    let mask: BooleanArray = ids.iter().map(|&id| Some(keep(id))).collect();
    let kept = mask.true_count();
    if kept == batch.num_rows() {
        return Ok(Some(batch.clone()));
    }
    if kept == 0 {
        return Ok(None);
    }
    Ok(Some(arrow::compute::filter_record_batch(batch, &mask)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::compute::concat_batches;

    fn batch(x: &[i64]) -> RecordBatch {
        let schema = Schema::new(vec![Field::new("x", DataType::Int64, true)]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(Int64Array::from(x.to_vec()))],
        )
        .unwrap()
    }

    #[test]
    fn ids_survive_concatenation_and_filtering() {
        let a = with_write_id(&batch(&[1, 2]), 7).unwrap();
        let b = with_write_id(&batch(&[3]), 9).unwrap();
        let both = concat_batches(&a.schema(), [&a, &b]).unwrap();
        assert_eq!(row_ids(&both), vec![Some(7), Some(7), Some(9)]);
        assert_eq!(ids_in(&both), HashSet::from([7, 9]));
        let without_7 = rows_where(&both, |id| id != Some(7)).unwrap().unwrap();
        assert_eq!(without_7.num_rows(), 1);
        assert_eq!(row_ids(&without_7), vec![Some(9)]);
        assert_eq!(ids_in(&without_7), HashSet::from([9]), "7 is no row's");
        assert_eq!(ids_in(&both.slice(0, 2)), HashSet::from([7]));
        assert!(rows_where(&both, |_| false).unwrap().is_none());
        let marked_again = with_write_id(&both, 1).unwrap();
        assert_eq!(marked_again.num_columns(), 2, "the mark is replaced");
        assert_eq!(ids_in(&marked_again), HashSet::from([1]));
    }

    #[test]
    fn rows_without_ids_read_as_none() {
        let plain = batch(&[1, 2]);
        assert_eq!(row_ids(&plain), vec![None, None]);
        assert!(ids_in(&plain).is_empty());
        let kept = rows_where(&plain, |id| id.is_none()).unwrap().unwrap();
        assert_eq!(kept.num_rows(), 2);
    }
}
