//! JSON events -> one Arrow batch, typed by the table's schema, which the
//! events may extend (new columns) or widen (Int64 -> Float64).

use crate::error::BadEvent;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, ListBuilder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{Field, Schema};
use atoll_store::{ColumnType, SAMPLE_RATE_COLUMN, SchemaChange, TIME_COLUMN, Table, TableSchema};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::IngestError;
use crate::body::ParsedEvent;
use crate::route;
use crate::time::parse_time;

/// One event that was not stored, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejection {
    pub index: usize,
    pub error: String,
    /// Refused for want of replicas (W not reached), not for what it is:
    /// the same event may be sent again.
    #[serde(skip)]
    pub unavailable: bool,
}

/// The answer to an ingest request.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IngestOutcome {
    pub accepted: usize,
    /// The first rejections (`limits::MAX_REJECTIONS_LISTED`, 1,000), in
    /// order.
    pub rejected: Vec<Rejection>,
    /// All rejections, when there were more than are listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected_total: Option<usize>,
}

impl IngestOutcome {
    /// Events rejected, listed or not.
    pub fn rejected_count(&self) -> usize {
        self.rejected_total.unwrap_or(self.rejected.len())
    }
}

/// A leaf value of a flattened event.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'a, str>),
    StrList(Vec<Option<Cow<'a, str>>>),
}

impl Scalar<'_> {
    fn column_type(&self) -> Option<ColumnType> {
        Some(match self {
            Scalar::Null => return None,
            Scalar::Bool(_) => ColumnType::Boolean,
            Scalar::Int(_) => ColumnType::Int64,
            Scalar::Float(_) => ColumnType::Float64,
            Scalar::Str(_) => ColumnType::Utf8,
            Scalar::StrList(_) => ColumnType::StringList,
        })
    }

    fn into_owned(self) -> Scalar<'static> {
        match self {
            Scalar::Null => Scalar::Null,
            Scalar::Bool(b) => Scalar::Bool(b),
            Scalar::Int(i) => Scalar::Int(i),
            Scalar::Float(f) => Scalar::Float(f),
            Scalar::Str(s) => Scalar::Str(Cow::Owned(s.into_owned())),
            Scalar::StrList(l) => Scalar::StrList(
                l.into_iter()
                    .map(|s| s.map(|s| Cow::Owned(s.into_owned())))
                    .collect(),
            ),
        }
    }

    /// The bytes a partition key hashes: the value as text.
    pub fn key_bytes(&self) -> Cow<'_, [u8]> {
        match self {
            Scalar::Null => Cow::Borrowed(b""),
            Scalar::Bool(b) => Cow::Borrowed(if *b { b"true" } else { b"false" }),
            Scalar::Int(i) => Cow::Owned(i.to_string().into_bytes()),
            Scalar::Float(f) => Cow::Owned(f.to_string().into_bytes()),
            Scalar::Str(s) => Cow::Borrowed(s.as_bytes()),
            Scalar::StrList(l) => Cow::Owned(
                l.iter()
                    .map(|s| s.as_deref().unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join("\u{1f}")
                    .into_bytes(),
            ),
        }
    }
}

/// An event ready to be typed: its time and its flattened columns.
#[derive(Debug)]
pub struct FlatEvent<'a> {
    pub index: usize,
    pub time: i64,
    pub fields: Vec<(Cow<'a, str>, Scalar<'a>)>,
}

impl FlatEvent<'_> {
    /// The same event, owning its text.
    pub fn into_owned(self) -> FlatEvent<'static> {
        FlatEvent {
            index: self.index,
            time: self.time,
            fields: self
                .fields
                .into_iter()
                .map(|(n, v)| (Cow::Owned(n.into_owned()), v.into_owned()))
                .collect(),
        }
    }

    pub fn get(&self, column: &str) -> Option<&Scalar<'_>> {
        self.fields
            .iter()
            .find(|(n, _)| n == column)
            .map(|(_, v)| v)
    }

    fn typed_fields(&self) -> impl Iterator<Item = (&str, ColumnType)> {
        self.fields
            .iter()
            .filter_map(|(n, v)| v.column_type().map(|t| (n.as_ref(), t)))
    }
}

/// Nested objects become `a.b` columns; arrays of strings become string
/// sets; any other array is kept as its JSON text.
pub fn flatten<'a>(
    prefix: Option<&str>,
    obj: &'a Map<String, Value>,
    out: &mut Vec<(Cow<'a, str>, Scalar<'a>)>,
) {
    for (key, value) in obj {
        let name: Cow<'a, str> = match prefix {
            None => Cow::Borrowed(key.as_str()),
            Some(p) => Cow::Owned(format!("{p}.{key}")),
        };
        let scalar = match value {
            Value::Object(inner) => {
                flatten(Some(&name), inner, out);
                continue;
            }
            Value::Null => Scalar::Null,
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Scalar::Int(i),
                None => Scalar::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => Scalar::Str(Cow::Borrowed(s)),
            Value::Array(items) => {
                string_set(items).unwrap_or_else(|| Scalar::Str(Cow::Owned(value.to_string())))
            }
        };
        out.push((name, scalar));
    }
}

fn string_set(items: &[Value]) -> Option<Scalar<'_>> {
    items
        .iter()
        .map(|v| match v {
            Value::String(s) => Some(Some(Cow::Borrowed(s.as_str()))),
            Value::Null => Some(None),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()
        .map(Scalar::StrList)
}

/// Reads `time` and flattens the rest of one event.
pub fn prepare(
    index: usize,
    event: &Map<String, Value>,
    arrival: i64,
) -> Result<FlatEvent<'_>, BadEvent> {
    let time = match event.get(TIME_COLUMN) {
        Some(v) => parse_time(v)?.unwrap_or(arrival),
        None => arrival,
    };
    let mut fields = Vec::with_capacity(event.len());
    flatten(None, event, &mut fields);
    fields.retain(|(n, _)| n != TIME_COLUMN);
    Ok(FlatEvent {
        index,
        time,
        fields,
    })
}

/// A request's events as one batch, typed against the table's schema
/// (which they may have extended), with the partition of each row.
pub struct Converted {
    pub batch: Option<RecordBatch>,
    /// Partition of each row of `batch`.
    pub partitions: Vec<u32>,
    /// Request index of each row of `batch`.
    pub events: Vec<usize>,
    pub rejected: Vec<Rejection>,
}

/// Converts a request's events: each is accepted whole or rejected with a
/// message naming the column, never failing the others.
pub fn convert_events(
    table: &Table,
    events: &[ParsedEvent],
    arrival: i64,
    idempotency_key: Option<&str>,
) -> Result<Converted, IngestError> {
    convert_flat(table, prepare_all(events, arrival), idempotency_key)
}

/// Each parsed event flattened, or the reason it cannot be stored.
pub fn prepare_all(events: &[ParsedEvent], arrival: i64) -> Vec<Result<FlatEvent<'_>, BadEvent>> {
    events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            event
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|e| prepare(index, e, arrival))
        })
        .collect()
}

/// The same for events already flat (or the reason each could not be read).
pub fn convert_flat(
    table: &Table,
    events: Vec<Result<FlatEvent<'_>, BadEvent>>,
    idempotency_key: Option<&str>,
) -> Result<Converted, IngestError> {
    let mut rejected = Vec::new();
    let mut flat = Vec::with_capacity(events.len());
    for (index, event) in events.into_iter().enumerate() {
        match event {
            Ok(f) => flat.push(f),
            Err(error) => rejected.push(Rejection {
                index,
                error: error.0,
                unavailable: false,
            }),
        }
    }
    let (verdicts, schema) = table.evolve(|schema| decide(table.name(), schema, &flat));
    let mut accepted = Vec::with_capacity(flat.len());
    for (event, verdict) in flat.into_iter().zip(verdicts) {
        match verdict {
            Ok(()) => accepted.push(event),
            Err(error) => rejected.push(Rejection {
                index: event.index,
                error: error.0,
                unavailable: false,
            }),
        }
    }
    rejected.sort_by_key(|r| r.index);
    if accepted.is_empty() {
        return Ok(Converted {
            batch: None,
            partitions: vec![],
            events: vec![],
            rejected,
        });
    }
    Ok(Converted {
        batch: Some(build_batch(&schema, &accepted)?),
        partitions: route::assign(
            &table.settings(),
            table.partitions(),
            &accepted,
            idempotency_key,
        ),
        events: accepted.iter().map(|e| e.index).collect(),
        rejected,
    })
}

/// Converts and stores events in this node's own table, all partitions
/// local (no replication).
pub fn ingest_events(
    table: &Table,
    events: &[ParsedEvent],
    arrival: i64,
) -> Result<IngestOutcome, IngestError> {
    let converted = convert_events(table, events, arrival, None)?;
    if let Some(batch) = &converted.batch {
        route::store_by_partition(table, batch, &converted.partitions)?;
    }
    Ok(IngestOutcome {
        accepted: converted.events.len(),
        rejected: converted.rejected,
        rejected_total: None,
    })
}

type Verdicts = Vec<Result<(), BadEvent>>;

fn decide(
    table: &str,
    schema: &mut TableSchema,
    events: &[FlatEvent<'_>],
) -> (Verdicts, SchemaChange) {
    let mut change = SchemaChange::None;
    let now = atoll_store::now_micros();
    let verdicts = events
        .iter()
        .map(|e| {
            let checked = crate::limits::check(e, now).and_then(|()| sample_rate_ok(e));
            checked.and_then(|()| match schema.accept(table, e.typed_fields()) {
                Ok(SchemaChange::Changed) => {
                    change = SchemaChange::Changed;
                    Ok(())
                }
                Ok(SchemaChange::None) => Ok(()),
                Err(err) => Err(BadEvent(err.to_string())),
            })
        })
        .collect();
    (verdicts, change)
}

/// An event's `samplerate`, if it has one, is a whole number of at least 1.
fn sample_rate_ok(event: &FlatEvent<'_>) -> Result<(), BadEvent> {
    match event.get(SAMPLE_RATE_COLUMN) {
        None | Some(Scalar::Null) => Ok(()),
        Some(Scalar::Int(n)) if *n >= 1 => Ok(()),
        Some(other) => Err(BadEvent(format!(
            "column \"{SAMPLE_RATE_COLUMN}\" is the event's sample rate: a whole number of at least 1 (the event stands for that many), not {}",
            describe_scalar(other)
        ))),
    }
}

fn describe_scalar(v: &Scalar<'_>) -> String {
    match v {
        Scalar::Null => "null".into(),
        Scalar::Bool(b) => b.to_string(),
        Scalar::Int(i) => i.to_string(),
        Scalar::Float(f) => f.to_string(),
        Scalar::Str(s) => format!("{s:?}"),
        Scalar::StrList(_) => "a list".into(),
    }
}

/// Builds one batch of the columns these events have, typed by `schema`
/// (which accepted every one of them).
pub fn build_batch(
    schema: &TableSchema,
    events: &[FlatEvent<'_>],
) -> Result<RecordBatch, IngestError> {
    let mut columns: Vec<(&str, Column)> = Vec::new();
    let mut index: HashMap<&str, usize, foldhash::fast::RandomState> = HashMap::default();
    let mut time = TimestampMicrosecondBuilder::with_capacity(events.len());
    for (row, event) in events.iter().enumerate() {
        time.append_value(event.time);
        for (name, value) in &event.fields {
            if value.column_type().is_none() {
                continue;
            }
            // The request's own columns first: most events repeat them, and
            // the table schema's map is larger and colder.
            let i = match index.get(name.as_ref()) {
                Some(&i) => i,
                None => {
                    let Some(ty) = schema.column_type(name) else {
                        continue;
                    };
                    columns.push((
                        schema.field(name).expect("typed column").name(),
                        Column::new(ty, events.len(), row),
                    ));
                    index.insert(name.as_ref(), columns.len() - 1);
                    columns.len() - 1
                }
            };
            let column = &mut columns[i].1;
            if column.len() == row {
                column.append(value);
            }
        }
        for (_, column) in &mut columns {
            if column.len() == row {
                column.append(&Scalar::Null);
            }
        }
    }
    let mut fields = vec![schema.field(TIME_COLUMN).expect("time column").clone()];
    let mut arrays: Vec<ArrayRef> = vec![Arc::new(time.finish().with_timezone("UTC"))];
    for (name, column) in columns {
        let array = column.finish();
        fields.push(Arc::new(Field::new(name, array.data_type().clone(), true)));
        arrays.push(array);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .map_err(|e| atoll_store::StoreError::from(e).into())
}

/// A column being built; values were checked against its type already.
pub(crate) enum Column {
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Str(StringBuilder),
    List(ListBuilder<StringBuilder>),
}

impl Column {
    /// A builder for `capacity` rows, with `nulls` leading nulls for the
    /// rows before the column first appeared.
    pub(crate) fn new(ty: ColumnType, capacity: usize, nulls: usize) -> Column {
        let mut c = match ty {
            ColumnType::Int64 => Column::Int(Int64Builder::with_capacity(capacity)),
            ColumnType::Float64 => Column::Float(Float64Builder::with_capacity(capacity)),
            ColumnType::Boolean => Column::Bool(BooleanBuilder::with_capacity(capacity)),
            ColumnType::Utf8 | ColumnType::Timestamp => {
                Column::Str(StringBuilder::with_capacity(capacity, capacity * 8))
            }
            ColumnType::StringList => Column::List(ListBuilder::new(StringBuilder::new())),
        };
        for _ in 0..nulls {
            c.append(&Scalar::Null);
        }
        c
    }

    fn len(&self) -> usize {
        match self {
            Column::Int(b) => b.len(),
            Column::Float(b) => b.len(),
            Column::Bool(b) => b.len(),
            Column::Str(b) => b.len(),
            Column::List(b) => b.len(),
        }
    }

    pub(crate) fn append(&mut self, v: &Scalar<'_>) {
        match (self, v) {
            (Column::Int(b), Scalar::Int(i)) => b.append_value(*i),
            (Column::Float(b), Scalar::Float(f)) => b.append_value(*f),
            (Column::Float(b), Scalar::Int(i)) => b.append_value(*i as f64),
            (Column::Bool(b), Scalar::Bool(x)) => b.append_value(*x),
            (Column::Str(b), Scalar::Str(s)) => b.append_value(s),
            (Column::List(b), Scalar::StrList(items)) => {
                for item in items {
                    b.values().append_option(item.as_deref());
                }
                b.append(true);
            }
            (Column::Int(b), _) => b.append_null(),
            (Column::Float(b), _) => b.append_null(),
            (Column::Bool(b), _) => b.append_null(),
            (Column::Str(b), _) => b.append_null(),
            (Column::List(b), _) => b.append(false),
        }
    }

    pub(crate) fn finish(self) -> ArrayRef {
        match self {
            Column::Int(mut b) => Arc::new(b.finish()),
            Column::Float(mut b) => Arc::new(b.finish()),
            Column::Bool(mut b) => Arc::new(b.finish()),
            Column::Str(mut b) => Arc::new(b.finish()),
            Column::List(mut b) => Arc::new(b.finish()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Float64Type, Int64Type};
    use atoll_store::{Store, StoreConfig};
    use serde_json::json;

    fn events(v: Value) -> Vec<ParsedEvent> {
        match v {
            Value::Array(items) => items
                .into_iter()
                .map(|e| Ok(e.as_object().unwrap().clone()))
                .collect(),
            _ => unreachable!(),
        }
    }

    fn store() -> Store {
        Store::new(StoreConfig {
            partitions: 4,
            ..Default::default()
        })
    }

    fn all_rows(table: &Table) -> RecordBatch {
        let schema = table.schema().arrow().clone();
        let batches: Vec<_> = table
            .batches(&[0, 1, 2, 3], None, None)
            .iter()
            .map(|b| atoll_store::schema::adapt_batch(&b.plain().unwrap(), &schema).unwrap())
            .collect();
        arrow::compute::concat_batches(&schema, &batches).unwrap()
    }

    #[test]
    fn flattens_nested_objects_and_arrays() {
        let e = json!({"a": {"b": 1, "c": {"d": "x"}}, "tags": ["p", null], "mixed": [1, "a"], "n": null});
        let mut out = Vec::new();
        flatten(None, e.as_object().unwrap(), &mut out);
        let get = |k: &str| out.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("a.b"), Some(Scalar::Int(1)));
        assert_eq!(get("a.c.d"), Some(Scalar::Str("x".into())));
        assert_eq!(
            get("tags"),
            Some(Scalar::StrList(vec![Some("p".into()), None]))
        );
        assert_eq!(get("mixed"), Some(Scalar::Str("[1,\"a\"]".into())));
        assert_eq!(get("n"), Some(Scalar::Null));
    }

    #[test]
    fn types_are_inferred_and_ints_widen() {
        let s = store();
        let t = s.get_or_create("t").unwrap();
        let out = ingest_events(
            &t,
            &events(json!([{"x": 1, "s": "a", "b": true}, {"x": 2.5, "tags": ["q"]}])),
            7,
        )
        .unwrap();
        assert_eq!(
            out,
            IngestOutcome {
                accepted: 2,
                rejected: vec![],
                rejected_total: None,
            }
        );
        let schema = t.schema();
        assert_eq!(schema.column_type("x"), Some(ColumnType::Float64));
        assert_eq!(schema.column_type("s"), Some(ColumnType::Utf8));
        assert_eq!(schema.column_type("b"), Some(ColumnType::Boolean));
        assert_eq!(schema.column_type("tags"), Some(ColumnType::StringList));
        let rows = all_rows(&t);
        let mut xs: Vec<f64> = rows
            .column_by_name("x")
            .unwrap()
            .as_primitive::<Float64Type>()
            .values()
            .to_vec();
        xs.sort_by(f64::total_cmp);
        assert_eq!(xs, vec![1.0, 2.5]);
    }

    #[test]
    fn a_bad_event_is_rejected_alone() {
        let s = store();
        let t = s.get_or_create("t").unwrap();
        ingest_events(&t, &events(json!([{"n": 1}])), 0).unwrap();
        let out = ingest_events(
            &t,
            &events(json!([{"n": 2}, {"n": "three"}, {"n": 4, "time": "soon"}, {"n": {"x": 1}}, {"n": 5}])),
            0,
        )
        .unwrap();
        assert_eq!(out.accepted, 3, "{out:?}");
        assert_eq!(out.rejected.len(), 2);
        assert_eq!(
            out.rejected[0],
            Rejection {
                index: 1,
                error: "column \"n\" is Int64, cannot store Utf8 in it".into(),
                unavailable: false,
            }
        );
        assert_eq!(out.rejected[1].index, 2);
        assert!(
            out.rejected[1].error.contains("\"soon\""),
            "{:?}",
            out.rejected[1]
        );
        let rows = all_rows(&t);
        let mut ns: Vec<i64> = rows
            .column_by_name("n")
            .unwrap()
            .as_primitive::<Int64Type>()
            .iter()
            .flatten()
            .collect();
        ns.sort();
        assert_eq!(ns, vec![1, 2, 5]);
        assert_eq!(
            rows.column_by_name("n.x")
                .unwrap()
                .as_primitive::<Int64Type>()
                .null_count(),
            3
        );
    }

    #[test]
    fn a_sample_rate_is_a_whole_number_of_at_least_one() {
        let s = store();
        let t = s.get_or_create("t").unwrap();
        let out = ingest_events(
            &t,
            &events(json!([
                {"samplerate": 10}, {"samplerate": null}, {}, {"samplerate": 0},
                {"samplerate": 2.5}, {"samplerate": "10"}, {"samplerate": -3}
            ])),
            0,
        )
        .unwrap();
        assert_eq!(out.accepted, 3, "{out:?}");
        let rejected: Vec<usize> = out.rejected.iter().map(|r| r.index).collect();
        assert_eq!(rejected, vec![3, 4, 5, 6]);
        assert!(
            out.rejected[1].error.contains("not 2.5"),
            "{:?}",
            out.rejected[1]
        );
        assert!(out.rejected[2].error.contains("whole number of at least 1"));
        assert_eq!(
            t.schema().column_type("samplerate"),
            Some(ColumnType::Int64)
        );
    }

    #[test]
    fn the_write_id_column_is_reserved() {
        let s = store();
        let t = s.get_or_create("t").unwrap();
        let out = ingest_events(&t, &events(json!([{"__write": 1, "n": 1}, {"n": 2}])), 0).unwrap();
        assert_eq!(out.accepted, 1, "{out:?}");
        assert_eq!(
            out.rejected,
            vec![Rejection {
                index: 0,
                error: "column name \"__write\" is reserved by Atoll".into(),
                unavailable: false,
            }]
        );
        assert!(t.schema().column_type("__write").is_none());
    }

    #[test]
    fn time_comes_from_the_event_or_the_arrival() {
        let s = store();
        let t = s.get_or_create("t").unwrap();
        ingest_events(&t, &events(json!([{"time": 1_767_225_600}, {"a": 1}])), 42).unwrap();
        let rows = all_rows(&t);
        assert_eq!(
            rows.schema().field(0).data_type(),
            &ColumnType::Timestamp.data_type()
        );
        let mut ts: Vec<i64> = rows
            .column(0)
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
            .values()
            .to_vec();
        ts.sort();
        assert_eq!(ts, vec![42, 1_767_225_600_000_000]);
    }

    #[test]
    fn late_columns_are_null_for_earlier_rows() {
        let schema = {
            let mut s = TableSchema::default();
            s.accept(
                "t",
                [("a", ColumnType::Int64), ("l", ColumnType::StringList)],
            )
            .unwrap();
            s
        };
        let e1 = json!({"x": 0});
        let e2 = json!({"a": 1, "l": ["z"]});
        let flat = vec![
            prepare(0, e1.as_object().unwrap(), 0).unwrap(),
            prepare(1, e2.as_object().unwrap(), 0).unwrap(),
        ];
        let batch = build_batch(&schema, &flat).unwrap();
        assert_eq!(batch.num_rows(), 2);
        let a = batch.column_by_name("a").unwrap();
        assert!(a.is_null(0) && !a.is_null(1));
        let l = batch.column_by_name("l").unwrap();
        assert!(matches!(l.data_type(), DataType::List(_)));
        assert!(l.is_null(0));
        assert!(
            batch.column_by_name("x").is_none(),
            "columns outside the schema are not built"
        );
    }
}
