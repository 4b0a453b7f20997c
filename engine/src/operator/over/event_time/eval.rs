//! One watermark's evaluation of the event-time OVER operator, over all the partitions it
//! fires at once. First each partition's walk is planned from event times alone: which rows
//! enter its frame (the rows emitted now, in key order), which leave it, and when the
//! accumulators are read; the rows entering and the rows of earlier watermarks leaving are
//! queued for decoding, and the rows leaving are deleted from the rows table. Then the two
//! queues are decoded (two batches, however many partitions), each function's arguments are
//! evaluated over them once, and each partition's accumulators follow its steps: add the rows
//! entering, retract the rows leaving, read the value of the rows emitted. The work is the rows
//! entering and leaving frames, not the frames.

use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{cast, filter, take};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::window::{SlidingAggregateWindowExpr, WindowExpr};

use super::frame::{Entering, Partition, Partitions, Row};
use crate::codec::{RowCodec, RowDecoder};
use crate::operator::sorted::row_of;
use crate::state::table::StateTable;
use crate::{EngineError, Result};

/// How far back a row's frame reaches, in the event-time column's unit.
#[derive(Debug, Clone, Copy)]
pub(super) enum Extent {
    /// RANGE: to the row's event time minus this.
    Range(i64),
    /// ROWS: this many rows before it.
    Rows(u64),
}

/// A DataFusion error of a function over the rows: the user's data.
pub(super) fn data(e: DataFusionError) -> EngineError {
    EngineError::Data {
        operator: "EventTimeOver".into(),
        message: e.to_string(),
    }
}

/// A function of the window: DataFusion's expression (its arguments and its sliding
/// accumulator) and its `FILTER (WHERE ...)`.
#[derive(Debug)]
pub(super) struct Function {
    pub expr: Arc<dyn WindowExpr>,
    pub filter: Option<Arc<dyn PhysicalExpr>>,
}

impl Function {
    /// A new accumulator of the function, holding no rows.
    pub(super) fn accumulator(&self) -> Result<Box<dyn Accumulator>> {
        let sliding = (self.expr.as_any())
            .downcast_ref::<SlidingAggregateWindowExpr>()
            .ok_or_else(|| {
                EngineError::Internal(format!(
                    "event-time OVER of {}, not an aggregate over a sliding frame",
                    self.expr.name()
                ))
            })?;
        (sliding.get_aggregate_expr())
            .create_sliding_accumulator()
            .map_err(data)
    }

    /// Its arguments over `batch`'s rows.
    fn args(&self, batch: &RecordBatch) -> Result<Args> {
        let arrays = self.expr.evaluate_args(batch).map_err(data)?;
        let Some(predicate) = &self.filter else {
            return Ok(Args { arrays, kept: None });
        };
        let mask = (predicate.evaluate(batch))
            .and_then(|v| v.into_array(batch.num_rows()))
            .map_err(data)?;
        let mask = (mask.as_any().downcast_ref::<BooleanArray>()).ok_or_else(|| {
            EngineError::Internal("event-time OVER with a FILTER that is not boolean".into())
        })?;
        let arrays = (arrays.iter())
            .map(|a| filter(a.as_ref(), mask))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        // A NULL condition keeps no row, as in `filter`.
        let mut kept = Vec::with_capacity(batch.num_rows() + 1);
        kept.push(0);
        let mut n = 0;
        for v in mask.iter() {
            n += usize::from(v == Some(true));
            kept.push(n);
        }
        Ok(Args {
            arrays,
            kept: Some(kept),
        })
    }
}

/// A function's arguments over a batch of rows.
struct Args {
    arrays: Vec<ArrayRef>,
    /// With a FILTER (`arrays` then hold the rows it keeps): kept rows before each row, and in
    /// all.
    kept: Option<Vec<usize>>,
}

impl Args {
    /// The arguments of rows `at..at + n` into `out`; false if none of them counts.
    fn slice(&self, at: usize, n: usize, out: &mut Vec<ArrayRef>) -> bool {
        out.clear();
        if n == 0 {
            return false;
        }
        let (from, to) = match &self.kept {
            Some(kept) => (kept[at], kept[at + n]),
            None => (at, at + n),
        };
        if to <= from {
            return false;
        }
        out.extend(self.arrays.iter().map(|a| a.slice(from, to - from)));
        true
    }
}

/// What a partition's accumulators do at a row (ROWS) or a group of peers (RANGE) entering its
/// frame; each count takes the next rows of its kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Step {
    /// Rows of the entering batch added.
    enter: usize,
    /// Rows of the leaving batch (of earlier watermarks) retracted.
    leave_old: usize,
    /// Rows of the entering batch (entered at this watermark) retracted.
    leave_new: usize,
    /// Rows emitted with the accumulators' value after this step.
    emit: usize,
}

/// A partition's part of a watermark's evaluation.
#[derive(Debug)]
struct Job {
    /// The partition's id in the cache.
    id: Vec<u8>,
    steps: Range<usize>,
    /// Its first row in the entering batch.
    enter: usize,
    /// Its first row in the leaving batch.
    leave: usize,
    /// Every row left the frame: the accumulators are replaced by new ones after the steps.
    reset: bool,
}

/// Where a partition's rows are stored, for the rows leaving its frame.
pub(super) struct Stored<'a> {
    pub table: &'a mut StateTable,
    pub kg: u16,
    /// The length of the partition key, which every row's table key starts with.
    pub group: usize,
    /// A buffer for table keys, starting with the partition key.
    pub key: &'a mut Vec<u8>,
}

impl Stored<'_> {
    /// Stores `count` copies of the stored row of key `key` (after the partition key).
    fn set(&mut self, key: &[u8], count: i64) {
        self.key.truncate(self.group);
        self.key.extend_from_slice(key);
        let count = count.to_le_bytes();
        // The row is stored: its value is a count.
        let before = Some(count.len());
        if i64::from_le_bytes(count) > 0 {
            self.table.put_known(self.kg, self.key, &count, before);
        } else {
            self.table.delete_known(self.kg, self.key, before);
        }
    }
}

/// The state of one partition's walk.
struct Walk {
    /// Rows of earlier watermarks at the front of the frame (entries, not copies).
    old: usize,
    /// The front row has lost copies its stored count does not know yet.
    partial: bool,
    /// The next row of the entering batch.
    next: usize,
}

/// A watermark's evaluation; see the module documentation.
pub(super) struct Plan {
    enter: RowDecoder,
    leave: RowDecoder,
    /// The functions retract rows (there are functions): decode the rows leaving.
    retract: bool,
    /// Rows of the entering batch to emit, in order.
    emit: Vec<u32>,
    steps: Vec<Step>,
    jobs: Vec<Job>,
}

impl Plan {
    pub(super) fn new(codec: &RowCodec, retract: bool) -> Self {
        Self {
            enter: codec.decoder(None, 1024),
            leave: codec.decoder(None, if retract { 1024 } else { 0 }),
            retract,
            emit: Vec::new(),
            steps: Vec::new(),
            jobs: Vec::new(),
        }
    }

    /// Rows queued for decoding so far.
    pub(super) fn decoded(&self) -> usize {
        self.enter.len() + self.leave.len()
    }

    /// The ids of the partitions planned.
    pub(super) fn partitions(&self) -> impl Iterator<Item = &[u8]> {
        self.jobs.iter().map(|j| j.id.as_slice())
    }

    /// Plans partition `p` (cache id `id`) at this watermark: `entering` (in key order) enters
    /// its frame, then its frame keeps only what a row at event time `next` or later reaches.
    /// Rows leaving the frame are deleted from `stored`.
    pub(super) fn partition(
        &mut self,
        id: Vec<u8>,
        p: &mut Partition,
        entering: &Entering,
        extent: Extent,
        next: i64,
        stored: &mut Stored<'_>,
    ) -> Result<()> {
        let (first_step, enter, leave) = (self.steps.len(), self.enter.len(), self.leave.len());
        let mut walk = Walk {
            old: p.frame.len(),
            partial: false,
            next: enter,
        };
        for r in &entering.rows {
            let key = entering.key(r);
            let row = row_of(key)?;
            for _ in 0..r.count {
                self.enter.push(row)?;
            }
            p.frame.push(key, r.time, r.count);
        }
        match extent {
            Extent::Range(range) => {
                let rows = &entering.rows;
                let mut i = 0;
                while let Some(first) = rows.get(i) {
                    // Peers enter together and share a value.
                    let mut step = Step::default();
                    while let Some(r) = rows.get(i).filter(|r| r.time == first.time) {
                        self.enter_row(r, r.count as usize, &mut step, &mut walk);
                        i += 1;
                    }
                    p.in_frame += step.enter as u64;
                    let from = first.time.saturating_sub(range);
                    self.leave_before(p, from, &mut step, &mut walk, stored)?;
                    self.steps.push(step);
                }
            }
            Extent::Rows(n) => {
                for r in &entering.rows {
                    for _ in 0..r.count {
                        let mut step = Step::default();
                        self.enter_row(r, 1, &mut step, &mut walk);
                        p.in_frame += 1;
                        while p.in_frame > n.saturating_add(1) {
                            self.leave_one(p, &mut step, &mut walk, stored)?;
                        }
                        self.steps.push(step);
                    }
                }
            }
        }
        // What no later row's frame reaches leaves now; when that is every row, the
        // accumulators are replaced rather than told to retract them.
        let mut step = Step::default();
        let reset = match extent {
            Extent::Range(range) => {
                let from = next.saturating_sub(range);
                let all = p.frame.last().is_some_and(|(_, e)| e.time < from);
                if !all {
                    self.leave_before(p, from, &mut step, &mut walk, stored)?;
                }
                all
            }
            Extent::Rows(n) => {
                if n > 0 {
                    while p.in_frame > n {
                        self.leave_one(p, &mut step, &mut walk, stored)?;
                    }
                }
                n == 0
            }
        };
        if step != Step::default() {
            self.steps.push(step);
        }
        if reset {
            while let Some((key, _)) = p.frame.front() {
                stored.set(key, 0);
                p.frame.pop();
            }
            p.in_frame = 0;
        } else if walk.partial
            && let Some((key, e)) = p.frame.front()
        {
            stored.set(key, e.count);
        }
        self.jobs.push(Job {
            id,
            steps: first_step..self.steps.len(),
            enter,
            leave,
            reset,
        });
        Ok(())
    }

    /// `copies` copies of row `r` (already queued for decoding) enter the frame.
    fn enter_row(&mut self, r: &Row, copies: usize, step: &mut Step, walk: &mut Walk) {
        if r.emit {
            self.emit
                .extend((walk.next..walk.next + copies).map(|i| i as u32));
            step.emit += copies;
        }
        step.enter += copies;
        walk.next += copies;
    }

    /// The frame's first rows, while their event time is before `from`, leave it.
    fn leave_before(
        &mut self,
        p: &mut Partition,
        from: i64,
        step: &mut Step,
        walk: &mut Walk,
        stored: &mut Stored<'_>,
    ) -> Result<()> {
        while let Some((key, e)) = p.frame.front().filter(|(_, e)| e.time < from) {
            let copies = e.count as usize;
            if walk.old > 0 {
                if self.retract {
                    let row = row_of(key)?;
                    for _ in 0..copies {
                        self.leave.push(row)?;
                    }
                }
                step.leave_old += copies;
                walk.old -= 1;
            } else {
                step.leave_new += copies;
            }
            stored.set(key, 0);
            p.frame.pop();
            p.in_frame -= copies as u64;
            walk.partial = false;
        }
        Ok(())
    }

    /// One copy of the frame's first row leaves it.
    fn leave_one(
        &mut self,
        p: &mut Partition,
        step: &mut Step,
        walk: &mut Walk,
        stored: &mut Stored<'_>,
    ) -> Result<()> {
        let Some((key, e)) = p.frame.front() else {
            return Err(EngineError::Internal(
                "event-time OVER frame with fewer rows than counted".into(),
            ));
        };
        if walk.old > 0 {
            if self.retract {
                self.leave.push(row_of(key)?)?;
            }
            step.leave_old += 1;
        } else {
            step.leave_new += 1;
        }
        p.in_frame -= 1;
        if e.count > 1 {
            p.frame.set_front_count(e.count - 1);
            walk.partial = true;
        } else {
            stored.set(key, 0);
            p.frame.pop();
            walk.old = walk.old.saturating_sub(1);
            walk.partial = false;
        }
        Ok(())
    }

    /// Runs every partition's steps through its accumulators, and returns the rows emitted with
    /// the functions' values (`schema`'s columns), if any.
    pub(super) fn finish(
        &mut self,
        functions: &[Function],
        partitions: &mut Partitions,
        schema: &SchemaRef,
    ) -> Result<Option<RecordBatch>> {
        let entered = self.enter.flush()?;
        let left = self.leave.flush()?;
        let mut results = Vec::with_capacity(functions.len());
        let mut slices = Vec::new();
        for (k, f) in functions.iter().enumerate() {
            let new = f.args(&entered)?;
            let old = f.args(&left)?;
            let mut values = Vec::with_capacity(self.emit.len());
            for job in &self.jobs {
                let acc = (partitions.get_mut(&job.id))
                    .and_then(|p| p.accumulators.get_mut(k))
                    .ok_or_else(|| {
                        EngineError::Internal("event-time OVER partition left memory".into())
                    })?;
                let (mut enter, mut leave_new, mut leave_old) = (job.enter, job.enter, job.leave);
                for step in &self.steps[job.steps.clone()] {
                    if new.slice(enter, step.enter, &mut slices) {
                        acc.update_batch(&slices).map_err(data)?;
                    }
                    if old.slice(leave_old, step.leave_old, &mut slices) {
                        acc.retract_batch(&slices).map_err(data)?;
                    }
                    if new.slice(leave_new, step.leave_new, &mut slices) {
                        acc.retract_batch(&slices).map_err(data)?;
                    }
                    (enter, leave_old, leave_new) = (
                        enter + step.enter,
                        leave_old + step.leave_old,
                        leave_new + step.leave_new,
                    );
                    if step.emit > 0 {
                        let value = acc.evaluate().map_err(data)?;
                        values.extend(std::iter::repeat_n(value, step.emit));
                    }
                }
                if job.reset {
                    *acc = f.accumulator()?;
                }
            }
            results.push(values);
        }
        if self.emit.is_empty() {
            return Ok(None);
        }
        let mut columns = if self.emit.len() == entered.num_rows() {
            entered.columns().to_vec()
        } else {
            let indices = UInt32Array::from(std::mem::take(&mut self.emit));
            (entered.columns().iter())
                .map(|c| take(c.as_ref(), &indices, None))
                .collect::<std::result::Result<Vec<_>, _>>()?
        };
        for values in results {
            let values = ScalarValue::iter_to_array(values).map_err(data)?;
            let field = schema.field(columns.len());
            columns.push(cast(&values, field.data_type())?);
        }
        Ok(Some(RecordBatch::try_new(Arc::clone(schema), columns)?))
    }
}
