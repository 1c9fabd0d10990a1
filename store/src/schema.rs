//! Schema-on-write: a table's columns appear as events bring them, and an
//! Int64 column widens to Float64 when a float arrives. Batches keep the
//! schema they were written with and are adapted to the table's current one
//! when read.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions, new_null_array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit};

use crate::StoreError;

/// The column every table has: Timestamp(Microsecond, UTC).
pub const TIME_COLUMN: &str = "time";

/// The column of an event's sample rate (Scuba's and Honeycomb's
/// `samplerate`): the event stands for that many events. Always Int64, at
/// least 1; NULL (no rate) counts as 1.
pub const SAMPLE_RATE_COLUMN: &str = "samplerate";
/// Longest column name, in bytes.
pub const MAX_COLUMN_NAME_BYTES: usize = 256;
/// Most columns a table may have, `time` included.
pub const MAX_COLUMNS: usize = 2_000;

/// The logical types a column can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    Timestamp,
    Int64,
    Float64,
    Utf8,
    Boolean,
    /// A set of strings (Scuba's "tagset"), stored as List<Utf8>.
    StringList,
}

impl ColumnType {
    pub fn data_type(self) -> DataType {
        match self {
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Utf8 => DataType::Utf8,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::StringList => {
                DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
            }
        }
    }

    pub fn from_data_type(dt: &DataType) -> Option<ColumnType> {
        Some(match dt {
            DataType::Timestamp(_, _) => ColumnType::Timestamp,
            DataType::Int64 => ColumnType::Int64,
            DataType::Float64 => ColumnType::Float64,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColumnType::Utf8,
            DataType::Dictionary(_, v) if matches!(v.as_ref(), DataType::Utf8) => ColumnType::Utf8,
            DataType::Boolean => ColumnType::Boolean,
            DataType::List(_) => ColumnType::StringList,
            _ => return None,
        })
    }

    /// The type a column of type `self` has after storing a value of type
    /// `incoming`, or None when the value does not fit.
    pub fn merge(self, incoming: ColumnType) -> Option<ColumnType> {
        match (self, incoming) {
            (a, b) if a == b => Some(a),
            (ColumnType::Int64, ColumnType::Float64) | (ColumnType::Float64, ColumnType::Int64) => {
                Some(ColumnType::Float64)
            }
            _ => None,
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ColumnType::Timestamp => "Timestamp",
            ColumnType::Int64 => "Int64",
            ColumnType::Float64 => "Float64",
            ColumnType::Utf8 => "Utf8",
            ColumnType::Boolean => "Boolean",
            ColumnType::StringList => "List<Utf8>",
        })
    }
}

/// A table's current columns, in the order they first appeared.
#[derive(Debug, Clone)]
pub struct TableSchema {
    columns: Vec<(String, ColumnType)>,
    index: HashMap<String, usize, foldhash::fast::RandomState>,
    arrow: SchemaRef,
}

/// What accepting one event did to a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaChange {
    None,
    Changed,
}

impl Default for TableSchema {
    fn default() -> Self {
        TableSchema::from_columns(vec![(TIME_COLUMN.to_string(), ColumnType::Timestamp)])
    }
}

impl TableSchema {
    fn from_columns(columns: Vec<(String, ColumnType)>) -> TableSchema {
        let index = columns
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.clone(), i))
            .collect();
        let arrow = Arc::new(Schema::new(
            columns
                .iter()
                .map(|(n, t)| Field::new(n, t.data_type(), n != TIME_COLUMN))
                .collect::<Vec<_>>(),
        ));
        TableSchema {
            columns,
            index,
            arrow,
        }
    }

    pub fn arrow(&self) -> &SchemaRef {
        &self.arrow
    }

    pub fn columns(&self) -> &[(String, ColumnType)] {
        &self.columns
    }

    /// Where `name` is in `columns()`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub fn column_type(&self, name: &str) -> Option<ColumnType> {
        self.index.get(name).map(|&i| self.columns[i].1)
    }

    pub fn field(&self, name: &str) -> Option<&FieldRef> {
        self.index.get(name).map(|&i| &self.arrow.fields()[i])
    }

    /// Takes one event's columns, all or nothing: on error the schema is
    /// unchanged and the error names the offending column.
    pub fn accept<'a>(
        &mut self,
        table: &str,
        fields: impl IntoIterator<Item = (&'a str, ColumnType)>,
    ) -> Result<SchemaChange, StoreError> {
        let mut changes: Vec<(&str, ColumnType)> = Vec::new();
        let mut added = 0;
        for (name, incoming) in fields {
            if name == crate::writes::WRITE_COLUMN {
                return Err(StoreError::ReservedColumn(name.to_string()));
            }
            if name.len() > MAX_COLUMN_NAME_BYTES {
                return Err(StoreError::ColumnNameTooLong {
                    len: name.len(),
                    limit: MAX_COLUMN_NAME_BYTES,
                });
            }
            let existing = self
                .column_type(name)
                .or_else(|| changes.iter().find(|c| c.0 == name).map(|c| c.1));
            match existing {
                Some(existing) => match existing.merge(incoming) {
                    Some(t) if t == existing => {}
                    Some(t) => changes.push((name, t)),
                    None => {
                        return Err(StoreError::TypeConflict {
                            column: name.to_string(),
                            existing,
                            incoming,
                        });
                    }
                },
                None => {
                    added += 1;
                    if self.columns.len() + added > MAX_COLUMNS {
                        return Err(StoreError::TooManyColumns {
                            table: table.to_string(),
                            column: name.to_string(),
                            count: self.columns.len() + added,
                            limit: MAX_COLUMNS,
                        });
                    }
                    changes.push((name, incoming));
                }
            }
        }
        if changes.is_empty() {
            return Ok(SchemaChange::None);
        }
        let mut columns = self.columns.clone();
        for (name, t) in changes {
            match self.index.get(name) {
                Some(&i) => columns[i].1 = t,
                None if !columns.iter().any(|c| c.0 == name) => columns.push((name.to_string(), t)),
                None => columns
                    .iter_mut()
                    .filter(|c| c.0 == name)
                    .for_each(|c| c.1 = t),
            }
        }
        *self = TableSchema::from_columns(columns);
        Ok(SchemaChange::Changed)
    }
}

impl TableSchema {
    /// Merges columns known elsewhere in the cluster; never refuses: a
    /// conflict other than Int64/Float64 makes the column Utf8.
    pub fn reconcile(&mut self, table: &str, fields: &[(String, ColumnType)]) -> SchemaChange {
        let mut change = SchemaChange::None;
        for (name, incoming) in fields {
            let merged = match self.column_type(name) {
                Some(existing) => existing.merge(*incoming).unwrap_or(ColumnType::Utf8),
                None => *incoming,
            };
            if self.column_type(name) == Some(merged) {
                continue;
            }
            let mut columns = self.columns.clone();
            match self.index.get(name.as_str()) {
                Some(&i) => columns[i].1 = merged,
                None if columns.len() < MAX_COLUMNS => columns.push((name.clone(), merged)),
                None => {
                    tracing::warn!(table, column = %name, "column limit reached; a replica's column is not readable here");
                    continue;
                }
            }
            *self = TableSchema::from_columns(columns);
            change = SchemaChange::Changed;
        }
        change
    }
}

/// Reads a batch written under an older schema through `target`: missing
/// columns become nulls, widened or dictionary columns are cast.
pub fn adapt_batch(batch: &RecordBatch, target: &SchemaRef) -> Result<RecordBatch, StoreError> {
    if batch.schema().fields() == target.fields() {
        return Ok(batch.clone());
    }
    let rows = batch.num_rows();
    let columns = target
        .fields()
        .iter()
        .map(|f| adapt_column(batch.column_by_name(f.name()), f, rows))
        .collect::<Result<Vec<_>, _>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        target.clone(),
        columns,
        &options,
    )?)
}

/// A column read as `field` says. Widening (and dictionary / view
/// strings) is a cast; narrowing (Float64 data read as Int64, text as a
/// number) would lose values silently, so it is refused: it means the
/// reader planned with a schema older than this node's.
fn adapt_column(
    column: Option<&ArrayRef>,
    field: &Field,
    rows: usize,
) -> Result<ArrayRef, StoreError> {
    let to = field.data_type();
    match column {
        Some(c) if c.data_type() == to => Ok(c.clone()),
        Some(c) => {
            let stored = ColumnType::from_data_type(c.data_type());
            let planned = ColumnType::from_data_type(to);
            if let (Some(stored), Some(planned)) = (stored, planned)
                && stored != planned
                && stored.merge(planned).unwrap_or(ColumnType::Utf8) == stored
            {
                return Err(StoreError::SchemaAhead {
                    column: field.name().clone(),
                    stored,
                    planned,
                });
            }
            Ok(cast(c, to)?)
        }
        None => Ok(new_null_array(to, rows)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Float64Array, Int64Array};

    fn accept(
        s: &mut TableSchema,
        fields: &[(&str, ColumnType)],
    ) -> Result<SchemaChange, StoreError> {
        s.accept("t", fields.iter().copied())
    }

    #[test]
    fn reading_a_wider_column_narrower_is_refused() {
        let wide = Arc::new(Schema::new(vec![Field::new("v", DataType::Float64, true)]));
        let narrow = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
        let batch =
            RecordBatch::try_new(wide.clone(), vec![Arc::new(Float64Array::from(vec![1.5]))])
                .unwrap();
        let err = adapt_batch(&batch, &narrow).unwrap_err();
        assert!(err.to_string().contains("run the query again"), "{err}");
        let ints = RecordBatch::try_new(narrow.clone(), vec![Arc::new(Int64Array::from(vec![2]))])
            .unwrap();
        let read = adapt_batch(&ints, &wide).unwrap();
        assert_eq!(
            read.column(0)
                .as_any()
                .downcast_ref::<Float64Array>()
                .unwrap()
                .value(0),
            2.0
        );
    }

    #[test]
    fn new_columns_appear_in_order() {
        let mut s = TableSchema::default();
        assert_eq!(
            accept(&mut s, &[("a", ColumnType::Int64), ("b", ColumnType::Utf8)]),
            Ok(SchemaChange::Changed)
        );
        assert_eq!(
            accept(&mut s, &[("a", ColumnType::Int64)]),
            Ok(SchemaChange::None)
        );
        let names: Vec<_> = s.columns().iter().map(|c| c.0.as_str()).collect();
        assert_eq!(names, ["time", "a", "b"]);
    }

    #[test]
    fn int_widens_to_float_but_not_back() {
        let mut s = TableSchema::default();
        accept(&mut s, &[("x", ColumnType::Int64)]).unwrap();
        assert_eq!(
            accept(&mut s, &[("x", ColumnType::Float64)]),
            Ok(SchemaChange::Changed)
        );
        assert_eq!(s.column_type("x"), Some(ColumnType::Float64));
        assert_eq!(
            accept(&mut s, &[("x", ColumnType::Int64)]),
            Ok(SchemaChange::None)
        );
        assert_eq!(s.column_type("x"), Some(ColumnType::Float64));
    }

    #[test]
    fn conflicting_event_changes_nothing() {
        let mut s = TableSchema::default();
        accept(&mut s, &[("x", ColumnType::Int64)]).unwrap();
        let err = accept(&mut s, &[("y", ColumnType::Utf8), ("x", ColumnType::Utf8)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "column \"x\" is Int64, cannot store Utf8 in it"
        );
        assert_eq!(s.column_type("y"), None);
    }

    #[test]
    fn limits_on_names_and_column_count() {
        let mut s = TableSchema::default();
        let long = "c".repeat(257);
        assert!(matches!(
            accept(&mut s, &[(&long, ColumnType::Int64)]),
            Err(StoreError::ColumnNameTooLong { .. })
        ));
        let names: Vec<String> = (0..MAX_COLUMNS).map(|i| format!("c{i}")).collect();
        let fields: Vec<_> = names
            .iter()
            .map(|n| (n.as_str(), ColumnType::Int64))
            .collect();
        let err = accept(&mut s, &fields).unwrap_err();
        assert!(
            err.to_string().contains("over the limit of 2000 columns"),
            "{err}"
        );
        assert_eq!(
            accept(&mut s, &fields[..MAX_COLUMNS - 1]),
            Ok(SchemaChange::Changed)
        );
    }

    #[test]
    fn replicas_reconcile_conflicts() {
        let mut s = TableSchema::default();
        accept(
            &mut s,
            &[("x", ColumnType::Int64), ("y", ColumnType::Boolean)],
        )
        .unwrap();
        let remote = [
            ("x".to_string(), ColumnType::Float64),
            ("y".to_string(), ColumnType::Int64),
            ("z".to_string(), ColumnType::Utf8),
        ];
        assert_eq!(s.reconcile("t", &remote), SchemaChange::Changed);
        assert_eq!(s.column_type("x"), Some(ColumnType::Float64));
        assert_eq!(s.column_type("y"), Some(ColumnType::Utf8));
        assert_eq!(s.column_type("z"), Some(ColumnType::Utf8));
        assert_eq!(s.reconcile("t", &remote), SchemaChange::None);
    }

    #[test]
    fn old_batches_read_through_the_new_schema() {
        let mut s = TableSchema::default();
        accept(&mut s, &[("x", ColumnType::Int64)]).unwrap();
        let old_schema = Arc::new(Schema::new(vec![
            Field::new("time", ColumnType::Timestamp.data_type(), false),
            Field::new("x", DataType::Int64, true),
        ]));
        let time = arrow::array::TimestampMicrosecondArray::from(vec![10, 20]).with_timezone("UTC");
        let old = RecordBatch::try_new(
            old_schema,
            vec![Arc::new(time), Arc::new(Int64Array::from(vec![1, 2]))],
        )
        .unwrap();
        accept(
            &mut s,
            &[("x", ColumnType::Float64), ("y", ColumnType::Utf8)],
        )
        .unwrap();
        let read = adapt_batch(&old, s.arrow()).unwrap();
        assert_eq!(read.schema().fields(), s.arrow().fields());
        let x = read
            .column_by_name("x")
            .unwrap()
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert_eq!(x.values(), &[1.0, 2.0]);
        assert_eq!(read.column_by_name("y").unwrap().null_count(), 2);
    }
}
