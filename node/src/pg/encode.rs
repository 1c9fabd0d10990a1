//! Arrow columns as Postgres rows, in text or binary per column as the
//! client asked: int8, float8, bool, text, timestamptz, text[] for
//! Atoll's column types (the Postgres type of each is the catalog's,
//! `atoll_query::pg_catalog::pg_type_oid`); anything else a query makes
//! (dates, decimals, structs) as its text.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, TimeUnit};
use atoll_errors::ErrorKind;
use atoll_query::pg_catalog::pg_type_oid;
use pgwire::api::Type;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use pgwire::error::PgWireResult;
use pgwire::messages::data::DataRow;

use super::pg_error;

/// The Postgres type a column is shown as.
pub fn pg_type(t: &DataType) -> Type {
    Type::from_oid(pg_type_oid(t)).unwrap_or(Type::TEXT)
}

/// The columns of an answer, each in the format the client asked for.
pub fn fields(schema: &Schema, format: impl Fn(usize) -> FieldFormat) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            FieldInfo::new(
                f.name().clone(),
                None,
                None,
                pg_type(f.data_type()),
                format(i),
            )
        })
        .collect()
}

/// The Arrow type a column is encoded from: its Postgres type's.
fn wire_type(t: &DataType) -> Option<DataType> {
    Some(match pg_type_oid(t) {
        20 => DataType::Int64,
        701 => DataType::Float64,
        16 => DataType::Boolean,
        1184 => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        1114 => DataType::Timestamp(TimeUnit::Microsecond, None),
        1009 => DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
        _ => return None,
    })
}

/// Appends `batch`'s rows to `rows`.
pub fn encode(
    batch: &RecordBatch,
    encoder: &mut DataRowEncoder,
    rows: &mut Vec<DataRow>,
) -> PgWireResult<()> {
    let internal = |e: arrow::error::ArrowError| pg_error(ErrorKind::Internal, e.to_string());
    let columns: Vec<Column> = batch
        .columns()
        .iter()
        .map(|c| match wire_type(c.data_type()) {
            Some(t) if &t == c.data_type() => Ok(Column::Typed(c.clone())),
            Some(t) => cast(c, &t).map(Column::Typed).map_err(internal),
            None => Ok(Column::Text(c.clone())),
        })
        .collect::<PgWireResult<_>>()?;
    let options = Default::default();
    let formatters: Vec<_> = columns
        .iter()
        .map(|c| match c {
            Column::Text(a) => arrow::util::display::ArrayFormatter::try_new(a.as_ref(), &options)
                .map(Some)
                .map_err(internal),
            Column::Typed(_) => Ok(None),
        })
        .collect::<PgWireResult<_>>()?;
    for row in 0..batch.num_rows() {
        for (column, formatter) in columns.iter().zip(&formatters) {
            encode_cell(column, formatter.as_ref(), row, encoder)?;
        }
        rows.push(encoder.take_row());
    }
    Ok(())
}

enum Column {
    /// Already of its wire type.
    Typed(ArrayRef),
    /// Sent as its Arrow text.
    Text(ArrayRef),
}

fn encode_cell(
    column: &Column,
    formatter: Option<&arrow::util::display::ArrayFormatter>,
    row: usize,
    encoder: &mut DataRowEncoder,
) -> PgWireResult<()> {
    let array = match column {
        Column::Typed(a) | Column::Text(a) => a,
    };
    if array.is_null(row) {
        return encoder.encode_field(&None::<String>);
    }
    if let Some(formatter) = formatter {
        return encoder.encode_field(&formatter.value(row).to_string());
    }
    match array.data_type() {
        DataType::Int64 => encoder.encode_field(&array.as_primitive::<Int64Type>().value(row)),
        DataType::Float64 => encoder.encode_field(&array.as_primitive::<Float64Type>().value(row)),
        DataType::Boolean => encoder.encode_field(&array.as_boolean().value(row)),
        DataType::Timestamp(_, zone) => {
            let micros = array
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                .value(row);
            let at = chrono::DateTime::from_timestamp_micros(micros).ok_or_else(|| {
                pg_error(
                    ErrorKind::Internal,
                    format!("timestamp {micros} µs is out of range"),
                )
            })?;
            if zone.is_some() {
                encoder.encode_field(&at)
            } else {
                encoder.encode_field(&at.naive_utc())
            }
        }
        DataType::List(_) => {
            let list = array.as_list::<i32>().value(row);
            let strings = list.as_string::<i32>();
            let values: Vec<Option<String>> =
                strings.iter().map(|s| s.map(str::to_string)).collect();
            encoder.encode_field(&values)
        }
        other => Err(pg_error(
            ErrorKind::Internal,
            format!("no Postgres encoding for {other}"),
        )),
    }
}
