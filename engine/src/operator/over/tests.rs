//! Tests of the OVER window: `lag(v)` and a running `sum(v)` per `k` ordered by `seq`, under
//! random inserts, updates (which move rows between partitions) and deletes, with checkpoints
//! into a real RocksDB and restarts, against the functions computed naively.

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::execution::context::ExecutionProps;
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::functions_window::expr_fn::lag;
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    Expr, ExprFunctionExt, WindowFrame, WindowFrameBound, WindowFrameUnits,
    WindowFunctionDefinition, col,
};
use datafusion::physical_planner::create_window_expr;

use super::*;
use crate::operator::testing::{Epochs, Rng, int64_batch, int64_schema, restored};
use crate::state::StateStore;

/// (k, seq, v).
type Row = [Option<i64>; 3];
/// (k, seq, v, lag(v), running sum(v)).
type Out = [Option<i64>; 5];

fn input_schema() -> SchemaRef {
    int64_schema(&["k", "seq", "v"])
}

fn operator() -> OverWindow {
    let schema = input_schema();
    let df = DFSchema::try_from(schema.as_ref().clone()).unwrap();
    let over = |e: Expr, frame: Option<WindowFrame>| {
        let mut b = e
            .partition_by(vec![col("k")])
            .order_by(vec![col("seq").sort(true, false)]);
        if let Some(frame) = frame {
            b = b.window_frame(frame);
        }
        let e = b.build().unwrap();
        let props = ExecutionProps::new();
        create_window_expr(&e, &df, &props, &PhysicalPlanningContext::default()).unwrap()
    };
    let sum = Expr::from(WindowFunction::new(
        WindowFunctionDefinition::AggregateUDF(sum_udaf()),
        vec![col("v")],
    ));
    let running = WindowFrame::new_bounds(
        WindowFrameUnits::Rows,
        WindowFrameBound::Preceding(ScalarValue::UInt64(None)),
        WindowFrameBound::CurrentRow,
    );
    let functions = vec![
        over(lag(col("v"), Some(1), None), None),
        over(sum, Some(running)),
    ];
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("prev", DataType::Int64, true));
    fields.push(Field::new("total", DataType::Int64, true));
    let spec = OverSpec {
        rows: PartitionOrder {
            input: schema,
            width: 3,
            partition: vec![0],
            order: vec![(1, SortOptions::default())],
        },
        functions,
    };
    OverWindow::try_new(spec, Arc::new(Schema::new(fields))).unwrap()
}

fn oracle(rows: &[Row]) -> BTreeMap<Out, i64> {
    let mut parts: BTreeMap<Option<i64>, Vec<Row>> = BTreeMap::new();
    for r in rows {
        parts.entry(r[0]).or_default().push(*r);
    }
    let mut out = BTreeMap::new();
    for (_, mut p) in parts {
        p.sort_by_key(|r| r[1]);
        let mut total: Option<i64> = None;
        for (i, r) in p.iter().enumerate() {
            let prev = if i == 0 { None } else { p[i - 1][2] };
            if let Some(v) = r[2] {
                total = Some(total.unwrap_or(0) + v);
            }
            *out.entry([r[0], r[1], r[2], prev, total]).or_insert(0) += 1;
        }
    }
    out
}

fn apply(view: &mut BTreeMap<Out, i64>, out: Vec<ChangeBatch>) {
    for b in out {
        for (i, op) in b.ops.iter().enumerate() {
            let row: Out = [0, 1, 2, 3, 4].map(|j| {
                let c = b.data.column(j).as_primitive::<Int64Type>();
                c.is_valid(i).then(|| c.value(i))
            });
            let n = view.entry(row).or_insert(0);
            *n += if op.is_add() { 1 } else { -1 };
            assert!(*n >= 0, "retracted {row:?}, which the view does not hold");
            if *n == 0 {
                view.remove(&row);
            }
        }
    }
}

fn random_changes(rng: &mut Rng, rows: &mut Vec<Row>, next: &mut i64) -> Vec<(Op, Row)> {
    let mut changes = Vec::new();
    for _ in 0..1 + rng.below(5) {
        if !rows.is_empty() && rng.below(5) < 2 {
            let row = rows.swap_remove(rng.below(rows.len() as u64) as usize);
            if rng.below(2) == 0 {
                let new = [Some(rng.below(3) as i64), row[1], Some(rng.below(9) as i64)];
                changes.push((Op::UpdateBefore, row));
                changes.push((Op::UpdateAfter, new));
                rows.push(new);
            } else {
                changes.push((Op::Delete, row));
            }
        } else {
            *next += 1;
            let v = (rng.below(6) != 0).then(|| rng.below(9) as i64);
            let row = [Some(rng.below(3) as i64), Some(*next), v];
            rows.push(row);
            changes.push((Op::Insert, row));
        }
    }
    changes
}

#[test]
fn lag_and_running_sum_match_the_oracle() {
    for seed in [3, 5, 7] {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let scope = StateScope::new(store.clone(), b"over/", 0..crate::keygroup::KEY_GROUPS);
        let proto = operator();
        let mut op = restored(&proto, &scope);
        let mut rng = Rng(seed);
        let mut next = 0;
        let mut model = (Vec::new(), BTreeMap::new());
        let mut epochs = Epochs::new(store.clone(), &model);
        for step in 0..150 {
            let (rows, view) = &mut model;
            let changes = random_changes(&mut rng, rows, &mut next);
            let out = op
                .process(0, int64_batch(&input_schema(), &changes))
                .unwrap();
            apply(view, out);
            assert_eq!(*view, oracle(rows), "seed {seed}, after step {step}");
            epochs.step(&mut rng, &proto, &scope, &mut op, &mut model);
        }
    }
}
