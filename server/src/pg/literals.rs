//! A quoted literal is of type `unknown` in Postgres until its context types it; DataFusion types
//! it as text. This [`ExprPlanner`] gives the operand of an operator its other operand's type:
//!
//! - compared with a boolean (`indisprimary = 'f'`, in SQLAlchemy 1.4's index query), where
//!   DataFusion refuses `Boolean = Utf8`, it is the boolean Postgres reads from it (`t`, `true`,
//!   `yes`, `on`, `1` and their false counterparts, any case, surrounding spaces ignored, unique
//!   prefixes of the words as Postgres accepts them); anything else is `22P02`, as in Postgres;
//! - in arithmetic with a number, where DataFusion has no operator for text, it is cast to the
//!   number's type (`'1' + 1` is the integer 2, `'a' + 1` fails as `'a'::int` does, `22P02`), or
//!   against a `numeric` to the number it spells, with its own scale (as unquoted). Against a
//!   date, a time or an interval it is left to DataFusion: Postgres picks among several
//!   operators there (`ts + '1 day'` is an interval).
//!
//! - compared with a `character(n)` column, its trailing blanks do not count (`c = 'ab  '`), as
//!   the column's own do not; a `bpchar` without a length keeps its blanks, which do not count in
//!   comparisons either, and are dropped by `||` (its text), as in Postgres.
//!
//! - beside an array (`tags @> '{b}'`, `xs = '{1,2}'`), it is the array it spells;
//!   and arrays overlap (`&&`) as Postgres' operator says, which DataFusion lacks.
//!
//! DataFusion already casts a literal compared with a number or a date to its type.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{Expr, ExprSchemable, cast, lit};
use datafusion::sql::sqlparser::ast::BinaryOperator;

/// Types quoted literals by the other operand of a comparison with a boolean or of arithmetic.
#[derive(Debug, Default)]
pub struct UnknownLiterals;

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

/// `e` as the array it spells (`'{1,2}'`), if it is a text literal beside an array `other`
/// (`xs @> '{2}'`, `xs = '{1,2}'`); an error if the text is no such array (22P02).
fn as_array(e: &Expr, other: &Expr, schema: &DFSchema) -> Option<Result<Expr>> {
    let Expr::Literal(ScalarValue::Utf8(Some(text)), _) = e else {
        return None;
    };
    let t = other.get_type(schema).ok()?;
    if !matches!(t, DataType::List(_) | DataType::LargeList(_)) {
        return None;
    }
    let strings: datafusion::arrow::array::ArrayRef =
        std::sync::Arc::new(datafusion::arrow::array::StringArray::from(vec![
            text.as_str(),
        ]));
    let strict = datafusion::arrow::compute::CastOptions {
        safe: false,
        format_options: Default::default(),
    };
    Some(
        crate::text::parse_column(&strings, &t, &strict)
            .map_err(|_| {
                DataFusionError::External(Box::new(crate::error::SqlError::new(
                    crate::error::sqlstate::INVALID_TEXT_REPRESENTATION,
                    format!("malformed array literal: \"{text}\""),
                )))
            })
            .and_then(|parsed| Ok(lit(ScalarValue::try_from_array(&parsed, 0)?))),
    )
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

impl ExprPlanner for UnknownLiterals {
    fn plan_binary_op(
        &self,
        mut expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> Result<PlannerResult<RawBinaryExpr>> {
        use BinaryOperator::*;
        if matches!(expr.op, Plus | Minus | Multiply | Divide | Modulo) {
            if let Some(left) = as_number(&expr.left, &expr.right, schema) {
                expr.left = left;
            } else if let Some(right) = as_number(&expr.right, &expr.left, schema) {
                expr.right = right;
            }
            return Ok(PlannerResult::Original(expr));
        }
        if expr.op == StringConcat {
            // `||` takes text: a `bpchar` becomes text without its trailing blanks.
            for side in [&mut expr.left, &mut expr.right] {
                if character(side, schema) == Some(false) {
                    *side = without_blanks(side.clone());
                }
            }
            return Ok(PlannerResult::Original(expr));
        }
        if matches!(
            expr.op,
            AtArrow | ArrowAt | PGOverlap | Eq | NotEq | Lt | LtEq | Gt | GtEq
        ) {
            if let Some(left) = as_array(&expr.left, &expr.right, schema) {
                expr.left = left?;
            } else if let Some(right) = as_array(&expr.right, &expr.left, schema) {
                expr.right = right?;
            }
            // Arrays overlap (`&&`) where they have an element in common; DataFusion has no
            // operator for it.
            let is_list = |e: &Expr| {
                matches!(
                    e.get_type(schema),
                    Ok(DataType::List(_) | DataType::LargeList(_))
                )
            };
            // DataFusion's own array planner ran before the literal was an array.
            use datafusion::functions_nested::expr_fn::{array_has_all, array_has_any};
            if is_list(&expr.left) && is_list(&expr.right) {
                match expr.op {
                    PGOverlap => {
                        return Ok(PlannerResult::Planned(array_has_any(expr.left, expr.right)));
                    }
                    AtArrow => {
                        return Ok(PlannerResult::Planned(array_has_all(expr.left, expr.right)));
                    }
                    ArrowAt => {
                        return Ok(PlannerResult::Planned(array_has_all(expr.right, expr.left)));
                    }
                    _ => {}
                }
            }
        }
        if !matches!(expr.op, Eq | NotEq | Lt | LtEq | Gt | GtEq) {
            return Ok(PlannerResult::Original(expr));
        }
        let (left, right) = (
            character(&expr.left, schema),
            character(&expr.right, schema),
        );
        if left.is_some() || right.is_some() {
            // Trailing blanks do not count: a literal's are cut off, and so are the values' of
            // a `bpchar` without a length (those of `character(n)` are stored without them).
            for (side, kind) in [(&mut expr.left, left), (&mut expr.right, right)] {
                if let Some(cut) = without_trailing_blanks(side) {
                    *side = cut;
                } else if kind == Some(false) {
                    *side = without_blanks(side.clone());
                }
            }
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

/// Whether `e` is of type `character`: `Some(true)` with a length (`character(n)`, stored
/// without trailing blanks), `Some(false)` without one (`bpchar`, which keeps them).
fn character(e: &Expr, schema: &DFSchema) -> Option<bool> {
    let (_, f) = e.to_field(schema).ok()?;
    let declared = f.metadata().get(super::wire_types::PG_TYPE)?;
    (declared == "character").then(|| {
        f.metadata()
            .contains_key(rivulet_planner::types::CHAR_LENGTH)
    })
}

/// `e`, a `bpchar`, as text without its trailing blanks.
fn without_blanks(e: Expr) -> Expr {
    datafusion::functions::string::expr_fn::rtrim(vec![e, lit(" ".to_string())])
}

/// `e`, a quoted literal, without its trailing blanks, as `character(n)` compares it (its
/// column's values are stored without theirs); `None` for anything else.
fn without_trailing_blanks(e: &Expr) -> Option<Expr> {
    let Expr::Literal(ScalarValue::Utf8(Some(text)), _) = e else {
        return None;
    };
    Some(lit(text.trim_end_matches(' ').to_string()))
}

/// `e`, a quoted literal, cast to the type Postgres resolves it to in arithmetic with `other`, a
/// number; `None` for anything else.
fn as_number(e: &Expr, other: &Expr, schema: &DFSchema) -> Option<Expr> {
    let Expr::Literal(ScalarValue::Utf8(Some(text)), _) = e else {
        return None;
    };
    // The other operand's type as Postgres has it (`1` is an `integer`, not DataFusion's
    // `bigint`), which the plan's rewrite gives it later.
    let other = super::typing::postgres_type(other, schema).ok()?;
    let target = if other.is_decimal() {
        numeric_type(text).unwrap_or(DataType::Decimal128(38, 10))
    } else if other.is_integer() || other.is_floating() {
        other
    } else {
        return None;
    };
    Some(cast(e.clone(), target))
}

/// The decimal type of the number `text` spells (`'2.555'` is `Decimal128(4, 3)`), as DataFusion
/// types it unquoted; `None` for text that is no plain decimal number, which the cast to an
/// unconstrained `numeric` then refuses as Postgres does.
pub(super) fn numeric_type(text: &str) -> Option<DataType> {
    let text = text.trim();
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let plain = super::typing::without_exponent(unsigned).unwrap_or_else(|| unsigned.to_string());
    let (int, frac) = plain.split_once('.').unwrap_or((&plain, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let scale = i8::try_from(frac.len()).ok().filter(|s| *s <= 38)?;
    let digits = u8::try_from(int.len() + frac.len())
        .ok()
        .filter(|d| *d <= 38)?;
    Some(DataType::Decimal128(digits.max(1), scale))
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

    #[test]
    fn numbers_get_their_own_scale() {
        assert_eq!(numeric_type("2.555"), Some(DataType::Decimal128(4, 3)));
        assert_eq!(numeric_type(" -12 "), Some(DataType::Decimal128(2, 0)));
        assert_eq!(numeric_type("1.5e2"), Some(DataType::Decimal128(3, 0)));
        assert_eq!(numeric_type(".5"), Some(DataType::Decimal128(1, 1)));
        for bad in ["", ".", "x", "1.2.3", "NaN"] {
            assert_eq!(numeric_type(bad), None, "{bad}");
        }
    }
}
