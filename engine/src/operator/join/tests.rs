//! Tests of the regular join: every join kind under random inserts and deletes on both sides,
//! with and without a residual condition, NULL keys, checkpoints into a real RocksDB and
//! restarts from them, against a nested-loop oracle over the rows each side holds.

use std::collections::BTreeMap;
use std::time::Duration;

use datafusion::arrow::array::Int64Array;
use datafusion::logical_expr::Operator as BinaryOp;
use datafusion::physical_plan::expressions::{BinaryExpr, Column};

use super::*;
use crate::operator::testing::{Epochs, Rng, commit, int64_batch, int64_schema, restored};
use crate::state::StateStore;

type Row = Vec<Option<i64>>;

fn side_schema(names: [&str; 2]) -> SchemaRef {
    int64_schema(&names)
}

use datafusion::arrow::datatypes::DataType;

fn batch(schema: &SchemaRef, rows: &[(Op, Row)]) -> ChangeBatch {
    int64_batch(schema, rows)
}

fn output_schema(kind: JoinKind) -> SchemaRef {
    let names: &[&str] = match kind.filtered() {
        Some((0, _)) => &["k", "v"],
        Some(_) => &["k2", "w"],
        None => &["k", "v", "k2", "w"],
    };
    Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(*n, DataType::Int64, true))
            .collect::<Vec<_>>(),
    ))
}

/// `v < w` over the left columns followed by the right ones.
fn less_than() -> Arc<dyn PhysicalExpr> {
    Arc::new(BinaryExpr::new(
        Arc::new(Column::new("v", 1)),
        BinaryOp::Lt,
        Arc::new(Column::new("w", 3)),
    ))
}

fn join(kind: JoinKind, filter: bool, null_equal: bool) -> HashJoin {
    let side = |names| JoinSide {
        schema: side_schema(names),
        keys: vec![0],
        width: 2,
    };
    HashJoin::try_new(
        kind,
        side(["k", "v"]),
        side(["k2", "w"]),
        null_equal,
        filter.then(less_than),
        output_schema(kind),
    )
    .unwrap()
}

/// The join of the two sides' rows (with multiplicity), computed naively.
fn oracle(
    kind: JoinKind,
    filter: bool,
    null_equal: bool,
    left: &[Row],
    right: &[Row],
) -> BTreeMap<Row, i64> {
    let matches = |l: &Row, r: &Row| {
        let keys = match (l[0], r[0]) {
            (Some(a), Some(b)) => a == b,
            (None, None) => null_equal,
            _ => false,
        };
        let cond = !filter || matches!((l[1], r[1]), (Some(v), Some(w)) if v < w);
        keys && cond
    };
    let mut out = BTreeMap::new();
    let mut add = |row: Row| *out.entry(row).or_insert(0) += 1;
    for l in left {
        let n = right.iter().filter(|r| matches(l, r)).count();
        match kind {
            JoinKind::LeftSemi if n > 0 => add(l.clone()),
            JoinKind::LeftAnti if n == 0 => add(l.clone()),
            JoinKind::Left | JoinKind::Full if n == 0 => {
                add([l.clone(), vec![None, None]].concat())
            }
            _ => {}
        }
        if kind.pairs() {
            for r in right.iter().filter(|r| matches(l, r)) {
                add([l.clone(), r.clone()].concat());
            }
        }
    }
    for r in right {
        let n = left.iter().filter(|l| matches(l, r)).count();
        match kind {
            JoinKind::RightSemi if n > 0 => add(r.clone()),
            JoinKind::RightAnti if n == 0 => add(r.clone()),
            JoinKind::Right | JoinKind::Full if n == 0 => {
                add([vec![None, None], r.clone()].concat())
            }
            _ => {}
        }
    }
    out
}

/// Applies `out` to `view`, failing on a retraction of a row the view does not hold.
fn apply(view: &mut BTreeMap<Row, i64>, out: Vec<ChangeBatch>) {
    for b in out {
        for (i, op) in b.ops.iter().enumerate() {
            let row: Row = b
                .data
                .columns()
                .iter()
                .map(|c| {
                    let c = c.as_any().downcast_ref::<Int64Array>().unwrap();
                    c.is_valid(i).then(|| c.value(i))
                })
                .collect();
            let n = view.entry(row.clone()).or_insert(0);
            *n += if op.is_add() { 1 } else { -1 };
            assert!(*n >= 0, "retracted {row:?}, which the view does not hold");
            if *n == 0 {
                view.remove(&row);
            }
        }
    }
}

fn random_changes(
    rng: &mut Rng,
    rows: &mut Vec<Row>,
    n: usize,
    with_nulls: bool,
    inserts_only: bool,
) -> Vec<(Op, Row)> {
    let mut changes = Vec::new();
    for _ in 0..n {
        if !inserts_only && !rows.is_empty() && rng.below(3) == 0 {
            let i = rng.below(rows.len() as u64) as usize;
            let row = rows.swap_remove(i);
            // An update is its before and after image.
            if rng.below(2) == 0 {
                let new = vec![row[0], Some(rng.below(4) as i64)];
                changes.push((Op::UpdateBefore, row));
                changes.push((Op::UpdateAfter, new.clone()));
                rows.push(new);
            } else {
                changes.push((Op::Delete, row));
            }
        } else {
            let key = if with_nulls && rng.below(6) == 0 {
                None
            } else {
                Some(rng.below(4) as i64)
            };
            let value = (rng.below(8) != 0).then(|| rng.below(4) as i64);
            let row = vec![key, value];
            rows.push(row.clone());
            changes.push((Op::Insert, row));
        }
    }
    changes
}

/// Random changes on both sides, in random batches, with checkpoints and restarts: after every
/// batch the view equals the oracle over the rows the sides hold.
fn check(kind: JoinKind, filter: bool, null_equal: bool, seed: u64) {
    check_sides(kind, filter, null_equal, [false; 2], seed);
}

/// [`check`], with the sides in `append_only` only inserting (and marked so).
fn check_sides(kind: JoinKind, filter: bool, null_equal: bool, append_only: [bool; 2], seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let scope = StateScope::new(store.clone(), b"join/", 0..crate::keygroup::KEY_GROUPS);
    let proto = join(kind, filter, null_equal).with_append_only(append_only);
    let mut op = restored(&proto, &scope);
    let schemas = [side_schema(["k", "v"]), side_schema(["k2", "w"])];
    let mut rng = Rng(seed);
    // The sides' rows and the view.
    let mut model = (Vec::new(), Vec::new(), BTreeMap::new());
    let mut epochs = Epochs::new(store.clone(), &model);
    for step in 0..150 {
        let (left, right, view) = &mut model;
        let side = rng.below(2) as usize;
        let rows = if side == 0 { &mut *left } else { &mut *right };
        let n = 1 + rng.below(6) as usize;
        let changes = random_changes(&mut rng, rows, n, true, append_only[side]);
        apply(
            view,
            op.process(side, batch(&schemas[side], &changes)).unwrap(),
        );
        assert_eq!(
            *view,
            oracle(kind, filter, null_equal, left, right),
            "{kind:?} filter {filter} seed {seed}, after step {step}"
        );
        epochs.step(&mut rng, &proto, &scope, &mut op, &mut model);
    }
}

#[test]
fn every_join_kind_matches_the_oracle() {
    let kinds = [
        JoinKind::Inner,
        JoinKind::Left,
        JoinKind::Right,
        JoinKind::Full,
        JoinKind::LeftSemi,
        JoinKind::LeftAnti,
        JoinKind::RightSemi,
        JoinKind::RightAnti,
    ];
    for kind in kinds {
        for filter in [false, true] {
            for seed in 1..4 {
                check(kind, filter, false, seed * 7919 + filter as u64);
            }
        }
    }
}

/// Append-only sides store each row under a sequence instead of a count: duplicates of a row,
/// restarts between epochs (uncommitted sequences used again) and degrees of outer and semi
/// joins still match the oracle.
#[test]
fn append_only_sides_match_the_oracle() {
    let kinds = [
        JoinKind::Inner,
        JoinKind::Left,
        JoinKind::Full,
        JoinKind::LeftSemi,
        JoinKind::RightAnti,
    ];
    for kind in kinds {
        for append_only in [[true, true], [true, false], [false, true]] {
            for seed in 1..3 {
                check_sides(kind, seed == 2, false, append_only, seed * 104729);
            }
        }
    }
}

#[test]
fn a_retraction_on_an_append_only_side_fails() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let scope = StateScope::new(store.clone(), b"join/", 0..crate::keygroup::KEY_GROUPS);
    let proto = join(JoinKind::Inner, false, false).with_append_only([true, false]);
    assert!(proto.describe().contains("left append-only"));
    let mut op = restored(&proto, &scope);
    let left = side_schema(["k", "v"]);
    let row = vec![Some(1), Some(2)];
    op.process(0, batch(&left, &[(Op::Insert, row.clone())]))
        .unwrap();
    let err = op
        .process(0, batch(&left, &[(Op::Delete, row)]))
        .err()
        .unwrap();
    assert!(err.to_string().contains("append-only left input"), "{err}");
}

#[test]
fn null_keys_match_when_compared_not_distinct() {
    for kind in [JoinKind::Inner, JoinKind::Full, JoinKind::LeftAnti] {
        check(kind, false, true, 42);
    }
}

#[test]
fn state_is_read_lazily_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let scope = StateScope::new(store.clone(), b"join/", 0..crate::keygroup::KEY_GROUPS);
    let proto = join(JoinKind::Inner, false, false);
    let mut op = restored(&proto, &scope);
    let left = side_schema(["k", "v"]);
    let right = side_schema(["k2", "w"]);
    let rows: Vec<(Op, Row)> = (0..1000)
        .map(|i| (Op::Insert, vec![Some(i), Some(i)]))
        .collect();
    op.process(0, batch(&left, &rows)).unwrap();
    commit(op.as_mut(), &scope, 1);
    // A new instance has read nothing, and finds a stored row when its key comes.
    let mut op = restored(&proto, &scope);
    let out = op
        .process(1, batch(&right, &[(Op::Insert, vec![Some(500), Some(9)])]))
        .unwrap();
    let mut view = BTreeMap::new();
    apply(&mut view, out);
    assert_eq!(
        view,
        BTreeMap::from([(vec![Some(500), Some(500), Some(500), Some(9)], 1)])
    );
}

#[test]
fn a_batch_that_meets_many_rows_is_joined_in_parts() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let scope = StateScope::new(store.clone(), b"join/", 0..crate::keygroup::KEY_GROUPS);
    for (kind, filter) in [(JoinKind::Full, false), (JoinKind::Inner, true)] {
        let proto = join(kind, filter, false);
        let mut op = restored(&proto, &scope);
        let (left_schema, right_schema) = (side_schema(["k", "v"]), side_schema(["k2", "w"]));
        let right: Vec<Row> = (0..30_000)
            .map(|i| vec![Some(i % 2), Some(i % 7)])
            .collect();
        let mut view = BTreeMap::new();
        let inserts = |rows: &[Row]| -> Vec<(Op, Row)> {
            rows.iter().map(|r| (Op::Insert, r.clone())).collect()
        };
        apply(
            &mut view,
            op.process(1, batch(&right_schema, &inserts(&right)))
                .unwrap(),
        );
        // Ten left rows meet 15,000 right rows each: 150,000 pairs, over the budget twice.
        let mut changes: Vec<(Op, Row)> = (0..8)
            .map(|i| (Op::Insert, vec![Some(0), Some(i)]))
            .collect();
        changes.push((Op::UpdateBefore, vec![Some(0), Some(3)]));
        changes.push((Op::UpdateAfter, vec![Some(5), Some(3)]));
        let mut left: Vec<Row> = (0..8).map(|i| vec![Some(0), Some(i)]).collect();
        left.retain(|r| r != &vec![Some(0), Some(3)]);
        left.push(vec![Some(5), Some(3)]);
        let mut parts = 0;
        let mut out = op.process(0, batch(&left_schema, &changes)).unwrap();
        loop {
            let rows: usize = out.iter().map(|b| b.num_rows()).sum();
            assert!(rows <= OUTPUT_BUDGET + 30_000, "{rows} rows in one part");
            apply(&mut view, out);
            parts += 1;
            if !op.has_pending() {
                break;
            }
            out = op.resume().unwrap();
        }
        assert!(parts >= 3, "{kind:?}: {parts} parts");
        assert_eq!(view, oracle(kind, filter, false, &left, &right), "{kind:?}");
    }
}

/// Flink's state TTL: a row nothing wrote for the TTL no longer matches, its retraction finds
/// nothing, live rows still match, and the checkpoint sweep deletes expired rows whose key never
/// comes back, from RocksDB too.
#[test]
fn state_ttl_forgets_rows_not_written_for_that_long() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let scope = StateScope::new(store.clone(), b"join/", 0..crate::keygroup::KEY_GROUPS);
    let (left, right) = (side_schema(["k", "v"]), side_schema(["k2", "w"]));
    let mut op = join(JoinKind::Inner, false, false).with_state_ttl(Duration::from_secs(10));
    assert!(
        op.describe().contains("state TTL 10 s"),
        "{}",
        op.describe()
    );
    op.restore(&scope).unwrap();
    let mut view = BTreeMap::new();
    let row = |k: i64, v: i64| vec![Some(k), Some(v)];
    op.set_clock(100);
    let ins =
        |rows: &[Row]| -> Vec<(Op, Row)> { rows.iter().map(|r| (Op::Insert, r.clone())).collect() };
    apply(
        &mut view,
        op.process(0, batch(&left, &ins(&[row(1, 1), row(2, 2)])))
            .unwrap(),
    );
    let many: Vec<Row> = (10..1000).map(|k| row(k, k)).collect();
    apply(&mut view, op.process(0, batch(&left, &ins(&many))).unwrap());
    commit(&mut op, &scope, 1);
    op.set_clock(105);
    apply(
        &mut view,
        op.process(1, batch(&right, &ins(&[row(1, 9)]))).unwrap(),
    );
    assert_eq!(
        view,
        BTreeMap::from([(vec![Some(1), Some(1), Some(1), Some(9)], 1)])
    );
    commit(&mut op, &scope, 2);
    // At 111 the left rows (written at 100) have expired; the right row (105) has not.
    op.set_clock(111);
    apply(
        &mut view,
        op.process(1, batch(&right, &ins(&[row(1, 8)]))).unwrap(),
    );
    assert_eq!(view.len(), 1, "an expired row matched: {view:?}");
    apply(
        &mut view,
        op.process(0, batch(&left, &ins(&[row(1, 5)]))).unwrap(),
    );
    let matched = |v: i64, w: i64| (vec![Some(1), Some(v), Some(1), Some(w)], 1);
    assert_eq!(
        view,
        BTreeMap::from([matched(1, 9), matched(5, 8), matched(5, 9)])
    );
    // The retraction of an expired row finds nothing to retract and no match.
    let out = op
        .process(0, batch(&left, &[(Op::Delete, row(2, 2))]))
        .unwrap();
    assert_eq!(out.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    // Sweeps at later checkpoints delete the expired rows nothing reads again.
    let stored = |store: &StateStore| {
        let mut n = 0;
        store
            .scan_prefix(None, b"join/", None, |_, _| {
                n += 1;
                Ok(ControlFlow::Continue(()))
            })
            .unwrap();
        n
    };
    assert!(stored(&store) >= 990);
    for epoch in 3..10 {
        commit(&mut op, &scope, epoch);
    }
    // Left (1, 5) and right (1, 8) were written at 111, right (1, 9) at 105: all live.
    assert_eq!(stored(&store), 3);
    op.set_clock(121);
    commit(&mut op, &scope, 10);
    assert_eq!(stored(&store), 0);
}
