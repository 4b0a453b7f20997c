//! Rivulet's catalog as DataFusion sees it.
//!
//! Each session gets a [`SessionCatalogs`] list: one DataFusion catalog per Rivulet database, each with
//! the schema `public` listing that database's tables live from the server [`Catalog`] (so a table
//! created by another session is visible at once). Extra schemas (`pg_catalog`, registered by
//! `datafusion-pg-catalog`) are kept per session beside it.
//!
//! A table scan reads the rows of one RocksDB snapshot: the statement's snapshot when one is set
//! (so every table of one query sees the same committed state), otherwise a fresh one. Inside a
//! transaction block, a table's rows are read with the block's staged writes laid over them.
//!
//! Ownership: `pg_catalog` and `information_schema` hold the session's catalog list (they list its
//! relations), and the list holds them through its database's extra schemas: a reference cycle.
//! The session breaks it with [`SessionCatalogs::close`] when it ends; without that, every
//! connection that ran a query would keep its whole DataFusion context alive forever.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::arrow::array::{Int64Array, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
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
use crate::session::Shared;

/// What a session's statements read: the running statement's snapshot, shared by all its table
/// scans, and the open transaction block's staged writes, which its scans of tables see.
#[derive(Debug, Default)]
pub struct SessionReads {
    pub snapshot: Mutex<Option<Arc<Snapshot>>>,
    pub staged: Mutex<crate::exec::Staged>,
}

/// A session's [`SessionReads`], shared with its catalogs' tables.
pub type Reads = Arc<SessionReads>;

/// The session's database, as a DataFusion catalog.
///
/// As in Postgres, a session sees only the database it connected to: `information_schema` and
/// `pg_catalog` list that database's tables, and a three-part name naming another database finds
/// nothing.
#[derive(Debug)]
pub struct SessionCatalogs {
    catalog: Arc<Catalog>,
    /// The server, for the monitoring system tables (weak: the server outlives sessions).
    shared: Weak<Shared>,
    database: String,
    reads: Reads,
    databases: RwLock<HashMap<String, Arc<DatabaseCatalog>>>,
}

impl SessionCatalogs {
    /// A list over `database` of `catalog` whose scans read as `reads` says.
    pub fn new(catalog: Arc<Catalog>, shared: Weak<Shared>, database: &str, reads: Reads) -> Self {
        Self {
            catalog,
            shared,
            database: database.to_string(),
            reads,
            databases: RwLock::new(HashMap::new()),
        }
    }
}

impl SessionCatalogs {
    /// The server catalog and the database this list shows.
    pub fn server(&self) -> (&Arc<Catalog>, &str) {
        (&self.catalog, &self.database)
    }

    /// Drops the database catalogs and with them the schemas registered on them, which hold this
    /// list (see the module documentation). Called when the session ends.
    pub fn close(&self) {
        self.databases.write().clear();
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
                shared: Weak::clone(&self.shared),
                database: name.to_string(),
                reads: Arc::clone(&self.reads),
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
    shared: Weak<Shared>,
    database: String,
    reads: Reads,
}

#[async_trait]
impl SchemaProvider for PublicSchema {
    fn table_names(&self) -> Vec<String> {
        let staged = self.reads.staged.lock();
        self.catalog
            .tables(&self.database)
            .iter()
            .filter(|t| !staged.is_dropped(t.def.id))
            .map(|t| t.def.name.clone())
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if name == LATE_ROWS && self.catalog.table(&self.database, name).is_none() {
            return late_rows_table(&self.catalog, &self.database).map(Some);
        }
        if name == DEAD_LETTERS && self.catalog.table(&self.database, name).is_none() {
            return dead_letters_table(&self.catalog, &self.database).map(Some);
        }
        if crate::system_tables::NAMES.contains(&name)
            && self.catalog.table(&self.database, name).is_none()
            && let Some(shared) = self.shared.upgrade()
        {
            return crate::system_tables::table(&shared, &self.database, name);
        }
        if let Some(sequence) = self.catalog.sequence(&self.database, name) {
            return sequence.relation().map(Some);
        }
        // A table the open block dropped is gone for it.
        let entry = self
            .catalog
            .table(&self.database, name)
            .filter(|e| !self.reads.staged.lock().is_dropped(e.def.id));
        Ok(entry.map(|entry| {
            Arc::new(StoredTable {
                entry,
                state: self.catalog.store().clone(),
                reads: Arc::clone(&self.reads),
                scales: false,
            }) as Arc<dyn TableProvider>
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        name == LATE_ROWS
            || name == DEAD_LETTERS
            || crate::system_tables::NAMES.contains(&name)
            || self
                .catalog
                .table(&self.database, name)
                .is_some_and(|e| !self.reads.staged.lock().is_dropped(e.def.id))
            || self.catalog.sequence(&self.database, name).is_some()
    }
}

/// The system table of late rows: rows that came after the watermark had closed their window,
/// kept by each view's job (in the same atomic commits as its results) instead of being dropped.
pub const LATE_ROWS: &str = "rivulet_late_rows";

fn late_rows_table(catalog: &Catalog, database: &str) -> Result<Arc<dyn TableProvider>> {
    use datafusion::arrow::array::{StringBuilder, TimestampMicrosecondBuilder};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    let schema = Arc::new(Schema::new(vec![
        Field::new("view_name", DataType::Utf8, false),
        Field::new(
            "event_time",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new(
            "watermark",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("row", DataType::Utf8, false),
    ]));
    let mut names = StringBuilder::new();
    let mut times = TimestampMicrosecondBuilder::new();
    let mut marks = TimestampMicrosecondBuilder::new();
    let mut rows = StringBuilder::new();
    for view in catalog.tables(database) {
        if view.def.view.is_none() {
            continue;
        }
        let late = rivulet_engine::job::late_rows(catalog.store(), view.def.id)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        for row in late {
            names.append_value(&view.def.name);
            times.append_value(row.event_time);
            marks.append_value(row.watermark);
            rows.append_value(&row.row);
        }
    }
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(names.finish()),
            Arc::new(times.finish()),
            Arc::new(marks.finish()),
            Arc::new(rows.finish()),
        ],
    )?;
    Ok(Arc::new(datafusion::datasource::MemTable::try_new(
        schema,
        vec![vec![batch]],
    )?))
}

/// The system table of dead letters: source records that could not be decoded, kept by each
/// job that read them (in the same atomic commits as its results) and counted in SHOW JOBS.
pub const DEAD_LETTERS: &str = "rivulet_dead_letters";

fn dead_letters_table(catalog: &Catalog, database: &str) -> Result<Arc<dyn TableProvider>> {
    use datafusion::arrow::array::{Int64Builder, StringBuilder};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let schema = Arc::new(Schema::new(vec![
        Field::new("job_name", DataType::Utf8, false),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("position", DataType::Int64, false),
        Field::new("raw", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, false),
    ]));
    let (mut jobs, mut tables, mut sources) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let (mut positions, mut raws, mut errors) = (
        Int64Builder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    for job in catalog.tables(database) {
        // A view's job keeps what its external sources could not decode; a table fed by its
        // own source (a changelog Kafka table) keeps its own, under the table's name.
        let dead = if job.def.view.is_some() {
            rivulet_engine::job::dead_letters(catalog.store(), job.def.id)
        } else {
            rivulet_connectors::dead_letters(catalog.store(), job.def.id)
        }
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
        for d in dead {
            jobs.append_value(&job.def.name);
            tables.append_value(&d.table);
            sources.append_value(&d.source);
            positions.append_value(i64::try_from(d.position).unwrap_or(i64::MAX));
            raws.append_value(&d.raw);
            errors.append_value(&d.error);
        }
    }
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(jobs.finish()),
            Arc::new(tables.finish()),
            Arc::new(sources.finish()),
            Arc::new(positions.finish()),
            Arc::new(raws.finish()),
            Arc::new(errors.finish()),
        ],
    )?;
    Ok(Arc::new(datafusion::datasource::MemTable::try_new(
        schema,
        vec![vec![batch]],
    )?))
}

/// A table's current rows as a DataFusion table.
#[derive(Debug)]
pub struct StoredTable {
    entry: Arc<TableEntry>,
    state: StateStore,
    reads: Reads,
    /// Its columns include the hidden display scales of its unconstrained numerics, after the
    /// others ([`StoredTable::with_scales`]); statements are planned without them.
    scales: bool,
}

impl StoredTable {
    /// The same table with its hidden display-scale columns, if it keeps any
    /// ([`TableDef::display_scales`](rivulet_planner::catalog::TableDef::display_scales)).
    pub fn with_scales(&self) -> Option<StoredTable> {
        let scaled = self.entry.store.visible_columns() < self.entry.store.schema().fields().len();
        (scaled && !self.scales).then(|| StoredTable {
            entry: Arc::clone(&self.entry),
            state: self.state.clone(),
            reads: Arc::clone(&self.reads),
            scales: true,
        })
    }

    /// Whether the rows carry a hidden multiplicity as their last column (a view without a key).
    fn counted(&self) -> bool {
        self.entry.def.view.as_ref().is_some_and(|v| v.counted)
    }
}

/// Repeats each row of `batch` as often as its last column says, and drops that column.
pub(crate) fn expand_counted(batch: &RecordBatch) -> Result<RecordBatch> {
    let last = batch.num_columns().saturating_sub(1);
    let counts = batch
        .column(last)
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| DataFusionError::Internal("view count column is not BIGINT".into()))?;
    let indices: UInt32Array = counts
        .values()
        .iter()
        .enumerate()
        .flat_map(|(row, &n)| std::iter::repeat_n(row as u32, n.max(0) as usize))
        .collect();
    let kept = batch.project(&(0..last).collect::<Vec<_>>())?;
    if last == 0 {
        // No column is read (`count(*)`): only the number of rows matters.
        let options = RecordBatchOptions::new().with_row_count(Some(indices.len()));
        return Ok(RecordBatch::try_new_with_options(
            kept.schema(),
            Vec::new(),
            &options,
        )?);
    }
    Ok(take_record_batch(&kept, &indices)?)
}

#[async_trait]
impl TableProvider for StoredTable {
    fn schema(&self) -> SchemaRef {
        // A view replaced with more columns keeps its (empty) store, of the first columns.
        if self.entry.def.plain_view.is_some() {
            return self.entry.def.schema();
        }
        let schema = self.entry.store.schema();
        let visible = self.entry.store.visible_columns();
        if !self.scales && visible < schema.fields().len() {
            let shown = (0..visible).collect::<Vec<_>>();
            return match schema.project(&shown) {
                Ok(s) => Arc::new(s),
                Err(_) => Arc::clone(schema),
            };
        }
        if self.counted() {
            let visible = (0..schema.fields().len().saturating_sub(1)).collect::<Vec<_>>();
            match schema.project(&visible) {
                Ok(s) => return Arc::new(s),
                Err(_) => return Arc::clone(schema),
            }
        }
        Arc::clone(schema)
    }

    fn table_type(&self) -> TableType {
        // information_schema shows materialized views as views (Postgres leaves them out of
        // `information_schema.tables` entirely; clients that list relations want to see them).
        if self.entry.def.view.is_some() || self.entry.def.plain_view.is_some() {
            TableType::View
        } else {
            TableType::Base
        }
    }

    fn get_table_definition(&self) -> Option<&str> {
        self.entry.def.plain_view.as_deref()
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if self.entry.def.plain_view.is_some() {
            // Statements read a view's query in its place (`crate::views`) before planning.
            return Err(DataFusionError::Internal(format!(
                "view \"{}\" was not expanded into its query",
                self.entry.def.name
            )));
        }
        let snapshot = {
            let mut slot = self.reads.snapshot.lock();
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
        let counted = self.counted();
        let visible = self.schema();
        // A counted view also reads its count column (last), to repeat rows and then drop it.
        let projection = match (counted, projection) {
            (true, p) => {
                let count = table.schema().fields().len() - 1;
                let mut p = p.cloned().unwrap_or_else(|| (0..count).collect());
                p.push(count);
                Some(p)
            }
            (false, Some(p)) => Some(p.clone()),
            // Every column DataFusion sees, without hidden ones it does not.
            (false, None) => Some((0..visible.fields().len()).collect()),
        };
        let projected_visible: SchemaRef = match (counted, &projection) {
            (true, Some(p)) => Arc::new(visible.project(&p[..p.len() - 1])?),
            _ => Arc::clone(&visible),
        };
        // Filters are never pushed down (the default `Unsupported`): DataFusion applies them above
        // the scan and only passes a limit when no filter sits between.
        let _ = filters;
        let projected: SchemaRef = match (counted, &projection) {
            (true, _) => projected_visible,
            (false, Some(p)) => Arc::new(table.schema().project(p)?),
            (false, None) => Arc::clone(table.schema()),
        };
        // A file or topic table stores no rows: an ad-hoc query reads its files or the topic's
        // records up to now, as Flink's batch mode does.
        let external = crate::sources::external(&self.entry.def);
        // Inside a transaction block, the block's own writes to the table.
        let staged = self.reads.staged.lock().writes_to(self.entry.store.id());
        let batches = tokio::task::spawn_blocking(move || {
            let mut out: Vec<RecordBatch> = Vec::new();
            let mut rows = 0usize;
            if let Some(source) = external {
                let mut reader = source.snapshot()?;
                while !reader.finished() {
                    let Some(batch) = reader.next()? else {
                        continue;
                    };
                    let batch = table.complete(&batch.rows)?;
                    let batch = match &projection {
                        Some(p) => batch.project(p)?,
                        None => batch,
                    };
                    rows += batch.num_rows();
                    out.push(batch);
                    if limit.is_some_and(|l| rows >= l) {
                        break;
                    }
                }
                return Ok(out);
            }
            let emit = |batch: RecordBatch| {
                rows += batch.num_rows();
                out.push(batch);
                Ok(match limit {
                    Some(l) if rows >= l => ControlFlow::Break(()),
                    _ => ControlFlow::Continue(()),
                })
            };
            match staged {
                Some(writes) => table.scan_merged(
                    Some(&snapshot),
                    &writes,
                    projection.as_deref(),
                    SCAN_BATCH_ROWS,
                    emit,
                )?,
                None => table.scan(&snapshot, projection.as_deref(), SCAN_BATCH_ROWS, emit)?,
            }
            Ok::<_, rivulet_engine::EngineError>(out)
        })
        .await
        .map_err(|e| DataFusionError::Internal(format!("table scan task failed: {e}")))?
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let batches = if counted {
            batches
                .iter()
                .map(expand_counted)
                .collect::<Result<Vec<_>>>()?
        } else {
            batches
        };
        let exec = MemorySourceConfig::try_new_exec(&[batches], projected, None)?;
        Ok(exec)
    }
}
