//! Transactions: writes staged in a session until COMMIT, then committed to every table they
//! touch in one atomic, synced RocksDB write, as one change-log entry per table (split into
//! bounded entries like any commit), so views see the transaction as one change.
//!
//! A table's staged writes ([`Writes`]) map row keys to the row the transaction leaves there
//! (`None`: deleted), in the stored row encoding. Rows inserted into a table without a primary
//! key get their hidden row ids when staged (an id handed out and rolled back is never reused,
//! only skipped). Statements in the transaction read the table's committed rows with the staged
//! writes laid over them ([`TableStore::scan_merged`]): a transaction sees its own writes, and
//! other sessions' commits as they happen (read committed).
//!
//! COMMIT ([`commit_transaction`]) locks the touched tables' writers in table-id order, compares
//! each staged row with the row committed now, and writes the difference: that is the change
//! the log gets. A row the transaction inserted under a primary key that another session has
//! committed since fails the COMMIT with a unique violation (Postgres' read committed would have
//! waited for the other session and failed the same way); an UPDATE or DELETE overwrites what
//! is there now (last writer wins). Staged writes live in memory and are bounded
//! ([`MAX_STAGED_BYTES`] per table): a larger transaction is refused with a clear error rather
//! than taking the server's memory.

use std::collections::{BTreeMap, HashSet};
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;

use super::{Delta, Modification, TableStore, sub_prefix};
use crate::changelog::{ChangeBatch, Op};
use crate::state::{Snapshot, StateBatch};
use crate::{EngineError, Result};

/// Bytes of rows and keys one transaction may stage for one table.
pub const MAX_STAGED_BYTES: usize = 256 << 20;

/// A transaction's writes to one table, not committed yet; see the module documentation.
#[derive(Clone)]
pub struct Writes {
    rows: BTreeMap<Vec<u8>, Staged>,
    /// Bytes of the staged keys and rows.
    bytes: usize,
    /// Bytes that may be staged ([`MAX_STAGED_BYTES`] unless a test says less).
    limit: usize,
}

impl Default for Writes {
    fn default() -> Self {
        Self {
            rows: BTreeMap::new(),
            bytes: 0,
            limit: MAX_STAGED_BYTES,
        }
    }
}

#[derive(Clone)]
struct Staged {
    /// The row the transaction leaves under the key; `None`: deleted.
    row: Option<Vec<u8>>,
    /// Inserted where the transaction saw no row: COMMIT fails if another session has put one
    /// there since.
    fresh: bool,
}

impl Writes {
    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Bytes staged.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn stage(&mut self, key: Vec<u8>, row: Option<Vec<u8>>, fresh: bool) {
        let size = key.len() + row.as_ref().map_or(0, Vec::len);
        self.bytes += size;
        match self.rows.entry(key) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(Staged { row, fresh });
            }
            std::collections::btree_map::Entry::Occupied(mut o) => {
                let old = o.get();
                self.bytes = self
                    .bytes
                    .saturating_sub(o.key().len() + old.row.as_ref().map_or(0, Vec::len));
                // What the transaction saw when it first wrote the key decides: a row it
                // inserted where it saw none stays an insert however it changes, and a row it
                // deleted and wrote again replaces the committed one.
                let fresh = old.fresh;
                o.insert(Staged { row, fresh });
            }
        }
    }
}

impl TableStore {
    /// Stages the insert of `batches`: checks NOT NULL and (with a primary key) uniqueness among
    /// the committed rows with `writes` over them; returns the rows staged.
    pub fn stage_insert(&self, writes: &mut Writes, batches: &[RecordBatch]) -> Result<u64> {
        let mut total = 0u64;
        for rows in batches.iter().filter(|b| b.num_rows() > 0) {
            self.check_not_null(rows)?;
            let rows = self.shaped(rows)?;
            let keys: Vec<Vec<u8>> = if self.key_codec.is_some() {
                let keys = self.primary_keys(&rows)?;
                self.check_absent(writes, &keys, &HashSet::new())?;
                keys
            } else {
                let mut counters = self.writer.lock();
                let first = counters.next_row_id;
                counters.next_row_id += rows.num_rows() as u64;
                (first..counters.next_row_id)
                    .map(|id| self.row_key(&id.to_be_bytes()))
                    .collect()
            };
            let enc = self.codec.encoder(&rows)?;
            for (row, key) in keys.into_iter().enumerate() {
                let mut buf = Vec::with_capacity(64);
                enc.encode(row, &mut buf);
                writes.stage(key, Some(buf), true);
            }
            self.check_staged_size(writes)?;
            total += rows.num_rows() as u64;
        }
        Ok(total)
    }

    /// Stages one UPDATE or DELETE: `decide` sees the rows the transaction sees (committed rows
    /// with `writes` over them) chunk by chunk, as for [`TableStore::modify`]. Returns the rows
    /// changed.
    pub fn stage_modify<E: From<EngineError>>(
        &self,
        writes: &mut Writes,
        decide: impl FnMut(&RecordBatch) -> std::result::Result<Modification, E>,
    ) -> std::result::Result<u64, E> {
        let chosen = self.choose(|f| self.merged_rows(None, writes, f), decide)?;
        let old_keys = chosen.keys;
        if old_keys.is_empty() {
            return Ok(0);
        }
        if !chosen.updating {
            for key in &old_keys {
                writes.stage(key.clone(), None, false);
            }
            return Ok(old_keys.len() as u64);
        }
        let (new, new_keys) = self.updated(&chosen.new_rows, &old_keys, |moved, freed| {
            self.check_absent(writes, moved, freed)
        })?;
        let moved_from: HashSet<Vec<u8>> = old_keys
            .iter()
            .zip(&new_keys)
            .filter(|(o, n)| o != n)
            .map(|(o, _)| o.clone())
            .collect();
        let landing: HashSet<&[u8]> = new_keys.iter().map(|k| k.as_slice()).collect();
        for key in &moved_from {
            if !landing.contains(key.as_slice()) {
                writes.stage(key.clone(), None, false);
            }
        }
        let freed: HashSet<&[u8]> = old_keys.iter().map(|k| k.as_slice()).collect();
        let enc = self.codec.encoder(&new)?;
        for (row, new_key) in new_keys.iter().enumerate() {
            let mut buf = Vec::with_capacity(64);
            enc.encode(row, &mut buf);
            // A row moved to a key where the transaction saw no row is an insert there.
            let fresh = !freed.contains(new_key.as_slice());
            writes.stage(new_key.clone(), Some(buf), fresh);
        }
        self.check_staged_size(writes)?;
        Ok(old_keys.len() as u64)
    }

    /// Stages an INSERT whose rows may conflict on the primary key with the rows the transaction
    /// sees (committed rows with `writes` over them), as [`TableStore::insert_resolving`] does.
    pub fn stage_insert_resolving<E: From<EngineError>>(
        &self,
        writes: &mut Writes,
        rows: &RecordBatch,
        resolve: impl FnOnce(&RecordBatch, super::Conflicts) -> std::result::Result<RecordBatch, E>,
    ) -> std::result::Result<u64, E> {
        self.check_not_null(rows)?;
        let rows = self.shaped(rows)?;
        let keys = self.primary_keys(&rows)?;
        let committed = self.store.multi_get(&keys)?;
        let seen: Vec<Option<&[u8]>> = (keys.iter().zip(&committed))
            .map(|(k, c)| match writes.rows.get(k) {
                Some(staged) => staged.row.as_deref(),
                None => c.as_deref(),
            })
            .collect();
        let conflicts = self.conflicts(&keys, |i| seen[i])?;
        let present: HashSet<&[u8]> = (keys.iter().zip(&seen))
            .filter(|(_, row)| row.is_some())
            .map(|(k, _)| k.as_slice())
            .collect();
        let out = resolve(&rows, conflicts)?;
        if out.num_rows() == 0 {
            return Ok(0);
        }
        let out = self.shaped(&out)?;
        self.check_not_null(&out)?;
        let out_keys = self.primary_keys(&out)?;
        let enc = self.codec.encoder(&out)?;
        let mut staged = Vec::with_capacity(out_keys.len());
        for (row, key) in out_keys.into_iter().enumerate() {
            let mut buf = Vec::with_capacity(64);
            enc.encode(row, &mut buf);
            // A row where the transaction saw none is an insert.
            let fresh = !present.contains(key.as_slice());
            staged.push((key, buf, fresh));
        }
        for (key, buf, fresh) in staged {
            writes.stage(key, Some(buf), fresh);
        }
        self.check_staged_size(writes)?;
        Ok(out.num_rows() as u64)
    }

    /// Reads the rows a transaction sees at `at` (committed rows with `writes` over them),
    /// `projection` applied, in batches of up to `batch_rows`, as [`TableStore::scan`] does.
    pub fn scan_merged(
        &self,
        at: Option<&Snapshot>,
        writes: &Writes,
        projection: Option<&[usize]>,
        batch_rows: usize,
        mut emit: impl FnMut(RecordBatch) -> Result<ControlFlow<()>>,
    ) -> Result<()> {
        let mut decoder = self.codec.decoder(projection, batch_rows);
        let mut stopped = false;
        self.merged_rows(at, writes, |_, value| {
            decoder.push(value)?;
            if decoder.len() >= batch_rows {
                let flow = emit(decoder.flush()?)?;
                stopped = flow.is_break();
                return Ok(flow);
            }
            Ok(ControlFlow::Continue(()))
        })?;
        if !stopped && !decoder.is_empty() {
            let _ = emit(decoder.flush()?)?;
        }
        Ok(())
    }

    /// Every row key and row a transaction sees, in key order: the committed rows at `at` (now
    /// without it) merged with `writes`, a staged entry replacing the committed row of its key.
    fn merged_rows(
        &self,
        at: Option<&Snapshot>,
        writes: &Writes,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>>,
    ) -> Result<()> {
        let prefix = sub_prefix(self.id, b'r');
        let mut staged = writes.rows.iter().peekable();
        let mut stopped = false;
        self.store.scan_prefix(at, &prefix, None, |key, value| {
            // Staged rows whose keys come first.
            while let Some((k, s)) = staged.next_if(|(k, _)| k.as_slice() < key) {
                if let Some(row) = &s.row
                    && f(k, row)?.is_break()
                {
                    stopped = true;
                    return Ok(ControlFlow::Break(()));
                }
            }
            let flow = match staged.next_if(|(k, _)| k.as_slice() == key) {
                Some((_, s)) => match &s.row {
                    Some(row) => f(key, row)?,
                    None => ControlFlow::Continue(()),
                },
                None => f(key, value)?,
            };
            stopped = flow.is_break();
            Ok(flow)
        })?;
        if stopped {
            return Ok(());
        }
        for (k, s) in staged {
            if let Some(row) = &s.row
                && f(k, row)?.is_break()
            {
                break;
            }
        }
        Ok(())
    }

    /// Fails with a unique violation if one of `keys` repeats, or the transaction sees a row
    /// under it (staged, or committed and not staged away) that is not in `freed`.
    fn check_absent(
        &self,
        writes: &Writes,
        keys: &[Vec<u8>],
        freed: &HashSet<&[u8]>,
    ) -> Result<()> {
        let mut seen = HashSet::with_capacity(keys.len());
        let mut unstaged = Vec::new();
        for key in keys {
            if !seen.insert(key.as_slice()) {
                return Err(self.duplicate(key));
            }
            match writes.rows.get(key) {
                Some(s) if s.row.is_some() && !freed.contains(key.as_slice()) => {
                    return Err(self.duplicate(key));
                }
                Some(_) => {}
                None => unstaged.push(key),
            }
        }
        for (key, existing) in unstaged.iter().zip(self.store.multi_get(&unstaged)?) {
            if existing.is_some() && !freed.contains(key.as_slice()) {
                return Err(self.duplicate(key));
            }
        }
        Ok(())
    }

    fn check_staged_size(&self, writes: &Writes) -> Result<()> {
        if writes.bytes > writes.limit {
            return Err(EngineError::TransactionTooLarge {
                table: self.name.clone(),
                limit: writes.limit,
            });
        }
        Ok(())
    }

    /// The change `writes` makes to the rows committed now, added to `batch` with its log
    /// entries; returns the counters after it (the caller holds the writer lock: `counters`).
    fn stage_commit(
        &self,
        counters: &super::Counters,
        batch: &mut StateBatch,
        writes: &Writes,
    ) -> Result<Option<super::Counters>> {
        let keys: Vec<&Vec<u8>> = writes.rows.keys().collect();
        let committed = self.store.multi_get(&keys)?;
        let mut ops = Vec::new();
        let mut row_keys: Vec<Vec<u8>> = Vec::new();
        let mut decoder = self.codec.decoder(None, writes.rows.len().max(1));
        let mut delta = Delta::default();
        for ((key, staged), old) in writes.rows.iter().zip(committed) {
            let size = |row: &[u8]| (key.len() + row.len()) as i64;
            match (old, &staged.row) {
                (None, None) => continue,
                (Some(_), Some(_)) if staged.fresh && self.key_codec.is_some() => {
                    return Err(self.duplicate(key));
                }
                (Some(old), Some(new)) => {
                    if old == *new {
                        continue;
                    }
                    decoder.push(&old)?;
                    decoder.push(new)?;
                    ops.extend([Op::UpdateBefore, Op::UpdateAfter]);
                    row_keys.extend([key.clone(), key.clone()]);
                    delta.bytes += size(new) - size(&old);
                    batch.put(key, new);
                }
                (None, Some(new)) => {
                    decoder.push(new)?;
                    ops.push(Op::Insert);
                    row_keys.push(key.clone());
                    delta += Delta {
                        rows: 1,
                        bytes: size(new),
                    };
                    batch.put(key, new);
                }
                // Inserted and deleted again: the row there now is another session's.
                (Some(_), None) if staged.fresh => continue,
                (Some(old), None) => {
                    decoder.push(&old)?;
                    ops.push(Op::Delete);
                    row_keys.push(key.clone());
                    delta += Delta {
                        rows: -1,
                        bytes: -size(&old),
                    };
                    batch.delete(key);
                }
            }
        }
        if ops.is_empty() {
            return Ok(None);
        }
        let data = self.conform(&decoder.flush()?)?;
        let change = ChangeBatch { data, ops };
        // Without a primary key, readers cannot tell from the rows which stored rows changed
        // (inserts need no ids: they come after every row stored before).
        let ids = (self.key_codec.is_none() && change.ops.iter().any(|o| *o != Op::Insert))
            .then_some(row_keys.as_slice());
        let next = self.log_entries(counters, batch, &[(&change, ids)], delta)?;
        batch.put(sub_prefix(self.id, b'm'), next.encode());
        Ok(Some(next))
    }
}

/// Commits a transaction's staged writes to every table it touched, atomically and synced:
/// all of them or none (a unique violation, or a table dropped since, fails the whole COMMIT).
pub fn commit_transaction(mut tables: Vec<(Arc<TableStore>, Writes)>) -> Result<()> {
    tables.retain(|(_, w)| !w.is_empty());
    tables.sort_by_key(|(t, _)| t.id);
    let Some((first, _)) = tables.first() else {
        return Ok(());
    };
    let store = first.store.clone();
    // Writers locked in table-id order, as every multi-table commit does: no deadlock.
    let mut guards: Vec<_> = tables.iter().map(|(t, _)| t.writer.lock()).collect();
    let mut batch = StateBatch::new();
    let mut nexts = Vec::with_capacity(tables.len());
    for ((table, writes), counters) in tables.iter().zip(&guards) {
        if table.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(EngineError::TransactionConflict(format!(
                "relation \"{}\" was dropped while the transaction wrote to it",
                table.name
            )));
        }
        nexts.push(table.stage_commit(counters, &mut batch, writes)?);
    }
    if batch.is_empty() {
        return Ok(());
    }
    store.write(batch, true)?;
    for (((table, _), counters), next) in tables.iter().zip(guards.iter_mut()).zip(nexts) {
        if let Some(next) = next {
            table.publish(counters, next);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateStore;
    use datafusion::arrow::array::{BooleanArray, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("v", DataType::Int64, true),
        ]))
    }

    fn rows(ids: &[i64], vs: &[i64]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(Int64Array::from(vs.to_vec())),
            ],
        )
        .unwrap()
    }

    /// (id, v) of every row the transaction sees (`None`: committed rows only), sorted.
    fn seen(t: &TableStore, w: Option<&Writes>) -> Vec<(i64, i64)> {
        let empty = Writes::default();
        let mut out = Vec::new();
        t.scan_merged(None, w.unwrap_or(&empty), None, 2, |b| {
            let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let vs = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
            out.extend(
                ids.values()
                    .iter()
                    .copied()
                    .zip(vs.values().iter().copied()),
            );
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
        out.sort();
        out
    }

    /// `UPDATE ... SET v = v + add WHERE id = id` (or DELETE with `add` None), staged.
    fn change(t: &TableStore, w: &mut Writes, id: i64, add: Option<i64>) -> u64 {
        t.stage_modify::<EngineError>(w, |b| {
            let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let selected: BooleanArray = ids.iter().map(|v| Some(v == Some(id))).collect();
            let replacement = match add {
                None => None,
                Some(add) => {
                    let picked = datafusion::arrow::compute::filter_record_batch(b, &selected)?;
                    let vs = picked
                        .column(1)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .unwrap();
                    let vs: Int64Array = vs.iter().map(|v| v.map(|v| v + add)).collect();
                    Some(RecordBatch::try_new(
                        schema(),
                        vec![Arc::clone(picked.column(0)), Arc::new(vs)],
                    )?)
                }
            };
            Ok(Modification {
                selected,
                replacement,
            })
        })
        .unwrap()
    }

    #[test]
    fn staged_writes_are_seen_by_the_transaction_only_and_commit_as_one_entry() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let t = Arc::new(TableStore::open(store.clone(), 7, "t", schema(), vec![0]).unwrap());
        t.insert(&[rows(&[1, 2, 3], &[10, 20, 30])]).unwrap();
        let mut w = Writes::default();
        assert_eq!(
            t.stage_insert(&mut w, &[rows(&[4, 0], &[40, 0])]).unwrap(),
            2
        );
        assert_eq!(change(&t, &mut w, 2, Some(1)), 1);
        assert_eq!(change(&t, &mut w, 3, None), 1);
        assert_eq!(change(&t, &mut w, 4, Some(1)), 1);
        // Inserting a key the transaction sees is refused; one it deleted is free again.
        assert!(matches!(
            t.stage_insert(&mut w, &[rows(&[1], &[0])]),
            Err(EngineError::DuplicateKey { .. })
        ));
        assert!(matches!(
            t.stage_insert(&mut w, &[rows(&[4], &[0])]),
            Err(EngineError::DuplicateKey { .. })
        ));
        assert_eq!(t.stage_insert(&mut w, &[rows(&[3], &[33])]).unwrap(), 1);
        let expected = vec![(0, 0), (1, 10), (2, 21), (3, 33), (4, 41)];
        assert_eq!(seen(&t, Some(&w)), expected);
        assert_eq!(seen(&t, None), vec![(1, 10), (2, 20), (3, 30)]);
        let before = t.last_seq();
        commit_transaction(vec![(Arc::clone(&t), w)]).unwrap();
        assert_eq!(seen(&t, None), expected);
        // One entry: in key order, 0 inserted, 2 and 3 updated, 4 inserted.
        let log = t.changes_after(None, before, 10).unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(
            log[0].1.ops,
            vec![
                Op::Insert,
                Op::UpdateBefore,
                Op::UpdateAfter,
                Op::UpdateBefore,
                Op::UpdateAfter,
                Op::Insert
            ]
        );
        assert_eq!(t.size().rows, 5);
    }

    #[test]
    fn a_transaction_past_its_bound_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let t = Arc::new(TableStore::open(store.clone(), 7, "t", schema(), vec![]).unwrap());
        let mut w = Writes {
            limit: 2000,
            ..Writes::default()
        };
        let ids: Vec<i64> = (0..10).collect();
        t.stage_insert(&mut w, &[rows(&ids, &ids)]).unwrap();
        let ids: Vec<i64> = (0..200).collect();
        let err = t.stage_insert(&mut w, &[rows(&ids, &ids)]).unwrap_err();
        assert!(
            matches!(err, EngineError::TransactionTooLarge { limit: 2000, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("transaction too large"), "{err}");
    }

    #[test]
    fn commit_meets_what_other_sessions_committed_since() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let t = Arc::new(TableStore::open(store.clone(), 7, "t", schema(), vec![0]).unwrap());
        t.insert(&[rows(&[1, 2], &[10, 20])]).unwrap();
        // Inserted where the transaction saw nothing, then committed by another session.
        let mut w = Writes::default();
        t.stage_insert(&mut w, &[rows(&[5], &[50])]).unwrap();
        change(&t, &mut w, 1, Some(1));
        t.insert(&[rows(&[5], &[0])]).unwrap();
        let seq = t.last_seq();
        assert!(matches!(
            commit_transaction(vec![(Arc::clone(&t), w)]),
            Err(EngineError::DuplicateKey { .. })
        ));
        assert_eq!(t.last_seq(), seq, "all or nothing");
        assert_eq!(seen(&t, None), vec![(1, 10), (2, 20), (5, 0)]);
        // Inserted and deleted again in the transaction: another session's row is left alone.
        let mut w = Writes::default();
        t.stage_insert(&mut w, &[rows(&[6], &[60])]).unwrap();
        change(&t, &mut w, 6, None);
        t.insert(&[rows(&[6], &[0])]).unwrap();
        // Updated a row another session deleted since: last writer wins.
        change(&t, &mut w, 2, Some(1));
        t.modify::<EngineError>(|b| {
            let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            Ok(Modification {
                selected: ids.iter().map(|v| Some(v == Some(2))).collect(),
                replacement: None,
            })
        })
        .unwrap();
        commit_transaction(vec![(Arc::clone(&t), w)]).unwrap();
        assert_eq!(seen(&t, None), vec![(1, 10), (2, 21), (5, 0), (6, 0)]);
    }

    #[test]
    fn tables_without_a_key_and_several_tables_commit_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let a = Arc::new(TableStore::open(store.clone(), 1, "a", schema(), vec![]).unwrap());
        let b = Arc::new(TableStore::open(store.clone(), 2, "b", schema(), vec![0]).unwrap());
        a.insert(&[rows(&[1, 1, 2], &[10, 11, 20])]).unwrap();
        let mut wa = Writes::default();
        let mut wb = Writes::default();
        a.stage_insert(&mut wa, &[rows(&[3], &[30])]).unwrap();
        assert_eq!(change(&a, &mut wa, 1, Some(100)), 2);
        assert_eq!(change(&a, &mut wa, 2, None), 1);
        b.stage_insert(&mut wb, &[rows(&[9], &[90])]).unwrap();
        // Another session inserts meanwhile: it keeps its row, after the staged one's id.
        a.insert(&[rows(&[4], &[40])]).unwrap();
        let seqs = (a.last_seq(), b.last_seq());
        commit_transaction(vec![(Arc::clone(&a), wa), (Arc::clone(&b), wb)]).unwrap();
        assert_eq!(seen(&a, None), vec![(1, 110), (1, 111), (3, 30), (4, 40)]);
        assert_eq!(seen(&b, None), vec![(9, 90)]);
        // Readers can tell which stored rows the entry changes.
        let log = a.changes_after(None, seqs.0, 10).unwrap();
        assert_eq!(log.len(), 1);
        let keys = a.change_keys(None, log[0].0, &log[0].1).unwrap().unwrap();
        assert_eq!(keys.len(), log[0].1.num_rows());
        assert_eq!(b.changes_after(None, seqs.1, 10).unwrap().len(), 1);
        // A table dropped meanwhile fails the whole commit.
        let mut wa = Writes::default();
        let mut wb = Writes::default();
        a.stage_insert(&mut wa, &[rows(&[7], &[70])]).unwrap();
        b.stage_insert(&mut wb, &[rows(&[8], &[80])]).unwrap();
        b.close();
        assert!(matches!(
            commit_transaction(vec![(Arc::clone(&a), wa), (Arc::clone(&b), wb)]),
            Err(EngineError::TransactionConflict(_))
        ));
        assert_eq!(seen(&a, None).len(), 4);
    }
}
