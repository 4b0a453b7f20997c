//! `date_trunc` with Postgres' interval form besides DataFusion's timestamp and time forms:
//! `date_trunc('day', INTERVAL '1 day 02:03')` is `1 day`; a date is truncated as the
//! `timestamptz` of its midnight, as Postgres does.
//!
//! Postgres' `interval_trunc` splits the interval into years (months / 12), months, days, hours,
//! minutes, seconds and microseconds, each truncated towards zero as C's division does, and clears
//! the fields below the unit; so `-3 hours` truncated to the day is `00:00:00`. `week` is refused
//! (months have fractional weeks), as in Postgres. Every other argument goes to DataFusion's
//! `date_trunc`, whose name and alias this function takes over.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, IntervalMonthDayNanoArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Field, FieldRef, IntervalMonthDayNano, IntervalMonthDayNanoType, IntervalUnit,
    TimeUnit, TimestampMicrosecondType,
};
use datafusion::common::types::{logical_date, logical_string};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    Coercion, ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, TypeSignature, TypeSignatureClass,
};
use datafusion::scalar::ScalarValue;

use crate::error::{SqlError, sqlstate};

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_MINUTE: i64 = 60 * MICROS_PER_SECOND;
const MICROS_PER_HOUR: i64 = 60 * MICROS_PER_MINUTE;

/// `date_trunc`, DataFusion's with the interval form added.
pub fn udf() -> ScalarUDF {
    let inner = datafusion::functions::datetime::date_trunc();
    let interval = TypeSignature::Coercible(vec![
        Coercion::new_exact(TypeSignatureClass::Native(logical_string())),
        Coercion::new_exact(TypeSignatureClass::Interval),
    ]);
    let mut forms = match &inner.signature().type_signature {
        TypeSignature::OneOf(forms) => forms.clone(),
        other => vec![other.clone()],
    };
    forms.push(interval);
    // Postgres' `date_trunc(unit, timestamptz, zone)`: truncated in that zone.
    forms.push(TypeSignature::Any(3));
    // A date first, before DataFusion's forms coerce it to a `timestamp`.
    forms.insert(
        0,
        TypeSignature::Coercible(vec![
            Coercion::new_exact(TypeSignatureClass::Native(logical_string())),
            Coercion::new_exact(TypeSignatureClass::Native(logical_date())),
        ]),
    );
    let signature = Signature::one_of(forms, inner.signature().volatility);
    ScalarUDF::new_from_impl(DateTrunc { inner, signature })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct DateTrunc {
    inner: Arc<ScalarUDF>,
    signature: Signature,
}

fn is_interval(t: &DataType) -> bool {
    matches!(t, DataType::Interval(_))
}

fn is_date(t: &DataType) -> bool {
    matches!(t, DataType::Date32 | DataType::Date64)
}

/// What a date is truncated as: Postgres casts it to `timestamptz` (its midnight in the session's
/// zone: [`super::time_zone`] gives a date that midnight when the session is not in UTC).
fn date_as() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
}

impl ScalarUDFImpl for DateTrunc {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Err(DataFusionError::Internal(
            "date_trunc's type comes from return_field_from_args".into(),
        ))
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        if args.arg_fields.len() == 3 {
            return match args.arg_fields.get(1) {
                Some(field) if matches!(field.data_type(), DataType::Timestamp(_, Some(_))) => {
                    Ok(Arc::new(Field::new(
                        self.name(),
                        field.data_type().clone(),
                        field.is_nullable(),
                    )))
                }
                _ => Err(DataFusionError::Plan(format!(
                    "function date_trunc({}) does not exist",
                    args.arg_fields
                        .iter()
                        .map(|f| f.data_type().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
            };
        }
        match args.arg_fields.get(1) {
            Some(field) if is_interval(field.data_type()) => Ok(Arc::new(Field::new(
                self.name(),
                DataType::Interval(IntervalUnit::MonthDayNano),
                field.is_nullable(),
            ))),
            Some(field) if is_date(field.data_type()) => Ok(Arc::new(Field::new(
                self.name(),
                date_as(),
                field.is_nullable(),
            ))),
            _ => self.inner.return_field_from_args(args),
        }
    }

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if args.args.len() == 3 {
            return self.in_zone(args);
        }
        if let Some(date) = args.args.get(1).filter(|v| is_date(&v.data_type())) {
            args.args[1] = date.cast_to(&date_as(), None)?;
        }
        let Some(value) = args.args.get(1).filter(|v| is_interval(&v.data_type())) else {
            // A timestamp: Postgres' spellings of the units DataFusion has, and the decade,
            // century and millennium it has not.
            let named = match args.args.first() {
                Some(ColumnarValue::Scalar(
                    ScalarValue::Utf8(Some(u))
                    | ScalarValue::Utf8View(Some(u))
                    | ScalarValue::LargeUtf8(Some(u)),
                )) => timestamp_unit(u),
                _ => None,
            };
            let value =
                args.args.get(1).cloned().ok_or_else(|| {
                    DataFusionError::Internal("date_trunc without a value".into())
                })?;
            return match named {
                // Microseconds (the type of `timestamp`, as in Postgres) in UTC are truncated
                // here, so years past 2262 (DataFusion's truncation goes through nanoseconds)
                // and decades, centuries and millennia work.
                Some(unit) if in_utc_micros(&value.data_type()) => {
                    like(&value, truncate_micros(&one_or_all(&value)?, unit)?)
                }
                Some(Named(unit)) => {
                    args.args[0] = ColumnarValue::Scalar(ScalarValue::Utf8(Some(unit.into())));
                    self.inner.invoke_with_args(args)
                }
                Some(Years(of)) => {
                    // Another unit of time goes through microseconds and back.
                    let DataType::Timestamp(_, tz) = value.data_type() else {
                        return self.inner.invoke_with_args(args);
                    };
                    let micros = cast(
                        &one_or_all(&value)?,
                        &DataType::Timestamp(TimeUnit::Microsecond, tz),
                    )?;
                    let truncated = truncate_micros(&micros, Years(of))?;
                    like(&value, cast(&truncated, &value.data_type())?)
                }
                None => self.inner.invoke_with_args(args),
            };
        };
        let unit = match args.args.first() {
            Some(ColumnarValue::Scalar(
                ScalarValue::Utf8(u) | ScalarValue::Utf8View(u) | ScalarValue::LargeUtf8(u),
            )) => u.clone(),
            _ => {
                return Err(DataFusionError::NotImplemented(
                    "date_trunc of an interval by a unit that is not a constant".into(),
                ));
            }
        };
        let Some(unit) = unit else {
            return Ok(ColumnarValue::Scalar(ScalarValue::IntervalMonthDayNano(
                None,
            )));
        };
        let unit = Unit::parse(&unit)?;
        let array = value.to_array(args.number_rows)?;
        let array = cast(&array, &DataType::Interval(IntervalUnit::MonthDayNano))?;
        let truncated: IntervalMonthDayNanoArray = array
            .as_primitive::<IntervalMonthDayNanoType>()
            .unary(|v| unit.truncate(v));
        Ok(match value {
            ColumnarValue::Scalar(_) => {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&truncated, 0)?)
            }
            ColumnarValue::Array(_) => ColumnarValue::Array(Arc::new(truncated) as Arc<dyn Array>),
        })
    }
}

impl DateTrunc {
    /// `date_trunc(unit, x, zone)`: `x` (a `timestamptz`) truncated to its wall clock's `unit` in
    /// `zone` (a constant, read as a `TimeZone` setting is).
    fn in_zone(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let zone = match args.args.pop() {
            Some(ColumnarValue::Scalar(
                ScalarValue::Utf8(Some(z))
                | ScalarValue::Utf8View(Some(z))
                | ScalarValue::LargeUtf8(Some(z)),
            )) => z,
            Some(ColumnarValue::Scalar(_)) => {
                return Ok(ColumnarValue::Scalar(ScalarValue::try_from(
                    args.return_field.data_type(),
                )?));
            }
            _ => {
                return Err(DataFusionError::NotImplemented(
                    "date_trunc with a time zone that is not a constant".into(),
                ));
            }
        };
        let zone = crate::pg::time_zone::setting(&zone)
            .map_err(|_| {
                refuse(SqlError::new(
                    sqlstate::INVALID_PARAMETER_VALUE,
                    format!("time zone \"{zone}\" not recognized"),
                ))
            })?
            .zone;
        let original = args.return_field.data_type().clone();
        let DataType::Timestamp(unit, Some(_)) = &original else {
            return Err(DataFusionError::Internal(format!(
                "date_trunc in a zone of {original}"
            )));
        };
        let labelled = DataType::Timestamp(*unit, Some(zone.into()));
        let value = args
            .args
            .get(1)
            .ok_or_else(|| DataFusionError::Internal("date_trunc without a value".into()))?
            .cast_to(&labelled, None)?;
        args.args[1] = value;
        args.arg_fields[1] = Arc::new(Field::new("x", labelled.clone(), true));
        args.arg_fields.truncate(2);
        args.return_field = Arc::new(Field::new(self.name(), labelled, true));
        self.invoke_with_args(args)?.cast_to(&original, None)
    }
}

/// A timestamp's truncation unit: one DataFusion's `date_trunc` takes, under its name, or a
/// number of years Rivulet truncates to itself (Postgres' year of the decade, century or
/// millennium the value is in).
enum TimestampUnit {
    Named(&'static str),
    Years(fn(i32) -> i32),
}
use TimestampUnit::{Named, Years};

/// The unit `text` names for a timestamp (Postgres' spellings, any case); `None` leaves the text
/// to DataFusion (and its error).
fn timestamp_unit(text: &str) -> Option<TimestampUnit> {
    Some(match text.trim().to_ascii_lowercase().as_str() {
        "microsecond" | "microseconds" | "usec" | "usecs" | "us" => Named("microsecond"),
        "millisecond" | "milliseconds" | "msec" | "msecs" | "ms" => Named("millisecond"),
        "second" | "seconds" | "sec" | "secs" | "s" => Named("second"),
        "minute" | "minutes" | "min" | "mins" | "m" => Named("minute"),
        "hour" | "hours" | "hr" | "hrs" | "h" => Named("hour"),
        "day" | "days" | "d" => Named("day"),
        "week" | "weeks" | "w" => Named("week"),
        "month" | "months" | "mon" | "mons" => Named("month"),
        "quarter" | "qtr" => Named("quarter"),
        "year" | "years" | "yr" | "yrs" | "y" => Named("year"),
        // Postgres' timestamp_trunc: the decade 2020 holds 2020..2029, the 21st century and the
        // third millennium begin in 2001 (before year 1, mirrored).
        "decade" | "decades" | "dec" | "decs" => Years(|y| {
            if y > 0 {
                y / 10 * 10
            } else {
                -((8 - (y - 1)) / 10) * 10
            }
        }),
        "century" | "centuries" | "cent" | "c" => Years(|y| {
            if y > 0 {
                (y + 99) / 100 * 100 - 99
            } else {
                -((99 - (y - 1)) / 100) * 100 - 99
            }
        }),
        "millennium" | "millennia" | "millenniums" | "mil" | "mils" => Years(|y| {
            if y > 0 {
                (y + 999) / 1000 * 1000 - 999
            } else {
                -((999 - (y - 1)) / 1000) * 1000 - 999
            }
        }),
        _ => return None,
    })
}

/// Whether `t` is a timestamp of microseconds, without a time zone or in UTC.
fn in_utc_micros(t: &DataType) -> bool {
    match t {
        DataType::Timestamp(TimeUnit::Microsecond, tz) => tz
            .as_deref()
            .is_none_or(|tz| matches!(tz, "+00:00" | "UTC" | "Z" | "+00" | "GMT")),
        _ => false,
    }
}

/// Each timestamp of `array` (microseconds, in UTC) truncated to `unit`, in `array`'s type.
fn truncate_micros(array: &ArrayRef, unit: TimestampUnit) -> Result<ArrayRef> {
    use chrono::Datelike;
    const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;
    let DataType::Timestamp(_, tz) = array.data_type() else {
        return Err(DataFusionError::Internal(format!(
            "date_trunc of {} as microseconds",
            array.data_type()
        )));
    };
    let micros = array.as_primitive::<TimestampMicrosecondType>();
    // Units of a fixed length are arithmetic on the whole column; calendar units go through
    // chrono's calendar (proleptic Gregorian), value by value.
    let step = |step: i64| micros.unary(|us: i64| us - us.rem_euclid(step));
    let calendar = |f: &dyn Fn(chrono::NaiveDate) -> Option<chrono::NaiveDate>| {
        micros
            .iter()
            .map(|us| {
                let day = chrono::DateTime::from_timestamp_micros(us?)?.date_naive();
                Some(f(day)?.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros())
            })
            .collect::<datafusion::arrow::array::PrimitiveArray<TimestampMicrosecondType>>()
    };
    let truncated = match unit {
        Named("microsecond") => micros.clone(),
        Named("millisecond") => step(1_000),
        Named("second") => step(MICROS_PER_SECOND),
        Named("minute") => step(MICROS_PER_MINUTE),
        Named("hour") => step(MICROS_PER_HOUR),
        Named("day") => step(MICROS_PER_DAY),
        // 1970-01-01 was a Thursday: weeks start on Mondays.
        Named("week") => micros.unary(|us: i64| {
            let days = us.div_euclid(MICROS_PER_DAY);
            (days - (days + 3).rem_euclid(7)) * MICROS_PER_DAY
        }),
        Named("month") => calendar(&|d| d.with_day(1)),
        Named("quarter") => {
            calendar(&|d| chrono::NaiveDate::from_ymd_opt(d.year(), (d.month0() / 3) * 3 + 1, 1))
        }
        Named("year") => calendar(&|d| d.with_ordinal(1)),
        Years(of) => calendar(&|d| chrono::NaiveDate::from_ymd_opt(of(d.year()), 1, 1)),
        Named(other) => {
            return Err(DataFusionError::Internal(format!(
                "date_trunc unit {other} has no truncation"
            )));
        }
    };
    Ok(Arc::new(truncated.with_timezone_opt(tz.clone())))
}

/// `value`'s values: a constant's one (truncated once, not once per row), or the column.
fn one_or_all(value: &ColumnarValue) -> Result<ArrayRef> {
    match value {
        ColumnarValue::Scalar(v) => v.to_array(),
        ColumnarValue::Array(a) => Ok(Arc::clone(a)),
    }
}

/// `result`, the values of [`one_or_all`]`(value)` computed, shaped as `value` (a constant or a
/// column).
fn like(value: &ColumnarValue, result: ArrayRef) -> Result<ColumnarValue> {
    Ok(match value {
        ColumnarValue::Scalar(_) => ColumnarValue::Scalar(ScalarValue::try_from_array(&result, 0)?),
        ColumnarValue::Array(_) => ColumnarValue::Array(result),
    })
}

/// The units Postgres truncates an interval to, largest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Unit {
    Millennium,
    Century,
    Decade,
    Year,
    Quarter,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    Millisecond,
    Microsecond,
}

impl Unit {
    /// The unit `text` names (Postgres' spellings, any case), or Postgres' error.
    fn parse(text: &str) -> Result<Self> {
        let unit = match text.trim().to_ascii_lowercase().as_str() {
            "millennium" | "millennia" | "millenniums" | "mil" | "mils" => Unit::Millennium,
            "century" | "centuries" | "cent" | "c" => Unit::Century,
            "decade" | "decades" | "dec" | "decs" => Unit::Decade,
            "year" | "years" | "yr" | "yrs" | "y" => Unit::Year,
            "quarter" | "qtr" => Unit::Quarter,
            "month" | "months" | "mon" | "mons" => Unit::Month,
            "day" | "days" | "d" => Unit::Day,
            "hour" | "hours" | "hr" | "hrs" | "h" => Unit::Hour,
            "minute" | "minutes" | "min" | "mins" | "m" => Unit::Minute,
            "second" | "seconds" | "sec" | "secs" | "s" => Unit::Second,
            "millisecond" | "milliseconds" | "msec" | "msecs" | "ms" => Unit::Millisecond,
            "microsecond" | "microseconds" | "usec" | "usecs" | "us" => Unit::Microsecond,
            "week" | "weeks" | "w" => {
                return Err(refuse(
                    SqlError::new(
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        format!("unit \"{text}\" not supported for type interval"),
                    )
                    .with_detail("Months usually have fractional weeks."),
                ));
            }
            _ => {
                return Err(refuse(SqlError::new(
                    sqlstate::INVALID_PARAMETER_VALUE,
                    format!("unit \"{text}\" not recognized for type interval"),
                )));
            }
        };
        Ok(unit)
    }

    /// `v` with the fields below this unit cleared, as Postgres' `interval_trunc`.
    fn truncate(self, v: IntervalMonthDayNano) -> IntervalMonthDayNano {
        let keep = |unit: Unit| self >= unit;
        let (mut years, mut months) = (v.months / 12, v.months % 12);
        match self {
            Unit::Millennium => years = years / 1000 * 1000,
            Unit::Century => years = years / 100 * 100,
            Unit::Decade => years = years / 10 * 10,
            Unit::Quarter => months = months / 3 * 3,
            _ => {}
        }
        if !keep(Unit::Quarter) {
            months = 0;
        }
        let days = if keep(Unit::Day) { v.days } else { 0 };
        // Postgres keeps microseconds; the nanoseconds below them go.
        let micros = v.nanoseconds / 1000;
        let field = |unit: Unit, size: i64, below: i64| {
            if keep(unit) { micros % below / size } else { 0 }
        };
        let hours = if keep(Unit::Hour) {
            micros / MICROS_PER_HOUR
        } else {
            0
        };
        let minutes = field(Unit::Minute, MICROS_PER_MINUTE, MICROS_PER_HOUR);
        let seconds = field(Unit::Second, MICROS_PER_SECOND, MICROS_PER_MINUTE);
        let fraction = match self {
            Unit::Microsecond => micros % MICROS_PER_SECOND,
            Unit::Millisecond => micros % MICROS_PER_SECOND / 1000 * 1000,
            _ => 0,
        };
        let time = hours * MICROS_PER_HOUR
            + minutes * MICROS_PER_MINUTE
            + seconds * MICROS_PER_SECOND
            + fraction;
        IntervalMonthDayNano::new(years * 12 + months, days, time * 1000)
    }
}

/// `e` as the DataFusion error that reaches the client as `e`.
fn refuse(e: SqlError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(months: i32, days: i32, micros: i64) -> IntervalMonthDayNano {
        IntervalMonthDayNano::new(months, days, micros * 1000)
    }

    #[test]
    fn truncates_as_postgres() {
        let v = iv(
            14,
            3,
            2 * MICROS_PER_HOUR + 3 * MICROS_PER_MINUTE + 4_567_891,
        );
        assert_eq!(Unit::Day.truncate(v), iv(14, 3, 0));
        assert_eq!(Unit::Year.truncate(v), iv(12, 0, 0));
        assert_eq!(Unit::Quarter.truncate(v), iv(12, 0, 0));
        assert_eq!(Unit::Quarter.truncate(iv(17, 3, 0)), iv(15, 0, 0));
        assert_eq!(Unit::Month.truncate(v), iv(14, 0, 0));
        assert_eq!(
            Unit::Minute.truncate(v),
            iv(14, 3, 2 * MICROS_PER_HOUR + 3 * MICROS_PER_MINUTE)
        );
        assert_eq!(
            Unit::Millisecond.truncate(v),
            iv(
                14,
                3,
                2 * MICROS_PER_HOUR + 3 * MICROS_PER_MINUTE + 4_567_000
            )
        );
        assert_eq!(Unit::Microsecond.truncate(v), v);
        // Towards zero: -3 hours has no whole day, -90 minutes one hour.
        assert_eq!(
            Unit::Day.truncate(iv(0, 0, -3 * MICROS_PER_HOUR)),
            iv(0, 0, 0)
        );
        assert_eq!(
            Unit::Hour.truncate(iv(0, 0, -90 * MICROS_PER_MINUTE)),
            iv(0, 0, -MICROS_PER_HOUR)
        );
        assert_eq!(
            Unit::Decade.truncate(iv(12 * 27 + 5, 0, 0)),
            iv(12 * 20, 0, 0)
        );
    }

    #[test]
    fn names_units_as_postgres() {
        assert_eq!(Unit::parse("Day").ok(), Some(Unit::Day));
        assert_eq!(Unit::parse("mons").ok(), Some(Unit::Month));
        assert!(Unit::parse("week").is_err());
        assert!(Unit::parse("fortnight").is_err());
    }
}
