//! Temporal join (Flink's `JOIN t FOR SYSTEM_TIME AS OF o.ts`): each row of the probe side (left,
//! append-only) is joined with the version of the right side's row that was valid at one
//! moment, and that output is final: later changes on the right do not retract it.
//!
//! **Processing time** (`AS OF PROCTIME()`, a lookup join): the right side is a changelog of
//! any relation; its current rows are kept by join key (`r`: key group, length-prefixed join key,
//! row encoding; the value is the row's count), and a left row meets the rows current when it
//! arrives.
//!
//! **Event time** (`AS OF o.ts` over a versioned table: a primary key, part of the join key, and
//! a watermark): the right side's versions are kept by join key and time (`v`: join key, time
//! (order-preserving), then a tag byte and the row, or a tombstone). An insert or the new image of
//! an update is a version at its own time; the old image of an update is ignored; a delete ends
//! the key's history at the later of the right watermark and the deleted row's time. A left row at
//! `t` is joined with the latest version at or before `t` once the right watermark is past `t`
//! (every such version has come): at once if it already is, otherwise it waits in a buffer (`b`:
//! time, join key, row; the value is its count) until the right watermark passes it. A key's
//! versions older than its latest version at or before both watermarks can serve no left row
//! any more and are removed when the key gets a new version. Left rows older than the left
//! watermark, and right versions older than the right watermark, are late: kept in the job's
//! late-row log, not joined. The output keeps the left side's event time, append-only.
//!
//! A LEFT join emits a left row without a version (or whose version fails the rest of the
//! condition) NULL-padded; an INNER join drops it.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatchOptions;
use datafusion::physical_plan::PhysicalExpr;

use super::{
    Encoded, JoinKind, JoinSide, Side, encode, event_times, key_len, keys_text, pair_sides,
    residual,
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

/// Tag byte of a stored version: a row follows.
const ROW: u8 = 1;
/// Tag byte of a stored version: the key had no row from this time.
const TOMBSTONE: u8 = 0;

/// Which version of the right side a left row meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// The right side's rows current when the left row arrives.
    ProcessingTime,
    /// The version valid at the left row's event time: the event-time column of each side (a
    /// position among its own columns).
    EventTime { times: [usize; 2] },
}

/// A side's own columns of one row, in [`RowCodec`]'s encoding.
type EncodedRow = Vec<u8>;

/// A left row to join: its key group, join key, the time of the version it meets (`None`: the
/// current rows) and its encoding.
type Probe<'a> = (u16, &'a [u8], Option<i64>, &'a [u8]);

/// The temporal join; see the module documentation.
pub struct TemporalJoin {
    kind: JoinKind,
    sides: [Arc<Side>; 2],
    key_codec: Arc<RowCodec>,
    as_of: AsOf,
    filter: Option<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
    watermarks: [Option<i64>; 2],
    /// `r` (processing time) or `v` (event time), and the left rows' buffer `b`.
    tables: Option<[StateTable; 2]>,
    /// Per owned key group: no buffered left row is older than this (`None`: not known yet).
    earliest: Vec<Option<i64>>,
    late: Vec<LateRow>,
    groups: Vec<u16>,
}

fn count_value(count: i64) -> [u8; 8] {
    count.to_le_bytes()
}

fn parse_count(bytes: &[u8]) -> Result<i64> {
    let b: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| EngineError::Corrupt("temporal join state value".into()))?;
    Ok(i64::from_le_bytes(b))
}

impl TemporalJoin {
    /// A temporal join (inner or left) of the probe side `left` with `right`, emitting `schema`
    /// (left's own columns then right's). `filter` is the rest of the condition besides the key
    /// equalities.
    pub fn try_new(
        kind: JoinKind,
        left: JoinSide,
        right: JoinSide,
        as_of: AsOf,
        filter: Option<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    ) -> Result<TemporalJoin> {
        if !matches!(kind, JoinKind::Inner | JoinKind::Left) {
            return Err(EngineError::Internal(format!(
                "a temporal join cannot be a {} join",
                kind.sql()
            )));
        }
        if let AsOf::EventTime { times } = as_of
            && (times[0] >= left.width || times[1] >= right.width)
        {
            return Err(EngineError::Internal(
                "temporal join time column out of range".into(),
            ));
        }
        let (sides, key_codec) = pair_sides(left, right, &schema)?;
        Ok(TemporalJoin {
            kind,
            sides,
            key_codec,
            as_of,
            filter,
            schema,
            watermarks: [None, None],
            tables: None,
            earliest: Vec::new(),
            late: Vec::new(),
            groups: Vec::new(),
        })
    }

    /// True for an event-time join (versions valid at the probe row's time), which needs the
    /// versioned table's past versions.
    pub fn event_time(&self) -> bool {
        matches!(self.as_of, AsOf::EventTime { .. })
    }

    fn tables(&mut self) -> Result<&mut [StateTable; 2]> {
        self.tables
            .as_mut()
            .ok_or_else(|| EngineError::Internal("temporal join used before restore".into()))
    }

    fn time_column(&self, s: usize) -> Option<usize> {
        match self.as_of {
            AsOf::ProcessingTime => None,
            AsOf::EventTime { times } => Some(times[s]),
        }
    }

    /// Sets rows `rows` of `batch` (side `s`) aside as late.
    fn set_aside(&mut self, s: usize, batch: &RecordBatch, rows: &[usize], times: &[Option<i64>]) {
        if rows.is_empty() {
            return;
        }
        let width = self.sides[s].spec.width;
        let text = batch
            .project(&(0..width).collect::<Vec<_>>())
            .map_err(EngineError::from)
            .and_then(|own| rows_text(&own, rows));
        let text = text.unwrap_or_else(|_| vec![String::new(); rows.len()]);
        for (&i, row) in rows.iter().zip(text) {
            self.late.push(LateRow {
                event_time: times[i].unwrap_or_default(),
                watermark: self.watermarks[s].unwrap_or(i64::MIN),
                row,
            });
        }
    }

    /// The right side's row for each probe (key group, join key, time; `None` time: the current
    /// rows), as encodings: several rows per probe for processing time (a key's current rows),
    /// at most one for event time (the version valid then).
    fn lookup(&self, probes: &[(u16, &[u8], Option<i64>)]) -> Result<Vec<Vec<EncodedRow>>> {
        let tables = self
            .tables
            .as_ref()
            .ok_or_else(|| EngineError::Internal("temporal join used before restore".into()))?;
        let mut cache: HashMap<(u16, &[u8], Option<i64>), usize> = HashMap::new();
        let mut found: Vec<Vec<EncodedRow>> = Vec::with_capacity(probes.len());
        for &(kg, key, t) in probes {
            if let Some(&at) = cache.get(&(kg, key, t)) {
                found.push(found[at].clone());
                continue;
            }
            let mut rows = Vec::new();
            match t {
                None => tables[0].scan_prefix(kg, key, Direction::Forward, |k, v| {
                    for _ in 0..parse_count(v)? {
                        rows.push(k.get(key.len()..).unwrap_or_default().to_vec());
                    }
                    Ok(ControlFlow::Continue(()))
                })?,
                Some(t) => {
                    let mut end = key.to_vec();
                    put_i64(&mut end, t);
                    // The latest version at or before `t`: the last key below `t + 1`.
                    let end = match t.checked_add(1) {
                        Some(next) => {
                            let mut e = key.to_vec();
                            put_i64(&mut e, next);
                            Some(e)
                        }
                        None => crate::state::prefix_end(key),
                    };
                    tables[0].scan(kg, key, end.as_deref(), Direction::Reverse, |_, v| {
                        if v.first() == Some(&ROW) {
                            rows.push(v[1..].to_vec());
                        }
                        Ok(ControlFlow::Break(()))
                    })?;
                }
            }
            cache.insert((kg, key, t), found.len());
            found.push(rows);
        }
        Ok(found)
    }

    /// Joins left rows (encodings, with their key group, join key and lookup time) with what
    /// [`Self::lookup`] finds, as output rows: pairs, and NULL-padded rows for a LEFT join.
    fn probe(&self, probes: &[Probe<'_>]) -> Result<Vec<ChangeBatch>> {
        let keys: Vec<(u16, &[u8], Option<i64>)> = probes.iter().map(|p| (p.0, p.1, p.2)).collect();
        let found = self.lookup(&keys)?;
        let mut pairs: Vec<(&[u8], &[u8])> = Vec::new();
        let mut owner: Vec<usize> = Vec::new();
        for (i, rows) in found.iter().enumerate() {
            for r in rows {
                pairs.push((probes[i].3, r.as_slice()));
                owner.push(i);
            }
        }
        let passes = match &self.filter {
            Some(f) => residual(f, &self.sides, 0, "TemporalJoin", &pairs)?,
            None => vec![true; pairs.len()],
        };
        let mut matched = vec![false; probes.len()];
        let mut out: Vec<(&[u8], Option<&[u8]>)> = Vec::new();
        for ((l, r), (&i, pass)) in pairs.iter().zip(owner.iter().zip(passes)) {
            if pass {
                matched[i] = true;
                out.push((l, Some(r)));
            }
        }
        if self.kind == JoinKind::Left {
            for (i, p) in probes.iter().enumerate() {
                if !matched[i] {
                    out.push((p.3, None));
                }
            }
        }
        self.output(&out)
    }

    fn output(&self, rows: &[(&[u8], Option<&[u8]>)]) -> Result<Vec<ChangeBatch>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut left = self.sides[0].codec.decoder(None, rows.len());
        let mut right = self.sides[1].codec.decoder(None, rows.len());
        for (l, r) in rows {
            left.push(l)?;
            right.push(r.unwrap_or(&self.sides[1].null_row))?;
        }
        let mut columns: Vec<ArrayRef> = left.flush()?.columns().to_vec();
        columns.extend(right.flush()?.columns().iter().cloned());
        let data = RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows.len())),
        )?;
        Ok(vec![ChangeBatch::inserts(data)])
    }

    /// A change on the right side: the current rows (processing time) or the versions (event
    /// time) of its key.
    fn right(&mut self, batch: &ChangeBatch) -> Result<()> {
        let (keys, rows) = encode(
            &self.sides[1],
            &self.key_codec,
            false,
            &batch.data,
            &mut self.groups,
        )?;
        let groups = std::mem::take(&mut self.groups);
        let result = match self.time_column(1) {
            None => self.right_current(&batch.ops, &keys, &rows, &groups),
            Some(column) => {
                let times = event_times(&batch.data, column)?;
                let late: Vec<usize> = (0..rows.len())
                    .filter(|&i| {
                        batch.ops[i].is_add()
                            && keys.get(i).is_some()
                            && times[i].is_some_and(|t| self.watermarks[1].is_some_and(|w| t < w))
                    })
                    .collect();
                self.set_aside(1, &batch.data, &late, &times);
                self.right_versions(&batch.ops, &keys, &rows, &times, &late, &groups)
            }
        };
        self.groups = groups;
        result
    }

    fn right_current(
        &mut self,
        ops: &[Op],
        keys: &Encoded,
        rows: &Encoded,
        groups: &[u16],
    ) -> Result<()> {
        let tables = self.tables()?;
        let mut stored = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let Some(key) = keys.get(i) else { continue };
            stored.clear();
            stored.extend_from_slice(key);
            stored.extend_from_slice(&rows[i]);
            let count = match tables[0].get(groups[i], &stored)? {
                Some(v) => parse_count(v)?,
                None => 0,
            } + if op.is_add() { 1 } else { -1 };
            if count > 0 {
                tables[0].put(groups[i], &stored, &count_value(count));
            } else {
                tables[0].delete(groups[i], &stored);
            }
        }
        Ok(())
    }

    fn right_versions(
        &mut self,
        ops: &[Op],
        keys: &Encoded,
        rows: &Encoded,
        times: &[Option<i64>],
        late: &[usize],
        groups: &[u16],
    ) -> Result<()> {
        let watermark = self.watermarks[1];
        // Versions at or before this serve no left row but the latest of them.
        let cutoff = match self.watermarks {
            [Some(l), Some(r)] => Some(l.min(r)),
            _ => None,
        };
        let tables = self.tables()?;
        let mut late = late.iter().peekable();
        for (i, op) in ops.iter().enumerate() {
            if late.peek() == Some(&&i) {
                late.next();
                continue;
            }
            let (Some(key), Some(t)) = (keys.get(i), times[i]) else {
                continue;
            };
            let kg = groups[i];
            let (time, value) = match op {
                Op::Insert | Op::UpdateAfter => {
                    let mut v = Vec::with_capacity(1 + rows[i].len());
                    v.push(ROW);
                    v.extend_from_slice(&rows[i]);
                    (t, v)
                }
                Op::UpdateBefore => continue,
                Op::Delete => (watermark.map_or(t, |w| w.max(t)), vec![TOMBSTONE]),
            };
            let mut stored = key.to_vec();
            put_i64(&mut stored, time);
            tables[0].put(kg, &stored, &value);
            if let Some(cutoff) = cutoff {
                // Drop the versions before the key's latest one at or before the cutoff.
                let mut end = key.to_vec();
                put_i64(&mut end, cutoff.saturating_add(1));
                let mut latest: Option<Vec<u8>> = None;
                tables[0].scan(kg, key, Some(&end), Direction::Reverse, |k, _| {
                    latest = Some(k.to_vec());
                    Ok(ControlFlow::Break(()))
                })?;
                if let Some(latest) = latest {
                    tables[0].delete_range(kg, key, Some(&latest));
                }
            }
        }
        Ok(())
    }
}

impl Operator for TemporalJoin {
    fn name(&self) -> &'static str {
        "TemporalJoin"
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn inputs(&self) -> usize {
        2
    }

    fn fork(&self) -> Result<Box<dyn Operator>> {
        Ok(Box::new(TemporalJoin {
            kind: self.kind,
            sides: self.sides.clone(),
            key_codec: Arc::clone(&self.key_codec),
            as_of: self.as_of,
            filter: self.filter.clone(),
            schema: Arc::clone(&self.schema),
            watermarks: [None, None],
            tables: None,
            earliest: Vec::new(),
            late: Vec::new(),
            groups: Vec::new(),
        }))
    }

    fn restore(&mut self, scope: &StateScope) -> Result<()> {
        let table = |tag: u8| scope.table(tag, scope.cache_bytes / 2);
        let right = match self.as_of {
            AsOf::ProcessingTime => b'r',
            AsOf::EventTime { .. } => b'v',
        };
        self.tables = Some([table(right), table(b'b')]);
        self.earliest = vec![None; scope.key_groups.len()];
        Ok(())
    }

    fn input_has_time(&self, input: usize) -> bool {
        input == 0 || self.time_column(1).is_some()
    }

    fn process(&mut self, input: usize, batch: ChangeBatch) -> Result<Vec<ChangeBatch>> {
        if input != 0 {
            self.right(&batch)?;
            return Ok(Vec::new());
        }
        if batch.ops.iter().any(|op| *op != Op::Insert) {
            return Err(EngineError::Internal(
                "a temporal join's probe side has updates or deletes".into(),
            ));
        }
        let (keys, rows) = encode(
            &self.sides[0],
            &self.key_codec,
            false,
            &batch.data,
            &mut self.groups,
        )?;
        let groups = std::mem::take(&mut self.groups);
        let times = match self.time_column(0) {
            Some(c) => event_times(&batch.data, c)?,
            None => vec![None; rows.len()],
        };
        let event_time = self.time_column(0).is_some();
        let late: Vec<usize> = (0..rows.len())
            .filter(|&i| {
                event_time && times[i].is_some_and(|t| self.watermarks[0].is_some_and(|w| t < w))
            })
            .collect();
        self.set_aside(0, &batch.data, &late, &times);
        let right_watermark = self.watermarks[1];
        let mut now: Vec<Probe<'_>> = Vec::new();
        let mut unmatched: Vec<(&[u8], Option<&[u8]>)> = Vec::new();
        let mut wait: Vec<usize> = Vec::new();
        let mut late = late.iter().peekable();
        for i in 0..rows.len() {
            if late.peek() == Some(&&i) {
                late.next();
                continue;
            }
            let Some(key) = keys.get(i) else {
                if self.kind == JoinKind::Left {
                    unmatched.push((&rows[i], None));
                }
                continue;
            };
            match (event_time, times[i]) {
                (false, _) => now.push((groups[i], key, None, &rows[i])),
                (true, None) => {
                    if self.kind == JoinKind::Left {
                        unmatched.push((&rows[i], None));
                    }
                }
                (true, Some(t)) if right_watermark.is_some_and(|w| t < w) => {
                    now.push((groups[i], key, Some(t), &rows[i]))
                }
                (true, Some(_)) => wait.push(i),
            }
        }
        let mut out = self.probe(&now)?;
        out.extend(self.output(&unmatched)?);
        let tables = self
            .tables
            .as_mut()
            .ok_or_else(|| EngineError::Internal("temporal join used before restore".into()))?;
        let first = tables[1].key_groups().start;
        for i in wait {
            let (Some(key), Some(t)) = (keys.get(i), times[i]) else {
                continue;
            };
            let mut stored = Vec::with_capacity(TIME_BYTES + key.len() + rows[i].len());
            put_i64(&mut stored, t);
            stored.extend_from_slice(key);
            stored.extend_from_slice(&rows[i]);
            let count = match tables[1].get(groups[i], &stored)? {
                Some(v) => parse_count(v)?,
                None => 0,
            };
            tables[1].put(groups[i], &stored, &count_value(count + 1));
            if let Some(Some(e)) = self.earliest.get_mut(usize::from(groups[i] - first)) {
                *e = (*e).min(t);
            }
        }
        self.groups = groups;
        Ok(out)
    }

    fn on_watermark(&mut self, input: usize, watermark: i64) -> Result<Vec<ChangeBatch>> {
        let s = input.min(1);
        if self.watermarks[s].is_some_and(|w| w >= watermark) {
            return Ok(Vec::new());
        }
        self.watermarks[s] = Some(watermark);
        if s == 0 || self.time_column(0).is_none() {
            return Ok(Vec::new());
        }
        // The right side is complete up to the watermark: the buffered left rows before it
        // meet their versions now.
        let mut end = Vec::with_capacity(TIME_BYTES);
        put_i64(&mut end, watermark);
        let tables = self
            .tables
            .as_mut()
            .ok_or_else(|| EngineError::Internal("temporal join used before restore".into()))?;
        let groups = tables[1].key_groups();
        let mut ready: Vec<(u16, Vec<u8>, i64)> = Vec::new();
        for kg in groups.clone() {
            let slot = usize::from(kg - groups.start);
            if self.earliest[slot].is_some_and(|e| e >= watermark) {
                continue;
            }
            let mut next = i64::MAX;
            tables[1].scan(kg, &[], None, Direction::Forward, |k, v| {
                let t = KeyReader::new(k).i64()?;
                if t >= watermark {
                    next = t;
                    return Ok(ControlFlow::Break(()));
                }
                for _ in 0..parse_count(v)? {
                    ready.push((kg, k.to_vec(), t));
                }
                Ok(ControlFlow::Continue(()))
            })?;
            self.earliest[slot] = Some(next);
            tables[1].delete_range(kg, &[], Some(&end));
        }
        let probes: Vec<Probe<'_>> = ready
            .iter()
            .map(|(kg, k, t)| {
                let rest = k.get(TIME_BYTES..).unwrap_or_default();
                let len = key_len(rest);
                (
                    *kg,
                    rest.get(..len).unwrap_or_default(),
                    Some(*t),
                    rest.get(len..).unwrap_or_default(),
                )
            })
            .collect();
        self.probe(&probes)
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
                t.checkpoint(epoch, batch);
            }
        }
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.tables
            .as_ref()
            .map_or(0, |t| t.iter().map(|t| t.bytes() as usize).sum())
    }

    fn describe(&self) -> String {
        let keys = keys_text;
        let mut d = format!(
            "TemporalJoin: {} on left [{}] = right [{}], ",
            self.kind.sql(),
            keys(&self.sides[0]),
            keys(&self.sides[1]),
        );
        match self.as_of {
            AsOf::ProcessingTime => d.push_str("as of processing time"),
            AsOf::EventTime { times } => d.push_str(&format!(
                "as of left #{}, versions by right #{}",
                times[0], times[1]
            )),
        }
        if let Some(f) = &self.filter {
            d.push_str(&format!(", filter {f}"));
        }
        d.push_str(match self.as_of {
            AsOf::ProcessingTime => {
                "; state: the right side's current rows by key; output append-only"
            }
            AsOf::EventTime { .. } => {
                "; state: the right side's versions by key and time (older ones dropped as the \
                 watermarks pass), left rows waiting for the right watermark; output append-only"
            }
        });
        d
    }
}
