//! Sinks: where a job's result changes go, behind one two-phase trait aligned with epochs.
//!
//! A job's committing task owns one [`Sink`] and drives it, one epoch at a time, on a blocking
//! thread:
//! 1. [`Sink::write`] each changelog batch of the epoch, as the last stage emitted it;
//! 2. at the epoch's barrier, [`Sink::pre_commit`]: make what was written durable but not yet
//!    visible (flush a Kafka transaction, fsync a temporary file) and return what the checkpoint
//!    must record to finish or undo it after a crash; a view adds its rows to the write batch;
//! 3. [`Sink::checkpoint`]: write the epoch's batch (state, positions, what `pre_commit`
//!    returned) to the store, synced when the sink has effects outside Rivulet
//!    ([`Sink::external`]), since RocksDB recovering an older epoch could not take them back;
//! 4. [`Sink::commit`]: make the epoch visible (commit the transaction, rename the file).
//!
//! After a restart, [`Sink::recover`] gets what the last committed epoch recorded: the sink
//! commits it again if it may not have been (a crash between 3 and 4; committing must therefore
//! be idempotent) and aborts whatever was written after it. The sources replay from the
//! positions of that same epoch, so every change reaches the sink's readers exactly once.
//!
//! The two sinks inside the engine are here: [`ViewSink`], a materialized view's rows and change
//! log (its commit is the checkpoint itself), and [`Blackhole`], which counts and drops.
//! Connectors implement the others (files, Kafka).

use std::sync::Arc;

use crate::Result;
use crate::changelog::ChangeBatch;
use crate::state::{StateBatch, StateStore};
use crate::table::TableStore;

/// What a sink is waiting for, if anything (a broker that is down), shared with the job so that
/// `SHOW SINKS` sees it while the sink waits inside a commit.
pub type Trouble = Arc<parking_lot::Mutex<Option<String>>>;

/// What a sink has done, for `SHOW SINKS` and `SHOW JOBS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// The connector (`view`, `blackhole`, `filesystem`, `kafka`).
    pub connector: String,
    /// Where records go (a topic, a directory), empty when nowhere.
    pub target: String,
    /// The delivery guarantee (`exactly-once`, `at-least-once`, `none`).
    pub guarantee: String,
    /// The last epoch whose output was committed (visible to readers).
    pub committed_epoch: u64,
    /// Records and bytes written (committed or not) since the job started.
    pub records: u64,
    pub bytes: u64,
    /// The epoch written but not committed yet, if any (a Kafka transaction, a temporary file).
    pub open: Option<u64>,
    /// The transaction open now (a Kafka transactional id), and since when.
    pub transaction: Option<String>,
    pub open_since: Option<std::time::SystemTime>,
    /// Calls to the outside retried (a broker that did not answer), since the job started.
    pub retries: u64,
}

/// Where a job's changes go. Called by the job's committing task only, in the order the module
/// documentation gives, on a blocking thread (methods may block on files or brokers).
pub trait Sink: Send {
    /// For logs and EXPLAIN.
    fn describe(&self) -> String;

    /// Called once before the first epoch with what [`Sink::pre_commit`] returned for the last
    /// committed epoch `epoch` (`None`: a new job, or that epoch recorded nothing). Commits what
    /// it records, if that may not have happened, and aborts anything written after it.
    fn recover(&mut self, _epoch: u64, _recorded: Option<&[u8]>) -> Result<()> {
        Ok(())
    }

    /// Takes one batch of the changes of epoch `epoch` (the open one).
    fn write(&mut self, epoch: u64, changes: &ChangeBatch) -> Result<()>;

    /// The barrier of `epoch`: everything written is made durable but stays invisible; returns
    /// what the checkpoint records to finish (or undo) it after a crash. `batch` is the epoch's
    /// write batch.
    fn pre_commit(&mut self, epoch: u64, batch: &mut StateBatch) -> Result<Option<Vec<u8>>>;

    /// Writes the epoch's batch, synced when `durable`. A view writes it with its change log.
    fn checkpoint(&mut self, store: &StateStore, batch: StateBatch, durable: bool) -> Result<()> {
        store.write(batch, durable)
    }

    /// Epoch `epoch` is in the store (synced if [`Sink::external`]): makes its output visible.
    /// May be called again for the same epoch after a restart (through `recover`).
    fn commit(&mut self, epoch: u64) -> Result<()>;

    /// The sink has effects outside Rivulet: every epoch it writes is synced before its commit.
    fn external(&self) -> bool {
        false
    }

    /// What it has done so far.
    fn stats(&self) -> SinkStats;

    /// Where it reports what it is retrying, if it can be slowed by something outside.
    fn trouble(&self) -> Option<Trouble> {
        None
    }
}

/// A materialized view: its rows and change log, committed atomically with the epoch.
pub struct ViewSink {
    table: Arc<TableStore>,
    /// The view has no key: the last column counts identical rows (see [`ViewSink::new`]).
    counted: bool,
    pending: Vec<ChangeBatch>,
    /// How the pending changes move the view's row count and bytes.
    delta: crate::table::Delta,
    stats: SinkStats,
}

impl ViewSink {
    /// The view stored in `table`. A `counted` view's last column counts identical rows, and its
    /// change log carries one insert or delete per row instance for views reading it.
    pub fn new(table: Arc<TableStore>, counted: bool) -> Self {
        Self {
            table,
            counted,
            pending: Vec::new(),
            delta: crate::table::Delta::default(),
            stats: SinkStats {
                connector: "view".into(),
                guarantee: "exactly-once".into(),
                ..SinkStats::default()
            },
        }
    }
}

impl Sink for ViewSink {
    fn describe(&self) -> String {
        format!("view {}", self.table.name())
    }

    fn write(&mut self, _epoch: u64, changes: &ChangeBatch) -> Result<()> {
        self.stats.records += changes.num_rows() as u64;
        self.pending.push(changes.clone());
        Ok(())
    }

    fn pre_commit(&mut self, _epoch: u64, batch: &mut StateBatch) -> Result<Option<Vec<u8>>> {
        self.delta = crate::table::Delta::default();
        for out in &self.pending {
            self.delta += self.table.apply_changes(batch, out)?;
        }
        Ok(None)
    }

    fn checkpoint(&mut self, _store: &StateStore, batch: StateBatch, durable: bool) -> Result<()> {
        let outputs = std::mem::take(&mut self.pending);
        let delta = std::mem::take(&mut self.delta);
        if self.counted {
            let instances = outputs
                .iter()
                .map(crate::job::row_instances)
                .collect::<Result<Vec<_>>>()?;
            self.table.commit_epoch(batch, &instances, delta, durable)
        } else {
            self.table.commit_epoch(batch, &outputs, delta, durable)
        }
    }

    fn commit(&mut self, epoch: u64) -> Result<()> {
        self.stats.committed_epoch = epoch;
        Ok(())
    }

    fn stats(&self) -> SinkStats {
        self.stats.clone()
    }
}

/// `blackhole`: counts the changes and drops them (benchmarks measure the pipeline, not a store).
#[derive(Default)]
pub struct Blackhole {
    stats: SinkStats,
}

impl Blackhole {
    pub fn new() -> Self {
        Self {
            stats: SinkStats {
                connector: "blackhole".into(),
                guarantee: "none".into(),
                ..SinkStats::default()
            },
        }
    }
}

impl Sink for Blackhole {
    fn describe(&self) -> String {
        "blackhole".into()
    }

    fn write(&mut self, _epoch: u64, changes: &ChangeBatch) -> Result<()> {
        self.stats.records += changes.num_rows() as u64;
        Ok(())
    }

    fn pre_commit(&mut self, _epoch: u64, _batch: &mut StateBatch) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    fn commit(&mut self, epoch: u64) -> Result<()> {
        self.stats.committed_epoch = epoch;
        Ok(())
    }

    fn stats(&self) -> SinkStats {
        self.stats.clone()
    }
}
