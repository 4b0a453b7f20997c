//! What must happen to an aggregate's groups at a time, kept as timers in its state: a window
//! closing when the watermark reaches its end, a hopping window closing, a group expiring under
//! the state TTL, a session closing. The groups themselves are read on demand (see [`super`]),
//! so the timers are what says which groups a watermark or the clock reaches without knowing
//! every group.
//!
//! The timers are the operator's state table `t`, in the layout of [`crate::operator::timers`]
//! (time, kind, then the stored key of the group the timer is for), so the timers a time reaches
//! are a range scan per key group, taken out of the table as they fire, and they survive
//! restarts with the groups: nothing is read at restore. A timer may outlive its group (a group
//! whose rows all were retracted keeps its timer); it then finds no group and does nothing.

use crate::Result;
use crate::operator::{StateScope, timers};
use crate::state::StateBatch;
use crate::state::table::StateTable;

/// Tag of the timer table under the operator's prefix (its groups are stored under the key
/// groups straight after the prefix, whose first byte is 0).
const TAG: u8 = b't';

/// Kind of a timer: a window's group closes (`time`: microseconds of event time).
pub(super) const CLOSE: u8 = 0;
/// A hopping window closes; the timer names its first slice (microseconds of event time).
pub(super) const HOP: u8 = 1;
/// A group may have expired under the state TTL (seconds since the Unix epoch).
pub(super) const EXPIRE: u8 = 2;
/// A session partition's closed end may stop mattering (microseconds of event time).
pub(super) const FORGET: u8 = 3;

/// A timer that fired: its time, key group and group key.
pub(super) type Fired = (i64, u16, Vec<u8>);

/// The timers of one aggregate instance.
pub(super) struct Timers {
    table: StateTable,
    /// No timer fires before this time (`i64::MIN`: not known, look in the store).
    next: i64,
    /// Every timer before this time has fired, and no timer is set before it.
    from: i64,
}

impl Timers {
    /// The instance's timers in `scope`; reads nothing. The table caches nothing: timers are
    /// only ever read by range scans.
    pub fn open(scope: &StateScope) -> Self {
        Self {
            table: scope.table(TAG, 0),
            next: i64::MIN,
            from: i64::MIN,
        }
    }

    /// Sets a timer of `kind` at `time` for the group `key` in key group `kg` (again, if it is
    /// set: one timer per time, kind and group).
    pub fn set(&mut self, kg: u16, time: i64, kind: u8, key: &[u8]) {
        self.table.put(kg, &timers::key(time, kind, key), &[]);
        if self.next != i64::MIN {
            self.next = self.next.min(time);
        }
    }

    /// Takes the timers up to `now` (inclusive) out of the table, in time, key group and key
    /// order. The caller sets no timer at or before `now` from then on.
    pub fn take(&mut self, now: i64) -> Result<Vec<Fired>> {
        if now < self.from {
            return Ok(Vec::new());
        }
        if self.next == i64::MIN {
            self.next = timers::earliest(&self.table, self.from)?.unwrap_or(i64::MAX);
        }
        if self.next > now {
            return Ok(Vec::new());
        }
        let end = now.saturating_add(1);
        let (due, next) = timers::take_due_from(&mut self.table, self.from, end)?;
        self.from = end;
        self.next = next.unwrap_or(i64::MAX);
        let mut fired = due
            .iter()
            .map(|d| {
                let (time, _, key) = d.parts()?;
                Ok((time, d.kg, key.to_vec()))
            })
            .collect::<Result<Vec<Fired>>>()?;
        fired.sort_unstable();
        Ok(fired)
    }

    /// Adds the timers set and taken since the last checkpoint to `batch`, epoch `epoch`'s.
    pub fn checkpoint(&mut self, epoch: u64, batch: &mut StateBatch) {
        self.table.checkpoint(epoch, batch);
    }
}
