//! The tasks of a job's stages: a source reader, or a merge of upstream channels, feeding a chain
//! of operators whose output goes on through an [`Output`].
//!
//! A task handles a barrier by checkpointing every operator of its chain into the epoch's
//! contribution ([`Shared::contribute`]) *before* it forwards the barrier; the committing task
//! aligns the barrier from every last-stage task, so by then every task's contribution to the
//! epoch is in.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::Shared;
use super::channel::{Barrier, Inputs, Message, Output};
use crate::Result;
use crate::changelog::ChangeBatch;
use crate::operator::{Operator, StateScope};
use crate::state::StateBatch;
use crate::table::TableStore;

/// Change-log entries a source reads at a time.
const READ_ENTRIES: usize = 16;

/// Operators run one after another on every batch, within one task.
pub struct Chain {
    pub ops: Vec<Box<dyn Operator>>,
    pub scopes: Vec<StateScope>,
    pub output: Output,
    pub shared: Arc<Shared>,
}

impl Chain {
    /// Loads every operator's state (blocking reads, off the async workers).
    pub async fn restore(mut self) -> Result<Self> {
        let ops = std::mem::take(&mut self.ops);
        let scopes = self.scopes.clone();
        let restored = tokio::task::spawn_blocking(move || -> Result<Vec<Box<dyn Operator>>> {
            let mut ops = ops;
            for (op, scope) in ops.iter_mut().zip(&scopes) {
                op.restore(scope)?;
            }
            Ok(ops)
        })
        .await
        .map_err(|e| crate::EngineError::Internal(format!("restoring state: {e}")))??;
        self.ops = restored;
        Ok(self)
    }

    /// Records the task's failure, if `result` is one, while the chain (and so its channels)
    /// still exists: downstream tasks must not see their inputs close before the job is marked
    /// failed, or they would take it for a normal end.
    pub fn report(&self, task: &str, result: Result<()>) -> Result<()> {
        if let Err(e) = &result {
            self.shared.fail(task, e.to_string());
        }
        result
    }

    /// Runs `batch` through the operators from index `first` on.
    fn run(&mut self, first: usize, batch: ChangeBatch) -> Result<Vec<ChangeBatch>> {
        let mut batches = vec![batch];
        for op in self.ops.iter_mut().skip(first) {
            let mut next = Vec::new();
            for b in batches {
                next.extend(op.process(b)?);
            }
            batches = next;
            if batches.is_empty() {
                break;
            }
        }
        Ok(batches.into_iter().filter(|b| b.num_rows() > 0).collect())
    }

    async fn emit(&mut self, batches: Vec<ChangeBatch>) -> Result<()> {
        for b in batches {
            self.output.send(b).await?;
        }
        Ok(())
    }

    /// Sends what the operators have before any input.
    pub async fn start(&mut self) -> Result<()> {
        for i in 0..self.ops.len() {
            let mut out = Vec::new();
            for b in self.ops[i].start()? {
                out.extend(self.run(i + 1, b)?);
            }
            self.emit(out).await?;
        }
        Ok(())
    }

    pub async fn push(&mut self, batch: ChangeBatch) -> Result<()> {
        let out = self.run(0, batch)?;
        self.emit(out).await
    }

    pub async fn watermark(&mut self, watermark: i64) -> Result<()> {
        for i in 0..self.ops.len() {
            let mut out = Vec::new();
            for b in self.ops[i].on_watermark(watermark)? {
                out.extend(self.run(i + 1, b)?);
            }
            self.emit(out).await?;
        }
        self.output
            .broadcast(|| Message::Watermark(watermark))
            .await
    }

    /// Checkpoints the chain into epoch `b`'s contribution (with a source's position, if this
    /// task reads one), then forwards the barrier.
    pub async fn barrier(&mut self, b: Barrier, position: Option<(usize, u64)>) -> Result<()> {
        let mut batch = StateBatch::new();
        let mut bytes = 0;
        for (op, scope) in self.ops.iter_mut().zip(&self.scopes) {
            op.checkpoint(scope, &mut batch)?;
            bytes += op.state_bytes();
        }
        self.shared.contribute(b.epoch, batch, position, bytes);
        self.output.broadcast(|| Message::Barrier(b)).await
    }
}

/// Reads source `index` (`table`'s change log after `position`) into `chain`, and emits a barrier
/// with the position reached whenever the committing task asks for one.
pub async fn source(
    table: Arc<TableStore>,
    index: usize,
    mut position: u64,
    mut barriers: mpsc::UnboundedReceiver<Barrier>,
    chain: &mut Chain,
) -> Result<()> {
    let mut committed = table.subscribe();
    chain.start().await?;
    loop {
        while let Ok(b) = barriers.try_recv() {
            chain.barrier(b, Some((index, position))).await?;
        }
        if table.last_seq() > position {
            let entries = table.changes_after(None, position, READ_ENTRIES)?;
            for (seq, batch) in entries {
                chain.shared.count_in(batch.num_rows());
                chain.push(batch).await?;
                position = seq;
            }
            continue;
        }
        tokio::select! {
            b = barriers.recv() => match b {
                Some(b) => chain.barrier(b, Some((index, position))).await?,
                None => return Ok(()),
            },
            changed = committed.changed() => {
                if changed.is_err() {
                    // The table is gone (dropped): nothing more will come.
                    return Ok(());
                }
            }
        }
    }
}

/// Runs `chain` over the merged `inputs` until they close.
pub async fn merge(mut inputs: Inputs, chain: &mut Chain) -> Result<()> {
    chain.start().await?;
    while let Some(msg) = inputs.next().await? {
        match msg {
            Message::Batch(b) => chain.push(b).await?,
            Message::Watermark(w) => chain.watermark(w).await?,
            Message::Barrier(b) => chain.barrier(b, None).await?,
        }
    }
    Ok(())
}
