//! Postgres' assignment rule for `json` and `jsonb` columns: an INSERT or UPDATE stores there a
//! value of a JSON type, or an untyped constant (`'{"a":1}'`, NULL, a `$n` parameter), which
//! takes the column's type; any other type is refused with 42804 (`column "j" is of type jsonb
//! but expression is of type text`), since Postgres has no assignment cast from `text` (or a
//! number) to `json`. Both are text in Arrow, so the rule is checked on the plan, by the
//! Postgres type each stored expression has ([`super::wire_types::type_name`]).
//!
//! Only the expressions of the statement's own select list (or VALUES lists, or SET clause) are
//! untyped constants: a constant that passed through a subquery, a UNION or DISTINCT is `text`,
//! as in Postgres.

use datafusion::arrow::datatypes::Schema;
use datafusion::common::DFSchema;
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan};

use crate::error::{SqlError, sqlstate};

/// An assignment the rule refuses: the error, and the select-list (or VALUES) position of the
/// expression, for the error's position in the statement.
pub struct Refused {
    pub error: SqlError,
    pub item: Option<usize>,
    /// The column assigned to (an UPDATE's SET names it).
    pub column: String,
}

/// Checks the rule for a DML plan's input (`dml.input`: a projection that lists one expression
/// per column of `target`, the table's schema, in its order).
pub fn check(input: &LogicalPlan, target: &Schema) -> Result<(), Box<Refused>> {
    let LogicalPlan::Projection(p) = input else {
        return Ok(());
    };
    for (expr, column) in p.expr.iter().zip(target.fields()) {
        let Some(kind) = crate::pg::json::json_kind(column) else {
            continue;
        };
        let (source, item) = match stored(expr) {
            Expr::Column(c) => match p.input.schema().index_of_column(c) {
                Ok(i) => (produced(&p.input, i), Some(i)),
                Err(_) => continue,
            },
            other => (of_expr(other, p.input.schema()), None),
        };
        let Source::Typed(name) = source else {
            continue;
        };
        if matches!(name, "json" | "jsonb") {
            continue;
        }
        return Err(Box::new(Refused {
            error: SqlError::new(
                sqlstate::DATATYPE_MISMATCH,
                format!(
                    "column \"{}\" is of type {} but expression is of type {name}",
                    column.name(),
                    kind.type_name()
                ),
            )
            .with_hint("You will need to rewrite or cast the expression."),
            item,
            column: column.name().clone(),
        }));
    }
    Ok(())
}

/// What an assigned value is, to the rule.
enum Source {
    /// An untyped constant: it takes the column's type.
    Untyped,
    /// A value of this Postgres type.
    Typed(&'static str),
}

/// The expression a DML projection stores, without its name and the implicit cast to the
/// column's Arrow type (a cast with no target name; `x::text` names its target).
fn stored(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => stored(&a.expr),
        Expr::Cast(c) if c.field.name().is_empty() => stored(&c.expr),
        other => other,
    }
}

/// What column `i` of `plan` is, looking through the select list it comes from.
fn produced(plan: &LogicalPlan, i: usize) -> Source {
    match plan {
        LogicalPlan::Projection(p) => match p.expr.get(i) {
            Some(e) => of_expr(e, p.input.schema()),
            None => Source::Untyped,
        },
        LogicalPlan::Sort(s) => produced(&s.input, i),
        LogicalPlan::Limit(l) => produced(&l.input, i),
        // The first typed value of the column (Arrow's VALUES casts every row to one type).
        LogicalPlan::Values(v) => {
            let empty = DFSchema::empty();
            v.values
                .iter()
                .filter_map(|row| row.get(i))
                .map(|e| of_expr(e, &empty))
                .find(|s| matches!(s, Source::Typed(_)))
                .unwrap_or(Source::Untyped)
        }
        other => Source::Typed(crate::pg::wire_types::type_name(
            other.schema().field(i).as_ref(),
        )),
    }
}

/// What `e`, computed over rows of `schema`, is: the value without its implicit cast to the
/// column's Arrow type (`5` is an `integer` even where VALUES made it text).
fn of_expr(e: &Expr, schema: &DFSchema) -> Source {
    let e = stored(e);
    if untyped(e) {
        return Source::Untyped;
    }
    // DataFusion types an integer constant `bigint`; Postgres `integer` where it fits (as
    // `super::typing` retypes queries, which leaves INSERT and UPDATE alone).
    if let Expr::Literal(datafusion::common::ScalarValue::Int64(Some(v)), _) = e
        && i32::try_from(*v).is_ok()
    {
        return Source::Typed("integer");
    }
    if let Expr::ScalarFunction(f) = e
        && let Some(declared) = crate::pg::typing::conditional_type(f, schema)
    {
        return Source::Typed(declared);
    }
    match e.to_field(schema) {
        Ok((_, field)) => Source::Typed(crate::pg::wire_types::type_name(&field)),
        // What cannot be typed here fails later with its own error.
        Err(_) => Source::Untyped,
    }
}

fn untyped(e: &Expr) -> bool {
    match e {
        Expr::Placeholder(_) => true,
        Expr::Alias(a) => untyped(&a.expr),
        other => crate::pg::typing::untyped_constant(other),
    }
}
