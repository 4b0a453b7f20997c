//! `x NOT IN (SELECT y ...)`: the null-aware anti join DataFusion's decorrelation makes of it,
//! maintained under inserts, updates and deletes on both sides with SQL's three-valued logic: a
//! left row is in the output when the subquery has no rows at all, or when its `x` is not NULL, no
//! `y` equals it and no `y` is NULL.
//!
//! Whether the subquery is empty or has a NULL is a property of all its rows, so the operator
//! runs as one instance (the planner gives it no key exchange). **State**: the left rows (`l`:
//! key group 0, length-prefixed `x` encoding, row; the value is the row's count and its degree,
//! the number of `y` equal to its non-NULL `x`), the subquery's rows (`r`: the same by `y`, with
//! their count) and the subquery's row and NULL counts (`g`). A subquery change that flips one
//! of those between zero and more re-decides every left row (a scan of `l`); any other change
//! only the left rows with its `y`.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatchOptions;

use super::{JoinSide, Side, encode, key_codec, key_len, parse_value, value};
use crate::changelog::{ChangeBatch, Op};
use crate::codec::RowCodec;
use crate::operator::{Operator, StateScope};
use crate::state::StateBatch;
use crate::state::table::{Direction, StateTable};
use crate::{EngineError, Result};

/// A batch's rows: whether each key is NULL, and the key (NULL encoded too) and row encodings.
type Encoded = (Vec<bool>, super::Encoded, super::Encoded);

/// The one key group the single instance keeps everything in.
const KG: u16 = 0;
/// The key of the subquery's counts in `g`.
const COUNTS: &[u8] = b"n";

/// The subquery's row count and NULL count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    rows: i64,
    nulls: i64,
}

impl Counts {
    /// Whether a left row with a NULL `x` (or not) and `degree` equal `y`s passes.
    fn passes(self, null: bool, degree: i64) -> bool {
        self.rows == 0 || (!null && self.nulls == 0 && degree == 0)
    }
}

/// The null-aware anti join; see the module documentation.
pub struct NotInJoin {
    sides: [Arc<Side>; 2],
    key_codec: Arc<RowCodec>,
    schema: SchemaRef,
    counts: Counts,
    /// `l`, `r` and `g`, once restored.
    tables: Option<[StateTable; 3]>,
    groups: Vec<u16>,
}

/// Whether a stored key (length-prefixed encoding of the one key column) is NULL: the first
/// bit of its null bitmap is set.
fn is_null_key(key: &[u8]) -> bool {
    key.get(4).is_some_and(|b| b & 1 == 1)
}

impl NotInJoin {
    /// `left` rows whose single key column is NOT IN `right`'s, emitting `schema` (left's own
    /// columns).
    pub fn try_new(left: JoinSide, right: JoinSide, schema: SchemaRef) -> Result<NotInJoin> {
        if left.keys.len() != 1 {
            return Err(EngineError::Internal("NOT IN compares one column".into()));
        }
        if schema.fields().len() != left.width {
            return Err(EngineError::Internal(format!(
                "NOT IN output has {} columns, its left side {}",
                schema.fields().len(),
                left.width
            )));
        }
        let key_codec = key_codec(&left, &right)?;
        Ok(NotInJoin {
            sides: [
                Arc::new(Side::try_new(left)?),
                Arc::new(Side::try_new(right)?),
            ],
            key_codec: Arc::new(key_codec),
            schema,
            counts: Counts::default(),
            tables: None,
            groups: Vec::new(),
        })
    }

    fn tables(&mut self) -> Result<&mut [StateTable; 3]> {
        self.tables
            .as_mut()
            .ok_or_else(|| EngineError::Internal("NOT IN used before restore".into()))
    }

    fn output(&self, rows: &[(Op, &[u8])]) -> Result<Vec<ChangeBatch>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut d = self.sides[0].codec.decoder(None, rows.len());
        for (_, r) in rows {
            d.push(r)?;
        }
        let columns: Vec<ArrayRef> = d.flush()?.columns().to_vec();
        let data = RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows.len())),
        )?;
        Ok(vec![ChangeBatch {
            data,
            ops: rows.iter().map(|(op, _)| *op).collect(),
        }])
    }

    /// Whether each row's key column is NULL, and its key (NULL encoded too) and row encodings.
    fn rows(&mut self, s: usize, batch: &RecordBatch) -> Result<Encoded> {
        let column = batch.column(self.sides[s].spec.keys[0]);
        let nulls = (0..batch.num_rows()).map(|i| column.is_null(i)).collect();
        let (keys, rows) = encode(
            &self.sides[s],
            &self.key_codec,
            true,
            batch,
            &mut self.groups,
        )?;
        Ok((nulls, keys, rows))
    }

    fn left(&mut self, batch: &ChangeBatch) -> Result<Vec<ChangeBatch>> {
        let (nulls, keys, rows) = self.rows(0, &batch.data)?;
        let counts = self.counts;
        let tables = self.tables()?;
        let mut out: Vec<(Op, usize)> = Vec::new();
        for (i, op) in batch.ops.iter().enumerate() {
            let sign = if op.is_add() { 1 } else { -1 };
            let mut degree = 0;
            if !nulls[i] {
                tables[1].scan_prefix(KG, &keys[i], Direction::Forward, |_, v| {
                    degree += parse_value(v)?.0;
                    Ok(ControlFlow::Continue(()))
                })?;
            }
            if counts.passes(nulls[i], degree) {
                out.push((if sign > 0 { Op::Insert } else { Op::Delete }, i));
            }
            let mut stored = keys[i].to_vec();
            stored.extend_from_slice(&rows[i]);
            let count = match tables[0].get(KG, &stored)? {
                Some(v) => parse_value(v)?.0,
                None => 0,
            } + sign;
            if count > 0 {
                tables[0].put(KG, &stored, &value(count, degree));
            } else {
                tables[0].delete(KG, &stored);
            }
        }
        let out: Vec<(Op, &[u8])> = out.iter().map(|(op, i)| (*op, &rows[*i])).collect();
        self.output(&out)
    }

    fn right(&mut self, batch: &ChangeBatch) -> Result<Vec<ChangeBatch>> {
        let (nulls, keys, rows) = self.rows(1, &batch.data)?;
        let mut out: Vec<(Op, Vec<u8>)> = Vec::new();
        for (i, op) in batch.ops.iter().enumerate() {
            let sign = if op.is_add() { 1 } else { -1 };
            let before = self.counts;
            let after = Counts {
                rows: before.rows + sign,
                nulls: before.nulls + if nulls[i] { sign } else { 0 },
            };
            self.counts = after;
            let tables = self.tables()?;
            let mut stored = keys[i].to_vec();
            stored.extend_from_slice(&rows[i]);
            let count = match tables[1].get(KG, &stored)? {
                Some(v) => parse_value(v)?.0,
                None => 0,
            } + sign;
            if count > 0 {
                tables[1].put(KG, &stored, &value(count, 0));
            } else {
                tables[1].delete(KG, &stored);
            }
            let flips = (before.rows == 0) != (after.rows == 0)
                || (before.nulls == 0) != (after.nulls == 0);
            // The left rows whose outcome may change, and how their degree moves.
            let (start, delta): (&[u8], i64) = if nulls[i] { (&[], 0) } else { (&keys[i], sign) };
            if !flips && nulls[i] {
                continue;
            }
            // (stored key, count, degree before, degree after) of each affected left row.
            let mut changed: Vec<(Vec<u8>, i64, i64, i64)> = Vec::new();
            let prefix = if flips { &[][..] } else { start };
            tables[0].scan_prefix(KG, prefix, Direction::Forward, |k, v| {
                let (count, degree) = parse_value(v)?;
                let own = k.get(..key_len(k)).unwrap_or_default();
                let moved = if !nulls[i] && own == &keys[i] {
                    delta
                } else {
                    0
                };
                changed.push((k.to_vec(), count, degree, degree + moved));
                Ok(ControlFlow::Continue(()))
            })?;
            for (k, count, old, new) in changed {
                let null = is_null_key(k.get(..key_len(&k)).unwrap_or_default());
                if old != new {
                    tables[0].put(KG, &k, &value(count, new));
                }
                if before.passes(null, old) != after.passes(null, new) {
                    let op = if after.passes(null, new) {
                        Op::Insert
                    } else {
                        Op::Delete
                    };
                    let row = k.get(key_len(&k)..).unwrap_or_default();
                    for _ in 0..count {
                        out.push((op, row.to_vec()));
                    }
                }
            }
        }
        let counts = self.counts;
        let mut g = [0u8; 16];
        g[..8].copy_from_slice(&counts.rows.to_le_bytes());
        g[8..].copy_from_slice(&counts.nulls.to_le_bytes());
        self.tables()?[2].put(KG, COUNTS, &g);
        let out: Vec<(Op, &[u8])> = out.iter().map(|(op, r)| (*op, r.as_slice())).collect();
        self.output(&out)
    }
}

impl Operator for NotInJoin {
    fn name(&self) -> &'static str {
        "NotInJoin"
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn inputs(&self) -> usize {
        2
    }

    fn fork(&self) -> Result<Box<dyn Operator>> {
        Ok(Box::new(NotInJoin {
            sides: self.sides.clone(),
            key_codec: Arc::clone(&self.key_codec),
            schema: Arc::clone(&self.schema),
            counts: Counts::default(),
            tables: None,
            groups: Vec::new(),
        }))
    }

    fn restore(&mut self, scope: &StateScope) -> Result<()> {
        if !scope.key_groups.contains(&KG) {
            // Another instance: the planner runs one.
            return Err(EngineError::Internal("NOT IN runs as one instance".into()));
        }
        let table = |tag: u8| scope.table(tag, scope.cache_bytes / 3);
        let mut tables = [table(b'l'), table(b'r'), table(b'g')];
        self.counts = match tables[2].get(KG, COUNTS)? {
            Some(v) => {
                let (rows, nulls) = parse_value(v)?;
                Counts { rows, nulls }
            }
            None => Counts::default(),
        };
        self.tables = Some(tables);
        Ok(())
    }

    fn process(&mut self, input: usize, batch: ChangeBatch) -> Result<Vec<ChangeBatch>> {
        // Every row goes to key group 0: the planner sends both inputs to the one instance.
        if input == 0 {
            self.left(&batch)
        } else {
            self.right(&batch)
        }
    }

    fn checkpoint(
        &mut self,
        epoch: u64,
        _scope: &StateScope,
        batch: &mut StateBatch,
    ) -> Result<()> {
        if let Some(tables) = self.tables.as_mut() {
            for t in tables.iter_mut() {
                t.checkpoint(epoch, batch);
            }
        }
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.tables
            .as_ref()
            .map_or(0, |t| t.iter().map(|t| t.bytes() as usize).sum())
    }

    fn describe(&self) -> String {
        format!(
            "NotInJoin: left #{} NOT IN right #{}; one instance; state: both sides' rows by key, \
             the subquery's row and NULL counts, unbounded (table.exec.state.ttl does not apply: \
             whether a row passes depends on every subquery row; NOT EXISTS is an anti join the \
             TTL bounds)",
            self.sides[0].spec.keys[0], self.sides[1].spec.keys[0]
        )
    }
}
