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
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Expr, ExprSchemable};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::PhysicalExpr;
use serde_json::{Map, Value};

use super::gathered::{Gathered, MAX_SAMPLES};
use super::spec::{LiveFn, LiveSpec};
use crate::error::QueryError;

/// The column of an event's sample rate: it stands for that many.
const SAMPLE_RATE: &str = "samplerate";

/// Group values longer than this are cut (a gathering's size is bounded
/// by its keys' count times this).
const MAX_GROUP_BYTES: usize = 256;

/// The filter as a logical expression over `schema`, refused unless it is
/// a plain row predicate (no subquery, aggregate or window) that is true
/// or false. `state` has no tables (`QueryEngine::live_state`): a subquery
/// cannot even be planned, so its errors say nothing of other tables.
/// Simplified once, so that `now()` is the subscription's start.
pub fn logical_filter(
    state: &SessionState,
    schema: &SchemaRef,
    sql: &str,
) -> Result<Expr, QueryError> {
    let df = Arc::new(DFSchema::try_from(schema.as_ref().clone())?);
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
    let kind = expr.get_type(df.as_ref())?;
    if !matches!(kind, DataType::Boolean | DataType::Null) {
        return Err(QueryError::BadRequest(format!(
            "a live filter is true or false for each event; this one is {kind}"
        )));
    }
    let context = SimplifyContext::builder()
        .with_schema(df)
        .with_current_time()
        .build();
    Ok(ExprSimplifier::new(context).simplify(expr)?)
}

/// The filter compiled for `schema`, tried once on a row of NULLs so that
/// one that cannot run is refused now rather than failing every batch.
fn physical_filter(
    state: &SessionState,
    schema: &SchemaRef,
    sql: &str,
) -> Result<Arc<dyn PhysicalExpr>, QueryError> {
    let expr = logical_filter(state, schema, sql)?;
    let df = DFSchema::try_from(schema.as_ref().clone())?;
    let physical = state.create_physical_expr(expr, &df)?;
    let nulls: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| arrow::array::new_null_array(f.data_type(), 1))
        .collect();
    if let Ok(row) = RecordBatch::try_new(schema.clone(), nulls) {
        physical.evaluate(&row)?;
    }
    Ok(physical)
}

/// The columns a view groups and aggregates must be the table's, and what
/// it sums or compares a number (the coordinator's check; an owner that
/// has not heard of a new column yet reads it as NULL).
pub fn check_columns(spec: &LiveSpec, schema: &SchemaRef) -> Result<(), QueryError> {
    let field = |name: &str| {
        schema.field_with_name(name).map_err(|_| {
            QueryError::BadRequest(format!("table {:?} has no column {name:?}", spec.table))
        })
    };
    for g in &spec.group_by {
        field(g)?;
    }
    for a in &spec.aggregates {
        match (&a.func, &a.column) {
            (LiveFn::Count, None) => {}
            (LiveFn::Count, Some(_)) => {
                return Err(QueryError::BadRequest(
                    "a live count counts events: it takes no column".into(),
                ));
            }
            (_, None) => {}
            (f, Some(c)) if !field(c)?.data_type().is_numeric() => {
                return Err(QueryError::BadRequest(
                    format!("{f:?} of {c:?}: a live view sums and compares numbers only",)
                        .to_lowercase(),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// What one aggregate reads from a row.
enum Input {
    /// Every row counts.
    Rows,
    /// A numeric column; None when the batch has no such column (nothing
    /// to add).
    Column(Option<arrow::array::ArrayRef>),
}

/// The filter as compiled for one schema of the table.
struct Compiled {
    schema: SchemaRef,
    filter: Option<Arc<dyn PhysicalExpr>>,
}

impl Compiled {
    fn new(
        state: &SessionState,
        spec: &LiveSpec,
        schema: SchemaRef,
    ) -> Result<Compiled, QueryError> {
        let filter = match &spec.filter {
            Some(sql) => Some(physical_filter(state, &schema, sql)?),
            None => None,
        };
        Ok(Compiled { schema, filter })
    }
}

pub struct Tap {
    spec: LiveSpec,
    partitions: BTreeSet<u32>,
    state: SessionState,
    store: Arc<Store>,
    compiled: parking_lot::Mutex<Compiled>,
    gathered: parking_lot::Mutex<Gathered>,
    warned: std::sync::atomic::AtomicBool,
}

impl Tap {
    /// Checks the spec against the table as this node knows it.
    pub fn new(spec: LiveSpec, state: SessionState, store: Arc<Store>) -> Result<Tap, QueryError> {
        let table = store
            .table(&spec.table)
            .ok_or_else(|| QueryError::BadRequest(format!("no table {:?} here", spec.table)))?;
        let compiled = Compiled::new(&state, &spec, table.schema().arrow().clone())?;
        Ok(Tap {
            partitions: spec.partitions.clone(),
            spec,
            state,
            store,
            compiled: parking_lot::Mutex::new(compiled),
            gathered: Default::default(),
            warned: Default::default(),
        })
    }

    /// The table's schema as the tap last compiled for it.
    pub fn schema(&self) -> SchemaRef {
        self.compiled.lock().schema.clone()
    }

    /// The batch read through the table's schema, and the filter for it
    /// (compiled again when the table's schema changed: a column it gained
    /// is read, not dropped).
    fn read(
        &self,
        batch: &RecordBatch,
    ) -> Result<(RecordBatch, Option<Arc<dyn PhysicalExpr>>), QueryError> {
        let table = self.store.table(&self.spec.table).ok_or_else(|| {
            QueryError::BadRequest(format!("table {:?} is gone", self.spec.table))
        })?;
        let schema = table.schema().arrow().clone();
        let mut compiled = self.compiled.lock();
        if (Arc::ptr_eq(&compiled.schema, &schema) || compiled.schema.fields() == schema.fields())
            && let Ok(b) = atoll_store::schema::adapt_batch(batch, &compiled.schema)
        {
            return Ok((b, compiled.filter.clone()));
        }
        let fresh = Compiled::new(&self.state, &self.spec, schema)?;
        let b = atoll_store::schema::adapt_batch(batch, &fresh.schema)
            .map_err(|e| QueryError::BadRequest(e.to_string()))?;
        let filter = fresh.filter.clone();
        *compiled = fresh;
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
        let inputs: Vec<Input> = self
            .spec
            .aggregates
            .iter()
            .map(|a| match (&a.func, &a.column) {
                (LiveFn::Count, _) => Ok(Input::Rows),
                (_, None) => Ok(Input::Column(None)),
                (_, Some(c)) => column(&batch, c, &DataType::Float64).map(Input::Column),
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
                        .map(|a| cut(a.as_string::<i32>().value(row)))
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
                    Input::Rows => state.add(1.0, weight),
                    Input::Column(Some(a)) if a.is_valid(row) => {
                        state.add(a.as_primitive::<Float64Type>().value(row), weight)
                    }
                    Input::Column(_) => {}
                }
            }
        }
        let newest = batch.slice(rows.saturating_sub(MAX_SAMPLES), rows.min(MAX_SAMPLES));
        gathered.add_samples(objects(&newest));
        Ok(())
    }
}

/// At most `MAX_GROUP_BYTES` of a group value (on a character boundary).
fn cut(value: &str) -> String {
    if value.len() <= MAX_GROUP_BYTES {
        return value.to_string();
    }
    let mut end = MAX_GROUP_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_string()
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
            // Said once per subscription: it may fail on every batch.
            if !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(table = %self.spec.table, error = %e, "a live subscription could not read stored rows");
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};
    use datafusion::execution::session_state::SessionStateBuilder;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("status", DataType::Int64, true),
            Field::new("region", DataType::Utf8, true),
        ]))
    }

    fn state() -> SessionState {
        SessionStateBuilder::new().with_default_features().build()
    }

    #[test]
    fn a_filter_is_a_condition_on_one_event() {
        let ok = physical_filter(&state(), &schema(), "status >= 500 AND region <> 'eu'");
        assert!(ok.is_ok(), "{:?}", ok.err());
        assert!(
            physical_filter(&state(), &schema(), "time > now() - INTERVAL '1 minute'").is_err(),
            "no time column"
        );
        for (sql, says) in [
            ("status", "true or false"),
            ("status IN (SELECT 1)", ""),
            ("status = ANY (SELECT 1)", ""),
            ("count(*) > 1", ""),
            ("nope = 1", "nope"),
        ] {
            let e = physical_filter(&state(), &schema(), sql)
                .err()
                .unwrap_or_else(|| panic!("{sql} accepted"));
            assert!(e.to_string().contains(says), "{sql}: {e}");
        }
    }

    #[test]
    fn groups_and_aggregates_name_the_tables_columns() {
        let spec = |text: &str| serde_json::from_str::<LiveSpec>(text).unwrap();
        let ok = spec(
            r#"{"table": "t", "bucket_seconds": 1, "group_by": ["region"], "aggregates": [{"fn": "max", "column": "status"}]}"#,
        );
        assert!(check_columns(&ok, &schema()).is_ok());
        for (text, says) in [
            (
                r#"{"table": "t", "bucket_seconds": 1, "group_by": ["nope"]}"#,
                "no column \"nope\"",
            ),
            (
                r#"{"table": "t", "bucket_seconds": 1, "aggregates": [{"fn": "sum", "column": "region"}]}"#,
                "numbers only",
            ),
            (
                r#"{"table": "t", "bucket_seconds": 1, "aggregates": [{"fn": "count", "column": "region"}]}"#,
                "no column",
            ),
        ] {
            let e = check_columns(&spec(text), &schema()).unwrap_err();
            assert!(e.to_string().contains(says), "{text}: {e}");
        }
        assert_eq!(cut(&"é".repeat(200)).len(), 256);
    }
}
