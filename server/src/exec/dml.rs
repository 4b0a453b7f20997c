//! INSERT, UPDATE, DELETE and TRUNCATE on stored tables.
//!
//! DataFusion plans each statement (binding names, coercing types, filling omitted columns with
//! NULL); Rivulet then runs the parts itself against the table store:
//! - INSERT runs the plan's input query and stores its rows as one atomic, durable change.
//! - UPDATE and DELETE take the plan's predicate and new-value expressions, turn them into physical
//!   expressions over the table's schema, and evaluate them on the current rows chunk by chunk
//!   inside [`TableStore::modify`](rivulet_engine::table::TableStore::modify), which commits
//!   all changes as one log entry. Subqueries and `UPDATE ... FROM` are refused (`0A000`).

use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray};
use datafusion::arrow::compute::{cast, filter_record_batch, prep_null_mask_filter};
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, DFSchemaRef, ParamValues, TableReference};
use datafusion::logical_expr::{DmlStatement, Expr, LogicalPlan, Values, WriteOp};
use datafusion::physical_plan::PhysicalExpr;
use datafusion::sql::sqlparser::ast;
use rivulet_engine::table::{Modification, TableStore};

use super::query::{bind, plan_query};
use super::{Outcome, blocking};
use crate::catalog::TableEntry;
use crate::error::{SqlError, sqlstate};
use crate::session::Session;

/// Makes every column of an INSERT's input nullable.
///
/// DataFusion types a `VALUES` list after the target table, NOT NULL included, so a NULL there would
/// fail inside Arrow with a message naming `column1`. The table store checks NOT NULL itself and
/// reports it as Postgres does (23502, naming the column and the table).
fn accept_nulls(plan: LogicalPlan) -> Result<LogicalPlan, SqlError> {
    let relaxed = plan.transform_up(|node| {
        let node = match node {
            LogicalPlan::Values(v) => {
                let fields = v.schema.iter().map(|(qualifier, field)| {
                    (
                        qualifier.cloned(),
                        Arc::new(field.as_ref().clone().with_nullable(true)),
                    )
                });
                let schema =
                    DFSchema::new_with_metadata(fields.collect(), v.schema.metadata().clone())?;
                LogicalPlan::Values(Values {
                    schema: Arc::new(schema),
                    values: v.values,
                })
            }
            other => other.recompute_schema()?,
        };
        Ok(Transformed::yes(node))
    })?;
    Ok(relaxed.data)
}

/// An INSERT into a table with computed columns, with its column list spelled out: without a
/// list it names the other columns (computed ones are filled by the table store); a list that
/// names a computed column is refused, as Postgres refuses generated columns. `None` when the
/// statement needs no change.
fn without_computed(
    stmt: &ast::Statement,
    table: &TableEntry,
) -> Result<Option<ast::Statement>, SqlError> {
    let (ast::Statement::Insert(insert), false) = (stmt, table.def.computed.is_empty()) else {
        return Ok(None);
    };
    let computed: Vec<&str> = table
        .def
        .computed
        .iter()
        .filter_map(|c| table.def.columns.get(c.column).map(|col| col.name.as_str()))
        .collect();
    for c in &insert.columns {
        let name = c.to_string().trim_matches('"').to_lowercase();
        if let Some(found) = computed.iter().find(|n| n.to_lowercase() == name) {
            return Err(SqlError::new(
                sqlstate::GENERATED_ALWAYS,
                format!("cannot insert a non-DEFAULT value into column \"{found}\""),
            )
            .with_detail(format!("Column \"{found}\" is a computed column.")));
        }
    }
    if !insert.columns.is_empty() {
        return Ok(None);
    }
    let mut insert = insert.clone();
    insert.columns = table
        .def
        .columns
        .iter()
        .filter(|c| !computed.contains(&c.name.as_str()))
        .map(|c| ast::ObjectName::from(vec![ast::Ident::with_quote('"', &c.name)]))
        .collect();
    Ok(Some(ast::Statement::Insert(insert)))
}

/// An INSERT without a column list whose VALUES rows (or select list) are shorter than the
/// table's (stored) columns, naming the columns they fill: the first ones, as in Postgres, the
/// others being NULL (DataFusion refuses the short rows). `None` when the statement needs no
/// change.
fn leading_columns(stmt: &ast::Statement, table: &TableEntry) -> Option<ast::Statement> {
    let ast::Statement::Insert(insert) = stmt else {
        return None;
    };
    let width = source_width(insert.source.as_ref()?.body.as_ref())?;
    let computed: Vec<usize> = table.def.computed.iter().map(|c| c.column).collect();
    let stored: Vec<&str> = table
        .def
        .columns
        .iter()
        .enumerate()
        .filter(|(i, _)| !computed.contains(i))
        .map(|(_, c)| c.name.as_str())
        .collect();
    let short = insert.columns.is_empty() && width < stored.len();
    if !short {
        return None;
    }
    let mut insert = insert.clone();
    insert.columns = stored[..width]
        .iter()
        .map(|c| ast::ObjectName::from(vec![ast::Ident::with_quote('"', *c)]))
        .collect();
    Some(ast::Statement::Insert(insert))
}

/// Whether a select list has `*` or `t.*`, whose width the text does not tell.
fn has_wildcard(select: &ast::Select) -> bool {
    select.projection.iter().any(|item| {
        matches!(
            item,
            ast::SelectItem::Wildcard(_) | ast::SelectItem::QualifiedWildcard(..)
        )
    })
}

/// How many columns a query's rows have, where the text tells: VALUES rows all of one length, a
/// select list without wildcards, a set operation's first input.
fn source_width(body: &ast::SetExpr) -> Option<usize> {
    match body {
        ast::SetExpr::Values(values) => {
            let width = values.rows.first()?.len();
            values
                .rows
                .iter()
                .all(|row| row.len() == width)
                .then_some(width)
        }
        ast::SetExpr::Select(select) if !has_wildcard(select) => Some(select.projection.len()),
        ast::SetExpr::SetOperation { left, .. } => source_width(left),
        ast::SetExpr::Query(q) => source_width(&q.body),
        _ => None,
    }
}

/// Refuses an INSERT whose VALUES rows or SELECT list do not match its target columns, in
/// Postgres' words (42601) and at its position: rows of different lengths (at the first such
/// row), more values than target columns (the list, or the table's stored columns without one;
/// at the first value too many), or fewer values than a column list names (at the first column
/// too many). DataFusion would refuse them with one message of its own. A SELECT whose list has
/// a wildcard, or a set operation, is left to DataFusion.
fn check_arity(stmt: &ast::Statement, table: &TableEntry) -> Result<(), SqlError> {
    use ast::Spanned;
    use datafusion::sql::sqlparser::tokenizer::Span;
    let ast::Statement::Insert(insert) = stmt else {
        return Ok(());
    };
    let syntax = |m: &str, at: Span| SqlError::new(sqlstate::SYNTAX_ERROR, m).at(at.start);
    // The expressions of a row (the first, once all are known to be as long).
    let row: Vec<Span> = match insert.source.as_ref().map(|q| q.body.as_ref()) {
        Some(ast::SetExpr::Values(values)) => {
            let Some(width) = values.rows.first().map(|row| row.len()) else {
                return Ok(());
            };
            if let Some(other) = values.rows.iter().find(|row| row.len() != width) {
                let at = other.first().map_or(Span::empty(), Spanned::span);
                return Err(syntax("VALUES lists must all be the same length", at));
            }
            values.rows[0].iter().map(Spanned::span).collect()
        }
        Some(ast::SetExpr::Select(select)) if !has_wildcard(select) => {
            select.projection.iter().map(Spanned::span).collect()
        }
        _ => return Ok(()),
    };
    let targets = if insert.columns.is_empty() {
        table
            .def
            .columns
            .len()
            .saturating_sub(table.def.computed.len())
    } else {
        insert.columns.len()
    };
    if let Some(extra) = row.get(targets) {
        return Err(syntax(
            "INSERT has more expressions than target columns",
            *extra,
        ));
    }
    if let Some(extra) = insert.columns.get(row.len()) {
        return Err(syntax(
            "INSERT has more target columns than expressions",
            extra.span(),
        ));
    }
    Ok(())
}

impl Session {
    /// `stmt` as DataFusion must plan it: an INSERT names the columns it fills where its VALUES
    /// rows are short ([`leading_columns`]) or the table has computed columns
    /// ([`without_computed`]); VALUES rows that do not fit its columns are refused
    /// ([`check_arity`]).
    pub fn spell_out_columns<'a>(
        &self,
        stmt: &'a ast::Statement,
    ) -> Result<std::borrow::Cow<'a, ast::Statement>, SqlError> {
        use std::borrow::Cow;
        let stmt = match without_alias(stmt) {
            Some(unaliased) => Cow::Owned(unaliased),
            None => Cow::Borrowed(stmt),
        };
        if let ast::Statement::Update(update) = stmt.as_ref()
            && let ast::TableFactor::Table { name, .. } = &update.table.relation
            && let Ok(table) = self.resolve_table(name)
        {
            return Ok(match super::defaults::update(update, &table.def)? {
                Some(update) => Cow::Owned(ast::Statement::Update(update)),
                None => stmt,
            });
        }
        let Cow::Borrowed(stmt) = stmt else {
            return Ok(stmt);
        };
        let ast::Statement::Insert(ast::Insert {
            table: ast::TableObject::TableName(name),
            ..
        }) = stmt
        else {
            return Ok(Cow::Borrowed(stmt));
        };
        let Ok(table) = self.resolve_table(name) else {
            return Ok(Cow::Borrowed(stmt));
        };
        check_arity(stmt, &table)?;
        let stmt = match leading_columns(stmt, &table) {
            Some(rewritten) => Cow::Owned(rewritten),
            None => Cow::Borrowed(stmt),
        };
        let stmt = match without_computed(stmt.as_ref(), &table)? {
            Some(rewritten) => Cow::Owned(rewritten),
            None => stmt,
        };
        let ast::Statement::Insert(insert) = stmt.as_ref() else {
            return Ok(stmt);
        };
        Ok(match super::defaults::insert(insert, &table.def)? {
            Some(insert) => Cow::Owned(ast::Statement::Insert(insert)),
            None => stmt,
        })
    }

    pub(super) async fn insert(
        &mut self,
        stmt: &ast::Statement,
        params: Option<&ParamValues>,
    ) -> Result<Outcome, SqlError> {
        if let ast::Statement::Insert(
            insert @ ast::Insert {
                table: ast::TableObject::TableName(name),
                ..
            },
        ) = stmt
            && let Ok(table) = self.resolve_table(name)
            && super::sink::is_sink_table(&table)
        {
            return self.insert_into_sink(&table, insert).await;
        }
        // ON CONFLICT: the rows planned as a plain INSERT's, then resolved against the stored.
        let (stmt, on_conflict) = super::upsert::OnConflict::split(stmt)?;
        // RETURNING: planned as a query over the rows written, after they are.
        let (stmt, returning) = Returning::split(stmt.as_ref());
        let stmt = self.spell_out_columns(stmt.as_ref())?;
        let stmt = stmt.as_ref();
        if let (None, None, None, ast::Statement::Insert(insert)) =
            (params, &returning, &on_conflict, stmt)
            && let Some(name) = super::values::values_target(insert)
            && let Ok(table) = self.resolve_table(name)
        {
            refuse_connector_table(&table, "INSERT into")?;
            let zone = self.time_zone();
            if let Some(rows) = super::values::literal_rows(insert, &table, zone.as_deref())? {
                let n = self.insert_rows(&table.store, vec![rows]).await?;
                return Ok(Outcome::Command(format!("INSERT 0 {n}")));
            }
        }
        let ctx = self.context()?.clone();
        let plan = bind(plan_query(&ctx, stmt).await?, params)?;
        let LogicalPlan::Dml(dml) = plan else {
            return Err(SqlError::internal("INSERT did not plan as DML"));
        };
        let table = self.table_of(&dml.table_name)?;
        refuse_connector_table(&table, "INSERT into")?;
        check_assignments(&dml, &table, stmt)?;
        let input = accept_nulls(Arc::unwrap_or_clone(dml.input))?;
        // The written numbers' display scales, stored with them.
        let input = crate::pg::dscale::for_insert(input, &table.def.scaled_columns());
        let df = ctx.execute_logical_plan(input).await?;
        let batches = self
            .interrupt
            .run(async { Ok(df.collect().await?) })
            .await?;
        if let Some(on_conflict) = on_conflict {
            let resolver = on_conflict.resolver(&ctx, &table, params)?;
            if resolver.keyed() {
                let (n, written) = self.insert_resolving(&table, batches, resolver).await?;
                let Some(returning) = returning else {
                    return Ok(Outcome::Command(format!("INSERT 0 {n}")));
                };
                let (schema, rows) = self.returning(&ctx, &returning, &table, written).await?;
                return Ok(Outcome::Rows {
                    schema,
                    batches: rows,
                    tag: "INSERT 0",
                });
            }
        }
        let Some(returning) = returning else {
            let n = self.insert_rows(&table.store, batches).await?;
            return Ok(Outcome::Command(format!("INSERT 0 {n}")));
        };
        // The rows as stored (a `uuid` or `jsonb` in its form, `char(n)` without its blanks).
        let stored = match rivulet_planner::lengths::check(&table.def) {
            Some(check) => batches
                .iter()
                .map(|b| check.check(b.clone()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(SqlError::from)?,
            None => batches.clone(),
        };
        self.insert_rows(&table.store, batches).await?;
        let (schema, rows) = self.returning(&ctx, &returning, &table, stored).await?;
        Ok(Outcome::Rows {
            schema,
            batches: rows,
            tag: "INSERT 0",
        })
    }

    /// A statement's `returning` list over `written`, the rows it wrote (or deleted):
    /// [`Returning::plan`] with the table's scan reading them.
    pub(super) async fn returning(
        &mut self,
        ctx: &datafusion::prelude::SessionContext,
        returning: &Returning,
        table: &TableEntry,
        written: Vec<RecordBatch>,
    ) -> Result<(datafusion::arrow::datatypes::SchemaRef, Vec<RecordBatch>), SqlError> {
        let plan = returning.plan(ctx).await?;
        let schema = Arc::clone(table.store.schema());
        let written = written
            .into_iter()
            .map(|b| {
                // Rows written without the table's hidden display scales have NULL ones.
                let mut columns = b.columns().to_vec();
                for f in schema.fields().iter().skip(columns.len()) {
                    columns.push(datafusion::arrow::array::new_null_array(
                        f.data_type(),
                        b.num_rows(),
                    ));
                }
                RecordBatch::try_new(Arc::clone(&schema), columns)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(SqlError::from_arrow)?;
        let source = datafusion::datasource::provider_as_source(Arc::new(
            datafusion::datasource::MemTable::try_new(schema, vec![written])?,
        ));
        let plan = plan
            .transform_up(|node| match node {
                LogicalPlan::TableScan(scan) => {
                    let scan = datafusion::logical_expr::logical_plan::TableScanBuilder::new(
                        scan.table_name,
                        Arc::clone(&source),
                    )
                    .with_projection(scan.projection)
                    .with_filters(scan.filters)
                    .with_fetch(scan.fetch)
                    .build()?;
                    Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
                }
                node => Ok(Transformed::no(node)),
            })?
            .data;
        // The written numbers' display scales, which the rows carry.
        let plan = crate::pg::dscale::attach(plan);
        let df = ctx.execute_logical_plan(plan).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let rows = self
            .interrupt
            .run(async { Ok(df.collect().await?) })
            .await?;
        Ok((schema, rows))
    }

    /// Inserts `batches` into `store`: committed at once, or staged inside a transaction block.
    pub(super) async fn insert_rows(
        &mut self,
        store: &Arc<TableStore>,
        batches: Vec<RecordBatch>,
    ) -> Result<u64, SqlError> {
        if self.staging() {
            return self
                .stage(store, move |t, w| Ok(t.stage_insert(w, &batches)?))
                .await;
        }
        let store = Arc::clone(store);
        blocking(move || store.insert(&batches).map_err(SqlError::from)).await
    }

    /// Inserts `batches` into `table` resolving their conflicts on its primary key with
    /// `resolver` (`ON CONFLICT`): committed at once, or staged inside a transaction block.
    /// Returns the rows stored, and the rows themselves, as stored.
    async fn insert_resolving(
        &mut self,
        table: &TableEntry,
        batches: Vec<RecordBatch>,
        resolver: super::upsert::Resolver,
    ) -> Result<(u64, Vec<RecordBatch>), SqlError> {
        let schema = match batches.first() {
            Some(b) => b.schema(),
            None => return Ok((0, Vec::new())),
        };
        let rows = datafusion::arrow::compute::concat_batches(&schema, &batches)
            .map_err(SqlError::from_arrow)?;
        let written: Arc<parking_lot::Mutex<Vec<RecordBatch>>> = Arc::default();
        let capture = Arc::clone(&written);
        let resolve = move |rows: &RecordBatch, conflicts| -> Result<RecordBatch, SqlError> {
            let out = resolver.resolve(rows, conflicts)?;
            capture.lock().push(out.clone());
            Ok(out)
        };
        let n = if self.staging() {
            self.stage(&table.store, move |t, w| {
                t.stage_insert_resolving(w, &rows, resolve)
            })
            .await?
        } else {
            let store = Arc::clone(&table.store);
            blocking(move || store.insert_resolving(&rows, resolve)).await?
        };
        // The rows as stored (a `uuid` in its form).
        let written = std::mem::take(&mut *written.lock());
        let written = match rivulet_planner::lengths::check(&table.def) {
            Some(check) => written
                .into_iter()
                .map(|b| check.check(b))
                .collect::<Result<Vec<_>, _>>()
                .map_err(SqlError::from)?,
            None => written,
        };
        Ok((n, written))
    }

    /// Runs one UPDATE, DELETE or TRUNCATE's `decide` over `store`'s rows: committed at once, or
    /// staged inside a transaction block.
    pub(super) async fn modify_rows(
        &mut self,
        store: &Arc<TableStore>,
        decide: impl FnMut(&RecordBatch) -> Result<Modification, SqlError> + Send + 'static,
    ) -> Result<u64, SqlError> {
        if self.staging() {
            return self
                .stage(store, move |t, w| t.stage_modify(w, decide))
                .await;
        }
        let store = Arc::clone(store);
        blocking(move || store.modify(decide)).await
    }

    pub(super) async fn modify(
        &mut self,
        stmt: &ast::Statement,
        params: Option<&ParamValues>,
    ) -> Result<Outcome, SqlError> {
        // RETURNING: planned as a query over the rows changed, after they are.
        let (stmt, returning) = Returning::split(stmt);
        let stmt = self.spell_out_columns(stmt.as_ref())?;
        let stmt = stmt.as_ref();
        if super::joined::reads_others(stmt) {
            return self.modify_by_query(stmt, params, returning).await;
        }
        let ctx = self.context()?.clone();
        let plan = bind(plan_query(&ctx, stmt).await?, params)?;
        let LogicalPlan::Dml(dml) = plan else {
            return Err(SqlError::internal("UPDATE/DELETE did not plan as DML"));
        };
        let table = self.table_of(&dml.table_name)?;
        check_assignments(&dml, &table, stmt)?;
        let verb = if dml.op == WriteOp::Update {
            "UPDATE"
        } else {
            "DELETE"
        };
        check_modifiable(&table, verb)?;
        let (assignments, below) = match (&dml.op, dml.input.as_ref()) {
            (WriteOp::Update, LogicalPlan::Projection(p)) => {
                (Some(p.expr.clone()), p.input.as_ref())
            }
            (WriteOp::Delete, input) => (None, input),
            _ => return Err(SqlError::unsupported(format!("this form of {verb}"))),
        };
        let (predicate, scan) = match below {
            LogicalPlan::Filter(f) => (Some(f.predicate.clone()), f.input.as_ref()),
            other => (None, other),
        };
        let LogicalPlan::TableScan(scan) = scan else {
            return Err(SqlError::unsupported(format!("{verb} with FROM or USING")));
        };
        let schema: DFSchemaRef = Arc::clone(&scan.projected_schema);
        let state = ctx.state();
        let physical = |e: Expr| -> Result<Arc<dyn PhysicalExpr>, SqlError> {
            if has_subquery(&e) {
                return Err(SqlError::unsupported(format!("subqueries in {verb}")));
            }
            Ok(rivulet_planner::overflow::physical_expr(
                &state, e, &schema,
            )?)
        };
        // The new values' display scales (for the table's unconstrained numerics), over the
        // stored rows, which have the old ones.
        let scaled = table.def.scaled_columns();
        let scales = match &assignments {
            Some(a) if !scaled.is_empty() => {
                let (full, scales) = crate::pg::dscale::for_update(a, &schema, &scaled)?;
                let full = Arc::new(full);
                let physical = |e: Expr| {
                    rivulet_planner::overflow::physical_expr(&state, e, &full)
                        .map_err(SqlError::from)
                };
                scales
                    .into_iter()
                    .map(|s| s.map(physical).transpose())
                    .collect::<Result<Vec<_>, _>>()?
            }
            _ => Vec::new(),
        };
        let predicate = predicate.map(physical).transpose()?;
        let assignments = assignments
            .map(|a| a.into_iter().map(physical).collect::<Result<Vec<_>, _>>())
            .transpose()?;
        let table_schema = Arc::clone(table.store.schema());
        // New values are checked against NOT NULL by the store (23502), so the batch itself must
        // accept NULLs.
        let nullable_schema = Arc::new(Schema::new(
            table_schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        let changed = returning.as_ref().map(|_| Changed::new(&table.def));
        let capture = changed.clone();
        let n = self
            .modify_rows(&table.store, move |rows: &RecordBatch| {
                let selected = match &predicate {
                    Some(p) => where_mask(p, rows)?,
                    None => BooleanArray::from(vec![true; rows.num_rows()]),
                };
                let replacement = match &assignments {
                    None => None,
                    Some(exprs) => {
                        let chosen =
                            filter_record_batch(rows, &selected).map_err(SqlError::from_arrow)?;
                        let mut columns = Vec::with_capacity(exprs.len());
                        for (expr, field) in exprs.iter().zip(table_schema.fields()) {
                            let value = expr.evaluate(&chosen)?.into_array(chosen.num_rows())?;
                            let value = if value.data_type() == field.data_type() {
                                value
                            } else {
                                cast(&value, field.data_type()).map_err(SqlError::from_arrow)?
                            };
                            columns.push(value);
                        }
                        for (scale, field) in scales
                            .iter()
                            .zip(table_schema.fields().iter().skip(columns.len()))
                        {
                            let value = match scale {
                                Some(s) => s.evaluate(&chosen)?.into_array(chosen.num_rows())?,
                                None => datafusion::arrow::array::new_null_array(
                                    field.data_type(),
                                    chosen.num_rows(),
                                ),
                            };
                            columns.push(
                                cast(&value, field.data_type()).map_err(SqlError::from_arrow)?,
                            );
                        }
                        Some(
                            RecordBatch::try_new_with_options(
                                Arc::clone(&nullable_schema),
                                columns,
                                &datafusion::arrow::record_batch::RecordBatchOptions::new()
                                    .with_row_count(Some(chosen.num_rows())),
                            )
                            .map_err(SqlError::from_arrow)?,
                        )
                    }
                };
                if let Some(changed) = &capture {
                    changed.keep(rows, &selected, replacement.as_ref())?;
                }
                Ok::<_, SqlError>(Modification {
                    selected,
                    replacement,
                })
            })
            .await?;
        self.modified(verb, n, returning.zip(changed), &ctx, &table)
            .await
    }

    /// An UPDATE's or DELETE's outcome: its tag with the `n` rows changed, or its RETURNING
    /// list over the rows `changed` kept.
    pub(super) async fn modified(
        &mut self,
        verb: &'static str,
        n: u64,
        returning: Option<(Returning, Changed)>,
        ctx: &datafusion::prelude::SessionContext,
        table: &TableEntry,
    ) -> Result<Outcome, SqlError> {
        let Some((returning, changed)) = returning else {
            return Ok(Outcome::Command(format!("{verb} {n}")));
        };
        let changed = std::mem::take(&mut *changed.rows.lock());
        let (schema, rows) = self.returning(ctx, &returning, table, changed).await?;
        Ok(Outcome::Rows {
            schema,
            batches: rows,
            tag: verb,
        })
    }

    pub(super) async fn truncate(&mut self, t: &ast::Truncate) -> Result<Outcome, SqlError> {
        for target in &t.table_names {
            let table = self.resolve_table(&target.name)?;
            refuse_view(&table)?;
            if table.def.append_only {
                return Err(SqlError::new(
                    sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                    format!("cannot truncate append-only table \"{}\"", table.def.name),
                ));
            }
            self.modify_rows(&table.store, |rows: &RecordBatch| {
                Ok(Modification {
                    selected: BooleanArray::from(vec![true; rows.num_rows()]),
                    replacement: None,
                })
            })
            .await?;
        }
        // RESTART IDENTITY: the tables' serial and identity sequences start again, at once; in a
        // block, a rollback puts them back (`transaction.rs`), as in Postgres.
        if matches!(t.identity, Some(ast::TruncateIdentityOption::Restart)) {
            for target in &t.table_names {
                let table = self.resolve_table(&target.name)?;
                for sequence in table.def.columns.iter().filter_map(|c| c.sequence.as_ref()) {
                    if let Some(owned) = self.catalog().sequence(&self.database, &sequence.name) {
                        self.note_restart(&owned);
                        owned.set(owned.def.start, false)?;
                    }
                }
            }
        }
        Ok(Outcome::Command("TRUNCATE TABLE".into()))
    }

    /// The catalog entry behind a name DataFusion resolved.
    fn table_of(&self, name: &TableReference) -> Result<Arc<TableEntry>, SqlError> {
        let db = name.catalog().unwrap_or(&self.database);
        self.catalog().table(db, name.table()).ok_or_else(|| {
            SqlError::new(
                sqlstate::UNDEFINED_TABLE,
                format!("relation \"{}\" does not exist", name.table()),
            )
        })
    }
}

/// Refuses an INSERT or UPDATE that stores a value of another type into a JSON column
/// ([`crate::pg::assign`]), pointing at the value.
fn check_assignments(
    dml: &DmlStatement,
    table: &TableEntry,
    stmt: &ast::Statement,
) -> Result<(), SqlError> {
    crate::pg::assign::check(&dml.input, table.store.schema()).map_err(|refused| match stmt {
        ast::Statement::Update(_) => at_assignment(*refused, stmt),
        _ => at_source_item(*refused, stmt),
    })
}

impl Session {
    /// [`check_assignments`] for a planned statement, at Describe: Postgres refuses such a
    /// statement when it is parsed.
    pub(crate) fn check_planned_assignments(
        &self,
        plan: &LogicalPlan,
        stmt: &ast::Statement,
    ) -> Result<(), SqlError> {
        match plan {
            LogicalPlan::Dml(dml) => match self.table_of(&dml.table_name) {
                Ok(table) => check_assignments(dml, &table, stmt),
                // An unknown table fails with its own error when the statement runs.
                Err(_) => Ok(()),
            },
            _ => Ok(()),
        }
    }
}

/// A refused assignment's error, pointing at the select-list item (or the first VALUES row's
/// value) it names, where the statement lists one expression per source column.
fn at_source_item(refused: crate::pg::assign::Refused, stmt: &ast::Statement) -> SqlError {
    use datafusion::sql::sqlparser::ast::Spanned;
    let ast::Statement::Insert(ast::Insert {
        source: Some(query),
        ..
    }) = stmt
    else {
        return refused.error;
    };
    // A set operation's rows are typed by its inputs together: point at the first input's.
    fn first_input(body: &ast::SetExpr) -> &ast::SetExpr {
        match body {
            ast::SetExpr::SetOperation { left, .. } => first_input(left),
            ast::SetExpr::Query(q) => first_input(&q.body),
            other => other,
        }
    }
    let span = refused.item.and_then(|i| match first_input(&query.body) {
        ast::SetExpr::Select(select) if !has_wildcard(select) => {
            select.projection.get(i).map(Spanned::span)
        }
        ast::SetExpr::Values(values) => values
            .rows
            .first()
            .and_then(|row| row.get(i))
            .map(Spanned::span),
        _ => None,
    });
    match span {
        Some(span) if span.start.line > 0 => refused.error.at(span.start),
        _ => refused.error,
    }
}

/// A refused assignment's error, pointing at the UPDATE's SET value for its column.
fn at_assignment(refused: crate::pg::assign::Refused, stmt: &ast::Statement) -> SqlError {
    use datafusion::sql::sqlparser::ast::Spanned;
    let ast::Statement::Update(update) = stmt else {
        return refused.error;
    };
    let value = update.assignments.iter().find_map(|a| match &a.target {
        ast::AssignmentTarget::ColumnName(name)
            if name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .is_some_and(|i| i.value.eq_ignore_ascii_case(&refused.column)) =>
        {
            Some(a.value.span())
        }
        _ => None,
    });
    match value {
        Some(span) if span.start.line > 0 => refused.error.at(span.start),
        _ => refused.error,
    }
}

fn refuse_connector_table(table: &TableEntry, what: &str) -> Result<(), SqlError> {
    refuse_view(table)?;
    match table.def.options.get("connector") {
        Some(c) => Err(SqlError::unsupported(format!(
            "{what} a table with connector \"{c}\""
        ))),
        None => Ok(()),
    }
}

/// Views change only through their job (Postgres: "cannot change materialized view").
pub(super) fn refuse_view(table: &TableEntry) -> Result<(), SqlError> {
    if table.def.plain_view.is_some() {
        return Err(crate::views::not_updatable(&table.def.name));
    }
    if table.def.view.is_some() {
        return Err(SqlError::new(
            sqlstate::WRONG_OBJECT_TYPE,
            format!("cannot change materialized view \"{}\"", table.def.name),
        ));
    }
    Ok(())
}

/// An UPDATE or DELETE whose table has an alias (`UPDATE t AS r SET .. WHERE r.id = 1`), with
/// the alias replaced by the table's name, which DataFusion's DML planning knows it by; `None`
/// when there is no alias.
fn without_alias(stmt: &ast::Statement) -> Option<ast::Statement> {
    let mut stmt = stmt.clone();
    let relation = match &mut stmt {
        ast::Statement::Update(update) => &mut update.table.relation,
        ast::Statement::Delete(delete) => {
            let (ast::FromTable::WithFromKeyword(from) | ast::FromTable::WithoutKeyword(from)) =
                &mut delete.from;
            &mut from.first_mut()?.relation
        }
        _ => return None,
    };
    let ast::TableFactor::Table { name, alias, .. } = relation else {
        return None;
    };
    let alias = alias.take()?.name;
    let table = name.0.last()?.as_ident()?.clone();
    let same = |i: &ast::Ident| match alias.quote_style {
        Some(_) => i.value == alias.value,
        None => i.value.eq_ignore_ascii_case(&alias.value),
    };
    let _ = ast::visit_expressions_mut(&mut stmt, |e| {
        if let ast::Expr::CompoundIdentifier(parts) = e
            && parts.len() == 2
            && same(&parts[0])
        {
            parts[0] = table.clone();
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    if let ast::Statement::Update(update) = &mut stmt {
        for assignment in &mut update.assignments {
            if let ast::AssignmentTarget::ColumnName(name) = &mut assignment.target
                && name.0.len() == 2
                && name.0[0].as_ident().is_some_and(same)
            {
                name.0.remove(0);
            }
        }
    }
    Some(stmt)
}

/// The rows an UPDATE or DELETE changed, kept for its RETURNING list: a DELETE's as they were,
/// an UPDATE's new rows as stored.
#[derive(Clone)]
pub(super) struct Changed {
    rows: Arc<parking_lot::Mutex<Vec<RecordBatch>>>,
    stored_form: Option<Arc<dyn rivulet_engine::table::RowCheck>>,
}

impl Changed {
    pub(super) fn new(def: &rivulet_planner::catalog::TableDef) -> Self {
        Self {
            rows: Arc::default(),
            stored_form: rivulet_planner::lengths::check(def),
        }
    }

    /// Keeps the `selected` of `rows`, or their `replacement`.
    pub(super) fn keep(
        &self,
        rows: &RecordBatch,
        selected: &BooleanArray,
        replacement: Option<&RecordBatch>,
    ) -> Result<(), SqlError> {
        let kept = match (replacement, &self.stored_form) {
            (Some(new), Some(check)) => check.check(new.clone()).map_err(SqlError::from)?,
            (Some(new), None) => new.clone(),
            (None, _) => filter_record_batch(rows, selected).map_err(SqlError::from_arrow)?,
        };
        self.rows.lock().push(kept);
        Ok(())
    }
}

/// Refuses an UPDATE or DELETE (`verb`) of a view, an append-only table or a connector's table.
pub(super) fn check_modifiable(table: &TableEntry, verb: &str) -> Result<(), SqlError> {
    refuse_view(table)?;
    if table.def.append_only {
        let what = if verb == "UPDATE" {
            "update"
        } else {
            "delete from"
        };
        return Err(SqlError::new(
            sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("cannot {what} append-only table \"{}\"", table.def.name),
        )
        .with_hint("Tables created with APPEND ONLY accept only INSERT."));
    }
    refuse_connector_table(table, verb)
}

/// Where `predicate` (a WHERE clause) holds over `rows`: NULL is not true; a predicate that is
/// not boolean is 42804.
pub(super) fn where_mask(
    predicate: &Arc<dyn PhysicalExpr>,
    rows: &RecordBatch,
) -> Result<BooleanArray, SqlError> {
    let value = predicate.evaluate(rows)?.into_array(rows.num_rows())?;
    let mask = value
        .as_any()
        .downcast_ref::<BooleanArray>()
        .ok_or_else(|| {
            SqlError::new(
                sqlstate::DATATYPE_MISMATCH,
                "argument of WHERE must be type boolean",
            )
        })?;
    Ok(match mask.null_count() {
        0 => mask.clone(),
        _ => prep_null_mask_filter(mask),
    })
}

fn has_subquery(e: &Expr) -> bool {
    e.exists(|e| {
        Ok(matches!(
            e,
            Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
        ))
    })
    .unwrap_or(true)
}

/// An INSERT's, UPDATE's or DELETE's RETURNING list, and the table it names.
pub struct Returning {
    items: Vec<ast::SelectItem>,
    /// The table's name, as written.
    target: String,
    alias: Option<ast::Ident>,
}

impl Returning {
    /// `stmt` without its RETURNING list (and an INSERT's table alias, which names the table
    /// there only), and the list; `stmt` itself if it has none.
    pub fn split(stmt: &ast::Statement) -> (std::borrow::Cow<'_, ast::Statement>, Option<Self>) {
        use std::borrow::Cow;
        // The table an UPDATE or DELETE names, and its alias.
        let named = |t: &ast::TableWithJoins| match &t.relation {
            ast::TableFactor::Table { name, alias, .. } => {
                Some((name.to_string(), alias.as_ref().map(|a| a.name.clone())))
            }
            _ => None,
        };
        match stmt {
            ast::Statement::Insert(insert) => {
                let Some(items) = insert.returning.clone() else {
                    return (Cow::Borrowed(stmt), None);
                };
                let mut without = insert.clone();
                without.returning = None;
                without.table_alias = None;
                let returning = Returning {
                    items,
                    target: insert.table.to_string(),
                    alias: insert.table_alias.as_ref().map(|a| a.alias.clone()),
                };
                (Cow::Owned(ast::Statement::Insert(without)), Some(returning))
            }
            ast::Statement::Update(update) => {
                let (Some(items), Some((target, alias))) =
                    (update.returning.clone(), named(&update.table))
                else {
                    return (Cow::Borrowed(stmt), None);
                };
                let mut without = update.clone();
                without.returning = None;
                let returning = Returning {
                    items,
                    target,
                    alias,
                };
                (Cow::Owned(ast::Statement::Update(without)), Some(returning))
            }
            ast::Statement::Delete(delete) => {
                let (ast::FromTable::WithFromKeyword(from) | ast::FromTable::WithoutKeyword(from)) =
                    &delete.from;
                let (Some(items), Some((target, alias))) =
                    (delete.returning.clone(), from.first().and_then(named))
                else {
                    return (Cow::Borrowed(stmt), None);
                };
                let mut without = delete.clone();
                without.returning = None;
                let returning = Returning {
                    items,
                    target,
                    alias,
                };
                (Cow::Owned(ast::Statement::Delete(without)), Some(returning))
            }
            _ => (Cow::Borrowed(stmt), None),
        }
    }

    /// The query `SELECT items FROM target [AS alias]`, planned as a query is (Postgres' names
    /// and types): the list over the table's rows. Describe tells its columns.
    pub async fn plan(
        &self,
        ctx: &datafusion::prelude::SessionContext,
    ) -> Result<LogicalPlan, SqlError> {
        let items: Vec<String> = self.items.iter().map(ToString::to_string).collect();
        let alias = self
            .alias
            .as_ref()
            .map(|a| format!(" AS {a}"))
            .unwrap_or_default();
        let sql = format!("SELECT {} FROM {}{alias}", items.join(", "), self.target);
        let parsed = rivulet_planner::parse::parse_sql(&sql)?;
        let Some(parsed) = parsed.into_iter().next() else {
            return Err(SqlError::internal("a RETURNING list did not parse"));
        };
        let parsed = crate::pg::rewrite::statement(parsed);
        let rivulet_planner::parse::Statement::Sql { stmt, .. } = &parsed.statement else {
            return Err(SqlError::internal("a RETURNING list is no query"));
        };
        plan_query(ctx, stmt).await
    }
}
