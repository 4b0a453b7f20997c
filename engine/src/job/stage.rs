//! The tasks of a job's stages: a source reader, or a merge of upstream channels, feeding a chain
//! of operators whose output goes on through an [`Output`].
//!
//! A task handles a barrier by checkpointing every operator of its chain into the epoch's
//! contribution ([`Shared::contribute`]) *before* it forwards the barrier; the committing task
//! aligns the barrier from every last-stage task, so by then every task's contribution to the
//! epoch is in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::Shared;
use super::channel::{Barrier, Inputs, Message, Output};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType};
use datafusion::physical_plan::PhysicalExpr;

use crate::changelog::ChangeBatch;
use crate::operator::{DeadLetter, LateRow, Operator, StateScope};
use crate::state::StateBatch;
use crate::table::TableStore;
use crate::{EngineError, Result};

/// How often an idle source checks whether its watermark should move with the wall clock.
const IDLE_TICK: Duration = Duration::from_millis(100);

/// Change-log entries a source reads at a time.
const READ_ENTRIES: usize = 16;

/// Operators run one after another on every batch, within one task.
pub struct Chain {
    pub ops: Vec<Box<dyn Operator>>,
    pub scopes: Vec<StateScope>,
    pub output: Output,
    pub shared: Arc<Shared>,
    /// Late rows set aside by the operators since the last barrier.
    pub late: Vec<LateRow>,
    /// Records the source could not decode since the last barrier, with its index.
    pub dead: Vec<DeadLetter>,
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
        .map_err(|e| EngineError::Internal(format!("restoring state: {e}")))??;
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
            self.late.extend(op.take_late());
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
    pub async fn barrier(&mut self, b: Barrier, position: Option<SourcePosition>) -> Result<()> {
        let mut batch = StateBatch::new();
        let mut bytes = 0;
        for (op, scope) in self.ops.iter_mut().zip(&self.scopes) {
            op.checkpoint(scope, &mut batch)?;
            bytes += op.state_bytes();
        }
        let late = std::mem::take(&mut self.late);
        if let Some(p) = position {
            for (n, d) in std::mem::take(&mut self.dead).iter().enumerate() {
                let mut key = super::dead_prefix(self.shared.id);
                key.extend_from_slice(&b.epoch.to_be_bytes());
                key.extend_from_slice(&(p.index as u32).to_be_bytes());
                key.extend_from_slice(&(n as u32).to_be_bytes());
                batch.put(key, d.encode());
            }
        }
        self.shared
            .contribute(b.epoch, batch, position, bytes, late);
        self.output.broadcast(|| Message::Barrier(b)).await
    }
}

/// How far a source has read: the last change-log sequence and its watermark.
#[derive(Debug, Clone, Copy)]
pub struct SourcePosition {
    /// The source's index among the job's sources.
    pub index: usize,
    pub seq: u64,
    /// Event time in microseconds since the epoch; `None` before any row (or without event time).
    pub watermark: Option<i64>,
}

/// A source: a table's change log after a position, and its watermark expression.
pub struct SourceReader {
    pub table: Arc<TableStore>,
    pub watermark_expr: Option<Arc<dyn PhysicalExpr>>,
    /// See [`super::graph::Source::idle_timeout`].
    pub idle_timeout: Option<Duration>,
    /// See [`super::graph::Source::processing_time`].
    pub processing_time: bool,
    pub at: SourcePosition,
}

impl SourceReader {
    /// The largest watermark `batch`'s added rows give, if above the current one.
    fn advance(&mut self, batch: &ChangeBatch) -> Result<Option<i64>> {
        let Some(expr) = &self.watermark_expr else {
            return Ok(None);
        };
        let data_error = |e: &dyn std::fmt::Display| EngineError::Data {
            operator: "watermark".into(),
            message: e.to_string(),
        };
        let values = expr
            .evaluate(&batch.data)
            .and_then(|v| v.into_array(batch.num_rows()))
            .map_err(|e| data_error(&e))?;
        let micros = cast(&values, &DataType::Timestamp(TimeUnit::Microsecond, None))
            .map_err(|e| data_error(&e))?;
        let micros = micros.as_primitive::<TimestampMicrosecondType>();
        let max = batch
            .ops
            .iter()
            .enumerate()
            .filter(|(i, op)| op.is_add() && micros.is_valid(*i))
            .map(|(i, _)| micros.value(i))
            .max();
        match max {
            Some(m) if self.at.watermark.is_none_or(|w| m > w) => {
                self.at.watermark = Some(m);
                Ok(Some(m))
            }
            _ => Ok(None),
        }
    }
}

/// Reads an external source (files) into `chain`, as [`source`] reads a change log: every batch,
/// then the watermark when it advances; a barrier with the position reached whenever the
/// committing task asks for one. Reading and decoding run on a blocking thread. A bounded source
/// read to its end sends the watermark `i64::MAX`, closing every window, then only answers
/// barriers; otherwise it looks for more input every [`IDLE_TICK`].
pub async fn external_source(
    mut reader: SourceReader,
    external: Arc<dyn super::graph::ExternalSource>,
    mut barriers: mpsc::UnboundedReceiver<Barrier>,
    chain: &mut Chain,
) -> Result<()> {
    chain.start().await?;
    if let Some(w) = reader.at.watermark {
        chain.watermark(w).await?;
    }
    let position = reader.at.seq;
    let source = Arc::clone(&external);
    let opened = tokio::task::spawn_blocking(move || source.open(position))
        .await
        .map_err(|e| EngineError::Internal(format!("source reader: {e}")))??;
    let mut input: Option<Box<dyn super::graph::ExternalReader>> = Some(opened);
    let mut finished = false;
    let mut idle = tokio::time::interval(IDLE_TICK);
    idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        while let Ok(b) = barriers.try_recv() {
            chain.barrier(b, Some(reader.at)).await?;
        }
        if !finished && let Some(mut r) = input.take() {
            let (r, next, dead) = tokio::task::spawn_blocking(move || {
                let next = r.next();
                let done = r.finished();
                let dead = r.take_dead_letters();
                (r, next.map(|n| (n, done)), dead)
            })
            .await
            .map_err(|e| EngineError::Internal(format!("source reader: {e}")))?;
            input = Some(r);
            if !dead.is_empty() {
                chain.shared.count_dead(dead.len());
                let table = reader.table.name().to_string();
                chain.dead.extend(dead.into_iter().map(|d| DeadLetter {
                    table: table.clone(),
                    ..d
                }));
            }
            let (rows, done) = next?;
            if let Some((rows, position)) = rows {
                let batch = ChangeBatch::inserts(reader.table.complete(&rows)?);
                chain.shared.count_in(batch.num_rows());
                let advanced = reader.advance(&batch)?;
                chain.push(batch).await?;
                reader.at.seq = position;
                chain.shared.read_to(reader.at.index, position);
                if let Some(w) = advanced {
                    chain.watermark(w).await?;
                }
                if !done {
                    continue;
                }
            }
            if done {
                // The end: the final watermark closes every window, and only then does the
                // position reach the source's end (past its last byte), which FLUSH waits for.
                finished = true;
                if reader.watermark_expr.is_some() && reader.at.watermark != Some(i64::MAX) {
                    reader.at.watermark = Some(i64::MAX);
                    chain.watermark(i64::MAX).await?;
                }
                let end = external.end()?;
                reader.at.seq = reader.at.seq.max(end);
                chain.shared.read_to(reader.at.index, reader.at.seq);
            }
        }
        tokio::select! {
            b = barriers.recv() => match b {
                Some(b) => chain.barrier(b, Some(reader.at)).await?,
                None => return Ok(()),
            },
            _ = idle.tick(), if !finished => {}
        }
    }
}

/// Reads a source into `chain`: every batch, then the watermark when it advances; a barrier with
/// the position reached whenever the committing task asks for one.
pub async fn source(
    mut reader: SourceReader,
    mut barriers: mpsc::UnboundedReceiver<Barrier>,
    chain: &mut Chain,
) -> Result<()> {
    let table = Arc::clone(&reader.table);
    let mut committed = table.subscribe();
    chain.start().await?;
    if let Some(w) = reader.at.watermark {
        // Where event time stood at the checkpoint: operators that close windows need it again.
        chain.watermark(w).await?;
    }
    // When rows last came, and the watermark then: an idle source's watermark moves on from it.
    let mut last_rows = (Instant::now(), reader.at.watermark);
    let mut idle = tokio::time::interval(IDLE_TICK);
    idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        while let Ok(b) = barriers.try_recv() {
            chain.barrier(b, Some(reader.at)).await?;
        }
        if table.last_seq() > reader.at.seq {
            let entries = table.changes_after(None, reader.at.seq, READ_ENTRIES)?;
            for (seq, batch) in entries {
                chain.shared.count_in(batch.num_rows());
                let advanced = reader.advance(&batch)?;
                chain.push(batch).await?;
                reader.at.seq = seq;
                chain.shared.read_to(reader.at.index, seq);
                if let Some(w) = advanced {
                    chain.watermark(w).await?;
                }
            }
            last_rows = (Instant::now(), reader.at.watermark);
            continue;
        }
        tokio::select! {
            b = barriers.recv() => match b {
                Some(b) => chain.barrier(b, Some(reader.at)).await?,
                None => return Ok(()),
            },
            changed = committed.changed() => {
                if changed.is_err() {
                    // The table is gone (dropped): nothing more will come.
                    return Ok(());
                }
            }
            _ = idle.tick(), if reader.idle_timeout.is_some() => {
                let (since, base) = last_rows;
                let timeout = reader.idle_timeout.unwrap_or_default();
                let Some(idle_for) = since.elapsed().checked_sub(timeout) else {
                    continue;
                };
                let w = if reader.processing_time {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default();
                    now.saturating_sub(timeout).as_micros() as i64
                } else {
                    let Some(base) = base else {
                        continue;
                    };
                    base.saturating_add(idle_for.as_micros() as i64)
                };
                if reader.at.watermark.is_none_or(|old| w > old) {
                    reader.at.watermark = Some(w);
                    chain.watermark(w).await?;
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
