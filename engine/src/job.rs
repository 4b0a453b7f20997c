//! Streaming jobs: one per materialized view, reading a source's change log and keeping the view's
//! rows up to date.
//!
//! A job is a task that loops over epochs. Each epoch reads the change-log entries committed since
//! its position (at most [`EPOCH_ENTRIES`]), pushes them through its operators in order, and
//! commits in **one synced RocksDB write batch**: the view's changed rows and its own change-log
//! entry, every operator's changed state, and the new source position. A crash therefore loses
//! either a whole epoch or nothing; on restart the job resumes from the last committed position
//! with the state that matches it, so every change is counted exactly once. Readers of the view see
//! whole epochs only, since an epoch is one atomic write.
//!
//! The source position is a table change-log sequence number, as a Kafka offset would be. A new
//! view starts at position 0, so replaying the source's log from its first entry is its backfill.
//!
//! A job that fails (an expression error on some row, say) stops and keeps its error; waiting on
//! it reports the error instead of hanging.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

use datafusion::arrow::array::{Int64Array, UInt32Array};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::changelog::{ChangeBatch, Op};
use crate::operator::Operator;
use crate::state::{StateBatch, StateStore};
use crate::table::TableStore;
use crate::task::{TaskHandle, spawn_named};
use crate::{EngineError, Result};

/// Change-log entries one epoch reads at most.
pub const EPOCH_ENTRIES: usize = 64;

const TAG: u8 = b'J';

/// The key prefix of everything job `id` stores.
pub fn job_prefix(id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(10);
    k.push(TAG);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The key prefix of operator `index`'s state in job `id`.
pub fn operator_prefix(id: u64, index: usize) -> Vec<u8> {
    let mut k = job_prefix(id);
    k.push(b's');
    k.extend_from_slice(&(index as u32).to_be_bytes());
    k
}

fn position_key(id: u64) -> Vec<u8> {
    let mut k = job_prefix(id);
    k.push(b'p');
    k
}

/// Adds the removal of all of job `id`'s state to `batch`.
pub fn drop_state(batch: &mut StateBatch, id: u64) {
    batch.delete_prefix(&job_prefix(id));
}

/// What a job is made of.
pub struct JobSpec {
    /// Unique id (the view's id); keys the job's state.
    pub id: u64,
    /// The view's name, for logs and errors.
    pub name: String,
    pub store: StateStore,
    pub source: Arc<TableStore>,
    /// Applied in order to every source batch.
    pub operators: Vec<Box<dyn Operator>>,
    /// Where the result rows go.
    pub sink: Arc<TableStore>,
    /// The view has no key: the last column of its rows counts identical rows, and its change log
    /// carries one insert or delete per row instance (count column 1) for views reading it.
    pub counted: bool,
}

/// A running job. Dropping it stops the job.
pub struct Job {
    name: String,
    source: Arc<TableStore>,
    progress: watch::Receiver<u64>,
    failure: Arc<Mutex<Option<String>>>,
    _task: TaskHandle<()>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("name", &self.name).finish()
    }
}

struct Runner {
    id: u64,
    source: Arc<TableStore>,
    operators: Vec<Box<dyn Operator>>,
    sink: Arc<TableStore>,
    counted: bool,
    position: u64,
    /// Output the operators had before any input, committed with the first epoch.
    pending: Vec<ChangeBatch>,
}

impl Job {
    /// Starts `spec` from its last committed position (0 for a new view).
    pub fn start(spec: JobSpec) -> Result<Job> {
        let position = match spec.store.get(&position_key(spec.id))? {
            Some(bytes) => u64::from_le_bytes(bytes.as_slice().try_into().map_err(|_| {
                EngineError::Corrupt(format!(
                    "job {}: position of {} bytes",
                    spec.id,
                    bytes.len()
                ))
            })?),
            None => 0,
        };
        let mut runner = Runner {
            id: spec.id,
            source: Arc::clone(&spec.source),
            operators: spec.operators,
            sink: spec.sink,
            counted: spec.counted,
            position,
            pending: Vec::new(),
        };
        runner.pending = runner.start_operators()?;
        let (progress_tx, progress) = watch::channel(position);
        let failure = Arc::new(Mutex::new(None));
        let task = spawn_named(
            format!("job-{}", spec.name),
            run(runner, progress_tx, Arc::clone(&failure), spec.name.clone()),
        );
        Ok(Job {
            name: spec.name,
            source: spec.source,
            progress,
            failure,
            _task: task,
        })
    }

    /// The table (or view) this job reads.
    pub fn source(&self) -> &Arc<TableStore> {
        &self.source
    }

    /// The last source position whose effects are committed.
    pub fn position(&self) -> u64 {
        *self.progress.borrow()
    }

    /// Returns when the job's task has ended (it failed, or its source is gone).
    pub async fn stopped(&self) {
        let mut progress = self.progress.clone();
        while progress.changed().await.is_ok() {}
    }

    /// The error the job stopped with, if it failed.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().clone()
    }

    /// Waits until the job has committed everything up to source position `seq`.
    pub async fn wait_for(&self, seq: u64) -> std::result::Result<(), String> {
        let mut progress = self.progress.clone();
        loop {
            if let Some(e) = self.failure.lock().clone() {
                return Err(format!("materialized view \"{}\" failed: {e}", self.name));
            }
            if *progress.borrow_and_update() >= seq {
                return Ok(());
            }
            if progress.changed().await.is_err() {
                let e = self
                    .failure
                    .lock()
                    .clone()
                    .unwrap_or_else(|| "stopped".into());
                return Err(format!("materialized view \"{}\" failed: {e}", self.name));
            }
        }
    }
}

async fn run(
    mut runner: Runner,
    progress: watch::Sender<u64>,
    failure: Arc<Mutex<Option<String>>>,
    name: String,
) {
    let mut committed = runner.source.subscribe();
    loop {
        if runner.source.last_seq() <= runner.position && runner.pending.is_empty() {
            if committed.changed().await.is_err() {
                return;
            }
            continue;
        }
        let outcome = tokio::task::spawn_blocking(move || {
            let result = runner.epoch();
            (runner, result)
        })
        .await;
        match outcome {
            Ok((r, Ok(()))) => {
                runner = r;
                progress.send_replace(runner.position);
            }
            Ok((_, Err(e))) => {
                tracing::error!(view = %name, error = %e, "streaming job failed");
                *failure.lock() = Some(e.to_string());
                return;
            }
            Err(e) => {
                tracing::error!(view = %name, error = %e, "streaming job panicked");
                *failure.lock() = Some("internal error (panic)".into());
                return;
            }
        }
    }
}

/// A counted view's changes (row, count) as changes of row instances: a new row with count `c` is
/// `c` inserts, an update from `c1` to `c2` is `|c2 - c1|` inserts or deletes. The count column of
/// the result is 1.
fn row_instances(changes: &ChangeBatch) -> Result<ChangeBatch> {
    let data = &changes.data;
    let last = data
        .num_columns()
        .checked_sub(1)
        .ok_or_else(|| EngineError::Internal("counted view rows without a count column".into()))?;
    let counts = data
        .column(last)
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| EngineError::Internal("count column is not BIGINT".into()))?;
    let mut take: Vec<u32> = Vec::new();
    let mut ops: Vec<Op> = Vec::new();
    let mut emit = |row: usize, n: i64, op: Op| {
        for _ in 0..n.max(0) {
            take.push(row as u32);
            ops.push(op);
        }
    };
    let mut i = 0;
    while i < changes.ops.len() {
        let c = counts.value(i);
        match changes.ops[i] {
            Op::UpdateBefore if changes.ops.get(i + 1) == Some(&Op::UpdateAfter) => {
                let after = counts.value(i + 1);
                if after >= c {
                    emit(i + 1, after - c, Op::Insert);
                } else {
                    emit(i, c - after, Op::Delete);
                }
                i += 2;
                continue;
            }
            op if op.is_add() => emit(i, c, Op::Insert),
            _ => emit(i, c, Op::Delete),
        }
        i += 1;
    }
    let indices = UInt32Array::from(take);
    let mut columns = data
        .columns()
        .iter()
        .map(|c| datafusion::arrow::compute::take(c.as_ref(), &indices, None))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    columns[last] = Arc::new(Int64Array::from(vec![1i64; indices.len()]));
    let options = RecordBatchOptions::new().with_row_count(Some(indices.len()));
    let data = RecordBatch::try_new_with_options(data.schema(), columns, &options)?;
    Ok(ChangeBatch { data, ops })
}

impl Runner {
    fn start_operators(&mut self) -> Result<Vec<ChangeBatch>> {
        let mut out = Vec::new();
        for i in 0..self.operators.len() {
            let started = self.operators[i].start()?;
            for batch in started {
                out.extend(self.push_from(i + 1, batch)?);
            }
        }
        Ok(out)
    }

    /// Runs `batch` through the operators from index `first` on.
    fn push_from(&mut self, first: usize, batch: ChangeBatch) -> Result<Vec<ChangeBatch>> {
        let mut batches = vec![batch];
        for op in self.operators.iter_mut().skip(first) {
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

    /// Processes one epoch and commits it.
    fn epoch(&mut self) -> Result<()> {
        let entries = self
            .source
            .changes_after(None, self.position, EPOCH_ENTRIES)?;
        let mut outputs = std::mem::take(&mut self.pending);
        let mut position = self.position;
        for (seq, batch) in entries {
            outputs.extend(self.push_from(0, batch)?);
            position = seq;
        }
        let mut write = StateBatch::new();
        for out in &outputs {
            self.sink.apply_changes(&mut write, out)?;
        }
        for op in &mut self.operators {
            op.checkpoint(&mut write)?;
        }
        write.put(position_key(self.id), position.to_le_bytes());
        if self.counted {
            let instances = outputs
                .iter()
                .map(row_instances)
                .collect::<Result<Vec<_>>>()?;
            self.sink.commit_epoch(write, &instances)?;
        } else {
            self.sink.commit_epoch(write, &outputs)?;
        }
        self.position = position;
        Ok(())
    }
}
