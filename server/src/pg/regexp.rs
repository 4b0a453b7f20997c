//! `regexp_split_to_array(text, pattern [, flags])`, Postgres' split of a text at a regular
//! expression's matches (`regexp_split_to_table` is its elements: [`super::set_returning`]), and
//! `regexp_matches(text, pattern [, flags])`'s set as an array (`rivulet_regexp_matches`): each
//! match's capture groups as a `text[]` (the whole match where the pattern has no group, NULL for
//! a group that did not take part), the first match only unless the flags have `g`.
//!
//! As in Postgres, a zero-length match at the start or the end of the text, or right after the
//! previous match, does not split (`regexp_split_to_array('abc', '')` is `{a,b,c}`). The flags
//! are Postgres' `i` (case-insensitive), `c` (case-sensitive), `n`/`m` (newline-sensitive), `s`
//! and `x` (expanded); `g` is refused, as Postgres refuses it here (22023).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, ListBuilder, StringArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};

use crate::error::{SqlError, sqlstate};

/// The pieces of `text` between the matches of `re`, as Postgres splits.
pub fn split<'a>(re: &regex::Regex, text: &'a str) -> Vec<&'a str> {
    let mut pieces = Vec::new();
    let (mut start, mut last_end) = (0, None);
    for m in re.find_iter(text) {
        let empty = m.start() == m.end();
        if empty && (m.start() == 0 || m.start() == text.len() || Some(m.start()) == last_end) {
            continue;
        }
        pieces.push(&text[start..m.start()]);
        start = m.end();
        last_end = Some(m.end());
    }
    pieces.push(&text[start..]);
    pieces
}

/// `pattern` compiled with Postgres' `flags`, where `g` (all matches) is only `kind`'s to take.
fn compile(pattern: &str, flags: &str, kind: Kind) -> Result<regex::Regex, SqlError> {
    let mut builder = regex::RegexBuilder::new(pattern);
    for flag in flags.chars() {
        match flag {
            'i' => builder.case_insensitive(true),
            'c' => builder.case_insensitive(false),
            'n' | 'm' => builder.multi_line(true),
            's' => builder.dot_matches_new_line(true),
            'x' => builder.ignore_whitespace(true),
            'g' if kind == Kind::Matches => &mut builder,
            'g' => {
                return Err(SqlError::new(
                    sqlstate::INVALID_PARAMETER_VALUE,
                    "regexp_split_to_array() does not support the \"global\" option",
                ));
            }
            other => {
                return Err(SqlError::new(
                    sqlstate::INVALID_PARAMETER_VALUE,
                    format!("invalid regular expression option: \"{other}\""),
                ));
            }
        };
    }
    builder.build().map_err(|e| {
        SqlError::new(
            sqlstate::INVALID_REGULAR_EXPRESSION,
            format!("invalid regular expression: {e}"),
        )
    })
}

/// Which function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// `regexp_split_to_array`: the pieces between the matches.
    SplitToArray,
    /// `regexp_matches`' set: each match's groups.
    Matches,
}

/// The name `set_returning.rs` calls for `regexp_matches`.
pub const MATCHES: &str = "rivulet_regexp_matches";

#[derive(Debug, PartialEq, Eq, Hash)]
struct Regexp {
    kind: Kind,
    signature: Signature,
}

/// The `regexp_split_to_array` and `rivulet_regexp_matches` functions.
pub fn udfs() -> [ScalarUDF; 2] {
    [Kind::SplitToArray, Kind::Matches].map(|kind| {
        ScalarUDF::new_from_impl(Regexp {
            kind,
            signature: Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![DataType::Utf8, DataType::Utf8]),
                    TypeSignature::Exact(vec![DataType::Utf8, DataType::Utf8, DataType::Utf8]),
                ],
                Volatility::Immutable,
            ),
        })
    })
}

fn text_list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

impl ScalarUDFImpl for Regexp {
    fn name(&self) -> &str {
        match self.kind {
            Kind::SplitToArray => "regexp_split_to_array",
            Kind::Matches => MATCHES,
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(match self.kind {
            Kind::SplitToArray => text_list(),
            Kind::Matches => DataType::List(Arc::new(Field::new("item", text_list(), true))),
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let texts: Vec<ArrayRef> = (args.args.iter())
            .map(|a| {
                a.to_array(rows)
                    .and_then(|a| Ok(cast(&a, &DataType::Utf8)?))
            })
            .collect::<Result<_>>()?;
        let (text, pattern) = (texts[0].as_string::<i32>(), texts[1].as_string::<i32>());
        let flags = texts.get(2).map(|f| f.as_string::<i32>());
        if self.kind == Kind::Matches {
            return matches(text, pattern, flags);
        }
        let mut out = ListBuilder::new(StringBuilder::new());
        each_row(text, pattern, flags, self.kind, |row| match row {
            None => out.append_null(),
            Some((re, text, _)) => {
                for piece in split(re, text) {
                    out.values().append_value(piece);
                }
                out.append(true);
            }
        })?;
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// Calls `row` with each row's compiled pattern, text and flags, or with `None` where the text,
/// the pattern or the flags are NULL. A pattern compiles once while it stays the same (a
/// constant: once).
fn each_row(
    text: &StringArray,
    pattern: &StringArray,
    flags: Option<&StringArray>,
    kind: Kind,
    mut row: impl FnMut(Option<(&regex::Regex, &str, &str)>),
) -> Result<()> {
    let mut compiled: Option<(String, String, regex::Regex)> = None;
    for i in 0..text.len() {
        let flag = flags.map(|f| (!f.is_null(i)).then(|| f.value(i)));
        if text.is_null(i) || pattern.is_null(i) || flag == Some(None) {
            row(None);
            continue;
        }
        let (p, f) = (pattern.value(i), flag.flatten().unwrap_or(""));
        if !matches!(&compiled, Some((cp, cf, _)) if cp == p && cf == f) {
            let re = compile(p, f, kind).map_err(|e| DataFusionError::External(Box::new(e)))?;
            compiled = Some((p.to_string(), f.to_string(), re));
        }
        if let Some((_, _, re)) = &compiled {
            row(Some((re, text.value(i), f)));
        }
    }
    Ok(())
}

/// `regexp_matches`' sets as arrays, row by row (NULL text, pattern or flags: no row).
fn matches(
    text: &StringArray,
    pattern: &StringArray,
    flags: Option<&StringArray>,
) -> Result<ColumnarValue> {
    let mut out = ListBuilder::new(ListBuilder::new(StringBuilder::new()));
    each_row(text, pattern, flags, Kind::Matches, |row| {
        let Some((re, text, flags)) = row else {
            out.append_null();
            return;
        };
        for captures in re.captures_iter(text) {
            let groups = out.values();
            if captures.len() == 1 {
                groups
                    .values()
                    .append_option(captures.get(0).map(|m| m.as_str()));
            } else {
                for group in captures.iter().skip(1) {
                    groups.values().append_option(group.map(|m| m.as_str()));
                }
            }
            groups.append(true);
            if !flags.contains('g') {
                break;
            }
        }
        out.append(true);
    })?;
    Ok(ColumnarValue::Array(Arc::new(out.finish())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(pattern: &str, text: &str) -> Vec<String> {
        let re = compile(pattern, "", Kind::SplitToArray).unwrap();
        split(&re, text).into_iter().map(String::from).collect()
    }

    /// Postgres 18's answers.
    #[test]
    fn splits_as_postgres() {
        assert_eq!(parts(",", "a,b,,c"), ["a", "b", "", "c"]);
        assert_eq!(parts("", "abc"), ["a", "b", "c"]);
        assert_eq!(
            parts("\\s*", "the quick"),
            ["t", "h", "e", "q", "u", "i", "c", "k"]
        );
        assert_eq!(parts(",", ""), [""]);
        assert_eq!(parts("x", "axbx"), ["a", "b", ""]);
    }
}
