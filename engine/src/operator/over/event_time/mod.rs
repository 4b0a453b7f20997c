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
//! **Semantics.** The aggregates are DataFusion's: each function's sliding accumulator (the one
//! DataFusion's own windows use for a frame that slides) and arguments, with its FILTER; rows
//! tied in event time are peers (RANGE: each other's frame, one value) or ordered by their
//! stored encoding (ROWS).
//!
//! **Evaluation is incremental**, as Flink's `RowTimeRangeBoundedPrecedingFunction`: each
//! partition keeps its *frame* (the emitted rows a later row's frame can still reach) in its
//! accumulators. At a watermark the partition's rows now behind it enter the frame in event-time
//! order, the rows that fall out of it are retracted, and each row is emitted with the value the
//! accumulators then hold: the work is the rows entering and leaving the frame, not the frame
//! (see [`eval`]: all partitions of a watermark are decoded and evaluated together).
//!
//! **State.** Two [`StateTable`]s, the source of truth at every checkpoint. `v`: the
//! partition's rows in event-time order ([`super::super::sorted`]'s layout): its frame and the
//! rows not emitted yet. `e`: timers, keyed by event time then kind then partition: an *emit*
//! timer per pending row's event time, and for RANGE frames a *cleanup* timer at the frame's
//! last event time plus the range (one at a time: one that fires while later rows are in the
//! frame sets the next). A watermark fires the timers before it (scanning from where the last
//! one stopped, as none is set behind the watermark, and deleting them with a range delete per
//! key group); emitting a partition's rows also deletes its rows that no later row's frame can
//! reach (older than the watermark minus the range, or all but the last `n` emitted rows for
//! ROWS), and a cleanup timer does the same for a partition that gets no more rows. State is
//! therefore the frame's rows plus the rows not yet emitted, per partition.
//!
//! **Memory.** The partitions in use are also kept in memory ([`frame`]: frame and pending rows
//! as stored keys, and the accumulators), a cache of the table counted in the shared state
//! memory ([`crate::state::memory`]): a partition is dropped when it holds more than a quarter
//! of the operator's share, when the cache is over its share (arbitrary partitions, at a
//! checkpoint or when it grows), or when it holds nothing. A partition not in memory is read
//! from the table when a watermark fires it (one scan, stopping at the watermark once the
//! rows past it take too much memory): the rows emitted before only enter its accumulators
//! again. Nothing is read back at restart: timers are found in the store when a watermark
//! passes them, and partitions are read when they are fired.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::window::WindowExpr;

use self::eval::{Extent, Function, Plan, Stored};
use self::frame::{Clock, Entering, Partition, Partitions, time_of};
use super::super::sorted::{self, PartitionOrder, SortedRows, Table};
use super::super::{LateRow, Operator, StateScope, timers};
use crate::changelog::{ChangeBatch, Op};
use crate::state::StateBatch;
use crate::state::memory::Charge;
use crate::state::table::{Direction, StateTable};
use crate::{EngineError, Result};

/// A watermark's batched evaluation of the partitions it fires.
mod eval;
/// A partition in memory: its frame, rows not emitted yet and accumulators.
mod frame;
#[cfg(test)]
mod tests;

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
    /// Each function's `FILTER (WHERE ...)` over the row's own columns, if it has one.
    pub filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    pub preceding: Preceding,
}

/// The name of the first of `functions` whose aggregate cannot retract rows, which an
/// event-time OVER cannot run (DataFusion cannot either, over a frame that slides).
pub fn unretractable(functions: &[Arc<dyn WindowExpr>]) -> Option<String> {
    functions.iter().find_map(|f| {
        let function = Function {
            expr: Arc::clone(f),
            filter: None,
        };
        match function.accumulator() {
            Ok(a) if a.supports_retract_batch() => None,
            _ => Some(call(f.as_ref()).to_string()),
        }
    })
}

/// `sum(t.x)` of a window expression named `sum(t.x) PARTITION BY [..] ORDER BY [..] ...`.
fn call(f: &dyn WindowExpr) -> &str {
    let name = f.name();
    let call = name.split(" PARTITION BY ").next().unwrap_or(name);
    call.split(" ORDER BY ").next().unwrap_or(call)
}

/// The immutable part of an operator, shared by its instances.
#[derive(Debug)]
struct Shared {
    spec: EventTimeOverSpec,
    rows: SortedRows,
    schema: SchemaRef,
    /// The event-time column.
    time: usize,
    clock: Clock,
    extent: Extent,
    functions: Vec<Function>,
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
    /// The timers table has none before this (`i64::MIN` after a restart): every timer before
    /// the last watermark that fired timers was taken, and none is set behind the watermark.
    timers_from: i64,
    late: Vec<LateRow>,
    /// The partitions in memory.
    partitions: Partitions,
    /// Their memory.
    cached: usize,
    /// What they may take: the operator's share of the state cache.
    budget: usize,
    /// What they may take now: `budget`, or less while the process's state caches are over
    /// their shared limit; updated at each checkpoint.
    limit: usize,
    /// `cached`, as the shared pool counts it.
    charge: Charge,
    /// Buffers: a partition's id, a table key, the rows entering a frame.
    id: Vec<u8>,
    key: Vec<u8>,
    entering: Entering,
    /// Rows decoded to evaluate the functions, since the instance started (the work, which
    /// the tests bound).
    decoded: u64,
}

/// Sets `id` to the cache id of partition `group` of key group `kg`.
fn set_id(id: &mut Vec<u8>, kg: u16, group: &[u8]) {
    id.clear();
    id.extend_from_slice(&kg.to_be_bytes());
    id.extend_from_slice(group);
}

/// A stored row's key after the partition key (`group` bytes).
fn row_key(key: &[u8], group: usize) -> &[u8] {
    key.get(group..).unwrap_or_default()
}

/// The key group and partition key of a cache id.
fn split_id(id: &[u8]) -> Result<(u16, &[u8])> {
    match id {
        [a, b, group @ ..] => Ok((u16::from_be_bytes([*a, *b]), group)),
        _ => Err(EngineError::Internal("event-time OVER partition id".into())),
    }
}

impl EventTimeOver {
    /// An event-time OVER window over `spec`'s input, emitting `schema` (the row's columns, then
    /// one column per function).
    pub fn try_new(spec: EventTimeOverSpec, schema: SchemaRef) -> Result<Self> {
        if schema.fields().len() != spec.rows.width + spec.functions.len()
            || spec.filters.len() != spec.functions.len()
        {
            return Err(EngineError::Internal(format!(
                "event-time OVER of rows of {} columns and {} functions ({} filters) with an \
                 output of {} columns",
                spec.rows.width,
                spec.functions.len(),
                spec.filters.len(),
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
        if let Some(f) = unretractable(&spec.functions) {
            return Err(EngineError::Internal(format!(
                "event-time OVER of {f}, whose aggregate cannot retract rows"
            )));
        }
        let clock = Clock::of(spec.rows.input.field(time).data_type())?;
        let extent = match spec.preceding {
            Preceding::Range(us) => Extent::Range(clock.span(us)),
            Preceding::Rows(n) => Extent::Rows(n),
        };
        let functions = (spec.functions.iter().zip(&spec.filters))
            .map(|(f, filter)| Function {
                expr: Arc::clone(f),
                filter: filter.clone(),
            })
            .collect();
        let rows = SortedRows::try_new(spec.rows.clone())?;
        Ok(Self::with(Arc::new(Shared {
            spec,
            rows,
            schema,
            time,
            clock,
            extent,
            functions,
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
            timers_from: i64::MIN,
            late: Vec::new(),
            partitions: Partitions::default(),
            cached: 0,
            budget: 0,
            limit: 0,
            charge: Charge::default(),
            id: Vec::new(),
            key: Vec::new(),
            entering: Entering::default(),
            decoded: 0,
        }
    }

    /// Another instance, without state.
    fn empty(&self) -> Self {
        Self::with(Arc::clone(&self.shared))
    }

    /// Plans partition `id`'s work at the watermark: its rows at event times `ready`
    /// (microseconds, sorted) are emitted (none: a cleanup timer fired), and its frame keeps
    /// what later rows can reach.
    fn advance(
        &mut self,
        plan: &mut Plan,
        id: Vec<u8>,
        ready: &[i64],
        cleanup: bool,
    ) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        let (clock, watermark) = (shared.clock, self.watermark);
        // Rows past the watermark are read into memory up to half a partition's share.
        let cap = self.limit / 8;
        let (kg, group) = split_id(&id)?;
        let mut entering = std::mem::take(&mut self.entering);
        entering.clear();
        let table = self.rows.get_mut()?;
        match self.partitions.get_mut(&id) {
            None if ready.is_empty() => {
                if cleanup && let Some(at) = clean(table, kg, group, &shared, watermark)? {
                    let timers = self.timers.get_mut()?;
                    timers.put(kg, &timers::key(at, CLEANUP, group), &[]);
                    self.next_timer = self.next_timer.min(at);
                }
                return Ok(());
            }
            None => {
                let accumulators = shared.functions.iter().map(Function::accumulator);
                let mut p = Partition::new(accumulators.collect::<Result<_>>()?);
                p.load(
                    table,
                    (kg, group),
                    clock,
                    watermark,
                    ready,
                    cap,
                    &mut entering,
                )?;
                self.partitions.insert(id.clone(), p);
            }
            Some(p) if ready.is_empty() => p.cleanup = None,
            Some(p) => {
                if cleanup {
                    p.cleanup = None;
                }
                if let Some(bound) = p.bound
                    && clock.micros(time_of(&bound)?) < watermark
                {
                    p.extend(table, (kg, group), clock, watermark, cap)?;
                }
                p.pending
                    .take(|t| clock.micros(t) < watermark, &mut entering);
                entering.sort();
                // A row before rows emitted earlier (one that came after a restart, before
                // the first watermark could set it aside as late): the frame is rebuilt.
                if let (Some(first), Some((last, _))) = (entering.rows.first(), p.frame.last())
                    && entering.key(first) < last
                {
                    for (key, e) in p.frame.iter() {
                        entering.push(key, e.time, e.count, false);
                    }
                    p.frame.clear();
                    p.in_frame = 0;
                    let accumulators = shared.functions.iter().map(Function::accumulator);
                    p.accumulators = accumulators.collect::<Result<_>>()?;
                    entering.sort();
                }
            }
        }
        let p = self.partitions.get_mut(&id).ok_or_else(gone)?;
        self.key.clear();
        self.key.extend_from_slice(group);
        let mut stored = Stored {
            table,
            kg,
            group: group.len(),
            key: &mut self.key,
        };
        let next = clock.first_at(watermark);
        let group_len = group.len();
        plan.partition(id, p, &entering, shared.extent, next, &mut stored)?;
        // A frame's rows are freed by a cleanup timer if no more rows come (one at a time: an
        // early one trims the frame and sets the next).
        if let (Preceding::Range(range), Some((_, last))) = (shared.spec.preceding, p.frame.last())
            && p.cleanup.is_none()
        {
            // Not behind the watermark, where the timers were all taken.
            let at = (clock.micros(last.time).saturating_add(range)).max(watermark);
            let group = self.key.get(..group_len).unwrap_or_default();
            self.timers
                .get_mut()?
                .put(kg, &timers::key(at, CLEANUP, group), &[]);
            self.next_timer = self.next_timer.min(at);
            p.cleanup = Some(at);
        }
        self.entering = entering;
        Ok(())
    }

    /// Counts partition `id`'s memory, and drops it from memory when it holds nothing, or more
    /// than its share.
    fn settle(&mut self, id: &[u8]) {
        let Some(p) = self.partitions.get_mut(id) else {
            return;
        };
        let bytes = p.memory() + id.len();
        self.cached = self.cached + bytes - p.bytes;
        p.bytes = bytes;
        if p.is_empty() || bytes > self.limit / 4 {
            self.partitions.remove(id);
            self.cached -= bytes;
        }
    }

    /// Drops arbitrary partitions from memory until they take at most `target` bytes.
    fn shrink(&mut self, target: usize) {
        let cached = &mut self.cached;
        self.partitions.retain(|_, p| {
            if *cached <= target {
                return true;
            }
            *cached -= p.bytes;
            false
        });
    }

    /// The earliest timer in the store, if any.
    fn earliest_timer(&self) -> Result<Option<i64>> {
        timers::earliest(self.timers.get()?, self.timers_from)
    }
}

/// Deletes partition `group`'s stored rows that no later frame reaches (a cleanup timer of a
/// partition not in memory); returns the time of the cleanup timer its rows emitted before
/// still need, if any do.
fn clean(
    table: &mut StateTable,
    kg: u16,
    group: &[u8],
    shared: &Shared,
    watermark: i64,
) -> Result<Option<i64>> {
    let (Extent::Range(span), Preceding::Range(range)) = (shared.extent, shared.spec.preceding)
    else {
        return Ok(None);
    };
    let clock = shared.clock;
    let from = clock.first_at(watermark).saturating_sub(span);
    let mut gone = Vec::new();
    let mut last = None;
    table.scan_prefix(kg, group, Direction::Forward, |key, _| {
        let time = time_of(key.get(group.len()..).unwrap_or_default())?;
        if time < from {
            gone.push(key.to_vec());
        } else if clock.micros(time) < watermark {
            last = Some(time);
        } else {
            return Ok(ControlFlow::Break(()));
        }
        Ok(ControlFlow::Continue(()))
    })?;
    for key in gone {
        table.delete(kg, &key);
    }
    Ok(last.map(|t| clock.micros(t).saturating_add(range).max(watermark)))
}

fn gone() -> EngineError {
    EngineError::Internal("event-time OVER partition left memory".into())
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
        // The cache is for the partitions in memory: the tables are read by scans (which do not
        // fill a table's cache) and by point reads of the rows of partitions not in memory.
        self.budget = scope.cache_bytes;
        self.limit = self.budget;
        self.rows.open(scope, b'v', 0);
        self.timers.open(scope, b'e', 0);
        self.next_timer = i64::MIN;
        self.timers_from = i64::MIN;
        self.partitions.clear();
        self.cached = 0;
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
        let (batch, _) = timers::set_aside_late(
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
        let ops = vec![Op::Insert; data.num_rows()];
        let table = self.rows.get_mut()?;
        let timers = self.timers.get_mut()?;
        let (partitions, id, timer, cached) = (
            &mut self.partitions,
            &mut self.id,
            &mut self.key,
            &mut self.cached,
        );
        let (clock, cap) = (shared.clock, self.limit / 4);
        let mut next = i64::MAX;
        encoded.for_each_partition(&groups, &ops, |kg, group, deltas| {
            set_id(id, kg, group);
            let mut p = partitions.get_mut(id.as_slice());
            let row = |key| row_key(key, group.len());
            // A partition in memory holds its rows not emitted yet (up to its bound), so it
            // knows their stored counts (an emitted row has an earlier event time), and which
            // emit timers exist (one per event time of a row not emitted yet).
            let held = (p.as_ref()).is_some_and(|p| deltas.iter().all(|(k, _)| p.holds(row(k))));
            if !held {
                sorted::apply(table, kg, deltas)?;
            }
            for &(key, count) in deltas {
                let time = time_of(row(key))?;
                let at = clock.micros(time);
                next = next.min(at);
                timers::set_key(timer, at, EMIT, group);
                let Some(p) = p.as_deref_mut().filter(|p| p.holds(row(key))) else {
                    timers.put(kg, timer, &[]);
                    continue;
                };
                let waits = p.pending.waits_at(|t| clock.micros(t), at);
                timers.put_known(kg, timer, &[], waits.then_some(0));
                if held {
                    let before = p.pending.count(row(key), time);
                    let after = (before + count).to_le_bytes();
                    table.put_known(kg, key, &after, (before > 0).then_some(after.len()));
                }
                p.pending.add(row(key), time, count);
            }
            let Some(p) = p else {
                return Ok(());
            };
            let bytes = p.memory() + id.len();
            *cached = *cached + bytes - p.bytes;
            p.bytes = bytes;
            if bytes > cap {
                partitions.remove(id.as_slice());
                *cached -= bytes;
            }
            Ok(())
        })?;
        if self.next_timer != i64::MIN {
            self.next_timer = self.next_timer.min(next);
        }
        self.groups = groups;
        if self.cached > self.limit {
            self.shrink(self.limit / 2);
        }
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
        // The timers before the watermark, per partition (by id): emit times, and cleanups.
        let mut due: BTreeMap<Vec<u8>, (Vec<i64>, bool)> = BTreeMap::new();
        let table = self.timers.get_mut()?;
        let (taken, next) = timers::take_due_from(table, self.timers_from, watermark)?;
        (self.timers_from, self.next_timer) = (watermark, next.unwrap_or(i64::MAX));
        for timer in taken {
            let (t, kind, _) = timer.parts()?;
            // The timer's key (time, kind, partition key) becomes the id (key group first).
            let mut id = timer.key;
            id.drain(..7);
            id[..2].copy_from_slice(&timer.kg.to_be_bytes());
            let entry = due.entry(id).or_default();
            match kind {
                EMIT => entry.0.push(t),
                _ => entry.1 = true,
            }
        }
        let shared = Arc::clone(&self.shared);
        let mut plan = Plan::new(&shared.rows.row_codec, !shared.functions.is_empty());
        for (id, (mut ready, cleanup)) in due {
            ready.sort_unstable();
            ready.dedup();
            self.advance(&mut plan, id, &ready, cleanup)?;
        }
        self.decoded += plan.decoded() as u64;
        let out = plan.finish(&shared.functions, &mut self.partitions, &shared.schema)?;
        for id in plan.partitions() {
            self.settle(id);
        }
        if self.cached > self.limit {
            self.shrink(self.limit / 2);
        }
        Ok(out
            .map(|data| ChangeBatch {
                ops: vec![Op::Insert; data.num_rows()],
                data,
            })
            .into_iter()
            .collect())
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
        self.timers.checkpoint(epoch, batch)?;
        // The shared pool learns the partitions' size once an epoch, and says what they may
        // take.
        self.limit = self.charge.update(self.cached, self.budget);
        if self.cached > self.limit {
            self.shrink(self.limit / 2);
            self.charge.update(self.cached, self.budget);
        }
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.rows.bytes() + self.timers.bytes()
    }

    fn describe(&self) -> String {
        let spec = &self.shared.spec;
        let (partition, order) = spec.rows.describe();
        let functions = (spec.functions.iter())
            .map(|f| call(f.as_ref()))
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
