//! Postgres' ordered-set aggregates DataFusion lacks: `percentile_disc(fraction) WITHIN GROUP
//! (ORDER BY x)`, the first value whose position in the order reaches the fraction, and
//! `mode() WITHIN GROUP (ORDER BY x)`, the most frequent value (the first in the order among
//! equally frequent ones). NULLs are skipped; no value gives NULL. DataFusion's planner passes
//! the ordered value as the first argument and the ORDER BY as the aggregate's ordering.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, ListArray, make_comparator, new_empty_array};
use datafusion::arrow::compute::{SortOptions, concat, filter, is_not_null, sort_to_indices, take};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, Signature, Volatility,
};

use crate::error::{SqlError, sqlstate};

/// Which value of the ordered group an aggregate gives.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pick {
    /// `percentile_disc(fraction)`.
    Percentile(f64),
    /// `mode()`.
    Mode,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct OrderedSet {
    name: &'static str,
    signature: Signature,
}

/// `percentile_disc` and `mode`.
pub fn udafs() -> Vec<AggregateUDF> {
    vec![
        AggregateUDF::new_from_impl(OrderedSet {
            name: "percentile_disc",
            signature: Signature::any(2, Volatility::Immutable),
        }),
        AggregateUDF::new_from_impl(OrderedSet {
            name: "mode",
            signature: Signature::any(1, Volatility::Immutable),
        }),
    ]
}

fn external(e: SqlError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl AggregateUDFImpl for OrderedSet {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(args.first().cloned().unwrap_or(DataType::Null))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let item = args.input_fields[0].data_type().clone();
        Ok(vec![Arc::new(Field::new(
            format!("{}[values]", args.name),
            DataType::List(Arc::new(Field::new_list_field(item, true))),
            true,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let pick = match self.name {
            "mode" => Pick::Mode,
            _ => {
                // A constant: its value over no rows.
                let nothing = RecordBatch::new_empty(Arc::new(Schema::empty()));
                let fraction = match args.exprs.get(1).map(|e| e.evaluate(&nothing)) {
                    Some(Ok(ColumnarValue::Scalar(v))) => v,
                    _ => {
                        return Err(external(SqlError::unsupported(
                            "percentile_disc of a fraction that is not a constant".to_string(),
                        )));
                    }
                };
                let fraction = match fraction.cast_to(&DataType::Float64)? {
                    ScalarValue::Float64(Some(f)) => f,
                    _ => f64::NAN,
                };
                if !(0.0..=1.0).contains(&fraction) {
                    return Err(external(SqlError::new(
                        sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                        format!("percentile value {fraction} is not between 0 and 1"),
                    )));
                }
                Pick::Percentile(fraction)
            }
        };
        let order = args
            .order_bys
            .first()
            .map(|o| o.options)
            .unwrap_or_default();
        Ok(Box::new(Values {
            pick,
            order: SortOptions {
                descending: order.descending,
                nulls_first: false,
            },
            data_type: args.expr_fields[0].data_type().clone(),
            values: Vec::new(),
        }))
    }

    fn supports_within_group_clause(&self) -> bool {
        true
    }
}

/// The group's values, kept until the end.
#[derive(Debug)]
struct Values {
    pick: Pick,
    order: SortOptions,
    data_type: DataType,
    values: Vec<ArrayRef>,
}

impl Values {
    /// Every value kept, NULLs left out.
    fn all(&self) -> Result<ArrayRef> {
        let refs: Vec<&dyn Array> = self.values.iter().map(|a| a.as_ref()).collect();
        let all = match refs.is_empty() {
            true => new_empty_array(&self.data_type),
            false => concat(&refs)?,
        };
        Ok(filter(&all, &is_not_null(&all)?)?)
    }
}

impl Accumulator for Values {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        if let Some(v) = values.first().filter(|v| !v.is_empty()) {
            self.values.push(Arc::clone(v));
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let all = self.all()?;
        let n = all.len();
        if n == 0 {
            return ScalarValue::try_from(&self.data_type);
        }
        let sorted = take(
            all.as_ref(),
            &sort_to_indices(&all, Some(self.order), None)?,
            None,
        )?;
        let at = match self.pick {
            Pick::Percentile(fraction) => {
                // The first position whose share of the group reaches the fraction.
                let position = (fraction * n as f64).ceil() as usize;
                position.saturating_sub(1).min(n - 1)
            }
            Pick::Mode => {
                let same = make_comparator(sorted.as_ref(), sorted.as_ref(), self.order)?;
                let (mut best, mut best_run, mut run_start) = (0, 0, 0);
                for i in 1..=n {
                    if i == n || !same(run_start, i).is_eq() {
                        if i - run_start > best_run {
                            (best, best_run) = (run_start, i - run_start);
                        }
                        run_start = i;
                    }
                }
                best
            }
        };
        ScalarValue::try_from_array(&sorted, at)
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self
                .values
                .iter()
                .map(|a| a.get_array_memory_size())
                .sum::<usize>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let all = self.all()?;
        let list = ListArray::new(
            Arc::new(Field::new_list_field(self.data_type.clone(), true)),
            datafusion::arrow::buffer::OffsetBuffer::from_lengths([all.len()]),
            all,
            None,
        );
        Ok(vec![ScalarValue::List(Arc::new(list))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let Some(lists) = states.first() else {
            return Ok(());
        };
        let lists = lists
            .as_any()
            .downcast_ref::<ListArray>()
            .ok_or_else(|| DataFusionError::Internal("ordered-set state is no list".into()))?;
        for i in 0..lists.len() {
            if lists.is_valid(i) {
                self.values.push(lists.value(i));
            }
        }
        Ok(())
    }
}
