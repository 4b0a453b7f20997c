//! Tests of top-N: every rank kind and range under random inserts, updates and deletes (ties,
//! identical rows, NULLs, deletes of the top rows), with and without the window cache, with
//! checkpoints into a real RocksDB and restarts from them, against a sort of the rows each group
//! holds.

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, UInt64Type};

use super::*;
use crate::operator::testing::{Epochs, Rng, commit, int64_batch, int64_schema, restored};
use crate::state::StateStore;

/// (k, x, v): partitioned by k, ordered by x DESC NULLS FIRST, then v.
type Row = [Option<i64>; 3];

fn input_schema() -> SchemaRef {
    int64_schema(&["k", "x", "v"])
}

fn batch(rows: &[(Op, Row)]) -> ChangeBatch {
    int64_batch(&input_schema(), rows)
}

#[derive(Debug, Clone, Copy)]
struct Case {
    rank: RankKind,
    lo: u64,
    hi: u64,
    emit_rank: bool,
    append_only: bool,
    /// Cache windows (and table entries) or read everything from the table.
    cached: bool,
}

fn spec(case: Case) -> TopNSpec {
    let desc = SortOptions {
        descending: true,
        nulls_first: true,
    };
    let mut order = vec![(1, desc)];
    if case.rank == RankKind::RowNumber {
        // A unique order, so the oracle's numbering is the operator's.
        order.push((2, SortOptions::default()));
    }
    TopNSpec {
        rows: PartitionOrder {
            input: input_schema(),
            width: 3,
            partition: vec![0],
            order,
        },
        rank: case.rank,
        lo: case.lo,
        hi: case.hi,
        emit_rank: case.emit_rank,
        append_only: case.append_only,
        close: None,
    }
}

fn operator(case: Case) -> TopN {
    let mut fields: Vec<Field> = input_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("rn", DataType::UInt64, false));
    TopN::try_new(spec(case), Arc::new(Schema::new(fields))).unwrap()
}

/// The rows of rank `lo..=hi` per group with their rank (0 when the rank is not emitted).
fn oracle(case: Case, rows: &[Row]) -> BTreeMap<(Row, u64), i64> {
    let mut groups: BTreeMap<Option<i64>, Vec<Row>> = BTreeMap::new();
    for r in rows {
        groups.entry(r[0]).or_default().push(*r);
    }
    // x DESC NULLS FIRST: NULL, then large to small; then v ascending.
    let key = |r: &Row| (r[1].map_or(0, |_| 1), r[1].map(|x| -x), r[2]);
    let mut out = BTreeMap::new();
    for (_, mut g) in groups {
        g.sort_by_key(key);
        let mut distinct = 0;
        let mut rank = 0;
        for (i, r) in g.iter().enumerate() {
            let tied = i > 0 && g[i - 1][1] == r[1];
            if !tied {
                distinct += 1;
                rank = i as u64 + 1;
            }
            let r_of = match case.rank {
                RankKind::RowNumber => i as u64 + 1,
                RankKind::Rank => rank,
                RankKind::DenseRank => distinct,
            };
            if (case.lo..=case.hi).contains(&r_of) {
                let shown = if case.emit_rank { r_of } else { 0 };
                *out.entry((*r, shown)).or_insert(0) += 1;
            }
        }
    }
    out
}

/// Applies `out` to `view`, failing on a retraction of a row the view does not hold.
fn apply(case: Case, view: &mut BTreeMap<(Row, u64), i64>, out: Vec<ChangeBatch>) {
    for b in out {
        let c = |i: usize| b.data.column(i).as_primitive::<Int64Type>();
        let rank = b.data.column(3).as_primitive::<UInt64Type>();
        for (i, op) in b.ops.iter().enumerate() {
            let row: Row = [0, 1, 2].map(|j| c(j).is_valid(i).then(|| c(j).value(i)));
            let shown = if case.emit_rank { rank.value(i) } else { 0 };
            let n = view.entry((row, shown)).or_insert(0);
            *n += if op.is_add() { 1 } else { -1 };
            assert!(
                *n >= 0,
                "{case:?}: retracted {row:?}, which the view does not hold"
            );
            if *n == 0 {
                view.remove(&(row, shown));
            }
        }
    }
}

fn random_changes(
    rng: &mut Rng,
    rows: &mut Vec<Row>,
    next: &mut i64,
    append_only: bool,
) -> Vec<(Op, Row)> {
    let mut changes = Vec::new();
    for _ in 0..1 + rng.below(6) {
        let pick = rng.below(10);
        if !append_only && !rows.is_empty() && pick < 4 {
            // Mostly the top rows of a group go: the refill case.
            let i = if rng.below(2) == 0 {
                let k = rows[rng.below(rows.len() as u64) as usize][0];
                (0..rows.len())
                    .filter(|&i| rows[i][0] == k)
                    .max_by_key(|&i| (rows[i][1].is_none(), rows[i][1]))
                    .unwrap_or(0)
            } else {
                rng.below(rows.len() as u64) as usize
            };
            let row = rows.swap_remove(i);
            if pick < 2 {
                let mut new = row;
                new[1] = Some(rng.below(6) as i64);
                if rng.below(3) == 0 {
                    new[0] = Some(rng.below(3) as i64);
                }
                changes.push((Op::UpdateBefore, row));
                changes.push((Op::UpdateAfter, new));
                rows.push(new);
            } else {
                changes.push((Op::Delete, row));
            }
        } else if !rows.is_empty() && pick == 9 {
            // An identical copy of a row.
            let row = rows[rng.below(rows.len() as u64) as usize];
            rows.push(row);
            changes.push((Op::Insert, row));
        } else {
            *next += 1;
            let k = (rng.below(8) != 0).then(|| rng.below(3) as i64);
            let x = (rng.below(8) != 0).then(|| rng.below(6) as i64);
            let row = [k, x, Some(*next)];
            rows.push(row);
            changes.push((Op::Insert, row));
        }
    }
    changes
}

fn check(case: Case, seed: u64) {
    check_with(case, seed, &operator(case));
}

/// [`check`] of `proto`, an operator doing what `case` says.
fn check_with(case: Case, seed: u64, proto: &dyn Operator) {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let mut scope = StateScope::new(store.clone(), b"topn/", 0..crate::keygroup::KEY_GROUPS);
    if !case.cached {
        scope.cache_bytes = 0;
    }
    let mut op = restored(proto, &scope);
    let mut rng = Rng(seed);
    let mut next = 0;
    // The input's rows and the view.
    let mut model = (Vec::new(), BTreeMap::new());
    let mut epochs = Epochs::new(store.clone(), &model);
    for step in 0..200 {
        let (rows, view) = &mut model;
        let changes = random_changes(&mut rng, rows, &mut next, case.append_only);
        apply(case, view, op.process(0, batch(&changes)).unwrap());
        assert_eq!(
            *view,
            oracle(case, rows),
            "{case:?} seed {seed}, after step {step}"
        );
        epochs.step(&mut rng, proto, &scope, &mut op, &mut model);
    }
}

#[test]
fn every_rank_kind_and_range_matches_the_oracle() {
    let mut seed = 1;
    for rank in [RankKind::RowNumber, RankKind::Rank, RankKind::DenseRank] {
        for (lo, hi) in [(1, 1), (1, 3), (2, 4)] {
            for emit_rank in [true, false] {
                for cached in [true, false] {
                    seed += 1;
                    let case = Case {
                        rank,
                        lo,
                        hi,
                        emit_rank,
                        append_only: false,
                        cached,
                    };
                    check(case, seed * 7919);
                }
            }
        }
    }
}

#[test]
fn append_only_input_matches_the_oracle_with_either_layout() {
    let mut seed = 3;
    for rank in [RankKind::RowNumber, RankKind::Rank, RankKind::DenseRank] {
        // Up to rank 256 a group's window is one entry; beyond it, a row is one.
        for (lo, hi) in [(1, 1), (2, 4), (1, ONE_ENTRY_MAX_RANK + 1)] {
            for cached in [true, false] {
                seed += 1;
                let case = Case {
                    rank,
                    lo,
                    hi,
                    emit_rank: seed % 2 == 0,
                    append_only: true,
                    cached,
                };
                check(case, seed * 104_729);
            }
        }
    }
}

fn dedup(case: Case) -> Dedup {
    let top = operator(case);
    Dedup::try_new(top.shared.spec.clone(), Arc::clone(&top.shared.schema)).unwrap()
}

#[test]
fn deduplication_matches_the_oracle_with_and_without_memory_for_its_groups() {
    // Without a cache budget every committed group is dropped at each checkpoint and read
    // back from the table when it comes again.
    for (seed, emit_rank, cached) in [(5, true, true), (6, false, true), (7, true, false)] {
        let case = Case {
            rank: RankKind::RowNumber,
            lo: 1,
            hi: 1,
            emit_rank,
            append_only: true,
            cached,
        };
        for round in 0..4 {
            check_with(case, seed * 1_000 + round, &dedup(case));
        }
    }
}

#[test]
fn deduplication_keeps_one_entry_per_group_and_reads_back_dropped_groups() {
    let case = Case {
        rank: RankKind::RowNumber,
        lo: 1,
        hi: 1,
        emit_rank: false,
        append_only: true,
        cached: true,
    };
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let mut scope = StateScope::new(store.clone(), b"topn/", 0..crate::keygroup::KEY_GROUPS);
    let mut op = restored(&dedup(case), &scope);
    // 300 groups, each row beating the last one of its group (x grows; ordered DESC).
    let rows = |from: i64| -> Vec<(Op, Row)> {
        (from..from + 900)
            .map(|i| (Op::Insert, [Some(i % 300), Some(i), Some(i)]))
            .collect()
    };
    let mut view = BTreeMap::new();
    apply(case, &mut view, op.process(0, batch(&rows(0))).unwrap());
    commit(op.as_mut(), &scope, 1);
    let mut entries = 0;
    store
        .scan_prefix(None, b"topn/", None, |_, _| {
            entries += 1;
            Ok(std::ops::ControlFlow::Continue(()))
        })
        .unwrap();
    assert_eq!(entries, 300);
    // With no memory for groups, the next checkpoint drops them all; the rows after it find
    // each group's row in the table, retract it and replace it.
    scope.cache_bytes = 0;
    let mut op = dedup(case);
    op.restore(&scope).unwrap();
    assert!(!op.complete, "a table with groups is not known complete");
    apply(case, &mut view, op.process(0, batch(&rows(900))).unwrap());
    // Groups written in an epoch stay until it is committed, then go.
    commit(&mut op, &scope, 2);
    assert!(op.bytes > 0);
    commit(&mut op, &scope, 3);
    assert_eq!(op.bytes, 0);
    apply(case, &mut view, op.process(0, batch(&rows(1800))).unwrap());
    let want: BTreeMap<(Row, u64), i64> = (2400..2700)
        .map(|i| (([Some(i % 300), Some(i), Some(i)], 0), 1))
        .collect();
    assert_eq!(view, want);
}

#[test]
fn append_only_input_keeps_only_the_window() {
    for rank in [RankKind::RowNumber, RankKind::Rank, RankKind::DenseRank] {
        let case = Case {
            rank,
            lo: 1,
            hi: 2,
            emit_rank: true,
            append_only: true,
            cached: true,
        };
        check(case, 17);
        // The table holds one entry per group (its rows of rank <= 2, with ties) for each of
        // the 4 groups.
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let scope = StateScope::new(store.clone(), b"topn/", 0..crate::keygroup::KEY_GROUPS);
        let mut op = restored(&operator(case), &scope);
        let rows: Vec<(Op, Row)> = (0..500)
            .map(|i| (Op::Insert, [Some(i % 4), Some(i), Some(i)]))
            .collect();
        op.process(0, batch(&rows)).unwrap();
        for chunk in rows.chunks(7) {
            let more: Vec<(Op, Row)> = chunk
                .iter()
                .map(|(op, r)| (*op, [r[0], r[1].map(|x| x / 3), r[2].map(|v| v + 1000)]))
                .collect();
            op.process(0, batch(&more)).unwrap();
        }
        let mut state = StateBatch::new();
        op.checkpoint(1, &scope, &mut state).unwrap();
        store.write(state, false).unwrap();
        let mut entries = 0;
        store
            .scan_prefix(None, b"topn/", None, |_, _| {
                entries += 1;
                Ok(std::ops::ControlFlow::Continue(()))
            })
            .unwrap();
        assert_eq!(entries, 4, "{rank:?}: {entries} entries kept");
    }
}

#[test]
fn a_global_top_n_refills_from_state_after_a_restart() {
    let case = Case {
        rank: RankKind::RowNumber,
        lo: 1,
        hi: 2,
        emit_rank: true,
        append_only: false,
        cached: true,
    };
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let scope = StateScope::new(store.clone(), b"topn/", 0..crate::keygroup::KEY_GROUPS);
    let proto = operator(case);
    let mut op = restored(&proto, &scope);
    let rows: Vec<(Op, Row)> = (0..100)
        .map(|i| (Op::Insert, [Some(1), Some(i), Some(i)]))
        .collect();
    let mut view = BTreeMap::new();
    apply(case, &mut view, op.process(0, batch(&rows)).unwrap());
    commit(op.as_mut(), &scope, 1);
    // A new instance has read nothing; deleting the top row brings the third one in.
    let mut op = restored(&proto, &scope);
    let out = op
        .process(0, batch(&[(Op::Delete, [Some(1), Some(99), Some(99)])]))
        .unwrap();
    apply(case, &mut view, out);
    let top: Vec<(Row, u64)> = view.keys().copied().collect();
    assert_eq!(
        top,
        vec![
            ([Some(1), Some(97), Some(97)], 2),
            ([Some(1), Some(98), Some(98)], 1)
        ]
    );
}

#[test]
fn time_windows_close_on_the_watermark_free_their_groups_and_refuse_late_rows() {
    for emit_on_close in [false, true] {
        let case = Case {
            rank: RankKind::RowNumber,
            lo: 1,
            hi: 2,
            emit_rank: true,
            append_only: false,
            cached: true,
        };
        let mut fields: Vec<Field> = (input_schema().fields().iter())
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new("rn", DataType::UInt64, false));
        let spec = TopNSpec {
            // `k` is a window's start: the window closes 10 after it.
            close: Some(WindowClose {
                column: 0,
                offset: 10,
                emit_on_close,
            }),
            ..spec(case)
        };
        let proto = TopN::try_new(spec, Arc::new(Schema::new(fields))).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let scope = StateScope::new(store.clone(), b"topn/", 0..crate::keygroup::KEY_GROUPS);
        let mut op = restored(&proto, &scope);
        let rows: Vec<(Op, Row)> = [0, 10, 20]
            .iter()
            .flat_map(|&k| (0..5).map(move |x| (Op::Insert, [Some(k), Some(x), Some(x)])))
            .collect();
        let updates = op.process(0, batch(&rows)).unwrap();
        assert_eq!(updates.is_empty(), emit_on_close);
        // Every stored key of the operator's tables (rows `t`, timers `c`).
        let entries = || {
            let mut n = 0;
            store
                .scan_prefix(None, b"topn/", None, |_, _| {
                    n += 1;
                    Ok(std::ops::ControlFlow::Continue(()))
                })
                .unwrap();
            n
        };
        // The watermark reaches 15: the window at 0 closes.
        let closed = op.on_watermark(0, 15).unwrap();
        let emitted: Vec<(i64, i64, u64)> = closed
            .iter()
            .flat_map(|b| {
                let k = b.data.column(0).as_primitive::<Int64Type>().clone();
                let x = b.data.column(1).as_primitive::<Int64Type>().clone();
                let rn = b.data.column(3).as_primitive::<UInt64Type>().clone();
                (0..b.data.num_rows()).map(move |i| (k.value(i), x.value(i), rn.value(i)))
            })
            .collect();
        if emit_on_close {
            assert_eq!(emitted, vec![(0, 4, 1), (0, 3, 2)]);
        } else {
            assert!(emitted.is_empty(), "{emitted:?}");
        }
        // A row for the closed window is late: nothing changes.
        let late = op
            .process(0, batch(&[(Op::Insert, [Some(0), Some(99), Some(99)])]))
            .unwrap();
        assert!(late.is_empty());
        assert_eq!(op.take_late().len(), 1);
        commit(op.as_mut(), &scope, 1);
        // Two open windows of 5 rows each, and their two timers.
        assert_eq!(entries(), 12);
        let mut op = restored(&proto, &scope);
        op.on_watermark(0, 100).unwrap();
        commit(op.as_mut(), &scope, 2);
        assert_eq!(entries(), 0);
    }
}
