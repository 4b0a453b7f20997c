//! A job's shape: stages of chained operators, connected by forward or hash edges.
//!
//! A stage is a chain of operators that runs as one task per parallel instance (Flink's operator
//! chaining: no channel between a filter and the aggregate it feeds). A stage reads either one
//! source (a table's or view's change log; one instance) or one or more [`Edge`]s, each the
//! output of earlier stages, merged (a UNION ALL is one edge from several stages; a join reads two
//! edges, input 0 and input 1 of its first operator). Each edge routes rows its own way:
//! - `keys: Some(cols)`: every upstream instance hashes each row's `cols` to a key group and sends
//!   it to the instance owning that group (a hash exchange, see [`crate::keygroup`]); the edges of
//!   one stage hash their own columns (a join's left and right keys), and since equal values hash
//!   alike, matching rows of both sides meet in the same instance;
//! - `keys: None`: every upstream instance sends everything to the stage's single instance.
//!
//! Only a stage's first operator may read several inputs; the rest of the chain reads its output.
//! The last stage feeds the view. Stages are listed so that inputs come before the stage that
//! reads them, and every stage but the last is read by exactly one edge.

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_plan::PhysicalExpr;

use crate::keygroup::KEY_GROUPS;
use crate::operator::Operator;
use crate::table::TableStore;
use crate::{EngineError, Result};

/// A table (or view) a job reads, and how its event time advances.
pub struct Source {
    pub table: Arc<TableStore>,
    /// The table's watermark expression over its rows (`ts - INTERVAL '5' SECOND`): the source's
    /// watermark is its largest value over the rows read so far.
    pub watermark: Option<Arc<dyn PhysicalExpr>>,
    /// After this long without rows, the watermark advances with the wall clock (from where it
    /// stood), so that windows still close when input stops.
    pub idle_timeout: Option<std::time::Duration>,
    /// The event time is processing time (a `PROCTIME()` column): once idle, the watermark is the
    /// wall clock minus the idle timeout, not where it stood plus the time since.
    pub processing_time: bool,
    /// Rows come from outside (files), read by the job itself, instead of from the table's
    /// change log; the table only names the relation and its columns.
    pub external: Option<Arc<dyn ExternalSource>>,
    /// The job needs the table's past versions, not only its current rows (the versioned side of
    /// an event-time temporal join): a new job replays the change log from its first entry
    /// rather than reading the current rows, as long as the log has not been trimmed.
    pub history: bool,
    /// The table is APPEND ONLY: its rows never change once inserted. Without a primary key its
    /// rows are stored in the order they came, so a backfill can move the watermark on as it
    /// reads (see [`super::backfill`]) instead of holding it until the end.
    pub append_only: bool,
}

/// A source outside Rivulet's tables (files, Kafka topics), read by the job's source task
/// directly: no copy of its rows is stored, and its position goes into the job's checkpoint.
///
/// A position has two parts: `progress`, a number that only grows as the reader reads (a file
/// index and byte offset; the sum of a topic's partition offsets), which FLUSH compares with
/// [`ExternalSource::end`]; and `state`, whatever else the reader needs to resume exactly (each
/// partition's next offset), opaque to the job.
pub trait ExternalSource: Send + Sync {
    /// A reader from a position a reader returned (`progress` 0 and empty `state`: the start,
    /// as the source's options define it).
    fn open(&self, progress: u64, state: &[u8]) -> Result<Box<dyn ExternalReader>>;
    /// The progress the source task reports once it has read everything there is now and, for
    /// a bounded source, finished it (sent the final watermark): FLUSH waits until the job has
    /// committed it. For a bounded source it is past every progress a reader returns. May block
    /// (asks a broker); called off the async workers.
    fn end(&self) -> Result<u64>;
    /// For EXPLAIN.
    fn describe(&self) -> String;
    /// This source reading only the stored `columns` (indexes into [`ExternalBatch::rows`]'
    /// columns) for a job that reads no others: those columns are NULL, where skipping them
    /// decodes less (JSON: their values are neither copied nor checked). `None`: it reads every
    /// column.
    fn reading(&self, _columns: &[usize]) -> Option<Arc<dyn ExternalSource>> {
        None
    }
    /// Called after a job has committed an epoch holding `state` (a reader's
    /// [`ExternalReader::state`]): a source may tell its origin (Kafka: commit the offsets to the consumer
    /// group, so that lag tools see them). The checkpoint stays the truth; failures are logged.
    /// Called off the async workers.
    fn committed(&self, _state: &[u8]) {}
    /// A bounded reader of everything there is now (for an ad-hoc query): it finishes at what
    /// was the end when it was opened.
    fn snapshot(&self) -> Result<Box<dyn ExternalReader>> {
        self.open(0, &[])
    }
}

/// Rows an [`ExternalReader`] read, from one split (a partition; files have one split).
pub struct ExternalBatch {
    /// The table's columns, computed ones last and optional.
    pub rows: RecordBatch,
    /// The split the rows come from: each split has its own watermark, and the source's is the
    /// smallest of the splits that are not idle.
    pub split: u32,
    /// The progress after these rows (see [`ExternalSource`]).
    pub progress: u64,
    /// A changelog source's rows (upsert, Debezium): whether each deletes its key. Jobs only
    /// read sources whose rows are all new (`None`); changelog sources feed keyed tables.
    pub deleted: Option<Vec<bool>>,
}

/// Reads an [`ExternalSource`]; called on a blocking thread.
pub trait ExternalReader: Send {
    /// The next rows; `None` when nothing more is there for now. May wait briefly (tens of
    /// milliseconds) for input, never longer.
    fn next(&mut self) -> Result<Option<ExternalBatch>>;
    /// True once a bounded source has been read to its end: its watermark then jumps to the
    /// end of time, which closes every window (as Flink does at the end of bounded input).
    fn finished(&self) -> bool;
    /// The records `next` could not decode since the last call (their rows are not in its
    /// batches); the job keeps them as dead letters.
    fn take_dead_letters(&mut self) -> Vec<crate::operator::DeadLetter> {
        Vec::new()
    }
    /// The splits being read now (a topic's partitions, which may grow); a split that has sent
    /// no rows yet holds the source's watermark back until it is idle.
    fn splits(&self) -> Vec<u32> {
        vec![0]
    }
    /// The resume state after the rows returned so far (see [`ExternalSource`]).
    fn state(&self) -> Vec<u8> {
        Vec::new()
    }
    /// The progress after everything returned so far, when it can move without rows (a
    /// partition that starts at its end); `None`: only batches move it.
    fn progress(&self) -> Option<u64> {
        None
    }
    /// The reader's trouble, if it is retrying something (a broker that is down), for SHOW JOBS.
    fn trouble(&self) -> Option<String> {
        None
    }
    /// Where each split stands (a partition's next offset and high watermark), for monitoring;
    /// empty when the source has nothing to say per split.
    fn split_status(&self) -> Vec<super::metrics::SplitStatus> {
        Vec::new()
    }
}

impl Source {
    /// A source without event time.
    pub fn new(table: Arc<TableStore>) -> Self {
        Self {
            table,
            watermark: None,
            idle_timeout: None,
            processing_time: false,
            external: None,
            history: false,
            append_only: false,
        }
    }
}

/// One input of a stage: the output of earlier stages (by index), merged, and how its rows are
/// routed to the stage's instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub from: Vec<usize>,
    /// Hash-partition on these columns of the upstream rows; `None`: gather into one instance.
    pub keys: Option<Vec<usize>>,
}

/// What a stage reads.
pub enum StageInput {
    /// A table's (or view's) change log.
    Source(Source),
    /// Earlier stages' output: edge `i` is input `i` of the stage's first operator.
    Merge(Vec<Edge>),
}

impl StageInput {
    /// One input: the output of stages `from`, merged, routed by `keys`.
    pub fn merge(from: Vec<usize>, keys: Option<Vec<usize>>) -> Self {
        StageInput::Merge(vec![Edge { from, keys }])
    }

    /// How many inputs the stage's first operator gets.
    pub fn inputs(&self) -> usize {
        match self {
            StageInput::Source(_) => 1,
            StageInput::Merge(edges) => edges.len(),
        }
    }
}

/// A chain of operators run by `parallelism` tasks.
pub struct Stage {
    pub input: StageInput,
    /// Prototypes: each instance runs its own [`Operator::fork`] of them, in order.
    pub operators: Vec<Box<dyn Operator>>,
    pub parallelism: usize,
}

/// The stages of a job; the last one's output is the view's changes.
#[derive(Default)]
pub struct JobGraph {
    pub stages: Vec<Stage>,
    /// The state table id of each operator, by stage and position (see [`JobGraph::shapes`]):
    /// its state lives under the id, which the view stores, instead of under its position in
    /// the plan. `None`: under the position (views created before ids were stored).
    pub state_ids: Option<Vec<Vec<u32>>>,
}

impl JobGraph {
    /// The tables the job reads, in source order (the order of their stages).
    pub fn sources(&self) -> Vec<Arc<TableStore>> {
        self.stages
            .iter()
            .filter_map(|s| match &s.input {
                StageInput::Source(s) => Some(Arc::clone(&s.table)),
                StageInput::Merge(_) => None,
            })
            .collect()
    }

    /// Per source, in source order: its table and, for a source outside Rivulet's tables, what
    /// it is (see [`ExternalSource::describe`]).
    pub fn source_kinds(&self) -> Vec<(Arc<TableStore>, Option<String>)> {
        self.stages
            .iter()
            .filter_map(|s| match &s.input {
                StageInput::Source(s) => Some((
                    Arc::clone(&s.table),
                    s.external.as_ref().map(|e| e.describe()),
                )),
                StageInput::Merge(_) => None,
            })
            .collect()
    }

    /// What each stateful operator is, by stage and position, in plan order: its description
    /// and output types. A view stores these with its state table ids when it is created; a
    /// server that plans the view into other shapes must not hand it the stored state.
    pub fn shapes(&self) -> Vec<(usize, usize, String)> {
        let mut out = Vec::new();
        for (s, stage) in self.stages.iter().enumerate() {
            for (o, op) in stage.operators.iter().enumerate() {
                if !op.stateful() {
                    continue;
                }
                let types: Vec<String> = op
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.data_type().to_string())
                    .collect();
                let shape = format!("{} -> ({})", op.describe(), types.join(", "));
                out.push((s, o, shape + op.state_layout()));
            }
        }
        out
    }

    /// Total tasks: one per stage instance.
    pub fn tasks(&self) -> usize {
        self.stages.iter().map(|s| s.parallelism).sum()
    }

    /// The largest parallelism of any stage.
    pub fn parallelism(&self) -> usize {
        self.stages.iter().map(|s| s.parallelism).max().unwrap_or(1)
    }

    /// Fails unless the graph has the shape described in the module documentation.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(EngineError::Internal(format!("job graph: {m}")));
        if self.stages.is_empty() {
            return bad("no stages".into());
        }
        let mut readers = vec![0usize; self.stages.len()];
        for (i, stage) in self.stages.iter().enumerate() {
            if stage.parallelism == 0 || stage.parallelism > usize::from(KEY_GROUPS) {
                return bad(format!("stage {i} has parallelism {}", stage.parallelism));
            }
            match &stage.input {
                StageInput::Source(_) if stage.parallelism != 1 => {
                    return bad(format!("source stage {i} is parallel"));
                }
                StageInput::Source(_) => {}
                StageInput::Merge(edges) => {
                    if edges.is_empty() || edges.iter().any(|e| e.from.is_empty()) {
                        return bad(format!("stage {i} reads nothing"));
                    }
                    for Edge { from, keys } in edges {
                        if keys.is_none() && stage.parallelism != 1 {
                            return bad(format!("stage {i} gathers into several instances"));
                        }
                        for &f in from {
                            if f >= i {
                                return bad(format!("stage {i} reads later stage {f}"));
                            }
                            readers[f] += 1;
                        }
                    }
                }
            }
            let wanted = stage.input.inputs();
            let first = stage.operators.first().map_or(1, |o| o.inputs());
            if first != wanted {
                return bad(format!(
                    "stage {i} has {wanted} inputs and its first operator reads {first}"
                ));
            }
            if let Some(o) = stage.operators.iter().skip(1).find(|o| o.inputs() != 1) {
                return bad(format!(
                    "stage {i} chains {} after its first operator",
                    o.name()
                ));
            }
        }
        let last = self.stages.len() - 1;
        for (i, &n) in readers.iter().enumerate() {
            if n != usize::from(i != last) {
                return bad(format!("stage {i} is read {n} times"));
            }
        }
        Ok(())
    }

    /// One line per stage and operator, for EXPLAIN; `source_name` names a source table.
    pub fn explain(&self, source_name: &dyn Fn(&TableStore) -> String) -> Vec<String> {
        let mut lines = Vec::new();
        for (i, stage) in self.stages.iter().enumerate() {
            let input = match &stage.input {
                StageInput::Source(s) => {
                    let from = match &s.external {
                        Some(e) => format!("{} ({})", source_name(&s.table), e.describe()),
                        None => format!("change log of {}", source_name(&s.table)),
                    };
                    match &s.watermark {
                        Some(w) => format!("{from}, watermark {w}"),
                        None => from,
                    }
                }
                StageInput::Merge(edges) => {
                    let edges: Vec<String> = edges
                        .iter()
                        .map(|Edge { from, keys }| {
                            let from: Vec<String> =
                                from.iter().map(|f| format!("stage {f}")).collect();
                            match keys {
                                Some(keys) => {
                                    let keys: Vec<String> =
                                        keys.iter().map(|k| format!("#{k}")).collect();
                                    format!("{} by hash of [{}]", from.join(", "), keys.join(", "))
                                }
                                None => format!("{}, gathered", from.join(", ")),
                            }
                        })
                        .collect();
                    match edges.as_slice() {
                        [one] => one.clone(),
                        many => many
                            .iter()
                            .enumerate()
                            .map(|(i, e)| format!("input {i}: {e}"))
                            .collect::<Vec<_>>()
                            .join("; "),
                    }
                }
            };
            lines.push(format!(
                "Stage {i} (parallelism {}): from {input}",
                stage.parallelism
            ));
            lines.extend(
                stage
                    .operators
                    .iter()
                    .map(|o| format!("  {}", o.describe())),
            );
        }
        lines
    }
}
