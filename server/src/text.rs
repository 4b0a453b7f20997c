//! Postgres text input for whole columns: strings (from COPY) to Arrow arrays of a column's type.
//!
//! Arrow's vectorized casts already accept Postgres' text forms for numbers, booleans (`t`, `f`,
//! `true`, `yes`, `on`, ...), dates, times and timestamps; `bytea` needs its own decoder for the
//! `\x` hex form (and the legacy escape form). Arrays (`{1,NULL,"a b"}`) are split into their
//! elements here, which are then parsed as a column of the element type, so an array's elements
//! read exactly as values of that type do.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BinaryBuilder, LargeListArray, ListArray, StringArray,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, FieldRef};
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
        DataType::List(item) | DataType::LargeList(item) => {
            parse_arrays(strings, target, item, opts)
        }
        _ => cast_with_options(strings, target, opts),
    }
}

/// Parses a column of Postgres array literals as `target`, a list of `item`s. With `opts.safe`, an
/// array that does not parse, or has an element that does not, is NULL.
fn parse_arrays(
    strings: &ArrayRef,
    target: &DataType,
    item: &FieldRef,
    opts: &CastOptions,
) -> Result<ArrayRef, ArrowError> {
    let strings = strings
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| ArrowError::CastError("array input is not text".into()))?;
    let nested = matches!(item.data_type(), DataType::List(_) | DataType::LargeList(_));
    let mut elements: Vec<Option<String>> = Vec::new();
    let mut lengths = Vec::with_capacity(strings.len());
    let mut valid = Vec::with_capacity(strings.len());
    for text in strings.iter() {
        let parsed = text.map(|t| (t, array_elements(t, nested)));
        match parsed {
            None => {
                lengths.push(0);
                valid.push(false);
            }
            Some((_, Some(items))) => {
                lengths.push(items.len());
                valid.push(true);
                elements.extend(items);
            }
            Some((_, None)) if opts.safe => {
                lengths.push(0);
                valid.push(false);
            }
            Some((t, None)) => {
                return Err(ArrowError::CastError(format!(
                    "malformed array literal: \"{t}\""
                )));
            }
        }
    }
    let texts: ArrayRef = Arc::new(StringArray::from(elements));
    let values = parse_column(&texts, item.data_type(), opts)?;
    if opts.safe {
        // An element that did not parse makes its whole array NULL, as its error would have.
        let mut at = 0;
        for (len, valid) in lengths.iter().zip(valid.iter_mut()) {
            if (at..at + len).any(|i| texts.is_valid(i) && values.is_null(i)) {
                *valid = false;
            }
            at += len;
        }
    }
    let offsets = lengths.iter().copied();
    let nulls = Some(NullBuffer::from(valid));
    Ok(match target {
        DataType::LargeList(_) => Arc::new(LargeListArray::try_new(
            Arc::clone(item),
            OffsetBuffer::from_lengths(offsets),
            values,
            nulls,
        )?),
        _ => Arc::new(ListArray::try_new(
            Arc::clone(item),
            OffsetBuffer::from_lengths(offsets),
            values,
            nulls,
        )?),
    })
}

/// Whitespace around array elements, as Postgres' `array_isspace` has it.
fn is_array_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// The elements of a one-dimensional Postgres array literal (`{1, NULL, "a \"b\""}`): an unquoted
/// `NULL` is NULL; quotes and backslashes are removed. When `nested`, the elements are arrays
/// themselves and each one's text (`{1,2}`) is returned whole. `None` when `text` is not such a
/// literal (including a nested array where none belongs, and the reverse).
pub fn array_elements(text: &str, nested: bool) -> Option<Vec<Option<String>>> {
    let b = text.as_bytes();
    let skip_space = |mut i: usize| {
        while b.get(i).is_some_and(|&c| is_array_space(c)) {
            i += 1;
        }
        i
    };
    let mut i = skip_space(0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_space(i + 1);
    let mut out = Vec::new();
    if b.get(i) == Some(&b'}') {
        return (skip_space(i + 1) == b.len()).then_some(out);
    }
    loop {
        i = skip_space(i);
        match *b.get(i)? {
            b'{' if nested => {
                let end = i + nested_end(&b[i..])?;
                out.push(Some(text.get(i..end)?.to_string()));
                i = end;
            }
            b'{' => return None,
            b'"' => {
                let mut value = Vec::new();
                i += 1;
                loop {
                    match *b.get(i)? {
                        b'"' => break,
                        b'\\' => {
                            value.push(*b.get(i + 1)?);
                            i += 2;
                        }
                        c => {
                            value.push(c);
                            i += 1;
                        }
                    }
                }
                i += 1;
                if nested {
                    return None;
                }
                out.push(Some(String::from_utf8(value).ok()?));
            }
            _ => {
                let mut value = Vec::new();
                // Up to the last byte that was escaped or not space: trailing space is dropped.
                let mut kept = 0;
                let mut escaped = false;
                loop {
                    match *b.get(i)? {
                        b',' | b'}' => break,
                        b'{' | b'"' => return None,
                        b'\\' => {
                            value.push(*b.get(i + 1)?);
                            kept = value.len();
                            escaped = true;
                            i += 2;
                        }
                        c => {
                            value.push(c);
                            if !is_array_space(c) {
                                kept = value.len();
                            }
                            i += 1;
                        }
                    }
                }
                value.truncate(kept);
                if value.is_empty() {
                    return None;
                }
                if !escaped && value.eq_ignore_ascii_case(b"null") {
                    out.push(None);
                } else if nested {
                    return None;
                } else {
                    out.push(Some(String::from_utf8(value).ok()?));
                }
            }
        }
        i = skip_space(i);
        match *b.get(i)? {
            b',' => i += 1,
            b'}' => return (skip_space(i + 1) == b.len()).then_some(out),
            _ => return None,
        }
    }
}

/// The length of the nested array literal `b` starts with, through its closing brace.
fn nested_end(b: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    let mut quoted = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'"' => quoted = !quoted,
            b'{' if !quoted => depth += 1,
            b'}' if !quoted => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
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

    fn elements(text: &str) -> Option<Vec<Option<&str>>> {
        // Leaked for the comparison's convenience; a test only.
        array_elements(text, false).map(|v| {
            v.into_iter()
                .map(|e| e.map(|s| &*Box::leak(s.into_boxed_str())))
                .collect()
        })
    }

    #[test]
    fn array_literals_split_like_postgres() {
        assert_eq!(elements("{}"), Some(vec![]));
        assert_eq!(elements(" { } "), Some(vec![]));
        assert_eq!(
            elements(r#"{1, NULL ,"NULL", a b ,"x\"y",\NULL, null}"#),
            Some(vec![
                Some("1"),
                None,
                Some("NULL"),
                Some("a b"),
                Some("x\"y"),
                Some("NULL"),
                None
            ])
        );
        assert_eq!(elements(r#"{"", "{"}"#), Some(vec![Some(""), Some("{")]));
        for bad in [
            "", "1,2", "{1,2", "{1,,2}", "{1}x", "{{1}}", "{a\"b}", "{1 2",
        ] {
            assert_eq!(elements(bad), None, "{bad}");
        }
        assert_eq!(
            array_elements(r#"{{1,"}"},NULL, {}}"#, true),
            Some(vec![Some(r#"{1,"}"}"#.into()), None, Some("{}".into())])
        );
        assert_eq!(array_elements("{1}", true), None);
    }

    #[test]
    fn arrays_parse_as_lists_of_their_element_type() {
        use datafusion::arrow::array::{AsArray, Int32Array};
        use datafusion::arrow::datatypes::Int32Type;
        let strings: ArrayRef = Arc::new(StringArray::from(vec![
            Some("{1,NULL,3}"),
            None,
            Some("{}"),
            Some("{x}"),
        ]));
        let target = DataType::new_list(DataType::Int32, true);
        let strict = CastOptions {
            safe: false,
            ..CastOptions::default()
        };
        assert!(parse_column(&strings, &target, &strict).is_err());
        let parsed = parse_column(&strings, &target, &CastOptions::default()).unwrap();
        let lists = parsed.as_list::<i32>();
        assert_eq!(
            lists.value(0).as_primitive::<Int32Type>(),
            &Int32Array::from(vec![Some(1), None, Some(3)])
        );
        assert!(lists.is_null(1));
        assert_eq!(lists.value(2).len(), 0);
        assert!(
            lists.is_null(3),
            "an element that does not parse nulls its array"
        );
        let nested = DataType::new_list(target, true);
        let strings: ArrayRef = Arc::new(StringArray::from(vec!["{{1,2},NULL,{}}"]));
        let parsed = parse_column(&strings, &nested, &strict).unwrap();
        assert_eq!(parsed.as_list::<i32>().value(0).len(), 3);
    }
}
