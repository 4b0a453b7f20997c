//! Postgres' `make_time(hour, min, sec)`, `make_timestamp(year, month, day, hour, min, sec)`,
//! `make_timestamptz(...)` (its fields in the session's zone: [`super::time_zone`], or in the
//! zone a seventh argument names) and `make_interval(years, months, weeks, days, hours, mins,
//! secs)`, whose arguments may be named (`make_interval(days => 3)`) and
//! default to 0. Seconds are `double precision` with a fraction (`12.5`); DataFusion's
//! `make_time` takes whole seconds, and it has neither of the others.

use std::ops::ControlFlow;
use std::sync::Arc;

use chrono::{NaiveDate, NaiveTime};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, IntervalMonthDayNanoArray, Time64MicrosecondArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Float64Type, Int32Type, IntervalMonthDayNano, IntervalUnit, TimeUnit,
};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::sql::sqlparser::ast;

/// The four functions.
pub fn udfs() -> Vec<ScalarUDF> {
    [
        Kind::Time,
        Kind::Timestamp,
        Kind::TimestampTz,
        Kind::Interval,
    ]
    .into_iter()
    .map(|kind| {
        ScalarUDF::new_from_impl(Make {
            kind,
            signature: Signature::user_defined(Volatility::Immutable),
        })
    })
    .collect()
}

/// `make_interval`'s parameters, in order.
const INTERVAL_PARAMS: [&str; 7] = ["years", "months", "weeks", "days", "hours", "mins", "secs"];

/// Writes `make_interval`'s named arguments (`days => 3`) as positional ones, the others 0, and
/// `make_timestamptz(year, .., sec, zone)` as the wall clock `make_timestamp(..)` in that zone
/// (`AT TIME ZONE zone`, which reads zones as Postgres' does).
pub fn rewrite(stmt: &mut ast::Statement) {
    let _ = ast::visit_expressions_mut(stmt, |expr| {
        if let ast::Expr::Function(f) = expr
            && f.name.to_string().eq_ignore_ascii_case("make_timestamptz")
            && let ast::FunctionArguments::List(list) = &f.args
            && list.args.len() == 7
            && let Some(ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(zone))) =
                list.args.last()
        {
            let fields = list.args[..6]
                .iter()
                .filter_map(|a| match a {
                    ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => Some(e.clone()),
                    _ => None,
                })
                .collect::<Vec<_>>();
            if fields.len() == 6 {
                *expr = ast::Expr::AtTimeZone {
                    timestamp: Box::new(super::rewrite::call("make_timestamp", fields, vec![])),
                    time_zone: Box::new(zone.clone()),
                };
                return ControlFlow::<()>::Continue(());
            }
        }
        if let ast::Expr::Function(f) = expr
            && f.name.to_string().eq_ignore_ascii_case("make_interval")
            && let ast::FunctionArguments::List(list) = &mut f.args
            && list
                .args
                .iter()
                .any(|a| !matches!(a, ast::FunctionArg::Unnamed(_)))
        {
            let zero = || ast::Expr::value(ast::Value::Number("0".into(), false));
            let mut positional: Vec<ast::Expr> = INTERVAL_PARAMS.iter().map(|_| zero()).collect();
            for (i, arg) in list.args.iter().enumerate() {
                // `days => 3`: the Postgres dialect reads the name as an expression.
                let named = match arg {
                    ast::FunctionArg::Named {
                        name,
                        arg: ast::FunctionArgExpr::Expr(e),
                        ..
                    } => Some((name.value.as_str(), e)),
                    ast::FunctionArg::ExprNamed {
                        name: ast::Expr::Identifier(name),
                        arg: ast::FunctionArgExpr::Expr(e),
                        ..
                    } => Some((name.value.as_str(), e)),
                    _ => None,
                };
                let (slot, value) = match (named, arg) {
                    (Some((name, e)), _) => {
                        match INTERVAL_PARAMS
                            .iter()
                            .position(|p| p.eq_ignore_ascii_case(name))
                        {
                            Some(slot) => (slot, e),
                            // Left for the planner to refuse, naming the function.
                            None => return ControlFlow::<()>::Continue(()),
                        }
                    }
                    (None, ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e))) => (i, e),
                    _ => return ControlFlow::<()>::Continue(()),
                };
                if let Some(p) = positional.get_mut(slot) {
                    *p = value.clone();
                }
            }
            *expr = super::rewrite::call("make_interval", positional, vec![]);
        }
        ControlFlow::<()>::Continue(())
    });
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Time,
    Timestamp,
    TimestampTz,
    Interval,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Make {
    kind: Kind,
    signature: Signature,
}

impl Make {
    /// How many arguments the function takes, at least and at most.
    fn arity(&self) -> (usize, usize) {
        match self.kind {
            Kind::Time => (3, 3),
            Kind::Timestamp | Kind::TimestampTz => (6, 6),
            Kind::Interval => (0, 7),
        }
    }

    /// Whether argument `i` is the seconds (`double precision`; the others are integers).
    fn is_seconds(&self, i: usize) -> bool {
        match self.kind {
            Kind::Time => i == 2,
            Kind::Timestamp | Kind::TimestampTz => i == 5,
            Kind::Interval => i == 6,
        }
    }
}

fn out_of_range(what: &str, value: String) -> DataFusionError {
    DataFusionError::Execution(format!("{what} field value out of range: {value}"))
}

impl ScalarUDFImpl for Make {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Time => "make_time",
            Kind::Timestamp => "make_timestamp",
            Kind::TimestampTz => "make_timestamptz",
            Kind::Interval => "make_interval",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let (min, max) = self.arity();
        let numeric = |t: &DataType| t.is_numeric() || t.is_null();
        if args.len() < min || args.len() > max || !args.iter().all(numeric) {
            return Err(DataFusionError::Plan(format!(
                "No function matches the given name and argument types '{}({})'.",
                self.name(),
                args.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok((0..args.len())
            .map(|i| {
                if self.is_seconds(i) {
                    DataType::Float64
                } else {
                    DataType::Int32
                }
            })
            .collect())
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(match self.kind {
            Kind::Time => DataType::Time64(TimeUnit::Microsecond),
            Kind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            Kind::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
            Kind::Interval => DataType::Interval(IntervalUnit::MonthDayNano),
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let mut ints = Vec::new();
        let mut seconds = None;
        for (i, a) in arrays.iter().enumerate() {
            if self.is_seconds(i) {
                seconds = Some(cast(a, &DataType::Float64)?);
            } else {
                ints.push(cast(a, &DataType::Int32)?);
            }
        }
        let int = |i: usize, row: usize| -> Option<i64> {
            ints.get(i).and_then(|a| {
                let a = a.as_primitive::<Int32Type>();
                a.is_valid(row).then(|| i64::from(a.value(row)))
            })
        };
        let secs = |row: usize| -> Option<f64> {
            seconds.as_ref().and_then(|a| {
                let a = a.as_primitive::<Float64Type>();
                a.is_valid(row).then(|| a.value(row))
            })
        };
        // make_interval's missing arguments are 0; the others' NULLs make the row NULL.
        let given = arrays.len();
        let out: ArrayRef = match self.kind {
            Kind::Time => {
                let mut v = Vec::with_capacity(rows);
                for row in 0..rows {
                    v.push(match (int(0, row), int(1, row), secs(row)) {
                        (Some(h), Some(m), Some(s)) => Some(time_micros(h, m, s)?),
                        _ => None,
                    });
                }
                Arc::new(Time64MicrosecondArray::from(v))
            }
            Kind::Timestamp | Kind::TimestampTz => {
                let mut v = Vec::with_capacity(rows);
                for row in 0..rows {
                    let fields: Option<Vec<i64>> = (0..5).map(|i| int(i, row)).collect();
                    v.push(match (fields, secs(row)) {
                        (Some(f), Some(s)) => Some(timestamp_micros(&f, s)?),
                        _ => None,
                    });
                }
                let a = TimestampMicrosecondArray::from(v);
                Arc::new(match self.kind {
                    Kind::TimestampTz => a.with_timezone("+00:00"),
                    _ => a,
                })
            }
            Kind::Interval => {
                let mut v = Vec::with_capacity(rows);
                for row in 0..rows {
                    let part = |i: usize| if i < given { int(i, row) } else { Some(0) };
                    let fields: Option<Vec<i64>> = (0..6).map(part).collect();
                    let s = if given > 6 { secs(row) } else { Some(0.0) };
                    v.push(match (fields, s) {
                        (Some(f), Some(s)) => Some(interval(&f, s)?),
                        _ => None,
                    });
                }
                Arc::new(IntervalMonthDayNanoArray::from(v))
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// Microseconds since midnight of `h:m:s` (24:00:00 allowed, as in Postgres).
fn time_micros(h: i64, m: i64, s: f64) -> Result<i64> {
    let micros = (s * 1e6).round();
    let valid = (0..=24).contains(&h)
        && (0..60).contains(&m)
        && (0.0..60e6).contains(&micros)
        && (h < 24 || (m == 0 && micros == 0.0));
    if !valid {
        return Err(out_of_range("time", format!("{h:02}:{m:02}:{s:02}")));
    }
    Ok((h * 3600 + m * 60) * 1_000_000 + micros as i64)
}

/// Microseconds since the Unix epoch of the date and time `f` (year, month, day, hour, minute)
/// and seconds `s`.
fn timestamp_micros(f: &[i64], s: f64) -> Result<i64> {
    let [y, mo, d, h, mi] = f else {
        return Err(DataFusionError::Internal("make_timestamp's fields".into()));
    };
    let date = i32::try_from(*y)
        .ok()
        .zip(u32::try_from(*mo).ok().zip(u32::try_from(*d).ok()))
        .and_then(|(y, (mo, d))| NaiveDate::from_ymd_opt(y, mo, d))
        .ok_or_else(|| out_of_range("date", format!("{y}-{mo:02}-{d:02}")))?;
    let micros = time_micros(*h, *mi, s)?;
    let midnight = date.and_time(NaiveTime::MIN).and_utc().timestamp_micros();
    Ok(midnight + micros)
}

/// The interval of `f` (years, months, weeks, days, hours, minutes) and seconds `s`.
fn interval(f: &[i64], s: f64) -> Result<IntervalMonthDayNano> {
    let [y, mo, w, d, h, mi] = f else {
        return Err(DataFusionError::Internal("make_interval's fields".into()));
    };
    let overflow = || DataFusionError::Execution("interval out of range".into());
    let months = i32::try_from(y * 12 + mo).map_err(|_| overflow())?;
    let days = i32::try_from(w * 7 + d).map_err(|_| overflow())?;
    let nanos = (h * 3600 + mi * 60) as f64 * 1e9 + (s * 1e9).round();
    if !nanos.is_finite() || nanos.abs() > i64::MAX as f64 {
        return Err(overflow());
    }
    Ok(IntervalMonthDayNano::new(months, days, nanos as i64))
}
