//! Casts to `character(n)` (`'abc'::char(2)`, `CAST(x AS character(4))`, `'a'::char`) and to
//! `character varying(n)` (`status::varchar(2)`): an explicit cast cuts the text to `n`
//! characters, without the error a column's insert gives (`22001`), as in Postgres. The result is kept as a `character(n)` column's values are
//! (`rivulet_planner::lengths`): without trailing blanks, padded to `n` on output, and declared
//! `character(n)` to clients (its length in the field, [`rivulet_planner::types::CHAR_LENGTH`]).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Result, ScalarValue};
use datafusion::functions::string::expr_fn::rtrim;
use datafusion::functions::unicode::expr_fn::left;
use datafusion::logical_expr::expr::Cast;
use datafusion::logical_expr::{Expr, lit};

/// The `n` of a cast's target, when it is `character(n)`.
pub fn length(target: &Field) -> Option<usize> {
    let metadata = target.metadata();
    if metadata.get(rivulet_planner::types::PG_TYPE)? != "character" {
        return None;
    }
    declared_length(target)
}

/// The `n` of a cast's target, when it is `character varying(n)`.
pub fn varying_length(target: &Field) -> Option<usize> {
    let metadata = target.metadata();
    if metadata.get(rivulet_planner::types::PG_TYPE)? != "character varying" {
        return None;
    }
    declared_length(target)
}

/// `cast`, whose target is `character varying(n)`, with its operand cut to `n` characters
/// (blanks kept).
pub fn cast_varying(cast: Cast, n: usize) -> Result<Transformed<Expr>> {
    if let Expr::Literal(ScalarValue::Utf8(Some(text)), _) = cast.expr.as_ref() {
        let cut = text.char_indices().nth(n).map_or(text.len(), |(at, _)| at);
        return Ok(Transformed::yes(Expr::Cast(Cast::new_from_field(
            Box::new(lit(text[..cut].to_string())),
            cast.field,
        ))));
    }
    let field = Arc::clone(&cast.field);
    let text = Expr::Cast(Cast::new(Box::new(Expr::Cast(cast)), DataType::Utf8));
    Ok(Transformed::yes(Expr::Cast(Cast::new_from_field(
        Box::new(left(text, lit(n as i64))),
        field,
    ))))
}

/// The `n` of a `character(n)` or `character varying(n)` field.
pub fn declared_length(field: &Field) -> Option<usize> {
    field
        .metadata()
        .get(rivulet_planner::types::CHAR_LENGTH)?
        .parse()
        .ok()
}

/// `text` as `character(n)` keeps it: its first `n` characters without trailing blanks.
pub fn value(text: &str, n: usize) -> String {
    let cut = text.char_indices().nth(n).map_or(text.len(), |(at, _)| at);
    text[..cut].trim_end_matches(' ').to_string()
}

/// `cast`, whose target is `character(n)`, with its operand cut to `n` characters and its
/// trailing blanks dropped: a constant now, anything else when it runs.
pub fn cast(cast: Cast, n: usize) -> Result<Transformed<Expr>> {
    if let Expr::Literal(ScalarValue::Utf8(Some(text)), _) = cast.expr.as_ref() {
        return Ok(Transformed::yes(Expr::Cast(Cast::new_from_field(
            Box::new(lit(value(text, n))),
            cast.field,
        ))));
    }
    let field = Arc::clone(&cast.field);
    // The cast to text stays inside, so that `$1::char(4)` is still described as `character`.
    let text = Expr::Cast(Cast::new(Box::new(Expr::Cast(cast)), DataType::Utf8));
    let cut = rtrim(vec![left(text, lit(n as i64)), lit(" ".to_string())]);
    Ok(Transformed::yes(Expr::Cast(Cast::new_from_field(
        Box::new(cut),
        field,
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_and_drops_blanks() {
        assert_eq!(value("abc", 2), "ab");
        assert_eq!(value("a   ", 2), "a");
        assert_eq!(value("äöü", 2), "äö");
        assert_eq!(value("", 3), "");
        assert_eq!(value("ab", 4), "ab");
    }
}
