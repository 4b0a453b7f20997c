//! Session windows per row, emitted on window close: RisingWave's `first_value(ts) OVER (PARTITION
//! BY k ORDER BY ts SESSION WITH GAP g)` (and `last_value`) in a view with EMIT ON WINDOW CLOSE.
//! Each row gets its session's bounds, which move while rows come, so a row is emitted once its
//! session is closed: with its session's `window_start` (first event time) and `window_end` (last
//! event time plus the gap), the window functions' columns, after its own.
//!
//! **Sessions** are those of the session aggregation (`operator::aggregate::session`): runs of a
//! partition's rows whose event times are at most the gap apart. A session closes when the
//! watermark reaches its `window_end`. A row is late (set aside, never emitted) when its event
//! time is at or behind the watermark (or NULL): it could touch a closed session otherwise.
//!
//! **State.** Two [`crate::state::table::StateTable`]s. `v`: the rows not emitted yet, per
//! partition in event-time order ([`super::super::sorted`]'s layout). `e`: a timer per row at its
//! event time plus the gap, the earliest its session can close. A watermark fires the timers
//! it reached: each partition they name is read, its closed sessions are emitted and their rows
//! deleted. Nothing is read back at restart.

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, TimestampMicrosecondArray, UInt32Array};
use datafusion::arrow::compute::{cast, concat_batches, take};
use datafusion::arrow::datatypes::SchemaRef;

use super::super::sorted::{self, PartitionOrder, SortedRows, Table, count_of, row_of};
use super::super::{LateRow, Operator, StateScope, timers};
use crate::changelog::{ChangeBatch, Op};
use crate::state::StateBatch;
use crate::state::table::Direction;
use crate::{EngineError, Result};

/// What the planner decides about per-row session windows.
#[derive(Debug, Clone)]
pub struct SessionRowsSpec {
    /// The partitions, ordered by the event time (one ascending column among the row's own).
    pub rows: PartitionOrder,
    /// Microseconds; positive.
    pub gap: i64,
    /// The output columns after the row's own: `window_end` (true) or `window_start` (false).
    pub bounds: Vec<bool>,
}

#[derive(Debug)]
struct Shared {
    spec: SessionRowsSpec,
    rows: SortedRows,
    schema: SchemaRef,
    time: usize,
}

/// The per-row session operator; see the module documentation.
pub struct SessionRows {
    shared: Arc<Shared>,
    rows: Table,
    timers: Table,
    groups: Vec<u16>,
    /// `i64::MIN` before the first.
    watermark: i64,
    /// No timer fires before this time (`i64::MIN`: not known, look in the store).
    next_timer: i64,
    late: Vec<LateRow>,
}

impl SessionRows {
    /// Per-row sessions over `spec`'s input, emitting `schema` (the row's columns, then one per
    /// bound).
    pub fn try_new(spec: SessionRowsSpec, schema: SchemaRef) -> Result<Self> {
        if schema.fields().len() != spec.rows.width + spec.bounds.len() || spec.gap <= 0 {
            return Err(EngineError::Internal(format!(
                "per-row sessions of rows of {} columns with {} bounds, gap {}, and an output of \
                 {} columns",
                spec.rows.width,
                spec.bounds.len(),
                spec.gap,
                schema.fields().len()
            )));
        }
        let time = match spec.rows.order.as_slice() {
            [(c, o)] if *c < spec.rows.width && !o.descending => *c,
            _ => {
                return Err(EngineError::Internal(
                    "per-row sessions need one ascending order column among the row's own".into(),
                ));
            }
        };
        let rows = SortedRows::try_new(spec.rows.clone())?;
        Ok(Self::with(Arc::new(Shared {
            spec,
            rows,
            schema,
            time,
        })))
    }

    fn with(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            rows: Table::default(),
            timers: Table::default(),
            groups: Vec::new(),
            watermark: i64::MIN,
            next_timer: i64::MIN,
            late: Vec::new(),
        }
    }

    /// Emits partition `group`'s closed sessions into `out` and deletes their rows.
    fn close(&mut self, kg: u16, group: &[u8], out: &mut Vec<RecordBatch>) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        let mut entries: Vec<(Vec<u8>, i64)> = Vec::new();
        self.rows
            .get()?
            .scan_prefix(kg, group, Direction::Forward, |key, value| {
                entries.push((key.to_vec(), count_of(value)?));
                Ok(ControlFlow::Continue(()))
            })?;
        let n: i64 = entries.iter().map(|(_, c)| (*c).max(0)).sum();
        if n == 0 {
            return Ok(());
        }
        let mut decoder = shared.rows.row_codec.decoder(None, n as usize);
        let mut entry_of = Vec::with_capacity(n as usize);
        for (i, (key, count)) in entries.iter().enumerate() {
            let row = row_of(key)?;
            for _ in 0..(*count).max(0) {
                decoder.push(row)?;
                entry_of.push(i);
            }
        }
        let all = decoder.flush()?;
        let times = timers::micros(&all, shared.time)?;
        let gap = shared.spec.gap;
        // Rows are in event-time order: each run at most the gap apart is a session.
        let (mut emitted, mut starts, mut ends) = (Vec::new(), Vec::new(), Vec::new());
        let mut first = 0;
        while first < times.len() {
            let mut last = first;
            while last + 1 < times.len()
                && time_at(&times, last + 1)? - time_at(&times, last)? <= gap
            {
                last += 1;
            }
            let (start, end) = (time_at(&times, first)?, time_at(&times, last)? + gap);
            if end <= self.watermark {
                for i in first..=last {
                    emitted.push(i as u32);
                    starts.push(start);
                    ends.push(end);
                }
            }
            first = last + 1;
        }
        if emitted.is_empty() {
            return Ok(());
        }
        let indices = UInt32Array::from(emitted.clone());
        let mut columns: Vec<ArrayRef> = (all.columns().iter())
            .map(|c| take(c.as_ref(), &indices, None))
            .collect::<std::result::Result<_, _>>()?;
        for &end in &shared.spec.bounds {
            let values = if end { &ends } else { &starts };
            let array: ArrayRef = Arc::new(TimestampMicrosecondArray::from(values.clone()));
            let field = shared.schema.field(columns.len());
            columns.push(cast(&array, field.data_type())?);
        }
        out.push(RecordBatch::try_new(Arc::clone(&shared.schema), columns)?);
        // The emitted rows' entries go (an entry's copies are all in one session: same time).
        let table = self.rows.get_mut()?;
        let gone: BTreeSet<usize> = emitted.iter().map(|&i| entry_of[i as usize]).collect();
        for e in gone {
            table.delete(kg, &entries[e].0);
        }
        Ok(())
    }
}

/// The event time of stored row `i` (stored rows have one).
fn time_at(times: &[Option<i64>], i: usize) -> Result<i64> {
    times
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| EngineError::Corrupt("a stored session row without an event time".into()))
}

impl Operator for SessionRows {
    fn name(&self) -> &'static str {
        "SessionRows"
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.shared.schema)
    }

    fn fork(&self) -> Result<Box<dyn Operator>> {
        Ok(Box::new(Self::with(Arc::clone(&self.shared))))
    }

    fn restore(&mut self, scope: &StateScope) -> Result<()> {
        self.rows.open(scope, b'v', scope.cache_bytes);
        self.timers.open(scope, b'e', scope.cache_bytes / 8);
        self.next_timer = i64::MIN;
        Ok(())
    }

    fn process(&mut self, _input: usize, batch: ChangeBatch) -> Result<Vec<ChangeBatch>> {
        if batch.ops.iter().any(|op| *op != Op::Insert) {
            return Err(EngineError::Internal(
                "per-row sessions over an input that is not append-only".into(),
            ));
        }
        let shared = Arc::clone(&self.shared);
        let times = timers::micros(&batch.data, shared.time)?;
        let watermark = self.watermark;
        let (batch, times) = timers::set_aside_late(
            batch,
            times,
            |t| t.is_none_or(|t| t <= watermark),
            shared.rows.layout.width,
            watermark,
            &mut self.late,
        )?;
        let data = batch.data;
        if data.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let mut groups = std::mem::take(&mut self.groups);
        let encoded = shared.rows.encode(&data, &mut groups)?;
        let timer_table = self.timers.get_mut()?;
        for (row, t) in times.iter().enumerate() {
            let at = t.unwrap_or(i64::MAX).saturating_add(shared.spec.gap);
            timer_table.put(
                groups[row],
                &timers::key(at, 0, encoded.partition(row)),
                &[],
            );
            if self.next_timer != i64::MIN {
                self.next_timer = self.next_timer.min(at);
            }
        }
        let ops = vec![Op::Insert; data.num_rows()];
        let table = self.rows.get_mut()?;
        encoded.for_each_partition(&groups, &ops, |kg, _, deltas| {
            sorted::apply(table, kg, deltas)
        })?;
        self.groups = groups;
        Ok(Vec::new())
    }

    fn on_watermark(&mut self, _input: usize, watermark: i64) -> Result<Vec<ChangeBatch>> {
        if watermark <= self.watermark {
            return Ok(Vec::new());
        }
        // Every timer up to the last watermark was taken, and none is set behind it (rows at or
        // behind it are late): the timer scans start after it.
        let from = self.watermark.saturating_add(1);
        self.watermark = watermark;
        if self.next_timer == i64::MIN {
            self.next_timer = timers::earliest(self.timers.get()?, from)?.unwrap_or(i64::MAX);
        }
        if self.next_timer > watermark {
            return Ok(Vec::new());
        }
        // The partitions whose timers the watermark reached (a session closes at its end).
        let (due, next) =
            timers::take_due_from(self.timers.get_mut()?, from, watermark.saturating_add(1))?;
        let mut partitions: BTreeSet<(u16, Vec<u8>)> = BTreeSet::new();
        for timer in &due {
            let (_, _, group) = timer.parts()?;
            partitions.insert((timer.kg, group.to_vec()));
        }
        let mut out = Vec::new();
        for (kg, group) in partitions {
            self.close(kg, &group, &mut out)?;
        }
        self.next_timer = next.unwrap_or(i64::MAX);
        if out.is_empty() {
            return Ok(Vec::new());
        }
        let data = concat_batches(&self.shared.schema, &out)?;
        let n = data.num_rows();
        Ok(vec![ChangeBatch {
            data,
            ops: vec![Op::Insert; n],
        }])
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
        self.rows.checkpoint(epoch, batch)?;
        self.timers.checkpoint(epoch, batch)
    }

    fn state_bytes(&self) -> usize {
        self.rows.bytes() + self.timers.bytes()
    }

    fn describe(&self) -> String {
        let spec = &self.shared.spec;
        let (partition, order) = spec.rows.describe();
        let bounds = (spec.bounds.iter())
            .map(|&end| if end { "window_end" } else { "window_start" })
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "SessionRows: [{bounds}] gap {} partition by [{partition}] order by event time \
             [{order}]; emits each row once its session closes (EMIT ON WINDOW CLOSE); state: \
             the rows of open sessions",
            timers::duration_text(spec.gap)
        )
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::compute::SortOptions;
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};

    use super::*;
    use crate::operator::testing::{Epochs, Rng, int64_batch, int64_schema, restored};
    use crate::state::StateStore;

    const GAP: i64 = 10;

    /// (k, ts, v) rows; the output adds window_start and window_end.
    fn operator() -> SessionRows {
        let input = int64_schema(&["k", "ts", "v"]);
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("window_start", DataType::Int64, true));
        fields.push(Field::new("window_end", DataType::Int64, true));
        let spec = SessionRowsSpec {
            rows: PartitionOrder {
                input,
                width: 3,
                partition: vec![0],
                order: vec![(1, SortOptions::default())],
            },
            gap: GAP,
            bounds: vec![false, true],
        };
        SessionRows::try_new(spec, Arc::new(Schema::new(fields))).unwrap()
    }

    /// (the rows kept, the rows emitted as (k, ts, v, start, end), the watermark sent).
    type Model = (Vec<[i64; 3]>, Vec<[i64; 5]>, Option<i64>);

    fn emitted(out: Vec<ChangeBatch>, into: &mut Vec<[i64; 5]>) {
        for b in out {
            assert!(b.ops.iter().all(|op| *op == Op::Insert));
            let c = |i: usize| b.data.column(i).as_primitive::<Int64Type>().clone();
            let cols: Vec<_> = (0..5).map(c).collect();
            for r in 0..b.data.num_rows() {
                into.push([0, 1, 2, 3, 4].map(|i| cols[i].value(r)));
            }
        }
    }

    /// An out-of-order stream in random batches, the watermark trailing the largest time by 5,
    /// with random checkpoints, restarts and crashes: every row that was not late is emitted
    /// once, after its session closed, with its session's bounds as a batch computation finds
    /// them; late rows are set aside.
    #[test]
    fn rows_are_emitted_once_with_their_sessions_bounds_across_restarts() {
        for seed in 1..=6u64 {
            let dir = tempfile::tempdir().unwrap();
            let store = StateStore::open(dir.path()).unwrap();
            let scope = StateScope::new(store.clone(), b"ses/", 0..crate::keygroup::KEY_GROUPS);
            let proto = operator();
            let mut op = restored(&proto, &scope);
            let mut rng = Rng(seed * 7919);
            let schema = int64_schema(&["k", "ts", "v"]);
            let mut model: Model = (Vec::new(), Vec::new(), None);
            let mut epochs = Epochs::new(store.clone(), &model);
            let (mut clock, mut v, mut late) = (0i64, 0i64, 0usize);
            for _ in 0..300 {
                let (kept, out, watermark) = &mut model;
                if let Some(w) = *watermark {
                    // A restarted instance learns the watermark again.
                    emitted(op.on_watermark(0, w).unwrap(), out);
                }
                let mut rows = Vec::new();
                for _ in 0..1 + rng.below(4) {
                    clock += rng.below(4) as i64;
                    v += 1;
                    let ts = clock - rng.below(8) as i64;
                    rows.push((Op::Insert, [Some(rng.below(3) as i64), Some(ts), Some(v)]));
                }
                for (_, r) in &rows {
                    let ts = r[1].unwrap();
                    if watermark.is_some_and(|w| ts <= w) {
                        late += 1;
                    } else {
                        kept.push([r[0].unwrap(), ts, r[2].unwrap()]);
                    }
                }
                assert!(
                    op.process(0, int64_batch(&schema, &rows))
                        .unwrap()
                        .is_empty()
                );
                op.take_late();
                let w = watermark.unwrap_or(i64::MIN).max(clock - 5);
                *watermark = Some(w);
                emitted(op.on_watermark(0, w).unwrap(), out);
                for r in out.iter() {
                    assert!(
                        r[4] <= w,
                        "seed {seed}: {r:?} emitted before its session closed"
                    );
                }
                epochs.step(&mut rng, &proto, &scope, &mut op, &mut model);
            }
            let (kept, mut out, watermark) = model;
            if let Some(w) = watermark {
                emitted(op.on_watermark(0, w).unwrap(), &mut out);
            }
            emitted(op.on_watermark(0, i64::MAX / 2).unwrap(), &mut out);
            // Sessions per key over the kept rows.
            let mut want = Vec::new();
            for k in 0..3 {
                let mut rows: Vec<[i64; 3]> = kept.iter().filter(|r| r[0] == k).copied().collect();
                rows.sort_by_key(|r| r[1]);
                let mut i = 0;
                while i < rows.len() {
                    let mut j = i;
                    while j + 1 < rows.len() && rows[j + 1][1] - rows[j][1] <= GAP {
                        j += 1;
                    }
                    for r in &rows[i..=j] {
                        want.push([r[0], r[1], r[2], rows[i][1], rows[j][1] + GAP]);
                    }
                    i = j + 1;
                }
            }
            want.sort_unstable();
            out.sort_unstable();
            assert_eq!(out, want, "seed {seed}");
            assert!(
                late > 0 && want.len() > 300,
                "seed {seed}: {late} late, {}",
                want.len()
            );
        }
    }
}
