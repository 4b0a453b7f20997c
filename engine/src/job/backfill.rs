//! A table source's backfill: a new job reads its table's (or upstream view's) current rows, chunk
//! by chunk in row-key order, instead of replaying the change log from its first entry
//! (RisingWave's snapshot backfill), so a backfill costs the data, not its history, and the log
//! need not keep what every job has read.
//!
//! Each chunk is read at a fresh RocksDB snapshot whose change-log sequence the source reaches
//! first: the entries since the previous chunk's snapshot go through only for rows the job has
//! already been sent (row key up to the last one read); changes to later rows are in the chunks
//! still to come. So after every chunk the job holds exactly the table's state at that snapshot
//! for the keys read so far, and the position (sequence, last key read) is a consistent
//! checkpoint: a restart goes on from it with new snapshots. When no row is left, the source
//! follows the log from the last snapshot's sequence.
//!
//! Event time: the chunks come in key order, which in general is not the order rows arrived, so
//! the watermark is held back until the backfill ends (then it is the largest event time read):
//! no row of the table's current contents is late to a new view. An APPEND ONLY table without a
//! primary key is the exception: its row keys are row ids handed out in commit order, so its
//! rows come in the order they arrived, and the watermark moves on as the chunks are read, as it
//! did for the jobs that read those rows live (windows close during the backfill instead of all
//! at its end, and a window's state is never written if it opens and closes within an epoch). It
//! lags a log entry behind: after a chunk it is the largest event time of the rows at least
//! [`SCAN_BATCH_ROWS`] ids before the last row read. A live reader moves its watermark after each
//! log entry, an entry holds at most that many rows of consecutive ids, so every row read after
//! the chunk meets a watermark no later than it met live: no row is later to a new view than it
//! was to the views that read it as it came.

use std::collections::VecDeque;
use std::sync::Arc;

use super::stage::{Chain, SourceReader};
use crate::changelog::{ChangeBatch, Op};
use crate::table::{SCAN_BATCH_ROWS, TableStore};
use crate::{EngineError, Result};

/// Change-log entries read at a time between chunks.
const READ_ENTRIES: usize = 64;

/// Where a table source is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reading the current rows.
    Snapshot(Progress),
    /// Following the change log.
    Log,
}

/// How far the backfill has read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    /// The row key of the last row read; `None` before the first chunk.
    after: Option<Vec<u8>>,
    /// The largest event time of the rows read, held back until the backfill ends.
    watermark: Option<i64>,
    /// In arrival order (see the module's doc): the last row id and the largest event time of
    /// each chunk read whose rows the watermark does not cover yet, oldest first. Not part of
    /// the stored position: after a restart the watermark only moves on from later chunks.
    pending: VecDeque<(u64, i64)>,
}

const SNAPSHOT: u8 = b'S';
const LOG: u8 = b'L';

impl Phase {
    /// The phase a source's checkpointed position stands for: `state` its stored resume state,
    /// `seq` its sequence. A source that has never committed (sequence 0, no state) starts
    /// with the snapshot; one checkpointed before backfills existed follows its log.
    pub(crate) fn of(seq: u64, state: Option<&[u8]>) -> Result<Phase> {
        let corrupt = || EngineError::Corrupt("a table source's backfill position".into());
        let Some(state) = state else {
            return Ok(if seq == 0 {
                Phase::Snapshot(Progress::default())
            } else {
                Phase::Log
            });
        };
        match state.split_first() {
            Some((&LOG, [])) => Ok(Phase::Log),
            Some((&SNAPSHOT, rest)) => {
                let (watermark, rest) = match rest.split_first() {
                    Some((0, rest)) => (None, rest),
                    Some((1, rest)) => {
                        let (w, rest) = rest.split_at_checked(8).ok_or_else(corrupt)?;
                        let w: [u8; 8] = w.try_into().map_err(|_| corrupt())?;
                        (Some(i64::from_le_bytes(w)), rest)
                    }
                    _ => return Err(corrupt()),
                };
                let after = match rest.split_first() {
                    Some((0, [])) => None,
                    Some((1, key)) => Some(key.to_vec()),
                    _ => return Err(corrupt()),
                };
                Ok(Phase::Snapshot(Progress {
                    after,
                    watermark,
                    pending: VecDeque::new(),
                }))
            }
            _ => Err(corrupt()),
        }
    }

    /// The stored resume state of this phase.
    pub(crate) fn encode(&self) -> Arc<[u8]> {
        match self {
            Phase::Log => Arc::from(&[LOG][..]),
            Phase::Snapshot(p) => {
                let mut out = vec![SNAPSHOT];
                match p.watermark {
                    None => out.push(0),
                    Some(w) => {
                        out.push(1);
                        out.extend_from_slice(&w.to_le_bytes());
                    }
                }
                match &p.after {
                    None => out.push(0),
                    Some(k) => {
                        out.push(1);
                        out.extend_from_slice(k);
                    }
                }
                Arc::from(out)
            }
        }
    }

    /// True while the source reads the current rows.
    pub(crate) fn is_snapshot(&self) -> bool {
        matches!(self, Phase::Snapshot(_))
    }
}

/// True when a table source's stored state says it is still reading the current rows.
pub(crate) fn in_snapshot(seq: u64, state: Option<&[u8]>) -> bool {
    Phase::of(seq, state).is_ok_and(|p| p.is_snapshot())
}

/// Reads the next chunk of the snapshot into `chain`, with the changes since the last chunk to
/// rows already sent first. Returns whether the backfill is done (the source then follows the
/// log from `reader.at.seq`) and how many rows it sent.
pub(crate) async fn step(
    reader: &mut SourceReader,
    progress: &mut Progress,
    chain: &mut Chain,
) -> Result<(bool, usize)> {
    let (changes, upto, done) =
        next_chunk(&reader.table, reader.at.seq, progress, reader.chunk_rows)?;
    reader.at.seq = upto;
    let rows = changes.iter().map(ChangeBatch::num_rows).sum();
    let mut chunk_max: Option<i64> = None;
    for change in changes {
        if let Some(w) = reader.batch_watermark(&change)? {
            progress.watermark = Some(progress.watermark.map_or(w, |h| h.max(w)));
            chunk_max = Some(chunk_max.map_or(w, |h| h.max(w)));
        }
        chain.shared.count_in(reader.at.index, change.num_rows());
        chain.push(0, change).await?;
    }
    if reader.arrival_order
        && let Some(last) = progress
            .after
            .as_deref()
            .and_then(|k| reader.table.row_id(k))
    {
        if let Some(w) = chunk_max {
            progress.pending.push_back((last, w));
        }
        let mut covered = None;
        while let Some(&(id, w)) = progress.pending.front()
            && id.saturating_add(SCAN_BATCH_ROWS as u64) <= last
        {
            covered = Some(covered.map_or(w, |c: i64| c.max(w)));
            progress.pending.pop_front();
        }
        if let Some(w) = reader.raise(covered) {
            chain.watermark(0, w).await?;
        }
    }
    if done {
        let held = progress.watermark.take();
        reader.at.state = Some(Phase::Log.encode());
        if let Some(w) = reader.raise(held) {
            chain.watermark(0, w).await?;
        }
    } else {
        reader.at.state = Some(Phase::Snapshot(progress.clone()).encode());
    }
    Ok((done, rows))
}

/// What a source at sequence `seq` with `progress` sends next: the changes since `seq` to rows
/// already sent, then up to `max_rows` stored rows after them, all as of one snapshot; that
/// snapshot's sequence; and whether no stored row is left (the backfill is done). Moves
/// `progress` past the rows returned.
fn next_chunk(
    table: &TableStore,
    seq: u64,
    progress: &mut Progress,
    max_rows: usize,
) -> Result<(Vec<ChangeBatch>, u64, bool)> {
    let snap = table.snapshot();
    let upto = table.seq_at(&snap)?;
    let mut out = Vec::new();
    if let Some(after) = &progress.after {
        let mut at = seq;
        while at < upto {
            let entries = table.changes_after(Some(&snap), at, READ_ENTRIES)?;
            if entries.is_empty() {
                break;
            }
            for (s, change) in entries {
                at = s;
                let Some(keys) = table.change_keys(Some(&snap), s, &change)? else {
                    continue;
                };
                let sent: Vec<u32> = keys
                    .iter()
                    .enumerate()
                    .filter(|(_, k)| k.as_slice() <= after.as_slice())
                    .map(|(i, _)| i as u32)
                    .collect();
                if sent.is_empty() {
                    continue;
                }
                out.push(if sent.len() == change.num_rows() {
                    change
                } else {
                    unpaired(&change, sent)?
                });
            }
        }
    }
    let done = match table.scan_from(&snap, progress.after.as_deref(), max_rows)? {
        None => true,
        Some(chunk) => {
            progress.after = Some(chunk.last_key);
            out.push(chunk.rows);
            chunk.stored < max_rows
        }
    };
    Ok((out, upto, done))
}

/// Rows `sent` of `change`, an update's half whose other half is not among them turned into a
/// delete (of the old row) or an insert (of the new): an update that moved a row from a key
/// already sent to one not yet read, or back.
fn unpaired(change: &ChangeBatch, sent: Vec<u32>) -> Result<ChangeBatch> {
    let kept = |i: usize| sent.binary_search(&(i as u32)).is_ok();
    let ops: Vec<Op> = sent
        .iter()
        .map(|&i| {
            let i = i as usize;
            match change.ops[i] {
                Op::UpdateBefore if !kept(i + 1) => Op::Delete,
                Op::UpdateAfter if i == 0 || !kept(i - 1) => Op::Insert,
                op => op,
            }
        })
        .collect();
    let mut part = change.select(sent)?;
    part.ops = ops;
    Ok(part)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateStore;
    use crate::table::Modification;
    use datafusion::arrow::array::{Array, BooleanArray, Int64Array};
    use datafusion::arrow::compute::filter_record_batch;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use std::collections::BTreeMap;

    /// A small deterministic generator (splitmix64): the test needs no crate for it.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) % n
        }
    }

    fn batch(ids: Vec<i64>, vs: Vec<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(Int64Array::from(vs)),
            ],
        )
        .unwrap()
    }

    fn column(b: &RecordBatch, i: usize) -> &Int64Array {
        b.column(i).as_any().downcast_ref::<Int64Array>().unwrap()
    }

    /// Rows as a multiset: (id, v) -> count.
    type Bag = BTreeMap<(i64, i64), i64>;

    fn apply(bag: &mut Bag, change: &ChangeBatch) {
        let (ids, vs) = (column(&change.data, 0), column(&change.data, 1));
        for (i, op) in change.ops.iter().enumerate() {
            let n = bag.entry((ids.value(i), vs.value(i))).or_default();
            *n += if op.is_add() { 1 } else { -1 };
            assert!(
                *n >= 0,
                "a delete of a row never sent: {:?}",
                (ids.value(i), vs.value(i))
            );
        }
        bag.retain(|_, n| *n > 0);
    }

    fn stored(table: &TableStore) -> Bag {
        let mut bag = Bag::new();
        let snap = table.snapshot();
        table
            .scan(&snap, None, 1000, |b| {
                apply(&mut bag, &ChangeBatch::inserts(b));
                Ok(std::ops::ControlFlow::Continue(()))
            })
            .unwrap();
        bag
    }

    /// One random statement: inserts, updates of values and of keys (moving rows before and
    /// after the chunks read), deletes.
    fn change(table: &TableStore, keyed: bool, rng: &mut Rng, next_id: &mut i64) {
        let pick = rng.below(5) as i64;
        let m = 2 + rng.below(9) as i64;
        let r = rng.below(m as u64) as i64;
        let shift = if rng.below(2) == 0 { 1000 } else { -1000 };
        let selected = |b: &RecordBatch| -> BooleanArray {
            column(b, 1).iter().map(|v| v.map(|v| v % m == r)).collect()
        };
        let result = match pick {
            0 | 1 => {
                let ids: Vec<i64> = (0..3).map(|i| *next_id + i).collect();
                *next_id += 3;
                let vs = ids.iter().map(|_| rng.below(100) as i64).collect();
                table.insert(&[batch(ids, vs)]).map(|_| ())
            }
            2 => table
                .modify::<EngineError>(|b| {
                    let sel = selected(b);
                    let picked = filter_record_batch(b, &sel)?;
                    let vs = column(&picked, 1)
                        .iter()
                        .map(|v| v.unwrap_or(0) + 1)
                        .collect();
                    let ids = column(&picked, 0).values().to_vec();
                    Ok(Modification {
                        selected: sel,
                        replacement: Some(batch(ids, vs)),
                    })
                })
                .map(|_| ()),
            3 if keyed => table
                .modify::<EngineError>(|b| {
                    let sel = selected(b);
                    let picked = filter_record_batch(b, &sel)?;
                    let ids = column(&picked, 0)
                        .values()
                        .iter()
                        .map(|id| id + shift * (1 + *next_id))
                        .collect();
                    let vs = column(&picked, 1).values().to_vec();
                    Ok(Modification {
                        selected: sel,
                        replacement: Some(batch(ids, vs)),
                    })
                })
                .map(|_| ()),
            _ => table
                .modify::<EngineError>(|b| {
                    Ok(Modification {
                        selected: selected(b),
                        replacement: None,
                    })
                })
                .map(|_| ()),
        };
        // A key update may collide with an existing key: refused, like Postgres.
        match result {
            Ok(()) | Err(EngineError::DuplicateKey { .. }) => {}
            Err(e) => panic!("{e}"),
        }
        *next_id += 1;
    }

    /// The chunks and filtered changes a backfill sends, followed by the log after it, rebuild
    /// exactly the table's rows, whatever changes between the chunks.
    #[test]
    fn chunks_and_changes_between_them_rebuild_the_table() {
        let mut total_chunks = 0;
        for seed in 0..40u64 {
            let keyed = seed % 2 == 0;
            let dir = tempfile::tempdir().unwrap();
            let store = StateStore::open(dir.path()).unwrap();
            let key = if keyed { vec![0] } else { vec![] };
            let schema = batch(vec![], vec![]).schema();
            let table = TableStore::open(store, 9, "t", schema, key).unwrap();
            let mut rng = Rng(seed);
            let mut next_id = 0;
            for _ in 0..30 {
                change(&table, keyed, &mut rng, &mut next_id);
            }
            let mut bag = Bag::new();
            let mut progress = Progress::default();
            let mut seq = 0;
            let mut chunks = 0;
            loop {
                let (changes, upto, done) = next_chunk(&table, seq, &mut progress, 4).unwrap();
                for c in &changes {
                    apply(&mut bag, c);
                }
                seq = upto;
                chunks += 1;
                if done {
                    break;
                }
                for _ in 0..rng.below(3) {
                    change(&table, keyed, &mut rng, &mut next_id);
                }
                assert!(chunks < 10_000, "seed {seed}: the backfill does not end");
            }
            for _ in 0..5 {
                change(&table, keyed, &mut rng, &mut next_id);
            }
            for (_, c) in table.changes_after(None, seq, usize::MAX).unwrap() {
                apply(&mut bag, &c);
            }
            total_chunks += chunks;
            assert_eq!(bag, stored(&table), "seed {seed} (keyed {keyed})");
        }
        assert!(total_chunks > 200, "only {total_chunks} chunks in all");
    }

    #[test]
    fn phases_round_trip() {
        for phase in [
            Phase::Log,
            Phase::Snapshot(Progress::default()),
            Phase::Snapshot(Progress {
                after: Some(vec![b'T', 0, 1, 0xff]),
                watermark: Some(-5),
                pending: VecDeque::new(),
            }),
            Phase::Snapshot(Progress {
                after: Some(Vec::new()),
                watermark: None,
                pending: VecDeque::new(),
            }),
        ] {
            assert_eq!(Phase::of(3, Some(&phase.encode())).unwrap(), phase);
        }
        assert_eq!(
            Phase::of(0, None).unwrap(),
            Phase::Snapshot(Progress::default())
        );
        assert_eq!(Phase::of(7, None).unwrap(), Phase::Log);
        assert!(Phase::of(7, Some(b"S\x02")).is_err());
        assert!(Phase::of(7, Some(b"")).is_err());
    }
}
