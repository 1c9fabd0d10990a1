//! Fuzzing (proptest, stable Rust) of ingest's decoders: compressed bodies,
//! JSON objects, arrays and NDJSON through both decoders into a table, and
//! the Idempotency-Key header. Any bytes give events, rejections or a
//! clear error, never a panic.

use atoll_ingest::{body, convert, decode, idempotency_key, typed};
use atoll_store::{Store, StoreConfig};
use proptest::prelude::*;

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

proptest! {
    #![proptest_config(config())]

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
