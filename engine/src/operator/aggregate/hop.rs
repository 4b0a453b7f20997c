//! Hopping windows by slices (panes), for aggregations that emit on window close.
//!
//! A hopping window of `size` every `slide` holds `n = size / slide` slices of `slide`. Instead of
//! adding each row to the `n` windows it falls in, the aggregation adds it once, to its slice: the
//! group key is the query's keys plus the slice's start. When the watermark passes a window's end,
//! the window's result is assembled by merging the states of its `n` slices ([`Agg::merge_copy`])
//! and emitted once; a slice's state is freed when the last window holding it closes. This is how
//! Flink's window aggregation slices hopping windows, and it makes each row cost one update instead
//! of `n`.
//!
//! A row is late for each of its windows that had closed when it came: it is kept once per such
//! window as a [`LateRow`] (as the unsliced plan would), and aggregated if any of its windows is
//! still open. A NULL slice belongs to no window: it is late.
//!
//! **Timers.** Each window still open that a new slice falls in gets a timer at its close (see
//! [`super::due`]), named by the key of the window's first slice (its keys and its start), so a
//! window has one timer however many slices it has. A watermark fires the timers it reaches: each
//! window reads its slices (from memory, or the store), is emitted, and frees its first slice, the
//! last window that slice was in. Slices are read on demand, nothing at restore. After a restart
//! the source sends its checkpointed watermark first; the timers it reaches fired before the
//! checkpoint and are gone, so it closes nothing.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, TimestampMicrosecondArray};
use datafusion::arrow::compute::{cast, cast_with_options};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::window::micros;
use super::{HashAggregate, due, internal, strict};
use crate::Result;
use crate::changelog::{ChangeBatch, Op};
use crate::operator::{LateRow, rows_text};
use crate::state::sortrows::SortRows;

/// Flink's `window_time`: one millisecond before the window's end.
const WINDOW_TIME_OFFSET: i64 = 1_000;

/// What an output group column of a sliced hopping aggregation holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HopColumn {
    /// Group key column `i` of the aggregation (the slice column excluded).
    Key(usize),
    Start,
    End,
    Time,
}

/// The hopping-window configuration and watermark of a sliced aggregation.
#[derive(Debug, Clone)]
pub(super) struct Hop {
    /// Position of the slice start in the group key: the keys before it route rows (hash
    /// exchange, key groups), the slice does not.
    pub slice_key: usize,
    pub slide: i64,
    pub size: i64,
    pub columns: Vec<HopColumn>,
    /// The rows this aggregation emits: `columns`, then the aggregates.
    pub output: SchemaRef,
    /// Input column of each row's event time, for late rows.
    pub rowtime: Option<usize>,
    pub watermark: Option<i64>,
    pub late: Vec<LateRow>,
}

impl Hop {
    pub fn new(
        slice_key: usize,
        slide: i64,
        size: i64,
        columns: Vec<HopColumn>,
        output: SchemaRef,
        rowtime: Option<usize>,
    ) -> Self {
        Self {
            slice_key,
            slide,
            size,
            columns,
            output,
            rowtime,
            watermark: None,
            late: Vec::new(),
        }
    }

    pub fn fresh(&self) -> Self {
        Self::new(
            self.slice_key,
            self.slide,
            self.size,
            self.columns.clone(),
            Arc::clone(&self.output),
            self.rowtime,
        )
    }

    /// Slices per window.
    fn slices(&self) -> i64 {
        (self.size / self.slide).max(1)
    }

    /// Close times of the windows of slice `t`, from its own (the last) backwards.
    fn window_closes(&self, t: i64) -> impl Iterator<Item = i64> + '_ {
        (0..self.slices()).map(move |k| t.saturating_add(self.size) - k * self.slide)
    }
}

impl HashAggregate {
    /// Makes this aggregation (grouped by the query's keys plus a slice start at `slice_key`)
    /// emit hopping windows of `size` every `slide` microseconds on window close, assembled from
    /// slices; its rows are `columns` and the aggregates, in `output`'s types.
    pub fn with_hop_slices(
        mut self,
        slice_key: usize,
        slide: i64,
        size: i64,
        columns: Vec<HopColumn>,
        output: SchemaRef,
        rowtime: Option<usize>,
    ) -> Self {
        self.hop = Some(Hop::new(slice_key, slide, size, columns, output, rowtime));
        self
    }

    /// Applies `input` to a sliced hopping aggregation: late rows set aside, the others added to
    /// their slices; nothing is emitted until windows close.
    pub(super) fn apply_hop(&mut self, input: ChangeBatch) -> Result<Vec<ChangeBatch>> {
        let Some(hop) = self.hop.as_mut() else {
            return Err(internal("hop apply without a hop window"));
        };
        let column = *self
            .group_by
            .get(hop.slice_key)
            .ok_or_else(|| internal("hop slice key out of range"))?;
        let slices = micros(input.data.column(column))?;
        let n = hop.slices();
        let mut keep: Vec<u32> = Vec::with_capacity(slices.len());
        let mut late: Vec<(usize, usize)> = Vec::new();
        for (i, t) in slices.iter().enumerate() {
            let closed = match (t, hop.watermark) {
                (None, _) => n as usize,
                (Some(_), None) => 0,
                (Some(t), Some(w)) => hop.window_closes(*t).filter(|&c| c <= w).count(),
            };
            if closed > 0 {
                late.push((i, closed));
            }
            if (closed as i64) < n {
                keep.push(i as u32);
            }
        }
        if !late.is_empty() {
            let rows: Vec<usize> = late.iter().map(|(i, _)| *i).collect();
            let times = match hop.rowtime {
                Some(c) => micros(input.data.column(c))?,
                None => slices.clone(),
            };
            let w = hop.watermark.unwrap_or(i64::MIN);
            for ((i, closed), text) in late.iter().zip(rows_text(&input.data, &rows)?) {
                for _ in 0..*closed {
                    hop.late.push(LateRow {
                        event_time: times[*i].unwrap_or(i64::MIN),
                        watermark: w,
                        row: text.clone(),
                    });
                }
            }
        }
        let input = if keep.len() == slices.len() {
            input
        } else {
            input.select(keep.clone())?
        };
        if input.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let out = self.apply(&input, &mut scratch);
        let armed = match out {
            Ok(_) => self.arm_windows(&scratch, &keep, &slices),
            Err(e) => Err(e),
        };
        self.scratch = scratch;
        armed.map(|_| Vec::new())
    }

    /// Sets a timer for each window still open of each slice batch `s` created (touched, new
    /// and live after it); `keep` are the input rows it applied, `slices` every input row's
    /// slice start.
    fn arm_windows(
        &mut self,
        s: &super::Scratch,
        keep: &[u32],
        slices: &[Option<i64>],
    ) -> Result<()> {
        let mut created = s.created();
        if created.is_empty() {
            return Ok(());
        }
        let Some(hop) = self.hop.as_ref() else {
            return Err(internal("hop apply without a hop window"));
        };
        let w = hop.watermark.unwrap_or(i64::MIN);
        // (slot, start of a window still open that its slice is in)
        let mut windows: Vec<(u32, i64)> = Vec::new();
        for (&id, &row) in s.gids.iter().zip(keep) {
            let Some(t) = slices.get(row as usize).copied().flatten() else {
                continue;
            };
            if let Some(armed) = created.get_mut(&id)
                && !std::mem::replace(armed, true)
            {
                let open = hop.window_closes(t).filter(|&c| c > w);
                windows.extend(open.map(|c| (id, c - hop.size)));
            }
        }
        if windows.is_empty() {
            return Ok(());
        }
        let size = hop.size;
        let slots = &self.groups.slots;
        let keys: Vec<&[u8]> = windows
            .iter()
            .map(|&(id, _)| &*slots[id as usize].key)
            .collect();
        let starts: Vec<i64> = windows.iter().map(|&(_, start)| start).collect();
        let firsts = self.reslice(&keys, &starts)?;
        let timers = (self.timers.as_mut()).ok_or_else(|| internal("aggregate timers not open"))?;
        for (r, &(id, start)) in windows.iter().enumerate() {
            let kg = self.groups.slots[id as usize].kg;
            timers.set(kg, start + size, due::HOP, firsts.row(r));
        }
        Ok(())
    }

    /// The group keys `keys` (of slices) with their slice starts set to `starts`.
    fn reslice(&self, keys: &[&[u8]], starts: &[i64]) -> Result<SortRows> {
        let (Some(hop), Some(codec)) = (self.hop.as_ref(), self.keys.as_ref()) else {
            return Err(internal("hop windows without a group key"));
        };
        let mut columns = codec.rows.convert_rows(keys.iter().copied())?;
        let slice = columns
            .get_mut(hop.slice_key)
            .ok_or_else(|| internal("hop slice key out of range"))?;
        let values: ArrayRef = Arc::new(TimestampMicrosecondArray::from_iter_values(
            starts.iter().copied(),
        ));
        *slice = cast(&values, slice.data_type())?;
        codec.rows.convert_columns(&columns)
    }

    /// Advances the watermark to `w`: emits every window whose timer it reaches, assembled from
    /// its slices, and frees each such window's first slice (its last window closed).
    pub(super) fn close_hop(&mut self, w: i64) -> Result<Vec<ChangeBatch>> {
        let Some(hop) = self.hop.as_mut() else {
            return Ok(Vec::new());
        };
        if hop.watermark.is_some_and(|old| old >= w) {
            return Ok(Vec::new());
        }
        hop.watermark = Some(w);
        let (size, slide, n) = (hop.size, hop.slide, hop.slices());
        let timers = (self.timers.as_mut()).ok_or_else(|| internal("aggregate timers not open"))?;
        let fired = timers.take(w)?;
        if fired.is_empty() {
            return Ok(Vec::new());
        }
        // Each window's slices, by their keys: the first slice's key with the start moved on.
        let firsts: Vec<&[u8]> = fired.iter().map(|(_, _, key)| &key[..]).collect();
        let mut slices: Vec<SortRows> = Vec::with_capacity(n as usize);
        for i in 0..n {
            let starts: Vec<i64> = (fired.iter())
                .map(|(close, _, _)| close - size + i * slide)
                .collect();
            slices.push(self.reslice(&firsts, &starts)?);
        }
        if !self.complete {
            let mut wanted: Vec<(u16, &[u8])> = Vec::with_capacity(fired.len() * n as usize);
            for rows in &slices {
                for (r, (_, kg, _)) in fired.iter().enumerate() {
                    wanted.push((*kg, rows.row(r)));
                }
            }
            self.load_keys(wanted)?;
        }
        let mut windows: Vec<(usize, i64, Vec<u32>)> = Vec::new();
        for (r, (close, _, _)) in fired.iter().enumerate() {
            let members: Vec<u32> = (slices.iter())
                .filter_map(|rows| self.groups.get(rows.row(r)))
                .collect();
            // A window whose slices all vanished (their rows were retracted) has no row.
            if !members.is_empty() {
                windows.push((r, close - size, members));
            }
        }
        let out = if windows.is_empty() {
            Vec::new()
        } else {
            vec![self.assemble(&firsts, &windows)?]
        };
        // Freed after every window is assembled: a slice is in several of them.
        for first in &firsts {
            if let Some(id) = self.groups.get(first) {
                self.groups.remove(id);
                self.aggs.iter_mut().for_each(|agg| agg.reset(id));
            }
        }
        Ok(out)
    }

    /// The rows of `windows`: (index of its first slice's key in `firsts`, start, slots of its
    /// slices).
    fn assemble(
        &mut self,
        firsts: &[&[u8]],
        windows: &[(usize, i64, Vec<u32>)],
    ) -> Result<ChangeBatch> {
        let (Some(hop), Some(keys)) = (self.hop.as_ref(), self.keys.as_ref()) else {
            return Err(internal("hop windows without a group key"));
        };
        let decoded = (keys.rows).convert_rows(windows.iter().map(|(r, _, _)| firsts[*r]))?;
        // Merge each window's slices into a scratch slot past every live one.
        let scratch = self.groups.slots.len() as u32;
        self.aggs
            .iter_mut()
            .for_each(|agg| agg.grow(scratch as usize + 1));
        let mut values: Vec<Vec<super::result::Value>> = vec![Vec::new(); self.aggs.len()];
        let mut arena = Vec::new();
        for (_, _, members) in windows {
            let mut rows = 0;
            for &id in members {
                rows += self.groups.slots[id as usize].rows;
                for agg in &mut self.aggs {
                    agg.merge_copy(scratch, id)?;
                }
            }
            for (a, agg) in self.aggs.iter().enumerate() {
                agg.results(&[scratch], &[rows], &[true], &mut values[a], &mut arena)?;
            }
            self.aggs.iter_mut().for_each(|agg| agg.reset(scratch));
        }
        let m = windows.len();
        let starts: Vec<i64> = windows.iter().map(|(_, start, _)| *start).collect();
        let times = |offset: i64| -> ArrayRef {
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                starts.iter().map(|s| s + offset),
            ))
        };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(hop.output.fields().len());
        for c in &hop.columns {
            columns.push(match c {
                HopColumn::Key(i) => decoded
                    .get(*i)
                    .cloned()
                    .ok_or_else(|| internal("hop key column out of range"))?,
                HopColumn::Start => times(0),
                HopColumn::End => times(hop.size),
                HopColumn::Time => times(hop.size - WINDOW_TIME_OFFSET),
            });
        }
        for (a, agg) in self.aggs.iter().enumerate() {
            columns.push(agg.build(values[a].iter().copied(), &arena)?);
        }
        let columns = columns
            .iter()
            .zip(hop.output.fields().iter())
            .map(|(c, f)| cast_with_options(c, f.data_type(), &strict()))
            .collect::<Result<Vec<_>, _>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(m));
        let data = RecordBatch::try_new_with_options(Arc::clone(&hop.output), columns, &options)?;
        Ok(ChangeBatch {
            data,
            ops: vec![Op::Insert; m],
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::{
        DataType, Field, Int64Type, Schema, TimeUnit, TimestampMicrosecondType,
    };

    use super::*;
    use crate::operator::aggregate::{AggFunc, AggSpec};
    use crate::operator::{Operator, StateScope};
    use crate::state::{StateBatch, StateStore};

    const SLIDE: i64 = 10;
    const SIZE: i64 = 30;

    fn ts() -> DataType {
        DataType::Timestamp(TimeUnit::Microsecond, None)
    }

    fn input() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("slice", ts(), true),
            Field::new("v", DataType::Int64, true),
            Field::new("ts", ts(), true),
        ]))
    }

    fn operator() -> HashAggregate {
        let agg = |func, input| AggSpec {
            func,
            input,
            ..AggSpec::default()
        };
        let internal = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("slice", ts(), true),
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Int64, true),
            Field::new("hi", DataType::Int64, true),
        ]));
        let output = Arc::new(Schema::new(vec![
            Field::new("window_start", ts(), true),
            Field::new("window_end", ts(), true),
            Field::new("k", DataType::Int64, true),
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Int64, true),
            Field::new("hi", DataType::Int64, true),
        ]));
        HashAggregate::try_new(
            input(),
            vec![0, 1],
            vec![
                agg(AggFunc::CountStar, None),
                agg(AggFunc::Sum, Some(2)),
                agg(AggFunc::Max, Some(2)),
            ],
            internal,
        )
        .unwrap()
        .with_hop_slices(
            1,
            SLIDE,
            SIZE,
            vec![HopColumn::Start, HopColumn::End, HopColumn::Key(0)],
            output,
            Some(3),
        )
    }

    fn batch(rows: &[(i64, i64, i64)]) -> ChangeBatch {
        let data = RecordBatch::try_new(
            input(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(TimestampMicrosecondArray::from_iter_values(
                    rows.iter().map(|r| r.1.div_euclid(SLIDE) * SLIDE),
                )),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
                Arc::new(TimestampMicrosecondArray::from_iter_values(
                    rows.iter().map(|r| r.1),
                )),
            ],
        )
        .unwrap();
        ChangeBatch {
            data,
            ops: vec![Op::Insert; rows.len()],
        }
    }

    type Window = (i64, i64, i64);

    fn collect(out: Vec<ChangeBatch>, into: &mut BTreeMap<Window, (i64, i64, i64)>) {
        for b in out {
            let c = |i: usize| b.data.column(i);
            for r in 0..b.num_rows() {
                assert_eq!(b.ops[r], Op::Insert);
                let key = (
                    c(0).as_primitive::<TimestampMicrosecondType>().value(r),
                    c(1).as_primitive::<TimestampMicrosecondType>().value(r),
                    c(2).as_primitive::<Int64Type>().value(r),
                );
                let value = (
                    c(3).as_primitive::<Int64Type>().value(r),
                    c(4).as_primitive::<Int64Type>().value(r),
                    c(5).as_primitive::<Int64Type>().value(r),
                );
                assert!(into.insert(key, value).is_none(), "window {key:?} twice");
            }
        }
    }

    #[test]
    fn sliced_hopping_windows_equal_the_windows_row_by_row_across_restarts() {
        for seed in 1..=30u64 {
            let mut rng = seed.wrapping_mul(6364136223846793005) | 1;
            let mut next = move |n: i64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                (rng % n as u64) as i64
            };
            let dir = tempfile::tempdir().unwrap();
            let store = StateStore::open(dir.path()).unwrap();
            let scope = StateScope::new(store.clone(), b"hop/", 0..crate::keygroup::KEY_GROUPS);
            let mut op = operator();
            op.restore(&scope).unwrap();
            let mut emitted = BTreeMap::new();
            let mut expected: BTreeMap<Window, (i64, i64, i64)> = BTreeMap::new();
            let (mut clock, mut watermark, mut late) = (0i64, None::<i64>, 0usize);
            let mut expected_late = 0usize;
            for round in 0..50 {
                let rows: Vec<(i64, i64, i64)> = (0..1 + next(6))
                    .map(|_| {
                        clock += next(5);
                        (next(3), clock - next(40), next(100))
                    })
                    .collect();
                for &(k, t, v) in &rows {
                    let slice = t.div_euclid(SLIDE) * SLIDE;
                    for j in 0..SIZE / SLIDE {
                        let s = slice - j * SLIDE;
                        if watermark.is_some_and(|w| s + SIZE <= w) {
                            expected_late += 1;
                        } else {
                            let e = expected.entry((s, s + SIZE, k)).or_insert((0, 0, i64::MIN));
                            *e = (e.0 + 1, e.1 + v, e.2.max(v));
                        }
                    }
                }
                collect(op.process(0, batch(&rows)).unwrap(), &mut emitted);
                late += op.take_late().len();
                let w = clock - 15;
                if watermark.is_none_or(|old| w > old) {
                    watermark = Some(w);
                    collect(op.on_watermark(0, w).unwrap(), &mut emitted);
                }
                if round % 9 == 4 {
                    let mut state = StateBatch::new();
                    op.checkpoint(1, &scope, &mut state).unwrap();
                    store.write(state, true).unwrap();
                    op = operator();
                    op.restore(&scope).unwrap();
                    // Slices are read when a row or a window needs them, not at restore.
                    assert_eq!(op.group_count(), 0);
                    if let Some(w) = watermark {
                        assert!(op.on_watermark(0, w).unwrap().is_empty());
                    }
                }
            }
            let w = watermark.unwrap();
            let closed: BTreeMap<Window, (i64, i64, i64)> = expected
                .iter()
                .filter(|(k, _)| k.1 <= w)
                .map(|(k, v)| (*k, *v))
                .collect();
            assert_eq!(emitted, closed, "seed {seed}");
            assert_eq!(late, expected_late, "seed {seed}");
            assert!(late > 0, "seed {seed}: no late rows");
            // The end of time closes every window and frees every slice.
            collect(op.on_watermark(0, i64::MAX / 2).unwrap(), &mut emitted);
            assert_eq!(emitted, expected, "seed {seed}");
            assert_eq!(op.group_count(), 0, "seed {seed}");
        }
    }
}
