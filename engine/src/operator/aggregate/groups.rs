//! The group table: every live group in a slot, found by its key through a hash index.
//!
//! A slot number is the group's row in every aggregate's state (see [`super::accumulator`]), so
//! a batch updates groups in place: nothing is moved or re-inserted per batch. A vanished group's
//! slot goes on a free list for the next new group. The table also remembers what the next
//! checkpoint must write: the slots changed since the last one (`dirty`) and the stored keys of
//! groups that vanished (`gone`).

use std::collections::HashMap;
use std::sync::Arc;

/// The index hashes byte keys once per input row: foldhash, randomly seeded per map, the hasher
/// DataFusion's own hash aggregation uses, instead of std's much slower SipHash.
type FastHash = foldhash::fast::RandomState;

pub(super) struct Slot {
    /// The group's Arrow row-format key (empty for a global aggregate), shared with the index.
    pub key: Arc<[u8]>,
    /// All rows of the group, NULLs included.
    pub rows: i64,
    /// The key group of the group's key (see [`crate::keygroup`]).
    pub kg: u16,
    /// Length of the group's stored key and value at the last checkpoint (0: not stored).
    pub stored: u32,
    /// Changed since the last checkpoint, and listed in [`Groups::dirty`].
    dirty: bool,
    live: bool,
    /// The last batch that touched the group (see [`Groups::touch`]).
    batch: u64,
    /// 1 + its index among the groups the epoch touched, 0 if untouched (see
    /// [`super::pending`]).
    pub pending: u32,
    /// [`Groups::clock`] when the group was last touched (or created), for the state TTL.
    seen: u32,
}

#[derive(Default)]
pub(super) struct Groups {
    index: HashMap<Arc<[u8]>, u32, FastHash>,
    pub slots: Vec<Slot>,
    free: Vec<u32>,
    /// Slots marked dirty since the last checkpoint; may name a slot twice or a freed one.
    dirty: Vec<u32>,
    /// Key group and key of each stored group that vanished since the last checkpoint.
    pub gone: Vec<(u16, Arc<[u8]>)>,
    /// Seconds since the operator started, as its owner last set it: when groups are seen.
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
            stored: 0,
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

    /// Frees slot `id`, remembering its stored key for deletion; returns the bytes it had stored.
    /// The caller resets the slot's aggregate state.
    pub fn remove(&mut self, id: u32) -> u32 {
        let slot = &mut self.slots[id as usize];
        slot.live = false;
        slot.dirty = false;
        self.index.remove(&slot.key);
        self.free.push(id);
        if slot.stored > 0 {
            self.gone.push((slot.kg, Arc::clone(&slot.key)));
        }
        std::mem::take(&mut slot.stored)
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
