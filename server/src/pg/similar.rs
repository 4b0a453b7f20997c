//! `SIMILAR TO`, Postgres' SQL regular expressions: `x SIMILAR TO p [ESCAPE e]` is `x ~
//! similar_to_escape(p [, e])`, the pattern turned into a POSIX one as Postgres turns it (`%` is
//! `.*`, `_` is `.`, `.`, `^` and `$` are themselves, the escape character makes the next one
//! literal, and the whole is anchored: `F%` is `^(?:F.*)$`). DataFusion read the pattern as a
//! regular expression of its own, so `name SIMILAR TO 'F%'` matched nothing.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::sql::sqlparser::ast;

const NAME: &str = "similar_to_escape";

/// Rewrites each `SIMILAR TO` into a regular expression match of the translated pattern.
pub fn rewrite(stmt: &mut ast::Statement) {
    let _ = ast::visit_expressions_mut(stmt, |expr| {
        if let ast::Expr::SimilarTo {
            negated,
            expr: value,
            pattern,
            escape_char,
        } = expr
        {
            let mut args = vec![pattern.as_ref().clone()];
            if let Some(escape) = escape_char.take() {
                args.push(ast::Expr::Value(escape));
            }
            *expr = ast::Expr::BinaryOp {
                left: Box::new(value.as_ref().clone()),
                op: if *negated {
                    ast::BinaryOperator::PGRegexNotMatch
                } else {
                    ast::BinaryOperator::PGRegexMatch
                },
                right: Box::new(super::rewrite::call(NAME, args, vec![])),
            };
        }
        ControlFlow::<()>::Continue(())
    });
}

/// `similar_to_escape(pattern [, escape])`, as in Postgres.
pub fn udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(SimilarToEscape {
        signature: Signature::one_of(
            vec![
                TypeSignature::Exact(vec![DataType::Utf8]),
                TypeSignature::Exact(vec![DataType::Utf8, DataType::Utf8]),
            ],
            Volatility::Immutable,
        ),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct SimilarToEscape {
    signature: Signature,
}

impl ScalarUDFImpl for SimilarToEscape {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let texts = arrays
            .iter()
            .map(|a| Ok(cast(a, &DataType::Utf8)?.as_string::<i32>().clone()))
            .collect::<Result<Vec<_>>>()?;
        let mut out = StringBuilder::with_capacity(rows, rows * 16);
        for row in 0..rows {
            let Some(pattern) = texts.first().filter(|p| p.is_valid(row)) else {
                out.append_null();
                continue;
            };
            let escape = match texts.get(1) {
                None => Some('\\'),
                Some(e) if e.is_null(row) => {
                    out.append_null();
                    continue;
                }
                Some(e) => {
                    let mut chars = e.value(row).chars();
                    match (chars.next(), chars.next()) {
                        (None, _) => None,
                        (Some(c), None) => Some(c),
                        _ => {
                            return Err(invalid_escape(
                                "invalid escape string",
                                "Escape string must be empty or one character.",
                            ));
                        }
                    }
                }
            };
            out.append_value(to_regex(pattern.value(row), escape));
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// SQL regular expression `pattern` as a POSIX one, anchored, with `escape` making the next
/// character literal.
fn to_regex(pattern: &str, escape: Option<char>) -> String {
    let mut out = String::with_capacity(pattern.len() + 8);
    out.push_str("^(?:");
    let mut chars = pattern.chars();
    let mut in_bracket = false;
    while let Some(c) = chars.next() {
        if Some(c) == escape {
            // A trailing escape character is dropped, as Postgres drops it.
            let Some(next) = chars.next() else {
                break;
            };
            if !next.is_alphanumeric() {
                out.push('\\');
            }
            out.push(next);
            continue;
        }
        if in_bracket {
            in_bracket = c != ']';
            out.push(c);
            continue;
        }
        match c {
            '[' => {
                in_bracket = true;
                out.push('[');
            }
            '%' => out.push_str(".*"),
            '_' => out.push('.'),
            '(' => out.push_str("(?:"),
            '.' | '^' | '$' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push_str(")$");
    out
}

fn invalid_escape(message: &str, hint: &str) -> DataFusionError {
    DataFusionError::External(Box::new(
        crate::error::SqlError::new(crate::error::sqlstate::INVALID_ESCAPE_SEQUENCE, message)
            .with_hint(hint),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Postgres 18's `similar_to_escape`.
    #[test]
    fn patterns_translate_as_postgres_does() {
        let cases = [
            ("F%", Some('\\'), "^(?:F.*)$"),
            (
                "a_b.c|d[x-z]*(e)+",
                Some('\\'),
                "^(?:a.b\\.c|d[x-z]*(?:e)+)$",
            ),
            ("a#%b", Some('#'), "^(?:a\\%b)$"),
            ("a\\_b", Some('\\'), "^(?:a\\_b)$"),
            ("^$", Some('\\'), "^(?:\\^\\$)$"),
            ("a\\b", None, "^(?:a\\\\b)$"),
        ];
        for (pattern, escape, want) in cases {
            assert_eq!(to_regex(pattern, escape), want, "{pattern}");
        }
        assert_eq!(to_regex("ab\\", Some('\\')), "^(?:ab)$");
    }
}
