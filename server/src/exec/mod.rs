//! Running one parsed statement in a session: the dispatch from statement kind to handler.
//!
//! Handlers live one file per statement family (`query`, `dml`, `ddl`, `view`, `settings`); each returns an
//! [`Outcome`] that the wire layer turns into Postgres messages. Anything not listed here is refused
//! with `0A000` naming the statement, never silently accepted.

mod alter_job;
mod alter_table;
mod backfill;
mod backup;
mod comment;
mod ddl;
mod defaults;
mod dml;
mod job_savepoint;
pub mod joined;
mod plain_view;
mod query;
mod savepoint;
mod settings;
mod sink;
mod transaction;
mod upsert;
mod values;
mod view;

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ParamValues;
use datafusion::sql::sqlparser::ast::{self, CopySource, CopyTarget, ObjectName};
use rivulet_planner::ddl::{normalize_ident, object_name};
use rivulet_planner::parse::{Parsed, Statement};

use crate::catalog::{DEFAULT_SCHEMA, TableEntry};
use crate::copy::{CopyFormat, CopyIn};
use crate::error::{SqlError, sqlstate};
use crate::session::{Session, TxState};

pub use dml::Returning;
pub use query::{plan_continuous, plan_query};
pub use settings::{BlockSettings, checked as checked_setting};
pub use transaction::Staged;
pub use upsert::OnConflict;

/// What a statement produced.
#[derive(Debug)]
pub enum Outcome {
    /// Rows with their schema, and the command tag (`SELECT`, `SHOW`, `EXPLAIN`).
    Rows {
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        tag: &'static str,
    },
    /// A command tag such as `CREATE TABLE` or `INSERT 0 5` (rows included).
    Command(String),
    /// `BEGIN`: a transaction block started.
    TxStart(&'static str),
    /// `COMMIT`/`ROLLBACK`: the block ended (the tag says which).
    TxEnd(&'static str),
    /// `COPY ... FROM STDIN`: the client sends data next; `columns` fields per row.
    CopyIn { columns: usize },
}

/// INSERT, UPDATE, DELETE and TRUNCATE (COPY flushes when its data is complete).
fn writes_rows(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::Sql { stmt, .. } if matches!(
            stmt.as_ref(),
            ast::Statement::Insert(_)
                | ast::Statement::Update(_)
                | ast::Statement::Delete(_)
                | ast::Statement::Truncate(_)
        )
    )
}

impl Session {
    /// Whether `RW_IMPLICIT_FLUSH` is on.
    pub fn implicit_flush(&self) -> bool {
        self.settings
            .get("rw_implicit_flush")
            .is_some_and(|v| matches!(v.to_lowercase().as_str(), "true" | "on" | "1" | "yes"))
    }

    /// `25P02` for `statement` in a failed block, unless it ends the block (COMMIT, ROLLBACK).
    pub fn refuse_in_failed_block(&self, statement: &Statement) -> Result<(), SqlError> {
        if self.tx == TxState::Aborted && !ends_transaction(statement) {
            return Err(SqlError::new(
                sqlstate::IN_FAILED_SQL_TRANSACTION,
                "current transaction is aborted, commands ignored until end of transaction block",
            ));
        }
        Ok(())
    }

    /// Runs one statement with transaction-block bookkeeping: inside a failed block only `COMMIT`
    /// and `ROLLBACK` run, and an error inside a block marks it failed.
    pub async fn run(
        &mut self,
        parsed: &Parsed,
        params: Option<&ParamValues>,
    ) -> Result<Outcome, SqlError> {
        if self.running {
            self.abandon_statement();
        }
        self.refuse_in_failed_block(&parsed.statement)?;
        let timeout = crate::interrupt::timeout_setting(self.settings.get("statement_timeout"));
        self.interrupt = self.interrupt.with_deadline(timeout);
        self.running = true;
        let started = std::time::Instant::now();
        // A CREATE in a block is undone by its rollback: remember what it adds.
        let before = (self.tx == TxState::Open && creates_relation(&parsed.statement))
            .then(|| self.relation_ids());
        let mut result = self.execute(parsed, params).await;
        if let (Ok(_), Some(before)) = (&result, &before) {
            self.note_created(before);
        }
        crate::metrics::QUERY_DURATION.observe(started.elapsed().as_secs_f64());
        self.running = false;
        self.end_statement();
        if result.is_ok()
            && writes_rows(&parsed.statement)
            && self.implicit_flush()
            && !self.staging()
        {
            // RisingWave's `SET RW_IMPLICIT_FLUSH = true`: DML returns once views reflect it.
            let views = self.own_views();
            let jobs = &self.shared.jobs;
            if let Err(e) = self.interrupt.run(jobs.flush_views(&views)).await {
                result = Err(e);
            }
        }
        if result.is_err() && self.tx == TxState::Open {
            self.tx = TxState::Aborted;
        }
        result
    }

    async fn execute(
        &mut self,
        parsed: &Parsed,
        params: Option<&ParamValues>,
    ) -> Result<Outcome, SqlError> {
        let (stmt, append_only, watermark, eowc, computed) = match &parsed.statement {
            Statement::Flush => return self.flush().await,
            Statement::CreateSink {
                name,
                if_not_exists,
                query,
                options,
                emit_on_window_close,
                explain,
            } => {
                if *explain {
                    crate::sinks::SinkOptions::parse(options)?;
                    return self.explain_job(query, *emit_on_window_close, true).await;
                }
                return self
                    .create_sink(name, *if_not_exists, query, options, *emit_on_window_close)
                    .await;
            }
            Statement::DropSink { name, if_exists } => {
                self.refuse_drop_in_block("DROP SINK", std::slice::from_ref(name))?;
                return self.drop_sink(name, *if_exists);
            }
            Statement::AlterParallelism {
                name,
                sink,
                parallelism,
            } => return self.alter_parallelism(name, *sink, *parallelism).await,
            Statement::Backup { to } => return self.backup(to).await,
            Statement::SaveJob {
                name,
                sink,
                to,
                suspend,
            } => return self.save_job(name, *sink, to, *suspend).await,
            Statement::ResumeJob { name, sink } => return self.resume_job(name, *sink).await,
            Statement::RestoreJob {
                name,
                sink,
                if_not_exists,
                from,
                allow_non_restored_state,
            } => {
                return self
                    .restore_job(
                        name,
                        *sink,
                        *if_not_exists,
                        from,
                        *allow_non_restored_state,
                        None,
                    )
                    .await;
            }
            Statement::ShowSavepoints => return self.show_savepoints(),
            Statement::DropSavepoint { path, if_exists } => {
                return self.drop_savepoint(path, *if_exists);
            }
            Statement::CreateSubscription {
                name,
                if_not_exists,
                relation,
                retention,
            } => {
                return self.create_subscription(
                    name,
                    *if_not_exists,
                    relation,
                    retention.as_deref(),
                );
            }
            Statement::DropSubscription { name, if_exists } => {
                return self.drop_subscription(name, *if_exists);
            }
            Statement::DeclareCursor {
                cursor,
                subscription,
                start,
            } => return self.declare_cursor(cursor, subscription, *start),
            Statement::Fetch {
                cursor,
                count,
                timeout,
            } => return self.fetch(cursor, *count, timeout.as_deref()).await,
            Statement::CloseCursor { cursor } => return self.close_cursor(cursor.as_deref()),
            // Streamed by the protocol handlers (`wire.rs`) before it gets here, when alone.
            Statement::Subscribe { .. } => {
                return Err(SqlError::new(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "SUBSCRIBE with other statements in one query is not supported",
                )
                .with_hint("Send the SUBSCRIBE as a query of its own."));
            }
            Statement::Sql {
                stmt,
                append_only,
                watermark,
                emit_on_window_close,
                computed,
            } => (
                stmt.as_ref(),
                *append_only,
                watermark.as_ref(),
                *emit_on_window_close,
                computed.as_slice(),
            ),
        };
        use ast::Statement as S;
        match stmt {
            S::Explain { statement, .. } if matches!(statement.as_ref(), S::CreateView(_)) => {
                match statement.as_ref() {
                    S::CreateView(create) => self.explain_view(create, eowc).await,
                    _ => Err(SqlError::internal("EXPLAIN of a view changed shape")),
                }
            }
            S::Query(_) | S::Explain { .. } => self.query(stmt, params).await,
            S::Insert(_) => self.insert(stmt, params).await,
            S::Update(_) | S::Delete(_) => self.modify(stmt, params).await,
            S::Truncate(t) => self.truncate(t).await,
            S::Copy {
                source,
                to,
                target,
                options,
                legacy_options,
                ..
            } => self.copy(source, *to, target, options, legacy_options),
            S::CreateTable(create) => self.create_table(create, append_only, watermark, computed),
            S::AlterTable(alter) => self.alter_table(alter),
            S::Comment {
                object_type,
                object_name,
                comment,
                if_exists: false,
            } => self.comment(object_type, object_name, comment.as_deref()),
            S::CreateView(create) => self.create_view(create, eowc).await,
            S::CreateSequence {
                temporary,
                if_not_exists,
                name,
                data_type,
                sequence_options,
                owned_by,
            } => {
                if *temporary || owned_by.is_some() {
                    return Err(SqlError::unsupported(
                        "CREATE TEMPORARY SEQUENCE and OWNED BY".to_string(),
                    ));
                }
                self.create_sequence(name, data_type.as_ref(), sequence_options, *if_not_exists)
            }
            S::CreateDatabase { .. }
            | S::Drop {
                object_type: ast::ObjectType::Database,
                ..
            } if self.tx != TxState::Idle => {
                // As in Postgres, whose databases cannot be created or dropped transactionally.
                Err(SqlError::new(
                    sqlstate::ACTIVE_SQL_TRANSACTION,
                    format!(
                        "{} cannot run inside a transaction block",
                        statement_kind(&parsed.text)
                    ),
                ))
            }
            S::CreateDatabase {
                db_name,
                if_not_exists,
                ..
            } => self.create_database(db_name, *if_not_exists),
            S::Drop {
                object_type,
                if_exists,
                names,
                cascade,
                ..
            } => match object_type {
                ast::ObjectType::Table if self.tx != TxState::Idle => {
                    self.drop_tables_in_block(*if_exists, *cascade, names)
                }
                _ if self.tx != TxState::Idle
                    && matches!(
                        object_type,
                        ast::ObjectType::View | ast::ObjectType::MaterializedView
                    ) =>
                {
                    let relations = names
                        .iter()
                        .map(|n| object_name(n).map(|(_, name)| name))
                        .collect::<Result<Vec<_>, _>>()?;
                    self.refuse_drop_in_block(&format!("DROP {object_type}"), &relations)?;
                    match object_type {
                        ast::ObjectType::MaterializedView => {
                            self.drop_views(*if_exists, *cascade, names)
                        }
                        ast::ObjectType::View => self.drop_plain_views(*if_exists, *cascade, names),
                        _ => self.drop(object_type, *if_exists, *cascade, names),
                    }
                }
                ast::ObjectType::MaterializedView => self.drop_views(*if_exists, *cascade, names),
                ast::ObjectType::View => self.drop_plain_views(*if_exists, *cascade, names),
                _ => self.drop(object_type, *if_exists, *cascade, names),
            },
            S::Set(set) => self.set(set),
            S::Reset(reset) => self.reset(&reset.reset),
            S::ShowVariable { variable } => self.show(variable),
            S::ShowTables { .. } => self.show_tables(),
            S::ShowDatabases { .. } => self.show_databases(),
            S::ShowViews {
                materialized: true, ..
            } => self.show_views(),
            S::Savepoint { name } => self.savepoint(name),
            S::ReleaseSavepoint { name } => self.release_savepoint(name),
            S::Rollback {
                savepoint: Some(name),
                ..
            } => self.rollback_to_savepoint(name),
            S::StartTransaction { .. } => Ok(self.begin()),
            S::Commit { .. } => self.commit().await,
            S::Rollback { .. } => self.rollback(),
            S::Discard { .. } => Ok(Outcome::Command("DISCARD ALL".into())),
            S::Deallocate { .. } => Ok(Outcome::Command("DEALLOCATE".into())),
            _ => Err(SqlError::unsupported(statement_kind(&parsed.text))),
        }
    }

    /// The table a statement names, in this session's database.
    pub fn resolve_table(&self, name: &ObjectName) -> Result<Arc<TableEntry>, SqlError> {
        let (schema, table) = object_name(name)?;
        if let Some(schema) = &schema
            && schema != DEFAULT_SCHEMA
        {
            return Err(SqlError::new(
                sqlstate::UNDEFINED_TABLE,
                format!("relation \"{schema}.{table}\" does not exist"),
            ));
        }
        self.catalog().table(&self.database, &table).ok_or_else(|| {
            SqlError::new(
                sqlstate::UNDEFINED_TABLE,
                format!("relation \"{table}\" does not exist"),
            )
        })
    }

    fn copy(
        &mut self,
        source: &CopySource,
        to: bool,
        target: &CopyTarget,
        options: &[ast::CopyOption],
        legacy: &[ast::CopyLegacyOption],
    ) -> Result<Outcome, SqlError> {
        if to || !matches!(target, CopyTarget::Stdin) {
            return Err(SqlError::unsupported("COPY other than COPY ... FROM STDIN"));
        }
        let CopySource::Table {
            table_name,
            columns,
        } = source
        else {
            return Err(SqlError::unsupported("COPY (query) FROM"));
        };
        let table = self.resolve_table(table_name)?;
        dml::refuse_view(&table)?;
        if !table.def.options.is_empty() && table.def.options.contains_key("connector") {
            return Err(SqlError::unsupported("COPY into a table with a connector"));
        }
        // Without a column list, every column but the computed ones (the store computes them).
        let positions = if columns.is_empty() {
            (0..table.def.columns.len())
                .filter(|i| !table.def.computed.iter().any(|c| c.column == *i))
                .collect()
        } else {
            columns
                .iter()
                .map(|c| {
                    let name = normalize_ident(c);
                    table
                        .def
                        .columns
                        .iter()
                        .position(|col| col.name == name)
                        .ok_or_else(|| {
                            SqlError::new(
                                sqlstate::UNDEFINED_COLUMN,
                                format!(
                                    "column \"{name}\" of relation \"{}\" does not exist",
                                    table.def.name
                                ),
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        let format = CopyFormat::from_options(options, legacy)?;
        // The columns the data leaves out take their defaults, as in an INSERT.
        let state = self.context()?.state();
        let empty = datafusion::common::DFSchema::empty();
        let mut filled = Vec::new();
        for (i, column) in table.def.columns.iter().enumerate() {
            if positions.contains(&i) || table.def.computed.iter().any(|c| c.column == i) {
                continue;
            }
            if let Some(text) = defaults::default_text(column) {
                let expr = state.create_logical_expr(&text, &empty)?;
                filled.push((i, state.create_physical_expr(expr, &empty)?));
            }
        }
        let copy = CopyIn::new(table, positions, format)
            .with_defaults(filled)
            .in_zone(self.time_zone());
        let outcome = Outcome::CopyIn {
            columns: copy.width(),
        };
        self.copy = Some(copy);
        Ok(outcome)
    }

    /// Stores the rows of the finished COPY; returns the row count.
    pub async fn finish_copy(&mut self) -> Result<u64, SqlError> {
        let copy = self
            .copy
            .take()
            .ok_or_else(|| SqlError::new(sqlstate::PROTOCOL_VIOLATION, "no COPY in progress"))?;
        let result = match copy.finish() {
            Ok((table, batches)) => self.insert_rows(&table.store, batches).await,
            Err(e) => Err(e),
        };
        if result.is_err() && self.tx == TxState::Open {
            self.tx = TxState::Aborted;
        }
        result
    }
}

/// Runs blocking storage work (RocksDB reads and synced writes) off the async workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SqlError> + Send + 'static,
) -> Result<T, SqlError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SqlError::internal(format!("storage task failed: {e}")))?
}

fn ends_transaction(stmt: &Statement) -> bool {
    matches!(
        stmt,
        Statement::Sql { stmt, .. } if matches!(stmt.as_ref(), ast::Statement::Commit { .. } | ast::Statement::Rollback { .. })
    )
}

/// The leading keywords of a statement, for "... is not supported" messages.
fn statement_kind(text: &str) -> String {
    let words: Vec<String> = text
        .split_whitespace()
        .take(2)
        .map(|w| w.to_ascii_uppercase())
        .collect();
    words.join(" ")
}

/// Whether `statement` creates a relation (a table, source, view or sink).
fn creates_relation(statement: &Statement) -> bool {
    match statement {
        Statement::CreateSink { explain, .. } => !explain,
        Statement::Sql { stmt, .. } => matches!(
            stmt.as_ref(),
            ast::Statement::CreateTable(_) | ast::Statement::CreateView(_)
        ),
        _ => false,
    }
}
