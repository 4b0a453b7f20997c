//! Transaction blocks: `BEGIN`, `COMMIT`, `ROLLBACK`, and the writes staged in between.
//!
//! Inside a block, INSERT, UPDATE, DELETE, TRUNCATE and COPY FROM stage their rows in the
//! session ([`Staged`], per table; see `rivulet_engine::table::Writes`) instead of committing
//! them; the block's reads of those tables see the staged rows, other sessions do not. COMMIT
//! writes everything the block staged, over all tables, in one synced RocksDB write with one
//! change-log entry per table (views see the block as one change); ROLLBACK, a failed COMMIT and
//! a connection that ends inside a block discard it. `ROLLBACK TO SAVEPOINT` goes back to what
//! was staged when the savepoint was set (see `savepoint.rs`).
//!
//! Isolation is read committed: each statement reads the latest committed rows (with the block's
//! own writes over them). DDL and continuous jobs (`CREATE`, `DROP`, `INSERT INTO` a sink) run at
//! once, as their own commit, and ROLLBACK does not undo them; materialized views reflect the
//! block's writes only after COMMIT.

use std::collections::BTreeMap;
use std::sync::Arc;

use rivulet_engine::table::{TableStore, Writes, commit_transaction};

use super::{Outcome, blocking};
use crate::error::SqlError;
use crate::session::{Session, TxState};

/// What an open block has staged: per table id, the table and its writes.
#[derive(Clone, Default)]
pub struct Staged {
    tables: BTreeMap<u64, (Arc<TableStore>, Arc<Writes>)>,
}

impl std::fmt::Debug for Staged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staged")
            .field("tables", &self.tables.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Staged {
    /// The staged writes to table `id`, if any.
    pub fn writes_to(&self, id: u64) -> Option<Arc<Writes>> {
        self.tables
            .get(&id)
            .filter(|(_, w)| !w.is_empty())
            .map(|(_, w)| Arc::clone(w))
    }
}

impl Session {
    /// Whether writes are staged rather than committed: a block is open.
    pub(super) fn staging(&self) -> bool {
        self.tx == TxState::Open
    }

    /// Runs `stage` over the block's writes to `table` off the async workers, and keeps what it
    /// staged (also when it fails: a failed statement fails the block, which only a rollback,
    /// to a savepoint or of the block, leaves).
    pub(super) async fn stage<T: Send + 'static>(
        &mut self,
        table: &Arc<TableStore>,
        stage: impl FnOnce(&TableStore, &mut Writes) -> Result<T, SqlError> + Send + 'static,
    ) -> Result<T, SqlError> {
        let id = table.id();
        let writes = self
            .reads
            .staged
            .lock()
            .tables
            .remove(&id)
            .map(|(_, w)| Arc::unwrap_or_clone(w))
            .unwrap_or_default();
        let store = Arc::clone(table);
        let (result, writes) = blocking(move || {
            let mut writes = writes;
            let result = stage(&store, &mut writes);
            Ok((result, writes))
        })
        .await?;
        self.reads
            .staged
            .lock()
            .tables
            .insert(id, (Arc::clone(table), Arc::new(writes)));
        result
    }

    /// `BEGIN`: opens a block (a warning-free no-op inside one, as in Postgres).
    pub(super) fn begin(&mut self) -> Outcome {
        if self.tx == TxState::Idle {
            self.tx = TxState::Open;
            self.savepoints.clear();
            *self.reads.staged.lock() = Staged::default();
        }
        Outcome::TxStart("BEGIN")
    }

    /// `COMMIT`: writes what the block staged, all or nothing. In a failed block it rolls back.
    pub(super) async fn commit(&mut self) -> Result<Outcome, SqlError> {
        let failed = self.tx == TxState::Aborted;
        let staged = self.end_block();
        if failed {
            return Ok(Outcome::TxEnd("ROLLBACK"));
        }
        let tables: Vec<(Arc<TableStore>, Writes)> = staged
            .tables
            .into_values()
            .map(|(t, w)| (t, Arc::unwrap_or_clone(w)))
            .filter(|(_, w)| !w.is_empty())
            .collect();
        if tables.is_empty() {
            return Ok(Outcome::TxEnd("COMMIT"));
        }
        blocking(move || commit_transaction(tables).map_err(SqlError::from)).await?;
        if self.implicit_flush() {
            let jobs = &self.shared.jobs;
            self.interrupt.run(jobs.flush()).await?;
        }
        Ok(Outcome::TxEnd("COMMIT"))
    }

    /// `ROLLBACK`: discards what the block staged.
    pub(super) fn rollback(&mut self) -> Outcome {
        self.end_block();
        Outcome::TxEnd("ROLLBACK")
    }

    /// Leaves the block; returns what it staged.
    fn end_block(&mut self) -> Staged {
        self.tx = TxState::Idle;
        self.savepoints.clear();
        std::mem::take(&mut *self.reads.staged.lock())
    }

    /// What the block has staged now, for a savepoint.
    pub(super) fn staged_now(&self) -> Staged {
        self.reads.staged.lock().clone()
    }

    /// Goes back to what was staged at a savepoint.
    pub(super) fn restore_staged(&mut self, staged: Staged) {
        *self.reads.staged.lock() = staged;
    }
}
