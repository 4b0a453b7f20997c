//! `UNNEST` of one list column: each input row becomes one row per list element, the other
//! columns repeated. Stateless. A row's op goes to every row it becomes; an update becomes a
//! delete of the old rows and an insert of the new ones (the pairs would not stay adjacent). A
//! NULL list gives one row with a NULL element when NULLs are preserved, none otherwise; an empty
//! list gives none. HOP and CUMULATE windows use it: one row per window a row falls in.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::Operator;
use crate::changelog::{ChangeBatch, Op};
use crate::{EngineError, Result};

/// Flattens one list column; see the module documentation.
#[derive(Clone)]
pub struct Unnest {
    list: usize,
    /// For each output column, the input column it comes from (`list` for the elements).
    sources: Vec<usize>,
    preserve_nulls: bool,
    schema: SchemaRef,
}

impl Unnest {
    /// `list`: the input column to flatten (a `List`); `sources`: for each output column of
    /// `schema`, its input column.
    pub fn try_new(
        input: &SchemaRef,
        list: usize,
        sources: Vec<usize>,
        preserve_nulls: bool,
        schema: SchemaRef,
    ) -> Result<Self> {
        let bad = |m: &str| Err(EngineError::Internal(format!("unnest: {m}")));
        match input.fields().get(list).map(|f| f.data_type()) {
            Some(DataType::List(_)) => {}
            _ => return bad("the unnested column is not a list"),
        }
        if sources.len() != schema.fields().len()
            || sources.iter().any(|&s| s >= input.fields().len())
        {
            return bad("output columns do not match the input");
        }
        Ok(Self {
            list,
            sources,
            preserve_nulls,
            schema,
        })
    }
}

impl Operator for Unnest {
    fn stateful(&self) -> bool {
        false
    }

    fn name(&self) -> &'static str {
        "Unnest"
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn fork(&self) -> Result<Box<dyn Operator>> {
        Ok(Box::new(self.clone()))
    }

    fn process(&mut self, _input: usize, input: ChangeBatch) -> Result<Vec<ChangeBatch>> {
        let lists = input
            .data
            .column(self.list)
            .as_list_opt::<i32>()
            .ok_or_else(|| EngineError::Internal("unnest: input is not a list".into()))?;
        let offsets = lists.value_offsets();
        let mut rows: Vec<u32> = Vec::with_capacity(lists.values().len());
        let mut elements: Vec<Option<u32>> = Vec::with_capacity(lists.values().len());
        let mut ops = Vec::with_capacity(lists.values().len());
        for (row, op) in input.ops.iter().enumerate() {
            let op = match op {
                Op::UpdateBefore => Op::Delete,
                Op::UpdateAfter => Op::Insert,
                other => *other,
            };
            if lists.is_null(row) {
                if self.preserve_nulls {
                    rows.push(row as u32);
                    elements.push(None);
                    ops.push(op);
                }
                continue;
            }
            for k in offsets[row]..offsets[row + 1] {
                rows.push(row as u32);
                elements.push(Some(k as u32));
                ops.push(op);
            }
        }
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let rows = UInt32Array::from(rows);
        let elements = UInt32Array::from(elements);
        let columns = self
            .sources
            .iter()
            .map(|&s| {
                if s == self.list {
                    take(lists.values().as_ref(), &elements, None)
                } else {
                    take(input.data.column(s).as_ref(), &rows, None)
                }
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
        let data = RecordBatch::try_new_with_options(Arc::clone(&self.schema), columns, &options)?;
        Ok(vec![ChangeBatch { data, ops }])
    }

    fn describe(&self) -> String {
        format!("Unnest #{}", self.list)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, ListArray};
    use datafusion::arrow::datatypes::{Field, Int64Type, Schema};

    use super::*;

    #[test]
    fn one_row_per_element_with_ops_and_nulls() {
        let item = Arc::new(Field::new("item", DataType::Int64, true));
        let input = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("l", DataType::List(Arc::clone(&item)), true),
        ]));
        let output = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("e", DataType::Int64, true),
        ]));
        let lists = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(1), Some(2)]),
            None,
            Some(vec![]),
            Some(vec![Some(3)]),
        ]);
        let batch = ChangeBatch {
            data: RecordBatch::try_new(
                Arc::clone(&input),
                vec![
                    Arc::new(Int64Array::from(vec![10, 20, 30, 40])),
                    Arc::new(lists),
                ],
            )
            .unwrap(),
            ops: vec![Op::Insert, Op::Insert, Op::UpdateBefore, Op::UpdateAfter],
        };
        let mut op = Unnest::try_new(&input, 1, vec![0, 1], true, output).unwrap();
        let out = op.process(0, batch).unwrap().remove(0);
        let k = out.data.column(0).as_primitive::<Int64Type>();
        let e = out.data.column(1).as_primitive::<Int64Type>();
        assert_eq!(k.values().to_vec(), vec![10, 10, 20, 40]);
        assert_eq!(
            e.iter().collect::<Vec<_>>(),
            vec![Some(1), Some(2), None, Some(3)]
        );
        assert_eq!(
            out.ops,
            vec![Op::Insert, Op::Insert, Op::Insert, Op::Insert]
        );
    }
}
