//! Sinks: continuous jobs whose result rows leave Rivulet instead of being kept.
//!
//! `CREATE SINK name {FROM relation | AS query} WITH (connector = 'blackhole')` (RisingWave) and
//! Flink's `CREATE TABLE t (...) WITH ('connector' = 'blackhole')` followed by `INSERT INTO t
//! SELECT ...` both create one. A sink is stored like a materialized view without rows (its
//! `ViewDef::sink` names the connector), so it has a job, appears in `SHOW JOBS`, recovers from its
//! checkpoints and is removed with `DROP SINK`. `blackhole` discards the rows (benchmarks measure
//! the pipeline, not a store).

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::ast;
use rivulet_planner::catalog::{TableDef, ViewDef};

use super::Outcome;
use crate::catalog::TableEntry;
use crate::error::{SqlError, sqlstate};
use crate::jobs::plan_stream;
use crate::session::Session;

/// Whether `table` is a sink table (Flink's `CREATE TABLE ... WITH ('connector' = 'blackhole')`,
/// or `'filesystem'`, `'kafka'`: `INSERT INTO` it with a query starts a sink job).
pub(super) fn is_sink_table(table: &TableEntry) -> bool {
    table.def.view.is_none()
        && table
            .def
            .options
            .get("connector")
            .is_some_and(|c| crate::sinks::CONNECTORS.contains(&c.to_lowercase().as_str()))
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
        let parsed = crate::sinks::SinkOptions::parse(options)?;
        if self.catalog().table(&self.database, name).is_some() {
            if if_not_exists {
                return Ok(Outcome::Command("CREATE SINK".into()));
            }
            return Err(SqlError::new(
                sqlstate::DUPLICATE_TABLE,
                format!("relation \"{name}\" already exists"),
            ));
        }
        self.start_sink(
            name,
            query,
            options.clone(),
            &parsed,
            None,
            emit_on_window_close,
        )
        .await?;
        Ok(Outcome::Command("CREATE SINK".into()))
    }

    /// Plans `query`, stores sink `name` with its `options` and starts its job. `names`: the
    /// column names its records carry, when not the query's (a Flink sink table's).
    async fn start_sink(
        &mut self,
        name: &str,
        query: &str,
        mut options: BTreeMap<String, String>,
        parsed: &crate::sinks::SinkOptions,
        names: Option<Vec<String>>,
        emit_on_window_close: bool,
    ) -> Result<(), SqlError> {
        let settings = crate::jobs::job_settings(&self.settings);
        let defaults = self.shared.jobs.defaults();
        crate::jobs::RestartPolicy::from_settings(&settings, defaults.restart)?;
        let plan = plan_stream(self, query, &settings, emit_on_window_close, true, false).await?;
        let mut columns = plan.columns;
        for (c, n) in columns.iter_mut().zip(names.into_iter().flatten()) {
            c.name = n;
        }
        let column_names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
        parsed.check(name, &column_names, plan.append_only, &mut options)?;
        let connector = options
            .get("connector")
            .map(|c| c.to_lowercase())
            .unwrap_or_default();
        let def = TableDef {
            comment: None,
            display_scales: false,
            id: 0,
            database: String::new(),
            name: name.to_string(),
            columns,
            primary_key: plan.key,
            append_only: false,
            options,
            watermark: None,
            computed: Vec::new(),
            plain_view: None,
            view: Some(ViewDef {
                query: query.to_string(),
                counted: plan.counted,
                emit_on_window_close,
                settings,
                sink: Some(connector),
                state_tables: crate::jobs::state_tables(&plan.graph),
                scales: Vec::new(),
            }),
        };
        drop(plan.graph);
        self.catalog().create_table(&self.database, def, false)?;
        let Some(entry) = self.catalog().table(&self.database, name) else {
            return Err(SqlError::internal("sink vanished after creation"));
        };
        self.start_job(&entry, "sink").await
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
        let mut options = table.def.options.clone();
        // Flink: an upsert-kafka table's PRIMARY KEY is its records' key.
        if !table.def.primary_key.is_empty()
            && !options.contains_key("primary_key")
            && !options.contains_key("key.fields")
        {
            let key: Vec<&str> = table
                .def
                .primary_key
                .iter()
                .filter_map(|&i| table.def.columns.get(i).map(|c| c.name.as_str()))
                .collect();
            options.insert("primary_key".into(), key.join(","));
        }
        let parsed = crate::sinks::SinkOptions::parse(&options)?;
        let query = source.to_string();
        let base = format!("{}_insert", table.def.name);
        let name = (1..)
            .map(|n| format!("{base}_{n}"))
            .find(|n| self.catalog().table(&self.database, n).is_none())
            .unwrap_or(base);
        // A Flink window aggregation emits each window once, when it closes: so does this job
        // when its query has one (and only then: other rows go out as they come, as in Flink).
        let settings = crate::jobs::job_settings(&self.settings);
        let (plan, eowc) = match plan_stream(self, &query, &settings, true, true, false).await {
            Ok(plan) if !plan.holds_rows => (plan, true),
            _ => (
                plan_stream(self, &query, &settings, false, true, false).await?,
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
        let names = table.def.columns.iter().map(|c| c.name.clone()).collect();
        self.start_sink(&name, &query, options, &parsed, Some(names), eowc)
            .await?;
        Ok(Outcome::Command("INSERT 0 0".into()))
    }

    /// DROP SINK.
    pub(super) fn drop_sink(&mut self, name: &str, if_exists: bool) -> Result<Outcome, SqlError> {
        let Some(entry) = self.drop_target(name, super::ddl::RelationKind::Sink)? else {
            if if_exists {
                return Ok(Outcome::Command("DROP SINK".into()));
            }
            return Err(SqlError::new(
                sqlstate::UNDEFINED_OBJECT,
                format!("sink \"{name}\" does not exist"),
            ));
        };
        self.shared.jobs.stop(entry.def.id);
        self.catalog().drop_table(&self.database, name, if_exists)?;
        Ok(Outcome::Command("DROP SINK".into()))
    }
}
