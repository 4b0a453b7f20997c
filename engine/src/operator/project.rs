//! Filter and projection: a predicate keeps rows, expressions compute the output columns. Both are
//! DataFusion physical expressions evaluated on whole Arrow batches.
//!
//! Ops pass through with their rows, with one repair: an update is a pair `UpdateBefore`,
//! `UpdateAfter`, and a filter may keep only one half of it. A lone `UpdateBefore` becomes a
//! `Delete` and a lone `UpdateAfter` an `Insert`, so downstream never sees half a pair.

use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray};
use datafusion::arrow::compute::{filter_record_batch, prep_null_mask_filter};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::physical_plan::PhysicalExpr;

use super::Operator;
use crate::changelog::{ChangeBatch, Op};
use crate::{EngineError, Result};

/// Keeps the rows where `predicate` is true, then computes `exprs` on them.
#[derive(Clone)]
pub struct Project {
    predicate: Option<Arc<dyn PhysicalExpr>>,
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
}

impl Project {
    /// `exprs` are evaluated over the input schema; `schema` is their output schema.
    pub fn new(
        predicate: Option<Arc<dyn PhysicalExpr>>,
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    ) -> Self {
        Self {
            predicate,
            exprs,
            schema,
        }
    }

    fn keep(&self, input: &ChangeBatch) -> Result<Option<ChangeBatch>> {
        let Some(predicate) = &self.predicate else {
            return Ok(Some(input.clone()));
        };
        let mask = predicate
            .evaluate(&input.data)
            .and_then(|v| v.into_array(input.num_rows()))
            .map_err(|e| EngineError::Data {
                operator: "filter".into(),
                message: e.to_string(),
            })?;
        let mask = mask
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| EngineError::Internal("filter predicate is not boolean".into()))?;
        let mask = if mask.null_count() > 0 {
            prep_null_mask_filter(mask)
        } else {
            mask.clone()
        };
        if mask.true_count() == input.num_rows() {
            return Ok(Some(input.clone()));
        }
        if mask.true_count() == 0 {
            return Ok(None);
        }
        let data = filter_record_batch(&input.data, &mask)?;
        let kept: Vec<Op> = input
            .ops
            .iter()
            .zip(mask.values().iter())
            .filter_map(|(op, keep)| keep.then_some(*op))
            .collect();
        Ok(Some(ChangeBatch {
            data,
            ops: repair_pairs(kept),
        }))
    }
}

/// Turns the halves of update pairs that lost their partner into a delete or an insert.
fn repair_pairs(mut ops: Vec<Op>) -> Vec<Op> {
    let n = ops.len();
    let mut i = 0;
    while i < n {
        match ops[i] {
            Op::UpdateBefore if i + 1 < n && ops[i + 1] == Op::UpdateAfter => i += 2,
            Op::UpdateBefore => {
                ops[i] = Op::Delete;
                i += 1;
            }
            Op::UpdateAfter => {
                ops[i] = Op::Insert;
                i += 1;
            }
            _ => i += 1,
        }
    }
    ops
}

impl Operator for Project {
    fn stateful(&self) -> bool {
        false
    }

    fn name(&self) -> &'static str {
        "Project"
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn process(&mut self, _input: usize, input: ChangeBatch) -> Result<Vec<ChangeBatch>> {
        let Some(kept) = self.keep(&input)? else {
            return Ok(Vec::new());
        };
        let n = kept.num_rows();
        let columns = self
            .exprs
            .iter()
            .map(|e| e.evaluate(&kept.data).and_then(|v| v.into_array(n)))
            .collect::<datafusion::error::Result<Vec<_>>>()
            .map_err(|e| EngineError::Data {
                operator: "projection".into(),
                message: e.to_string(),
            })?;
        let options = RecordBatchOptions::new().with_row_count(Some(n));
        let data = RecordBatch::try_new_with_options(Arc::clone(&self.schema), columns, &options)?;
        Ok(vec![ChangeBatch {
            data,
            ops: kept.ops,
        }])
    }

    fn fork(&self) -> Result<Box<dyn Operator>> {
        Ok(Box::new(self.clone()))
    }

    fn describe(&self) -> String {
        let exprs: Vec<String> = self.exprs.iter().map(|e| e.to_string()).collect();
        match &self.predicate {
            Some(p) => format!("Project [{}] where {p}", exprs.join(", ")),
            None => format!("Project [{}]", exprs.join(", ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::logical_expr::Operator as BinOp;
    use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
    use datafusion::scalar::ScalarValue;

    #[test]
    fn filter_splits_update_pairs_it_cuts() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let data = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int64Array::from(vec![
                Some(5),
                Some(50),
                Some(60),
                Some(7),
                None,
            ]))],
        )
        .unwrap();
        let ops = vec![
            Op::UpdateBefore,
            Op::UpdateAfter,
            Op::UpdateBefore,
            Op::UpdateAfter,
            Op::Insert,
        ];
        // x > 10: the first pair loses its before half, the second its after half, NULL is dropped.
        let predicate: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            Arc::new(Column::new("x", 0)),
            BinOp::Gt,
            Arc::new(Literal::new(ScalarValue::Int64(Some(10)))),
        ));
        let mut op = Project::new(
            Some(predicate),
            vec![Arc::new(Column::new("x", 0))],
            Arc::clone(&schema),
        );
        let out = op.process(0, ChangeBatch { data, ops }).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].ops, vec![Op::Insert, Op::Delete]);
        let x = out[0]
            .data
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(x.values().to_vec(), vec![50, 60]);
    }
}
