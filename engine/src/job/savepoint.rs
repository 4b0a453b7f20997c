//! Savepoints: one job's committed state and its relation's rows, as a portable directory.
//!
//! Everything a job commits for an epoch (its operators' state tables, its sources' positions and
//! watermarks, the epoch itself, its sink's pre-commit record) and its view's rows and counters
//! change in one RocksDB write batch (see the module above). So any snapshot of the store is one
//! epoch of one job, and a savepoint is that snapshot's keys of the job and of its relation,
//! written out without stopping the job.
//!
//! A savepoint directory holds two files, written into a temporary directory next to it, synced,
//! and renamed into place: a crash while writing leaves no directory at that name (and an older
//! savepoint elsewhere untouched).
//! - `manifest.json`: what the caller says about the job (its query, plan shape, sources), as JSON.
//! - `state.bin`: the records, independent of RocksDB's files:
//!   - the magic bytes `RIVULET-SAVEPOINT\n`, then the format version (u32 little endian);
//!   - one record per key: a kind byte (`J` a key of the job, `T` a key of its relation), the key
//!     relative to the job's or relation's prefix (u32 LE length, bytes), the value (u32 LE
//!     length, bytes); job keys are as `job` lays them out: `t <state table id, u32 BE> ...`
//!     operator state, `p <source>` positions, `w <source>` watermarks, `e` the epoch; relation
//!     keys are `m` (counters) and `r <row key>` (rows), as `table` lays them out;
//!   - the end: `E`, the record count (u64 LE), and the CRC-32 of every byte before the `E`
//!     (u32 LE). A file that ends early or whose checksum differs is refused.
//!
//! Restoring ([`Savepoint::restore`]) writes the records under a new job and relation id,
//! moving state tables to the ids the new job gave them; parallelism is free to change, since
//! operator state is stored by key group.

use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use crate::state::{StateBatch, StateStore};
use crate::table::table_prefix;
use crate::{EngineError, Result};

use super::job_prefix;

/// The version of `state.bin`'s layout (and of what its keys mean).
pub const FORMAT_VERSION: u32 = 1;

const MAGIC: &[u8] = b"RIVULET-SAVEPOINT\n";
const JOB: u8 = b'J';
const RELATION: u8 = b'T';
const END: u8 = b'E';
/// The parts of a relation a savepoint keeps: its counters and rows (not its change log, which
/// belongs to its readers' past).
const RELATION_PARTS: [u8; 2] = [b'm', b'r'];

/// The name of the file of records in a savepoint directory.
pub const STATE_FILE: &str = "state.bin";
/// The name of the caller's description in a savepoint directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// What the records of a savepoint say, read from them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contents {
    /// The job's committed epoch.
    pub epoch: u64,
    /// Per source (by its index in the job), its committed position: a change-log sequence, or
    /// an external source's progress.
    pub positions: BTreeMap<u32, u64>,
    /// Per source, its watermark, if it had one.
    pub watermarks: BTreeMap<u32, i64>,
    /// Per state table id, how many keys it holds.
    pub state_tables: BTreeMap<u32, u64>,
    /// The relation's rows.
    pub rows: u64,
    /// Records, and bytes of their keys and values.
    pub records: u64,
    pub bytes: u64,
}

impl Contents {
    fn count(&mut self, kind: u8, key: &[u8], value: &[u8]) {
        self.records += 1;
        self.bytes += (key.len() + value.len()) as u64;
        let le_u64 = |v: &[u8]| v.try_into().ok().map(u64::from_le_bytes);
        let source = |k: &[u8]| k.get(1..5)?.try_into().ok().map(u32::from_be_bytes);
        match (kind, key.first()) {
            (JOB, Some(b'e')) => self.epoch = le_u64(value).unwrap_or(0),
            (JOB, Some(b'p')) => {
                if let (Some(s), Some(p)) = (source(key), le_u64(value)) {
                    self.positions.insert(s, p);
                }
            }
            (JOB, Some(b'w')) => {
                if let (Some(s), Some(w)) = (source(key), le_u64(value)) {
                    self.watermarks.insert(s, w as i64);
                }
            }
            (JOB, Some(b't')) => {
                if let Some(t) = source(key) {
                    *self.state_tables.entry(t).or_default() += 1;
                }
            }
            (RELATION, Some(b'r')) => self.rows += 1,
            _ => {}
        }
    }
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> EngineError {
    EngineError::External {
        system: "savepoint".into(),
        message: format!("could not {what} \"{}\": {e}", path.display()),
    }
}

fn corrupt(dir: &Path, what: &str) -> EngineError {
    EngineError::Corrupt(format!("savepoint \"{}\": {what}", dir.display()))
}

/// Writes records and sums up the checksum as it goes.
struct RecordWriter<W: Write> {
    out: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> RecordWriter<W> {
    fn bytes(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.crc.update(b);
        self.out.write_all(b)
    }

    fn record(&mut self, kind: u8, key: &[u8], value: &[u8]) -> std::io::Result<()> {
        let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
        self.bytes(&[kind])?;
        self.bytes(&len(key.len()))?;
        self.bytes(key)?;
        self.bytes(&len(value.len()))?;
        self.bytes(value)
    }
}

/// Writes the savepoint of job `job` (and of relation `relation`, a view's rows) into `dir`,
/// which must not exist yet; its parent is created if missing. `manifest` describes the job,
/// given what the records hold. Reads one snapshot of `store`, so the job may keep running.
pub fn write(
    store: &StateStore,
    job: u64,
    relation: Option<u64>,
    dir: &Path,
    manifest: impl FnOnce(&Contents) -> Vec<u8>,
) -> Result<Contents> {
    let (parent, name) = match (dir.parent(), dir.file_name()) {
        (Some(p), Some(n)) => (p, n.to_string_lossy().into_owned()),
        _ => {
            return Err(io_error(
                "write a savepoint to",
                dir,
                std::io::ErrorKind::InvalidInput.into(),
            ));
        }
    };
    std::fs::create_dir_all(parent).map_err(|e| io_error("create", parent, e))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tmp = parent.join(format!(".{name}.tmp-{}-{nanos}", std::process::id()));
    let result = write_into(store, job, relation, &tmp, manifest).and_then(|contents| {
        if dir.exists() {
            return Err(io_error(
                "write a savepoint to",
                dir,
                std::io::ErrorKind::AlreadyExists.into(),
            ));
        }
        std::fs::rename(&tmp, dir).map_err(|e| io_error("rename a savepoint to", dir, e))?;
        sync_dir(parent)?;
        Ok(contents)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("sync", dir, e))
}

fn write_into(
    store: &StateStore,
    job: u64,
    relation: Option<u64>,
    tmp: &Path,
    manifest: impl FnOnce(&Contents) -> Vec<u8>,
) -> Result<Contents> {
    std::fs::create_dir(tmp).map_err(|e| io_error("create", tmp, e))?;
    let state_path = tmp.join(STATE_FILE);
    let file =
        std::fs::File::create(&state_path).map_err(|e| io_error("create", &state_path, e))?;
    let mut w = RecordWriter {
        out: BufWriter::with_capacity(1 << 20, file),
        crc: crc32fast::Hasher::new(),
    };
    let io = |e| io_error("write", &state_path, e);
    w.bytes(MAGIC).map_err(io)?;
    w.bytes(&FORMAT_VERSION.to_le_bytes()).map_err(io)?;
    let mut contents = Contents::default();
    let snapshot = store.snapshot();
    let mut write_err = None;
    let mut copy = |kind: u8, prefix: &[u8]| -> Result<()> {
        store.scan_prefix(Some(&snapshot), prefix, None, |k, v| {
            let key = &k[prefix.len() - usize::from(kind == RELATION)..];
            contents.count(kind, key, v);
            if let Err(e) = w.record(kind, key, v) {
                write_err = Some(e);
                return Ok(ControlFlow::Break(()));
            }
            Ok(ControlFlow::Continue(()))
        })
    };
    copy(JOB, &job_prefix(job))?;
    if let Some(relation) = relation {
        for part in RELATION_PARTS {
            let mut prefix = table_prefix(relation);
            prefix.push(part);
            copy(RELATION, &prefix)?;
        }
    }
    if let Some(e) = write_err {
        return Err(io(e));
    }
    let crc = w.crc.clone().finalize();
    let mut out = w.out;
    out.write_all(&[END]).map_err(io)?;
    out.write_all(&contents.records.to_le_bytes()).map_err(io)?;
    out.write_all(&crc.to_le_bytes()).map_err(io)?;
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    let manifest_path = tmp.join(MANIFEST_FILE);
    std::fs::write(&manifest_path, manifest(&contents))
        .and_then(|()| std::fs::File::open(&manifest_path)?.sync_all())
        .map_err(|e| io_error("write", &manifest_path, e))?;
    sync_dir(tmp)?;
    Ok(contents)
}

/// A savepoint read back: its manifest and its records, checked.
pub struct Savepoint {
    pub manifest: Vec<u8>,
    pub contents: Contents,
    records: Vec<(u8, Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for Savepoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Savepoint")
            .field("contents", &self.contents)
            .finish()
    }
}

/// Reads the savepoint in `dir`, checking its format version, length and checksum.
pub fn read(dir: &Path) -> Result<Savepoint> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let manifest =
        std::fs::read(&manifest_path).map_err(|e| io_error("read", &manifest_path, e))?;
    let state_path: PathBuf = dir.join(STATE_FILE);
    let file = std::fs::File::open(&state_path).map_err(|e| io_error("read", &state_path, e))?;
    let mut left = file
        .metadata()
        .map_err(|e| io_error("read", &state_path, e))?
        .len();
    let mut input = BufReader::with_capacity(1 << 20, file);
    let mut crc = crc32fast::Hasher::new();
    let short = || corrupt(dir, "state.bin ends early");
    let mut take = |n: usize, crc: Option<&mut crc32fast::Hasher>| -> Result<Vec<u8>> {
        // A damaged length must not make the reader allocate more than the file holds.
        left = left.checked_sub(n as u64).ok_or_else(short)?;
        let mut buf = vec![0u8; n];
        input.read_exact(&mut buf).map_err(|_| short())?;
        if let Some(c) = crc {
            c.update(&buf);
        }
        Ok(buf)
    };
    if take(MAGIC.len(), Some(&mut crc))? != MAGIC {
        return Err(corrupt(dir, "state.bin is not a savepoint's record file"));
    }
    let version = u32::from_le_bytes(take(4, Some(&mut crc))?.try_into().map_err(|_| short())?);
    if version != FORMAT_VERSION {
        return Err(corrupt(
            dir,
            &format!("format version {version}; this server reads version {FORMAT_VERSION}"),
        ));
    }
    let mut records = Vec::new();
    let mut contents = Contents::default();
    loop {
        let kind = take(1, None)?[0];
        if kind == END {
            break;
        }
        crc.update(&[kind]);
        if kind != JOB && kind != RELATION {
            return Err(corrupt(dir, &format!("a record of unknown kind {kind}")));
        }
        let mut field = |crc: &mut crc32fast::Hasher| -> Result<Vec<u8>> {
            let len = take(4, Some(crc))?;
            let len = u32::from_le_bytes(len.try_into().map_err(|_| short())?) as usize;
            take(len, Some(crc))
        };
        let key = field(&mut crc)?;
        let value = field(&mut crc)?;
        contents.count(kind, &key, &value);
        records.push((kind, key, value));
    }
    let count = u64::from_le_bytes(take(8, None)?.try_into().map_err(|_| short())?);
    let stored = u32::from_le_bytes(take(4, None)?.try_into().map_err(|_| short())?);
    if left != 0 {
        return Err(corrupt(dir, "state.bin goes on after its end"));
    }
    if count != contents.records || stored != crc.finalize() {
        return Err(corrupt(dir, "state.bin does not match its checksum"));
    }
    Ok(Savepoint {
        manifest,
        contents,
        records,
    })
}

impl Savepoint {
    /// Adds the savepoint's records to `batch` as the state of job `job` and the rows of
    /// relation `relation`: state table `t` goes to `tables[t]`, and a state table `tables`
    /// leaves out is not restored. The relation's change log starts after the restored rows'
    /// last commit.
    pub fn restore(
        &self,
        batch: &mut StateBatch,
        job: u64,
        relation: Option<u64>,
        tables: &BTreeMap<u32, u32>,
    ) -> Result<()> {
        let job_prefix = job_prefix(job);
        for (kind, key, value) in &self.records {
            match *kind {
                JOB => {
                    let mut k = job_prefix.clone();
                    if key.first() == Some(&b't') {
                        let Some(id) = key.get(1..5).and_then(|b| b.try_into().ok()) else {
                            return Err(EngineError::Corrupt("savepoint: a state key".into()));
                        };
                        let Some(to) = tables.get(&u32::from_be_bytes(id)) else {
                            continue;
                        };
                        k.push(b't');
                        k.extend_from_slice(&to.to_be_bytes());
                        k.extend_from_slice(&key[5..]);
                    } else {
                        k.extend_from_slice(key);
                    }
                    batch.put(k, value);
                }
                _ => {
                    let Some(relation) = relation else { continue };
                    let mut k = table_prefix(relation);
                    k.extend_from_slice(key);
                    batch.put(&k, value);
                    if key.first() == Some(&b'm') {
                        crate::table::TableStore::restart_log(batch, relation, value)?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, StateStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(&dir.path().join("db")).expect("open");
        (dir, store)
    }

    #[test]
    fn a_savepoint_round_trips_under_new_ids_and_refuses_damage() {
        let (dir, store) = store();
        let mut batch = StateBatch::new();
        let key = |job: u64, rest: &[u8]| {
            let mut k = job_prefix(job);
            k.extend_from_slice(rest);
            k
        };
        batch.put(key(7, b"e"), 42u64.to_le_bytes());
        batch.put(key(7, b"p\0\0\0\0"), 9u64.to_le_bytes());
        batch.put(key(7, b"t\0\0\0\x01state-a"), b"1");
        batch.put(key(7, b"t\0\0\0\x02state-b"), b"2");
        batch.put(key(8, b"e"), 1u64.to_le_bytes());
        let mut counters = 11u64.to_le_bytes().to_vec();
        counters.extend_from_slice(&[0; 32]);
        let rel = |part: &[u8]| {
            let mut k = table_prefix(7);
            k.extend_from_slice(part);
            k
        };
        batch.put(rel(b"m"), &counters);
        batch.put(rel(b"rrow-1"), b"v1");
        batch.put(rel(b"l\0\0\0\0\0\0\0\x01"), b"log entry");
        store.write(batch, true).expect("write");

        let at = dir.path().join("sp/one");
        let contents = write(&store, 7, Some(7), &at, |c| {
            format!("{}", c.epoch).into_bytes()
        })
        .expect("savepoint");
        assert_eq!(contents.epoch, 42);
        assert_eq!(contents.positions, BTreeMap::from([(0, 9)]));
        assert_eq!(contents.state_tables, BTreeMap::from([(1, 1), (2, 1)]));
        assert_eq!(contents.rows, 1);
        assert!(
            write(&store, 7, Some(7), &at, |_| Vec::new()).is_err(),
            "exists"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("sp"))
            .expect("list")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");

        let saved = read(&at).expect("read");
        assert_eq!(saved.contents, contents);
        assert_eq!(saved.manifest, b"42");
        let mut batch = StateBatch::new();
        saved
            .restore(&mut batch, 20, Some(21), &BTreeMap::from([(2, 5)]))
            .expect("restore");
        store.write(batch, true).expect("write");
        assert_eq!(
            store.get(&key(20, b"e")).expect("get"),
            Some(42u64.to_le_bytes().to_vec())
        );
        assert_eq!(
            store.get(&key(20, b"t\0\0\0\x05state-b")).expect("get"),
            Some(b"2".to_vec())
        );
        assert_eq!(
            store.get(&key(20, b"t\0\0\0\x01state-a")).expect("get"),
            None
        );
        let mut rows = table_prefix(21);
        rows.extend_from_slice(b"rrow-1");
        assert_eq!(store.get(&rows).expect("get"), Some(b"v1".to_vec()));
        let mut log = table_prefix(21);
        log.push(b'l');
        let mut logged = 0;
        store
            .scan_prefix(None, &log, None, |_, _| {
                logged += 1;
                Ok(ControlFlow::Continue(()))
            })
            .expect("scan");
        assert_eq!(logged, 0, "the change log is not part of a savepoint");
        let mut mark = table_prefix(21);
        mark.push(b'f');
        assert_eq!(
            store.get(&mark).expect("get"),
            Some(10u64.to_le_bytes().to_vec())
        );

        let state = at.join(STATE_FILE);
        let mut bytes = std::fs::read(&state).expect("read");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x55;
        std::fs::write(&state, &bytes).expect("write");
        let err = read(&at).expect_err("damaged").to_string();
        assert!(
            err.contains("checksum") || err.contains("ends early") || err.contains("kind"),
            "{err}"
        );
        bytes.truncate(middle);
        std::fs::write(&state, &bytes).expect("write");
        let err = read(&at).expect_err("short").to_string();
        assert!(err.contains("ends early") || err.contains("kind"), "{err}");
    }
}
