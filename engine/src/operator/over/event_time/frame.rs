//! A partition of the event-time OVER operator in memory: its *frame* (the emitted rows that
//! the accumulators hold, in key order), its rows not emitted yet, and one sliding accumulator
//! per function. It caches what the rows table holds (the same rows with the same counts), so
//! it can be dropped at any time and rebuilt from the table. Rows are kept as their stored keys
//! after the partition key (order key, row, row length), back to back, not decoded: a row is
//! decoded once when it enters the frame and once when it leaves it.

use std::collections::{HashMap, VecDeque};
use std::ops::ControlFlow;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::logical_expr::Accumulator;

use crate::operator::sorted::count_of;
use crate::state::prefix_end;
use crate::state::table::{Direction, StateTable};
use crate::{EngineError, Result};

/// Bytes of the order key at the start of a stored row's key (after the partition key): a
/// marker byte (1: not NULL), then the event time (see [`crate::state::keys::SortKeyEncoder`]).
pub(super) const ORDER: usize = 9;

/// Memory a cached row costs besides its key bytes (its entry, map and queue slots).
const ROW_OVERHEAD: usize = 48;

/// Memory a cached partition costs besides its rows and accumulators.
const PARTITION_OVERHEAD: usize = 256;

/// The event time (in the column's unit) of a stored row's key after the partition key.
pub(super) fn time_of(key: &[u8]) -> Result<i64> {
    match key.get(..ORDER) {
        Some([1, t @ ..]) => {
            let t: [u8; 8] = t.try_into().map_err(|_| corrupt())?;
            Ok((u64::from_be_bytes(t) ^ (1 << 63)) as i64)
        }
        _ => Err(corrupt()),
    }
}

fn corrupt() -> EngineError {
    EngineError::Corrupt("event-time OVER row without its event time".into())
}

/// How event times, in the column's unit, compare with watermarks (in microseconds).
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    /// Nanoseconds per unit (a BIGINT event time is in microseconds).
    unit: i64,
}

impl Clock {
    pub(super) fn of(t: &DataType) -> Result<Self> {
        let unit = match t {
            DataType::Int64 | DataType::Timestamp(TimeUnit::Microsecond, _) => 1000,
            DataType::Timestamp(TimeUnit::Nanosecond, _) => 1,
            DataType::Timestamp(TimeUnit::Millisecond, _) => 1_000_000,
            DataType::Timestamp(TimeUnit::Second, _) => 1_000_000_000,
            other => {
                return Err(EngineError::Internal(format!(
                    "event time in a column of type {other}"
                )));
            }
        };
        Ok(Self { unit })
    }

    /// `t` in microseconds, as the timers read the column (Arrow's cast truncates).
    pub(super) fn micros(self, t: i64) -> i64 {
        match self.unit {
            1 => t / 1000,
            u => t.saturating_mul(u / 1000),
        }
    }

    /// The least event time whose microseconds are `us` or more.
    pub(super) fn first_at(self, us: i64) -> i64 {
        match self.unit {
            1 if us > 0 => us.saturating_mul(1000),
            1 => us.saturating_mul(1000).saturating_sub(999),
            u => {
                let per = u / 1000;
                us / per + i64::from(us % per > 0)
            }
        }
    }

    /// `us` microseconds (not negative) in the column's unit, rounded up: a RANGE frame reaches
    /// back to the row's time minus this, as DataFusion's timestamp arithmetic rounds.
    pub(super) fn span(self, us: i64) -> i64 {
        let unit = i128::from(self.unit);
        let units = (i128::from(us.max(0)) * 1000 + unit - 1) / unit;
        i64::try_from(units).unwrap_or(i64::MAX)
    }
}

/// A row of a [`Queue`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    /// Its event time, in the column's unit.
    pub time: i64,
    /// Its copies.
    pub count: i64,
    len: usize,
}

/// Rows (stored keys after the partition key, with their event times and counts) in the order
/// they were pushed, taken from the front.
#[derive(Debug, Default)]
pub(super) struct Queue {
    bytes: Vec<u8>,
    /// Bytes of rows taken, at the start of `bytes`; reclaimed once they are half of it.
    head: usize,
    rows: VecDeque<Entry>,
}

impl Queue {
    pub(super) fn push(&mut self, key: &[u8], time: i64, count: i64) {
        self.bytes.extend_from_slice(key);
        self.rows.push_back(Entry {
            time,
            count,
            len: key.len(),
        });
    }

    pub(super) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Its rows (entries, not copies).
    pub(super) fn len(&self) -> usize {
        self.rows.len()
    }

    /// The first row and its key.
    pub(super) fn front(&self) -> Option<(&[u8], Entry)> {
        let e = *self.rows.front()?;
        Some((self.bytes.get(self.head..self.head + e.len)?, e))
    }

    /// Sets the first row's count.
    pub(super) fn set_front_count(&mut self, count: i64) {
        if let Some(e) = self.rows.front_mut() {
            e.count = count;
        }
    }

    /// Drops the first row.
    pub(super) fn pop(&mut self) {
        let Some(e) = self.rows.pop_front() else {
            return;
        };
        self.head += e.len;
        if self.rows.is_empty() {
            self.bytes.clear();
            self.head = 0;
        } else if self.head > 4096 && self.head * 2 > self.bytes.len() {
            self.bytes.drain(..self.head);
            self.head = 0;
        }
    }

    /// The last row and its key.
    pub(super) fn last(&self) -> Option<(&[u8], Entry)> {
        let e = *self.rows.back()?;
        Some((self.bytes.get(self.bytes.len() - e.len..)?, e))
    }

    /// Every row and its key, first to last.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&[u8], Entry)> {
        let mut at = self.head;
        self.rows.iter().map(move |e| {
            let key = self.bytes.get(at..at + e.len).unwrap_or_default();
            at += e.len;
            (key, *e)
        })
    }

    pub(super) fn clear(&mut self) {
        self.bytes.clear();
        self.head = 0;
        self.rows.clear();
    }

    fn memory(&self) -> usize {
        self.bytes.capacity() + self.rows.capacity() * std::mem::size_of::<Entry>()
    }
}

/// Rows not emitted yet, by event time (then arrival), their keys back to back.
#[derive(Debug, Default)]
pub(super) struct Pending {
    bytes: Vec<u8>,
    /// Bytes of rows taken; reclaimed once they are half of `bytes`.
    taken: usize,
    /// In event-time order (rows mostly come in it: an insert is near the end).
    rows: VecDeque<Waiting>,
}

/// A row of [`Pending`].
#[derive(Debug, Clone, Copy)]
struct Waiting {
    time: i64,
    /// Where its key is in `bytes`.
    start: usize,
    len: usize,
    count: i64,
}

impl Pending {
    pub(super) fn add(&mut self, key: &[u8], time: i64, count: i64) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(key);
        let at = self.rows.partition_point(|r| r.time <= time);
        let row = Waiting {
            time,
            start,
            len: key.len(),
            count,
        };
        self.rows.insert(at, row);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn key(&self, r: &Waiting) -> &[u8] {
        self.bytes.get(r.start..r.start + r.len).unwrap_or_default()
    }

    /// Copies it holds of the row of key `key` and event time `time`.
    pub(super) fn count(&self, key: &[u8], time: i64) -> i64 {
        let from = self.rows.partition_point(|r| r.time < time);
        (self.rows.range(from..))
            .take_while(|r| r.time == time)
            .filter(|r| self.key(r) == key)
            .map(|r| r.count)
            .sum()
    }

    /// Whether a row waits whose event time `micros` takes to `us` (`micros` keeps the order).
    pub(super) fn waits_at(&self, micros: impl Fn(i64) -> i64, us: i64) -> bool {
        let at = self.rows.partition_point(|r| micros(r.time) < us);
        self.rows.get(at).is_some_and(|r| micros(r.time) == us)
    }

    /// Its rows (key, event time, count), in event-time order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&[u8], i64, i64)> {
        self.rows.iter().map(|r| (self.key(r), r.time, r.count))
    }

    /// Moves the rows whose event time `due` says (a prefix of the times) into `out`, to be
    /// emitted.
    pub(super) fn take(&mut self, due: impl Fn(i64) -> bool, out: &mut Entering) {
        while let Some(r) = self.rows.front().filter(|r| due(r.time)) {
            out.push(self.key(r), r.time, r.count, true);
            self.taken += r.len;
            self.rows.pop_front();
        }
        if self.rows.is_empty() {
            self.bytes.clear();
            self.taken = 0;
        } else if self.taken > 4096 && self.taken * 2 > self.bytes.len() {
            let mut bytes = Vec::with_capacity(self.bytes.len() - self.taken);
            for r in self.rows.iter_mut() {
                let from = r.start;
                r.start = bytes.len();
                bytes.extend_from_slice(self.bytes.get(from..from + r.len).unwrap_or_default());
            }
            self.bytes = bytes;
            self.taken = 0;
        }
    }

    fn memory(&self) -> usize {
        self.bytes.capacity() + self.rows.capacity() * std::mem::size_of::<Waiting>()
    }
}

/// A row entering a partition's frame at a watermark.
#[derive(Debug, Clone, Copy)]
pub(super) struct Row {
    start: usize,
    end: usize,
    pub time: i64,
    pub count: i64,
    /// It is emitted (else it was emitted before and only re-enters a rebuilt frame).
    pub emit: bool,
}

/// The rows entering a partition's frame at a watermark, their keys back to back.
#[derive(Debug, Default)]
pub(super) struct Entering {
    bytes: Vec<u8>,
    pub rows: Vec<Row>,
}

impl Entering {
    pub(super) fn clear(&mut self) {
        self.bytes.clear();
        self.rows.clear();
    }

    pub(super) fn push(&mut self, key: &[u8], time: i64, count: i64, emit: bool) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(key);
        self.rows.push(Row {
            start,
            end: self.bytes.len(),
            time,
            count,
            emit,
        });
    }

    /// Row `r`'s key.
    pub(super) fn key(&self, r: &Row) -> &[u8] {
        self.bytes.get(r.start..r.end).unwrap_or_default()
    }

    /// Puts the rows in key order, identical rows as one.
    pub(super) fn sort(&mut self) {
        let bytes = &self.bytes;
        let key = |r: &Row| bytes.get(r.start..r.end).unwrap_or_default();
        self.rows.sort_by(|a, b| key(a).cmp(key(b)));
        self.rows.dedup_by(|later, kept| {
            let same = key(later) == key(kept);
            if same {
                kept.count += later.count;
                kept.emit |= later.emit;
            }
            same
        });
    }
}

/// The partitions in memory, by id: key group (big endian) and partition key.
pub(super) type Partitions = HashMap<Vec<u8>, Partition, foldhash::fast::RandomState>;

/// A partition in memory; see the module documentation.
pub(super) struct Partition {
    /// The emitted rows the accumulators hold, in key order; the rows table holds them too.
    pub frame: Queue,
    /// Rows in `frame`, copies counted.
    pub in_frame: u64,
    /// Rows not emitted yet: all of the table's, but those whose order key is `bound` or later.
    pub pending: Pending,
    /// Where the rows not emitted yet that are not in `pending` start, if any are not: set when
    /// a partition's rows past the watermark would take too much memory.
    pub bound: Option<[u8; ORDER]>,
    /// One per function, holding the frame's rows.
    pub accumulators: Vec<Box<dyn Accumulator>>,
    /// The time of the partition's cleanup timer, if it has one (`None`: none, or not known).
    pub cleanup: Option<i64>,
    /// Its memory, as last counted.
    pub bytes: usize,
}

impl Partition {
    pub(super) fn new(accumulators: Vec<Box<dyn Accumulator>>) -> Self {
        Self {
            frame: Queue::default(),
            in_frame: 0,
            pending: Pending::default(),
            bound: None,
            accumulators,
            cleanup: None,
            bytes: 0,
        }
    }

    /// Whether a row not emitted yet with stored key `key` (after the partition key) belongs
    /// in `pending`.
    pub(super) fn holds(&self, key: &[u8]) -> bool {
        self.bound
            .is_none_or(|b| key.get(..ORDER).is_some_and(|k| k < &b[..]))
    }

    /// Nothing to keep: no frame, no rows to emit.
    pub(super) fn is_empty(&self) -> bool {
        self.frame.is_empty() && self.pending.is_empty() && self.bound.is_none()
    }

    /// Reads the partition from the rows table (`table`, key group `kg`, partition key `group`)
    /// at watermark `watermark`: its rows before the watermark into `entering`, to be emitted
    /// if their event time (microseconds) is in `ready` (sorted) and re-entering the frame if
    /// not (they were emitted before); its later rows into `pending`, up to `cap` bytes.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn load(
        &mut self,
        table: &StateTable,
        (kg, group): (u16, &[u8]),
        clock: Clock,
        watermark: i64,
        ready: &[i64],
        cap: usize,
        entering: &mut Entering,
    ) -> Result<()> {
        self.read(
            table,
            (kg, group),
            None,
            clock,
            watermark,
            cap,
            |key, time, count| {
                let emit = ready.binary_search(&clock.micros(time)).is_ok();
                entering.push(key, time, count, emit);
            },
        )
    }

    /// Reads the partition's rows not emitted yet that are not in `pending` (from `bound`) into
    /// it: those before the watermark, and later ones up to `cap` bytes.
    pub(super) fn extend(
        &mut self,
        table: &StateTable,
        (kg, group): (u16, &[u8]),
        clock: Clock,
        watermark: i64,
        cap: usize,
    ) -> Result<()> {
        let Some(bound) = self.bound else {
            return Ok(());
        };
        let mut before = Pending::default();
        self.read(
            table,
            (kg, group),
            Some(bound),
            clock,
            watermark,
            cap,
            |key, time, count| {
                before.add(key, time, count);
            },
        )?;
        for (key, time, count) in before.iter() {
            self.pending.add(key, time, count);
        }
        Ok(())
    }

    /// Reads the partition's rows from order key `from` (its start if `None`): those before the
    /// watermark to `before`, later ones into `pending` while the partition takes at most `cap`
    /// bytes, then sets `bound` where it stopped (at a new event time, so that peers are read
    /// together).
    #[allow(clippy::too_many_arguments)]
    fn read(
        &mut self,
        table: &StateTable,
        (kg, group): (u16, &[u8]),
        from: Option<[u8; ORDER]>,
        clock: Clock,
        watermark: i64,
        cap: usize,
        mut before: impl FnMut(&[u8], i64, i64),
    ) -> Result<()> {
        let mut start = group.to_vec();
        if let Some(from) = from {
            start.extend_from_slice(&from);
        }
        let end = prefix_end(group);
        let mut bytes = self.memory();
        // The order key of the last row read past the watermark, if any.
        let mut last: Option<[u8; ORDER]> = None;
        let (pending, bound) = (&mut self.pending, &mut self.bound);
        *bound = None;
        table.scan(
            kg,
            &start,
            end.as_deref(),
            Direction::Forward,
            |key, value| {
                let key = key.get(group.len()..).unwrap_or_default();
                let time = time_of(key)?;
                let count = count_of(value)?;
                if clock.micros(time) < watermark {
                    before(key, time, count);
                    return Ok(ControlFlow::Continue(()));
                }
                let order: [u8; ORDER] = (key.get(..ORDER))
                    .and_then(|o| o.try_into().ok())
                    .ok_or_else(corrupt)?;
                if bytes > cap && last != Some(order) {
                    *bound = Some(order);
                    return Ok(ControlFlow::Break(()));
                }
                last = Some(order);
                pending.add(key, time, count);
                bytes += row_memory(key.len());
                Ok(ControlFlow::Continue(()))
            },
        )
    }

    /// Its memory now.
    pub(super) fn memory(&self) -> usize {
        let accumulators: usize = self.accumulators.iter().map(|a| a.size()).sum();
        self.frame.memory()
            + self.frame.rows.len() * ROW_OVERHEAD
            + self.pending.memory()
            + accumulators
            + PARTITION_OVERHEAD
    }
}

/// Memory a row of `key_len` key bytes takes when cached.
pub(super) fn row_memory(key_len: usize) -> usize {
    key_len + ROW_OVERHEAD
}
