//! One node's share of a fan-out run on another node: the fragment sent
//! over the cluster's `do_get`, its batches read back, and the owner's
//! figures (sent after the last batch) added to the query's counters.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::decode::{DecodedPayload, FlightRecordBatchStream};
use atoll_cluster::messages::FragmentStats;
use atoll_cluster::{ClusterError, PeerClient};
use datafusion::common::{DataFusionError, Result};
use futures::{StreamExt, TryStreamExt};

use super::fanout::{FanoutCounters, Placement};

pub type BatchStream = futures::stream::BoxStream<'static, Result<RecordBatch>>;

/// Sends `ticket` (an encoded fragment) to the node of `place`.
pub async fn run_remote(
    peers: &PeerClient,
    place: &Placement,
    ticket: Vec<u8>,
    expected: SchemaRef,
    counters: Arc<FanoutCounters>,
) -> Result<BatchStream> {
    let lost = |e: ClusterError| DataFusionError::External(Box::new(e));
    let addr = place.flight_addr.clone().ok_or_else(|| {
        lost(ClusterError::unreachable(
            &place.node,
            "no Flight address known",
        ))
    })?;
    let response = peers.do_get(&addr, ticket).await.map_err(lost)?;
    counters
        .remote_partitions
        .fetch_add(place.partitions.len() as u64, Ordering::Relaxed);
    let (node, partitions) = (place.node.clone(), place.partitions.len() as u64);
    let decoded = FlightRecordBatchStream::new_from_flight_data(
        response.map_err(|s| arrow_flight::error::FlightError::Tonic(Box::new(s))),
    )
    .into_inner();
    // Arrow's IPC decoder panics on some damaged buffer layouts: a damaged
    // answer fails the query with a reason, not with a panic.
    let decoded = std::panic::AssertUnwindSafe(decoded)
        .catch_unwind()
        .map(|item| {
            item.unwrap_or_else(|_| {
                Err(arrow_flight::error::FlightError::DecodeError(
                    "damaged Arrow data: its buffers do not fit its layout".into(),
                ))
            })
        });
    Ok(decoded
        .filter_map(move |item| {
            let (counters, expected, node) = (counters.clone(), expected.clone(), node.clone());
            async move {
                match item {
                    Ok(d) => match d.payload {
                        DecodedPayload::RecordBatch(b) => Some(conform(b, &expected)),
                        _ => {
                            count(&counters, &node, partitions, &d.inner.app_metadata);
                            None
                        }
                    },
                    // A replica lost in the middle of its answer.
                    Err(e) => Some(Err(DataFusionError::External(Box::new(
                        ClusterError::unreachable(&node, e.to_string()),
                    )))),
                }
            }
        })
        .boxed())
}

/// Adds an owner's figures for its fragment to the query's.
fn count(counters: &FanoutCounters, node: &str, partitions: u64, metadata: &[u8]) {
    let Ok(stats) = serde_json::from_slice::<FragmentStats>(metadata) else {
        return;
    };
    counters
        .remote_rows
        .fetch_add(stats.rows_scanned, Ordering::Relaxed);
    let mut nodes = counters.nodes.lock();
    let entry = nodes.entry(node.to_string()).or_default();
    entry.node = node.to_string();
    entry.partitions += partitions;
    entry.rows_scanned += stats.rows_scanned;
    entry.elapsed_ms = Some(entry.elapsed_ms.unwrap_or(0.0).max(stats.elapsed_ms));
}

/// Casts a received batch to the schema the coordinator planned (Flight
/// hydrates dictionaries, and nullability may differ).
fn conform(batch: RecordBatch, expected: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(expected.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                arrow::compute::cast(c, f.data_type())
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new_with_options(
        expected.clone(),
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}
