//! Tables: the current rows and a durable, sequenced change log, kept on the state store.
//!
//! Key space of table `id` (tag `T`, then `id` as 8 big-endian bytes):
//! - `T id 'm'`: counters (next change-log sequence, next hidden row id), 16 bytes.
//! - `T id 'r' rowkey`: one current row, in the [`RowCodec`](crate::codec::RowCodec) format. The row
//!   key is the encoded primary key, or a hidden 8-byte row id for tables without one.
//! - `T id 'l' seq`: one change-log entry per committed statement (or COPY chunk): a
//!   [`ChangeBatch`] as Arrow IPC, `seq` 8 bytes big-endian, starting at 1.
//! - `T id 'k' seq`: for an UPDATE or DELETE entry of a table without a primary key, the hidden
//!   row id of each of its rows (8 bytes each), so that a reader can tell which stored row each
//!   change is about ([`TableStore::change_keys`]).
//! - `T id 't' seq`: when entry `seq` was committed, Unix milliseconds as 8 little-endian bytes
//!   ([`TableStore::commit_time`]; entries written before this key existed have none).
//! - `T id 'f'`: the last sequence trimmed ([`TableStore::trim`]): entries up to it are gone.
//!
//! Every statement is one atomic, synced RocksDB write covering rows, log entry and counters, so the
//! rows and the log never disagree, and an acknowledged statement survives a crash. Writers of one
//! table are serialised by a mutex (sequence numbers are assigned in commit order); readers never
//! block: they read a [`Snapshot`]. Streaming jobs read the log with [`TableStore::changes_after`] and
//! wait for new entries with [`TableStore::subscribe`]. A new reader starts from the current rows
//! ([`TableStore::scan_from`], in row-key order, chunk by chunk) rather than from the first entry,
//! so the log only has to keep what some reader has not committed yet: the server trims the rest
//! ([`TableStore::trim`]); a reader outside a job keeps its entries with a [`LogHold`].

use std::collections::{BTreeMap, HashSet};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, UInt32Array, new_null_array};
use datafusion::arrow::compute::{concat_batches, filter_record_batch, interleave, take};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::changelog::{ChangeBatch, Op};
use crate::codec::RowCodec;
use crate::state::{Snapshot, StateBatch, StateStore};
use crate::{EngineError, Result};

mod txn;

pub use txn::{Writes, commit_transaction};

/// Rows per batch when reading a table.
pub const SCAN_BATCH_ROWS: usize = 8192;

const TAG: u8 = b'T';

/// The key prefix of everything table `id` stores.
pub fn table_prefix(id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(10);
    k.push(TAG);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn sub_prefix(id: u64, sub: u8) -> Vec<u8> {
    let mut k = table_prefix(id);
    k.push(sub);
    k
}

/// What the caller of [`TableStore::modify`] decides for one chunk of current rows.
pub struct Modification {
    /// The rows the statement touches (a WHERE clause's result).
    pub selected: BooleanArray,
    /// For UPDATE, the new values of the selected rows, in order; `None` deletes them.
    pub replacement: Option<RecordBatch>,
}

/// What an `INSERT .. ON CONFLICT`'s rows find under their primary keys
/// ([`TableStore::insert_resolving`]), row by row.
pub struct Conflicts {
    /// Whether a row is stored under the row's key (a conflict).
    pub found: BooleanArray,
    /// The stored row under each row's key (all NULL where none is), with the table's columns.
    pub existing: RecordBatch,
    /// Whether an earlier row of the statement has the row's key.
    pub repeated: BooleanArray,
}

/// What an UPDATE's or DELETE's `decide` chose ([`TableStore::choose`]).
struct Chosen {
    /// The chosen rows' keys, in order, and the bytes of their keys and values.
    keys: Vec<Vec<u8>>,
    bytes: i64,
    /// The chosen rows as they were, and, for UPDATE, their new values.
    old_rows: Vec<RecordBatch>,
    new_rows: Vec<RecordBatch>,
    updating: bool,
}

struct Counters {
    next_seq: u64,
    next_row_id: u64,
    /// Rows stored now (a counted view's distinct rows).
    rows: u64,
    /// Bytes of the stored rows' keys and values.
    row_bytes: u64,
    /// Bytes of the change-log entries' keys and values kept now.
    log_bytes: u64,
}

impl Counters {
    fn encode(&self) -> [u8; 40] {
        let mut out = [0u8; 40];
        for (i, v) in [
            self.next_seq,
            self.next_row_id,
            self.rows,
            self.row_bytes,
            self.log_bytes,
        ]
        .into_iter()
        .enumerate()
        {
            out[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// The counters after a commit that moves the sequence to `next_seq` and adds `log_bytes`
    /// and `delta`.
    fn after(&self, next_seq: u64, log_bytes: u64, delta: Delta) -> Counters {
        Counters {
            next_seq,
            next_row_id: self.next_row_id,
            rows: self.rows.saturating_add_signed(delta.rows),
            row_bytes: self.row_bytes.saturating_add_signed(delta.bytes),
            log_bytes: self.log_bytes.saturating_add(log_bytes),
        }
    }
}

/// How a write changes a table's stored rows: their number and their bytes (keys and values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta {
    pub rows: i64,
    pub bytes: i64,
}

impl std::ops::AddAssign for Delta {
    fn add_assign(&mut self, other: Delta) {
        self.rows += other.rows;
        self.bytes += other.bytes;
    }
}

/// What a table stores, for `pg_stat_user_tables` and `pg_total_relation_size`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableSize {
    /// Rows stored (a view without a key: its distinct rows).
    pub rows: u64,
    /// Bytes of the rows' keys and values.
    pub row_bytes: u64,
    /// Bytes of the change-log entries kept.
    pub log_bytes: u64,
}

/// The durable counters of table `id` (a table never written has sequence 1 and row id 0 next),
/// and whether they include the sizes (counters written before sizes were kept do not).
fn read_counters(store: &StateStore, id: u64) -> Result<(Counters, bool)> {
    let Some(bytes) = store.get(&sub_prefix(id, b'm'))? else {
        let empty = Counters {
            next_seq: 1,
            next_row_id: 0,
            rows: 0,
            row_bytes: 0,
            log_bytes: 0,
        };
        return Ok((empty, true));
    };
    if bytes.len() != 16 && bytes.len() != 40 {
        return Err(EngineError::Corrupt(format!(
            "table {id}: counters of {} bytes",
            bytes.len()
        )));
    }
    let word = |i: usize| {
        bytes
            .get(i * 8..i * 8 + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    };
    let counters = Counters {
        next_seq: word(0),
        next_row_id: word(1),
        rows: word(2),
        row_bytes: word(3),
        log_bytes: word(4),
    };
    Ok((counters, bytes.len() == 40))
}

/// Fills a table's computed columns (`name AS expr`) from its other columns, on every insert.
pub trait Computed: Send + Sync {
    /// `rows` with the computed columns replaced by their values, in the table's schema. `rows`
    /// has the table's columns (computed ones hold anything, usually NULL), or only those before
    /// the computed ones, which come last (a connector's rows).
    fn fill(&self, rows: &RecordBatch) -> Result<RecordBatch>;
    /// Each computed column and the columns its value is computed from.
    fn inputs(&self) -> Vec<(usize, Vec<usize>)>;
}

/// Checks a table's rows against what its column types allow beyond their Arrow types (text
/// lengths of `CHAR(n)` and `VARCHAR(n)`), on every insert and update; may rewrite values.
pub trait RowCheck: Send + Sync {
    /// `rows` (in the table's schema) as stored, or the error for the first value not allowed.
    fn check(&self, rows: RecordBatch) -> Result<RecordBatch>;
}

/// One table's storage.
pub struct TableStore {
    store: StateStore,
    id: u64,
    name: String,
    schema: SchemaRef,
    primary_key: Vec<usize>,
    codec: RowCodec,
    key_codec: Option<RowCodec>,
    writer: Mutex<Counters>,
    committed: watch::Sender<u64>,
    check: std::sync::OnceLock<Arc<dyn RowCheck>>,
    computed: std::sync::OnceLock<Arc<dyn Computed>>,
    /// Set for a materialized view's rows: whether the view counts identical rows (its last
    /// column; see [`TableStore::mark_view`]).
    view: std::sync::OnceLock<bool>,
    /// How many of the first columns are the rows' own; the others are hidden ones (the display
    /// scales of unconstrained numerics, a counted view's count after them), which a writer may
    /// leave out (NULL then). See [`TableStore::set_visible`].
    visible: std::sync::OnceLock<usize>,
    /// The last trimmed sequence (0: nothing trimmed).
    trimmed: AtomicU64,
    /// Readers outside jobs and the entries they still need: hold id -> last sequence read.
    holds: Mutex<BTreeMap<u64, u64>>,
    next_hold: AtomicU64,
    /// Set (under the writer lock) when the table is dropped: upkeep writes nothing after it.
    closed: std::sync::atomic::AtomicBool,
}

/// Keeps the change-log entries after a sequence from being trimmed while a reader outside a job
/// (a SUBSCRIBE) still needs them; dropping it lets them go.
pub struct LogHold {
    table: Arc<TableStore>,
    id: u64,
}

impl LogHold {
    /// The reader has read everything up to `seq`: only later entries are still needed.
    pub fn advance(&self, seq: u64) {
        if let Some(at) = self.table.holds.lock().get_mut(&self.id) {
            *at = seq;
        }
    }
}

impl Drop for LogHold {
    fn drop(&mut self) {
        self.table.holds.lock().remove(&self.id);
    }
}

impl std::fmt::Debug for LogHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHold").field("id", &self.id).finish()
    }
}

/// A chunk of a table's current rows read by [`TableStore::scan_from`].
pub struct RowChunk {
    /// The rows as inserts (a counted view's as row instances).
    pub rows: ChangeBatch,
    /// The row key of the last stored row read: the next chunk starts after it.
    pub last_key: Vec<u8>,
    /// Stored rows read (before a counted view's rows are repeated).
    pub stored: usize,
}

impl std::fmt::Debug for TableStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableStore")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish()
    }
}

impl TableStore {
    /// Opens table `id` (creating nothing: an absent table simply has no rows yet).
    pub fn open(
        store: StateStore,
        id: u64,
        name: &str,
        schema: SchemaRef,
        primary_key: Vec<usize>,
    ) -> Result<Self> {
        let codec = RowCodec::try_new(Arc::clone(&schema))?;
        let key_codec = if primary_key.is_empty() {
            None
        } else {
            Some(RowCodec::try_new(Arc::new(schema.project(&primary_key)?))?)
        };
        let (mut counters, sized) = read_counters(&store, id)?;
        if !sized {
            // Written before sizes were kept: count once.
            let count = |sub: u8| -> Result<(u64, u64)> {
                let (mut n, mut bytes) = (0u64, 0u64);
                store.scan_prefix(None, &sub_prefix(id, sub), None, |k, v| {
                    n += 1;
                    bytes += (k.len() + v.len()) as u64;
                    Ok(ControlFlow::Continue(()))
                })?;
                Ok((n, bytes))
            };
            (counters.rows, counters.row_bytes) = count(b'r')?;
            counters.log_bytes = count(b'l')?.1;
        }
        let trimmed = match store.get(&sub_prefix(id, b'f'))? {
            None => 0,
            Some(v) => u64::from_le_bytes(v.as_slice().try_into().map_err(|_| {
                EngineError::Corrupt(format!("table {id}: trim mark of {} bytes", v.len()))
            })?),
        };
        let (committed, _) = watch::channel(counters.next_seq - 1);
        Ok(Self {
            store,
            id,
            name: name.to_string(),
            schema,
            primary_key,
            codec,
            key_codec,
            writer: Mutex::new(counters),
            committed,
            computed: std::sync::OnceLock::new(),
            check: std::sync::OnceLock::new(),
            view: std::sync::OnceLock::new(),
            visible: std::sync::OnceLock::new(),
            trimmed: AtomicU64::new(trimmed),
            holds: Mutex::new(BTreeMap::new()),
            next_hold: AtomicU64::new(0),
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Marks the rows as a materialized view's (rows keyed by the view's key, or the one row of a
    /// view without one); `counted`: the last column counts identical rows, and readers of the
    /// rows see each row that many times. Set once, when the view is opened.
    pub fn mark_view(&self, counted: bool) {
        let _ = self.view.set(counted);
    }

    /// Marks only the first `n` columns as the rows' own: rows written without the others get
    /// NULLs there. Set once, when the table is opened.
    pub fn set_visible(&self, n: usize) {
        let _ = self.visible.set(n);
    }

    /// How many columns rows have that are not hidden ([`TableStore::set_visible`]).
    pub fn visible_columns(&self) -> usize {
        let all = self.schema.fields().len();
        self.visible.get().map_or(all, |&n| n.min(all))
    }

    /// A snapshot of the whole store (the table's rows and log with it).
    pub fn snapshot(&self) -> Snapshot {
        self.store.snapshot()
    }

    /// The sequence number the change log stood at in snapshot `at`: the snapshot's rows are
    /// those after that entry, and not after any later one.
    pub fn seq_at(&self, at: &Snapshot) -> Result<u64> {
        let counters = match self.store.get_at(at, &sub_prefix(self.id, b'm'))? {
            None => return Ok(0),
            Some(bytes) => bytes,
        };
        let next: [u8; 8] = counters
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| EngineError::Corrupt(format!("table {}: short counters", self.id)))?;
        Ok(u64::from_le_bytes(next).saturating_sub(1))
    }

    /// Up to `max_rows` of the current rows at `at` whose row keys come after `after` (from the
    /// first row without it), in row-key order; `None` when no row is left.
    pub fn scan_from(
        &self,
        at: &Snapshot,
        after: Option<&[u8]>,
        max_rows: usize,
    ) -> Result<Option<RowChunk>> {
        let prefix = sub_prefix(self.id, b'r');
        let start = after.map(|k| {
            let mut s = k.to_vec();
            s.push(0);
            s
        });
        let mut decoder = self.codec.decoder(None, max_rows.max(1));
        let mut last_key = Vec::new();
        self.store
            .scan_prefix(Some(at), &prefix, start.as_deref(), |key, value| {
                decoder.push(value)?;
                if decoder.len() >= max_rows {
                    last_key = key.to_vec();
                    return Ok(ControlFlow::Break(()));
                }
                last_key.clear();
                last_key.extend_from_slice(key);
                Ok(ControlFlow::Continue(()))
            })?;
        if decoder.is_empty() {
            return Ok(None);
        }
        let stored = decoder.len();
        let rows = ChangeBatch::inserts(self.conform(&decoder.flush()?)?);
        let rows = match self.view.get() {
            Some(true) => crate::job::row_instances(&rows)?,
            _ => rows,
        };
        Ok(Some(RowChunk {
            rows,
            last_key,
            stored,
        }))
    }

    /// True when rows are stored in the order they were committed: a table without a primary
    /// key keys its rows by hidden row ids, which grow with every insert, each change-log entry
    /// holding at most [`SCAN_BATCH_ROWS`] rows of consecutive ids.
    pub fn keys_in_arrival_order(&self) -> bool {
        self.key_codec.is_none() && self.view.get().is_none()
    }

    /// The hidden row id a row key of a table without a primary key ends with.
    pub fn row_id(&self, key: &[u8]) -> Option<u64> {
        let id = key.get(sub_prefix(self.id, b'r').len()..)?;
        Some(u64::from_be_bytes(id.try_into().ok()?))
    }

    /// The row key (as [`TableStore::scan_from`] orders them) of each row of change-log entry
    /// `seq`, read at `at`; `None` when every row of the entry comes after every row stored
    /// before it (inserts into a table without a primary key: hidden row ids only grow).
    pub fn change_keys(
        &self,
        at: Option<&Snapshot>,
        seq: u64,
        change: &ChangeBatch,
    ) -> Result<Option<Vec<Vec<u8>>>> {
        if self.key_codec.is_some() {
            return Ok(Some(self.primary_keys(&change.data)?));
        }
        if self.view.get().is_some() {
            // A view without a key has one row.
            return Ok(Some(vec![self.row_key(&[]); change.num_rows()]));
        }
        let key = seq_key(self.id, b'k', seq);
        let stored = match at {
            Some(snap) => self.store.get_at(snap, &key)?,
            None => self.store.get(&key)?,
        };
        match stored {
            Some(ids) if ids.len() == 8 * change.num_rows() => Ok(Some(
                ids.chunks_exact(8).map(|id| self.row_key(id)).collect(),
            )),
            Some(ids) => Err(EngineError::Corrupt(format!(
                "table \"{}\": {} bytes of row ids for the {} rows of change {seq}",
                self.name,
                ids.len(),
                change.num_rows()
            ))),
            None if change.ops.iter().all(|o| *o == Op::Insert) => Ok(None),
            None => Err(EngineError::Corrupt(format!(
                "table \"{}\": change {seq} has no row ids",
                self.name
            ))),
        }
    }

    /// Removes the change-log entries up to `upto` (at most the last committed one), which every
    /// reader has committed; returns whether anything was removed. Reading from before `upto`
    /// afterwards fails with [`EngineError::Trimmed`].
    pub fn trim(&self, upto: u64) -> Result<bool> {
        let mut counters = self.writer.lock();
        if self.closed.load(Ordering::Acquire) {
            return Ok(false);
        }
        let upto = upto.min(counters.next_seq - 1);
        let from = self.trimmed.load(Ordering::Acquire);
        if upto <= from {
            return Ok(false);
        }
        let (start, end) = (
            seq_key(self.id, b'l', from + 1),
            seq_key(self.id, b'l', upto + 1),
        );
        let mut removed = 0u64;
        self.store
            .scan_prefix(None, &sub_prefix(self.id, b'l'), Some(&start), |k, v| {
                if k >= end.as_slice() {
                    return Ok(ControlFlow::Break(()));
                }
                removed += (k.len() + v.len()) as u64;
                Ok(ControlFlow::Continue(()))
            })?;
        let mut batch = StateBatch::new();
        batch.delete_range(&start, Some(&end));
        for sub in [b'k', b't'] {
            batch.delete_range(
                &seq_key(self.id, sub, from + 1),
                Some(&seq_key(self.id, sub, upto + 1)),
            );
        }
        batch.put(sub_prefix(self.id, b'f'), upto.to_le_bytes());
        let next = Counters {
            log_bytes: counters.log_bytes.saturating_sub(removed),
            ..*counters
        };
        batch.put(sub_prefix(self.id, b'm'), next.encode());
        // Like the commits the readers' positions came in: a crash that loses it loses them.
        self.store.write(batch, false)?;
        *counters = next;
        self.trimmed.store(upto, Ordering::Release);
        Ok(true)
    }

    /// The change-log entries stored now and their bytes (a scan of the log: for monitoring).
    pub fn log_size(&self) -> Result<(u64, u64)> {
        let (mut entries, mut bytes) = (0u64, 0u64);
        self.store
            .scan_prefix(None, &sub_prefix(self.id, b'l'), None, |_, v| {
                entries += 1;
                bytes += v.len() as u64;
                Ok(ControlFlow::Continue(()))
            })?;
        Ok((entries, bytes))
    }

    /// Up to `n` of the most recently stored rows (by row key: the newest inserts of a table
    /// without a primary key), newest first.
    pub fn newest_rows(&self, n: usize) -> Result<Option<RecordBatch>> {
        let prefix = sub_prefix(self.id, b'r');
        let end = crate::state::prefix_end(&prefix);
        let mut cursor = self.store.cursor(&prefix, end.as_deref(), true);
        let mut decoder = self.codec.decoder(None, n.max(1));
        while decoder.len() < n {
            let Some((_, value)) = cursor.entry() else {
                break;
            };
            decoder.push(value)?;
            cursor.advance();
        }
        cursor.status()?;
        if decoder.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.conform(&decoder.flush()?)?))
    }

    /// Retention: removes the oldest rows (in row-key order) whose timestamp column `column` is
    /// before `cutoff` (microseconds since the epoch), without a change-log entry, so views that
    /// counted them keep them (a Kafka topic's retention). Stops at the first chunk of
    /// [`SCAN_BATCH_ROWS`] rows without one to remove, or after `max_rows` removed; returns how
    /// many were removed.
    pub fn expire(&self, column: usize, cutoff: i64, max_rows: usize) -> Result<u64> {
        let prefix = sub_prefix(self.id, b'r');
        let mut decoder = self.codec.decoder(Some(&[column]), SCAN_BATCH_ROWS);
        let mut chunk: Vec<(Vec<u8>, usize)> = Vec::with_capacity(SCAN_BATCH_ROWS);
        let mut expired: Vec<Vec<u8>> = Vec::new();
        let mut bytes = 0i64;
        let mut sweep = |chunk: &mut Vec<(Vec<u8>, usize)>, times: RecordBatch| -> Result<bool> {
            let micros = datafusion::arrow::compute::cast(
                times.column(0),
                &datafusion::arrow::datatypes::DataType::Timestamp(
                    datafusion::arrow::datatypes::TimeUnit::Microsecond,
                    None,
                ),
            )?;
            let micros = micros
                .as_any()
                .downcast_ref::<datafusion::arrow::array::TimestampMicrosecondArray>()
                .ok_or_else(|| EngineError::Internal("retention column is no timestamp".into()))?;
            let before = expired.len();
            for (i, (key, size)) in chunk.drain(..).enumerate() {
                if micros.is_valid(i) && micros.value(i) < cutoff && expired.len() < max_rows {
                    expired.push(key);
                    bytes += size as i64;
                }
            }
            Ok(expired.len() > before && expired.len() < max_rows)
        };
        let mut more = true;
        self.store.scan_prefix(None, &prefix, None, |key, value| {
            decoder.push(value)?;
            chunk.push((key.to_vec(), key.len() + value.len()));
            if decoder.len() == SCAN_BATCH_ROWS {
                more = sweep(&mut chunk, decoder.flush()?)?;
                if !more {
                    return Ok(ControlFlow::Break(()));
                }
            }
            Ok(ControlFlow::Continue(()))
        })?;
        if more && !decoder.is_empty() {
            sweep(&mut chunk, decoder.flush()?)?;
        }
        if expired.is_empty() {
            return Ok(0);
        }
        let mut counters = self.writer.lock();
        if self.closed.load(Ordering::Acquire) {
            return Ok(0);
        }
        let mut batch = StateBatch::new();
        for key in &expired {
            batch.delete(key);
        }
        let delta = Delta {
            rows: -(expired.len() as i64),
            bytes: -bytes,
        };
        let next = counters.after(counters.next_seq, 0, delta);
        batch.put(sub_prefix(self.id, b'm'), next.encode());
        self.store.write(batch, false)?;
        *counters = next;
        Ok(expired.len() as u64)
    }

    /// The last trimmed sequence (0 when the log is whole).
    pub fn trimmed(&self) -> u64 {
        self.trimmed.load(Ordering::Acquire)
    }

    /// Keeps the entries after `after` from being trimmed until the hold is dropped or advanced.
    pub fn hold(self: &Arc<Self>, after: u64) -> LogHold {
        let id = self.next_hold.fetch_add(1, Ordering::Relaxed);
        self.holds.lock().insert(id, after);
        LogHold {
            table: Arc::clone(self),
            id,
        }
    }

    /// The oldest position a [`LogHold`] keeps, if any.
    pub fn oldest_hold(&self) -> Option<u64> {
        self.holds.lock().values().min().copied()
    }

    /// When change-log entry `seq` was committed, in Unix milliseconds (`None` for an entry
    /// trimmed, not written yet, or written by a server that did not record it).
    pub fn commit_time(&self, at: Option<&Snapshot>, seq: u64) -> Result<Option<i64>> {
        let key = seq_key(self.id, b't', seq);
        let bytes = match at {
            Some(snap) => self.store.get_at(snap, &key)?,
            None => self.store.get(&key)?,
        };
        Ok(bytes.and_then(|b| b.as_slice().try_into().ok().map(i64::from_le_bytes)))
    }

    /// The last change-log entry committed before Unix millisecond `ms` (the trim point when
    /// entries from `ms` on must stay): a binary search over the entries' commit times, which
    /// grow with the sequence. Entries without a recorded time count as older than any `ms`.
    pub fn last_seq_before(&self, ms: i64) -> Result<u64> {
        let (mut lo, mut hi) = (self.trimmed(), self.last_seq());
        // Invariant: entries up to `lo` are before `ms` (or gone); those after `hi` are not.
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            match self.commit_time(None, mid)? {
                Some(t) if t >= ms => hi = mid - 1,
                _ => lo = mid,
            }
        }
        Ok(lo)
    }

    /// What the table stores now.
    pub fn size(&self) -> TableSize {
        let c = self.writer.lock();
        TableSize {
            rows: c.rows,
            row_bytes: c.row_bytes,
            log_bytes: c.log_bytes,
        }
    }

    /// Marks the table dropped, once no write is under way: trims and retention write nothing
    /// after it (they would leave keys of a table that no longer exists).
    pub fn close(&self) {
        let _writer = self.writer.lock();
        self.closed.store(true, Ordering::Release);
    }

    /// Whether the table was dropped ([`TableStore::close`]).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Adds to `batch` what makes table `id`, whose rows and `counters` were just put there
    /// (restored from a savepoint), a table whose change log starts after its last commit: the
    /// entries before are not there, and readers start from the rows.
    pub fn restart_log(batch: &mut StateBatch, id: u64, counters: &[u8]) -> Result<()> {
        let word = |i: usize| {
            counters
                .get(i * 8..i * 8 + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        };
        let Some(next_seq) = word(0) else {
            return Err(EngineError::Corrupt(format!(
                "table {id}: restored counters of {} bytes",
                counters.len()
            )));
        };
        if counters.len() == 40 {
            let kept = Counters {
                next_seq,
                next_row_id: word(1).unwrap_or(0),
                rows: word(2).unwrap_or(0),
                row_bytes: word(3).unwrap_or(0),
                log_bytes: 0,
            };
            batch.put(sub_prefix(id, b'm'), kept.encode());
        }
        batch.put(
            sub_prefix(id, b'f'),
            next_seq.saturating_sub(1).to_le_bytes(),
        );
        Ok(())
    }

    /// Adds the removal of every row and log entry of table `id` to `batch`.
    pub fn drop_data(batch: &mut StateBatch, id: u64) {
        batch.delete_prefix(&table_prefix(id));
    }

    /// The table's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The table's schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Computes the table's computed columns on every insert from now on (set once, when the
    /// table is opened).
    pub fn set_computed(&self, computed: Arc<dyn Computed>) {
        let _ = self.computed.set(computed);
    }

    /// The columns that `columns` of the table's rows are made of: those, and the columns the
    /// computed ones among them are computed from.
    pub fn inputs_of(&self, columns: &[usize]) -> Vec<usize> {
        let mut all = columns.to_vec();
        if let Some(computed) = self.computed.get() {
            for (column, inputs) in computed.inputs() {
                if columns.contains(&column) {
                    all.extend(inputs);
                }
            }
        }
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Checks every inserted or updated row from now on (set once, when the table is opened).
    pub fn set_check(&self, check: Arc<dyn RowCheck>) {
        let _ = self.check.set(check);
    }

    /// `rows` with computed columns filled in, relabelled with the table's schema and checked.
    fn shaped(&self, rows: &RecordBatch) -> Result<RecordBatch> {
        // The hidden columns, if given, are set aside while computed columns are filled.
        let visible = self.visible_columns();
        let hidden: Vec<ArrayRef> = if rows.num_columns() > visible {
            rows.columns()[visible..].to_vec()
        } else {
            (self.schema.fields().iter().skip(visible))
                .map(|f| new_null_array(f.data_type(), rows.num_rows()))
                .collect()
        };
        let rows = match self.computed.get() {
            Some(c) => {
                let given = (0..visible.min(rows.num_columns())).collect::<Vec<_>>();
                c.fill(&rows.project(&given)?)?
            }
            None => rows.clone(),
        };
        let mut columns = rows.columns()[..visible.min(rows.num_columns())].to_vec();
        columns.extend(hidden);
        let rows = self.conform_columns(&columns, rows.num_rows())?;
        match self.check.get() {
            Some(c) => c.check(rows),
            None => Ok(rows),
        }
    }

    /// `rows` (the stored columns, computed ones optional) as the table's rows: computed
    /// columns filled in, NOT NULL checked. For rows that come from outside the table (a job
    /// reading files) but must look as if read from it.
    pub fn complete(&self, rows: &RecordBatch) -> Result<RecordBatch> {
        self.check_not_null(rows)?;
        self.shaped(rows)
    }

    /// Sequence number of the last committed change-log entry (0 before the first).
    pub fn last_seq(&self) -> u64 {
        *self.committed.borrow()
    }

    /// A receiver that sees the last committed sequence number change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }

    /// Inserts `batches` (with the table's column types) as one atomic, durable change: every row
    /// is stored or none is. Returns the row count.
    pub fn insert(&self, batches: &[RecordBatch]) -> Result<u64> {
        self.insert_with(batches, StateBatch::new())
    }

    /// [`TableStore::insert`], with `extra` written in the same atomic commit (a source
    /// connector's position, say).
    pub fn insert_with(&self, batches: &[RecordBatch], extra: StateBatch) -> Result<u64> {
        let batches: Vec<RecordBatch> = batches
            .iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| {
                self.check_not_null(b)?;
                self.shaped(b)
            })
            .collect::<Result<_>>()?;
        if batches.is_empty() {
            return Ok(0);
        }
        let mut counters = self.writer.lock();
        let mut batch = extra;
        let mut keys_per_batch = Vec::with_capacity(batches.len());
        if self.key_codec.is_some() {
            let mut all = Vec::new();
            for rows in &batches {
                let keys = self.primary_keys(rows)?;
                all.extend(keys.iter().cloned());
                keys_per_batch.push(keys);
            }
            self.check_unique(&all, &HashSet::new())?;
        } else {
            for rows in &batches {
                let first = counters.next_row_id;
                counters.next_row_id += rows.num_rows() as u64;
                keys_per_batch.push(
                    (first..counters.next_row_id)
                        .map(|id| self.row_key(&id.to_be_bytes()))
                        .collect(),
                );
            }
        }
        let mut total = 0u64;
        let mut delta = Delta::default();
        let mut changes = Vec::with_capacity(batches.len());
        for (rows, keys) in batches.into_iter().zip(&keys_per_batch) {
            delta.bytes += self.put_rows(&mut batch, keys, &rows)?;
            total += rows.num_rows() as u64;
            changes.push(ChangeBatch::inserts(rows));
        }
        delta.rows = total as i64;
        // Row ids handed out above stay handed out if the commit fails: a transaction may hold
        // ids handed out since the last durable counters, so they must not be handed out again.
        self.commit(&mut counters, batch, &changes, delta, true)?;
        Ok(total)
    }

    /// Applies a changelog source's records to a table with a primary key, in order, as one
    /// atomic commit with `extra` (the source's position): a row whose `delete` flag is false
    /// replaces the row with its key (an upsert), one whose flag is true removes it (only its
    /// key columns matter). The change log gets what really changed: an insert, an update
    /// (before and after) or a delete; deleting a missing key changes nothing. Computed columns
    /// are computed here. Returns the rows changed.
    pub fn upsert(&self, rows: &RecordBatch, delete: &[bool], extra: StateBatch) -> Result<u64> {
        if self.key_codec.is_none() {
            return Err(EngineError::Internal(format!(
                "upsert into table \"{}\" without a primary key",
                self.name
            )));
        }
        if delete.len() != rows.num_rows() {
            return Err(EngineError::Internal(
                "upsert flags of the wrong length".into(),
            ));
        }
        let rows = self.shaped(rows)?;
        // Upserted rows must be whole; deleted ones only need their key.
        let upserted = BooleanArray::from(delete.iter().map(|d| !d).collect::<Vec<_>>());
        self.check_not_null(&filter_record_batch(&rows, &upserted)?)?;
        let mut counters = self.writer.lock();
        self.upsert_locked(&mut counters, &rows, delete, extra)
    }

    /// [`TableStore::upsert`] of `rows` (shaped and checked), the writer locked.
    fn upsert_locked(
        &self,
        counters: &mut Counters,
        rows: &RecordBatch,
        delete: &[bool],
        extra: StateBatch,
    ) -> Result<u64> {
        let keys = self.primary_keys(rows)?;
        // The stored rows of the keys touched, decoded into one batch.
        let mut distinct: Vec<&Vec<u8>> = Vec::new();
        let mut seen = HashSet::new();
        for k in &keys {
            if seen.insert(k.as_slice()) {
                distinct.push(k);
            }
        }
        let stored = self.store.multi_get(&distinct)?;
        let mut decoder = self.codec.decoder(None, distinct.len().max(1));
        // Per key: where its current row is, (0, i) in `old` or (1, i) in `rows`.
        let mut current: std::collections::HashMap<&[u8], (usize, usize)> =
            std::collections::HashMap::with_capacity(distinct.len());
        let mut n_old = 0;
        for (k, v) in distinct.iter().zip(&stored) {
            if let Some(v) = v {
                decoder.push(v)?;
                current.insert(k.as_slice(), (0, n_old));
                n_old += 1;
            }
        }
        let old = decoder.flush()?;
        let mut take: Vec<(usize, usize)> = Vec::new();
        let mut ops: Vec<Op> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let before = current.get(key.as_slice()).copied();
            if delete[i] {
                if let Some(b) = before {
                    take.push(b);
                    ops.push(Op::Delete);
                    current.remove(key.as_slice());
                }
                continue;
            }
            match before {
                Some(b) => {
                    take.push(b);
                    ops.push(Op::UpdateBefore);
                    take.push((1, i));
                    ops.push(Op::UpdateAfter);
                }
                None => {
                    take.push((1, i));
                    ops.push(Op::Insert);
                }
            }
            current.insert(key.as_slice(), (1, i));
        }
        if take.is_empty() {
            // Nothing changed, but the position moves.
            if !extra.is_empty() {
                self.store.write(extra, true)?;
            }
            return Ok(0);
        }
        let old = self.conform(&old)?;
        let columns = (0..rows.num_columns())
            .map(|c| interleave(&[old.column(c).as_ref(), rows.column(c).as_ref()], &take))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let data = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        let change = ChangeBatch { data, ops };
        let mut batch = extra;
        // In order: the last change of each key decides what is stored.
        let delta = self.apply_changes(&mut batch, &change)?;
        let changed = change
            .ops
            .iter()
            .filter(|o| **o != Op::UpdateBefore)
            .count() as u64;
        self.commit(counters, batch, &[change], delta, true)?;
        Ok(changed)
    }

    /// An INSERT whose rows may conflict with stored ones on the primary key (`ON CONFLICT`):
    /// `resolve` gets the rows (shaped: computed columns filled, values in their stored form) and
    /// their [`Conflicts`], and returns the rows to store, each under its key, new or replacing
    /// the stored one. The lookup and the write happen under the table's writer lock, as one
    /// atomic commit. Returns the rows stored.
    pub fn insert_resolving<E: From<EngineError>>(
        &self,
        rows: &RecordBatch,
        resolve: impl FnOnce(&RecordBatch, Conflicts) -> std::result::Result<RecordBatch, E>,
    ) -> std::result::Result<u64, E> {
        self.check_not_null(rows)?;
        let rows = self.shaped(rows)?;
        let mut counters = self.writer.lock();
        let keys = self.primary_keys(&rows)?;
        let stored = self.store.multi_get(&keys)?;
        let conflicts = self.conflicts(&keys, |i| stored[i].as_deref())?;
        let out = resolve(&rows, conflicts)?;
        if out.num_rows() == 0 {
            return Ok(0);
        }
        let out = self.shaped(&out)?;
        self.check_not_null(&out)?;
        let n = out.num_rows();
        Ok(self.upsert_locked(&mut counters, &out, &vec![false; n], StateBatch::new())?)
    }

    /// The [`Conflicts`] of rows with `keys`, `stored(i)` being the row stored under key `i`.
    fn conflicts<'a>(
        &self,
        keys: &[Vec<u8>],
        stored: impl Fn(usize) -> Option<&'a [u8]>,
    ) -> Result<Conflicts> {
        let mut decoder = self.codec.decoder(None, keys.len().max(1));
        let mut indices = Vec::with_capacity(keys.len());
        let mut found = 0u32;
        for i in 0..keys.len() {
            match stored(i) {
                Some(v) => {
                    decoder.push(v)?;
                    indices.push(Some(found));
                    found += 1;
                }
                None => indices.push(None),
            }
        }
        let decoded = self.conform(&decoder.flush()?)?;
        let indices = UInt32Array::from(indices);
        let columns = (decoded.columns().iter())
            .map(|c| take(c.as_ref(), &indices, None))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let existing = RecordBatch::try_new_with_options(
            Arc::clone(&self.nullable_schema()),
            columns,
            &datafusion::arrow::record_batch::RecordBatchOptions::new()
                .with_row_count(Some(keys.len())),
        )?;
        let mut seen = HashSet::with_capacity(keys.len());
        let repeated = keys.iter().map(|k| !seen.insert(k.as_slice())).collect();
        Ok(Conflicts {
            found: indices.iter().map(|i| i.is_some()).collect(),
            existing,
            repeated,
        })
    }

    /// The table's schema with every column nullable.
    fn nullable_schema(&self) -> SchemaRef {
        Arc::new(datafusion::arrow::datatypes::Schema::new(
            (self.schema.fields().iter())
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ))
    }

    /// Runs one UPDATE or DELETE: `decide` sees the current rows chunk by chunk and says which rows
    /// the statement touches and, for UPDATE, their new values. All changes commit as one entry.
    pub fn modify<E: From<EngineError>>(
        &self,
        decide: impl FnMut(&RecordBatch) -> std::result::Result<Modification, E>,
    ) -> std::result::Result<u64, E> {
        let mut counters = self.writer.lock();
        let prefix = sub_prefix(self.id, b'r');
        let Chosen {
            keys: old_keys,
            bytes: old_bytes,
            old_rows,
            new_rows,
            updating,
        } = self.choose(|f| self.store.scan_prefix(None, &prefix, None, f), decide)?;
        let old = concat_batches(&self.schema, &old_rows).map_err(EngineError::from)?;
        if old.num_rows() == 0 {
            return Ok(0);
        }
        let mut batch = StateBatch::new();
        let mut delta = Delta::default();
        let change = if updating {
            let (new, new_keys) = self.updated(&new_rows, &old_keys, |moved, freed| {
                self.check_unique(moved, freed)
            })?;
            for (old_key, new_key) in old_keys.iter().zip(&new_keys) {
                if old_key != new_key {
                    batch.delete(old_key);
                }
            }
            delta.bytes = self.put_rows(&mut batch, &new_keys, &new)? - old_bytes;
            pair_updates(&old, &new)?
        } else {
            for key in &old_keys {
                batch.delete(key);
            }
            delta = Delta {
                rows: -(old_keys.len() as i64),
                bytes: -old_bytes,
            };
            ChangeBatch {
                ops: vec![Op::Delete; old.num_rows()],
                data: old,
            }
        };
        let n = change.num_rows() as u64 / if updating { 2 } else { 1 };
        // Without a primary key, readers cannot tell from the rows which stored rows changed.
        let row_keys = if self.key_codec.is_some() {
            None
        } else if updating {
            Some(old_keys.iter().flat_map(|k| [k, k]).cloned().collect())
        } else {
            Some(old_keys)
        };
        self.commit_keyed(&mut counters, batch, &change, row_keys.as_deref(), delta)?;
        Ok(n)
    }

    /// Runs an UPDATE's or DELETE's `decide` over the rows `scan` yields (row key, stored row),
    /// chunk by chunk, and collects what it chose ([`TableStore::modify`] scans the committed
    /// rows, [`TableStore::stage_modify`] a transaction's view of them).
    fn choose<E: From<EngineError>>(
        &self,
        scan: impl FnOnce(&mut dyn FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>>) -> Result<()>,
        mut decide: impl FnMut(&RecordBatch) -> std::result::Result<Modification, E>,
    ) -> std::result::Result<Chosen, E> {
        let mut chosen = Chosen {
            keys: Vec::new(),
            bytes: 0,
            old_rows: Vec::new(),
            new_rows: Vec::new(),
            updating: false,
        };
        let mut failure: Option<E> = None;
        let mut chunk_keys: Vec<(Vec<u8>, usize)> = Vec::with_capacity(SCAN_BATCH_ROWS);
        let mut decoder = self.codec.decoder(None, SCAN_BATCH_ROWS);
        let mut handle_chunk =
            |keys: &mut Vec<(Vec<u8>, usize)>, rows: RecordBatch| -> std::result::Result<(), E> {
                let m = decide(&rows)?;
                if m.selected.len() != rows.num_rows() {
                    return Err(
                        EngineError::Internal("row selection of the wrong length".into()).into(),
                    );
                }
                for (i, (key, size)) in keys.drain(..).enumerate() {
                    if m.selected.is_valid(i) && m.selected.value(i) {
                        chosen.keys.push(key);
                        chosen.bytes += size as i64;
                    }
                }
                chosen
                    .old_rows
                    .push(filter_record_batch(&rows, &m.selected).map_err(EngineError::from)?);
                if let Some(r) = m.replacement {
                    chosen.updating = true;
                    chosen.new_rows.push(r);
                }
                Ok(())
            };
        scan(&mut |key, value| {
            decoder.push(value)?;
            chunk_keys.push((key.to_vec(), key.len() + value.len()));
            if decoder.len() == SCAN_BATCH_ROWS {
                let rows = decoder.flush()?;
                if let Err(e) = handle_chunk(&mut chunk_keys, rows) {
                    failure = Some(e);
                    return Ok(ControlFlow::Break(()));
                }
            }
            Ok(ControlFlow::Continue(()))
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        if !decoder.is_empty() {
            let rows = decoder.flush()?;
            handle_chunk(&mut chunk_keys, rows)?;
        }
        Ok(chosen)
    }

    /// An UPDATE's `new_rows` as the table stores them, with their row keys: a keyless table's
    /// rows keep `old_keys`; where a primary key moved, `check_moved` gets the new keys that
    /// differ and the keys the statement frees.
    fn updated(
        &self,
        new_rows: &[RecordBatch],
        old_keys: &[Vec<u8>],
        check_moved: impl FnOnce(&[Vec<u8>], &HashSet<&[u8]>) -> Result<()>,
    ) -> Result<(RecordBatch, Vec<Vec<u8>>)> {
        let new = concat_batches(&self.schema, new_rows)?;
        if new.num_rows() != old_keys.len() {
            return Err(EngineError::Internal(
                "update produced a different row count".into(),
            ));
        }
        self.check_not_null(&new)?;
        let new = self.conform(&new)?;
        let new = match self.check.get() {
            Some(c) => c.check(new)?,
            None => new,
        };
        let keys = match &self.key_codec {
            Some(_) => {
                let keys = self.primary_keys(&new)?;
                let moved: Vec<Vec<u8>> = keys
                    .iter()
                    .zip(old_keys)
                    .filter(|(n, o)| n != o)
                    .map(|(n, _)| n.clone())
                    .collect();
                let freed: HashSet<&[u8]> = old_keys.iter().map(|k| k.as_slice()).collect();
                check_moved(&moved, &freed)?;
                keys
            }
            None => old_keys.to_vec(),
        };
        Ok((new, keys))
    }

    /// Reads the current rows at `at`, `projection` applied, in batches of up to `batch_rows`.
    /// `emit` may stop the scan early by returning `Break`.
    pub fn scan(
        &self,
        at: &Snapshot,
        projection: Option<&[usize]>,
        batch_rows: usize,
        mut emit: impl FnMut(RecordBatch) -> Result<ControlFlow<()>>,
    ) -> Result<()> {
        let prefix = sub_prefix(self.id, b'r');
        let mut decoder = self.codec.decoder(projection, batch_rows);
        let mut stopped = false;
        self.store
            .scan_prefix(Some(at), &prefix, None, |_, value| {
                decoder.push(value)?;
                if decoder.len() >= batch_rows {
                    let flow = emit(decoder.flush()?)?;
                    stopped = flow.is_break();
                    return Ok(flow);
                }
                Ok(ControlFlow::Continue(()))
            })?;
        if !stopped && !decoder.is_empty() {
            let _ = emit(decoder.flush()?)?;
        }
        Ok(())
    }

    /// Change-log entries with a sequence number above `after`, oldest first, at most `max`.
    pub fn changes_after(
        &self,
        at: Option<&Snapshot>,
        after: u64,
        max: usize,
    ) -> Result<Vec<(u64, ChangeBatch)>> {
        let kept_after = self.trimmed();
        if after < kept_after {
            return Err(EngineError::Trimmed {
                relation: self.name.clone(),
                after,
                kept_after,
            });
        }
        let prefix = sub_prefix(self.id, b'l');
        let start = seq_key(self.id, b'l', after.saturating_add(1));
        let mut out = Vec::new();
        self.store
            .scan_prefix(at, &prefix, Some(&start), |key, value| {
                let seq_bytes: [u8; 8] = key
                    .get(prefix.len()..)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| {
                        EngineError::Corrupt("change log key of the wrong length".into())
                    })?;
                out.push((u64::from_be_bytes(seq_bytes), ChangeBatch::from_ipc(value)?));
                Ok(if out.len() >= max {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                })
            })?;
        Ok(out)
    }

    /// Adds a materialized view's result changes to `batch`: rows are keyed by the view's key
    /// (its GROUP BY columns; no key means the view has exactly one row). `Insert`/`UpdateAfter`
    /// store a row, `Delete`/`UpdateBefore` remove it. Nothing is written until
    /// [`TableStore::commit_epoch`].
    pub fn apply_changes(&self, batch: &mut StateBatch, changes: &ChangeBatch) -> Result<Delta> {
        let rows = self.conform(&changes.data)?;
        let keys = match self.key_codec {
            Some(_) => self.primary_keys(&rows)?,
            None => vec![self.row_key(&[]); rows.num_rows()],
        };
        let enc = self.codec.encoder(&rows)?;
        let mut buf = Vec::with_capacity(64);
        let mut delta = Delta::default();
        for (row, (key, op)) in keys.iter().zip(&changes.ops).enumerate() {
            buf.clear();
            enc.encode(row, &mut buf);
            let size = (key.len() + buf.len()) as i64;
            // An update's halves leave the row count; an insert or delete changes it.
            let count = match op {
                Op::Insert => 1,
                Op::Delete => -1,
                Op::UpdateBefore | Op::UpdateAfter => 0,
            };
            if op.is_add() {
                batch.put(key, &buf);
                delta += Delta {
                    rows: count,
                    bytes: size,
                };
            } else if *op == Op::UpdateBefore
                && changes.ops.get(row + 1) == Some(&Op::UpdateAfter)
                && keys.get(row + 1) == Some(key)
            {
                // Overwritten by the update's new row, next.
                delta.bytes -= size;
            } else {
                batch.delete(key);
                delta += Delta {
                    rows: count,
                    bytes: -size,
                };
            }
        }
        Ok(delta)
    }

    /// Commits `batch` (a streaming job's epoch: view rows, operator state, source positions) with
    /// `changes` appended to this view's change log, atomically; synced to disk when `durable`
    /// (otherwise it survives a crash of the process but not of the machine).
    pub fn commit_epoch(
        &self,
        batch: StateBatch,
        changes: &[ChangeBatch],
        delta: Delta,
        durable: bool,
    ) -> Result<()> {
        let mut counters = self.writer.lock();
        self.commit(&mut counters, batch, changes, delta, durable)
    }

    fn row_key(&self, suffix: &[u8]) -> Vec<u8> {
        let mut k = sub_prefix(self.id, b'r');
        k.extend_from_slice(suffix);
        k
    }

    fn primary_keys(&self, rows: &RecordBatch) -> Result<Vec<Vec<u8>>> {
        let Some(key_codec) = &self.key_codec else {
            return Err(EngineError::Internal(
                "primary keys of a table without one".into(),
            ));
        };
        let columns: Vec<ArrayRef> = self
            .primary_key
            .iter()
            .map(|&i| Arc::clone(rows.column(i)))
            .collect();
        let enc = key_codec.encoder_for_columns(&columns)?;
        let mut keys = Vec::with_capacity(rows.num_rows());
        let mut buf = Vec::new();
        for row in 0..rows.num_rows() {
            buf.clear();
            enc.encode(row, &mut buf);
            keys.push(self.row_key(&buf));
        }
        Ok(keys)
    }

    /// Fails if two of `keys` are equal, or one exists in the table and is not in `freed`.
    fn check_unique(&self, keys: &[Vec<u8>], freed: &HashSet<&[u8]>) -> Result<()> {
        let mut seen = HashSet::with_capacity(keys.len());
        for key in keys {
            if !seen.insert(key.as_slice()) {
                return Err(self.duplicate(key));
            }
        }
        for (key, existing) in keys.iter().zip(self.store.multi_get(keys)?) {
            if existing.is_some() && !freed.contains(key.as_slice()) {
                return Err(self.duplicate(key));
            }
        }
        Ok(())
    }

    fn duplicate(&self, key: &[u8]) -> EngineError {
        let prefix_len = sub_prefix(self.id, b'r').len();
        let key = match (&self.key_codec, key.get(prefix_len..)) {
            (Some(codec), Some(bytes)) => {
                let mut dec = codec.decoder(None, 1);
                match dec.push(bytes).and_then(|_| dec.flush()) {
                    Ok(batch) => describe_key(&batch),
                    Err(_) => String::new(),
                }
            }
            _ => String::new(),
        };
        EngineError::DuplicateKey {
            table: self.name.clone(),
            key,
        }
    }

    fn check_not_null(&self, rows: &RecordBatch) -> Result<()> {
        for (field, column) in self.schema.fields().iter().zip(rows.columns()) {
            if !field.is_nullable() && column.null_count() > 0 {
                return Err(EngineError::NotNull {
                    table: self.name.clone(),
                    column: field.name().clone(),
                });
            }
        }
        Ok(())
    }

    /// `rows` relabelled with the table's schema (same types; nullability may differ).
    fn conform(&self, rows: &RecordBatch) -> Result<RecordBatch> {
        self.conform_columns(rows.columns(), rows.num_rows())
    }

    /// [`TableStore::conform`] of `columns` (of `rows` rows).
    fn conform_columns(&self, columns: &[ArrayRef], rows: usize) -> Result<RecordBatch> {
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns.to_vec(),
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?)
    }

    /// Puts `rows` under `keys`; returns their bytes (keys and values).
    fn put_rows(
        &self,
        batch: &mut StateBatch,
        keys: &[Vec<u8>],
        rows: &RecordBatch,
    ) -> Result<i64> {
        let enc = self.codec.encoder(rows)?;
        let mut buf = Vec::with_capacity(64);
        let mut bytes = 0;
        for (row, key) in keys.iter().enumerate() {
            buf.clear();
            enc.encode(row, &mut buf);
            bytes += (key.len() + buf.len()) as i64;
            batch.put(key, &buf);
        }
        Ok(bytes)
    }

    /// Writes `batch` plus one log entry per change (split into bounded entries) and the counters
    /// (moved by `delta`), atomically, synced when `durable`, then tells subscribers.
    fn commit(
        &self,
        counters: &mut Counters,
        batch: StateBatch,
        changes: &[ChangeBatch],
        delta: Delta,
        durable: bool,
    ) -> Result<()> {
        let changes: Vec<(&ChangeBatch, Option<&[Vec<u8>]>)> =
            changes.iter().map(|c| (c, None)).collect();
        self.commit_entries(counters, batch, &changes, delta, durable)
    }

    /// [`TableStore::commit`] of one synced change whose rows' keys readers cannot derive from
    /// the rows (`row_keys`, one per row, for a table without a primary key).
    fn commit_keyed(
        &self,
        counters: &mut Counters,
        batch: StateBatch,
        change: &ChangeBatch,
        row_keys: Option<&[Vec<u8>]>,
        delta: Delta,
    ) -> Result<()> {
        self.commit_entries(counters, batch, &[(change, row_keys)], delta, true)
    }

    /// The log entries of `changes` (each split into bounded entries, with its rows' ids beside
    /// each entry when given) written with `batch` and the counters.
    fn commit_entries(
        &self,
        counters: &mut Counters,
        mut batch: StateBatch,
        changes: &[(&ChangeBatch, Option<&[Vec<u8>]>)],
        delta: Delta,
        durable: bool,
    ) -> Result<()> {
        let next = self.log_entries(counters, &mut batch, changes, delta)?;
        self.finish_commit(counters, batch, next, durable)
    }

    /// Adds the log entries of `changes` (as [`TableStore::commit_entries`] writes them) to
    /// `batch`; returns the counters after them, which the commit writes too and
    /// [`TableStore::publish`]es once written.
    fn log_entries(
        &self,
        counters: &Counters,
        batch: &mut StateBatch,
        changes: &[(&ChangeBatch, Option<&[Vec<u8>]>)],
        delta: Delta,
    ) -> Result<Counters> {
        let prefix_len = sub_prefix(self.id, b'r').len();
        let mut seq = counters.next_seq;
        let mut log_bytes = 0u64;
        let now = unix_ms().to_le_bytes();
        for (change, row_keys) in changes {
            for (start, len) in split_ranges(&change.ops) {
                let key = seq_key(self.id, b'l', seq);
                let entry = change.slice(start, len).to_ipc()?;
                log_bytes += (key.len() + entry.len()) as u64;
                batch.put(key, entry);
                batch.put(seq_key(self.id, b't', seq), now);
                if let Some(keys) = row_keys.and_then(|k| k.get(start..start + len)) {
                    let ids: Vec<u8> = keys
                        .iter()
                        .flat_map(|k| k.get(prefix_len..).unwrap_or_default().iter().copied())
                        .collect();
                    batch.put(seq_key(self.id, b'k', seq), ids);
                }
                seq += 1;
            }
        }
        Ok(counters.after(seq, log_bytes, delta))
    }

    /// Writes `batch` with the counters `next`, then tells subscribers of the new sequence.
    fn finish_commit(
        &self,
        counters: &mut Counters,
        mut batch: StateBatch,
        next: Counters,
        durable: bool,
    ) -> Result<()> {
        batch.put(sub_prefix(self.id, b'm'), next.encode());
        self.store.write(batch, durable)?;
        self.publish(counters, next);
        Ok(())
    }

    /// Takes the counters `next` of a commit that is written, and tells subscribers of its
    /// last sequence.
    fn publish(&self, counters: &mut Counters, next: Counters) {
        let last = next.next_seq - 1;
        *counters = next;
        self.committed.send_replace(last);
    }
}

/// Milliseconds since the Unix epoch, now.
fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The key of change-log entry (`sub` `l`), row-id list (`k`) or commit time (`t`) `seq` of
/// table `id`.
fn seq_key(id: u64, sub: u8, seq: u64) -> Vec<u8> {
    let mut k = sub_prefix(id, sub);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Where a change splits into log entries of [`SCAN_BATCH_ROWS`] rows (one more where that would
/// fall between the two halves of an update): (start, length) of each.
fn split_ranges(ops: &[Op]) -> Vec<(usize, usize)> {
    let n = ops.len();
    if n == 0 {
        return vec![(0, 0)];
    }
    let mut parts = Vec::new();
    let mut start = 0;
    while start < n {
        let mut end = (start + SCAN_BATCH_ROWS).min(n);
        if end < n && ops[end - 1] == Op::UpdateBefore {
            end += 1;
        }
        parts.push((start, end - start));
        start = end;
    }
    parts
}

/// Interleaves old and new rows into `UpdateBefore`/`UpdateAfter` pairs.
fn pair_updates(old: &RecordBatch, new: &RecordBatch) -> Result<ChangeBatch> {
    let n = old.num_rows();
    let indices: Vec<(usize, usize)> = (0..n).flat_map(|i| [(0, i), (1, i)]).collect();
    let ops = (0..n)
        .flat_map(|_| [Op::UpdateBefore, Op::UpdateAfter])
        .collect();
    ChangeBatch::interleave(old, new, &indices, ops)
}

/// `(a, b)=(1, x)` in Postgres' style for a one-row key batch.
fn describe_key(batch: &RecordBatch) -> String {
    let names: Vec<&str> = batch
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    let values: Vec<String> = batch
        .columns()
        .iter()
        .map(|c| {
            let one = take(c.as_ref(), &UInt32Array::from(vec![0u32]), None).ok();
            one.and_then(|a| datafusion::arrow::util::display::array_value_to_string(&a, 0).ok())
                .unwrap_or_default()
        })
        .collect();
    format!("({})=({})", names.join(", "), values.join(", "))
}

#[cfg(test)]
mod tests;
