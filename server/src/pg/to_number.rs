//! Postgres' `to_number(text, template)`: the number a text shows, read the way the template
//! lays it out, as Postgres' `NUM_processor` reads it (`formatting.c`), position by position:
//!
//! - each `9` or `0` reads one character: a digit, or before the first digit a sign (`-`, `+`,
//!   or `<` under `PR`, which makes the number negative; the closing `>` is never read); one
//!   blank before it is skipped; a character that is neither is passed over;
//! - `.` or `D` reads the decimal point if the text has it there (a digit there is read as one);
//! - `,` or `G` skips a comma if the text has one there, `MI`, `PL`, `SG` read a sign there, `S`
//!   reads one just before the first digit or just after the last, `L` and `TH` skip characters
//!   that are not digits, signs, commas or points; `FM`, `PR`, `B`, `V` read nothing;
//! - any other template character skips one character of the text, whatever it is.
//!
//! So `to_number('<12>', '99PR')` is -12 and `to_number('(12)', '99PR')` is 1: the `(` is read
//! by the first `9` and passed over. A text without a digit is `22P02`; more integer digits than
//! the template's positions cannot be read; `V` divides by ten per `9` after it. The result is a
//! NUMERIC with as many decimals as the template has fraction positions (Postgres': as many as
//! the text had); with `V`, 16 more, as Postgres' division by a power of ten gives them
//! (`to_number('12', '99V9')` is `1.20000000000000000`). `RN` (Roman numerals) is not supported.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Decimal128Builder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};

use crate::error::{SqlError, sqlstate};

/// The `to_number` function.
pub fn udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(ToNumber {
        signature: Signature::exact(vec![DataType::Utf8, DataType::Utf8], Volatility::Immutable),
    })
}

/// A template pattern (Postgres' `NUM_keywords`); `Char` is any other character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Comma,
    Point,
    Zero,
    Nine,
    Blank,
    Currency,
    Decimal,
    Exponent,
    Fill,
    Group,
    Local,
    Minus,
    Plus,
    Brackets,
    Roman,
    SignAny,
    Spell,
    Sign,
    Ordinal,
    Shift,
    Char,
}

/// The patterns in Postgres' order of trial: the first that the template continues with wins.
const PATTERNS: &[(&str, Node)] = &[
    (",", Node::Comma),
    (".", Node::Point),
    ("0", Node::Zero),
    ("9", Node::Nine),
    ("B", Node::Blank),
    ("C", Node::Currency),
    ("D", Node::Decimal),
    ("EEEE", Node::Exponent),
    ("FM", Node::Fill),
    ("G", Node::Group),
    ("L", Node::Local),
    ("MI", Node::Minus),
    ("PL", Node::Plus),
    ("PR", Node::Brackets),
    ("RN", Node::Roman),
    ("SG", Node::SignAny),
    ("SP", Node::Spell),
    ("S", Node::Sign),
    ("TH", Node::Ordinal),
    ("V", Node::Shift),
];

/// What a template says about the numbers it reads (Postgres' `NUMDesc`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Layout {
    nodes: Vec<Node>,
    /// Digit positions before the decimal point, after it, and after `V`.
    pre: usize,
    post: usize,
    multi: usize,
    point: bool,
    fill: bool,
    /// `S`, and whether it stands before the decimal point.
    sign: Option<bool>,
    minus: bool,
    plus: bool,
    brackets: bool,
    shift: bool,
}

/// A template Postgres refuses (42601), in its words.
fn template_error(message: &str) -> DataFusionError {
    DataFusionError::External(Box::new(SqlError::new(sqlstate::SYNTAX_ERROR, message)))
}

/// The pattern `rest` starts with, and its length; upper or lower case, as Postgres spells them.
fn pattern(rest: &str) -> Option<(Node, usize)> {
    PATTERNS.iter().find_map(|(name, node)| {
        let lower = name.to_ascii_lowercase();
        (rest.starts_with(name) || rest.starts_with(lower.as_str())).then_some((*node, name.len()))
    })
}

fn layout(template: &str) -> Result<Layout> {
    let mut l = Layout::default();
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        if let Some((node, len)) = pattern(rest) {
            l.prepare(node)?;
            l.nodes.push(node);
            rest = &rest[len..];
        } else if let Some(quoted) = rest.strip_prefix('"') {
            // A quoted string: each of its characters skips one (a backslash quotes the next).
            let mut chars = quoted.char_indices();
            rest = "";
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        rest = &quoted[i + 1..];
                        break;
                    }
                    // One node with the character after it (the backslash itself, last).
                    '\\' => {
                        chars.next();
                    }
                    _ => {}
                }
                l.nodes.push(Node::Char);
            }
        } else {
            // Outside quotes a backslash only quotes a double quote.
            let skip = if rest.starts_with("\\\"") {
                2
            } else {
                c.len_utf8()
            };
            l.nodes.push(Node::Char);
            rest = &rest[skip..];
        }
    }
    Ok(l)
}

impl Layout {
    /// The decimals of the numbers it reads: its fraction positions; with `V`, those of Postgres'
    /// product of the number read and `power(10, -n)`, whose 16 + n decimals (`numeric`'s
    /// minimum of significant digits) are the result's, as far as 38 digits hold them.
    fn scale(&self) -> i8 {
        let scale = if self.shift {
            (16 + self.multi).min(38_usize.saturating_sub(self.pre))
        } else {
            self.post + self.multi
        };
        scale.min(38) as i8
    }

    /// Postgres' `NUMDesc_prepare`: counts positions, sets flags, refuses what it refuses.
    fn prepare(&mut self, node: Node) -> Result<()> {
        match node {
            Node::Nine | Node::Zero => {
                if self.brackets {
                    let which = if node == Node::Nine { "9" } else { "0" };
                    return Err(template_error(&format!(
                        "\"{which}\" must be ahead of \"PR\""
                    )));
                }
                if self.shift {
                    self.multi += 1;
                } else if self.point {
                    self.post += 1;
                } else {
                    self.pre += 1;
                }
            }
            Node::Decimal | Node::Point => {
                if self.point {
                    return Err(template_error("multiple decimal points"));
                }
                if self.shift {
                    return Err(template_error(
                        "cannot use \"V\" and decimal point together",
                    ));
                }
                self.point = true;
            }
            Node::Fill => self.fill = true,
            Node::Sign => {
                if self.sign.is_some() {
                    return Err(template_error("cannot use \"S\" twice"));
                }
                if self.plus || self.minus || self.brackets {
                    return Err(template_error(
                        "cannot use \"S\" and \"PL\"/\"MI\"/\"SG\"/\"PR\" together",
                    ));
                }
                self.sign = Some(!self.point);
            }
            Node::Minus | Node::Plus | Node::SignAny => {
                if self.sign.is_some() {
                    let which = match node {
                        Node::Minus => "MI",
                        Node::Plus => "PL",
                        _ => "SG",
                    };
                    return Err(template_error(&format!(
                        "cannot use \"S\" and \"{which}\" together"
                    )));
                }
                self.minus |= node != Node::Plus;
                self.plus |= node != Node::Minus;
            }
            Node::Brackets => {
                if self.sign.is_some() || self.plus || self.minus {
                    return Err(template_error(
                        "cannot use \"PR\" and \"S\"/\"PL\"/\"MI\"/\"SG\" together",
                    ));
                }
                self.brackets = true;
            }
            Node::Shift => {
                if self.point {
                    return Err(template_error(
                        "cannot use \"V\" and decimal point together",
                    ));
                }
                self.shift = true;
            }
            Node::Exponent => {
                return Err(DataFusionError::Execution(
                    "\"EEEE\" not supported for input".into(),
                ));
            }
            Node::Roman => {
                return Err(DataFusionError::External(Box::new(SqlError::unsupported(
                    "to_number with \"RN\"",
                ))));
            }
            _ => {}
        }
        Ok(())
    }
}

/// A number as `to_number` read it: its sign, digits and decimal digits.
#[derive(Debug, Default, PartialEq, Eq)]
struct Read {
    negative: bool,
    digits: String,
    /// How many of `digits` come after the decimal point.
    post: usize,
}

/// Reading `text` with a layout: Postgres' `NUM_processor` for input.
struct Reader<'a> {
    l: &'a Layout,
    text: &'a [u8],
    at: usize,
    /// `' '` until a sign is read, then `'-'` or `'+'`.
    sign: u8,
    digits: String,
    pre: usize,
    post: usize,
    point: bool,
}

impl Reader<'_> {
    fn done(&self) -> bool {
        self.at >= self.text.len()
    }

    fn byte(&self) -> u8 {
        self.text.get(self.at).copied().unwrap_or(0)
    }

    /// Skips one character of the text.
    fn skip_char(&mut self) {
        let len = match self.byte() {
            b if b < 0x80 => 1,
            b if b >= 0xF0 => 4,
            b if b >= 0xE0 => 3,
            _ => 2,
        };
        self.at = (self.at + len).min(self.text.len());
    }

    /// Skips up to `n` characters that are not digits, signs, commas or points.
    fn skip_non_data(&mut self, n: usize) {
        for _ in 0..n {
            if self.done() || b"0123456789.,+-".contains(&self.byte()) {
                break;
            }
            self.skip_char();
        }
    }

    /// A digit position or the decimal point (Postgres' `NUM_numpart_from_char`).
    fn number_part(&mut self, node: Node) {
        if self.done() {
            return;
        }
        if self.byte() == b' ' {
            self.at += 1;
        }
        if self.done() {
            return;
        }
        let digit_position = matches!(node, Node::Nine | Node::Zero);
        if self.sign == b' ' && digit_position && self.pre + self.post == 0 {
            let b = self.byte();
            if b == b'-' || (b == b'<' && self.l.brackets) {
                self.sign = b'-';
                self.at += 1;
            } else if b == b'+' {
                self.sign = b'+';
                self.at += 1;
            }
        }
        if self.done() {
            return;
        }
        let mut read = false;
        if self.byte().is_ascii_digit() {
            if self.point && self.post == self.l.post {
                return;
            }
            self.digits.push(char::from(self.byte()));
            if self.point {
                self.post += 1;
            } else {
                self.pre += 1;
            }
            read = true;
        } else if self.l.point && !self.point && self.byte() == b'.' {
            self.point = true;
            read = true;
        }
        if self.done() || self.sign != b' ' || self.pre + self.post == 0 {
            return;
        }
        // A sign just after the last digit read.
        if self.l.sign.is_some() {
            let next = self.text.get(self.at + 1).copied();
            if read && let Some(b @ (b'-' | b'+')) = next {
                self.sign = b;
                self.at += 1;
            }
        } else if !read && (self.l.plus || self.l.minus) && matches!(self.byte(), b'-' | b'+') {
            self.sign = self.byte();
        }
    }

    fn run(mut self) -> Read {
        for &node in &self.l.nodes {
            if self.done() {
                break;
            }
            match node {
                Node::Nine | Node::Zero | Node::Point | Node::Decimal => self.number_part(node),
                Node::Comma | Node::Group => {
                    if self.l.fill || self.byte() != b',' {
                        continue;
                    }
                }
                Node::Local => {
                    self.skip_non_data(1);
                    continue;
                }
                Node::Ordinal => {
                    if !self.l.point {
                        self.skip_non_data(2);
                    }
                    continue;
                }
                Node::Minus | Node::Plus | Node::SignAny => {
                    let b = self.byte();
                    let wanted = match node {
                        Node::Minus => b == b'-',
                        Node::Plus => b == b'+',
                        _ => b == b'-' || b == b'+',
                    };
                    if wanted {
                        self.sign = b;
                    } else {
                        self.skip_non_data(1);
                        continue;
                    }
                }
                Node::Char => {
                    self.skip_char();
                    continue;
                }
                _ => continue,
            }
            self.at += 1;
        }
        Read {
            negative: self.sign == b'-',
            digits: self.digits,
            post: self.post,
        }
    }
}

/// `text` read with `l`: the unscaled value at `scale` decimals (the digits read past `scale`
/// are cut off).
fn read(text: &str, l: &Layout, scale: usize) -> Result<i128> {
    let r = Reader {
        l,
        text: text.as_bytes(),
        at: 0,
        sign: b' ',
        digits: String::new(),
        pre: 0,
        post: 0,
        point: false,
    }
    .run();
    if r.digits.is_empty() {
        let shown = match r.negative {
            true => "-",
            false => " ",
        };
        return Err(DataFusionError::Execution(format!(
            "invalid input syntax for type numeric: \"{shown}\""
        )));
    }
    // Postgres reads the number into numeric(pre + multi + post, post): more integer digits
    // than that are an overflow.
    let integer = &r.digits[..r.digits.len() - r.post];
    let significant = integer.trim_start_matches('0').len();
    let whole = l.pre + l.multi;
    if significant > whole {
        let bound = match whole {
            0 => "1".to_string(),
            d => format!("10^{d}"),
        };
        let (p, s) = (whole + r.post, r.post);
        return Err(DataFusionError::External(Box::new(
            SqlError::new(
                sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                "numeric field overflow",
            )
            .with_detail(format!(
                "A field with precision {p}, scale {s} must round to an absolute value \
                     less than {bound}."
            )),
        )));
    }
    let overflow = || {
        DataFusionError::External(Box::new(
            SqlError::new(
                sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                "value overflows numeric format",
            )
            .with_hint("NUMERIC holds up to 38 digits here."),
        ))
    };
    // The value is digits * 10^-(post + multi); at `scale` decimals:
    let shift = scale as i64 - (r.post + l.multi) as i64;
    let kept = match usize::try_from(-shift) {
        Ok(cut) => &r.digits[..r.digits.len().saturating_sub(cut)],
        Err(_) => &r.digits,
    };
    let mut value: i128 = 0;
    for d in kept.bytes() {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(i128::from(d - b'0')))
            .ok_or_else(overflow)?;
    }
    for _ in 0..shift.max(0) {
        value = value.checked_mul(10).ok_or_else(overflow)?;
    }
    if value.unsigned_abs() >= 10u128.pow(38) {
        return Err(overflow());
    }
    Ok(if r.negative { -value } else { value })
}

/// Decimal places of the result for a literal template (0 when the template is not a literal).
fn scale_of(template: Option<&ScalarValue>) -> i8 {
    match template {
        Some(ScalarValue::Utf8(Some(t))) => layout(t).map_or(0, |l| l.scale()),
        _ => 0,
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ToNumber {
    signature: Signature,
}

impl ScalarUDFImpl for ToNumber {
    fn name(&self) -> &str {
        "to_number"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Decimal128(38, 0))
    }

    fn return_field_from_args(
        &self,
        args: ReturnFieldArgs,
    ) -> Result<datafusion::arrow::datatypes::FieldRef> {
        let scale = scale_of(args.scalar_arguments.get(1).copied().flatten());
        let field = datafusion::arrow::datatypes::Field::new(
            self.name(),
            DataType::Decimal128(38, scale),
            true,
        );
        // Every decimal shown, as the column's scale would show them, but an unconstrained
        // `numeric` to clients (no type modifier), as Postgres' `to_number` returns.
        let shown = super::numeric::Scale::Own(u8::try_from(scale).unwrap_or(0));
        Ok(Arc::new(super::numeric::declare(field, shown)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let DataType::Decimal128(_, scale) = args.return_field.data_type() else {
            return Err(DataFusionError::Internal("to_number's type".into()));
        };
        let scale = *scale;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [text, template] = arrays.as_slice() else {
            return Err(DataFusionError::Plan(
                "to_number takes a text and a template".into(),
            ));
        };
        let text = cast(text, &DataType::Utf8)?;
        let template = cast(template, &DataType::Utf8)?;
        let (text, template) = (text.as_string::<i32>(), template.as_string::<i32>());
        let mut out = Decimal128Builder::with_capacity(n);
        for i in 0..n {
            if text.is_null(i) || template.is_null(i) {
                out.append_null();
                continue;
            }
            let l = layout(template.value(i))?;
            out.append_value(read(text.value(i), &l, scale.max(0) as usize)?);
        }
        Ok(ColumnarValue::Array(Arc::new(
            out.finish().with_precision_and_scale(38, scale)?,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(text: &str, template: &str) -> String {
        let l = layout(template).unwrap();
        let scale = l.post + l.multi;
        let v = read(text, &l, scale).unwrap();
        if scale == 0 {
            return v.to_string();
        }
        let p = 10i128.pow(scale as u32);
        let sign = if v < 0 { "-" } else { "" };
        format!("{sign}{}.{:0scale$}", v.abs() / p, v.abs() % p)
    }

    #[test]
    fn reads_as_postgres_reads() {
        // Values from PostgreSQL 18, at the template's decimals.
        let cases = [
            ("12,454.8-", "99G999D9S", "-12454.8"),
            ("1.239", "9D99", "1.23"),
            ("<123>", "999PR", "-123"),
            ("<12>", "99PR", "-12"),
            ("(12)", "99PR", "1"),
            ("12", "99PR", "12"),
            (" <7>", "9PR", "-7"),
            ("  42", "9999", "42"),
            ("-7.5", "S9D9", "-7.5"),
            ("1234567", "999", "123"),
            ("12 34", "99 99", "1234"),
            ("0042", "0000", "42"),
            ("3.14159", "9.99999", "3.14159"),
            ("-1,234.5", "9G999D9", "-1234.5"),
            ("1,234", "9,999", "1234"),
            ("12-", "99MI", "-12"),
            ("42", "FM999", "42"),
            ("123.4", "999", "123"),
            ("x12", "999", "12"),
            ("(42)", "999", "42"),
            ("12", "9V9", "1.2"),
            ("$1,234", "L9,999", "1234"),
        ];
        for (text, template, expected) in cases {
            assert_eq!(
                number(text, template),
                expected,
                "to_number('{text}', '{template}')"
            );
        }
        let nines = layout("999").unwrap();
        assert!(read("", &nines, 0).is_err());
        assert!(read("abc", &nines, 0).is_err());
        // Four integer digits where the template has one.
        assert!(read("1234.5", &layout("9.99").unwrap(), 2).is_err());
        // `V`'s results have Postgres' decimals: 16 and one per digit after it.
        for (template, scale) in [("99V9", 17), ("9V", 16), ("99V99", 18), ("9.99", 2)] {
            assert_eq!(layout(template).unwrap().scale(), scale, "{template}");
        }
        assert_eq!(layout(&format!("{}V9", "9".repeat(30))).unwrap().scale(), 8);
        for refused in ["9EEEE", "99PR9", "S9S", "9.9.9", "RN", "9V.9", "PRS9"] {
            assert!(layout(refused).is_err(), "{refused}");
        }
    }
}
