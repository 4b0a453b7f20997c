//! `pg_catalog` as Rivulet serves it: `datafusion-pg-catalog`'s schema with the relations that
//! must reflect Rivulet's own catalog replaced or corrected.
//!
//! The library builds `pg_class`, `pg_attribute`, `pg_namespace` and friends from DataFusion's catalog
//! list, with OIDs it hands out and caches itself; we keep those relations (so OIDs agree across
//! them) and correct what DataFusion cannot express:
//! - `pg_class.relkind` is `m` for a materialized view (DataFusion knows only tables and views),
//!   tables and views use the `heap` access method, and every relation is owned by the server's one
//!   role (OID 10, the bootstrap superuser's in Postgres);
//! - `pg_matviews` lists the materialized views with their queries, `pg_stat_user_tables` every table
//!   and view with its `pg_class` OID;
//! - `pg_database` lists Rivulet's databases, `pg_roles`/`pg_user` the server's role;
//! - `pg_tables` leaves materialized views out, and its owner is that role;
//! - `pg_settings` lists the session's settings.
//!
//! Each relation is computed when a statement plans it, so it shows the catalog at that moment.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{MemTable, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_pg_catalog::pg_catalog::context::{PgCatalogContextProvider, Role};

use crate::catalog::{Catalog, DEFAULT_SCHEMA};
use crate::pg::functions::{RelationNames, SessionSettings};
use crate::pg::keys;
use rivulet_planner::types::SqlType;

/// The OID of the server's one role, as the bootstrap superuser's in Postgres.
pub const ROLE_OID: i32 = 10;
/// The OID of the `pg_catalog` namespace (fixed in Postgres and in `datafusion-pg-catalog`).
const PG_CATALOG_OID: i32 = 11;

/// The roles `pg_roles` lists: the server's one user, a superuser.
#[derive(Debug, Clone)]
pub struct Roles {
    pub user: String,
}

#[async_trait]
impl PgCatalogContextProvider for Roles {
    async fn roles(&self) -> Vec<String> {
        vec![self.user.clone()]
    }

    async fn role(&self, name: &str) -> Option<Role> {
        (name == self.user).then(|| Role {
            name: self.user.clone(),
            is_superuser: true,
            can_login: true,
            can_create_db: true,
            can_create_role: true,
            can_create_user: true,
            can_replication: true,
            grants: Vec::new(),
            inherited_roles: Vec::new(),
        })
    }
}

/// `pg_catalog` over `datafusion-pg-catalog`'s schema (`inner`).
#[derive(Debug)]
pub struct PgCatalog {
    inner: Arc<dyn SchemaProvider>,
    catalog: Arc<Catalog>,
    database: String,
    user: String,
    relations: RelationNames,
    settings: SessionSettings,
}

/// Relations this schema adds to the library's.
pub const EXTRA: &[&str] = &["pg_user", "pg_stat_activity", "pg_sequences", "pg_indexes"];

impl PgCatalog {
    pub fn new(
        inner: Arc<dyn SchemaProvider>,
        catalog: Arc<Catalog>,
        database: &str,
        user: &str,
        relations: RelationNames,
        settings: SessionSettings,
    ) -> Self {
        Self {
            inner,
            catalog,
            database: database.to_string(),
            user: user.to_string(),
            relations,
            settings,
        }
    }

    fn view_names(&self) -> HashSet<String> {
        self.catalog
            .tables(&self.database)
            .iter()
            .filter(|t| t.def.view.is_some())
            .map(|t| t.def.name.clone())
            .collect()
    }

    /// The plain views' names (`pg_class` tells them from `information_schema`'s views).
    fn plain_view_names(&self) -> HashSet<String> {
        self.catalog
            .tables(&self.database)
            .iter()
            .filter(|t| t.def.plain_view.is_some())
            .map(|t| t.def.name.clone())
            .collect()
    }

    fn keys(&self) -> keys::Keys {
        keys::Keys::of(&self.catalog, &self.database)
    }

    /// What the relations keys and sequences add rows to are made over.
    async fn key_sources(&self) -> Result<keys::Sources> {
        Ok(keys::Sources {
            class: self.inner_table("pg_class").await?,
            namespace: self.inner_table("pg_namespace").await?,
            keys: self.keys(),
        })
    }

    async fn inner_table(&self, name: &str) -> Result<Arc<dyn TableProvider>> {
        self.inner
            .table(name)
            .await?
            .ok_or_else(|| DataFusionError::Internal(format!("pg_catalog.{name} missing")))
    }

    fn patched(&self, inner: Arc<dyn TableProvider>, patch: Patch) -> Arc<dyn TableProvider> {
        Arc::new(Patched::new(inner, patch))
    }
}

#[async_trait]
impl SchemaProvider for PgCatalog {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.inner.table_names();
        names.extend(EXTRA.iter().map(|n| n.to_string()));
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let user = self.user.clone();
        let table = match name.to_ascii_lowercase().as_str() {
            "pg_class" => {
                let views = self.view_names();
                let plain = self.plain_view_names();
                let inner = self.inner_table(name).await?;
                let relations = Arc::clone(&self.relations);
                let schema = with_acl_columns(&inner.schema());
                let out = Arc::clone(&schema);
                let sources = self.key_sources().await?;
                let patched: Arc<dyn TableProvider> = Arc::new(Patched {
                    inner,
                    schema,
                    patch: Arc::new(Box::new(move |batch| {
                        remember(&batch, &relations)?;
                        let batch = pg_class(batch, &views, &plain, &[], None)?;
                        let n = batch.num_rows();
                        let mut columns = batch.columns().to_vec();
                        for field in out.fields().iter().skip(columns.len()) {
                            columns.push(datafusion::arrow::array::new_null_array(
                                field.data_type(),
                                n,
                            ));
                        }
                        Ok(RecordBatch::try_new(Arc::clone(&out), columns)?)
                    })),
                });
                sources.pg_class(patched)
            }
            "pg_stat_user_tables" => {
                let class = self.inner_table("pg_class").await?;
                let schema = self.inner_table(name).await?.schema();
                let views = self.view_names();
                let live: HashMap<String, i64> = self
                    .catalog
                    .tables(&self.database)
                    .iter()
                    .map(|t| {
                        let rows = i64::try_from(t.store.size().rows).unwrap_or(i64::MAX);
                        (t.def.name.clone(), rows)
                    })
                    .collect();
                Arc::new(Derived {
                    source: class,
                    schema: Arc::clone(&schema),
                    derive: Arc::new(move |class| {
                        let class = pg_class(
                            class,
                            &views,
                            &HashSet::new(),
                            &["r", "m"],
                            Some(PG_CATALOG_OID),
                        )?;
                        stat_user_tables(&class, &schema, &live)
                    }),
                })
            }
            "pg_tables" => {
                let inner = self.inner_table(name).await?;
                let mut views = self.view_names();
                views.extend(self.plain_view_names());
                self.patched(
                    inner,
                    Box::new(move |batch| {
                        // Materialized views are in `pg_matviews`, not here; nor are
                        // `information_schema`'s relations, views in Postgres.
                        let names = column::<StringArray>(&batch, "tablename")?;
                        let schemas = column::<StringArray>(&batch, "schemaname")?;
                        let keep: Vec<u32> = (0..batch.num_rows())
                            .filter(|&i| {
                                !views.contains(names.value(i))
                                    && schemas.value(i) != "information_schema"
                            })
                            .map(|i| i as u32)
                            .collect();
                        let batch = take_record_batch(
                            &batch,
                            &datafusion::arrow::array::UInt32Array::from(keep),
                        )?;
                        fill_str(batch, "tableowner", &user)
                    }),
                )
            }
            "pg_roles" => {
                let inner = self.inner_table(name).await?;
                self.patched(
                    inner,
                    Box::new(|batch| {
                        let batch = fill_i32(batch, "oid", ROLE_OID)?;
                        let all = Arc::new(BooleanArray::from(vec![true; batch.num_rows()]));
                        replace(&batch, "rolbypassrls", all)
                    }),
                )
            }
            "pg_user" => mem_table(pg_user(&self.user)?)?,
            "pg_matviews" => {
                let schema = self.inner_table(name).await?.schema();
                mem_table(self.pg_matviews(&schema)?)?
            }
            "pg_database" => {
                let inner = self.inner_table(name).await?;
                let databases = self.catalog.databases();
                let current = self.database.clone();
                let patched = self.patched(
                    inner,
                    Box::new(move |batch| pg_database(batch, &databases, &current)),
                );
                // PostgreSQL 17 renamed `daticulocale` `datlocale` (psql 17's `\l` reads it); the
                // library has the old name.
                renamed(patched, "daticulocale", "datlocale")
            }
            "pg_stat_activity" => {
                let app = self
                    .settings
                    .read()
                    .get("application_name")
                    .cloned()
                    .unwrap_or_default();
                mem_table(pg_stat_activity(&self.database, &self.user, &app)?)?
            }
            "pg_settings" => {
                let schema = settings_schema(&self.inner_table(name).await?.schema());
                let defaults = crate::session::default_settings(&self.user, &self.database);
                mem_table(pg_settings(&schema, &self.settings.read(), &defaults)?)?
            }

            "pg_attribute" => {
                let types = super::information_schema::declared(&self.catalog, &self.database);
                let primary = self.keys().primary;
                keys::with_public_oids(
                    self.inner_table(name).await?,
                    self.inner_table("pg_class").await?,
                    self.inner_table("pg_namespace").await?,
                    move |public, schema, batches| {
                        pg_attribute(&types, &primary, public, schema, batches)
                    },
                )
            }
            "pg_attrdef" => {
                let defaults = column_defaults(&self.catalog, &self.database);
                keys::with_public_oids(
                    self.inner_table(name).await?,
                    self.inner_table("pg_class").await?,
                    self.inner_table("pg_namespace").await?,
                    move |public, schema, _| pg_attrdef(&defaults, public, schema),
                )
            }
            "pg_description" => {
                let comments = descriptions(&self.catalog, &self.database);
                keys::with_public_oids(
                    self.inner_table(name).await?,
                    self.inner_table("pg_class").await?,
                    self.inner_table("pg_namespace").await?,
                    move |public, schema, batches| {
                        pg_description(&comments, public, schema, batches)
                    },
                )
            }
            // PostgreSQL 17 renamed `colliculocale` `colllocale`; the library follows 17, and
            // clients of a 16 server ask for the old name.
            "pg_collation" => renamed(self.inner_table(name).await?, "colllocale", "colliculocale"),
            "pg_index" => {
                let schema = pg_index_schema(&self.inner_table(name).await?.schema());
                let empty = Arc::new(MemTable::try_new(schema, vec![vec![]])?);
                self.key_sources().await?.pg_index(empty)
            }
            "pg_sequence" => {
                let inner = self.inner_table(name).await?;
                self.key_sources().await?.pg_sequence(inner)
            }
            "pg_sequences" => mem_table(keys::pg_sequences(&self.keys(), &self.user)?)?,
            "pg_indexes" => mem_table(keys::pg_indexes(&self.keys())?)?,
            _ => {
                let Some(inner) = self.inner.table(name).await? else {
                    return Ok(None);
                };
                // The library types Postgres' array columns as text: privileges (`*acl`,
                // `aclitem[]`) and constraint keys (`smallint[]`) become arrays, which clients
                // subscript and pass to `array_length`.
                let inner_schema = inner.schema();
                let mut arrays: Vec<(&str, DataType)> = inner_schema
                    .fields()
                    .iter()
                    .filter(|f| f.name().ends_with("acl") && f.data_type() == &DataType::Utf8)
                    .map(|f| (f.name().as_str(), DataType::Utf8))
                    .collect();
                if name.eq_ignore_ascii_case("pg_constraint") {
                    arrays.extend_from_slice(CONSTRAINT_KEYS);
                }
                if arrays.is_empty() {
                    return Ok(Some(inner));
                }
                let schema = with_array_columns(&inner_schema, &arrays);
                let out = Arc::clone(&schema);
                let table: Arc<dyn TableProvider> = Arc::new(Patched {
                    inner,
                    schema,
                    patch: Arc::new(Box::new(move |batch| parse_arrays(batch, &out))),
                });
                if name.eq_ignore_ascii_case("pg_constraint") {
                    self.key_sources().await?.pg_constraint(table)
                } else {
                    table
                }
            }
        };
        Ok(Some(with_postgres_types(name, table)))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name) || EXTRA.contains(&name.to_ascii_lowercase().as_str())
    }
}

impl PgCatalog {
    fn pg_matviews(&self, schema: &SchemaRef) -> Result<RecordBatch> {
        let views: Vec<_> = self
            .catalog
            .tables(&self.database)
            .into_iter()
            .filter_map(|t| t.def.view.clone().map(|v| (t.def.name.clone(), v.query)))
            .collect();
        let n = views.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![DEFAULT_SCHEMA; n])),
            Arc::new(StringArray::from_iter_values(
                views.iter().map(|(name, _)| name.as_str()),
            )),
            Arc::new(StringArray::from(vec![self.user.as_str(); n])),
            Arc::new(StringArray::from(vec![None::<&str>; n])),
            Arc::new(BooleanArray::from(vec![false; n])),
            Arc::new(BooleanArray::from(vec![true; n])),
            // Postgres prints the definition as a query ending in `;`.
            Arc::new(StringArray::from_iter_values(
                views
                    .iter()
                    .map(|(_, q)| format!(" {};", q.trim().trim_end_matches(';'))),
            )),
        ];
        Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
    }
}

pub type Patch = Box<dyn Fn(RecordBatch) -> Result<RecordBatch> + Send + Sync>;

/// `inner` with a column `alias`, a copy of its column `column`: a column Postgres renamed,
/// under both names, for clients of either version.
fn renamed(
    inner: Arc<dyn TableProvider>,
    column: &'static str,
    alias: &str,
) -> Arc<dyn TableProvider> {
    let mut fields: Vec<Field> = inner
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let Some(copied) = fields.iter().find(|f| f.name() == column) else {
        return inner;
    };
    fields.push(copied.clone().with_name(alias));
    let schema = Arc::new(Schema::new_with_metadata(
        fields,
        inner.schema().metadata().clone(),
    ));
    let out = Arc::clone(&schema);
    Arc::new(Patched {
        inner,
        schema,
        patch: Arc::new(Box::new(move |batch| {
            let copy = Arc::clone(batch.column(batch.schema().index_of(column)?));
            let mut columns = batch.columns().to_vec();
            columns.push(copy);
            Ok(RecordBatch::try_new(Arc::clone(&out), columns)?)
        })),
    })
}

/// Postgres' `name` columns of the relations clients read, which the library types as `text`.
const NAME_COLUMNS: &[(&str, &[&str])] = &[
    ("pg_am", &["amname"]),
    ("pg_attribute", &["attname"]),
    ("pg_class", &["relname"]),
    ("pg_collation", &["collname"]),
    ("pg_constraint", &["conname"]),
    ("pg_database", &["datname"]),
    ("pg_extension", &["extname"]),
    (
        "pg_indexes",
        &["schemaname", "tablename", "indexname", "tablespace"],
    ),
    (
        "pg_matviews",
        &["schemaname", "matviewname", "matviewowner", "tablespace"],
    ),
    ("pg_namespace", &["nspname"]),
    ("pg_proc", &["proname"]),
    ("pg_roles", &["rolname"]),
    ("pg_stat_user_tables", &["schemaname", "relname"]),
    (
        "pg_tables",
        &["schemaname", "tablename", "tableowner", "tablespace"],
    ),
    ("pg_trigger", &["tgname"]),
    ("pg_type", &["typname"]),
    ("pg_user", &["usename"]),
    ("pg_views", &["schemaname", "viewname", "viewowner"]),
];

/// Postgres' one-byte `"char"` columns (codes such as `relkind`), which the library types as
/// `text`.
const CHAR_COLUMNS: &[(&str, &[&str])] = &[
    ("pg_am", &["amtype"]),
    (
        "pg_attribute",
        &["attalign", "attstorage", "attidentity", "attgenerated"],
    ),
    ("pg_class", &["relkind", "relpersistence", "relreplident"]),
    (
        "pg_constraint",
        &["contype", "confupdtype", "confdeltype", "confmatchtype"],
    ),
    ("pg_proc", &["prokind", "provolatile", "proparallel"]),
    (
        "pg_type",
        &[
            "typtype",
            "typcategory",
            "typalign",
            "typstorage",
            "typdelim",
        ],
    ),
];

/// `table` (the relation `name`) with its `name` and `"char"` columns declared so
/// ([`super::wire_types::PG_TYPE`]): RowDescription then says what Postgres' does, and clients
/// that decode by type (`"char"` is one byte in the binary format) read them as from Postgres.
fn with_postgres_types(name: &str, table: Arc<dyn TableProvider>) -> Arc<dyn TableProvider> {
    let name = name.to_ascii_lowercase();
    let columns = |list: &[(&str, &'static [&'static str])]| {
        list.iter()
            .find(|(relation, _)| *relation == name)
            .map_or(&[][..], |(_, columns)| *columns)
    };
    let (names, chars) = (columns(NAME_COLUMNS), columns(CHAR_COLUMNS));
    if names.is_empty() && chars.is_empty() {
        return table;
    }
    let schema = table.schema();
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let column = f.name().as_str();
            let declared = if names.contains(&column) {
                Some("name")
            } else if chars.contains(&column) {
                Some("\"char\"")
            } else {
                None
            };
            match declared {
                Some(t) if f.data_type() == &DataType::Utf8 => {
                    super::wire_types::declare(f.as_ref().clone(), t)
                }
                _ => f.as_ref().clone(),
            }
        })
        .collect();
    let schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    let out = Arc::clone(&schema);
    Arc::new(Patched::with_schema(
        table,
        schema,
        Box::new(move |batch| {
            Ok(RecordBatch::try_new(
                Arc::clone(&out),
                batch.columns().to_vec(),
            )?)
        }),
    ))
}

/// `pg_class`'s schema with the array columns clients read that the library leaves out:
/// `relacl` (psql's `\dp`) and `reloptions` (SQLAlchemy's index reflection), NULL here as on a
/// relation without grants or storage options.
fn with_acl_columns(schema: &SchemaRef) -> SchemaRef {
    let text_array = array_of(DataType::Utf8);
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("relacl", text_array.clone(), true));
    fields.push(Field::new("reloptions", text_array, true));
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// A library relation with each of its batches corrected by `patch` into `schema`.
pub struct Patched {
    inner: Arc<dyn TableProvider>,
    schema: SchemaRef,
    patch: Arc<Patch>,
}

impl Patched {
    /// `inner` with each batch corrected by `patch`, which keeps the schema.
    pub fn new(inner: Arc<dyn TableProvider>, patch: Patch) -> Self {
        Self {
            schema: inner.schema(),
            inner,
            patch: Arc::new(patch),
        }
    }

    /// `inner` with each batch turned by `patch` into one of `schema`.
    pub fn with_schema(inner: Arc<dyn TableProvider>, schema: SchemaRef, patch: Patch) -> Self {
        Self {
            inner,
            schema,
            patch: Arc::new(patch),
        }
    }
}

impl std::fmt::Debug for Patched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Patched").finish_non_exhaustive()
    }
}

#[async_trait]
impl TableProvider for Patched {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = self.inner.scan(state, None, &[], None).await?;
        let batches = datafusion::physical_plan::collect(plan, state.task_ctx()).await?;
        let batches = batches
            .into_iter()
            .map(|b| (self.patch)(b))
            .collect::<Result<Vec<_>>>()?;
        Ok(MemorySourceConfig::try_new_exec(
            &[batches],
            self.schema(),
            projection.cloned(),
        )?)
    }
}

type Derive = dyn Fn(RecordBatch) -> Result<RecordBatch> + Send + Sync;

/// A relation computed from each batch of another (`source`).
struct Derived {
    source: Arc<dyn TableProvider>,
    schema: SchemaRef,
    derive: Arc<Derive>,
}

impl std::fmt::Debug for Derived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Derived").finish_non_exhaustive()
    }
}

#[async_trait]
impl TableProvider for Derived {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = self.source.scan(state, None, &[], None).await?;
        let batches = datafusion::physical_plan::collect(plan, state.task_ctx()).await?;
        let batches = batches
            .into_iter()
            .map(|b| (self.derive)(b))
            .collect::<Result<Vec<_>>>()?;
        Ok(MemorySourceConfig::try_new_exec(
            &[batches],
            self.schema(),
            projection.cloned(),
        )?)
    }
}

/// A column type's `pg_type` OID, `atttypmod` and `attlen`, as Postgres has them. An array has
/// its element's `atttypmod` (`numeric(10,2)[]`), whatever its dimensions.
fn pg_attribute_type(t: &SqlType) -> (i32, i32, i16) {
    match *t {
        SqlType::Boolean => (16, -1, 1),
        SqlType::SmallInt => (21, -1, 2),
        SqlType::Int => (23, -1, 4),
        SqlType::BigInt => (20, -1, 8),
        SqlType::Real => (700, -1, 4),
        SqlType::Double => (701, -1, 8),
        // Declared without precision and scale (stored as numeric(38,10)): no typmod, as
        // Postgres' unconstrained numeric.
        SqlType::Numeric {
            precision: rivulet_planner::types::MAX_NUMERIC_PRECISION,
            scale: rivulet_planner::types::DEFAULT_NUMERIC_SCALE,
        } => (1700, -1, -1),
        SqlType::Numeric { precision, scale } => (
            1700,
            ((i32::from(precision) << 16) | i32::from(scale)) + 4,
            -1,
        ),
        SqlType::Varchar { max_len } => (
            1043,
            max_len.map_or(-1, |n| {
                i32::try_from(n)
                    .ok()
                    .and_then(|n| n.checked_add(4))
                    .unwrap_or(i32::MAX)
            }),
            -1,
        ),
        SqlType::Char { len } => (
            1042,
            len.map_or(-1, |n| {
                i32::try_from(n)
                    .ok()
                    .and_then(|n| n.checked_add(4))
                    .unwrap_or(i32::MAX)
            }),
            -1,
        ),
        SqlType::Text => (25, -1, -1),
        SqlType::Date => (1082, -1, 4),
        SqlType::Time => (1083, -1, 8),
        SqlType::Timestamp => (1114, -1, 8),
        SqlType::TimestampTz => (1184, -1, 8),
        SqlType::Interval => (1186, -1, 16),
        SqlType::Bytea => (17, -1, -1),
        SqlType::Jsonb => (3802, -1, -1),
        SqlType::Json => (114, -1, -1),
        SqlType::Uuid => (2950, -1, 16),
        SqlType::Array(_) => {
            let (element, typmod, _) = pg_attribute_type(t.element());
            (array_oid(element), typmod, -1)
        }
    }
}

/// The `pg_type` OID of the array type of the element type `element` (its `typarray`).
fn array_oid(element: i32) -> i32 {
    match element {
        16 => 1000,
        21 => 1005,
        23 => 1007,
        20 => 1016,
        700 => 1021,
        701 => 1022,
        1700 => 1231,
        1043 => 1015,
        1042 => 1014,
        25 => 1009,
        1082 => 1182,
        1083 => 1183,
        1114 => 1115,
        1184 => 1185,
        1186 => 1187,
        17 => 1001,
        3802 => 3807,
        114 => 199,
        // Not reached: every element type above has its array type.
        _ => 0,
    }
}

/// `pg_attribute` with the declared types of Rivulet's columns: the library derives a column's
/// type from its Arrow type, which loses `varchar(n)`, `numeric(p,s)`, `jsonb` and `interval`
/// (stored as Utf8, Decimal128, Utf8 and an interval it does not map). Rows are matched to
/// relations through `pg_class`, whose OIDs are the library's; the key indexes' attributes are
/// added ([`index_attributes`]).
fn pg_attribute(
    types: &super::information_schema::Declared,
    keys: &[keys::PrimaryKey],
    public: &keys::Public,
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<RecordBatch> {
    use datafusion::arrow::array::Int16Array;
    let relations: HashMap<i32, String> = (public.relations.iter())
        .map(|(name, oid)| (*oid, name.clone()))
        .collect();
    let mut out = Vec::new();
    for batch in batches {
        let relids = column::<Int32Array>(&batch, "attrelid")?;
        let names = column::<StringArray>(&batch, "attname")?;
        let (mut typids, mut typmods, mut lens) = (
            column::<Int32Array>(&batch, "atttypid")?.values().to_vec(),
            column::<Int32Array>(&batch, "atttypmod")?.values().to_vec(),
            column::<Int16Array>(&batch, "attlen")?.values().to_vec(),
        );
        let mut has_default: Vec<bool> = (column::<BooleanArray>(&batch, "atthasdef")?.iter())
            .map(|v| v.unwrap_or(false))
            .collect();
        let mut identity: Vec<String> = (column::<StringArray>(&batch, "attidentity")?.iter())
            .map(|v| v.unwrap_or_default().to_string())
            .collect();
        for i in 0..batch.num_rows() {
            let declared = relations
                .get(&relids.value(i))
                .and_then(|relation| types.get(&(relation.clone(), names.value(i).to_string())));
            if let Some(c) = declared {
                (typids[i], typmods[i], lens[i]) = pg_attribute_type(&c.sql_type);
                has_default[i] = c.default.is_some();
                identity[i] = match c.identity {
                    Some(rivulet_planner::catalog::Identity::Always) => "a",
                    Some(rivulet_planner::catalog::Identity::ByDefault) => "d",
                    None => "",
                }
                .to_string();
            }
        }
        let batch = replace(
            &batch,
            "atthasdef",
            Arc::new(BooleanArray::from(has_default)),
        )?;
        let batch = replace(&batch, "attidentity", Arc::new(StringArray::from(identity)))?;
        let batch = replace(&batch, "atttypid", Arc::new(Int32Array::from(typids)))?;
        let batch = replace(&batch, "atttypmod", Arc::new(Int32Array::from(typmods)))?;
        out.push(replace(&batch, "attlen", Arc::new(Int16Array::from(lens)))?);
    }
    let batch = concat_batches(schema, &out)?;
    let indexes = index_attributes(&batch, &relations, keys)?;
    Ok(concat_batches(schema, [&batch, &indexes])?)
}

/// The attributes of the key indexes: a copy of each key column's row of its table (in
/// `attributes`, of the relations `relations`), numbered in key order.
fn index_attributes(
    attributes: &RecordBatch,
    relations: &HashMap<i32, String>,
    keys: &[keys::PrimaryKey],
) -> Result<RecordBatch> {
    use datafusion::arrow::array::{Int16Array, UInt32Array};
    let relids = column::<Int32Array>(attributes, "attrelid")?;
    let names = column::<StringArray>(attributes, "attname")?;
    let by_column: HashMap<(&str, &str), (u32, i32)> = (0..attributes.num_rows())
        .filter_map(|i| {
            let relation = relations.get(&relids.value(i))?;
            Some((
                (relation.as_str(), names.value(i)),
                (i as u32, relids.value(i)),
            ))
        })
        .collect();
    let (mut rows, mut index_oids, mut numbers) = (Vec::new(), Vec::new(), Vec::new());
    for key in keys {
        for (number, (_, column)) in key.columns.iter().enumerate() {
            if let Some(&(row, table)) = by_column.get(&(key.table.as_str(), column.as_str())) {
                rows.push(row);
                index_oids.push(keys::index_oid(table));
                numbers.push(i16::try_from(number + 1).unwrap_or(i16::MAX));
            }
        }
    }
    let n = rows.len();
    let batch = take_record_batch(attributes, &UInt32Array::from(rows))?;
    let batch = replace(&batch, "attrelid", Arc::new(Int32Array::from(index_oids)))?;
    let batch = replace(&batch, "attnum", Arc::new(Int16Array::from(numbers)))?;
    let batch = replace(
        &batch,
        "atthasdef",
        Arc::new(BooleanArray::from(vec![false; n])),
    )?;
    let batch = replace(
        &batch,
        "attnotnull",
        Arc::new(BooleanArray::from(vec![false; n])),
    )?;
    replace(
        &batch,
        "attidentity",
        Arc::new(StringArray::from(vec![""; n])),
    )
}

/// Every row of `table`.
async fn scan_all(state: &dyn Session, table: &Arc<dyn TableProvider>) -> Result<Vec<RecordBatch>> {
    let plan = table.scan(state, None, &[], None).await?;
    datafusion::physical_plan::collect(plan, state.task_ctx()).await
}

/// Schema `public`'s OID and its relations' OIDs by name, from the library's `pg_namespace` and
/// `pg_class` (`class`).
pub async fn public(
    state: &dyn Session,
    namespace: &Arc<dyn TableProvider>,
    class: &Arc<dyn TableProvider>,
) -> Result<super::keys::Public> {
    let mut public = None;
    for namespace in scan_all(state, namespace).await? {
        let oids = column::<Int32Array>(&namespace, "oid")?;
        let names = column::<StringArray>(&namespace, "nspname")?;
        for i in 0..namespace.num_rows() {
            if names.value(i) == DEFAULT_SCHEMA {
                public = Some(oids.value(i));
            }
        }
    }
    let mut relations = std::collections::HashMap::new();
    let mut pg_class = None;
    for class in scan_all(state, class).await? {
        let oids = column::<Int32Array>(&class, "oid")?;
        let names = column::<StringArray>(&class, "relname")?;
        let namespaces = column::<Int32Array>(&class, "relnamespace")?;
        for i in 0..class.num_rows() {
            if Some(namespaces.value(i)) == public {
                relations.insert(names.value(i).to_string(), oids.value(i));
            } else if namespaces.value(i) == PG_CATALOG_OID && names.value(i) == "pg_class" {
                pg_class = Some(oids.value(i));
            }
        }
    }
    Ok(super::keys::Public {
        namespace: public.unwrap_or_default(),
        relations,
        pg_class,
    })
}

/// The defaults of `database`'s tables: (relation, `attnum`, the default's text) of each column
/// with a DEFAULT, for `pg_attrdef`.
fn column_defaults(
    catalog: &crate::catalog::Catalog,
    database: &str,
) -> Vec<(String, i16, String)> {
    let mut out = Vec::new();
    for table in catalog.tables(database) {
        for (i, column) in table.def.columns.iter().enumerate() {
            let text = super::information_schema::column_default(column);
            if let (Some(text), Ok(number)) = (text, i16::try_from(i + 1)) {
                out.push((table.def.name.clone(), number, text));
            }
        }
    }
    out
}

/// The comments of `database`'s relations (`COMMENT ON`): relation name, 0 for the relation or
/// the column's number, the text.
pub fn descriptions(
    catalog: &crate::catalog::Catalog,
    database: &str,
) -> Vec<(String, i32, String)> {
    let mut out = Vec::new();
    for table in catalog.tables(database) {
        if let Some(text) = &table.def.comment {
            out.push((table.def.name.clone(), 0, text.clone()));
        }
        for (i, column) in table.def.columns.iter().enumerate() {
            if let (Some(text), Ok(number)) = (&column.comment, i32::try_from(i + 1)) {
                out.push((table.def.name.clone(), number, text.clone()));
            }
        }
    }
    out
}

/// `pg_description` (of `schema`): the library's rows (built-in functions') and a row per
/// commented relation and column (`comments`).
fn pg_description(
    comments: &[(String, i32, String)],
    public: &keys::Public,
    schema: &SchemaRef,
    inner: Vec<RecordBatch>,
) -> Result<RecordBatch> {
    let rows: Vec<(i32, i32, &str)> = (comments.iter())
        .filter_map(|(t, n, text)| Some((*public.relations.get(t)?, *n, text.as_str())))
        .collect();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let array: ArrayRef = match field.name().as_str() {
            "objoid" => Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.0))),
            // A relation's description is of catalog `pg_class` (its OID as the library gave it,
            // which `'pg_class'::regclass` reads; Postgres' is 1259).
            "classoid" => Arc::new(Int32Array::from_iter_values(
                rows.iter().map(|_| public.pg_class.unwrap_or(1259)),
            )),
            "objsubid" => Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.1))),
            "description" => Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
            _ => datafusion::arrow::array::new_null_array(field.data_type(), rows.len()),
        };
        columns.push(datafusion::arrow::compute::cast(&array, field.data_type())?);
    }
    let ours = RecordBatch::try_new(Arc::clone(schema), columns)?;
    let mut all = inner;
    all.push(ours);
    Ok(concat_batches(schema, &all)?)
}

/// `pg_attrdef` (of `schema`): a row per column with a DEFAULT (`defaults`), its `adbin` the
/// default's text as Postgres shows it (which `pg_get_expr` gives back:
/// [`super::functions::get_expr`]).
fn pg_attrdef(
    defaults: &[(String, i16, String)],
    public: &keys::Public,
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    use datafusion::arrow::array::Int16Array;
    let rows: Vec<(i32, i16, &str)> = (defaults.iter())
        .filter_map(|(t, n, text)| Some((*public.relations.get(t)?, *n, text.as_str())))
        .collect();
    // A default's own OID: none is kept, so one is made from its column's.
    let own = |(relid, number, _): &(i32, i16, &str)| {
        relid.wrapping_mul(1000).wrapping_add(i32::from(*number))
    };
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let array: ArrayRef = match field.name().as_str() {
            "oid" => Arc::new(Int32Array::from_iter_values(rows.iter().map(own))),
            "adrelid" => Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.0))),
            "adnum" => Arc::new(Int16Array::from_iter_values(rows.iter().map(|r| r.1))),
            "adbin" => Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
            _ => datafusion::arrow::array::new_null_array(field.data_type(), rows.len()),
        };
        columns.push(datafusion::arrow::compute::cast(&array, field.data_type())?);
    }
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

fn mem_table(batch: RecordBatch) -> Result<Arc<dyn TableProvider>> {
    Ok(Arc::new(MemTable::try_new(
        batch.schema(),
        vec![vec![batch]],
    )?))
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| DataFusionError::Internal(format!("pg_catalog column {name} changed type")))
}

fn replace(batch: &RecordBatch, name: &str, array: ArrayRef) -> Result<RecordBatch> {
    let index = batch.schema().index_of(name)?;
    let mut columns = batch.columns().to_vec();
    columns[index] = array;
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

fn fill_str(batch: RecordBatch, name: &str, value: &str) -> Result<RecordBatch> {
    let array = Arc::new(StringArray::from(vec![value; batch.num_rows()]));
    replace(&batch, name, array)
}

fn fill_i32(batch: RecordBatch, name: &str, value: i32) -> Result<RecordBatch> {
    let array = Arc::new(Int32Array::from(vec![value; batch.num_rows()]));
    replace(&batch, name, array)
}

/// Notes the OID of each user relation in `batch` (of `pg_class`), for `pg_get_viewdef`.
fn remember(batch: &RecordBatch, relations: &RelationNames) -> Result<()> {
    let oids = column::<Int32Array>(batch, "oid")?;
    let names = column::<StringArray>(batch, "relname")?;
    let namespace = column::<Int32Array>(batch, "relnamespace")?;
    let mut map = relations.write();
    for i in 0..batch.num_rows() {
        if namespace.value(i) != PG_CATALOG_OID {
            map.insert(oids.value(i), names.value(i).to_string());
        }
    }
    Ok(())
}

/// `pg_class` with materialized views as relkind `m` and the server's role as every owner; with
/// `kinds`, only rows of those kinds outside the `skip_namespace`.
fn pg_class(
    batch: RecordBatch,
    views: &HashSet<String>,
    plain_views: &HashSet<String>,
    kinds: &[&str],
    skip_namespace: Option<i32>,
) -> Result<RecordBatch> {
    let names = column::<StringArray>(&batch, "relname")?;
    let kind = column::<StringArray>(&batch, "relkind")?;
    let namespace = column::<Int32Array>(&batch, "relnamespace")?;
    let relkind: StringArray = (0..batch.num_rows())
        .map(|i| {
            let k = kind.value(i);
            if k == "v" && namespace.value(i) != PG_CATALOG_OID && views.contains(names.value(i)) {
                Some("m")
            } else {
                Some(k)
            }
        })
        .collect();
    // A view outside `pg_catalog` that is not one of ours is one of `information_schema`'s,
    // which Postgres does not show through `pg_class` lookups by name (they are off the search path).
    let keep: Vec<u32> = (0..batch.num_rows())
        .filter(|&i| {
            (kinds.is_empty() || kinds.contains(&relkind.value(i)))
                && skip_namespace != Some(namespace.value(i))
                && !(relkind.value(i) == "v"
                    && namespace.value(i) != PG_CATALOG_OID
                    && !plain_views.contains(names.value(i)))
        })
        .map(|i| i as u32)
        .collect();
    // Tables and materialized views use the `heap` access method (OID 2), as in Postgres.
    let relam: Int32Array = relkind
        .iter()
        .map(|k| Some(if matches!(k, Some("r" | "m")) { 2 } else { 0 }))
        .collect();
    let batch = replace(&batch, "relkind", Arc::new(relkind))?;
    let batch = replace(&batch, "relam", Arc::new(relam))?;
    let batch = fill_i32(batch, "relowner", ROLE_OID)?;
    if keep.len() == batch.num_rows() {
        return Ok(batch);
    }
    Ok(take_record_batch(
        &batch,
        &datafusion::arrow::array::UInt32Array::from(keep),
    )?)
}

/// One `pg_stat_user_tables` row per relation of `class` (already filtered): `n_live_tup` the
/// rows each stores (`live`, by name), other counters at zero.
fn stat_user_tables(
    class: &RecordBatch,
    schema: &SchemaRef,
    live: &HashMap<String, i64>,
) -> Result<RecordBatch> {
    let n = class.num_rows();
    let names = class
        .column_by_name("relname")
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| DataFusionError::Internal("pg_class.relname missing".into()))?;
    let columns =
        schema
            .fields()
            .iter()
            .map(|f| -> Result<ArrayRef> {
                Ok(match f.name().as_str() {
                    "relid" => {
                        Arc::clone(class.column_by_name("oid").ok_or_else(|| {
                            DataFusionError::Internal("pg_class.oid missing".into())
                        })?)
                    }
                    "relname" => Arc::clone(class.column_by_name("relname").ok_or_else(|| {
                        DataFusionError::Internal("pg_class.relname missing".into())
                    })?),
                    "schemaname" => Arc::new(StringArray::from(vec![DEFAULT_SCHEMA; n])),
                    "n_live_tup" => Arc::new(Int64Array::from_iter_values(
                        (0..n).map(|i| live.get(names.value(i)).copied().unwrap_or(0)),
                    )),
                    _ => datafusion::arrow::array::new_null_array(f.data_type(), n),
                })
            })
            .collect::<Result<Vec<_>>>()?;
    // Counters are NOT NULL in Postgres: zero, as on a server that has not collected statistics.
    let columns = columns
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| -> ArrayRef {
            match f.data_type() {
                DataType::Int64 if !f.is_nullable() && f.name() != "n_live_tup" => {
                    Arc::new(Int64Array::from(vec![0i64; n]))
                }
                DataType::Float64 if !f.is_nullable() => {
                    Arc::new(datafusion::arrow::array::Float64Array::from(vec![0f64; n]))
                }
                _ => c,
            }
        })
        .collect();
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// `pg_database` with one row per Rivulet database (the library lists the session's and a
/// `postgres` that may not exist), in psql's expected `datlocprovider` form (`c` for libc).
fn pg_database(batch: RecordBatch, databases: &[String], current: &str) -> Result<RecordBatch> {
    let names = column::<StringArray>(&batch, "datname")?;
    let Some(template) = (0..batch.num_rows()).find(|&i| names.value(i) == current) else {
        return Ok(batch);
    };
    let oids = column::<Int32Array>(&batch, "oid")?;
    let current_oid = oids.value(template);
    let rows = take_record_batch(
        &batch,
        &datafusion::arrow::array::UInt32Array::from(vec![template as u32; databases.len()]),
    )?;
    // Other databases get OIDs below the user range's start, stable while the list is.
    let oid: Int32Array = databases
        .iter()
        .enumerate()
        .map(|(i, d)| {
            Some(if d == current {
                current_oid
            } else {
                16000 + i as i32
            })
        })
        .collect();
    let rows = replace(&rows, "oid", Arc::new(oid))?;
    let rows = replace(
        &rows,
        "datname",
        Arc::new(StringArray::from_iter_values(databases.iter())),
    )?;
    let rows = fill_str(rows, "datlocprovider", "c")?;
    fill_i32(rows, "datdba", ROLE_OID)
}

/// An array type of Arrow, as Postgres' `item[]`.
fn array_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, true)))
}

/// `schema` with the named columns typed as arrays (the library types its array columns as text),
/// so that clients' subscripts (`conkey[1]`) and `unnest` over them plan.
fn with_array_columns(schema: &SchemaRef, arrays: &[(&str, DataType)]) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match arrays.iter().find(|(name, _)| name == f.name()) {
            Some((_, item)) => Field::new(f.name(), array_of(item.clone()), true),
            None => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `pg_index` (empty: Rivulet has no indexes) with its vector columns as arrays.
fn pg_index_schema(schema: &SchemaRef) -> SchemaRef {
    with_array_columns(
        schema,
        &[
            ("indkey", DataType::Int16),
            ("indoption", DataType::Int16),
            ("indcollation", DataType::Int32),
            ("indclass", DataType::Int32),
        ],
    )
}

/// The `smallint[]` columns of `pg_constraint`: the constrained columns' numbers.
const CONSTRAINT_KEYS: &[(&str, DataType)] =
    &[("conkey", DataType::Int16), ("confkey", DataType::Int16)];

/// A batch of a library relation in `schema`, which types some of its text columns as arrays
/// ([`with_array_columns`]): their values, text such as `[1,2]` or `{1,2}`, are parsed into arrays.
fn parse_arrays(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    use datafusion::arrow::array::{Int16Builder, Int32Builder, ListBuilder, StringBuilder};
    fn items(v: &str) -> impl Iterator<Item = &str> {
        v.trim_matches(|c| matches!(c, '{' | '}' | '[' | ']'))
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
    }
    fn numbers<B, T>(
        text: &StringArray,
        mut list: ListBuilder<B>,
        push: impl Fn(&mut B, T),
    ) -> Result<ArrayRef>
    where
        B: datafusion::arrow::array::ArrayBuilder,
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        for value in text.iter() {
            match value {
                None => list.append_null(),
                Some(v) => {
                    for n in items(v) {
                        let n = n.parse::<T>().map_err(|e| {
                            DataFusionError::Internal(format!("pg_catalog array {v:?}: {e}"))
                        })?;
                        push(list.values(), n);
                    }
                    list.append(true);
                }
            }
        }
        Ok(Arc::new(list.finish()))
    }
    let mut columns = batch.columns().to_vec();
    for (column, field) in columns.iter_mut().zip(schema.fields()) {
        let (Some(text), DataType::List(item)) = (
            column.as_any().downcast_ref::<StringArray>(),
            field.data_type(),
        ) else {
            continue;
        };
        *column = match item.data_type() {
            DataType::Int16 => numbers(text, ListBuilder::new(Int16Builder::new()), |b, n| {
                b.append_value(n)
            })?,
            DataType::Int32 => numbers(text, ListBuilder::new(Int32Builder::new()), |b, n| {
                b.append_value(n)
            })?,
            _ => {
                let mut list = ListBuilder::new(StringBuilder::new());
                for value in text.iter() {
                    match value {
                        None => list.append_null(),
                        Some(v) => {
                            for item in items(v) {
                                list.values().append_value(item.trim_matches('"'));
                            }
                            list.append(true);
                        }
                    }
                }
                Arc::new(list.finish())
            }
        };
    }
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// The library's `pg_settings` schema with `boot_val` spelled as in Postgres.
fn settings_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.name().as_str() {
            "bool_val" => f.as_ref().clone().with_name("boot_val"),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// `pg_settings`: the session's settings, under Postgres' spelling of their names, with the
/// values a session starts with as `boot_val` and `reset_val`.
fn pg_settings(
    schema: &SchemaRef,
    settings: &std::collections::BTreeMap<String, String>,
    defaults: &std::collections::BTreeMap<String, String>,
) -> Result<RecordBatch> {
    let spelled = |name: &str| match name {
        "timezone" => "TimeZone".to_string(),
        "datestyle" => "DateStyle".to_string(),
        "intervalstyle" => "IntervalStyle".to_string(),
        other => other.to_string(),
    };
    let n = settings.len();
    let columns = schema
        .fields()
        .iter()
        .map(|f| -> ArrayRef {
            match f.name().as_str() {
                "name" => Arc::new(StringArray::from_iter_values(
                    settings.keys().map(|k| spelled(k)),
                )),
                "setting" => Arc::new(StringArray::from_iter_values(settings.values())),
                "reset_val" | "boot_val" => Arc::new(StringArray::from_iter(
                    settings.keys().map(|k| defaults.get(k)),
                )),
                "vartype" => Arc::new(StringArray::from(vec!["string"; n])),
                "context" => Arc::new(StringArray::from(vec!["user"; n])),
                "source" => Arc::new(StringArray::from_iter_values(settings.iter().map(
                    |(k, v)| {
                        if defaults.get(k) == Some(v) {
                            "default"
                        } else {
                            "session"
                        }
                    },
                ))),
                "pending_restart" => Arc::new(BooleanArray::from(vec![false; n])),
                _ => datafusion::arrow::array::new_null_array(f.data_type(), n),
            }
        })
        .collect();
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

fn pg_user(user: &str) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("usename", DataType::Utf8, false),
        Field::new("usesysid", DataType::Int32, false),
        Field::new("usecreatedb", DataType::Boolean, false),
        Field::new("usesuper", DataType::Boolean, false),
        Field::new("userepl", DataType::Boolean, false),
        Field::new("usebypassrls", DataType::Boolean, false),
        Field::new("passwd", DataType::Utf8, true),
        Field::new("valuntil", DataType::Utf8, true),
        Field::new("useconfig", DataType::Utf8, true),
    ]));
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec![user])),
            Arc::new(Int32Array::from(vec![ROLE_OID])),
            Arc::new(BooleanArray::from(vec![true])),
            Arc::new(BooleanArray::from(vec![true])),
            Arc::new(BooleanArray::from(vec![true])),
            Arc::new(BooleanArray::from(vec![true])),
            Arc::new(StringArray::from(vec![Some("********")])),
            Arc::new(StringArray::from(vec![None::<&str>])),
            Arc::new(StringArray::from(vec![None::<&str>])),
        ],
    )?)
}

/// `pg_stat_activity` with the asking session's own row (what monitoring tools look for first).
fn pg_stat_activity(database: &str, user: &str, application: &str) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("datid", DataType::Int32, true),
        Field::new("datname", DataType::Utf8, true),
        Field::new("pid", DataType::Int32, true),
        Field::new("usesysid", DataType::Int32, true),
        Field::new("usename", DataType::Utf8, true),
        Field::new("application_name", DataType::Utf8, true),
        Field::new("client_addr", DataType::Utf8, true),
        Field::new("state", DataType::Utf8, true),
        Field::new("query", DataType::Utf8, true),
        Field::new("backend_type", DataType::Utf8, true),
    ]));
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int32Array::from(vec![None])),
            Arc::new(StringArray::from(vec![database])),
            Arc::new(Int32Array::from(vec![Some(std::process::id() as i32)])),
            Arc::new(Int32Array::from(vec![ROLE_OID])),
            Arc::new(StringArray::from(vec![user])),
            Arc::new(StringArray::from(vec![application])),
            Arc::new(StringArray::from(vec![None::<&str>])),
            Arc::new(StringArray::from(vec!["active"])),
            Arc::new(StringArray::from(vec![None::<&str>])),
            Arc::new(StringArray::from(vec!["client backend"])),
        ],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_become_relkind_m() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("oid", DataType::Int32, false),
            Field::new("relname", DataType::Utf8, false),
            Field::new("relnamespace", DataType::Int32, false),
            Field::new("relowner", DataType::Int32, false),
            Field::new("relam", DataType::Int32, false),
            Field::new("relkind", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec!["t", "mv", "pg_class"])),
                Arc::new(Int32Array::from(vec![2200, 2200, 11])),
                Arc::new(Int32Array::from(vec![0, 0, 0])),
                Arc::new(Int32Array::from(vec![0, 0, 0])),
                Arc::new(StringArray::from(vec!["r", "v", "r"])),
            ],
        )
        .unwrap();
        let views = HashSet::from(["mv".to_string()]);
        let out = pg_class(batch.clone(), &views, &HashSet::new(), &[], None).unwrap();
        let kinds = column::<StringArray>(&out, "relkind").unwrap();
        assert_eq!(kinds.iter().flatten().collect::<Vec<_>>(), ["r", "m", "r"]);
        let user = pg_class(batch, &views, &HashSet::new(), &["r", "m"], Some(11)).unwrap();
        assert_eq!(user.num_rows(), 2);
    }
}
