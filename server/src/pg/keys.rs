//! Primary keys and sequences in the catalogs clients read, as Postgres shows them:
//! - a table's primary key is a unique btree index `<table>_pkey` (a `pg_class` row of kind `i`,
//!   a `pg_index` row, a `pg_indexes` row) and a PRIMARY KEY constraint of that name
//!   (`pg_constraint`, `information_schema.table_constraints`, `key_column_usage`,
//!   `constraint_column_usage`), and the table's `relhasindex` is true;
//! - a sequence is a relation of kind `S` with a `pg_sequence` row, listed by `pg_sequences` and
//!   `information_schema.sequences`.
//!
//! psql's `\d` (its Indexes section), `\di` and `\ds`, SQLAlchemy's reflection of keys and its
//! `has_sequence`, and BI tools' key detection read these.
//!
//! The library hands out the OIDs of schemas and tables (from 16384 up, one per relation name);
//! the ones added here are made from those or from Rivulet's catalog ids, far above:
//! - a table's key index is [`INDEX_OIDS`] plus the table's OID, its constraint
//!   [`CONSTRAINT_OIDS`] plus it;
//! - a sequence is [`SEQUENCE_OIDS`] plus [`Sequence::number`], stable across restarts.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Int16Array, Int32Array, Int64Array, ListArray, RecordBatch,
    StringArray,
};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Field, Int16Type, Int32Type, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::scalar::ScalarValue;
use rivulet_planner::types::SqlType;

use crate::catalog::{Catalog, DEFAULT_SCHEMA};
use crate::pg::functions::quote_ident;
use crate::sequence::Sequence;

/// A table's primary-key index is this plus the table's OID.
pub const INDEX_OIDS: i32 = 1_000_000_000;
/// A table's PRIMARY KEY constraint is this plus the table's OID.
pub const CONSTRAINT_OIDS: i32 = 1_100_000_000;
/// A sequence is this plus its [`Sequence::number`] (modulo [`SEQUENCE_OID_RANGE`]).
pub const SEQUENCE_OIDS: i32 = 1_200_000_000;
const SEQUENCE_OID_RANGE: u64 = 900_000_000;

/// Postgres' longest identifier (NAMEDATALEN - 1), in bytes.
const MAX_NAME: usize = 63;

/// A table's primary key.
#[derive(Debug, Clone)]
pub struct PrimaryKey {
    pub table: String,
    /// Its columns in key order: their numbers (`attnum`, from 1) and names.
    pub columns: Vec<(i16, String)>,
}

impl PrimaryKey {
    /// `<table>_pkey`, with the table's name cut as Postgres cuts it to fit 63 bytes.
    pub fn name(&self) -> String {
        let mut table = self.table.as_str();
        while table.len() + "_pkey".len() > MAX_NAME {
            let mut end = table.len() - 1;
            while !table.is_char_boundary(end) {
                end -= 1;
            }
            table = &table[..end];
        }
        format!("{table}_pkey")
    }

    fn column_list(&self) -> String {
        let names: Vec<String> = self.columns.iter().map(|(_, c)| quote_ident(c)).collect();
        names.join(", ")
    }

    /// What `pg_get_indexdef` gives for its index.
    pub fn index_def(&self) -> String {
        format!(
            "CREATE UNIQUE INDEX {} ON {DEFAULT_SCHEMA}.{} USING btree ({})",
            quote_ident(&self.name()),
            quote_ident(&self.table),
            self.column_list()
        )
    }

    /// What `pg_get_constraintdef` gives for its constraint.
    pub fn constraint_def(&self) -> String {
        format!("PRIMARY KEY ({})", self.column_list())
    }
}

/// The primary keys and sequences of a database, as of now.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    /// The tables with a primary key (not views), by table name.
    pub primary: Vec<PrimaryKey>,
    /// Every sequence, by name.
    pub sequences: Vec<Arc<Sequence>>,
}

impl Keys {
    pub fn of(catalog: &Catalog, database: &str) -> Self {
        let mut primary: Vec<PrimaryKey> = catalog
            .tables(database)
            .iter()
            .filter_map(|t| primary_key_of(&t.def))
            .collect();
        primary.sort_by(|a, b| a.table.cmp(&b.table));
        let mut sequences = catalog.sequences(database);
        sequences.sort_by(|a, b| a.def.name.cmp(&b.def.name));
        Self { primary, sequences }
    }
}

/// The primary key of table `name`, if it has one.
pub fn primary_key(catalog: &Catalog, database: &str, name: &str) -> Option<PrimaryKey> {
    primary_key_of(&catalog.table(database, name)?.def)
}

fn primary_key_of(def: &rivulet_planner::catalog::TableDef) -> Option<PrimaryKey> {
    if def.primary_key.is_empty() || def.view.is_some() || def.plain_view.is_some() {
        return None;
    }
    let columns = def
        .primary_key
        .iter()
        .map(|&i| {
            let column = def.columns.get(i)?;
            Some((i16::try_from(i + 1).ok()?, column.name.clone()))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(PrimaryKey {
        table: def.name.clone(),
        columns,
    })
}

/// The OID of the primary-key index of the table of OID `table`.
pub fn index_oid(table: i32) -> i32 {
    INDEX_OIDS.wrapping_add(table)
}

/// The OID of the PRIMARY KEY constraint of the table of OID `table`.
pub fn constraint_oid(table: i32) -> i32 {
    CONSTRAINT_OIDS.wrapping_add(table)
}

/// The OID of a sequence.
pub fn sequence_oid(sequence: &Sequence) -> i32 {
    let offset = i32::try_from(sequence.number() % SEQUENCE_OID_RANGE).unwrap_or(0);
    SEQUENCE_OIDS.wrapping_add(offset)
}

/// The table whose primary-key index has OID `oid`.
pub fn table_of_index(oid: i64) -> Option<i32> {
    (i64::from(INDEX_OIDS)..i64::from(CONSTRAINT_OIDS))
        .contains(&oid)
        .then(|| i32::try_from(oid - i64::from(INDEX_OIDS)).ok())
        .flatten()
}

/// The table whose PRIMARY KEY constraint has OID `oid`.
pub fn table_of_constraint(oid: i64) -> Option<i32> {
    (i64::from(CONSTRAINT_OIDS)..i64::from(SEQUENCE_OIDS))
        .contains(&oid)
        .then(|| i32::try_from(oid - i64::from(CONSTRAINT_OIDS)).ok())
        .flatten()
}

/// A sequence's type's OID and name.
fn sequence_type(sequence: &Sequence) -> (i32, &'static str) {
    match sequence.def.sql_type {
        SqlType::SmallInt => (21, "smallint"),
        SqlType::Int => (23, "integer"),
        _ => (20, "bigint"),
    }
}

/// Schema `public`'s OID and its relations' OIDs by name, as the library gave them.
#[derive(Debug, Default)]
pub struct Public {
    pub namespace: i32,
    pub relations: HashMap<String, i32>,
    /// The OID of `pg_catalog.pg_class` (what `'pg_class'::regclass` gives).
    pub pg_class: Option<i32>,
}

/// What makes a relation's rows from its rows as the library gave them ([`with_public_oids`]).
pub trait Rows:
    Fn(&Public, &SchemaRef, Vec<RecordBatch>) -> Result<RecordBatch> + Send + Sync
{
}

impl<F> Rows for F where
    F: Fn(&Public, &SchemaRef, Vec<RecordBatch>) -> Result<RecordBatch> + Send + Sync
{
}

type Add = dyn Rows;

/// A catalog relation (`inner`) with its rows replaced by `add`'s: [`with_public_oids`].
struct WithPublicOids {
    inner: Arc<dyn TableProvider>,
    class: Arc<dyn TableProvider>,
    namespace: Arc<dyn TableProvider>,
    add: Arc<Add>,
}

impl std::fmt::Debug for WithPublicOids {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WithPublicOids").finish_non_exhaustive()
    }
}

#[async_trait]
impl TableProvider for WithPublicOids {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
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
        let public = super::catalog::public(state, &self.namespace, &self.class).await?;
        let plan = self.inner.scan(state, None, &[], None).await?;
        let batches = datafusion::physical_plan::collect(plan, state.task_ctx()).await?;
        let schema = self.schema();
        let batch = (self.add)(&public, &schema, batches)?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            schema,
            projection.cloned(),
        )?)
    }
}

/// `inner` (a catalog relation) with its rows replaced by what `add` makes of them, given the
/// OIDs the library gave schema `public` and its relations (from its `pg_namespace` and
/// `pg_class`: `namespace`, `class`).
pub fn with_public_oids(
    inner: Arc<dyn TableProvider>,
    class: Arc<dyn TableProvider>,
    namespace: Arc<dyn TableProvider>,
    add: impl Rows + 'static,
) -> Arc<dyn TableProvider> {
    Arc::new(WithPublicOids {
        inner,
        class,
        namespace,
        add: Arc::new(add),
    })
}

/// The catalog relations keys and sequences add rows to, over the library's `pg_class` and
/// `pg_namespace` (for OIDs).
pub struct Sources {
    pub class: Arc<dyn TableProvider>,
    pub namespace: Arc<dyn TableProvider>,
    pub keys: Keys,
}

impl Sources {
    fn with(
        &self,
        inner: Arc<dyn TableProvider>,
        add: impl Fn(&Keys, &Public, &SchemaRef, Vec<RecordBatch>) -> Result<RecordBatch>
        + Send
        + Sync
        + 'static,
    ) -> Arc<dyn TableProvider> {
        let keys = self.keys.clone();
        with_public_oids(
            inner,
            Arc::clone(&self.class),
            Arc::clone(&self.namespace),
            move |public, schema, batches| add(&keys, public, schema, batches),
        )
    }

    /// `pg_class` (`inner`, already corrected) with the key indexes and sequences, and
    /// `relhasindex` set on tables with a key.
    pub fn pg_class(&self, inner: Arc<dyn TableProvider>) -> Arc<dyn TableProvider> {
        self.with(inner, |keys, public, schema, batches| {
            let batch = concat_batches(schema, &batches)?;
            let keyed: std::collections::HashSet<&str> =
                keys.primary.iter().map(|k| k.table.as_str()).collect();
            let names = text_column(&batch, "relname")?;
            let spaces = int_column(&batch, "relnamespace")?;
            let has_index: BooleanArray = (0..batch.num_rows())
                .map(|i| {
                    Some(spaces.value(i) == public.namespace && keyed.contains(names.value(i)))
                })
                .collect();
            let batch = replace(&batch, "relhasindex", Arc::new(has_index))?;
            // (oid, name, kind, access method, columns)
            let mut rows: Vec<(i32, String, &str, i32, i16)> = Vec::new();
            for key in &keys.primary {
                if let Some(&table) = public.relations.get(&key.table) {
                    let n = i16::try_from(key.columns.len()).unwrap_or(i16::MAX);
                    rows.push((index_oid(table), key.name(), "i", 403, n));
                }
            }
            for s in &keys.sequences {
                rows.push((sequence_oid(s), s.def.name.clone(), "S", 0, 3));
            }
            let n = rows.len();
            let oids = Int32Array::from_iter_values(rows.iter().map(|r| r.0));
            let added = build(schema, n, |column| {
                Some(match column {
                    "oid" | "relfilenode" => Arc::new(oids.clone()) as ArrayRef,
                    "relname" => Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.1))),
                    "relnamespace" => Arc::new(Int32Array::from(vec![public.namespace; n])),
                    "relowner" => Arc::new(Int32Array::from(vec![super::catalog::ROLE_OID; n])),
                    "relkind" => Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
                    "relam" => Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.3))),
                    "relnatts" => Arc::new(Int16Array::from_iter_values(rows.iter().map(|r| r.4))),
                    "relpersistence" => Arc::new(StringArray::from(vec!["p"; n])),
                    "relreplident" => Arc::new(StringArray::from(vec!["n"; n])),
                    "relispopulated" => Arc::new(BooleanArray::from(vec![true; n])),
                    _ => return None,
                })
            })?;
            Ok(concat_batches(schema, [&batch, &added])?)
        })
    }

    /// `pg_index` (empty in the library): the key indexes.
    pub fn pg_index(&self, inner: Arc<dyn TableProvider>) -> Arc<dyn TableProvider> {
        self.with(inner, |keys, public, schema, batches| {
            let keyed = keyed_tables(keys, public);
            let n = keyed.len();
            let tables = Int32Array::from_iter_values(keyed.iter().map(|(oid, _)| *oid));
            let width = |k: &PrimaryKey| i16::try_from(k.columns.len()).unwrap_or(i16::MAX);
            let widths = Int16Array::from_iter_values(keyed.iter().map(|(_, k)| width(k)));
            let flag = |v: bool| Arc::new(BooleanArray::from(vec![v; n])) as ArrayRef;
            let added = build(schema, n, |column| {
                Some(match column {
                    "indexrelid" => Arc::new(Int32Array::from_iter_values(
                        keyed.iter().map(|(oid, _)| index_oid(*oid)),
                    )) as ArrayRef,
                    "indrelid" => Arc::new(tables.clone()),
                    "indnatts" | "indnkeyatts" => Arc::new(widths.clone()),
                    "indisunique" | "indisprimary" | "indimmediate" | "indisvalid"
                    | "indisready" | "indislive" => flag(true),
                    "indkey" => Arc::new(ListArray::from_iter_primitive::<Int16Type, _, _>(
                        keyed
                            .iter()
                            .map(|(_, k)| Some(k.columns.iter().map(|(n, _)| Some(*n)))),
                    )),
                    "indoption" => Arc::new(ListArray::from_iter_primitive::<Int16Type, _, _>(
                        keyed
                            .iter()
                            .map(|(_, k)| Some(k.columns.iter().map(|_| Some(0i16)))),
                    )),
                    "indcollation" | "indclass" => {
                        Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(
                            keyed
                                .iter()
                                .map(|(_, k)| Some(k.columns.iter().map(|_| Some(0i32)))),
                        ))
                    }
                    _ => return None,
                })
            })?;
            Ok(concat_batches(schema, batches.iter().chain([&added]))?)
        })
    }

    /// `pg_constraint` (the library's rows for `pg_catalog`) with the PRIMARY KEY constraints.
    pub fn pg_constraint(&self, inner: Arc<dyn TableProvider>) -> Arc<dyn TableProvider> {
        self.with(inner, |keys, public, schema, batches| {
            let keyed = keyed_tables(keys, public);
            let n = keyed.len();
            let int = |f: &dyn Fn(i32) -> i32| {
                Arc::new(Int32Array::from_iter_values(
                    keyed.iter().map(|(t, _)| f(*t)),
                )) as ArrayRef
            };
            let text = |v: &str| Arc::new(StringArray::from(vec![v; n])) as ArrayRef;
            let flag = |v: bool| Arc::new(BooleanArray::from(vec![v; n])) as ArrayRef;
            let added = build(schema, n, |column| {
                Some(match column {
                    "oid" => int(&constraint_oid),
                    "conname" => Arc::new(StringArray::from_iter_values(
                        keyed.iter().map(|(_, k)| k.name()),
                    )),
                    "connamespace" => int(&|_| public.namespace),
                    "contype" => text("p"),
                    "confupdtype" | "confdeltype" | "confmatchtype" => text(" "),
                    "convalidated" | "conenforced" | "conislocal" | "connoinherit" => flag(true),
                    "conrelid" => int(&|t| t),
                    "conindid" => int(&index_oid),
                    "conkey" => Arc::new(ListArray::from_iter_primitive::<Int16Type, _, _>(
                        keyed
                            .iter()
                            .map(|(_, k)| Some(k.columns.iter().map(|(n, _)| Some(*n)))),
                    )),
                    _ => return None,
                })
            })?;
            Ok(concat_batches(schema, batches.iter().chain([&added]))?)
        })
    }

    /// `pg_sequence` (empty in the library): a row per sequence.
    pub fn pg_sequence(&self, inner: Arc<dyn TableProvider>) -> Arc<dyn TableProvider> {
        self.with(inner, |keys, _, schema, batches| {
            let s = &keys.sequences;
            let n = s.len();
            let longs = |f: &dyn Fn(&Sequence) -> i64| {
                Arc::new(Int64Array::from_iter_values(s.iter().map(|s| f(s)))) as ArrayRef
            };
            let added = build(schema, n, |column| {
                Some(match column {
                    "seqrelid" => Arc::new(Int32Array::from_iter_values(
                        s.iter().map(|s| sequence_oid(s)),
                    )) as ArrayRef,
                    "seqtypid" => Arc::new(Int32Array::from_iter_values(
                        s.iter().map(|s| sequence_type(s).0),
                    )),
                    "seqstart" => longs(&|s| s.def.start),
                    "seqincrement" => longs(&|s| s.def.increment),
                    "seqmax" => longs(&|s| s.def.max),
                    "seqmin" => longs(&|s| s.def.min),
                    "seqcache" => longs(&|_| 1),
                    "seqcycle" => {
                        Arc::new(BooleanArray::from_iter(s.iter().map(|s| Some(s.def.cycle))))
                    }
                    _ => return None,
                })
            })?;
            Ok(concat_batches(schema, batches.iter().chain([&added]))?)
        })
    }
}

/// The keyed tables the library listed: their OIDs and keys.
fn keyed_tables<'a>(keys: &'a Keys, public: &Public) -> Vec<(i32, &'a PrimaryKey)> {
    keys.primary
        .iter()
        .filter_map(|k| Some((*public.relations.get(&k.table)?, k)))
        .collect()
}

/// `pg_sequences`: each sequence with its definition and last value.
pub fn pg_sequences(keys: &Keys, owner: &str) -> Result<RecordBatch> {
    let s = &keys.sequences;
    let n = s.len();
    let name = |c: &str| super::wire_types::declare(Field::new(c, DataType::Utf8, false), "name");
    let long = |c: &str| Field::new(c, DataType::Int64, true);
    let schema = Arc::new(Schema::new(vec![
        name("schemaname"),
        name("sequencename"),
        name("sequenceowner"),
        super::wire_types::declare(Field::new("data_type", DataType::Utf8, true), "regtype"),
        long("start_value"),
        long("min_value"),
        long("max_value"),
        long("increment_by"),
        Field::new("cycle", DataType::Boolean, true),
        long("cache_size"),
        long("last_value"),
    ]));
    let longs = |f: &dyn Fn(&Sequence) -> i64| {
        Arc::new(Int64Array::from_iter_values(s.iter().map(|s| f(s))))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![DEFAULT_SCHEMA; n])),
        Arc::new(StringArray::from_iter_values(s.iter().map(|s| &s.def.name))),
        Arc::new(StringArray::from(vec![owner; n])),
        Arc::new(StringArray::from_iter_values(
            s.iter().map(|s| sequence_type(s).1),
        )),
        longs(&|s| s.def.start),
        longs(&|s| s.def.min),
        longs(&|s| s.def.max),
        longs(&|s| s.def.increment),
        Arc::new(BooleanArray::from_iter(s.iter().map(|s| Some(s.def.cycle)))),
        longs(&|_| 1),
        // NULL until a value is handed out (or after `setval(.., false)`).
        Arc::new(Int64Array::from_iter(s.iter().map(|s| {
            let (last, _, called) = s.state();
            called.then_some(last)
        }))),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// `pg_indexes`: each key index with its definition.
pub fn pg_indexes(keys: &Keys) -> Result<RecordBatch> {
    let k = &keys.primary;
    let n = k.len();
    let name = |c: &str| super::wire_types::declare(Field::new(c, DataType::Utf8, true), "name");
    let schema = Arc::new(Schema::new(vec![
        name("schemaname"),
        name("tablename"),
        name("indexname"),
        name("tablespace"),
        Field::new("indexdef", DataType::Utf8, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![DEFAULT_SCHEMA; n])),
        Arc::new(StringArray::from_iter_values(k.iter().map(|k| &k.table))),
        Arc::new(StringArray::from_iter_values(k.iter().map(|k| k.name()))),
        Arc::new(StringArray::from(vec![None::<&str>; n])),
        Arc::new(StringArray::from_iter_values(
            k.iter().map(|k| k.index_def()),
        )),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// A row of a constraint view: a key, and for the views of key columns the column's position
/// (from 0) and name.
type KeyRow<'a> = (&'a PrimaryKey, Option<(usize, &'a str)>);

/// The rows of `information_schema`'s constraint view `view` (of `schema`): the primary keys'
/// in `table_constraints`, `key_column_usage` and `constraint_column_usage`, none in the others.
pub fn constraint_rows(
    view: &str,
    schema: &SchemaRef,
    keys: &Keys,
    database: &str,
) -> Result<RecordBatch> {
    // One row per key, or per key column.
    let per_column = matches!(view, "key_column_usage" | "constraint_column_usage");
    let rows: Vec<KeyRow<'_>> = match view {
        "table_constraints" => keys.primary.iter().map(|k| (k, None)).collect(),
        _ if per_column => (keys.primary.iter())
            .flat_map(|k| {
                (k.columns.iter().enumerate()).map(move |(i, (_, c))| (k, Some((i, c.as_str()))))
            })
            .collect(),
        _ => Vec::new(),
    };
    let n = rows.len();
    build(schema, n, |column| {
        let text = |f: &dyn Fn(&KeyRow<'_>) -> Option<String>| {
            Arc::new(StringArray::from_iter(rows.iter().map(f))) as ArrayRef
        };
        Some(match column {
            "constraint_catalog" | "table_catalog" => text(&|_| Some(database.to_string())),
            "constraint_schema" | "table_schema" => text(&|_| Some(DEFAULT_SCHEMA.to_string())),
            "constraint_name" => text(&|(k, _)| Some(k.name())),
            "table_name" => text(&|(k, _)| Some(k.table.clone())),
            "constraint_type" => text(&|_| Some("PRIMARY KEY".to_string())),
            "is_deferrable" | "initially_deferred" => text(&|_| Some("NO".to_string())),
            "enforced" => text(&|_| Some("YES".to_string())),
            "column_name" => text(&|(_, c)| c.map(|(_, c)| c.to_string())),
            "ordinal_position" => Arc::new(Int32Array::from_iter(
                rows.iter()
                    .map(|(_, c)| c.and_then(|(i, _)| i32::try_from(i + 1).ok())),
            )),
            _ => return None,
        })
    })
}

/// `information_schema.sequences`: each sequence, its numbers as text (Postgres' character_data).
pub fn information_schema_sequences(keys: &Keys, database: &str) -> Result<RecordBatch> {
    let s = &keys.sequences;
    let n = s.len();
    let text = |c: &str| Field::new(c, DataType::Utf8, true);
    let int = |c: &str| Field::new(c, DataType::Int32, true);
    let schema = Arc::new(Schema::new(vec![
        text("sequence_catalog"),
        text("sequence_schema"),
        text("sequence_name"),
        text("data_type"),
        int("numeric_precision"),
        int("numeric_precision_radix"),
        int("numeric_scale"),
        text("start_value"),
        text("minimum_value"),
        text("maximum_value"),
        text("increment"),
        text("cycle_option"),
    ]));
    let texts = |f: &dyn Fn(&Sequence) -> String| {
        Arc::new(StringArray::from_iter_values(s.iter().map(|s| f(s)))) as ArrayRef
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![database; n])),
        Arc::new(StringArray::from(vec![DEFAULT_SCHEMA; n])),
        texts(&|s| s.def.name.clone()),
        texts(&|s| sequence_type(s).1.to_string()),
        Arc::new(Int32Array::from_iter_values(s.iter().map(
            |s| match sequence_type(s).0 {
                21 => 16,
                23 => 32,
                _ => 64,
            },
        ))),
        Arc::new(Int32Array::from(vec![2; n])),
        Arc::new(Int32Array::from(vec![0; n])),
        texts(&|s| s.def.start.to_string()),
        texts(&|s| s.def.min.to_string()),
        texts(&|s| s.def.max.to_string()),
        texts(&|s| s.def.increment.to_string()),
        texts(&|s| if s.def.cycle { "YES" } else { "NO" }.to_string()),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// `n` rows of `schema`: the columns `set` gives (cast to their fields' types); every other
/// column NULL, or zero, false or empty where the field is NOT NULL.
fn build(
    schema: &SchemaRef,
    n: usize,
    set: impl Fn(&str) -> Option<ArrayRef>,
) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| -> Result<ArrayRef> {
            match set(f.name()) {
                Some(array) => Ok(cast(&array, f.data_type())?),
                None if f.is_nullable() => {
                    Ok(datafusion::arrow::array::new_null_array(f.data_type(), n))
                }
                None => ScalarValue::new_default(f.data_type())?.to_array_of_size(n),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
    )?)
}

fn text_column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| DataFusionError::Internal(format!("pg_class.{name} changed type")))
}

fn int_column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a Int32Array> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<Int32Array>())
        .ok_or_else(|| DataFusionError::Internal(format!("pg_class.{name} changed type")))
}

fn replace(batch: &RecordBatch, name: &str, array: ArrayRef) -> Result<RecordBatch> {
    let index = batch.schema().index_of(name)?;
    let mut columns = batch.columns().to_vec();
    columns[index] = cast(&array, batch.schema().field(index).data_type())?;
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_and_definitions_are_postgres() {
        let key = PrimaryKey {
            table: "Orders".into(),
            columns: vec![(1, "id".into()), (3, "Line".into())],
        };
        assert_eq!(key.name(), "Orders_pkey");
        assert_eq!(
            key.index_def(),
            "CREATE UNIQUE INDEX \"Orders_pkey\" ON public.\"Orders\" USING btree (id, \"Line\")"
        );
        assert_eq!(key.constraint_def(), "PRIMARY KEY (id, \"Line\")");
        let long = PrimaryKey {
            table: "t".repeat(70),
            columns: vec![(1, "id".into())],
        };
        assert_eq!(long.name(), format!("{}_pkey", "t".repeat(58)));
    }

    #[test]
    fn key_oids_lead_back_to_their_table() {
        assert_eq!(table_of_index(i64::from(index_oid(16390))), Some(16390));
        assert_eq!(
            table_of_constraint(i64::from(constraint_oid(16390))),
            Some(16390)
        );
        assert_eq!(table_of_index(16390), None);
        assert_eq!(table_of_constraint(i64::from(index_oid(1))), None);
    }
}
