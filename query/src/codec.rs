//! The bytes of a fragment sent to another node: a header (the engine
//! version and the time limit) and the plan in DataFusion's protobuf form,
//! with Atoll's scan as the one extension node.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use atoll_store::Store;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use serde::{Deserialize, Serialize};

use crate::fragment::check_fragment;
use crate::scan::{PartitionScanExec, ScanDescription};

/// Nodes of one Atoll version plan alike; others are refused.
pub const ENGINE_VERSION: &str = concat!("atoll-", env!("CARGO_PKG_VERSION"), "-datafusion-55");

/// Encodes Atoll's own scan; nothing else is an extension.
#[derive(Debug)]
pub struct AtollCodec {
    pub store: Arc<Store>,
    pub streams: usize,
}

impl PhysicalExtensionCodec for AtollCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !inputs.is_empty() {
            return Err(DataFusionError::Plan(
                "a partition scan has no inputs".into(),
            ));
        }
        let (desc, schema) = split_frame(buf)?;
        let desc: ScanDescription = serde_json::from_slice(desc)
            .map_err(|e| DataFusionError::Plan(format!("bad scan description: {e}")))?;
        let schema = schema_from_ipc(schema)?;
        let time = crate::prune::TimeRange {
            from: desc.time_from,
            to: desc.time_to,
        };
        let scan = PartitionScanExec::new(
            self.store.clone(),
            &desc.table,
            schema.clone(),
            &desc.partitions,
            self.streams,
            time,
            desc.limit,
        )
        .with_kept_from(desc.kept_from);
        if !desc.count_rows {
            return Ok(Arc::new(scan));
        }
        let counting = scan.counting(schema).ok_or_else(|| {
            DataFusionError::Plan(
                "a scan that counts rows has Int64 columns only, no time range and no limit".into(),
            )
        })?;
        Ok(Arc::new(counting))
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let scan = node.downcast_ref::<PartitionScanExec>().ok_or_else(|| {
            DataFusionError::Plan(format!("{} cannot be shipped to another node", node.name()))
        })?;
        let desc = serde_json::to_vec(&scan.describe())
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        buf.extend(frame(&desc, &schema_to_ipc(&scan.schema())?));
        Ok(())
    }
}

/// What a `do_get` ticket carries besides the plan.
#[derive(Debug, Serialize, Deserialize)]
pub struct FragmentHeader {
    pub version: String,
    /// Milliseconds the fragment may run.
    pub timeout_ms: u64,
}

/// A fragment as a `do_get` ticket.
pub fn encode_fragment(
    plan: Arc<dyn ExecutionPlan>,
    codec: &AtollCodec,
    timeout_ms: u64,
) -> Result<Vec<u8>> {
    let plan = datafusion_proto::bytes::physical_plan_to_bytes_with_extension_codec(plan, codec)?;
    let header = serde_json::to_vec(&FragmentHeader {
        version: ENGINE_VERSION.into(),
        timeout_ms,
    })
    .map_err(|e| DataFusionError::Internal(e.to_string()))?;
    Ok(frame(&header, &plan))
}

/// A fragment received from another node: its header and plan, checked.
/// Arrow's IPC schema decoding panics on some damaged input (unknown type
/// ids, odd bit widths; found by `query/tests/fuzz.rs`): damage is an
/// error like any other.
pub fn decode_fragment(
    ticket: &[u8],
    ctx: &TaskContext,
    codec: &AtollCodec,
) -> Result<(FragmentHeader, Arc<dyn ExecutionPlan>)> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decode_checked(ticket, ctx, codec)
    }))
    .unwrap_or_else(|_| {
        Err(DataFusionError::Plan(
            "a damaged fragment: its plan cannot be decoded".into(),
        ))
    })
}

fn decode_checked(
    ticket: &[u8],
    ctx: &TaskContext,
    codec: &AtollCodec,
) -> Result<(FragmentHeader, Arc<dyn ExecutionPlan>)> {
    let (header, plan) = split_frame(ticket)?;
    let header: FragmentHeader = serde_json::from_slice(header)
        .map_err(|e| DataFusionError::Plan(format!("bad fragment header: {e}")))?;
    if header.timeout_ms == 0 {
        return Err(DataFusionError::Plan(
            "a fragment's timeout_ms must be at least 1".into(),
        ));
    }
    if header.version != ENGINE_VERSION {
        return Err(DataFusionError::Plan(format!(
            "this node runs {ENGINE_VERSION}, the fragment was planned by {}: upgrade the cluster to one version",
            header.version
        )));
    }
    let plan =
        datafusion_proto::bytes::physical_plan_from_bytes_with_extension_codec(plan, ctx, codec)?;
    check_fragment(&plan)?;
    Ok((header, plan))
}

/// Two byte strings as one: the first's length, then both.
pub fn frame(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = (a.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(a);
    out.extend_from_slice(b);
    out
}

fn split_frame(buf: &[u8]) -> Result<(&[u8], &[u8])> {
    let bad = || DataFusionError::Plan("truncated fragment".into());
    let len = u32::from_le_bytes(
        buf.get(..4)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    ) as usize;
    let rest = &buf[4..];
    if rest.len() < len {
        return Err(bad());
    }
    Ok(rest.split_at(len))
}

fn schema_to_ipc(schema: &SchemaRef) -> Result<Vec<u8>> {
    let mut w = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), schema)?;
    w.finish()?;
    Ok(w.into_inner()?)
}

fn schema_from_ipc(bytes: &[u8]) -> Result<SchemaRef> {
    Ok(arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)?.schema())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
    use datafusion::prelude::SessionContext;

    #[test]
    fn a_scan_survives_the_trip() {
        let store = Arc::new(Store::new(Default::default()));
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        let scan: Arc<dyn ExecutionPlan> = Arc::new(PartitionScanExec::new(
            store.clone(),
            "t",
            schema.clone(),
            &[1, 5, 9],
            2,
            crate::prune::TimeRange {
                from: Some(10),
                to: None,
            },
            Some(7),
        ));
        let codec = AtollCodec { store, streams: 2 };
        let plan: Arc<dyn ExecutionPlan> = Arc::new(CoalescePartitionsExec::new(scan));
        let ticket = encode_fragment(plan, &codec, 5).unwrap();
        let ctx = SessionContext::new();
        let (h, back) = decode_fragment(&ticket, &ctx.task_ctx(), &codec).unwrap();
        assert_eq!(h.timeout_ms, 5);
        let scan = back.children()[0]
            .downcast_ref::<PartitionScanExec>()
            .unwrap()
            .describe();
        let mut parts = scan.partitions.clone();
        parts.sort();
        assert_eq!(parts, vec![1, 5, 9]);
        assert_eq!((scan.time_from, scan.limit), (Some(10), Some(7)));
        assert_eq!(back.schema(), schema);
    }

    #[test]
    fn other_versions_and_truncated_tickets_are_refused() {
        let store = Arc::new(Store::new(Default::default()));
        let codec = AtollCodec { store, streams: 1 };
        let ctx = SessionContext::new();
        let header = serde_json::to_vec(&FragmentHeader {
            version: "atoll-0.0.0".into(),
            timeout_ms: 5,
        })
        .unwrap();
        let err = decode_fragment(&frame(&header, b""), &ctx.task_ctx(), &codec).unwrap_err();
        assert!(
            err.to_string()
                .contains("upgrade the cluster to one version"),
            "{err}"
        );
        let err = decode_fragment(&[200, 0, 0, 0, 1], &ctx.task_ctx(), &codec).unwrap_err();
        assert!(err.to_string().contains("truncated fragment"), "{err}");
    }
}
