//! Engine throughput on one core, without the wire or the change log: filter + project, and a hash
//! aggregate (count, sum, max) over 10k groups, append-only and with 20% retractions, each epoch
//! ending in a checkpoint into a RocksDB write batch that is committed. The aggregate's time
//! includes those checkpoints and commits; the last column says how much of it they took.
//!
//! `cargo bench -p rivulet-engine --bench operators` (under `cargo test` it only checks that it
//! builds and runs nothing).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::Operator as BinOp;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::physical_plan::PhysicalExpr;
use datafusion::scalar::ScalarValue;
use rivulet_engine::changelog::{ChangeBatch, Op};
use rivulet_engine::keygroup::KEY_GROUPS;
use rivulet_engine::operator::Operator;
use rivulet_engine::operator::StateScope;
use rivulet_engine::operator::aggregate::{AggFunc, AggSpec, HashAggregate};
use rivulet_engine::operator::project::Project;
use rivulet_engine::state::{StateBatch, StateStore};

const BATCH: usize = 8192;
const BATCHES: usize = 400;
const GROUPS: i64 = 10_000;
/// Batches per epoch (checkpoint).
const EPOCH: usize = 16;

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("auction", DataType::Int64, false),
        Field::new("price", DataType::Int64, false),
        Field::new("channel", DataType::Utf8, false),
    ]))
}

/// Batch `b` of bids, all inserts.
fn batch(b: usize) -> ChangeBatch {
    let base = (b * BATCH) as i64;
    let auctions =
        Int64Array::from_iter_values((0..BATCH as i64).map(|i| (base + i) * 7919 % GROUPS));
    let prices =
        Int64Array::from_iter_values((0..BATCH as i64).map(|i| 100 + (base + i) * 31 % 10_000));
    let channels =
        StringArray::from_iter_values((0..BATCH).map(|i| ["web", "app", "api", "test"][i % 4]));
    let data = RecordBatch::try_new(
        schema(),
        vec![Arc::new(auctions), Arc::new(prices), Arc::new(channels)],
    )
    .unwrap();
    ChangeBatch::inserts(data)
}

/// Prints a table row; `checkpoint` is the part of `secs` spent checkpointing and committing.
fn report(what: &str, rows: usize, secs: f64, checkpoint: Option<f64>) {
    let checkpoint = checkpoint.map_or("-".to_string(), |c| format!("{c:.2} s"));
    println!(
        "| {what:<44} | {rows:>9} | {secs:>7.2} s | {:>12.0} | {checkpoint:>12} |",
        rows as f64 / secs
    );
}

fn filter_project(batches: &[ChangeBatch]) -> f64 {
    let predicate: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
        Arc::new(Column::new("channel", 2)),
        BinOp::NotEq,
        Arc::new(Literal::new(ScalarValue::Utf8(Some("test".into())))),
    ));
    let doubled: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
        Arc::new(Column::new("price", 1)),
        BinOp::Multiply,
        Arc::new(Literal::new(ScalarValue::Int64(Some(2)))),
    ));
    let out = Arc::new(Schema::new(vec![
        Field::new("auction", DataType::Int64, false),
        Field::new("price2", DataType::Int64, false),
    ]));
    let mut op = Project::new(
        Some(predicate),
        vec![Arc::new(Column::new("auction", 0)), doubled],
        out,
    );
    let t0 = Instant::now();
    let mut rows = 0;
    for b in batches {
        for o in op.process(0, b.clone()).unwrap() {
            rows += o.num_rows();
        }
    }
    assert!(rows > 0);
    t0.elapsed().as_secs_f64()
}

/// Seconds in all, and seconds of them in checkpoints and commits.
fn aggregate(batches: &[ChangeBatch]) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let out = Arc::new(Schema::new(vec![
        Field::new("auction", DataType::Int64, false),
        Field::new("n", DataType::Int64, false),
        Field::new("total", DataType::Int64, true),
        Field::new("top", DataType::Int64, true),
    ]));
    let scope = StateScope::new(store.clone(), b"bench", 0..KEY_GROUPS);
    let mut op = HashAggregate::try_new(
        schema(),
        vec![0],
        vec![
            AggSpec {
                func: AggFunc::CountStar,
                input: None,
                ..AggSpec::default()
            },
            AggSpec {
                func: AggFunc::Sum,
                input: Some(1),
                ..AggSpec::default()
            },
            AggSpec {
                func: AggFunc::Max,
                input: Some(1),
                ..AggSpec::default()
            },
        ],
        out,
    )
    .unwrap();
    let t0 = Instant::now();
    let mut checkpoint = 0.0;
    for (i, b) in batches.iter().enumerate() {
        op.process(0, b.clone()).unwrap();
        if i % EPOCH == EPOCH - 1 {
            let t = Instant::now();
            let mut write = StateBatch::new();
            op.checkpoint(0, &scope, &mut write).unwrap();
            store.write(write, false).unwrap();
            checkpoint += t.elapsed().as_secs_f64();
        }
    }
    assert_eq!(op.group_count() as i64, GROUPS);
    (t0.elapsed().as_secs_f64(), checkpoint)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rows = BATCH * BATCHES;
    let append: Vec<ChangeBatch> = (0..BATCHES).map(batch).collect();
    // Every fifth row becomes the retraction of a row the previous batch kept (every fifth from
    // the first), so each retraction matches a live row.
    let with_retractions: Vec<ChangeBatch> = (0..BATCHES)
        .map(|b| {
            let mut cb = batch(b);
            if b > 0 {
                let prev = batch(b - 1);
                let take: Vec<u32> = (0..BATCH as u32).filter(|i| i % 5 == 0).collect();
                let idx = datafusion::arrow::array::UInt32Array::from(take);
                let retracted =
                    datafusion::arrow::compute::take_record_batch(&prev.data, &idx).unwrap();
                let keep: Vec<u32> = (0..BATCH as u32).filter(|i| i % 5 != 4).collect();
                let kidx = datafusion::arrow::array::UInt32Array::from(keep);
                let kept = datafusion::arrow::compute::take_record_batch(&cb.data, &kidx).unwrap();
                let data =
                    datafusion::arrow::compute::concat_batches(&schema(), [&kept, &retracted])
                        .unwrap();
                let mut ops = vec![Op::Insert; kept.num_rows()];
                ops.extend(vec![Op::Delete; retracted.num_rows()]);
                cb = ChangeBatch { data, ops };
            }
            cb
        })
        .collect();
    println!(
        "| {:<44} | {:>9} | {:>9} | {:>12} | {:>12} |",
        "operator", "rows", "time", "rows / s", "checkpoints"
    );
    println!("|{}|", "-".repeat(101));
    report("filter + project", rows, filter_project(&append), None);
    let (secs, checkpoint) = aggregate(&append);
    report(
        "hash aggregate, 10k groups, append-only",
        rows,
        secs,
        Some(checkpoint),
    );
    let (secs, checkpoint) = aggregate(&with_retractions);
    report(
        "hash aggregate, 10k groups, 20% retractions",
        rows,
        secs,
        Some(checkpoint),
    );
}
