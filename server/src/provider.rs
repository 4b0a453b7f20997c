//! Rivulet's catalog as DataFusion sees it.
//!
//! Each session gets a [`SessionCatalogs`] list: one DataFusion catalog per Rivulet database, each with
//! the schema `public` listing that database's tables live from the server [`Catalog`] (so a table
//! created by another session is visible at once). Extra schemas (`pg_catalog`, registered by
//! `datafusion-pg-catalog`) are kept per session beside it.
//!
//! A table scan reads the rows of one RocksDB snapshot: the statement's snapshot when one is set
//! (so every table of one query sees the same committed state), otherwise a fresh one.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, SchemaProvider, Session, TableProvider,
};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use parking_lot::{Mutex, RwLock};
use rivulet_engine::state::{Snapshot, StateStore};
use rivulet_engine::table::SCAN_BATCH_ROWS;

use crate::catalog::{Catalog, DEFAULT_SCHEMA, TableEntry};

/// The snapshot the current statement reads, shared by all its table scans.
pub type SnapshotSlot = Arc<Mutex<Option<Arc<Snapshot>>>>;

/// The session's database, as a DataFusion catalog.
///
/// As in Postgres, a session sees only the database it connected to: `information_schema` and
/// `pg_catalog` list that database's tables, and a three-part name naming another database finds
/// nothing.
#[derive(Debug)]
pub struct SessionCatalogs {
    catalog: Arc<Catalog>,
    database: String,
    snapshot: SnapshotSlot,
    databases: RwLock<HashMap<String, Arc<DatabaseCatalog>>>,
}

impl SessionCatalogs {
    /// A list over `database` of `catalog` whose scans read `snapshot`.
    pub fn new(catalog: Arc<Catalog>, database: &str, snapshot: SnapshotSlot) -> Self {
        Self {
            catalog,
            database: database.to_string(),
            snapshot,
            databases: RwLock::new(HashMap::new()),
        }
    }
}

impl CatalogProviderList for SessionCatalogs {
    fn register_catalog(
        &self,
        _name: String,
        _catalog: Arc<dyn CatalogProvider>,
    ) -> Option<Arc<dyn CatalogProvider>> {
        // Databases are created with CREATE DATABASE, never registered from DataFusion.
        None
    }

    fn catalog_names(&self) -> Vec<String> {
        vec![self.database.clone()]
    }

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        if name != self.database || !self.catalog.database_exists(name) {
            return None;
        }
        if let Some(db) = self.databases.read().get(name) {
            return Some(Arc::clone(db) as Arc<dyn CatalogProvider>);
        }
        let db = Arc::new(DatabaseCatalog {
            public: Arc::new(PublicSchema {
                catalog: Arc::clone(&self.catalog),
                database: name.to_string(),
                snapshot: Arc::clone(&self.snapshot),
            }),
            extra: RwLock::new(HashMap::new()),
        });
        self.databases
            .write()
            .entry(name.to_string())
            .or_insert_with(|| Arc::clone(&db));
        Some(db)
    }
}

/// One database: the `public` schema plus session-registered schemas such as `pg_catalog`.
#[derive(Debug)]
struct DatabaseCatalog {
    public: Arc<PublicSchema>,
    extra: RwLock<HashMap<String, Arc<dyn SchemaProvider>>>,
}

impl CatalogProvider for DatabaseCatalog {
    fn schema_names(&self) -> Vec<String> {
        let mut names = vec![DEFAULT_SCHEMA.to_string()];
        names.extend(self.extra.read().keys().cloned());
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if name == DEFAULT_SCHEMA {
            return Some(Arc::clone(&self.public) as Arc<dyn SchemaProvider>);
        }
        self.extra.read().get(name).cloned()
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> Result<Option<Arc<dyn SchemaProvider>>> {
        if name == DEFAULT_SCHEMA {
            return Err(DataFusionError::Plan(format!(
                "schema \"{name}\" already exists"
            )));
        }
        Ok(self.extra.write().insert(name.to_string(), schema))
    }
}

/// The `public` schema of one database: its tables.
#[derive(Debug)]
struct PublicSchema {
    catalog: Arc<Catalog>,
    database: String,
    snapshot: SnapshotSlot,
}

#[async_trait]
impl SchemaProvider for PublicSchema {
    fn table_names(&self) -> Vec<String> {
        self.catalog
            .tables(&self.database)
            .iter()
            .map(|t| t.def.name.clone())
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(self.catalog.table(&self.database, name).map(|entry| {
            Arc::new(StoredTable {
                entry,
                state: self.catalog.store().clone(),
                snapshot: Arc::clone(&self.snapshot),
            }) as Arc<dyn TableProvider>
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.catalog.table(&self.database, name).is_some()
    }
}

/// A table's current rows as a DataFusion table.
#[derive(Debug)]
pub struct StoredTable {
    entry: Arc<TableEntry>,
    state: StateStore,
    snapshot: SnapshotSlot,
}

#[async_trait]
impl TableProvider for StoredTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(self.entry.store.schema())
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let snapshot = {
            let mut slot = self.snapshot.lock();
            match slot.as_ref() {
                Some(s) => Arc::clone(s),
                None => {
                    let s = Arc::new(self.state.snapshot());
                    *slot = Some(Arc::clone(&s));
                    s
                }
            }
        };
        let table = Arc::clone(&self.entry.store);
        let projection = projection.cloned();
        // Filters are never pushed down (the default `Unsupported`): DataFusion applies them above
        // the scan and only passes a limit when no filter sits between.
        let _ = filters;
        let projected: SchemaRef = match &projection {
            Some(p) => Arc::new(table.schema().project(p)?),
            None => Arc::clone(table.schema()),
        };
        let batches = tokio::task::spawn_blocking(move || {
            let mut out: Vec<RecordBatch> = Vec::new();
            let mut rows = 0usize;
            table.scan(&snapshot, projection.as_deref(), SCAN_BATCH_ROWS, |batch| {
                rows += batch.num_rows();
                out.push(batch);
                Ok(match limit {
                    Some(l) if rows >= l => ControlFlow::Break(()),
                    _ => ControlFlow::Continue(()),
                })
            })?;
            Ok::<_, rivulet_engine::EngineError>(out)
        })
        .await
        .map_err(|e| DataFusionError::Internal(format!("table scan task failed: {e}")))?
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let exec = MemorySourceConfig::try_new_exec(&[batches], projected, None)?;
        Ok(exec)
    }
}
