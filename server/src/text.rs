//! Postgres text input for whole columns: strings (from COPY) to Arrow arrays of a column's type.
//!
//! Arrow's vectorized casts already accept Postgres' text forms for numbers, booleans (`t`, `f`,
//! `true`, `yes`, `on`, ...), dates, times and timestamps; `bytea` needs its own decoder for the
//! `\x` hex form (and the legacy escape form).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BinaryBuilder, StringArray};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;

/// Parses a column of strings as `target`. With `opts.safe`, values that do not parse become NULL;
/// otherwise the first one is an error.
pub fn parse_column(
    strings: &ArrayRef,
    target: &DataType,
    opts: &CastOptions,
) -> Result<ArrayRef, ArrowError> {
    match target {
        DataType::Binary => {
            let strings = strings
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| ArrowError::CastError("bytea input is not text".into()))?;
            let mut out =
                BinaryBuilder::with_capacity(strings.len(), strings.value_data().len() / 2);
            for v in strings.iter() {
                match v.map(parse_bytea) {
                    None => out.append_null(),
                    Some(Some(bytes)) => out.append_value(bytes),
                    Some(None) if opts.safe => out.append_null(),
                    Some(None) => {
                        return Err(ArrowError::CastError(format!(
                            "invalid input syntax for type bytea: \"{}\"",
                            v.unwrap_or_default()
                        )));
                    }
                }
            }
            Ok(Arc::new(out.finish()))
        }
        _ => cast_with_options(strings, target, opts),
    }
}

/// Decodes Postgres' bytea text forms: `\x` followed by hex digits, or the escape form where `\\`
/// is a backslash and `\ooo` an octal byte.
pub fn parse_bytea(s: &str) -> Option<Vec<u8>> {
    if let Some(hex) = s.strip_prefix("\\x") {
        let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        if !digits.len().is_multiple_of(2) {
            return None;
        }
        return digits
            .chunks(2)
            .map(|pair| {
                let hi = (pair[0] as char).to_digit(16)?;
                let lo = (pair[1] as char).to_digit(16)?;
                Some((hi * 16 + lo) as u8)
            })
            .collect();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
        } else if bytes.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let oct = bytes.get(i + 1..i + 4)?;
            if !oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                return None;
            }
            let n = oct.iter().fold(0u32, |n, b| n * 8 + u32::from(b - b'0'));
            out.push(u8::try_from(n).ok()?);
            i += 4;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytea_forms() {
        assert_eq!(parse_bytea("\\x4869"), Some(b"Hi".to_vec()));
        assert_eq!(parse_bytea("a\\\\b\\001"), Some(b"a\\b\x01".to_vec()));
        assert_eq!(parse_bytea("\\x4"), None);
        assert_eq!(parse_bytea("\\q"), None);
    }
}
