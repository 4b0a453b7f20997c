//! Catalog records, as persisted by the server and read by the planners.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::types::SqlType;

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDef {
    pub name: String,
    pub sql_type: SqlType,
    pub nullable: bool,
    /// A view's column: its query column's field metadata that says how values are shown where
    /// the type does not (a `numeric`'s display scale, `server/src/pg/numeric.rs`); empty for a
    /// table's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shown: BTreeMap<String, String>,
}

impl ColumnDef {
    /// A column of `sql_type` that shows its values as its type says.
    pub fn new(name: impl Into<String>, sql_type: SqlType, nullable: bool) -> Self {
        Self {
            name: name.into(),
            sql_type,
            nullable,
            shown: BTreeMap::new(),
        }
    }

    /// The column as an Arrow field, with its Postgres type and [`ColumnDef::shown`] in the
    /// metadata.
    pub fn field(&self) -> Field {
        let field = self.sql_type.field(&self.name, self.nullable);
        if self.shown.is_empty() {
            return field;
        }
        let mut metadata = field.metadata().clone();
        metadata.extend(self.shown.iter().map(|(k, v)| (k.clone(), v.clone())));
        field.with_metadata(metadata)
    }
}

/// A table: a named relation with stored rows and a change log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableDef {
    /// Unique for the server's lifetime; keys the table's storage.
    pub id: u64,
    pub database: String,
    pub name: String,
    pub columns: Vec<ColumnDef>,
    /// Column positions of the primary key, in key order; empty when there is none.
    pub primary_key: Vec<usize>,
    /// `APPEND ONLY`: UPDATE and DELETE are refused.
    pub append_only: bool,
    /// `WITH (...)` options, keys lowercased; connectors read them.
    pub options: BTreeMap<String, String>,
    /// Set for a materialized view: its rows are kept by a streaming job, not by DML.
    #[serde(default)]
    pub view: Option<ViewDef>,
    /// `WATERMARK FOR column AS expr`: the table's event time and how late its rows may come.
    #[serde(default)]
    pub watermark: Option<WatermarkDef>,
    /// Computed columns (`name AS expr`): stored like the others, computed on insert.
    #[serde(default)]
    pub computed: Vec<ComputedDef>,
    /// Set for a plain (not materialized) view: its query, as SQL text. It stores no rows; a
    /// query naming it reads the query in its place, as Postgres' rewriter does.
    #[serde(default)]
    pub plain_view: Option<String>,
}

/// A computed column: its position and its expression over the table's other columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComputedDef {
    pub column: usize,
    pub expr: String,
}

/// A table's event-time column and watermark expression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatermarkDef {
    /// Position of the event-time column (a TIMESTAMP).
    pub column: usize,
    /// The watermark as SQL over the table's columns, e.g. `ts - INTERVAL '5' SECOND`.
    pub expr: String,
}

/// What makes a relation a materialized view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewDef {
    /// The defining query, as SQL text (re-planned when the server starts).
    pub query: String,
    /// The view has no key: its last column counts identical rows (see `stream::COUNT_COLUMN`).
    #[serde(default)]
    pub counted: bool,
    /// `EMIT ON WINDOW CLOSE`: one final row per window once the watermark passes its end,
    /// instead of a row updated as rows arrive.
    #[serde(default)]
    pub emit_on_window_close: bool,
    /// Settings of the creating session that shape the job (parallelism, restart strategy).
    #[serde(default)]
    pub settings: std::collections::BTreeMap<String, String>,
    /// Set for a sink (`CREATE SINK`, or Flink's `INSERT INTO` a sink table): the connector its
    /// rows go to instead of being kept (`blackhole`: nowhere).
    #[serde(default)]
    pub sink: Option<String>,
    /// The job's stateful operators as planned at CREATE, in plan order: each one's state lives
    /// under its id. Empty for views created before ids were stored (their state is addressed by
    /// plan position).
    #[serde(default)]
    pub state_tables: Vec<StateTableDef>,
}

/// One stateful operator of a view's job, as the view stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateTableDef {
    /// Where its state lives (see `rivulet_engine::job`).
    pub id: u32,
    /// What the operator was when the view was created: its description and output types. A
    /// server that plans the view otherwise refuses to run it with this state.
    pub shape: String,
}

impl TableDef {
    /// The Arrow schema of the table's rows.
    pub fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns
                .iter()
                .map(ColumnDef::field)
                .collect::<Vec<_>>(),
        ))
    }
}
