//! Row pattern recognition (SQL's `MATCH_RECOGNIZE`): matches of a pattern of variables over
//! each partition's rows in event-time order, emitted once final (append-only output).
//!
//! **Order.** With event time (`event_time`), a partition's rows wait in a buffer until the
//! watermark passes them (`ts < watermark`), then are matched in `(ts, arrival)` order; a row
//! older than the watermark on arrival is late (`rivulet_late_rows`) and not matched. Without,
//! rows are matched in arrival order as they come.
//!
//! **Semantics** (SQL:2016 row pattern recognition, as Oracle and Flink define it). A match
//! attempt starts at every row; an attempt finds the *preferred* match starting there (the one
//! a backtracking matcher finds first: greedy quantifiers take as many rows as they can, reluctant
//! ones as few, alternation prefers its left branch, see [`program`]). Attempts resolve in the
//! order of their first rows: the first one that matches is emitted, the next attempt allowed
//! is the one `AFTER MATCH SKIP` names (past the last row; the next row; the first or last row
//! mapped to a variable — a skip that would not move past the match's first row moves to the
//! next row instead), and attempts before it are dropped. So with `PATTERN (A B+) DEFINE B AS
//! B.price > PREV(B.price)` over prices 1 2 3 2, the attempt at 1 matches `1 2 3` (greedy),
//! not `1 2`; with `B+?` it matches `1 2`.
//!
//! A `DEFINE` condition sees the running match with the candidate row as its last row: `B.price`
//! is the candidate's price, `A.price` the last row mapped to `A`, `PREV(B.price, n)` the row
//! `n` rows before it in the partition, `NEXT(B.price, n)` the row `n` rows after it (so with
//! `NEXT` a row is matched only once `n` rows of its partition follow it: a stream's partition
//! has no last row), `FIRST`/`LAST(A.price, n)`, `COUNT/SUM/AVG/MIN/MAX` over
//! the rows mapped to a variable so far, `CLASSIFIER()`, `MATCH_NUMBER()`. A variable without a
//! condition accepts every row. `MEASURES` are evaluated the same way: over the whole match for
//! `ONE ROW PER MATCH` (one row: partition columns, then the measures), and running, at each row,
//! for `ALL ROWS PER MATCH` (each row of the match, then the measures), where a `FINAL` term
//! (`FINAL LAST(B.price)`) reads the whole match at every row. Patterns that can match no rows
//! are refused by the planner.
//!
//! **WITHIN and timeouts.** With `within`, an attempt whose rows would span `within` or more
//! (`ts - first ts >= within`, Flink's rule) stops: a row that late does not extend it, and a
//! watermark at `first ts + within` ends it. If it had no match by then and `timeout_rows` is
//! set, its preferred partial match is emitted as a row with `timed_out` true (measures of
//! variables it never reached are NULL): "an order not paid within 15 minutes".
//!
//! **Event time of the output.** With `WITHIN` and event time, the output watermark is the
//! input's minus `within`: every match still to come started after that (its attempt would have
//! expired otherwise), so a match's last row (`MATCH_ROWTIME()`), or any row of an ALL ROWS
//! match, is never behind it. Downstream windows can then close over the matches.
//!
//! **State** (three [`StateTable`]s, all keyed by key group and partition key): `r` holds the
//! partition's rows from its oldest unresolved attempt (and as many rows before it as `PREV`
//! reaches) and every row still waiting for the watermark, in *chunks*: the rows a partition
//! admits between two checkpoints are one entry (keyed by the arrival number of the first, the
//! rows framed in the value), written at the checkpoint and deleted once none of its rows is
//! needed, so a row costs no state write of its own; `m` holds per partition the next arrival
//! number, the match count, the first row an attempt may start at (and, with a `^`, the first
//! row matched); `i` holds wake-up times (a waiting row's release, an attempt's WITHIN deadline)
//! keyed by time, so a watermark finds what it wakes with a range scan. Attempts themselves are
//! not stored: a partition loaded after a restart replays its stored rows, which rebuilds them
//! exactly (matching is deterministic), and emits nothing twice: rows of a chunk that were no
//! longer needed come before the first row an attempt may start at, so they start none (they
//! only serve `PREV`). Partitions are
//! loaded when first touched; nothing is read at restart. A partition that keeps no row (no
//! open attempt, no waiting row, none for `PREV`) is forgotten, its counters deleted, unless
//! `MATCH_NUMBER()` is read (the count must go on) or the pattern has a `^` (the partition's
//! first row must stay known): so state holds the partitions with work in progress, not every
//! key ever seen.
//!
//! **Anchors.** `^` passes only before a partition's first row (in matching order): `PATTERN
//! (^ A B*)` matches at most once per partition, at its start; in `(^ A | B)` only the `B`
//! branch can match later rows. `$` (the partition's end) is refused by the planner: a stream's
//! partition has no last row.

pub mod eval;
pub mod oracle;
pub mod program;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::{ControlFlow, Range};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;

use self::eval::{Arena, At, Compiled, Context, Locate, Term, evaluate, truths};
use self::program::{Pattern, Program, Step};
use super::sorted::Table;
use super::{LateRow, Operator, StateScope, rows_text};
use crate::changelog::{ChangeBatch, Op};
use crate::codec::{RowCodec, encode_framed, framed_rows};
use crate::keygroup;
use crate::state::StateBatch;
use crate::state::keys::{put_i64, put_u64};
use crate::state::table::{Direction, StateTable};
use crate::{EngineError, Result};

/// `ONE ROW PER MATCH` or `ALL ROWS PER MATCH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowsPerMatch {
    One,
    All,
}

/// Where the next attempt starts after a match (`AFTER MATCH SKIP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    PastLastRow,
    ToNextRow,
    ToFirst(u16),
    ToLast(u16),
}

/// What the planner decides about a `MATCH_RECOGNIZE`.
#[derive(Debug, Clone)]
pub struct RecognizeSpec {
    pub input: SchemaRef,
    /// Partition columns of the input.
    pub partition: Vec<usize>,
    /// The order column: a timestamp.
    pub time: usize,
    /// Rows wait for the watermark and are matched in event-time order (else arrival order).
    pub event_time: bool,
    /// Pattern variables, by number.
    pub vars: Vec<String>,
    pub pattern: Pattern,
    /// Each variable's condition (`None`: every row).
    pub defines: Vec<Option<Compiled>>,
    pub measures: Vec<Compiled>,
    pub rows: RowsPerMatch,
    pub skip: Skip,
    /// Microseconds a match may span (`WITHIN`).
    pub within: Option<i64>,
    /// Emit attempts that time out as rows with `timed_out` true (last output column).
    pub timeout_rows: bool,
    /// One row: partition columns, measures, [`timed_out`]; all rows: input columns, measures.
    pub output: SchemaRef,
}

#[derive(Debug)]
struct Shared {
    /// The operator's spec over the input columns it keeps (see [`narrow`]).
    spec: RecognizeSpec,
    /// Those columns of the input (`None`: all).
    columns: Option<Vec<usize>>,
    /// The partition and order columns of the input, for EXPLAIN.
    shown: (Vec<usize>, usize),
    program: Program,
    rows: RowCodec,
    keys: RowCodec,
    /// Most rows any `PREV` reaches back.
    max_prev: u64,
    /// Most rows any `NEXT` reaches ahead: a row is matched once that many rows follow it.
    lookahead: u64,
    /// No condition reads what earlier rows were mapped to: threads at one position after one
    /// row behave alike, and only the preferred one is kept.
    dedup: bool,
    /// `MATCH_NUMBER()` is read (a partition's match count lives as long as the partition) or
    /// the pattern has a `^` (a partition's first row stays known): a partition that keeps no
    /// row keeps its counters.
    remembered: bool,
}

/// A row of a partition.
#[derive(Debug, Clone, Copy)]
struct RowAt {
    at: At,
    /// Order key: event time, or 0 in arrival order.
    ord: i64,
    /// The row's event time.
    ts: i64,
    /// Arrival number within the partition.
    seq: u64,
}

impl RowAt {
    fn key(&self) -> (i64, u64) {
        (self.ord, self.seq)
    }
}

/// A partial match: its rows so far, and its position in the program: what it may read next
/// is the first `limit` of the position's steps (fewer once a match among them is taken).
#[derive(Debug, Clone)]
struct Thread {
    pc: u32,
    limit: u32,
    path: Vec<(u64, u16)>,
}

#[derive(Debug)]
struct Attempt {
    start: u64,
    start_key: (i64, u64),
    start_ts: i64,
    threads: Vec<Thread>,
    best: Option<Vec<(u64, u16)>>,
    timed_out: Option<Vec<(u64, u16)>>,
}

/// One partition in memory.
#[derive(Debug, Default)]
struct Part {
    kg: u16,
    /// Length-prefixed partition key.
    key: Vec<u8>,
    /// Rows released to the matcher and still kept; `rows[0]` is row number `base`.
    rows: VecDeque<RowAt>,
    base: u64,
    /// Rows before this one have been matched; the others wait for the rows `NEXT` reads.
    done: u64,
    /// Rows waiting for the watermark.
    pending: Vec<RowAt>,
    attempts: VecDeque<Attempt>,
    /// Rows whose key is below this start no attempt (they are covered by emitted matches or
    /// failed attempts, or only kept for `PREV`).
    start_from: (i64, u64),
    match_number: u64,
    next_seq: u64,
    /// The order key of the partition's first matched row, kept when the pattern has a `^`
    /// (only an attempt there may pass it, also when the row is matched again after a restart).
    first: Option<(i64, u64)>,
    /// The wake-up time registered last (in `Recognize::timers_mem`).
    timer: Option<i64>,
    /// The wake-up time in the `i` table (written at checkpoints).
    stored_timer: Option<i64>,
    /// The counters changed since they were last written (at a checkpoint).
    dirty: bool,
    /// The counters are in table `m`.
    stored_meta: bool,
    /// In `Recognize::queued`: written at the next checkpoint.
    queued: bool,
    /// The partition's chunks of rows in table `r`, by arrival; the last one may be open.
    chunks: VecDeque<Chunk>,
    /// The rows of the open chunk, framed ([`encode_framed`]), written at the next checkpoint.
    open: Vec<u8>,
}

/// The rows of a partition admitted between two checkpoints, stored as one entry of table `r`.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    /// Arrival number of its first row, whose successors number the rest: its key.
    seq: u64,
    /// The greatest row key (order key, arrival number) among its rows: once every kept row
    /// is after it, no row of the chunk is needed.
    last: (i64, u64),
    /// Written to table `r` (else its rows are in [`Part::open`]).
    stored: bool,
}

impl Locate for Part {
    fn locate(&self, index: u64) -> Option<At> {
        let i = index.checked_sub(self.base)?;
        self.rows.get(usize::try_from(i).ok()?).map(|r| r.at)
    }
}

impl Part {
    fn row(&self, index: u64) -> Option<&RowAt> {
        let i = index.checked_sub(self.base)?;
        self.rows.get(usize::try_from(i).ok()?)
    }

    fn end(&self) -> u64 {
        self.base + self.rows.len() as u64
    }

    /// The key just after row `index`.
    fn after(&self, index: u64) -> (i64, u64) {
        self.row(index)
            .map_or(self.start_from, |r| (r.ord, r.seq.saturating_add(1)))
    }

    fn meta(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(32);
        v.extend_from_slice(&self.next_seq.to_le_bytes());
        v.extend_from_slice(&self.match_number.to_le_bytes());
        v.extend_from_slice(&self.start_from.0.to_le_bytes());
        v.extend_from_slice(&self.start_from.1.to_le_bytes());
        if let Some((ord, seq)) = self.first {
            v.extend_from_slice(&ord.to_le_bytes());
            v.extend_from_slice(&seq.to_le_bytes());
        }
        v
    }
}

/// A partition's counters: next arrival number, match count, first row an attempt may start
/// at, and (with a `^`, once known) the first matched row.
type Meta = (u64, u64, (i64, u64), Option<(i64, u64)>);

fn read_meta(bytes: &[u8]) -> Result<Meta> {
    let word = |i: usize| -> Result<[u8; 8]> {
        bytes
            .get(i * 8..i * 8 + 8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| EngineError::Corrupt("MATCH_RECOGNIZE partition state".into()))
    };
    Ok((
        u64::from_le_bytes(word(0)?),
        u64::from_le_bytes(word(1)?),
        (i64::from_le_bytes(word(2)?), u64::from_le_bytes(word(3)?)),
        match bytes.len() {
            32 => None,
            _ => Some((i64::from_le_bytes(word(4)?), u64::from_le_bytes(word(5)?))),
        },
    ))
}

/// Sets `out` to a chunk's key in table `r`: partition key, arrival number of its first row.
fn set_chunk_key(out: &mut Vec<u8>, part_key: &[u8], seq: u64) {
    out.clear();
    out.extend_from_slice(part_key);
    put_u64(out, seq);
}

/// Sets `out` to the key of partition `key` of key group `kg` in `Recognize::parts`.
fn set_map_key(out: &mut Vec<u8>, kg: u16, key: &[u8]) {
    out.clear();
    out.extend_from_slice(&kg.to_be_bytes());
    out.extend_from_slice(key);
}

fn timer_key(at: i64, part_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(part_key.len() + 8);
    put_i64(&mut k, at);
    k.extend_from_slice(part_key);
    k
}

fn decode_u64(bytes: &[u8]) -> Result<u64> {
    let b: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| EngineError::Corrupt("MATCH_RECOGNIZE key".into()))?;
    Ok(u64::from_be_bytes(b))
}

fn decode_i64(bytes: &[u8]) -> Result<i64> {
    Ok((decode_u64(bytes)? ^ (1 << 63)) as i64)
}

/// A step the matcher evaluates: thread `thread` of attempt `attempt` of partition `part` reads
/// row `row` as `var` and continues at `next`.
struct Candidate {
    part: usize,
    attempt: usize,
    thread: usize,
    var: u16,
    next: u32,
    row: u64,
}

/// A match (or a timed-out attempt) to emit.
struct Emission {
    part: usize,
    path: Vec<(u64, u16)>,
    match_number: u64,
    timed_out: bool,
}

/// The `MATCH_RECOGNIZE` operator; see the module documentation.
pub struct Recognize {
    shared: Arc<Shared>,
    rows: Table,
    meta: Table,
    timers: Table,
    arena: Option<Arena>,
    /// Partitions in memory, by key group (big endian) and partition key.
    parts: HashMap<Vec<u8>, Part>,
    /// Every stored wake-up time and its partition (key group and key, as in `parts`), read
    /// from the `i` table at the first watermark after a restore.
    timers_mem: BTreeSet<(i64, Vec<u8>)>,
    timers_loaded: bool,
    /// Partitions (as keyed in `parts`) whose counters or wake-up time the next checkpoint
    /// writes.
    queued: Vec<Vec<u8>>,
    /// Scratch space for keys.
    scratch: Vec<u8>,
    key_groups: Range<u16>,
    watermark: i64,
    late: Vec<LateRow>,
    groups: Vec<u16>,
}

impl Recognize {
    pub fn try_new(spec: RecognizeSpec) -> Result<Self> {
        check_output(&spec)?;
        let shown = (spec.partition.clone(), spec.time);
        let (spec, columns) = narrow(spec)?;
        let program = Program::compile(&spec.pattern)?;
        let rows = RowCodec::try_new(Arc::clone(&spec.input))?;
        let key_fields: Vec<_> = spec
            .partition
            .iter()
            .map(|&c| spec.input.field(c).clone().with_nullable(true))
            .collect();
        let keys = RowCodec::try_new(Arc::new(datafusion::arrow::datatypes::Schema::new(
            key_fields,
        )))?;
        let all_terms = || {
            spec.defines
                .iter()
                .flatten()
                .chain(&spec.measures)
                .flat_map(|c| &c.terms)
        };
        let max_prev = all_terms()
            .map(|t| match t.base() {
                Term::Row { prev, .. } => u64::from(*prev),
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        let lookahead = all_terms()
            .map(|t| match t.base() {
                Term::Row { next, .. } => u64::from(*next),
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        let numbered = all_terms().any(|t| matches!(t.base(), Term::MatchNumber));
        let remembered = numbered || program.anchored();
        let dedup = spec.defines.iter().enumerate().all(|(v, d)| {
            d.as_ref()
                .is_none_or(|c| c.terms.iter().all(|t| t.row_local(v as u16)))
        });
        Ok(Self::unstarted(Arc::new(Shared {
            spec,
            columns,
            shown,
            program,
            rows,
            keys,
            max_prev,
            lookahead,
            dedup,
            remembered,
        })))
    }

    /// An instance without state, before its restore.
    fn unstarted(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            rows: Table::default(),
            meta: Table::default(),
            timers: Table::default(),
            arena: None,
            parts: HashMap::new(),
            timers_mem: BTreeSet::new(),
            timers_loaded: false,
            queued: Vec::new(),
            scratch: Vec::new(),
            key_groups: 0..0,
            watermark: i64::MIN,
            late: Vec::new(),
            groups: Vec::new(),
        }
    }

    fn arena(&mut self) -> Result<&mut Arena> {
        if self.arena.is_none() {
            self.arena = Some(Arena::new(&self.shared.spec.input)?);
        }
        self.arena
            .as_mut()
            .ok_or_else(|| EngineError::Internal("no arena".into()))
    }

    /// The partition `(kg, key)`, from memory or the state tables.
    fn load(&mut self, kg: u16, key: &[u8]) -> Result<Part> {
        set_map_key(&mut self.scratch, kg, key);
        if let Some(p) = self.parts.remove(self.scratch.as_slice()) {
            return Ok(p);
        }
        let mut part = Part {
            kg,
            key: key.to_vec(),
            start_from: (i64::MIN, 0),
            ..Part::default()
        };
        let Some(meta) = self.meta.get_mut()?.get(kg, key)?.map(<[u8]>::to_vec) else {
            return Ok(part);
        };
        (
            part.next_seq,
            part.match_number,
            part.start_from,
            part.first,
        ) = read_meta(&meta)?;
        part.stored_meta = true;
        let shared = Arc::clone(&self.shared);
        let mut decoder = shared.rows.decoder(None, 16);
        let mut seqs: Vec<(usize, u64)> = Vec::new();
        let n = key.len();
        self.rows
            .get()?
            .scan_prefix(kg, key, Direction::Forward, |k, v| {
                let first = decode_u64(k.get(n..).unwrap_or_default())?;
                let chunk = part.chunks.len();
                for (i, row) in framed_rows(v).enumerate() {
                    seqs.push((chunk, first + i as u64));
                    decoder.push(row?)?;
                }
                part.chunks.push_back(Chunk {
                    seq: first,
                    last: (i64::MIN, 0),
                    stored: true,
                });
                Ok(ControlFlow::Continue(()))
            })?;
        if seqs.is_empty() {
            return Ok(part);
        }
        let batch = decoder.flush()?;
        let times = super::join::event_times(&batch, shared.spec.time)?;
        let slot = self.arena()?.add(batch, seqs.len());
        part.pending = Vec::with_capacity(seqs.len());
        for (i, (&(chunk, seq), ts)) in seqs.iter().zip(times).enumerate() {
            let ts = ts.unwrap_or_default();
            let ord = if shared.spec.event_time { ts } else { 0 };
            if let Some(c) = part.chunks.get_mut(chunk) {
                c.last = c.last.max((ord, seq));
            }
            part.pending.push(RowAt {
                at: At {
                    slot,
                    row: i as u32,
                },
                ord,
                ts,
                seq,
            });
        }
        Ok(part)
    }

    /// Adds the rows of `batch` to their partitions' waiting rows (or sets them aside as late);
    /// returns the partitions touched.
    fn admit(&mut self, input: &RecordBatch) -> Result<Vec<Part>> {
        let shared = Arc::clone(&self.shared);
        let spec = &shared.spec;
        let narrowed;
        let batch = match &shared.columns {
            Some(columns) => {
                narrowed = input.project(columns)?;
                &narrowed
            }
            None => input,
        };
        let n = batch.num_rows();
        let partition: Vec<ArrayRef> = spec
            .partition
            .iter()
            .map(|&c| Arc::clone(batch.column(c)))
            .collect();
        let mut groups = std::mem::take(&mut self.groups);
        keygroup::key_groups(&partition, n, &mut groups)?;
        let times = super::join::event_times(batch, spec.time)?;
        let key_encoder = shared.keys.encoder_for_columns(&partition)?;
        let row_encoder = shared.rows.encoder(batch)?;
        let mut late_rows = Vec::new();
        let mut live = 0;
        // Rows by partition, in arrival order: (key group, where the partition key is in `buf`,
        // row).
        let mut order: Vec<(u16, usize, usize, usize)> = Vec::with_capacity(n);
        let mut buf = Vec::with_capacity(n * 16);
        for (i, &kg) in groups.iter().enumerate().take(n) {
            let late = match times[i] {
                None => true,
                Some(t) => spec.event_time && t < self.watermark,
            };
            if late {
                late_rows.push(i);
                continue;
            }
            let start = buf.len();
            buf.extend_from_slice(&[0; 4]);
            key_encoder.encode(i, &mut buf);
            let len = (buf.len() - start - 4) as u32;
            buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
            order.push((kg, start, buf.len(), i));
            live += 1;
        }
        self.groups = groups;
        if !late_rows.is_empty() {
            let text = rows_text(input, &late_rows)?;
            for (&i, row) in late_rows.iter().zip(text) {
                self.late.push(LateRow {
                    event_time: times[i].unwrap_or_default(),
                    watermark: self.watermark,
                    row,
                });
            }
        }
        if live == 0 {
            return Ok(Vec::new());
        }
        order.sort_by(|a, b| (a.0, &buf[a.1..a.2], a.3).cmp(&(b.0, &buf[b.1..b.2], b.3)));
        let slot = self.arena()?.add(batch.clone(), live);
        let mut parts: Vec<Part> = Vec::new();
        for (kg, start, end, i) in order {
            let key = &buf[start..end];
            if parts.last().is_none_or(|p| p.kg != kg || p.key != key) {
                let part = self.load(kg, key)?;
                parts.push(part);
            }
            let Some(part) = parts.last_mut() else {
                continue;
            };
            let ts = times[i].unwrap_or_default();
            let ord = if spec.event_time { ts } else { 0 };
            let seq = part.next_seq;
            part.next_seq += 1;
            match part.chunks.back_mut() {
                Some(c) if !c.stored => c.last = c.last.max((ord, seq)),
                _ => part.chunks.push_back(Chunk {
                    seq,
                    last: (ord, seq),
                    stored: false,
                }),
            }
            encode_framed(&row_encoder, i, &mut part.open);
            part.pending.push(RowAt {
                at: At {
                    slot,
                    row: i as u32,
                },
                ord,
                ts,
                seq,
            });
            part.dirty = true;
        }
        Ok(parts)
    }

    /// Releases rows the watermark passed (all of them in arrival order), matches them, expires
    /// attempts past their deadline, and emits what resolved.
    fn run(&mut self, mut parts: Vec<Part>) -> Result<Vec<ChangeBatch>> {
        let shared = Arc::clone(&self.shared);
        let spec = &shared.spec;
        let watermark = self.watermark;
        // Release.
        let mut todo: Vec<Range<u64>> = Vec::with_capacity(parts.len());
        for part in &mut parts {
            let from = part.done;
            if !part.pending.is_empty() {
                part.pending.sort_by_key(RowAt::key);
                let ready = if spec.event_time {
                    part.pending.partition_point(|r| r.ts < watermark)
                } else {
                    part.pending.len()
                };
                part.rows.extend(part.pending.drain(..ready));
                if ready > 0 {
                    part.dirty = true;
                }
            }
            part.done = part.end().saturating_sub(shared.lookahead).max(from);
            todo.push(from..part.done);
        }
        let mut emissions: Vec<Emission> = Vec::new();
        let longest = todo.iter().map(|r| r.end - r.start).max().unwrap_or(0);
        for k in 0..longest {
            let mut candidates: Vec<Candidate> = Vec::new();
            for (p, part) in parts.iter_mut().enumerate() {
                let g = todo[p].start + k;
                if g >= todo[p].end {
                    continue;
                }
                let Some(&row) = part.row(g) else { continue };
                // Attempts whose WITHIN this row passes stop.
                if let Some(within) = spec.within {
                    for a in part.attempts.iter_mut() {
                        if !a.threads.is_empty() && row.ts.saturating_sub(a.start_ts) >= within {
                            time_out(a, spec.timeout_rows);
                        }
                    }
                }
                let first = shared.program.anchored() && {
                    if part.first.is_none() {
                        part.first = Some(row.key());
                        part.dirty = true;
                    }
                    part.first == Some(row.key())
                };
                if row.key() >= part.start_from {
                    let pc = shared.program.entry(first);
                    part.attempts.push_back(Attempt {
                        start: g,
                        start_key: row.key(),
                        start_ts: row.ts,
                        threads: vec![Thread {
                            pc,
                            limit: shared.program.steps(pc).len() as u32,
                            path: Vec::new(),
                        }],
                        best: None,
                        timed_out: None,
                    });
                }
                for (ai, attempt) in part.attempts.iter().enumerate() {
                    for (ti, thread) in attempt.threads.iter().enumerate() {
                        let steps = shared.program.steps(thread.pc);
                        for step in &steps[..(thread.limit as usize).min(steps.len())] {
                            if let Step::Read { var, next } = *step {
                                candidates.push(Candidate {
                                    part: p,
                                    attempt: ai,
                                    thread: ti,
                                    var,
                                    next,
                                    row: g,
                                });
                            }
                        }
                    }
                }
            }
            let passed = self.conditions(&parts, &candidates)?;
            // New threads, in preference order: candidates come by partition, attempt and
            // thread, in that order.
            let mut built: Vec<(usize, usize, Thread)> = Vec::new();
            let mut group = (usize::MAX, usize::MAX);
            let mut pcs: Vec<u32> = Vec::new();
            for (c, ok) in candidates.iter().zip(&passed) {
                if !*ok {
                    continue;
                }
                if (c.part, c.attempt) != group {
                    group = (c.part, c.attempt);
                    pcs.clear();
                }
                if shared.dedup && pcs.contains(&c.next) {
                    continue;
                }
                pcs.push(c.next);
                let old = &parts[c.part].attempts[c.attempt].threads[c.thread];
                let mut path = Vec::with_capacity(old.path.len() + 1);
                path.extend_from_slice(&old.path);
                path.push((c.row, c.var));
                let limit = shared.program.steps(c.next).len() as u32;
                built.push((
                    c.part,
                    c.attempt,
                    Thread {
                        pc: c.next,
                        limit,
                        path,
                    },
                ));
            }
            let mut built = built.into_iter().peekable();
            for (p, part) in parts.iter_mut().enumerate() {
                if todo[p].start + k >= todo[p].end {
                    continue;
                }
                for (ai, a) in part.attempts.iter_mut().enumerate() {
                    a.threads.clear();
                    while let Some((_, _, t)) = built.next_if(|b| (b.0, b.1) == (p, ai)) {
                        a.threads.push(t);
                    }
                    settle(&shared.program, a);
                }
                resolve(&shared, p, part, &mut emissions);
            }
        }
        // Deadlines the watermark passed.
        if let (Some(within), true) = (spec.within, spec.event_time) {
            for (p, part) in parts.iter_mut().enumerate() {
                let mut expired = false;
                for a in part.attempts.iter_mut() {
                    if !a.threads.is_empty() && a.start_ts.saturating_add(within) <= watermark {
                        time_out(a, spec.timeout_rows);
                        expired = true;
                    }
                }
                if expired {
                    resolve(&shared, p, part, &mut emissions);
                }
            }
        }
        let out = self.emit(&parts, &emissions)?;
        for part in parts {
            self.store(part)?;
        }
        Ok(out)
    }

    /// Whether each candidate's variable accepts its row.
    fn conditions(&mut self, parts: &[Part], candidates: &[Candidate]) -> Result<Vec<bool>> {
        let shared = Arc::clone(&self.shared);
        let mut passed = vec![true; candidates.len()];
        let locators: Vec<&dyn Locate> = parts.iter().map(|p| p as &dyn Locate).collect();
        for (v, define) in shared.spec.defines.iter().enumerate() {
            let Some(define) = define else { continue };
            let which: Vec<usize> = (0..candidates.len())
                .filter(|&i| candidates[i].var as usize == v)
                .collect();
            if which.is_empty() {
                continue;
            }
            let contexts: Vec<Context<'_>> = which
                .iter()
                .map(|&i| {
                    let c = &candidates[i];
                    let part = &parts[c.part];
                    Context {
                        path: &part.attempts[c.attempt].threads[c.thread].path,
                        extra: Some((c.row, c.var)),
                        whole: &part.attempts[c.attempt].threads[c.thread].path,
                        match_number: part.match_number + 1,
                        partition: c.part,
                    }
                })
                .collect();
            let arena = self
                .arena
                .as_mut()
                .ok_or_else(|| EngineError::Internal("no arena".into()))?;
            let result = evaluate(define, &contexts, &locators, arena, &shared.spec.vars)?;
            for (&i, ok) in which.iter().zip(truths(&result)?) {
                passed[i] = ok;
            }
        }
        Ok(passed)
    }

    /// The output rows of `emissions`.
    fn emit(&mut self, parts: &[Part], emissions: &[Emission]) -> Result<Vec<ChangeBatch>> {
        if emissions.is_empty() {
            return Ok(Vec::new());
        }
        let shared = Arc::clone(&self.shared);
        let spec = &shared.spec;
        let locators: Vec<&dyn Locate> = parts.iter().map(|p| p as &dyn Locate).collect();
        let mut contexts: Vec<Context<'_>> = Vec::new();
        let mut rows: Vec<At> = Vec::new();
        let mut flags: Vec<bool> = Vec::new();
        for e in emissions {
            let part = &parts[e.part];
            let locate = |i: u64| part.locate(i).unwrap_or(At { slot: 0, row: 0 });
            match spec.rows {
                RowsPerMatch::One => {
                    contexts.push(Context {
                        path: &e.path,
                        extra: None,
                        whole: &e.path,
                        match_number: e.match_number,
                        partition: e.part,
                    });
                    rows.push(
                        e.path
                            .first()
                            .map_or(At { slot: 0, row: 0 }, |p| locate(p.0)),
                    );
                    flags.push(e.timed_out);
                }
                RowsPerMatch::All => {
                    for p in 0..e.path.len() {
                        contexts.push(Context {
                            path: &e.path[..=p],
                            extra: None,
                            whole: &e.path,
                            match_number: e.match_number,
                            partition: e.part,
                        });
                        rows.push(locate(e.path[p].0));
                    }
                }
            }
        }
        let arena = self
            .arena
            .as_mut()
            .ok_or_else(|| EngineError::Internal("no arena".into()))?;
        let mut columns: Vec<ArrayRef> = Vec::new();
        let leading: Vec<usize> = match spec.rows {
            RowsPerMatch::One => spec.partition.clone(),
            RowsPerMatch::All => (0..spec.input.fields().len()).collect(),
        };
        for c in leading {
            columns.push(arena.gather(c, &rows)?);
        }
        for m in &spec.measures {
            columns.push(evaluate(m, &contexts, &locators, arena, &spec.vars)?);
        }
        if spec.timeout_rows {
            columns.push(Arc::new(BooleanArray::from(flags)));
        }
        let columns = columns
            .into_iter()
            .zip(spec.output.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    Ok(datafusion::arrow::compute::cast(&c, f.data_type())?)
                }
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        let data = RecordBatch::try_new(Arc::clone(&spec.output), columns)?;
        let n = data.num_rows();
        Ok(vec![ChangeBatch {
            data,
            ops: vec![Op::Insert; n],
        }])
    }

    /// Drops rows no attempt needs, writes the partition's state and wake-up time, and keeps it
    /// in memory.
    fn store(&mut self, mut part: Part) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        let spec = &shared.spec;
        let first_needed = part
            .attempts
            .front()
            .map_or(part.done, |a| a.start)
            .saturating_sub(shared.max_prev);
        let mut dropped = false;
        while part.base < first_needed {
            let Some(row) = part.rows.pop_front() else {
                break;
            };
            part.base += 1;
            if let Some(arena) = self.arena.as_mut() {
                arena.release(row.at.slot);
            }
            dropped = true;
        }
        if dropped {
            self.drop_chunks(&mut part)?;
        }
        if spec.event_time {
            let release = part.pending.iter().map(|r| r.ts.saturating_add(1)).min();
            let deadline = spec.within.and_then(|w| {
                part.attempts
                    .iter()
                    .filter(|a| !a.threads.is_empty())
                    .map(|a| a.start_ts.saturating_add(w))
                    .min()
            });
            let wake = match (release, deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if wake.is_some() && part.timer != wake {
                set_map_key(&mut self.scratch, part.kg, &part.key);
                if let Some(old) = part.timer {
                    self.timers_mem.remove(&(old, self.scratch.clone()));
                }
                if let Some(t) = wake {
                    self.timers_mem.insert((t, self.scratch.clone()));
                }
                part.timer = wake;
            }
        }
        let idle = part.pending.is_empty() && part.attempts.is_empty();
        if idle && part.rows.is_empty() && part.chunks.is_empty() && !shared.remembered {
            return self.free(part);
        }
        // Idle partitions beyond a bound leave memory; their state is in the tables.
        if idle && self.parts.len() >= MAX_IDLE_PARTITIONS {
            let tables = [&mut self.rows, &mut self.meta, &mut self.timers];
            persist(tables.map(Table::get_mut), &mut part)?;
            for row in part.rows.drain(..) {
                if let Some(arena) = self.arena.as_mut() {
                    arena.release(row.at.slot);
                }
            }
            return Ok(());
        }
        let changed = part.dirty || part.timer != part.stored_timer || !part.open.is_empty();
        if changed && !part.queued {
            set_map_key(&mut self.scratch, part.kg, &part.key);
            self.queued.push(self.scratch.clone());
            part.queued = true;
        }
        set_map_key(&mut self.scratch, part.kg, &part.key);
        self.parts.insert(self.scratch.clone(), part);
        Ok(())
    }

    /// Forgets a partition that keeps nothing: no rows, no open attempt, and no match number
    /// to continue. Its counters and wake-up time leave the tables and it leaves memory; a row
    /// that comes for it later starts it afresh, as if it were new.
    fn free(&mut self, part: Part) -> Result<()> {
        set_map_key(&mut self.scratch, part.kg, &part.key);
        for t in [part.timer, part.stored_timer].into_iter().flatten() {
            self.timers_mem.remove(&(t, self.scratch.clone()));
        }
        if let Some(t) = part.stored_timer {
            self.timers
                .get_mut()?
                .delete(part.kg, &timer_key(t, &part.key));
        }
        if part.stored_meta {
            self.meta.get_mut()?.delete(part.kg, &part.key);
        }
        Ok(())
    }

    /// Deletes the chunks of `part` none of whose rows it keeps (released rows after its first
    /// needed one, and waiting rows, all come after the rows it dropped).
    fn drop_chunks(&mut self, part: &mut Part) -> Result<()> {
        let keep_from = match part.rows.front() {
            Some(r) => Some(r.key()),
            None => part.pending.iter().map(RowAt::key).min(),
        };
        while let Some(at) = part
            .chunks
            .iter()
            .position(|c| keep_from.is_none_or(|k| c.last < k))
        {
            let Some(chunk) = part.chunks.remove(at) else {
                break;
            };
            if chunk.stored {
                set_chunk_key(&mut self.scratch, &part.key, chunk.seq);
                self.rows.get_mut()?.delete(part.kg, &self.scratch);
            } else {
                part.open.clear();
            }
        }
        Ok(())
    }

    /// The partitions with a wake-up time at or before `watermark`, taken from the timers.
    fn due(&mut self, watermark: i64) -> Result<Vec<(u16, Vec<u8>)>> {
        if !self.timers_loaded {
            // After a restore: every stored timer, once.
            let timers = self.timers.get()?;
            for kg in self.key_groups.clone() {
                timers.scan(kg, &[], None, Direction::Forward, |k, _| {
                    let t = decode_i64(k)?;
                    let mut key = kg.to_be_bytes().to_vec();
                    key.extend_from_slice(&k[8..]);
                    self.timers_mem.insert((t, key));
                    Ok(ControlFlow::Continue(()))
                })?;
            }
            self.timers_loaded = true;
        }
        let mut due: Vec<(u16, Vec<u8>)> = Vec::new();
        while self
            .timers_mem
            .first()
            .is_some_and(|(t, _)| *t <= watermark)
        {
            let Some((t, key)) = self.timers_mem.pop_first() else {
                break;
            };
            let (kg, part_key) = key.split_at(2);
            let kg = u16::from_be_bytes([kg[0], kg[1]]);
            // A partition in memory whose stored wake-up time this is leaves the table's update
            // to its next write (which often stores a new time in its place).
            match self.parts.get_mut(key.as_slice()) {
                Some(part) if part.stored_timer == Some(t) => part.timer = None,
                Some(part) => {
                    part.timer = None;
                    self.timers.get_mut()?.delete(kg, &timer_key(t, part_key));
                }
                None => self.timers.get_mut()?.delete(kg, &timer_key(t, part_key)),
            }
            due.push((kg, part_key.to_vec()));
        }
        due.sort();
        due.dedup();
        Ok(due)
    }
}

/// Writes a partition's open chunk of rows, and its counters and wake-up time if they changed
/// since last written, into tables `r`, `m` and `i`.
fn persist(tables: [Result<&mut StateTable>; 3], part: &mut Part) -> Result<()> {
    let [rows, meta, timers] = tables;
    let (rows, meta, timers) = (rows?, meta?, timers?);
    if !part.open.is_empty() {
        if let Some(c) = part.chunks.back_mut()
            && !c.stored
        {
            let mut key = Vec::with_capacity(part.key.len() + 8);
            set_chunk_key(&mut key, &part.key, c.seq);
            rows.insert_new(part.kg, &key, &part.open);
            c.stored = true;
        }
        part.open.clear();
    }
    if part.dirty {
        meta.put(part.kg, &part.key, &part.meta());
        part.dirty = false;
        part.stored_meta = true;
    }
    if part.stored_timer != part.timer {
        if let Some(old) = part.stored_timer {
            timers.delete(part.kg, &timer_key(old, &part.key));
        }
        if let Some(t) = part.timer {
            timers.put(part.kg, &timer_key(t, &part.key), &[]);
        }
        part.stored_timer = part.timer;
    }
    part.queued = false;
    Ok(())
}

/// Checks that `spec`'s output has the columns its rows per match call for.
fn check_output(spec: &RecognizeSpec) -> Result<()> {
    let want = match spec.rows {
        RowsPerMatch::One => spec.partition.len() + spec.measures.len(),
        RowsPerMatch::All => spec.input.fields().len() + spec.measures.len(),
    } + usize::from(spec.timeout_rows);
    if spec.output.fields().len() != want || spec.defines.len() != spec.vars.len() {
        return Err(EngineError::Internal(format!(
            "MATCH_RECOGNIZE output of {} columns, expected {want}",
            spec.output.fields().len()
        )));
    }
    Ok(())
}

/// `spec` over only the input columns it reads, and those columns (`None`: all of them), so
/// that a partition's rows are stored and kept without the others. `ONE ROW PER MATCH` reads
/// the partition and order columns and the terms' columns; `ALL ROWS PER MATCH` emits every
/// column.
fn narrow(mut spec: RecognizeSpec) -> Result<(RecognizeSpec, Option<Vec<usize>>)> {
    if spec.rows == RowsPerMatch::All {
        return Ok((spec, None));
    }
    let terms = spec.defines.iter().flatten().chain(&spec.measures);
    let mut used: Vec<usize> = terms
        .flat_map(|c| &c.terms)
        .filter_map(|t| match t.base() {
            Term::Row { column, .. } => Some(*column),
            Term::Agg { column, .. } => *column,
            _ => None,
        })
        .chain(spec.partition.iter().copied())
        .chain([spec.time])
        .collect();
    used.sort_unstable();
    used.dedup();
    if used.len() == spec.input.fields().len() {
        return Ok((spec, None));
    }
    // Every column is in `used`: the search finds it.
    let at = |c: usize| used.binary_search(&c).unwrap_or_else(|i| i);
    spec.input = Arc::new(spec.input.project(&used)?);
    spec.time = at(spec.time);
    for c in &mut spec.partition {
        *c = at(*c);
    }
    let terms = spec.defines.iter_mut().flatten().chain(&mut spec.measures);
    for term in terms.flat_map(|c| &mut c.terms) {
        match term.base_mut() {
            Term::Row { column, .. }
            | Term::Agg {
                column: Some(column),
                ..
            } => *column = at(*column),
            _ => {}
        }
    }
    Ok((spec, Some(used)))
}

/// Idle partitions kept in memory before further ones are dropped after use.
const MAX_IDLE_PARTITIONS: usize = 100_000;

/// Ends an attempt's threads at its WITHIN deadline, keeping its preferred partial match for a
/// timeout row.
fn time_out(a: &mut Attempt, timeout_rows: bool) {
    if timeout_rows
        && a.best.is_none()
        && let Some(first) = a.threads.iter().find(|t| !t.path.is_empty())
    {
        a.timed_out = Some(first.path.clone());
    }
    a.threads.clear();
}

/// Records the preferred complete match among an attempt's new threads: the first thread whose
/// next steps include matching. Threads after it are less preferred and end; so do its own
/// steps after the match (it keeps the ones it prefers to matching now, a greedy quantifier's
/// next repetition).
fn settle(program: &Program, a: &mut Attempt) {
    for t in 0..a.threads.len() {
        let thread = &a.threads[t];
        let steps = program.steps(thread.pc);
        let steps = &steps[..(thread.limit as usize).min(steps.len())];
        let Some(m) = steps.iter().position(|s| *s == Step::Match) else {
            continue;
        };
        a.best = Some(thread.path.clone());
        a.threads.truncate(t + 1);
        if m == 0 {
            a.threads.pop();
        } else {
            a.threads[t].limit = m as u32;
        }
        return;
    }
}

/// Emits the attempts at the front of `part` that are resolved, in order, applying `AFTER
/// MATCH SKIP`.
fn resolve(shared: &Shared, p: usize, part: &mut Part, out: &mut Vec<Emission>) {
    while let Some(front) = part.attempts.front() {
        if front.start_key < part.start_from {
            part.attempts.pop_front();
            continue;
        }
        if !front.threads.is_empty() {
            break;
        }
        let Some(a) = part.attempts.pop_front() else {
            break;
        };
        if let Some(path) = a.best {
            part.match_number += 1;
            let (first, last) = match (path.first(), path.last()) {
                (Some(f), Some(l)) => (f.0, l.0),
                _ => (a.start, a.start),
            };
            let to = |index: Option<u64>| match index {
                Some(i) if i > a.start => part.row(i).map_or(part.after(a.start), |r| r.key()),
                _ => part.after(a.start),
            };
            part.start_from = match shared.spec.skip {
                Skip::PastLastRow => part.after(last),
                Skip::ToNextRow => part.after(first),
                Skip::ToFirst(v) => to(path.iter().find(|r| r.1 == v).map(|r| r.0)),
                Skip::ToLast(v) => to(path.iter().rev().find(|r| r.1 == v).map(|r| r.0)),
            };
            part.dirty = true;
            out.push(Emission {
                part: p,
                path,
                match_number: part.match_number,
                timed_out: false,
            });
        } else if let Some(path) = a.timed_out {
            part.match_number += 1;
            part.start_from = part.start_from.max(part.after(a.start));
            part.dirty = true;
            out.push(Emission {
                part: p,
                path,
                match_number: part.match_number,
                timed_out: true,
            });
        } else {
            part.start_from = part.start_from.max(part.after(a.start));
            part.dirty = true;
        }
    }
}

impl Operator for Recognize {
    fn name(&self) -> &'static str {
        "MatchRecognize"
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.shared.spec.output)
    }

    fn fork(&self) -> Result<Box<dyn Operator>> {
        Ok(Box::new(Recognize::unstarted(Arc::clone(&self.shared))))
    }

    fn restore(&mut self, scope: &StateScope) -> Result<()> {
        // No cache: rows and wake-up times are read only by scans (of a partition first touched,
        // and of every wake-up time after a restore), counters only when a partition not in
        // memory is first touched; a cache would mostly keep the counters of partitions done
        // with (it gets every write once committed), at a search of it per write.
        self.rows.open(scope, b'r', 0);
        self.meta.open(scope, b'm', 0);
        self.timers.open(scope, b'i', 0);
        self.key_groups = scope.key_groups.clone();
        self.parts.clear();
        self.timers_mem.clear();
        self.timers_loaded = false;
        self.queued.clear();
        self.arena = None;
        Ok(())
    }

    fn process(&mut self, _input: usize, batch: ChangeBatch) -> Result<Vec<ChangeBatch>> {
        if batch
            .ops
            .iter()
            .any(|op| !op.is_add() || *op == Op::UpdateAfter)
        {
            return Err(EngineError::Internal(
                "MATCH_RECOGNIZE input that is not append-only".into(),
            ));
        }
        let parts = self.admit(&batch.data)?;
        if self.shared.spec.event_time {
            // Rows wait for the watermark: only their wake-up times are written.
            for part in parts {
                self.store(part)?;
            }
            return Ok(Vec::new());
        }
        self.run(parts)
    }

    fn on_watermark(&mut self, _input: usize, watermark: i64) -> Result<Vec<ChangeBatch>> {
        if watermark <= self.watermark || !self.shared.spec.event_time {
            self.watermark = self.watermark.max(watermark);
            return Ok(Vec::new());
        }
        self.watermark = watermark;
        let due = self.due(watermark)?;
        let mut parts = Vec::with_capacity(due.len());
        for (kg, key) in due {
            parts.push(self.load(kg, &key)?);
        }
        self.run(parts)
    }

    /// A match is emitted by the watermark that ends it, and every open attempt started less
    /// than `within` before the watermark: nothing emitted later is older than that.
    fn output_watermark(&self, watermark: i64) -> i64 {
        match self.shared.spec.within {
            Some(within) if self.shared.spec.event_time => watermark.saturating_sub(within),
            _ => watermark,
        }
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
        for key in self.queued.drain(..) {
            if let Some(part) = self.parts.get_mut(&key) {
                let tables = [&mut self.rows, &mut self.meta, &mut self.timers];
                persist(tables.map(Table::get_mut), part)?;
            }
        }
        self.rows.checkpoint(epoch, batch)?;
        self.meta.checkpoint(epoch, batch)?;
        self.timers.checkpoint(epoch, batch)
    }

    fn state_bytes(&self) -> usize {
        self.rows.bytes() + self.meta.bytes() + self.timers.bytes()
    }

    fn describe(&self) -> String {
        let spec = &self.shared.spec;
        let (partition, time) = &self.shared.shown;
        let partition: Vec<String> = partition.iter().map(|c| format!("#{c}")).collect();
        let within = spec
            .within
            .map(|w| format!(" WITHIN {} s", w as f64 / 1e6))
            .unwrap_or_default();
        let var = |v: &u16| spec.vars.get(*v as usize).cloned().unwrap_or_default();
        let skip = match &spec.skip {
            Skip::PastLastRow => "past last row".to_string(),
            Skip::ToNextRow => "to next row".to_string(),
            Skip::ToFirst(v) => format!("to first {}", var(v)),
            Skip::ToLast(v) => format!("to last {}", var(v)),
        };
        format!(
            "MatchRecognize: partition by [{}] order by #{}{} pattern ({}){within}; {}, after \
             match skip {skip}{}; state: each partition's rows from its oldest open match, and \
             rows waiting for the watermark, stored per partition and epoch",
            partition.join(", "),
            time,
            if spec.event_time {
                " (event time)"
            } else {
                " (arrival order)"
            },
            spec.pattern.sql(&spec.vars),
            match spec.rows {
                RowsPerMatch::One => "one row per match",
                RowsPerMatch::All => "all rows per match",
            },
            if spec.timeout_rows {
                ", timeout rows"
            } else {
                ""
            },
        )
    }
}

#[cfg(test)]
mod tests;
