//! CREATE and DROP MATERIALIZED VIEW, and FLUSH.
//!
//! Creating a view plans its query with DataFusion and the streaming planner first (so a query that
//! cannot be maintained incrementally is refused before anything is stored), then stores the view
//! like a table (columns, key = its GROUP BY columns, the query text) and starts its job, which
//! backfills from the source's change log and then follows it; CREATE returns once the backfill
//! is committed (see `backfill.rs`).

use std::sync::Arc;

use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::sql::sqlparser::ast::{self, CreateView, ObjectName};
use rivulet_planner::catalog::{ColumnDef, TableDef, ViewDef};
use rivulet_planner::ddl::{normalize_ident, object_name};

use super::Outcome;
use super::ddl::RelationKind;
use crate::error::{SqlError, sqlstate};
use crate::jobs::plan_stream;
use crate::session::Session;

/// Flink's settings of the savepoint the next job starts from.
const FLINK_SAVEPOINT_PATH: &str = "execution.savepoint.path";
const FLINK_IGNORE_UNCLAIMED: &str = "execution.savepoint.ignore-unclaimed-state";

/// A view's `WITH (savepoint = 'dir' [, allow_non_restored_state = true])`: the savepoint it
/// starts from, and whether state no operator takes may be left out.
fn savepoint_options(
    options: &ast::CreateTableOptions,
) -> Result<Option<(String, bool)>, SqlError> {
    let ast::CreateTableOptions::With(options) = options else {
        return Ok(None);
    };
    let mut from = None;
    let mut allow = false;
    for option in options {
        let ast::SqlOption::KeyValue { key, value } = option else {
            continue;
        };
        let text = match value {
            ast::Expr::Value(v) => match &v.value {
                ast::Value::SingleQuotedString(s) => s.clone(),
                ast::Value::Boolean(b) => b.to_string(),
                other => other.to_string(),
            },
            other => other.to_string(),
        };
        match key.value.to_lowercase().as_str() {
            "savepoint" => from = Some(text.strip_prefix("file://").unwrap_or(&text).to_string()),
            "allow_non_restored_state" => {
                allow = match text.to_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(SqlError::new(
                            sqlstate::INVALID_PARAMETER_VALUE,
                            format!("allow_non_restored_state must be true or false, not {text}"),
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    match (from, allow) {
        (Some(from), allow) => Ok(Some((from, allow))),
        (None, true) => Err(SqlError::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            "allow_non_restored_state without a savepoint",
        )
        .with_hint("Add savepoint = 'directory' to the view's WITH options.")),
        (None, false) => Ok(None),
    }
}

/// Renames the first of `columns` as a view's column list says (Postgres: the rest keep their
/// names); more names than columns is `too_many`, a syntax error as in Postgres.
pub(super) fn rename_columns(
    columns: &mut [ColumnDef],
    names: &[ast::ViewColumnDef],
    too_many: &str,
) -> Result<(), SqlError> {
    if names.len() > columns.len() {
        return Err(SqlError::new(sqlstate::SYNTAX_ERROR, too_many));
    }
    for (column, name) in columns.iter_mut().zip(names) {
        column.name = normalize_ident(&name.name);
    }
    for (i, column) in columns.iter().enumerate() {
        if columns[..i].iter().any(|c| c.name == column.name) {
            return Err(SqlError::new(
                sqlstate::DUPLICATE_COLUMN,
                format!("column \"{}\" specified more than once", column.name),
            ));
        }
    }
    Ok(())
}

impl Session {
    pub(super) async fn create_view(
        &mut self,
        create: &CreateView,
        emit_on_window_close: bool,
    ) -> Result<Outcome, SqlError> {
        if !create.materialized {
            return self.create_plain_view(create).await;
        }
        if create.or_replace || create.or_alter {
            return Err(SqlError::unsupported("CREATE OR REPLACE MATERIALIZED VIEW"));
        }
        let (schema, name) = object_name(&create.name)?;
        super::ddl::check_schema(schema.as_deref())?;
        if self.catalog().table(&self.database, &name).is_some() {
            if create.if_not_exists {
                return Ok(Outcome::Command("CREATE MATERIALIZED VIEW".into()));
            }
            return Err(SqlError::new(
                sqlstate::DUPLICATE_TABLE,
                format!("relation \"{name}\" already exists"),
            ));
        }
        let query = create.query.to_string();
        // Flink SQL's spelling: `SET 'execution.savepoint.path' = '...'` before the statement.
        let flink_savepoint = self.settings.get(FLINK_SAVEPOINT_PATH).map(|from| {
            let allow = self
                .settings
                .get(FLINK_IGNORE_UNCLAIMED)
                .is_some_and(|v| v.trim_matches('\'').eq_ignore_ascii_case("true"));
            let from = from.trim_matches('\'');
            (
                from.strip_prefix("file://").unwrap_or(from).to_string(),
                allow,
            )
        });
        if let Some((from, allow)) = savepoint_options(&create.options)?.or(flink_savepoint) {
            if !create.columns.is_empty() {
                return Err(SqlError::unsupported(
                    "a column list in a view restored from a savepoint",
                ));
            }
            return self
                .restore_job(
                    &name,
                    false,
                    create.if_not_exists,
                    &from,
                    allow,
                    Some((query, emit_on_window_close)),
                )
                .await;
        }
        // Plan once to validate and to learn the columns and key; the job plans again when it
        // starts, with the settings stored here.
        let settings = crate::jobs::job_settings(&self.settings);
        let defaults = self.shared.jobs.defaults();
        crate::jobs::RestartPolicy::from_settings(&settings, defaults.restart)?;
        let mut plan = plan_view(self, &query, &settings, emit_on_window_close, false).await?;
        let scales = crate::pg::dscale::split_view_columns(&mut plan.columns);
        // The hidden count column of a view without a key is not the user's to name.
        let visible = plan.columns.len() - usize::from(plan.counted);
        rename_columns(
            &mut plan.columns[..visible],
            &create.columns,
            "too many column names were specified",
        )?;
        let def = TableDef {
            comment: None,
            display_scales: false,
            id: 0,
            database: String::new(),
            name: name.clone(),
            columns: plan.columns,
            primary_key: plan.key,
            append_only: false,
            options: Default::default(),
            watermark: None,
            computed: Vec::new(),
            plain_view: None,
            view: Some(ViewDef {
                query,
                counted: plan.counted,
                emit_on_window_close,
                settings,
                sink: None,
                state_tables: crate::jobs::state_tables(&plan.graph),
                scales,
            }),
        };
        drop(plan.graph);
        self.catalog()
            .create_table(&self.database, def, create.if_not_exists)?;
        let Some(entry) = self.catalog().table(&self.database, &name) else {
            return Err(SqlError::internal("view vanished after creation"));
        };
        self.start_job(&entry, "materialized view").await?;
        Ok(Outcome::Command("CREATE MATERIALIZED VIEW".into()))
    }

    /// EXPLAIN CREATE MATERIALIZED VIEW: the streaming operators the view would run, one per row.
    pub(super) async fn explain_view(
        &mut self,
        create: &CreateView,
        emit_on_window_close: bool,
    ) -> Result<Outcome, SqlError> {
        self.explain_job(&create.query.to_string(), emit_on_window_close, false)
            .await
    }

    /// EXPLAIN of the job a view's (or, with `sink`, a sink's) `query` would run.
    pub(super) async fn explain_job(
        &mut self,
        query: &str,
        emit_on_window_close: bool,
        sink: bool,
    ) -> Result<Outcome, SqlError> {
        let settings = crate::jobs::job_settings(&self.settings);
        let plan = plan_view(self, query, &settings, emit_on_window_close, sink).await?;
        let lines = if sink {
            plan.explain_sink()
        } else {
            plan.explain()
        };
        let schema = Arc::new(Schema::new(vec![Field::new(
            "QUERY PLAN",
            DataType::Utf8,
            false,
        )]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(StringArray::from(lines))],
        )
        .map_err(SqlError::from_arrow)?;
        Ok(Outcome::Rows {
            schema,
            batches: vec![batch],
            tag: "EXPLAIN",
        })
    }

    /// DROP MATERIALIZED VIEW.
    pub(super) fn drop_views(
        &mut self,
        if_exists: bool,
        cascade: bool,
        names: &[ObjectName],
    ) -> Result<Outcome, SqlError> {
        for name in names {
            let (schema, view) = object_name(name)?;
            super::ddl::check_schema(schema.as_deref())?;
            let Some(entry) = self.drop_target(&view, RelationKind::MaterializedView)? else {
                if if_exists {
                    continue;
                }
                return Err(SqlError::new(
                    sqlstate::UNDEFINED_TABLE,
                    format!("materialized view \"{view}\" does not exist"),
                ));
            };
            if cascade {
                self.drop_readers(entry.def.id)?;
            }
            self.refuse_if_read(entry.def.id, &view)?;
            self.refuse_if_named(&view, cascade)?;
            self.shared.jobs.stop(entry.def.id);
            self.catalog()
                .drop_table(&self.database, &view, if_exists)?;
        }
        Ok(Outcome::Command("DROP MATERIALIZED VIEW".into()))
    }

    /// DROP ... CASCADE: drops every view that reads relation `id`, their readers first.
    pub(super) fn drop_readers(&mut self, id: u64) -> Result<(), SqlError> {
        for reader in self.shared.jobs.readers_of(id) {
            self.drop_readers(reader)?;
            let name = self
                .catalog()
                .tables(&self.database)
                .into_iter()
                .find(|t| t.def.id == reader)
                .map(|t| t.def.name.clone());
            self.shared.jobs.stop(reader);
            if let Some(name) = name {
                self.catalog().drop_table(&self.database, &name, true)?;
            }
        }
        Ok(())
    }

    /// Fails if a materialized view reads relation `id` (Postgres' `2BP01`).
    pub(super) fn refuse_if_read(&self, id: u64, name: &str) -> Result<(), SqlError> {
        let readers = self.shared.jobs.readers_of(id);
        let Some(reader) = readers.first() else {
            return Ok(());
        };
        let reader_name = self
            .catalog()
            .tables(&self.database)
            .into_iter()
            .find(|t| t.def.id == *reader)
            .map(|t| t.def.name.clone())
            .unwrap_or_else(|| reader.to_string());
        Err(SqlError::new(
            sqlstate::DEPENDENT_OBJECTS_STILL_EXIST,
            format!("cannot drop \"{name}\" because other objects depend on it"),
        )
        .with_detail(format!(
            "materialized view \"{reader_name}\" depends on \"{name}\""
        ))
        .with_hint("Use DROP ... CASCADE to drop the dependent objects too."))
    }

    /// FLUSH: returns once every view of this database reflects every change committed before
    /// it.
    pub(super) async fn flush(&mut self) -> Result<Outcome, SqlError> {
        let views = self.own_views();
        let jobs = &self.shared.jobs;
        self.interrupt.run(jobs.flush_views(&views)).await?;
        Ok(Outcome::Command("FLUSH".into()))
    }

    /// The views and sinks of this session's database (what its FLUSH waits for).
    pub(crate) fn own_views(&self) -> Vec<u64> {
        crate::jobs::Jobs::views_of(self.catalog(), &self.database)
    }
}

/// A new view's (or sink's, `sink`) job plan: a view's with its numerics' display scales where
/// the streaming planner takes them, else as views were planned before them.
async fn plan_view(
    session: &mut Session,
    query: &str,
    settings: &std::collections::BTreeMap<String, String>,
    emit_on_window_close: bool,
    sink: bool,
) -> Result<rivulet_planner::stream::StreamPlan, SqlError> {
    if !sink
        && let Ok(plan) =
            plan_stream(session, query, settings, emit_on_window_close, sink, true).await
    {
        return Ok(plan);
    }
    plan_stream(session, query, settings, emit_on_window_close, sink, false).await
}
