//! UPDATE and DELETE that read other relations: `UPDATE t SET .. FROM s WHERE ..`, `DELETE FROM t
//! USING s WHERE ..`, and subqueries in SET or WHERE (`DELETE FROM t WHERE id IN (SELECT ..)`).
//!
//! The statement becomes a query, planned and run as any query is (joins, subqueries, Postgres'
//! casts): `SELECT <t's key>, CAST(<new value> AS <column type>) .. FROM t [AS a] [, s ..]
//! WHERE ..`. Its rows name the target rows by key (the primary key, or every column of a table
//! without one) and carry their new values; the store's UPDATE/DELETE then changes the rows with
//! those keys, in one commit. A target row that several rows of the join match takes the first,
//! as Postgres takes an arbitrary one.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray, RecordBatch, UInt32Array, new_null_array};
use datafusion::arrow::compute::{cast, concat_batches, filter_record_batch, take};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast;
use rivulet_engine::table::Modification;

use super::Outcome;
use super::dml::Returning;
use super::query::{bind, plan_query};
use crate::error::{SqlError, sqlstate};
use crate::session::Session;

/// Whether `stmt` (an UPDATE or DELETE) reads other relations: a FROM, a USING or a subquery.
pub fn reads_others(stmt: &ast::Statement) -> bool {
    let has_subquery = {
        let mut found = false;
        let _ = ast::visit_expressions(stmt, |e| {
            found |= matches!(
                e,
                ast::Expr::Subquery(_) | ast::Expr::Exists { .. } | ast::Expr::InSubquery { .. }
            );
            std::ops::ControlFlow::<()>::Continue(())
        });
        found
    };
    match stmt {
        ast::Statement::Update(u) => u.from.is_some() || has_subquery,
        ast::Statement::Delete(d) => d.using.is_some() || has_subquery,
        _ => false,
    }
}

/// The parts of an UPDATE or DELETE this module needs.
struct Target<'a> {
    name: &'a ast::ObjectName,
    alias: Option<&'a ast::Ident>,
    /// The FROM (UPDATE) or USING (DELETE) relations.
    others: &'a [ast::TableWithJoins],
    selection: Option<&'a ast::Expr>,
    /// UPDATE's assignments; `None` for DELETE.
    assignments: Option<&'a [ast::Assignment]>,
}

/// The table `t` names, and its alias, when it is one table without joins.
fn relation(t: &ast::TableWithJoins) -> Option<(&ast::ObjectName, Option<&ast::Ident>)> {
    match &t.relation {
        ast::TableFactor::Table { name, alias, .. } if t.joins.is_empty() => {
            Some((name, alias.as_ref().map(|a| &a.name)))
        }
        _ => None,
    }
}

fn target(stmt: &ast::Statement) -> Result<Target<'_>, SqlError> {
    let unsupported = || SqlError::unsupported("this form of UPDATE or DELETE".to_string());
    match stmt {
        ast::Statement::Update(u) => {
            let (name, alias) = relation(&u.table).ok_or_else(unsupported)?;
            let others = match &u.from {
                Some(
                    ast::UpdateTableFromKind::AfterSet(t) | ast::UpdateTableFromKind::BeforeSet(t),
                ) => t.as_slice(),
                None => &[],
            };
            Ok(Target {
                name,
                alias,
                others,
                selection: u.selection.as_ref(),
                assignments: Some(&u.assignments),
            })
        }
        ast::Statement::Delete(d) => {
            let (ast::FromTable::WithFromKeyword(from) | ast::FromTable::WithoutKeyword(from)) =
                &d.from;
            let [one] = from.as_slice() else {
                return Err(unsupported());
            };
            let (name, alias) = relation(one).ok_or_else(unsupported)?;
            Ok(Target {
                name,
                alias,
                others: d.using.as_deref().unwrap_or_default(),
                selection: d.selection.as_ref(),
                assignments: None,
            })
        }
        _ => Err(unsupported()),
    }
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The query an UPDATE or DELETE that reads others runs (see the module documentation), the
/// target's key columns (its first columns) and the columns it assigns (the next ones).
fn query_of(
    t: &Target<'_>,
    def: &rivulet_planner::catalog::TableDef,
) -> Result<(ast::Statement, Vec<usize>, Vec<usize>), SqlError> {
    // The target rows' keys: the primary key, or every column.
    let keys: Vec<usize> = match def.primary_key.is_empty() {
        true => (0..def.columns.len()).collect(),
        false => def.primary_key.clone(),
    };
    let qualifier = quoted(&t.alias.map_or_else(
        || {
            (t.name.0.last())
                .and_then(|p| p.as_ident())
                .map_or_else(String::new, |i| i.value.clone())
        },
        |a| a.value.clone(),
    ));
    let mut items: Vec<String> = (keys.iter())
        .map(|&k| format!("{qualifier}.{}", quoted(&def.columns[k].name)))
        .collect();
    // The assigned columns, in order, and their new values cast to the column's type.
    let mut assigned = Vec::new();
    for assignment in t.assignments.unwrap_or_default() {
        let ast::AssignmentTarget::ColumnName(name) = &assignment.target else {
            return Err(SqlError::unsupported(
                "a multiple-column assignment with a subquery".to_string(),
            ));
        };
        let column = super::defaults::column_name(name);
        let Some(index) = def.columns.iter().position(|c| c.name == column) else {
            return Err(SqlError::new(
                sqlstate::UNDEFINED_COLUMN,
                format!(
                    "column \"{column}\" of relation \"{}\" does not exist",
                    def.name
                ),
            ));
        };
        if def.computed.iter().any(|c| c.column == index) {
            return Err(SqlError::new(
                sqlstate::GENERATED_ALWAYS,
                format!("column \"{column}\" can only be updated to DEFAULT"),
            )
            .with_detail(format!("Column \"{column}\" is a computed column.")));
        }
        items.push(format!(
            "CAST(({}) AS {})",
            assignment.value,
            def.columns[index].sql_type.pg_name()
        ));
        assigned.push(index);
    }
    let mut from = vec![format!("{} AS {qualifier}", t.name)];
    from.extend(t.others.iter().map(ToString::to_string));
    let mut sql = format!("SELECT {} FROM {}", items.join(", "), from.join(", "));
    if let Some(selection) = t.selection {
        sql.push_str(&format!(" WHERE {selection}"));
    }
    let parsed = rivulet_planner::parse::parse_sql(&sql)?;
    let Some(parsed) = parsed.into_iter().next() else {
        return Err(SqlError::internal("an UPDATE's query did not parse"));
    };
    let parsed = crate::pg::rewrite::statement(parsed);
    let rivulet_planner::parse::Statement::Sql { stmt: query, .. } = &parsed.statement else {
        return Err(SqlError::internal("an UPDATE's query is no query"));
    };
    Ok((query.as_ref().clone(), keys, assigned))
}

/// The plan of the query an UPDATE or DELETE that [`reads_others`] runs: Describe reads its
/// parameters' types.
pub async fn plan(session: &mut Session, stmt: &ast::Statement) -> Result<LogicalPlan, SqlError> {
    let t = target(stmt)?;
    let table = session.resolve_table(t.name)?;
    let (query, _, _) = query_of(&t, &table.def)?;
    let ctx = session.context()?.clone();
    plan_query(&ctx, &query).await
}

impl Session {
    /// Runs an UPDATE or DELETE that [`reads_others`] (see the module documentation);
    /// `returning` is its RETURNING list, split off.
    pub(super) async fn modify_by_query(
        &mut self,
        stmt: &ast::Statement,
        params: Option<&ParamValues>,
        returning: Option<Returning>,
    ) -> Result<Outcome, SqlError> {
        let t = target(stmt)?;
        let table = self.resolve_table(t.name)?;
        let verb = if t.assignments.is_some() {
            "UPDATE"
        } else {
            "DELETE"
        };
        super::dml::check_modifiable(&table, verb)?;
        let def = &table.def;
        let (query, keys, assigned) = query_of(&t, def)?;
        let ctx = self.context()?.clone();
        let plan = bind(plan_query(&ctx, &query).await?, params)?;
        let df = ctx.execute_logical_plan(plan).await?;
        let batches = self
            .interrupt
            .run(async { Ok(df.collect().await?) })
            .await?;
        let found = match batches.first() {
            Some(b) => concat_batches(&b.schema(), &batches).map_err(SqlError::from_arrow)?,
            None => RecordBatch::new_empty(Arc::new(datafusion::arrow::datatypes::Schema::empty())),
        };
        // Each target key's first row in the query's result.
        let fields: Vec<SortField> = (keys.iter())
            .map(|&k| SortField::new(table.store.schema().field(k).data_type().clone()))
            .collect();
        let converter = RowConverter::new(fields).map_err(SqlError::from_arrow)?;
        if found.num_rows() == 0 {
            let nothing = returning.map(|r| (r, super::dml::Changed::new(def)));
            return self.modified(verb, 0, nothing, &ctx, &table).await;
        }
        let mut first: HashMap<Vec<u8>, u32> = HashMap::new();
        let key_columns: Vec<_> = (0..keys.len())
            .map(|i| Arc::clone(found.column(i)))
            .collect();
        let rows = converter
            .convert_columns(&key_columns)
            .map_err(SqlError::from_arrow)?;
        for (i, row) in rows.iter().enumerate() {
            let i = u32::try_from(i).map_err(|_| SqlError::internal("too many rows"))?;
            first.entry(row.as_ref().to_vec()).or_insert(i);
        }
        let table_schema = Arc::clone(table.store.schema());
        let nullable = Arc::new(datafusion::arrow::datatypes::Schema::new(
            (table_schema.fields().iter())
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        let updating = t.assignments.is_some();
        // An assigned unconstrained numeric's stored display scale no longer holds: its new
        // value shows its own digits.
        let scaled = def.scaled_columns();
        let visible = def.columns.len();
        let changed = returning.as_ref().map(|_| super::dml::Changed::new(def));
        let capture = changed.clone();
        let n_keys = keys.len();
        let n = self
            .modify_rows(&table.store, move |rows: &RecordBatch| {
                let key_columns: Vec<_> =
                    keys.iter().map(|&k| Arc::clone(rows.column(k))).collect();
                let converted = converter
                    .convert_columns(&key_columns)
                    .map_err(SqlError::from_arrow)?;
                let matches: Vec<Option<u32>> = converted
                    .iter()
                    .map(|r| first.get(r.as_ref()).copied())
                    .collect();
                let selected: BooleanArray = matches.iter().map(|m| Some(m.is_some())).collect();
                let replacement = if updating {
                    let chosen =
                        filter_record_batch(rows, &selected).map_err(SqlError::from_arrow)?;
                    let at =
                        UInt32Array::from(matches.iter().flatten().copied().collect::<Vec<_>>());
                    let mut columns = chosen.columns().to_vec();
                    for (i, &column) in assigned.iter().enumerate() {
                        let value = take(found.column(n_keys + i).as_ref(), &at, None)
                            .map_err(SqlError::from_arrow)?;
                        columns[column] = cast(&value, table_schema.field(column).data_type())
                            .map_err(SqlError::from_arrow)?;
                        if let Some(k) = scaled.iter().position(|&c| c == column)
                            && let Some(scale) = columns.get_mut(visible + k)
                        {
                            *scale = new_null_array(scale.data_type(), scale.len());
                        }
                    }
                    Some(
                        RecordBatch::try_new(Arc::clone(&nullable), columns)
                            .map_err(SqlError::from_arrow)?,
                    )
                } else {
                    None
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
}
