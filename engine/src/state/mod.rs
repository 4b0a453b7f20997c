//! The state store: the only code in Rivulet that touches RocksDB.
//!
//! One RocksDB instance holds everything, split into key spaces by a leading tag byte (see
//! ARCHITECTURE.md, "Key spaces"). Callers get keyed reads, prefix scans, atomic write batches and
//! point-in-time snapshots. A batch written with `durable = true` is in the synced WAL when `write`
//! returns: that is what makes an acknowledged statement survive `kill -9`.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    BlockBasedOptions, DB, DBCompressionType, DBRawIterator, Options, ReadOptions, WriteOptions,
};

use crate::Result;

/// Order-preserving key encoding: integers, floats and strings that sort as their values do.
pub mod keys;
pub mod memory;
pub mod sortrows;
/// Keyed state tables: a bounded cache over RocksDB, written at checkpoints, loaded lazily.
pub mod table;

/// RocksDB's cache of table blocks.
const BLOCK_CACHE_BYTES: usize = 64 << 20;

/// A shared handle on the database.
#[derive(Clone)]
pub struct StateStore {
    db: Arc<DB>,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("path", &self.db.path())
            .finish()
    }
}

/// Writes to apply atomically with [`StateStore::write`].
///
/// The writes are kept in one flat buffer (op tag, then length-prefixed key and value) so that the
/// batches of several tasks can be appended into one write: a streaming job's epoch is the state
/// of all its operators, its source positions and its view's rows, committed together.
#[derive(Default)]
pub struct StateBatch {
    buf: Vec<u8>,
    len: usize,
}

const PUT: u8 = 0;
const DELETE: u8 = 1;
const DELETE_RANGE: u8 = 2;

impl StateBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, tag: u8, parts: &[&[u8]]) {
        self.buf.push(tag);
        for part in parts {
            self.buf
                .extend_from_slice(&(part.len() as u32).to_le_bytes());
            self.buf.extend_from_slice(part);
        }
        self.len += 1;
    }

    /// Makes room for `writes` more puts whose keys and values take `bytes` together.
    pub fn reserve_exact(&mut self, bytes: usize, writes: usize) {
        self.buf.reserve(bytes + writes * 9);
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.push(PUT, &[key.as_ref(), value.as_ref()]);
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: impl AsRef<[u8]>) {
        self.push(DELETE, &[key.as_ref()]);
    }

    /// Removes every key that starts with `prefix`.
    pub fn delete_prefix(&mut self, prefix: &[u8]) {
        match prefix_end(prefix) {
            Some(end) => self.delete_range(prefix, Some(&end)),
            None => self.delete_range(prefix, None),
        }
    }

    /// Removes every key in `[start, end)`; `end` `None`: every key from `start` on.
    pub fn delete_range(&mut self, start: &[u8], end: Option<&[u8]>) {
        // No key that Rivulet writes is this long and all 0xff.
        self.push(DELETE_RANGE, &[start, end.unwrap_or(&[0xffu8; 64][..])]);
    }

    /// Appends `other`'s writes after this batch's own.
    pub fn append(&mut self, other: StateBatch) {
        if self.buf.is_empty() {
            *self = other;
        } else {
            self.buf.extend_from_slice(&other.buf);
            self.len += other.len;
        }
    }

    /// Adds the writes of `other`, a batch that writes none of this batch's keys (another
    /// task's operators, each under its own prefix), in either order: the larger batch is kept
    /// and the smaller copied into it.
    pub fn merge_disjoint(&mut self, mut other: StateBatch) {
        if other.buf.len() > self.buf.len() {
            std::mem::swap(self, &mut other);
        }
        self.append(other);
    }

    /// Number of writes in the batch.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the batch holds no writes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of keys and values in the batch (with a few bytes of framing per write).
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// The writes as (tag, key, value or range end), in the order they were added.
    fn entries(&self) -> Vec<(u8, &[u8], &[u8])> {
        let buf = self.buf.as_slice();
        let mut out = Vec::with_capacity(self.len);
        let mut at = 0;
        // Reads back exactly what `push` wrote, so the indices are always in bounds.
        let next = |at: &mut usize| -> &[u8] {
            let len = u32::from_le_bytes([buf[*at], buf[*at + 1], buf[*at + 2], buf[*at + 3]]);
            let start = *at + 4;
            *at = start + len as usize;
            &buf[start..*at]
        };
        while at < buf.len() {
            let tag = buf[at];
            at += 1;
            let key = next(&mut at);
            let second = if tag == DELETE {
                &[][..]
            } else {
                next(&mut at)
            };
            out.push((tag, key, second));
        }
        out
    }

    /// The RocksDB batch, its writes in key order when the batch has no range deletions (a
    /// stable sort, so the last write of a key still wins): RocksDB inserts keys into its
    /// memtable much faster in order than scattered, and an epoch's writes (view rows, operator
    /// state of many key groups) come scattered.
    fn to_rocksdb(&self) -> rocksdb::WriteBatch {
        let mut batch = rocksdb::WriteBatch::default();
        let mut entries = self.entries();
        if entries.iter().all(|e| e.0 != DELETE_RANGE) {
            entries.sort_by(|a, b| a.1.cmp(b.1));
        }
        for (tag, key, second) in entries {
            match tag {
                PUT => batch.put(key, second),
                DELETE => batch.delete(key),
                _ => batch.delete_range(key, second),
            }
        }
        batch
    }
}

/// A consistent, point-in-time view of the whole store.
pub struct Snapshot {
    // Declared before `_db` so it is dropped first: the RocksDB snapshot must be released while the
    // database it belongs to is still open.
    inner: rocksdb::Snapshot<'static>,
    _db: Arc<DB>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").finish_non_exhaustive()
    }
}

impl StateStore {
    /// Opens (or creates) the store in `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_max_background_jobs(2);
        opts.set_bytes_per_sync(1 << 20);
        // Bloom filters, in the table files and in the memtable: most point reads of operator
        // state are for keys that are not there (a join's or an aggregate's new rows), and
        // without a filter each of them searches the memtable and every file's index.
        let mut table = BlockBasedOptions::default();
        table.set_bloom_filter(10.0, false);
        table.set_whole_key_filtering(true);
        // Scans of operator state seek into recent files: their blocks are read from a cache
        // rather than with a system call each (RocksDB's default cache is 8 MiB).
        table.set_block_cache(&rocksdb::Cache::new_lru_cache(BLOCK_CACHE_BYTES)?);
        opts.set_block_based_table_factory(&table);
        // Operator state is mostly written once per epoch and rewritten or deleted soon: larger
        // memtables and a larger first level mean fewer flushes and compactions rewriting it
        // (Nexmark q4 writes 400 MB of join state; RocksDB's defaults of 64 MiB memtables, four
        // level-0 files and a 256 MiB level 1 spent 12% more CPU on it).
        opts.set_write_buffer_size(128 << 20);
        opts.set_max_write_buffer_number(4);
        opts.set_level_zero_file_num_compaction_trigger(8);
        opts.set_max_bytes_for_level_base(1 << 30);
        opts.set_target_file_size_base(128 << 20);
        opts.set_memtable_prefix_bloom_ratio(0.1);
        opts.set_memtable_whole_key_filtering(true);
        // The files of the first two levels are rewritten soon (state is overwritten each
        // epoch): compressing them costs CPU for little space. The levels below are compressed.
        let snappy = DBCompressionType::Snappy;
        let none = DBCompressionType::None;
        opts.set_compression_per_level(&[none, none, snappy, snappy, snappy, snappy, snappy]);
        let db = DB::open(&opts, path)?;
        Ok(Self { db: Arc::new(db) })
    }

    /// Writes a consistent copy of the whole store into directory `dir`, which must not exist
    /// (RocksDB's checkpoint: memtables flushed, table files hard-linked where `dir` is on the
    /// same file system, copied otherwise). Every write batch is in it whole or not at all, so a
    /// store opened on `dir` holds whole epochs and whole commits: a backup.
    pub fn checkpoint_to(&self, dir: &Path) -> Result<()> {
        let checkpoint = rocksdb::checkpoint::Checkpoint::new(&self.db)?;
        checkpoint.create_checkpoint(dir)?;
        Ok(())
    }

    /// Reads one key at the latest committed state.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get(key)?)
    }

    /// Reads one key as it was at snapshot `at`.
    pub fn get_at(&self, at: &Snapshot, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(at.inner.get(key)?)
    }

    /// Reads many keys at once (one call into RocksDB for the whole set).
    pub fn multi_get<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Vec<u8>>>> {
        self.db
            .multi_get(keys.iter().map(|k| k.as_ref()))
            .into_iter()
            .map(|r| r.map_err(Into::into))
            .collect()
    }

    /// Applies `batch` atomically. With `durable`, returns only once the WAL is synced to disk.
    pub fn write(&self, batch: StateBatch, durable: bool) -> Result<()> {
        let mut opts = WriteOptions::default();
        opts.set_sync(durable);
        self.db.write_opt(batch.to_rocksdb(), &opts)?;
        Ok(())
    }

    /// Takes a snapshot of the current state.
    pub fn snapshot(&self) -> Snapshot {
        let db = Arc::clone(&self.db);
        let snap = db.snapshot();
        // SAFETY: the snapshot borrows the `DB` behind `db`. `Snapshot` keeps that `Arc` alive for as
        // long as the snapshot exists and drops the snapshot first (field order), so the borrow never
        // outlives the database; the heap address of an `Arc`'s contents never moves.
        let inner = unsafe {
            std::mem::transmute::<rocksdb::Snapshot<'_>, rocksdb::Snapshot<'static>>(snap)
        };
        Snapshot { inner, _db: db }
    }

    /// Calls `f` on every key starting with `prefix`, in key order, from `start` (or the prefix
    /// itself) on, reading `at` a snapshot or the latest state. `f` may stop the scan early.
    pub fn scan_prefix(
        &self,
        at: Option<&Snapshot>,
        prefix: &[u8],
        start: Option<&[u8]>,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>>,
    ) -> Result<()> {
        let mut opts = ReadOptions::default();
        if let Some(end) = prefix_end(prefix) {
            opts.set_iterate_upper_bound(end);
        }
        let mut iter = match at {
            Some(snap) => snap.inner.raw_iterator_opt(opts),
            None => self.db.raw_iterator_opt(opts),
        };
        iter.seek(start.unwrap_or(prefix));
        while iter.valid() {
            let (Some(key), Some(value)) = (iter.key(), iter.value()) else {
                break;
            };
            if !key.starts_with(prefix) {
                break;
            }
            if f(key, value)?.is_break() {
                return Ok(());
            }
            iter.next();
        }
        iter.status()?;
        Ok(())
    }

    /// The last key (and its value) starting with `prefix`, at the latest state.
    pub fn last_in_prefix(&self, prefix: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let mut opts = ReadOptions::default();
        if let Some(end) = prefix_end(prefix) {
            opts.set_iterate_upper_bound(end);
        }
        let mut iter = self.db.raw_iterator_opt(opts);
        iter.seek_to_last();
        iter.status()?;
        match (iter.key(), iter.value()) {
            (Some(k), Some(v)) if k.starts_with(prefix) => Ok(Some((k.to_vec(), v.to_vec()))),
            _ => Ok(None),
        }
    }
}

/// A cursor over the keys of a range at the latest state, in ascending or descending order
/// ([`StateStore::cursor`]).
pub struct Cursor<'a> {
    iter: DBRawIterator<'a>,
    reverse: bool,
    /// The upper bound the iterator was opened with.
    upper: Option<Vec<u8>>,
}

impl std::fmt::Debug for Cursor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cursor")
            .field("reverse", &self.reverse)
            .finish_non_exhaustive()
    }
}

impl Cursor<'_> {
    /// The entry the cursor is on, `None` past the last one (or on an error: see
    /// [`Cursor::status`]).
    pub fn entry(&self) -> Option<(&[u8], &[u8])> {
        if !self.iter.valid() {
            return None;
        }
        Some((self.iter.key()?, self.iter.value()?))
    }

    /// Moves to the next entry in the cursor's order.
    pub fn advance(&mut self) {
        if self.reverse {
            self.iter.prev();
        } else {
            self.iter.next();
        }
    }

    /// The error that ended the iteration early, if any.
    pub fn status(&self) -> Result<()> {
        Ok(self.iter.status()?)
    }

    /// Moves to the first entry at or after `key` (ascending), or with `reverse`, to the last
    /// entry before `end` (`None`: the last entry), within the cursor's bounds: a cursor is
    /// positioned again for another range without opening a new RocksDB iterator.
    pub fn seek(&mut self, key: &[u8], end: Option<&[u8]>, reverse: bool) {
        self.reverse = reverse;
        if !reverse {
            self.iter.seek(key);
            return;
        }
        match end {
            // RocksDB wants a target below the upper bound.
            Some(end) if Some(end) != self.upper.as_deref() => {
                self.iter.seek_for_prev(end);
                if self.iter.valid() && self.iter.key() == Some(end) {
                    self.iter.prev();
                }
            }
            _ => self.iter.seek_to_last(),
        }
    }
}

impl StateStore {
    /// A cursor over the keys in `[start, end)` (`end` `None`: to the last key), at the latest
    /// state, from `start` up or (with `reverse`) from just below `end` down.
    pub fn cursor(&self, start: &[u8], end: Option<&[u8]>, reverse: bool) -> Cursor<'_> {
        let mut cursor = self.unpositioned_cursor(start, end);
        cursor.seek(start, end, reverse);
        cursor
    }

    /// A cursor over the keys in `[start, end)` that [`Cursor::seek`] positions.
    pub fn unpositioned_cursor(&self, start: &[u8], end: Option<&[u8]>) -> Cursor<'_> {
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(start);
        if let Some(end) = end {
            opts.set_iterate_upper_bound(end);
        }
        Cursor {
            iter: self.db.raw_iterator_opt(opts),
            reverse: false,
            upper: end.map(<[u8]>::to_vec),
        }
    }
}

/// The smallest key greater than every key that starts with `prefix` (`None` if all bytes are 0xff).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_sees_state_at_creation() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let mut b = StateBatch::new();
        b.put(b"p/1", b"a");
        store.write(b, true).unwrap();
        let snap = store.snapshot();
        let mut b = StateBatch::new();
        b.put(b"p/2", b"b");
        b.put(b"q/1", b"c");
        store.write(b, false).unwrap();

        let collect = |at: Option<&Snapshot>| {
            let mut seen = Vec::new();
            store
                .scan_prefix(at, b"p/", None, |k, v| {
                    seen.push((k.to_vec(), v.to_vec()));
                    Ok(ControlFlow::Continue(()))
                })
                .unwrap();
            seen
        };
        assert_eq!(collect(Some(&snap)), vec![(b"p/1".to_vec(), b"a".to_vec())]);
        assert_eq!(collect(None).len(), 2);
        assert_eq!(
            store.last_in_prefix(b"p/").unwrap().unwrap().0,
            b"p/2".to_vec()
        );
    }

    #[test]
    fn appended_batches_apply_in_order_as_one_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let mut first = StateBatch::new();
        first.put(b"k1", b"old");
        first.put(b"k2", b"x");
        first.put(b"p/1", b"y");
        let mut second = StateBatch::new();
        second.put(b"k1", b"new");
        second.delete(b"k2");
        second.delete_prefix(b"p/");
        second.put(b"", b"empty key");
        first.append(second);
        assert_eq!(first.len(), 7);
        store.write(first, true).unwrap();
        assert_eq!(store.get(b"k1").unwrap(), Some(b"new".to_vec()));
        assert_eq!(store.get(b"k2").unwrap(), None);
        assert_eq!(store.get(b"p/1").unwrap(), None);
        assert_eq!(store.get(b"").unwrap(), Some(b"empty key".to_vec()));
    }

    #[test]
    fn cursor_reads_a_range_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let mut b = StateBatch::new();
        for k in [&b"a"[..], b"b", b"b\x00", b"c", b"d"] {
            b.put(k, k);
        }
        store.write(b, false).unwrap();
        let read = |start: &[u8], end: Option<&[u8]>, reverse| {
            let mut cursor = store.cursor(start, end, reverse);
            let mut keys = Vec::new();
            while let Some((k, v)) = cursor.entry() {
                assert_eq!(k, v);
                keys.push(k.to_vec());
                cursor.advance();
            }
            cursor.status().unwrap();
            keys
        };
        let keys = |ks: &[&[u8]]| ks.iter().map(|k| k.to_vec()).collect::<Vec<_>>();
        assert_eq!(read(b"b", Some(b"d"), false), keys(&[b"b", b"b\x00", b"c"]));
        assert_eq!(read(b"b", Some(b"d"), true), keys(&[b"c", b"b\x00", b"b"]));
        assert_eq!(read(b"b\x01", None, true), keys(&[b"d", b"c"]));
        assert_eq!(read(b"e", None, false), keys(&[]));
        assert_eq!(read(b"e", None, true), keys(&[]));
        assert_eq!(read(b"", Some(b"a"), true), keys(&[]));

        let mut b = StateBatch::new();
        b.delete_range(b"b", Some(b"c"));
        store.write(b, false).unwrap();
        assert_eq!(read(b"", None, false), keys(&[b"a", b"c", b"d"]));
    }

    #[test]
    fn delete_prefix_leaves_neighbours() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let mut b = StateBatch::new();
        for k in [&b"a\xff"[..], b"a\x00", b"b"] {
            b.put(k, b"x");
        }
        store.write(b, false).unwrap();
        let mut b = StateBatch::new();
        b.delete_prefix(b"a");
        store.write(b, false).unwrap();
        assert_eq!(store.get(b"a\xff").unwrap(), None);
        assert_eq!(store.get(b"b").unwrap(), Some(b"x".to_vec()));
    }
}
