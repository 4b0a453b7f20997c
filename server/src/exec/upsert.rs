//! `INSERT .. ON CONFLICT`, Postgres' upsert, on the primary key (Rivulet's tables' one unique
//! constraint): `DO NOTHING` skips a row whose key is taken (by a stored row or an earlier row of
//! the statement); `DO UPDATE SET .. [WHERE ..]` turns it into an update of the stored row, its
//! expressions reading the stored row by the table's name (or alias) and the proposed one as
//! `EXCLUDED`. Two proposed rows with one key fail a `DO UPDATE` (21000), as in Postgres.
//!
//! The INSERT's rows are planned as a plain INSERT's; the store looks up their keys and writes
//! what [`Resolver::resolve`] decides under its writer lock, in one commit
//! ([`TableStore::insert_resolving`](rivulet_engine::table::TableStore::insert_resolving)).

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::{cast, filter_record_batch, interleave, not, or};
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, ParamValues, TableReference};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::PhysicalExpr;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast;
use rivulet_engine::table::Conflicts;

use rivulet_planner::ddl::normalize_ident;

use super::defaults::column_name;
use crate::catalog::TableEntry;
use crate::error::{SqlError, sqlstate};

/// The qualifier of the proposed row in `DO UPDATE`.
const EXCLUDED: &str = "excluded";

/// An INSERT's `ON CONFLICT` clause, and the name its table goes by in it.
pub struct OnConflict {
    clause: ast::OnConflict,
    /// The INSERT's table.
    pub table: Option<ast::ObjectName>,
    /// The table's alias, or its name.
    qualifier: String,
}

impl OnConflict {
    /// `stmt` without its ON CONFLICT clause, and the clause; `None` without one. MySQL's
    /// `ON DUPLICATE KEY UPDATE` is refused.
    pub fn split(
        stmt: &ast::Statement,
    ) -> Result<(std::borrow::Cow<'_, ast::Statement>, Option<Self>), SqlError> {
        let ast::Statement::Insert(insert) = stmt else {
            return Ok((std::borrow::Cow::Borrowed(stmt), None));
        };
        let clause = match &insert.on {
            None => return Ok((std::borrow::Cow::Borrowed(stmt), None)),
            Some(ast::OnInsert::OnConflict(clause)) => clause.clone(),
            Some(other) => return Err(SqlError::unsupported(format!("INSERT ..{other}"))),
        };
        let qualifier = match (&insert.table_alias, &insert.table) {
            (Some(alias), _) => alias.alias.value.clone(),
            (None, ast::TableObject::TableName(name)) => (name.0.last())
                .and_then(|p| p.as_ident())
                .map_or_else(String::new, |i| i.value.clone()),
            (None, other) => other.to_string(),
        };
        let table = match &insert.table {
            ast::TableObject::TableName(name) => Some(name.clone()),
            _ => None,
        };
        let mut without = insert.clone();
        without.on = None;
        Ok((
            std::borrow::Cow::Owned(ast::Statement::Insert(without)),
            Some(OnConflict {
                clause,
                table,
                qualifier,
            }),
        ))
    }

    /// The types of the parameters (`$n`) of the `DO UPDATE` list and WHERE, as their
    /// expressions over `table`'s rows imply them (Describe tells them to the client).
    pub fn parameter_types(
        &self,
        ctx: &SessionContext,
        table: &TableEntry,
    ) -> Result<Vec<(String, datafusion::arrow::datatypes::DataType)>, SqlError> {
        let ast::OnConflictAction::DoUpdate(update) = &self.clause.action else {
            return Ok(Vec::new());
        };
        let schema = self.schema(table)?;
        let state = ctx.state();
        let values = (update.assignments.iter())
            .flat_map(|a| match &a.value {
                ast::Expr::Tuple(values) => values.iter().collect::<Vec<_>>(),
                value => vec![value],
            })
            .chain(update.selection.as_ref())
            .filter(|e| !super::defaults::is_default(e));
        let mut types = Vec::new();
        for value in values {
            let logical = state.create_logical_expr(&value.to_string(), &schema)?;
            let (typed, _) = logical.infer_placeholder_types(&schema)?;
            typed.apply(|e| {
                if let Expr::Placeholder(p) = e
                    && let Some(field) = &p.field
                {
                    types.push((p.id.clone(), field.data_type().clone()));
                }
                Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
            })?;
        }
        Ok(types)
    }

    /// The stored row's columns under the table's qualifier, the proposed row's under EXCLUDED.
    fn schema(&self, table: &TableEntry) -> Result<DFSchema, SqlError> {
        let fields: Vec<Field> = (table.store.schema().fields().iter())
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        let under = |qualifier: &str| {
            let qualifier = TableReference::bare(qualifier);
            (fields.iter()).map(move |f| (Some(qualifier.clone()), Arc::new(f.clone())))
        };
        let qualified = under(&self.qualifier).chain(under(EXCLUDED)).collect();
        Ok(DFSchema::new_with_metadata(qualified, Default::default())?)
    }

    /// The clause checked against `table` and planned: its target must be the primary key, its
    /// SET list and WHERE expressions over the stored row and `EXCLUDED`, `params` bound in them.
    pub fn resolver(
        &self,
        ctx: &SessionContext,
        table: &TableEntry,
        params: Option<&ParamValues>,
    ) -> Result<Resolver, SqlError> {
        let def = &table.def;
        let key: Vec<&str> = def
            .primary_key
            .iter()
            .map(|&i| def.columns[i].name.as_str())
            .collect();
        let no_match = || {
            SqlError::new(
                sqlstate::INVALID_COLUMN_REFERENCE,
                "there is no unique or exclusion constraint matching the ON CONFLICT specification",
            )
        };
        match &self.clause.conflict_target {
            Some(ast::ConflictTarget::Columns(columns)) => {
                let mut named: Vec<String> = columns.iter().map(normalize_ident).collect();
                named.sort();
                named.dedup();
                let mut wanted: Vec<String> = key.iter().map(|k| k.to_string()).collect();
                wanted.sort();
                if key.is_empty() || named != wanted {
                    return Err(no_match());
                }
            }
            Some(ast::ConflictTarget::OnConstraint(name)) => {
                let name = name.to_string().trim_matches('"').to_string();
                if key.is_empty() || name != format!("{}_pkey", def.name) {
                    return Err(SqlError::new(
                        sqlstate::UNDEFINED_OBJECT,
                        format!(
                            "constraint \"{name}\" for table \"{}\" does not exist",
                            def.name
                        ),
                    ));
                }
            }
            None => {}
        }
        let ast::OnConflictAction::DoUpdate(update) = &self.clause.action else {
            return Ok(Resolver {
                keyed: !key.is_empty(),
                update: None,
            });
        };
        if self.clause.conflict_target.is_none() {
            return Err(SqlError::new(
                sqlstate::SYNTAX_ERROR,
                "ON CONFLICT DO UPDATE requires inference specification or constraint name",
            )
            .with_hint("For example, ON CONFLICT (column_name)."));
        }
        let schema = self.schema(table)?;
        let state = ctx.state();
        let logical_of = |e: &ast::Expr| -> Result<Expr, SqlError> {
            // A bare column name is ambiguous between the two rows, as in Postgres.
            let logical = state.create_logical_expr(&e.to_string(), &schema)?;
            Ok(match params {
                Some(params) => {
                    logical
                        .transform(|e| match e {
                            Expr::Placeholder(p) => {
                                let v = params.get_placeholders_with_values(&p.id)?;
                                Ok(Transformed::yes(Expr::Literal(v.value, v.metadata)))
                            }
                            e => Ok(Transformed::no(e)),
                        })?
                        .data
                }
                None => logical,
            })
        };
        let physical = |logical: Expr| -> Result<Arc<dyn PhysicalExpr>, SqlError> {
            Ok(rivulet_planner::overflow::physical_expr(
                &state, logical, &schema,
            )?)
        };
        let plan = |e: &ast::Expr| physical(logical_of(e)?);
        // The stored and the proposed rows' display scales, for the new values'.
        let scaled = def.scaled_columns();
        let width = table.store.schema().fields().len();
        let mut below = vec![None; 2 * width];
        for (k, &c) in scaled.iter().enumerate() {
            below[c] = Some(def.columns.len() + k);
            below[width + c] = Some(width + def.columns.len() + k);
        }
        let mut assignments = Vec::with_capacity(update.assignments.len());
        for assignment in &update.assignments {
            let names: Vec<String> = match &assignment.target {
                ast::AssignmentTarget::ColumnName(name) => vec![column_name(name)],
                ast::AssignmentTarget::Tuple(names) => names.iter().map(column_name).collect(),
            };
            let values: Vec<&ast::Expr> = match (&assignment.value, names.len()) {
                (ast::Expr::Tuple(values), n) if n > 1 && values.len() == n => {
                    values.iter().collect()
                }
                (value, 1) => vec![value],
                _ => {
                    return Err(SqlError::new(
                        sqlstate::SYNTAX_ERROR,
                        "number of columns does not match number of values",
                    ));
                }
            };
            for (name, value) in names.into_iter().zip(values) {
                let Some(column) = def.columns.iter().position(|c| c.name == name) else {
                    return Err(SqlError::new(
                        sqlstate::UNDEFINED_COLUMN,
                        format!(
                            "column \"{name}\" of relation \"{}\" does not exist",
                            def.name
                        ),
                    ));
                };
                if def.primary_key.contains(&column) {
                    return Err(SqlError::unsupported(format!(
                        "ON CONFLICT DO UPDATE of primary key column \"{name}\""
                    )));
                }
                if def.computed.iter().any(|c| c.column == column) {
                    return Err(SqlError::new(
                        sqlstate::GENERATED_ALWAYS,
                        format!("column \"{name}\" can only be updated to DEFAULT"),
                    ));
                }
                let logical = if super::defaults::is_default(value) {
                    let default = super::defaults::default_text(&def.columns[column])
                        .unwrap_or_else(|| "NULL".to_string());
                    state.create_logical_expr(&default, &schema)?
                } else {
                    logical_of(value)?
                };
                if let Some(k) = scaled.iter().position(|&c| c == column) {
                    let scale = crate::pg::dscale::scale_of(&logical, &schema, &below)
                        .unwrap_or_else(|| {
                            Expr::Literal(datafusion::scalar::ScalarValue::Int32(None), None)
                        });
                    assignments.push((def.columns.len() + k, physical(scale)?));
                }
                assignments.push((column, physical(logical)?));
            }
        }
        let condition = update.selection.as_ref().map(plan).transpose()?;
        Ok(Resolver {
            keyed: !key.is_empty(),
            update: Some(Update {
                assignments,
                condition,
                table_schema: Arc::clone(table.store.schema()),
                combined: Arc::new(schema.as_arrow().clone()),
            }),
        })
    }
}

/// A planned `DO UPDATE`.
struct Update {
    /// Each assigned column and its value.
    assignments: Vec<(usize, Arc<dyn PhysicalExpr>)>,
    condition: Option<Arc<dyn PhysicalExpr>>,
    table_schema: datafusion::arrow::datatypes::SchemaRef,
    /// The stored row's columns, then the proposed row's.
    combined: datafusion::arrow::datatypes::SchemaRef,
}

/// What an `ON CONFLICT` does with the rows of an INSERT, given what their keys find.
pub struct Resolver {
    /// Whether the table has a primary key (without one nothing conflicts).
    keyed: bool,
    /// `DO UPDATE`'s; `None` for `DO NOTHING`.
    update: Option<Update>,
}

impl Resolver {
    /// Whether the rows go through the store's conflict lookup (a table without a primary key
    /// has no conflicts: its rows are inserted as a plain INSERT's).
    pub fn keyed(&self) -> bool {
        self.keyed
    }

    /// The rows to store, in the statement's order: the proposed rows whose key is free, and for
    /// `DO UPDATE` the stored rows updated (where its WHERE holds).
    pub fn resolve(&self, rows: &RecordBatch, c: Conflicts) -> Result<RecordBatch, SqlError> {
        let Some(update) = &self.update else {
            let taken = or(&c.found, &c.repeated).map_err(SqlError::from_arrow)?;
            return filter_record_batch(rows, &not(&taken).map_err(SqlError::from_arrow)?)
                .map_err(SqlError::from_arrow);
        };
        if c.repeated.true_count() > 0 {
            return Err(SqlError::new(
                sqlstate::CARDINALITY_VIOLATION,
                "ON CONFLICT DO UPDATE command cannot affect row a second time",
            )
            .with_hint(
                "Ensure that no rows proposed for insertion within the same command have \
                 duplicate constrained values.",
            ));
        }
        let fresh = not(&c.found).map_err(SqlError::from_arrow)?;
        let inserted = filter_record_batch(rows, &fresh).map_err(SqlError::from_arrow)?;
        // The conflicting rows: stored beside proposed.
        let stored = filter_record_batch(&c.existing, &c.found).map_err(SqlError::from_arrow)?;
        let proposed = filter_record_batch(rows, &c.found).map_err(SqlError::from_arrow)?;
        let both = RecordBatch::try_new(
            Arc::clone(&update.combined),
            stored
                .columns()
                .iter()
                .chain(proposed.columns())
                .cloned()
                .collect(),
        )
        .map_err(SqlError::from_arrow)?;
        let n = both.num_rows();
        let mut columns = stored.columns().to_vec();
        for (column, value) in &update.assignments {
            let value = value.evaluate(&both)?.into_array(n)?;
            let target = update.table_schema.field(*column).data_type();
            columns[*column] = cast(&value, target).map_err(SqlError::from_arrow)?;
        }
        let nullable = Arc::new(Schema::new(
            (update.table_schema.fields().iter())
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        let updated =
            RecordBatch::try_new(Arc::clone(&nullable), columns).map_err(SqlError::from_arrow)?;
        // Where the WHERE does not hold, the row stays as stored and is not counted.
        let kept = match &update.condition {
            Some(condition) => Some(super::dml::where_mask(condition, &both)?),
            None => None,
        };
        // Back in the statement's order: the i-th row is the next inserted or the next updated.
        let inserted = RecordBatch::try_new(Arc::clone(&nullable), inserted.columns().to_vec())
            .map_err(SqlError::from_arrow)?;
        let mut order = Vec::with_capacity(rows.num_rows());
        let (mut next_insert, mut next_update) = (0, 0);
        for found in c.found.iter() {
            if found == Some(true) {
                if kept.as_ref().is_none_or(|k| k.value(next_update)) {
                    order.push((1, next_update));
                }
                next_update += 1;
            } else {
                order.push((0, next_insert));
                next_insert += 1;
            }
        }
        let columns = (0..nullable.fields().len())
            .map(|i| {
                interleave(
                    &[inserted.column(i).as_ref(), updated.column(i).as_ref()],
                    &order,
                )
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(SqlError::from_arrow)?;
        RecordBatch::try_new_with_options(
            nullable,
            columns,
            &datafusion::arrow::record_batch::RecordBatchOptions::new()
                .with_row_count(Some(order.len())),
        )
        .map_err(SqlError::from_arrow)
    }
}
