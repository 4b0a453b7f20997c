//! The declared lengths of text columns, checked on every insert and update as Postgres does.
//!
//! `CHAR(n)` and `VARCHAR(n)` are Arrow strings like `TEXT`; what makes them differ is checked
//! here. A value longer than `n` characters fails with `value too long for type ...` (22001),
//! unless all it has past `n` is blanks, which are cut off. `CHAR(n)` values are stored without
//! trailing blanks (Postgres pads them but ignores the padding in comparisons, `length` and casts
//! to text), so they compare and group as they do in Postgres. A `bpchar` without a length keeps
//! its blanks, as Postgres keeps and prints them.
//!
//! A `jsonb` column's values are put in `jsonb`'s text form here ([`crate::jsonb`]), and a `json`
//! column's are checked to be JSON: text that is no JSON is `22P02`, `\u0000` in `jsonb` `22P05`
//! and a number beyond `numeric` in `jsonb` `22003`, as in Postgres.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use rivulet_engine::EngineError;
use rivulet_engine::error::InvalidTextKind;
use rivulet_engine::table::RowCheck;

use crate::catalog::TableDef;
use crate::types::SqlType;

/// The length check of `def`'s rows; `None` when no column has one.
pub fn check(def: &TableDef) -> Option<Arc<dyn RowCheck>> {
    let columns: Vec<(usize, Length)> = def
        .columns
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match c.sql_type {
            SqlType::Char { len } => Some((i, Length::Char(len))),
            SqlType::Varchar { max_len: Some(n) } => Some((i, Length::Varchar(n))),
            SqlType::Jsonb => Some((i, Length::Jsonb)),
            SqlType::Json => Some((i, Length::Json)),
            SqlType::Uuid => Some((i, Length::Uuid)),
            _ => None,
        })
        .collect();
    (!columns.is_empty()).then(|| Arc::new(Lengths { columns }) as Arc<dyn RowCheck>)
}

#[derive(Debug, Clone, Copy)]
enum Length {
    Char(Option<u32>),
    Varchar(u32),
    /// Not a length: `jsonb`'s text form.
    Jsonb,
    /// Not a length: JSON's grammar.
    Json,
    /// Not a length: `uuid`'s text form.
    Uuid,
}

impl Length {
    fn type_name(self) -> String {
        match self {
            Length::Char(len) => SqlType::Char { len }.pg_name(),
            Length::Varchar(n) => SqlType::Varchar { max_len: Some(n) }.pg_name(),
            Length::Jsonb => SqlType::Jsonb.pg_name(),
            Length::Json => SqlType::Json.pg_name(),
            Length::Uuid => SqlType::Uuid.pg_name(),
        }
    }

    /// `value` as stored, or `None` when it is too long.
    fn apply(self, value: &str) -> Option<&str> {
        let (value, max) = match self {
            Length::Char(Some(n)) => (value.trim_end_matches(' '), Some(n)),
            // `bpchar` without a length keeps its blanks, as in Postgres.
            Length::Char(None) | Length::Jsonb | Length::Json | Length::Uuid => (value, None),
            Length::Varchar(n) => (value, Some(n)),
        };
        let Some(max) = max else {
            return Some(value);
        };
        match value.char_indices().nth(max as usize) {
            None => Some(value),
            Some((cut, _)) => value[cut..]
                .chars()
                .all(|c| c == ' ')
                .then(|| &value[..cut]),
        }
    }
}

struct Lengths {
    columns: Vec<(usize, Length)>,
}

impl RowCheck for Lengths {
    fn check(&self, rows: RecordBatch) -> rivulet_engine::Result<RecordBatch> {
        let mut columns = rows.columns().to_vec();
        for &(i, length) in &self.columns {
            let Some(column) = columns.get(i) else {
                continue;
            };
            if *column.data_type() != DataType::Utf8 {
                continue;
            }
            let strings = column.as_string::<i32>();
            let mut changed = false;
            match length {
                Length::Jsonb => {
                    columns[i] = jsonb_forms(strings)?;
                    continue;
                }
                Length::Json => {
                    for value in strings.iter().flatten() {
                        crate::jsonb::validate(value).map_err(invalid_json)?;
                    }
                    continue;
                }
                Length::Uuid => {
                    columns[i] = uuid_forms(strings)?;
                    continue;
                }
                _ => {}
            }
            let mut out = Vec::with_capacity(strings.len());
            for value in strings.iter() {
                let stored = match value {
                    Some(v) => Some(length.apply(v).ok_or_else(|| EngineError::TooLong {
                        type_name: length.type_name(),
                    })?),
                    None => None,
                };
                changed |= stored.map(str::len) != value.map(str::len);
                out.push(stored);
            }
            if changed {
                columns[i] = Arc::new(StringArray::from(out)) as ArrayRef;
            }
        }
        Ok(RecordBatch::try_new(rows.schema(), columns)?)
    }
}

/// `values` in `jsonb`'s text form.
fn jsonb_forms(values: &StringArray) -> rivulet_engine::Result<ArrayRef> {
    let forms = values
        .iter()
        .map(|v| v.map(crate::jsonb::normalize).transpose())
        .collect::<Result<StringArray, _>>()
        .map_err(invalid_json)?;
    Ok(Arc::new(forms))
}

/// `values` in `uuid`'s text form; 22P02 for a text that is no `uuid`.
fn uuid_forms(values: &StringArray) -> rivulet_engine::Result<ArrayRef> {
    let forms = values
        .iter()
        .map(|v| {
            v.map(|text| {
                crate::uuid::parse(text).ok_or_else(|| EngineError::InvalidText {
                    message: format!("invalid input syntax for type uuid: \"{text}\""),
                    detail: None,
                    kind: InvalidTextKind::Syntax,
                })
            })
            .transpose()
        })
        .collect::<Result<StringArray, _>>()?;
    Ok(Arc::new(forms))
}

/// Why a text is no `json` or `jsonb`, as the engine reports it.
fn invalid_json(e: crate::jsonb::JsonbError) -> EngineError {
    use crate::jsonb::JsonbError;
    let kind = match e {
        JsonbError::Syntax(_) => InvalidTextKind::Syntax,
        JsonbError::NullCharacter => InvalidTextKind::Untranslatable,
        JsonbError::NumericOverflow => InvalidTextKind::OutOfRange,
        JsonbError::TooDeep => InvalidTextKind::TooDeep,
    };
    EngineError::InvalidText {
        message: e.message(),
        detail: e.detail(),
        kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_cut_blanks_and_refuse_the_rest() {
        let char3 = Length::Char(Some(3));
        assert_eq!(char3.apply("ab"), Some("ab"));
        assert_eq!(char3.apply("abc   "), Some("abc"));
        assert_eq!(char3.apply("ab  "), Some("ab"));
        assert_eq!(char3.apply("abcd"), None);
        assert_eq!(char3.apply("äöü"), Some("äöü"));
        let varchar3 = Length::Varchar(3);
        assert_eq!(varchar3.apply("ab "), Some("ab "));
        assert_eq!(varchar3.apply("abc  "), Some("abc"));
        assert_eq!(varchar3.apply("abcd"), None);
        assert_eq!(Length::Char(None).apply("x  "), Some("x  "));
        assert_eq!(char3.type_name(), "character(3)");
        assert_eq!(varchar3.type_name(), "character varying(3)");
    }
}
