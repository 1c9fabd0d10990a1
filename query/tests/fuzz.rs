//! Fuzzing (proptest, stable Rust) of the plan-fragment decoder: the
//! tickets another node sends. Any bytes, and any damage to a real
//! fragment, give a plan or an error, never a panic.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use atoll_query::codec::{AtollCodec, decode_fragment, encode_fragment};
use atoll_query::scan::PartitionScanExec;
use atoll_store::Store;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::prelude::SessionContext;
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

fn codec() -> AtollCodec {
    AtollCodec {
        store: Arc::new(Store::new(Default::default())),
        streams: 1,
    }
}

fn real_ticket(codec: &AtollCodec) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
    let scan: Arc<dyn ExecutionPlan> = Arc::new(PartitionScanExec::new(
        codec.store.clone(),
        "t",
        schema,
        &[1, 2],
        1,
        Default::default(),
        None,
    ));
    encode_fragment(Arc::new(CoalescePartitionsExec::new(scan)), codec, 1_000).unwrap()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_fragment_tickets_of_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..800)) {
        let ctx = SessionContext::new();
        let _ = decode_fragment(&bytes, &ctx.task_ctx(), &codec());
    }

    #[test]
    fn fuzz_damaged_fragments(flips in proptest::collection::vec((any::<usize>(), 1u8..), 1..6)) {
        // Arrow's decoder panics on some damage (caught by
        // `decode_fragment`); its messages would fill the log.
        std::panic::set_hook(Box::new(|_| {}));
        let codec = codec();
        let mut ticket = real_ticket(&codec);
        for (at, xor) in flips {
            let i = at % ticket.len();
            ticket[i] ^= xor;
        }
        let ctx = SessionContext::new();
        let _ = decode_fragment(&ticket, &ctx.task_ctx(), &codec);
    }
}
