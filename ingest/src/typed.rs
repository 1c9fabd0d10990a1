//! NDJSON lines straight into the table's column builders, when every line
//! fits the table's current schema.
//!
//! Most requests bring no new column: a service sends the same event shape
//! again and again. Then nothing needs a per-event list of fields, a sorted
//! key order or a schema lookup per field: each value goes from the parser
//! into its column's builder, the column found by the key's position in the
//! line before (checked by comparing the name) and by a lookup only when
//! the shape changes. This is arrow-json's approach, with Atoll's rules.
//!
//! Anything this decoder does not take as it is — a new column, a value
//! that would widen or conflict with its column, a bad `time` or
//! `samplerate`, a value over the limits of `limits`, a key twice in an event, an array that is not a string
//! set, a line that is not an object of valid JSON — gives the whole piece
//! back to the general path (`decode` then `convert`), which decides,
//! evolves the schema and words the rejections. So for a piece it takes,
//! this decoder stores what the general path would store: the same rows,
//! values and types (`general_and_typed_paths_agree` checks it, and a
//! property test over generated event lines); columns
//! come in the table's order rather than sorted.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, TimestampMicrosecondBuilder};
use arrow::datatypes::{Field, Schema};
use atoll_store::{ColumnType, SAMPLE_RATE_COLUMN, TIME_COLUMN, Table, TableSchema};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::body;
use crate::convert::{Column, Converted, Scalar};
use crate::decode::Text;
use crate::limits;
use crate::route;
use crate::time;

/// The piece's events as one batch, or None when any line needs the
/// general path.
pub fn convert_ndjson(
    table: &Table,
    piece: &[u8],
    arrival: i64,
    idempotency_key: Option<&str>,
) -> Option<Converted> {
    let schema = table.schema();
    let settings = table.settings();
    let capacity = memchr::memchr_iter(b'\n', piece).count() + 1;
    let mut dec = Decoder::new(
        &schema,
        settings.partition_key.as_deref(),
        capacity,
        arrival,
    );
    // One check of the piece's UTF-8, instead of one per string as
    // parsing from bytes does; a piece that is not UTF-8 has bad lines.
    let text = std::str::from_utf8(piece).ok()?;
    for range in body::line_ranges(piece) {
        let line = &text[range];
        if line.bytes().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        dec.line(line)?;
    }
    let rows = dec.rows;
    if rows == 0 {
        return None;
    }
    let keys = std::mem::take(&mut dec.keys);
    let batch = dec.finish(&schema)?;
    let partitions = route::assign_rows(
        &settings,
        table.partitions(),
        rows,
        idempotency_key,
        |row| {
            keys.get(row)
                .map_or(Cow::Borrowed(&b""[..]), Scalar::key_bytes)
        },
    );
    Some(Converted {
        batch: Some(batch),
        partitions,
        events: (0..rows).collect(),
        rejected: Vec::new(),
    })
}

/// One column of the schema as the piece fills it.
struct Slot<'s> {
    name: &'s str,
    ty: ColumnType,
    /// Created at the column's first value, with nulls for earlier rows.
    column: Option<Column>,
    /// The last row given a value, to find a key given twice.
    row: usize,
}

struct Decoder<'s, 'a> {
    slots: Vec<Slot<'s>>,
    schema: &'s TableSchema,
    /// Slots with a builder, in order of creation.
    created: Vec<usize>,
    /// The slot of the n-th value of the line before (keys come in the
    /// same order line after line).
    by_position: Vec<usize>,
    position: usize,
    sample_rate: Option<usize>,
    partition_key: Option<usize>,
    /// The partition key's value of each row, when the table has one.
    keys: Vec<Scalar<'a>>,
    time: TimestampMicrosecondBuilder,
    /// Lines in the piece: each builder's capacity.
    capacity: usize,
    arrival: i64,
    rows: usize,
}

/// Why a piece goes to the general path: not an error to report, the
/// general path words those.
#[derive(Debug)]
struct Bail;

impl fmt::Display for Bail {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("not for the typed path")
    }
}

impl<'s, 'a> Decoder<'s, 'a> {
    fn new(
        schema: &'s TableSchema,
        partition_key: Option<&str>,
        capacity: usize,
        arrival: i64,
    ) -> Decoder<'s, 'a> {
        let slots: Vec<Slot<'s>> = schema
            .columns()
            .iter()
            .map(|(name, ty)| Slot {
                name: name.as_str(),
                ty: *ty,
                column: None,
                row: usize::MAX,
            })
            .collect();
        Decoder {
            sample_rate: schema.position(SAMPLE_RATE_COLUMN),
            partition_key: partition_key.map(|k| schema.position(k).unwrap_or(usize::MAX)),
            slots,
            schema,
            created: Vec::new(),
            by_position: Vec::new(),
            position: 0,
            keys: Vec::new(),
            time: TimestampMicrosecondBuilder::with_capacity(capacity),
            capacity,
            arrival,
            rows: 0,
        }
    }

    fn line(&mut self, line: &'a str) -> Option<()> {
        if line
            .trim_start_matches(|c: char| c.is_ascii_whitespace())
            .as_bytes()
            .first()
            != Some(&b'{')
        {
            return None;
        }
        if self.partition_key.is_some() {
            self.keys.push(Scalar::Null);
        }
        self.position = 0;
        let mut de = serde_json::Deserializer::from_str(line);
        let time = TopLevel { dec: self }.deserialize(&mut de).ok()?;
        de.end().ok()?;
        let time = time.unwrap_or(self.arrival);
        if !limits::time_ok(time, self.arrival) {
            return None;
        }
        self.time.append_value(time);
        let row = self.rows;
        for &i in &self.created {
            let slot = &mut self.slots[i];
            if slot.row != row {
                slot.column.as_mut().expect("created").append(&Scalar::Null);
            }
        }
        self.rows += 1;
        Some(())
    }

    /// The slot of a value's column, `key` below `prefix` (the dotted name
    /// of the enclosing objects), checked against the line before first.
    fn slot(&mut self, prefix: &str, key: &str) -> Result<usize, Bail> {
        let at = self.position;
        self.position += 1;
        if let Some(&i) = self.by_position.get(at)
            && is_name(self.slots[i].name, prefix, key)
        {
            return Ok(i);
        }
        let i = self.lookup(prefix, key).ok_or(Bail)?;
        match self.by_position.get_mut(at) {
            Some(p) => *p = i,
            None => self.by_position.push(i),
        }
        Ok(i)
    }

    fn lookup(&self, prefix: &str, key: &str) -> Option<usize> {
        if prefix.is_empty() {
            self.schema.position(key)
        } else {
            self.schema.position(&format!("{prefix}.{key}"))
        }
    }

    /// Stores one value in its slot: only a value its column takes as it
    /// is, and only once per row.
    fn put(&mut self, i: usize, value: Scalar<'a>) -> Result<(), Bail> {
        let row = self.rows;
        let capacity = self.capacity;
        let slot = &mut self.slots[i];
        let fits = matches!(
            (slot.ty, &value),
            (ColumnType::Int64, Scalar::Int(_))
                | (ColumnType::Float64, Scalar::Int(_) | Scalar::Float(_))
                | (ColumnType::Boolean, Scalar::Bool(_))
                | (ColumnType::Utf8, Scalar::Str(_))
                | (ColumnType::StringList, Scalar::StrList(_))
        );
        let long = match &value {
            Scalar::Str(s) => !limits::string_ok(s),
            Scalar::StrList(items) => items.iter().flatten().any(|s| !limits::string_ok(s)),
            _ => false,
        };
        if !fits || long || slot.row == row {
            return Err(Bail);
        }
        if Some(i) == self.sample_rate && !matches!(value, Scalar::Int(n) if n >= 1) {
            return Err(Bail);
        }
        slot.row = row;
        let column = match &mut slot.column {
            Some(c) => c,
            None => {
                self.created.push(i);
                slot.column.insert(Column::new(slot.ty, capacity, row))
            }
        };
        column.append(&value);
        if Some(i) == self.partition_key {
            self.keys[row] = value;
        }
        Ok(())
    }

    /// The batch: `time`, then every column given a value, in the table's
    /// order.
    fn finish(mut self, schema: &TableSchema) -> Option<RecordBatch> {
        self.created.sort_unstable();
        let mut fields = vec![schema.field(TIME_COLUMN)?.clone()];
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(self.time.finish().with_timezone("UTC"))];
        for i in self.created {
            let slot = &mut self.slots[i];
            let array = slot.column.take()?.finish();
            fields.push(Arc::new(Field::new(
                slot.name,
                array.data_type().clone(),
                true,
            )));
            arrays.push(array);
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).ok()
    }
}

/// Whether `name` is `prefix.key` (or `key` with no prefix).
fn is_name(name: &str, prefix: &str, key: &str) -> bool {
    if prefix.is_empty() {
        return name == key;
    }
    name.len() == prefix.len() + 1 + key.len()
        && name.starts_with(prefix)
        && name.as_bytes()[prefix.len()] == b'.'
        && name.ends_with(key)
}

/// A top-level object: its `time` (None: null or absent) and its columns.
struct TopLevel<'d, 's, 'a> {
    dec: &'d mut Decoder<'s, 'a>,
}

impl<'de: 'a, 's, 'a> DeserializeSeed<'de> for TopLevel<'_, 's, 'a> {
    type Value = Option<i64>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<i64>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de: 'a, 's, 'a> Visitor<'de> for TopLevel<'_, 's, 'a> {
    type Value = Option<i64>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<i64>, A::Error> {
        let mut time = None;
        let mut seen_time = false;
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            if key == TIME_COLUMN {
                if std::mem::replace(&mut seen_time, true) {
                    return Err(de::Error::custom(Bail));
                }
                time = map.next_value_seed(Time)?;
                continue;
            }
            map.next_value_seed(Value {
                dec: &mut *self.dec,
                prefix: "",
                key: &key,
            })?;
        }
        Ok(time)
    }
}

/// A `time` value as microseconds; what `time::parse_time` takes, or a
/// bail (the general path words the error).
struct Time;

impl<'de> DeserializeSeed<'de> for Time {
    type Value = Option<i64>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<i64>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Time {
    type Value = Option<i64>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a time")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<i64>, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<i64>, E> {
        time::epoch_int_to_micros(v).map(Some).ok_or_else(bail)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<i64>, E> {
        match i64::try_from(v) {
            Ok(i) => self.visit_i64(i),
            Err(_) => self.visit_f64(v as f64),
        }
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Option<i64>, E> {
        time::epoch_float_to_micros(v).map(Some).ok_or_else(bail)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<i64>, E> {
        time::parse_time_str(v).map(Some).map_err(|_| bail())
    }
}

fn bail<E: de::Error>() -> E {
    E::custom(Bail)
}

/// The value of `key` (below `prefix`): a scalar for its column, a string
/// set, or an object whose members are columns `prefix.key.member`.
struct Value<'d, 's, 'a, 'k> {
    dec: &'d mut Decoder<'s, 'a>,
    prefix: &'k str,
    key: &'k str,
}

impl<'s, 'a> Value<'_, 's, 'a, '_> {
    fn put<E: de::Error>(self, value: Scalar<'a>) -> Result<(), E> {
        let i = self
            .dec
            .slot(self.prefix, self.key)
            .map_err(|_| bail::<E>())?;
        self.dec.put(i, value).map_err(|_| bail())
    }
}

impl<'de: 'a, 's, 'a> DeserializeSeed<'de> for Value<'_, 's, 'a, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de: 'a, 's, 'a> Visitor<'de> for Value<'_, 's, 'a, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        // No value: the row's column stays null, and no column is needed.
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.put(Scalar::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.put(Scalar::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.put(match i64::try_from(v) {
            Ok(i) => Scalar::Int(i),
            Err(_) => Scalar::Float(v as f64),
        })
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.put(Scalar::Float(v))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<(), E> {
        self.put(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.put(Scalar::Str(Cow::Owned(v.to_string())))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let name = if self.prefix.is_empty() {
            Cow::Borrowed(self.key)
        } else {
            Cow::Owned(format!("{}.{}", self.prefix, self.key))
        };
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            map.next_value_seed(Value {
                dec: &mut *self.dec,
                prefix: &name,
                key: &key,
            })?;
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Option<Text<'de>>>()? {
            items.push(item.map(|t| t.0));
        }
        self.put(Scalar::StrList(items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{convert, decode};
    use arrow::array::Array;
    use atoll_store::{Store, StoreConfig, TableSettings};

    const ARRIVAL: i64 = 1_767_225_600_000_000;

    /// A table whose schema the general path built from these lines.
    fn table(lines: &str) -> Arc<Table> {
        let store = Store::new(StoreConfig {
            partitions: 8,
            ..Default::default()
        });
        let t = store.get_or_create("t").unwrap();
        let seeded = general(&t, lines, None);
        assert!(seeded.rejected.is_empty(), "{:?}", seeded.rejected);
        t
    }

    fn general(t: &Table, piece: &str, key: Option<&str>) -> Converted {
        let events = decode::ndjson_events(piece.as_bytes(), 0, ARRIVAL);
        convert::convert_flat(t, events, key).unwrap()
    }

    const SEED: &str = r#"{"time":"2026-01-01T00:00:00Z","service":"api","status":200,"ms":1.5,"ok":true,"tags":["a"],"client":{"name":"web","v":{"major":2}},"samplerate":4,"user":"u1"}"#;

    const PIECE: &str = concat!(
        r#"{"time":"2026-01-01T00:00:00.123456Z","service":"api","status":200,"ms":1.5,"ok":true,"tags":["a",null],"user":"u1"}"#,
        "\n",
        r#"{"user":"u2","ms":7,"status":-3,"service":"caf\u00e9 \"q\"","time":1767225600}"#,
        "\n\n   \n",
        r#"{"client":{"name":"ios","v":{"major":3}},"time":1767225600123,"samplerate":10,"tags":[]}"#,
        "\r\n",
        r#"  {"time":null,"ms":18446744073709551615,"ok":false,"unknown":null,"client":{"name":null}}  "#,
        "\n",
        r#"{"time":"2026-01-01 00:00:01","service":null,"tags":null,"user":"u1","client":{}}"#,
        "\n",
        r#"{"time":1767225600.5,"status":9223372036854775807,"ms":-0.0,"samplerate":null}"#,
        "\n",
        r#"{}"#,
        "\n",
    );

    /// The typed path's batch holds the general path's columns, values
    /// and types, for the same rows.
    fn assert_agree(typed: &Converted, general: &Converted) {
        assert!(general.rejected.is_empty(), "{:?}", general.rejected);
        assert!(typed.rejected.is_empty());
        assert_eq!(typed.events, general.events);
        let (a, b) = (
            typed.batch.as_ref().unwrap(),
            general.batch.as_ref().unwrap(),
        );
        assert_eq!(a.num_rows(), b.num_rows());
        let names = |batch: &RecordBatch| {
            let mut n: Vec<String> = batch
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            n.sort();
            n
        };
        assert_eq!(names(a), names(b));
        for field in b.schema().fields() {
            let (x, y) = (
                a.column_by_name(field.name()).unwrap(),
                b.column_by_name(field.name()).unwrap(),
            );
            assert_eq!(x.to_data(), y.to_data(), "column {}", field.name());
            assert_eq!(
                a.schema().field_with_name(field.name()).unwrap(),
                field.as_ref()
            );
        }
    }

    #[test]
    fn general_and_typed_paths_agree() {
        let t = table(SEED);
        let typed = convert_ndjson(&t, PIECE.as_bytes(), ARRIVAL, None).expect("typed");
        assert_agree(&typed, &general(&t, PIECE, None));
        assert_eq!(typed.batch.as_ref().unwrap().num_rows(), 7);
        // Columns in the table's order, each given a value at least once.
        let fields: Vec<_> = typed
            .batch
            .as_ref()
            .unwrap()
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let table_order: Vec<_> = t.schema().columns().iter().map(|c| c.0.clone()).collect();
        assert_eq!(fields, table_order);
    }

    mod generated {
        use super::*;
        use proptest::prelude::*;

        /// Any JSON value a service might send for a field.
        fn scalar() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<i64>().prop_map(|i| i.to_string()),
                any::<u64>().prop_map(|i| i.to_string()),
                (-1e15f64..1e15).prop_map(|f| format!("{f:?}")),
                any::<bool>().prop_map(|b| b.to_string()),
                Just("null".to_string()),
                any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
                prop::collection::vec(prop::option::of("[a-z\u{e9} ]{0,3}"), 0..3)
                    .prop_map(|v| serde_json::to_string(&v).unwrap()),
            ]
        }

        /// A value, or an object of them (nested once more).
        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => scalar(),
                1 => (scalar(), prop::option::of(scalar())).prop_map(|(name, major)| match major {
                    Some(m) => format!(r#"{{"name":{name},"v":{{"major":{m}}}}}"#),
                    None => format!(r#"{{"name":{name}}}"#),
                }),
            ]
        }

        /// `time` in each form Atoll reads, and some it does not.
        fn time() -> impl Strategy<Value = String> {
            let secs = 1_700_000_000i64..1_800_000_000;
            prop_oneof![
                20 => secs.clone().prop_map(|s| s.to_string()),
                20 => secs.clone().prop_map(|s| (s * 1000 + 123).to_string()),
                20 => secs.clone().prop_map(|s| format!("{s}.25")),
                20 => (0u32..28, 0u32..24, 0u32..1_000_000).prop_map(|(d, h, us)| format!(
                    "\"2026-01-{:02}T{h:02}:00:00.{us:06}Z\"",
                    d + 1
                )),
                20 => (0u32..60).prop_map(|s| format!("\"2026-01-01 00:00:{s:02}\"")),
                5 => Just("null".to_string()),
                1 => Just("\"yesterday\"".to_string()),
                1 => scalar(),
            ]
        }

        /// A value of the type `key` has in the seeded table.
        fn fitting(key: &'static str) -> BoxedStrategy<String> {
            let text = any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap());
            match key {
                "service" | "user" => text.boxed(),
                "status" => any::<i64>().prop_map(|i| i.to_string()).boxed(),
                "samplerate" => (1i64..1000).prop_map(|i| i.to_string()).boxed(),
                "ms" => prop_oneof![
                    (-1e15f64..1e15).prop_map(|f| format!("{f:?}")),
                    any::<i32>().prop_map(|i| i.to_string()),
                ]
                .boxed(),
                "ok" => any::<bool>().prop_map(|b| b.to_string()).boxed(),
                "tags" => prop::collection::vec(prop::option::of(".{0,3}"), 0..3)
                    .prop_map(|v| serde_json::to_string(&v).unwrap())
                    .boxed(),
                "client" => (text, prop::option::of(any::<i64>()))
                    .prop_map(|(name, major)| match major {
                        Some(m) => format!(r#"{{"name":{name},"v":{{"major":{m}}}}}"#),
                        None => format!(r#"{{"name":{name}}}"#),
                    })
                    .boxed(),
                _ => value().boxed(),
            }
        }

        /// One event: each of the seeded columns, or a new one, at most
        /// once, in any order, mostly with values of the column's type.
        fn line() -> impl Strategy<Value = String> {
            let keys = [
                "service",
                "status",
                "ms",
                "ok",
                "tags",
                "client",
                "user",
                "samplerate",
            ];
            let values: Vec<_> = keys
                .iter()
                .map(|k| prop::option::of(prop_oneof![80 => fitting(k), 1 => value()]))
                .collect();
            (
                values,
                prop::option::of(time()),
                prop::option::weighted(0.02, value()),
                Just(keys.to_vec()).prop_shuffle(),
                "[ ]{0,2}",
            )
                .prop_map(move |(values, time, extra, order, pad)| {
                    let mut fields: Vec<String> = keys
                        .iter()
                        .zip(values)
                        .filter_map(|(k, v)| Some((order.iter().position(|o| o == k)?, (k, v?))))
                        .collect::<std::collections::BTreeMap<_, _>>()
                        .into_values()
                        .map(|(k, v)| format!("\"{k}\":{v}"))
                        .collect();
                    if let Some(t) = time {
                        fields.push(format!("\"time\":{t}"));
                    }
                    if let Some(v) = extra {
                        fields.push(format!("\"extra\":{v}"));
                    }
                    format!("{pad}{{{}}}{pad}", fields.join(","))
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Whatever piece the typed decoder takes, it stores what the
            /// general path stores from it: the same rows, values and types.
            #[test]
            fn a_piece_the_typed_path_takes_is_stored_as_the_general_path_stores_it(
                lines in prop::collection::vec(line(), 1..12),
                blank in prop::option::of(0usize..12),
            ) {
                let mut lines = lines;
                if let Some(at) = blank {
                    lines.insert(at.min(lines.len()), String::new());
                }
                let piece = lines.join("\n");
                let t = table(SEED);
                if let Some(typed) = convert_ndjson(&t, piece.as_bytes(), ARRIVAL, None) {
                    assert_agree(&typed, &general(&table(SEED), &piece, None));
                }
            }
        }

        /// Lines of seeded columns with values of their types go typed (so
        /// does about two pieces in three of the generator's).
        #[test]
        fn fitting_lines_take_the_typed_path() {
            let t = table(SEED);
            let piece = r#"{"ms":2.5,"service":"x","time":1767225600,"tags":["b"]}"#;
            assert!(convert_ndjson(&t, piece.as_bytes(), ARRIVAL, None).is_some());
        }
    }

    fn keyed_by(t: &Table, column: &str, version: i64) {
        let settings = TableSettings {
            partition_key: Some(column.into()),
            ..TableSettings::default()
        };
        t.set_settings(settings, version).unwrap();
    }

    #[test]
    fn both_paths_route_alike() {
        let t = table(SEED);
        let typed = convert_ndjson(&t, PIECE.as_bytes(), ARRIVAL, Some("k1")).unwrap();
        let general_keyed = general(&t, PIECE, Some("k1"));
        assert_eq!(
            typed.partitions, general_keyed.partitions,
            "a retry routes as the first try"
        );
        keyed_by(&t, "user", 1);
        let typed = convert_ndjson(&t, PIECE.as_bytes(), ARRIVAL, None).unwrap();
        assert_eq!(typed.partitions, general(&t, PIECE, None).partitions);
        let u1 = typed.partitions[0];
        assert_eq!(typed.partitions[4], u1, "equal keys together");
        // A key column not in the schema yet: every row hashes as missing.
        keyed_by(&t, "tenant", 2);
        let typed = convert_ndjson(&t, PIECE.as_bytes(), ARRIVAL, None).unwrap();
        assert_eq!(typed.partitions, general(&t, PIECE, None).partitions);
    }

    #[test]
    fn what_the_schema_does_not_take_as_it_is_goes_the_general_way() {
        let t = table(SEED);
        for line in [
            r#"{"new":1}"#,
            r#"{"client":{"os":"ios"}}"#,
            r#"{"status":1.5}"#,
            r#"{"status":"200"}"#,
            r#"{"status":18446744073709551615}"#,
            r#"{"service":1}"#,
            r#"{"ok":"yes"}"#,
            r#"{"ms":true}"#,
            r#"{"tags":"a"}"#,
            r#"{"tags":["a",1]}"#,
            r#"{"service":["a"]}"#,
            r#"{"client":"web"}"#,
            r#"{"user":"a","user":"b"}"#,
            r#"{"time":1,"time":2}"#,
            r#"{"time":"yesterday"}"#,
            r#"{"time":true}"#,
            r#"{"time":[1]}"#,
            r#"{"samplerate":0}"#,
            r#"{"samplerate":1.5}"#,
            r#"{"samplerate":"2"}"#,
            r#"{"__write":1}"#,
            r#"[{"user":"a"}]"#,
            r#""user""#,
            r#"{"user":"a""#,
            r#"{"user":"a"} {}"#,
            r#"{"ms":1e400}"#,
        ] {
            let piece = format!("{SEED}\n{line}\n");
            assert!(
                convert_ndjson(&t, piece.as_bytes(), ARRIVAL, None).is_none(),
                "{line}"
            );
        }
        let not_utf8 = [SEED.as_bytes(), b"\n{\"user\":\"\xff\"}\n"].concat();
        assert!(convert_ndjson(&t, &not_utf8, ARRIVAL, None).is_none());
        assert!(
            convert_ndjson(&t, b"\n \n", ARRIVAL, None).is_none(),
            "no events"
        );
        // The general path then says what was wrong, and takes the rest.
        let out = general(&t, &format!("{SEED}\n{{\"status\":\"200\"}}\n"), None);
        assert_eq!(out.events, [0]);
        assert!(
            out.rejected[0].error.contains("status"),
            "{:?}",
            out.rejected
        );
    }

    #[test]
    fn a_new_table_goes_the_general_way() {
        let store = Store::new(StoreConfig::default());
        let t = store.get_or_create("fresh").unwrap();
        assert!(convert_ndjson(&t, SEED.as_bytes(), ARRIVAL, None).is_none());
        let nulls_only = r#"{"time":null,"gone":null}"#;
        let typed = convert_ndjson(&t, nulls_only.as_bytes(), ARRIVAL, None).expect("nothing new");
        let batch = typed.batch.unwrap();
        assert_eq!(batch.num_columns(), 1);
        assert_eq!(batch.column(0).len(), 1);
    }
}
