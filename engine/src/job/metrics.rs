//! A running job's figures: what each operator, task, source and epoch has done, for the
//! server's `/metrics`, its system tables (`rivulet_operators`, ...) and its dashboard.
//!
//! The job's tasks update them as they work; readers take a look whenever they like. Updates are
//! relaxed atomic adds and stores, made once per batch, watermark or barrier, never per row, and
//! nothing here allocates on the data path (the one lock, the list of recent epochs, is taken by
//! the committing task once per epoch). The engine only counts: names, labels and exposition
//! belong to the server. Every figure counts from the job's start; a restarted job starts again
//! from zero (Prometheus sees a counter reset).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

/// Whether tasks record their per-operator, per-task and per-source figures (the server's
/// `--metrics off` clears it, for measuring what recording costs). Epochs, checkpoints and late
/// rows are counted either way.
static RECORDING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turns recording of per-operator, per-task and per-source figures on or off, for every job.
pub fn set_recording(on: bool) {
    RECORDING.store(on, Ordering::Relaxed);
}

/// Whether per-operator, per-task and per-source figures are recorded.
pub fn recording() -> bool {
    RECORDING.load(Ordering::Relaxed)
}

/// Epochs [`JobMetrics::recent_epochs`] keeps.
pub const RECENT_EPOCHS: usize = 64;

/// A watermark slot's value before any watermark.
const NO_WATERMARK: i64 = i64::MIN;

/// A job's figures, shaped like its graph.
#[derive(Debug)]
pub struct JobMetrics {
    /// Per stage, in the graph's order.
    pub stages: Vec<StageMetrics>,
    /// Per source, by source index.
    pub sources: Vec<SourceMetrics>,
    /// Rows set aside as late.
    pub late_rows: AtomicU64,
    /// Epochs committed, and the synced ones among them (checkpoints).
    pub epochs: AtomicU64,
    pub checkpoints: AtomicU64,
    /// Epochs lost because the job failed before it committed them.
    pub failed_epochs: AtomicU64,
    /// Total microseconds from injecting a barrier to its epoch's commit, over the epochs.
    pub epoch_micros: AtomicU64,
    recent: Mutex<VecDeque<EpochRecord>>,
    started: Instant,
}

/// A stage of the graph: where it reads, its operators, and its parallel instances' figures.
#[derive(Debug)]
pub struct StageMetrics {
    /// What the stage reads: `source <table>`, or the stages it merges and how rows are routed.
    pub input: StageInputInfo,
    /// The operators' names, in chain order.
    pub operators: Vec<String>,
    /// Per parallel instance.
    pub instances: Vec<TaskMetrics>,
}

/// Where a stage's rows come from.
#[derive(Debug, Clone)]
pub enum StageInputInfo {
    /// Source `index` (a table or view, named `table`).
    Source { index: usize, table: String },
    /// Edges: per input, the upstream stages and whether rows are hash-partitioned (`true`) or
    /// gathered into one instance.
    Edges(Vec<(Vec<usize>, bool)>),
}

/// One task: a stage instance running its chain of operators.
#[derive(Debug)]
pub struct TaskMetrics {
    /// Nanoseconds spent running operators (busy), and waiting for room in a full output
    /// channel (backpressured); the rest of the task's life it waited for input (idle).
    pub busy_nanos: AtomicU64,
    pub backpressured_nanos: AtomicU64,
    /// Nanoseconds spent aligning barriers (inputs blocked until every one delivered it).
    pub alignment_nanos: AtomicU64,
    /// Per operator of the chain.
    pub operators: Vec<OperatorMetrics>,
    started: Instant,
}

/// One operator instance.
#[derive(Debug)]
pub struct OperatorMetrics {
    pub rows_in: AtomicU64,
    pub rows_out: AtomicU64,
    /// Event time in microseconds since the Unix epoch ([`OperatorMetrics::input_watermark`]).
    input_watermark: AtomicI64,
    output_watermark: AtomicI64,
    /// Bytes of state the operator held at the last barrier.
    pub state_bytes: AtomicU64,
    /// The id its state lives under, stored with the view (`None`: a stateless operator, or a
    /// view created before ids were stored, whose state is addressed by plan position).
    pub state_table: Option<u32>,
    /// Its state tables' point reads (from memory or from RocksDB: the cache hit rate) and
    /// sizes, as of the last barrier.
    pub state: std::sync::Arc<crate::state::table::StateFigures>,
}

/// One source of the job.
#[derive(Debug)]
pub struct SourceMetrics {
    /// The table (or view) the source reads.
    pub table: String,
    pub rows: AtomicU64,
    /// The position read up to (a change-log sequence; an external source's progress).
    pub position: AtomicU64,
    watermark: AtomicI64,
    /// Per split (a topic's partition) of an external source: its position and end, as its
    /// reader last reported them.
    splits: Mutex<Vec<SplitStatus>>,
    /// When the source last had rows: nanoseconds after `base`, plus one (0: never).
    last_rows: AtomicU64,
    base: Instant,
}

/// Where an external source's split stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitStatus {
    /// The split's name (`topic/partition`).
    pub name: String,
    /// The next position to read (a partition's next offset).
    pub position: i64,
    /// The end of the split when last asked (a partition's high watermark), if known.
    pub end: Option<i64>,
}

/// One committed epoch, for `rivulet_checkpoints`.
#[derive(Debug, Clone)]
pub struct EpochRecord {
    pub epoch: u64,
    /// Synced to disk (a checkpoint), or only in RocksDB's WAL.
    pub checkpoint: bool,
    /// When the barrier was injected.
    pub started: SystemTime,
    /// From the barrier's injection to the commit.
    pub duration: Duration,
    /// The longest barrier alignment among the job's tasks.
    pub alignment: Duration,
    /// Bytes written by the commit (the write batch); 0 for an epoch that changed nothing.
    pub bytes: u64,
    /// Result changes the epoch committed.
    pub rows: u64,
    /// Bytes of operator state after the epoch.
    pub state_bytes: u64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn watermark(slot: &AtomicI64) -> Option<i64> {
    Some(slot.load(Ordering::Relaxed)).filter(|&w| w != NO_WATERMARK)
}

impl JobMetrics {
    /// Figures for a job of `stages` (input, operator names, parallelism) whose operators keep
    /// their state under `state_ids` (by stage and position; 0 for a stateless one), reading
    /// `sources` (the tables they read), all zero.
    pub fn new(
        stages: Vec<(StageInputInfo, Vec<String>, usize)>,
        state_ids: Option<&[Vec<u32>]>,
        sources: Vec<String>,
    ) -> Self {
        let now = Instant::now();
        Self {
            stages: stages
                .into_iter()
                .enumerate()
                .map(|(s, (input, operators, parallelism))| StageMetrics {
                    instances: (0..parallelism)
                        .map(|_| TaskMetrics {
                            busy_nanos: AtomicU64::new(0),
                            backpressured_nanos: AtomicU64::new(0),
                            alignment_nanos: AtomicU64::new(0),
                            operators: (0..operators.len())
                                .map(|o| {
                                    let id = state_ids
                                        .and_then(|ids| ids.get(s)?.get(o).copied())
                                        .filter(|&id| id != 0);
                                    OperatorMetrics::new(id)
                                })
                                .collect(),
                            started: now,
                        })
                        .collect(),
                    input,
                    operators,
                })
                .collect(),
            sources: sources
                .into_iter()
                .map(|table| SourceMetrics {
                    table,
                    rows: AtomicU64::new(0),
                    position: AtomicU64::new(0),
                    watermark: AtomicI64::new(NO_WATERMARK),
                    splits: Mutex::new(Vec::new()),
                    last_rows: AtomicU64::new(0),
                    base: now,
                })
                .collect(),
            late_rows: AtomicU64::new(0),
            epochs: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
            failed_epochs: AtomicU64::new(0),
            epoch_micros: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::with_capacity(RECENT_EPOCHS)),
            started: now,
        }
    }

    /// The figures of stage `stage`'s instance `instance`, if the graph has them.
    pub fn task(&self, stage: usize, instance: usize) -> Option<&TaskMetrics> {
        self.stages.get(stage)?.instances.get(instance)
    }

    /// How long the job has run.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Records a committed epoch.
    pub fn committed(&self, record: EpochRecord) {
        self.epochs.fetch_add(1, Ordering::Relaxed);
        if record.checkpoint {
            self.checkpoints.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(record.duration.as_micros()).unwrap_or(u64::MAX);
        self.epoch_micros.fetch_add(micros, Ordering::Relaxed);
        let mut recent = self.recent.lock();
        if recent.len() == RECENT_EPOCHS {
            recent.pop_front();
        }
        recent.push_back(record);
    }

    /// The last [`RECENT_EPOCHS`] committed epochs, oldest first.
    pub fn recent_epochs(&self) -> Vec<EpochRecord> {
        self.recent.lock().iter().cloned().collect()
    }

    /// The last committed epoch that was a checkpoint (synced).
    pub fn last_checkpoint(&self) -> Option<EpochRecord> {
        self.recent
            .lock()
            .iter()
            .rev()
            .find(|r| r.checkpoint)
            .cloned()
    }
}

impl TaskMetrics {
    pub(crate) fn busy(&self, d: Duration) {
        self.busy_nanos.fetch_add(nanos(d), Ordering::Relaxed);
    }

    pub(crate) fn backpressured(&self, d: Duration) {
        self.backpressured_nanos
            .fetch_add(nanos(d), Ordering::Relaxed);
    }

    pub(crate) fn aligned(&self, d: Duration) {
        self.alignment_nanos.fetch_add(nanos(d), Ordering::Relaxed);
    }

    /// Nanoseconds the task waited for input: its life minus busy and backpressured time.
    pub fn idle_nanos(&self) -> u64 {
        nanos(self.started.elapsed())
            .saturating_sub(self.busy_nanos.load(Ordering::Relaxed))
            .saturating_sub(self.backpressured_nanos.load(Ordering::Relaxed))
    }
}

impl OperatorMetrics {
    fn new(state_table: Option<u32>) -> Self {
        Self {
            state_table,
            rows_in: AtomicU64::new(0),
            rows_out: AtomicU64::new(0),
            input_watermark: AtomicI64::new(NO_WATERMARK),
            output_watermark: AtomicI64::new(NO_WATERMARK),
            state_bytes: AtomicU64::new(0),
            state: std::sync::Arc::default(),
        }
    }

    pub(crate) fn count_in(&self, rows: usize) {
        self.rows_in.fetch_add(rows as u64, Ordering::Relaxed);
    }

    pub(crate) fn count_out(&self, rows: usize) {
        self.rows_out.fetch_add(rows as u64, Ordering::Relaxed);
    }

    pub(crate) fn watermarks(&self, input: i64, output: i64) {
        self.input_watermark.store(input, Ordering::Relaxed);
        self.output_watermark.store(output, Ordering::Relaxed);
    }

    /// The smallest watermark over the operator's inputs, in microseconds since the Unix epoch
    /// (`i64::MAX` once every input has ended); `None` before every input has one.
    pub fn input_watermark(&self) -> Option<i64> {
        watermark(&self.input_watermark)
    }

    /// The watermark the operator forwards.
    pub fn output_watermark(&self) -> Option<i64> {
        watermark(&self.output_watermark)
    }
}

impl SourceMetrics {
    pub(crate) fn read(&self, rows: usize) {
        self.rows.fetch_add(rows as u64, Ordering::Relaxed);
        let at = nanos(self.base.elapsed()).saturating_add(1);
        self.last_rows.store(at, Ordering::Relaxed);
    }

    pub(crate) fn set_watermark(&self, w: i64) {
        self.watermark.store(w, Ordering::Relaxed);
    }

    pub(crate) fn set_splits(&self, splits: Vec<SplitStatus>) {
        let mut current = self.splits.lock();
        if *current != splits {
            *current = splits;
        }
    }

    /// The source's watermark (microseconds since the Unix epoch), once it has one.
    pub fn watermark(&self) -> Option<i64> {
        watermark(&self.watermark)
    }

    /// Per split of an external source: its position and end.
    pub fn splits(&self) -> Vec<SplitStatus> {
        self.splits.lock().clone()
    }

    /// How long since the source last had rows (`None`: none since the job started).
    pub fn idle_for(&self) -> Option<Duration> {
        let at = self.last_rows.load(Ordering::Relaxed).checked_sub(1)?;
        Some(self.base.elapsed().saturating_sub(Duration::from_nanos(at)))
    }
}
