//! Postgres reads a quoted literal compared with a boolean as a boolean (`indisprimary = 'f'`, in
//! SQLAlchemy 1.4's index query): the literal is of unknown type until its context types it.
//! DataFusion types it as text and refuses `Boolean = Utf8`. This [`ExprPlanner`] turns such a
//! literal into the boolean Postgres reads from it (`t`, `true`, `yes`, `on`, `1` and their false
//! counterparts, any case, surrounding spaces ignored, unique prefixes of the words as Postgres
//! accepts them); anything else is `22P02`, as in Postgres.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{Expr, ExprSchemable, lit};
use datafusion::sql::sqlparser::ast::BinaryOperator;

/// Plans comparisons of a boolean with a quoted literal.
#[derive(Debug, Default)]
pub struct BooleanLiterals;

/// Postgres' `boolin`: the boolean a text stands for.
pub fn parse_bool(text: &str) -> Option<bool> {
    let t = text.trim().to_ascii_lowercase();
    if t.is_empty() {
        return None;
    }
    let prefix_of = |word: &str, min: usize| t.len() >= min && word.starts_with(t.as_str());
    if prefix_of("true", 1) || prefix_of("yes", 1) || prefix_of("on", 2) || t == "1" {
        Some(true)
    } else if prefix_of("false", 1) || prefix_of("no", 1) || prefix_of("off", 2) || t == "0" {
        Some(false)
    } else {
        None
    }
}

/// `e` as a boolean literal, if it is a text literal; an error if the text is no boolean.
fn as_bool(e: &Expr) -> Option<Result<Expr>> {
    let Expr::Literal(ScalarValue::Utf8(Some(text)), _) = e else {
        return None;
    };
    Some(parse_bool(text).map(lit).ok_or_else(|| {
        DataFusionError::Execution(format!("invalid input syntax for type boolean: \"{text}\""))
    }))
}

impl ExprPlanner for BooleanLiterals {
    fn plan_binary_op(
        &self,
        mut expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> Result<PlannerResult<RawBinaryExpr>> {
        use BinaryOperator::*;
        if !matches!(expr.op, Eq | NotEq | Lt | LtEq | Gt | GtEq) {
            return Ok(PlannerResult::Original(expr));
        }
        let boolean = |e: &Expr| matches!(e.get_type(schema), Ok(DataType::Boolean));
        if boolean(&expr.left)
            && let Some(right) = as_bool(&expr.right)
        {
            expr.right = right?;
        } else if boolean(&expr.right)
            && let Some(left) = as_bool(&expr.left)
        {
            expr.left = left?;
        }
        // Planned as usual, now that both sides are booleans.
        Ok(PlannerResult::Original(expr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_booleans_as_postgres_does() {
        for t in ["t", "TRUE", " yes ", "on", "1", "tr", "y"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["f", "False", "no", "off", "0", "of", "n"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        for bad in ["", "o", "maybe", "2", "truee"] {
            assert_eq!(parse_bool(bad), None, "{bad}");
        }
    }
}
