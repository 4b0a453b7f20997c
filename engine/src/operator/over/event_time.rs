//! Flink's event-time OVER aggregates: `SUM(x) OVER (PARTITION BY k ORDER BY ts RANGE BETWEEN
//! INTERVAL '1' HOUR PRECEDING AND CURRENT ROW)` (or `ROWS BETWEEN n PRECEDING AND CURRENT ROW`)
//! over an append-only input whose `ts` is its event time.
//!
//! **Emission.** Each input row is emitted once, with its aggregates, when the watermark passes
//! its event time (no row with an earlier event time can follow): by then every row of its frame
//! has arrived, so the values are final and the output is append-only, as in Flink. Rows behind
//! the watermark when they arrive (and rows without an event time) are late: set aside as late
//! rows, never emitted.
//!
//! **Semantics.** The aggregates are DataFusion's physical window expressions, evaluated over
//! the part of the partition that the emitted rows' frames cover, in event-time order; rows
//! tied in event time are peers (RANGE) or ordered by their stored encoding (ROWS).
//!
//! **State.** Two [`StateTable`]s. `v`: the partition's rows in event-time order
//! ([`super::super::sorted`]'s layout). `e`: timers, keyed by event time then kind then
//! partition: an *emit* timer per pending row's event time, and for RANGE frames a *cleanup*
//! timer at the last emitted event time plus the range. A watermark fires the timers before it;
//! emitting a partition's rows also deletes its rows that no later row's frame can
//! reach (older than the watermark minus the range, or all but the last `n` emitted rows for
//! ROWS), and a cleanup timer does the same for a partition that gets no more rows. State is
//! therefore the frame's rows plus the rows not yet emitted, per partition. Nothing is read
//! back at restart: timers are found in the store when a watermark passes them.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{cast, concat_batches, take};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::window::WindowExpr;

use super::super::sorted::{self, PartitionOrder, SortedRows, Table, count_of, row_of};
use super::super::{LateRow, Operator, StateScope, timers};
use crate::changelog::{ChangeBatch, Op};
use crate::state::StateBatch;
use crate::state::table::Direction;
use crate::{EngineError, Result};

/// How far back a row's frame reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preceding {
    /// `RANGE BETWEEN INTERVAL ... PRECEDING AND CURRENT ROW`: this many microseconds.
    Range(i64),
    /// `ROWS BETWEEN n PRECEDING AND CURRENT ROW`.
    Rows(u64),
}

/// What the planner decides about an event-time OVER window.
#[derive(Debug, Clone)]
pub struct EventTimeOverSpec {
    /// The partitions and their order: one order column, the event time, ascending, among the
    /// row's own columns.
    pub rows: PartitionOrder,
    /// The aggregates, all over the frame `preceding` says.
    pub functions: Vec<Arc<dyn WindowExpr>>,
    pub preceding: Preceding,
}

/// The immutable part of an operator, shared by its instances.
#[derive(Debug)]
struct Shared {
    spec: EventTimeOverSpec,
    rows: SortedRows,
    schema: SchemaRef,
    /// The event-time column.
    time: usize,
}

/// A timer's kind (the byte after its event time).
const EMIT: u8 = 0;
const CLEANUP: u8 = 1;

/// The event-time OVER operator; see the module documentation.
pub struct EventTimeOver {
    shared: Arc<Shared>,
    rows: Table,
    timers: Table,
    groups: Vec<u16>,
    /// The input's watermark (microseconds), `i64::MIN` before the first.
    watermark: i64,
    /// No timer fires before this event time (`i64::MIN`: not known, look in the store).
    next_timer: i64,
    late: Vec<LateRow>,
}

impl EventTimeOver {
    /// An event-time OVER window over `spec`'s input, emitting `schema` (the row's columns, then
    /// one column per function).
    pub fn try_new(spec: EventTimeOverSpec, schema: SchemaRef) -> Result<Self> {
        if schema.fields().len() != spec.rows.width + spec.functions.len() {
            return Err(EngineError::Internal(format!(
                "event-time OVER of rows of {} columns and {} functions with an output of {} \
                 columns",
                spec.rows.width,
                spec.functions.len(),
                schema.fields().len()
            )));
        }
        let time = match spec.rows.order.as_slice() {
            [(c, o)] if *c < spec.rows.width && !o.descending => *c,
            _ => {
                return Err(EngineError::Internal(
                    "event-time OVER needs one ascending order column among the row's own".into(),
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

    /// Another instance, without state.
    fn empty(&self) -> Self {
        Self::with(Arc::clone(&self.shared))
    }

    /// The partition's stored rows, in event-time order, with their table keys and counts.
    fn partition(&self, kg: u16, group: &[u8]) -> Result<Vec<(Vec<u8>, i64)>> {
        let mut entries = Vec::new();
        self.rows
            .get()?
            .scan_prefix(kg, group, Direction::Forward, |key, value| {
                entries.push((key.to_vec(), count_of(value)?));
                Ok(ControlFlow::Continue(()))
            })?;
        Ok(entries)
    }

    /// Emits partition `group`'s rows whose event times are `ready` (now behind the watermark)
    /// and deletes the rows no later frame reaches.
    fn fire(
        &mut self,
        kg: u16,
        group: &[u8],
        ready: &[i64],
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        let entries = self.partition(kg, group)?;
        let n: i64 = entries.iter().map(|(_, c)| *c).sum();
        if n <= 0 {
            return Ok(());
        }
        // Every stored row, once per count, with the entry it came from.
        let mut decoder = shared.rows.row_codec.decoder(None, n as usize);
        let mut entry_of = Vec::with_capacity(n as usize);
        for (i, (key, count)) in entries.iter().enumerate() {
            let row = row_of(key)?;
            for _ in 0..*count {
                decoder.push(row)?;
                entry_of.push(i);
            }
        }
        let all = decoder.flush()?;
        let times = timers::micros(&all, shared.time)?;
        let watermark = self.watermark;
        let complete = times
            .iter()
            .take_while(|t| t.is_some_and(|t| t < watermark))
            .count();
        let is_ready = |t: &Option<i64>| t.is_some_and(|t| ready.binary_search(&t).is_ok());
        let Some(first) = times[..complete].iter().position(is_ready) else {
            return Ok(());
        };
        // The rows the ready rows' frames cover, from the first frame's start.
        let start = match shared.spec.preceding {
            Preceding::Range(range) => {
                let from = times[first].unwrap_or(i64::MIN).saturating_sub(range);
                times[..first]
                    .iter()
                    .position(|t| t.is_some_and(|t| t >= from))
                    .unwrap_or(first)
            }
            Preceding::Rows(rows) => first.saturating_sub(rows as usize),
        };
        let slice = all.slice(start, complete - start);
        let mut columns: Vec<ArrayRef> = slice.columns().to_vec();
        for f in &shared.spec.functions {
            let values = f.evaluate(&slice).map_err(|e| EngineError::Data {
                operator: "EventTimeOver".into(),
                message: e.to_string(),
            })?;
            let field = shared.schema.field(columns.len());
            columns.push(cast(&values, field.data_type())?);
        }
        let evaluated = RecordBatch::try_new(Arc::clone(&shared.schema), columns)?;
        let chosen: Vec<u32> = (start..complete)
            .filter(|&i| is_ready(&times[i]))
            .map(|i| (i - start) as u32)
            .collect();
        let indices = UInt32Array::from(chosen);
        let picked = evaluated
            .columns()
            .iter()
            .map(|c| take(c.as_ref(), &indices, None))
            .collect::<std::result::Result<Vec<ArrayRef>, _>>()?;
        out.push(RecordBatch::try_new(Arc::clone(&shared.schema), picked)?);

        // What no later row's frame reaches: later rows are at or past the watermark.
        let keep_from = match shared.spec.preceding {
            Preceding::Range(range) => {
                let from = watermark.saturating_sub(range);
                times
                    .iter()
                    .position(|t| t.is_none_or(|t| t >= from))
                    .unwrap_or(times.len())
            }
            Preceding::Rows(rows) => complete.saturating_sub(rows as usize),
        };
        let table = self.rows.get_mut()?;
        let mut counts = vec![0i64; entries.len()];
        for &e in &entry_of[..keep_from] {
            counts[e] += 1;
        }
        for ((key, stored), gone) in entries.iter().zip(counts) {
            match stored - gone {
                0 if gone > 0 => table.delete(kg, key),
                left if gone > 0 => table.put(kg, key, &left.to_le_bytes()),
                _ => {}
            }
        }
        if let Preceding::Range(range) = shared.spec.preceding
            && keep_from < times.len()
        {
            let last = *ready.last().unwrap_or(&watermark);
            let at = last.saturating_add(range);
            self.timers
                .get_mut()?
                .put(kg, &timers::key(at, CLEANUP, group), &[]);
            self.next_timer = self.next_timer.min(at);
        }
        Ok(())
    }

    /// Deletes partition `group`'s rows that no later frame reaches (a cleanup timer).
    fn clean(&mut self, kg: u16, group: &[u8]) -> Result<()> {
        let Preceding::Range(range) = self.shared.spec.preceding else {
            return Ok(());
        };
        let from = self.watermark.saturating_sub(range);
        let entries = self.partition(kg, group)?;
        if entries.is_empty() {
            return Ok(());
        }
        let mut decoder = self.shared.rows.row_codec.decoder(None, entries.len());
        for (key, _) in &entries {
            decoder.push(row_of(key)?)?;
        }
        let times = timers::micros(&decoder.flush()?, self.shared.time)?;
        let table = self.rows.get_mut()?;
        for ((key, _), t) in entries.iter().zip(times) {
            if t.is_some_and(|t| t < from) {
                table.delete(kg, key);
            }
        }
        Ok(())
    }

    /// The earliest timer in the store, if any.
    fn earliest_timer(&self) -> Result<Option<i64>> {
        timers::earliest(self.timers.get()?)
    }
}

impl Operator for EventTimeOver {
    fn name(&self) -> &'static str {
        "EventTimeOver"
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.shared.schema)
    }

    fn fork(&self) -> Result<Box<dyn Operator>> {
        Ok(Box::new(self.empty()))
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
                "event-time OVER over an input that is not append-only".into(),
            ));
        }
        let shared = Arc::clone(&self.shared);
        let times = timers::micros(&batch.data, shared.time)?;
        let watermark = self.watermark;
        // No row with an earlier event time than the watermark can still be emitted.
        let (batch, times) = timers::set_aside_late(
            batch,
            times,
            |t| t.is_none_or(|t| t < watermark),
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
        let timers = self.timers.get_mut()?;
        for (row, t) in times.iter().enumerate() {
            let t = t.unwrap_or(i64::MAX);
            timers.put(
                groups[row],
                &timers::key(t, EMIT, encoded.partition(row)),
                &[],
            );
            if self.next_timer != i64::MIN {
                self.next_timer = self.next_timer.min(t);
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
        self.watermark = watermark;
        if self.next_timer == i64::MIN {
            self.next_timer = self.earliest_timer()?.unwrap_or(i64::MAX);
        }
        if self.next_timer >= watermark {
            return Ok(Vec::new());
        }
        // The timers before the watermark, per partition: emit times, and cleanups.
        let mut due: BTreeMap<(u16, Vec<u8>), (Vec<i64>, bool)> = BTreeMap::new();
        for timer in timers::take_due(self.timers.get_mut()?, watermark)? {
            let (t, kind, group) = timer.parts()?;
            let entry = due.entry((timer.kg, group.to_vec())).or_default();
            match kind {
                EMIT => entry.0.push(t),
                _ => entry.1 = true,
            }
        }
        let mut out = Vec::new();
        for ((kg, group), (mut ready, cleanup)) in due {
            if ready.is_empty() {
                if cleanup {
                    self.clean(kg, &group)?;
                }
                continue;
            }
            ready.sort_unstable();
            ready.dedup();
            self.fire(kg, &group, &ready, &mut out)?;
        }
        self.next_timer = self.earliest_timer()?.unwrap_or(i64::MAX);
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
        let functions = (spec.functions.iter())
            .map(|f| {
                let name = f.name();
                let call = name.split(" PARTITION BY ").next().unwrap_or(name);
                call.split(" ORDER BY ").next().unwrap_or(call).to_string()
            })
            .collect::<Vec<_>>()
            .join(", ");
        if spec.functions.is_empty() {
            return format!(
                "EventTimeOver (EMIT ON WINDOW CLOSE) order by event time [{order}]; emits each \
                 row once the watermark passes it; state: the rows it has not passed"
            );
        }
        let frame = match spec.preceding {
            Preceding::Range(us) => format!("RANGE {} PRECEDING", timers::duration_text(us)),
            Preceding::Rows(n) => format!("ROWS {n} PRECEDING"),
        };
        format!(
            "EventTimeOver: [{functions}] {frame} partition by [{partition}] order by event time \
             [{order}]; emits each row once the watermark passes it; state: each partition's \
             rows within the frame and those not yet emitted"
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::compute::SortOptions;
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use datafusion::common::{DFSchema, ScalarValue};
    use datafusion::execution::context::ExecutionProps;
    use datafusion::functions_aggregate::sum::sum_udaf;
    use datafusion::logical_expr::expr::WindowFunction;
    use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
    use datafusion::logical_expr::{
        Expr, ExprFunctionExt, WindowFrame, WindowFrameBound, WindowFrameUnits,
        WindowFunctionDefinition, col,
    };
    use datafusion::physical_planner::create_window_expr;

    use super::*;
    use crate::operator::testing::{commit, int64_batch, int64_schema};
    use crate::state::StateStore;

    /// `sum(v) OVER (PARTITION BY k ORDER BY ts RANGE|ROWS BETWEEN n PRECEDING AND CURRENT
    /// ROW)` over (k, ts, v).
    fn operator(preceding: Preceding) -> EventTimeOver {
        let schema = int64_schema(&["k", "ts", "v"]);
        let df = DFSchema::try_from(schema.as_ref().clone()).unwrap();
        let frame = match preceding {
            Preceding::Range(n) => WindowFrame::new_bounds(
                WindowFrameUnits::Range,
                WindowFrameBound::Preceding(ScalarValue::Int64(Some(n))),
                WindowFrameBound::CurrentRow,
            ),
            Preceding::Rows(n) => WindowFrame::new_bounds(
                WindowFrameUnits::Rows,
                WindowFrameBound::Preceding(ScalarValue::UInt64(Some(n))),
                WindowFrameBound::CurrentRow,
            ),
        };
        let e = Expr::from(WindowFunction::new(
            WindowFunctionDefinition::AggregateUDF(sum_udaf()),
            vec![col("v")],
        ))
        .partition_by(vec![col("k")])
        .order_by(vec![col("ts").sort(true, false)])
        .window_frame(frame)
        .build()
        .unwrap();
        let f = create_window_expr(
            &e,
            &df,
            &ExecutionProps::new(),
            &PhysicalPlanningContext::default(),
        )
        .unwrap();
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("s", DataType::Int64, true));
        let spec = EventTimeOverSpec {
            rows: PartitionOrder {
                input: schema,
                width: 3,
                partition: vec![0],
                order: vec![(1, SortOptions::default())],
            },
            functions: vec![f],
            preceding,
        };
        EventTimeOver::try_new(spec, Arc::new(Schema::new(fields))).unwrap()
    }

    /// (k, ts, s) of every output row.
    fn outputs(batches: Vec<ChangeBatch>) -> Vec<[i64; 3]> {
        let mut out = Vec::new();
        for b in batches {
            assert!(b.ops.iter().all(|op| *op == Op::Insert));
            let col = |c: usize| b.data.column(c).as_primitive::<Int64Type>().clone();
            let (k, ts, s) = (col(0), col(1), col(3));
            for i in 0..b.data.num_rows() {
                out.push([k.value(i), ts.value(i), s.value(i)]);
            }
        }
        out
    }

    fn stored_rows(op: &EventTimeOver) -> usize {
        let table = op.rows.get().unwrap();
        let mut n = 0;
        for kg in table.key_groups() {
            table
                .scan(kg, &[], None, Direction::Forward, |_, _| {
                    n += 1;
                    Ok(ControlFlow::Continue(()))
                })
                .unwrap();
        }
        n
    }

    /// Rows (k, ts, v = ts) for ts in 0..400 (two partitions, out of order by up to 3), the
    /// watermark following 5 behind, a checkpoint and restart every 50 rows: every row is
    /// emitted once, with the sum over its frame, and the state stays within the frame.
    fn run(preceding: Preceding, expected: impl Fn(&[[i64; 3]], i64, i64) -> i64) {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(&dir.path().join("db")).unwrap();
        let scope = StateScope::new(store, b"eto/", 0..crate::keygroup::KEY_GROUPS);
        let proto = operator(preceding);
        let fresh = || {
            let mut op = proto.empty();
            op.restore(&scope).unwrap();
            op
        };
        let mut op = fresh();
        let schema = int64_schema(&["k", "ts", "v"]);
        let mut input: Vec<[i64; 3]> = Vec::new();
        let mut emitted = Vec::new();
        let mut watermark = i64::MIN;
        let mut epoch = 0;
        let mut most = 0;
        for chunk in 0..80i64 {
            let rows: Vec<(Op, [Option<i64>; 3])> = (0..5)
                .map(|i| {
                    let ts = chunk * 5 + (4 - i);
                    (Op::Insert, [Some(ts % 2), Some(ts), Some(ts)])
                })
                .collect();
            input.extend(
                rows.iter()
                    .map(|(_, r)| [r[0].unwrap(), r[1].unwrap(), r[2].unwrap()]),
            );
            assert!(
                op.process(0, int64_batch(&schema, &rows))
                    .unwrap()
                    .is_empty()
            );
            watermark = chunk * 5 - 1;
            emitted.extend(outputs(op.on_watermark(0, watermark).unwrap()));
            most = most.max(stored_rows(&op));
            if chunk % 10 == 9 {
                epoch += 1;
                commit(&mut op, &scope, epoch);
                op = fresh();
                emitted.extend(outputs(op.on_watermark(0, watermark).unwrap()));
            }
            // A late row is set aside, not emitted.
            let late = [(Op::Insert, [Some(0), Some(watermark - 1), Some(1000)])];
            op.process(0, int64_batch(&schema, &late)).unwrap();
            assert_eq!(op.take_late().len(), 1);
        }
        let mut want: BTreeMap<(i64, i64), i64> = BTreeMap::new();
        for r in input.iter().filter(|r| r[1] < watermark) {
            want.insert((r[0], r[1]), expected(&input, r[0], r[1]));
        }
        let got: BTreeMap<(i64, i64), i64> = emitted.iter().map(|r| ((r[0], r[1]), r[2])).collect();
        assert_eq!(emitted.len(), got.len(), "a row was emitted twice");
        assert_eq!(got, want);
        assert!(most < 40, "{most} rows kept");
    }

    #[test]
    fn range_frames_emit_each_row_once_when_final_and_free_older_rows() {
        run(Preceding::Range(10), |input, k, ts| {
            (input.iter())
                .filter(|r| r[0] == k && r[1] <= ts && r[1] >= ts - 10)
                .map(|r| r[2])
                .sum()
        });
    }

    #[test]
    fn rows_frames_emit_each_row_once_when_final_and_keep_the_last_rows() {
        run(Preceding::Rows(2), |input, k, ts| {
            let mut before: Vec<i64> = (input.iter())
                .filter(|r| r[0] == k && r[1] <= ts)
                .map(|r| r[1])
                .collect();
            before.sort_unstable();
            before.iter().rev().take(3).sum()
        });
    }
}
