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
//! own writes over them). Materialized views reflect the block's writes only after COMMIT.
//!
//! DDL in a block: a `CREATE` (table, view, materialized view, source, sink) takes effect at once,
//! and the block remembers what it created; ROLLBACK (to a savepoint set before it, of the block,
//! a failed COMMIT, or the connection ending in the block) drops it again, with whatever was built
//! on it. Other sessions see a created relation before COMMIT (Postgres would hide it); that is
//! the deviation. `DROP TABLE` of a table that existed before the block hides it from the block
//! and drops it at COMMIT, after the block's writes (ROLLBACK keeps it; other sessions see it
//! until COMMIT, as in Postgres). Other `DROP`s in a block drop only what the block created:
//! dropping a view that existed before the block cannot be undone, so it is refused with 25001,
//! as Postgres refuses the statements it cannot run in a block (`CREATE DATABASE`, also refused
//! here).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::sql::sqlparser::ast;
use rivulet_engine::table::{TableStore, Writes, commit_transaction};
use rivulet_planner::ddl::object_name;

use super::{Outcome, blocking};
use rivulet_planner::catalog::TableDef;

use crate::catalog::Catalog;
use crate::error::{SqlError, sqlstate};
use crate::sequence::Sequence;
use crate::session::{Session, TxState};

/// What an open block has staged: per table id, the table and its writes.
#[derive(Clone, Default)]
pub struct Staged {
    tables: BTreeMap<u64, (Arc<TableStore>, Arc<Writes>)>,
    /// Relations (catalog ids) the block created, in order: a rollback drops them.
    created: Vec<u64>,
    /// What the block changed at once rather than staging it, in order, with how it was
    /// before: a rollback puts it back, the latest first, as Postgres does.
    undo: Vec<Undo>,
    /// Tables that existed before the block and that it dropped (catalog id, name): hidden from
    /// the block, dropped at COMMIT.
    dropped: Vec<(u64, String)>,
}

/// A change a block made at once, as it was before.
#[derive(Clone)]
enum Undo {
    /// `TRUNCATE .. RESTART IDENTITY` restarted a sequence: its last value and whether it was
    /// called.
    Restart(Arc<Sequence>, i64, bool),
    /// `COMMENT ON` or `ALTER TABLE` changed a relation's definition: the definition before.
    Definition(Box<TableDef>),
}

impl std::fmt::Debug for Staged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staged")
            .field("tables", &self.tables.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Staged {
    /// The relations the block created, in order.
    pub fn created(&self) -> &[u64] {
        &self.created
    }

    /// Puts back what the block changed at once, the latest first.
    pub fn undo(&self, catalog: &Catalog) -> Result<(), SqlError> {
        undo(catalog, &self.undo)
    }

    /// Whether the block dropped relation `id` (to be dropped at COMMIT).
    pub fn is_dropped(&self, id: u64) -> bool {
        self.dropped.iter().any(|(d, _)| *d == id)
    }

    /// The name of relation `id` if the block dropped it.
    fn dropped_name(&self, id: u64) -> Option<&str> {
        self.dropped
            .iter()
            .find(|(d, _)| *d == id)
            .map(|(_, name)| name.as_str())
    }

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
        // A write that found the table before the block dropped it (a prepared INSERT): the
        // table is gone for the block, as in Postgres.
        if let Some(name) = self.reads.staged.lock().dropped_name(id) {
            return Err(SqlError::new(
                sqlstate::UNDEFINED_TABLE,
                format!("relation \"{name}\" does not exist"),
            ));
        }
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
            self.begin_settings();
        }
        Outcome::TxStart("BEGIN")
    }

    /// `COMMIT`: writes what the block staged, all or nothing. In a failed block it rolls back.
    pub(super) async fn commit(&mut self) -> Result<Outcome, SqlError> {
        let failed = self.tx == TxState::Aborted;
        let staged = self.end_block();
        let before_commit = self.block_settings.before().clone();
        self.end_settings(!failed);
        if failed {
            self.undo_created(&staged.created);
            staged.undo(self.catalog())?;
            return Ok(Outcome::TxEnd("ROLLBACK"));
        }
        let undone = staged.undo.clone();
        let created = staged.created;
        let dropped = staged.dropped;
        // Writes to a table the block dropped go with it.
        let tables: Vec<(Arc<TableStore>, Writes)> = staged
            .tables
            .into_iter()
            .filter(|(id, _)| !dropped.iter().any(|(d, _)| d == id))
            .map(|(_, (t, w))| (t, Arc::unwrap_or_clone(w)))
            .filter(|(_, w)| !w.is_empty())
            .collect();
        if tables.is_empty() {
            self.drop_at_commit(&dropped)?;
            return Ok(Outcome::TxEnd("COMMIT"));
        }
        if let Err(e) = blocking(move || commit_transaction(tables).map_err(SqlError::from)).await {
            // The block is rolled back, its creations, restarts and settings with it (its
            // `SET LOCAL`s are already undone).
            self.settings = before_commit;
            self.undo_created(&created);
            undo(self.catalog(), &undone)?;
            return Err(e);
        }
        self.drop_at_commit(&dropped)?;
        if self.implicit_flush() {
            let views = self.own_views();
            let jobs = &self.shared.jobs;
            self.interrupt.run(jobs.flush_views(&views)).await?;
        }
        Ok(Outcome::TxEnd("COMMIT"))
    }

    /// `ROLLBACK`: discards what the block staged and drops what it created.
    pub(super) fn rollback(&mut self) -> Result<Outcome, SqlError> {
        let staged = self.end_block();
        self.end_settings(false);
        self.undo_created(&staged.created);
        staged.undo(self.catalog())?;
        Ok(Outcome::TxEnd("ROLLBACK"))
    }

    /// Notes, in an open block, that `sequence` is about to restart: a rollback puts it back.
    pub(super) fn note_restart(&mut self, sequence: &Arc<Sequence>) {
        if self.staging() {
            let (last, _, called) = sequence.state();
            (self.reads.staged.lock().undo).push(Undo::Restart(Arc::clone(sequence), last, called));
        }
    }

    /// The ids of the relations of this session's database.
    pub(super) fn relation_ids(&self) -> BTreeSet<u64> {
        self.catalog()
            .tables(&self.database)
            .iter()
            .map(|t| t.def.id)
            .collect()
    }

    /// Remembers, in an open block, the relations a statement created: those not in `before`.
    pub(super) fn note_created(&mut self, before: &BTreeSet<u64>) {
        let mut created: Vec<u64> = self
            .relation_ids()
            .into_iter()
            .filter(|id| !before.contains(id))
            .collect();
        self.reads.staged.lock().created.append(&mut created);
    }

    /// `DROP TABLE` in a block: a table the block created is dropped at once (a rollback would
    /// drop it anyway); one that existed before is checked as DROP checks it (dependent views:
    /// 2BP01), then hidden from the block and dropped at COMMIT, so ROLLBACK keeps it. Dropping
    /// one with its dependents (`CASCADE` over views that read it) is refused with 25001: their
    /// jobs cannot be stopped and restarted with the block.
    pub(super) fn drop_tables_in_block(
        &mut self,
        if_exists: bool,
        cascade: bool,
        names: &[ast::ObjectName],
    ) -> Result<Outcome, SqlError> {
        for name in names {
            let (schema, table) = object_name(name)?;
            super::ddl::check_schema(schema.as_deref())?;
            let id = self
                .catalog()
                .table(&self.database, &table)
                .map(|e| e.def.id);
            let (created, hidden) = {
                let staged = self.reads.staged.lock();
                (
                    id.filter(|id| staged.created.contains(id)),
                    id.is_some_and(|id| staged.is_dropped(id)),
                )
            };
            if let Some(id) = created {
                self.drop(
                    &ast::ObjectType::Table,
                    if_exists,
                    cascade,
                    std::slice::from_ref(name),
                )?;
                // Dropped with the block's writes to it, which COMMIT must not write.
                self.reads.staged.lock().tables.remove(&id);
                continue;
            }
            let entry = match self.drop_target(&table, super::ddl::RelationKind::Table)? {
                Some(entry) if !hidden => entry,
                // Not there (or dropped already in this block): DROP's error or notice.
                _ if if_exists => {
                    self.notice(format!("table \"{table}\" does not exist, skipping"));
                    continue;
                }
                _ => {
                    return Err(SqlError::new(
                        sqlstate::UNDEFINED_TABLE,
                        format!("table \"{table}\" does not exist"),
                    ));
                }
            };
            let checked = self
                .refuse_if_read(entry.def.id, &table)
                .and_then(|()| self.refuse_if_named(&table, false));
            match checked {
                Err(_) if cascade => {
                    return Err(SqlError::new(
                        sqlstate::ACTIVE_SQL_TRANSACTION,
                        format!(
                            "DROP TABLE .. CASCADE of \"{table}\", which existed before the \
                             transaction block and is read by views, cannot run inside a \
                             transaction block"
                        ),
                    )
                    .with_hint("Drop it outside the block."));
                }
                Err(e) => return Err(e),
                Ok(()) => {}
            }
            let mut staged = self.reads.staged.lock();
            staged.tables.remove(&entry.def.id);
            staged.dropped.push((entry.def.id, table));
        }
        Ok(Outcome::Command("DROP TABLE".into()))
    }

    /// COMMIT's drops of the tables the block dropped.
    fn drop_at_commit(&mut self, dropped: &[(u64, String)]) -> Result<(), SqlError> {
        for (id, name) in dropped {
            self.shared.sources.stop(*id);
            self.catalog().drop_table(&self.database, name, true)?;
        }
        Ok(())
    }

    /// Refuses, in a block, to drop relations the block did not create (see the module docs).
    pub(super) fn refuse_drop_in_block(
        &self,
        statement: &str,
        names: &[String],
    ) -> Result<(), SqlError> {
        if self.tx == TxState::Idle {
            return Ok(());
        }
        let created = self.reads.staged.lock().created.clone();
        let mut dropped = Vec::new();
        for name in names {
            let Some(entry) = self.catalog().table(&self.database, name) else {
                continue;
            };
            if !created.contains(&entry.def.id) {
                return Err(SqlError::new(
                    sqlstate::ACTIVE_SQL_TRANSACTION,
                    format!(
                        "{statement} of \"{name}\", which existed before the transaction block, \
                         cannot run inside a transaction block"
                    ),
                )
                .with_hint(
                    "Rivulet cannot undo dropping it on ROLLBACK; drop it outside the block.",
                ));
            }
            dropped.push(entry.def.id);
        }
        // Dropped with the block's writes to them, which COMMIT must not write.
        let mut staged = self.reads.staged.lock();
        for id in dropped {
            staged.tables.remove(&id);
        }
        Ok(())
    }

    /// Drops the relations `ids` (newest first) and whatever reads them, where they still exist:
    /// the undoing of a block's `CREATE`s. A failure is logged; the rollback goes on.
    pub(crate) fn undo_created(&mut self, ids: &[u64]) {
        for &id in ids.iter().rev() {
            let Some(entry) = self
                .catalog()
                .tables(&self.database)
                .into_iter()
                .find(|t| t.def.id == id)
            else {
                continue;
            };
            let name = entry.def.name.clone();
            let undone = self.drop_readers(id).and_then(|()| {
                self.shared.jobs.stop(id);
                self.shared.sources.stop(id);
                self.catalog().drop_table(&self.database, &name, true)
            });
            if let Err(e) = undone {
                tracing::warn!(relation = %name, error = %e, "rollback could not drop a relation the block created");
            }
        }
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

    /// Goes back to what was staged at a savepoint, dropping what the block created since.
    pub(super) fn restore_staged(&mut self, staged: Staged) -> Result<(), SqlError> {
        let (since, undone) = {
            let now = self.reads.staged.lock();
            let since: Vec<u64> = (now.created.iter())
                .filter(|id| !staged.created.contains(id))
                .copied()
                .collect();
            let undone = now.undo.get(staged.undo.len()..).unwrap_or_default();
            (since, undone.to_vec())
        };
        *self.reads.staged.lock() = staged;
        self.undo_created(&since);
        undo(self.catalog(), &undone)
    }

    /// Stores `new` in place of the definition `old` of a relation (its storage stays); in an
    /// open block a rollback puts `old` back.
    pub(super) fn redefine(&mut self, old: &TableDef, new: TableDef) -> Result<(), SqlError> {
        if self.staging() {
            (self.reads.staged.lock().undo).push(Undo::Definition(Box::new(old.clone())));
        }
        self.catalog().replace_definition(new)?;
        Ok(())
    }
}

/// Puts back what a block changed at once (`changes`, in the order it changed them); a relation
/// dropped since keeps nothing to put back.
fn undo(catalog: &Catalog, changes: &[Undo]) -> Result<(), SqlError> {
    for change in changes.iter().rev() {
        match change {
            Undo::Restart(sequence, last, called) => sequence.set(*last, *called)?,
            Undo::Definition(def) => {
                let current = catalog.table(&def.database, &def.name);
                if current.is_some_and(|t| t.def.id == def.id) {
                    catalog.replace_definition(def.as_ref().clone())?;
                }
            }
        }
    }
    Ok(())
}
