//! Query results as JSON: a value per cell, typed as a person reading the
//! JSON would expect (numbers as numbers, times as RFC 3339 strings).

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit,
};
use arrow::datatypes::{UInt8Type, UInt16Type, UInt32Type, UInt64Type};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{DateTime, SecondsFormat};
use serde_json::{Map, Value};

/// Appends the rows of `batch` to `rows`, column values in schema order.
pub fn append_rows(batch: &RecordBatch, rows: &mut Vec<Vec<Value>>) {
    let columns: Vec<Vec<Value>> = batch.columns().iter().map(column_values).collect();
    for r in 0..batch.num_rows() {
        rows.push(columns.iter().map(|c| c[r].clone()).collect());
    }
}

/// The JSON values of one column.
pub fn column_values(array: &ArrayRef) -> Vec<Value> {
    macro_rules! prim {
        ($t:ty) => {
            array
                .as_primitive::<$t>()
                .iter()
                .map(|v| v.map_or(Value::Null, Value::from))
                .collect()
        };
    }
    match array.data_type() {
        DataType::Null => vec![Value::Null; array.len()],
        DataType::Boolean => array
            .as_boolean()
            .iter()
            .map(|v| v.map_or(Value::Null, Value::Bool))
            .collect(),
        DataType::Int8 => prim!(Int8Type),
        DataType::Int16 => prim!(Int16Type),
        DataType::Int32 => prim!(Int32Type),
        DataType::Int64 => prim!(Int64Type),
        DataType::UInt8 => prim!(UInt8Type),
        DataType::UInt16 => prim!(UInt16Type),
        DataType::UInt32 => prim!(UInt32Type),
        DataType::UInt64 => prim!(UInt64Type),
        DataType::Float32 => prim!(Float32Type),
        DataType::Float64 => prim!(Float64Type),
        DataType::Utf8 => array.as_string::<i32>().iter().map(string).collect(),
        DataType::LargeUtf8 => array.as_string::<i64>().iter().map(string).collect(),
        DataType::Utf8View => array.as_string_view().iter().map(string).collect(),
        DataType::Timestamp(_, tz) => timestamps(array, tz.is_some()),
        DataType::List(_) => {
            let list = array.as_list::<i32>();
            (0..list.len())
                .map(|i| {
                    if list.is_null(i) {
                        Value::Null
                    } else {
                        Value::Array(column_values(&list.value(i)))
                    }
                })
                .collect()
        }
        DataType::LargeList(_) => {
            let list = array.as_list::<i64>();
            (0..list.len())
                .map(|i| {
                    if list.is_null(i) {
                        Value::Null
                    } else {
                        Value::Array(column_values(&list.value(i)))
                    }
                })
                .collect()
        }
        DataType::Struct(fields) => {
            let s = array.as_struct();
            let children: Vec<Vec<Value>> = s.columns().iter().map(column_values).collect();
            (0..s.len())
                .map(|i| {
                    if s.is_null(i) {
                        return Value::Null;
                    }
                    let obj: Map<String, Value> = fields
                        .iter()
                        .zip(&children)
                        .map(|(f, c)| (f.name().clone(), c[i].clone()))
                        .collect();
                    Value::Object(obj)
                })
                .collect()
        }
        DataType::Dictionary(_, value) => match cast(array, value) {
            Ok(plain) => column_values(&plain),
            Err(_) => formatted(array),
        },
        _ => formatted(array),
    }
}

fn string(v: Option<&str>) -> Value {
    v.map_or(Value::Null, |s| Value::String(s.to_string()))
}

fn timestamps(array: &ArrayRef, utc: bool) -> Vec<Value> {
    let Ok(micros) = cast(array, &DataType::Timestamp(TimeUnit::Microsecond, None)) else {
        return formatted(array);
    };
    micros
        .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
        .iter()
        .map(|v| match v.and_then(DateTime::from_timestamp_micros) {
            Some(t) if utc => Value::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            Some(t) => Value::String(t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.f").to_string()),
            None => Value::Null,
        })
        .collect()
}

fn formatted(array: &ArrayRef) -> Vec<Value> {
    let options = FormatOptions::default();
    match ArrayFormatter::try_new(array.as_ref(), &options) {
        Ok(f) => (0..array.len())
            .map(|i| {
                if array.is_null(i) {
                    Value::Null
                } else {
                    Value::String(f.value(i).to_string())
                }
            })
            .collect(),
        Err(_) => vec![Value::Null; array.len()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, ListBuilder, StringBuilder, TimestampMicrosecondArray};
    use serde_json::json;
    use std::sync::Arc;

    #[test]
    fn values_by_type() {
        let t: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(vec![Some(1_767_225_600_000_001), None])
                .with_timezone("UTC"),
        );
        assert_eq!(
            column_values(&t),
            vec![json!("2026-01-01T00:00:00.000001Z"), Value::Null]
        );
        let f: ArrayRef = Arc::new(Float64Array::from(vec![1.5, f64::NAN]));
        assert_eq!(column_values(&f), vec![json!(1.5), Value::Null]);
        let mut lb = ListBuilder::new(StringBuilder::new());
        lb.values().append_value("a");
        lb.append(true);
        lb.append(false);
        let l: ArrayRef = Arc::new(lb.finish());
        assert_eq!(column_values(&l), vec![json!(["a"]), Value::Null]);
    }
}
