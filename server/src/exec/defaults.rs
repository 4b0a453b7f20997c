//! Column defaults in INSERT and UPDATE, as Postgres fills them: a column an INSERT does not
//! name, `DEFAULT` in a VALUES row or an UPDATE's SET, and `INSERT .. DEFAULT VALUES` take the
//! column's `DEFAULT` expression (a `serial` column's `nextval('..')`, an identity column's
//! sequence), or NULL without one. The statement is rewritten before DataFusion plans it, so a
//! default is planned, typed and cast as the values written beside it are.
//!
//! A `GENERATED ALWAYS` identity column refuses a value other than `DEFAULT` (428C9), in an
//! INSERT and an UPDATE alike.

use datafusion::sql::sqlparser::ast;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use rivulet_planner::catalog::{ColumnDef, Identity, TableDef};

use crate::error::{SqlError, sqlstate};

/// Whether `e` is the keyword `DEFAULT` (which the parser reads as a column name).
pub(super) fn is_default(e: &ast::Expr) -> bool {
    matches!(e, ast::Expr::Identifier(i)
        if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("default"))
}

/// The SQL of what `column` takes by default: its DEFAULT expression or its identity sequence's
/// next value; `None` for NULL.
pub fn default_text(column: &ColumnDef) -> Option<String> {
    match (&column.default, &column.identity, &column.sequence) {
        (Some(text), _, _) => Some(text.clone()),
        (None, Some(_), Some(sequence)) => Some(format!("nextval('{}')", sequence.name)),
        _ => None,
    }
}

/// What `column` takes by default: [`default_text`], or NULL.
fn default_of(column: &ColumnDef) -> Result<ast::Expr, SqlError> {
    let Some(text) = default_text(column) else {
        return Ok(ast::Expr::Value(ast::Value::Null.with_empty_span()));
    };
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&text)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| {
            SqlError::new(
                sqlstate::DATA_CORRUPTED,
                format!(
                    "the default of column \"{}\" does not parse: {e}",
                    column.name
                ),
            )
        })
}

/// The column a column list or a SET names: its last part (`SET t.c = ..` names `c`), folded as
/// Postgres folds names.
pub(super) fn column_name(name: &ast::ObjectName) -> String {
    (name.0.last())
        .and_then(|p| p.as_ident())
        .map_or_else(String::new, rivulet_planner::ddl::normalize_ident)
}

fn column_index(def: &TableDef, name: &ast::ObjectName) -> Option<usize> {
    let name = column_name(name);
    def.columns.iter().position(|c| c.name == name)
}

/// 428C9 for a value given to `GENERATED ALWAYS` identity column `column`.
fn always(column: &str, update: bool) -> SqlError {
    let message = if update {
        format!("column \"{column}\" can only be updated to DEFAULT")
    } else {
        format!("cannot insert a non-DEFAULT value into column \"{column}\"")
    };
    let err = SqlError::new(sqlstate::GENERATED_ALWAYS, message).with_detail(format!(
        "Column \"{column}\" is an identity column defined as GENERATED ALWAYS."
    ));
    if update {
        err
    } else {
        err.with_hint("Use OVERRIDING SYSTEM VALUE to override.")
    }
}

/// Whether the table has anything for this module to do.
fn has_defaults(def: &TableDef) -> bool {
    def.columns
        .iter()
        .any(|c| c.default.is_some() || c.identity.is_some())
}

/// `insert` with its defaults filled, or `None` when it needs no change. `insert`'s column list
/// has been spelled out where its rows are short or the table has computed columns.
pub fn insert(insert: &ast::Insert, def: &TableDef) -> Result<Option<ast::Insert>, SqlError> {
    let computed: Vec<usize> = def.computed.iter().map(|c| c.column).collect();
    let stored: Vec<usize> = (0..def.columns.len())
        .filter(|i| !computed.contains(i))
        .collect();
    let Some(source) = &insert.source else {
        // DEFAULT VALUES: one row of every stored column's default.
        let mut insert = insert.clone();
        insert.columns = stored
            .iter()
            .map(|&i| quoted_name(&def.columns[i]))
            .collect();
        let row = (stored.iter())
            .map(|&i| default_of(&def.columns[i]))
            .collect::<Result<Vec<_>, _>>()?;
        insert.source = Some(Box::new(values_query(&row)?));
        return Ok(Some(insert));
    };
    let has_default_keyword = match source.body.as_ref() {
        ast::SetExpr::Values(values) => {
            values.rows.iter().any(|r| r.content.iter().any(is_default))
        }
        _ => false,
    };
    if !has_defaults(def) && !has_default_keyword {
        return Ok(None);
    }
    let targets: Vec<usize> = if insert.columns.is_empty() {
        stored.clone()
    } else {
        (insert.columns.iter())
            .map(|c| column_index(def, c))
            .collect::<Option<_>>()
            .unwrap_or_default()
    };
    let mut insert = insert.clone();
    let mut changed = false;
    if let Some(source) = insert.source.as_mut()
        && let ast::SetExpr::Values(values) = source.body.as_mut()
    {
        for row in &mut values.rows {
            for (cell, &column) in row.content.iter_mut().zip(&targets) {
                let column = &def.columns[column];
                if is_default(cell) {
                    *cell = default_of(column)?;
                    changed = true;
                } else if column.identity == Some(Identity::Always) {
                    return Err(always(&column.name, false));
                }
            }
        }
    } else if let Some(&i) =
        (targets.iter()).find(|&&i| def.columns[i].identity == Some(Identity::Always))
    {
        return Err(always(&def.columns[i].name, false));
    }
    // The columns it does not name that have a default: named, with their defaults as values.
    let omitted: Vec<usize> = if targets.is_empty() {
        Vec::new()
    } else {
        (stored.iter().copied())
            .filter(|i| !targets.contains(i))
            .filter(|&i| {
                let c = &def.columns[i];
                c.default.is_some() || c.identity.is_some()
            })
            .collect()
    };
    if !omitted.is_empty() {
        if insert.columns.is_empty() {
            insert.columns = targets
                .iter()
                .map(|&i| quoted_name(&def.columns[i]))
                .collect();
        }
        insert
            .columns
            .extend(omitted.iter().map(|&i| quoted_name(&def.columns[i])));
        let defaults = (omitted.iter())
            .map(|&i| default_of(&def.columns[i]))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(source) = insert.source.as_mut() {
            append_columns(source, defaults)?;
        }
        changed = true;
    }
    Ok(changed.then_some(insert))
}

/// `query` with `defaults` as more columns of each row: added to each VALUES row, or a query
/// wrapped as `SELECT *, defaults FROM (query)`.
fn append_columns(query: &mut ast::Query, defaults: Vec<ast::Expr>) -> Result<(), SqlError> {
    if let ast::SetExpr::Values(values) = query.body.as_mut()
        && query.order_by.is_none()
        && query.limit_clause.is_none()
    {
        for row in &mut values.rows {
            row.content.extend(defaults.iter().cloned());
        }
        return Ok(());
    }
    let defaults: Vec<String> = defaults.iter().map(ToString::to_string).collect();
    *query = parse_query(&format!(
        "SELECT *, {} FROM ({query}) AS __rivulet_source",
        defaults.join(", ")
    ))?;
    Ok(())
}

/// `VALUES (row)`.
fn values_query(row: &[ast::Expr]) -> Result<ast::Query, SqlError> {
    let row: Vec<String> = row.iter().map(ToString::to_string).collect();
    parse_query(&format!("VALUES ({})", row.join(", ")))
}

fn parse_query(sql: &str) -> Result<ast::Query, SqlError> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_query())
        .map(|q| *q)
        .map_err(|e| SqlError::internal(format!("a rewritten INSERT does not parse: {e}")))
}

/// `update` with `SET c = DEFAULT` as `c`'s default, or `None` when it needs no change; a
/// `GENERATED ALWAYS` identity column set to anything else is refused.
pub fn update(update: &ast::Update, def: &TableDef) -> Result<Option<ast::Update>, SqlError> {
    let mut update = update.clone();
    let mut changed = false;
    for assignment in &mut update.assignments {
        let ast::AssignmentTarget::ColumnName(name) = &assignment.target else {
            continue;
        };
        let Some(column) = column_index(def, name).map(|i| &def.columns[i]) else {
            continue;
        };
        if is_default(&assignment.value) {
            assignment.value = default_of(column)?;
            changed = true;
        } else if column.identity == Some(Identity::Always) {
            return Err(always(&column.name, true));
        }
    }
    Ok(changed.then_some(update))
}

fn quoted_name(column: &ColumnDef) -> ast::ObjectName {
    ast::ObjectName::from(vec![ast::Ident::with_quote('"', &column.name)])
}
