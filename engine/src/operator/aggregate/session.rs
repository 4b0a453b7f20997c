//! Session windows: an aggregation per session of each partition key, where a session is a run
//! of rows whose event times lie within `gap` of one another.
//!
//! A session holds the rows of one partition key from its first event time `start` to its last
//! `last`; its window is `[start, last + gap)`. A row at `t` *touches* a session when
//! `start - gap <= t <= last + gap` (rows exactly `gap` apart share a session, as in Flink). A row
//! that touches no session starts one; a row that touches one extends it; a row that touches
//! several (it came out of order and bridges them) merges them into one, adding their aggregate
//! states together ([`Agg::merge`]). Because a session's bounds move as rows come, the operator
//! keys its groups by partition key and keeps each key's open sessions in a short list, with one
//! aggregate slot per session.
//!
//! **Closing.** A session closes when the watermark reaches `last + gap + lateness`: with EMIT ON
//! WINDOW CLOSE its one row is emitted then; either way its state is freed. A row is *late*, set
//! aside as a [`LateRow`] and not aggregated, when it could only change a closed session: when
//! `t + gap + lateness <= watermark` (a session of its own would be closed already), or when `t`
//! is at or before the end of a closed session of its key (it would touch it). The end of a key's
//! last closed session is kept for that second test until the watermark passes it by
//! `gap + lateness`, after which the first test covers it; so state stays bounded. The result is
//! exactly the sessions a batch computation finds over the rows that were not late. A row with a
//! NULL event time belongs to no session: it is kept with the late rows.
//!
//! **Emission.** Emit on update: per input batch, a new session is an `Insert`, a session whose
//! bounds moved is a `Delete` of its old row and an `Insert` of its new one, a session that only
//! changed its aggregates an `UpdateBefore`/`UpdateAfter` pair, and a session merged into another
//! a `Delete`.
//!
//! **Input** is append-only (the planner refuses sessions over a changelog: deleting a row could
//! split a session).
//!
//! **State.** Each partition with open sessions (or a closed end that still matters) is one
//! entry of the aggregate's [`StateTable`], written behind at the checkpoint of an epoch that
//! changed it ([`StateTable::write_behind`]). Partitions are read on demand: those of a batch's
//! rows that memory does not hold with one batched read, nothing at restore. What the watermark
//! must do is kept as timers in the state ([`super::due`]): a timer at a session's close time
//! (set again whenever its last row moves) and one at the time its partition's closed end stops
//! mattering. A watermark fires the timers it reaches; each reads its partition and closes what
//! is due there (a timer whose session moved or merged since finds nothing to do). Memory holds
//! the partitions it has room for: over the scope's cache budget (or its share of the process's
//! shared state memory), a checkpoint drops the partitions least recently added to whose last
//! write the job has committed, down to half of it; they are read again when a row or a timer
//! needs them. Until the job commits a partition's deletion, its key is not read again (the
//! store still has its old value).
//!
//! **Stored value**, one per partition key (integers as in [`super::codec`]):
//!
//! ```text
//! part    := FORMAT:u8 closed:u8 [closed_end:ivar] n:uvar session*
//! session := start:ivar last:ivar len:uvar group      (group: the aggregate's stored group)
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, TimestampMicrosecondArray};
use datafusion::arrow::compute::cast_with_options;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::accumulator::{Agg, canonical};
use super::codec::{self, Reader, put_i, put_u};
use super::due::{self, Timers};
use super::result::Value;
use super::window::micros;
use super::{AggSpec, Codec, internal, strict};
use crate::changelog::{ChangeBatch, Op};
use crate::keygroup;
use crate::operator::{LateRow, Operator, StateScope, rows_text};
use crate::state::StateBatch;
use crate::state::memory::Charge;
use crate::state::table::StateTable;
use crate::{EngineError, Result};

/// Version byte of a stored partition key.
const FORMAT: u8 = 1;
/// Flink's `window_time`: the window's last instant, one millisecond before its end.
const WINDOW_TIME_OFFSET: i64 = 1_000;

type FastHash = foldhash::fast::RandomState;

/// What a group column of the output holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionColumn {
    /// Partition key column `i` (position in [`SessionSpec::partition`]).
    Partition(usize),
    /// `window_start`: the session's first event time.
    Start,
    /// `window_end`: its last event time plus the gap.
    End,
    /// Flink's `window_time`: `window_end` minus one millisecond.
    Time,
    /// The session's last event time (RisingWave's `last_value(ts)` over a SESSION frame):
    /// `window_end` minus the gap.
    Last,
}

/// The shape of a session aggregation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSpec {
    /// Input column of the event time.
    pub time: usize,
    /// Input columns of the partition key.
    pub partition: Vec<usize>,
    /// The gap, in microseconds (positive).
    pub gap: i64,
    /// How long after its end a session stays open for late rows, in microseconds.
    pub lateness: i64,
    pub emit_on_close: bool,
    /// The output's group columns, in order; the aggregates follow them.
    pub columns: Vec<SessionColumn>,
}

#[derive(Debug, Clone, Copy)]
struct Session {
    start: i64,
    last: i64,
    /// The session's aggregate slot.
    slot: u32,
}

struct Part {
    key: Arc<[u8]>,
    kg: u16,
    /// Open sessions, disjoint (no two touch).
    sessions: Vec<Session>,
    /// End of the last closed session, while rows at or before it can still be late for it.
    closed_end: Option<i64>,
    /// Length of the stored value as of the last checkpoint (`None`: not stored).
    stored: Option<u32>,
    dirty: bool,
    live: bool,
    /// Bytes it is counted for in [`SessionAggregate::resident`] (known once read or written).
    cost: usize,
    /// The epoch whose checkpoint wrote it last (0: read, never written).
    written: u64,
    /// The batch that last added a row to it.
    touched: u64,
}

/// A session touched by the batch being processed.
struct Touch {
    part: u32,
    slot: u32,
    /// Bounds before the batch, if the session existed then.
    before: Option<(i64, i64)>,
}

/// A session as it was before a batch: partition and (start, last).
type Before = (u32, (i64, i64));
/// A session open after a batch: partition, session and its last event time before the batch.
type After = (u32, Session, Option<i64>);

/// Session-window aggregation; see the module documentation.
pub struct SessionAggregate {
    input: SchemaRef,
    specs: Vec<AggSpec>,
    spec: SessionSpec,
    aggs: Vec<Agg>,
    output: SchemaRef,
    /// Encodes the partition key; `None` without partition columns (one global partition).
    keys: Option<Codec>,
    index: HashMap<Arc<[u8]>, u32, FastHash>,
    parts: Vec<Part>,
    free_parts: Vec<u32>,
    dirty: Vec<u32>,
    /// Key group, key and stored value length of each stored partition that vanished since the
    /// last checkpoint.
    gone: Vec<(u16, Arc<[u8]>, u32)>,
    /// Row count of each aggregate slot.
    rows: Vec<i64>,
    free_slots: Vec<u32>,
    /// Per slot: the slot it was merged into during the current batch (`u32::MAX`: none).
    merged_into: Vec<u32>,
    /// Per slot: the last batch that touched it.
    touched_in: Vec<u64>,
    batches: u64,
    watermark: Option<i64>,
    late: Vec<LateRow>,
    /// Where the partitions are stored; opened at restore (or at the first checkpoint).
    table: Option<StateTable>,
    /// Session closes and forgotten closed ends (see the module documentation); opened at
    /// restore.
    timers: Option<Timers>,
    /// Memory holds every stored partition (the table was empty at restore): a partition not
    /// in memory is new, and costs no read.
    complete: bool,
    /// Keys of stored partitions that vanished, with the epoch whose checkpoint deletes them
    /// (`u64::MAX`: the next one), until the job commits it: they are not read again.
    deleted: HashMap<Arc<[u8]>, u64, FastHash>,
    /// Partitions read from the table since the last checkpoint, found or not.
    loads: u64,
    /// Partition lookups since the last checkpoint (see `super::publish`).
    lookups: u64,
    /// Bytes of the partitions in memory, as [`Part::cost`] counts them.
    resident: usize,
    /// Memory the partitions may take: the scope's cache budget, less while the process's
    /// shared state memory is over its limit.
    budget: usize,
    charge: Charge,
}

fn corrupt() -> EngineError {
    EngineError::Corrupt("malformed session window state".into())
}

impl SessionAggregate {
    /// `aggs`: one per output aggregate column; `output`: the group columns `spec.columns` then
    /// one column per aggregate. A plan the operator cannot run is an `Internal` error.
    pub fn try_new(
        input: SchemaRef,
        spec: SessionSpec,
        aggs: Vec<AggSpec>,
        output: SchemaRef,
    ) -> Result<Self> {
        let fields = output.fields();
        if fields.len() != spec.columns.len() + aggs.len() {
            return Err(internal("session aggregate output has the wrong width"));
        }
        if spec.gap <= 0 || spec.lateness < 0 {
            return Err(internal("session gap must be positive"));
        }
        let column = |i: usize| {
            input
                .fields()
                .get(i)
                .map(|f| f.data_type().clone())
                .ok_or_else(|| internal(format!("session input column {i} does not exist")))
        };
        if !matches!(column(spec.time)?, DataType::Timestamp(..)) {
            return Err(internal("session time column is not a timestamp"));
        }
        let key_types = spec
            .partition
            .iter()
            .map(|&i| column(i))
            .collect::<Result<Vec<_>>>()?;
        for c in &spec.columns {
            if let SessionColumn::Partition(i) = c
                && *i >= key_types.len()
            {
                return Err(internal("session output names a missing partition column"));
            }
        }
        let keys = if key_types.is_empty() {
            None
        } else {
            Some(Codec::new(key_types, false)?)
        };
        let agg_state = aggs
            .iter()
            .zip(fields.iter().skip(spec.columns.len()))
            .map(|(a, f)| Agg::new(a, &input, f.data_type()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            input,
            specs: aggs,
            spec,
            aggs: agg_state,
            output,
            keys,
            index: HashMap::default(),
            parts: Vec::new(),
            free_parts: Vec::new(),
            dirty: Vec::new(),
            gone: Vec::new(),
            rows: Vec::new(),
            free_slots: Vec::new(),
            merged_into: Vec::new(),
            touched_in: Vec::new(),
            batches: 0,
            watermark: None,
            late: Vec::new(),
            table: None,
            timers: None,
            complete: true,
            deleted: HashMap::default(),
            loads: 0,
            lookups: 0,
            resident: 0,
            budget: usize::MAX,
            charge: Charge::default(),
        })
    }

    /// Number of open sessions.
    pub fn session_count(&self) -> usize {
        self.parts
            .iter()
            .filter(|p| p.live)
            .map(|p| p.sessions.len())
            .sum()
    }

    fn end(&self, s: &Session) -> i64 {
        s.last.saturating_add(self.spec.gap)
    }

    fn close_time(&self, s: &Session) -> i64 {
        self.end(s).saturating_add(self.spec.lateness)
    }

    fn new_slot(&mut self) -> u32 {
        if let Some(slot) = self.free_slots.pop() {
            return slot;
        }
        let slot = self.rows.len() as u32;
        self.rows.push(0);
        self.merged_into.push(u32::MAX);
        self.touched_in.push(0);
        let len = self.rows.len();
        self.aggs.iter_mut().for_each(|a| a.grow(len));
        slot
    }

    fn free_slot(&mut self, slot: u32) {
        self.rows[slot as usize] = 0;
        self.aggs.iter_mut().for_each(|a| a.reset(slot));
        self.free_slots.push(slot);
    }

    fn part(&mut self, key: &[u8], kg: u16) -> u32 {
        if let Some(&p) = self.index.get(key) {
            return p;
        }
        let key: Arc<[u8]> = key.into();
        let part = Part {
            key: Arc::clone(&key),
            kg,
            sessions: Vec::new(),
            closed_end: None,
            stored: None,
            dirty: false,
            live: true,
            cost: 0,
            written: 0,
            touched: self.batches,
        };
        let p = match self.free_parts.pop() {
            Some(p) => {
                self.parts[p as usize] = part;
                p
            }
            None => {
                self.parts.push(part);
                (self.parts.len() - 1) as u32
            }
        };
        self.index.insert(key, p);
        p
    }

    fn mark_dirty(&mut self, p: u32) {
        let part = &mut self.parts[p as usize];
        if !part.dirty {
            part.dirty = true;
            self.dirty.push(p);
        }
    }

    /// Drops partitions from memory, least recently added to first, until they take at most
    /// `target` bytes. Only partitions whose last write the job has committed (up to epoch
    /// `committed`) go: they stay stored and are read again when a row or a timer needs them.
    fn shrink(&mut self, table: &mut StateTable, target: usize, committed: u64) {
        let mut idle: Vec<(u64, u32)> = (self.parts.iter().enumerate())
            .filter(|(_, p)| p.live && !p.dirty && p.stored.is_some() && p.written <= committed)
            .map(|(i, p)| (p.touched, i as u32))
            .collect();
        idle.sort_unstable();
        for (_, p) in idle {
            if self.resident <= target {
                break;
            }
            let part = &mut self.parts[p as usize];
            part.live = false;
            self.resident -= std::mem::take(&mut part.cost);
            let stored = part
                .stored
                .take()
                .map_or(0, |v| 2 + part.key.len() + v as usize);
            table.count_stored(-(stored as i64));
            self.index.remove(&part.key);
            let slots: Vec<u32> = std::mem::take(&mut part.sessions)
                .iter()
                .map(|s| s.slot)
                .collect();
            part.closed_end = None;
            for slot in slots {
                self.free_slot(slot);
            }
            self.free_parts.push(p);
            self.complete = false;
        }
    }

    fn remove_part(&mut self, p: u32) {
        let part = &mut self.parts[p as usize];
        part.live = false;
        part.dirty = false;
        self.resident -= std::mem::take(&mut part.cost);
        self.index.remove(&part.key);
        if let Some(len) = part.stored.take() {
            self.gone.push((part.kg, Arc::clone(&part.key), len));
            self.deleted.insert(Arc::clone(&part.key), u64::MAX);
        }
        self.free_parts.push(p);
    }

    /// Sets a timer of `kind` at `time` for partition `p`.
    fn arm(&mut self, p: u32, time: i64, kind: u8) -> Result<()> {
        let timers = (self.timers.as_mut()).ok_or_else(|| internal("session timers not open"))?;
        let part = &self.parts[p as usize];
        timers.set(part.kg, time, kind, &part.key);
        Ok(())
    }

    /// Reads the partitions `wanted` (key group, key) that memory does not hold from the
    /// table, with one batched read.
    fn load(&mut self, mut wanted: Vec<(u16, &[u8])>) -> Result<()> {
        if self.complete {
            return Ok(());
        }
        wanted
            .retain(|(_, key)| !self.index.contains_key(*key) && !self.deleted.contains_key(*key));
        if wanted.is_empty() {
            return Ok(());
        }
        wanted.sort_unstable();
        wanted.dedup();
        self.loads += wanted.len() as u64;
        let mut table = (self.table.take()).ok_or_else(|| internal("session state not open"))?;
        let loaded = self.load_from(&mut table, &wanted);
        self.table = Some(table);
        loaded
    }

    fn load_from(&mut self, table: &mut StateTable, wanted: &[(u16, &[u8])]) -> Result<()> {
        let global = self.keys.is_none();
        let mut bytes = 0;
        for (&(kg, key), value) in wanted.iter().zip(table.multi_get(wanted)?) {
            let Some(value) = value else {
                continue;
            };
            if key.is_empty() != global {
                return Err(EngineError::Corrupt(
                    "session partition key of the wrong shape".into(),
                ));
            }
            let p = self.part(key, kg);
            self.decode_part(p, value)?;
            let cost = super::group_cost(key.len(), value.len());
            let part = &mut self.parts[p as usize];
            part.stored = Some(value.len() as u32);
            self.resident = self.resident + cost - std::mem::replace(&mut part.cost, cost);
            bytes += 2 + key.len() + value.len();
        }
        table.count_stored(bytes as i64);
        Ok(())
    }

    /// Whether a row at `t` of partition `p` is late (see the module documentation).
    fn is_late(&self, p: Option<u32>, t: i64) -> bool {
        let Some(w) = self.watermark else {
            return false;
        };
        if t.saturating_add(self.spec.gap)
            .saturating_add(self.spec.lateness)
            <= w
        {
            return true;
        }
        p.and_then(|p| self.parts[p as usize].closed_end)
            .is_some_and(|end| t <= end)
    }

    /// Adds the row at `t` to partition `p`'s sessions; returns the slot it counts in.
    fn assign(
        &mut self,
        p: u32,
        t: i64,
        touches: &mut Vec<Touch>,
        merges: &mut Vec<(u32, u32)>,
    ) -> u32 {
        let gap = self.spec.gap;
        let batch = self.batches;
        self.parts[p as usize].touched = batch;
        let sessions = &self.parts[p as usize].sessions;
        let touches_t =
            |s: &Session| s.start.saturating_sub(gap) <= t && t <= s.last.saturating_add(gap);
        let Some(first) = sessions.iter().position(touches_t) else {
            let slot = self.new_slot();
            self.touched_in[slot as usize] = batch;
            touches.push(Touch {
                part: p,
                slot,
                before: None,
            });
            self.parts[p as usize].sessions.push(Session {
                start: t,
                last: t,
                slot,
            });
            return slot;
        };
        // Sessions the row bridges to the first one (rare: it came out of order); no allocation
        // when there are none.
        let others: Vec<usize> = (first + 1..sessions.len())
            .filter(|&i| touches_t(&sessions[i]))
            .collect();
        // Note every session touched for the first time in this batch, with its bounds before.
        for i in std::iter::once(first).chain(others.iter().copied()) {
            let s = self.parts[p as usize].sessions[i];
            if self.touched_in[s.slot as usize] != batch {
                self.touched_in[s.slot as usize] = batch;
                touches.push(Touch {
                    part: p,
                    slot: s.slot,
                    before: Some((s.start, s.last)),
                });
            }
        }
        let sessions = &mut self.parts[p as usize].sessions;
        let mut target = sessions[first];
        target.start = target.start.min(t);
        target.last = target.last.max(t);
        for &i in &others {
            let other = sessions[i];
            target.start = target.start.min(other.start);
            target.last = target.last.max(other.last);
            merges.push((other.slot, target.slot));
            self.merged_into[other.slot as usize] = target.slot;
        }
        sessions[first] = target;
        // Remove the merged sessions, highest index first so the others keep their places.
        for &i in others.iter().rev() {
            sessions.swap_remove(i);
        }
        target.slot
    }

    /// The slot `slot` ended up in after this batch's merges.
    fn resolve(&self, mut slot: u32) -> u32 {
        while let Some(&next) = self.merged_into.get(slot as usize) {
            if next == u32::MAX {
                break;
            }
            slot = next;
        }
        slot
    }

    /// The session of `part` in `slot`, if it is open.
    fn session(&self, part: u32, slot: u32) -> Option<Session> {
        let part = self.parts.get(part as usize)?;
        if !part.live {
            return None;
        }
        part.sessions.iter().find(|s| s.slot == slot).copied()
    }

    fn apply(&mut self, input: ChangeBatch) -> Result<Vec<ChangeBatch>> {
        let n = input.num_rows();
        if input.ops.iter().any(|op| !op.is_add()) {
            return Err(internal("session window input retracts a row"));
        }
        self.batches += 1;
        let times = micros(input.data.column(self.spec.time))?;
        let mut kgs = Vec::new();
        let key_rows = match &self.keys {
            Some(keys) => {
                let cols: Vec<ArrayRef> = self
                    .spec
                    .partition
                    .iter()
                    .map(|&i| canonical(input.data.column(i)))
                    .collect();
                keygroup::key_groups(&cols, n, &mut kgs)?;
                Some(keys.rows.convert_columns(&cols)?)
            }
            None => None,
        };
        if !self.complete {
            let wanted = (0..n)
                .filter(|&i| times[i].is_some())
                .map(|i| {
                    let key = key_rows.as_ref().map_or(&[][..], |rows| rows.row(i));
                    (kgs.get(i).copied().unwrap_or(0), key)
                })
                .collect();
            self.load(wanted)?;
        }
        let mut keep: Vec<u32> = Vec::with_capacity(n);
        let mut late: Vec<usize> = Vec::new();
        let mut gids: Vec<u32> = Vec::with_capacity(n);
        let mut touches: Vec<Touch> = Vec::new();
        let mut merges: Vec<(u32, u32)> = Vec::new();
        for (i, time) in times.iter().enumerate() {
            let key = key_rows.as_ref().map_or(&[][..], |rows| rows.row(i));
            let existing = self.index.get(key).copied();
            let Some(t) = *time else {
                late.push(i);
                continue;
            };
            if self.is_late(existing, t) {
                late.push(i);
                continue;
            }
            let p = match existing {
                Some(p) => p,
                None => self.part(key, kgs.get(i).copied().unwrap_or(0)),
            };
            let slot = self.assign(p, t, &mut touches, &mut merges);
            keep.push(i as u32);
            gids.push(slot);
        }
        if !late.is_empty() {
            let w = self.watermark.unwrap_or(i64::MIN);
            for (&i, row) in late.iter().zip(rows_text(&input.data, &late)?) {
                self.late.push(LateRow {
                    event_time: times[i].unwrap_or(i64::MIN),
                    watermark: w,
                    row,
                });
            }
        }
        if keep.is_empty() {
            return Ok(Vec::new());
        }
        let input = if keep.len() == n {
            input
        } else {
            input.select(keep)?
        };
        for g in gids.iter_mut() {
            *g = self.resolve(*g);
        }

        // Results before the batch, of the sessions that existed then (state still untouched).
        let existed: Vec<&Touch> = touches.iter().filter(|t| t.before.is_some()).collect();
        let before_ids: Vec<u32> = existed.iter().map(|t| t.slot).collect();
        let before_rows: Vec<i64> = before_ids.iter().map(|&s| self.rows[s as usize]).collect();
        let keep_all = vec![true; before_ids.len()];
        let (mut before, mut arena) = (Vec::new(), Vec::new());
        let emit = !self.spec.emit_on_close;
        for agg in self.aggs.iter().filter(|_| emit) {
            agg.results(
                &before_ids,
                &before_rows,
                &keep_all,
                &mut before,
                &mut arena,
            )?;
        }
        let before_bounds: Vec<(u32, (i64, i64))> = existed
            .iter()
            .filter_map(|t| t.before.map(|b| (t.part, b)))
            .collect();

        for &(from, into) in &merges {
            for agg in &mut self.aggs {
                agg.merge(into, from)?;
            }
            let moved = std::mem::take(&mut self.rows[from as usize]);
            self.rows[into as usize] += moved;
        }
        let signs = vec![1i64; gids.len()];
        for &g in &gids {
            self.rows[g as usize] += 1;
        }
        for agg in &mut self.aggs {
            agg.update(input.data.columns(), &gids, &signs)?;
        }

        // Sessions still open after the batch, with their results; `open[i]`: whether touch `i`
        // is one of them.
        let mut after_ids = Vec::new();
        let mut after_sessions = Vec::new();
        let mut open = Vec::with_capacity(touches.len());
        for t in &touches {
            let survivor = (self.merged_into[t.slot as usize] == u32::MAX)
                .then(|| self.session(t.part, t.slot))
                .flatten();
            open.push(survivor.is_some());
            if let Some(s) = survivor {
                after_ids.push(t.slot);
                after_sessions.push((t.part, s, t.before.map(|(_, last)| last)));
            }
        }
        let after_rows: Vec<i64> = after_ids.iter().map(|&s| self.rows[s as usize]).collect();
        let keep_all = vec![true; after_ids.len()];
        let mut after = Vec::new();
        for agg in self.aggs.iter().filter(|_| emit) {
            agg.results(&after_ids, &after_rows, &keep_all, &mut after, &mut arena)?;
        }

        let mut out = Vec::new();
        if emit {
            out.extend(self.changes(
                &touches,
                &open,
                (&before_bounds, &before),
                (&after_sessions, &after),
                &arena,
            )?);
        }

        for &(p, s, last_before) in &after_sessions {
            // A session whose last row stayed has its timer already.
            if last_before != Some(s.last) {
                self.arm(p, self.close_time(&s), due::CLOSE)?;
            }
            self.mark_dirty(p);
        }
        for &(from, _) in &merges {
            self.merged_into[from as usize] = u32::MAX;
            self.free_slot(from);
        }
        Ok(out)
    }

    /// The emitted changes of the touched sessions (emit on update): `touches` in order, whether
    /// each is still open, the bounds and results before the batch of those that existed then,
    /// and the sessions and results after it of those still open, both in `touches` order.
    fn changes(
        &self,
        touches: &[Touch],
        open: &[bool],
        before: (&[Before], &[Value]),
        after: (&[After], &[Value]),
        arena: &[u8],
    ) -> Result<Option<ChangeBatch>> {
        let (before_bounds, before_values) = before;
        let (after_sessions, after_values) = after;
        let (nb, na) = (before_bounds.len(), after_sessions.len());
        // Output rows: (op, partition, start, last, from after?, index into before or after).
        let mut rows: Vec<(Op, u32, i64, i64, bool, usize)> = Vec::new();
        let (mut b, mut a) = (0, 0);
        for (t, &is_open) in touches.iter().zip(open) {
            let existed = t.before.is_some();
            match (existed, is_open) {
                (true, true) => {
                    let (p, (start, last)) = before_bounds[b];
                    let s = after_sessions[a].1;
                    if (start, last) == (s.start, s.last) {
                        let same = (0..self.aggs.len()).all(|g| {
                            before_values[g * nb + b].same(&after_values[g * na + a], arena)
                        });
                        if !same {
                            rows.push((Op::UpdateBefore, p, start, last, false, b));
                            rows.push((Op::UpdateAfter, p, s.start, s.last, true, a));
                        }
                    } else {
                        rows.push((Op::Delete, p, start, last, false, b));
                        rows.push((Op::Insert, p, s.start, s.last, true, a));
                    }
                }
                (true, false) => {
                    let (p, (start, last)) = before_bounds[b];
                    rows.push((Op::Delete, p, start, last, false, b));
                }
                (false, true) => {
                    let (p, s, _) = after_sessions[a];
                    rows.push((Op::Insert, p, s.start, s.last, true, a));
                }
                (false, false) => {}
            }
            b += usize::from(existed);
            a += usize::from(is_open);
        }
        if rows.is_empty() {
            return Ok(None);
        }
        let ops = rows.iter().map(|r| r.0).collect();
        let bounds: Vec<(u32, i64, i64)> = rows.iter().map(|r| (r.1, r.2, r.3)).collect();
        let value = |g: usize, r: usize| {
            let (_, _, _, _, is_after, i) = rows[r];
            if is_after {
                after_values[g * na + i]
            } else {
                before_values[g * nb + i]
            }
        };
        self.build(ops, &bounds, value, arena).map(Some)
    }

    /// One output batch: row `r` is `ops[r]` of the session `bounds[r]` (partition, start,
    /// last) with results `value(g, r)` for aggregate `g`.
    fn build(
        &self,
        ops: Vec<Op>,
        bounds: &[(u32, i64, i64)],
        value: impl Fn(usize, usize) -> Value,
        arena: &[u8],
    ) -> Result<ChangeBatch> {
        let n = bounds.len();
        let key_columns = match &self.keys {
            Some(keys) => (keys.rows).convert_rows(
                bounds
                    .iter()
                    .map(|&(p, _, _)| &self.parts[p as usize].key[..]),
            )?,
            None => Vec::new(),
        };
        let gap = self.spec.gap;
        let times = |f: &dyn Fn(i64, i64) -> i64| -> ArrayRef {
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                bounds.iter().map(|&(_, s, l)| f(s, l)),
            ))
        };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.output.fields().len());
        for c in &self.spec.columns {
            columns.push(match c {
                SessionColumn::Partition(i) => key_columns
                    .get(*i)
                    .cloned()
                    .ok_or_else(|| internal("session partition column out of range"))?,
                SessionColumn::Start => times(&|s, _| s),
                SessionColumn::End => times(&|_, l| l.saturating_add(gap)),
                SessionColumn::Time => {
                    times(&|_, l| l.saturating_add(gap).saturating_sub(WINDOW_TIME_OFFSET))
                }
                SessionColumn::Last => times(&|_, l| l),
            });
        }
        for (g, agg) in self.aggs.iter().enumerate() {
            columns.push(agg.build((0..n).map(|r| value(g, r)), arena)?);
        }
        let columns = columns
            .iter()
            .zip(self.output.fields().iter())
            .map(|(c, f)| cast_with_options(c, f.data_type(), &strict()))
            .collect::<Result<Vec<_>, _>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(n));
        let data = RecordBatch::try_new_with_options(Arc::clone(&self.output), columns, &options)?;
        Ok(ChangeBatch { data, ops })
    }

    /// Fires the timers the watermark `w` reached: closes the sessions of their partitions
    /// whose close time it reached, and forgets the closed ends it passed by the gap and the
    /// lateness.
    fn close(&mut self, w: i64) -> Result<Vec<ChangeBatch>> {
        let timers = (self.timers.as_mut()).ok_or_else(|| internal("session timers not open"))?;
        let fired = timers.take(w)?;
        if fired.is_empty() {
            return Ok(Vec::new());
        }
        self.load(fired.iter().map(|(_, kg, key)| (*kg, &key[..])).collect())?;
        // The fired partitions, each once, in the order of their first timer.
        let mut parts: Vec<u32> = Vec::new();
        for (_, _, key) in &fired {
            if let Some(&p) = self.index.get(&key[..])
                && !parts.contains(&p)
            {
                parts.push(p);
            }
        }
        let mut closing: Vec<(u32, Session)> = Vec::new();
        for &p in &parts {
            let mut due: Vec<Session> = (self.parts[p as usize].sessions.iter())
                .filter(|s| self.close_time(s) <= w)
                .copied()
                .collect();
            due.sort_unstable_by_key(|s| s.start);
            closing.extend(due.into_iter().map(|s| (p, s)));
        }
        let mut out = Vec::new();
        if self.spec.emit_on_close && !closing.is_empty() {
            let ids: Vec<u32> = closing.iter().map(|(_, s)| s.slot).collect();
            let rows: Vec<i64> = ids.iter().map(|&s| self.rows[s as usize]).collect();
            let keep = vec![true; ids.len()];
            let (mut values, mut arena) = (Vec::new(), Vec::new());
            for agg in &self.aggs {
                agg.results(&ids, &rows, &keep, &mut values, &mut arena)?;
            }
            let n = ids.len();
            let bounds: Vec<(u32, i64, i64)> =
                closing.iter().map(|(p, s)| (*p, s.start, s.last)).collect();
            out.push(self.build(
                vec![Op::Insert; n],
                &bounds,
                |g, r| values[g * n + r],
                &arena,
            )?);
        }
        for (p, s) in closing {
            let end = self.end(&s);
            let part = &mut self.parts[p as usize];
            part.sessions.retain(|x| x.slot != s.slot);
            part.closed_end = Some(part.closed_end.map_or(end, |e| e.max(end)));
            self.free_slot(s.slot);
            self.mark_dirty(p);
        }
        let forget_after = self.spec.gap.saturating_add(self.spec.lateness);
        for p in parts {
            let Some(end) = self.parts[p as usize].closed_end else {
                continue;
            };
            let at = end.saturating_add(forget_after);
            if at > w {
                self.arm(p, at, due::FORGET)?;
                continue;
            }
            self.parts[p as usize].closed_end = None;
            if self.parts[p as usize].sessions.is_empty() {
                self.remove_part(p);
            } else {
                self.mark_dirty(p);
            }
        }
        Ok(out)
    }

    fn encode_part(&self, part: &Part, out: &mut Vec<u8>) {
        out.push(FORMAT);
        match part.closed_end {
            Some(e) => {
                out.push(1);
                put_i(out, e.into());
            }
            None => out.push(0),
        }
        put_u(out, part.sessions.len() as u128);
        let mut group = Vec::new();
        for s in &part.sessions {
            put_i(out, s.start.into());
            put_i(out, s.last.into());
            group.clear();
            codec::encode(self.rows[s.slot as usize], &self.aggs, s.slot, &mut group);
            put_u(out, group.len() as u128);
            out.extend_from_slice(&group);
        }
    }

    fn decode_part(&mut self, p: u32, bytes: &[u8]) -> Result<()> {
        let mut r = Reader(bytes);
        if r.take(1)? != [FORMAT] {
            return Err(EngineError::Corrupt(
                "unknown session window state format".into(),
            ));
        }
        let closed_end = match r.take(1)? {
            [0] => None,
            [1] => Some(r.i64()?),
            _ => return Err(corrupt()),
        };
        let n = usize::try_from(r.u()?).map_err(|_| corrupt())?;
        let mut sessions = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let (start, last) = (r.i64()?, r.i64()?);
            let len = usize::try_from(r.u()?).map_err(|_| corrupt())?;
            let group = r.take(len)?;
            let slot = self.new_slot();
            self.rows[slot as usize] = codec::decode(group, &mut self.aggs, slot)?;
            sessions.push(Session { start, last, slot });
        }
        if !r.0.is_empty() {
            return Err(corrupt());
        }
        let part = &mut self.parts[p as usize];
        part.sessions = sessions;
        part.closed_end = closed_end;
        Ok(())
    }
}

impl Operator for SessionAggregate {
    fn state_layout(&self) -> &'static str {
        super::STATE_LAYOUT
    }

    fn name(&self) -> &'static str {
        "SessionAggregate"
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.output)
    }

    fn process(&mut self, _input: usize, input: ChangeBatch) -> Result<Vec<ChangeBatch>> {
        let n = input.num_rows();
        let columns = input.data.columns();
        let types_match = columns.len() == self.input.fields().len()
            && columns
                .iter()
                .zip(self.input.fields().iter())
                .all(|(c, f)| c.data_type() == f.data_type());
        if !types_match || input.ops.len() != n {
            return Err(internal(
                "session aggregate input does not match its declared schema",
            ));
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        self.lookups += n as u64;
        self.apply(input)
    }

    fn on_watermark(&mut self, _input: usize, watermark: i64) -> Result<Vec<ChangeBatch>> {
        if self.watermark.is_some_and(|w| w >= watermark) {
            return Ok(Vec::new());
        }
        self.watermark = Some(watermark);
        self.close(watermark)
    }

    fn take_late(&mut self) -> Vec<LateRow> {
        std::mem::take(&mut self.late)
    }

    fn fork(&self) -> Result<Box<dyn Operator>> {
        Ok(Box::new(Self::try_new(
            Arc::clone(&self.input),
            self.spec.clone(),
            self.specs.clone(),
            Arc::clone(&self.output),
        )?))
    }

    fn restore(&mut self, scope: &StateScope) -> Result<()> {
        let mut fresh = Self::try_new(
            Arc::clone(&self.input),
            self.spec.clone(),
            self.specs.clone(),
            Arc::clone(&self.output),
        )?;
        // Nothing is read: partitions are read when a row or a timer needs them.
        let table = super::open_table(scope);
        fresh.complete = table.is_empty()?;
        fresh.budget = scope.cache_bytes;
        fresh.table = Some(table);
        fresh.timers = Some(Timers::open(scope));
        *self = fresh;
        Ok(())
    }

    fn checkpoint(&mut self, epoch: u64, scope: &StateScope, batch: &mut StateBatch) -> Result<()> {
        let mut table = match self.table.take() {
            Some(table) => table,
            None => super::open_table(scope),
        };
        let mut writes: Vec<(u16, Arc<[u8]>, super::Write)> = Vec::new();
        for (kg, key, len) in std::mem::take(&mut self.gone) {
            match self.index.get(&key) {
                // A vanished key that is live again is overwritten by its new partition's put.
                Some(&p) => {
                    let part = &mut self.parts[p as usize];
                    part.stored = part.stored.or(Some(len));
                }
                None => writes.push((kg, key, super::Write::Delete(len))),
            }
        }
        for p in std::mem::take(&mut self.dirty) {
            let part = &mut self.parts[p as usize];
            if std::mem::replace(&mut part.dirty, false) && part.live {
                writes.push((part.kg, Arc::clone(&part.key), super::Write::Group(p)));
            }
        }
        // In key order, which RocksDB inserts into its memtable much faster than random order.
        writes.sort_unstable_by(|a, b| (a.0, &*a.1).cmp(&(b.0, &*b.1)));
        let mut value = Vec::new();
        for (kg, key, write) in writes {
            let p = match write {
                super::Write::Group(p) => p,
                super::Write::Delete(len) => {
                    table.write_behind(batch, kg, &key, None, Some(len as usize));
                    continue;
                }
            };
            value.clear();
            self.encode_part(&self.parts[p as usize], &mut value);
            let part = &mut self.parts[p as usize];
            let cost = super::group_cost(key.len(), value.len());
            self.resident = self.resident + cost - std::mem::replace(&mut part.cost, cost);
            part.written = epoch;
            let before = part.stored.replace(value.len() as u32);
            table.write_behind(batch, kg, &key, Some(&value), before.map(|l| l as usize));
        }
        let committed = table.committed_epoch();
        self.deleted.retain(|_, e| {
            if *e == u64::MAX {
                *e = epoch;
            }
            *e > committed
        });
        table.checkpoint(epoch, batch);
        if let Some(timers) = self.timers.as_mut() {
            timers.checkpoint(epoch, batch);
        }
        // The shared pool learns the partitions' size once an epoch, and says what they may
        // take; over it, memory keeps the half it may take.
        if self.keys.is_some() {
            let limit = self.charge.update(self.resident, self.budget);
            if self.resident > limit {
                self.shrink(&mut table, limit / 2, committed);
                self.charge.update(self.resident, self.budget);
            }
        }
        // The partitions in memory are those read or written since the restore: the stored
        // bytes counted are theirs.
        let stored = table.bytes() as usize;
        let (lookups, loads) = (
            std::mem::take(&mut self.lookups),
            std::mem::take(&mut self.loads),
        );
        super::publish(
            scope,
            lookups.saturating_sub(loads),
            loads,
            stored,
            self.resident,
        );
        self.table = Some(table);
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.table.as_ref().map_or(0, |t| t.bytes() as usize)
    }

    fn describe(&self) -> String {
        let aggs: Vec<String> = self.aggs.iter().map(Agg::describe).collect();
        let keys: Vec<String> = self
            .spec
            .partition
            .iter()
            .map(|i| format!("#{i}"))
            .collect();
        format!(
            "SessionAggregate partition_by=[{}] time=#{} gap={} us aggs=[{}]{}{}, timers in state",
            keys.join(", "),
            self.spec.time,
            self.spec.gap,
            aggs.join(", "),
            if self.spec.lateness > 0 {
                format!(" lateness={} us", self.spec.lateness)
            } else {
                String::new()
            },
            if self.spec.emit_on_close {
                ", emits on window close"
            } else {
                ""
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use datafusion::arrow::array::{Int64Array, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use datafusion::scalar::ScalarValue as S;

    use super::*;
    use crate::operator::aggregate::AggFunc;
    use crate::state::StateStore;

    const GAP: i64 = 10;
    type Key = (i64, i64, i64);
    type Aggs = (i64, i64, i64);

    fn ts() -> DataType {
        DataType::Timestamp(TimeUnit::Microsecond, None)
    }

    fn input() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("ts", ts(), true),
            Field::new("v", DataType::Int64, true),
        ]))
    }

    /// `k, window_start, window_end, count(*), sum(v), max(v)` per session of `k`.
    fn operator(emit_on_close: bool, lateness: i64) -> SessionAggregate {
        let output = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("window_start", ts(), true),
            Field::new("window_end", ts(), true),
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Int64, true),
            Field::new("hi", DataType::Int64, true),
        ]));
        let spec = SessionSpec {
            time: 1,
            partition: vec![0],
            gap: GAP,
            lateness,
            emit_on_close,
            columns: vec![
                SessionColumn::Partition(0),
                SessionColumn::Start,
                SessionColumn::End,
            ],
        };
        let agg = |func, input| AggSpec {
            func,
            input,
            ..AggSpec::default()
        };
        let aggs = vec![
            agg(AggFunc::CountStar, None),
            agg(AggFunc::Sum, Some(2)),
            agg(AggFunc::Max, Some(2)),
        ];
        SessionAggregate::try_new(input(), spec, aggs, output).unwrap()
    }

    fn batch(rows: &[(i64, i64, i64)]) -> ChangeBatch {
        let data = RecordBatch::try_new(
            input(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(TimestampMicrosecondArray::from_iter_values(
                    rows.iter().map(|r| r.1),
                )),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap();
        ChangeBatch {
            data,
            ops: vec![Op::Insert; rows.len()],
        }
    }

    fn int(v: S) -> i64 {
        match v {
            S::Int64(Some(i)) | S::TimestampMicrosecond(Some(i), _) => i,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Applies a changelog to a view keyed by (k, start, end).
    fn apply(view: &mut BTreeMap<Key, Aggs>, out: Vec<ChangeBatch>) {
        for b in out {
            for (i, op) in b.ops.iter().enumerate() {
                let v: Vec<i64> = (0..6)
                    .map(|c| int(S::try_from_array(b.data.column(c), i).unwrap()))
                    .collect();
                let (key, aggs) = ((v[0], v[1], v[2]), (v[3], v[4], v[5]));
                match op {
                    Op::Insert | Op::UpdateAfter => {
                        assert!(view.insert(key, aggs).is_none(), "{key:?} twice")
                    }
                    Op::Delete | Op::UpdateBefore => assert_eq!(view.remove(&key), Some(aggs)),
                }
            }
        }
    }

    /// Sessions of each key over `rows` (k, t, v), computed in one pass over sorted rows.
    fn sessions(rows: &[(i64, i64, i64)]) -> BTreeMap<Key, Aggs> {
        let mut sorted = rows.to_vec();
        sorted.sort();
        let mut out = BTreeMap::new();
        let mut current: Option<(i64, i64, i64, Aggs)> = None;
        let mut flush = |c: Option<(i64, i64, i64, Aggs)>| {
            if let Some((k, start, last, aggs)) = c {
                out.insert((k, start, last + GAP), aggs);
            }
        };
        for &(k, t, v) in &sorted {
            current = match current {
                Some((ck, start, last, (n, s, hi))) if ck == k && t - last <= GAP => {
                    Some((k, start, t, (n + 1, s + v, hi.max(v))))
                }
                other => {
                    flush(other);
                    Some((k, t, t, (1, v, v)))
                }
            };
        }
        flush(current);
        out
    }

    fn scope(store: &StateStore) -> StateScope {
        StateScope::new(store.clone(), b"session/", 0..crate::keygroup::KEY_GROUPS)
    }

    /// A seeded out-of-order stream, in random batches with watermarks and restarts: the view
    /// equals the sessions over the rows that were not late, and a row is late exactly when it
    /// could only have changed a closed session.
    fn run(seed: u64, emit_on_close: bool, lateness: i64) {
        let mut rng = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut next = move |n: i64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as i64
        };
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let mut op = operator(emit_on_close, lateness);
        op.restore(&scope(&store)).unwrap();
        let mut view = BTreeMap::new();
        let mut accepted: Vec<(i64, i64, i64)> = Vec::new();
        let (mut clock, mut watermark, mut late_rows) = (0i64, None::<i64>, 0usize);
        for round in 0..60 {
            let rows: Vec<(i64, i64, i64)> = (0..1 + next(8))
                .map(|_| {
                    clock += next(6);
                    (next(3), clock - next(30), next(100))
                })
                .collect();
            // Which of them are late, by the definition: the row's own session would be closed,
            // or it touches a session (over the accepted rows so far) that is closed.
            let mut expected_late = 0;
            let mut batch_accepted = Vec::new();
            for &(k, t, v) in &rows {
                let late = watermark.is_some_and(|w| {
                    t + GAP + lateness <= w
                        || sessions(&accepted).keys().any(|&(sk, start, end)| {
                            sk == k && end + lateness <= w && start - GAP <= t && t <= end
                        })
                });
                if late {
                    expected_late += 1;
                } else {
                    accepted.push((k, t, v));
                    batch_accepted.push((k, t, v));
                }
            }
            apply(&mut view, op.process(0, batch(&rows)).unwrap());
            let late = op.take_late();
            assert_eq!(late.len(), expected_late, "seed {seed} round {round}");
            late_rows += late.len();
            let w = clock - 5;
            if watermark.is_none_or(|old| w > old) {
                watermark = Some(w);
                apply(&mut view, op.on_watermark(0, w).unwrap());
            }
            if round % 7 == 3 {
                let mut state = StateBatch::new();
                op.checkpoint(1, &scope(&store), &mut state).unwrap();
                store.write(state, true).unwrap();
                op = operator(emit_on_close, lateness);
                op.restore(&scope(&store)).unwrap();
                if let Some(w) = watermark {
                    assert!(op.on_watermark(0, w).unwrap().is_empty());
                }
            }
        }
        let expected = sessions(&accepted);
        if emit_on_close {
            let w = watermark.unwrap();
            let closed: BTreeMap<Key, Aggs> = expected
                .iter()
                .filter(|(k, _)| k.2 <= w)
                .map(|(k, v)| (*k, *v))
                .collect();
            assert_eq!(view, closed, "seed {seed}");
        } else {
            assert_eq!(view, expected, "seed {seed}");
        }
        // The final watermark closes everything and frees all state.
        apply(&mut view, op.on_watermark(0, i64::MAX / 2).unwrap());
        assert_eq!(view, expected, "seed {seed}");
        assert_eq!(op.session_count(), 0);
        let mut state = StateBatch::new();
        op.checkpoint(1, &scope(&store), &mut state).unwrap();
        store.write(state, true).unwrap();
        let mut left = 0;
        scope(&store)
            .scan(|_, _, _| {
                left += 1;
                Ok(())
            })
            .unwrap();
        assert_eq!(left, 0, "state left after every session closed");
        assert!(
            late_rows > 0,
            "seed {seed}: the stream should have late rows"
        );
    }

    #[test]
    fn random_out_of_order_sessions_match_batch_sessions_across_restarts() {
        for seed in 1..=40 {
            run(seed, false, 0);
            run(seed, true, 0);
            run(seed, false, 15);
        }
    }

    #[test]
    fn a_row_bridging_two_sessions_merges_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let mut op = operator(false, 0);
        op.restore(&scope(&store)).unwrap();
        let mut view = BTreeMap::new();
        apply(
            &mut view,
            op.process(0, batch(&[(1, 100, 1), (1, 118, 2)])).unwrap(),
        );
        assert_eq!(
            view,
            BTreeMap::from([((1, 100, 110), (1, 1, 1)), ((1, 118, 128), (1, 2, 2))])
        );
        // 109 is within 10 of both: one session from 100 to 118.
        apply(&mut view, op.process(0, batch(&[(1, 109, 4)])).unwrap());
        assert_eq!(view, BTreeMap::from([((1, 100, 128), (3, 7, 4))]));
        assert_eq!(op.session_count(), 1);
    }

    /// Commits `op`'s checkpoint of epoch `epoch`; returns the partitions stored then.
    fn commit(op: &mut SessionAggregate, scope: &StateScope, epoch: u64) -> usize {
        let mut state = StateBatch::new();
        op.checkpoint(epoch, scope, &mut state).unwrap();
        scope.store.write(state, true).unwrap();
        scope
            .committed
            .store(epoch, std::sync::atomic::Ordering::Release);
        let mut stored = 0;
        scope
            .scan(|_, _, _| {
                stored += 1;
                Ok(())
            })
            .unwrap();
        stored
    }

    /// Point reads of partitions that went to the store since the restore.
    fn reads(op: &SessionAggregate) -> u64 {
        op.table.as_ref().map_or(0, |t| t.stats().misses)
    }

    #[test]
    fn partitions_over_the_cache_budget_leave_memory_and_come_back() {
        const KEYS: i64 = 1_000;
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let mut scope = scope(&store);
        scope.cache_bytes = 16 * 1024;
        let mut op = operator(false, 0);
        op.restore(&scope).unwrap();
        let (mut view, mut rows) = (BTreeMap::new(), Vec::new());
        // Each round opens sessions for a fifth of the keys; later rounds extend every key's.
        for round in 0..8 {
            let batch_rows: Vec<_> = if round < 5 {
                (round * KEYS / 5..(round + 1) * KEYS / 5)
                    .map(|k| (k, 100 + round, k % 7))
                    .collect()
            } else {
                (0..KEYS).map(|k| (k, 100 + round, round)).collect()
            };
            apply(&mut view, op.process(0, batch(&batch_rows)).unwrap());
            rows.extend(batch_rows);
            commit(&mut op, &scope, round as u64 + 1);
            let live = op.parts.iter().filter(|p| p.live).count();
            if (2..5).contains(&round) {
                // The partitions of earlier rounds, committed, left memory.
                assert!(
                    live < (round as usize + 1) * KEYS as usize / 5,
                    "{live} in memory"
                );
            }
            // What memory holds is about what it may: the last epoch's partitions (not yet
            // committed when it was checkpointed) and no more than half the budget besides.
            let written_last: usize = (op.parts.iter())
                .filter(|p| p.live && p.written == round as u64 + 1)
                .map(|p| p.cost)
                .sum();
            assert!(
                op.resident <= written_last + 8 * 1024,
                "{} bytes held",
                op.resident
            );
        }
        assert!(reads(&op) > 0, "evicted partitions were read again");
        assert_eq!(view, sessions(&rows));
        // Closing reads the evicted partitions through their timers, and leaves nothing.
        apply(&mut view, op.on_watermark(0, i64::MAX / 2).unwrap());
        assert_eq!(view, sessions(&rows));
        assert_eq!(op.session_count(), 0);
        assert_eq!(commit(&mut op, &scope, 9), 0);
    }

    #[test]
    fn a_restart_with_many_open_sessions_reads_none_until_needed() {
        const KEYS: i64 = 1_000;
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let scope = scope(&store);
        let mut op = operator(true, 0);
        op.restore(&scope).unwrap();
        // Each key one session from 100 to 105, closing at 115.
        let rows: Vec<_> = (0..KEYS).flat_map(|k| [(k, 100, 1), (k, 105, k)]).collect();
        assert!(op.process(0, batch(&rows)).unwrap().is_empty());
        assert_eq!(commit(&mut op, &scope, 1), KEYS as usize);

        // A restart reads nothing; a row of key 3 reads key 3 alone, and extends its session.
        let mut op = operator(true, 0);
        op.restore(&scope).unwrap();
        assert_eq!((op.session_count(), reads(&op)), (0, 0));
        assert!(op.process(0, batch(&[(3, 112, 10)])).unwrap().is_empty());
        assert_eq!((op.session_count(), reads(&op)), (1, 1));
        // The watermark closes every other session, each read as its timer fires.
        let mut view = BTreeMap::new();
        apply(&mut view, op.on_watermark(0, 115).unwrap());
        let expected: BTreeMap<Key, Aggs> = (0..KEYS)
            .filter(|&k| k != 3)
            .map(|k| ((k, 100, 115), (2, 1 + k, k.max(1))))
            .collect();
        assert_eq!(view, expected);
        assert_eq!((op.session_count(), reads(&op)), (1, KEYS as u64));
        assert_eq!(commit(&mut op, &scope, 2), KEYS as usize);

        // After a second restart key 3's session closes at 122, and the closed ends are
        // forgotten once the watermark passes them by the gap: no state is left.
        let mut op = operator(true, 0);
        op.restore(&scope).unwrap();
        assert!(op.on_watermark(0, 115).unwrap().is_empty());
        assert_eq!(reads(&op), 0);
        apply(&mut view, op.on_watermark(0, 122).unwrap());
        assert_eq!(view.get(&(3, 100, 122)), Some(&(3, 14, 10)));
        assert_eq!(reads(&op), 1);
        // A row at or before a closed end of its key is late, though its partition was read
        // only now.
        assert!(op.process(0, batch(&[(5, 114, 1)])).unwrap().is_empty());
        assert_eq!(op.take_late().len(), 1);
        assert!(op.on_watermark(0, 200).unwrap().is_empty());
        assert_eq!(commit(&mut op, &scope, 3), 0);
    }
}
