//! `jsonb`'s text form. Rivulet keeps a `jsonb` value as text, in the form Postgres prints it
//! (its binary form printed): object keys ordered by length, then bytewise, the last of
//! duplicate keys kept, `": "` after keys and `", "` between members, strings re-escaped, and
//! numbers as `numeric` prints them (`1e2` is `100`, `-0` is `0`). Values are put in this form
//! where they become `jsonb` (a cast, a `jsonb` column's insert or update), so output, `->`,
//! comparisons and grouping all see it. `json` keeps its text as written, as in Postgres.
//!
//! The parser follows Postgres' JSON grammar (RFC 8259: no leading zeros, no `.5`, only `true`,
//! `false` and `null`, no control characters in strings) and its `jsonb` rules: `\u0000` is
//! refused, surrogate escapes must pair, and numbers must fit `numeric`. [`validate`] checks a
//! `json` value, which keeps its text: only the grammar applies there, as in Postgres' `json_in`.
//! Errors carry Postgres' detail (`Expected JSON value, but found "]".`).

use std::fmt::Write as _;

/// How deep arrays and objects may nest (Postgres' bound is its stack; this one keeps ours).
pub const MAX_DEPTH: usize = 1000;

/// Why a text is no `jsonb`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonbError {
    /// Not JSON: Postgres' `invalid input syntax for type json` (22P02), with this detail.
    Syntax(String),
    /// `\u0000`, which text cannot hold (22P05).
    NullCharacter,
    /// A number beyond `numeric`'s range (131072 digits before the point, 16383 after; 22003).
    NumericOverflow,
    /// Nested deeper than [`MAX_DEPTH`] (54001).
    TooDeep,
}

impl JsonbError {
    /// The error's primary message, in Postgres' words.
    pub fn message(&self) -> String {
        match self {
            JsonbError::Syntax(_) => "invalid input syntax for type json".into(),
            JsonbError::NullCharacter => "unsupported Unicode escape sequence".into(),
            JsonbError::NumericOverflow => "value overflows numeric format".into(),
            JsonbError::TooDeep => "stack depth limit exceeded".into(),
        }
    }

    /// The detail Postgres gives, if any.
    pub fn detail(&self) -> Option<String> {
        match self {
            JsonbError::Syntax(d) => Some(d.clone()),
            JsonbError::NullCharacter => Some("\\u0000 cannot be converted to text.".into()),
            _ => None,
        }
    }
}

/// `text`, a JSON document, in `jsonb`'s text form.
pub fn normalize(text: &str) -> Result<String, JsonbError> {
    let value = parse(text, false)?;
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    value.write(&mut out);
    Ok(out)
}

/// `text` as a `jsonb` value, taken apart: what `jsonb`'s operators and functions work on.
pub fn parse_jsonb(text: &str) -> Result<Value, JsonbError> {
    parse(text, false)
}

/// Whether `text` is a `json` value: JSON's grammar only (`\u0000`, a lone surrogate escape and
/// a number beyond `numeric` are `json`, though no `jsonb`).
pub fn validate(text: &str) -> Result<(), JsonbError> {
    parse(text, true).map(|_| ())
}

/// `text` parsed as one JSON document; `json` for `json`'s rules rather than `jsonb`'s.
fn parse(text: &str, json: bool) -> Result<Value, JsonbError> {
    let mut p = Parser {
        text: text.as_bytes(),
        at: 0,
        json,
    };
    let value = p.value(0, "JSON value")?;
    p.blanks();
    if p.at < p.text.len() {
        return Err(p.expected("end of input"));
    }
    Ok(value)
}

/// A parsed value; strings are unescaped, numbers already in `numeric`'s form, an object's
/// members in `jsonb`'s order ([`Value::object`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Value>),
    Object(Vec<(String, Value)>),
}

impl Value {
    /// An object of `members` in `jsonb`'s order: shorter keys first, then bytewise; of equal
    /// keys the last one stays.
    pub fn object(mut members: Vec<(String, Value)>) -> Value {
        members.reverse();
        members.sort_by(|(a, _), (b, _)| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
        members.dedup_by(|later, earlier| later.0 == earlier.0);
        Value::Object(members)
    }

    /// The value in `jsonb`'s text form.
    pub fn text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    /// The value written into `out` in `jsonb`'s text form.
    pub fn write(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => out.push_str(n),
            Value::String(s) => escape(s, out),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Value::Object(members) => {
                out.push('{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    escape(key, out);
                    out.push_str(": ");
                    value.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// `s` as a JSON string, escaped as Postgres' `escape_json` does.
pub fn escape(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

struct Parser<'a> {
    text: &'a [u8],
    at: usize,
    /// `json`'s rules: the grammar only, values as they come (see [`validate`]).
    json: bool,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// The token at the current position, as Postgres names it in its detail.
    fn token(&self) -> String {
        let rest = &self.text[self.at.min(self.text.len())..];
        let end = rest
            .iter()
            .position(|b| !b.is_ascii_alphanumeric() && *b < 0x80)
            .unwrap_or(rest.len())
            .max(1)
            .min(rest.len());
        String::from_utf8_lossy(&rest[..end]).into_owned()
    }

    fn unexpected(&self) -> JsonbError {
        if self.at >= self.text.len() {
            JsonbError::Syntax("The input string ended unexpectedly.".into())
        } else {
            JsonbError::Syntax(format!("Token \"{}\" is invalid.", self.token()))
        }
    }

    /// The error where `what` was expected, as Postgres words it: a token JSON has elsewhere
    /// (`]`, a string, a number) is "found" there; anything else is an invalid token.
    fn expected(&self, what: &str) -> JsonbError {
        let at = self.at;
        let end = match self.peek() {
            Some(b'{' | b'}' | b'[' | b']' | b',' | b':') => Some(at + 1),
            Some(b'"') => {
                let mut p = Parser { at, ..*self };
                p.json = true;
                p.string().ok().map(|_| p.at)
            }
            Some(b'-' | b'0'..=b'9') => {
                let mut p = Parser { at, ..*self };
                p.json = true;
                p.number().ok().map(|_| p.at)
            }
            Some(_) => ["true", "false", "null"].iter().find_map(|w| {
                let end = at + w.len();
                (self.text[at..].starts_with(w.as_bytes())
                    && !self
                        .text
                        .get(end)
                        .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_'))
                .then_some(end)
            }),
            None => None,
        };
        match end {
            Some(end) => JsonbError::Syntax(format!(
                "Expected {what}, but found \"{}\".",
                String::from_utf8_lossy(&self.text[at..end])
            )),
            None => self.unexpected(),
        }
    }

    /// A value, where `what` (Postgres' words) was expected.
    fn value(&mut self, depth: usize, what: &str) -> Result<Value, JsonbError> {
        if depth > MAX_DEPTH {
            return Err(JsonbError::TooDeep);
        }
        self.blanks();
        match self.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(Value::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') if self.text[self.at..].starts_with(b"true") => {
                self.word(4, Value::Bool(true))
            }
            Some(b'f') if self.text[self.at..].starts_with(b"false") => {
                self.word(5, Value::Bool(false))
            }
            Some(b'n') if self.text[self.at..].starts_with(b"null") => self.word(4, Value::Null),
            _ => Err(self.expected(what)),
        }
    }

    /// A keyword of `len` bytes, which must end there (`truex` is one invalid token).
    fn word(&mut self, len: usize, value: Value) -> Result<Value, JsonbError> {
        if self
            .text
            .get(self.at + len)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
        {
            return Err(self.unexpected());
        }
        self.at += len;
        Ok(value)
    }

    fn object(&mut self, depth: usize) -> Result<Value, JsonbError> {
        self.at += 1;
        let mut members: Vec<(String, Value)> = Vec::new();
        self.blanks();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(Value::Object(members));
        }
        let mut key_expected = "string or \"}\"";
        loop {
            self.blanks();
            if self.peek() != Some(b'"') {
                return Err(self.expected(key_expected));
            }
            key_expected = "string";
            let key = self.string()?;
            self.blanks();
            if self.peek() != Some(b':') {
                return Err(self.expected("\":\""));
            }
            self.at += 1;
            let value = self.value(depth + 1, "JSON value")?;
            members.push((key, value));
            self.blanks();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    break;
                }
                _ => return Err(self.expected("\",\" or \"}\"")),
            }
        }
        Ok(Value::object(members))
    }

    fn array(&mut self, depth: usize) -> Result<Value, JsonbError> {
        self.at += 1;
        let mut items = Vec::new();
        self.blanks();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(Value::Array(items));
        }
        let mut what = "array element or \"]\"";
        loop {
            items.push(self.value(depth + 1, what)?);
            what = "JSON value";
            self.blanks();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.expected("\",\" or \"]\"")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, JsonbError> {
        let digits = self.text.get(self.at..self.at + 4).ok_or_else(|| {
            JsonbError::Syntax("\"\\u\" must be followed by four hexadecimal digits.".into())
        })?;
        let text = std::str::from_utf8(digits).ok();
        let code = text
            .filter(|t| t.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|t| u32::from_str_radix(t, 16).ok())
            .ok_or_else(|| {
                JsonbError::Syntax("\"\\u\" must be followed by four hexadecimal digits.".into())
            })?;
        self.at += 4;
        Ok(code)
    }

    fn string(&mut self) -> Result<String, JsonbError> {
        self.at += 1;
        let mut out: Vec<u8> = Vec::new();
        let mut high: Option<u32> = None;
        loop {
            let Some(b) = self.peek() else {
                return Err(self.unexpected());
            };
            if b != b'\\' && high.is_some() {
                return Err(low_surrogate_expected());
            }
            match b {
                b'"' => {
                    self.at += 1;
                    break;
                }
                b'\\' => {
                    self.at += 1;
                    let Some(e) = self.peek() else {
                        return Err(self.unexpected());
                    };
                    self.at += 1;
                    if e != b'u' && high.is_some() {
                        return Err(low_surrogate_expected());
                    }
                    let simple = match e {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'b' => 8,
                        b'f' => 12,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'u' => {
                            let code = self.hex4()?;
                            if self.json {
                                // `json` keeps the escape as written, whatever it stands for.
                                continue;
                            }
                            let c = match (high.take(), code) {
                                (None, 0xD800..=0xDBFF) => {
                                    high = Some(code);
                                    continue;
                                }
                                (Some(_), 0xD800..=0xDBFF) => {
                                    return Err(JsonbError::Syntax(
                                        "Unicode high surrogate must not follow a high \
                                         surrogate."
                                            .into(),
                                    ));
                                }
                                (Some(h), 0xDC00..=0xDFFF) => {
                                    0x10000 + ((h - 0xD800) << 10) + (code - 0xDC00)
                                }
                                (Some(_), _) => return Err(low_surrogate_expected()),
                                (None, 0xDC00..=0xDFFF) => {
                                    return Err(JsonbError::Syntax(
                                        "Unicode low surrogate must follow a high surrogate."
                                            .into(),
                                    ));
                                }
                                (None, 0) => return Err(JsonbError::NullCharacter),
                                (None, c) => c,
                            };
                            let c = char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER);
                            let mut buf = [0; 4];
                            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                            continue;
                        }
                        _ => {
                            let shown = String::from_utf8_lossy(
                                &self.text[self.at - 2..(self.at).min(self.text.len())],
                            )
                            .into_owned();
                            return Err(JsonbError::Syntax(format!(
                                "Escape sequence \"{shown}\" is invalid."
                            )));
                        }
                    };
                    out.push(simple);
                }
                b if b < 0x20 => {
                    let c = char::from(b);
                    return Err(JsonbError::Syntax(format!(
                        "Character with value 0x{:02x} must be escaped.",
                        c as u32
                    )));
                }
                b => {
                    out.push(b);
                    self.at += 1;
                }
            }
        }
        // The input is a Rust string and escapes add whole characters: `out` is UTF-8.
        String::from_utf8(out).map_err(|_| JsonbError::Syntax("Invalid UTF-8.".into()))
    }

    /// A number, in `numeric`'s text form.
    fn number(&mut self) -> Result<Value, JsonbError> {
        let start = self.at;
        let digits = |p: &mut Self| {
            let from = p.at;
            while matches!(p.peek(), Some(b'0'..=b'9')) {
                p.at += 1;
            }
            p.at - from
        };
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        let int_start = self.at;
        let int_len = digits(self);
        let leading_zero = int_len > 1 && self.text[int_start] == b'0';
        let mut frac = (self.at, 0);
        let mut ok = int_len > 0 && !leading_zero;
        if ok && self.peek() == Some(b'.') {
            self.at += 1;
            frac = (self.at, digits(self));
            ok = frac.1 > 0;
        }
        let mut exponent: i64 = 0;
        if ok && matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            let sign = match self.peek() {
                Some(b'-') => {
                    self.at += 1;
                    -1
                }
                Some(b'+') => {
                    self.at += 1;
                    1
                }
                _ => 1,
            };
            let exp_start = self.at;
            let len = digits(self);
            ok = len > 0;
            let text = std::str::from_utf8(&self.text[exp_start..self.at]).unwrap_or("");
            // Far past `numeric`'s range either way; a longer exponent must not overflow here.
            exponent = sign
                * text
                    .parse::<i64>()
                    .unwrap_or(MAX_EXPONENT)
                    .min(MAX_EXPONENT);
        }
        // A number runs into the next token: `1x` and `01` are one invalid token.
        if !ok
            || self
                .peek()
                .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
        {
            self.at = start;
            return Err(self.unexpected());
        }
        if self.json {
            // `json` keeps the number as written: no `numeric` needs to hold it.
            return Ok(Value::Number(String::new()));
        }
        let int = &self.text[int_start..int_start + int_len];
        let frac = &self.text[frac.0..frac.0 + frac.1];
        numeric_text(negative, int, frac, exponent).map(Value::Number)
    }
}

fn low_surrogate_expected() -> JsonbError {
    JsonbError::Syntax("Unicode low surrogate must follow a high surrogate.".into())
}

/// An exponent larger than any `numeric` has, where a written one does not fit `i64`.
const MAX_EXPONENT: i64 = 1 << 40;

/// The number `±int.frac × 10^exponent` as `numeric` prints it: its scale is the decimals written
/// less the exponent (at least 0), no leading zeros, no sign on zero; past `numeric`'s 131072
/// digits before the point or 16383 after it, an overflow, as in Postgres.
fn numeric_text(
    negative: bool,
    int: &[u8],
    frac: &[u8],
    exponent: i64,
) -> Result<String, JsonbError> {
    let digits: Vec<u8> = int.iter().chain(frac).copied().collect();
    // The decimal point's place in `digits`.
    let point = int.len() as i64 + exponent;
    let scale = (frac.len() as i64 - exponent).max(0);
    let first = digits.iter().position(|d| *d != b'0');
    let whole_digits = first.map_or(0, |f| (point - f as i64).max(0));
    if scale > 16383 || whole_digits > 131072 {
        return Err(JsonbError::NumericOverflow);
    }
    let scale = scale as usize;
    // From the first digit that is not a zero: at most 131072 of them.
    let whole: String = match first {
        Some(f) => (f as i64..point)
            .map(|i| char::from(*digits.get(i as usize).unwrap_or(&b'0')))
            .collect(),
        None => String::new(),
    };
    let fraction: String = (0..scale as i64)
        .map(|i| {
            let at = point + i;
            match usize::try_from(at) {
                Ok(at) => char::from(*digits.get(at).unwrap_or(&b'0')),
                Err(_) => '0',
            }
        })
        .collect();
    let zero = digits.iter().all(|d| *d == b'0');
    let mut out = String::new();
    if negative && !zero {
        out.push('-');
    }
    out.push_str(if whole.is_empty() { "0" } else { &whole });
    if scale > 0 {
        out.push('.');
        out.push_str(&fraction);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_as_postgres_prints_jsonb() {
        let cases = [
            (r#"{"b":1, "a":  [1,2]}"#, r#"{"a": [1, 2], "b": 1}"#),
            (
                r#"{"aa": 1, "b": 2, "a": 3}"#,
                r#"{"a": 3, "b": 2, "aa": 1}"#,
            ),
            (r#"{"a": 1, "a": 2}"#, r#"{"a": 2}"#),
            (r#" [ ] "#, "[]"),
            ("{}", "{}"),
            (r#""\u0041\/\n\u001f""#, r#""A/\n\u001f""#),
            (r#""\ud83d\ude00""#, "\"\u{1F600}\""),
            ("1e2", "100"),
            ("1.50", "1.50"),
            ("-0", "0"),
            ("-0.0", "0.0"),
            ("1.5E-3", "0.0015"),
            ("12.5e1", "125"),
            ("0.001e+2", "0.1"),
            ("-12", "-12"),
            ("0e999999999", "0"),
            ("0.00e1", "0.0"),
            ("[true,false,null]", "[true, false, null]"),
            (r#"{"a":{"y":1,"x":[{}]}}"#, r#"{"a": {"x": [{}], "y": 1}}"#),
        ];
        for (text, expected) in cases {
            assert_eq!(normalize(text).as_deref(), Ok(expected), "{text}");
        }
    }

    #[test]
    fn refuses_what_postgres_refuses() {
        for bad in [
            "",
            "01",
            ".5",
            "1.",
            "1e",
            "-",
            "tru",
            "truex",
            "[1,]",
            "{\"a\"}",
            "{a: 1}",
            "[1] x",
            "'a'",
            "\"a",
            "\"\t\"",
            "\"\\x\"",
            "NaN",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "{\"a\":1,}",
        ] {
            assert!(
                matches!(normalize(bad), Err(JsonbError::Syntax(_))),
                "{bad:?}: {:?}",
                normalize(bad)
            );
        }
        assert_eq!(normalize("\"\\u0000\""), Err(JsonbError::NullCharacter));
        assert_eq!(normalize("1e131071").map(|n| n.len()), Ok(131072));
        assert_eq!(normalize("1.5e-16382").map(|n| n.len()), Ok(16385));
        for overflow in ["1e131072", "1e-16384", "1e999999999999999999999"] {
            assert_eq!(
                normalize(overflow),
                Err(JsonbError::NumericOverflow),
                "{overflow}"
            );
        }
        let deep = "[".repeat(MAX_DEPTH + 2);
        assert_eq!(normalize(&deep), Err(JsonbError::TooDeep));
    }

    #[test]
    fn json_takes_the_grammar_only() {
        for good in [
            "\"\\u0000\"",
            "\"\\ud800x\"",
            "1e1000000",
            " [1] ",
            "{\"a\":1,\"a\":2}",
        ] {
            assert_eq!(validate(good), Ok(()), "{good}");
        }
        // Details from PostgreSQL 18.
        let cases = [
            ("[1,]", "Expected JSON value, but found \"]\"."),
            ("[,1]", "Expected array element or \"]\", but found \",\"."),
            ("[1 2]", "Expected \",\" or \"]\", but found \"2\"."),
            ("{\"a\":1,}", "Expected string, but found \"}\"."),
            ("{1:2}", "Expected string or \"}\", but found \"1\"."),
            ("{\"a\" 1}", "Expected \":\", but found \"1\"."),
            (
                "{\"a\":1 \"b\"}",
                "Expected \",\" or \"}\", but found \"\"b\"\".",
            ),
            ("[1] 2", "Expected end of input, but found \"2\"."),
            ("[1] x", "Token \"x\" is invalid."),
            ("01", "Token \"01\" is invalid."),
            ("", "The input string ended unexpectedly."),
            ("\"\\q\"", "Escape sequence \"\\q\" is invalid."),
        ];
        for (text, detail) in cases {
            assert_eq!(
                validate(text),
                Err(JsonbError::Syntax(detail.into())),
                "{text}"
            );
            assert_eq!(normalize(text), Err(JsonbError::Syntax(detail.into())));
        }
    }
}
