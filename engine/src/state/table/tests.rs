//! Tests of [`StateTable`] against a real RocksDB in a temporary directory.

use std::collections::{BTreeMap, VecDeque};

use super::*;
use crate::state::keys::{self, KeyReader};

const PREFIX: &[u8] = b"Jt\x01";

/// A store, the job's committed epoch and the epochs checkpointed but not written yet, as the
/// job's committing task would keep them.
struct Job {
    _dir: tempfile::TempDir,
    store: StateStore,
    committed: Arc<AtomicU64>,
    epoch: u64,
    pending: VecDeque<(u64, StateBatch)>,
}

impl Job {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        Self {
            _dir: dir,
            store,
            committed: Arc::new(AtomicU64::new(0)),
            epoch: 0,
            pending: VecDeque::new(),
        }
    }

    fn table(&self, key_groups: Range<u16>, cache_bytes: usize) -> StateTable {
        let committed = Arc::clone(&self.committed);
        StateTable::new(
            self.store.clone(),
            PREFIX.to_vec(),
            key_groups,
            committed,
            cache_bytes,
        )
    }

    /// Checkpoints `tables` into the next epoch's batch, which stays unwritten.
    fn checkpoint(&mut self, tables: &mut [&mut StateTable]) -> u64 {
        self.epoch += 1;
        let mut batch = StateBatch::new();
        for t in tables {
            t.checkpoint(self.epoch, &mut batch);
        }
        self.pending.push_back((self.epoch, batch));
        self.epoch
    }

    /// Writes the oldest pending epoch and publishes it as committed.
    fn commit_one(&mut self) -> Option<u64> {
        let (epoch, batch) = self.pending.pop_front()?;
        self.store.write(batch, false).unwrap();
        self.committed.store(epoch, Ordering::Release);
        Some(epoch)
    }

    fn commit_all(&mut self) {
        while self.commit_one().is_some() {}
    }
}

type Entries = Vec<(Vec<u8>, Vec<u8>)>;

fn scan(t: &StateTable, kg: u16, start: &[u8], end: Option<&[u8]>, d: Direction) -> Entries {
    let mut out = Vec::new();
    t.scan(kg, start, end, d, |k, v| {
        out.push((k.to_vec(), v.to_vec()));
        Ok(ControlFlow::Continue(()))
    })
    .unwrap();
    out
}

fn all(t: &StateTable, kg: u16) -> Entries {
    scan(t, kg, b"", None, Direction::Forward)
}

fn entries(list: &[(&str, &str)]) -> Entries {
    list.iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

fn get(t: &mut StateTable, kg: u16, key: &str) -> Option<String> {
    t.get(kg, key.as_bytes())
        .unwrap()
        .map(|v| String::from_utf8(v.to_vec()).unwrap())
}

#[test]
fn reads_merge_dirty_flushed_and_committed_writes() {
    let mut job = Job::new();
    let mut t = job.table(0..4, 1 << 20);
    for k in ["a", "b", "c", "d", "e", "f"] {
        t.put(1, k.as_bytes(), b"0");
    }
    t.put(2, b"a", b"other group");
    job.checkpoint(&mut [&mut t]);
    job.commit_all();

    // Epoch 2, flushed but not committed: overwrite, delete, range delete, new key.
    t.put(1, b"b", b"2");
    t.delete(1, b"c");
    t.delete_range(1, b"d", Some(b"f"));
    t.put(1, b"dd", b"2");
    job.checkpoint(&mut [&mut t]);
    // Dirty: over both.
    t.put(1, b"c", b"3");
    t.delete(1, b"a");
    t.put(1, b"g", b"3");
    t.delete(1, b"dd");

    let expected = entries(&[("b", "2"), ("c", "3"), ("f", "0"), ("g", "3")]);
    let check = |t: &mut StateTable| {
        assert_eq!(all(t, 1), expected);
        let mut reversed = expected.clone();
        reversed.reverse();
        assert_eq!(scan(t, 1, b"", None, Direction::Reverse), reversed);
        assert_eq!(
            scan(t, 1, b"b", Some(b"f"), Direction::Reverse),
            entries(&[("c", "3"), ("b", "2")])
        );
        for (k, v) in [("a", None), ("b", Some("2")), ("d", None), ("e", None)] {
            assert_eq!(get(t, 1, k).as_deref(), v, "{k}");
        }
        assert_eq!(get(t, 2, "a").as_deref(), Some("other group"));
        assert_eq!(all(t, 0), entries(&[]));
    };
    check(&mut t);
    // The committing task has written epoch 2 but not published it yet: same answers.
    let (epoch, batch) = job.pending.pop_front().unwrap();
    job.store.write(batch, false).unwrap();
    check(&mut t);
    job.committed.store(epoch, Ordering::Release);
    check(&mut t);
    assert_eq!(t.stats().pending_epochs, 0);
    job.checkpoint(&mut [&mut t]);
    job.commit_all();
    check(&mut t);
    check(&mut job.table(0..4, 1 << 20));
}

#[test]
fn restore_is_lazy_and_follows_key_groups() {
    let mut job = Job::new();
    let mut t = job.table(0..4, 1 << 20);
    for kg in 0..4u16 {
        for i in 0..50u64 {
            let mut key = Vec::new();
            keys::put_u64(&mut key, i);
            t.put(kg, &key, &kg.to_be_bytes());
        }
    }
    job.checkpoint(&mut [&mut t]);
    job.commit_all();

    let fresh = job.table(0..4, 1 << 20);
    assert_eq!(fresh.stats(), TableStats::default());
    // Restarted with two instances: each finds its groups' entries, and only those.
    let mut left = job.table(0..2, 1 << 20);
    let mut right = job.table(2..4, 1 << 20);
    for kg in 0..4u16 {
        let t = if kg < 2 { &mut left } else { &mut right };
        let rows = all(t, kg);
        assert_eq!(rows.len(), 50);
        assert!(rows.iter().all(|(_, v)| v == &kg.to_be_bytes()));
        let mut key = Vec::new();
        keys::put_u64(&mut key, 49);
        assert_eq!(t.get(kg, &key).unwrap(), Some(&kg.to_be_bytes()[..]));
    }
    assert_eq!(left.stats().misses, 2);
    assert_eq!(left.get(1, &[0; 8]).unwrap(), Some(&[0u8, 1][..]));
    assert_eq!(left.stats().misses, 3);
}

#[test]
fn tiny_cache_evicts_and_reads_stay_right() {
    let mut job = Job::new();
    let mut t = job.table(0..1, 600);
    for i in 0..200u32 {
        t.put(0, &i.to_be_bytes(), &(i * 2).to_be_bytes());
    }
    job.checkpoint(&mut [&mut t]);
    job.commit_all();
    for round in 0..3 {
        for i in (0..200u32).rev() {
            let v = t.get(0, &i.to_be_bytes()).unwrap();
            assert_eq!(v, Some(&(i * 2).to_be_bytes()[..]), "round {round} key {i}");
        }
        assert!(t.stats().cached_bytes <= 600 + 2 * (ENTRY_OVERHEAD + 8));
    }
    let stats = t.stats();
    assert!(stats.evictions > 400, "{stats:?}");
    assert!(stats.misses > 400, "{stats:?}");
    // A hot key read between others survives sweeps (second chance).
    let before = t.stats().misses;
    for i in 0..100u32 {
        t.get(0, &7u32.to_be_bytes()).unwrap();
        t.get(0, &(100 + i).to_be_bytes()).unwrap();
    }
    assert!(t.stats().misses - before <= 100 + 5, "{:?}", t.stats());
}

#[test]
fn caches_over_the_shared_memory_limit_shrink_to_their_share_and_reads_stay_right() {
    let memory: &'static crate::state::memory::StateMemory =
        Box::leak(Box::new(crate::state::memory::StateMemory::new(20_000)));
    let mut job = Job::new();
    // Two tables of two instances, each allowed a megabyte of its own.
    let mut a = job.table(0..1, 1 << 20).with_memory(memory);
    let mut b = job.table(1..2, 1 << 20).with_memory(memory);
    for i in 0..300u32 {
        a.put(0, &i.to_be_bytes(), &[1; 32]);
        b.put(1, &i.to_be_bytes(), &[2; 32]);
    }
    job.checkpoint(&mut [&mut a, &mut b]);
    job.commit_all();
    // Committed writes become cached entries: ~30 kB each, 60 kB together.
    for i in 0..300u32 {
        assert_eq!(a.get(0, &i.to_be_bytes()).unwrap(), Some(&[1; 32][..]));
        assert_eq!(b.get(1, &i.to_be_bytes()).unwrap(), Some(&[2; 32][..]));
    }
    let before = a.stats().cached_bytes + b.stats().cached_bytes;
    assert!(before > 40_000, "{before} cached bytes");
    // Each checkpoint tells the pool and shrinks both toward their share of the limit.
    for _ in 0..4 {
        job.checkpoint(&mut [&mut a, &mut b]);
        job.commit_all();
    }
    let (ca, cb) = (a.stats().cached_bytes, b.stats().cached_bytes);
    assert!(ca + cb <= 20_000, "{ca} + {cb} cached bytes");
    assert_eq!(memory.used(), ca + cb);
    assert!(ca > 5_000 && cb > 5_000, "shares of {ca} and {cb}");
    for i in 0..300u32 {
        assert_eq!(a.get(0, &i.to_be_bytes()).unwrap(), Some(&[1; 32][..]));
    }
    drop((a, b));
    assert_eq!(memory.used(), 0);
}

#[test]
fn uncommitted_writes_survive_eviction_pressure() {
    let mut job = Job::new();
    let mut t = job.table(0..2, 0);
    for i in 0..100u32 {
        t.put(0, &i.to_be_bytes(), b"committed");
    }
    job.checkpoint(&mut [&mut t]);
    job.commit_all();
    for i in 0..100u32 {
        t.put(1, &i.to_be_bytes(), b"flushed");
    }
    job.checkpoint(&mut [&mut t]);
    t.put(1, &0u32.to_be_bytes(), b"dirty");
    for round in 0..2 {
        for i in 0..100u32 {
            assert_eq!(t.get(0, &i.to_be_bytes()).unwrap(), Some(&b"committed"[..]));
            let expected: &[u8] = if i == 0 { b"dirty" } else { b"flushed" };
            assert_eq!(
                t.get(1, &i.to_be_bytes()).unwrap(),
                Some(expected),
                "{round}"
            );
        }
        // A budget of 0 keeps at most the entry the last call read.
        assert!(t.stats().cached_bytes <= entry_bytes(&[0; 6], Some(b"committed")));
        job.commit_all();
    }
    assert_eq!(t.stats().pending_epochs, 0);
}

#[test]
fn delete_range_expires_by_event_time() {
    let mut job = Job::new();
    let mut t = job.table(0..2, 1 << 20);
    let key = |ts: i64, id: u64| {
        let mut k = Vec::new();
        keys::put_i64(&mut k, ts);
        keys::put_u64(&mut k, id);
        k
    };
    let until = |ts: i64| {
        let mut k = Vec::new();
        keys::put_i64(&mut k, ts);
        k
    };
    for ts in -5..5i64 {
        t.put(0, &key(ts, 1), b"x");
        t.put(1, &key(ts, 1), b"y");
    }
    job.checkpoint(&mut [&mut t]);
    job.commit_all();
    t.put(0, &key(-6, 2), b"x");
    // Watermark 0: everything before it goes, in group 0 only.
    t.delete_range(0, b"", Some(&until(0)));
    t.put(0, &key(-7, 3), b"late but written after the expiry");
    let times = |t: &StateTable, kg| -> Vec<i64> {
        all(t, kg)
            .iter()
            .map(|(k, _)| KeyReader::new(k).i64().unwrap())
            .collect()
    };
    assert_eq!(times(&t, 0), vec![-7, 0, 1, 2, 3, 4]);
    assert_eq!(times(&t, 1).len(), 10);
    assert_eq!(t.get(0, &key(-5, 1)).unwrap(), None);
    job.checkpoint(&mut [&mut t]);
    assert_eq!(times(&t, 0), vec![-7, 0, 1, 2, 3, 4]);
    t.delete_range(0, &until(3), None);
    job.commit_all();
    assert_eq!(times(&t, 0), vec![-7, 0, 1, 2]);
    job.checkpoint(&mut [&mut t]);
    job.commit_all();
    let fresh = job.table(0..2, 1 << 20);
    assert_eq!(times(&fresh, 0), vec![-7, 0, 1, 2]);
    assert_eq!(times(&fresh, 1).len(), 10);
}

#[test]
fn ranges_stay_inside_their_key_group() {
    let mut job = Job::new();
    let mut other = StateBatch::new();
    // Neighbours: the next key group's entry, and a key just past the table's prefix.
    other.put(b"Jt\x01\xff\xffx", b"next group");
    other.put(b"Jt\x02", b"neighbour");
    job.store.write(other, false).unwrap();
    let mut t = job.table(u16::MAX - 1..u16::MAX, 1 << 20);
    let kg = u16::MAX - 1;
    t.put(kg, b"\xff\xff", b"1");
    t.put(kg, b"", b"0");
    job.checkpoint(&mut [&mut t]);
    job.commit_all();
    assert_eq!(
        all(&t, kg),
        vec![
            (b"".to_vec(), b"0".to_vec()),
            (b"\xff\xff".to_vec(), b"1".to_vec())
        ]
    );
    t.delete_range(kg, b"\x01", None);
    job.checkpoint(&mut [&mut t]);
    job.commit_all();
    assert_eq!(all(&job.table(kg..kg + 1, 0), kg), entries(&[("", "0")]));
    assert_eq!(
        job.store.get(b"Jt\x02").unwrap(),
        Some(b"neighbour".to_vec())
    );
    assert!(job.store.get(b"Jt\x01\xff\xffx").unwrap().is_some());
}

#[test]
fn multi_map_rows_per_join_key_by_prefix_scan() {
    let mut job = Job::new();
    let mut t = job.table(0..1, 1 << 20);
    let row = |join: &[u8], id: u64| {
        let mut k = Vec::new();
        keys::put_bytes(&mut k, join);
        keys::put_u64(&mut k, id);
        k
    };
    let join_key = |join: &[u8]| {
        let mut k = Vec::new();
        keys::put_bytes(&mut k, join);
        k
    };
    for (join, id, count) in [
        (&b"a"[..], 1, 1i64),
        (b"a", 2, 3),
        (b"ab", 1, 1),
        (b"a\0", 9, 1),
    ] {
        t.put(0, &row(join, id), &count.to_be_bytes());
    }
    job.checkpoint(&mut [&mut t]);
    job.commit_all();
    t.delete(0, &row(b"a", 1));
    t.put(0, &row(b"a", 3), &2i64.to_be_bytes());
    let rows = |t: &StateTable, join: &[u8], d| {
        let mut out = Vec::new();
        t.scan_prefix(0, &join_key(join), d, |k, v| {
            let mut r = KeyReader::new(k);
            assert_eq!(r.bytes()?, join);
            out.push((r.u64()?, i64::from_be_bytes(v.try_into().unwrap())));
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
        out
    };
    assert_eq!(rows(&t, b"a", Direction::Forward), vec![(2, 3), (3, 2)]);
    assert_eq!(rows(&t, b"a", Direction::Reverse), vec![(3, 2), (2, 3)]);
    assert_eq!(rows(&t, b"a\0", Direction::Forward), vec![(9, 1)]);
    assert_eq!(rows(&t, b"b", Direction::Forward), vec![]);
    // Stopping early: the top row of a reverse scan.
    let mut top = None;
    t.scan_prefix(0, &join_key(b"a"), Direction::Reverse, |k, _| {
        top = Some(k.to_vec());
        Ok(ControlFlow::Break(()))
    })
    .unwrap();
    assert_eq!(top, Some(row(b"a", 3)));
}

#[test]
fn multi_get_reads_the_misses_at_once() {
    let mut job = Job::new();
    let mut t = job.table(0..2, 1 << 20);
    t.put(0, b"a", b"1");
    t.put(1, b"b", b"2");
    job.checkpoint(&mut [&mut t]);
    job.commit_all();
    let mut t = job.table(0..2, 1 << 20);
    t.put(0, b"c", b"3");
    let keys: Vec<(u16, &[u8])> = vec![(0, b"a"), (1, b"b"), (0, b"c"), (0, b"zz"), (0, b"a")];
    let got: Vec<Option<Vec<u8>>> = t
        .multi_get(&keys)
        .unwrap()
        .into_iter()
        .map(|v| v.map(<[u8]>::to_vec))
        .collect();
    let expected = [Some(&b"1"[..]), Some(b"2"), Some(b"3"), None, Some(b"1")];
    assert_eq!(got, expected.map(|v| v.map(<[u8]>::to_vec)));
    assert_eq!((t.stats().hits, t.stats().misses), (1, 3));
    t.multi_get(&keys).unwrap();
    assert_eq!((t.stats().hits, t.stats().misses), (6, 3));
}

#[test]
fn ttl_entries_expire_on_read() {
    let mut job = Job::new();
    let mut t = job.table(0..1, 1 << 20).with_ttl(10);
    t.put_at(0, b"a", b"x", 100);
    t.put_at(0, b"b", b"y", 105);
    assert_eq!(t.get_at(0, b"a", 109).unwrap(), Some(&b"x"[..]));
    assert_eq!(t.get_at(0, b"a", 110).unwrap(), None);
    // The expired entry was deleted, not only hidden.
    assert_eq!(t.get(0, b"a").unwrap(), None);
    let mut live = Vec::new();
    t.scan(0, b"", None, Direction::Forward, |k, v| {
        if let Some(v) = t.unexpired(v, 114)? {
            live.push((k.to_vec(), v.to_vec()));
        }
        Ok(ControlFlow::Continue(()))
    })
    .unwrap();
    assert_eq!(live, entries(&[("b", "y")]));
    t.put(0, b"bad", b"short");
    assert!(t.get_at(0, b"bad", 0).is_err());
    job.checkpoint(&mut [&mut t]);
    job.commit_all();
}

/// A sweep visits at most its budget of entries, resumes where it stopped, crosses key groups
/// (only the instance's own), starts over after the last, and deletes what expired, whether the
/// entry is in memory or only in RocksDB.
#[test]
fn sweeps_delete_expired_entries_a_budget_at_a_time() {
    let mut job = Job::new();
    // Another instance's entries, which the sweep must not visit.
    let mut other = job.table(0..2, 1 << 20).with_ttl(10);
    other.put_at(1, b"other", b"o", 0);
    let mut t = job.table(2..6, 0).with_ttl(10);
    for kg in 2..6u16 {
        for i in 0..25u8 {
            // Odd keys are written late and stay live.
            let at = if i % 2 == 1 { 50 } else { 0 };
            t.put_at(kg, &[b'k', i], b"v", at);
        }
    }
    job.checkpoint(&mut [&mut t, &mut other]);
    job.commit_all();
    let live = |t: &StateTable| -> usize { (2..6u16).map(|kg| all(t, kg).len()).sum() };
    assert_eq!(live(&t), 100);
    // Nothing has expired at 9.
    assert_eq!(t.sweep_expired(9, 1000).unwrap(), 0);
    let mut deleted = Vec::new();
    for _ in 0..5 {
        deleted.push(t.sweep_expired(20, 30).unwrap());
    }
    // 100 entries at 30 a sweep: four sweeps go over them all (the fourth visits 10), the fifth
    // starts over and finds nothing left to delete.
    assert_eq!(deleted.iter().sum::<usize>(), 52, "{deleted:?}");
    assert_eq!(*deleted.last().unwrap(), 0);
    assert_eq!(live(&t), 48);
    assert_eq!(all(&other, 1).len(), 1);
    job.checkpoint(&mut [&mut t]);
    job.commit_all();
    // What was deleted is gone from RocksDB; a fresh table sees the same.
    let fresh = job.table(2..6, 0).with_ttl(10);
    assert_eq!(live(&fresh), 48);
    // The last sweep stopped 30 entries into the table: the next ends the pass, one more
    // starts over.
    let later = t.sweep_expired(100, 1000).unwrap() + t.sweep_expired(100, 1000).unwrap();
    assert_eq!(later, 48);
    assert_eq!(live(&t), 0);
    // Without a TTL there is nothing to sweep.
    let mut plain = job.table(0..2, 0);
    assert_eq!(plain.sweep_expired(u64::MAX, 1000).unwrap(), 0);
}

/// A small deterministic generator (xorshift64*), so failures reproduce from the seed alone.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Short keys over few bytes, so that writes collide and ranges hold several keys.
    fn key(&mut self) -> Vec<u8> {
        let len = self.below(4);
        (0..len)
            .map(|_| [0x00, 0x01, 0x7f, 0xff][self.below(4) as usize])
            .collect()
    }
}

type Model = BTreeMap<(u16, Vec<u8>), Vec<u8>>;

fn model_range(m: &Model, kg: u16, start: &[u8], end: Option<&[u8]>) -> Entries {
    m.iter()
        .filter(|((g, k), _)| {
            *g == kg && k.as_slice() >= start && end.is_none_or(|e| k.as_slice() < e)
        })
        .map(|((_, k), v)| (k.clone(), v.clone()))
        .collect()
}

/// Random writes, reads, scans, checkpoints, commits and crashes, against a `BTreeMap`.
fn run_model(seed: u64, steps: usize) {
    let mut rng = Rng(seed);
    let mut job = Job::new();
    let groups = 3u16..6;
    let budget = [0, 300, 2000, 1 << 20][rng.below(4) as usize];
    let mut t = job.table(groups.clone(), budget);
    let mut model = Model::new();
    // The model as of each checkpointed epoch not committed yet, and as of the last commit.
    let mut snapshots: VecDeque<(u64, Model)> = VecDeque::new();
    let mut committed_model = Model::new();
    for step in 0..steps {
        let kg = groups.start + rng.below(3) as u16;
        let ctx = format!("seed {seed} step {step} budget {budget} kg {kg}");
        match rng.below(100) {
            0..30 => {
                let (key, value) = (
                    rng.key(),
                    rng.next().to_be_bytes()[..rng.below(9) as usize].to_vec(),
                );
                t.put(kg, &key, &value);
                model.insert((kg, key), value);
            }
            30..40 => {
                let key = rng.key();
                t.delete(kg, &key);
                model.remove(&(kg, key));
            }
            40..43 => {
                let (start, end) = (rng.key(), rng.key());
                let end = (rng.below(4) > 0).then_some(end);
                t.delete_range(kg, &start, end.as_deref());
                for (k, _) in model_range(&model, kg, &start, end.as_deref()) {
                    model.remove(&(kg, k));
                }
            }
            43..63 => {
                let key = rng.key();
                let got = t.get(kg, &key).unwrap().map(<[u8]>::to_vec);
                assert_eq!(got.as_ref(), model.get(&(kg, key)), "{ctx}");
            }
            63..68 => {
                let keys: Vec<(u16, Vec<u8>)> = (0..rng.below(6))
                    .map(|_| (groups.start + rng.below(3) as u16, rng.key()))
                    .collect();
                let refs: Vec<(u16, &[u8])> =
                    keys.iter().map(|(g, k)| (*g, k.as_slice())).collect();
                let got: Vec<Option<Vec<u8>>> = t
                    .multi_get(&refs)
                    .unwrap()
                    .into_iter()
                    .map(|v| v.map(<[u8]>::to_vec))
                    .collect();
                let expected: Vec<Option<Vec<u8>>> =
                    keys.iter().map(|k| model.get(k).cloned()).collect();
                assert_eq!(got, expected, "{ctx}");
            }
            68..78 => {
                let (start, end) = (rng.key(), rng.key());
                let end = (rng.below(3) > 0).then_some(end);
                let reverse = rng.below(2) == 0;
                let limit = if rng.below(4) == 0 {
                    1 + rng.below(3) as usize
                } else {
                    usize::MAX
                };
                let mut expected = model_range(&model, kg, &start, end.as_deref());
                let direction = if reverse {
                    expected.reverse();
                    Direction::Reverse
                } else {
                    Direction::Forward
                };
                expected.truncate(limit);
                let mut got = Vec::new();
                t.scan(kg, &start, end.as_deref(), direction, |k, v| {
                    got.push((k.to_vec(), v.to_vec()));
                    Ok(if got.len() >= limit {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    })
                })
                .unwrap();
                assert_eq!(got, expected, "{ctx} scan {start:?}..{end:?} {direction:?}");
                let prefix = rng.key();
                let mut got = Vec::new();
                t.scan_prefix(kg, &prefix, Direction::Forward, |k, v| {
                    got.push((k.to_vec(), v.to_vec()));
                    Ok(ControlFlow::Continue(()))
                })
                .unwrap();
                let expected: Entries = model_range(&model, kg, b"", None)
                    .into_iter()
                    .filter(|(k, _)| k.starts_with(&prefix))
                    .collect();
                assert_eq!(got, expected, "{ctx} prefix {prefix:?}");
            }
            78..88 => {
                let epoch = job.checkpoint(&mut [&mut t]);
                snapshots.push_back((epoch, model.clone()));
            }
            88..98 => {
                if let Some(epoch) = job.commit_one() {
                    let (e, m) = snapshots.pop_front().unwrap();
                    assert_eq!(e, epoch);
                    committed_model = m;
                }
            }
            _ => {
                // A crash: what was not committed is gone; the new table reads nothing yet.
                job.pending.clear();
                snapshots.clear();
                model = committed_model.clone();
                t = job.table(groups.clone(), budget);
            }
        }
        let stats = t.stats();
        assert!(stats.pending_epochs <= job.pending.len(), "{ctx}");
    }
    job.checkpoint(&mut [&mut t]);
    job.commit_all();
    for kg in groups.clone() {
        assert_eq!(
            all(&t, kg),
            model_range(&model, kg, b"", None),
            "seed {seed} final"
        );
    }
    let fresh = job.table(groups.clone(), budget);
    for kg in groups {
        assert_eq!(
            all(&fresh, kg),
            model_range(&model, kg, b"", None),
            "seed {seed} restart"
        );
    }
}

#[test]
fn matches_a_btreemap_model() {
    for seed in 1..=12u64 {
        run_model(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15), 3000);
    }
}

#[test]
fn deleted_ranges_merge_and_answer_lookups() {
    let mut r = Ranges::default();
    let range =
        |lo: &str, hi: Option<&str>| (lo.as_bytes().to_vec(), hi.map(|h| h.as_bytes().to_vec()));
    r.insert(range("c", Some("e")));
    r.insert(range("g", Some("i")));
    // Touching [e, g) joins both; an overlapping one inside changes nothing.
    r.insert(range("e", Some("g")));
    r.insert(range("d", Some("h")));
    assert_eq!(r.0.len(), 1);
    assert!(r.covers(b"c") && r.covers(b"h") && !r.covers(b"i") && !r.covers(b"b"));
    r.insert(range("x", None));
    r.insert(range("k", Some("m")));
    assert_eq!(r.0.len(), 3);
    assert!(r.covers(b"zzz") && r.covers(b"l") && !r.covers(b"m") && !r.covers(b"w"));
    // One range over all of them.
    r.insert(range("a", Some("y")));
    assert_eq!(r.0.len(), 1);
    assert!(r.covers(b"a") && r.covers(b"zzz"));
    let overlapping = r.overlapping(b"b", Some(b"c"));
    assert_eq!(overlapping.len(), 1);
}

#[test]
fn reads_are_published_to_the_shared_counters_at_each_checkpoint() {
    let mut job = Job::new();
    let figures = StateFigures::default();
    let reads = figures.table(3);
    let mut t = job.table(0..2, 1 << 20).with_figures(Arc::clone(&reads));
    t.put(0, b"a", b"1");
    job.checkpoint(&mut [&mut t]);
    // The sizes: one entry stored, and pending until committed.
    assert_eq!(reads.stored_bytes.load(Ordering::Relaxed), t.bytes());
    assert!(t.bytes() > 0 && reads.memory_bytes.load(Ordering::Relaxed) > 0);
    job.commit_all();
    let mut t = job.table(0..2, 1 << 20).with_figures(figures.table(3));
    t.get(0, b"a").unwrap();
    t.get(0, b"a").unwrap();
    t.get(1, b"none").unwrap();
    // Nothing is published between checkpoints.
    assert_eq!(reads.misses.load(Ordering::Relaxed), 0);
    job.checkpoint(&mut [&mut t]);
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    assert_eq!((load(&reads.hits), load(&reads.misses)), (1, 2));
    t.get(0, b"a").unwrap();
    job.checkpoint(&mut [&mut t]);
    assert_eq!((load(&reads.hits), load(&reads.misses)), (2, 2));
    assert_eq!(figures.reads(), (2, 2));
    assert_eq!(figures.tables().len(), 1);
}
