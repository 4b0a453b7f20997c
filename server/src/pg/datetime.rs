//! Postgres' `age` and `justify_days` / `justify_hours` / `justify_interval`, which DataFusion lacks.
//!
//! `age(a, b)` is the symbolic difference Postgres computes (`timestamp_age`): field by field
//! (years, months, days, time), negative fields borrowed from the next larger one, a borrowed
//! month being as long as the month the earlier timestamp is in; so `age('2026-03-01',
//! '2026-01-31')` is `1 mon 1 day`. `age(b)` is `age` from today's midnight. Dates count as their
//! midnight; a timestamp with a time zone is taken in UTC, whatever the session's zone (Postgres
//! takes it in the session's).
//!
//! The `justify_*` functions move whole days of the time part into days and whole 30-day months
//! of days into months, keeping the parts' signs agreeing, as Postgres does.

use std::sync::Arc;

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use datafusion::arrow::array::{Array, AsArray, IntervalMonthDayNanoArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, IntervalMonthDayNano, IntervalMonthDayNanoType, IntervalUnit, TimeUnit,
    TimestampMicrosecondType,
};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};

const DAY_NANOS: i64 = 86_400_000_000_000;
const MONTH_DAYS: i32 = 30;

fn interval_type() -> DataType {
    DataType::Interval(IntervalUnit::MonthDayNano)
}

/// The functions of this module.
pub fn udfs() -> Vec<ScalarUDF> {
    let mut out = vec![ScalarUDF::new_from_impl(Age {
        signature: Signature::one_of(
            vec![TypeSignature::Any(1), TypeSignature::Any(2)],
            Volatility::Stable,
        ),
    })];
    for kind in [Justify::Days, Justify::Hours, Justify::Interval] {
        out.push(ScalarUDF::new_from_impl(JustifyFn {
            kind,
            signature: Signature::exact(vec![interval_type()], Volatility::Immutable),
        }));
    }
    out
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Age {
    signature: Signature,
}

impl ScalarUDFImpl for Age {
    fn name(&self) -> &str {
        "age"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        for t in args {
            if !matches!(
                t,
                DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
            ) {
                return Err(DataFusionError::Plan(format!(
                    "function age({}) does not exist: age takes timestamps or dates",
                    args.iter()
                        .map(|t| t.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        Ok(interval_type())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let micros = |a: &dyn Array| -> Result<_> {
            let a = match a.data_type() {
                DataType::Timestamp(_, Some(_)) => cast(
                    &cast(
                        a,
                        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                    )?,
                    &DataType::Timestamp(TimeUnit::Microsecond, None),
                )?,
                _ => cast(a, &DataType::Timestamp(TimeUnit::Microsecond, None))?,
            };
            Ok(a)
        };
        let (later, earlier) = match arrays.as_slice() {
            [b] => (None, micros(b.as_ref())?),
            [a, b] => (Some(micros(a.as_ref())?), micros(b.as_ref())?),
            _ => {
                return Err(DataFusionError::Plan(
                    "age takes one or two arguments".into(),
                ));
            }
        };
        let today = chrono::Utc::now()
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .ok_or_else(|| DataFusionError::Internal("midnight".into()))?;
        let earlier = earlier.as_primitive::<TimestampMicrosecondType>();
        let later = later
            .as_ref()
            .map(|l| l.as_primitive::<TimestampMicrosecondType>());
        let out = (0..n)
            .map(|i| {
                if earlier.is_null(i) || later.is_some_and(|l| l.is_null(i)) {
                    return Ok(None);
                }
                let a = match later {
                    Some(l) => datetime(l.value(i))?,
                    None => today,
                };
                Ok(Some(age(a, datetime(earlier.value(i))?)))
            })
            .collect::<Result<IntervalMonthDayNanoArray>>()?;
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

fn datetime(micros: i64) -> Result<NaiveDateTime> {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|d| d.naive_utc())
        .ok_or_else(|| DataFusionError::Execution("timestamp out of range".into()))
}

fn days_in_month(year: i32, month: u32) -> i64 {
    let (y, m) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    match (
        NaiveDate::from_ymd_opt(year, month, 1),
        NaiveDate::from_ymd_opt(y, m, 1),
    ) {
        (Some(a), Some(b)) => (b - a).num_days(),
        _ => 30,
    }
}

/// `a - b` as Postgres' `timestamp_age` forms it.
fn age(a: NaiveDateTime, b: NaiveDateTime) -> IntervalMonthDayNano {
    let fields = |t: &NaiveDateTime| {
        [
            i64::from(t.nanosecond() / 1000),
            i64::from(t.second()),
            i64::from(t.minute()),
            i64::from(t.hour()),
            i64::from(t.day()),
            i64::from(t.month()),
            i64::from(t.year()),
        ]
    };
    let (fa, fb) = (fields(&a), fields(&b));
    let mut d: [i64; 7] = std::array::from_fn(|i| fa[i] - fb[i]);
    let flip = a < b;
    if flip {
        d.iter_mut().for_each(|v| *v = -*v);
    }
    let [usec, sec, min, hour, mday, mon, year] = &mut d;
    while *usec < 0 {
        *usec += 1_000_000;
        *sec -= 1;
    }
    while *sec < 0 {
        *sec += 60;
        *min -= 1;
    }
    while *min < 0 {
        *min += 60;
        *hour -= 1;
    }
    while *hour < 0 {
        *hour += 24;
        *mday -= 1;
    }
    // A borrowed month is as long as the month the earlier of the two is in.
    let earlier = if flip { &a } else { &b };
    while *mday < 0 {
        *mday += days_in_month(earlier.year(), earlier.month());
        *mon -= 1;
    }
    while *mon < 0 {
        *mon += 12;
        *year -= 1;
    }
    if flip {
        d.iter_mut().for_each(|v| *v = -*v);
    }
    let [usec, sec, min, hour, mday, mon, year] = d;
    let nanos = (((hour * 60 + min) * 60 + sec) * 1_000_000 + usec) * 1000;
    IntervalMonthDayNano::new((year * 12 + mon) as i32, mday as i32, nanos)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Justify {
    Days,
    Hours,
    Interval,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct JustifyFn {
    kind: Justify,
    signature: Signature,
}

impl ScalarUDFImpl for JustifyFn {
    fn name(&self) -> &str {
        match self.kind {
            Justify::Days => "justify_days",
            Justify::Hours => "justify_hours",
            Justify::Interval => "justify_interval",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(interval_type())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [spans] = arrays.as_slice() else {
            return Err(DataFusionError::Plan(format!(
                "{} takes one interval",
                self.name()
            )));
        };
        let spans = spans.as_primitive::<IntervalMonthDayNanoType>();
        let out: IntervalMonthDayNanoArray = spans
            .iter()
            .map(|s| {
                s.map(|s| match self.kind {
                    Justify::Days => justify_days(s),
                    Justify::Hours => justify_hours(s),
                    Justify::Interval => justify_interval(s),
                })
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// Moves whole `unit`s of `small` into `big`, then makes the two agree in sign (borrowing one
/// `unit` back), as Postgres' justify functions do.
fn carry(big: i64, small: i64, unit: i64) -> (i64, i64) {
    let (mut big, mut small) = (big + small / unit, small % unit);
    if big > 0 && small < 0 {
        small += unit;
        big -= 1;
    } else if big < 0 && small > 0 {
        small -= unit;
        big += 1;
    }
    (big, small)
}

fn saturate(v: i64) -> i32 {
    i32::try_from(v).unwrap_or(if v < 0 { i32::MIN } else { i32::MAX })
}

fn justify_days(s: IntervalMonthDayNano) -> IntervalMonthDayNano {
    let (months, days) = carry(
        i64::from(s.months),
        i64::from(s.days),
        i64::from(MONTH_DAYS),
    );
    IntervalMonthDayNano::new(saturate(months), saturate(days), s.nanoseconds)
}

fn justify_hours(s: IntervalMonthDayNano) -> IntervalMonthDayNano {
    let whole = s.nanoseconds / DAY_NANOS;
    let days = i64::from(s.days) + whole;
    let (days, time) = carry(days, s.nanoseconds - whole * DAY_NANOS, DAY_NANOS);
    IntervalMonthDayNano::new(s.months, saturate(days), time)
}

fn justify_interval(s: IntervalMonthDayNano) -> IntervalMonthDayNano {
    let (mut months, mut days, mut time) = (s.months, s.days, s.nanoseconds);
    if (days > 0 && time > 0) || (days < 0 && time < 0) {
        let whole = days / MONTH_DAYS;
        days -= whole * MONTH_DAYS;
        months = months.saturating_add(whole);
    }
    let whole = time / DAY_NANOS;
    time -= whole * DAY_NANOS;
    days = days.saturating_add(whole as i32);
    let whole = days / MONTH_DAYS;
    days -= whole * MONTH_DAYS;
    months = months.saturating_add(whole);
    if months > 0 && (days < 0 || (days == 0 && time < 0)) {
        days += MONTH_DAYS;
        months -= 1;
    } else if months < 0 && (days > 0 || (days == 0 && time > 0)) {
        days -= MONTH_DAYS;
        months += 1;
    }
    if days > 0 && time < 0 {
        time += DAY_NANOS;
        days -= 1;
    } else if days < 0 && time > 0 {
        time -= DAY_NANOS;
        days += 1;
    }
    IntervalMonthDayNano::new(months, days, time)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    fn span(months: i32, days: i32, seconds: f64) -> IntervalMonthDayNano {
        IntervalMonthDayNano::new(months, days, (seconds * 1e9) as i64)
    }

    #[test]
    fn age_borrows_as_postgres_does() {
        // Values from PostgreSQL 15.
        let cases = [
            (
                "2026-03-31 10:00:00",
                "2025-01-31 12:30:00",
                span(13, 30, 77_400.0),
            ),
            (
                "2026-01-01 00:00:00",
                "2026-03-15 01:02:03.5",
                span(-2, -14, -3_723.5),
            ),
            (
                "2024-02-29 00:00:00",
                "2023-02-28 00:00:00",
                span(12, 1, 0.0),
            ),
            (
                "2026-03-01 00:00:00",
                "2026-01-31 00:00:00",
                span(1, 1, 0.0),
            ),
            (
                "2026-05-05 00:00:00",
                "2000-12-25 00:00:00",
                span(304, 11, 0.0),
            ),
        ];
        for (a, b, expected) in cases {
            assert_eq!(age(at(a), at(b)), expected, "age({a}, {b})");
        }
    }

    #[test]
    fn justify_keeps_signs_agreeing() {
        let hour = 3600.0;
        assert_eq!(justify_days(span(0, 65, 0.0)), span(2, 5, 0.0));
        assert_eq!(justify_days(span(0, -35, 0.0)), span(-1, -5, 0.0));
        assert_eq!(
            justify_hours(span(0, 0, 50.0 * hour)),
            span(0, 2, 2.0 * hour)
        );
        assert_eq!(
            justify_hours(span(0, 0, -27.0 * hour)),
            span(0, -1, -3.0 * hour)
        );
        assert_eq!(
            justify_interval(span(1, 0, -hour)),
            span(0, 29, 23.0 * hour)
        );
        assert_eq!(
            justify_interval(span(-1, 35, 25.0 * hour)),
            span(0, 6, hour)
        );
        assert_eq!(
            justify_days(span(12, 40, 3.0 * hour)),
            span(13, 10, 3.0 * hour)
        );
    }
}
