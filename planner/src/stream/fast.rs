//! Faster equivalents of the timestamp arithmetic windows and watermarks spend their time on.
//!
//! Window bounds are `date_bin(size, ts, origin)` and `bound + size`; watermarks are
//! `ts - delay`. DataFusion evaluates a timestamp plus an interval row by row through calendar
//! arithmetic (the interval could hold months), and `date_bin` through nanoseconds. When the
//! interval is a constant without months, both are plain integer arithmetic on the timestamp's own
//! unit: before turning an expression into a physical one, the streaming planner replaces them
//! with `rivulet_shift(ts, delta)` and `rivulet_bin(ts, stride, origin)`, which compute exactly
//! that, vectorized, and return the same type.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, PrimitiveArray};
use datafusion::arrow::datatypes::{
    ArrowTimestampType, DataType, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, ScalarValue, exec_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, Operator, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};

/// Nanoseconds of a constant interval without months.
fn interval_nanos(e: &Expr) -> Option<i128> {
    let Expr::Literal(value, _) = e else {
        return None;
    };
    match value {
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => {
            Some(i128::from(i.days) * 86_400_000_000_000 + i128::from(i.nanoseconds))
        }
        ScalarValue::IntervalDayTime(Some(i)) => {
            Some(i128::from(i.days) * 86_400_000_000_000 + i128::from(i.milliseconds) * 1_000_000)
        }
        _ => None,
    }
}

/// The value of a constant, possibly cast (several times).
fn constant(e: &Expr) -> Option<ScalarValue> {
    match e {
        Expr::Literal(v, _) => Some(v.clone()),
        Expr::Cast(c) => constant(&c.expr)?.cast_to(c.field.data_type()).ok(),
        _ => None,
    }
}

/// Nanoseconds since the epoch of a constant timestamp (possibly cast).
fn timestamp_nanos(e: &Expr) -> Option<i128> {
    let value = constant(e)?;
    match value
        .cast_to(&DataType::Timestamp(TimeUnit::Nanosecond, None))
        .ok()?
    {
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(i128::from(v)),
        _ => None,
    }
}

fn per_unit(unit: TimeUnit) -> i128 {
    match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    }
}

/// `e` with fixed-interval timestamp arithmetic over `schema` replaced by the fast functions;
/// anything else is left as it is.
pub fn rewrite(e: Expr, schema: &DFSchema) -> Expr {
    let shift = ScalarUDF::new_from_impl(Shift::default());
    let bin = ScalarUDF::new_from_impl(Bin::default());
    let unit_of = |e: &Expr| match e.get_type(schema) {
        Ok(DataType::Timestamp(unit, _)) => Some(unit),
        _ => None,
    };
    let original = e.clone();
    let result = e.transform_up(|e| {
        let new = match &e {
            Expr::BinaryExpr(BinaryExpr { left, op, right })
                if matches!(op, Operator::Plus | Operator::Minus) =>
            {
                match (unit_of(left), interval_nanos(right)) {
                    (Some(unit), Some(nanos)) if nanos % per_unit(unit) == 0 => {
                        let delta = nanos / per_unit(unit);
                        let delta = if *op == Operator::Minus {
                            -delta
                        } else {
                            delta
                        };
                        i64::try_from(delta).ok().map(|d| {
                            Expr::ScalarFunction(ScalarFunction::new_udf(
                                Arc::new(shift.clone()),
                                vec![
                                    left.as_ref().clone(),
                                    Expr::Literal(ScalarValue::Int64(Some(d)), None),
                                ],
                            ))
                        })
                    }
                    _ => None,
                }
            }
            Expr::ScalarFunction(f) if f.name() == "date_bin" => match f.args.as_slice() {
                [stride, ts, origin] => {
                    match (unit_of(ts), interval_nanos(stride), timestamp_nanos(origin)) {
                        (Some(unit), Some(stride), Some(origin))
                            if stride > 0 && stride % per_unit(unit) == 0 =>
                        {
                            let (s, o) =
                                (stride / per_unit(unit), origin.div_euclid(per_unit(unit)));
                            match (i64::try_from(s), i64::try_from(o)) {
                                (Ok(s), Ok(o)) if origin % per_unit(unit) == 0 => {
                                    Some(Expr::ScalarFunction(ScalarFunction::new_udf(
                                        Arc::new(bin.clone()),
                                        vec![
                                            ts.clone(),
                                            Expr::Literal(ScalarValue::Int64(Some(s)), None),
                                            Expr::Literal(ScalarValue::Int64(Some(o)), None),
                                        ],
                                    )))
                                }
                                _ => None,
                            }
                        }
                        _ => None,
                    }
                }
                _ => None,
            },
            _ => None,
        };
        Ok(match new {
            Some(n) => Transformed::yes(n),
            None => Transformed::no(e),
        })
    });
    // The closure never fails; on an error anyway, the expression stays as it was.
    result.map_or(original, |t| t.data)
}

fn int_arg(v: &ColumnarValue) -> datafusion::error::Result<i64> {
    match v {
        ColumnarValue::Scalar(ScalarValue::Int64(Some(v))) => Ok(*v),
        _ => exec_err!("expected a constant BIGINT"),
    }
}

/// Applies `f` to every value of a timestamp array of any unit, keeping its type.
fn map_timestamps(array: &ArrayRef, f: impl Fn(i64) -> i64) -> datafusion::error::Result<ArrayRef> {
    fn typed<T: ArrowTimestampType>(array: &ArrayRef, f: impl Fn(i64) -> i64) -> ArrayRef {
        let a: &PrimitiveArray<T> = array.as_primitive::<T>();
        let out: PrimitiveArray<T> = a.unary(f);
        Arc::new(out.with_data_type(array.data_type().clone()))
    }
    Ok(match array.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => typed::<TimestampSecondType>(array, f),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            typed::<TimestampMillisecondType>(array, f)
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            typed::<TimestampMicrosecondType>(array, f)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => typed::<TimestampNanosecondType>(array, f),
        other => return exec_err!("expected a timestamp, got {other}"),
    })
}

/// `rivulet_shift(ts, delta)`: `ts` plus `delta` of its own unit.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Shift {
    signature: Signature,
}

impl Default for Shift {
    fn default() -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Shift {
    fn name(&self) -> &str {
        "rivulet_shift"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(args.first().cloned().unwrap_or(DataType::Null))
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let [ts, delta] = args.args.as_slice() else {
            return exec_err!("rivulet_shift takes 2 arguments");
        };
        let delta = int_arg(delta)?;
        let array = ts.to_array(args.number_rows)?;
        Ok(ColumnarValue::Array(map_timestamps(&array, |v| {
            v.saturating_add(delta)
        })?))
    }
}

/// `rivulet_bin(ts, stride, origin)`: `date_bin` on the timestamp's own unit.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Bin {
    signature: Signature,
}

impl Default for Bin {
    fn default() -> Self {
        Self {
            signature: Signature::any(3, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Bin {
    fn name(&self) -> &str {
        "rivulet_bin"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(args.first().cloned().unwrap_or(DataType::Null))
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let [ts, stride, origin] = args.args.as_slice() else {
            return exec_err!("rivulet_bin takes 3 arguments");
        };
        let (stride, origin) = (int_arg(stride)?, int_arg(origin)?);
        if stride <= 0 {
            return exec_err!("rivulet_bin needs a positive stride");
        }
        let array = ts.to_array(args.number_rows)?;
        Ok(ColumnarValue::Array(map_timestamps(&array, |v| {
            origin + (v - origin).div_euclid(stride) * stride
        })?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::*;

    /// The rewritten expressions give exactly what DataFusion's give.
    #[tokio::test]
    async fn fast_window_arithmetic_equals_datafusion() {
        let ctx = SessionContext::new();
        ctx.sql(
            "CREATE TABLE t AS SELECT * FROM (VALUES \
               (TIMESTAMP '2026-01-01 10:00:07.123', 1), (TIMESTAMP '1969-12-31 23:59:55', 2), \
               (NULL, 3)) AS v(ts, n)",
        )
        .await
        .unwrap();
        for sql in [
            "SELECT date_bin(INTERVAL '10' SECOND, ts, TIMESTAMP '1970-01-01 00:00:00') FROM t",
            "SELECT date_bin(INTERVAL '10' SECOND, ts, TIMESTAMP '1970-01-01 00:00:03') + INTERVAL '10' SECOND FROM t",
            "SELECT ts - INTERVAL '5' SECOND FROM t",
            "SELECT CAST(ts AS TIMESTAMP WITH TIME ZONE) + INTERVAL '0.001' SECOND FROM t",
            "SELECT date_bin(INTERVAL '10' SECOND, CAST(ts AS TIMESTAMP WITH TIME ZONE), \
             TIMESTAMP '1970-01-01 00:00:00') FROM t",
        ] {
            let df = ctx.sql(sql).await.unwrap();
            let plan = df.logical_plan().clone();
            let datafusion::logical_expr::LogicalPlan::Projection(p) = &plan else {
                panic!("not a projection");
            };
            let schema = p.input.schema();
            let original = p.expr[0].clone();
            let fast = rewrite(original.clone(), schema);
            assert_ne!(fast, original, "{sql} was not rewritten");
            let batches = ctx.table("t").await.unwrap().collect().await.unwrap();
            let state = ctx.state();
            let want = state
                .create_physical_expr(original, schema)
                .unwrap()
                .evaluate(&batches[0])
                .unwrap()
                .into_array(3)
                .unwrap();
            let got = state
                .create_physical_expr(fast, schema)
                .unwrap()
                .evaluate(&batches[0])
                .unwrap()
                .into_array(3)
                .unwrap();
            assert_eq!(&got, &want, "{sql}");
        }
    }
}
