//! Tests of the hash aggregate: a randomized oracle, checkpoint and restore, types, NULL keys.

use std::collections::HashMap;

use std::sync::atomic::Ordering;

use super::*;
use crate::state::StateStore;
use datafusion::arrow::array::{Decimal128Array, Float64Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::scalar::ScalarValue as S;

/// A batch in an epoch of its own: what the operator sends for it by the barrier.
trait Step {
    fn step(&mut self, batch: ChangeBatch) -> Result<Vec<ChangeBatch>>;
}

impl<T: Operator + ?Sized> Step for T {
    fn step(&mut self, batch: ChangeBatch) -> Result<Vec<ChangeBatch>> {
        let mut out = self.process(0, batch)?;
        out.extend(self.on_barrier()?);
        Ok(out)
    }
}

type Row = Vec<S>;

fn schema(fields: &[(&str, DataType)]) -> SchemaRef {
    let fields: Vec<Field> = fields
        .iter()
        .map(|(n, t)| Field::new(*n, t.clone(), true))
        .collect();
    Arc::new(Schema::new(fields))
}

fn spec(func: AggFunc, input: Option<usize>) -> AggSpec {
    AggSpec {
        func,
        input,
        ..AggSpec::default()
    }
}

/// A downstream view: the operator's changelog applied to rows keyed by their group columns.
struct View {
    keys: usize,
    rows: HashMap<Row, Row>,
}

impl View {
    fn new(keys: usize) -> Self {
        Self {
            keys,
            rows: HashMap::new(),
        }
    }

    fn apply(&mut self, out: Vec<ChangeBatch>) {
        assert!(out.len() <= 1, "one output batch per input batch");
        for b in out {
            assert!(b.num_rows() > 0);
            let mut before: Option<Row> = None;
            for (i, op) in b.ops.iter().enumerate() {
                let row: Row = b
                    .data
                    .columns()
                    .iter()
                    .map(|c| S::try_from_array(c, i).unwrap())
                    .collect();
                let key = row[..self.keys].to_vec();
                match op {
                    Op::Insert => {
                        assert!(self.rows.insert(key, row).is_none(), "insert over a row")
                    }
                    Op::Delete => assert_eq!(self.rows.remove(&key), Some(row)),
                    Op::UpdateBefore => {
                        assert_eq!(self.rows.get(&key), Some(&row));
                        before = Some(row);
                    }
                    Op::UpdateAfter => {
                        let old = before.take().expect("update after without before");
                        assert_eq!(old[..self.keys], row[..self.keys]);
                        assert_ne!(old, row, "unchanged result emitted");
                        self.rows.insert(key, row);
                    }
                }
            }
            assert!(before.is_none(), "update before without after");
        }
    }
}

fn int_batch(rows: &[(Op, Option<i64>, Option<i64>)]) -> ChangeBatch {
    let data = RecordBatch::try_new(
        schema(&[("k", DataType::Int64), ("v", DataType::Int64)]),
        vec![
            Arc::new(rows.iter().map(|r| r.1).collect::<Int64Array>()),
            Arc::new(rows.iter().map(|r| r.2).collect::<Int64Array>()),
        ],
    )
    .unwrap();
    ChangeBatch {
        data,
        ops: rows.iter().map(|r| r.0).collect(),
    }
}

fn scope(store: &StateStore) -> StateScope {
    StateScope::new(store.clone(), b"agg/", 0..crate::keygroup::KEY_GROUPS)
}

/// The operator with the state its scope holds in `store`.
fn restored(store: &StateStore, op: Result<HashAggregate>) -> Result<HashAggregate> {
    let mut op = op?;
    op.restore(&scope(store))?;
    Ok(op)
}

/// Bytes of table keys (key group and key) and values the aggregate's scope holds in `store`.
fn stored_bytes(store: &StateStore) -> usize {
    let scope = scope(store);
    let mut bytes = 0;
    scope
        .scan(|_, key, value| {
            bytes += 2 + key.len() + value.len();
            Ok(())
        })
        .unwrap();
    bytes
}

/// Groups the aggregate's scope holds in `store`.
fn stored_groups(store: &StateStore) -> usize {
    let mut groups = 0;
    scope(store)
        .scan(|_, _, _| {
            groups += 1;
            Ok(())
        })
        .unwrap();
    groups
}

/// `k, count(*), count(v), sum(v), avg(v), min(v), max(v), count(distinct v), first_value(v),
/// last_value(v) group by k`.
fn int_agg(store: &StateStore) -> HashAggregate {
    let mut op = unrestored_int_agg();
    op.restore(&scope(store)).unwrap();
    op
}

/// [`int_agg`] before its restore.
fn unrestored_int_agg() -> HashAggregate {
    use AggFunc::*;
    let i = DataType::Int64;
    let output = schema(&[
        ("k", i.clone()),
        ("n", i.clone()),
        ("nv", i.clone()),
        ("sum", i.clone()),
        ("avg", DataType::Float64),
        ("min", i.clone()),
        ("max", i.clone()),
        ("distinct", i.clone()),
        ("first", i.clone()),
        ("last", i.clone()),
    ]);
    let aggs = [
        (CountStar, None),
        (Count, Some(1)),
        (Sum, Some(1)),
        (Avg, Some(1)),
    ]
    .into_iter()
    .chain([(Min, Some(1)), (Max, Some(1)), (CountDistinct, Some(1))])
    .chain([(FirstValue, Some(1)), (LastValue, Some(1))])
    .map(|(f, c)| spec(f, c))
    .collect();
    let input = schema(&[("k", i.clone()), ("v", i)]);
    HashAggregate::try_new(input, vec![0], aggs, output).unwrap()
}

/// The same aggregates computed from scratch over the live input rows.
fn recompute(live: &[(Option<i64>, Option<i64>)]) -> HashMap<Row, Row> {
    let mut groups: HashMap<Option<i64>, Vec<Option<i64>>> = HashMap::new();
    for (k, v) in live {
        groups.entry(*k).or_default().push(*v);
    }
    let mut out = HashMap::new();
    for (k, vs) in groups {
        let mut vals: Vec<i64> = vs.iter().flatten().copied().collect();
        vals.sort();
        // FIRST_VALUE and LAST_VALUE without an order: by value, NULLs (kept) last.
        let first = vals.first().copied();
        let last = match vs.iter().any(Option::is_none) {
            true => None,
            false => vals.last().copied(),
        };
        let sum: i64 = vals.iter().sum();
        let some = !vals.is_empty();
        let avg = some.then(|| sum as f64 / vals.len() as f64);
        let n = vals.len();
        vals.dedup();
        let row = vec![
            S::Int64(k),
            S::Int64(Some(vs.len() as i64)),
            S::Int64(Some(n as i64)),
            S::Int64(some.then_some(sum)),
            S::Float64(avg),
            S::Int64(vals.first().copied()),
            S::Int64(vals.last().copied()),
            S::Int64(Some(vals.len() as i64)),
            S::Int64(first),
            S::Int64(last),
        ];
        out.insert(vec![S::Int64(k)], row);
    }
    out
}

/// xorshift64: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    fn row(&mut self) -> (Option<i64>, Option<i64>) {
        let k = self.below(21);
        let v = self.below(60);
        (
            (k < 20).then_some(k as i64),
            (v >= 10).then(|| v as i64 - 35),
        )
    }
}

#[test]
fn random_changes_match_recomputation_across_restarts() {
    // With room for every group, and with room for a few (groups leave memory and are read
    // again; some epochs commit late, so groups written or deleted in them must not be read).
    for cache_bytes in [crate::state::table::DEFAULT_CACHE_BYTES, 1_500] {
        random_changes(cache_bytes);
    }
}

fn random_changes(cache_bytes: usize) {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let scope = StateScope {
        cache_bytes,
        ..scope(&store)
    };
    let mut op = unrestored_int_agg();
    op.restore(&scope).unwrap();
    assert!(op.start().unwrap().is_empty());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut live: Vec<(Option<i64>, Option<i64>)> = Vec::new();
    let mut view = View::new(1);
    let (mut epoch, mut late, mut restarted) = (0, None, false);
    for round in 0..80 {
        let mut rows = Vec::new();
        for _ in 0..1 + rng.below(40) {
            let choice = if live.is_empty() { 0 } else { rng.below(10) };
            if choice < 5 {
                let (k, v) = rng.row();
                live.push((k, v));
                rows.push((Op::Insert, k, v));
            } else {
                let (k, v) = live.swap_remove(rng.below(live.len() as u64) as usize);
                if choice < 8 {
                    rows.push((Op::Delete, k, v));
                } else {
                    let (k2, v2) = rng.row();
                    live.push((k2, v2));
                    rows.push((Op::UpdateBefore, k, v));
                    rows.push((Op::UpdateAfter, k2, v2));
                }
            }
        }
        // Changes go out at the barrier: some epochs span several batches, so that a group
        // can change, vanish and come back within one.
        assert!(op.process(0, int_batch(&rows)).unwrap().is_empty());
        if rng.below(3) == 0 {
            continue;
        }
        view.apply(op.on_barrier().unwrap());
        let expected = recompute(&live);
        assert_eq!(view.rows, expected, "after round {round}");
        assert!(op.group_count() <= expected.len());
        epoch += 1;
        let mut batch = StateBatch::new();
        op.checkpoint(epoch, &scope, &mut batch).unwrap();
        // Sometimes an epoch commits with the next one.
        if late.is_none() && rng.below(3) == 0 {
            late = Some(batch);
            continue;
        }
        for batch in late.take().into_iter().chain([batch]) {
            store.write(batch, true).unwrap();
        }
        scope.committed.store(epoch, Ordering::Release);
        let stored = stored_bytes(&store);
        if restarted || cache_bytes < 10_000 {
            // Counted: at least the groups held in memory.
            assert!(op.state_bytes() <= stored, "after round {round}");
        } else {
            assert_eq!(op.state_bytes(), stored, "after round {round}");
        }
        if round % 12 == 11 {
            op = unrestored_int_agg();
            op.restore(&scope).unwrap();
            restarted = true;
            // Nothing is read at restore.
            assert_eq!(op.group_count(), 0);
            assert!(op.start().unwrap().is_empty());
        }
    }
    let mut figures = scope.figures.tables();
    let (_, table) = figures.pop().unwrap();
    let misses = table.misses.load(Ordering::Relaxed);
    if cache_bytes < 10_000 {
        assert!(misses > 0, "groups were read again");
    }
}

#[test]
fn restore_from_checkpoint_gives_identical_output() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let mut op = int_agg(&store);
    let first = int_batch(&[
        (Op::Insert, Some(1), Some(5)),
        (Op::Insert, Some(1), Some(2)),
        (Op::Insert, None, None),
        (Op::Insert, Some(2), Some(7)),
    ]);
    let second = int_batch(&[
        (Op::Delete, Some(1), Some(2)),
        (Op::UpdateBefore, Some(2), Some(7)),
        (Op::UpdateAfter, Some(2), Some(8)),
        (Op::Delete, None, None),
    ]);
    op.step(first).unwrap();
    let mut batch = StateBatch::new();
    op.checkpoint(1, &scope(&store), &mut batch).unwrap();
    store.write(batch, true).unwrap();
    let expected = op.step(second.clone()).unwrap();
    assert_eq!(
        expected[0].ops,
        [
            Op::UpdateBefore,
            Op::UpdateAfter,
            Op::UpdateBefore,
            Op::UpdateAfter,
            Op::Delete
        ]
    );

    // The second batch was never checkpointed: a restart sees the state after the first.
    drop(op);
    let mut op = int_agg(&store);
    assert_eq!(stored_groups(&store), 3);
    assert_eq!(op.step(second).unwrap(), expected);
    let mut batch = StateBatch::new();
    op.checkpoint(1, &scope(&store), &mut batch).unwrap();
    store.write(batch, true).unwrap();
    assert_eq!(stored_groups(&store), 2);
}

#[test]
fn global_aggregate_starts_at_zero_and_is_never_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let input = schema(&[("v", DataType::Int64)]);
    let output = schema(&[("n", DataType::Int64), ("sum", DataType::Int64)]);
    let aggs = || vec![spec(AggFunc::CountStar, None), spec(AggFunc::Sum, Some(0))];
    let open = || {
        restored(
            &store,
            HashAggregate::try_new(input.clone(), vec![], aggs(), output.clone()),
        )
    };
    let batch = |rows: &[(Op, Option<i64>)]| ChangeBatch {
        data: RecordBatch::try_new(
            input.clone(),
            vec![Arc::new(rows.iter().map(|r| r.1).collect::<Int64Array>())],
        )
        .unwrap(),
        ops: rows.iter().map(|r| r.0).collect(),
    };
    let row = |n: i64, sum: Option<i64>| vec![S::Int64(Some(n)), S::Int64(sum)];

    let mut op = open().unwrap();
    let mut view = View::new(0);
    let start = op.start().unwrap();
    assert_eq!(start[0].ops, [Op::Insert]);
    view.apply(start);
    assert_eq!(view.rows[&vec![]], row(0, None));

    view.apply(
        op.step(batch(&[(Op::Insert, Some(5)), (Op::Insert, None)]))
            .unwrap(),
    );
    assert_eq!(view.rows[&vec![]], row(2, Some(5)));
    // A row added and retracted within one batch changes nothing.
    assert!(
        op.step(batch(&[(Op::Insert, Some(9)), (Op::Delete, Some(9))]))
            .unwrap()
            .is_empty()
    );

    let out = op
        .step(batch(&[(Op::Delete, Some(5)), (Op::Delete, None)]))
        .unwrap();
    assert_eq!(out[0].ops, [Op::UpdateBefore, Op::UpdateAfter]);
    view.apply(out);
    assert_eq!(view.rows[&vec![]], row(0, None));
    assert_eq!(op.group_count(), 1);

    let mut state = StateBatch::new();
    op.checkpoint(1, &scope(&store), &mut state).unwrap();
    store.write(state, true).unwrap();
    let mut op = open().unwrap();
    assert!(
        op.start().unwrap().is_empty(),
        "the recovered row is already downstream"
    );
    view.apply(op.step(batch(&[(Op::Insert, Some(3))])).unwrap());
    assert_eq!(view.rows[&vec![]], row(1, Some(3)));
}

#[test]
fn floats_strings_decimals_and_null_keys() {
    use AggFunc::*;
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let (f64t, utf8, dec) = (
        DataType::Float64,
        DataType::Utf8,
        DataType::Decimal128(10, 2),
    );
    let input = schema(&[
        ("k", utf8.clone()),
        ("f", f64t.clone()),
        ("s", utf8.clone()),
        ("d", dec.clone()),
    ]);
    let output = schema(&[
        ("k", utf8.clone()),
        ("sum_f", f64t.clone()),
        ("avg_f", f64t.clone()),
        ("distinct_f", DataType::Int64),
        ("min_s", utf8.clone()),
        ("max_s", utf8),
        ("sum_d", DataType::Decimal128(20, 2)),
        ("avg_d", DataType::Decimal128(14, 6)),
        ("max_d", dec),
    ]);
    let aggs = [
        (Sum, 1),
        (Avg, 1),
        (CountDistinct, 1),
        (Min, 2),
        (Max, 2),
        (Sum, 3),
        (Avg, 3),
        (Max, 3),
    ];
    let aggs = aggs.into_iter().map(|(f, c)| spec(f, Some(c))).collect();
    let mut op = restored(
        &store,
        HashAggregate::try_new(input.clone(), vec![0], aggs, output),
    )
    .unwrap();
    type In<'a> = (Op, Option<&'a str>, f64, Option<&'a str>, Option<i128>);
    let batch = |rows: &[In]| ChangeBatch {
        data: RecordBatch::try_new(
            input.clone(),
            vec![
                Arc::new(rows.iter().map(|r| r.1).collect::<StringArray>()),
                Arc::new(rows.iter().map(|r| Some(r.2)).collect::<Float64Array>()),
                Arc::new(rows.iter().map(|r| r.3).collect::<StringArray>()),
                Arc::new(
                    rows.iter()
                        .map(|r| r.4)
                        .collect::<Decimal128Array>()
                        .with_precision_and_scale(10, 2)
                        .unwrap(),
                ),
            ],
        )
        .unwrap(),
        ops: rows.iter().map(|r| r.0).collect(),
    };
    let row = |k: Option<&str>, f: [f64; 2], n: i64, s: [Option<&str>; 2], d: [Option<i128>; 3]| {
        let dec = |v, p, s| S::Decimal128(v, p, s);
        let text = |v: Option<&str>| S::Utf8(v.map(String::from));
        vec![
            text(k),
            S::Float64(Some(f[0])),
            S::Float64(Some(f[1])),
            S::Int64(Some(n)),
            text(s[0]),
            text(s[1]),
        ]
        .into_iter()
        .chain([dec(d[0], 20, 2), dec(d[1], 14, 6), dec(d[2], 10, 2)])
        .collect::<Row>()
    };
    let mut view = View::new(1);
    view.apply(
        op.step(batch(&[
            (Op::Insert, None, 1.5, Some("pear"), Some(125)),
            (Op::Insert, None, -0.0, Some("apple"), Some(250)),
            (Op::Insert, Some("a"), 0.0, Some("zoo"), None),
            (Op::Insert, Some("a"), -0.0, None, Some(100)),
            (Op::Insert, Some("a"), f64::NAN, Some("b"), Some(100)),
            (Op::Insert, Some("a"), 3.0, None, Some(0)),
        ]))
        .unwrap(),
    );
    let null = vec![S::Utf8(None)];
    let a = vec![S::Utf8(Some("a".into()))];
    assert_eq!(
        view.rows[&null],
        row(
            None,
            [1.5, 0.75],
            2,
            [Some("apple"), Some("pear")],
            [Some(375), Some(1_875_000), Some(250)]
        )
    );
    // 0.0 and -0.0 are one distinct value; NaN is another. 2.00 / 3 truncates to 0.666666, as DataFusion's avg.
    let nan = [f64::NAN, f64::NAN];
    assert_eq!(
        view.rows[&a],
        row(
            Some("a"),
            nan,
            3,
            [Some("b"), Some("zoo")],
            [Some(200), Some(666_666), Some(100)]
        )
    );

    view.apply(
        op.step(batch(&[
            (Op::Delete, None, -0.0, Some("apple"), Some(250)),
            (Op::Delete, Some("a"), f64::NAN, Some("b"), Some(100)),
            (Op::Delete, Some("a"), 0.0, Some("zoo"), None),
        ]))
        .unwrap(),
    );
    assert_eq!(
        view.rows[&null],
        row(
            None,
            [1.5, 1.5],
            1,
            [Some("pear"), Some("pear")],
            [Some(125), Some(1_250_000), Some(125)]
        )
    );
    // Retracting the NaN brings back a finite sum; no strings are left, so MIN/MAX are NULL.
    assert_eq!(
        view.rows[&a],
        row(
            Some("a"),
            [3.0, 1.5],
            2,
            [None, None],
            [Some(100), Some(500_000), Some(100)]
        )
    );
    assert_eq!(op.group_count(), 2);
}

#[test]
fn plans_the_operator_cannot_run_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let input = schema(&[("s", DataType::Utf8)]);
    let output = schema(&[("sum", DataType::Int64)]);
    let new = |func, col| {
        restored(
            &store,
            HashAggregate::try_new(input.clone(), vec![], vec![spec(func, col)], output.clone()),
        )
    };
    assert!(new(AggFunc::Sum, Some(0)).is_err());
    assert!(new(AggFunc::BoolAnd, Some(0)).is_err());
    assert!(new(AggFunc::Count, Some(3)).is_err());
    assert!(new(AggFunc::CountStar, Some(0)).is_err());
    assert!(new(AggFunc::Count, Some(0)).is_ok());
}

#[test]
fn min_max_and_distinct_of_many_types_match_recomputation_across_restarts() {
    use AggFunc::*;
    let utc = Some(Arc::from("UTC"));
    let types = [
        DataType::Boolean,
        DataType::Int8,
        DataType::UInt16,
        DataType::Float32,
        DataType::Timestamp(
            datafusion::arrow::datatypes::TimeUnit::Microsecond,
            utc.clone(),
        ),
        DataType::Decimal128(20, 3),
        DataType::Utf8,
    ];
    let mut fields = vec![("k", DataType::Int64)];
    fields.extend(types.iter().map(|t| ("v", t.clone())));
    let input = schema(&fields);
    let mut out_fields = vec![("k", DataType::Int64)];
    let mut aggs = Vec::new();
    for (c, t) in types.iter().enumerate() {
        out_fields.extend([
            ("min", t.clone()),
            ("max", t.clone()),
            ("n", DataType::Int64),
        ]);
        aggs.extend([Min, Max, CountDistinct].map(|f| spec(f, Some(c + 1))));
    }
    let output = schema(&out_fields);
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let open = || {
        restored(
            &store,
            HashAggregate::try_new(input.clone(), vec![0], aggs.clone(), output.clone()),
        )
        .unwrap()
    };
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let random_row = |rng: &mut Rng| -> Row {
        let mut row = vec![S::Int64(Some(rng.below(6) as i64))];
        for t in &types {
            let v = rng.below(7) as i64 - 3;
            row.push(if rng.below(6) == 0 {
                S::try_from(t).unwrap()
            } else {
                match t {
                    DataType::Boolean => S::Boolean(Some(v > 0)),
                    DataType::Int8 => S::Int8(Some(v as i8 * 40)),
                    DataType::UInt16 => S::UInt16(Some((v + 3) as u16 * 9000)),
                    DataType::Float32 => S::Float32(Some(v as f32 * 1.5e30)),
                    DataType::Timestamp(..) => S::TimestampMicrosecond(Some(v << 40), utc.clone()),
                    DataType::Decimal128(..) => S::Decimal128(Some(i128::from(v) << 70), 20, 3),
                    _ => S::Utf8(Some(
                        ["", "a", "ab", "b", "\u{e9}", "z", "ba"][(v + 3) as usize].into(),
                    )),
                }
            });
        }
        row
    };
    let recompute = |live: &[Row]| {
        let mut groups: HashMap<Row, Vec<&Row>> = HashMap::new();
        for row in live {
            groups.entry(row[..1].to_vec()).or_default().push(row);
        }
        let mut out = HashMap::new();
        for (key, rows) in groups {
            let mut result = key.clone();
            for (c, t) in types.iter().enumerate() {
                let mut vals: Vec<&S> = rows
                    .iter()
                    .map(|r| &r[c + 1])
                    .filter(|v| !v.is_null())
                    .collect();
                vals.sort_by(|a, b| a.partial_cmp(b).unwrap());
                vals.dedup();
                let null = S::try_from(t).unwrap();
                result.push(vals.first().map_or(null.clone(), |v| (*v).clone()));
                result.push(vals.last().map_or(null, |v| (*v).clone()));
                result.push(S::Int64(Some(vals.len() as i64)));
            }
            out.insert(key, result);
        }
        out
    };

    let mut op = open();
    // Every type but strings takes the fixed-width path.
    let widths: Vec<Option<usize>> = op
        .aggs
        .iter()
        .step_by(3)
        .map(|agg| match agg.state {
            accumulator::State::Fixed { width, .. } => Some(width),
            _ => None,
        })
        .collect();
    assert_eq!(
        widths,
        [Some(1), Some(1), Some(2), Some(4), Some(8), Some(16), None]
    );
    let mut live: Vec<Row> = Vec::new();
    let mut view = View::new(1);
    for round in 0..40 {
        let mut rows = Vec::new();
        let mut ops = Vec::new();
        for _ in 0..1 + rng.below(30) {
            if live.is_empty() || rng.below(10) < 6 {
                let row = random_row(&mut rng);
                live.push(row.clone());
                rows.push(row);
                ops.push(Op::Insert);
            } else {
                rows.push(live.swap_remove(rng.below(live.len() as u64) as usize));
                ops.push(Op::Delete);
            }
        }
        let columns = (0..input.fields().len())
            .map(|c| S::iter_to_array(rows.iter().map(|r| r[c].clone())).unwrap())
            .collect();
        let data = RecordBatch::try_new(input.clone(), columns).unwrap();
        view.apply(op.step(ChangeBatch { data, ops }).unwrap());
        assert_eq!(view.rows, recompute(&live), "after round {round}");

        if round % 2 == 0 {
            continue;
        }
        let mut batch = StateBatch::new();
        op.checkpoint(1, &scope(&store), &mut batch).unwrap();
        store.write(batch, true).unwrap();
        if round < 8 {
            assert_eq!(op.state_bytes(), stored_bytes(&store), "round {round}");
        } else {
            // After a restart: at least what the groups in memory take.
            assert!(op.state_bytes() <= stored_bytes(&store), "round {round}");
        }
        if round % 8 == 7 {
            op = open();
            assert_eq!(stored_groups(&store), view.rows.len());
        }
    }
}

#[test]
fn retracting_a_row_never_added_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let mut op = int_agg(&store);
    assert!(
        op.step(int_batch(&[(Op::Delete, Some(1), Some(5))]))
            .is_err()
    );

    let mut op = int_agg(&store);
    op.step(int_batch(&[
        (Op::Insert, Some(1), Some(5)),
        (Op::Insert, Some(1), Some(7)),
    ]))
    .unwrap();
    // The row count stays positive, but no 6 was ever added to the group's multisets.
    assert!(
        op.step(int_batch(&[(Op::Delete, Some(1), Some(6))]))
            .is_err()
    );

    // Within one batch a retraction may come before its row; only the batch's net effect counts.
    let mut op = int_agg(&store);
    let mut view = View::new(1);
    view.apply(
        op.step(int_batch(&[
            (Op::Insert, Some(1), Some(1)),
            (Op::Delete, Some(1), Some(5)),
            (Op::Insert, Some(1), Some(5)),
        ]))
        .unwrap(),
    );
    assert_eq!(view.rows, recompute(&[(Some(1), Some(1))]));
}

/// Over an append-only input MIN and MAX keep one value per group (COUNT(DISTINCT) still keeps
/// its set): results equal recomputation across restarts, the state stays small, and a
/// retraction is refused.
#[test]
fn append_only_min_max_keep_one_value_per_group() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    // MIN/MAX only: COUNT(DISTINCT) would keep every value whatever the input.
    let agg = |store: &StateStore| {
        use AggFunc::*;
        let i = DataType::Int64;
        let output = schema(&[("k", i.clone()), ("min", i.clone()), ("max", i.clone())]);
        let aggs = vec![spec(Min, Some(1)), spec(Max, Some(1))];
        let input = schema(&[("k", i.clone()), ("v", i)]);
        restored(store, HashAggregate::try_new(input, vec![0], aggs, output))
            .unwrap()
            .with_append_only_input()
    };
    let mut op = agg(&store);
    let mut rng = Rng(7);
    let mut live: HashMap<Option<i64>, (i64, i64)> = HashMap::new();
    let mut view = View::new(1);
    for round in 0..30 {
        let rows: Vec<(Op, Option<i64>, Option<i64>)> = (0..500)
            .map(|_| {
                let k = Some(rng.below(5) as i64);
                let v = Some(rng.below(1_000_000) as i64 - 500_000);
                (Op::Insert, k, v)
            })
            .collect();
        for &(_, k, v) in &rows {
            let v = v.unwrap();
            let e = live.entry(k).or_insert((v, v));
            *e = (e.0.min(v), e.1.max(v));
        }
        view.apply(op.step(int_batch(&rows)).unwrap());
        let expected: HashMap<Row, Row> = live
            .iter()
            .map(|(k, (lo, hi))| {
                let key = vec![S::Int64(*k)];
                (
                    key.clone(),
                    [key, vec![S::Int64(Some(*lo)), S::Int64(Some(*hi))]].concat(),
                )
            })
            .collect();
        assert_eq!(view.rows, expected, "after round {round}");
        let mut batch = StateBatch::new();
        op.checkpoint(1, &scope(&store), &mut batch).unwrap();
        store.write(batch, true).unwrap();
        if round % 10 == 9 {
            op = agg(&store);
        }
    }
    // 15,000 values in 5 groups: each group's state holds its two extremes.
    assert!(
        stored_bytes(&store) < 5 * 100,
        "{} bytes",
        stored_bytes(&store)
    );
    assert!(
        op.step(int_batch(&[(Op::Delete, Some(1), Some(5))]))
            .is_err()
    );
}

/// `window_end, sum(v) GROUP BY window_end`, closing at `window_end`, emitting on close.
fn window_agg() -> HashAggregate {
    let ts = DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, None);
    let input = schema(&[("window_end", ts.clone()), ("v", DataType::Int64)]);
    let output = schema(&[("window_end", ts), ("s", DataType::Int64)]);
    HashAggregate::try_new(input, vec![0], vec![spec(AggFunc::Sum, Some(1))], output)
        .unwrap()
        .with_window(0, 0, true, None)
}

fn window_batch(rows: &[(i64, i64)]) -> ChangeBatch {
    use datafusion::arrow::array::TimestampMicrosecondArray;
    let op = window_agg();
    ChangeBatch {
        data: RecordBatch::try_new(
            Arc::clone(&op.input),
            vec![
                Arc::new(TimestampMicrosecondArray::from_iter_values(
                    rows.iter().map(|r| r.0),
                )),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap(),
        ops: vec![Op::Insert; rows.len()],
    }
}

fn sums(out: &[ChangeBatch]) -> Vec<(Op, i64)> {
    out.iter()
        .flat_map(|b| {
            let s = b
                .data
                .column(1)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            b.ops
                .iter()
                .copied()
                .zip(s.values().iter().copied())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn windows_close_on_the_watermark_free_their_state_and_survive_restore() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let mut op = restored(&store, Ok(window_agg())).unwrap();
    assert!(
        op.step(window_batch(&[(10, 1), (10, 2), (20, 5)]))
            .unwrap()
            .is_empty()
    );
    assert_eq!(op.group_count(), 2);
    // Window 10 closes: its one final row, and its state is gone.
    assert_eq!(
        sums(&op.on_watermark(0, 10).unwrap()),
        vec![(Op::Insert, 3)]
    );
    assert_eq!(op.group_count(), 1);
    // A row for the closed window is late: kept aside, not aggregated.
    assert!(
        op.step(window_batch(&[(10, 7), (30, 1)]))
            .unwrap()
            .is_empty()
    );
    let late = op.take_late();
    assert_eq!(late.len(), 1);
    assert_eq!((late[0].event_time, late[0].watermark), (10, 10));
    let mut batch = StateBatch::new();
    op.checkpoint(1, &scope(&store), &mut batch).unwrap();
    store.write(batch, true).unwrap();

    // Restored: the open windows (20 and 30), read only when their timers fire, close as the
    // watermark passes them.
    let mut op = restored(&store, Ok(window_agg())).unwrap();
    assert_eq!(op.group_count(), 0);
    assert!(op.on_watermark(0, 10).unwrap().is_empty());
    assert_eq!(
        sums(&op.on_watermark(0, 25).unwrap()),
        vec![(Op::Insert, 5)]
    );
    assert_eq!(
        sums(&op.on_watermark(0, 40).unwrap()),
        vec![(Op::Insert, 1)]
    );
    assert_eq!(op.group_count(), 0);
    let mut batch = StateBatch::new();
    op.checkpoint(1, &scope(&store), &mut batch).unwrap();
    store.write(batch, true).unwrap();
    assert_eq!(op.state_bytes(), 0);
    assert_eq!(restored(&store, Ok(window_agg())).unwrap().group_count(), 0);
}

/// Commits `op`'s checkpoint of epoch `epoch` into `scope`'s store.
fn commit(op: &mut HashAggregate, scope: &StateScope, epoch: u64) {
    let mut batch = StateBatch::new();
    op.checkpoint(epoch, scope, &mut batch).unwrap();
    scope.store.write(batch, true).unwrap();
    scope.committed.store(epoch, Ordering::Release);
}

/// Point reads of an aggregate's group table that went to the store since its restore.
fn group_reads(op: &HashAggregate) -> u64 {
    op.table.as_ref().map_or(0, |t| t.stats().misses)
}

/// The rows of `out` as (op, window_end, sum).
fn window_sums(out: &[ChangeBatch]) -> Vec<(Op, i64, i64)> {
    use datafusion::arrow::array::{AsArray, TimestampMicrosecondArray};
    let mut rows = Vec::new();
    for b in out {
        let ends = b
            .data
            .column(0)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>();
        let sums = b
            .data
            .column(1)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        for (r, op) in b.ops.iter().enumerate() {
            rows.push((*op, ends.unwrap().value(r), sums.value(r)));
        }
    }
    rows
}

#[test]
fn a_restart_with_many_open_windows_reads_no_group_until_it_is_needed() {
    const WINDOWS: i64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let scope = scope(&store);
    let mut op = window_agg();
    op.restore(&scope).unwrap();
    // Window `10 * w` gets the rows 1 and `w`.
    let rows: Vec<(i64, i64)> = (1..=WINDOWS)
        .flat_map(|w| [(10 * w, 1), (10 * w, w)])
        .collect();
    assert!(op.step(window_batch(&rows)).unwrap().is_empty());
    commit(&mut op, &scope, 1);
    assert_eq!(stored_groups(&store), WINDOWS as usize);

    // A restart reads nothing: no group, no timer.
    let mut op = window_agg();
    op.restore(&scope).unwrap();
    assert_eq!((op.group_count(), group_reads(&op)), (0, 0));
    // A row of one window reads that window's group alone.
    assert!(op.step(window_batch(&[(20, 100)])).unwrap().is_empty());
    assert_eq!((op.group_count(), group_reads(&op)), (1, 1));
    // The watermark closes the windows it passes, each read when its timer fires, in order.
    let out = op.on_watermark(0, 10 * 100).unwrap();
    let expected: Vec<(Op, i64, i64)> = (1..=100)
        .map(|w| (Op::Insert, 10 * w, 1 + w + if w == 2 { 100 } else { 0 }))
        .collect();
    assert_eq!(window_sums(&out), expected);
    assert_eq!((op.group_count(), group_reads(&op)), (0, 100));
    commit(&mut op, &scope, 2);
    assert_eq!(stored_groups(&store), WINDOWS as usize - 100);
    // A late row of a closed window is set aside; the others keep their windows open.
    assert!(op.step(window_batch(&[(500, 1)])).unwrap().is_empty());
    assert_eq!(op.take_late().len(), 1);

    // Again after a second restart: the rest close, and no state is left.
    let mut op = window_agg();
    op.restore(&scope).unwrap();
    assert!(op.on_watermark(0, 10 * 100).unwrap().is_empty());
    assert_eq!(group_reads(&op), 0);
    let out = op.on_watermark(0, 10 * WINDOWS).unwrap();
    assert_eq!(
        out.iter().map(|b| b.num_rows()).sum::<usize>(),
        WINDOWS as usize - 100
    );
    assert_eq!(
        window_sums(&out).last(),
        Some(&(Op::Insert, 10 * WINDOWS, 1 + WINDOWS))
    );
    commit(&mut op, &scope, 3);
    assert_eq!((op.group_count(), stored_groups(&store)), (0, 0));
}

/// `k, count(*), sum(v) GROUP BY k` under a state TTL of `ttl` seconds.
fn ttl_agg(ttl: u64, now: u32) -> HashAggregate {
    let i = DataType::Int64;
    let input = schema(&[("k", i.clone()), ("v", i.clone())]);
    let output = schema(&[("k", i.clone()), ("n", i.clone()), ("s", i)]);
    let aggs = vec![spec(AggFunc::CountStar, None), spec(AggFunc::Sum, Some(1))];
    let mut op = HashAggregate::try_new(input, vec![0], aggs, output)
        .unwrap()
        .with_state_ttl(Duration::from_secs(ttl));
    op.set_clock(now);
    op
}

#[test]
fn a_restart_under_a_state_ttl_reads_no_group_and_groups_still_expire() {
    const GROUPS: i64 = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let scope = scope(&store);
    let mut op = ttl_agg(10, 1_000);
    op.restore(&scope).unwrap();
    let rows: Vec<_> = (0..GROUPS)
        .map(|k| (Op::Insert, Some(k), Some(k)))
        .collect();
    let mut view = View::new(1);
    view.apply(op.step(int_batch(&rows)).unwrap());
    commit(&mut op, &scope, 1);
    assert_eq!(stored_groups(&store), GROUPS as usize);

    // Restarted 5 s later: nothing read; group 7 is read when a row needs it, and touched.
    let mut op = ttl_agg(10, 1_005);
    op.restore(&scope).unwrap();
    assert_eq!((op.group_count(), group_reads(&op)), (0, 0));
    view.apply(
        op.step(int_batch(&[(Op::Insert, Some(7), Some(1))]))
            .unwrap(),
    );
    assert_eq!((op.group_count(), group_reads(&op)), (1, 1));
    assert_eq!(
        view.rows[&vec![S::Int64(Some(7))]][1..],
        [S::Int64(Some(2)), S::Int64(Some(8))]
    );
    op.set_clock(1_009);
    assert!(op.on_barrier().unwrap().is_empty());
    commit(&mut op, &scope, 2);
    assert_eq!(stored_groups(&store), GROUPS as usize);

    // 10 s after their last touch the other groups expire (each read as its timer fires);
    // group 7, touched at 1005, lives on. The view keeps their last rows.
    op.set_clock(1_010);
    assert!(op.on_barrier().unwrap().is_empty());
    commit(&mut op, &scope, 3);
    assert_eq!(stored_groups(&store), 1);
    assert_eq!(view.rows.len(), GROUPS as usize);

    // After another restart group 7 still expires, at 1015, from its stored touch time.
    let mut op = ttl_agg(10, 1_014);
    op.restore(&scope).unwrap();
    assert!(op.on_barrier().unwrap().is_empty());
    commit(&mut op, &scope, 4);
    assert_eq!((stored_groups(&store), group_reads(&op)), (1, 0));
    op.set_clock(1_015);
    assert!(op.on_barrier().unwrap().is_empty());
    commit(&mut op, &scope, 5);
    assert_eq!(stored_groups(&store), 0);
    // A new row starts the group afresh (its deletion is not committed: it is not read).
    let out = op
        .step(int_batch(&[(Op::Insert, Some(7), Some(3))]))
        .unwrap();
    assert_eq!(out[0].ops, [Op::Insert]);
    let row: Row = (out[0].data.columns().iter())
        .map(|c| S::try_from_array(c, 0).unwrap())
        .collect();
    assert_eq!(row, [7, 1, 3].map(|v| S::Int64(Some(v))));
    assert_eq!(group_reads(&op), 1);
}

/// `sum` of a `numeric(38, 0)` column by key: the sum's output type is `numeric(38, 0)` too.
fn decimal_sum(store: &StateStore) -> HashAggregate {
    let dec = DataType::Decimal128(38, 0);
    let input = schema(&[("k", DataType::Int64), ("x", dec.clone())]);
    let output = schema(&[("k", DataType::Int64), ("s", dec)]);
    let aggs = vec![spec(AggFunc::Sum, Some(1))];
    restored(store, HashAggregate::try_new(input, vec![0], aggs, output)).unwrap()
}

fn decimal_batch(rows: &[(Op, i128)]) -> ChangeBatch {
    let data = RecordBatch::try_new(
        schema(&[("k", DataType::Int64), ("x", DataType::Decimal128(38, 0))]),
        vec![
            Arc::new(rows.iter().map(|_| Some(1)).collect::<Int64Array>()),
            Arc::new(
                rows.iter()
                    .map(|r| Some(r.1))
                    .collect::<Decimal128Array>()
                    .with_precision_and_scale(38, 0)
                    .unwrap(),
            ),
        ],
    )
    .unwrap();
    ChangeBatch {
        data,
        ops: rows.iter().map(|r| r.0).collect(),
    }
}

/// A decimal sum past NUMERIC's 38 digits fails with [`EngineError::NumericOverflow`], whether
/// it leaves `i128` (two or three values of 38 nines; three used to wrap around into a sum that
/// looked right) or not (38 nines plus one); a sum that passes 38 digits only between a row and
/// its retraction does not.
#[test]
fn decimal_sums_past_38_digits_fail_instead_of_wrapping() {
    let nines = 10_i128.pow(38) - 1;
    let overflows = |e: EngineError| matches!(e, EngineError::NumericOverflow);
    for n in [2, 3] {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let mut op = decimal_sum(&store);
        let rows = vec![(Op::Insert, nines); n];
        let e = op.step(decimal_batch(&rows)).unwrap_err();
        assert!(overflows(e), "{n} sums of 38 nines");
    }
    // One row at a time: the second batch's result passes 38 digits.
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let mut op = decimal_sum(&store);
    op.step(decimal_batch(&[(Op::Insert, nines)])).unwrap();
    assert!(overflows(
        op.step(decimal_batch(&[(Op::Insert, 1)])).unwrap_err()
    ));

    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let mut op = decimal_sum(&store);
    let mut view = View::new(1);
    view.apply(
        op.step(decimal_batch(&[
            (Op::Insert, nines),
            (Op::Insert, 1000),
            (Op::Delete, 1000),
            (Op::Insert, -5),
        ]))
        .unwrap(),
    );
    let sum = S::Decimal128(Some(nines - 5), 38, 0);
    assert_eq!(
        view.rows.get(&vec![S::Int64(Some(1))]),
        Some(&vec![S::Int64(Some(1)), sum])
    );
}
