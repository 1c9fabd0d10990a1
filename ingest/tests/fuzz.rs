//! Fuzzing (proptest, stable Rust) of ingest's decoders: compressed bodies,
//! JSON objects, arrays and NDJSON through both decoders into a table, the
//! Idempotency-Key header, Honeycomb batches (JSON and MessagePack) and
//! OTLP bodies (protobuf and JSON, of any bytes and real ones with bytes
//! changed). Any bytes give events, rejections or a clear error, never a
//! panic.

use atoll_ingest::otlp::{self, Encoding};
use atoll_ingest::protocol::Made;
use atoll_ingest::{body, convert, decode, honeycomb, idempotency_key, typed};
use atoll_store::{Store, StoreConfig};
use proptest::prelude::*;
use prost::Message;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text shaped like event bodies: JSON tokens in any order.
fn jsonish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("{".to_string()),
        Just("}".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just(",".to_string()),
        Just(":".to_string()),
        Just("\n".to_string()),
        Just("\"time\"".to_string()),
        Just("\"samplerate\"".to_string()),
        "\"[a-z.]{0,6}\"",
        "-?[0-9]{1,22}(\\.[0-9]{0,4})?(e[0-9]{1,3})?",
        Just("true".to_string()),
        Just("null".to_string()),
        Just("\"2026-01-01T00:00:00Z\"".to_string()),
        any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
    ];
    proptest::collection::vec(token, 0..60).prop_map(|t| t.concat())
}

/// A body through every path a request takes, into a fresh table.
fn ingest(bytes: &[u8]) {
    let store = Store::new(StoreConfig {
        partitions: 4,
        ..Default::default()
    });
    let table = store.get_or_create("t").unwrap();
    let now = atoll_store::now_micros();
    for ndjson in [false, true] {
        if let Ok(parsed) = body::parse(bytes, ndjson) {
            let events = convert::prepare_all(&parsed, now);
            let _ = convert::convert_flat(&table, events, None);
        }
    }
    if let Some(Ok(pieces)) = body::array_pieces(bytes, 3) {
        for p in pieces {
            let parsed = body::parse_elements(bytes, &p);
            let _ = convert::convert_flat(&table, convert::prepare_all(&parsed, now), Some("k"));
        }
    }
    for (first, range) in body::ndjson_pieces(bytes, 5) {
        let piece = &bytes[range];
        let _ = typed::convert_ndjson(&table, piece, now, None);
        let events = decode::ndjson_events(piece, first, now);
        let _ = convert::convert_flat(&table, events, None);
        // Once the table has columns, the typed decoder takes its turn.
        let _ = typed::convert_ndjson(&table, piece, now, None);
    }
}

/// A protocol door's body through its decoder, and its events into a
/// table.
fn protocols(bytes: &[u8]) {
    let store = Store::new(StoreConfig {
        partitions: 4,
        ..Default::default()
    });
    let table = store.get_or_create("t").unwrap();
    let now = atoll_store::now_micros();
    let mut made = Vec::new();
    for msgpack in [false, true] {
        if let Ok(batch) = honeycomb::batch(bytes::Bytes::copy_from_slice(bytes), msgpack) {
            match batch.read(0..batch.len()) {
                Made::Objects(events) => made.extend(events),
                Made::Lines(lines) => {
                    for line in lines.into_iter().flatten() {
                        assert!(!line.contains(&b'\n'), "one line");
                        if let Ok(events) = body::parse(&line, true) {
                            made.extend(events);
                        }
                    }
                }
            }
        }
    }
    if let Ok(Ok(event)) = honeycomb::single(bytes, Some("1"), Some("2")) {
        made.push(Ok(event));
    }
    for encoding in [Encoding::Protobuf, Encoding::Json] {
        let mut lines = Vec::new();
        if let Ok(r) = otlp::decode_traces(bytes, encoding)
            && let Ok(tables) = otlp::span_rows(r, 1 << 20)
        {
            lines.extend(tables.into_iter().flat_map(|t| t.events));
        }
        if let Ok(r) = otlp::decode_logs(bytes, encoding)
            && let Ok(tables) = otlp::log_rows(r, 1 << 20)
        {
            lines.extend(tables.into_iter().flat_map(|t| t.events));
        }
        for line in lines.into_iter().flatten() {
            assert!(!line.contains(&b'\n'), "one line");
            made.extend(body::parse(&line, true).expect("a line of JSON"));
        }
    }
    let _ = convert::convert_flat(&table, convert::prepare_all(&made, now), None);
}

/// A real OTLP traces request: a span with attributes, an event and a link.
fn spans() -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    let body = serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "s"}}]},
        "scopeSpans": [{"scope": {"name": "x"}, "spans": [{
            "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
            "name": "op", "kind": 2, "startTimeUnixNano": "1", "endTimeUnixNano": "2",
            "attributes": [{"key": "a", "value": {"arrayValue": {"values": [{"intValue": 1}]}}}],
            "events": [{"timeUnixNano": "1", "name": "e"}],
            "links": [{"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b175"}],
            "status": {"code": 2}
        }]}]
    }]});
    let request: ExportTraceServiceRequest = serde_json::from_value(body).unwrap();
    request.encode_to_vec()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_protocol_bodies_of_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        protocols(&bytes);
    }

    #[test]
    fn fuzz_protocol_bodies_of_json_tokens(text in jsonish()) {
        protocols(text.as_bytes());
    }

    #[test]
    fn fuzz_otlp_protobuf_with_bytes_changed(
        changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut body = spans();
        for (at, byte) in changes {
            let i = at.index(body.len());
            body[i] = byte;
        }
        protocols(&body);
    }

    #[test]
    fn fuzz_bodies_of_json_tokens(text in jsonish()) {
        ingest(text.as_bytes());
    }

    #[test]
    fn fuzz_bodies_of_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        ingest(&bytes);
    }

    #[test]
    fn fuzz_compressed_bodies(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        gzip in any::<bool>(),
    ) {
        let encoding = if gzip { "gzip" } else { "zstd" };
        if let Ok(out) = body::decode(Some(encoding), &bytes, 1 << 16) {
            prop_assert!(out.len() <= 1 << 16);
        }
    }

    #[test]
    fn fuzz_idempotency_keys(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(Some(k)) = idempotency_key(Some(&bytes)) {
            prop_assert!((1..=256).contains(&k.len()));
            prop_assert!(k.bytes().all(|b| b.is_ascii_graphic()));
        }
    }
}
