//! Streaming jobs: one per materialized view, keeping the view's rows up to date.
//!
//! A job is a graph of tasks ([`graph`]): one per source (a table's or view's change log) and one
//! per parallel instance of each stage, connected by bounded channels, plus the committing task
//! that owns the view. Batches, watermarks and barriers flow in-band ([`channel`]).
//!
//! **Epochs.** Every `barrier_interval` (or at once when `FLUSH` asks) the committing task injects
//! barrier `e` at every source. A source emits it after the rows it has read, recording its
//! position; every task, once the barrier has arrived on all its inputs, adds its operators'
//! changed state to epoch `e`'s contribution and forwards the barrier. When the committing task
//! has the barrier from every last-stage task, it writes **one RocksDB write batch**: the view's
//! changed rows and change-log entry, every operator's state and every source's position. Readers
//! of the view therefore see whole epochs only, and a crash loses whole epochs or nothing: on
//! restart every operator restores the state of the last committed epoch and every source replays
//! its change log from the position committed with it, so each change counts exactly once.
//! Epochs that changed nothing are not written.
//!
//! **Checkpoints.** Every `checkpoint_frequency`-th epoch is written with a synced WAL. The others
//! reach RocksDB's WAL unsynced: they survive a crash of the process (kill -9) but may be lost with
//! the machine, in which case recovery starts from an earlier epoch, consistently, since RocksDB
//! recovers a prefix of its writes.
//!
//! **Failure.** A task that fails (an expression error on some row, say, or a panic) stops the
//! whole job: its other tasks are aborted, the error is kept, and nothing of the failed epoch is
//! committed. Restarting is the caller's business (the server's restart strategy).

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, watch};

use datafusion::arrow::array::{Int64Array, UInt32Array};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::changelog::{ChangeBatch, Op};
use crate::keygroup::range_of;
use crate::operator::{LateRow, StateScope};
use crate::sink::{Sink, SinkStats};
use crate::state::{StateBatch, StateStore};
use crate::table::TableStore;
use crate::task::{TaskHandle, spawn_job_task};
use crate::{EngineError, Result};

/// Messages between tasks: batches, watermarks, barriers; merged inputs and partitioned outputs.
mod backfill;
pub mod channel;
/// The shape of a job: stages of chained operators and the edges between them.
pub mod graph;
/// What a running job's operators, tasks, sources and epochs have done.
pub mod metrics;
/// Savepoints: a job's committed state as a portable directory.
pub mod savepoint;
/// The tasks that run sources and stages.
mod stage;

use channel::{Barrier, Inputs, Message, Output};
use graph::{JobGraph, StageInput};
use metrics::{EpochRecord, JobMetrics, StageInputInfo};

const TAG: u8 = b'J';

/// The key prefix of everything job `id` stores.
pub fn job_prefix(id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(10);
    k.push(TAG);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn stage_prefix(id: u64, stage: usize, op: usize) -> Vec<u8> {
    let mut k = job_prefix(id);
    k.push(b's');
    k.extend_from_slice(&(stage as u32).to_be_bytes());
    k.extend_from_slice(&(op as u32).to_be_bytes());
    k
}

/// The prefix of state table `table` of job `id`.
fn state_table_prefix(id: u64, table: u32) -> Vec<u8> {
    let mut k = job_prefix(id);
    k.push(b't');
    k.extend_from_slice(&table.to_be_bytes());
    k
}

fn position_key(id: u64, source: usize) -> Vec<u8> {
    let mut k = job_prefix(id);
    k.push(b'p');
    k.extend_from_slice(&(source as u32).to_be_bytes());
    k
}

/// An external source's resume state (see [`graph::ExternalSource`]).
fn source_state_key(id: u64, source: usize) -> Vec<u8> {
    let mut k = job_prefix(id);
    k.push(b'q');
    k.extend_from_slice(&(source as u32).to_be_bytes());
    k
}

fn watermark_key(id: u64, source: usize) -> Vec<u8> {
    let mut k = job_prefix(id);
    k.push(b'w');
    k.extend_from_slice(&(source as u32).to_be_bytes());
    k
}

/// The prefix of job `id`'s late rows, keyed by epoch and position in the epoch.
pub fn late_prefix(id: u64) -> Vec<u8> {
    let mut k = job_prefix(id);
    k.push(b'l');
    k
}

/// The prefix of job `id`'s dead letters, keyed by epoch, source and position in the epoch.
pub fn dead_prefix(id: u64) -> Vec<u8> {
    let mut k = job_prefix(id);
    k.push(b'x');
    k
}

/// The dead letters job `id` has kept, oldest first.
pub fn dead_letters(store: &StateStore, id: u64) -> Result<Vec<crate::operator::DeadLetter>> {
    let mut out = Vec::new();
    store.scan_prefix(None, &dead_prefix(id), None, |_, v| {
        out.push(
            crate::operator::DeadLetter::decode(v)
                .ok_or_else(|| EngineError::Corrupt(format!("job {id}: dead letter")))?,
        );
        Ok(std::ops::ControlFlow::Continue(()))
    })?;
    Ok(out)
}

/// The late rows job `id` has kept, oldest first.
pub fn late_rows(store: &StateStore, id: u64) -> Result<Vec<LateRow>> {
    let mut out = Vec::new();
    store.scan_prefix(None, &late_prefix(id), None, |_, v| {
        out.push(
            LateRow::decode(v)
                .ok_or_else(|| EngineError::Corrupt(format!("job {id}: late row")))?,
        );
        Ok(std::ops::ControlFlow::Continue(()))
    })?;
    Ok(out)
}

fn epoch_key(id: u64) -> Vec<u8> {
    let mut k = job_prefix(id);
    k.push(b'e');
    k
}

/// What the sink's pre-commit of the last committed epoch recorded (see [`Sink::recover`]).
fn sink_state_key(id: u64) -> Vec<u8> {
    let mut k = job_prefix(id);
    k.push(b'k');
    k
}

/// Whether job `id` has operator state stored by plan position (a view created before state
/// table ids were stored with views).
pub fn has_positional_state(store: &StateStore, id: u64) -> Result<bool> {
    let mut prefix = job_prefix(id);
    prefix.push(b's');
    let mut found = false;
    store.scan_prefix(None, &prefix, None, |_, _| {
        found = true;
        Ok(std::ops::ControlFlow::Break(()))
    })?;
    Ok(found)
}

/// Adds the removal of all of job `id`'s state to `batch`.
pub fn drop_state(batch: &mut StateBatch, id: u64) {
    batch.delete_prefix(&job_prefix(id));
}

/// How a job paces its epochs.
#[derive(Debug, Clone, Copy)]
pub struct JobConfig {
    /// Time between barriers: how stale a view may be while its sources change.
    pub barrier_interval: Duration,
    /// Every this many epochs, the commit is synced to disk.
    pub checkpoint_frequency: u64,
    /// Barriers injected but not yet committed, at most.
    pub max_in_flight: usize,
    /// Messages each channel buffers before its sender waits.
    pub channel_capacity: usize,
    /// Bytes of clean state each operator instance's state tables may cache.
    pub state_cache_bytes: usize,
    /// Rows a new job's table source reads per snapshot chunk during its backfill (see
    /// `backfill`): between chunks it checkpoints and takes in the changes made meanwhile.
    pub backfill_chunk_rows: usize,
}

impl Default for JobConfig {
    fn default() -> Self {
        Self {
            barrier_interval: Duration::from_millis(100),
            checkpoint_frequency: 10,
            max_in_flight: 4,
            channel_capacity: 16,
            state_cache_bytes: crate::state::table::DEFAULT_CACHE_BYTES,
            backfill_chunk_rows: 8192,
        }
    }
}

/// A task's input channel and the input (edge) of its stage it belongs to.
type InputChannel = (usize, mpsc::Receiver<Message>);

/// What a job is made of.
pub struct JobSpec {
    /// Unique id (the view's id); keys the job's state.
    pub id: u64,
    /// The view's name, for logs and errors.
    pub name: String,
    pub store: StateStore,
    pub graph: JobGraph,
    /// Where the result changes go: the view's rows ([`crate::sink::ViewSink`]) or a sink.
    pub sink: Box<dyn Sink>,
    pub config: JobConfig,
}

/// Figures about a running job, for `SHOW JOBS`.
#[derive(Debug, Clone, Default)]
pub struct JobStats {
    /// The last committed epoch.
    pub epoch: u64,
    /// The last epoch committed with a synced write, and when.
    pub checkpoint_epoch: u64,
    pub checkpoint_at: Option<SystemTime>,
    /// Source rows read and view changes written since the job started.
    pub rows_in: u64,
    pub rows_out: u64,
    /// Bytes of operator state in the store, as of the last epoch.
    pub state_bytes: u64,
    /// Rows set aside as late since the job started.
    pub late_rows: u64,
    /// Source records that could not be decoded since the job started (kept as dead letters).
    pub dead_letters: u64,
    /// What a source is retrying, if anything (a broker that is down), with its source index.
    pub source_error: Option<String>,
    pub parallelism: usize,
    /// What the job's sink has done.
    pub sink: SinkStats,
    /// What the sink is retrying, if anything (a broker that is down).
    pub sink_error: Option<String>,
}

/// An external source and a resume state an epoch has just committed for it.
type Committed = (Arc<dyn graph::ExternalSource>, Arc<[u8]>);

/// What the job has committed: the epoch and each source's position.
#[derive(Debug, Clone, Default)]
struct Progress {
    positions: Vec<u64>,
    /// Per source: still reading its table's current rows (see `backfill`).
    backfilling: Vec<bool>,
}

/// One epoch's state from the tasks that have passed its barrier.
#[derive(Default)]
struct Contribution {
    batch: StateBatch,
    positions: Vec<(usize, u64)>,
    states: Vec<(usize, Arc<[u8]>)>,
    watermarks: Vec<(usize, i64)>,
    late: Vec<LateRow>,
    state_bytes: usize,
    parts: usize,
    /// The longest barrier alignment among the tasks.
    alignment: Duration,
}

/// Why a job failed.
struct Failure {
    /// The error, naming the operator that returned it.
    message: String,
    /// It was an [`EngineError::NumericOverflow`].
    overflow: bool,
}

/// What the tasks of a job share.
pub(crate) struct Shared {
    id: u64,
    name: String,
    epochs: Mutex<BTreeMap<u64, Contribution>>,
    failure: Mutex<Option<Failure>>,
    stopped: watch::Sender<bool>,
    flush: Notify,
    /// Set by [`Job::stop`]: the next barrier is a synced checkpoint, and the job ends once it
    /// has committed it.
    stop: watch::Sender<bool>,
    /// Per source: the position its task has read up to (committed or not), for FLUSH.
    read: Vec<AtomicU64>,
    /// Per source: its last read was full, so more input is waiting (a backfill, or a job that
    /// falls behind): barriers come further apart meanwhile (see [`CATCH_UP_INTERVAL`]).
    backlog: Vec<std::sync::atomic::AtomicBool>,
    rows_in: AtomicU64,
    rows_out: AtomicU64,
    dead_letters: AtomicU64,
    stats: Mutex<JobStats>,
    /// Set when the job is being dropped: errors of tasks torn down with it are not failures.
    dropping: std::sync::atomic::AtomicBool,
    /// Set by [`Job::halt`] under the sink's lock: a commit that takes the lock after it writes
    /// nothing.
    halted: std::sync::atomic::AtomicBool,
    /// The last epoch whose writes are in the store (operators' state tables read it).
    committed: Arc<AtomicU64>,
    /// The figures of the job's operators, tasks, sources and epochs.
    metrics: Arc<JobMetrics>,
}

/// How often FLUSH looks whether the sources have read up to its targets.
const FLUSH_POLL: Duration = Duration::from_millis(5);

/// Time between barriers while a source has input waiting (at least the barrier interval). A
/// backfill, or a job that fell behind, commits every second instead of every 100 ms: its view
/// is behind anyway, and each epoch rewrites every row and group it touched, so fewer epochs
/// let it catch up sooner. Once its sources wait for input, barriers come at their interval.
const CATCH_UP_INTERVAL: Duration = Duration::from_secs(1);

impl Shared {
    /// Counts records a source could not decode.
    pub(crate) fn count_dead(&self, n: usize) {
        self.dead_letters.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Source `index` has more input waiting (its last read was full), or not.
    pub(crate) fn set_backlog(&self, index: usize, backlog: bool) {
        if let Some(b) = self.backlog.get(index) {
            b.store(backlog, Ordering::Relaxed);
        }
    }

    /// Whether a source has input waiting.
    fn catching_up(&self) -> bool {
        self.backlog.iter().any(|b| b.load(Ordering::Relaxed))
    }

    /// Notes that source `index` has read up to `position`.
    pub(crate) fn read_to(&self, index: usize, position: u64) {
        if let Some(r) = self.read.get(index) {
            r.store(position, Ordering::Relaxed);
        }
        if let Some(s) = self.metrics.sources.get(index) {
            s.position.store(position, Ordering::Relaxed);
        }
    }

    /// Notes what source `index` is retrying (`None`: nothing, it reads).
    pub(crate) fn source_trouble(&self, index: usize, trouble: Option<String>) {
        let mut stats = self.stats.lock();
        match trouble {
            Some(t) => stats.source_error = Some(format!("source {index}: {t}")),
            None => {
                let prefix = format!("source {index}: ");
                if stats
                    .source_error
                    .as_ref()
                    .is_some_and(|e| e.starts_with(&prefix))
                {
                    stats.source_error = None;
                }
            }
        }
    }

    /// Adds a task's part of epoch `epoch`.
    fn contribute(
        &self,
        epoch: u64,
        batch: StateBatch,
        position: Option<stage::SourcePosition>,
        bytes: usize,
        late: Vec<LateRow>,
        alignment: Duration,
    ) {
        let mut epochs = self.epochs.lock();
        let c = epochs.entry(epoch).or_default();
        c.batch.merge_disjoint(batch);
        c.late.extend(late);
        if let Some(p) = position {
            c.positions.push((p.index, p.seq));
            c.states.extend(p.state.map(|s| (p.index, s)));
            c.watermarks.extend(p.watermark.map(|w| (p.index, w)));
        }
        c.state_bytes += bytes;
        c.parts += 1;
        c.alignment = c.alignment.max(alignment);
    }

    /// Counts rows source `index` read.
    fn count_in(&self, index: usize, rows: usize) {
        self.rows_in.fetch_add(rows as u64, Ordering::Relaxed);
        if let Some(s) = self
            .metrics
            .sources
            .get(index)
            .filter(|_| metrics::recording())
        {
            s.read(rows);
        }
    }

    /// An error if the job was halted ([`Job::halt`]): a commit must then write nothing. Call
    /// with the sink's lock held.
    fn check_not_halted(&self) -> Result<()> {
        match self.halted.load(Ordering::Acquire) {
            true => Err(EngineError::Internal(format!(
                "job {} halted: its relation is being dropped",
                self.name
            ))),
            false => Ok(()),
        }
    }

    /// Fails the job: task `task` failed with `error`, in `operator` if one of its operators
    /// returned it (named in the log line and, unless the error names it already, the message).
    fn fail(&self, task: &str, operator: Option<&str>, error: &EngineError) {
        if self.dropping.load(Ordering::Acquire) {
            return;
        }
        let mut failure = self.failure.lock();
        if failure.is_none() {
            let overflow = matches!(error, EngineError::NumericOverflow);
            let error = error.to_string();
            let error = match operator {
                Some(op) if !error.starts_with(op) => format!("{op}: {error}"),
                _ => error,
            };
            match operator {
                Some(operator) => {
                    tracing::error!(view = %self.name, task, operator, %error, "streaming job failed")
                }
                None => tracing::error!(view = %self.name, task, %error, "streaming job failed"),
            }
            *failure = Some(Failure {
                message: error,
                overflow,
            });
            // The epochs in flight are lost with the job: failed checkpoints.
            let open = self.epochs.lock().len().max(1) as u64;
            self.metrics
                .failed_epochs
                .fetch_add(open, Ordering::Relaxed);
        }
        drop(failure);
        self.stopped.send_replace(true);
    }
}

/// A running job. Dropping it stops the job.
pub struct Job {
    name: String,
    /// The committing task's sink: held by each commit while it writes ([`Job::halt`]).
    sink: Arc<Mutex<Box<dyn Sink>>>,
    sink_trouble: Option<crate::sink::Trouble>,
    sources: Vec<Arc<TableStore>>,
    /// Per source: its external input, if it reads one (FLUSH waits for its end).
    externals: Vec<Option<Arc<dyn graph::ExternalSource>>>,
    shared: Arc<Shared>,
    progress: watch::Receiver<Progress>,
    /// Per source, the committed position the job started from.
    start_positions: Vec<u64>,
    /// The committed epoch the job started from.
    start_epoch: u64,
    _watchdog: TaskHandle<()>,
}

impl Drop for Job {
    fn drop(&mut self) {
        self.shared.dropping.store(true, Ordering::Release);
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("name", &self.name).finish()
    }
}

/// Spawns `fut` as one of the job's tasks: its error or panic fails the job.
fn spawn_task(
    shared: &Arc<Shared>,
    name: String,
    fut: impl Future<Output = Result<()>> + Send + 'static,
) -> TaskHandle<()> {
    let shared = Arc::clone(shared);
    spawn_job_task(name.clone(), async move {
        match AssertUnwindSafe(fut).catch_unwind().await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => shared.fail(&name, None, &e),
            Err(_) => shared.fail(&name, None, &EngineError::Internal("panic".into())),
        }
    })
}

fn read_u64(store: &StateStore, key: &[u8], id: u64) -> Result<u64> {
    match store.get(key)? {
        Some(bytes) => Ok(u64::from_le_bytes(bytes.as_slice().try_into().map_err(
            |_| EngineError::Corrupt(format!("job {id}: counter of {} bytes", bytes.len())),
        )?)),
        None => Ok(0),
    }
}

fn read_i64(store: &StateStore, key: &[u8], id: u64) -> Result<Option<i64>> {
    match store.get(key)? {
        Some(bytes) => Ok(Some(i64::from_le_bytes(
            bytes.as_slice().try_into().map_err(|_| {
                EngineError::Corrupt(format!("job {id}: watermark of {} bytes", bytes.len()))
            })?,
        ))),
        None => Ok(None),
    }
}

/// The committing task's fixed parts.
struct Committer {
    id: u64,
    shared: Arc<Shared>,
    store: StateStore,
    /// Taken by the blocking thread that commits an epoch, and given back.
    sink: Arc<Mutex<Box<dyn Sink>>>,
    tasks: usize,
    config: JobConfig,
    sources: Vec<mpsc::UnboundedSender<Barrier>>,
    /// Per source: its external input, told of each synced checkpoint's position.
    externals: Vec<Option<Arc<dyn graph::ExternalSource>>>,
    progress: watch::Sender<Progress>,
}

impl Job {
    /// Starts `spec` from its last committed epoch (a new view's table sources first read their
    /// tables' current rows, then follow the change logs: see `backfill`).
    pub fn start(spec: JobSpec) -> Result<Job> {
        let JobSpec {
            id,
            name,
            store,
            graph,
            sink,
            config,
        } = spec;
        graph.validate()?;
        let sources = graph.sources();
        let externals: Vec<Option<Arc<dyn graph::ExternalSource>>> = graph
            .stages
            .iter()
            .filter_map(|s| match &s.input {
                StageInput::Source(s) => Some(s.external.clone()),
                StageInput::Merge(_) => None,
            })
            .collect();
        let positions = (0..sources.len())
            .map(|i| read_u64(&store, &position_key(id, i), id))
            .collect::<Result<Vec<_>>>()?;
        let states = (0..sources.len())
            .map(|i| store.get(&source_state_key(id, i)))
            .collect::<Result<Vec<_>>>()?;
        let backfilling: Vec<bool> = (0..sources.len())
            .map(|i| {
                externals.get(i).is_some_and(|e| e.is_none())
                    && backfill::in_snapshot(positions[i], states[i].as_deref())
            })
            .collect();
        let start_positions = positions.clone();
        let epoch = read_u64(&store, &epoch_key(id), id)?;
        let (stopped, _) = watch::channel(false);
        let committed = Arc::new(AtomicU64::new(epoch));
        let metrics = Arc::new(JobMetrics::new(
            stage_infos(&graph),
            graph.state_ids.as_deref(),
            sources.iter().map(|s| s.name().to_string()).collect(),
        ));
        for (s, p) in metrics.sources.iter().zip(&positions) {
            s.position.store(*p, Ordering::Relaxed);
        }
        let shared = Arc::new(Shared {
            id,
            name: name.clone(),
            epochs: Mutex::new(BTreeMap::new()),
            failure: Mutex::new(None),
            stopped,
            flush: Notify::new(),
            stop: watch::channel(false).0,
            // A source reading its table's rows has read nothing of its log yet.
            read: positions
                .iter()
                .zip(&backfilling)
                .map(|(&p, &b)| AtomicU64::new(if b { 0 } else { p }))
                .collect(),
            backlog: positions
                .iter()
                .map(|_| std::sync::atomic::AtomicBool::new(false))
                .collect(),
            rows_in: AtomicU64::new(0),
            rows_out: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            dropping: std::sync::atomic::AtomicBool::new(false),
            halted: std::sync::atomic::AtomicBool::new(false),
            committed: Arc::clone(&committed),
            metrics,
            stats: Mutex::new(JobStats {
                epoch,
                checkpoint_epoch: epoch,
                parallelism: graph.parallelism(),
                sink: SinkStats {
                    committed_epoch: epoch,
                    ..sink.stats()
                },
                ..JobStats::default()
            }),
        });
        let (progress_tx, progress) = watch::channel(Progress {
            positions: positions.clone(),
            backfilling,
        });
        let cap = config.channel_capacity.max(1);
        let tasks = graph.tasks();
        let stages = graph.stages;
        let state_ids = graph.state_ids;
        let n = stages.len();

        // Channels: inputs[s][j] receives what stage s instance j reads, each channel with the
        // input (edge) it belongs to; targets[f][k] are the senders of stage f instance k towards
        // its reader's instances.
        let mut inputs: Vec<Vec<Vec<InputChannel>>> = stages
            .iter()
            .map(|s| (0..s.parallelism).map(|_| Vec::new()).collect())
            .collect();
        let mut targets: Vec<Vec<Vec<mpsc::Sender<Message>>>> = stages
            .iter()
            .map(|s| (0..s.parallelism).map(|_| Vec::new()).collect())
            .collect();
        let mut out_keys: Vec<Option<Vec<usize>>> = vec![None; n];
        for (r, stage) in stages.iter().enumerate() {
            if let StageInput::Merge(edges) = &stage.input {
                for instance_inputs in inputs[r].iter_mut() {
                    for (input, edge) in edges.iter().enumerate() {
                        for &f in &edge.from {
                            out_keys[f] = edge.keys.clone();
                            for upstream in targets[f].iter_mut() {
                                let (tx, rx) = mpsc::channel(cap);
                                instance_inputs.push((input, rx));
                                upstream.push(tx);
                            }
                        }
                    }
                }
            }
        }
        let mut last_inputs = Vec::new();
        for upstream in targets[n - 1].iter_mut() {
            let (tx, rx) = mpsc::channel(cap);
            last_inputs.push(rx);
            upstream.push(tx);
        }

        let mut handles = Vec::with_capacity(tasks + 1);
        let mut barrier_txs = Vec::new();
        let mut source_index = 0;
        for (s, (stage, (stage_inputs, stage_targets))) in stages
            .into_iter()
            .zip(inputs.into_iter().zip(targets))
            .enumerate()
        {
            let p = stage.parallelism;
            for (j, (rx, tx)) in stage_inputs.into_iter().zip(stage_targets).enumerate() {
                let output = match &out_keys[s] {
                    Some(keys) => Output::Hash {
                        keys: keys.clone(),
                        targets: tx,
                        groups: Vec::new(),
                    },
                    None => Output::One(tx.into_iter().next().ok_or_else(|| {
                        EngineError::Internal(format!("stage {s} has no downstream"))
                    })?),
                };
                let ops = stage
                    .operators
                    .iter()
                    .map(|o| o.fork())
                    .collect::<Result<Vec<_>>>()?;
                let scopes = (0..ops.len())
                    .map(|o| StateScope {
                        store: store.clone(),
                        prefix: match &state_ids {
                            Some(ids) => state_table_prefix(
                                id,
                                ids.get(s).and_then(|ops| ops.get(o)).copied().unwrap_or(0),
                            ),
                            None => stage_prefix(id, s, o),
                        },
                        key_groups: range_of(j, p),
                        committed: Arc::clone(&committed),
                        cache_bytes: config.state_cache_bytes,
                        figures: shared
                            .metrics
                            .task(s, j)
                            .and_then(|t| t.operators.get(o))
                            .map(|m| Arc::clone(&m.state))
                            .unwrap_or_default(),
                    })
                    .collect();
                let chain = stage::Chain::new(
                    ops,
                    scopes,
                    output,
                    Arc::clone(&shared),
                    stage.input.inputs(),
                    (s, j),
                );
                let task = format!("{name}/stage{s}.{j}");
                match &stage.input {
                    StageInput::Source(source) => {
                        let (btx, brx) = mpsc::unbounded_channel();
                        barrier_txs.push(btx);
                        let i = source_index;
                        let reader = stage::SourceReader {
                            table: Arc::clone(&source.table),
                            watermark_expr: source.watermark.clone(),
                            idle_timeout: source.idle_timeout,
                            processing_time: source.processing_time,
                            history: source.history,
                            chunk_rows: config.backfill_chunk_rows.max(1),
                            arrival_order: source.append_only
                                && source.table.keys_in_arrival_order(),
                            at: stage::SourcePosition {
                                index: i,
                                seq: positions[i],
                                state: states[i].as_deref().map(Arc::from),
                                watermark: read_i64(&store, &watermark_key(id, i), id)?,
                            },
                        };
                        let external = source.external.clone();
                        handles.push(spawn_task(&shared, task.clone(), async move {
                            let mut chain = chain.restore().await?;
                            let r = match external {
                                Some(e) => stage::external_source(reader, e, brx, &mut chain).await,
                                None => stage::source(reader, brx, &mut chain).await,
                            };
                            chain.report(&task, r)
                        }));
                        source_index += 1;
                    }
                    StageInput::Merge(_) => {
                        let inputs = Inputs::with_inputs(rx);
                        handles.push(spawn_task(&shared, task.clone(), async move {
                            let mut chain = chain.restore().await?;
                            let r = stage::merge(inputs, &mut chain).await;
                            chain.report(&task, r)
                        }));
                    }
                }
            }
        }
        let recorded = store.get(&sink_state_key(id))?;
        let sink_trouble = sink.trouble();
        let sink = Arc::new(Mutex::new(sink));
        let committer = Committer {
            id,
            shared: Arc::clone(&shared),
            store: store.clone(),
            sink: Arc::clone(&sink),
            tasks,
            config,
            sources: barrier_txs,
            externals: externals.clone(),
            progress: progress_tx,
        };
        let done = Arc::clone(&shared);
        handles.push(spawn_task(&shared, format!("{name}/commit"), async move {
            committer.recover(epoch, recorded).await?;
            committer
                .run(Inputs::new(last_inputs), epoch, positions)
                .await?;
            done.stopped.send_replace(true);
            Ok(())
        }));
        // Once the job stops, its remaining tasks are aborted (dropping their handles).
        let mut stopped = shared.stopped.subscribe();
        let watchdog = spawn_job_task(format!("{name}/watchdog"), async move {
            let _tasks = handles;
            let _ = stopped.wait_for(|s| *s).await;
        });
        Ok(Job {
            name,
            sink,
            sink_trouble,
            sources,
            externals,
            shared,
            progress,
            start_positions,
            start_epoch: epoch,
            _watchdog: watchdog,
        })
    }

    /// The tables (or views) this job reads.
    pub fn sources(&self) -> &[Arc<TableStore>] {
        &self.sources
    }

    /// Per source, in source order: the table it reads (or that names it) and, for a source
    /// outside Rivulet's tables, what it is (see [`graph::ExternalSource::describe`]).
    pub fn source_kinds(&self) -> Vec<(Arc<TableStore>, Option<String>)> {
        self.sources
            .iter()
            .zip(&self.externals)
            .map(|(t, e)| (Arc::clone(t), e.as_ref().map(|e| e.describe())))
            .collect()
    }

    /// The figures of the job's operators, tasks, sources and epochs.
    pub fn metrics(&self) -> &Arc<JobMetrics> {
        &self.shared.metrics
    }

    /// The job's name (its view's or sink's).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Figures for `SHOW JOBS`.
    pub fn stats(&self) -> JobStats {
        let mut s = self.shared.stats.lock().clone();
        s.rows_in = self.shared.rows_in.load(Ordering::Relaxed);
        s.rows_out = self.shared.rows_out.load(Ordering::Relaxed);
        s.dead_letters = self.shared.dead_letters.load(Ordering::Relaxed);
        s.sink_error = self.sink_trouble.as_ref().and_then(|t| t.lock().clone());
        s
    }

    /// Returns when the job has stopped (it failed, or its sources are gone).
    pub async fn stopped(&self) {
        let mut stopped = self.shared.stopped.subscribe();
        let _ = stopped.wait_for(|s| *s).await;
    }

    /// The error the job stopped with, if it failed.
    pub fn failure(&self) -> Option<String> {
        self.shared
            .failure
            .lock()
            .as_ref()
            .map(|f| f.message.clone())
    }

    /// Whether the job failed because a value left its type's range
    /// ([`EngineError::NumericOverflow`]), which a client hears of as Postgres' 22003.
    pub fn overflowed(&self) -> bool {
        self.shared
            .failure
            .lock()
            .as_ref()
            .is_some_and(|f| f.overflow)
    }

    /// Stops the job at a checkpoint: the next barrier goes out at once as a synced checkpoint,
    /// and the job ends once it has committed it, so a job started again from its state replays
    /// nothing the stopped one committed (a graceful shutdown, a rescale). Returns the last
    /// epoch, or the error the job failed with before that.
    pub async fn stop(&self) -> std::result::Result<u64, String> {
        self.shared.stop.send_replace(true);
        self.stopped().await;
        match self.failure() {
            Some(e) => Err(e),
            None => Ok(self.shared.committed.load(Ordering::Acquire)),
        }
    }

    /// Stops the job from writing anything more, at once, for a view or sink being dropped:
    /// returns once a commit under way has ended; a later one writes nothing (so the dropped
    /// relation's keys, deleted next, stay deleted). The job's tasks end as a dropped job's do.
    /// Blocks the calling thread for at most one commit.
    pub fn halt(&self) {
        self.shared.dropping.store(true, Ordering::Release);
        let _commits = self.sink.lock();
        self.shared.halted.store(true, Ordering::Release);
    }

    /// Waits until the job has committed everything each source had committed when the call
    /// began, asking for a barrier at once rather than at the next interval.
    pub async fn flush(&self) -> std::result::Result<(), String> {
        let targets = self.targets().await?;
        self.reach(&targets).await
    }

    /// Per source, the position that covers everything it holds now (what [`Job::flush`] waits
    /// for): a table's last committed change-log sequence, an external source's end.
    pub async fn targets(&self) -> std::result::Result<Vec<u64>, String> {
        let mut targets: Vec<u64> = Vec::with_capacity(self.sources.len());
        for (s, e) in self.sources.iter().zip(&self.externals) {
            targets.push(match e {
                Some(e) => {
                    // Asks a broker, perhaps: off the async workers.
                    let e = Arc::clone(e);
                    tokio::task::spawn_blocking(move || e.end())
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| e.to_string())?
                }
                None => s.last_seq(),
            });
        }
        Ok(targets)
    }

    /// Per source, the position the job started from (0 for a new job: its backfill).
    pub fn start_positions(&self) -> &[u64] {
        &self.start_positions
    }

    /// The committed epoch the job started from (0 for a new job).
    pub fn start_epoch(&self) -> u64 {
        self.start_epoch
    }

    /// Per source, the position of the last committed epoch.
    pub fn positions(&self) -> Vec<u64> {
        self.progress.borrow().positions.clone()
    }

    /// Per table (or view) the job reads through its change log: the sequence of the last entry
    /// it has committed (everything up to it can be trimmed as far as this job goes).
    pub fn log_positions(&self) -> Vec<(u64, u64)> {
        let positions = self.positions();
        self.sources
            .iter()
            .zip(&self.externals)
            .zip(positions)
            .filter(|((_, e), _)| e.is_none())
            .map(|((t, _), p)| (t.id(), p))
            .collect()
    }

    /// Per source, whether it still reads its table's current rows (a new job's backfill).
    pub fn backfilling(&self) -> Vec<bool> {
        self.progress.borrow().backfilling.clone()
    }

    /// Waits until the job has committed `targets` (see [`Job::targets`]), asking for a barrier
    /// as soon as its sources have read them.
    pub async fn reach(&self, targets: &[u64]) -> std::result::Result<(), String> {
        let mut progress = self.progress.clone();
        let mut stopped = self.shared.stopped.subscribe();
        loop {
            if let Some(e) = self.failure() {
                return Err(format!("materialized view \"{}\" failed: {e}", self.name));
            }
            let done = {
                let now = progress.borrow_and_update();
                now.positions.iter().zip(targets).all(|(p, t)| p >= t)
                    && !now.backfilling.iter().any(|b| *b)
            };
            if done {
                return Ok(());
            }
            // The failure, if any, is recorded before the job is marked stopped and before its
            // committing task (the progress sender) is gone: checked first, above.
            if *stopped.borrow_and_update() || progress.has_changed().is_err() {
                return Err(format!("materialized view \"{}\" stopped", self.name));
            }
            // Once every source has read up to its target, one barrier commits it; until then
            // barriers come at their interval (a barrier per commit would checkpoint all state
            // after every few rows of a long backfill).
            let read = self
                .shared
                .read
                .iter()
                .zip(targets)
                .all(|(r, t)| r.load(Ordering::Relaxed) >= *t);
            if read {
                self.shared.flush.notify_one();
            }
            tokio::select! {
                _ = progress.changed() => {}
                _ = stopped.changed() => {}
                _ = tokio::time::sleep(FLUSH_POLL), if !read => {}
            }
        }
    }
}

impl Committer {
    /// Lets the sink finish or undo what the last committed epoch left (see [`Sink::recover`]).
    async fn recover(&self, epoch: u64, recorded: Option<Vec<u8>>) -> Result<()> {
        let (sink, shared) = (Arc::clone(&self.sink), Arc::clone(&self.shared));
        let stats = tokio::task::spawn_blocking(move || -> Result<SinkStats> {
            let mut sink = sink.lock();
            shared.check_not_halted()?;
            sink.recover(epoch, recorded.as_deref())?;
            Ok(sink.stats())
        })
        .await
        .map_err(|e| EngineError::Internal(format!("sink recovery task: {e}")))??;
        self.shared.stats.lock().sink = stats;
        Ok(())
    }

    async fn run(self, mut inputs: Inputs, mut epoch: u64, positions: Vec<u64>) -> Result<()> {
        let mut ticker = tokio::time::interval(self.config.barrier_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut committed = positions;
        let mut outputs: Vec<ChangeBatch> = Vec::new();
        let mut in_flight = 0usize;
        // When each barrier in flight was injected, oldest first (they commit in order).
        let mut injected: std::collections::VecDeque<(u64, Instant, SystemTime)> =
            std::collections::VecDeque::new();
        // The first barrier goes out at once: it commits what the operators emit on start.
        let mut wanted = true;
        let catch_up = CATCH_UP_INTERVAL.max(self.config.barrier_interval);
        let mut last_barrier = Instant::now();
        let mut stop = self.shared.stop.subscribe();
        // The last epoch, once [`Job::stop`] asked for one: the job ends when it is committed.
        let mut last_epoch: Option<u64> = None;
        loop {
            let stopping = *stop.borrow_and_update();
            if (wanted || stopping)
                && last_epoch.is_none()
                && in_flight < self.config.max_in_flight.max(1)
            {
                last_barrier = Instant::now();
                epoch += 1;
                let frequency = self.config.checkpoint_frequency.max(1);
                let barrier = Barrier {
                    epoch,
                    checkpoint: stopping || epoch.is_multiple_of(frequency),
                };
                if stopping {
                    last_epoch = Some(epoch);
                }
                injected.push_back((epoch, Instant::now(), SystemTime::now()));
                for tx in &self.sources {
                    // A closed source has ended (its table is gone); the inputs will close too.
                    let _ = tx.send(barrier);
                }
                in_flight += 1;
                wanted = false;
            }
            tokio::select! {
                biased;
                // A barrier already wanted (FLUSH) stays wanted.
                _ = ticker.tick() => {
                    wanted |= !self.shared.catching_up() || last_barrier.elapsed() >= catch_up;
                }
                _ = self.shared.flush.notified() => wanted = true,
                _ = stop.changed(), if last_epoch.is_none() => {}
                msg = inputs.next() => match msg?.map(|(_, m)| m) {
                    None => return Ok(()),
                    Some(Message::Batch(b)) => outputs.push(b),
                    Some(Message::Watermark(_)) => {}
                    Some(Message::Barrier(b)) => {
                        let out = std::mem::take(&mut outputs);
                        let started = loop {
                            match injected.pop_front() {
                                Some((e, at, wall)) if e == b.epoch => break Some((at, wall)),
                                Some(_) => continue,
                                None => break None,
                            }
                        };
                        let last = last_epoch == Some(b.epoch);
                        committed = self.commit(b, out, committed, started, last).await?;
                        in_flight = in_flight.saturating_sub(1);
                        if last {
                            // What the tasks send after the last barrier is not wanted: their
                            // errors once the committer is gone are not failures.
                            self.shared.dropping.store(true, Ordering::Release);
                            return Ok(());
                        }
                    }
                },
            }
        }
    }

    /// Writes epoch `b` (when it changed anything, or is the `last` before the job stops: that
    /// one is written and synced in any case) and publishes the new positions.
    async fn commit(
        &self,
        b: Barrier,
        outputs: Vec<ChangeBatch>,
        committed: Vec<u64>,
        started: Option<(Instant, SystemTime)>,
        last: bool,
    ) -> Result<Vec<u64>> {
        let c = self
            .shared
            .epochs
            .lock()
            .remove(&b.epoch)
            .unwrap_or_default();
        if c.parts != self.tasks {
            return Err(EngineError::Internal(format!(
                "epoch {} has {} of {} task checkpoints",
                b.epoch, c.parts, self.tasks
            )));
        }
        let mut positions = committed.clone();
        for &(i, p) in &c.positions {
            if let Some(slot) = positions.get_mut(i) {
                *slot = p;
            }
        }
        let mut backfilling = self.progress.borrow().backfilling.clone();
        for (i, state) in &c.states {
            if self.externals.get(*i).is_some_and(|e| e.is_none())
                && let Some(b) = backfilling.get_mut(*i)
            {
                *b = backfill::in_snapshot(positions[*i], Some(state));
            }
        }
        let rows: usize = outputs.iter().map(|o| o.num_rows()).sum();
        let late_count = c.late.len() as u64;
        let changed =
            last || rows > 0 || !c.batch.is_empty() || positions != committed || !c.late.is_empty();
        let mut sink_stats = None;
        let alignment = c.alignment;
        let state_bytes = c.state_bytes as u64;
        let mut bytes = 0u64;
        if changed {
            let (id, store, sink) = (self.id, self.store.clone(), Arc::clone(&self.sink));
            let shared = Arc::clone(&self.shared);
            let keys = positions.clone();
            let watermarks = c.watermarks;
            let states = c.states;
            // Once the epoch holds them, external sources hear of their positions.
            let notify: Vec<Committed> = states
                .iter()
                .filter_map(|(i, s)| {
                    let e = self.externals.get(*i)?.as_ref()?;
                    Some((Arc::clone(e), Arc::clone(s)))
                })
                .collect();
            let late = c.late;
            let mut batch = c.batch;
            bytes = batch.bytes() as u64;
            let stats = tokio::task::spawn_blocking(move || -> Result<SinkStats> {
                let mut sink = sink.lock();
                shared.check_not_halted()?;
                for out in &outputs {
                    sink.write(b.epoch, out)?;
                }
                match sink.pre_commit(b.epoch, &mut batch)? {
                    Some(recorded) => batch.put(sink_state_key(id), recorded),
                    None => batch.delete(sink_state_key(id)),
                }
                for (i, p) in keys.iter().enumerate() {
                    batch.put(position_key(id, i), p.to_le_bytes());
                }
                for (i, w) in watermarks {
                    batch.put(watermark_key(id, i), w.to_le_bytes());
                }
                for (i, state) in states {
                    batch.put(source_state_key(id, i), &state[..]);
                }
                for (i, row) in late.iter().enumerate() {
                    let mut key = late_prefix(id);
                    key.extend_from_slice(&b.epoch.to_be_bytes());
                    key.extend_from_slice(&(i as u32).to_be_bytes());
                    batch.put(key, row.encode());
                }
                batch.put(epoch_key(id), b.epoch.to_le_bytes());
                // An external sink's commit cannot be taken back: the epoch it commits must
                // survive a power loss, not only a crash of the process.
                let durable = b.checkpoint || (rows > 0 && sink.external());
                sink.checkpoint(&store, batch, durable)?;
                sink.commit(b.epoch)?;
                for (source, state) in notify {
                    source.committed(&state);
                }
                Ok(sink.stats())
            })
            .await
            .map_err(|e| EngineError::Internal(format!("commit task: {e}")))??;
            sink_stats = Some(stats);
        }
        self.shared.committed.store(b.epoch, Ordering::Release);
        let (at, wall) = started.unwrap_or_else(|| (Instant::now(), SystemTime::now()));
        self.shared.metrics.committed(EpochRecord {
            epoch: b.epoch,
            checkpoint: b.checkpoint,
            started: wall,
            duration: at.elapsed(),
            alignment,
            bytes,
            rows: rows as u64,
            state_bytes,
        });
        self.shared
            .rows_out
            .fetch_add(rows as u64, Ordering::Relaxed);
        {
            let mut stats = self.shared.stats.lock();
            stats.epoch = b.epoch;
            stats.state_bytes = c.state_bytes as u64;
            stats.late_rows += late_count;
            if b.checkpoint {
                stats.checkpoint_epoch = b.epoch;
                stats.checkpoint_at = Some(SystemTime::now());
            }
            if let Some(s) = sink_stats {
                stats.sink = s;
            }
        }
        self.progress.send_replace(Progress {
            positions: positions.clone(),
            backfilling,
        });
        Ok(positions)
    }
}

/// Each stage's input, operator names and parallelism, for [`JobMetrics`].
fn stage_infos(graph: &JobGraph) -> Vec<(StageInputInfo, Vec<String>, usize)> {
    let mut source = 0;
    graph
        .stages
        .iter()
        .map(|stage| {
            let input = match &stage.input {
                StageInput::Source(s) => {
                    source += 1;
                    StageInputInfo::Source {
                        index: source - 1,
                        table: s.table.name().to_string(),
                    }
                }
                StageInput::Merge(edges) => StageInputInfo::Edges(
                    edges
                        .iter()
                        .map(|e| (e.from.clone(), e.keys.is_some()))
                        .collect(),
                ),
            };
            let names = stage
                .operators
                .iter()
                .map(|o| o.name().to_string())
                .collect();
            (input, names, stage.parallelism)
        })
        .collect()
}

/// A counted view's changes (row, count) as changes of row instances: a new row with count `c` is
/// `c` inserts, an update from `c1` to `c2` is `|c2 - c1|` inserts or deletes. The count column of
/// the result is 1.
pub(crate) fn row_instances(changes: &ChangeBatch) -> Result<ChangeBatch> {
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

#[cfg(test)]
mod tests;
