//! Interval join (Flink's): an equi-join of two append-only inputs with event time whose
//! condition bounds one side's time by the other's, `a.k = b.k AND b.ts BETWEEN a.ts - INTERVAL
//! '1' HOUR AND a.ts`: every pair with `lower <= right.ts - left.ts <= upper` (and the rest of the
//! condition) is emitted once, and each side's rows are dropped once the other side's watermark
//! makes a new match impossible.
//!
//! **Inputs.** As for [`super::HashJoin`]: input 0 is the left side, input 1 the right, each
//! hash-exchanged on its key columns; both are append-only (the planner uses a regular join
//! otherwise). Each side has one event-time column, whose watermark the runtime delivers per
//! input.
//!
//! **State.** Per side, its rows by join key and time (`l`, `r`: key group, length-prefixed join
//! key, the time (order-preserving), the row's encoding; the value is the row's count and its
//! number of matches) and a time index of the same rows (`L`, `R`: the time first), so that
//! expiry reads only what expires. A right row can match no future left row once the left
//! watermark `W` has `right.ts < W + lower`, a left row none once `left.ts < W_right - upper`: at
//! each watermark those rows are removed.
//!
//! **Emission.** A pair is emitted (insert) when its second row arrives. In a LEFT, RIGHT or FULL
//! join a row that expires without a match is emitted NULL-padded then, so the output is
//! append-only, as in Flink. Output rows keep their sides' time columns; the output watermark is
//! the inputs' smaller one held back by the larger of `upper` and `-lower`, which no output row's
//! time column (on either side) is below.
//!
//! **Window joins.** Flink's window join (both sides windowed alike, joined on their window
//! bounds) is this operator over the bound columns with `lower = upper = 0`: each side's
//! watermark is shifted into bound terms ([`Interval::shift`]), so a window's rows meet as they
//! come, are freed once the other side's watermark closes the window, and a row whose window had
//! closed on its own side is late.
//!
//! **Late rows.** A row older than its own side's watermark may have lost matches already (the
//! other side's rows it would meet are gone): it is not joined, and is kept in the job's late-row
//! log instead. A row with a NULL key or time matches nothing (outer: emitted padded at once).

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatchOptions;
use datafusion::physical_plan::PhysicalExpr;

use super::{
    Encoded, JoinKind, JoinSide, Side, encode, event_times, key_len, keys_text, pair_sides,
    parse_value, residual, value,
};
use crate::changelog::{ChangeBatch, Op};
use crate::codec::RowCodec;
use crate::operator::{LateRow, Operator, StateScope, rows_text};
use crate::state::StateBatch;
use crate::state::keys::{KeyReader, put_i64};
use crate::state::table::{Direction, StateTable};
use crate::{EngineError, Result};

/// Bytes of an encoded time in a state key.
const TIME_BYTES: usize = 8;

/// The time bounds of an interval join: `lower <= right.ts - left.ts <= upper`, microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    /// The time column of each side (a position among its own columns).
    pub times: [usize; 2],
    pub lower: i64,
    pub upper: i64,
    /// Added to each side's watermark to compare it with that side's time column: 0 for an
    /// event-time column (a row at `t < W` is late); for a window bound whose window is closed
    /// once `W >= v + offset` (see the planner's event-time lineage), `1 - offset`. A window join
    /// is an interval join on a bound column with `lower = upper = 0`.
    pub shift: [i64; 2],
}

impl Interval {
    /// The times of side `1 - s` a row of side `s` at `t` may match, inclusive.
    fn range(&self, s: usize, t: i64) -> (i64, i64) {
        if s == 0 {
            (t.saturating_add(self.lower), t.saturating_add(self.upper))
        } else {
            (t.saturating_sub(self.upper), t.saturating_sub(self.lower))
        }
    }

    /// Rows of side `o` older than this can match no future row of the other side, whose
    /// watermark is `w`.
    fn expiry(&self, o: usize, w: i64) -> i64 {
        if o == 1 {
            w.saturating_add(self.lower)
        } else {
            w.saturating_sub(self.upper)
        }
    }

    /// How far the output watermark trails the inputs' (see the module documentation).
    fn hold_back(&self) -> i64 {
        self.upper.max(self.lower.saturating_neg()).max(0)
    }
}

/// A stored row of the other side with the batch's key, in its time range.
struct Candidate {
    /// Its key in the rows table (after the key group).
    key: Vec<u8>,
    time: i64,
    count: i64,
    degree: i64,
    /// It got its first match in this batch.
    first: bool,
}

impl Candidate {
    /// The row's encoding: the key after the join key and the time.
    fn row(&self) -> &[u8] {
        self.key
            .get(key_len(&self.key) + TIME_BYTES..)
            .unwrap_or_default()
    }
}

/// A key group and the other side's rows of one join key there.
type Candidates = (u16, Vec<Candidate>);

/// One side of an output row: its encoding, or NULL padding.
type Part<'a> = Option<&'a [u8]>;

/// A side's tables: rows by key and time, and the time index.
struct Tables {
    rows: StateTable,
    index: StateTable,
    /// Per owned key group: no stored row is older than this (`None`: not known yet).
    oldest: Vec<Option<i64>>,
}

/// The interval join; see the module documentation.
pub struct IntervalJoin {
    kind: JoinKind,
    sides: [Arc<Side>; 2],
    key_codec: Arc<RowCodec>,
    interval: Interval,
    filter: Option<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
    /// Each side's watermark, shifted into its time column's terms (see [`Interval::shift`]).
    watermarks: [Option<i64>; 2],
    /// Each side's watermark as it came, for the late-row log.
    raw: [Option<i64>; 2],
    tables: Option<[Tables; 2]>,
    late: Vec<LateRow>,
    groups: Vec<u16>,
}

impl IntervalJoin {
    /// An interval join of `left` and `right` (an inner, left, right or full join) emitting
    /// `schema`, left's own columns then right's. `filter` is the whole condition besides the
    /// key equalities, the time bounds included.
    pub fn try_new(
        kind: JoinKind,
        left: JoinSide,
        right: JoinSide,
        interval: Interval,
        filter: Option<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    ) -> Result<IntervalJoin> {
        if !kind.pairs() {
            return Err(EngineError::Internal(format!(
                "an interval join cannot be a {} join",
                kind.sql()
            )));
        }
        if interval.times[0] >= left.width || interval.times[1] >= right.width {
            return Err(EngineError::Internal(
                "interval join time column out of range".into(),
            ));
        }
        let (sides, key_codec) = pair_sides(left, right, &schema)?;
        Ok(IntervalJoin {
            kind,
            sides,
            key_codec,
            interval,
            filter,
            schema,
            watermarks: [None, None],
            raw: [None, None],
            tables: None,
            late: Vec::new(),
            groups: Vec::new(),
        })
    }

    fn tables(&mut self) -> Result<&mut [Tables; 2]> {
        self.tables
            .as_mut()
            .ok_or_else(|| EngineError::Internal("interval join used before restore".into()))
    }

    /// The other side's stored rows for each distinct key of the batch, over the union of the
    /// time ranges its rows may match.
    fn load(
        &mut self,
        s: usize,
        keys: &Encoded,
        times: &[Option<i64>],
        live: &[bool],
    ) -> Result<(Vec<Option<usize>>, Vec<Candidates>)> {
        let o = 1 - s;
        let mut spans: HashMap<(u16, &[u8]), (usize, i64, i64)> = HashMap::new();
        let mut slots = vec![None; keys.len()];
        for i in 0..keys.len() {
            let (Some(key), Some(t), true) = (keys.get(i), times[i], live[i]) else {
                continue;
            };
            let (lo, hi) = self.interval.range(s, t);
            let next = spans.len();
            let span = spans.entry((self.groups[i], key)).or_insert((next, lo, hi));
            span.1 = span.1.min(lo);
            span.2 = span.2.max(hi);
            slots[i] = Some(span.0);
        }
        let mut lists: Vec<Candidates> = (0..spans.len()).map(|_| (0, Vec::new())).collect();
        let tables = self
            .tables
            .as_ref()
            .ok_or_else(|| EngineError::Internal("interval join used before restore".into()))?;
        for ((kg, key), (slot, lo, hi)) in &spans {
            let mut start = key.to_vec();
            put_i64(&mut start, *lo);
            let end = hi.checked_add(1).map(|end| {
                let mut e = key.to_vec();
                put_i64(&mut e, end);
                e
            });
            let end = match end {
                Some(e) => Some(e),
                None => crate::state::prefix_end(key),
            };
            lists[*slot].0 = *kg;
            let list = &mut lists[*slot].1;
            tables[o]
                .rows
                .scan(*kg, &start, end.as_deref(), Direction::Forward, |k, v| {
                    let (count, degree) = parse_value(v)?;
                    let mut reader = KeyReader::new(k.get(key.len()..).unwrap_or_default());
                    list.push(Candidate {
                        key: k.to_vec(),
                        time: reader.i64()?,
                        count,
                        degree,
                        first: false,
                    });
                    Ok(ControlFlow::Continue(()))
                })?;
        }
        Ok((slots, lists))
    }

    /// Builds the output batch: each row's left part and right part.
    fn output(&self, rows: &[(Part<'_>, Part<'_>)]) -> Result<Vec<ChangeBatch>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for side in 0..2 {
            let mut d = self.sides[side].codec.decoder(None, rows.len());
            for (l, r) in rows {
                d.push(if side == 0 { l } else { r }.unwrap_or(&self.sides[side].null_row))?;
            }
            columns.extend(d.flush()?.columns().iter().cloned());
        }
        let data = RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows.len())),
        )?;
        Ok(vec![ChangeBatch::inserts(data)])
    }

    /// Removes side `o`'s rows that the other side's watermark `w` leaves without a future
    /// match; returns those of them that never matched, for NULL padding (outer joins).
    fn expire(&mut self, o: usize, w: i64) -> Result<Vec<Vec<u8>>> {
        let threshold = self.interval.expiry(o, w);
        let padded = self.kind.padded(o);
        let tables = self.tables()?;
        let side = &mut tables[o];
        let groups = side.rows.key_groups();
        let mut unmatched = Vec::new();
        let mut end = Vec::with_capacity(TIME_BYTES);
        put_i64(&mut end, threshold);
        for kg in groups.clone() {
            let slot = usize::from(kg - groups.start);
            if side.oldest[slot].is_some_and(|t| t >= threshold) {
                continue;
            }
            let mut expired: Vec<Vec<u8>> = Vec::new();
            let mut next = i64::MAX;
            side.index.scan(kg, &[], None, Direction::Forward, |k, _| {
                let mut reader = KeyReader::new(k);
                let t = reader.i64()?;
                if t >= threshold {
                    next = t;
                    return Ok(ControlFlow::Break(()));
                }
                expired.push(k.to_vec());
                Ok(ControlFlow::Continue(()))
            })?;
            side.oldest[slot] = Some(next);
            if expired.is_empty() {
                continue;
            }
            for k in &expired {
                // The rows table's key: the join key, then the time, then the row.
                let rest = k.get(TIME_BYTES..).unwrap_or_default();
                let len = key_len(rest) - 4;
                let join_key = rest.get(..4 + len).unwrap_or_default();
                let mut key = Vec::with_capacity(k.len());
                key.extend_from_slice(join_key);
                key.extend_from_slice(&k[..TIME_BYTES]);
                key.extend_from_slice(rest.get(4 + len..).unwrap_or_default());
                if padded && let Some(v) = side.rows.get(kg, &key)? {
                    let (count, degree) = parse_value(v)?;
                    if degree == 0 {
                        let row = rest.get(4 + len..).unwrap_or_default();
                        for _ in 0..count {
                            unmatched.push(row.to_vec());
                        }
                    }
                }
                side.rows.delete(kg, &key);
            }
            side.index.delete_range(kg, &[], Some(&end));
        }
        Ok(unmatched)
    }
}

impl Operator for IntervalJoin {
    fn name(&self) -> &'static str {
        "IntervalJoin"
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn inputs(&self) -> usize {
        2
    }

    fn fork(&self) -> Result<Box<dyn Operator>> {
        Ok(Box::new(IntervalJoin {
            kind: self.kind,
            sides: self.sides.clone(),
            key_codec: Arc::clone(&self.key_codec),
            interval: self.interval,
            filter: self.filter.clone(),
            schema: Arc::clone(&self.schema),
            watermarks: [None, None],
            raw: [None, None],
            tables: None,
            late: Vec::new(),
            groups: Vec::new(),
        }))
    }

    fn restore(&mut self, scope: &StateScope) -> Result<()> {
        let table = |tag: u8| scope.table(tag, scope.cache_bytes / 4);
        let groups = scope.key_groups.len();
        let side = |rows: u8, index: u8| Tables {
            rows: table(rows),
            index: table(index),
            oldest: vec![None; groups],
        };
        self.tables = Some([side(b'l', b'L'), side(b'r', b'R')]);
        Ok(())
    }

    fn process(&mut self, input: usize, batch: ChangeBatch) -> Result<Vec<ChangeBatch>> {
        let s = input.min(1);
        let o = 1 - s;
        if batch.ops.iter().any(|op| *op != Op::Insert) {
            return Err(EngineError::Internal(
                "an interval join's input has updates or deletes".into(),
            ));
        }
        let (keys, rows) = encode(
            &self.sides[s],
            &self.key_codec,
            false,
            &batch.data,
            &mut self.groups,
        )?;
        let times = event_times(&batch.data, self.interval.times[s])?;
        let watermark = self.watermarks[s];
        let late: Vec<usize> = (0..rows.len())
            .filter(|&i| {
                keys.get(i).is_some() && times[i].is_some_and(|t| watermark.is_some_and(|w| t < w))
            })
            .collect();
        let mut live = vec![true; rows.len()];
        for &i in &late {
            live[i] = false;
        }
        if !late.is_empty() {
            let own = batch
                .data
                .project(&(0..self.sides[s].spec.width).collect::<Vec<_>>())?;
            let text = rows_text(&own, &late)?;
            for (&i, row) in late.iter().zip(text) {
                self.late.push(LateRow {
                    event_time: times[i].unwrap_or_default(),
                    watermark: self.raw[s].unwrap_or(i64::MIN),
                    row,
                });
            }
        }
        let (slots, mut lists) = self.load(s, &keys, &times, &live)?;
        // Candidates in each row's own time range, then the rest of the condition over them.
        let mut candidates: Vec<(usize, usize, usize)> = Vec::new();
        for (i, slot) in slots.iter().enumerate() {
            let (Some(k), Some(t)) = (slot, times[i]) else {
                continue;
            };
            let (lo, hi) = self.interval.range(s, t);
            for (m, c) in lists[*k].1.iter().enumerate() {
                if c.time >= lo && c.time <= hi {
                    candidates.push((i, *k, m));
                }
            }
        }
        let passes = match &self.filter {
            Some(filter) => {
                let pairs: Vec<(&[u8], &[u8])> = candidates
                    .iter()
                    .map(|&(i, k, m)| (&rows[i], lists[k].1[m].row()))
                    .collect();
                residual(filter, &self.sides, s, "IntervalJoin", &pairs)?
            }
            None => vec![true; candidates.len()],
        };
        let mut degrees = vec![0i64; rows.len()];
        let mut matched: Vec<(usize, usize, usize)> = Vec::new();
        for (&(i, k, m), pass) in candidates.iter().zip(passes) {
            if !pass {
                continue;
            }
            let c = &mut lists[k].1[m];
            degrees[i] += c.count;
            c.first |= c.degree == 0;
            c.degree += 1;
            matched.push((i, k, m));
        }
        let expired_before = self.watermarks[o].map(|w| self.interval.expiry(s, w));
        let padded = self.kind.padded(s);
        let padded_other = self.kind.padded(o);
        let mut unmatched: Vec<usize> = Vec::new();
        let groups = std::mem::take(&mut self.groups);
        let tables = self.tables()?;
        for i in 0..rows.len() {
            if !live[i] {
                continue;
            }
            let (Some(key), Some(t)) = (keys.get(i), times[i]) else {
                if padded {
                    unmatched.push(i);
                }
                continue;
            };
            if expired_before.is_some_and(|e| t < e) {
                // The other side has moved past every match this row could still get.
                if padded && degrees[i] == 0 {
                    unmatched.push(i);
                }
                continue;
            }
            let kg = groups[i];
            let mut stored = Vec::with_capacity(key.len() + TIME_BYTES + rows[i].len());
            stored.extend_from_slice(key);
            put_i64(&mut stored, t);
            stored.extend_from_slice(&rows[i]);
            let (count, degree) = match tables[s].rows.get(kg, &stored)? {
                Some(v) => parse_value(v)?,
                None => (0, 0),
            };
            tables[s]
                .rows
                .put(kg, &stored, &value(count + 1, degree.max(degrees[i])));
            let mut index = Vec::with_capacity(stored.len());
            put_i64(&mut index, t);
            index.extend_from_slice(key);
            index.extend_from_slice(&rows[i]);
            tables[s].index.put(kg, &index, &[]);
            let slot = usize::from(kg - tables[s].rows.key_groups().start);
            if let Some(oldest) = tables[s].oldest.get_mut(slot).and_then(Option::as_mut) {
                *oldest = (*oldest).min(t);
            }
        }
        // The other side's rows that got their first matches (outer joins read it at expiry).
        if padded_other {
            for (kg, list) in &lists {
                for c in list.iter().filter(|c| c.first) {
                    tables[o].rows.put(*kg, &c.key, &value(c.count, c.degree));
                }
            }
        }
        self.groups = groups;
        let mut out: Vec<(Part<'_>, Part<'_>)> = Vec::with_capacity(matched.len());
        for &(i, k, m) in &matched {
            let c = &lists[k].1[m];
            for _ in 0..c.count {
                let (own, other) = (Some(&rows[i]), Some(c.row()));
                out.push(if s == 0 { (own, other) } else { (other, own) });
            }
        }
        for &i in &unmatched {
            let (own, other) = (Some(&rows[i]), None);
            out.push(if s == 0 { (own, other) } else { (other, own) });
        }
        self.output(&out)
    }

    fn on_watermark(&mut self, input: usize, watermark: i64) -> Result<Vec<ChangeBatch>> {
        let s = input.min(1);
        if self.raw[s].is_some_and(|w| w >= watermark) {
            return Ok(Vec::new());
        }
        self.raw[s] = Some(watermark);
        let watermark = watermark.saturating_add(self.interval.shift[s]);
        self.watermarks[s] = Some(watermark);
        let o = 1 - s;
        let unmatched = self.expire(o, watermark)?;
        let out: Vec<(Part<'_>, Part<'_>)> = unmatched
            .iter()
            .map(|row| {
                let (own, other) = (Some(row.as_slice()), None);
                if o == 0 { (own, other) } else { (other, own) }
            })
            .collect();
        self.output(&out)
    }

    fn output_watermark(&self, watermark: i64) -> i64 {
        if watermark == i64::MAX {
            return watermark;
        }
        watermark.saturating_sub(self.interval.hold_back())
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
        if let Some(tables) = self.tables.as_mut() {
            for t in tables.iter_mut() {
                t.rows.checkpoint(epoch, batch);
                t.index.checkpoint(epoch, batch);
            }
        }
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.tables.as_ref().map_or(0, |t| {
            t.iter()
                .map(|t| (t.rows.bytes() + t.index.bytes()) as usize)
                .sum()
        })
    }

    fn describe(&self) -> String {
        let keys = keys_text;
        let secs = |us: i64| format!("{} s", us as f64 / 1e6);
        let mut d = if self.interval.shift != [0, 0] {
            format!(
                "WindowJoin: {} on left [{}] = right [{}], window bound left #{} = right #{}",
                self.kind.sql(),
                keys(&self.sides[0]),
                keys(&self.sides[1]),
                self.interval.times[0],
                self.interval.times[1],
            )
        } else {
            format!(
                "IntervalJoin: {} on left [{}] = right [{}], right #{} - left #{} between {} and {}",
                self.kind.sql(),
                keys(&self.sides[0]),
                keys(&self.sides[1]),
                self.interval.times[1],
                self.interval.times[0],
                secs(self.interval.lower),
                secs(self.interval.upper),
            )
        };
        if let Some(f) = &self.filter {
            d.push_str(&format!(", filter {f}"));
        }
        d.push_str(if self.interval.shift != [0, 0] {
            "; state: each side's rows until the other side's window closes; output append-only"
        } else {
            "; state: each side's rows until the other side's watermark passes them; \
             output append-only"
        });
        d
    }
}

#[cfg(test)]
mod tests {
    //! Random out-of-order inserts on both sides with watermarks, checkpoints into a real
    //! RocksDB, restarts and crashes, against a nested-loop oracle over the rows that were not
    //! late; at the end both watermarks pass everything, so every unmatched row is padded.

    use std::collections::BTreeMap;
    use std::sync::atomic::Ordering;

    use datafusion::arrow::array::{Array, AsArray, Int64Array, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType};
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;
    use crate::state::StateStore;

    type Row = (i64, i64);
    type Out = (Option<i64>, Option<i64>, Option<i64>, Option<i64>);

    const LOWER: i64 = -30;
    const UPPER: i64 = 10;
    const DELAY: i64 = 20;

    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    fn schema(k: &str, ts: &str) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(k, DataType::Int64, true),
            Field::new(ts, DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ]))
    }

    fn batch(schema: &SchemaRef, rows: &[Row]) -> ChangeBatch {
        ChangeBatch::inserts(
            RecordBatch::try_new(
                Arc::clone(schema),
                vec![
                    Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                    Arc::new(TimestampMicrosecondArray::from_iter_values(
                        rows.iter().map(|r| r.1),
                    )),
                ],
            )
            .unwrap(),
        )
    }

    fn join(kind: JoinKind) -> IntervalJoin {
        let side = |k, ts| JoinSide {
            schema: schema(k, ts),
            keys: vec![0],
            width: 2,
        };
        let out = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("k2", DataType::Int64, true),
            Field::new(
                "ts2",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                true,
            ),
        ]));
        IntervalJoin::try_new(
            kind,
            side("k", "ts"),
            side("k2", "ts2"),
            Interval {
                times: [1, 1],
                lower: LOWER,
                upper: UPPER,
                shift: [0, 0],
            },
            None,
            out,
        )
        .unwrap()
    }

    fn apply(view: &mut BTreeMap<Out, i64>, out: Vec<ChangeBatch>) {
        for b in out {
            let col = |c: usize, i: usize| -> Option<i64> {
                let a = b.data.column(c);
                if a.is_null(i) {
                    return None;
                }
                Some(match a.data_type() {
                    DataType::Int64 => a
                        .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                        .value(i),
                    _ => a.as_primitive::<TimestampMicrosecondType>().value(i),
                })
            };
            for (i, op) in b.ops.iter().enumerate() {
                assert_eq!(*op, Op::Insert, "an interval join's output is append-only");
                *view
                    .entry((col(0, i), col(1, i), col(2, i), col(3, i)))
                    .or_insert(0) += 1;
            }
        }
    }

    fn oracle(kind: JoinKind, left: &[Row], right: &[Row]) -> BTreeMap<Out, i64> {
        let hit = |l: &Row, r: &Row| l.0 == r.0 && (LOWER..=UPPER).contains(&(r.1 - l.1));
        let mut out = BTreeMap::new();
        for l in left {
            for r in right.iter().filter(|r| hit(l, r)) {
                *out.entry((Some(l.0), Some(l.1), Some(r.0), Some(r.1)))
                    .or_insert(0) += 1;
            }
            if kind.padded(0) && !right.iter().any(|r| hit(l, r)) {
                *out.entry((Some(l.0), Some(l.1), None, None)).or_insert(0) += 1;
            }
        }
        for r in right {
            if kind.padded(1) && !left.iter().any(|l| hit(l, r)) {
                *out.entry((None, None, Some(r.0), Some(r.1))).or_insert(0) += 1;
            }
        }
        out
    }

    /// What the test tracks and rolls back on a crash: the rows that were not late per side,
    /// the view, the late count and the watermarks.
    #[derive(Clone, Default)]
    struct World {
        rows: [Vec<Row>; 2],
        view: BTreeMap<Out, i64>,
        late: usize,
        /// Late rows the operator set aside.
        kept: usize,
        watermarks: [Option<i64>; 2],
    }

    fn check(kind: JoinKind, seed: u64) {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let scope = StateScope::new(store.clone(), b"ij/", 0..crate::keygroup::KEY_GROUPS);
        let proto = join(kind);
        let restored = |w: &World| {
            let mut op = proto.fork().unwrap();
            op.restore(&scope).unwrap();
            // A restarted source sends the watermark it had at the checkpoint first.
            for (s, w) in w.watermarks.iter().enumerate() {
                if let Some(w) = w {
                    assert!(op.on_watermark(s, *w).unwrap().is_empty());
                }
            }
            op
        };
        let schemas = [schema("k", "ts"), schema("k2", "ts2")];
        let mut rng = Rng(seed);
        let mut world = World::default();
        let mut op = restored(&world);
        let mut committed = world.clone();
        let mut clocks = [0i64; 2];
        let mut epoch = 0;
        let mut pending: Vec<StateBatch> = Vec::new();
        for _ in 0..200 {
            let s = rng.below(2) as usize;
            let rows: Vec<Row> = (0..1 + rng.below(5))
                .map(|_| {
                    clocks[s] += rng.below(6) as i64;
                    (rng.below(3) as i64, clocks[s] - rng.below(30) as i64)
                })
                .collect();
            for r in &rows {
                if world.watermarks[s].is_some_and(|w| r.1 < w) {
                    world.late += 1;
                } else {
                    world.rows[s].push(*r);
                }
            }
            apply(
                &mut world.view,
                op.process(s, batch(&schemas[s], &rows)).unwrap(),
            );
            world.kept += op.take_late().len();
            let w = rows.iter().map(|r| r.1).max().unwrap() - DELAY;
            if world.watermarks[s].is_none_or(|old| w > old) {
                world.watermarks[s] = Some(w);
                apply(&mut world.view, op.on_watermark(s, w).unwrap());
            }
            if rng.below(5) == 0 {
                epoch += 1;
                let mut state = StateBatch::new();
                op.checkpoint(epoch, &scope, &mut state).unwrap();
                pending.push(state);
                if rng.below(3) != 0 {
                    for state in pending.drain(..) {
                        store.write(state, false).unwrap();
                    }
                    scope.committed.store(epoch, Ordering::Release);
                    committed = world.clone();
                    if rng.below(2) == 0 {
                        op = restored(&world);
                    }
                }
            } else if rng.below(15) == 0 {
                pending.clear();
                epoch = scope.committed.load(Ordering::Acquire);
                world = committed.clone();
                op = restored(&world);
            }
        }
        for s in 0..2 {
            apply(&mut world.view, op.on_watermark(s, i64::MAX).unwrap());
        }
        assert!(world.late > 0, "seed {seed}: the test makes late rows");
        assert_eq!(
            world.view,
            oracle(kind, &world.rows[0], &world.rows[1]),
            "{kind:?} seed {seed}"
        );
        assert_eq!(world.kept, world.late, "seed {seed}: late rows kept");
        // Every row expired: nothing is left in the store.
        let mut state = StateBatch::new();
        op.checkpoint(epoch + 1, &scope, &mut state).unwrap();
        pending.push(state);
        for state in pending.drain(..) {
            store.write(state, false).unwrap();
        }
        let mut left = 0;
        store
            .scan_prefix(None, b"ij/", None, |_, _| {
                left += 1;
                Ok(ControlFlow::Continue(()))
            })
            .unwrap();
        assert_eq!(
            left, 0,
            "{kind:?} seed {seed}: state left after every row expired"
        );
    }

    #[test]
    fn inner_and_outer_interval_joins_match_the_oracle() {
        for kind in [
            JoinKind::Inner,
            JoinKind::Left,
            JoinKind::Right,
            JoinKind::Full,
        ] {
            for seed in 1..6 {
                check(kind, seed * 104_729);
            }
        }
    }
}
