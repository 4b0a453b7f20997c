//! Emit on update, once per epoch: the changes of an epoch's batches are held and sent at the
//! barrier as one net change per group.
//!
//! A view only shows whole epochs, so sending a group's change after every batch (a busy group
//! changes in every batch) only made the view's commit write, and its change log carry, the same
//! row many times per epoch. Instead, the first time an epoch touches a group, the row the group
//! had (what was last sent) is kept; at the barrier each touched group sends `UpdateBefore` of
//! that row and `UpdateAfter` of its row now (nothing if they are equal), `Insert` if it is new,
//! `Delete` if it vanished. Held changes are sent before a window closes (its groups are freed) and,
//! for an aggregate without windows, before a watermark goes on (an output row must not follow a
//! watermark that passed its time).

use datafusion::arrow::array::{Array, BooleanArray, UInt32Array};
use datafusion::arrow::compute::kernels::cmp::not_distinct;
use datafusion::arrow::compute::{and, concat_batches, take};
use datafusion::arrow::record_batch::RecordBatch;

use super::result::Value;
use super::{HashAggregate, Scratch};
use crate::Result;
use crate::changelog::{ChangeBatch, Op};

/// A group the epoch touched.
pub(super) struct Touched {
    id: u32,
    /// It had a row when the epoch began (the row is in [`Pending::before`]).
    existed: bool,
    /// It vanished since (its slot may hold another group now).
    gone: bool,
}

/// What the epoch changed, not sent yet.
#[derive(Default)]
pub(super) struct Pending {
    /// In order of first touch.
    touched: Vec<Touched>,
    /// The rows of the touched groups that existed when the epoch began, in `touched` order.
    before: Vec<RecordBatch>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.touched.is_empty()
    }
}

impl HashAggregate {
    /// Notes the groups batch `s` touches for the first time this epoch, with the rows they
    /// have before it (what was sent last). Called before the batch updates them.
    pub(super) fn hold(&mut self, s: &mut Scratch) -> Result<()> {
        s.before.clear();
        s.arena.clear();
        let mut first = Vec::new();
        for (t, &id) in s.touched.iter().enumerate() {
            let slot = &mut self.groups.slots[id as usize];
            if slot.pending == 0 {
                self.pending.touched.push(Touched {
                    id,
                    existed: s.existed[t],
                    gone: false,
                });
                slot.pending = self.pending.touched.len() as u32;
                if s.existed[t] {
                    first.push(id);
                }
            }
        }
        if first.is_empty() {
            return Ok(());
        }
        let slots = &self.groups.slots;
        let rows: Vec<i64> = first.iter().map(|&id| slots[id as usize].rows).collect();
        let existed = vec![true; first.len()];
        for agg in &self.aggs {
            agg.results(&first, &rows, &existed, &mut s.before, &mut s.arena)?;
        }
        let n = first.len();
        let value = |a: usize, r: usize| s.before[a * n + r];
        let batch = self.build(vec![Op::Delete; n], &first, value, &s.arena)?;
        self.pending.before.push(batch.data);
        Ok(())
    }

    /// Group `id` is about to be freed: a held change of it becomes its deletion.
    pub(super) fn forget_held(&mut self, id: u32) {
        let slot = &mut self.groups.slots[id as usize];
        if slot.pending > 0 {
            if let Some(t) = self.pending.touched.get_mut(slot.pending as usize - 1) {
                t.gone = true;
            }
            slot.pending = 0;
        }
    }

    /// The epoch's held changes, one net change per group, in order of first touch.
    pub(super) fn release(&mut self) -> Result<Vec<ChangeBatch>> {
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        let Pending { touched, before } = std::mem::take(&mut self.pending);
        let live: Vec<u32> = touched.iter().filter(|t| !t.gone).map(|t| t.id).collect();
        for &id in &live {
            self.groups.slots[id as usize].pending = 0;
        }
        let rows: Vec<i64> = live
            .iter()
            .map(|&id| self.groups.slots[id as usize].rows)
            .collect();
        let (mut values, mut arena): (Vec<Value>, Vec<u8>) = (Vec::new(), Vec::new());
        let keep = vec![true; live.len()];
        for agg in &self.aggs {
            agg.results(&live, &rows, &keep, &mut values, &mut arena)?;
        }
        let n = live.len();
        let after = self
            .build(vec![Op::Insert; n], &live, |a, r| values[a * n + r], &arena)?
            .data;
        let before = concat_batches(&self.output, &before)?;
        // Per group, its row before (source 0) and after (source 1).
        let (mut b, mut a) = (0usize, 0usize);
        let mut pairs: Vec<(usize, usize)> = Vec::new();
        let mut plan: Vec<(Op, usize, usize)> = Vec::new();
        for t in &touched {
            match (t.existed, t.gone) {
                (true, true) => {
                    plan.push((Op::Delete, 0, b));
                    b += 1;
                }
                (true, false) => {
                    pairs.push((b, a));
                    plan.push((Op::UpdateBefore, b, a));
                    b += 1;
                    a += 1;
                }
                (false, false) => {
                    plan.push((Op::Insert, 1, a));
                    a += 1;
                }
                (false, true) => {}
            }
        }
        let unchanged = self.unchanged(&before, &after, &pairs)?;
        let mut indices: Vec<(usize, usize)> = Vec::new();
        let mut ops = Vec::new();
        let mut pair = 0;
        for (op, x, y) in plan {
            match op {
                Op::UpdateBefore => {
                    if !unchanged.get(pair).copied().unwrap_or(false) {
                        indices.extend([(0, x), (1, y)]);
                        ops.extend([Op::UpdateBefore, Op::UpdateAfter]);
                    }
                    pair += 1;
                }
                _ => {
                    indices.push((x, y));
                    ops.push(op);
                }
            }
        }
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![ChangeBatch::interleave(
            &before, &after, &indices, ops,
        )?])
    }

    /// Per (before row, after row) pair: whether every result is the same (keys are).
    fn unchanged(
        &self,
        before: &RecordBatch,
        after: &RecordBatch,
        pairs: &[(usize, usize)],
    ) -> Result<Vec<bool>> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let keys = before.num_columns() - self.aggs.len();
        let olds = UInt32Array::from_iter_values(pairs.iter().map(|p| p.0 as u32));
        let news = UInt32Array::from_iter_values(pairs.iter().map(|p| p.1 as u32));
        let mut same = BooleanArray::from(vec![true; pairs.len()]);
        for c in keys..before.num_columns() {
            let old = take(before.column(c).as_ref(), &olds, None)?;
            let new = take(after.column(c).as_ref(), &news, None)?;
            // A type the kernel cannot compare counts as changed.
            match not_distinct(&old, &new) {
                Ok(equal) => same = and(&same, &equal)?,
                Err(_) => return Ok(vec![false; pairs.len()]),
            }
        }
        Ok((0..same.len())
            .map(|i| same.is_valid(i) && same.value(i))
            .collect())
    }
}
