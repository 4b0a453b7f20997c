//! Postgres text output for the column types where `arrow-pg`'s text form differs from Postgres'.
//!
//! `arrow-pg` prints timestamps with a fixed six-digit fraction (`10:00:01.000000`) and a NULL
//! interval as `00:00:00`; Postgres prints `10:00:01` and NULL, and clients compare such text.
//! Times likewise, and decimals, whose decimals follow their column's rule
//! ([`crate::pg::numeric`]). Before a batch is encoded in the text format, such columns are turned
//! into strings here, column by column; the field's Postgres type is unchanged. Arrays of them
//! become lists of strings, which `arrow-pg` then prints with Postgres' array quoting.

use std::fmt::Write;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Datelike, Offset, TimeZone, Timelike};
use datafusion::arrow::array::timezone::Tz;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, IntervalMonthDayNanoArray, LargeListArray, ListArray, StringArray,
    StringBuilder, StructArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Decimal128Type, DurationMicrosecondType, Field, Fields, Float32Type, Float64Type,
    IntervalMonthDayNanoType, IntervalUnit, Schema, Time64MicrosecondType, TimeUnit,
    TimestampMicrosecondType,
};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;

use crate::pg::numeric::{Scale, write_text as write_numeric};

/// Whether a column of this type is rewritten by [`postgres_text`].
fn rewritten(t: &DataType) -> bool {
    match t {
        DataType::Timestamp(..)
        | DataType::Interval(_)
        | DataType::Duration(_)
        | DataType::Time32(_)
        | DataType::Time64(_)
        | DataType::Float32
        | DataType::Float64 => true,
        DataType::Decimal128(_, scale) => *scale >= 0,
        DataType::Struct(_) => true,
        DataType::List(item) | DataType::LargeList(item) => rewritten(item.data_type()),
        _ => false,
    }
}

/// `batch` with its timestamp and interval columns as Postgres' text forms, where `text(i)` says
/// column `i` is sent in the text format.
pub fn postgres_text(
    batch: RecordBatch,
    text: impl Fn(usize) -> bool,
    zone: Option<&str>,
) -> Result<RecordBatch, ArrowError> {
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| rewritten(f.data_type())) {
        return Ok(batch);
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (i, (field, column)) in schema.fields().iter().zip(batch.columns()).enumerate() {
        let text = if text(i) {
            text_column(column, field, zone)?
        } else {
            None
        };
        match text {
            Some(text) => {
                fields.push(Field::new(field.name(), text.data_type().clone(), true));
                columns.push(text);
            }
            None => {
                fields.push(field.as_ref().clone());
                columns.push(Arc::clone(column));
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// `column` (of `field`) as Postgres' text forms, if its type is [`rewritten`]. A list keeps its
/// shape with its elements as text, so that `arrow-pg` quotes them as Postgres does
/// (`{"2024-01-02 10:00:00"}`).
fn text_column(
    column: &ArrayRef,
    field: &Field,
    zone: Option<&str>,
) -> Result<Option<ArrayRef>, ArrowError> {
    Ok(Some(match column.data_type() {
        // A `timestamptz` in the session's zone.
        DataType::Timestamp(_, Some(tz)) => timestamps(column, Some(zone.unwrap_or(tz)))?,
        DataType::Timestamp(_, None) => timestamps(column, None)?,
        DataType::Interval(_) => intervals(column)?,
        DataType::Duration(_) => durations(column)?,
        DataType::Time32(_) | DataType::Time64(_) => times(column)?,
        DataType::Float64 => floats(column.as_primitive::<Float64Type>().iter(), 1e15),
        DataType::Float32 => floats(
            column
                .as_primitive::<Float32Type>()
                .iter()
                .map(|v| v.map(|v| v.to_string().parse::<f64>().unwrap_or(f64::from(v)))),
            1e6,
        ),
        DataType::List(item) => {
            let list = column.as_list::<i32>();
            let Some(values) = text_column(list.values(), item, zone)? else {
                return Ok(None);
            };
            let (_, offsets, _, nulls) = list.clone().into_parts();
            let item = Arc::new(Field::new_list_field(values.data_type().clone(), true));
            Arc::new(ListArray::try_new(item, offsets, values, nulls)?)
        }
        DataType::LargeList(item) => {
            let list = column.as_list::<i64>();
            let Some(values) = text_column(list.values(), item, zone)? else {
                return Ok(None);
            };
            let (_, offsets, _, nulls) = list.clone().into_parts();
            let item = Arc::new(Field::new_list_field(values.data_type().clone(), true));
            Arc::new(LargeListArray::try_new(item, offsets, values, nulls)?)
        }
        DataType::Decimal128(..) => numerics(column, Scale::of(field)),
        DataType::Struct(fields) => records(column.as_struct(), fields, zone)?,
        _ => return Ok(None),
    }))
}

/// Timestamps as Postgres prints them; with `tz`, in that zone with its offset.
pub fn timestamps(column: &ArrayRef, tz: Option<&str>) -> Result<ArrayRef, ArrowError> {
    let micros = cast(
        column,
        &DataType::Timestamp(TimeUnit::Microsecond, tz.map(Into::into)),
    )?;
    let micros: &TimestampMicrosecondArray = micros.as_primitive::<TimestampMicrosecondType>();
    let tz = tz.map(Tz::from_str).transpose()?;
    let mut out = StringBuilder::with_capacity(micros.len(), micros.len() * 26);
    let mut line = String::with_capacity(32);
    for v in micros.iter() {
        let Some(v) = v else {
            out.append_null();
            continue;
        };
        let utc = DateTime::from_timestamp_micros(v)
            .ok_or_else(|| ArrowError::ComputeError(format!("timestamp {v} out of range")))?
            .naive_utc();
        line.clear();
        match &tz {
            None => write_timestamp(&mut line, &utc, v),
            Some(tz) => {
                let offset = tz.offset_from_utc_datetime(&utc).fix();
                let local = utc + offset;
                // Postgres: `0001-01-01 00:00:00+00 BC`, the era after the offset.
                write_timestamp(&mut line, &local, v);
                let bc = line.ends_with(" BC");
                if bc {
                    line.truncate(line.len() - 3);
                }
                write_offset(&mut line, offset.local_minus_utc());
                if bc {
                    line.push_str(" BC");
                }
            }
        }
        out.append_value(&line);
    }
    Ok(Arc::new(out.finish()))
}

/// `2026-01-02 10:11:12`, with the fraction of a second only when there is one (`.5`, `.000123`).
fn write_timestamp(out: &mut String, t: &chrono::NaiveDateTime, micros: i64) {
    let (year, bc) = if t.year() <= 0 {
        (1 - t.year(), true)
    } else {
        (t.year(), false)
    };
    let _ = write!(
        out,
        "{year:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    write_fraction(out, micros.rem_euclid(1_000_000));
    if bc {
        out.push_str(" BC");
    }
}

fn write_fraction(out: &mut String, micros: i64) {
    if micros == 0 {
        return;
    }
    let digits = format!("{micros:06}");
    out.push('.');
    out.push_str(digits.trim_end_matches('0'));
}

/// `+00`, `+05:30`, `-08`.
fn write_offset(out: &mut String, seconds: i32) {
    let sign = if seconds < 0 { '-' } else { '+' };
    let s = seconds.unsigned_abs();
    let _ = write!(out, "{sign}{:02}", s / 3600);
    if !s.is_multiple_of(3600) {
        let _ = write!(out, ":{:02}", s % 3600 / 60);
    }
}

/// Decimals with the decimals their column's [`Scale`] rule shows (`1.2500000000` of an
/// unconstrained `numeric` as `1.25`).
fn numerics(column: &ArrayRef, rule: Scale) -> ArrayRef {
    numerics_showing(column, |_, v, scale| rule.decimals(v, scale))
}

/// Decimals as text, each with the decimals `decimals(row, value, column scale)` says.
pub(crate) fn numerics_showing(
    column: &ArrayRef,
    decimals: impl Fn(usize, i128, i8) -> u32,
) -> ArrayRef {
    let DataType::Decimal128(_, scale) = *column.data_type() else {
        return Arc::clone(column);
    };
    let mut out = StringBuilder::new();
    let mut line = String::with_capacity(48);
    for (row, v) in column.as_primitive::<Decimal128Type>().iter().enumerate() {
        let Some(v) = v else {
            out.append_null();
            continue;
        };
        line.clear();
        write_numeric(&mut line, v, scale, decimals(row, v, scale));
        out.append_value(&line);
    }
    Arc::new(out.finish())
}

/// Rows as Postgres' `record_out` writes them: `(1,"a b",)`, each field its type's text, NULL
/// nothing, and a field quoted (`"` and `\` doubled inside) when it is empty or holds a quote,
/// backslash, parenthesis, comma or space.
fn records(
    rows: &StructArray,
    fields: &Fields,
    zone: Option<&str>,
) -> Result<ArrayRef, ArrowError> {
    let texts = fields
        .iter()
        .zip(rows.columns())
        .map(|(field, column)| {
            crate::wire::output_text(field, column, zone)
                .map_err(|e| ArrowError::ComputeError(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let texts: Vec<&StringArray> = texts.iter().map(|t| t.as_string::<i32>()).collect();
    let mut out = StringBuilder::with_capacity(rows.len(), rows.len() * 16);
    let mut line = String::with_capacity(64);
    for row in 0..rows.len() {
        if rows.is_null(row) {
            out.append_null();
            continue;
        }
        line.clear();
        line.push('(');
        for (i, text) in texts.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            if text.is_null(row) {
                continue;
            }
            let value = text.value(row);
            let quoted = value.is_empty()
                || value
                    .chars()
                    .any(|c| matches!(c, '"' | '\\' | '(' | ')' | ',') || c.is_ascii_whitespace());
            if quoted {
                line.push('"');
                for c in value.chars() {
                    if matches!(c, '"' | '\\') {
                        line.push(c);
                    }
                    line.push(c);
                }
                line.push('"');
            } else {
                line.push_str(value);
            }
        }
        line.push(')');
        out.append_value(&line);
    }
    Ok(Arc::new(out.finish()))
}

/// Floats as Postgres prints them (shortest exact digits): `50`, `107.5`, `1e+20`, `1e-05`,
/// `Infinity`, `NaN`; written out in full from 0.0001 to below `fixed_below` (10^15 for a
/// `float8`, 10^6 for a `float4`, whose `1234567` is `1.234567e+06`).
fn floats(values: impl Iterator<Item = Option<f64>>, fixed_below: f64) -> ArrayRef {
    let mut out = StringBuilder::new();
    let mut line = String::with_capacity(24);
    for v in values {
        let Some(v) = v else {
            out.append_null();
            continue;
        };
        line.clear();
        write_float(&mut line, v, fixed_below);
        out.append_value(&line);
    }
    Arc::new(out.finish())
}

fn write_float(out: &mut String, v: f64, fixed_below: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "Infinity" } else { "-Infinity" });
    } else if v == 0.0 || (1e-4..fixed_below).contains(&v.abs()) {
        let _ = write!(out, "{v}");
    } else {
        // Rust writes `1e20` and `1.5e-5`; Postgres writes `1e+20` and `1.5e-05`.
        let s = format!("{v:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match exp.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exp),
        };
        let _ = write!(out, "{mantissa}e{sign}{digits:0>2}");
    }
}

fn times(column: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    let micros = cast(column, &DataType::Time64(TimeUnit::Microsecond))?;
    let micros = micros.as_primitive::<Time64MicrosecondType>();
    let mut out = StringBuilder::with_capacity(micros.len(), micros.len() * 15);
    let mut line = String::with_capacity(16);
    for v in micros.iter() {
        match v {
            None => out.append_null(),
            Some(v) => {
                line.clear();
                let secs = v / 1_000_000;
                let _ = write!(
                    line,
                    "{:02}:{:02}:{:02}",
                    secs / 3600,
                    secs % 3600 / 60,
                    secs % 60
                );
                write_fraction(&mut line, v % 1_000_000);
                out.append_value(&line);
            }
        }
    }
    Ok(Arc::new(out.finish()))
}

/// A difference of timestamps as Postgres prints it: whole days of 24 hours, then the time
/// (`1525 days 10:11:12.345678`; Postgres justifies the hours of a timestamp difference).
fn durations(column: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    const DAY: i64 = 86_400_000_000;
    let micros = cast(column, &DataType::Duration(TimeUnit::Microsecond))?;
    let micros = micros.as_primitive::<DurationMicrosecondType>();
    let mut out = StringBuilder::with_capacity(micros.len(), micros.len() * 24);
    let mut line = String::with_capacity(32);
    for v in micros.iter() {
        match v {
            None => out.append_null(),
            Some(us) => {
                line.clear();
                let days = i32::try_from(us / DAY).unwrap_or(i32::MAX);
                write_interval(&mut line, 0, days, us % DAY);
                out.append_value(&line);
            }
        }
    }
    Ok(Arc::new(out.finish()))
}

/// The value at `row` of a timestamp difference (Arrow's duration) in Postgres' binary
/// interval form, its days split out as [`durations`] prints them: microseconds, days, months.
/// `None` for a NULL or a column that is no duration.
pub fn duration_binary(column: &dyn Array, row: usize) -> Option<[u8; 16]> {
    use datafusion::arrow::datatypes::{
        DurationMillisecondType, DurationNanosecondType, DurationSecondType,
    };
    const DAY: i64 = 86_400_000_000;
    if column.is_null(row) {
        return None;
    }
    let us = match column.data_type() {
        DataType::Duration(TimeUnit::Second) => column
            .as_primitive::<DurationSecondType>()
            .value(row)
            .checked_mul(1_000_000)?,
        DataType::Duration(TimeUnit::Millisecond) => column
            .as_primitive::<DurationMillisecondType>()
            .value(row)
            .checked_mul(1_000)?,
        DataType::Duration(TimeUnit::Microsecond) => {
            column.as_primitive::<DurationMicrosecondType>().value(row)
        }
        DataType::Duration(TimeUnit::Nanosecond) => {
            column.as_primitive::<DurationNanosecondType>().value(row) / 1_000
        }
        _ => return None,
    };
    let days = i32::try_from(us / DAY).unwrap_or(i32::MAX);
    let mut out = [0_u8; 16];
    out[..8].copy_from_slice(&(us % DAY).to_be_bytes());
    out[8..12].copy_from_slice(&days.to_be_bytes());
    Some(out)
}

fn intervals(column: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    let parts = cast(column, &DataType::Interval(IntervalUnit::MonthDayNano))?;
    let parts: &IntervalMonthDayNanoArray = parts.as_primitive::<IntervalMonthDayNanoType>();
    let mut out = StringBuilder::with_capacity(parts.len(), parts.len() * 16);
    let mut line = String::with_capacity(32);
    for v in parts.iter() {
        match v {
            None => out.append_null(),
            Some(v) => {
                line.clear();
                write_interval(&mut line, v.months, v.days, v.nanoseconds / 1000);
                out.append_value(&line);
            }
        }
    }
    Ok(Arc::new(out.finish()))
}

/// Postgres' default `IntervalStyle` (`postgres`): `1 year 2 mons 3 days 04:05:06.5`, `-00:00:01`,
/// `00:00:00` for zero.
fn write_interval(out: &mut String, months: i32, days: i32, micros: i64) {
    // Postgres' interval output: a positive part after a negative one gets a `+`.
    let mut after_negative = false;
    let mut unit = |n: i64, one: &str, many: &str| {
        if n != 0 {
            if !out.is_empty() {
                out.push(' ');
            }
            let plus = if after_negative && n > 0 { "+" } else { "" };
            let _ = write!(out, "{plus}{n} {}", if n == 1 { one } else { many });
            after_negative = n < 0;
        }
    };
    unit(i64::from(months / 12), "year", "years");
    unit(i64::from(months % 12), "mon", "mons");
    unit(i64::from(days), "day", "days");
    if micros != 0 || out.is_empty() {
        if !out.is_empty() {
            out.push(' ');
        }
        if micros < 0 {
            out.push('-');
        } else if after_negative {
            out.push('+');
        }
        let m = micros.unsigned_abs();
        let secs = m / 1_000_000;
        let _ = write!(
            out,
            "{:02}:{:02}:{:02}",
            secs / 3600,
            secs % 3600 / 60,
            secs % 60
        );
        write_fraction(out, (m % 1_000_000) as i64);
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Array;

    use super::*;

    fn interval(months: i32, days: i32, micros: i64) -> String {
        let mut s = String::new();
        write_interval(&mut s, months, days, micros);
        s
    }

    #[test]
    fn unconstrained_numerics_drop_padding_zeros() {
        use datafusion::arrow::array::Decimal128Array;
        let column: ArrayRef = Arc::new(
            Decimal128Array::from(vec![
                Some(12_500_000_000),
                Some(100_000_000_000),
                Some(-5_000_000),
                Some(0),
                None,
            ])
            .with_precision_and_scale(38, 10)
            .unwrap(),
        );
        let text = numerics(&column, Scale::Own(0));
        let text = text.as_string::<i32>();
        let got: Vec<_> = text.iter().collect();
        assert_eq!(
            got,
            [Some("1.25"), Some("10"), Some("-0.0005"), Some("0"), None]
        );
    }

    #[test]
    fn floats_print_as_postgres_does() {
        let f = |v: f64| {
            let mut s = String::new();
            write_float(&mut s, v, 1e15);
            s
        };
        assert_eq!(f(50.0), "50");
        assert_eq!(f(107.5), "107.5");
        assert_eq!(f(-0.25), "-0.25");
        assert_eq!(f(1e20), "1e+20");
        assert_eq!(f(1.5e-5), "1.5e-05");
        assert_eq!(f(123456789012345680000.0), "1.2345678901234568e+20");
        assert_eq!(f(f64::NEG_INFINITY), "-Infinity");
        assert_eq!(f(0.1 + 0.2), "0.30000000000000004");
    }

    #[test]
    fn mixed_sign_intervals_mark_positive_parts() {
        assert_eq!(
            interval(-14, 3, -14_706_500_000),
            "-1 years -2 mons +3 days -04:05:06.5"
        );
        assert_eq!(interval(0, -1, 3_600_000_000), "-1 days +01:00:00");
        assert_eq!(interval(1, -1, 0), "1 mon -1 days");
    }

    #[test]
    fn intervals_print_as_postgres_does() {
        assert_eq!(interval(0, 1, 0), "1 day");
        assert_eq!(interval(0, 0, 0), "00:00:00");
        assert_eq!(
            interval(14, 3, 14_706_500_000),
            "1 year 2 mons 3 days 04:05:06.5"
        );
        assert_eq!(interval(0, -2, -1_000_000), "-2 days -00:00:01");
        assert_eq!(interval(0, -1, 0), "-1 days");
        assert_eq!(interval(-1, 0, 0), "-1 mons");
    }

    #[test]
    fn timestamps_print_without_empty_fractions() {
        let ts: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(vec![
                Some(1_767_348_672_000_000),
                Some(1_767_348_672_500_000),
                None,
            ])
            .with_timezone_opt(None::<String>),
        );
        let out = timestamps(&ts, None).unwrap();
        let out = out.as_string::<i32>();
        assert_eq!(out.value(0), "2026-01-02 10:11:12");
        assert_eq!(out.value(1), "2026-01-02 10:11:12.5");
        assert!(out.is_null(2));
        let zoned = |tz: &str| -> ArrayRef {
            let ts = ts.as_primitive::<TimestampMicrosecondType>().clone();
            Arc::new(ts.with_timezone(tz))
        };
        let out = timestamps(&zoned("+05:30"), Some("+05:30")).unwrap();
        assert_eq!(out.as_string::<i32>().value(0), "2026-01-02 15:41:12+05:30");
        let out = timestamps(&zoned("UTC"), Some("UTC")).unwrap();
        assert_eq!(out.as_string::<i32>().value(0), "2026-01-02 10:11:12+00");
    }
}
