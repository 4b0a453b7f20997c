//! The group table: every live group in a slot, found by its key through a hash index.
//!
//! A slot number is the group's row in every aggregate's state (see [`super::accumulator`]), so
//! a batch updates groups in place: nothing is moved or re-inserted per batch. A vanished group's
//! slot goes on a free list for the next new group. The table also remembers what the next
//! checkpoint must write: the slots changed since the last one (`dirty`) and the stored keys of
//! groups that vanished (`gone`).
//!
//! The table may hold only some of the stored groups (see [`super`]'s memory budget): a group
//! that is [`Groups::evict`]ed leaves memory, not the store, and is read again when it comes
//! back. Until the job commits a deletion, the store still has the deleted group's old value:
//! [`Groups::deleted`] lists those keys, which must not be read from the store.

use std::collections::HashMap;
use std::sync::Arc;

/// The index hashes byte keys once per input row: foldhash, randomly seeded per map, the hasher
/// DataFusion's own hash aggregation uses, instead of std's much slower SipHash.
type FastHash = foldhash::fast::RandomState;

pub(super) struct Slot {
    /// The group's key as a sorted row (empty for a global aggregate), shared with the index.
    pub key: Arc<[u8]>,
    /// All rows of the group, NULLs included.
    pub rows: i64,
    /// The key group of the group's key (see [`crate::keygroup`]).
    pub kg: u16,
    /// Length of the group's stored value as of the last checkpoint (`None`: not stored).
    pub stored: Option<u32>,
    /// Memory the group is counted for (see [`Groups::resident`]); 0 until it is stored.
    cost: u32,
    /// The epoch whose checkpoint wrote the group last (0: none).
    pub written: u64,
    /// Changed since the last checkpoint, and listed in [`Groups::dirty`].
    dirty: bool,
    live: bool,
    /// The last batch that touched the group (see [`Groups::touch`]).
    batch: u64,
    /// 1 + its index among the groups the epoch touched, 0 if untouched (see
    /// [`super::pending`]).
    pub pending: u32,
    /// [`Groups::clock`] when the group was last touched (or created), for the state TTL.
    pub seen: u32,
}

#[derive(Default)]
pub(super) struct Groups {
    index: HashMap<Arc<[u8]>, u32, FastHash>,
    pub slots: Vec<Slot>,
    free: Vec<u32>,
    /// Slots marked dirty since the last checkpoint; may name a slot twice or a freed one.
    dirty: Vec<u32>,
    /// Key group, key and stored value length of each stored group that vanished since the
    /// last checkpoint.
    pub gone: Vec<(u16, Arc<[u8]>, u32)>,
    /// Keys of stored groups that vanished, with the epoch whose checkpoint deletes them
    /// (`u64::MAX`: the next one), until the job commits it; kept only while `reads` is set.
    pub deleted: HashMap<Arc<[u8]>, u64, FastHash>,
    /// Groups are read back from the store (the owner evicts them), so [`Groups::deleted`]
    /// matters; a table that holds every group (a global aggregate) skips it.
    pub reads: bool,
    /// Memory the live groups are counted for, together.
    pub resident: usize,
    /// Seconds since the Unix epoch, as the owner last set it: when groups are seen.
    pub clock: u32,
}

impl Groups {
    /// Number of live groups.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn get(&self, key: &[u8]) -> Option<u32> {
        self.index.get(key).copied()
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.index.contains_key(key)
    }

    /// A new, empty group for `key` (which must not be live); returns its slot.
    pub fn insert(&mut self, key: &[u8], kg: u16) -> u32 {
        let key: Arc<[u8]> = key.into();
        let slot = Slot {
            key: Arc::clone(&key),
            rows: 0,
            kg,
            stored: None,
            cost: 0,
            written: 0,
            dirty: false,
            live: true,
            batch: 0,
            pending: 0,
            seen: self.clock,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = slot;
                id
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(key, id);
        id
    }

    /// Marks slot `id` as touched by batch `batch` (numbered from 1); true on its first touch.
    pub fn touch(&mut self, id: u32, batch: u64) -> bool {
        let slot = &mut self.slots[id as usize];
        let first = slot.batch != batch;
        slot.batch = batch;
        slot.seen = self.clock;
        first
    }

    pub fn mark_dirty(&mut self, id: u32) {
        let slot = &mut self.slots[id as usize];
        if !slot.dirty {
            slot.dirty = true;
            self.dirty.push(id);
        }
    }

    /// Frees slot `id` of a group that vanished, remembering its stored key for deletion. The
    /// caller resets the slot's aggregate state.
    pub fn remove(&mut self, id: u32) {
        self.free_slot(id);
        let slot = &mut self.slots[id as usize];
        if let Some(len) = slot.stored.take() {
            self.gone.push((slot.kg, Arc::clone(&slot.key), len));
            if self.reads {
                self.deleted.insert(Arc::clone(&slot.key), u64::MAX);
            }
        }
    }

    /// Frees slot `id` of a group that stays stored (it leaves memory only). The caller resets
    /// the slot's aggregate state.
    pub fn evict(&mut self, id: u32) {
        self.free_slot(id);
        self.slots[id as usize].stored = None;
    }

    fn free_slot(&mut self, id: u32) {
        let slot = &mut self.slots[id as usize];
        slot.live = false;
        slot.dirty = false;
        self.resident -= std::mem::take(&mut slot.cost) as usize;
        self.index.remove(&slot.key);
        self.free.push(id);
    }

    /// Counts slot `id` for `cost` bytes of memory from now on.
    pub fn set_cost(&mut self, id: u32, cost: usize) {
        let slot = &mut self.slots[id as usize];
        let cost = u32::try_from(cost).unwrap_or(u32::MAX);
        self.resident = self.resident + cost as usize - slot.cost as usize;
        slot.cost = cost;
    }

    /// The live groups memory may drop, least recently touched first: stored, unchanged since,
    /// not held for the epoch's end, and last written in an epoch up to `committed` (a read
    /// from the store would find an older value otherwise).
    pub fn evictable(&self, committed: u64) -> Vec<u32> {
        let mut ids: Vec<(u64, u32)> = (self.index.values())
            .filter_map(|&id| {
                let s = &self.slots[id as usize];
                let clean = s.stored.is_some() && !s.dirty && s.pending == 0;
                (clean && s.written <= committed).then_some((s.batch, id))
            })
            .collect();
        ids.sort_unstable();
        ids.into_iter().map(|(_, id)| id).collect()
    }

    /// Notes that epoch `epoch`'s checkpoint wrote the pending deletions, and forgets the ones
    /// the job has committed (epoch up to `committed`).
    pub fn deletions_written(&mut self, epoch: u64, committed: u64) {
        self.deleted.retain(|_, e| {
            if *e == u64::MAX {
                *e = epoch;
            }
            *e > committed
        });
    }

    /// The live groups not touched for `ttl` seconds (and not held for the epoch's end).
    pub fn expired(&self, ttl: u32) -> Vec<u32> {
        self.index
            .values()
            .copied()
            .filter(|&id| {
                let slot = &self.slots[id as usize];
                slot.pending == 0 && self.clock.saturating_sub(slot.seen) >= ttl
            })
            .collect()
    }

    /// The live slots changed since the last checkpoint, each once; clears their marks.
    pub fn take_dirty(&mut self) -> Vec<u32> {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.retain(|&id| {
            let slot = &mut self.slots[id as usize];
            std::mem::replace(&mut slot.dirty, false) && slot.live
        });
        dirty
    }
}
