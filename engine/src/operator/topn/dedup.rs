//! Deduplication: the first row of each group by an order, over an append-only input. It is the
//! top-1 `ROW_NUMBER()` of [`super::TopN`] (`WHERE rn = 1`, Flink's deduplication keeping the
//! first or last row per key, `DISTINCT ON`), with the same semantics and output, but state and
//! work made for one row per group, as Flink's deduplicate operators are: a row costs a hash
//! probe, and a write per changed group per epoch.
//!
//! **Semantics.** A group's row is the one whose table key (order key, then the row's encoding,
//! see [`super::super::sorted`]) is smallest; on append-only input a row can only be replaced by
//! one that sorts before it. A batch emits, for each group it changes, the retraction of the row
//! the group had before the batch (if any) and the row it has after, retractions first.
//!
//! **State.** Each group is a *slot* in memory: its table key (group, order key, row), found by
//! a hash of the group. A slot changed during an epoch is written at the epoch's checkpoint,
//! once, straight into the epoch's write batch ([`StateTable::write_behind`]): table `d`, key the
//! group, value the rest of the table key. Slots are the cache: they count against the shared
//! state-memory limit and, over their share, the ones whose last write the job has committed are
//! dropped and read again (one batched read per batch) when their group comes back. A table
//! found empty at restore, whose slots were never dropped, knows every group: a group without a
//! slot is new, and costs no read. Nothing is read at restart.
//!
//! [`StateTable::write_behind`]: crate::state::table::StateTable::write_behind

use std::hash::BuildHasher;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use hashbrown::HashTable;

use super::super::sorted::{self, SortedRows, Table, row_of};
use super::super::{Operator, StateScope};
use super::{Output, RankKind, TopNSpec};
use crate::changelog::{ChangeBatch, Op};
use crate::state::memory::Charge;
use crate::state::{StateBatch, keys};
use crate::{EngineError, Result};

/// Memory a slot costs besides itself and a key too long to keep inline: its index entry.
const INDEX_BYTES: usize = 16;

/// Key bytes a slot keeps inline: a few numbers and a short string.
const INLINE_KEY: usize = 64;

/// A slot's key, inline up to [`INLINE_KEY`] bytes: finding a group and comparing its row then
/// touch the slot alone, not a heap block as well (over a million groups, each is a cache
/// miss, and those misses were most of a row's cost).
type Key = smallvec::SmallVec<[u8; INLINE_KEY]>;

/// A row's slot is not known yet.
const UNKNOWN: u32 = u32::MAX;

/// One group's row.
#[derive(Debug)]
struct Slot {
    hash: u64,
    kg: u16,
    /// The group's table key: the partition key (`group` bytes), order key, row, row length.
    key: Key,
    group: u32,
    /// Changed since the last checkpoint.
    dirty: bool,
    /// The epoch whose checkpoint last wrote it (0: none since this instance started).
    written: u64,
    /// The batch that last changed it (see `Dedup::batch`).
    touched: u64,
    /// The length of the value the store holds for it (`None`: nothing).
    stored: Option<usize>,
}

impl Slot {
    fn group(&self) -> &[u8] {
        self.key.get(..self.group as usize).unwrap_or_default()
    }

    fn value(&self) -> &[u8] {
        self.key.get(self.group as usize..).unwrap_or_default()
    }

    fn bytes(&self) -> usize {
        let spilled = if self.key.spilled() {
            self.key.capacity()
        } else {
            0
        };
        std::mem::size_of::<Self>() + spilled + INDEX_BYTES
    }
}

/// The immutable part of an operator, shared by its instances.
#[derive(Debug)]
struct Shared {
    spec: TopNSpec,
    rows: SortedRows,
    schema: SchemaRef,
}

/// The deduplication operator; see the module documentation.
pub struct Dedup {
    shared: Arc<Shared>,
    table: Table,
    /// Indices into `slots`, by the hash of `kg ++ group key`.
    index: HashTable<u32>,
    slots: Vec<Slot>,
    /// Slots no group uses.
    free: Vec<u32>,
    /// Slots changed since the last checkpoint.
    dirty: Vec<u32>,
    /// The dirty slots' sort keys at a checkpoint, kept to spare the allocation.
    order: Vec<(u128, u32)>,
    /// Every group the table holds has a slot: a group without one is new.
    pub(super) complete: bool,
    pub(super) bytes: usize,
    budget: usize,
    /// What the slots may take now: `budget`, or less while the process's state caches are over
    /// their shared limit; updated at each checkpoint.
    limit: usize,
    charge: Charge,
    /// Batches processed: marks the slots a batch changed.
    batch: u64,
    hasher: foldhash::fast::FixedState,
    groups: Vec<u16>,
    slot_of: Vec<u32>,
    touched: Vec<u32>,
}

impl Dedup {
    /// Deduplication per `spec` (a top-1 `ROW_NUMBER()` over an append-only input without a
    /// window close), emitting `schema` (the row's columns and the row number, 1).
    pub fn try_new(spec: TopNSpec, schema: SchemaRef) -> Result<Self> {
        let top1 = spec.rank == RankKind::RowNumber && spec.lo == 1 && spec.hi == 1;
        if !top1 || !spec.append_only || spec.close.is_some() {
            return Err(EngineError::Internal(
                "deduplication of something other than the first row of an append-only input"
                    .into(),
            ));
        }
        if schema.fields().len() != spec.rows.width + 1 {
            return Err(EngineError::Internal(format!(
                "deduplication of rows of {} columns with an output of {} columns",
                spec.rows.width,
                schema.fields().len(),
            )));
        }
        let rows = SortedRows::try_new(spec.rows.clone())?;
        Ok(Self::with(Arc::new(Shared { spec, rows, schema })))
    }

    fn with(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            table: Table::default(),
            index: HashTable::new(),
            slots: Vec::new(),
            free: Vec::new(),
            dirty: Vec::new(),
            order: Vec::new(),
            complete: false,
            bytes: 0,
            budget: 0,
            limit: 0,
            charge: Charge::default(),
            batch: 0,
            hasher: foldhash::fast::FixedState::default(),
            groups: Vec::new(),
            slot_of: Vec::new(),
            touched: Vec::new(),
        }
    }

    fn hash(&self, kg: u16, group: &[u8]) -> u64 {
        self.hasher.hash_one((kg, group))
    }

    /// The slot of `group` in key group `kg`, if it has one.
    fn find(&self, hash: u64, kg: u16, group: &[u8]) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .find(hash, |&i| {
                let s = &slots[i as usize];
                s.hash == hash && s.kg == kg && s.group() == group
            })
            .copied()
    }

    /// A new slot for `group` (the first `group` bytes of `key`), holding `key`.
    fn insert(&mut self, hash: u64, kg: u16, key: &[u8], group: usize, stored: bool) -> u32 {
        let slot = Slot {
            hash,
            kg,
            key: Key::from_slice(key),
            group: group as u32,
            dirty: false,
            written: 0,
            touched: 0,
            stored: stored.then(|| key.len() - group),
        };
        self.bytes += slot.bytes();
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        let slots = &self.slots;
        self.index
            .insert_unique(hash, i, |&j| slots[j as usize].hash);
        i
    }

    /// Finds the slot of each row of the batch (`encoded`, in key groups `groups`) into
    /// `slot_of` (`UNKNOWN` for a group without one), after reading the groups the slots do not
    /// hold from the table, with one batched read.
    fn resolve(&mut self, encoded: &sorted::Encoded, groups: &[u16]) -> Result<()> {
        let mut slot_of = std::mem::take(&mut self.slot_of);
        slot_of.clear();
        let mut missing: Vec<(u16, &[u8])> = Vec::new();
        for (row, &kg) in groups.iter().enumerate() {
            let group = encoded.partition(row);
            let found = self.find(self.hash(kg, group), kg, group);
            if found.is_none() && !self.complete {
                missing.push((kg, group));
            }
            slot_of.push(found.unwrap_or(UNKNOWN));
        }
        if !missing.is_empty() {
            missing.sort_unstable();
            missing.dedup();
            let stored: Vec<Option<Vec<u8>>> = (self.table.get_mut()?.multi_get(&missing)?)
                .into_iter()
                .map(|v| v.map(<[u8]>::to_vec))
                .collect();
            let mut key = Vec::new();
            for (&(kg, group), value) in missing.iter().zip(stored) {
                if let Some(value) = value {
                    key.clear();
                    key.extend_from_slice(group);
                    key.extend_from_slice(&value);
                    self.insert(self.hash(kg, group), kg, &key, group.len(), true);
                }
            }
            for (row, &kg) in groups.iter().enumerate() {
                if slot_of[row] == UNKNOWN {
                    let group = encoded.partition(row);
                    slot_of[row] = self
                        .find(self.hash(kg, group), kg, group)
                        .unwrap_or(UNKNOWN);
                }
            }
        }
        self.slot_of = slot_of;
        Ok(())
    }

    /// Drops slots whose last write the job has committed until the slots take at most
    /// `target` bytes.
    fn shrink(&mut self, target: usize) -> Result<()> {
        let committed = self.table.get()?.committed_epoch();
        for i in 0..self.slots.len() {
            if self.bytes <= target {
                break;
            }
            let s = &self.slots[i];
            if s.key.is_empty() || s.dirty || s.written > committed {
                continue;
            }
            let (hash, bytes) = (s.hash, s.bytes());
            if let Ok(entry) = self.index.find_entry(hash, |&j| j as usize == i) {
                entry.remove();
            }
            self.slots[i] = Slot {
                hash: 0,
                kg: 0,
                key: Key::new(),
                group: 0,
                dirty: false,
                written: 0,
                touched: 0,
                stored: None,
            };
            self.free.push(i as u32);
            self.bytes -= bytes;
            self.complete = false;
        }
        Ok(())
    }
}

impl Operator for Dedup {
    fn name(&self) -> &'static str {
        "Dedup"
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.shared.schema)
    }

    fn fork(&self) -> Result<Box<dyn Operator>> {
        Ok(Box::new(Self::with(Arc::clone(&self.shared))))
    }

    fn restore(&mut self, scope: &StateScope) -> Result<()> {
        // The slots are the cache: the table caches nothing.
        self.table.open(scope, b'd', 0);
        self.budget = scope.cache_bytes;
        self.limit = self.budget;
        self.index.clear();
        self.slots.clear();
        self.free.clear();
        self.dirty.clear();
        self.bytes = 0;
        self.complete = self.table.get()?.is_empty()?;
        Ok(())
    }

    fn process(&mut self, _input: usize, batch: ChangeBatch) -> Result<Vec<ChangeBatch>> {
        if batch.ops.iter().any(|op| *op != Op::Insert) {
            return Err(EngineError::Internal(
                "deduplication over an input that is not append-only".into(),
            ));
        }
        let n = batch.data.num_rows();
        if n == 0 {
            return Ok(Vec::new());
        }
        let shared = Arc::clone(&self.shared);
        let mut groups = std::mem::take(&mut self.groups);
        let encoded = shared.rows.encode(&batch.data, &mut groups)?;
        self.resolve(&encoded, &groups)?;
        self.batch += 1;
        let this = self.batch;
        let mut out = Output {
            deletes: shared.rows.row_codec.decoder(None, n),
            delete_ranks: Vec::new(),
            inserts: shared.rows.row_codec.decoder(None, n),
            insert_ranks: Vec::new(),
        };
        let mut touched = std::mem::take(&mut self.touched);
        touched.clear();
        for (row, &kg) in groups.iter().enumerate() {
            let key = encoded.key(row);
            let mut i = self.slot_of[row];
            if i == UNKNOWN {
                // A group seen for the first time (or created by an earlier row of the batch).
                let group = encoded.partition(row);
                let hash = self.hash(kg, group);
                if let Some(found) = self.find(hash, kg, group) {
                    i = found;
                } else {
                    i = self.insert(hash, kg, key, group.len(), false);
                    let s = &mut self.slots[i as usize];
                    s.touched = this;
                    touched.push(i);
                    continue;
                }
            }
            let s = &mut self.slots[i as usize];
            // The groups are equal: the rest of the keys decides.
            let g = s.group as usize;
            if key.get(g..).unwrap_or_default() >= s.value() {
                continue;
            }
            if s.touched != this {
                // The row the group had before the batch goes.
                s.touched = this;
                touched.push(i);
                out.push(row_of(&s.key)?, 1, -1)?;
            }
            self.bytes -= s.bytes();
            s.key.clear();
            s.key.extend_from_slice(key);
            self.bytes += s.bytes();
        }
        for &i in &touched {
            let s = &mut self.slots[i as usize];
            out.push(row_of(&s.key)?, 1, 1)?;
            if !s.dirty {
                s.dirty = true;
                self.dirty.push(i);
            }
        }
        self.touched = touched;
        self.groups = groups;
        out.finish(&shared.schema)
    }

    fn checkpoint(
        &mut self,
        epoch: u64,
        _scope: &StateScope,
        batch: &mut StateBatch,
    ) -> Result<()> {
        let table = self.table.get_mut()?;
        // In key order: RocksDB inserts sorted keys into its memtable far faster than random
        // ones (each insert starts where the last one ended), and the memtable inserts were
        // most of a deduplication's time.
        // Sorted by a number made of the key group and the key's first bytes (see
        // `keys::head`), whole keys compared only where those tie.
        let slots = &self.slots;
        self.order.clear();
        (self.order).extend(self.dirty.iter().map(|&i| {
            let s = &slots[i as usize];
            (keys::head(s.kg, s.group()), i)
        }));
        self.order.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0).then_with(|| {
                let (x, y) = (&slots[a.1 as usize], &slots[b.1 as usize]);
                x.group().cmp(y.group())
            })
        });
        self.dirty.clear();
        self.dirty.extend(self.order.iter().map(|&(_, i)| i));
        // Exactly what the writes take, so the epoch's batch never grows by copying itself.
        let keys: usize = self
            .dirty
            .iter()
            .map(|&i| slots[i as usize].key.len())
            .sum();
        table.reserve_behind(batch, self.dirty.len(), keys);
        for &i in &self.dirty {
            let s = &mut self.slots[i as usize];
            let (group, value) = (s.group(), s.value());
            table.write_behind(batch, s.kg, group, Some(value), s.stored);
            s.stored = Some(value.len());
            s.dirty = false;
            s.written = epoch;
        }
        self.dirty.clear();
        self.table.checkpoint(epoch, batch)?;
        // The shared pool learns the slots' size once an epoch, and says what they may take.
        self.limit = self.charge.update(self.bytes, self.budget);
        if self.bytes > self.limit {
            self.shrink(self.limit / 2)?;
            self.charge.update(self.bytes, self.budget);
        }
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.table.bytes()
    }

    fn describe(&self) -> String {
        let spec = &self.shared.spec;
        let (partition, order) = spec.rows.describe();
        let partition = if partition.is_empty() {
            String::new()
        } else {
            format!(" partition by [{partition}]")
        };
        format!(
            "Dedup: first row{partition} order by [{order}]{}; state: one row per group \
             (append-only input)",
            if spec.emit_rank {
                ", row number (1) emitted"
            } else {
                ""
            },
        )
    }
}
