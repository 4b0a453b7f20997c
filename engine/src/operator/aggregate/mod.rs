//! Incremental `GROUP BY` over changelog batches, with retractions.
//!
//! `Insert` and `UpdateAfter` rows add to their group, `Delete` and `UpdateBefore` rows take away
//! from it. A group exists while it holds at least one row (NULLs included); NULL is a group key
//! like any other. Aggregates follow Postgres: NULL inputs are ignored, SUM/AVG/MIN/MAX over no
//! values are NULL, COUNT is 0. Without group columns (a global aggregate) there is always exactly
//! one row: [`Operator::start`] inserts it and later batches only ever update it.
//!
//! **Emission.** Each input batch yields at most one output batch: the net change of every group it
//! touched, in order of first touch. A new group is an `Insert`, a vanished group a `Delete` of its
//! old row, a changed one an `UpdateBefore`/`UpdateAfter` pair; a group whose result did not change
//! emits nothing. There is no watermark and nothing is late: every row counts, whenever it comes.
//!
//! **State.** Groups live in slots of the group table ([`groups`]), found through a hash index
//! on their key encoded as a sorted row ([`crate::state::sortrows`]: order preserving, so it
//! also decodes back into the output's key columns). Each aggregate keeps its state
//! column-wise, one vector indexed by slot ([`accumulator`]). A batch finds every row's slot
//! once, takes the touched groups' results before it, updates each aggregate with one loop over
//! the batch and computes results again for the touched groups only; groups are updated in
//! place, never moved. MIN, MAX and
//! COUNT(DISTINCT) keep a multiset of values per group, so a retracted minimum falls back to the
//! next one: for fixed-width types (numbers, decimals, dates, times, booleans) each value is its
//! sorted-row encoding read as one big-endian `u128`, for other types the encoding's bytes. Over an
//! append-only input ([`HashAggregate::with_append_only_input`]) MIN and MAX keep only the current
//! extreme in that multiset, since nothing can retract it. Integer and
//! decimal sums are `i128` (wrapping, hence exact whenever the final sum fits); float sums keep
//! NaN and infinities as counts, so retracting them restores a finite sum.
//!
//! **Storage.** Groups are stored in a [`StateTable`] under their key group and key. At a
//! checkpoint each group changed since the last one is written (or deleted if gone) straight
//! into the epoch's write batch ([`StateTable::write_behind`]), in key order, which RocksDB
//! inserts into its memtable much faster than random order. A failed [`Operator::process`]
//! leaves the state undefined: the job must restart from its last checkpoint.
//!
//! **Memory.** A `GROUP BY` keeps in memory only the groups it has room for: the slots are the
//! cache. Nothing is read at restore; a batch reads the groups of its rows that memory does not
//! hold with one batched read (none at all while memory holds every stored group, as after a
//! restore that found the table empty). Slots count against the scope's cache budget and the
//! process's shared state-memory limit; over it, a checkpoint drops the least recently touched
//! groups whose last write the job has committed (a read of a group written later would find
//! its older value), down to half the limit. A vanished group's key is not read again until the
//! job commits its deletion. A global aggregate (one group) reads it at restore.
//!
//! **Timers.** Windows close on the watermark and the state TTL expires idle groups, so the
//! operator must find groups it does not hold: a new group sets a timer in the state (see
//! [`due`]) at its window's close ([`window`]), its hopping windows' closes ([`hop`]) or its
//! expiry ([`HashAggregate::with_state_ttl`]); the watermark (or, for the TTL, the clock at a
//! barrier) fires the timers it reaches, and each reads its group when memory does not hold it.
//!
//! **Stored value** ([`codec`]), integers as LEB128 varints (signed ones zigzag-encoded):
//!
//! ```text
//! group := FORMAT:u8 rows:ivar n_aggs:uvar acc*        (one acc per aggregate, in order)
//! acc   := count(*): nothing | count: n:ivar | int/decimal sum: sum:ivar n:ivar
//!        | float sum: finite:f64le n:ivar nan:ivar pos_inf:ivar neg_inf:ivar
//!        | min/max/distinct: len:uvar (bytes_len:uvar bytes count:ivar)* | bool: trues:ivar falses:ivar
//! ```
//!
//! where `bytes` is the value's sorted-row encoding, whichever multiset holds it in memory. Keys
//! and values are Rivulet's own encoding, not Arrow's row format (which may change between Arrow
//! releases); views whose state was written in Arrow's row format are refused by their stored
//! shape ([`STATE_LAYOUT`]). Stored bytes are trusted to be ours.
//!
//! Floats are canonicalized before they are encoded (-0.0 becomes 0.0, every NaN one NaN), so they
//! group and count as distinct the way Postgres compares them; NaN sorts above every number. Strings
//! order bytewise (the C collation).

mod accumulator;
mod codec;
mod due;
mod groups;
mod hop;
mod pending;
mod result;
mod session;
mod window;

pub use self::hop::HopColumn;
pub use self::session::{SessionAggregate, SessionColumn, SessionSpec};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::{ArrayRef, new_null_array};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::compute::{CastOptions, can_cast_types, cast_with_options};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::logical_expr::Accumulator;

use self::accumulator::{Agg, canonical};
use self::due::Timers;
use self::groups::Groups;
use self::result::Value;
use self::window::Window;
use super::StateScope;
use super::{LateRow, Operator};
use crate::changelog::{ChangeBatch, Op};
use crate::keygroup;
use crate::state::StateBatch;
use crate::state::memory::Charge;
use crate::state::sortrows::{SortRowCodec, SortRows};
use crate::state::table::StateTable;
use crate::{EngineError, Result};

/// The layout of the aggregates' stored keys and values, in every view's stored shape: "sorted
/// rows 1" is [`crate::state::sortrows`]; state written before it (Arrow's row format) is
/// refused at restart.
pub(super) const STATE_LAYOUT: &str = ", state in sorted rows 1";

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AggFunc {
    #[default]
    CountStar,
    Count,
    Sum,
    Avg,
    Min,
    Max,
    CountDistinct,
    BoolAnd,
    BoolOr,
    /// The group's (text) values joined by [`AggSpec::delimiter`], in [`AggSpec::order`] (then
    /// byte) order.
    StringAgg,
    /// The group's values as an array, NULLs included, in [`AggSpec::order`] (then byte) order.
    ArrayAgg,
    /// The value of the group's first row in [`AggSpec::order`] (then byte) order, NULL
    /// included: `first_value(x ORDER BY y)`, what a scalar subquery's `ORDER BY y LIMIT 1` is.
    FirstValue,
    /// The value of the group's last row in that order (`last_value(x ORDER BY y)`).
    LastValue,
    /// An aggregate without a retractable state of its own (`approx_distinct`, `median`, ...):
    /// the group keeps the multiset of its values and [`AggSpec::recompute`] computes the result
    /// from all of them whenever the group changes.
    Recomputed,
}

impl AggFunc {
    /// Whether the aggregate's value is its multiset's first entry where it keeps only one (MIN,
    /// FIRST_VALUE), not its last (MAX, LAST_VALUE).
    pub(super) fn keeps_first(self) -> bool {
        matches!(self, AggFunc::Min | AggFunc::FirstValue)
    }
}

/// Makes a fresh DataFusion accumulator of one aggregate call, fed the group's values (one
/// column, each value as many times as the group holds it) to compute [`AggFunc::Recomputed`].
#[derive(Clone)]
pub struct AccumulatorFactory {
    /// The call as EXPLAIN shows it, e.g. `approx_percentile_cont(0.9)`.
    pub name: String,
    pub make: Arc<dyn Fn() -> datafusion::error::Result<Box<dyn Accumulator>> + Send + Sync>,
}

impl std::fmt::Debug for AccumulatorFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// Two factories are equal when they name the same call.
impl PartialEq for AccumulatorFactory {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for AccumulatorFactory {}

/// One output aggregate column.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AggSpec {
    pub func: AggFunc,
    /// Column index in the input batch; `None` for `CountStar`.
    pub input: Option<usize>,
    /// STRING_AGG's separator.
    pub delimiter: Option<String>,
    /// STRING_AGG and ARRAY_AGG (`agg(x ORDER BY y DESC)`): the input columns that order the
    /// values, with direction and NULL placement. Values that tie (and all values, without an
    /// order) follow in their encoding's order: a view never depends on arrival order.
    pub order: Vec<(usize, SortOptions)>,
    /// A boolean input column: rows where it is not true are not aggregated (`FILTER (WHERE
    /// ...)` of an aggregate that keeps NULLs, ARRAY_AGG; the others read `CASE WHEN p THEN x
    /// END`).
    pub filter: Option<usize>,
    /// STRING_AGG and ARRAY_AGG (DISTINCT ...): each value once.
    pub distinct: bool,
    /// [`AggFunc::Recomputed`]'s accumulator.
    pub recompute: Option<AccumulatorFactory>,
}

impl AggSpec {
    /// The same aggregate reading input column `f(i)` wherever it reads column `i`.
    pub fn map_columns(self, f: impl Fn(usize) -> usize) -> Self {
        Self {
            input: self.input.map(&f),
            order: self.order.into_iter().map(|(c, o)| (f(c), o)).collect(),
            filter: self.filter.map(&f),
            ..self
        }
    }
}

/// Incremental hash aggregation; see the module documentation.
pub struct HashAggregate {
    input: SchemaRef,
    /// As given to [`HashAggregate::try_new`], for [`Operator::fork`].
    specs: Vec<AggSpec>,
    group_by: Vec<usize>,
    aggs: Vec<Agg>,
    output: SchemaRef,
    /// Encodes the group key; `None` for a global aggregate, whose one key is empty.
    keys: Option<Codec>,
    groups: Groups,
    /// Where the groups are stored; opened at restore (or at the first checkpoint).
    table: Option<StateTable>,
    /// Groups are read from the table when a row (or a timer) first needs them, and memory
    /// keeps at most `limit` bytes of them (see the module documentation). Otherwise (a global
    /// aggregate, one group) the group is read at restore and stays in memory.
    lazy: bool,
    /// What windows close and the state TTL expires (see [`due`]); opened at restore for an
    /// aggregate with windows or a state TTL.
    timers: Option<Timers>,
    /// Groups expire under the state TTL through timers, and their stored values start with
    /// the time they were last touched (see [`HashAggregate::with_state_ttl`]).
    expiring: bool,
    /// Memory holds every stored group (nothing was ever evicted since a restore that found the
    /// table empty): a group not in memory is new, and costs no read.
    complete: bool,
    /// Memory the groups may take: the scope's cache budget ...
    budget: usize,
    /// ... or less while the process's state caches are over their shared limit.
    limit: usize,
    charge: Charge,
    /// Groups read from the table since the last checkpoint, found or not.
    loads: u64,
    /// Number of batches processed, to recognize a group's first touch in a batch.
    batches: u64,
    scratch: Scratch,
    /// Set when the group key holds a window bound: groups close on the watermark.
    window: Option<Window>,
    /// Set for hopping windows assembled from slices (see [`hop`]).
    hop: Option<hop::Hop>,
    /// The epoch's changes, held until its barrier (see [`pending`]).
    pending: pending::Pending,
    /// Flink's `table.exec.state.ttl`: a group untouched this long is forgotten (see
    /// [`HashAggregate::with_state_ttl`]).
    ttl: Option<Duration>,
    /// The time in seconds since the Unix epoch, when a test sets it (else the wall clock).
    clock: Option<u32>,
    /// The clock at the last TTL sweep: one a second at most.
    swept: u32,
    /// Counts the rows of a view without a key (see [`HashAggregate::counting_rows`]).
    counts_rows: bool,
    /// Group lookups since the last checkpoint: the state reads it publishes (those not in
    /// [`HashAggregate::loads`] were answered from memory).
    lookups: u64,
}

/// Publishes the figures of an aggregate's state table 0: `hits` reads of groups since the last
/// checkpoint answered from memory, `misses` that read the store, `stored` bytes in the store
/// and `memory` bytes held.
fn publish(scope: &StateScope, hits: u64, misses: u64, stored: usize, memory: usize) {
    let figures = scope.figures.table(0);
    figures.count_reads(hits, misses);
    figures.set_bytes(stored as u64, memory as u64);
}

/// Memory a group in a slot is counted for: its key, its decoded state (about twice its stored
/// value: multisets of MIN, MAX and DISTINCT are trees) and the slot with its index entry.
fn group_cost(key: usize, value: usize) -> usize {
    const SLOT_BYTES: usize = 96;
    key + 2 * value + SLOT_BYTES
}

/// The table of a scope's aggregate: its keys straight under the scope's prefix (how aggregates
/// stored their groups before state tables; stored views keep them), caching nothing (the
/// groups in memory are the cache).
pub(super) fn open_table(scope: &StateScope) -> StateTable {
    StateTable::new(
        scope.store.clone(),
        scope.prefix.clone(),
        scope.key_groups.clone(),
        Arc::clone(&scope.committed),
        0,
    )
}

/// What a checkpoint writes for a key.
pub(super) enum Write {
    /// The group in this slot.
    Group(u32),
    /// A deletion of the stored value, of this length.
    Delete(u32),
}

/// A codec of sorted rows; `null` is the encoding of a NULL value (value codecs only).
struct Codec {
    rows: SortRowCodec,
    null: Option<Vec<u8>>,
}

impl Codec {
    fn new(types: Vec<DataType>, with_null: bool) -> Result<Self> {
        let fields = types
            .iter()
            .map(|t| (t.clone(), SortOptions::new(false, true)))
            .collect();
        Self::sorted(fields, types.first().filter(|_| with_null))
    }

    /// A codec for rows of `fields`, with the row of one NULL of type `null` if given.
    fn sorted(fields: Vec<(DataType, SortOptions)>, null: Option<&DataType>) -> Result<Self> {
        let rows = SortRowCodec::new(fields)?;
        let null = match null {
            Some(t) => Some(
                rows.convert_columns(&[new_null_array(t, 1)])?
                    .row(0)
                    .to_vec(),
            ),
            None => None,
        };
        Ok(Self { rows, null })
    }
}

/// Buffers for the batch being processed, kept to spare allocations.
#[derive(Default)]
struct Scratch {
    /// Key group of each input row.
    kgs: Vec<u16>,
    /// Slot of each input row.
    gids: Vec<u32>,
    /// 1 for each row that adds, -1 for each row that retracts.
    signs: Vec<i64>,
    /// Slots of the groups the batch touches, in order of first touch.
    touched: Vec<u32>,
    /// Per touched group: whether it existed before the batch, and after it.
    existed: Vec<bool>,
    exists: Vec<bool>,
    /// Per touched group: its row count before the batch, then after it.
    rows: Vec<i64>,
    /// Results before the batch of the groups first touched in the epoch (see [`pending`]).
    before: Vec<Value>,
    /// Bytes of the `Value::Bytes` results.
    arena: Vec<u8>,
}

impl Scratch {
    /// The groups the batch created (touched, absent before it and live after it), each
    /// marked `false` (not handled yet).
    fn created(&self) -> HashMap<u32, bool> {
        let groups = self.touched.iter().zip(&self.existed).zip(&self.exists);
        groups
            .filter(|((_, existed), exists)| !**existed && **exists)
            .map(|((&id, _), _)| (id, false))
            .collect()
    }

    fn clear(&mut self) {
        self.gids.clear();
        self.signs.clear();
        self.touched.clear();
        self.existed.clear();
        self.exists.clear();
        self.rows.clear();
        self.before.clear();
        self.arena.clear();
    }
}

/// The time a group was last touched and its group value, of a stored value that starts with
/// that time (`expiring`, see [`HashAggregate::with_state_ttl`]).
fn split_seen(value: &[u8], expiring: bool) -> Result<(Option<u32>, &[u8])> {
    if !expiring {
        return Ok((None, value));
    }
    let (seen, group) = value
        .split_first_chunk::<4>()
        .ok_or_else(|| EngineError::Corrupt("aggregate state without its touch time".into()))?;
    Ok((Some(u32::from_be_bytes(*seen)), group))
}

fn internal(msg: impl Into<String>) -> EngineError {
    EngineError::Internal(msg.into())
}

fn strict() -> CastOptions<'static> {
    CastOptions {
        safe: false,
        ..Default::default()
    }
}

impl HashAggregate {
    /// `group_by`: input column indices of the group key; `aggs`: one per output aggregate column;
    /// `output`: the group columns (in `group_by` order) then one column per aggregate, with the
    /// types the planner chose (results are cast to them). The operator starts empty;
    /// [`Operator::restore`] loads the groups of its key groups. A plan the operator cannot run is
    /// an `Internal` error: the planner should have rejected it.
    pub fn try_new(
        input: SchemaRef,
        group_by: Vec<usize>,
        aggs: Vec<AggSpec>,
        output: SchemaRef,
    ) -> Result<Self> {
        let fields = output.fields();
        if fields.len() != group_by.len() + aggs.len() {
            return Err(internal(format!(
                "aggregate output has {} columns, expected {}",
                fields.len(),
                group_by.len() + aggs.len()
            )));
        }
        let mut key_types = Vec::with_capacity(group_by.len());
        for (&i, out) in group_by.iter().zip(fields.iter()) {
            let t = input
                .fields()
                .get(i)
                .ok_or_else(|| internal(format!("group column {i} does not exist")))?
                .data_type();
            if !can_cast_types(t, out.data_type()) {
                return Err(internal(format!(
                    "group column {i} of type {t} cannot become {}",
                    out.data_type()
                )));
            }
            key_types.push(t.clone());
        }
        let keys = if group_by.is_empty() {
            None
        } else {
            Some(Codec::new(key_types, false)?)
        };
        let specs = aggs;
        let aggs = specs
            .iter()
            .zip(fields.iter().skip(group_by.len()))
            .map(|(spec, f)| Agg::new(spec, &input, f.data_type()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            input,
            specs,
            group_by,
            aggs,
            output,
            keys,
            groups: Groups::default(),
            table: None,
            lazy: false,
            timers: None,
            expiring: false,
            complete: true,
            budget: 0,
            limit: 0,
            charge: Charge::default(),
            loads: 0,
            lookups: 0,
            batches: 0,
            scratch: Scratch::default(),
            pending: pending::Pending::default(),
            window: None,
            hop: None,
            ttl: None,
            clock: None,
            swept: 0,
            counts_rows: false,
        })
    }

    /// Tells the aggregate that its input only ever inserts (an APPEND ONLY table, a file,
    /// Kafka, a generator, or an append-only view of one): MIN and MAX then keep one value per
    /// group instead of the multiset a retraction would need.
    pub fn with_append_only_input(mut self) -> Self {
        for agg in &mut self.aggs {
            agg.extreme_only = matches!(
                agg.func,
                AggFunc::Min | AggFunc::Max | AggFunc::FirstValue | AggFunc::LastValue
            );
        }
        self
    }

    /// Marks the aggregate as the multiplicity count of a view without a key (grouped by every
    /// column): its state is as large as the view, so EXPLAIN says that instead of "unbounded".
    pub fn counting_rows(mut self) -> Self {
        self.counts_rows = true;
        self
    }

    /// Flink's state TTL (`table.exec.state.ttl`) for an aggregate without windows: a group no
    /// row has touched for `ttl` (wall-clock time, in whole seconds since the Unix epoch, so it
    /// counts across restarts) is forgotten at a barrier: its state is deleted, and the view
    /// keeps the group's last result. A later row for it starts the group afresh, as in Flink.
    ///
    /// A new group sets a timer at its expiry (see [`due`]); a group stores the time it was last
    /// touched in front of its value (4 bytes, big endian). When the timer fires, the group is
    /// read: expired, it goes; touched since, it sets its timer again at its new expiry. So a
    /// busy group costs no timer writes, and nothing is read at restore.
    pub fn with_state_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Makes the TTL's clock read `seconds` (since the Unix epoch) instead of the wall clock.
    #[cfg(test)]
    fn set_clock(&mut self, seconds: u32) {
        self.clock = Some(seconds);
    }

    /// Seconds since the Unix epoch (see [`HashAggregate::set_clock`]).
    fn now(&self) -> u32 {
        self.clock.unwrap_or_else(|| {
            let secs = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            u32::try_from(secs).unwrap_or(u32::MAX)
        })
    }

    /// The state TTL in whole seconds, for an aggregate without windows that has one.
    fn ttl_seconds(&self) -> Option<u32> {
        let ttl = self
            .ttl
            .filter(|_| self.window.is_none() && self.hop.is_none())?;
        Some(u32::try_from(ttl.as_secs().max(1)).unwrap_or(u32::MAX))
    }

    /// Forgets the groups the state TTL has passed (see [`HashAggregate::with_state_ttl`]).
    fn expire(&mut self) -> Result<()> {
        let Some(ttl) = self.ttl_seconds() else {
            return Ok(());
        };
        let now = self.groups.clock;
        if now <= self.swept {
            return Ok(());
        }
        self.swept = now;
        if !self.expiring {
            // A global aggregate holds its one group in memory.
            for id in self.groups.expired(ttl) {
                self.forget_held(id);
                self.groups.remove(id);
                self.aggs.iter_mut().for_each(|agg| agg.reset(id));
            }
            return Ok(());
        }
        let timers = (self.timers.as_mut()).ok_or_else(|| internal("aggregate timers not open"))?;
        let fired = timers.take(i64::from(now))?;
        if fired.is_empty() {
            return Ok(());
        }
        self.load_fired(&fired)?;
        let mut again = Vec::new();
        for (_, kg, key) in &fired {
            let Some(id) = self.groups.get(key) else {
                continue;
            };
            let slot = &self.groups.slots[id as usize];
            let expiry = slot.seen.saturating_add(ttl);
            if expiry <= now && slot.pending == 0 {
                self.forget_held(id);
                self.groups.remove(id);
                self.aggs.iter_mut().for_each(|agg| agg.reset(id));
            } else {
                again.push((*kg, expiry.max(now.saturating_add(1)), id));
            }
        }
        let timers = (self.timers.as_mut()).ok_or_else(|| internal("aggregate timers not open"))?;
        for (kg, at, id) in again {
            let key = &self.groups.slots[id as usize].key;
            timers.set(kg, i64::from(at), due::EXPIRE, key);
        }
        Ok(())
    }

    /// Reads the groups of fired timers that memory does not hold.
    fn load_fired(&mut self, fired: &[due::Fired]) -> Result<()> {
        if self.complete {
            return Ok(());
        }
        let keys: Vec<(u16, &[u8])> = fired.iter().map(|(_, kg, k)| (*kg, &k[..])).collect();
        self.load_keys(keys)
    }

    /// Sets the timers of the groups batch `s` created (its touched groups that did not exist
    /// before it and do after it): their expiry under the state TTL.
    fn arm_expiry(&mut self, s: &Scratch) -> Result<()> {
        let Some(ttl) = self.ttl_seconds().filter(|_| self.expiring) else {
            return Ok(());
        };
        let timers = (self.timers.as_mut()).ok_or_else(|| internal("aggregate timers not open"))?;
        for ((&id, &existed), &exists) in s.touched.iter().zip(&s.existed).zip(&s.exists) {
            if !existed && exists {
                let slot = &self.groups.slots[id as usize];
                let at = slot.seen.saturating_add(ttl);
                timers.set(slot.kg, i64::from(at), due::EXPIRE, &slot.key);
            }
        }
        Ok(())
    }

    /// Makes the aggregation close its windows on the watermark (see [`window`]): group key
    /// position `key` is a window bound whose window closes `offset` microseconds after its
    /// value; `rowtime` is the input column of each row's event time. With `emit_on_close`, each
    /// group is emitted once, when its window closes, instead of on every change.
    pub fn with_window(
        mut self,
        key: usize,
        offset: i64,
        emit_on_close: bool,
        rowtime: Option<usize>,
    ) -> Self {
        self.window = Some(Window::new(key, offset, emit_on_close, rowtime));
        self
    }

    /// Groups whose window closes now: their final rows (emit on close) and their state freed.
    fn close(&mut self, ids: Vec<u32>) -> Result<Vec<ChangeBatch>> {
        let emit = self.window.as_ref().is_some_and(|w| w.emit_on_close);
        let mut out = Vec::new();
        if emit && !ids.is_empty() {
            let rows: Vec<i64> = ids
                .iter()
                .map(|&id| self.groups.slots[id as usize].rows)
                .collect();
            let keep = vec![true; ids.len()];
            let (mut values, mut arena) = (Vec::new(), Vec::new());
            for agg in &self.aggs {
                agg.results(&ids, &rows, &keep, &mut values, &mut arena)?;
            }
            let n = ids.len();
            out.push(self.build(vec![Op::Insert; n], &ids, |a, r| values[a * n + r], &arena)?);
        }
        for id in ids {
            self.forget_held(id);
            self.groups.remove(id);
            self.aggs.iter_mut().for_each(|agg| agg.reset(id));
        }
        Ok(out)
    }

    /// Applies `input` to a windowed aggregation: late rows are set aside, new groups are
    /// registered by close time, and with emit on close nothing is emitted yet.
    fn apply_windowed(&mut self, input: ChangeBatch) -> Result<Vec<ChangeBatch>> {
        let Some(window) = self.window.as_mut() else {
            return Err(internal("windowed apply without a window"));
        };
        let bound = self
            .group_by
            .get(window.key)
            .ok_or_else(|| internal("window key out of range"))?;
        let mut closes = window.close_times(input.data.column(*bound))?;
        let input = match window.split_late(&input.data, &closes)? {
            None => input,
            Some(keep) => {
                closes = keep.iter().map(|&i| closes[i as usize]).collect();
                input.select(keep)?
            }
        };
        if input.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let out = self.apply(&input, &mut scratch);
        let armed = match out {
            Ok(_) => self.arm_closes(&scratch, &closes),
            Err(e) => Err(e),
        };
        self.scratch = scratch;
        armed.map(|_| Vec::new())
    }

    /// Sets the timers of the windows' groups batch `s` created (touched, new, and live after
    /// it), at their close times; `closes` has each row's.
    fn arm_closes(&mut self, s: &Scratch, closes: &[i64]) -> Result<()> {
        let mut created = s.created();
        if created.is_empty() {
            return Ok(());
        }
        let timers = (self.timers.as_mut()).ok_or_else(|| internal("aggregate timers not open"))?;
        for (&id, &close) in s.gids.iter().zip(closes) {
            if close == window::NEVER {
                continue;
            }
            if let Some(armed) = created.get_mut(&id)
                && !std::mem::replace(armed, true)
            {
                let slot = &self.groups.slots[id as usize];
                timers.set(slot.kg, close, due::CLOSE, &slot.key);
            }
        }
        Ok(())
    }

    /// Fires the window timers the watermark `w` reaches: the groups whose windows close.
    fn close_windows(&mut self, w: i64) -> Result<Vec<ChangeBatch>> {
        let timers = (self.timers.as_mut()).ok_or_else(|| internal("aggregate timers not open"))?;
        let fired = timers.take(w)?;
        if fired.is_empty() {
            return Ok(Vec::new());
        }
        self.load_fired(&fired)?;
        let mut closing: Vec<u32> = fired
            .iter()
            .filter_map(|(_, _, key)| self.groups.get(key))
            .collect();
        // A group is named by one timer; a slot is listed once all the same.
        let mut seen = std::collections::HashSet::new();
        closing.retain(|id| seen.insert(*id));
        if closing.is_empty() {
            return Ok(Vec::new());
        }
        // The closing groups' held changes go out before they are freed.
        let mut out = self.release()?;
        out.extend(self.close(closing)?);
        Ok(out)
    }

    /// Number of groups held (1 for a started global aggregate).
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// One output batch: row `r` is `ops[r]` of the group in slot `ids[r]`, with results
    /// `value(a, r)` for aggregate `a`.
    fn build(
        &self,
        ops: Vec<Op>,
        ids: &[u32],
        value: impl Fn(usize, usize) -> Value,
        arena: &[u8],
    ) -> Result<ChangeBatch> {
        let mut columns = Vec::with_capacity(self.output.fields().len());
        if let Some(keys) = &self.keys {
            let slots = &self.groups.slots;
            columns.extend(
                keys.rows
                    .convert_rows(ids.iter().map(|&id| &slots[id as usize].key[..]))?,
            );
        }
        for (a, agg) in self.aggs.iter().enumerate() {
            columns.push(agg.build((0..ids.len()).map(|r| value(a, r)), arena)?);
        }
        let columns = columns
            .iter()
            .zip(self.output.fields().iter())
            .map(|(c, f)| cast_with_options(c, f.data_type(), &strict()))
            .collect::<Result<Vec<_>, _>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(ids.len()));
        let data = RecordBatch::try_new_with_options(Arc::clone(&self.output), columns, &options)?;
        Ok(ChangeBatch { data, ops })
    }

    /// Reads the groups of `keys` (in key groups `kgs`) that memory does not hold from the
    /// table, with one batched read, into slots: those it has become live groups, the others
    /// are new.
    fn load(&mut self, keys: &SortRows, kgs: &[u16]) -> Result<()> {
        let wanted = (kgs.iter().enumerate().take(keys.num_rows()))
            .map(|(i, &kg)| (kg, keys.row(i)))
            .collect();
        self.load_keys(wanted)
    }

    /// Reads the groups `wanted` (key group, key) that memory does not hold from the table,
    /// with one batched read, into slots.
    fn load_keys(&mut self, wanted: Vec<(u16, &[u8])>) -> Result<()> {
        let mut missing = wanted;
        missing.retain(|(_, key)| {
            self.groups.get(key).is_none() && !self.groups.deleted.contains_key(*key)
        });
        if missing.is_empty() {
            return Ok(());
        }
        missing.sort_unstable();
        missing.dedup();
        self.loads += missing.len() as u64;
        let table = (self.table.as_mut()).ok_or_else(|| internal("aggregate state not open"))?;
        let mut loaded = 0;
        for (&(kg, key), value) in missing.iter().zip(table.multi_get(&missing)?) {
            let Some(value) = value else {
                continue;
            };
            let id = self.groups.insert(key, kg);
            for agg in &mut self.aggs {
                agg.grow(id as usize + 1);
            }
            let (seen, group) = split_seen(value, self.expiring)?;
            let rows = codec::decode(group, &mut self.aggs, id)?;
            let slot = &mut self.groups.slots[id as usize];
            slot.rows = rows;
            if let Some(seen) = seen {
                slot.seen = seen;
            }
            slot.stored = Some(value.len() as u32);
            self.groups.set_cost(id, group_cost(key.len(), value.len()));
            loaded += 2 + key.len() + value.len();
        }
        table.count_stored(loaded as i64);
        Ok(())
    }

    /// Finds (or creates) every row's group, and notes each group's first touch.
    fn resolve(&mut self, keys: Option<&SortRows>, n: usize, s: &mut Scratch) -> Result<()> {
        let batch = self.batches;
        let Some(keys) = keys else {
            let found = self.groups.get(&[]);
            let id = found.unwrap_or_else(|| self.groups.insert(&[], 0));
            self.groups.touch(id, batch);
            s.touched.push(id);
            s.existed.push(found.is_some());
            s.gids.resize(n, id);
            return Ok(());
        };
        if !self.complete {
            self.load(keys, &s.kgs)?;
        }
        for i in 0..n {
            let key = keys.row(i);
            let (id, existed) = match self.groups.get(key) {
                Some(id) => (id, true),
                None => {
                    let kg = s.kgs.get(i).copied().unwrap_or(0);
                    (self.groups.insert(key, kg), false)
                }
            };
            if self.groups.touch(id, batch) {
                s.touched.push(id);
                s.existed.push(existed);
            }
            s.gids.push(id);
        }
        Ok(())
    }

    /// Applies a batch that matches the input schema and has rows. Its changes are held for the
    /// barrier (see [`pending`]); nothing is returned.
    fn apply(&mut self, input: &ChangeBatch, s: &mut Scratch) -> Result<Vec<ChangeBatch>> {
        let n = input.num_rows();
        self.batches += 1;
        self.lookups += n as u64;
        s.clear();
        let key_rows = match &self.keys {
            Some(keys) => {
                let cols: Vec<ArrayRef> = self
                    .group_by
                    .iter()
                    .map(|&i| canonical(input.data.column(i)))
                    .collect();
                // A sliced hopping aggregation is partitioned by its keys without the slice:
                // state must live in the key group the exchange routes the keys to.
                let routed = match &self.hop {
                    Some(hop) => &cols[..hop.slice_key.min(cols.len())],
                    None => &cols[..],
                };
                keygroup::key_groups(routed, n, &mut s.kgs)?;
                Some(keys.rows.convert_columns(&cols)?)
            }
            None => None,
        };
        self.resolve(key_rows.as_ref(), n, s)?;
        let slots = self.groups.slots.len();
        self.aggs.iter_mut().for_each(|agg| agg.grow(slots));

        // Emitted at the barrier (see [`pending`]): the rows of the groups the epoch touches
        // for the first time, as they are before this batch. Windows that emit on close and
        // hopping windows emit when they close.
        let emit_on_close = self.window.as_ref().is_some_and(|w| w.emit_on_close);
        if self.hop.is_none() && !emit_on_close {
            self.hold(s)?;
        }
        let slots = &mut self.groups.slots;
        s.signs.extend(
            input
                .ops
                .iter()
                .map(|op| if op.is_add() { 1i64 } else { -1 }),
        );
        for (&g, &sign) in s.gids.iter().zip(&s.signs) {
            slots[g as usize].rows += sign;
        }
        let mut negative = false;
        for agg in &mut self.aggs {
            negative |= agg.update(input.data.columns(), &s.gids, &s.signs)?;
        }

        let global = self.keys.is_none();
        s.rows.clear();
        for &id in &s.touched {
            let rows = slots[id as usize].rows;
            if rows < 0 || (negative && self.aggs.iter().any(|agg| agg.negative(id))) {
                return Err(internal("aggregate input retracts a row it never added"));
            }
            s.rows.push(rows);
            s.exists.push(rows > 0 || global);
        }

        for (&id, &exists) in s.touched.iter().zip(&s.exists) {
            if exists {
                self.groups.mark_dirty(id);
            } else {
                self.forget_held(id);
                self.groups.remove(id);
                self.aggs.iter_mut().for_each(|agg| agg.reset(id));
            }
        }
        Ok(Vec::new())
    }
}

impl Operator for HashAggregate {
    fn state_layout(&self) -> &'static str {
        STATE_LAYOUT
    }

    fn name(&self) -> &'static str {
        "HashAggregate"
    }

    fn schema(&self) -> SchemaRef {
        match &self.hop {
            Some(hop) => Arc::clone(&hop.output),
            None => Arc::clone(&self.output),
        }
    }

    fn start(&mut self) -> Result<Vec<ChangeBatch>> {
        // A recovered global row is already downstream; a grouped aggregate has nothing to say.
        if self.keys.is_some() || self.groups.contains(&[]) {
            return Ok(Vec::new());
        }
        let id = self.groups.insert(&[], 0);
        self.aggs
            .iter_mut()
            .for_each(|agg| agg.grow(id as usize + 1));
        self.groups.mark_dirty(id);
        let (mut values, mut arena) = (Vec::new(), Vec::new());
        for agg in &self.aggs {
            agg.results(&[id], &[0], &[true], &mut values, &mut arena)?;
        }
        Ok(vec![self.build(
            vec![Op::Insert],
            &[id],
            |a, _| values[a],
            &arena,
        )?])
    }

    fn process(&mut self, _input: usize, input: ChangeBatch) -> Result<Vec<ChangeBatch>> {
        self.groups.clock = self.now();
        let n = input.num_rows();
        let columns = input.data.columns();
        let types_match = columns.len() == self.input.fields().len()
            && columns
                .iter()
                .zip(self.input.fields().iter())
                .all(|(c, f)| c.data_type() == f.data_type());
        if !types_match || input.ops.len() != n {
            return Err(internal(
                "aggregate input does not match its declared schema",
            ));
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        if self.hop.is_some() {
            return self.apply_hop(input);
        }
        if self.window.is_some() {
            return self.apply_windowed(input);
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let out = self.apply(&input, &mut scratch);
        let armed = match out {
            Ok(out) => self.arm_expiry(&scratch).map(|_| out),
            Err(e) => Err(e),
        };
        self.scratch = scratch;
        armed
    }

    fn on_watermark(&mut self, _input: usize, watermark: i64) -> Result<Vec<ChangeBatch>> {
        if self.hop.is_some() {
            return self.close_hop(watermark);
        }
        match self.window.as_mut().map(|w| w.advance(watermark)) {
            Some(true) => self.close_windows(watermark),
            Some(false) => Ok(Vec::new()),
            // Held rows go out before the watermark passes their time (see [`pending`]).
            None => self.release(),
        }
    }

    fn on_barrier(&mut self) -> Result<Vec<ChangeBatch>> {
        let out = self.release()?;
        self.groups.clock = self.now();
        self.expire()?;
        Ok(out)
    }

    fn take_late(&mut self) -> Vec<LateRow> {
        if let Some(hop) = self.hop.as_mut() {
            return std::mem::take(&mut hop.late);
        }
        self.window
            .as_mut()
            .map(|w| std::mem::take(&mut w.late))
            .unwrap_or_default()
    }

    fn fork(&self) -> Result<Box<dyn Operator>> {
        let mut fresh = Self::try_new(
            Arc::clone(&self.input),
            self.group_by.clone(),
            self.specs.clone(),
            Arc::clone(&self.output),
        )?;
        fresh.ttl = self.ttl;
        fresh.counts_rows = self.counts_rows;
        for (agg, old) in fresh.aggs.iter_mut().zip(&self.aggs) {
            agg.extreme_only = old.extreme_only;
        }
        fresh.window = self.window.as_ref().map(Window::fresh);
        fresh.hop = self.hop.as_ref().map(hop::Hop::fresh);
        Ok(Box::new(fresh))
    }

    fn restore(&mut self, scope: &StateScope) -> Result<()> {
        let mut groups = Groups::default();
        groups.clock = self.now();
        let mut bytes = 0;
        self.aggs.iter_mut().for_each(Agg::clear);
        let mut table = open_table(scope);
        if let Some(window) = self.window.as_mut() {
            *window = window.fresh();
        }
        if let Some(hop) = self.hop.as_mut() {
            *hop = hop.fresh();
        }
        self.lazy = self.keys.is_some();
        self.expiring = self.lazy && self.ttl_seconds().is_some();
        if self.lazy {
            self.complete = table.is_empty()?;
            self.budget = scope.cache_bytes;
            self.limit = scope.cache_bytes;
            groups.reads = true;
            self.groups = groups;
            self.table = Some(table);
            let timed = self.window.is_some() || self.hop.is_some() || self.expiring;
            self.timers = timed.then(|| Timers::open(scope));
            return Ok(());
        }
        scope.scan(|kg, key, value| {
            if key.is_empty() != self.keys.is_none() {
                return Err(EngineError::Corrupt(
                    "aggregate group key of the wrong shape".into(),
                ));
            }
            let id = groups.insert(key, kg);
            self.aggs
                .iter_mut()
                .for_each(|agg| agg.grow(id as usize + 1));
            let slot = &mut groups.slots[id as usize];
            slot.rows = codec::decode(value, &mut self.aggs, id)?;
            slot.stored = Some(value.len() as u32);
            groups.set_cost(id, group_cost(key.len(), value.len()));
            bytes += 2 + key.len() + value.len();
            Ok(())
        })?;
        table.count_stored(bytes as i64);
        self.table = Some(table);
        self.complete = true;
        self.groups = groups;
        Ok(())
    }

    fn checkpoint(&mut self, epoch: u64, scope: &StateScope, batch: &mut StateBatch) -> Result<()> {
        let table = self.table.get_or_insert_with(|| open_table(scope));
        let mut writes: Vec<(u16, Arc<[u8]>, Write)> = Vec::new();
        for (kg, key, len) in std::mem::take(&mut self.groups.gone) {
            match self.groups.get(&key) {
                // A vanished key that is live again is overwritten by its new group's put.
                Some(id) => {
                    let slot = &mut self.groups.slots[id as usize];
                    slot.stored = slot.stored.or(Some(len));
                }
                None => writes.push((kg, key, Write::Delete(len))),
            }
        }
        for id in self.groups.take_dirty() {
            let slot = &self.groups.slots[id as usize];
            writes.push((slot.kg, Arc::clone(&slot.key), Write::Group(id)));
        }
        // In key order, which RocksDB inserts into its memtable much faster than random order.
        writes.sort_unstable_by(|a, b| (a.0, &*a.1).cmp(&(b.0, &*b.1)));
        let mut value = Vec::new();
        for (kg, key, write) in writes {
            let id = match write {
                Write::Group(id) => id,
                Write::Delete(len) => {
                    table.write_behind(batch, kg, &key, None, Some(len as usize));
                    continue;
                }
            };
            let slot = &mut self.groups.slots[id as usize];
            value.clear();
            if self.expiring {
                value.extend_from_slice(&slot.seen.to_be_bytes());
            }
            codec::encode(slot.rows, &self.aggs, id, &mut value);
            let before = slot.stored.replace(value.len() as u32);
            table.write_behind(batch, kg, &key, Some(&value), before.map(|l| l as usize));
            slot.written = epoch;
            self.groups.set_cost(id, group_cost(key.len(), value.len()));
        }
        let committed = table.committed_epoch();
        self.groups.deletions_written(epoch, committed);
        table.checkpoint(epoch, batch);
        if let Some(timers) = self.timers.as_mut() {
            timers.checkpoint(epoch, batch);
        }
        let lookups = std::mem::take(&mut self.lookups);
        let loads = std::mem::take(&mut self.loads);
        let stored = table.bytes() as usize;
        if self.lazy {
            // The shared pool learns the groups' size once an epoch, and says what they may take.
            self.limit = self.charge.update(self.groups.resident, self.budget);
            if self.groups.resident > self.limit {
                self.shrink(self.limit / 2, committed);
                self.charge.update(self.groups.resident, self.budget);
            }
        }
        let memory = self.groups.resident;
        publish(scope, lookups.saturating_sub(loads), loads, stored, memory);
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.table.as_ref().map_or(0, |t| t.bytes() as usize)
    }

    fn describe(&self) -> String {
        let aggs: Vec<String> = self.aggs.iter().map(Agg::describe).collect();
        let keys: Vec<String> = self.group_by.iter().map(|i| format!("#{i}")).collect();
        let window = match &self.window {
            Some(w) => format!(
                " closes on watermark past #{} + {} us{}",
                self.group_by.get(w.key).copied().unwrap_or(0),
                w.offset,
                if w.emit_on_close {
                    ", emits on window close"
                } else {
                    ""
                }
            ),
            None => match &self.hop {
                Some(h) => format!(
                    " hopping windows of {} us every {} us from slices #{}, emits on window close",
                    h.size,
                    h.slide,
                    self.group_by.get(h.slice_key).copied().unwrap_or(0)
                ),
                None => String::new(),
            },
        };
        // What bounds the state: windows close; otherwise the TTL, or nothing (it grows with
        // the groups: EXPLAIN says so). Windows and the TTL keep timers in the state (their
        // layout, which a view created before them does not have).
        let state = match (&self.window, &self.hop, self.ttl, self.group_by.is_empty()) {
            _ if self.counts_rows => ", state: a count per distinct row of the view".into(),
            (_, _, _, true) => String::new(),
            (Some(_), ..) | (_, Some(_), ..) => ", timers in state".into(),
            (None, None, Some(ttl), false) => format!(
                ", state TTL {} s (expired by timers in state)",
                ttl.as_secs().max(1)
            ),
            (None, None, None, false) => {
                ", state unbounded (one entry per group; SET table.exec.state.ttl bounds it)".into()
            }
        };
        format!(
            "HashAggregate group_by=[{}] aggs=[{}]{window}{state}",
            keys.join(", "),
            aggs.join(", ")
        )
    }
}

impl HashAggregate {
    /// Drops groups from memory, least recently touched first, until they take at most
    /// `target` bytes; a group is dropped only once the job has committed its last write (up
    /// to epoch `committed`). They stay stored and are read again when a row needs them.
    fn shrink(&mut self, target: usize, committed: u64) {
        let Some(table) = self.table.as_mut() else {
            return;
        };
        for id in self.groups.evictable(committed) {
            if self.groups.resident <= target {
                break;
            }
            let slot = &self.groups.slots[id as usize];
            let stored = slot.stored.map_or(0, |v| 2 + slot.key.len() + v as usize);
            table.count_stored(-(stored as i64));
            self.groups.evict(id);
            self.aggs.iter_mut().for_each(|agg| agg.reset(id));
            self.complete = false;
        }
    }
}

#[cfg(test)]
mod tests;
