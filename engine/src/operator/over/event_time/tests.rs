use std::collections::{BTreeMap, BTreeSet};

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::{SortOptions, cast};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::execution::context::ExecutionProps;
use datafusion::functions_aggregate::average::avg_udaf;
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::min_max::{max_udaf, min_udaf};
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    AggregateUDF, Expr, ExprFunctionExt, WindowFrame, WindowFrameBound, WindowFrameUnits,
    WindowFunctionDefinition, cast as cast_expr, col, lit,
};
use datafusion::physical_expr::create_physical_expr;
use datafusion::physical_planner::create_window_expr;

use super::*;
use crate::operator::rows_text;
use crate::operator::testing::{Rng, commit, int64_batch, int64_schema};
use crate::state::StateStore;

/// `sum(v) OVER (PARTITION BY k ORDER BY ts RANGE|ROWS BETWEEN n PRECEDING AND CURRENT
/// ROW)` over (k, ts, v).
fn operator(preceding: Preceding) -> EventTimeOver {
    let schema = int64_schema(&["k", "ts", "v"]);
    let df = DFSchema::try_from(schema.as_ref().clone()).unwrap();
    let frame = match preceding {
        Preceding::Range(n) => WindowFrame::new_bounds(
            WindowFrameUnits::Range,
            WindowFrameBound::Preceding(ScalarValue::Int64(Some(n))),
            WindowFrameBound::CurrentRow,
        ),
        Preceding::Rows(n) => WindowFrame::new_bounds(
            WindowFrameUnits::Rows,
            WindowFrameBound::Preceding(ScalarValue::UInt64(Some(n))),
            WindowFrameBound::CurrentRow,
        ),
    };
    let e = Expr::from(WindowFunction::new(
        WindowFunctionDefinition::AggregateUDF(sum_udaf()),
        vec![col("v")],
    ))
    .partition_by(vec![col("k")])
    .order_by(vec![col("ts").sort(true, false)])
    .window_frame(frame)
    .build()
    .unwrap();
    let f = create_window_expr(
        &e,
        &df,
        &ExecutionProps::new(),
        &PhysicalPlanningContext::default(),
    )
    .unwrap();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("s", DataType::Int64, true));
    let spec = EventTimeOverSpec {
        rows: PartitionOrder {
            input: schema,
            width: 3,
            partition: vec![0],
            order: vec![(1, SortOptions::default())],
        },
        functions: vec![f],
        filters: vec![None],
        preceding,
    };
    EventTimeOver::try_new(spec, Arc::new(Schema::new(fields))).unwrap()
}

/// (k, ts, s) of every output row.
fn outputs(batches: Vec<ChangeBatch>) -> Vec<[i64; 3]> {
    let mut out = Vec::new();
    for b in batches {
        assert!(b.ops.iter().all(|op| *op == Op::Insert));
        let col = |c: usize| b.data.column(c).as_primitive::<Int64Type>().clone();
        let (k, ts, s) = (col(0), col(1), col(3));
        for i in 0..b.data.num_rows() {
            out.push([k.value(i), ts.value(i), s.value(i)]);
        }
    }
    out
}

fn stored_rows(op: &EventTimeOver) -> usize {
    let table = op.rows.get().unwrap();
    let mut n = 0;
    for kg in table.key_groups() {
        table
            .scan(kg, &[], None, Direction::Forward, |_, _| {
                n += 1;
                Ok(ControlFlow::Continue(()))
            })
            .unwrap();
    }
    n
}

/// Rows (k, ts, v = ts) for ts in 0..400 (two partitions, out of order by up to 3), the
/// watermark following 5 behind, a checkpoint and restart every 50 rows: every row is
/// emitted once, with the sum over its frame, and the state stays within the frame; RANGE
/// frames are freed once no rows come (`restart`: after a restart).
fn run(preceding: Preceding, restart: bool, expected: impl Fn(&[[i64; 3]], i64, i64) -> i64) {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(&dir.path().join("db")).unwrap();
    let scope = StateScope::new(store, b"eto/", 0..crate::keygroup::KEY_GROUPS);
    let proto = operator(preceding);
    let fresh = || {
        let mut op = proto.empty();
        op.restore(&scope).unwrap();
        op
    };
    let mut op = fresh();
    let schema = int64_schema(&["k", "ts", "v"]);
    let mut input: Vec<[i64; 3]> = Vec::new();
    let mut emitted = Vec::new();
    let mut watermark = i64::MIN;
    let mut epoch = 0;
    let mut most = 0;
    for chunk in 0..80i64 {
        let rows: Vec<(Op, [Option<i64>; 3])> = (0..5)
            .map(|i| {
                let ts = chunk * 5 + (4 - i);
                (Op::Insert, [Some(ts % 2), Some(ts), Some(ts)])
            })
            .collect();
        input.extend(
            rows.iter()
                .map(|(_, r)| [r[0].unwrap(), r[1].unwrap(), r[2].unwrap()]),
        );
        assert!(
            op.process(0, int64_batch(&schema, &rows))
                .unwrap()
                .is_empty()
        );
        watermark = chunk * 5 - 1;
        emitted.extend(outputs(op.on_watermark(0, watermark).unwrap()));
        most = most.max(stored_rows(&op));
        if chunk % 10 == 9 {
            epoch += 1;
            commit(&mut op, &scope, epoch);
            op = fresh();
            emitted.extend(outputs(op.on_watermark(0, watermark).unwrap()));
        }
        // A late row is set aside, not emitted.
        let late = [(Op::Insert, [Some(0), Some(watermark - 1), Some(1000)])];
        op.process(0, int64_batch(&schema, &late)).unwrap();
        assert_eq!(op.take_late().len(), 1);
    }
    let mut want: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    for r in input.iter().filter(|r| r[1] < watermark) {
        want.insert((r[0], r[1]), expected(&input, r[0], r[1]));
    }
    let got: BTreeMap<(i64, i64), i64> = emitted.iter().map(|r| ((r[0], r[1]), r[2])).collect();
    assert_eq!(emitted.len(), got.len(), "a row was emitted twice");
    assert_eq!(got, want);
    assert!(most < 40, "{most} rows kept");
    // With no more rows, cleanup timers free the frames (ROWS frames keep their last rows),
    // those in memory and, after a restart, those in the table.
    if let Preceding::Range(range) = preceding {
        if restart {
            epoch += 1;
            commit(&mut op, &scope, epoch);
            op = fresh();
        }
        for later in 1..4 {
            op.on_watermark(0, watermark + later * range).unwrap();
        }
        assert_eq!(stored_rows(&op), 0);
        assert_eq!(op.timers.bytes(), 0);
    }
}

#[test]
fn range_frames_emit_each_row_once_when_final_and_free_older_rows() {
    for restart in [false, true] {
        run(Preceding::Range(10), restart, |input, k, ts| {
            (input.iter())
                .filter(|r| r[0] == k && r[1] <= ts && r[1] >= ts - 10)
                .map(|r| r[2])
                .sum()
        });
    }
}

#[test]
fn rows_frames_emit_each_row_once_when_final_and_keep_the_last_rows() {
    run(Preceding::Rows(2), false, |input, k, ts| {
        let mut before: Vec<i64> = (input.iter())
            .filter(|r| r[0] == k && r[1] <= ts)
            .map(|r| r[1])
            .collect();
        before.sort_unstable();
        before.iter().rev().take(3).sum()
    });
}

/// `f(arg) [FILTER (WHERE filter)] OVER (PARTITION BY k ORDER BY ts <frame>)` over (k, ts, v),
/// and its FILTER planned on its own (the operator evaluates it).
fn window(
    f: Arc<AggregateUDF>,
    arg: Expr,
    filter: Option<Expr>,
    frame: &WindowFrame,
    schema: &SchemaRef,
) -> (Arc<dyn WindowExpr>, Option<Arc<dyn PhysicalExpr>>) {
    let df = DFSchema::try_from(schema.as_ref().clone()).unwrap();
    let mut e = Expr::from(WindowFunction::new(
        WindowFunctionDefinition::AggregateUDF(f),
        vec![arg],
    ))
    .partition_by(vec![col("k")])
    .order_by(vec![col("ts").sort(true, false)])
    .window_frame(frame.clone());
    if let Some(c) = &filter {
        e = e.filter(c.clone());
    }
    let props = ExecutionProps::new();
    let w = create_window_expr(
        &e.build().unwrap(),
        &df,
        &props,
        &PhysicalPlanningContext::default(),
    )
    .unwrap();
    let planning = PhysicalPlanningContext::default();
    let filter = filter.map(|c| create_physical_expr(&c, &df, &props, &planning).unwrap());
    (w, filter)
}

/// sum, count, min, max, avg and a sum with a FILTER, over one frame.
fn wide(preceding: Preceding) -> EventTimeOver {
    let v = || col("v");
    let schema = int64_schema(&["k", "ts", "v"]);
    let frame = match preceding {
        Preceding::Range(n) => WindowFrame::new_bounds(
            WindowFrameUnits::Range,
            WindowFrameBound::Preceding(ScalarValue::Int64(Some(n))),
            WindowFrameBound::CurrentRow,
        ),
        Preceding::Rows(n) => WindowFrame::new_bounds(
            WindowFrameUnits::Rows,
            WindowFrameBound::Preceding(ScalarValue::UInt64(Some(n))),
            WindowFrameBound::CurrentRow,
        ),
    };
    let windows = [
        window(sum_udaf(), v(), None, &frame, &schema),
        window(count_udaf(), v(), None, &frame, &schema),
        window(min_udaf(), v(), None, &frame, &schema),
        window(max_udaf(), v(), None, &frame, &schema),
        // As the planner coerces it.
        window(
            avg_udaf(),
            cast_expr(v(), DataType::Float64),
            None,
            &frame,
            &schema,
        ),
        window(sum_udaf(), v(), Some(v().gt(lit(3i64))), &frame, &schema),
    ];
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    for (i, (w, _)) in windows.iter().enumerate() {
        let t = w.field().unwrap().data_type().clone();
        fields.push(Field::new(format!("f{i}"), t, true));
    }
    let spec = EventTimeOverSpec {
        rows: PartitionOrder {
            input: schema,
            width: 3,
            partition: vec![0],
            order: vec![(1, SortOptions::default())],
        },
        functions: windows.iter().map(|(w, _)| Arc::clone(w)).collect(),
        filters: windows.iter().map(|(_, f)| f.clone()).collect(),
        preceding,
    };
    EventTimeOver::try_new(spec, Arc::new(Schema::new(fields))).unwrap()
}

/// DataFusion's answer for the rows `input` (k, ts, v) over `op`'s functions: each partition,
/// in event-time order, evaluated as a batch; every row as text, sorted.
fn batch_answer(op: &EventTimeOver, input: &[[i64; 3]]) -> Vec<String> {
    let schema = int64_schema(&["k", "ts", "v"]);
    let mut answer = Vec::new();
    let keys: BTreeSet<i64> = input.iter().map(|r| r[0]).collect();
    for k in keys {
        let mut rows: Vec<[i64; 3]> = input.iter().filter(|r| r[0] == k).copied().collect();
        rows.sort_by_key(|r| r[1]);
        let rows: Vec<(Op, [Option<i64>; 3])> =
            (rows.iter()).map(|r| (Op::Insert, r.map(Some))).collect();
        let batch = int64_batch(&schema, &rows).data;
        let mut columns = batch.columns().to_vec();
        for f in &op.shared.spec.functions {
            let field = op.shared.schema.field(columns.len());
            columns.push(cast(&f.evaluate(&batch).unwrap(), field.data_type()).unwrap());
        }
        let all = RecordBatch::try_new(Arc::clone(&op.shared.schema), columns).unwrap();
        answer.extend(rows_text(&all, &(0..all.num_rows()).collect::<Vec<_>>()).unwrap());
    }
    answer.sort();
    answer
}

/// Every output row as text, sorted.
fn texts(batches: &[ChangeBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        assert!(b.ops.iter().all(|op| *op == Op::Insert));
        out.extend(rows_text(&b.data, &(0..b.data.num_rows()).collect::<Vec<_>>()).unwrap());
    }
    out.sort();
    out
}

/// Random rows of three partitions (out of order by up to 5; for RANGE tied in event time,
/// for ROWS each event time once per partition; some rows twice, identical, in one batch or the
/// next), the watermark 6
/// behind, checkpoints and restarts now and then, the operator's memory share `cache_bytes`:
/// every row comes out once, with the values DataFusion gives the batch.
fn against_the_batch(preceding: Preceding, seed: u64, cache_bytes: usize) {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(&dir.path().join("db")).unwrap();
    let mut scope = StateScope::new(store, b"eto/", 0..crate::keygroup::KEY_GROUPS);
    scope.cache_bytes = cache_bytes;
    let proto = wide(preceding);
    let fresh = || {
        let mut op = proto.empty();
        op.restore(&scope).unwrap();
        op
    };
    let mut op = fresh();
    let schema = int64_schema(&["k", "ts", "v"]);
    let mut rng = Rng(seed);
    let mut input: Vec<[i64; 3]> = Vec::new();
    let mut emitted = Vec::new();
    let mut epoch = 0;
    let ties = matches!(preceding, Preceding::Range(_));
    // Copies of rows to send again in the next batch (not late then).
    let mut again: Vec<[i64; 3]> = Vec::new();
    for chunk in 0..60i64 {
        let mut rows = std::mem::take(&mut again);
        for i in 0..8 {
            let k = rng.below(3) as i64;
            // ROWS: event times unique per partition (k is the event time's remainder).
            let ts = if ties {
                chunk * 4 + rng.below(6) as i64
            } else {
                (chunk * 8 + (7 - i)) * 3 + k
            };
            let row = [k, ts, rng.below(10) as i64];
            rows.push(row);
            if rng.below(8) == 0 {
                rows.push(row);
            }
        }
        input.extend(&rows);
        let batch: Vec<(Op, [Option<i64>; 3])> =
            rows.iter().map(|r| (Op::Insert, r.map(Some))).collect();
        op.process(0, int64_batch(&schema, &batch)).unwrap();
        let watermark = input.iter().map(|r| r[1]).max().unwrap() - 6;
        emitted.extend(op.on_watermark(0, watermark).unwrap());
        again.extend(
            rows.iter()
                .filter(|r| r[1] >= watermark && rng.below(5) == 0),
        );
        if rng.below(6) == 0 {
            epoch += 1;
            commit(&mut op, &scope, epoch);
            op = fresh();
            emitted.extend(op.on_watermark(0, watermark).unwrap());
        }
    }
    assert!(op.take_late().is_empty());
    emitted.extend(op.on_watermark(0, i64::MAX).unwrap());
    assert_eq!(texts(&emitted), batch_answer(&op, &input));
}

#[test]
fn range_frames_of_several_functions_match_the_batch_with_ties_and_restarts() {
    for seed in 1..4 {
        against_the_batch(Preceding::Range(7), seed, 64 << 20);
    }
}

#[test]
fn rows_frames_of_several_functions_match_the_batch_with_duplicates_and_restarts() {
    for seed in 1..4 {
        against_the_batch(Preceding::Rows(3), seed, 64 << 20);
    }
}

#[test]
fn partitions_too_big_for_memory_are_read_back_and_give_the_same_values() {
    // Every partition is dropped from memory (a partition takes more than a quarter of the
    // share) or half of them are, and read back from the table when fired.
    for cache_bytes in [0, 8 << 10] {
        against_the_batch(Preceding::Range(7), 5, cache_bytes);
        against_the_batch(Preceding::Rows(3), 5, cache_bytes);
    }
}

/// One partition, a row per event time (v = ts), the watermark just past the last row, a
/// checkpoint and restart once: the rows decoded per watermark are those entering and leaving
/// the frame (at most two a row), however large the frame (up to 3000 rows); only the first
/// watermark after the restart reads the frame back, once.
#[test]
fn work_per_watermark_is_the_rows_entering_and_leaving_not_the_frame() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(&dir.path().join("db")).unwrap();
    let scope = StateScope::new(store, b"eto/", 0..crate::keygroup::KEY_GROUPS);
    let range = 3000;
    let proto = operator(Preceding::Range(range));
    let fresh = || {
        let mut op = proto.empty();
        op.restore(&scope).unwrap();
        op
    };
    let mut op = fresh();
    let schema = int64_schema(&["k", "ts", "v"]);
    let mut most = 0;
    for chunk in 0..1000i64 {
        let rows: Vec<(Op, [Option<i64>; 3])> = (0..5)
            .map(|i| {
                let ts = chunk * 5 + i;
                (Op::Insert, [Some(0), Some(ts), Some(ts)])
            })
            .collect();
        op.process(0, int64_batch(&schema, &rows)).unwrap();
        let before = op.decoded;
        let out = outputs(op.on_watermark(0, chunk * 5 + 5).unwrap());
        let decoded = op.decoded - before;
        assert_eq!(out.len(), 5);
        for [_, ts, s] in out {
            let from = (ts - range).max(0);
            assert_eq!(s, (from..=ts).sum::<i64>(), "sum at {ts}");
        }
        if chunk == 700 {
            // The frame (3000 rows) is read back once.
            commit(&mut op, &scope, 1);
            op = fresh();
            assert!(op.on_watermark(0, chunk * 5 + 5).unwrap().is_empty());
            let rows: Vec<(Op, [Option<i64>; 3])> =
                vec![(Op::Insert, [Some(0), Some(-1), Some(0)])];
            op.process(0, int64_batch(&schema, &rows)).unwrap();
            assert_eq!(op.take_late().len(), 1);
        } else if chunk == 701 {
            assert!(
                decoded > range as u64,
                "{decoded} rows decoded after the restart"
            );
        } else {
            most = most.max(decoded);
        }
    }
    // Five rows enter and (once the frame is full) five leave.
    assert_eq!(most, 10);
}
