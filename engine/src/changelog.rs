//! Changelog batches: what flows between a table and the streaming operators.
//!
//! A [`ChangeBatch`] is an Arrow `RecordBatch` plus one [`Op`] per row. An update is a pair of rows,
//! `UpdateBefore` (the old values) directly followed by `UpdateAfter` (the new values). In the change
//! log on disk a batch is stored as Arrow IPC with the ops as a trailing `Int8` column named `__op`.

use std::io::Cursor;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int8Array, UInt32Array};
use datafusion::arrow::compute::{interleave, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::{EngineError, Result};

/// Name of the op column in the stored form.
const OP_COLUMN: &str = "__op";

/// What a changelog row does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i8)]
pub enum Op {
    /// A new row.
    Insert = 0,
    /// A row that is gone.
    Delete = 1,
    /// The old values of an updated row; always directly followed by its `UpdateAfter`.
    UpdateBefore = 2,
    /// The new values of an updated row.
    UpdateAfter = 3,
}

impl Op {
    fn from_i8(v: i8) -> Result<Self> {
        Ok(match v {
            0 => Op::Insert,
            1 => Op::Delete,
            2 => Op::UpdateBefore,
            3 => Op::UpdateAfter,
            other => {
                return Err(EngineError::Corrupt(format!(
                    "unknown changelog op {other}"
                )));
            }
        })
    }

    /// True for ops that add a row to the result (`Insert`, `UpdateAfter`).
    pub fn is_add(self) -> bool {
        matches!(self, Op::Insert | Op::UpdateAfter)
    }
}

/// Rows with an op each.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeBatch {
    /// The rows.
    pub data: RecordBatch,
    /// One op per row of `data`.
    pub ops: Vec<Op>,
}

impl ChangeBatch {
    /// The rows `rows` of this batch, in that order, with their ops.
    pub fn select(&self, rows: Vec<u32>) -> Result<ChangeBatch> {
        let ops = rows.iter().map(|&r| self.ops[r as usize]).collect();
        let indices = UInt32Array::from(rows);
        let columns = self
            .data
            .columns()
            .iter()
            .map(|c| take(c.as_ref(), &indices, None))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(indices.len()));
        let data = RecordBatch::try_new_with_options(self.data.schema(), columns, &options)?;
        Ok(ChangeBatch { data, ops })
    }

    /// Rows taken from `old` (source 0) and `new` (source 1), same schema, as `(source, row)`
    /// `indices` say, with `ops` (one per index).
    pub fn interleave(
        old: &RecordBatch,
        new: &RecordBatch,
        indices: &[(usize, usize)],
        ops: Vec<Op>,
    ) -> Result<ChangeBatch> {
        let columns = old
            .columns()
            .iter()
            .zip(new.columns())
            .map(|(o, n)| interleave(&[o.as_ref(), n.as_ref()], indices))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(indices.len()));
        let data = RecordBatch::try_new_with_options(old.schema(), columns, &options)?;
        Ok(ChangeBatch { data, ops })
    }

    /// Rows `offset..offset + len`, without copying.
    pub fn slice(&self, offset: usize, len: usize) -> ChangeBatch {
        ChangeBatch {
            data: self.data.slice(offset, len),
            ops: self.ops[offset..offset + len].to_vec(),
        }
    }

    /// A batch of inserts.
    pub fn inserts(data: RecordBatch) -> Self {
        let ops = vec![Op::Insert; data.num_rows()];
        Self { data, ops }
    }

    /// Number of rows.
    pub fn num_rows(&self) -> usize {
        self.data.num_rows()
    }

    /// Encodes the batch as Arrow IPC (the change log's stored form).
    pub fn to_ipc(&self) -> Result<Vec<u8>> {
        let mut fields: Vec<Arc<Field>> = self.data.schema().fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(OP_COLUMN, DataType::Int8, false)));
        let schema = Arc::new(Schema::new(fields));
        let mut columns: Vec<ArrayRef> = self.data.columns().to_vec();
        columns.push(Arc::new(Int8Array::from_iter_values(
            self.ops.iter().map(|op| *op as i8),
        )));
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
        let mut out = Vec::new();
        let mut writer = StreamWriter::try_new(&mut out, &schema)?;
        writer.write(&batch)?;
        writer.finish()?;
        drop(writer);
        Ok(out)
    }

    /// Decodes the stored form written by [`ChangeBatch::to_ipc`].
    pub fn from_ipc(bytes: &[u8]) -> Result<Self> {
        let mut reader = StreamReader::try_new(Cursor::new(bytes), None)?;
        let batch = reader
            .next()
            .ok_or_else(|| EngineError::Corrupt("empty change log entry".into()))??;
        let n = batch.num_columns();
        let op_col = batch
            .columns()
            .last()
            .and_then(|c| c.as_any().downcast_ref::<Int8Array>())
            .filter(|c| c.null_count() == 0)
            .ok_or_else(|| EngineError::Corrupt("change log entry without an op column".into()))?;
        let ops = op_col
            .values()
            .iter()
            .map(|v| Op::from_i8(*v))
            .collect::<Result<Vec<_>>>()?;
        let data = batch.project(&(0..n - 1).collect::<Vec<_>>())?;
        Ok(Self { data, ops })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};

    #[test]
    fn ipc_round_trip() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Utf8, true),
        ]));
        let data = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 1, 2])),
                Arc::new(StringArray::from(vec![Some("a"), None, Some("c")])),
            ],
        )
        .unwrap();
        let batch = ChangeBatch {
            data,
            ops: vec![Op::UpdateBefore, Op::UpdateAfter, Op::Delete],
        };
        assert_eq!(
            ChangeBatch::from_ipc(&batch.to_ipc().unwrap()).unwrap(),
            batch
        );
        assert!(ChangeBatch::from_ipc(b"garbage").is_err());
    }
}
