//! The memory all running jobs' state caches share.
//!
//! Each operator instance caches clean state (a [`super::table::StateTable`]'s entries, a top-N's
//! decoded windows) up to its own budget, and all of them together up to one server-wide limit:
//! a job with a million keys may use the memory that idle jobs leave, as Flink's heap state
//! would, without the server outgrowing its machine. Every cache counts its bytes here (a
//! [`Charge`]); once the total is over the limit, each cache shrinks in proportion to its size at
//! its next read or checkpoint (every epoch, so idle caches shrink too), to its share of the
//! limit: `own * limit / total`. Memory that cannot be evicted (writes not committed yet) is not
//! counted. The server sets the limit of the process's one [`shared`] pool at start (no limit
//! until then: operator tests).

use std::sync::atomic::{AtomicUsize, Ordering};

/// The shared limit and what the caches hold together.
#[derive(Debug)]
pub struct StateMemory {
    limit: AtomicUsize,
    used: AtomicUsize,
}

static SHARED: StateMemory = StateMemory::new(usize::MAX);

/// The pool every state cache of this process counts in.
pub fn shared() -> &'static StateMemory {
    &SHARED
}

impl StateMemory {
    /// A limit of `limit` bytes for all caches together.
    pub const fn new(limit: usize) -> Self {
        Self {
            limit: AtomicUsize::new(limit),
            used: AtomicUsize::new(0),
        }
    }

    /// Sets the limit, in bytes.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// What the caches hold together.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// One cache's bytes, counted in a [`StateMemory`]; uncounted when dropped.
#[derive(Debug)]
pub struct Charge {
    memory: &'static StateMemory,
    counted: usize,
}

impl Default for Charge {
    /// A cache of no bytes yet, counted in the [`shared`] pool.
    fn default() -> Self {
        Self::new(shared())
    }
}

impl Charge {
    /// A cache of no bytes yet, counted in `memory`.
    pub fn new(memory: &'static StateMemory) -> Self {
        Self { memory, counted: 0 }
    }

    /// Records that the cache holds `bytes` now, and returns what it may hold: `budget` (its
    /// own limit), or less while all caches together are over the shared limit.
    pub fn update(&mut self, bytes: usize, budget: usize) -> usize {
        let used = &self.memory.used;
        if bytes >= self.counted {
            used.fetch_add(bytes - self.counted, Ordering::Relaxed);
        } else {
            used.fetch_sub(self.counted - bytes, Ordering::Relaxed);
        }
        self.counted = bytes;
        let (total, limit) = (used.load(Ordering::Relaxed), self.memory.limit());
        if total <= limit || total == 0 {
            return budget;
        }
        let share = (bytes as u128 * limit as u128 / total as u128) as usize;
        budget.min(share)
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.memory.used.fetch_sub(self.counted, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_over_the_shared_limit_shrink_in_proportion_and_are_uncounted_when_dropped() {
        let memory: &'static StateMemory = Box::leak(Box::new(StateMemory::new(1000)));
        let (mut a, mut b) = (Charge::new(memory), Charge::new(memory));
        // Within the limit: each cache keeps its own budget.
        assert_eq!(a.update(300, 5000), 5000);
        assert_eq!(b.update(500, 5000), 5000);
        assert_eq!(memory.used(), 800);
        // Over it (1800 of 1000): each may hold its share of the limit.
        assert_eq!(b.update(1500, 5000), 1500 * 1000 / 1800);
        assert_eq!(a.update(300, 5000), 300 * 1000 / 1800);
        // A cache's own budget still bounds it.
        assert_eq!(a.update(300, 100), 100);
        // Shrunk below the limit: budgets again.
        assert_eq!(b.update(600, 5000), 5000);
        assert_eq!(memory.used(), 900);
        drop(b);
        assert_eq!(memory.used(), 300);
        drop(a);
        assert_eq!(memory.used(), 0);
    }
}
