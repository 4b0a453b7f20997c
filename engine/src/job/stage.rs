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
use super::metrics::{JobMetrics, OperatorMetrics, TaskMetrics};
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

/// How long an external source's task waits when its reader had nothing (the reader itself may
/// already have waited for input).
const EXTERNAL_POLL: Duration = Duration::from_millis(5);

/// Change-log entries a source reads at a time.
const READ_ENTRIES: usize = 16;

/// An external source's read of this many rows (its readers' batch size) was full: more input
/// is waiting.
const FULL_READ_ROWS: usize = 8192;

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
    /// Per input of the first operator: its watermark so far.
    pub watermarks: Vec<Option<i64>>,
    /// The watermark last sent downstream.
    pub forwarded: Option<i64>,
    /// The job's figures, and this task's place in them (stage, instance).
    pub metrics: Arc<JobMetrics>,
    pub at: (usize, usize),
    /// Operators that kept part of their last input back ([`Operator::has_pending`]), in chain
    /// order: the last is resumed first, as its output belongs before the earlier ones' rest.
    pending: Vec<usize>,
    /// The operator whose call failed, for the failure's log line and message.
    failed: Option<&'static str>,
}

/// `result`, noting operator `name` in `failed` if it is an error.
fn blame<T>(failed: &mut Option<&'static str>, name: &'static str, result: Result<T>) -> Result<T> {
    if result.is_err() {
        *failed = Some(name);
    }
    result
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
            self.shared.fail(task, self.failed, e);
        }
        result
    }

    /// A chain of `ops` whose first operator reads `inputs` inputs, the chain of instance `at.1`
    /// of stage `at.0`.
    pub fn new(
        ops: Vec<Box<dyn Operator>>,
        scopes: Vec<StateScope>,
        output: Output,
        shared: Arc<Shared>,
        inputs: usize,
        at: (usize, usize),
    ) -> Self {
        // An input without event time counts as done: it never holds the watermark back.
        let watermarks = (0..inputs.max(1))
            .map(|i| {
                ops.first()
                    .is_some_and(|op| !op.input_has_time(i))
                    .then_some(i64::MAX)
            })
            .collect();
        Self {
            ops,
            scopes,
            output,
            late: Vec::new(),
            dead: Vec::new(),
            watermarks,
            forwarded: None,
            metrics: Arc::clone(&shared.metrics),
            shared,
            at,
            pending: Vec::new(),
            failed: None,
        }
    }

    /// This task's figures.
    fn task(&self) -> Option<&TaskMetrics> {
        match super::metrics::recording() {
            true => self.metrics.task(self.at.0, self.at.1),
            false => None,
        }
    }

    /// Operator `i`'s figures.
    fn op(&self, i: usize) -> Option<&OperatorMetrics> {
        self.task()?.operators.get(i)
    }

    /// Runs `batch`, from input `input` of operator `first`, through the operators from index
    /// `first` on (the later ones read their predecessor's output, their input 0).
    fn run(&mut self, first: usize, input: usize, batch: ChangeBatch) -> Result<Vec<ChangeBatch>> {
        self.run_all(first, input, vec![batch])
    }

    /// [`Chain::run`] for several batches. An operator that keeps part of its input back is
    /// noted in `pending`, for [`Chain::drain`].
    fn run_all(
        &mut self,
        first: usize,
        input: usize,
        mut batches: Vec<ChangeBatch>,
    ) -> Result<Vec<ChangeBatch>> {
        let task = self.metrics.task(self.at.0, self.at.1);
        for (i, op) in self.ops.iter_mut().enumerate().skip(first) {
            let input = if i == first { input } else { 0 };
            let mut next = Vec::new();
            let mut rows = 0;
            for b in batches {
                // What it kept back comes before its next input.
                while op.has_pending() {
                    next.extend(blame(&mut self.failed, op.name(), op.resume())?);
                }
                rows += b.num_rows();
                next.extend(blame(&mut self.failed, op.name(), op.process(input, b))?);
            }
            if op.has_pending() {
                self.pending.push(i);
            }
            let late = op.take_late();
            if let Some(m) = task.and_then(|t| t.operators.get(i)) {
                m.count_in(rows);
                m.count_out(next.iter().map(|b| b.num_rows()).sum());
                if !late.is_empty() {
                    self.metrics
                        .late_rows
                        .fetch_add(late.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            }
            self.late.extend(late);
            batches = next;
            if batches.is_empty() {
                break;
            }
        }
        Ok(batches.into_iter().filter(|b| b.num_rows() > 0).collect())
    }

    /// Resumes the operators that kept input back, one part at a time, sending each part on
    /// (with backpressure) before the next: a row that meets a million others never has all
    /// its output in memory at once.
    async fn drain(&mut self) -> Result<()> {
        while let Some(&i) = self.pending.last() {
            let Some(op) = self.ops.get_mut(i).filter(|op| op.has_pending()) else {
                self.pending.pop();
                continue;
            };
            let started = Instant::now();
            let out = blame(&mut self.failed, op.name(), op.resume())?;
            if let Some(m) = self.op(i) {
                m.count_out(out.iter().map(|b| b.num_rows()).sum());
            }
            let out = self.run_all(i + 1, 0, out)?;
            self.busy(started);
            self.emit(out).await?;
        }
        Ok(())
    }

    /// Sends `batches` on; time spent waiting for room downstream counts as backpressure.
    async fn emit(&mut self, batches: Vec<ChangeBatch>) -> Result<()> {
        if batches.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        for b in batches {
            self.output.send(b).await?;
        }
        if let Some(t) = self.task() {
            t.backpressured(started.elapsed());
        }
        Ok(())
    }

    /// Sends a watermark or barrier to every downstream task, timed as [`Chain::emit`].
    async fn broadcast(&mut self, msg: impl Fn() -> Message) -> Result<()> {
        let started = Instant::now();
        self.output.broadcast(msg).await?;
        if let Some(t) = self.task() {
            t.backpressured(started.elapsed());
        }
        Ok(())
    }

    /// Counts `started`'s elapsed time as busy.
    fn busy(&self, started: Instant) {
        if let Some(t) = self.task() {
            t.busy(started.elapsed());
        }
    }

    /// Sends what the operators have before any input.
    pub async fn start(&mut self) -> Result<()> {
        for i in 0..self.ops.len() {
            let mut out = Vec::new();
            let started = blame(&mut self.failed, self.ops[i].name(), self.ops[i].start())?;
            for b in started {
                if let Some(m) = self.op(i) {
                    m.count_out(b.num_rows());
                }
                out.extend(self.run(i + 1, 0, b)?);
            }
            self.emit(out).await?;
            self.drain().await?;
        }
        Ok(())
    }

    /// Runs a batch from input `input` through the chain and sends what comes out.
    pub async fn push(&mut self, input: usize, batch: ChangeBatch) -> Result<()> {
        let started = Instant::now();
        let out = self.run(0, input, batch)?;
        self.busy(started);
        self.emit(out).await?;
        self.drain().await
    }

    /// Input `input`'s watermark has reached `watermark`: the first operator learns it for that
    /// input; once every input has one, their minimum (as the first operator forwards it) goes
    /// through the rest of the chain, and downstream when it grows.
    pub async fn watermark(&mut self, input: usize, watermark: i64) -> Result<()> {
        let slot = self
            .watermarks
            .get_mut(input)
            .ok_or_else(|| EngineError::Internal(format!("watermark of unknown input {input}")))?;
        if slot.is_some_and(|w| w >= watermark) {
            return Ok(());
        }
        *slot = Some(watermark);
        if let Some(super::metrics::StageInputInfo::Source { index, .. }) =
            self.metrics.stages.get(self.at.0).map(|s| &s.input)
            && let Some(source) = self.metrics.sources.get(*index)
        {
            source.set_watermark(watermark);
        }
        self.close(0, input, watermark).await?;
        let Some(min) = self
            .watermarks
            .iter()
            .try_fold(i64::MAX, |m, w| w.map(|w| m.min(w)))
        else {
            return Ok(());
        };
        let mut w = match self.ops.first() {
            Some(first) => first.output_watermark(min),
            None => min,
        };
        if let Some(m) = self.op(0) {
            m.watermarks(min, w);
        }
        if self.forwarded.is_some_and(|f| f >= w) {
            return Ok(());
        }
        for i in 1..self.ops.len() {
            self.close(i, 0, w).await?;
            let input = w;
            w = self.ops[i].output_watermark(w);
            if let Some(m) = self.op(i) {
                m.watermarks(input, w);
            }
        }
        self.forwarded = Some(w);
        self.broadcast(|| Message::Watermark(w)).await
    }

    /// Tells operator `i` that its input `input` reached `watermark`, and sends on what that
    /// closes.
    async fn close(&mut self, i: usize, input: usize, watermark: i64) -> Result<()> {
        let started = Instant::now();
        let Some(op) = self.ops.get_mut(i) else {
            return Ok(());
        };
        let mut out = Vec::new();
        let closed = blame(
            &mut self.failed,
            op.name(),
            op.on_watermark(input, watermark),
        )?;
        for b in closed {
            if let Some(m) = self.metrics.task(self.at.0, self.at.1)
                && let Some(m) = m.operators.get(i)
            {
                m.count_out(b.num_rows());
            }
            out.extend(self.run(i + 1, 0, b)?);
        }
        self.busy(started);
        self.emit(out).await?;
        self.drain().await
    }

    /// Checkpoints the chain into epoch `b`'s contribution (with a source's position, if this
    /// task reads one), then forwards the barrier.
    pub async fn barrier(&mut self, b: Barrier, position: Option<SourcePosition>) -> Result<()> {
        self.barrier_aligned(b, position, Duration::ZERO).await
    }

    /// [`Chain::barrier`] for a barrier whose alignment took `alignment`.
    pub async fn barrier_aligned(
        &mut self,
        b: Barrier,
        position: Option<SourcePosition>,
        alignment: Duration,
    ) -> Result<()> {
        // What the operators held for the epoch's end goes out first, in chain order.
        for i in 0..self.ops.len() {
            let started = Instant::now();
            let held = blame(
                &mut self.failed,
                self.ops[i].name(),
                self.ops[i].on_barrier(),
            )?;
            if held.is_empty() {
                continue;
            }
            if let Some(m) = self.op(i) {
                m.count_out(held.iter().map(|b| b.num_rows()).sum());
            }
            let out = self.run_all(i + 1, 0, held)?;
            self.busy(started);
            self.emit(out).await?;
            self.drain().await?;
        }
        let started = Instant::now();
        let mut batch = StateBatch::new();
        let mut bytes = 0;
        let task = self.metrics.task(self.at.0, self.at.1);
        for (i, (op, scope)) in self.ops.iter_mut().zip(&self.scopes).enumerate() {
            blame(
                &mut self.failed,
                op.name(),
                op.checkpoint(b.epoch, scope, &mut batch),
            )?;
            let op_bytes = op.state_bytes();
            bytes += op_bytes;
            if let Some(m) = task.and_then(|t| t.operators.get(i)) {
                m.state_bytes
                    .store(op_bytes as u64, std::sync::atomic::Ordering::Relaxed);
            }
        }
        if let Some(t) = task {
            t.aligned(alignment);
        }
        let late = std::mem::take(&mut self.late);
        if let Some(p) = &position {
            for (n, d) in std::mem::take(&mut self.dead).iter().enumerate() {
                let mut key = super::dead_prefix(self.shared.id);
                key.extend_from_slice(&b.epoch.to_be_bytes());
                key.extend_from_slice(&(p.index as u32).to_be_bytes());
                key.extend_from_slice(&(n as u32).to_be_bytes());
                batch.put(key, d.encode());
            }
        }
        self.shared
            .contribute(b.epoch, batch, position, bytes, late, alignment);
        self.busy(started);
        self.broadcast(|| Message::Barrier(b)).await
    }
}

/// How far a source has read: the last change-log sequence (an external source's progress and
/// resume state) and its watermark.
#[derive(Debug, Clone)]
pub struct SourcePosition {
    /// The source's index among the job's sources.
    pub index: usize,
    pub seq: u64,
    /// An external source's resume state (see [`super::graph::ExternalSource`]).
    pub state: Option<Arc<[u8]>>,
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
    /// See [`super::graph::Source::history`].
    pub history: bool,
    /// See [`super::JobConfig::backfill_chunk_rows`].
    pub chunk_rows: usize,
    /// The table's rows are stored in the order they came and never change (see
    /// [`super::backfill`]): its backfill moves the watermark on as it reads.
    pub arrival_order: bool,
    pub at: SourcePosition,
}

impl SourceReader {
    /// The largest watermark `batch`'s added rows give.
    pub(super) fn batch_watermark(&self, batch: &ChangeBatch) -> Result<Option<i64>> {
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
        Ok(batch
            .ops
            .iter()
            .enumerate()
            .filter(|(i, op)| op.is_add() && micros.is_valid(*i))
            .map(|(i, _)| micros.value(i))
            .max())
    }

    /// The largest watermark `batch`'s added rows give, if above the current one.
    fn advance(&mut self, batch: &ChangeBatch) -> Result<Option<i64>> {
        let max = self.batch_watermark(batch)?;
        Ok(self.raise(max))
    }

    /// Moves the watermark to `w` if that is forward; returns it then.
    pub(super) fn raise(&mut self, w: Option<i64>) -> Option<i64> {
        match w {
            Some(m) if self.at.watermark.is_none_or(|w| m > w) => {
                self.at.watermark = Some(m);
                Some(m)
            }
            _ => None,
        }
    }

    /// Where an idle source's watermark stands: the wall clock minus the idle timeout for
    /// processing time; otherwise `base` (the watermark when rows last came) plus the time since
    /// the timeout passed. `None` until the source has been idle that long.
    fn idle_watermark(&self, since: Instant, base: Option<i64>) -> Option<i64> {
        let timeout = self.idle_timeout?;
        let idle_for = since.elapsed().checked_sub(timeout)?;
        if self.processing_time {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            return Some(now.saturating_sub(timeout).as_micros() as i64);
        }
        Some(base?.saturating_add(idle_for.as_micros() as i64))
    }
}

/// The event time of an external source's splits (a topic's partitions): each split's watermark
/// is the largest its rows give; the source's is the smallest over the splits that are not idle
/// (no rows for the idle timeout), so that one empty partition does not hold every window open.
/// A split without rows yet holds the watermark back until it is idle. When every split is idle
/// the source is, and its watermark follows the wall clock ([`SourceReader::idle_watermark`]).
#[derive(Default)]
struct Splits {
    /// Per split: its watermark and when it last had rows (or was first seen).
    splits: std::collections::BTreeMap<u32, (Option<i64>, Instant)>,
    /// When any split last had rows (and the source's watermark then).
    last_rows: Option<(Instant, Option<i64>)>,
}

impl Splits {
    /// Makes sure every split in `splits` is known (a new one counts from now).
    fn track(&mut self, splits: &[u32], start: Option<i64>) {
        for &s in splits {
            self.splits.entry(s).or_insert((start, Instant::now()));
        }
    }

    fn rows(&mut self, split: u32, max: Option<i64>, start: Option<i64>) {
        let now = Instant::now();
        let entry = self.splits.entry(split).or_insert((start, now));
        entry.1 = now;
        if let Some(m) = max
            && entry.0.is_none_or(|w| m > w)
        {
            entry.0 = Some(m);
        }
    }

    /// The source's watermark by the rule above (`None`: it does not move now).
    fn watermark(&mut self, reader: &SourceReader) -> Option<i64> {
        let timeout = reader.idle_timeout;
        let active = |at: &Instant| timeout.is_none_or(|t| at.elapsed() < t);
        let mut any = false;
        let mut min: Option<i64> = None;
        for (w, at) in self.splits.values() {
            if !active(at) {
                continue;
            }
            any = true;
            let w = (*w)?;
            min = Some(min.map_or(w, |m| m.min(w)));
        }
        if any {
            return min;
        }
        // Every split idle: event time moves on from the furthest any split reached.
        let base = self.splits.values().filter_map(|(w, _)| *w).max();
        match self.last_rows {
            Some((since, _)) => reader.idle_watermark(since, base),
            None if reader.processing_time => reader.idle_watermark(Instant::now(), None),
            None => None,
        }
    }
}

/// Reads an external source (files, a topic) into `chain`, as [`source`] reads a change log:
/// every batch, then the watermark when it advances (per split, see [`Splits`]); a barrier with
/// the position reached whenever the committing task asks for one. Reading and decoding run on a
/// blocking thread. A bounded source read to its end sends the watermark `i64::MAX`, closing
/// every window, then only answers barriers.
pub async fn external_source(
    mut reader: SourceReader,
    external: Arc<dyn super::graph::ExternalSource>,
    mut barriers: mpsc::UnboundedReceiver<Barrier>,
    chain: &mut Chain,
) -> Result<()> {
    chain.start().await?;
    if let Some(w) = reader.at.watermark {
        chain.watermark(0, w).await?;
    }
    let (progress, state) = (reader.at.seq, reader.at.state.clone());
    let source = Arc::clone(&external);
    let opened = tokio::task::spawn_blocking(move || {
        source.open(progress, state.as_deref().unwrap_or_default())
    })
    .await
    .map_err(|e| EngineError::Internal(format!("source reader: {e}")))??;
    let mut input: Option<Box<dyn super::graph::ExternalReader>> = Some(opened);
    let mut splits = Splits::default();
    let mut finished = false;
    loop {
        while let Ok(b) = barriers.try_recv() {
            chain.barrier(b, Some(reader.at.clone())).await?;
        }
        if !finished && let Some(mut r) = input.take() {
            let (r, next, dead, status) = tokio::task::spawn_blocking(move || {
                let next = r.next().map(|n| {
                    let at = (r.progress(), r.state());
                    (n, at, r.finished(), r.splits(), r.trouble())
                });
                let dead = r.take_dead_letters();
                let status = r.split_status();
                (r, next, dead, status)
            })
            .await
            .map_err(|e| EngineError::Internal(format!("source reader: {e}")))?;
            input = Some(r);
            if let Some(m) = chain.metrics.sources.get(reader.at.index) {
                m.set_splits(status);
            }
            if !dead.is_empty() {
                chain.shared.count_dead(dead.len());
                let table = reader.table.name().to_string();
                chain.dead.extend(dead.into_iter().map(|d| DeadLetter {
                    table: table.clone(),
                    ..d
                }));
            }
            let (rows, (progress, state), done, split_ids, trouble) = next?;
            chain.shared.source_trouble(reader.at.index, trouble);
            let start = reader.at.watermark;
            splits.track(&split_ids, start);
            let had_rows = rows.is_some();
            let full = rows
                .as_ref()
                .is_some_and(|r| r.rows.num_rows() >= FULL_READ_ROWS);
            chain.shared.set_backlog(reader.at.index, full && !done);
            if let Some(rows) = rows {
                let batch = ChangeBatch::inserts(reader.table.complete(&rows.rows)?);
                chain.shared.count_in(reader.at.index, batch.num_rows());
                let max = reader.batch_watermark(&batch)?;
                splits.rows(rows.split, max, start);
                chain.push(0, batch).await?;
                reader.at.seq = progress.unwrap_or(rows.progress);
                splits.last_rows = Some((Instant::now(), reader.at.watermark));
                if let Some(w) = reader.raise(splits.watermark(&reader)) {
                    chain.watermark(0, w).await?;
                }
            } else {
                if let Some(p) = progress {
                    reader.at.seq = p;
                }
                if let Some(w) = reader.raise(splits.watermark(&reader)) {
                    chain.watermark(0, w).await?;
                }
            }
            // Every row the position covers has been pushed: it may go into the next barrier.
            if !state.is_empty() {
                reader.at.state = Some(Arc::from(state));
            }
            chain.shared.read_to(reader.at.index, reader.at.seq);
            if had_rows && !done {
                continue;
            }
            if done {
                // The end: the final watermark closes every window, and only then does the
                // position reach the source's end (past its last byte), which FLUSH waits for.
                finished = true;
                if reader.watermark_expr.is_some() && reader.at.watermark != Some(i64::MAX) {
                    reader.at.watermark = Some(i64::MAX);
                    chain.watermark(0, i64::MAX).await?;
                }
                let source = Arc::clone(&external);
                let end = tokio::task::spawn_blocking(move || source.end())
                    .await
                    .map_err(|e| EngineError::Internal(format!("source reader: {e}")))??;
                reader.at.seq = reader.at.seq.max(end);
                chain.shared.read_to(reader.at.index, reader.at.seq);
            }
        }
        if finished {
            match barriers.recv().await {
                Some(b) => chain.barrier(b, Some(reader.at.clone())).await?,
                None => return Ok(()),
            }
        } else {
            // Nothing to read just now (the reader has already waited a little for input).
            tokio::select! {
                b = barriers.recv() => match b {
                    Some(b) => chain.barrier(b, Some(reader.at.clone())).await?,
                    None => return Ok(()),
                },
                _ = tokio::time::sleep(EXTERNAL_POLL) => {}
            }
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
    let mut phase = super::backfill::Phase::of(reader.at.seq, reader.at.state.as_deref())?;
    if reader.history && phase == super::backfill::Phase::Snapshot(Default::default()) {
        // A new job that needs the table's past versions replays its log while it is whole.
        if table.trimmed() == 0 {
            phase = super::backfill::Phase::Log;
        }
    }
    reader.at.state = Some(phase.encode());
    chain.start().await?;
    if let Some(w) = reader.at.watermark {
        // Where event time stood at the checkpoint: operators that close windows need it again.
        chain.watermark(0, w).await?;
    }
    // When rows last came, and the watermark then: an idle source's watermark moves on from it.
    let mut last_rows = (Instant::now(), reader.at.watermark);
    let mut idle = tokio::time::interval(IDLE_TICK);
    idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Rows of the snapshot sent since the last barrier (see [`BACKFILL_EPOCH_CHUNKS`]).
    let mut unbarriered = 0usize;
    loop {
        while let Ok(b) = barriers.try_recv() {
            chain.barrier(b, Some(reader.at.clone())).await?;
            unbarriered = 0;
        }
        if let super::backfill::Phase::Snapshot(progress) = &mut phase {
            chain.shared.set_backlog(reader.at.index, true);
            let (done, rows) = super::backfill::step(&mut reader, progress, chain).await?;
            if done {
                phase = super::backfill::Phase::Log;
                chain.shared.read_to(reader.at.index, reader.at.seq);
                last_rows = (Instant::now(), reader.at.watermark);
                continue;
            }
            unbarriered += rows;
            if unbarriered >= reader.chunk_rows.max(1) * BACKFILL_EPOCH_CHUNKS {
                // Enough for one epoch: ask for a barrier and read on once it has passed.
                chain.shared.flush.notify_one();
                match barriers.recv().await {
                    Some(b) => chain.barrier(b, Some(reader.at.clone())).await?,
                    None => return Ok(()),
                }
                unbarriered = 0;
            }
            continue;
        }
        if table.is_closed() && table.last_seq() > reader.at.seq {
            // A dropped table's log is gone with it: nothing more can be read, and its readers
            // wait for their jobs to stop, as readers that are caught up do. (Reading on found no
            // entries and looped without yielding: two such jobs held both job threads, and every
            // job of the server stalled.)
            reader.at.seq = table.last_seq();
            chain.shared.read_to(reader.at.index, reader.at.seq);
            continue;
        }
        if table.last_seq() > reader.at.seq {
            let entries = table.changes_after(None, reader.at.seq, READ_ENTRIES)?;
            if entries.is_empty() && !table.is_closed() {
                return Err(EngineError::Corrupt(format!(
                    "the change log of \"{}\" ends before its last change {} (read up to {})",
                    table.name(),
                    table.last_seq(),
                    reader.at.seq
                )));
            }
            let full = entries.len() >= READ_ENTRIES;
            for (seq, batch) in entries {
                chain.shared.count_in(reader.at.index, batch.num_rows());
                let advanced = reader.advance(&batch)?;
                chain.push(0, batch).await?;
                reader.at.seq = seq;
                chain.shared.read_to(reader.at.index, seq);
                if let Some(w) = advanced {
                    chain.watermark(0, w).await?;
                }
            }
            last_rows = (Instant::now(), reader.at.watermark);
            chain
                .shared
                .set_backlog(reader.at.index, full && table.last_seq() > reader.at.seq);
            continue;
        }
        chain.shared.set_backlog(reader.at.index, false);
        tokio::select! {
            b = barriers.recv() => match b {
                Some(b) => chain.barrier(b, Some(reader.at.clone())).await?,
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
                if let Some(w) = reader.idle_watermark(since, base)
                    && let Some(w) = reader.raise(Some(w))
                {
                    chain.watermark(0, w).await?;
                }
            }
        }
    }
}

/// Snapshot chunks a backfilling source sends in one epoch at most: it then asks for a barrier
/// and waits for it. Epochs come a second apart while a source catches up, and a source reads a
/// snapshot far faster than an aggregate over millions of groups checkpoints it: without a bound,
/// one epoch held the whole backfill (a 2 GB write batch, 10 GB of memory, and a write-ahead log
/// that took 11 s to replay after a crash).
const BACKFILL_EPOCH_CHUNKS: usize = 32;

/// Runs `chain` over the merged `inputs` until they close.
pub async fn merge(mut inputs: Inputs, chain: &mut Chain) -> Result<()> {
    chain.start().await?;
    while let Some((input, msg)) = inputs.next().await? {
        match msg {
            Message::Batch(b) => chain.push(input, b).await?,
            Message::Watermark(w) => chain.watermark(input, w).await?,
            Message::Barrier(b) => {
                let alignment = inputs.last_alignment();
                chain.barrier_aligned(b, None, alignment).await?
            }
        }
    }
    Ok(())
}
