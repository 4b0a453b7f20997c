//! What the operators' randomized tests share: a seeded generator, and a driver that checkpoints,
//! commits, restarts and crashes an operator at random between batches, as the job runtime would,
//! keeping the test's model of the input in step with what survives.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::{Operator, StateScope};
use crate::changelog::{ChangeBatch, Op};
use crate::state::{StateBatch, StateStore};

/// A small deterministic generator (xorshift64), so a failure replays from its seed.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A schema of nullable BIGINT columns named `names`.
pub(crate) fn int64_schema(names: &[&str]) -> SchemaRef {
    let fields: Vec<Field> = (names.iter())
        .map(|n| Field::new(*n, DataType::Int64, true))
        .collect();
    Arc::new(Schema::new(fields))
}

/// A batch of rows of BIGINT columns (`schema`'s), with their ops.
pub(crate) fn int64_batch<R: AsRef<[Option<i64>]>>(
    schema: &SchemaRef,
    rows: &[(Op, R)],
) -> ChangeBatch {
    let columns: Vec<ArrayRef> = (0..schema.fields().len())
        .map(|c| {
            let values = rows.iter().map(|(_, r)| r.as_ref()[c]);
            Arc::new(values.collect::<Int64Array>()) as ArrayRef
        })
        .collect();
    ChangeBatch {
        data: RecordBatch::try_new(Arc::clone(schema), columns).expect("batch"),
        ops: rows.iter().map(|(op, _)| *op).collect(),
    }
}

/// A fresh instance of `proto` over `scope`'s state, as after a restart.
pub(crate) fn restored(proto: &dyn Operator, scope: &StateScope) -> Box<dyn Operator> {
    let mut op = proto.fork().expect("fork");
    op.restore(scope).expect("restore");
    op
}

/// Checkpoints `op` into epoch `epoch` and commits it, as the job's committing task would.
pub(crate) fn commit(op: &mut dyn Operator, scope: &StateScope, epoch: u64) {
    let mut state = StateBatch::new();
    op.checkpoint(epoch, scope, &mut state).expect("checkpoint");
    scope.store.write(state, false).expect("write");
    scope.committed.store(epoch, Ordering::Release);
}

/// Epochs of one operator instance and the test's model `M` (the input rows and the expected
/// output) as of the last commit.
pub(crate) struct Epochs<M> {
    store: StateStore,
    epoch: u64,
    /// Checkpointed epochs whose write batches are not in the store yet.
    pending: Vec<StateBatch>,
    committed: M,
}

impl<M: Clone> Epochs<M> {
    pub(crate) fn new(store: StateStore, model: &M) -> Self {
        Self {
            store,
            epoch: 0,
            pending: Vec::new(),
            committed: model.clone(),
        }
    }

    /// After a batch: sometimes a checkpoint, which stays in flight while more batches come,
    /// or commits (with every earlier one), after which the job sometimes restarts from the
    /// commit; sometimes a crash, which loses what came after the last commit (the sources
    /// replay it, so the model goes back to the commit too).
    pub(crate) fn step(
        &mut self,
        rng: &mut Rng,
        proto: &dyn Operator,
        scope: &StateScope,
        op: &mut Box<dyn Operator>,
        model: &mut M,
    ) {
        if rng.below(5) == 0 {
            self.epoch += 1;
            let mut state = StateBatch::new();
            op.checkpoint(self.epoch, scope, &mut state)
                .expect("checkpoint");
            self.pending.push(state);
            let choice = rng.below(4);
            if choice == 0 {
                return;
            }
            for state in self.pending.drain(..) {
                self.store.write(state, false).expect("write");
            }
            scope.committed.store(self.epoch, Ordering::Release);
            self.committed = model.clone();
            if choice == 2 {
                *op = restored(proto, scope);
            }
        } else if rng.below(12) == 0 {
            self.pending.clear();
            self.epoch = scope.committed.load(Ordering::Acquire);
            *model = self.committed.clone();
            *op = restored(proto, scope);
        }
    }
}
