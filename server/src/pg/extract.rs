//! Postgres' `EXTRACT(field FROM x)`, a `numeric` (Postgres 14 on), and `date_part('field', x)`,
//! a `double precision`. DataFusion's `date_part` is an `integer` for most fields and drops the
//! fraction of `second` (`extract(second from '10:11:12.345678')` is `12.345678` in Postgres).
//!
//! `rewrite.rs` turns both spellings into `pg_extract(field, x)` (`date_part` cast to a double).
//! `second`, `milliseconds` and `microseconds` count from the start of the minute, with 6, 3 and 0
//! decimals; `epoch` is seconds since 1970-01-01 00:00 UTC with 6 decimals (of an interval, its
//! length with a month as 30 days and a year as 365.25); the other fields are DataFusion's
//! `date_part`, as whole numbers. A `timestamptz`'s fields are its wall clock's in the zone its
//! type is labelled with, the session's ([`super::time_zone`]), and `timezone` is that zone's
//! offset.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Decimal128Builder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Field, FieldRef, IntervalMonthDayNanoType, IntervalUnit, Time64MicrosecondType,
    TimeUnit, TimestampMicrosecondType,
};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::sql::sqlparser::ast;

/// The name `rewrite.rs` calls.
pub const NAME: &str = "pg_extract";

pub fn udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(Extract {
        signature: Signature::any(2, Volatility::Immutable),
    })
}

/// `EXTRACT(f FROM x)` as `pg_extract('f', x)`, and `date_part('f', x)` as `pg_extract('f', x)`
/// cast to `double precision`.
pub fn rewrite(stmt: &mut ast::Statement) {
    let _ = ast::visit_expressions_mut(stmt, |expr| {
        let call = |field: String, value: ast::Expr| {
            super::rewrite::call(
                NAME,
                vec![
                    ast::Expr::value(ast::Value::SingleQuotedString(field)),
                    value,
                ],
                vec![],
            )
        };
        match expr {
            ast::Expr::Extract {
                field, expr: value, ..
            } => {
                let name = match field {
                    ast::DateTimeField::Custom(id) => id.value.clone(),
                    other => other.to_string(),
                };
                *expr = call(name.to_lowercase(), value.as_ref().clone());
            }
            ast::Expr::Function(f)
                if f.name.to_string().eq_ignore_ascii_case("date_part")
                    || f.name
                        .to_string()
                        .eq_ignore_ascii_case("pg_catalog.date_part") =>
            {
                if let ast::FunctionArguments::List(list) = &f.args
                    && let [
                        ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(field)),
                        ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(value)),
                    ] = list.args.as_slice()
                    && let ast::Expr::Value(v) = field
                    && let ast::Value::SingleQuotedString(name) = &v.value
                {
                    *expr = ast::Expr::Cast {
                        kind: ast::CastKind::Cast,
                        expr: Box::new(call(name.to_lowercase(), value.clone())),
                        data_type: ast::DataType::DoublePrecision,
                        array: false,
                        format: None,
                    };
                }
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Extract {
    signature: Signature,
}

/// How a field is computed.
#[derive(Clone, Copy)]
enum Field_ {
    /// Microseconds since the minute began, shown with this many decimals of seconds (`second`
    /// 6, `milliseconds` 3 after scaling by 1000, `microseconds` 0 after scaling by a million).
    OfMinute {
        scale: i8,
    },
    Epoch,
    /// DataFusion's `date_part` of this name, as a whole number.
    Whole(&'static str),
    /// Computed from the year (DataFusion has no decade, century or millennium); of an interval,
    /// its whole years divided by this many.
    OfYear(fn(i32) -> i32, i32),
    /// The offset of the session's time zone at the instant, from its seconds east of
    /// Greenwich (`timezone` in seconds, `timezone_hour`, `timezone_minute`).
    Zone(fn(i32) -> i32),
    /// The Julian day of a date.
    Julian,
}

fn field(name: &str) -> Option<Field_> {
    Some(match name {
        "second" | "seconds" | "sec" | "secs" | "s" => Field_::OfMinute { scale: 6 },
        "millisecond" | "milliseconds" | "ms" | "msec" | "msecs" => Field_::OfMinute { scale: 3 },
        "microsecond" | "microseconds" | "us" | "usec" | "usecs" => Field_::OfMinute { scale: 0 },
        "epoch" => Field_::Epoch,
        "year" | "years" => Field_::Whole("year"),
        "month" | "months" | "mon" | "mons" => Field_::Whole("month"),
        "day" | "days" => Field_::Whole("day"),
        "hour" | "hours" => Field_::Whole("hour"),
        "minute" | "minutes" | "min" | "mins" => Field_::Whole("minute"),
        "week" => Field_::Whole("week"),
        "quarter" => Field_::Whole("quarter"),
        "dow" => Field_::Whole("dow"),
        "isodow" => Field_::Whole("isodow"),
        "doy" => Field_::Whole("doy"),
        "isoyear" => Field_::Whole("isoyear"),
        "decade" | "decades" => Field_::OfYear(|y| y.div_euclid(10), 10),
        // Postgres: the 21st century began in 2001; year 0 does not exist (1 BC is year 0 here).
        "century" | "centuries" => Field_::OfYear(
            |y| {
                if y > 0 {
                    (y + 99) / 100
                } else {
                    (y - 99) / 100
                }
            },
            100,
        ),
        "millennium" | "millennia" => Field_::OfYear(
            |y| {
                if y > 0 {
                    (y + 999) / 1000
                } else {
                    (y - 999) / 1000
                }
            },
            1000,
        ),
        "timezone" => Field_::Zone(|s| s),
        "timezone_hour" => Field_::Zone(|s| s / 3600),
        "timezone_minute" => Field_::Zone(|s| s / 60 % 60),
        "julian" => Field_::Julian,
        _ => return None,
    })
}

/// Decimals of a field of a value of type `t`: a date's epoch is whole seconds.
fn scale_of(f: Field_, t: &DataType) -> i8 {
    match f {
        Field_::OfMinute { scale } => scale,
        Field_::Epoch if date(t) => 0,
        Field_::Epoch => 6,
        Field_::Whole(_) | Field_::OfYear(..) | Field_::Zone(_) | Field_::Julian => 0,
    }
}

/// Postgres' 0A000 for a field its type has not (`unit "hour" not supported for type date`).
fn supported(f: Field_, name: &str, t: &DataType) -> Result<()> {
    let type_name = match t {
        DataType::Date32 | DataType::Date64 => "date",
        DataType::Timestamp(_, None) => "timestamp without time zone",
        DataType::Timestamp(_, Some(_)) => "timestamp with time zone",
        DataType::Interval(_) => "interval",
        _ => return Ok(()),
    };
    let refused = match (f, type_name) {
        (Field_::OfMinute { .. } | Field_::Zone(_), "date") => true,
        (Field_::Whole("hour" | "minute"), "date") => true,
        (Field_::Zone(_), "timestamp without time zone" | "interval") => true,
        (Field_::Whole("dow" | "isodow" | "doy" | "isoyear"), "interval") => true,
        // Postgres has it for timestamps too, with a fraction of the day; not here.
        (Field_::Julian, other) => other != "date",
        _ => false,
    };
    if refused {
        return Err(DataFusionError::External(Box::new(
            crate::error::SqlError::new(
                crate::error::sqlstate::FEATURE_NOT_SUPPORTED,
                format!("unit \"{name}\" not supported for type {type_name}"),
            ),
        )));
    }
    Ok(())
}

fn date(t: &DataType) -> bool {
    matches!(t, DataType::Date32 | DataType::Date64)
}

fn field_arg(value: Option<&ScalarValue>) -> Result<(Field_, String)> {
    let name = match value {
        Some(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s))) => s.to_lowercase(),
        _ => {
            return Err(DataFusionError::Plan(
                "the field of EXTRACT must be a constant name".into(),
            ));
        }
    };
    match field(&name) {
        Some(f) => Ok((f, name)),
        None => Err(DataFusionError::Execution(format!(
            "unit \"{name}\" not recognized by EXTRACT"
        ))),
    }
}

impl ScalarUDFImpl for Extract {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Err(DataFusionError::Internal(
            "pg_extract's type comes from its field".into(),
        ))
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let (f, name) = field_arg(args.scalar_arguments.first().copied().flatten())?;
        // A difference of timestamps (a duration) is read as the interval Postgres has.
        let value_type = match args.arg_fields.get(1).map(|f| f.data_type().clone()) {
            Some(DataType::Duration(_)) => DataType::Interval(IntervalUnit::MonthDayNano),
            Some(t) => t,
            None => DataType::Null,
        };
        supported(f, &name, &value_type)?;
        match Some(&value_type) {
            Some(
                DataType::Timestamp(..)
                | DataType::Date32
                | DataType::Date64
                | DataType::Time32(_)
                | DataType::Time64(_)
                | DataType::Interval(_)
                | DataType::Null,
            ) => {}
            Some(other) => {
                return Err(DataFusionError::Plan(format!(
                    "function extract(unknown, {other}) does not exist: EXTRACT takes a \
                     timestamp, date, time or interval"
                )));
            }
            None => return Err(DataFusionError::Plan("EXTRACT takes two arguments".into())),
        }
        Ok(Arc::new(Field::new(
            NAME,
            DataType::Decimal128(38, scale_of(f, &value_type)),
            true,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (f, _) = match args.args.first() {
            Some(ColumnarValue::Scalar(s)) => field_arg(Some(s))?,
            _ => field_arg(None)?,
        };
        let rows = args.number_rows;
        let value = args
            .args
            .get(1)
            .ok_or_else(|| DataFusionError::Internal("pg_extract without a value".into()))?
            .to_array(rows)?;
        let value = match value.data_type() {
            DataType::Duration(_) => duration_interval(&value)?,
            _ => value,
        };
        let scale = scale_of(f, value.data_type());
        // A `timestamptz`'s fields are those of its wall clock in the zone its type is labelled
        // with (the session's); its epoch is the instant's.
        let local = super::time_zone::local(&value)?;
        let value = match (&local, f) {
            (Some(l), f) if !matches!(f, Field_::Epoch | Field_::Zone(_)) => Arc::clone(&l.clocks),
            _ => value,
        };
        let interval = matches!(value.data_type(), DataType::Interval(_));
        let out: ArrayRef = match f {
            // An interval's fields count its own parts, truncated towards zero as C divides:
            // its years (months / 12) by tens, hundreds, thousands; the quarter of its months
            // (-5 months is quarter -2); seconds of its time part, negative when it is.
            Field_::OfYear(_, per) if interval => {
                of_interval(&value, |v| i128::from(v.months / 12 / per))?
            }
            Field_::Whole("quarter") if interval => of_interval(&value, |v| {
                let months = v.months % 12;
                i128::from(if months >= 0 {
                    months / 3 + 1
                } else {
                    months / 3 - 1
                })
            })?,
            Field_::OfMinute { .. } if interval => {
                let time: Vec<Option<i64>> = interval_parts(&value)?
                    .iter()
                    .map(|v| v.map(|v| v.nanoseconds / 1_000))
                    .collect();
                decimals(&time, scale, |us| us.map(|us| i128::from(us % 60_000_000)))?
            }
            Field_::Zone(part) => {
                let zones = local
                    .as_ref()
                    .map(|l| l.zones.as_slice())
                    .unwrap_or_default();
                let offsets: Vec<Option<i64>> = (0..rows)
                    .map(|i| match zones.get(i) {
                        Some(z) => z.as_ref().map(|z| i64::from(z.offset)),
                        None => value.is_valid(i).then_some(0),
                    })
                    .collect();
                decimals(&offsets, 0, |s| s.map(|s| i128::from(part(s as i32))))?
            }
            // Days since 1970-01-01 plus the Julian day of that date.
            Field_::Julian => decimals(&micros(&value)?, 0, |us| {
                us.map(|us| i128::from(us.div_euclid(86_400_000_000) + 2_440_588))
            })?,
            Field_::OfYear(of, _) => {
                let years = date_part("year", &value, rows, &args)?;
                let years = years.as_primitive::<datafusion::arrow::datatypes::Int32Type>();
                let mut out = Decimal128Builder::with_capacity(rows);
                for y in years.iter() {
                    out.append_option(y.map(|y| i128::from(of(y))));
                }
                Arc::new(out.finish().with_precision_and_scale(38, 0)?)
            }
            Field_::Whole(name) => cast(
                &date_part(name, &value, rows, &args)?,
                &DataType::Decimal128(38, 0),
            )?,
            // The same microseconds, read with 6, 3 or no decimals.
            Field_::OfMinute { .. } => decimals(&micros(&value)?, scale, |us| {
                us.map(|us| i128::from(us.rem_euclid(60_000_000)))
            })?,
            Field_::Epoch if date(value.data_type()) => decimals(&micros(&value)?, scale, |us| {
                us.map(|us| i128::from(us / 1_000_000))
            })?,
            Field_::Epoch => decimals(&micros(&value)?, scale, |us| us.map(i128::from))?,
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// The intervals of `value`, as months, days and nanoseconds.
fn interval_parts(
    value: &ArrayRef,
) -> Result<Vec<Option<datafusion::arrow::datatypes::IntervalMonthDayNano>>> {
    let i = cast(value, &DataType::Interval(IntervalUnit::MonthDayNano))?;
    Ok(i.as_primitive::<IntervalMonthDayNanoType>()
        .iter()
        .collect())
}

/// `part` of each interval of `value`, a whole number.
fn of_interval(
    value: &ArrayRef,
    part: impl Fn(datafusion::arrow::datatypes::IntervalMonthDayNano) -> i128,
) -> Result<ArrayRef> {
    let mut out = Decimal128Builder::with_capacity(value.len());
    for v in interval_parts(value)? {
        out.append_option(v.map(&part));
    }
    Ok(Arc::new(out.finish().with_precision_and_scale(38, 0)?))
}

/// DataFusion's `date_part(name, value)`, an `Int32` array.
fn date_part(
    name: &str,
    value: &ArrayRef,
    rows: usize,
    args: &ScalarFunctionArgs,
) -> Result<ArrayRef> {
    let part =
        datafusion::functions::datetime::date_part().invoke_with_args(ScalarFunctionArgs {
            args: vec![
                ColumnarValue::Scalar(ScalarValue::Utf8(Some(name.into()))),
                ColumnarValue::Array(Arc::clone(value)),
            ],
            arg_fields: vec![
                Arc::new(Field::new("f", DataType::Utf8, false)),
                Arc::new(Field::new("v", value.data_type().clone(), true)),
            ],
            number_rows: rows,
            return_field: Arc::new(Field::new("p", DataType::Int32, true)),
            config_options: Arc::clone(&args.config_options),
        })?;
    let part = part.to_array(rows)?;
    Ok(cast(&part, &DataType::Int32)?)
}

/// Microseconds of each value: since the epoch for timestamps and dates, since midnight for
/// times, and an interval's length (a month 30 days, a year 365.25 days, as Postgres' epoch).
fn micros(value: &ArrayRef) -> Result<Vec<Option<i64>>> {
    Ok(match value.data_type() {
        DataType::Timestamp(_, tz) => {
            let t = cast(
                value,
                &DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
            )?;
            t.as_primitive::<TimestampMicrosecondType>()
                .iter()
                .collect()
        }
        DataType::Date32 | DataType::Date64 => {
            let t = cast(value, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
            t.as_primitive::<TimestampMicrosecondType>()
                .iter()
                .collect()
        }
        DataType::Time32(_) | DataType::Time64(_) => {
            let t = cast(value, &DataType::Time64(TimeUnit::Microsecond))?;
            t.as_primitive::<Time64MicrosecondType>().iter().collect()
        }
        DataType::Interval(_) => {
            let i = cast(value, &DataType::Interval(IntervalUnit::MonthDayNano))?;
            i.as_primitive::<IntervalMonthDayNanoType>()
                .iter()
                .map(|v| {
                    v.map(|v| {
                        // Postgres: years of 365.25 days, the rest of the months 30 days each.
                        let years = i64::from(v.months / 12);
                        let months = i64::from(v.months % 12);
                        let days_micros = (years * 36_525 * 86_400 * 10_000)
                            + (months * 30 + i64::from(v.days)) * 86_400_000_000;
                        days_micros + v.nanoseconds / 1_000
                    })
                })
                .collect()
        }
        DataType::Null => vec![None; value.len()],
        other => {
            return Err(DataFusionError::Execution(format!(
                "EXTRACT does not take {other}"
            )));
        }
    })
}

fn decimals(
    micros: &[Option<i64>],
    scale: i8,
    f: impl Fn(Option<i64>) -> Option<i128>,
) -> Result<ArrayRef> {
    let mut out = Decimal128Builder::with_capacity(micros.len());
    for &us in micros {
        out.append_option(f(us));
    }
    Ok(Arc::new(out.finish().with_precision_and_scale(38, scale)?))
}

/// A duration (a difference of timestamps) as the interval Postgres gives for one: whole days,
/// and the rest as time (`3 days 14:00:00`, not `86:00:00`).
fn duration_interval(value: &ArrayRef) -> Result<ArrayRef> {
    const DAY: i64 = 86_400_000_000_000;
    let nanos = cast(value, &DataType::Duration(TimeUnit::Nanosecond))?;
    let nanos = nanos.as_primitive::<datafusion::arrow::datatypes::DurationNanosecondType>();
    let intervals: datafusion::arrow::array::IntervalMonthDayNanoArray = nanos
        .iter()
        .map(|n| {
            n.map(|n| {
                datafusion::arrow::datatypes::IntervalMonthDayNano::new(
                    0,
                    (n / DAY) as i32,
                    n % DAY,
                )
            })
        })
        .collect();
    Ok(Arc::new(intervals))
}
