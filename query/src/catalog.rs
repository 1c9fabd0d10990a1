//! The DataFusion catalog over a node's store: every Atoll table appears in
//! schema `public` of catalog `atoll`.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use atoll_store::{ColumnType, Store, TIME_COLUMN};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::TableType;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

use crate::prune::{key_partitions, time_range};
use crate::scan::PartitionScanExec;

pub struct AtollSchema {
    store: Arc<Store>,
}

impl AtollSchema {
    pub fn new(store: Arc<Store>) -> AtollSchema {
        AtollSchema { store }
    }
}

impl fmt::Debug for AtollSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AtollSchema")
    }
}

#[async_trait]
impl SchemaProvider for AtollSchema {
    fn table_names(&self) -> Vec<String> {
        self.store
            .tables()
            .iter()
            .map(|t| t.name().to_string())
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        Ok(self.store.table(name).map(|t| {
            let schema = t.schema();
            let key = t.settings().partition_key;
            let key = key.and_then(|k| Some((k.clone(), schema.column_type(&k)?)));
            Arc::new(AtollTable {
                store: self.store.clone(),
                name: name.to_string(),
                schema: schema.arrow().clone(),
                partition_key: key,
            }) as Arc<dyn TableProvider>
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.store.table(name).is_some()
    }
}

/// One table as the planner sees it: the schema at planning time.
pub struct AtollTable {
    store: Arc<Store>,
    name: String,
    schema: SchemaRef,
    /// The partition key and its type, at planning time.
    partition_key: Option<(String, ColumnType)>,
}

impl fmt::Debug for AtollTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AtollTable({})", self.name)
    }
}

#[async_trait]
impl TableProvider for AtollTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Inexact: the scan only uses filters to skip batches by time and
    /// partitions by key, and DataFusion keeps its own filter above it.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let all = self.store.partitions();
        let keyed = self
            .partition_key
            .as_ref()
            .and_then(|(k, ty)| key_partitions(filters, k, *ty, all));
        let partitions: Vec<u32> = keyed.unwrap_or_else(|| (0..all).collect());
        let streams = state.config().target_partitions();
        Ok(Arc::new(
            PartitionScanExec::new(
                self.store.clone(),
                &self.name,
                schema,
                &partitions,
                streams,
                time_range(filters, TIME_COLUMN),
                limit,
            )
            .with_kept_from(self.store.table(&self.name).and_then(|t| t.kept_from())),
        ))
    }
}
