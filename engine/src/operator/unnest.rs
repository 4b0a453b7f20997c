//! `UNNEST` of list columns: each input row becomes one row per list element, the other columns
//! repeated. Several lists are unnested side by side (`UNNEST(a, b)`, `WITH ORDINALITY`): as
//! many rows as the longest list has elements, a shorter list's elements NULL past its end.
//! Stateless. A row's op goes to every row it becomes; an update becomes a delete of the old rows
//! and an insert of the new ones (the pairs would not stay adjacent). A NULL list counts as one
//! NULL element when NULLs are preserved, as none otherwise; an empty list has none. HOP and
//! CUMULATE windows use it: one row per window a row falls in.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::Operator;
use crate::changelog::{ChangeBatch, Op};
use crate::{EngineError, Result};

/// Flattens list columns; see the module documentation.
#[derive(Clone)]
pub struct Unnest {
    lists: Vec<usize>,
    /// For each output column, the input column it comes from (a list: its elements).
    sources: Vec<usize>,
    preserve_nulls: bool,
    schema: SchemaRef,
}

impl Unnest {
    /// `lists`: the input columns to flatten (each a `List`); `sources`: for each output
    /// column of `schema`, its input column.
    pub fn try_new(
        input: &SchemaRef,
        lists: Vec<usize>,
        sources: Vec<usize>,
        preserve_nulls: bool,
        schema: SchemaRef,
    ) -> Result<Self> {
        let bad = |m: &str| Err(EngineError::Internal(format!("unnest: {m}")));
        if lists.is_empty() {
            return bad("no column to unnest");
        }
        for &list in &lists {
            match input.fields().get(list).map(|f| f.data_type()) {
                Some(DataType::List(_)) => {}
                _ => return bad("the unnested column is not a list"),
            }
        }
        if sources.len() != schema.fields().len()
            || sources.iter().any(|&s| s >= input.fields().len())
        {
            return bad("output columns do not match the input");
        }
        Ok(Self {
            lists,
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
        let lists = self
            .lists
            .iter()
            .map(|&c| {
                input
                    .data
                    .column(c)
                    .as_list_opt::<i32>()
                    .ok_or_else(|| EngineError::Internal("unnest: input is not a list".into()))
            })
            .collect::<Result<Vec<_>>>()?;
        let capacity = lists.iter().map(|l| l.values().len()).max().unwrap_or(0);
        let mut rows: Vec<u32> = Vec::with_capacity(capacity);
        // For each list, the element of each output row (None past its end, or NULL).
        let mut elements: Vec<Vec<Option<u32>>> = vec![Vec::with_capacity(capacity); lists.len()];
        let mut ops = Vec::with_capacity(capacity);
        for (row, op) in input.ops.iter().enumerate() {
            let op = match op {
                Op::UpdateBefore => Op::Delete,
                Op::UpdateAfter => Op::Insert,
                other => *other,
            };
            let length = |l: &&datafusion::arrow::array::ListArray| {
                if l.is_null(row) {
                    usize::from(self.preserve_nulls)
                } else {
                    l.value_length(row) as usize
                }
            };
            let longest = lists.iter().map(length).max().unwrap_or(0);
            for k in 0..longest {
                rows.push(row as u32);
                ops.push(op);
                for (l, out) in lists.iter().zip(elements.iter_mut()) {
                    let start = l.value_offsets()[row] as usize;
                    let own = if l.is_null(row) {
                        0
                    } else {
                        l.value_length(row) as usize
                    };
                    out.push((k < own).then(|| (start + k) as u32));
                }
            }
        }
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let rows = UInt32Array::from(rows);
        let elements: Vec<UInt32Array> = elements.into_iter().map(UInt32Array::from).collect();
        let columns = self
            .sources
            .iter()
            .map(|&s| match self.lists.iter().position(|&l| l == s) {
                Some(i) => take(lists[i].values().as_ref(), &elements[i], None),
                None => take(input.data.column(s).as_ref(), &rows, None),
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
        let data = RecordBatch::try_new_with_options(Arc::clone(&self.schema), columns, &options)?;
        Ok(vec![ChangeBatch { data, ops }])
    }

    fn describe(&self) -> String {
        let lists: Vec<String> = self.lists.iter().map(|l| format!("#{l}")).collect();
        format!("Unnest {}", lists.join(", "))
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
        let mut op = Unnest::try_new(&input, vec![1], vec![0, 1], true, output).unwrap();
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

    #[test]
    fn lists_side_by_side_to_the_longest() {
        let item = Arc::new(Field::new("item", DataType::Int64, true));
        let list = DataType::List(Arc::clone(&item));
        let input = Arc::new(Schema::new(vec![
            Field::new("a", list.clone(), true),
            Field::new("k", DataType::Int64, true),
            Field::new("b", list, true),
        ]));
        let output = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("x", DataType::Int64, true),
            Field::new("y", DataType::Int64, true),
        ]));
        let a = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(1), Some(2)]),
            None,
            Some(vec![]),
        ]);
        let b = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(7)]),
            Some(vec![Some(8), Some(9)]),
            None,
        ]);
        let batch = ChangeBatch {
            data: RecordBatch::try_new(
                Arc::clone(&input),
                vec![
                    Arc::new(a),
                    Arc::new(Int64Array::from(vec![10, 20, 30])),
                    Arc::new(b),
                ],
            )
            .unwrap(),
            ops: vec![Op::Insert, Op::Delete, Op::Insert],
        };
        let column = |out: &ChangeBatch, i: usize| {
            out.data
                .column(i)
                .as_primitive::<Int64Type>()
                .iter()
                .collect::<Vec<_>>()
        };
        let mut dropped = Unnest::try_new(
            &input,
            vec![0, 2],
            vec![1, 0, 2],
            false,
            Arc::clone(&output),
        )
        .unwrap();
        let out = dropped.process(0, batch.clone()).unwrap().remove(0);
        assert_eq!(
            column(&out, 0),
            vec![Some(10), Some(10), Some(20), Some(20)]
        );
        assert_eq!(column(&out, 1), vec![Some(1), Some(2), None, None]);
        assert_eq!(column(&out, 2), vec![Some(7), None, Some(8), Some(9)]);
        assert_eq!(
            out.ops,
            vec![Op::Insert, Op::Insert, Op::Delete, Op::Delete]
        );
        // Preserved, the last row's NULL list is one NULL element.
        let mut kept = Unnest::try_new(&input, vec![0, 2], vec![1, 0, 2], true, output).unwrap();
        let out = kept.process(0, batch).unwrap().remove(0);
        assert_eq!(
            column(&out, 0),
            vec![Some(10), Some(10), Some(20), Some(20), Some(30)]
        );
        assert_eq!(column(&out, 2), vec![Some(7), None, Some(8), Some(9), None]);
    }
}
