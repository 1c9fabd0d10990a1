//! The same events through each ingest door: Atoll's NDJSON (plain or
//! gzip), Honeycomb batches (`/1/batch`, as libhoney sends them) and OTLP
//! protobuf spans (`/v1/traces`, as an OpenTelemetry exporter does), so
//! that the doors' rates compare on one workload.

use anyhow::{Context, Result};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    Native,
    NativeGzip,
    Honeycomb,
    Otlp,
}

impl Door {
    pub fn name(self) -> &'static str {
        match self {
            Door::Native => "NDJSON",
            Door::NativeGzip => "NDJSON (gzip)",
            Door::Honeycomb => "Honeycomb batches",
            Door::Otlp => "OTLP protobuf spans",
        }
    }

    /// Path and content type of a request.
    pub fn target(self) -> (&'static str, &'static str) {
        match self {
            Door::Native | Door::NativeGzip => ("/v1/tables/events/events", "application/x-ndjson"),
            Door::Honeycomb => ("/1/batch/events", "application/json"),
            Door::Otlp => ("/v1/traces", "application/x-protobuf"),
        }
    }

    /// Events stored, from an answer to a request of `sent` events.
    pub fn accepted(self, answer: &[u8], sent: usize) -> Result<u64> {
        Ok(match self {
            Door::Native | Door::NativeGzip => {
                let v: Value = serde_json::from_slice(answer)?;
                v["accepted"].as_u64().context("accepted")?
            }
            Door::Honeycomb => {
                let v: Value = serde_json::from_slice(answer)?;
                let list = v.as_array().context("a list of statuses")?;
                list.iter().filter(|s| s["status"] == 202).count() as u64
            }
            Door::Otlp => {
                let r = ExportTraceServiceResponse::decode(answer)?;
                let refused = r.partial_success.map_or(0, |p| p.rejected_spans);
                sent as u64 - refused.max(0) as u64
            }
        })
    }
}

/// NDJSON bodies as Honeycomb batches: `[{"data": EVENT}, ...]` (each
/// event keeps its own `time`).
pub fn honeycomb_bodies(bodies: &[Vec<u8>]) -> Vec<Vec<u8>> {
    bodies
        .iter()
        .map(|body| {
            let mut out = Vec::with_capacity(body.len() + body.len() / 8);
            out.push(b'[');
            for (i, line) in body
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .enumerate()
            {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"data\":");
                out.extend_from_slice(line);
                out.push(b'}');
            }
            out.push(b']');
            out
        })
        .collect()
}

/// NDJSON bodies as OTLP requests: an event is a span named by its
/// endpoint, starting at its `time` and lasting its `duration_ms`, its
/// other fields attributes, under one resource (`service.name` `events`).
pub fn otlp_bodies(bodies: &[Vec<u8>]) -> Result<Vec<Vec<u8>>> {
    let mut seq: u64 = 1;
    bodies
        .iter()
        .map(|body| {
            let mut spans = Vec::new();
            for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let Value::Object(event) = serde_json::from_slice::<Value>(line)? else {
                    continue;
                };
                spans.push(span(event, seq)?);
                seq += 1;
            }
            let request = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![attribute("service.name", Value::from("events"))],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            };
            Ok(request.encode_to_vec())
        })
        .collect()
}

fn span(mut event: serde_json::Map<String, Value>, seq: u64) -> Result<Span> {
    let time = event.remove("time").context("an event without time")?;
    let start = chrono::DateTime::parse_from_rfc3339(time.as_str().context("time text")?)?
        .timestamp_nanos_opt()
        .context("time in range")? as u64;
    let duration_ms = event
        .remove("duration_ms")
        .and_then(|d| d.as_f64())
        .unwrap_or(0.0);
    let name = event
        .get("endpoint")
        .and_then(Value::as_str)
        .unwrap_or("event")
        .to_string();
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&seq.to_be_bytes());
    trace_id[8..].copy_from_slice(&(seq ^ 0x5bd1_e995).to_be_bytes());
    Ok(Span {
        trace_id: trace_id.to_vec(),
        span_id: seq.to_be_bytes().to_vec(),
        name,
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + (duration_ms * 1e6) as u64,
        attributes: event.into_iter().map(|(k, v)| attribute(&k, v)).collect(),
        ..Default::default()
    })
}

fn attribute(key: &str, v: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(any(v)),
        ..Default::default()
    }
}

fn any(v: Value) -> AnyValue {
    let value = match v {
        Value::Null => None,
        Value::Bool(b) => Some(Any::BoolValue(b)),
        Value::Number(n) => Some(match n.as_i64() {
            Some(i) => Any::IntValue(i),
            None => Any::DoubleValue(n.as_f64().unwrap_or(0.0)),
        }),
        Value::String(s) => Some(Any::StringValue(s)),
        Value::Array(items) => Some(Any::ArrayValue(ArrayValue {
            values: items.into_iter().map(any).collect(),
        })),
        Value::Object(m) => Some(Any::KvlistValue(KeyValueList {
            values: m.into_iter().map(|(k, v)| attribute(&k, v)).collect(),
        })),
    };
    AnyValue { value }
}
