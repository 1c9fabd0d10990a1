//! OpenTelemetry (OTLP) traces and logs become Atoll events, the way
//! Honeycomb maps them (docs/otel.md), so that a dashboard and a user's
//! habits carry over: one row per span in the table named by the
//! resource's `service.name`, span events and links as rows of their own
//! beside it, log records in the same table.
//!
//! Attributes land under their own keys, typed (int -> Int64, double ->
//! Float64, bool -> Boolean, string -> Utf8, arrays and maps as a native
//! event's arrays and nested objects are); resource attributes first, then
//! the scope's, then the item's, then the fixed fields below (later ones
//! win on a shared key).

use base64::Engine;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message;
use serde_json::{Map, Number, Value};

use crate::IngestError;
use crate::error::BadEvent;
use crate::protocol::{MadeLine, table_for};

/// The table of items whose resource has no `service.name`.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// How a body is encoded (its `Content-Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

/// One table's events of a request, in order, as lines of JSON text (so
/// that they take native NDJSON's typed path when they fit the table);
/// `counted[i]` is true for an event that is a span or log record (what
/// `partial_success` counts), false for a span's event or link.
#[derive(Debug, Default)]
pub struct TableEvents {
    pub table: String,
    pub events: Vec<MadeLine>,
    pub counted: Vec<bool>,
}

/// The fields every row of a resource and scope starts with, written once
/// as JSON text (without braces).
struct Base(String);

impl Base {
    fn new(fields: &Map<String, Value>) -> Base {
        let text = serde_json::to_string(fields).unwrap_or_else(|_| "{}".into());
        Base(text[1..text.len() - 1].to_string())
    }

    /// A row: these fields, then `own` (a key in both: the general path
    /// keeps the later, `own`'s).
    fn line(&self, own: &Map<String, Value>) -> MadeLine {
        let own = serde_json::to_string(own)
            .map_err(|e| BadEvent(format!("cannot be written as JSON: {e}")))?;
        let own = &own[1..own.len() - 1];
        let mut out = Vec::with_capacity(self.0.len() + own.len() + 3);
        out.push(b'{');
        out.extend_from_slice(self.0.as_bytes());
        if !self.0.is_empty() && !own.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(own.as_bytes());
        out.push(b'}');
        Ok(out)
    }
}

pub fn decode_traces(
    body: &[u8],
    encoding: Encoding,
) -> Result<ExportTraceServiceRequest, IngestError> {
    decode(body, encoding, "ExportTraceServiceRequest")
}

pub fn decode_logs(
    body: &[u8],
    encoding: Encoding,
) -> Result<ExportLogsServiceRequest, IngestError> {
    decode(body, encoding, "ExportLogsServiceRequest")
}

fn decode<T: Message + Default + serde::de::DeserializeOwned>(
    body: &[u8],
    encoding: Encoding,
    what: &str,
) -> Result<T, IngestError> {
    match encoding {
        Encoding::Protobuf => {
            T::decode(body).map_err(|e| IngestError::BadBody(format!("not a protobuf {what}: {e}")))
        }
        Encoding::Json => serde_json::from_slice(body)
            .map_err(|e| IngestError::BadBody(format!("not an OTLP/JSON {what}: {e}"))),
    }
}

/// Rows of a traces request, grouped by table; their text may take at
/// most `limit` bytes (shared text, a resource's attributes or a span's
/// name, is copied into every row: a small request could ask for much).
pub fn span_rows(
    request: ExportTraceServiceRequest,
    limit: usize,
) -> Result<Vec<TableEvents>, IngestError> {
    let mut tables = Tables::new(limit);
    for rs in request.resource_spans {
        let (table, base) = resource_base(rs.resource.as_ref(), "trace")?;
        let at = tables.at(&table);
        for ss in rs.scope_spans {
            let base = Base::new(&with_scope(&base, ss.scope.as_ref()));
            for span in ss.spans {
                push_span(&mut tables, at, &base, span)?;
            }
        }
    }
    Ok(tables.list)
}

/// Rows of a logs request, grouped by table, within `limit` bytes.
pub fn log_rows(
    request: ExportLogsServiceRequest,
    limit: usize,
) -> Result<Vec<TableEvents>, IngestError> {
    let mut tables = Tables::new(limit);
    for rl in request.resource_logs {
        let (table, base) = resource_base(rl.resource.as_ref(), "log")?;
        let at = tables.at(&table);
        for sl in rl.scope_logs {
            let base = Base::new(&with_scope(&base, sl.scope.as_ref()));
            for record in sl.log_records {
                tables.push(at, base.line(&log_row(record)), true)?;
            }
        }
    }
    Ok(tables.list)
}

/// A request's rows, by table, and the bytes they take so far.
struct Tables {
    list: Vec<TableEvents>,
    index: std::collections::HashMap<String, usize>,
    bytes: usize,
    limit: usize,
}

impl Tables {
    fn new(limit: usize) -> Tables {
        Tables {
            list: Vec::new(),
            index: Default::default(),
            bytes: 0,
            limit,
        }
    }

    /// Where a table's rows go.
    fn at(&mut self, table: &str) -> usize {
        if let Some(&i) = self.index.get(table) {
            return i;
        }
        self.list.push(TableEvents {
            table: table.to_string(),
            ..Default::default()
        });
        self.index.insert(table.to_string(), self.list.len() - 1);
        self.list.len() - 1
    }

    fn push(&mut self, at: usize, line: MadeLine, counted: bool) -> Result<(), IngestError> {
        self.bytes += line.as_ref().map_or(0, Vec::len);
        if self.bytes > self.limit {
            return Err(IngestError::TooLarge {
                limit: self.limit,
                after: " once its spans or records are written as rows",
            });
        }
        let t = &mut self.list[at];
        t.events.push(line);
        t.counted.push(counted);
        Ok(())
    }
}

/// The table of a resource and the fields every row of it starts with.
fn resource_base(
    resource: Option<&Resource>,
    signal: &str,
) -> Result<(String, Map<String, Value>), IngestError> {
    let mut base = Map::new();
    if let Some(r) = resource {
        put_attributes(&mut base, &r.attributes);
    }
    let service = match base.get("service.name") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        _ => UNKNOWN_SERVICE.to_string(),
    };
    base.insert("service.name".into(), Value::String(service.clone()));
    base.insert("meta.signal_type".into(), signal.into());
    Ok((table_for(&service)?, base))
}

fn with_scope(
    base: &Map<String, Value>,
    scope: Option<&InstrumentationScope>,
) -> Map<String, Value> {
    let mut base = base.clone();
    if let Some(s) = scope {
        put_attributes(&mut base, &s.attributes);
        if !s.name.is_empty() {
            base.insert("library.name".into(), s.name.clone().into());
        }
        if !s.version.is_empty() {
            base.insert("library.version".into(), s.version.clone().into());
        }
    }
    base
}

fn push_span(out: &mut Tables, at: usize, base: &Base, span: Span) -> Result<(), IngestError> {
    let trace_id = hex_id(&span.trace_id);
    let span_id = hex_id(&span.span_id);
    let start = span.start_time_unix_nano;
    for event in &span.events {
        let mut row = Map::new();
        put_attributes(&mut row, &event.attributes);
        row.insert("time".into(), nanos(event.time_unix_nano));
        row.insert("name".into(), event.name.clone().into());
        row.insert("parent_name".into(), span.name.clone().into());
        row.insert("trace.trace_id".into(), trace_id.clone());
        row.insert("trace.parent_id".into(), span_id.clone());
        row.insert("meta.annotation_type".into(), "span_event".into());
        out.push(at, base.line(&row), false)?;
    }
    for link in &span.links {
        let mut row = Map::new();
        put_attributes(&mut row, &link.attributes);
        row.insert("time".into(), nanos(start));
        row.insert("parent_name".into(), span.name.clone().into());
        row.insert("trace.trace_id".into(), trace_id.clone());
        row.insert("trace.parent_id".into(), span_id.clone());
        row.insert("trace.link.trace_id".into(), hex_id(&link.trace_id));
        row.insert("trace.link.span_id".into(), hex_id(&link.span_id));
        row.insert("meta.annotation_type".into(), "link".into());
        out.push(at, base.line(&row), false)?;
    }
    // The span's own row, the most frequent: written as text directly
    // (a map per span and its serialization were most of the door's cost).
    let status = span.status.unwrap_or_default();
    let duration_ms = span.end_time_unix_nano.saturating_sub(start) as f64 / 1e6;
    let mut row = Row::new(base);
    for kv in &span.attributes {
        row.key(&kv.key);
        row.any(kv.value.as_ref().and_then(|v| v.value.as_ref()));
    }
    row.key("time");
    row.json(&nanos(start));
    row.key("duration_ms");
    row.json(&float(duration_ms));
    row.key("name");
    row.json(&span.name);
    row.key("trace.trace_id");
    row.json(&trace_id);
    row.key("trace.span_id");
    row.json(&span_id);
    row.key("trace.parent_id");
    row.json(&hex_id(&span.parent_span_id));
    row.key("span.kind");
    row.json(span_kind(span.kind));
    row.key("status_code");
    row.json(&status.code);
    if !status.message.is_empty() {
        row.key("status_message");
        row.json(&status.message);
    }
    row.key("error");
    row.json(&(status.code == StatusCode::Error as i32));
    out.push(at, Ok(row.finish()), true)
}

/// A row written as JSON text: the base's fields, then keys and values in
/// order (a later key given again wins, as in `Base::line`).
struct Row {
    buf: Vec<u8>,
    empty: bool,
}

impl Row {
    fn new(base: &Base) -> Row {
        let mut buf = Vec::with_capacity(base.0.len() + 512);
        buf.push(b'{');
        buf.extend_from_slice(base.0.as_bytes());
        Row {
            buf,
            empty: base.0.is_empty(),
        }
    }

    fn key(&mut self, key: &str) {
        if !std::mem::take(&mut self.empty) {
            self.buf.push(b',');
        }
        self.json(key);
        self.buf.push(b':');
    }

    fn json<T: serde::Serialize + ?Sized>(&mut self, v: &T) {
        if serde_json::to_writer(&mut self.buf, v).is_err() {
            self.buf.extend_from_slice(b"null");
        }
    }

    /// An attribute's value, as `value` converts it.
    fn any(&mut self, v: Option<&Any>) {
        match v {
            None | Some(Any::StringValueStrindex(_)) => self.buf.extend_from_slice(b"null"),
            Some(Any::StringValue(s)) => self.json(s),
            Some(Any::BoolValue(b)) => self.json(b),
            Some(Any::IntValue(i)) => self.json(i),
            Some(Any::DoubleValue(d)) => self.json(&float(*d)),
            Some(Any::BytesValue(b)) => {
                self.json(&base64::engine::general_purpose::STANDARD.encode(b))
            }
            Some(Any::ArrayValue(a)) => {
                self.buf.push(b'[');
                for (i, item) in a.values.iter().enumerate() {
                    if i > 0 {
                        self.buf.push(b',');
                    }
                    self.any(item.value.as_ref());
                }
                self.buf.push(b']');
            }
            Some(Any::KvlistValue(kv)) => {
                self.buf.push(b'{');
                for (i, item) in kv.values.iter().enumerate() {
                    if i > 0 {
                        self.buf.push(b',');
                    }
                    self.json(&item.key);
                    self.buf.push(b':');
                    self.any(item.value.as_ref().and_then(|v| v.value.as_ref()));
                }
                self.buf.push(b'}');
            }
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.buf.push(b'}');
        self.buf
    }
}

fn log_row(record: LogRecord) -> Map<String, Value> {
    let mut row = Map::new();
    take_attributes(&mut row, record.attributes);
    let time = if record.time_unix_nano != 0 {
        record.time_unix_nano
    } else {
        record.observed_time_unix_nano
    };
    row.insert("time".into(), nanos(time));
    if !record.severity_text.is_empty() {
        row.insert("severity_text".into(), record.severity_text.into());
    }
    row.insert("severity_number".into(), record.severity_number.into());
    if let Some(body) = record.body.and_then(|b| b.value) {
        let body = match value(body) {
            Value::String(s) => Value::String(s),
            other => Value::String(other.to_string()),
        };
        row.insert("body".into(), body);
    }
    if !record.trace_id.is_empty() {
        row.insert("trace.trace_id".into(), hex_id(&record.trace_id));
    }
    if !record.span_id.is_empty() {
        row.insert("trace.span_id".into(), hex_id(&record.span_id));
    }
    if !record.event_name.is_empty() {
        row.insert("name".into(), record.event_name.into());
    }
    row
}

fn put_attributes(row: &mut Map<String, Value>, attributes: &[KeyValue]) {
    for kv in attributes {
        let v = kv
            .value
            .clone()
            .and_then(|v| v.value)
            .map_or(Value::Null, value);
        row.insert(kv.key.clone(), v);
    }
}

/// `put_attributes` for attributes the row may take (a span's own).
fn take_attributes(row: &mut Map<String, Value>, attributes: Vec<KeyValue>) {
    for kv in attributes {
        let v = kv.value.and_then(|v| v.value).map_or(Value::Null, value);
        row.insert(kv.key, v);
    }
}

/// An attribute's value as a native event's JSON value.
fn value(v: Any) -> Value {
    match v {
        Any::StringValue(s) => Value::String(s),
        Any::BoolValue(b) => Value::Bool(b),
        Any::IntValue(i) => Value::from(i),
        Any::DoubleValue(d) => float(d),
        Any::ArrayValue(a) => Value::Array(
            a.values
                .into_iter()
                .map(|v: AnyValue| v.value.map_or(Value::Null, value))
                .collect(),
        ),
        Any::KvlistValue(kv) => {
            let mut m = Map::new();
            put_attributes(&mut m, &kv.values);
            Value::Object(m)
        }
        Any::BytesValue(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        // Dictionary references of the profiles signal: nothing to resolve
        // them with here.
        Any::StringValueStrindex(_) => Value::Null,
    }
}

fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// A timestamp in nanoseconds, as a native event's epoch number; 0 (unset)
/// is absent, so that the event takes its time of arrival.
fn nanos(ns: u64) -> Value {
    match ns {
        0 => Value::Null,
        ns => i64::try_from(ns).map_or(Value::Null, Value::from),
    }
}

/// A trace or span id as lowercase hex; an empty or all-zero id is absent
/// (a root span's parent).
fn hex_id(id: &[u8]) -> Value {
    if id.iter().all(|b| *b == 0) {
        return Value::Null;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(id.len() * 2);
    for b in id {
        text.push(HEX[usize::from(b >> 4)] as char);
        text.push(HEX[usize::from(b & 15)] as char);
    }
    Value::String(text)
}

/// Honeycomb's spelling of a span kind.
fn span_kind(kind: i32) -> &'static str {
    match SpanKind::try_from(kind) {
        Ok(SpanKind::Internal) => "internal",
        Ok(SpanKind::Server) => "server",
        Ok(SpanKind::Client) => "client",
        Ok(SpanKind::Producer) => "producer",
        Ok(SpanKind::Consumer) => "consumer",
        _ => "unspecified",
    }
}
