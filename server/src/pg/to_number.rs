//! Postgres' `to_number(text, template)`: the number a text shows, read the way the template
//! lays it out (`9` and `0` digit positions, `D` or `.` the decimal point, `G` or `,` group
//! separators, `S`, `MI`, `PL`, `SG` and `PR` the sign, `FM` nothing).
//!
//! As in Postgres: the digits of the text fill the template's digit positions from the left (extra
//! integer digits are dropped: `to_number('1234567', '999')` is `123`; extra fraction digits
//! too), characters that are neither digits nor the decimal point are skipped (group separators,
//! currency signs, spaces), and a minus sign anywhere, or angle brackets under `PR`, make the
//! number negative. A text without a digit is `22P02`. The result is a NUMERIC with as many
//! decimals as the template has fraction positions.

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

/// The `to_number` function.
pub fn udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(ToNumber {
        signature: Signature::exact(vec![DataType::Utf8, DataType::Utf8], Volatility::Immutable),
    })
}

/// What a template says about the numbers it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    /// Digit positions before the decimal point, and after it.
    integer: usize,
    fraction: usize,
    /// Whether the template has a decimal point.
    point: bool,
    /// `PR`: angle brackets mean negative.
    brackets: bool,
}

fn layout(template: &str) -> Result<Layout> {
    let mut l = Layout {
        integer: 0,
        fraction: 0,
        point: false,
        brackets: false,
    };
    let upper = template.to_ascii_uppercase();
    if upper.contains("EEEE") {
        return Err(DataFusionError::Execution(
            "\"EEEE\" not supported for input".into(),
        ));
    }
    l.brackets = upper.contains("PR");
    for c in upper.chars() {
        match c {
            '9' | '0' if l.point => l.fraction += 1,
            '9' | '0' => l.integer += 1,
            'D' | '.' if !l.point => l.point = true,
            _ => {}
        }
    }
    Ok(l)
}

/// `text` read with `l`: the unscaled value at `l.fraction` decimals.
fn read(text: &str, l: Layout) -> Result<i128> {
    let mut integer: Vec<u8> = Vec::new();
    let mut fraction: Vec<u8> = Vec::new();
    let mut in_fraction = false;
    let mut digits = 0;
    for c in text.chars() {
        match c {
            '0'..='9' if in_fraction => {
                digits += 1;
                if fraction.len() < l.fraction {
                    fraction.push(c as u8 - b'0');
                }
            }
            '0'..='9' => {
                digits += 1;
                if integer.len() < l.integer {
                    integer.push(c as u8 - b'0');
                }
            }
            '.' if l.point && !in_fraction => in_fraction = true,
            // Past the template's digits: the rest is not read.
            '.' => break,
            _ => {}
        }
    }
    if digits == 0 {
        return Err(DataFusionError::Execution(format!(
            "invalid input syntax for type numeric: \"{text}\""
        )));
    }
    let negative = text.contains('-') || (l.brackets && text.trim_start().starts_with('<'));
    let mut value: i128 = 0;
    let padded = fraction.len()..l.fraction;
    for d in integer.iter().chain(&fraction) {
        value = value * 10 + i128::from(*d);
    }
    for _ in padded {
        value *= 10;
    }
    Ok(if negative { -value } else { value })
}

/// Decimal places of the result for a literal template (0 when the template is not a literal).
fn scale_of(template: Option<&ScalarValue>) -> i8 {
    match template {
        Some(ScalarValue::Utf8(Some(t))) => layout(t).map_or(0, |l| l.fraction.min(38) as i8),
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
        Ok(Arc::new(datafusion::arrow::datatypes::Field::new(
            self.name(),
            DataType::Decimal128(38, scale),
            true,
        )))
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
            let mut l = layout(template.value(i))?;
            // A template that is not a literal reads at the result's scale.
            l.fraction = l.fraction.min(scale.max(0) as usize);
            let value = read(text.value(i), l)?;
            let shift = (scale.max(0) as usize).saturating_sub(l.fraction);
            out.append_value(value * 10i128.pow(shift as u32));
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
        let v = read(text, l).unwrap();
        let scale = l.fraction as u32;
        if scale == 0 {
            return v.to_string();
        }
        let p = 10i128.pow(scale);
        let sign = if v < 0 { "-" } else { "" };
        format!(
            "{sign}{}.{:0width$}",
            v.abs() / p,
            v.abs() % p,
            width = scale as usize
        )
    }

    #[test]
    fn reads_as_postgres_reads() {
        // Values from PostgreSQL 15 (its numeric prints no padding zeros; these have none).
        let cases = [
            ("12,454.8-", "99G999D9S", "-12454.8"),
            ("1.239", "9D99", "1.23"),
            ("<123>", "999PR", "-123"),
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
        ];
        for (text, template, expected) in cases {
            assert_eq!(
                number(text, template),
                expected,
                "to_number('{text}', '{template}')"
            );
        }
        assert!(read("", layout("999").unwrap()).is_err());
        assert!(read("abc", layout("999").unwrap()).is_err());
        assert!(layout("9EEEE").is_err());
    }
}
