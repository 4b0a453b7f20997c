//! How many decimals a `numeric` value shows, as Postgres decides it, for a decimal that Arrow
//! stores with one scale per column.
//!
//! A Postgres numeric carries its own display scale: a literal its written decimals (`1.250`), a
//! product the sum of its factors' (`1.25 * 2.50` is `3.1250`), a quotient at least 16
//! significant digits (`select_div_scale`: `7 / 2.0` is `3.5000000000000000`, `1 / 3.0` has 20
//! decimals). An Arrow decimal has the column's scale instead. So each decimal result column says
//! which [`Scale`] rule its values follow, in its field's metadata ([`NUMERIC_SCALE`]), and the
//! wire layer applies it to each value, in the text ([`write_text`]) and the binary ([`binary`])
//! format alike:
//!
//! - no metadata: the column's scale, as `numeric(p,s)` (and results whose scale the operand types
//!   fix, such as `n * 2`); a column of an unconstrained `numeric` (stored as `numeric(38,10)`,
//!   [`rivulet_planner::types`]) shows each value's own scale instead;
//! - [`Scale::Own`]: the value's own scale, at least some decimals: arithmetic with an
//!   unconstrained operand (`u * n`);
//! - [`Scale::Quotient`]: a division's, from the quotient's magnitude.
//!
//! [`arithmetic`], [`cast`] and [`average`] put the rules on expressions, in [`super::typing`]'s
//! rewrite; a materialized view stores its columns' rules with them (`ColumnDef::shown`).
//! These rules are what a column shows where its values carry no display scale of their own.
//! Where a query reads tables (or views) that keep them, [`super::dscale`] carries a scale per
//! value next to it (`2.50` stored shows `2.50`; `n / 3` with `n` at `-3.75` gets Postgres' 20
//! decimals from its operands' first digits), and the wire layer prefers it to the rule. A
//! quotient of two constants gets Postgres' exact scale as its rule's minimum (`-3.75 / 3`
//! has 20 decimals).

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Field};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::logical_expr::expr::Cast;
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, Operator};
use pgwire::api::results::{DataRowEncoder, FieldFormat};
use pgwire::error::PgWireResult;
use rivulet_planner::types::{DEFAULT_NUMERIC_SCALE, MAX_NUMERIC_PRECISION};

/// The field metadata key naming a decimal column's [`Scale`] rule.
pub const NUMERIC_SCALE: &str = "rivulet.numeric_scale";

/// Postgres' minimum of significant digits in a quotient (`NUMERIC_MIN_SIG_DIGITS`).
pub(super) const MIN_SIG_DIGITS: i32 = 16;

/// The decimals a quotient is computed with where its type leaves room: Postgres shows 20 for a
/// quotient below 1 (rounded: one more, since Arrow's division truncates), 16 from 1 to 9999,
/// fewer above.
pub const QUOTIENT_SCALE: i8 = 21;

/// Which decimals the values of a decimal column show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// The column's scale.
    Column,
    /// The value's own: trailing zeros dropped, down to this many decimals.
    Own(u8),
    /// A quotient's: at least 16 significant digits (one base-10000 digit at a time, as
    /// Postgres counts them) and at least this many decimals, at most the column's.
    Quotient(u8),
}

impl Scale {
    /// The rule of `field`'s values.
    pub fn of(field: &Field) -> Scale {
        let declared = field.metadata().get(NUMERIC_SCALE).and_then(|m| {
            let (kind, min) = m.split_once(':')?;
            let min = min.parse().ok()?;
            match kind {
                "own" => Some(Scale::Own(min)),
                "quotient" => Some(Scale::Quotient(min)),
                _ => None,
            }
        });
        match declared {
            Some(rule) => rule,
            None if unconstrained(field.data_type()) => Scale::Own(0),
            None => Scale::Column,
        }
    }

    /// The decimals every value of a column of this rule and `scale` shows at least.
    fn min(self, scale: i8) -> u8 {
        match self {
            Scale::Column => u8::try_from(scale).unwrap_or(0),
            Scale::Own(min) | Scale::Quotient(min) => min,
        }
    }

    /// The decimals `v`, stored with `scale` decimals, shows.
    pub fn decimals(self, v: i128, scale: i8) -> u32 {
        let scale = u32::try_from(scale).unwrap_or(0);
        match self {
            Scale::Column => scale,
            Scale::Own(min) => {
                let zeros = if v == 0 {
                    scale
                } else {
                    (0..scale)
                        .take_while(|i| v % 10_i128.pow(i + 1) == 0)
                        .count() as u32
                };
                (scale - zeros).max(u32::from(min))
            }
            Scale::Quotient(min) => {
                // The quotient's weight: the power of 10000 of its first digit in base 10000;
                // Postgres' estimate of it for zero is -1 (a dividend of zero has "digit" 0).
                let weight = if v == 0 {
                    -1
                } else {
                    let digits = v.unsigned_abs().ilog10() as i32;
                    (digits - scale as i32).div_euclid(4)
                };
                let wanted = (MIN_SIG_DIGITS - 4 * weight).max(i32::from(min)).max(0);
                u32::try_from(wanted).unwrap_or(0).min(scale)
            }
        }
    }

    fn metadata(self) -> Option<String> {
        match self {
            Scale::Column => None,
            Scale::Own(min) => Some(format!("own:{min}")),
            Scale::Quotient(min) => Some(format!("quotient:{min}")),
        }
    }
}

/// A `numeric` declared without precision and scale, stored as `numeric(38, 10)`.
pub fn unconstrained(t: &DataType) -> bool {
    *t == DataType::Decimal128(MAX_NUMERIC_PRECISION, DEFAULT_NUMERIC_SCALE)
}

/// `v` (stored with `scale` decimals) rounded half away from zero to `decimals` decimals, as
/// the integer of that many; `None` where it does not fit.
fn rescale(v: i128, scale: i8, decimals: u32) -> Option<i128> {
    let scale = u32::try_from(scale).ok()?;
    if decimals >= scale {
        return v.checked_mul(10_i128.checked_pow(decimals - scale)?);
    }
    let div = 10_i128.checked_pow(scale - decimals)?;
    let (q, r) = (v / div, v % div);
    Some(if r.unsigned_abs() * 2 >= div.unsigned_abs() {
        q + v.signum()
    } else {
        q
    })
}

/// `v` with `decimals` decimals, as Postgres' text: `-0.50`, `0.000`, `12`.
pub fn write_text(out: &mut String, v: i128, scale: i8, decimals: u32) {
    // Padding zeros beyond i128's range (never asked: rules show at most the column's decimals
    // where they could) fall back to the column's scale.
    let (v, decimals) = match rescale(v, scale, decimals) {
        Some(rescaled) => (rescaled, decimals),
        None => (v, u32::try_from(scale).unwrap_or(0)),
    };
    let digits = v.unsigned_abs().to_string();
    let decimals = decimals as usize;
    let digits = format!("{digits:0>width$}", width = decimals + 1);
    let (int, frac) = digits.split_at(digits.len() - decimals);
    if v < 0 {
        out.push('-');
    }
    out.push_str(int);
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
}

/// `v` with `decimals` decimals in Postgres' binary numeric form: the number of base-10000
/// digits, the weight of the first, the sign, the display scale, then the digits.
pub fn binary(v: i128, scale: i8, decimals: u32) -> Vec<u8> {
    let mut text = String::with_capacity(48);
    write_text(&mut text, v.abs(), scale, decimals);
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let int = int.trim_start_matches('0');
    // Base-10000 digits: the integer part grouped from the point leftwards, the fraction from the
    // point rightwards.
    let lead = (4 - int.len() % 4) % 4;
    let tail = (4 - frac.len() % 4) % 4;
    let padded = format!("{}{int}{frac}{}", "0".repeat(lead), "0".repeat(tail));
    let mut groups: Vec<i16> = padded
        .as_bytes()
        .chunks(4)
        .map(|c| c.iter().fold(0_i16, |n, d| n * 10 + i16::from(d - b'0')))
        .collect();
    let mut weight = ((lead + int.len()) / 4) as i16 - 1;
    let leading = groups.iter().take_while(|g| **g == 0).count();
    groups.drain(..leading);
    weight -= leading as i16;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let sign: u16 = if v < 0 && !groups.is_empty() {
        0x4000
    } else {
        0
    };
    let mut out = Vec::with_capacity(8 + 2 * groups.len());
    out.extend_from_slice(&(groups.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&(decimals as u16).to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    out
}

/// Encodes the value at `row` of a decimal column in the binary format, with its [`Scale`];
/// `None` for other columns and the text format (whose values [`crate::text_out`] writes).
pub fn encode(
    encoder: &mut DataRowEncoder,
    array: &dyn Array,
    row: usize,
    field: &Field,
    format: FieldFormat,
) -> Option<PgWireResult<()>> {
    let DataType::Decimal128(_, scale) = *array.data_type() else {
        return None;
    };
    if format == FieldFormat::Text || scale < 0 {
        return None;
    }
    let bytes = (!array.is_null(row)).then(|| {
        let v = array.as_primitive::<Decimal128Type>().value(row);
        binary(v, scale, Scale::of(field).decimals(v, scale))
    });
    Some(encoder.encode_field(&bytes.as_deref()))
}

/// `field` declared to follow `rule`.
pub fn declare(field: Field, rule: Scale) -> Field {
    let mut metadata = field.metadata().clone();
    match rule.metadata() {
        Some(m) => metadata.insert(NUMERIC_SCALE.to_string(), m),
        None => metadata.remove(NUMERIC_SCALE),
    };
    field.with_metadata(metadata)
}

/// `e` cast to `t` with `rule` in its field. The target field has a name, so that DataFusion takes
/// its metadata as it is rather than the operand's (an explicit cast's, not a type-only one's).
fn with_rule(e: Expr, t: DataType, rule: Scale) -> Expr {
    let field = declare(Field::new("numeric", t, true), rule);
    Expr::Cast(Cast::new_from_field(Box::new(e), Arc::new(field)))
}

/// An operand's rule and decimal scale: integers have none, other types are no numeric.
fn operand(e: &Expr, input: &DFSchema) -> Option<(Scale, i8, u8)> {
    let (_, field) = e.to_field(input).ok()?;
    match field.data_type() {
        DataType::Decimal128(p, s) => Some((Scale::of(&field), *s, *p)),
        DataType::Int8 | DataType::UInt8 => Some((Scale::Column, 0, 3)),
        DataType::Int16 | DataType::UInt16 => Some((Scale::Column, 0, 5)),
        DataType::Int32 | DataType::UInt32 => Some((Scale::Column, 0, 10)),
        DataType::Int64 => Some((Scale::Column, 0, 19)),
        DataType::UInt64 => Some((Scale::Column, 0, 20)),
        _ => None,
    }
}

/// Arithmetic on numerics with Postgres' display scale where the operand types do not fix it:
/// a division (whose quotient gets 20 decimals where its type has room), and arithmetic with an
/// operand whose values have scales of their own. Other expressions are returned unchanged.
pub fn arithmetic(e: Expr, input: &DFSchema) -> Result<Transformed<Expr>> {
    let Expr::BinaryExpr(b) = e else {
        return Ok(Transformed::no(e));
    };
    let (Some(l), Some(r)) = (operand(&b.left, input), operand(&b.right, input)) else {
        return Ok(Transformed::no(Expr::BinaryExpr(b)));
    };
    let decimal = |e: &Expr| e.get_type(input).is_ok_and(|t| t.is_decimal());
    if !decimal(&b.left) && !decimal(&b.right) {
        return Ok(Transformed::no(Expr::BinaryExpr(b)));
    }
    let (min_l, min_r) = (l.0.min(l.1), r.0.min(r.1));
    let quotient = matches!(l.0, Scale::Quotient(_)) || matches!(r.0, Scale::Quotient(_));
    let own = quotient || matches!(l.0, Scale::Own(_)) || matches!(r.0, Scale::Own(_));
    let rule = match b.op {
        Operator::Divide => {
            let min = min_l.max(min_r);
            Scale::Quotient(quotient_of_constants(&b.left, &b.right).map_or(min, |q| q.max(min)))
        }
        Operator::Plus | Operator::Minus if quotient => Scale::Quotient(min_l.max(min_r)),
        Operator::Plus | Operator::Minus | Operator::Modulo if own => Scale::Own(min_l.max(min_r)),
        Operator::Multiply if own => Scale::Own(min_l.saturating_add(min_r)),
        _ => return Ok(Transformed::no(Expr::BinaryExpr(b))),
    };
    let b = if b.op == Operator::Divide {
        wider_dividend(b, (l.1, l.2), r.1)
    } else {
        b
    };
    let e = Expr::BinaryExpr(b);
    let t = e.get_type(input)?;
    Ok(Transformed::yes(with_rule(e, t, rule)))
}

/// A constant numeric operand: its value and its decimals as written (`3.75`, `3`, `3::numeric`).
fn constant(e: &Expr) -> Option<(i128, i8)> {
    match e {
        Expr::Literal(ScalarValue::Decimal128(Some(v), _, s), _) => Some((*v, *s)),
        Expr::Literal(v, _) if v.data_type().is_integer() => {
            v.cast_to(&DataType::Int64).ok().and_then(|v| match v {
                ScalarValue::Int64(Some(i)) => Some((i128::from(i), 0)),
                _ => None,
            })
        }
        // A cast that keeps the value and its decimals: to an integer type from an integer, or to
        // a decimal of at least its scale (the value's own decimals stay the written ones).
        Expr::Cast(Cast { expr, field }) => {
            let (v, s) = constant(expr)?;
            match field.data_type() {
                t if unconstrained(t) => Some((v, s)),
                DataType::Decimal128(_, to) if *to >= s => {
                    let factor = 10_i128.checked_pow(u32::try_from(to - s).ok()?)?;
                    Some((v.checked_mul(factor)?, *to))
                }
                t if t.is_integer() && s == 0 => Some((v, 0)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The base-10000 weight and first digit of `v` (with `scale` decimals), as Postgres' numeric
/// stores it: `(0, 0)` for zero.
pub(super) fn first_digit(v: i128, scale: i8) -> Option<(i32, i128)> {
    if v == 0 {
        return Some((0, 0));
    }
    let magnitude = v.unsigned_abs();
    let exponent = i32::try_from(magnitude.ilog10()).ok()? - i32::from(scale);
    let weight = exponent.div_euclid(4);
    let shift = i32::from(scale) + 4 * weight;
    let digit = if shift >= 0 {
        magnitude / 10_u128.checked_pow(u32::try_from(shift).ok()?)?
    } else {
        magnitude * 10_u128.checked_pow(u32::try_from(-shift).ok()?)?
    };
    Some((weight, i128::try_from(digit).ok()?))
}

/// The decimals Postgres gives the quotient of two constants (`select_div_scale`): 16
/// significant digits from the quotient's weight as estimated from the operands' first base-10000
/// digits (`-3.75 / 3` is `-1.25000000000000000000`: 3 is not above 3, so 20), at least each
/// operand's decimals. `None` where an operand is no constant.
fn quotient_of_constants(left: &Expr, right: &Expr) -> Option<u8> {
    let ((v1, s1), (v2, s2)) = (constant(left)?, constant(right)?);
    let ((w1, d1), (w2, d2)) = (first_digit(v1, s1)?, first_digit(v2, s2)?);
    let mut weight = w1 - w2;
    if d1 <= d2 {
        weight -= 1;
    }
    let scale = (MIN_SIG_DIGITS - 4 * weight)
        .max(i32::from(s1))
        .max(i32::from(s2))
        .max(0);
    u8::try_from(scale).ok()
}

/// `a / b` with `a` cast to the decimals that give the quotient [`QUOTIENT_SCALE`] decimals
/// (Arrow's quotient has 4 more than its dividend), as far as 38 digits hold the dividend's
/// integer digits and the divisor's decimals; unchanged where that adds none.
fn wider_dividend(b: BinaryExpr, (s1, p1): (i8, u8), s2: i8) -> BinaryExpr {
    let int_digits = i16::from(p1) - i16::from(s1);
    let room = i16::from(MAX_NUMERIC_PRECISION) - int_digits - i16::from(s2);
    let wanted = i16::from(QUOTIENT_SCALE.max(s1).max(s2)).min(room);
    let dividend_scale = wanted - 4;
    if dividend_scale <= i16::from(s1) {
        return b;
    }
    let (Ok(scale), Ok(precision)) = (
        i8::try_from(dividend_scale),
        u8::try_from(int_digits + dividend_scale),
    ) else {
        return b;
    };
    let left = Expr::Cast(Cast::new(b.left, DataType::Decimal128(precision, scale)));
    BinaryExpr::new(Box::new(left), b.op, b.right)
}

/// A select list's average (a column of an aggregate's `avg(..)` output), with a quotient's
/// decimals, as Postgres' `avg` is a division. Other expressions are returned unchanged.
pub fn average(e: Expr, input: &DFSchema) -> Transformed<Expr> {
    match e {
        Expr::Alias(mut alias) => {
            let inner = average(*alias.expr, input);
            alias.expr = Box::new(inner.data);
            Transformed::new_transformed(Expr::Alias(alias), inner.transformed)
        }
        Expr::Column(c) => {
            let Ok(field) = input.qualified_field_from_column(&c).map(|(_, f)| f) else {
                return Transformed::no(Expr::Column(c));
            };
            let average = field.name().starts_with("avg(")
                && field.data_type().is_decimal()
                && !field.metadata().contains_key(NUMERIC_SCALE);
            if average {
                let t = field.data_type().clone();
                Transformed::yes(with_rule(Expr::Column(c), t, Scale::Quotient(0)))
            } else {
                Transformed::no(Expr::Column(c))
            }
        }
        e => Transformed::no(e),
    }
}

/// A cast to a decimal, as Postgres has it: a constant cast to an unconstrained `numeric` keeps
/// its own scale (`1.250::numeric` is `1.250`, `'-0.000'::numeric` is `0.000`), and so does a
/// decimal whose values all show its column's scale (`n::numeric` of a `numeric(10,2)` shows
/// `2.50`), both described as an unconstrained `numeric` (no type modifier); a cast to
/// `numeric(p,s)` shows `s` decimals whatever rule its operand followed. Other expressions are
/// returned unchanged.
pub fn cast(e: Expr, input: &DFSchema) -> Transformed<Expr> {
    let Expr::Cast(Cast { expr, field }) = e else {
        return Transformed::no(e);
    };
    let target = field.data_type();
    if !target.is_decimal() {
        return Transformed::no(Expr::Cast(Cast { expr, field }));
    }
    if unconstrained(target) {
        let own = match expr.as_ref() {
            Expr::Literal(ScalarValue::Decimal128(Some(_), p, s), _) => {
                Some(DataType::Decimal128(*p, *s))
            }
            Expr::Literal(ScalarValue::Utf8(Some(text)), _) => super::literals::numeric_type(text),
            Expr::Literal(v, _) if v.data_type().is_integer() && !v.is_null() => {
                super::literals::numeric_type(&v.to_string())
            }
            e => match e.to_field(input) {
                Ok((_, f)) if Scale::of(&f) == Scale::Column && f.data_type().is_decimal() => {
                    Some(f.data_type().clone())
                }
                _ => None,
            },
        };
        if let Some(own @ DataType::Decimal128(_, s)) = own {
            let rule = Scale::Own(u8::try_from(s).unwrap_or(0));
            return Transformed::yes(with_rule(*expr, own, rule));
        }
    }
    let declared = expr
        .to_field(input)
        .is_ok_and(|(_, f)| f.metadata().contains_key(NUMERIC_SCALE));
    if declared && field.metadata().is_empty() {
        let rule = if unconstrained(target) {
            Scale::Own(0)
        } else {
            Scale::Column
        };
        let t = target.clone();
        return Transformed::yes(with_rule(*expr, t, rule));
    }
    Transformed::no(Expr::Cast(Cast { expr, field }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::lit;

    fn shown(v: i128, scale: i8, rule: Scale) -> String {
        let mut s = String::new();
        write_text(&mut s, v, scale, rule.decimals(v, scale));
        s
    }

    #[test]
    fn values_show_their_rules_decimals() {
        assert_eq!(shown(12_500, 4, Scale::Column), "1.2500");
        assert_eq!(shown(12_500, 4, Scale::Own(0)), "1.25");
        assert_eq!(shown(-375_000, 4, Scale::Own(2)), "-37.50");
        assert_eq!(shown(0, 3, Scale::Column), "0.000");
        assert_eq!(shown(0, 10, Scale::Own(0)), "0");
        assert_eq!(shown(100_000, 0, Scale::Own(0)), "100000");
        // 7 / 2.0, 1 / 3.0, 2 / 3.0 and an average of 1500000050, with 20 decimals computed.
        let e20 = 10_i128.pow(20);
        assert_eq!(
            shown(35 * e20 / 10, 20, Scale::Quotient(0)),
            "3.5000000000000000"
        );
        let third = 333_333_333_333_333_333_333;
        assert_eq!(
            shown(third, 21, Scale::Quotient(0)),
            "0.33333333333333333333"
        );
        assert_eq!(
            shown(66_666_666_666_666_666_666, 21, Scale::Quotient(0)),
            "0.06666666666666666667"
        );
        assert_eq!(
            shown(1_500_000_050 * e20, 20, Scale::Quotient(0)),
            "1500000050.00000000"
        );
        assert_eq!(shown(0, 20, Scale::Quotient(0)), "0.00000000000000000000");
        // At most the column's decimals.
        assert_eq!(shown(3333, 4, Scale::Quotient(0)), "0.3333");
    }

    #[test]
    fn constant_quotients_have_postgres_scale() {
        let dec = |v: i128, p: u8, s: i8| lit(ScalarValue::Decimal128(Some(v), p, s));
        // -3.75 / 3: first digits 3 and 3, so one weight lower than the quotient's: 20.
        assert_eq!(
            quotient_of_constants(&dec(-375, 3, 2), &lit(3_i64)),
            Some(20)
        );
        // 7 / 2.0: 16; 1 / 3.0: 20; 100.0 / 3: 16 (weight 0, first digits 100 > 3).
        assert_eq!(quotient_of_constants(&lit(7_i64), &dec(20, 2, 1)), Some(16));
        assert_eq!(quotient_of_constants(&lit(1_i64), &dec(30, 2, 1)), Some(20));
        assert_eq!(
            quotient_of_constants(&dec(1000, 4, 1), &lit(3_i64)),
            Some(16)
        );
        // 123456789.123 / 7: weights 2 (1 2345 6789) and 0, first digits 1 and 7: weight 1, 12.
        assert_eq!(
            quotient_of_constants(&dec(123_456_789_123, 12, 3), &lit(7_i64)),
            Some(12)
        );
        assert_eq!(first_digit(123_456_789_123, 3), Some((2, 1)));
        assert_eq!(first_digit(5, 4), Some((-1, 5)));
    }

    #[test]
    fn binary_form_is_postgres_numeric() {
        let words = |v: i128, scale: i8, decimals: u32| {
            binary(v, scale, decimals)
                .chunks(2)
                .map(|c| i16::from_be_bytes([c[0], c[1]]))
                .collect::<Vec<_>>()
        };
        // 12345.678: digits 1 2345 6780, weight 1, dscale 3.
        assert_eq!(words(12_345_678, 3, 3), [3, 1, 0, 3, 1, 2345, 6780]);
        // -0.0005 (dscale 4): one digit 5 of weight -1, negative.
        assert_eq!(words(-5, 4, 4), [1, -1, 0x4000, 4, 5]);
        // 0.000: no digits.
        assert_eq!(words(0, 3, 3), [0, 0, 0, 3]);
        // 10000: one digit 1 of weight 1.
        assert_eq!(words(10_000, 0, 0), [1, 1, 0, 0, 1]);
        // 0.00010000: digit 1 of weight -1, the zeros after it dropped.
        assert_eq!(words(10_000, 8, 8), [1, -1, 0, 8, 1]);
    }
}
