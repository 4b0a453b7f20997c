//! Top-N per group, maintained under inserts, updates and deletes: the rows whose rank within
//! their group (`PARTITION BY`) by an order (`ORDER BY`) lies in `lo..=hi`, for `ROW_NUMBER()`,
//! `RANK()` or `DENSE_RANK()`. It is what `WHERE rn <= N` over a ranking window function,
//! `ORDER BY ... LIMIT n OFFSET m` and `DISTINCT ON` become (deduplication is top-1; over an
//! append-only input it is [`Dedup`], made for one row per group).
//!
//! **Inputs.** One input, hash-exchanged on the partition columns, so a group lives in one
//! instance and one key group. Rows may carry extra trailing columns (partition or order keys the
//! planner computed from expressions); only the first `width` columns are the row, stored and
//! emitted.
//!
//! **Semantics.** Ranks are those of SQL: `ROW_NUMBER()` numbers the rows in order, breaking ties
//! among rows with equal order keys by the rows' stored encoding (SQL leaves that order open);
//! `RANK()` gives tied rows the rank of the first of them and skips; `DENSE_RANK()` does not skip.
//! Identical rows are one entry with a count and rank like that many rows. The output is the rows
//! of rank `lo..=hi` followed by their rank (the window function's column). When the rank is
//! selected, a row whose rank changes is retracted and inserted again with its new rank;
//! otherwise only rows entering or leaving the range are emitted, and the rank column (which
//! nothing reads) holds the rank the row had when it entered.
//!
//! **State.** One [`StateTable`] (tag `t`) holding every row of every group, keyed by key group,
//! then the group key (length-prefixed [`RowCodec`] bytes, so a prefix scan finds the group), the
//! order key ([`SortKeyEncoder`], so key order is rank order), the row's encoding and its length;
//! the value is the row's count. When a row of the range goes, the next one is read from the
//! table (refill). Each group's rows of rank `<= hi` (its *window*) are also cached in memory,
//! bounded by a share of the state cache: a change that sorts after a full window costs no read
//! at all, and one that only adds rows merges them into the window; only a row leaving the
//! window makes the group be read again (from the table's cache, or RocksDB). Nothing is read
//! back at restart.
//!
//! **Append-only input** (Flink's append-only rank, and deduplication): rows can only move down, so
//! a group needs nothing but its window. Up to rank [`ONE_ENTRY_MAX_RANK`] the window is one entry
//! of another table (tag `w`): the group key, and as the value the window's rows (order key, row
//! and count, without the group key). The groups of a batch whose window is not cached are read
//! with one batched point read (RocksDB's bloom filters answer for groups never seen), each changed
//! window is written once per batch, and a row that does not enter a full window costs nothing.
//! Beyond that rank the rows stay one entry each (tag `t`), and rows falling below the window are
//! deleted.
//!
//! **Emission.** On update: each batch's net change per group is applied, and the group's window
//! before and after is compared. All retractions of a batch come before its insertions, so a
//! view keyed by its rows' key sees a row move between groups as a delete and an insert.
//!
//! **Top-N per time window** ([`WindowClose`]: a partition column is a window bound, Flink's
//! window Top-N and RisingWave's `PARTITION BY window_start`). A group's window is complete once
//! the watermark reaches its bound plus the bound's offset: its rows are then deleted from the
//! state (a timer per group, in a second table `c`, finds them), and a row for a complete window
//! is late (set aside as a late row). With EMIT ON WINDOW CLOSE nothing is emitted as rows
//! change: each group's final top rows are emitted once, when its window closes. Without a
//! window bound there is no watermark logic; nothing is late.

mod dedup;

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, UInt64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatchOptions;

use super::sorted::{self, PartitionOrder, SortedRows, Table, count_of, order_of, row_of};
use super::{LateRow, Operator, StateScope, timers};
use crate::changelog::{ChangeBatch, Op};
use crate::codec::RowDecoder;
use crate::state::StateBatch;
use crate::state::memory::Charge;
use crate::state::table::Direction;
use crate::{EngineError, Result};

pub use dedup::Dedup;

/// Which ranking function numbers the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankKind {
    /// 1, 2, 3, ... whatever the ties.
    RowNumber,
    /// Tied rows share a rank; the next rank skips (1, 1, 3).
    Rank,
    /// Tied rows share a rank; the next rank does not skip (1, 1, 2).
    DenseRank,
}

/// Append-only top-N up to this rank keep each group's window as one state entry; beyond it,
/// one entry per row (a window of thousands of rows is not rewritten for each change).
const ONE_ENTRY_MAX_RANK: u64 = 256;

impl TopNSpec {
    /// Each group's state is one entry: its window (see the module documentation).
    fn one_entry(&self) -> bool {
        self.append_only && self.hi <= ONE_ENTRY_MAX_RANK
    }
}

impl RankKind {
    fn sql(self) -> &'static str {
        match self {
            RankKind::RowNumber => "row_number()",
            RankKind::Rank => "rank()",
            RankKind::DenseRank => "dense_rank()",
        }
    }
}

/// What the planner decides about a top-N.
#[derive(Debug, Clone)]
pub struct TopNSpec {
    /// The groups (partitions) and their order.
    pub rows: PartitionOrder,
    pub rank: RankKind,
    /// The lowest rank emitted (1-based).
    pub lo: u64,
    /// The highest rank emitted.
    pub hi: u64,
    /// The rank column is read downstream: emit rank changes.
    pub emit_rank: bool,
    /// The input only ever inserts: keep only the rows within rank `hi`.
    pub append_only: bool,
    /// A top-N per time window: when its groups close.
    pub close: Option<WindowClose>,
}

/// A top-N per time window: partition column `column` is a window bound, and a group is
/// complete once the watermark reaches the bound plus `offset` (microseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowClose {
    pub column: usize,
    pub offset: i64,
    /// EMIT ON WINDOW CLOSE: each group's top rows are emitted once, final, when it closes.
    pub emit_on_close: bool,
}

/// A group's rows of rank `<= hi`, as read from the table.
#[derive(Debug, Clone, Default)]
struct Window {
    /// Table keys (without the key group) and counts, in key order.
    entries: Vec<(Vec<u8>, i64)>,
    /// Every rank up to `hi` is taken: a row sorting after the last entry is outside the range.
    full: bool,
}

impl Window {
    fn bytes(&self) -> usize {
        self.entries
            .iter()
            .map(|(k, _)| k.len() + 32)
            .sum::<usize>()
            + 64
    }
}

/// Builds a window from a group's rows in key order.
struct WindowBuilder<'a> {
    spec: &'a TopNSpec,
    /// Length of the group key at the start of every key.
    group: usize,
    window: Window,
    rows: u64,
    distinct: u64,
}

impl<'a> WindowBuilder<'a> {
    fn new(spec: &'a TopNSpec, group: usize) -> Self {
        Self {
            spec,
            group,
            window: Window::default(),
            rows: 0,
            distinct: 0,
        }
    }

    /// Takes the next row (`count` copies) if its rank is within `hi`; false once past it.
    fn offer(&mut self, key: &[u8], count: i64) -> Result<bool> {
        self.offer_with(key, count, <[u8]>::to_vec)
    }

    /// [`WindowBuilder::offer`] of a key the caller owns.
    fn offer_owned(&mut self, key: Vec<u8>, count: i64) -> Result<bool> {
        self.offer_with(key, count, |k| k)
    }

    fn offer_with<K: AsRef<[u8]>>(
        &mut self,
        key: K,
        count: i64,
        owned: impl FnOnce(K) -> Vec<u8>,
    ) -> Result<bool> {
        let count = count.max(0);
        let key_ref = key.as_ref();
        let order = order_of(key_ref, self.group)?;
        let tied = match self.window.entries.last() {
            Some((last, _)) => order_of(last, self.group)? == order,
            None => false,
        };
        let (spec, rows, distinct) = (self.spec, self.rows, self.distinct);
        let past = match spec.rank {
            RankKind::RowNumber => rows >= spec.hi,
            RankKind::Rank => !tied && rows >= spec.hi,
            RankKind::DenseRank => !tied && distinct >= spec.hi,
        };
        if past {
            return Ok(false);
        }
        self.distinct += u64::from(!tied);
        self.rows += count as u64;
        self.window.entries.push((owned(key), count));
        Ok(true)
    }

    fn finish(mut self) -> Window {
        self.window.full = match self.spec.rank {
            RankKind::RowNumber | RankKind::Rank => self.rows >= self.spec.hi,
            RankKind::DenseRank => self.distinct >= self.spec.hi,
        };
        self.window
    }
}

/// The immutable part of an operator, shared by its instances.
#[derive(Debug)]
struct Shared {
    spec: TopNSpec,
    rows: SortedRows,
    schema: SchemaRef,
}

/// The top-N operator; see the module documentation.
pub struct TopN {
    shared: Arc<Shared>,
    /// Every row of each group (tag `t`), or on append-only input each group's window (`w`).
    table: Table,
    /// Cached windows by `kg ++ group key`.
    windows: HashMap<Vec<u8>, Window, foldhash::fast::RandomState>,
    window_bytes: usize,
    window_budget: usize,
    /// What the windows may take now: `window_budget`, or less while the process's state
    /// caches are over their shared limit; updated at each checkpoint.
    window_limit: usize,
    /// `window_bytes`, as the shared pool counts it.
    charge: Charge,
    groups: Vec<u16>,
    /// `kg ++ group key` of the group being processed, kept to spare an allocation per group.
    scratch: Vec<u8>,
    /// Groups by the time their window closes (top-N per time window only).
    timers: Table,
    /// The input's watermark, `i64::MIN` before the first.
    watermark: i64,
    late: Vec<LateRow>,
}

/// The rows of a window in the rank range: `(entry, rank, copies)`.
fn ranked(
    spec: &TopNSpec,
    window: &Window,
    group: usize,
    mut f: impl FnMut(usize, u64, i64),
) -> Result<()> {
    let (mut rows, mut distinct, mut rank) = (0u64, 0u64, 0u64);
    let mut previous: Option<&[u8]> = None;
    for (i, (key, count)) in window.entries.iter().enumerate() {
        let order = order_of(key, group)?;
        if previous != Some(order) {
            distinct += 1;
            rank = rows + 1;
        }
        previous = Some(order);
        let count = (*count).max(0) as u64;
        match spec.rank {
            RankKind::RowNumber => {
                let first = (rows + 1).max(spec.lo);
                let last = (rows + count).min(spec.hi);
                for r in first..=last {
                    f(i, r, 1);
                }
            }
            RankKind::Rank | RankKind::DenseRank => {
                let r = if spec.rank == RankKind::Rank {
                    rank
                } else {
                    distinct
                };
                if (spec.lo..=spec.hi).contains(&r) {
                    f(i, r, count as i64);
                }
            }
        }
        rows += count;
    }
    Ok(())
}

impl TopN {
    /// A top-N over `spec`'s input, emitting `schema` (the row's columns and the rank).
    pub fn try_new(spec: TopNSpec, schema: SchemaRef) -> Result<Self> {
        if schema.fields().len() != spec.rows.width + 1 || spec.lo == 0 {
            return Err(EngineError::Internal(format!(
                "top-N of rows of {} columns with an output of {} columns, ranks from {}",
                spec.rows.width,
                schema.fields().len(),
                spec.lo
            )));
        }
        let rows = SortedRows::try_new(spec.rows.clone())?;
        Ok(Self::with(Arc::new(Shared { spec, rows, schema })))
    }

    fn with(shared: Arc<Shared>) -> Self {
        TopN {
            shared,
            table: Table::default(),
            windows: HashMap::default(),
            window_bytes: 0,
            window_budget: 0,
            window_limit: 0,
            charge: Charge::default(),
            groups: Vec::new(),
            scratch: Vec::new(),
            timers: Table::default(),
            watermark: i64::MIN,
            late: Vec::new(),
        }
    }

    /// Sets aside the rows of `batch` whose window is complete (see [`WindowClose`]) as late,
    /// and returns the others.
    fn drop_late(&mut self, close: WindowClose, batch: ChangeBatch) -> Result<ChangeBatch> {
        let bounds = timers::micros(&batch.data, close.column)?;
        let watermark = self.watermark;
        let (batch, _) = timers::set_aside_late(
            batch,
            bounds,
            |b| b.is_some_and(|b| b.saturating_add(close.offset) <= watermark),
            self.shared.spec.rows.width,
            watermark,
            &mut self.late,
        )?;
        Ok(batch)
    }

    /// Puts a timer for each group of `batch` (encoded as `encoded`, rows in key groups
    /// `groups`) at the time its window closes.
    fn add_timers(
        &mut self,
        close: WindowClose,
        batch: &RecordBatch,
        encoded: &sorted::Encoded,
        groups: &[u16],
    ) -> Result<()> {
        let bounds = timers::micros(batch, close.column)?;
        let mut seen: HashSet<(u16, i64, &[u8])> = HashSet::new();
        let table = self.timers.get_mut()?;
        for (row, bound) in bounds.iter().enumerate() {
            let Some(bound) = bound else { continue };
            let at = bound.saturating_add(close.offset);
            if seen.insert((groups[row], at, encoded.partition(row))) {
                table.put(
                    groups[row],
                    &timers::key(at, 0, encoded.partition(row)),
                    &[],
                );
            }
        }
        Ok(())
    }

    /// The window of group `group` (its key bytes) in key group `kg`, read from the table.
    fn read_window(&mut self, kg: u16, group: &[u8]) -> Result<Window> {
        if self.shared.spec.one_entry() {
            let stored = self.table.get_mut()?.get(kg, group)?;
            return decode_window(&self.shared.spec, group, stored);
        }
        let table = self.table.get()?;
        let mut window = WindowBuilder::new(&self.shared.spec, group.len());
        table.scan_prefix(kg, group, Direction::Forward, |key, value| {
            Ok(if window.offer(key, count_of(value)?)? {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            })
        })?;
        Ok(window.finish())
    }

    /// The window after `deltas` when none of them takes a row out of `old` (no refill is
    /// needed): `old`'s rows and the added ones, merged in key order. `None` otherwise.
    fn grown_window(
        &self,
        old: &Window,
        deltas: &[(&[u8], i64)],
        group: usize,
    ) -> Result<Option<Window>> {
        let last = old.entries.last().map(|(k, _)| k.as_slice());
        let takes = |key: &[u8], delta: i64| delta < 0 && last.is_some_and(|last| key <= last);
        if deltas.iter().any(|(key, delta)| takes(key, *delta)) {
            return Ok(None);
        }
        let mut window = WindowBuilder::new(&self.shared.spec, group);
        let (mut i, mut j) = (0, 0);
        let added: Vec<&(&[u8], i64)> = deltas.iter().filter(|(_, d)| *d > 0).collect();
        loop {
            let (key, count) = match (old.entries.get(i), added.get(j)) {
                (Some((a, n)), Some((b, d))) if a.as_slice() == *b => {
                    i += 1;
                    j += 1;
                    (a.as_slice(), n + d)
                }
                (Some((a, n)), Some((b, _))) if a.as_slice() < *b => {
                    i += 1;
                    (a.as_slice(), *n)
                }
                (Some((a, n)), None) => {
                    i += 1;
                    (a.as_slice(), *n)
                }
                (_, Some((b, d))) => {
                    j += 1;
                    (*b, *d)
                }
                (None, None) => break,
            };
            if !window.offer(key, count)? {
                break;
            }
        }
        Ok(Some(window.finish()))
    }

    /// Reads the windows of the groups of a batch (rows `encoded` in key groups `groups`) that
    /// are not cached, with one batched read (append-only input).
    fn load_windows(&mut self, encoded: &sorted::Encoded, groups: &[u16]) -> Result<()> {
        let mut missing: HashSet<(u16, &[u8]), foldhash::fast::RandomState> = HashSet::default();
        for (row, &kg) in groups.iter().enumerate() {
            let group = encoded.partition(row);
            set_id(&mut self.scratch, kg, group);
            if !self.windows.contains_key(self.scratch.as_slice()) {
                missing.insert((kg, group));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let keys: Vec<(u16, &[u8])> = missing.into_iter().collect();
        let spec = &self.shared.spec;
        let stored = self.table.get_mut()?.multi_get(&keys)?;
        let mut loaded = Vec::with_capacity(keys.len());
        for (&(kg, group), value) in keys.iter().zip(stored) {
            let mut id = Vec::with_capacity(2 + group.len());
            set_id(&mut id, kg, group);
            loaded.push((id, decode_window(spec, group, value)?));
        }
        for (id, window) in loaded {
            self.cache(id, window);
        }
        Ok(())
    }

    /// A change of `key` cannot touch a full window: it sorts after the window's last row.
    fn outside(&self, window: &Window, key: &[u8], group: usize) -> Result<bool> {
        if !window.full {
            return Ok(false);
        }
        let Some((last, _)) = window.entries.last() else {
            // A full window without rows: the range is empty (hi is 0).
            return Ok(true);
        };
        Ok(match self.shared.spec.rank {
            RankKind::RowNumber => key > last.as_slice(),
            RankKind::Rank | RankKind::DenseRank => order_of(key, group)? > order_of(last, group)?,
        })
    }

    /// Caches `window` for `id` within the budget, dropping arbitrary others when over it.
    fn cache(&mut self, id: Vec<u8>, window: Window) {
        let bytes = window.bytes() + id.len();
        if bytes > self.window_budget / 4 {
            return;
        }
        if self.window_bytes + bytes > self.window_limit {
            self.shrink(self.window_limit / 2);
        }
        self.window_bytes += bytes;
        if let Some(old) = self.windows.insert(id.clone(), window) {
            self.window_bytes -= old.bytes() + id.len();
        }
    }

    /// Drops arbitrary cached windows until they take at most `target` bytes.
    fn shrink(&mut self, target: usize) {
        let mut dropped = Vec::new();
        let mut freed = 0;
        for (k, w) in &self.windows {
            if self.window_bytes - freed <= target {
                break;
            }
            freed += w.bytes() + k.len();
            dropped.push(k.clone());
        }
        for k in dropped {
            self.windows.remove(&k);
        }
        self.window_bytes -= freed;
    }

    /// Applies one group's changes (net count per key) and records what its range gained and
    /// lost.
    fn process_group(
        &mut self,
        kg: u16,
        group: &[u8],
        deltas: &[(&[u8], i64)],
        out: &mut Output,
    ) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        let spec = &shared.spec;
        set_id(&mut self.scratch, kg, group);
        let (id, old) = match self.windows.remove_entry(self.scratch.as_slice()) {
            Some((id, w)) => {
                self.window_bytes -= w.bytes() + id.len();
                (id, w)
            }
            None => (self.scratch.clone(), self.read_window(kg, group)?),
        };
        let mut untouched = true;
        for (key, _) in deltas {
            untouched &= self.outside(&old, key, group.len())?;
        }
        if untouched && spec.append_only {
            // Rows below a full window of append-only input can never enter it: not kept.
            self.cache(id, old);
            return Ok(());
        }
        if !spec.one_entry() {
            sorted::apply(self.table.get_mut()?, kg, deltas)?;
        }
        if untouched {
            self.cache(id, old);
            return Ok(());
        }
        let new = match self.grown_window(&old, deltas, group.len())? {
            Some(window) => window,
            None => self.read_window(kg, group)?,
        };
        let mut changes: Vec<(&[u8], u64, i64)> = Vec::new();
        let rank_of = |r: u64| if spec.emit_rank { r } else { 0 };
        ranked(spec, &old, group.len(), |i, r, n| {
            changes.push((&old.entries[i].0, rank_of(r), -n))
        })?;
        ranked(spec, &new, group.len(), |i, r, n| {
            changes.push((&new.entries[i].0, rank_of(r), n))
        })?;
        changes.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let mut at = 0;
        while at < changes.len() {
            let (key, rank, mut net) = changes[at];
            at += 1;
            while at < changes.len() && (changes[at].0, changes[at].1) == (key, rank) {
                net += changes[at].2;
                at += 1;
            }
            // A row whose rank is not emitted is emitted with the rank it has now.
            let shown = if spec.emit_rank {
                rank
            } else {
                rank_in(spec, &new, key, group.len())?.unwrap_or(rank)
            };
            out.push(row_of(key)?, shown, net)?;
        }
        if spec.one_entry() {
            // The group's state is its window: rows pushed out of it are gone.
            let value = encode_window(&new, group.len());
            // An empty window is never stored.
            let before = (!old.entries.is_empty()).then(|| encoded_len(&old, group.len()));
            self.table.get_mut()?.put_known(kg, group, &value, before);
        } else if spec.append_only {
            // Keep only the window: rows pushed out of it, and new rows that did not enter it.
            let table = self.table.get_mut()?;
            let kept = |key: &[u8]| {
                new.entries
                    .binary_search_by(|(k, _)| k.as_slice().cmp(key))
                    .is_ok()
            };
            for (key, _) in &old.entries {
                if !kept(key) {
                    table.delete(kg, key);
                }
            }
            for (key, delta) in deltas {
                if *delta > 0 && !kept(key) {
                    table.delete(kg, key);
                }
            }
        }
        self.cache(id, new);
        Ok(())
    }
}

/// The first rank `key`'s row has in `window`'s range, if it is in it.
fn rank_in(spec: &TopNSpec, window: &Window, key: &[u8], group: usize) -> Result<Option<u64>> {
    let Ok(at) = window
        .entries
        .binary_search_by(|(k, _)| k.as_slice().cmp(key))
    else {
        return Ok(None);
    };
    let mut found = None;
    ranked(spec, window, group, |i, r, _| {
        if i == at && found.is_none() {
            found = Some(r);
        }
    })?;
    Ok(found)
}

/// `kg ++ group`, the key of a cached window, into `buf`.
fn set_id(buf: &mut Vec<u8>, kg: u16, group: &[u8]) {
    buf.clear();
    buf.extend_from_slice(&kg.to_be_bytes());
    buf.extend_from_slice(group);
}

/// The stored form of an append-only group's window: each row's key without the group key
/// (`skip` bytes), as a `u32` length and the bytes, then its count (`i64`), little-endian.
fn encode_window(window: &Window, skip: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(window, skip));
    for (key, count) in &window.entries {
        let rest = key.get(skip..).unwrap_or_default();
        out.extend_from_slice(&(rest.len() as u32).to_le_bytes());
        out.extend_from_slice(rest);
        out.extend_from_slice(&count.to_le_bytes());
    }
    out
}

/// The length of [`encode_window`]'s bytes.
fn encoded_len(window: &Window, skip: usize) -> usize {
    (window.entries.iter())
        .map(|(k, _)| k.len().saturating_sub(skip) + 12)
        .sum()
}

/// The window of group `group` from its stored form (none: an empty window).
fn decode_window(spec: &TopNSpec, group: &[u8], stored: Option<&[u8]>) -> Result<Window> {
    let corrupt = || EngineError::Corrupt("top-N window state".into());
    let mut window = WindowBuilder::new(spec, group.len());
    let mut rest = stored.unwrap_or_default();
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(corrupt)?;
        let len = u32::from_le_bytes(*len) as usize;
        let (row, tail) = tail.split_at_checked(len).ok_or_else(corrupt)?;
        let (count, tail) = tail.split_first_chunk::<8>().ok_or_else(corrupt)?;
        rest = tail;
        let mut key = Vec::with_capacity(group.len() + row.len());
        key.extend_from_slice(group);
        key.extend_from_slice(row);
        if !window.offer_owned(key, i64::from_le_bytes(*count))? {
            break;
        }
    }
    Ok(window.finish())
}

/// A batch's output, retractions first.
struct Output {
    deletes: RowDecoder,
    delete_ranks: Vec<u64>,
    inserts: RowDecoder,
    insert_ranks: Vec<u64>,
}

impl Output {
    fn push(&mut self, row: &[u8], rank: u64, copies: i64) -> Result<()> {
        let (decoder, ranks) = if copies < 0 {
            (&mut self.deletes, &mut self.delete_ranks)
        } else {
            (&mut self.inserts, &mut self.insert_ranks)
        };
        for _ in 0..copies.unsigned_abs() {
            decoder.push(row)?;
            ranks.push(rank);
        }
        Ok(())
    }

    fn finish(mut self, schema: &SchemaRef) -> Result<Vec<ChangeBatch>> {
        let mut out = Vec::with_capacity(2);
        for (decoder, ranks, op) in [
            (&mut self.deletes, self.delete_ranks, Op::Delete),
            (&mut self.inserts, self.insert_ranks, Op::Insert),
        ] {
            if ranks.is_empty() {
                continue;
            }
            let rows = decoder.flush()?;
            let rank_type = schema.field(schema.fields().len() - 1).data_type();
            let rank: ArrayRef = Arc::new(UInt64Array::from(ranks));
            let mut columns = rows.columns().to_vec();
            columns.push(cast(&rank, rank_type)?);
            let data = RecordBatch::try_new_with_options(
                Arc::clone(schema),
                columns,
                &RecordBatchOptions::new().with_row_count(Some(rows.num_rows())),
            )?;
            let n = data.num_rows();
            out.push(ChangeBatch {
                data,
                ops: vec![op; n],
            });
        }
        Ok(out)
    }
}

impl Operator for TopN {
    fn name(&self) -> &'static str {
        "TopN"
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.shared.schema)
    }

    fn fork(&self) -> Result<Box<dyn Operator>> {
        Ok(Box::new(Self::with(Arc::clone(&self.shared))))
    }

    fn restore(&mut self, scope: &StateScope) -> Result<()> {
        if self.shared.spec.one_entry() {
            // The table's entries are the windows, encoded: the cache is for the decoded ones
            // (a miss reads RocksDB).
            self.window_budget = scope.cache_bytes;
            self.table.open(scope, b'w', 0);
        } else {
            // A quarter of the cache for the windows, the rest for the table's entries.
            self.window_budget = scope.cache_bytes / 4;
            self.table
                .open(scope, b't', scope.cache_bytes - self.window_budget);
        }
        if self.shared.spec.close.is_some() {
            self.timers.open(scope, b'c', scope.cache_bytes / 16);
        }
        self.window_limit = self.window_budget;
        self.windows.clear();
        self.window_bytes = 0;
        Ok(())
    }

    fn process(&mut self, _input: usize, batch: ChangeBatch) -> Result<Vec<ChangeBatch>> {
        let shared = Arc::clone(&self.shared);
        let batch = match shared.spec.close {
            Some(close) => self.drop_late(close, batch)?,
            None => batch,
        };
        if batch.data.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let mut groups = std::mem::take(&mut self.groups);
        let encoded = shared.rows.encode(&batch.data, &mut groups)?;
        if let Some(close) = shared.spec.close {
            self.add_timers(close, &batch.data, &encoded, &groups)?;
        }
        if shared.spec.one_entry() {
            self.load_windows(&encoded, &groups)?;
        }
        let capacity = batch.num_rows();
        let mut out = Output {
            deletes: shared.rows.row_codec.decoder(None, capacity),
            delete_ranks: Vec::new(),
            inserts: shared.rows.row_codec.decoder(None, capacity),
            insert_ranks: Vec::new(),
        };
        encoded.for_each_partition(&groups, &batch.ops, |kg, group, deltas| {
            self.process_group(kg, group, deltas, &mut out)
        })?;
        self.groups = groups;
        if shared.spec.close.is_some_and(|c| c.emit_on_close) {
            // Emitted when the window closes.
            return Ok(Vec::new());
        }
        out.finish(&shared.schema)
    }

    fn on_watermark(&mut self, _input: usize, watermark: i64) -> Result<Vec<ChangeBatch>> {
        let shared = Arc::clone(&self.shared);
        let Some(close) = shared.spec.close else {
            return Ok(Vec::new());
        };
        if watermark <= self.watermark {
            return Ok(Vec::new());
        }
        self.watermark = watermark;
        let due = timers::take_due(self.timers.get_mut()?, watermark.saturating_add(1))?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Output {
            deletes: shared.rows.row_codec.decoder(None, 0),
            delete_ranks: Vec::new(),
            inserts: shared.rows.row_codec.decoder(None, 64),
            insert_ranks: Vec::new(),
        };
        for timer in &due {
            let (_, _, group) = timer.parts()?;
            let kg = timer.kg;
            if close.emit_on_close {
                let window = self.read_window(kg, group)?;
                let mut rows = Vec::new();
                ranked(&shared.spec, &window, group.len(), |i, r, n| {
                    rows.push((i, r, n))
                })?;
                for (i, rank, copies) in rows {
                    out.push(row_of(&window.entries[i].0)?, rank, copies)?;
                }
            }
            // The window is complete: its group is forgotten.
            let table = self.table.get_mut()?;
            if shared.spec.one_entry() {
                table.delete(kg, group);
            } else {
                let end = crate::state::prefix_end(group);
                table.delete_range(kg, group, end.as_deref());
            }
            set_id(&mut self.scratch, kg, group);
            if let Some((id, w)) = self.windows.remove_entry(self.scratch.as_slice()) {
                self.window_bytes -= w.bytes() + id.len();
            }
        }
        out.finish(&shared.schema)
    }

    fn take_late(&mut self) -> Vec<LateRow> {
        std::mem::take(&mut self.late)
    }

    fn checkpoint(
        &mut self,
        epoch: u64,
        _scope: &StateScope,
        batch: &mut StateBatch,
    ) -> Result<()> {
        self.table.checkpoint(epoch, batch)?;
        self.timers.checkpoint(epoch, batch)?;
        // The shared pool learns the windows' size once an epoch, and says what they may take.
        self.window_limit = self.charge.update(self.window_bytes, self.window_budget);
        if self.window_bytes > self.window_limit {
            self.shrink(self.window_limit / 2);
            self.charge.update(self.window_bytes, self.window_budget);
        }
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.table.bytes() + self.timers.bytes()
    }

    fn describe(&self) -> String {
        let spec = &self.shared.spec;
        let (partition, order) = spec.rows.describe();
        let kept = if spec.one_entry() {
            format!(
                "the rows of rank <= {} of each group, as one entry (append-only input)",
                spec.hi
            )
        } else if spec.append_only {
            format!(
                "the rows of rank <= {} of each group (append-only input)",
                spec.hi
            )
        } else {
            "every row of each group, ordered".to_string()
        };
        let partition = if partition.is_empty() {
            String::new()
        } else {
            format!(" partition by [{partition}]")
        };
        let window = match spec.close {
            Some(c) => format!(
                "; per time window: a group is freed once the watermark reaches #{} + {}{}",
                c.column,
                timers::duration_text(c.offset),
                if c.emit_on_close {
                    ", and its top rows are emitted then"
                } else {
                    ""
                }
            ),
            None => String::new(),
        };
        format!(
            "TopN: {}{partition} order by [{order}] ranks {}..={}{}; state: {kept}{window}",
            spec.rank.sql(),
            spec.lo,
            spec.hi,
            if spec.emit_rank { ", rank emitted" } else { "" },
        )
    }
}

#[cfg(test)]
mod tests;
