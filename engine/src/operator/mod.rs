//! Streaming operators: each turns changelog batches into changelog batches.
//!
//! An operator is synchronous, owns its state and never sees channels, tasks or RocksDB. The job
//! runtime (see [`crate::job`]) gives every parallel instance its own copy ([`Operator::fork`]),
//! restores its state from the last checkpoint ([`Operator::restore`]), calls
//! [`Operator::process`] for every input batch (with the index of the input it came from), and
//! at each barrier calls [`Operator::checkpoint`], which adds the state changed since the last
//! barrier to the epoch's write batch; that batch also holds the source positions and the view's
//! rows, so state and positions change atomically.
//!
//! Keyed state lives under the operator's own prefix, each entry under its key's key group
//! ([`crate::keygroup`]), so that an instance reads back exactly the keys it owns.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::Result;
use crate::changelog::ChangeBatch;
use crate::state::{StateBatch, StateStore};

/// Hash aggregation with retractions (count, sum, avg, min, max, count distinct, bool_and/or).
pub mod aggregate;
/// Regular equi-joins (inner, outer, semi, anti) of two changelog inputs.
pub mod join;
/// OVER windows (LAG, LEAD, running aggregates, ...) over updatable input.
pub mod over;
/// Projection and filter with DataFusion physical expressions.
pub mod project;
/// Row pattern recognition (`MATCH_RECOGNIZE`).
pub mod recognize;
/// Rows grouped by partition, ordered within it: top-N's and OVER's state layout.
pub mod sorted;
/// Shared helpers of the operators' randomized tests.
#[cfg(test)]
mod testing;
/// Event-time timers in a state table (event-time OVER, top-N per time window).
pub(crate) mod timers;
/// Top-N per group (ranking window functions, ORDER BY ... LIMIT, DISTINCT ON).
pub mod topn;
/// UNNEST of one list column (HOP and CUMULATE windows).
pub mod unnest;

/// A row that came after the watermark had closed its window: it changes nothing, and is kept
/// (in the job's late-row log) instead of being lost.
#[derive(Debug, Clone, PartialEq)]
pub struct LateRow {
    /// The row's window bound that was already closed, in microseconds since the epoch.
    pub event_time: i64,
    /// The watermark when the row arrived.
    pub watermark: i64,
    /// The row's values, as Postgres prints a row: `(1,10,"2026-01-01 10:00:01")`.
    pub row: String,
}

impl LateRow {
    /// The stored form: event time and watermark (little endian), then the row text.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.row.len());
        out.extend_from_slice(&self.event_time.to_le_bytes());
        out.extend_from_slice(&self.watermark.to_le_bytes());
        out.extend_from_slice(self.row.as_bytes());
        out
    }

    /// Reads back [`LateRow::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Option<LateRow> {
        let event_time = i64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
        let watermark = i64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
        let row = String::from_utf8_lossy(bytes.get(16..)?).into_owned();
        Some(LateRow {
            event_time,
            watermark,
            row,
        })
    }
}

/// A record a source could not decode: kept (in the job's dead-letter log) and counted, never
/// silently dropped, while the job goes on.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The table the source feeds.
    pub table: String,
    /// Where the record was: a file's path, a topic and partition.
    pub source: String,
    /// Its position there (a byte offset, an offset).
    pub position: u64,
    /// The record's bytes, as text (invalid UTF-8 replaced), at most [`DeadLetter::MAX_RAW`].
    pub raw: String,
    pub error: String,
}

impl DeadLetter {
    /// Bytes of a record kept in full; longer ones are cut.
    pub const MAX_RAW: usize = 64 * 1024;

    /// The stored form: position, then four length-prefixed strings.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.raw.len() + self.error.len());
        out.extend_from_slice(&self.position.to_le_bytes());
        for s in [&self.table, &self.source, &self.raw, &self.error] {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        out
    }

    /// Reads back [`DeadLetter::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Option<DeadLetter> {
        let position = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
        let mut at = 8;
        let mut next = || -> Option<String> {
            let len = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
            let s = String::from_utf8_lossy(bytes.get(at + 4..at + 4 + len)?).into_owned();
            at += 4 + len;
            Some(s)
        };
        Some(DeadLetter {
            table: next()?,
            source: next()?,
            raw: next()?,
            error: next()?,
            position,
        })
    }
}

/// The rows `rows` of `batch` as Postgres prints a row value: `(1,web,"2026-01-01 10:00:01")`
/// (NULL is empty; values with commas, quotes, parentheses or spaces are double-quoted).
pub fn rows_text(batch: &RecordBatch, rows: &[usize]) -> Result<Vec<String>> {
    let options = FormatOptions::default()
        .with_null("\u{0}")
        .with_timestamp_format(Some("%Y-%m-%d %H:%M:%S%.f"))
        .with_timestamp_tz_format(Some("%Y-%m-%d %H:%M:%S%.f%:z"));
    let formatters = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for &row in rows {
        let mut text = String::from("(");
        for (i, f) in formatters.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            let value = f.value(row).to_string();
            if value == "\u{0}" {
                continue;
            }
            if value.is_empty() || value.contains([',', '"', '(', ')', ' ', '\\']) {
                text.push('"');
                text.push_str(&value.replace('\\', "\\\\").replace('"', "\\\""));
                text.push('"');
            } else {
                text.push_str(&value);
            }
        }
        text.push(')');
        out.push(text);
    }
    Ok(out)
}

/// Where one instance of an operator keeps its state.
#[derive(Debug, Clone)]
pub struct StateScope {
    pub store: StateStore,
    /// Every key of this operator (all instances) starts with it; no other key does.
    pub prefix: Vec<u8>,
    /// The key groups this instance owns.
    pub key_groups: Range<u16>,
    /// The job's last committed epoch: writes an operator checkpointed into a later epoch's
    /// batch are not in the store yet (see [`crate::state::table`]).
    pub committed: Arc<AtomicU64>,
    /// Bytes of clean state this instance's state tables may cache, together.
    pub cache_bytes: usize,
    /// Where its state tables publish their reads and sizes (the operator instance's metrics).
    pub figures: Arc<crate::state::table::StateFigures>,
}

impl StateScope {
    /// A scope with nothing committed yet; whoever writes its checkpoints to the store stores
    /// their epoch into `committed` (operator tests).
    pub fn new(store: StateStore, prefix: &[u8], key_groups: Range<u16>) -> Self {
        Self {
            store,
            prefix: prefix.to_vec(),
            key_groups,
            committed: Arc::new(AtomicU64::new(0)),
            cache_bytes: crate::state::table::DEFAULT_CACHE_BYTES,
            figures: Arc::default(),
        }
    }

    /// The operator's state table `tag` (its keys under the scope's prefix and `tag`), caching up
    /// to `cache_bytes` and publishing its figures into the scope's.
    pub fn table(&self, tag: u8, cache_bytes: usize) -> crate::state::table::StateTable {
        let mut prefix = self.prefix.clone();
        prefix.push(tag);
        crate::state::table::StateTable::new(
            self.store.clone(),
            prefix,
            self.key_groups.clone(),
            Arc::clone(&self.committed),
            cache_bytes,
        )
        .with_figures(self.figures.table(tag))
    }

    /// The stored key of `key` in key group `kg`: `prefix ++ kg (big endian) ++ key`.
    pub fn key(&self, kg: u16, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + 2 + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(&kg.to_be_bytes());
        k.extend_from_slice(key);
        k
    }

    /// Length of the stored key of a `key`.
    pub fn key_len(&self, key: &[u8]) -> usize {
        self.prefix.len() + 2 + key.len()
    }

    /// Calls `f(kg, key, value)` for every entry in this instance's key groups.
    pub fn scan(&self, mut f: impl FnMut(u16, &[u8], &[u8]) -> Result<()>) -> Result<()> {
        for kg in self.key_groups.clone() {
            let mut prefix = self.prefix.clone();
            prefix.extend_from_slice(&kg.to_be_bytes());
            self.store.scan_prefix(None, &prefix, None, |k, v| {
                f(kg, k.get(prefix.len()..).unwrap_or_default(), v)?;
                Ok(std::ops::ControlFlow::Continue(()))
            })?;
        }
        Ok(())
    }
}

/// One step of a streaming job.
pub trait Operator: Send {
    /// A short name for plans and logs (`Project`, `HashAggregate`).
    fn name(&self) -> &'static str;

    /// The schema of the batches this operator emits.
    fn schema(&self) -> SchemaRef;

    /// A copy without state, for another parallel instance.
    fn fork(&self) -> Result<Box<dyn Operator>>;

    /// Loads the state `scope` holds (what the last checkpoint wrote for its key groups). Called
    /// once, before any other call but [`Operator::fork`].
    fn restore(&mut self, _scope: &StateScope) -> Result<()> {
        Ok(())
    }

    /// Output the operator has before any input (a global aggregate's row, say).
    fn start(&mut self) -> Result<Vec<ChangeBatch>> {
        Ok(Vec::new())
    }

    /// How many inputs the operator reads (a join reads two). Only the first operator of a stage
    /// may read more than one; the runtime numbers them from 0 in the stage's input order.
    fn inputs(&self) -> usize {
        1
    }

    /// Whether input `input`'s watermark holds back this operator's output watermark (the
    /// default). An input that does not (a lookup join's table) gets no [`Operator::on_watermark`]
    /// calls either.
    fn input_has_time(&self, _input: usize) -> bool {
        true
    }

    /// Processes one batch from input `input` and returns what changed downstream. An operator
    /// whose output would be too large to hold at once (a join row meeting many others) may
    /// return part of it and keep the rest of the batch for [`Operator::resume`].
    fn process(&mut self, input: usize, batch: ChangeBatch) -> Result<Vec<ChangeBatch>>;

    /// Whether [`Operator::process`] kept part of its batch back.
    fn has_pending(&self) -> bool {
        false
    }

    /// Processes more of the batch [`Operator::process`] kept back (see
    /// [`Operator::has_pending`]). The runtime sends each part downstream, with backpressure,
    /// before it asks for the next, and before the operator's next input, watermark or barrier,
    /// so memory stays bounded whatever the fan-out.
    fn resume(&mut self) -> Result<Vec<ChangeBatch>> {
        Ok(Vec::new())
    }

    /// Event time of input `input` has reached `watermark` (microseconds since the epoch): no
    /// row with an earlier event time follows on that input. Returns what that closes. Each
    /// input's watermark only grows; the runtime forwards [`Operator::output_watermark`] of the
    /// smallest over all inputs.
    fn on_watermark(&mut self, _input: usize, _watermark: i64) -> Result<Vec<ChangeBatch>> {
        Ok(Vec::new())
    }

    /// The watermark this operator's output has when every input has reached `watermark`: the
    /// same by default; an operator that may still emit rows older than its inputs' watermark
    /// (an interval join) holds it back.
    fn output_watermark(&self, watermark: i64) -> i64 {
        watermark
    }

    /// The epoch ends: returns what the operator held back until then (an aggregate sends its
    /// epoch's net changes here). Called in chain order before [`Operator::checkpoint`], with
    /// each operator's output run through the rest of the chain first.
    fn on_barrier(&mut self) -> Result<Vec<ChangeBatch>> {
        Ok(Vec::new())
    }

    /// Rows set aside as late since the last call (see [`LateRow`]).
    fn take_late(&mut self) -> Vec<LateRow> {
        Vec::new()
    }

    /// Adds the state changed since the last checkpoint to `batch`, the write batch of epoch
    /// `epoch`.
    fn checkpoint(
        &mut self,
        _epoch: u64,
        _scope: &StateScope,
        _batch: &mut StateBatch,
    ) -> Result<()> {
        Ok(())
    }

    /// Whether the operator keeps state across batches (conservatively yes: only operators
    /// that never touch their [`StateScope`] say no). A stateful operator's state lives under a
    /// state table id stored with the view.
    fn stateful(&self) -> bool {
        true
    }

    /// Bytes of state this instance keeps in the store (keys and values), as of its last
    /// checkpoint.
    fn state_bytes(&self) -> usize {
        0
    }

    /// One line describing the operator for EXPLAIN.
    fn describe(&self) -> String {
        self.name().to_string()
    }

    /// The version of the layout of the operator's stored state, when it changed without a
    /// change of what [`Operator::describe`] says: part of the shape a view stores (see
    /// `JobGraph::shapes`), so state written in an older layout is refused, not misread.
    fn state_layout(&self) -> &'static str {
        ""
    }
}
