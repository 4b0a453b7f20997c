//! Keyed state tables: one operator instance's keyed state, over RocksDB, bounded in memory.
//!
//! A [`StateTable`] keeps key/value entries per key group: get, put, delete, point reads of many
//! keys at once, scans of a prefix or a range in key order (forward or reverse), and range
//! deletes (expiry of keys ordered by event time, see [`super::keys`]). A multi-map (a join's
//! rows per join key) is a table keyed by `join key ++ row id`, read with a prefix scan on the
//! join key; top-N and CEP read ranges in key order.
//!
//! **Keys.** The stored key of `key` in key group `kg` is `prefix ++ kg (u16 big endian) ++ key`
//! (the *table key* is `kg ++ key`). An instance reads and writes only its own key groups, so a
//! job restarted with another parallelism finds each group's entries where it left them.
//!
//! **Layers.** A read sees every write made so far, newest first:
//! 1. *dirty*: the writes since the last [`StateTable::checkpoint`];
//! 2. *flushed*: one layer per checkpointed epoch whose write batch the job has not committed
//!    yet (the committing task writes it to RocksDB up to a few epochs later);
//! 3. *committed*: RocksDB, with a cache of clean entries (known values and known absences).
//!
//! A layer holds puts, deletes and deleted ranges; within a layer a put is newer than every
//! deleted range that covers it (a range delete drops the layer's own puts in the range). A
//! checkpoint hands the dirty layer to the epoch's write batch, range deletes first, and keeps it
//! as that epoch's flushed layer. Once the job's committed epoch (the `committed` counter) reaches
//! it, the layer is dropped and its entries become clean cache entries. The cache never holds a
//! key that a dirty or flushed layer decides, so clean entries are always RocksDB's values.
//!
//! **Memory.** Dirty and flushed entries stay in memory until committed: they are never evicted.
//! Clean entries are cached up to `cache_bytes` (keys, values and a fixed overhead per entry) and
//! evicted by CLOCK (second chance) at the start of the next read or checkpoint once over budget;
//! an evicted entry is read again from RocksDB on its next access. The budget shrinks while the
//! process's state caches together are over their shared limit (see [`super::memory`]). A table
//! with no budget caches nothing (its operator keeps what it needs, decoded): committed writes are
//! dropped from memory at once. Scans read RocksDB under the pending layers and do not fill the
//! cache.
//!
//! **Recovery.** Nothing is read at construction: every entry is loaded when first accessed, so
//! restart time does not grow with state size.
//!
//! **What the runtime must do.** Create each table with the job's committed-epoch counter and
//! store each epoch into it (`Release`) only after that epoch's write batch is in RocksDB; call
//! [`StateTable::checkpoint`] once per epoch with a growing epoch number. When an epoch fails, the
//! job restarts from the last commit with new tables: a table whose flushed layer was never
//! committed must not be used again.
//!
//! **Expiry.** By watermark: keys that start with an encoded event time are removed with
//! [`StateTable::delete_range`]. By processing time: a table [`StateTable::with_ttl`] whose values
//! are written with [`StateTable::put_at`] (each value carries its write time) treats entries
//! older than the TTL as absent in [`StateTable::get_at`] (which also deletes them) and in
//! [`StateTable::unexpired`] for scans. The caller passes the time; there is no clock here.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound::{self, Excluded, Included, Unbounded};
use std::ops::{ControlFlow, Range};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::memory::Charge;
use super::{Cursor, StateBatch, StateStore, prefix_end};
use crate::{EngineError, Result};

/// Memory an entry costs besides its key and value bytes (its share of a map node, the vector
/// headers), counted against the budgets.
const ENTRY_OVERHEAD: usize = 64;

/// Bytes of the write time in front of a value written with [`StateTable::put_at`].
const TIME_BYTES: usize = 8;

/// The order of a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Ascending key order.
    Forward,
    /// Descending key order.
    Reverse,
}

/// Counters of one table, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Point reads answered from memory (pending writes or the cache).
    pub hits: u64,
    /// Point reads that went to RocksDB.
    pub misses: u64,
    /// Clean entries dropped from the cache to stay within its budget.
    pub evictions: u64,
    /// Memory of the cached clean entries.
    pub cached_bytes: usize,
    /// Memory of the writes not committed yet (dirty and flushed), which are never evicted.
    pub pending_bytes: usize,
    /// Checkpointed epochs whose writes are not known to be committed yet.
    pub pending_epochs: usize,
}

/// What one state table of an operator instance counted, as of its last checkpoint; shared
/// with the instance's metrics (see [`StateFigures`]).
#[derive(Debug, Default)]
pub struct TableFigures {
    /// Point reads answered from memory (pending writes or the cache).
    pub hits: AtomicU64,
    /// Point reads that went to RocksDB.
    pub misses: AtomicU64,
    /// Approximate bytes of the table's entries in the store (see [`StateTable::bytes`]).
    pub stored_bytes: AtomicU64,
    /// Memory the table holds: cached clean entries and writes not committed yet.
    pub memory_bytes: AtomicU64,
}

impl TableFigures {
    /// Adds `hits` and `misses` point reads.
    pub fn count_reads(&self, hits: u64, misses: u64) {
        self.hits.fetch_add(hits, Ordering::Relaxed);
        self.misses.fetch_add(misses, Ordering::Relaxed);
    }

    /// Sets the table's stored and in-memory bytes.
    pub fn set_bytes(&self, stored: u64, memory: u64) {
        self.stored_bytes.store(stored, Ordering::Relaxed);
        self.memory_bytes.store(memory, Ordering::Relaxed);
    }
}

/// The state tables of one operator instance, by tag (see `StateScope::table`), shared with its
/// metrics: each table publishes its figures at every checkpoint, not per read.
#[derive(Debug, Default)]
pub struct StateFigures {
    tables: parking_lot::Mutex<Vec<(u8, Arc<TableFigures>)>>,
}

impl StateFigures {
    /// The figures of table `tag`, created on first use; a table opened again (a restarted
    /// job's) adds to the same figures.
    pub fn table(&self, tag: u8) -> Arc<TableFigures> {
        let mut tables = self.tables.lock();
        match tables.binary_search_by_key(&tag, |(t, _)| *t) {
            Ok(i) => Arc::clone(&tables[i].1),
            Err(i) => {
                let figures = Arc::new(TableFigures::default());
                tables.insert(i, (tag, Arc::clone(&figures)));
                figures
            }
        }
    }

    /// How a table's tag reads in metrics and system tables: the letter operators use for it
    /// (a join's `l` and `r` sides), else its number.
    pub fn tag_name(tag: u8) -> String {
        if tag.is_ascii_alphanumeric() {
            char::from(tag).to_string()
        } else {
            tag.to_string()
        }
    }

    /// Every table's figures, by tag.
    pub fn tables(&self) -> Vec<(u8, Arc<TableFigures>)> {
        self.tables.lock().clone()
    }

    /// Point reads of all the tables: (answered from memory, from RocksDB).
    pub fn reads(&self) -> (u64, u64) {
        self.tables.lock().iter().fold((0, 0), |(h, m), (_, t)| {
            (
                h + t.hits.load(Ordering::Relaxed),
                m + t.misses.load(Ordering::Relaxed),
            )
        })
    }
}

/// A deleted range of table keys, `[start, end)`; `end` `None`: to the end of the table.
type KeyRange = (Vec<u8>, Option<Vec<u8>>);

/// A [`KeyRange`], borrowed.
type RangeRef<'a> = (&'a [u8], Option<&'a [u8]>);

/// A layer's deleted ranges: disjoint, by start, overlapping and touching ranges merged, so that
/// a lookup costs one search however many range deletes the layer took (an operator that
/// expires state by watermark deletes a range per key group at every watermark).
#[derive(Default)]
struct Ranges(BTreeMap<Vec<u8>, Option<Vec<u8>>>);

impl Ranges {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds `[lo, hi)` (`hi` `None`: to the end of the table).
    fn insert(&mut self, (mut lo, mut hi): KeyRange) {
        // The ranges that overlap or touch `[lo, hi)`: the last starting at or before `lo`, and
        // every one starting in `(lo, hi]`.
        let mut merged: Vec<Vec<u8>> = Vec::new();
        if let Some((start, end)) = self
            .0
            .range::<[u8], _>((Unbounded, Included(lo.as_slice())))
            .next_back()
            && end
                .as_ref()
                .is_none_or(|end| end.as_slice() >= lo.as_slice())
        {
            merged.push(start.clone());
        }
        let after = (
            Excluded(lo.as_slice()),
            hi.as_deref().map_or(Unbounded, Included),
        );
        merged.extend(
            self.0
                .range::<[u8], _>(after)
                .map(|(start, _)| start.clone()),
        );
        for start in merged {
            if let Some(end) = self.0.remove(&start) {
                if start < lo {
                    lo = start;
                }
                hi = match (hi, end) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
            }
        }
        self.0.insert(lo, hi);
    }

    fn covers(&self, key: &[u8]) -> bool {
        self.0
            .range::<[u8], _>((Unbounded, Included(key)))
            .next_back()
            .is_some_and(|(_, end)| end.as_ref().is_none_or(|end| key < end.as_slice()))
    }

    /// The ranges overlapping `[lo, hi)`.
    fn overlapping<'a>(
        &'a self,
        lo: &[u8],
        hi: Option<&[u8]>,
    ) -> Vec<(&'a [u8], Option<&'a [u8]>)> {
        self.0
            .iter()
            .filter(|(start, end)| {
                hi.is_none_or(|hi| start.as_slice() < hi)
                    && end.as_ref().is_none_or(|end| end.as_slice() > lo)
            })
            .map(|(start, end)| (start.as_slice(), end.as_deref()))
            .collect()
    }

    fn iter(&self) -> impl Iterator<Item = (&Vec<u8>, &Option<Vec<u8>>)> {
        self.0.iter()
    }
}

/// Writes over the state below them: the dirty writes, or one checkpointed epoch's.
#[derive(Default)]
struct Layer {
    /// Puts, and deletes (`None`), by table key. Each is newer than every range in `ranges`.
    points: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Deleted ranges.
    ranges: Ranges,
    /// Memory of `points` and `ranges`.
    bytes: usize,
}

impl Layer {
    fn is_empty(&self) -> bool {
        self.points.is_empty() && self.ranges.is_empty()
    }

    /// What this layer says about `key`: its value or `None` (deleted), or nothing if it does
    /// not know the key.
    fn lookup(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        if let Some(value) = self.points.get(key) {
            return Some(value.as_deref());
        }
        self.ranges.covers(key).then_some(None)
    }
}

fn covers((start, end): &RangeRef<'_>, key: &[u8]) -> bool {
    key >= *start && end.is_none_or(|end| key < end)
}

fn bounds<'a>(lo: &'a [u8], hi: Option<&'a [u8]>) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    (Included(lo), hi.map_or(Unbounded, Excluded))
}

/// What the pending layers, newest first, say about `key` (see [`Layer::lookup`]).
fn lookup_pending<'a>(
    dirty: &'a Layer,
    flushed: &'a VecDeque<(u64, Layer)>,
    key: &[u8],
) -> Option<Option<&'a [u8]>> {
    std::iter::once(dirty)
        .chain(flushed.iter().rev().map(|(_, layer)| layer))
        .find_map(|layer| layer.lookup(key))
}

/// A layer's puts and deletes in a scan's range and order.
type Points<'a> = Box<dyn Iterator<Item = (&'a Vec<u8>, &'a Option<Vec<u8>>)> + 'a>;

fn next_point<'a>(points: &mut Points<'a>) -> Option<(&'a [u8], Option<&'a [u8]>)> {
    points.next().map(|(k, v)| (k.as_slice(), v.as_deref()))
}

fn entry_bytes(key: &[u8], value: Option<&[u8]>) -> usize {
    key.len() + value.map_or(0, <[u8]>::len) + ENTRY_OVERHEAD
}

/// Sets `out` to the table key of `key` in key group `kg`.
fn set_key(out: &mut Vec<u8>, kg: u16, key: &[u8]) {
    out.clear();
    out.extend_from_slice(&kg.to_be_bytes());
    out.extend_from_slice(key);
}

/// The table keys `[lo, hi)` of `[start, end)` in key group `kg` (`end` `None`: the group's end).
fn group_range(kg: u16, start: &[u8], end: Option<&[u8]>) -> KeyRange {
    let mut lo = Vec::with_capacity(2 + start.len());
    set_key(&mut lo, kg, start);
    let hi = match end {
        Some(end) => {
            let mut hi = Vec::with_capacity(2 + end.len());
            set_key(&mut hi, kg, end);
            Some(hi)
        }
        None => kg.checked_add(1).map(|next| next.to_be_bytes().to_vec()),
    };
    (lo, hi)
}

/// The write time and value of a value written with [`StateTable::put_at`].
fn split_time(stored: &[u8]) -> Result<(u64, &[u8])> {
    let (time, value) = stored
        .split_first_chunk::<TIME_BYTES>()
        .ok_or_else(|| EngineError::Corrupt("state value without a write time".into()))?;
    Ok((u64::from_be_bytes(*time), value))
}

/// A clean entry: RocksDB's value of its key (`None`: absent).
struct Cached {
    value: Option<Vec<u8>>,
    /// Read since the CLOCK hand last passed: spared once.
    referenced: bool,
}

/// What an operator instance's state tables cache unless the job says otherwise (64 MiB).
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// What a write's caller knows of the key's current value: its length, for the state size.
#[derive(Debug, Clone, Copy)]
enum Before {
    /// Nothing: memory (pending layers, cache) is searched.
    Unknown,
    /// The length RocksDB holds, used when memory does not know the key.
    Stored(usize),
    /// The current length, whatever memory holds.
    Known(Option<usize>),
}

/// One state table of one operator instance; see the module documentation.
pub struct StateTable {
    store: StateStore,
    /// Every stored key of the table starts with it, followed by the table key.
    prefix: Vec<u8>,
    key_groups: Range<u16>,
    /// The job's last committed epoch, stored by the runtime.
    committed: Arc<AtomicU64>,
    /// Budget of `cached_bytes`.
    budget: usize,
    /// What the cache may hold now: `budget`, or less while the process's caches together are
    /// over the shared limit (see [`super::memory`]); updated at each checkpoint.
    limit: usize,
    /// `cached_bytes`, as the shared pool counts it.
    charge: Charge,
    ttl: Option<u64>,
    /// The table key where the next [`StateTable::sweep_expired`] resumes (`None`: the start).
    sweep_from: Option<Vec<u8>>,
    dirty: Layer,
    /// Checkpointed epochs not committed yet, oldest first.
    flushed: VecDeque<(u64, Layer)>,
    /// Clean entries; never a key that a pending layer decides.
    cache: BTreeMap<Vec<u8>, Cached>,
    cached_bytes: usize,
    /// Where the CLOCK sweep resumes (after this table key).
    hand: Vec<u8>,
    /// The table key of the current call, kept to spare an allocation per access.
    scratch: Vec<u8>,
    /// The value being written by [`StateTable::put_at`], kept for the same reason.
    value_buf: Vec<u8>,
    /// Estimate of the stored bytes: see [`StateTable::bytes`].
    stored_bytes: i64,
    stats: TableStats,
    /// Where [`StateTable::checkpoint`] publishes the table's figures, and the reads it
    /// published.
    figures: Option<Arc<TableFigures>>,
    published: (u64, u64),
}

impl std::fmt::Debug for StateTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateTable")
            .field("prefix", &self.prefix)
            .field("key_groups", &self.key_groups)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl StateTable {
    /// A table whose stored keys all start with `prefix` (all instances' keys; no other key
    /// does), for the key groups `key_groups` this instance owns. `committed` is the job's last
    /// committed epoch, which the runtime stores after each commit; `cache_bytes` is the budget
    /// of cached clean entries. Reads nothing.
    pub fn new(
        store: StateStore,
        prefix: Vec<u8>,
        key_groups: Range<u16>,
        committed: Arc<AtomicU64>,
        cache_bytes: usize,
    ) -> Self {
        Self {
            store,
            prefix,
            key_groups,
            committed,
            budget: cache_bytes,
            limit: cache_bytes,
            charge: Charge::default(),
            ttl: None,
            sweep_from: None,
            dirty: Layer::default(),
            flushed: VecDeque::new(),
            cache: BTreeMap::new(),
            cached_bytes: 0,
            hand: Vec::new(),
            scratch: Vec::new(),
            value_buf: Vec::new(),
            stored_bytes: 0,
            stats: TableStats::default(),
            figures: None,
            published: (0, 0),
        }
    }

    /// Publishes the table's point reads and sizes into `figures` at every checkpoint (its
    /// operator's metrics).
    pub fn with_figures(mut self, figures: Arc<TableFigures>) -> Self {
        self.figures = Some(figures);
        self
    }

    /// Counts the cache in `memory` instead of the process's shared pool (tests).
    pub fn with_memory(mut self, memory: &'static super::memory::StateMemory) -> Self {
        self.charge = Charge::new(memory);
        self
    }

    /// Entries written with [`StateTable::put_at`] at time `t` expire at `t + ttl` (any unit,
    /// as long as the caller passes times in it).
    pub fn with_ttl(mut self, ttl: u64) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The key groups this instance owns.
    pub fn key_groups(&self) -> Range<u16> {
        self.key_groups.clone()
    }

    /// The value of `key` in key group `kg`, as of all writes so far.
    pub fn get(&mut self, kg: u16, key: &[u8]) -> Result<Option<&[u8]>> {
        debug_assert!(self.key_groups.contains(&kg), "key group {kg} not owned");
        self.settle();
        set_key(&mut self.scratch, kg, key);
        if let Some(found) = lookup_pending(&self.dirty, &self.flushed, &self.scratch) {
            self.stats.hits += 1;
            return Ok(found);
        }
        if let Some(cached) = self.cache.get_mut(self.scratch.as_slice()) {
            cached.referenced = true;
            self.stats.hits += 1;
        } else {
            self.stats.misses += 1;
            let value = self.store.get(&self.stored_key(&self.scratch))?;
            self.cached_bytes += entry_bytes(&self.scratch, value.as_deref());
            let cached = Cached {
                value,
                referenced: false,
            };
            self.cache.insert(self.scratch.clone(), cached);
        }
        // A second search on a hit: returning the first one's borrow would keep `self.cache`
        // borrowed on the miss path too.
        Ok(self
            .cache
            .get(self.scratch.as_slice())
            .and_then(|c| c.value.as_deref()))
    }

    /// The values of `keys` (key group, key), in order; the keys not in memory are read with one
    /// RocksDB call.
    pub fn multi_get(&mut self, keys: &[(u16, &[u8])]) -> Result<Vec<Option<&[u8]>>> {
        self.settle();
        let mut missing = Vec::new();
        for &(kg, key) in keys {
            debug_assert!(self.key_groups.contains(&kg), "key group {kg} not owned");
            set_key(&mut self.scratch, kg, key);
            if lookup_pending(&self.dirty, &self.flushed, &self.scratch).is_some() {
                self.stats.hits += 1;
            } else if let Some(cached) = self.cache.get_mut(self.scratch.as_slice()) {
                cached.referenced = true;
                self.stats.hits += 1;
            } else {
                missing.push(self.scratch.clone());
            }
        }
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            let stored: Vec<Vec<u8>> = missing.iter().map(|k| self.stored_key(k)).collect();
            let values = self.store.multi_get(&stored)?;
            self.stats.misses += missing.len() as u64;
            for (key, value) in missing.into_iter().zip(values) {
                self.cached_bytes += entry_bytes(&key, value.as_deref());
                let cached = Cached {
                    value,
                    referenced: false,
                };
                self.cache.insert(key, cached);
            }
        }
        let (dirty, flushed, cache) = (&self.dirty, &self.flushed, &self.cache);
        let mut key = Vec::new();
        Ok(keys
            .iter()
            .map(|&(kg, k)| {
                set_key(&mut key, kg, k);
                lookup_pending(dirty, flushed, &key)
                    .unwrap_or_else(|| cache.get(key.as_slice()).and_then(|c| c.value.as_deref()))
            })
            .collect())
    }

    /// Sets `key` in key group `kg` to `value`.
    pub fn put(&mut self, kg: u16, key: &[u8], value: &[u8]) {
        self.write(kg, key, Some(value));
    }

    /// Removes `key` from key group `kg`.
    pub fn delete(&mut self, kg: u16, key: &[u8]) {
        self.write(kg, key, None);
    }

    /// [`StateTable::put`] of a key that has never been written or read: a new, unique key
    /// (a join row's sequence). Nothing in memory is searched for an older value, so the write
    /// costs one insertion.
    pub fn insert_new(&mut self, kg: u16, key: &[u8], value: &[u8]) {
        debug_assert!(self.key_groups.contains(&kg), "key group {kg} not owned");
        set_key(&mut self.scratch, kg, key);
        let key = self.scratch.as_slice();
        debug_assert!(
            lookup_pending(&self.dirty, &self.flushed, key).is_none()
                && !self.cache.contains_key(key),
            "a new key is known already"
        );
        self.stored_bytes += (key.len() + value.len()) as i64;
        self.dirty.bytes += entry_bytes(key, Some(value));
        self.dirty.points.insert(key.to_vec(), Some(value.to_vec()));
    }

    /// Appends `bytes` to the value of `key` in key group `kg`, which this epoch wrote and has
    /// not checkpointed yet: an operator that keeps an epoch's rows of one key in one entry
    /// grows it in place. Returns false, writing nothing, when the dirty layer holds no value
    /// for the key.
    pub fn append_dirty(&mut self, kg: u16, key: &[u8], bytes: &[u8]) -> bool {
        debug_assert!(self.key_groups.contains(&kg), "key group {kg} not owned");
        set_key(&mut self.scratch, kg, key);
        match self.dirty.points.get_mut(self.scratch.as_slice()) {
            Some(Some(value)) => {
                value.extend_from_slice(bytes);
                self.dirty.bytes += bytes.len();
                self.stored_bytes += bytes.len() as i64;
                true
            }
            _ => false,
        }
    }

    /// [`StateTable::insert_new`] of a value written at time `now` (see
    /// [`StateTable::put_at`]).
    pub fn insert_new_at(&mut self, kg: u16, key: &[u8], value: &[u8], now: u64) {
        self.write_timed(value, now, |table, stored| {
            table.insert_new(kg, key, stored)
        });
    }

    /// [`StateTable::put`] of a key whose current value the caller knows (`before`: its
    /// length, `None` if absent): the search of the flushed layers for the old value's size
    /// (for [`StateTable::bytes`]) is spared. An operator that keeps its state decoded in
    /// memory writes with it.
    pub fn put_known(&mut self, kg: u16, key: &[u8], value: &[u8], before: Option<usize>) {
        self.write_over(kg, key, Some(value), Before::Known(before));
    }

    /// [`StateTable::delete`] of a key whose current value the caller knows (see
    /// [`StateTable::put_known`]).
    pub fn delete_known(&mut self, kg: u16, key: &[u8], before: Option<usize>) {
        self.write_over(kg, key, None, Before::Known(before));
    }

    fn write(&mut self, kg: u16, key: &[u8], value: Option<&[u8]>) {
        self.write_over(kg, key, value, Before::Unknown);
    }

    /// [`StateTable::write`], told what the caller knows of the key's current value (for
    /// [`StateTable::bytes`]).
    fn write_over(&mut self, kg: u16, key: &[u8], value: Option<&[u8]>, before: Before) {
        debug_assert!(self.key_groups.contains(&kg), "key group {kg} not owned");
        set_key(&mut self.scratch, kg, key);
        let key = self.scratch.as_slice();
        let new = value.map_or(0, |v| key.len() + v.len()) as i64;
        let layer = &mut self.dirty;
        // Most writes are of a key written before in the same epoch: one search.
        if let Some(slot) = layer.points.get_mut(key) {
            let old = slot.as_ref().map_or(0, |v| key.len() + v.len()) as i64;
            self.stored_bytes += new - old;
            layer.bytes += entry_bytes(key, value);
            layer.bytes -= entry_bytes(key, slot.as_deref());
            match (slot.as_mut(), value) {
                (Some(old), Some(value)) => {
                    old.clear();
                    old.extend_from_slice(value);
                }
                _ => *slot = value.map(<[u8]>::to_vec),
            }
            return;
        }
        // The dirty layer does not know the key. The old value's size: what the caller knows,
        // else the newest flushed layer that knows the key, else the cache (whose entry the
        // write replaces), else what the caller read from RocksDB.
        let cached = self.cache.remove(key);
        if let Some(c) = &cached {
            self.cached_bytes -= entry_bytes(key, c.value.as_deref());
        }
        let size = |v: &[u8]| key.len() + v.len();
        let old = if layer.ranges.covers(key) {
            None
        } else {
            match before {
                Before::Known(len) => len.map(|v| key.len() + v),
                Before::Unknown | Before::Stored(_) => {
                    match self.flushed.iter().rev().find_map(|(_, l)| l.lookup(key)) {
                        Some(old) => old.map(size),
                        None => match (&cached, before) {
                            (Some(c), _) => c.value.as_deref().map(size),
                            (None, Before::Stored(len)) => Some(key.len() + len),
                            (None, _) => None,
                        },
                    }
                }
            }
        };
        self.stored_bytes += new - old.unwrap_or(0) as i64;
        let layer = &mut self.dirty;
        layer.bytes += entry_bytes(key, value);
        layer.points.insert(key.to_vec(), value.map(<[u8]>::to_vec));
    }

    /// Removes every entry of key group `kg` whose key lies in `[start, end)` (`end` `None`: to
    /// the end of the group; nothing if `end <= start`).
    pub fn delete_range(&mut self, kg: u16, start: &[u8], end: Option<&[u8]>) {
        debug_assert!(self.key_groups.contains(&kg), "key group {kg} not owned");
        let range = group_range(kg, start, end);
        let (lo, hi) = (range.0.as_slice(), range.1.as_deref());
        if hi.is_some_and(|hi| hi <= lo) {
            return;
        }
        let points: Vec<Vec<u8>> = (self.dirty.points.range::<[u8], _>(bounds(lo, hi)))
            .map(|(k, _)| k.clone())
            .collect();
        for key in points {
            if let Some(value) = self.dirty.points.remove(&key) {
                self.dirty.bytes -= entry_bytes(&key, value.as_deref());
                self.stored_bytes -= value.map_or(0, |v| key.len() + v.len()) as i64;
            }
        }
        let cached: Vec<Vec<u8>> = (self.cache.range::<[u8], _>(bounds(lo, hi)))
            .map(|(k, _)| k.clone())
            .collect();
        for key in cached {
            if let Some(c) = self.cache.remove(&key) {
                self.cached_bytes -= entry_bytes(&key, c.value.as_deref());
                self.stored_bytes -= c.value.map_or(0, |v| key.len() + v.len()) as i64;
            }
        }
        self.dirty.bytes += entry_bytes(lo, hi);
        self.dirty.ranges.insert(range);
    }

    /// Calls `f(key, value)` for the entries of key group `kg` whose key starts with `prefix`,
    /// in key order (see [`StateTable::scan`]).
    pub fn scan_prefix(
        &self,
        kg: u16,
        prefix: &[u8],
        direction: Direction,
        f: impl FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>>,
    ) -> Result<()> {
        self.scan(kg, prefix, prefix_end(prefix).as_deref(), direction, f)
    }

    /// Calls `f(key, value)` for the entries of key group `kg` whose key lies in `[start, end)`
    /// (`end` `None`: to the end of the group; none if `end <= start`), in key order or its
    /// reverse, as of all writes so
    /// far: dirty and flushed writes merged over RocksDB, deletes hiding what is below them. `f`
    /// may stop the scan.
    pub fn scan(
        &self,
        kg: u16,
        start: &[u8],
        end: Option<&[u8]>,
        direction: Direction,
        f: impl FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>>,
    ) -> Result<()> {
        self.scans().scan(kg, start, end, direction, f)
    }

    /// Scans of this table that share one RocksDB iterator: an operator that reads the entries
    /// of many keys for one batch seeks it for each, rather than opening an iterator per key
    /// (which costs as much as the seek). Writes wait until the scans are dropped.
    pub fn scans(&self) -> Scans<'_> {
        Scans {
            table: self,
            rocks: None,
        }
    }

    /// [`StateTable::scan`] over the table keys (key group and key) in `[lo, hi)`, which may
    /// span key groups; `f` gets each entry's table key.
    fn scan_table_keys(
        &self,
        lo: &[u8],
        hi: Option<&[u8]>,
        direction: Direction,
        f: impl FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>>,
    ) -> Result<()> {
        self.scans().scan_table_keys(lo, hi, direction, f)
    }
}

/// Scans of one [`StateTable`] over one RocksDB iterator; see [`StateTable::scans`].
pub struct Scans<'t> {
    table: &'t StateTable,
    /// Bounded by the table's prefix; opened by the first scan.
    rocks: Option<Cursor<'t>>,
}

impl<'t> Scans<'t> {
    /// [`StateTable::scan_prefix`].
    pub fn scan_prefix(
        &mut self,
        kg: u16,
        prefix: &[u8],
        direction: Direction,
        f: impl FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>>,
    ) -> Result<()> {
        self.scan(kg, prefix, prefix_end(prefix).as_deref(), direction, f)
    }

    /// [`StateTable::scan`].
    pub fn scan(
        &mut self,
        kg: u16,
        start: &[u8],
        end: Option<&[u8]>,
        direction: Direction,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>>,
    ) -> Result<()> {
        debug_assert!(
            self.table.key_groups.contains(&kg),
            "key group {kg} not owned"
        );
        let (lo, hi) = group_range(kg, start, end);
        self.scan_table_keys(&lo, hi.as_deref(), direction, |key, value| {
            f(key.get(2..).unwrap_or_default(), value)
        })
    }

    fn scan_table_keys(
        &mut self,
        lo: &[u8],
        hi: Option<&[u8]>,
        direction: Direction,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>>,
    ) -> Result<()> {
        let table = self.table;
        let reverse = direction == Direction::Reverse;
        if hi.is_some_and(|hi| hi <= lo) {
            return Ok(());
        }
        let layers: Vec<&Layer> = std::iter::once(&table.dirty)
            .chain(table.flushed.iter().rev().map(|(_, layer)| layer))
            .collect();
        let mut iters: Vec<Points<'_>> = layers
            .iter()
            .map(|layer| {
                let points = layer.points.range::<[u8], _>(bounds(lo, hi));
                if reverse {
                    Box::new(points.rev()) as Points<'_>
                } else {
                    Box::new(points)
                }
            })
            .collect();
        let ranges: Vec<Vec<RangeRef<'_>>> = layers
            .iter()
            .map(|layer| layer.ranges.overlapping(lo, hi))
            .collect();
        let mut heads: Vec<_> = iters.iter_mut().map(next_point).collect();

        let store_lo = table.stored_key(lo);
        let store_hi = hi.map(|hi| table.stored_key(hi));
        let rocks = self.rocks.get_or_insert_with(|| {
            let end = prefix_end(&table.prefix);
            table
                .store
                .unpositioned_cursor(&table.prefix, end.as_deref())
        });
        rocks.seek(&store_lo, store_hi.as_deref(), reverse);
        let plen = table.prefix.len();
        loop {
            // The cursor spans the table: the scan's bounds are checked here.
            let below = rocks
                .entry()
                .map(|(k, v)| (k.get(plen..).unwrap_or_default(), v))
                .filter(|(k, _)| {
                    if reverse {
                        *k >= lo
                    } else {
                        hi.is_none_or(|hi| *k < hi)
                    }
                });
            let mut best = below.map(|(k, _)| k);
            for &(key, _) in heads.iter().flatten() {
                let first = match best {
                    None => true,
                    Some(best) if reverse => key > best,
                    Some(best) => key < best,
                };
                if first {
                    best = Some(key);
                }
            }
            let Some(best) = best else {
                break;
            };
            // The newest layer that knows `best` decides; RocksDB if none does.
            let decided = heads
                .iter()
                .zip(&ranges)
                .find_map(|(head, ranges)| match head {
                    Some((key, value)) if *key == best => Some(*value),
                    _ => ranges.iter().any(|r| covers(r, best)).then_some(None),
                });
            let value = match decided {
                Some(value) => value,
                None => below.filter(|(k, _)| *k == best).map(|(_, v)| v),
            };
            if let Some(value) = value
                && f(best, value)?.is_break()
            {
                return Ok(());
            }
            for (head, it) in heads.iter_mut().zip(&mut iters) {
                if head.is_some_and(|(key, _)| key == best) {
                    *head = next_point(it);
                }
            }
            if below.is_some_and(|(key, _)| key == best) {
                rocks.advance();
            }
        }
        rocks.status()
    }
}

impl StateTable {
    /// Adds the writes since the last checkpoint to `batch`, epoch `epoch`'s write batch, and
    /// keeps them readable until the job has committed `epoch`.
    pub fn checkpoint(&mut self, epoch: u64, batch: &mut StateBatch) {
        self.settle();
        // The shared pool learns this cache's size once an epoch, and says what it may keep.
        self.limit = self.charge.update(self.cached_bytes, self.budget);
        if self.cached_bytes > self.limit {
            self.evict();
            self.charge.update(self.cached_bytes, self.budget);
        }
        if let Some(figures) = &self.figures {
            let (hits, misses) = (self.stats.hits, self.stats.misses);
            figures.count_reads(hits - self.published.0, misses - self.published.1);
            self.published = (hits, misses);
            let stats = self.stats();
            figures.set_bytes(
                self.bytes(),
                (stats.cached_bytes + stats.pending_bytes) as u64,
            );
        }
        debug_assert!(
            epoch > self.committed.load(Ordering::Acquire),
            "checkpoint of committed epoch {epoch}"
        );
        if self.dirty.is_empty() {
            return;
        }
        let layer = std::mem::take(&mut self.dirty);
        let writes = layer.points.len();
        batch.reserve_exact(layer.bytes + writes * self.prefix.len(), writes);
        // Range deletes first: each of the layer's puts is newer than the ranges covering it.
        for (start, end) in layer.ranges.iter() {
            let end = match end {
                Some(end) => Some(self.stored_key(end)),
                None => prefix_end(&self.prefix),
            };
            batch.delete_range(&self.stored_key(start), end.as_deref());
        }
        let mut stored = self.prefix.clone();
        for (key, value) in &layer.points {
            stored.truncate(self.prefix.len());
            stored.extend_from_slice(key);
            match value {
                Some(value) => batch.put(&stored, value),
                None => batch.delete(&stored),
            }
        }
        self.flushed.push_back((epoch, layer));
    }

    /// Writes `key` in key group `kg` (`None`: deletes it) straight into `batch`, the write batch
    /// of an epoch being checkpointed, without keeping it in memory. For an operator that keeps
    /// its state decoded and writes each changed entry once per epoch, at its checkpoint: it must
    /// not read the key from this table until the job has committed that epoch (see
    /// [`StateTable::committed_epoch`]), nor write the key with the other calls. `before` is the
    /// length of the value it replaces (`None`: absent), for [`StateTable::bytes`].
    pub fn write_behind(
        &mut self,
        batch: &mut StateBatch,
        kg: u16,
        key: &[u8],
        value: Option<&[u8]>,
        before: Option<usize>,
    ) {
        debug_assert!(self.key_groups.contains(&kg), "key group {kg} not owned");
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.prefix);
        self.scratch.extend_from_slice(&kg.to_be_bytes());
        self.scratch.extend_from_slice(key);
        debug_assert!(
            lookup_pending(
                &self.dirty,
                &self.flushed,
                &self.scratch[self.prefix.len()..]
            )
            .is_none(),
            "a key written behind is also pending"
        );
        let size = |len: usize| (2 + key.len() + len) as i64;
        self.stored_bytes += value.map_or(0, |v| size(v.len())) - before.map_or(0, size);
        match value {
            Some(value) => batch.put(&self.scratch, value),
            None => batch.delete(&self.scratch),
        }
    }

    /// Makes room in `batch` for `writes` more [`StateTable::write_behind`] puts whose keys and
    /// values take `bytes` together.
    pub fn reserve_behind(&self, batch: &mut StateBatch, writes: usize, bytes: usize) {
        batch.reserve_exact(writes * (self.prefix.len() + 2) + bytes, writes);
    }

    /// The job's last committed epoch: an entry written behind in an epoch up to it is in
    /// RocksDB.
    pub fn committed_epoch(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// Nothing of this instance's key groups is stored or pending (a fresh table): every key
    /// is absent until written.
    pub fn is_empty(&self) -> Result<bool> {
        if !self.dirty.is_empty() || !self.flushed.is_empty() {
            return Ok(false);
        }
        let mut start = self.prefix.clone();
        start.extend_from_slice(&self.key_groups.start.to_be_bytes());
        let mut end = self.prefix.clone();
        end.extend_from_slice(&self.key_groups.end.to_be_bytes());
        let cursor = self.store.cursor(&start, Some(&end), false);
        let empty = cursor.entry().is_none();
        cursor.status()?;
        Ok(empty)
    }

    /// Approximate bytes (keys and values) of this instance's entries in the store: the bytes
    /// written since the table was created, less the bytes overwritten or deleted that it had in
    /// memory. A restarted table starts from 0, since measuring what it has not read would read
    /// all state.
    pub fn bytes(&self) -> u64 {
        self.stored_bytes.max(0) as u64
    }

    /// Adds `bytes` of entries (table keys and values, as [`StateTable::bytes`] counts them) to
    /// the estimate, or takes them away: an operator that keeps its state decoded counts what
    /// it reads from the store (all of it, if it loads everything at restore) and takes away
    /// what it drops from memory, so the estimate covers at least what it holds.
    pub fn count_stored(&mut self, bytes: i64) {
        self.stored_bytes += bytes;
    }

    /// Cache and memory counters.
    pub fn stats(&self) -> TableStats {
        TableStats {
            cached_bytes: self.cached_bytes,
            pending_bytes: self.dirty.bytes
                + self.flushed.iter().map(|(_, l)| l.bytes).sum::<usize>(),
            pending_epochs: (self.flushed.iter())
                .filter(|(epoch, _)| *epoch > self.committed.load(Ordering::Acquire))
                .count(),
            ..self.stats
        }
    }

    /// Sets `key` in key group `kg` to `value` written at time `now` (see
    /// [`StateTable::with_ttl`]).
    pub fn put_at(&mut self, kg: u16, key: &[u8], value: &[u8], now: u64) {
        self.write_timed(value, now, |table, stored| table.put(kg, key, stored));
    }

    /// Calls `write` with `value` behind its write time `now`, in a buffer kept across calls.
    fn write_timed(&mut self, value: &[u8], now: u64, write: impl FnOnce(&mut Self, &[u8])) {
        let mut stored = std::mem::take(&mut self.value_buf);
        stored.clear();
        stored.extend_from_slice(&now.to_be_bytes());
        stored.extend_from_slice(value);
        write(self, &stored);
        self.value_buf = stored;
    }

    /// The value of `key` in key group `kg` written with [`StateTable::put_at`], unless it
    /// expired by time `now`; an expired entry is deleted.
    pub fn get_at(&mut self, kg: u16, key: &[u8], now: u64) -> Result<Option<&[u8]>> {
        let ttl = self.ttl;
        let live = match self.get(kg, key)? {
            Some(stored) => unexpired(ttl, stored, now)?.is_some(),
            None => return Ok(None),
        };
        if !live {
            self.delete(kg, key);
            return Ok(None);
        }
        match self.get(kg, key)? {
            Some(stored) => unexpired(ttl, stored, now),
            None => Ok(None),
        }
    }

    /// Deletes the entries (written with [`StateTable::put_at`]) that expired by time `now`,
    /// visiting at most `budget` entries in key order across the instance's key groups, from
    /// where the previous sweep stopped, and starting over after the last: repeated calls go
    /// over the whole table, so entries no read ever touches again are deleted too. Returns how
    /// many entries it deleted. Does nothing for a table without a TTL.
    pub fn sweep_expired(&mut self, now: u64, budget: usize) -> Result<usize> {
        let Some(ttl) = self.ttl else {
            return Ok(0);
        };
        let lo = match self.sweep_from.take() {
            Some(from) => from,
            None => self.key_groups.start.to_be_bytes().to_vec(),
        };
        // The end of the instance's last key group: the start of the next one.
        let hi = self.key_groups.end.to_be_bytes();
        let (mut visited, mut expired, mut resume) = (0usize, Vec::new(), None);
        let each = |key: &[u8], value: &[u8]| {
            if visited == budget {
                resume = Some(key.to_vec());
                return Ok(ControlFlow::Break(()));
            }
            visited += 1;
            if unexpired(Some(ttl), value, now)?.is_none() {
                expired.push((key.to_vec(), value.len()));
            }
            Ok(ControlFlow::Continue(()))
        };
        self.scan_table_keys(&lo, Some(&hi), Direction::Forward, each)?;
        self.sweep_from = resume;
        for (key, len) in &expired {
            if let Some((kg, key)) = key.split_first_chunk::<2>() {
                self.write_over(u16::from_be_bytes(*kg), key, None, Before::Stored(*len));
            }
        }
        Ok(expired.len())
    }

    /// The value in `stored` (a value written with [`StateTable::put_at`], as a scan passes it),
    /// or `None` if it expired by time `now`.
    pub fn unexpired<'a>(&self, stored: &'a [u8], now: u64) -> Result<Option<&'a [u8]>> {
        unexpired(self.ttl, stored, now)
    }

    /// `prefix ++ key`, the stored key of a table key.
    fn stored_key(&self, key: &[u8]) -> Vec<u8> {
        let mut stored = Vec::with_capacity(self.prefix.len() + key.len());
        stored.extend_from_slice(&self.prefix);
        stored.extend_from_slice(key);
        stored
    }

    /// Drops the flushed layers the job has committed (their entries become clean cache
    /// entries) and brings the cache back within budget.
    fn settle(&mut self) {
        let committed = self.committed.load(Ordering::Acquire);
        while self.flushed.front().is_some_and(|(e, _)| *e <= committed) {
            let Some((_, layer)) = self.flushed.pop_front() else {
                break;
            };
            if self.budget == 0 {
                // No cache: the committed entries are RocksDB's now, and read from there.
                continue;
            }
            for (key, value) in layer.points {
                // A newer pending write of the key still decides it.
                if lookup_pending(&self.dirty, &self.flushed, &key).is_none() {
                    let (bytes, key_len) = (entry_bytes(&key, value.as_deref()), key.len());
                    let cached = Cached {
                        value,
                        referenced: false,
                    };
                    if let Some(old) = self.cache.insert(key, cached) {
                        // Not reached while the cache holds no key a pending layer decides.
                        self.cached_bytes -= key_len + entry_bytes(&[], old.value.as_deref());
                    }
                    self.cached_bytes += bytes;
                }
            }
        }
        if self.cached_bytes > self.limit {
            self.evict();
        }
    }

    /// CLOCK: sweeps the cache from the hand, sparing (once) entries read since the last sweep,
    /// until it is an eighth below budget (so that sweeps are not per access).
    fn evict(&mut self) {
        let target = self.limit - self.limit / 8;
        let mut victims = Vec::new();
        // Two turns of the clock at most, each in two segments (after the hand, then up to it):
        // the first turn clears every reference bit, so the second finds victims.
        for segment in 0..4 {
            if self.cached_bytes <= target || self.cache.is_empty() {
                break;
            }
            let need = self.cached_bytes - target;
            let range = if segment % 2 == 0 {
                (Excluded(self.hand.as_slice()), Unbounded)
            } else {
                (Unbounded, Included(self.hand.as_slice()))
            };
            let mut freed = 0;
            let mut last = None;
            for (key, cached) in self.cache.range_mut::<[u8], _>(range) {
                if freed >= need {
                    break;
                }
                last = Some(key);
                if cached.referenced {
                    cached.referenced = false;
                } else {
                    freed += entry_bytes(key, cached.value.as_deref());
                    victims.push(key.clone());
                }
            }
            if let Some(last) = last {
                self.hand = last.clone();
            }
            for key in victims.drain(..) {
                if let Some(cached) = self.cache.remove(&key) {
                    self.cached_bytes -= entry_bytes(&key, cached.value.as_deref());
                    self.stats.evictions += 1;
                }
            }
        }
    }
}

fn unexpired(ttl: Option<u64>, stored: &[u8], now: u64) -> Result<Option<&[u8]>> {
    let (written, value) = split_time(stored)?;
    let live = ttl.is_none_or(|ttl| now < written.saturating_add(ttl));
    Ok(live.then_some(value))
}

#[cfg(test)]
mod tests;
