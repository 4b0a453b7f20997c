//! `sum` of numerics that fails with 22003 where the sum leaves `numeric`'s 38 digits, instead of
//! DataFusion's, which wraps around `i128` (two sums of 38 nines gave a negative number).
//!
//! Postgres' numeric has no such bound, so it returns the exact sum where this one refuses; never
//! a wrong one. Only decimal arguments (which `sum(bigint)` becomes, [`super::typing`]) take this
//! path; every other type, and `sum(DISTINCT ..)`, is DataFusion's own [`Sum`]. Materialized
//! views sum in the engine's own operators, not here.

use std::mem::size_of;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Decimal128Array};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, FieldRef};
use datafusion::common::{Result, ScalarValue, internal_err};
use datafusion::error::DataFusionError;
use datafusion::functions_aggregate::sum::Sum;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, EmitTo, Expr, GroupsAccumulator,
    Operator, ReversedUDAF, SetMonotonicity, Signature, StatisticsArgs,
};

use crate::error::{SqlError, sqlstate};

/// The largest magnitude a `numeric` of 38 digits holds (scale aside).
const MAX_DIGITS_38: i128 = 10_i128.pow(38) - 1;

/// The `sum` aggregate sessions use, replacing DataFusion's.
pub fn udaf() -> AggregateUDF {
    AggregateUDF::new_from_impl(CheckedSum::default())
}

/// DataFusion's [`Sum`], with checked accumulators for decimals.
#[derive(Debug, Default, PartialEq, Eq, Hash)]
struct CheckedSum {
    inner: Sum,
}

/// The result type of a decimal sum this module computes; `None` where DataFusion's own does.
fn checked(args: &AccumulatorArgs) -> Option<DataType> {
    let t = args.return_field.data_type();
    (!args.is_distinct && matches!(t, DataType::Decimal128(..))).then(|| t.clone())
}

fn overflow() -> DataFusionError {
    DataFusionError::External(Box::new(
        SqlError::new(
            sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
            "value overflows numeric format",
        )
        .with_hint("NUMERIC holds up to 38 digits here."),
    ))
}

/// `a + b`, or 22003 where it leaves 38 digits.
fn add(a: i128, b: i128) -> Result<i128> {
    a.checked_add(b)
        .filter(|s| s.unsigned_abs() <= MAX_DIGITS_38.unsigned_abs())
        .ok_or_else(overflow)
}

impl AggregateUDFImpl for CheckedSum {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        match checked(&args) {
            Some(t) => Ok(Box::new(SumAccumulator::new(t))),
            None => self.inner.accumulator(args),
        }
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        self.inner.state_fields(args)
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.inner.groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        match checked(&args) {
            Some(t) => Ok(Box::new(GroupSums {
                sums: Vec::new(),
                t,
            })),
            None => self.inner.create_groups_accumulator(args),
        }
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        match checked(&args) {
            Some(t) => Ok(Box::new(SumAccumulator::new(t))),
            None => self.inner.create_sliding_accumulator(args),
        }
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        ReversedUDAF::Identical
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.inner.order_sensitivity()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn set_monotonicity(&self, data_type: &DataType) -> SetMonotonicity {
        self.inner.set_monotonicity(data_type)
    }

    fn simplify_expr_op_literal(
        &self,
        agg_function: &AggregateFunction,
        arg: &Expr,
        op: Operator,
        lit: &Expr,
        arg_is_left: bool,
    ) -> Result<Option<Expr>> {
        // The rewritten `sum(arg) + lit * count(arg)` keeps this function (a clone of
        // `agg_function`).
        self.inner
            .simplify_expr_op_literal(agg_function, arg, op, lit, arg_is_left)
    }

    fn value_from_stats(&self, statistics_args: &StatisticsArgs) -> Option<ScalarValue> {
        self.inner.value_from_stats(statistics_args)
    }
}

/// One sum (no `GROUP BY`, or a window frame, which retracts the rows leaving it): NULL while
/// no value is in it.
#[derive(Debug)]
struct SumAccumulator {
    sum: i128,
    count: u64,
    t: DataType,
}

impl SumAccumulator {
    fn new(t: DataType) -> Self {
        Self {
            sum: 0,
            count: 0,
            t,
        }
    }
}

impl SumAccumulator {
    fn fold(&mut self, values: &ArrayRef, negate: bool) -> Result<()> {
        let Some(values) = values.as_primitive_opt::<Decimal128Type>() else {
            return internal_err!("sum of {} in a decimal sum", values.data_type());
        };
        for v in values.iter().flatten() {
            if negate {
                self.sum = add(self.sum, v.checked_neg().ok_or_else(overflow)?)?;
                self.count = self.count.saturating_sub(1);
            } else {
                self.sum = add(self.sum, v)?;
                self.count += 1;
            }
        }
        Ok(())
    }
}

impl Accumulator for SumAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        match values.first() {
            Some(values) => self.fold(values, false),
            None => internal_err!("sum without an argument"),
        }
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let sum = (self.count > 0).then_some(self.sum);
        ScalarValue::new_primitive::<Decimal128Type>(sum, &self.t)
    }

    fn size(&self) -> usize {
        size_of::<Self>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.update_batch(states)
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        match values.first() {
            Some(values) => self.fold(values, true),
            None => internal_err!("sum without an argument"),
        }
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }
}

/// A sum per group (`GROUP BY`); `None` for a group that has seen no value yet.
#[derive(Debug)]
struct GroupSums {
    sums: Vec<Option<i128>>,
    t: DataType,
}

impl GroupSums {
    fn fold(
        &mut self,
        values: &[ArrayRef],
        groups: &[usize],
        filter: Option<&BooleanArray>,
        total: usize,
    ) -> Result<()> {
        let Some(values) = values
            .first()
            .and_then(|v| v.as_primitive_opt::<Decimal128Type>())
        else {
            return internal_err!("a decimal sum without a decimal argument");
        };
        if self.sums.len() < total {
            self.sums.resize(total, None);
        }
        for (row, &group) in groups.iter().enumerate() {
            let kept = filter.is_none_or(|f| f.is_valid(row) && f.value(row));
            if !kept || values.is_null(row) {
                continue;
            }
            let Some(sum) = self.sums.get_mut(group) else {
                return internal_err!("group {group} beyond the {total} groups");
            };
            *sum = Some(add(sum.unwrap_or(0), values.value(row))?);
        }
        Ok(())
    }
}

impl GroupsAccumulator for GroupSums {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.fold(values, group_indices, opt_filter, total_num_groups)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let DataType::Decimal128(p, s) = self.t else {
            return internal_err!("a decimal sum of type {}", self.t);
        };
        let sums = emit_to.take_needed(&mut self.sums);
        let array = Decimal128Array::from(sums).with_precision_and_scale(p, s)?;
        Ok(Arc::new(array))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.evaluate(emit_to)?])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.fold(values, group_indices, None, total_num_groups)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        // Each row its own group: its value, NULL where the filter drops it.
        let DataType::Decimal128(p, s) = self.t else {
            return internal_err!("a decimal sum of type {}", self.t);
        };
        let Some(values) = values
            .first()
            .and_then(|v| v.as_primitive_opt::<Decimal128Type>())
        else {
            return internal_err!("a decimal sum without a decimal argument");
        };
        let states: Decimal128Array = values
            .iter()
            .enumerate()
            .map(|(row, v)| {
                let kept = opt_filter.is_none_or(|f| f.is_valid(row) && f.value(row));
                v.filter(|_| kept)
            })
            .collect();
        Ok(vec![Arc::new(states.with_precision_and_scale(p, s)?)])
    }

    fn size(&self) -> usize {
        self.sums.capacity() * size_of::<Option<i128>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_beyond_38_digits_fail_instead_of_wrapping() {
        let t = DataType::Decimal128(38, 0);
        let nines: ArrayRef = Arc::new(
            Decimal128Array::from(vec![MAX_DIGITS_38, MAX_DIGITS_38])
                .with_precision_and_scale(38, 0)
                .unwrap(),
        );
        let mut one = SumAccumulator::new(t.clone());
        assert!(one.update_batch(&[Arc::clone(&nines)]).is_err());
        let mut groups = GroupSums {
            sums: Vec::new(),
            t: t.clone(),
        };
        assert!(
            groups
                .update_batch(&[Arc::clone(&nines)], &[0, 0], None, 1)
                .is_err()
        );
        // In separate groups, each fits.
        let mut groups = GroupSums {
            sums: Vec::new(),
            t,
        };
        groups.update_batch(&[nines], &[0, 1], None, 2).unwrap();
        let sums = groups.evaluate(EmitTo::All).unwrap();
        assert_eq!(
            sums.as_primitive::<Decimal128Type>().value(1),
            MAX_DIGITS_38
        );
    }

    #[test]
    fn a_window_frame_retracts_what_leaves_it() {
        let values: ArrayRef = Arc::new(
            Decimal128Array::from(vec![Some(125), None, Some(-300)])
                .with_precision_and_scale(10, 2)
                .unwrap(),
        );
        let mut acc = SumAccumulator::new(DataType::Decimal128(20, 2));
        acc.update_batch(&[Arc::clone(&values)]).unwrap();
        acc.retract_batch(&[values.slice(0, 1)]).unwrap();
        assert_eq!(
            acc.evaluate().unwrap(),
            ScalarValue::Decimal128(Some(-300), 20, 2)
        );
        acc.retract_batch(&[values.slice(1, 2)]).unwrap();
        assert_eq!(
            acc.evaluate().unwrap(),
            ScalarValue::Decimal128(None, 20, 2)
        );
    }
}
