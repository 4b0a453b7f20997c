//! Regular equi-join of two changelog inputs, maintained under inserts, updates and deletes on
//! both sides: `INNER`, `LEFT`, `RIGHT` and `FULL OUTER` joins, and the semi and anti joins that
//! `IN`/`EXISTS`/`NOT EXISTS` subqueries become.
//!
//! **Inputs.** Input 0 is the left side, input 1 the right; both arrive hash-exchanged on their
//! key columns, so rows with equal keys meet in one instance and one key group. A side's rows
//! may carry extra trailing columns (keys the planner computed from expressions); only the
//! first `width` columns are the side's own, stored and emitted. Rows whose key has a NULL never
//! match (unless the join compares keys with `IS NOT DISTINCT FROM`): they are not stored, and
//! an outer or anti join passes them through as unmatched.
//!
//! **Semantics.** A row change on one side is joined with the other side's current rows of the
//! same key that pass the residual condition (`ON a.k = b.k AND a.x < b.y`), each match as many
//! times as the stored row occurs; an update is its retraction followed by its insertion. For a
//! side whose unmatched rows appear in the output (the preserved side of an outer join; the
//! output side of a semi or anti join) every stored row keeps its **degree**, the number of
//! matching rows on the other side: when a change on the other side moves a row's degree
//! between 0 and more, the row's NULL-padded output is retracted or restored (outer), or the
//! row itself enters or leaves the output (semi, anti). This is RisingWave's and Flink's
//! regular join; NOT IN's NULL semantics are the planner's business (it becomes an anti join
//! whose condition treats a NULL comparison as a match).
//!
//! **State.** One [`StateTable`] per side under the operator's prefix (`l` and `r`), keyed by
//! key group, then the join key (length-prefixed, so a prefix scan finds a key's rows) and the
//! row's encoding ([`RowCodec`], ours and stable); the value is the row's count and degree. The
//! tables keep a bounded cache over RocksDB, so state may be far larger than memory, and nothing
//! is read back at restart: a key's rows are read when a change with that key arrives. State is
//! unbounded (as in Flink without a state TTL): every row stays until deleted, unless the join
//! has a state TTL ([`HashJoin::with_state_ttl`]).
//!
//! **Append-only sides.** A side the planner knows only inserts into (a file, a generator, an
//! append-only Kafka table; see [`HashJoin::with_append_only`]) never retracts a row, so its
//! rows need no count: each is stored under its own key, the join key, then a *sequence* (the
//! epoch it was written after and its number within it, unique across restarts and rescaling
//! since every instance writes only its own key groups), then the row. Storing a row is then a
//! blind write, with no read of its current count: RisingWave gives such rows a row id for the
//! same reason. The value keeps the count (1) and degree as on other sides. An append-only side
//! that keeps no degree (and has no state TTL) goes further: an epoch's rows of one join key
//! are one entry, keyed by the sequence of its first row, whose value is the rows one after
//! another, each after its length (u32, little endian). Nexmark q4 stores 4.6M bids on about
//! 300k auctions: one RocksDB write per key and epoch instead of per row.
//!
//! **Emission.** Every change is emitted as it is processed (emit on update); there is no
//! watermark logic, nothing is late, and the output watermark is the smaller of the inputs'.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, new_null_array};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatchOptions;
use datafusion::physical_plan::PhysicalExpr;

use super::{Operator, StateScope};
use crate::changelog::{ChangeBatch, Op};
use crate::codec::{RowCodec, framed_rows};
use crate::keygroup;
use crate::state::StateBatch;
use crate::state::table::{Direction, StateTable};
use crate::{EngineError, Result};

/// Interval joins: time-bounded equi-joins of append-only inputs.
pub mod interval;
/// `NOT IN` over a subquery: the null-aware anti join.
pub mod not_in;
/// Temporal joins: each probe row with the version valid at its time (`FOR SYSTEM_TIME AS OF`).
pub mod temporal;

/// Which rows a join emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
    /// Left rows with at least one match.
    LeftSemi,
    /// Left rows without a match.
    LeftAnti,
    RightSemi,
    RightAnti,
}

impl JoinKind {
    /// The output is pairs of rows (with NULL padding for outer joins), not one side's rows.
    fn pairs(self) -> bool {
        matches!(
            self,
            JoinKind::Inner | JoinKind::Left | JoinKind::Right | JoinKind::Full
        )
    }

    /// Side `s`'s unmatched rows appear NULL-padded (outer joins).
    fn padded(self, s: usize) -> bool {
        match self {
            JoinKind::Left => s == 0,
            JoinKind::Right => s == 1,
            JoinKind::Full => true,
            _ => false,
        }
    }

    /// The side a semi or anti join emits, and whether it emits rows with matches (semi).
    fn filtered(self) -> Option<(usize, bool)> {
        match self {
            JoinKind::LeftSemi => Some((0, true)),
            JoinKind::LeftAnti => Some((0, false)),
            JoinKind::RightSemi => Some((1, true)),
            JoinKind::RightAnti => Some((1, false)),
            _ => None,
        }
    }

    /// Side `s` keeps each row's degree.
    fn tracks_degree(self, s: usize) -> bool {
        self.padded(s) || self.filtered().is_some_and(|(side, _)| side == s)
    }

    fn sql(self) -> &'static str {
        match self {
            JoinKind::Inner => "Inner",
            JoinKind::Left => "Left",
            JoinKind::Right => "Right",
            JoinKind::Full => "Full",
            JoinKind::LeftSemi => "LeftSemi",
            JoinKind::LeftAnti => "LeftAnti",
            JoinKind::RightSemi => "RightSemi",
            JoinKind::RightAnti => "RightAnti",
        }
    }
}

/// One input of a join.
#[derive(Debug, Clone)]
pub struct JoinSide {
    /// The input's schema (own columns, then any computed key columns).
    pub schema: SchemaRef,
    /// Its join key columns, pairwise of equal types with the other side's.
    pub keys: Vec<usize>,
    /// How many leading columns are the side's own.
    pub width: usize,
}

/// A side as the operator uses it.
struct Side {
    spec: JoinSide,
    /// Codec of the side's own columns, all nullable (NULL padding decodes through it).
    codec: RowCodec,
    /// An encoded row of NULLs, for padding.
    null_row: Vec<u8>,
}

impl Side {
    fn try_new(spec: JoinSide) -> Result<Side> {
        if spec.width > spec.schema.fields().len()
            || spec.keys.iter().any(|&k| k >= spec.schema.fields().len())
        {
            return Err(EngineError::Internal(
                "join side columns out of range".into(),
            ));
        }
        let own: Vec<Field> = spec.schema.fields()[..spec.width]
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        let codec = RowCodec::try_new(Arc::new(Schema::new(own)))?;
        let nulls: Vec<ArrayRef> = codec
            .schema()
            .fields()
            .iter()
            .map(|f| new_null_array(f.data_type(), 1))
            .collect();
        let mut null_row = Vec::new();
        codec.encoder_for_columns(&nulls)?.encode(0, &mut null_row);
        Ok(Side {
            spec,
            codec,
            null_row,
        })
    }
}

/// A stored row of the other side that matches a key.
struct Match {
    /// Its key in the state table (after the key group).
    key: Vec<u8>,
    /// Where the row's encoding starts in `key`: after the join key, and after the sequence on
    /// an append-only side.
    row_at: usize,
    count: i64,
    degree: i64,
    /// Its degree changed in this batch.
    dirty: bool,
}

impl Match {
    /// The row's encoding.
    fn row(&self) -> &[u8] {
        self.key.get(self.row_at..).unwrap_or_default()
    }
}

/// A row's join key as stored: its length (u32, big endian), then its [`RowCodec`] encoding.
type JoinKey = Vec<u8>;

/// One byte string per row of a batch, all in one buffer (no allocation per row): the rows'
/// join keys or their own columns' encodings. A row may have none (a NULL join key, which
/// matches nothing); indexing it gives the empty string.
#[derive(Debug, Default)]
pub(super) struct Encoded {
    bytes: Vec<u8>,
    /// The end of each row's bytes in `bytes`.
    ends: Vec<usize>,
    /// Rows without a value (empty while every row has one).
    absent: Vec<bool>,
}

impl Encoded {
    fn with_capacity(rows: usize, bytes: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(rows),
            absent: Vec::new(),
        }
    }

    /// Ends the current row (its bytes are those appended since the last row ended).
    fn end_row(&mut self) {
        self.ends.push(self.bytes.len());
        if !self.absent.is_empty() {
            self.absent.push(false);
        }
    }

    /// Appends a row without a value.
    fn push_absent(&mut self) {
        if self.absent.is_empty() {
            self.absent.resize(self.ends.len(), false);
        }
        self.ends.push(self.bytes.len());
        self.absent.push(true);
    }

    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Row `i`'s bytes (`None`: it has no value, or is past the end).
    pub(super) fn get(&self, i: usize) -> Option<&[u8]> {
        if self.absent.get(i).copied().unwrap_or(false) {
            return None;
        }
        let start = match i {
            0 => 0,
            _ => *self.ends.get(i - 1)?,
        };
        self.bytes.get(start..*self.ends.get(i)?)
    }
}

impl std::ops::Index<usize> for Encoded {
    type Output = [u8];

    fn index(&self, i: usize) -> &[u8] {
        self.get(i).unwrap_or_default()
    }
}

/// Bytes of the sequence between the join key and the row on an append-only side: the epoch
/// (u64) and the number within it (u32), big endian.
const SEQUENCE_BYTES: usize = 12;

/// The stored rows of the other side with one (key group, join key) of a batch.
type KeyMatches = (u16, Vec<Match>);

/// Where an output row's columns of one side come from.
#[derive(Clone, Copy)]
enum Part {
    /// Row `i` of the input batch.
    Input(usize),
    /// Match `m` of key `k` of this batch.
    Stored(usize, usize),
    Null,
}

fn value(count: i64, degree: i64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&count.to_le_bytes());
    v[8..].copy_from_slice(&degree.to_le_bytes());
    v
}

fn parse_value(bytes: &[u8]) -> Result<(i64, i64)> {
    let fixed = |r: std::ops::Range<usize>| -> Result<i64> {
        let b: [u8; 8] = bytes
            .get(r)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| EngineError::Corrupt("join state value".into()))?;
        Ok(i64::from_le_bytes(b))
    };
    Ok((fixed(0..8)?, fixed(8..16)?))
}

/// Encodes each row's join key (none: it has a NULL and matches nothing), a length then the
/// key, and its own columns, and sets `groups` to each row's key group.
fn encode(
    side: &Side,
    key_codec: &RowCodec,
    null_equal: bool,
    batch: &RecordBatch,
    groups: &mut Vec<u16>,
) -> Result<(Encoded, Encoded)> {
    let n = batch.num_rows();
    let keys: Vec<ArrayRef> = side
        .spec
        .keys
        .iter()
        .map(|&k| Arc::clone(batch.column(k)))
        .collect();
    keygroup::key_groups(&keys, n, groups)?;
    let key_encoder = key_codec.encoder_for_columns(&keys)?;
    let mut out_keys = Encoded::with_capacity(n, n * 16);
    for i in 0..n {
        if !null_equal && keys.iter().any(|k| k.is_null(i)) {
            out_keys.push_absent();
            continue;
        }
        let start = out_keys.bytes.len();
        out_keys.bytes.extend_from_slice(&[0; 4]);
        key_encoder.encode(i, &mut out_keys.bytes);
        let len = (out_keys.bytes.len() - start - 4) as u32;
        out_keys.bytes[start..start + 4].copy_from_slice(&len.to_be_bytes());
        out_keys.end_row();
    }
    let own = &batch.columns()[..side.spec.width];
    let encoder = side.codec.encoder_for_columns(own)?;
    let mut rows = Encoded::with_capacity(n, n * 32);
    for i in 0..n {
        encoder.encode(i, &mut rows.bytes);
        rows.end_row();
    }
    Ok((out_keys, rows))
}

/// The codec of a join's key columns (`sides`' key types, which must be pairwise equal).
fn key_codec(left: &JoinSide, right: &JoinSide) -> Result<RowCodec> {
    if left.keys.len() != right.keys.len() {
        return Err(EngineError::Internal(
            "join sides have different key counts".into(),
        ));
    }
    for (&l, &r) in left.keys.iter().zip(&right.keys) {
        let (lt, rt) = (
            left.schema.field(l).data_type(),
            right.schema.field(r).data_type(),
        );
        if lt != rt {
            return Err(EngineError::Internal(format!(
                "join key types differ: {lt} and {rt}"
            )));
        }
    }
    let key_fields: Vec<Field> = left
        .keys
        .iter()
        .map(|&k| left.schema.field(k).clone().with_nullable(true))
        .collect();
    RowCodec::try_new(Arc::new(Schema::new(key_fields)))
}

/// The length of a stored, length-prefixed join key at the start of `key` (its u32 big-endian
/// length, then the encoding).
fn key_len(key: &[u8]) -> usize {
    4 + key
        .get(..4)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// Each row's value of timestamp column `column`, in microseconds (`None`: NULL).
pub(crate) fn event_times(batch: &RecordBatch, column: usize) -> Result<Vec<Option<i64>>> {
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType};
    let micros = cast(
        batch.column(column),
        &DataType::Timestamp(TimeUnit::Microsecond, None),
    )?;
    let micros = micros.as_primitive::<TimestampMicrosecondType>();
    Ok((0..micros.len())
        .map(|i| micros.is_valid(i).then(|| micros.value(i)))
        .collect())
}

/// Both sides of a join that emits left's own columns then right's, checked against `schema`,
/// and the codec of their keys.
fn pair_sides(
    left: JoinSide,
    right: JoinSide,
    schema: &SchemaRef,
) -> Result<([Arc<Side>; 2], Arc<RowCodec>)> {
    if schema.fields().len() != left.width + right.width {
        return Err(EngineError::Internal(format!(
            "join output has {} columns, its inputs give {}",
            schema.fields().len(),
            left.width + right.width
        )));
    }
    let codec = key_codec(&left, &right)?;
    Ok((
        [
            Arc::new(Side::try_new(left)?),
            Arc::new(Side::try_new(right)?),
        ],
        Arc::new(codec),
    ))
}

/// A side's key columns for EXPLAIN: `#1, #3`.
fn keys_text(side: &Side) -> String {
    side.spec
        .keys
        .iter()
        .map(|k| format!("#{k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether each pair (a row of side `s`, a row of the other side, both in their side's
/// [`RowCodec`] encoding) passes `filter`, a condition over the left side's own columns followed
/// by the right side's.
fn residual(
    filter: &Arc<dyn PhysicalExpr>,
    sides: &[Arc<Side>; 2],
    s: usize,
    operator: &str,
    pairs: &[(&[u8], &[u8])],
) -> Result<Vec<bool>> {
    let total = pairs.len();
    if total == 0 {
        return Ok(Vec::new());
    }
    let mut own = sides[s].codec.decoder(None, total);
    let mut other = sides[1 - s].codec.decoder(None, total);
    for (a, b) in pairs {
        own.push(a)?;
        other.push(b)?;
    }
    let (own, other) = (own.flush()?, other.flush()?);
    let (left, right) = if s == 0 { (own, other) } else { (other, own) };
    let mut fields: Vec<Arc<Field>> = left.schema().fields().iter().cloned().collect();
    fields.extend(right.schema().fields().iter().cloned());
    let mut columns = left.columns().to_vec();
    columns.extend(right.columns().iter().cloned());
    let candidates = RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(total)),
    )?;
    let values = filter
        .evaluate(&candidates)
        .and_then(|v| v.into_array(total))
        .map_err(|e| EngineError::Data {
            operator: operator.into(),
            message: e.to_string(),
        })?;
    let values = values
        .as_boolean_opt()
        .ok_or_else(|| EngineError::Internal("join condition is not boolean".into()))?;
    Ok((0..total)
        .map(|i| values.is_valid(i) && values.value(i))
        .collect())
}

/// The regular streaming join; see the module documentation.
pub struct HashJoin {
    kind: JoinKind,
    sides: [Arc<Side>; 2],
    /// Codec of the key columns (left's types, nullable).
    key_codec: Arc<RowCodec>,
    /// NULL keys match each other (`IS NOT DISTINCT FROM`).
    null_equal: bool,
    /// The residual condition over the left side's own columns followed by the right side's.
    filter: Option<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
    /// Per side, once restored.
    tables: Option<[StateTable; 2]>,
    groups: Vec<u16>,
    /// The rest of a batch whose output was over [`OUTPUT_BUDGET`], with its input.
    pending: Option<(usize, ChangeBatch)>,
    /// Flink's `table.exec.state.ttl` (see [`HashJoin::with_state_ttl`]).
    ttl: Option<Duration>,
    /// The time in seconds, when a test sets it; the system clock otherwise.
    clock: Option<u64>,
    /// Per side: it only inserts, and its rows are stored with a sequence, not a count (see the
    /// module documentation).
    append_only: [bool; 2],
    /// The sequence of the next row stored on an append-only side: the epoch this instance last
    /// checkpointed (the job's committed one after a restore) and the rows stored since.
    sequence: (u64, u32),
    /// Per side that stores rows in chunks: this epoch's chunk of each (key group, join key),
    /// as its key in the side's table.
    chunks: [hashbrown::HashMap<(u16, JoinKey), Vec<u8>, FastHash>; 2],
    /// The rows of one key that a batch appends to its chunk, each framed, kept to spare an
    /// allocation per batch.
    framed: Vec<u8>,
}

/// Maps keyed by join keys are looked up once per row or per distinct key of a batch.
type FastHash = foldhash::fast::RandomState;

/// A (key group, join key) of [`HashJoin::chunks`], borrowed: it hashes as the owned pair does.
#[derive(Hash)]
struct KeyRef<'a>(u16, &'a [u8]);

impl hashbrown::Equivalent<(u16, JoinKey)> for KeyRef<'_> {
    fn equivalent(&self, key: &(u16, JoinKey)) -> bool {
        self.0 == key.0 && self.1 == key.1.as_slice()
    }
}

/// State entries a join with a state TTL visits per table at each checkpoint to delete the
/// expired ones: at 100 ms barriers, a pass over 1M entries per instance takes 25 s.
const SWEEP_BUDGET: usize = 4096;

/// Seconds since the Unix epoch: the write times of a join's entries under a state TTL, which
/// survive restarts.
fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A side's entry `key`: its count and degree (see [`value`]), unless it is absent or expired
/// (`now`: the time in seconds, `None` without a state TTL).
fn read_entry(
    table: &mut StateTable,
    kg: u16,
    key: &[u8],
    now: Option<u64>,
) -> Result<Option<(i64, i64)>> {
    let stored = match now {
        Some(now) => table.get_at(kg, key, now)?,
        None => table.get(kg, key)?,
    };
    stored.map(parse_value).transpose()
}

/// Writes a side's entry `key` (with its write time `now` under a state TTL).
fn write_entry(
    table: &mut StateTable,
    kg: u16,
    key: &[u8],
    count: i64,
    degree: i64,
    now: Option<u64>,
) {
    match now {
        Some(now) => table.put_at(kg, key, &value(count, degree), now),
        None => table.put(kg, key, &value(count, degree)),
    }
}

/// Candidate pairs a join evaluates and emits for one part of a batch: a batch whose rows meet
/// more is processed in parts (see [`Operator::resume`]).
const OUTPUT_BUDGET: usize = 64 * 1024;

/// Where to cut a batch whose rows meet `weights` candidates each so that the first part stays
/// within [`OUTPUT_BUDGET`] (at least one row, and never between an update's two rows); `None`
/// when the whole batch does.
fn cut(weights: impl Iterator<Item = usize>, ops: &[Op]) -> Option<usize> {
    let mut total = 0usize;
    for (i, w) in weights.enumerate() {
        total += w;
        if total > OUTPUT_BUDGET {
            let mut end = i.max(1);
            if ops.get(end - 1) == Some(&Op::UpdateBefore) {
                // Within the budget without the update's first row; alone, with its second.
                end = if end > 1 { end - 1 } else { 2 };
            }
            return (end < ops.len()).then_some(end);
        }
    }
    None
}

impl HashJoin {
    /// A join of `left` and `right` emitting `schema` (left's own columns then right's for
    /// pair-producing kinds; one side's for semi and anti joins).
    pub fn try_new(
        kind: JoinKind,
        left: JoinSide,
        right: JoinSide,
        null_equal: bool,
        filter: Option<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    ) -> Result<HashJoin> {
        let key_codec = key_codec(&left, &right)?;
        let expected = match kind.filtered() {
            Some((s, _)) => [&left, &right][s].width,
            None => left.width + right.width,
        };
        if schema.fields().len() != expected {
            return Err(EngineError::Internal(format!(
                "join output has {} columns, its inputs give {expected}",
                schema.fields().len()
            )));
        }
        Ok(HashJoin {
            kind,
            sides: [
                Arc::new(Side::try_new(left)?),
                Arc::new(Side::try_new(right)?),
            ],
            key_codec: Arc::new(key_codec),
            null_equal,
            filter,
            schema,
            tables: None,
            groups: Vec::new(),
            pending: None,
            ttl: None,
            clock: None,
            append_only: [false; 2],
            sequence: (0, 0),
            chunks: Default::default(),
            framed: Vec::new(),
        })
    }

    /// Side `s` stores an epoch's rows of a key as one entry (see the module documentation):
    /// it only inserts, its rows keep no degree, and they do not expire one by one.
    fn chunked(&self, s: usize) -> bool {
        self.append_only[s] && !self.kind.tracks_degree(s) && self.ttl.is_none()
    }

    /// Marks the sides that only insert (`[left, right]`), as the planner knows them: their rows
    /// are stored without a count, so storing one reads nothing (see the module documentation).
    /// A retraction arriving on such a side fails the job.
    pub fn with_append_only(mut self, sides: [bool; 2]) -> Self {
        self.append_only = sides;
        self
    }

    /// Flink's state TTL (`table.exec.state.ttl`) for a regular join: a stored row that no
    /// change has written for `ttl` (its insertion, or a change of its degree) is forgotten, as
    /// in Flink: it no longer matches the other side's rows, and its own later retraction finds
    /// nothing to retract (the view keeps what the row produced). Expired rows are dropped when
    /// a read meets them, and by a sweep at each checkpoint over the rest (a few thousand
    /// entries per side each time), so rows whose key never comes back go too. Write times are
    /// wall-clock seconds, kept across restarts.
    pub fn with_state_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Makes the operator's clock read `seconds`, for tests of the state TTL.
    #[cfg(test)]
    pub(crate) fn set_clock(&mut self, seconds: u64) {
        self.clock = Some(seconds);
    }

    /// The time entries are written at and expire by, with a state TTL.
    fn now(&self) -> Option<u64> {
        self.ttl.map(|_| self.clock.unwrap_or_else(unix_seconds))
    }

    /// See [`encode`].
    fn encode(&mut self, s: usize, batch: &RecordBatch) -> Result<(Encoded, Encoded)> {
        encode(
            &self.sides[s],
            &self.key_codec,
            self.null_equal,
            batch,
            &mut self.groups,
        )
    }

    /// The stored rows of side `o` for each distinct (key group, key) of the batch, read once
    /// each, and each row's list among them (`None`: a NULL key).
    fn load(&mut self, o: usize, keys: &Encoded) -> Result<(Vec<Option<usize>>, Vec<KeyMatches>)> {
        let now = self.now();
        let chunked = self.chunked(o);
        let tables = self
            .tables
            .as_mut()
            .ok_or_else(|| EngineError::Internal("join used before restore".into()))?;
        // Each distinct (key group, key) of the batch, then its list. (Seeking them in key
        // order instead of batch order made q4's memtable seeks about twice as costly.)
        let mut index: HashMap<(u16, &[u8]), usize, FastHash> = HashMap::default();
        let mut distinct: Vec<(u16, &[u8])> = Vec::new();
        let mut slots = Vec::with_capacity(keys.len());
        for i in 0..keys.len() {
            slots.push(keys.get(i).map(|key| {
                let next = distinct.len();
                *index.entry((self.groups[i], key)).or_insert_with(|| {
                    distinct.push((self.groups[i], key));
                    next
                })
            }));
        }
        let mut lists: Vec<KeyMatches> = distinct.iter().map(|&(kg, _)| (kg, Vec::new())).collect();
        let table = &tables[o];
        let mut scans = table.scans();
        let mut expired = Vec::new();
        let sequence = if self.append_only[o] {
            SEQUENCE_BYTES
        } else {
            0
        };
        for (d, &(kg, key)) in distinct.iter().enumerate() {
            let list = &mut lists[d].1;
            let row_at = key.len() + sequence;
            scans.scan_prefix(kg, key, Direction::Forward, |k, v| {
                let v = match now {
                    Some(now) => match table.unexpired(v, now)? {
                        Some(v) => v,
                        None => {
                            expired.push((kg, k.to_vec()));
                            return Ok(ControlFlow::Continue(()));
                        }
                    },
                    None => v,
                };
                if chunked {
                    for row in framed_rows(v) {
                        list.push(Match {
                            key: row?.to_vec(),
                            row_at: 0,
                            count: 1,
                            degree: 0,
                            dirty: false,
                        });
                    }
                    return Ok(ControlFlow::Continue(()));
                }
                let (count, degree) = parse_value(v)?;
                list.push(Match {
                    key: k.to_vec(),
                    row_at,
                    count,
                    degree,
                    dirty: false,
                });
                Ok(ControlFlow::Continue(()))
            })?;
        }
        drop(scans);
        for (kg, k) in expired {
            tables[o].delete(kg, &k);
        }
        Ok((slots, lists))
    }

    /// Stores rows of side `s` in this epoch's chunks: `appends` holds (distinct key of the
    /// batch, row), and each key's rows go to its chunk in one append, in batch order.
    fn append_chunks(
        &mut self,
        s: usize,
        keys: &Encoded,
        rows: &Encoded,
        appends: &mut [(usize, usize)],
    ) -> Result<()> {
        let tables = self
            .tables
            .as_mut()
            .ok_or_else(|| EngineError::Internal("join used before restore".into()))?;
        // Stable: a key's rows keep their order.
        appends.sort_by_key(|&(k, _)| k);
        for run in appends.chunk_by(|a, b| a.0 == b.0) {
            let first = run[0].1;
            let (Some(join_key), kg) = (keys.get(first), self.groups[first]) else {
                continue;
            };
            self.framed.clear();
            for &(_, i) in run {
                self.framed
                    .extend_from_slice(&(rows[i].len() as u32).to_le_bytes());
                self.framed.extend_from_slice(&rows[i]);
            }
            let open = &mut self.chunks[s];
            if let Some(chunk) = open.get(&KeyRef(kg, join_key))
                && tables[s].append_dirty(kg, chunk, &self.framed)
            {
                continue;
            }
            let (epoch, n) = self.sequence;
            self.sequence.1 = n.checked_add(1).ok_or_else(|| {
                EngineError::Internal("more than 2^32 join rows in one epoch".into())
            })?;
            let mut key = Vec::with_capacity(join_key.len() + SEQUENCE_BYTES);
            key.extend_from_slice(join_key);
            key.extend_from_slice(&epoch.to_be_bytes());
            key.extend_from_slice(&n.to_be_bytes());
            tables[s].insert_new(kg, &key, &self.framed);
            open.insert((kg, join_key.to_vec()), key);
        }
        Ok(())
    }

    /// Whether each (row, match) candidate passes the residual condition, in row order and
    /// each row's matches in order; `None` without a condition.
    fn evaluate(
        &self,
        s: usize,
        rows: &Encoded,
        slots: &[Option<usize>],
        lists: &[Vec<Match>],
    ) -> Result<Option<Vec<bool>>> {
        let Some(filter) = &self.filter else {
            return Ok(None);
        };
        let mut pairs: Vec<(&[u8], &[u8])> = Vec::new();
        for (i, slot) in slots.iter().enumerate() {
            let Some(k) = slot else { continue };
            pairs.extend(lists[*k].iter().map(|m| (&rows[i], m.row())));
        }
        residual(filter, &self.sides, s, "HashJoin", &pairs).map(Some)
    }

    /// Builds the output batch from its rows' parts.
    fn output(
        &self,
        s: usize,
        rows: &Encoded,
        lists: &[Vec<Match>],
        out: &[(Op, Part, Part)],
    ) -> Result<Vec<ChangeBatch>> {
        if out.is_empty() {
            return Ok(Vec::new());
        }
        let o = 1 - s;
        let decode =
            |side: usize, pick: &dyn Fn(&(Op, Part, Part)) -> Part| -> Result<RecordBatch> {
                let mut d = self.sides[side].codec.decoder(None, out.len());
                for row in out {
                    match pick(row) {
                        Part::Input(i) => d.push(&rows[i])?,
                        Part::Stored(k, m) => d.push(lists[k][m].row())?,
                        Part::Null => d.push(&self.sides[side].null_row)?,
                    }
                }
                d.flush()
            };
        // Part 1 is always this batch's side, part 2 the other side.
        let columns: Vec<ArrayRef> = match self.kind.filtered() {
            Some((side, _)) if side == s => decode(s, &|r| r.1)?.columns().to_vec(),
            Some(_) => decode(o, &|r| r.2)?.columns().to_vec(),
            None => {
                let own = decode(s, &|r| r.1)?;
                let other = decode(o, &|r| r.2)?;
                let (left, right) = if s == 0 { (own, other) } else { (other, own) };
                let mut c = left.columns().to_vec();
                c.extend(right.columns().iter().cloned());
                c
            }
        };
        let data = RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(out.len())),
        )?;
        Ok(vec![ChangeBatch {
            data,
            ops: out.iter().map(|r| r.0).collect(),
        }])
    }
}

impl Operator for HashJoin {
    fn name(&self) -> &'static str {
        "HashJoin"
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn inputs(&self) -> usize {
        2
    }

    fn fork(&self) -> Result<Box<dyn Operator>> {
        Ok(Box::new(HashJoin {
            kind: self.kind,
            sides: self.sides.clone(),
            key_codec: Arc::clone(&self.key_codec),
            null_equal: self.null_equal,
            filter: self.filter.clone(),
            schema: Arc::clone(&self.schema),
            tables: None,
            groups: Vec::new(),
            pending: None,
            ttl: self.ttl,
            clock: self.clock,
            append_only: self.append_only,
            sequence: (0, 0),
            chunks: Default::default(),
            framed: Vec::new(),
        }))
    }

    fn restore(&mut self, scope: &StateScope) -> Result<()> {
        let ttl = self.ttl;
        // The join reads a key's rows with scans, which the cache of clean entries does not
        // serve: only point reads of a row's count (on a side that is not append-only) do. An
        // append-only side's table gets no cache, so its committed rows are not copied into one
        // only to be evicted.
        let append_only = self.append_only;
        let counted = append_only.iter().filter(|a| !**a).count().max(1);
        let table = |side: usize| {
            let cache = if append_only[side] {
                0
            } else {
                scope.cache_bytes / counted
            };
            let table = scope.table([b'l', b'r'][side], cache);
            match ttl {
                Some(ttl) => table.with_ttl(ttl.as_secs().max(1)),
                None => table,
            }
        };
        let tables = [table(0), table(1)];
        // Entries of the committed state were all written after earlier checkpoints, so a
        // sequence starting at the committed epoch is new.
        self.sequence = (tables[0].committed_epoch(), 0);
        self.tables = Some(tables);
        Ok(())
    }

    fn process(&mut self, input: usize, batch: ChangeBatch) -> Result<Vec<ChangeBatch>> {
        let s = input.min(1);
        let o = 1 - s;
        let kind = self.kind;
        let (keys, rows) = self.encode(s, &batch.data)?;
        let (slots, lists) = self.load(o, &keys)?;
        let (groups_of, mut lists): (Vec<u16>, Vec<Vec<Match>>) = lists.into_iter().unzip();
        let weights = slots.iter().map(|slot| {
            slot.map_or(1, |k| {
                lists[k]
                    .iter()
                    .map(|m| m.count.max(1) as usize)
                    .sum::<usize>()
                    .max(1)
            })
        });
        if let Some(end) = cut(weights, &batch.ops) {
            // Nothing was written yet: the first part is processed afresh (within the budget,
            // so it is not cut again), the rest later.
            let out = self.process(input, batch.slice(0, end))?;
            self.pending = Some((input, batch.slice(end, batch.num_rows() - end)));
            return Ok(out);
        }
        let passes = self.evaluate(s, &rows, &slots, &lists)?;
        let now = self.now();
        let chunked = self.chunked(s);
        let tables = self
            .tables
            .as_mut()
            .ok_or_else(|| EngineError::Internal("join used before restore".into()))?;
        let mut out: Vec<(Op, Part, Part)> = Vec::new();
        // On a side stored in chunks: (the key's list, row) of each row to store.
        let mut appends: Vec<(usize, usize)> = Vec::new();
        let mut candidate = 0usize;
        let mut key: Vec<u8> = Vec::new();
        for (i, &op) in batch.ops.iter().enumerate() {
            let (sign, out_op) = if op.is_add() {
                (1i64, Op::Insert)
            } else {
                (-1i64, Op::Delete)
            };
            let own = Part::Input(i);
            let Some(k) = slots[i] else {
                // A NULL key: matches nothing and is not stored.
                if kind.padded(s) {
                    out.push((out_op, own, Part::Null));
                }
                if kind.filtered() == Some((s, false)) {
                    out.push((out_op, own, Part::Null));
                }
                continue;
            };
            let mut degree = 0i64;
            for m in 0..lists[k].len() {
                let pass = passes.as_ref().is_none_or(|p| p[candidate + m]);
                if !pass {
                    continue;
                }
                let matched = &mut lists[k][m];
                degree += matched.count;
                if kind.pairs() {
                    for _ in 0..matched.count {
                        out.push((out_op, own, Part::Stored(k, m)));
                    }
                }
                if kind.tracks_degree(o) {
                    let old = matched.degree;
                    let new = old + sign;
                    matched.degree = new;
                    matched.dirty = true;
                    let change = match (old > 0, new > 0) {
                        (false, true) => Some(true),
                        (true, false) => Some(false),
                        _ => None,
                    };
                    if let Some(now_matched) = change {
                        // Outer: the padded row leaves when the first match comes. Semi: the
                        // row enters then. Anti: it leaves then.
                        let enters = match kind.filtered() {
                            Some((_, semi)) => now_matched == semi,
                            None => !now_matched,
                        };
                        let op = if enters { Op::Insert } else { Op::Delete };
                        let part = Part::Stored(k, m);
                        for _ in 0..matched.count {
                            out.push((op, Part::Null, part));
                        }
                    }
                }
            }
            candidate += lists[k].len();
            if kind.padded(s) && degree == 0 {
                out.push((out_op, own, Part::Null));
            }
            if let Some((side, semi)) = kind.filtered()
                && side == s
                && (degree > 0) == semi
            {
                out.push((out_op, own, Part::Null));
            }
            // The row's own entry: its count, and its degree as of now.
            key.clear();
            key.extend_from_slice(&keys[i]);
            let kg = self.groups[i];
            if self.append_only[s] {
                if sign < 0 {
                    return Err(EngineError::Internal(format!(
                        "a retraction on the append-only {} input of a join",
                        ["left", "right"][s]
                    )));
                }
                if chunked {
                    // Stored after the loop, with the batch's other rows of its key.
                    appends.push((k, i));
                    continue;
                }
                let (epoch, n) = self.sequence;
                key.extend_from_slice(&epoch.to_be_bytes());
                key.extend_from_slice(&n.to_be_bytes());
                self.sequence.1 = n.checked_add(1).ok_or_else(|| {
                    EngineError::Internal("more than 2^32 join rows in one epoch".into())
                })?;
                key.extend_from_slice(&rows[i]);
                let table = &mut tables[s];
                match now {
                    Some(now) => table.insert_new_at(kg, &key, &value(1, degree), now),
                    None => table.insert_new(kg, &key, &value(1, degree)),
                }
                continue;
            }
            key.extend_from_slice(&rows[i]);
            let count = read_entry(&mut tables[s], kg, &key, now)?.map_or(0, |(c, _)| c) + sign;
            if count > 0 {
                write_entry(&mut tables[s], kg, &key, count, degree, now);
            } else {
                tables[s].delete(kg, &key);
            }
        }
        // The other side's rows whose degree moved.
        for (kg, list) in groups_of.iter().zip(&lists) {
            for m in list.iter().filter(|m| m.dirty) {
                write_entry(&mut tables[o], *kg, &m.key, m.count, m.degree, now);
            }
        }
        self.append_chunks(s, &keys, &rows, &mut appends)?;
        self.output(s, &rows, &lists, &out)
    }

    fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    fn resume(&mut self) -> Result<Vec<ChangeBatch>> {
        match self.pending.take() {
            Some((input, batch)) => self.process(input, batch),
            None => Ok(Vec::new()),
        }
    }

    fn checkpoint(
        &mut self,
        epoch: u64,
        _scope: &StateScope,
        batch: &mut StateBatch,
    ) -> Result<()> {
        let now = self.now();
        if let Some(tables) = self.tables.as_mut() {
            for t in tables.iter_mut() {
                if let Some(now) = now {
                    t.sweep_expired(now, SWEEP_BUDGET)?;
                }
                t.checkpoint(epoch, batch);
            }
        }
        // The epoch's chunks are written: the next rows of their keys start new ones.
        for open in &mut self.chunks {
            open.clear();
        }
        self.sequence = (epoch, 0);
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
            "HashJoin: {} on left [{}] = right [{}]",
            self.kind.sql(),
            keys(&self.sides[0]),
            keys(&self.sides[1])
        );
        if self.null_equal {
            d.push_str(", NULLs equal");
        }
        match self.append_only {
            [true, true] => d.push_str(", both sides append-only"),
            [true, false] => d.push_str(", left append-only"),
            [false, true] => d.push_str(", right append-only"),
            [false, false] => {}
        }
        if self.chunked(0) || self.chunked(1) {
            d.push_str(" (rows stored per key and epoch)");
        }
        if let Some(f) = &self.filter {
            d.push_str(&format!(", filter {f}"));
        }
        match self.ttl {
            Some(ttl) => d.push_str(&format!(
                "; state: each side's rows by key, state TTL {} s",
                ttl.as_secs().max(1)
            )),
            None => d.push_str(
                "; state: each side's rows by key, unbounded (SET table.exec.state.ttl bounds it)",
            ),
        }
        d
    }
}

#[cfg(test)]
mod tests;
