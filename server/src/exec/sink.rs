//! Sinks: continuous jobs whose result rows leave Rivulet instead of being kept.
//!
//! `CREATE SINK name {FROM relation | AS query} WITH (connector = 'blackhole')` (RisingWave) and
//! Flink's `CREATE TABLE t (...) WITH ('connector' = 'blackhole')` followed by `INSERT INTO t
//! SELECT ...` both create one. A sink is stored like a materialized view without rows (its
//! `ViewDef::sink` names the connector), so it has a job, appears in `SHOW JOBS`, recovers from its
//! checkpoints and is removed with `DROP SINK`. `blackhole` discards the rows (benchmarks measure
//! the pipeline, not a store).

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::sql::sqlparser::ast;
use rivulet_planner::catalog::{TableDef, ViewDef};

use super::Outcome;
use crate::catalog::TableEntry;
use crate::error::{SqlError, sqlstate};
use crate::jobs::plan_stream;
use crate::session::Session;

/// The sink connectors Rivulet has.
const SINK_CONNECTORS: &[&str] = &["blackhole"];

/// Whether `table` is a sink table (Flink's `CREATE TABLE ... WITH ('connector' = 'blackhole')`).
pub(super) fn is_sink_table(table: &TableEntry) -> bool {
    table.def.view.is_none()
        && table
            .def
            .options
            .get("connector")
            .is_some_and(|c| SINK_CONNECTORS.contains(&c.to_lowercase().as_str()))
}

impl Session {
    /// CREATE SINK.
    pub(super) async fn create_sink(
        &mut self,
        name: &str,
        if_not_exists: bool,
        query: &str,
        options: &BTreeMap<String, String>,
        emit_on_window_close: bool,
    ) -> Result<Outcome, SqlError> {
        let connector = options
            .get("connector")
            .ok_or_else(|| {
                SqlError::new(
                    sqlstate::INVALID_PARAMETER_VALUE,
                    "a sink needs a connector: WITH (connector = 'blackhole')",
                )
            })?
            .to_lowercase();
        if !SINK_CONNECTORS.contains(&connector.as_str()) {
            return Err(
                SqlError::unsupported(format!("sink connector \"{connector}\""))
                    .with_hint("Supported sink connectors: blackhole. Kafka sinks are planned."),
            );
        }
        if self.catalog().table(&self.database, name).is_some() {
            if if_not_exists {
                return Ok(Outcome::Command("CREATE SINK".into()));
            }
            return Err(SqlError::new(
                sqlstate::DUPLICATE_TABLE,
                format!("relation \"{name}\" already exists"),
            ));
        }
        self.start_sink(name, query, connector, emit_on_window_close)
            .await?;
        Ok(Outcome::Command("CREATE SINK".into()))
    }

    /// Plans `query`, stores sink `name` and starts its job.
    async fn start_sink(
        &mut self,
        name: &str,
        query: &str,
        connector: String,
        emit_on_window_close: bool,
    ) -> Result<(), SqlError> {
        let settings = crate::jobs::job_settings(&self.settings);
        let defaults = self.shared.jobs.defaults();
        crate::jobs::RestartPolicy::from_settings(&settings, defaults.restart)?;
        let plan = plan_stream(self, query, &settings, emit_on_window_close, true).await?;
        let def = TableDef {
            id: 0,
            database: String::new(),
            name: name.to_string(),
            columns: plan.columns,
            primary_key: plan.key,
            append_only: false,
            options: BTreeMap::from([("connector".to_string(), connector.clone())]),
            watermark: None,
            computed: Vec::new(),
            view: Some(ViewDef {
                query: query.to_string(),
                counted: plan.counted,
                emit_on_window_close,
                settings,
                sink: Some(connector),
                state_tables: crate::jobs::state_tables(&plan.graph),
            }),
        };
        drop(plan.graph);
        self.catalog().create_table(&self.database, def, false)?;
        let Some(entry) = self.catalog().table(&self.database, name) else {
            return Err(SqlError::internal("sink vanished after creation"));
        };
        let shared = Arc::clone(&self.shared);
        if let Err(e) = shared.jobs.start(&shared, &entry).await {
            let _ = self.catalog().drop_table(&self.database, name, true);
            return Err(e);
        }
        Ok(())
    }

    /// Flink's `INSERT INTO sink_table SELECT ...`: a continuous job into the sink table's
    /// connector, named `<table>_insert_<n>` (see `SHOW JOBS`, and `DROP SINK` to stop it). Its
    /// window aggregations emit on window close, as Flink's do.
    pub(super) async fn insert_into_sink(
        &mut self,
        table: &TableEntry,
        insert: &ast::Insert,
    ) -> Result<Outcome, SqlError> {
        let Some(source) = &insert.source else {
            return Err(SqlError::unsupported(
                "INSERT into a sink table without a query",
            ));
        };
        if !insert.columns.is_empty() {
            return Err(SqlError::unsupported(
                "a column list in INSERT INTO a sink table",
            ));
        }
        let connector = table
            .def
            .options
            .get("connector")
            .cloned()
            .unwrap_or_default()
            .to_lowercase();
        let query = source.to_string();
        let base = format!("{}_insert", table.def.name);
        let name = (1..)
            .map(|n| format!("{base}_{n}"))
            .find(|n| self.catalog().table(&self.database, n).is_none())
            .unwrap_or(base);
        // A Flink window aggregation emits each window once, when it closes: so does this job
        // when its query has one.
        let settings = crate::jobs::job_settings(&self.settings);
        let (plan, eowc) = match plan_stream(self, &query, &settings, true, true).await {
            Ok(plan) => (plan, true),
            Err(_) => (
                plan_stream(self, &query, &settings, false, true).await?,
                false,
            ),
        };
        let width = plan.columns.len();
        if width != table.def.columns.len() {
            return Err(SqlError::new(
                sqlstate::DATATYPE_MISMATCH,
                format!(
                    "INSERT has {width} columns, but sink table \"{}\" has {}",
                    table.def.name,
                    table.def.columns.len()
                ),
            ));
        }
        drop(plan.graph);
        self.start_sink(&name, &query, connector, eowc).await?;
        Ok(Outcome::Command("INSERT 0 0".into()))
    }

    /// DROP SINK.
    pub(super) fn drop_sink(&mut self, name: &str, if_exists: bool) -> Result<Outcome, SqlError> {
        let Some(entry) = self.catalog().table(&self.database, name) else {
            if if_exists {
                return Ok(Outcome::Command("DROP SINK".into()));
            }
            return Err(SqlError::new(
                sqlstate::UNDEFINED_OBJECT,
                format!("sink \"{name}\" does not exist"),
            ));
        };
        if entry.def.view.as_ref().is_none_or(|v| v.sink.is_none()) {
            return Err(SqlError::new(
                sqlstate::WRONG_OBJECT_TYPE,
                format!("\"{name}\" is not a sink"),
            ));
        }
        self.shared.jobs.stop(entry.def.id);
        self.catalog().drop_table(&self.database, name, if_exists)?;
        Ok(Outcome::Command("DROP SINK".into()))
    }
}
