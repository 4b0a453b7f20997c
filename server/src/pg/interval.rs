//! Postgres' interval arithmetic with numbers: `interval * number`, `number * interval` and
//! `interval / number`, which DataFusion refuses ("Invalid interval arithmetic operation").
//!
//! An [`ExprPlanner`] sees each `*` and `/` as the SQL planner builds it; where one side is an
//! interval and the other a number, it plans a call of `interval_mul` (a division multiplies by
//! the reciprocal, and dividing by zero is `22012`). The result is Postgres' `interval_mul`: months
//! and days are multiplied and truncated, and what they leave over cascades down (a month's
//! fraction into days at 30 days a month, a day's fraction into time at 24 hours a day), rounded
//! to microseconds: `INTERVAL '1 month' * 1.5` is `1 mon 15 days`, `INTERVAL '1 day' / 4` is
//! `06:00:00`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, IntervalMonthDayNanoArray};
use datafusion::arrow::datatypes::{DataType, Float64Type, IntervalMonthDayNano, IntervalUnit};
use datafusion::common::DFSchema;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility, cast, lit,
};
use datafusion::sql::sqlparser::ast::BinaryOperator;

const MONTH_DAYS: f64 = 30.0;
const DAY_SECONDS: f64 = 86_400.0;

/// Plans `interval * number`, `number * interval` and `interval / number`.
#[derive(Debug)]
pub struct IntervalArithmetic {
    mul: Arc<ScalarUDF>,
}

impl IntervalArithmetic {
    pub fn new() -> Self {
        Self {
            mul: Arc::new(ScalarUDF::new_from_impl(IntervalMul {
                signature: Signature::exact(
                    vec![
                        DataType::Interval(IntervalUnit::MonthDayNano),
                        DataType::Float64,
                    ],
                    Volatility::Immutable,
                ),
            })),
        }
    }

    fn call(&self, interval: Expr, factor: Expr) -> Expr {
        Expr::ScalarFunction(ScalarFunction::new_udf(
            Arc::clone(&self.mul),
            vec![
                cast(interval, DataType::Interval(IntervalUnit::MonthDayNano)),
                factor,
            ],
        ))
    }
}

impl ExprPlanner for IntervalArithmetic {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> Result<PlannerResult<RawBinaryExpr>> {
        if !matches!(expr.op, BinaryOperator::Multiply | BinaryOperator::Divide) {
            return Ok(PlannerResult::Original(expr));
        }
        let (Ok(left), Ok(right)) = (expr.left.get_type(schema), expr.right.get_type(schema))
        else {
            return Ok(PlannerResult::Original(expr));
        };
        let interval = |t: &DataType| matches!(t, DataType::Interval(_));
        let number = |t: &DataType| t.is_numeric();
        let float = |e: Expr| cast(e, DataType::Float64);
        Ok(match expr.op {
            BinaryOperator::Multiply if interval(&left) && number(&right) => {
                PlannerResult::Planned(self.call(expr.left, float(expr.right)))
            }
            BinaryOperator::Multiply if number(&left) && interval(&right) => {
                PlannerResult::Planned(self.call(expr.right, float(expr.left)))
            }
            BinaryOperator::Divide if interval(&left) && number(&right) => {
                // The reciprocal; 1/0 is infinite, which interval_mul refuses as a division by
                // zero.
                let reciprocal = lit(1.0f64) / float(expr.right);
                PlannerResult::Planned(self.call(expr.left, reciprocal))
            }
            _ => PlannerResult::Original(expr),
        })
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct IntervalMul {
    signature: Signature,
}

impl ScalarUDFImpl for IntervalMul {
    fn name(&self) -> &str {
        "interval_mul"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Interval(IntervalUnit::MonthDayNano))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [spans, factors] = arrays.as_slice() else {
            return Err(DataFusionError::Plan(
                "interval_mul takes an interval and a factor".into(),
            ));
        };
        let spans = spans.as_primitive::<datafusion::arrow::datatypes::IntervalMonthDayNanoType>();
        let factors = factors.as_primitive::<Float64Type>();
        let out = (0..spans.len())
            .map(|i| {
                if spans.is_null(i) || factors.is_null(i) {
                    return Ok(None);
                }
                multiply(spans.value(i), factors.value(i)).map(Some)
            })
            .collect::<Result<IntervalMonthDayNanoArray>>()?;
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// `span * factor` as Postgres' `interval_mul` computes it (in microseconds; nanoseconds below a
/// microsecond are dropped, as Postgres has none).
fn multiply(span: IntervalMonthDayNano, factor: f64) -> Result<IntervalMonthDayNano> {
    if factor.is_infinite() {
        return Err(DataFusionError::Execution("division by zero".into()));
    }
    let out_of_range = || DataFusionError::Execution("interval out of range".into());
    if factor.is_nan() {
        return Err(out_of_range());
    }
    let to_i32 = |v: f64| {
        if v.is_finite() && v >= f64::from(i32::MIN) && v <= f64::from(i32::MAX) {
            Ok(v.trunc() as i32)
        } else {
            Err(out_of_range())
        }
    };
    let round_us = |seconds: f64| (seconds * 1e6).round() / 1e6;
    let months = f64::from(span.months) * factor;
    let out_months = to_i32(months)?;
    let days = f64::from(span.days) * factor;
    let mut out_days = to_i32(days)?;
    let month_remainder_days = round_us((months - f64::from(out_months)) * MONTH_DAYS);
    let mut sec_remainder = round_us(
        (days - f64::from(out_days) + month_remainder_days - month_remainder_days.trunc())
            * DAY_SECONDS,
    );
    if sec_remainder.abs() >= DAY_SECONDS {
        out_days = out_days
            .checked_add(to_i32(sec_remainder / DAY_SECONDS)?)
            .ok_or_else(out_of_range)?;
        sec_remainder -= (sec_remainder / DAY_SECONDS).trunc() * DAY_SECONDS;
    }
    out_days = out_days
        .checked_add(to_i32(month_remainder_days)?)
        .ok_or_else(out_of_range)?;
    let micros = (span.nanoseconds as f64 / 1000.0 * factor + sec_remainder * 1e6).round();
    if !micros.is_finite() || micros.abs() >= 9.2e15 {
        return Err(out_of_range());
    }
    // Postgres keeps months, days and time apart: nothing cascades upwards.
    Ok(IntervalMonthDayNano::new(
        out_months,
        out_days,
        (micros as i64) * 1000,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(months: i32, days: i32, micros: i64) -> IntervalMonthDayNano {
        IntervalMonthDayNano::new(months, days, micros * 1000)
    }

    #[test]
    fn cascades_fractions_down_as_postgres_does() {
        let hour = 3_600_000_000;
        // Values from PostgreSQL 15.
        assert_eq!(
            multiply(span(0, 0, hour), 2.5).unwrap(),
            span(0, 0, 9_000_000_000)
        );
        assert_eq!(multiply(span(1, 0, 0), 1.5).unwrap(), span(1, 15, 0));
        assert_eq!(multiply(span(0, 1, 0), 0.25).unwrap(), span(0, 0, 6 * hour));
        assert_eq!(
            multiply(span(1, 1, hour), -2.0).unwrap(),
            span(-2, -2, -2 * hour)
        );
        // '1 mon' * 0.7: 21 days; '1 day' * 1.3: 1 day 07:12:00.
        assert_eq!(multiply(span(1, 0, 0), 0.7).unwrap(), span(0, 21, 0));
        assert_eq!(
            multiply(span(0, 1, 0), 1.3).unwrap(),
            span(0, 1, 25_920_000_000)
        );
        assert!(multiply(span(0, 0, hour), f64::INFINITY).is_err());
        assert!(multiply(span(i32::MAX, 0, 0), 2.0).is_err());
    }
}
