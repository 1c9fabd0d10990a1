//! Fuzzing (proptest, stable Rust) of what a node reads from its peers:
//! gossiped values (rings, partition lists, counts), gossip datagrams,
//! call signatures, internal messages and replica writes (`PutMany` parts
//! as Flight data). Any bytes give an answer or an error, never a panic.

use arrow_flight::{FlightData, FlightDescriptor};
use atoll_cluster::call_auth::{CALL_HEADER, CallCheck, CallKey};
use atoll_cluster::gossip::Sealer;
use atoll_cluster::keys::{decode_ring, parse_counts, parse_partitions};
use atoll_cluster::messages::{PutDescriptor, PutMany, TableChange, decode};
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

/// Text made of the characters gossiped values use, and some others.
fn gossip_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9;,a-z]{0,80}",
        "[0-9]{1,3};[a-z,]{1,20};[0-9,]{0,60}(;[0-9,]{0,60})?",
        any::<String>(),
    ]
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..600)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_gossiped_values(text in gossip_text()) {
        if let Some(ring) = decode_ring(&text) {
            prop_assert!(ring.partitions() > 0);
        }
        let _ = parse_partitions(&text);
        let _ = parse_counts(&text);
    }

    #[test]
    fn fuzz_gossip_datagrams(datagram in bytes(), now in any::<i64>()) {
        let sealer = Sealer::new("secret");
        prop_assert!(sealer.open(&datagram, now).is_err(), "an unsigned datagram opened");
    }

    #[test]
    fn fuzz_call_signatures(value in "[ -~]{0,120}", method in "[ -~]{0,40}") {
        let check = CallCheck::new(CallKey::new("secret"), "127.0.0.1:7071".into());
        let mut headers = tonic::codegen::http::HeaderMap::new();
        if let Ok(v) = value.parse() {
            headers.insert(CALL_HEADER, v);
        }
        prop_assert!(check.verify(&method, &headers).is_err());
    }

    #[test]
    fn fuzz_internal_messages(body in bytes()) {
        let _ = decode::<PutMany>(&body);
        let _ = decode::<PutDescriptor>(&body);
        let _ = decode::<TableChange>(&body);
    }

    #[test]
    fn fuzz_replica_writes(
        cmd in bytes(),
        parts in proptest::collection::vec((bytes(), bytes()), 0..4),
    ) {
        let mut data = vec![FlightData {
            flight_descriptor: Some(FlightDescriptor::new_cmd(cmd)),
            ..Default::default()
        }];
        data.extend(parts.into_iter().map(|(header, body)| FlightData {
            data_header: header.into(),
            data_body: body.into(),
            ..Default::default()
        }));
        let stream = futures::stream::iter(data.into_iter().map(Ok));
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let _ = runtime.block_on(atoll_cluster::replica::read_put(stream));
    }
}

/// A real write (a descriptor, a schema and a batch as Flight data).
fn real_write() -> Vec<FlightData> {
    use std::sync::Arc;
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("a", arrow::datatypes::DataType::Int64, true),
        arrow::datatypes::Field::new("s", arrow::datatypes::DataType::Utf8, true),
    ]));
    let batch = arrow::array::RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(arrow::array::Int64Array::from(vec![1, 2, 3])),
            Arc::new(arrow::array::StringArray::from(vec!["x", "yy", "zzz"])),
        ],
    )
    .unwrap();
    let mut data = arrow_flight::utils::batches_to_flight_data(&schema, vec![batch]).unwrap();
    data[0].flight_descriptor = Some(FlightDescriptor::new_cmd(
        r#"{"table":"t","parts":[{"partition":1,"rows":3,"hint_for":null}]}"#,
    ));
    data
}

proptest! {
    #![proptest_config(config())]

    /// A real write with some of its bytes changed: the IPC decoding of
    /// replica writes meets damaged headers and bodies.
    #[test]
    fn fuzz_damaged_replica_writes(flips in proptest::collection::vec((any::<bool>(), any::<usize>(), 1u8..), 1..6)) {
        // Arrow's decoder panics on some damage (caught by `read_put`);
        // its messages would fill the log. Failures still report theirs.
        std::panic::set_hook(Box::new(|_| {}));
        let mut data = real_write();
        let last = data.len() - 1;
        for (in_body, at, xor) in flips {
            let part = if in_body { &mut data[last].data_body } else { &mut data[last].data_header };
            if !part.is_empty() {
                let mut bytes = part.to_vec();
                let i = at % bytes.len();
                bytes[i] ^= xor;
                *part = bytes.into();
            }
        }
        let stream = futures::stream::iter(data.into_iter().map(Ok));
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let _ = runtime.block_on(atoll_cluster::replica::read_put(stream));
    }
}
