//! A live subscription on an owner: the builder's filter as a DataFusion
//! physical expression over each batch just stored (read through the
//! table's schema, so a column the batch lacks is NULL), then the rows'
//! partial aggregates per time bucket and group, and the newest rows.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, Float64Type, SchemaRef, TimeUnit, TimestampMicrosecondType};
use atoll_store::Store;
use datafusion::common::DFSchema;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;
use serde_json::{Map, Value};

use super::gathered::{Gathered, MAX_SAMPLES};
use super::spec::{LiveFn, LiveSpec};
use crate::error::QueryError;

/// The column of an event's sample rate: it stands for that many.
const SAMPLE_RATE: &str = "samplerate";

/// The filter as a logical expression over `schema`, refused unless it is
/// a plain row predicate (no subquery, aggregate or window).
pub fn logical_filter(
    state: &SessionState,
    schema: &SchemaRef,
    sql: &str,
) -> Result<Expr, QueryError> {
    let df = DFSchema::try_from(schema.as_ref().clone())?;
    let expr = state.create_logical_expr(sql, &df)?;
    let mut refused = None;
    expr.apply(|e| {
        let what = match e {
            Expr::ScalarSubquery(_) | Expr::InSubquery(_) | Expr::Exists(_) => Some("a subquery"),
            Expr::AggregateFunction(_) => Some("an aggregate"),
            Expr::WindowFunction(_) => Some("a window function"),
            _ => None,
        };
        if let Some(w) = what {
            refused = Some(w);
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if let Some(what) = refused {
        return Err(QueryError::Refused(format!(
            "a live filter is a condition on each event's columns, not {what}"
        )));
    }
    Ok(expr)
}

fn physical_filter(
    state: &SessionState,
    schema: &SchemaRef,
    sql: &str,
) -> Result<Arc<dyn PhysicalExpr>, QueryError> {
    let expr = logical_filter(state, schema, sql)?;
    let df = DFSchema::try_from(schema.as_ref().clone())?;
    Ok(state.create_physical_expr(expr, &df)?)
}

struct Compiled {
    schema: SchemaRef,
    filter: Option<Arc<dyn PhysicalExpr>>,
}

pub struct Tap {
    spec: LiveSpec,
    partitions: BTreeSet<u32>,
    state: SessionState,
    store: Arc<Store>,
    compiled: parking_lot::Mutex<Option<Compiled>>,
    gathered: parking_lot::Mutex<Gathered>,
}

impl Tap {
    /// Checks the spec against the table as this node knows it.
    pub fn new(spec: LiveSpec, state: SessionState, store: Arc<Store>) -> Result<Tap, QueryError> {
        let table = store
            .table(&spec.table)
            .ok_or_else(|| QueryError::BadRequest(format!("no table {:?} here", spec.table)))?;
        let schema = table.schema().arrow().clone();
        let filter = match &spec.filter {
            Some(sql) => Some(physical_filter(&state, &schema, sql)?),
            None => None,
        };
        Ok(Tap {
            partitions: spec.partitions.clone(),
            spec,
            state,
            store,
            compiled: parking_lot::Mutex::new(Some(Compiled { schema, filter })),
            gathered: Default::default(),
        })
    }

    /// The batch read through the table's schema, and the filter for it
    /// (compiled again when the table gained columns).
    fn read(
        &self,
        batch: &RecordBatch,
    ) -> Result<(RecordBatch, Option<Arc<dyn PhysicalExpr>>), QueryError> {
        let mut compiled = self.compiled.lock();
        if let Some(c) = compiled.as_ref()
            && let Ok(b) = atoll_store::schema::adapt_batch(batch, &c.schema)
        {
            return Ok((b, c.filter.clone()));
        }
        let table = self.store.table(&self.spec.table).ok_or_else(|| {
            QueryError::BadRequest(format!("table {:?} is gone", self.spec.table))
        })?;
        let schema = table.schema().arrow().clone();
        let filter = match &self.spec.filter {
            Some(sql) => Some(physical_filter(&self.state, &schema, sql)?),
            None => None,
        };
        let b = atoll_store::schema::adapt_batch(batch, &schema)
            .map_err(|e| QueryError::BadRequest(e.to_string()))?;
        *compiled = Some(Compiled {
            schema,
            filter: filter.clone(),
        });
        Ok((b, filter))
    }

    fn gather(&self, batch: &RecordBatch) -> Result<(), QueryError> {
        let (batch, filter) = self.read(batch)?;
        let batch = match filter {
            Some(f) => {
                let mask = f.evaluate(&batch)?.into_array(batch.num_rows())?;
                let mask: &BooleanArray = mask.as_boolean_opt().ok_or_else(|| {
                    QueryError::BadRequest(
                        "a live filter must be true or false for each event".into(),
                    )
                })?;
                filter_record_batch(&batch, mask).map_err(arrow_error)?
            }
            None => batch,
        };
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let times = column(
            &batch,
            "time",
            &DataType::Timestamp(TimeUnit::Microsecond, None),
        )?;
        let times = times
            .as_ref()
            .map(|t| t.as_primitive::<TimestampMicrosecondType>());
        let groups: Vec<_> = self
            .spec
            .group_by
            .iter()
            .map(|g| column(&batch, g, &DataType::Utf8))
            .collect::<Result<_, _>>()?;
        let inputs: Vec<_> = self
            .spec
            .aggregates
            .iter()
            .map(|a| match (&a.func, &a.column) {
                (LiveFn::Count, _) | (_, None) => Ok(None),
                (_, Some(c)) => column(&batch, c, &DataType::Float64),
            })
            .collect::<Result<_, _>>()?;
        let weights = column(&batch, SAMPLE_RATE, &DataType::Float64)?;
        let bucket_us = self.spec.bucket_seconds.max(1) * 1_000_000;
        let mut gathered = self.gathered.lock();
        for row in 0..rows {
            let Some(t) = times.filter(|t| t.is_valid(row)).map(|t| t.value(row)) else {
                continue;
            };
            let bucket = t.div_euclid(bucket_us) * bucket_us / 1_000_000;
            let group = groups
                .iter()
                .map(|g| {
                    g.as_ref()
                        .filter(|a| a.is_valid(row))
                        .map(|a| a.as_string::<i32>().value(row).to_string())
                })
                .collect();
            let weight = weights
                .as_ref()
                .filter(|w| w.is_valid(row))
                .map_or(1.0, |w| w.as_primitive::<Float64Type>().value(row));
            let Some(states) = gathered.entry((bucket, group), inputs.len()) else {
                continue;
            };
            for (state, input) in states.iter_mut().zip(&inputs) {
                match input {
                    None => state.add(1.0, weight),
                    Some(a) if a.is_valid(row) => {
                        state.add(a.as_primitive::<Float64Type>().value(row), weight)
                    }
                    Some(_) => {}
                }
            }
        }
        let newest = batch.slice(rows.saturating_sub(MAX_SAMPLES), rows.min(MAX_SAMPLES));
        gathered.add_samples(objects(&newest));
        Ok(())
    }
}

fn arrow_error(e: arrow::error::ArrowError) -> QueryError {
    QueryError::DataFusion(e.into())
}

/// A column cast to `to`; None when the batch has no such column.
fn column(
    batch: &RecordBatch,
    name: &str,
    to: &DataType,
) -> Result<Option<arrow::array::ArrayRef>, QueryError> {
    match batch.column_by_name(name) {
        None => Ok(None),
        Some(c) => Ok(Some(cast(c, to).map_err(arrow_error)?)),
    }
}

/// Rows as objects of their non-null columns, rendered as the API does.
fn objects(batch: &RecordBatch) -> Vec<Map<String, Value>> {
    let mut rows = Vec::new();
    crate::render::append_rows(batch, &mut rows);
    let names: Vec<String> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    rows.into_iter()
        .map(|values| {
            names
                .iter()
                .zip(values)
                .filter(|(_, v)| !v.is_null())
                .map(|(n, v)| (n.clone(), v))
                .collect()
        })
        .collect()
}

impl atoll_cluster::live::LiveTap for Tap {
    fn table(&self) -> &str {
        &self.spec.table
    }

    fn partitions(&self) -> &BTreeSet<u32> {
        &self.partitions
    }

    fn apply(&self, batch: &RecordBatch) {
        if let Err(e) = self.gather(batch) {
            tracing::warn!(table = %self.spec.table, error = %e, "a live subscription could not read stored rows");
            self.gathered.lock().lost = true;
        }
    }

    fn take(&self, lost: bool) -> Option<Vec<u8>> {
        let mut taken = std::mem::take(&mut *self.gathered.lock());
        taken.lost |= lost;
        if taken.is_empty() {
            return None;
        }
        serde_json::to_vec(&taken).ok()
    }
}
