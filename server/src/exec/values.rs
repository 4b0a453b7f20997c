//! The fast path for `INSERT INTO t [(cols)] VALUES (...), (...)` of plain literals.
//!
//! DataFusion plans every literal of a VALUES list as an expression (type coercion, simplification,
//! a tree rewrite each): a 1000-row, 5-column INSERT spends nearly all its time there. When every
//! value is a literal whose meaning does not depend on that machinery (a string, an integer into an
//! integer column, a number into a float or numeric column, a boolean, NULL), the rows are built
//! column by column with the same Postgres text parser COPY uses. Anything else (expressions,
//! parameters, `DEFAULT`, a fractional number into an integer column, which Postgres rounds) returns
//! `None` and DataFusion plans the statement as usual, so results and errors never differ.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringArray, new_null_array};
use datafusion::arrow::compute::CastOptions;
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::sql::sqlparser::ast::{
    self, Expr, Insert, SetExpr, TableObject, UnaryOperator, Value,
};
use rivulet_planner::ddl::normalize_ident;

use crate::catalog::TableEntry;
use crate::error::SqlError;

/// One literal, as text, and what kind of literal it was.
enum Literal<'a> {
    Null,
    Number(String),
    Text(&'a str),
    Bool(bool),
}

fn literal(e: &Expr) -> Option<Literal<'_>> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Null => Some(Literal::Null),
            Value::Number(n, _) => Some(Literal::Number(n.clone())),
            Value::SingleQuotedString(s) => Some(Literal::Text(s)),
            Value::Boolean(b) => Some(Literal::Bool(*b)),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match expr.as_ref() {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => Some(Literal::Number(format!("-{n}"))),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

/// The table an INSERT names, if it is a plain VALUES insert the fast path may take.
pub fn values_target(insert: &Insert) -> Option<&ast::ObjectName> {
    let TableObject::TableName(name) = &insert.table else {
        return None;
    };
    let query = insert.source.as_ref()?;
    let plain = query.with.is_none()
        && query.order_by.is_none()
        && query.limit_clause.is_none()
        && query.fetch.is_none()
        && insert.on.is_none()
        && insert.returning.is_none()
        && insert.assignments.is_empty()
        && insert.partitioned.is_none()
        && insert.after_columns.is_empty()
        && insert.table_alias.is_none();
    (plain && matches!(query.body.as_ref(), SetExpr::Values(_))).then_some(name)
}

/// The rows of `insert` as one batch of `table`'s schema, or `None` to let DataFusion plan it.
pub fn literal_rows(
    insert: &Insert,
    table: &TableEntry,
    zone: Option<&str>,
) -> Result<Option<RecordBatch>, SqlError> {
    let Some(query) = insert.source.as_ref() else {
        return Ok(None);
    };
    let SetExpr::Values(values) = query.body.as_ref() else {
        return Ok(None);
    };
    let schema = Arc::clone(table.store.schema());
    let targets: Vec<usize> = if insert.columns.is_empty() {
        (0..table.def.columns.len()).collect()
    } else {
        let mut targets = Vec::with_capacity(insert.columns.len());
        for c in &insert.columns {
            let [ident] = c.0.as_slice() else {
                return Ok(None);
            };
            let Some(ident) = ident.as_ident() else {
                return Ok(None);
            };
            let name = normalize_ident(ident);
            match table.def.columns.iter().position(|col| col.name == name) {
                Some(i) if !targets.contains(&i) => targets.push(i),
                // Unknown or repeated columns: DataFusion reports them.
                _ => return Ok(None),
            }
        }
        targets
    };
    let rows = &values.rows;
    if rows.is_empty() || rows.iter().any(|r| r.len() != targets.len()) {
        return Ok(None);
    }
    let mut columns: Vec<Option<ArrayRef>> = vec![None; schema.fields().len()];
    let scaled = table.def.scaled_columns();
    for (position, &target) in targets.iter().enumerate() {
        let data_type = schema.field(target).data_type();
        let mut texts: Vec<Option<String>> = Vec::with_capacity(rows.len());
        for row in rows {
            let Some(lit) = literal(&row[position]) else {
                return Ok(None);
            };
            let text = match (lit, data_type) {
                (Literal::Null, _) => None,
                (Literal::Text(s), _) => Some(s.to_string()),
                (Literal::Bool(b), DataType::Boolean) => Some(b.to_string()),
                (Literal::Number(n), t) if is_integer(t) && is_integral(&n) => Some(n),
                (
                    Literal::Number(n),
                    DataType::Float32 | DataType::Float64 | DataType::Decimal128(..),
                ) => Some(n),
                _ => return Ok(None),
            };
            texts.push(text);
        }
        // An unconstrained numeric's display scales: the decimals each value is written with.
        if let Some(k) = scaled.iter().position(|&c| c == target) {
            columns[table.def.columns.len() + k] = Some(crate::pg::dscale::of_texts(
                texts.iter().map(Option::as_deref),
            ));
        }
        let strings: ArrayRef = Arc::new(StringArray::from(texts));
        let opts = CastOptions {
            safe: false,
            ..CastOptions::default()
        };
        // A value that does not parse: DataFusion plans the statement and reports the error as
        // the slow path always has.
        let Ok(parsed) = crate::pg::time_zone::parse_text(&strings, data_type, &opts, zone) else {
            return Ok(None);
        };
        columns[target] = Some(parsed);
    }
    let columns: Vec<ArrayRef> = columns
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| c.unwrap_or_else(|| new_null_array(f.data_type(), rows.len())))
        .collect();
    let nullable = Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    Ok(Some(
        RecordBatch::try_new(nullable, columns).map_err(SqlError::from_arrow)?,
    ))
}

fn is_integer(t: &DataType) -> bool {
    matches!(t, DataType::Int16 | DataType::Int32 | DataType::Int64)
}

fn is_integral(n: &str) -> bool {
    let digits = n.strip_prefix('-').unwrap_or(n);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}
