//! Jobs end to end on a real RocksDB: two tables, a union, a parallel aggregate behind a hash
//! exchange, restarted with other parallelisms (key groups let the state move between instances).

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};

use super::graph::Stage;
use super::*;
use crate::operator::aggregate::{AggFunc, AggSpec, HashAggregate};

fn input_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("v", DataType::Int64, true),
    ]))
}

fn output_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("n", DataType::Int64, true),
        Field::new("s", DataType::Int64, true),
    ]))
}

fn rows(pairs: &[(i64, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        input_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(pairs.iter().map(|p| p.0))),
            Arc::new(Int64Array::from_iter_values(pairs.iter().map(|p| p.1))),
        ],
    )
    .unwrap()
}

/// `SELECT k, count(*), sum(v) FROM (a UNION ALL b) GROUP BY k` with `p` aggregate instances.
fn graph(a: &Arc<TableStore>, b: &Arc<TableStore>, p: usize) -> JobGraph {
    let agg = HashAggregate::try_new(
        input_schema(),
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
        ],
        output_schema(),
    )
    .unwrap();
    let source = |t: &Arc<TableStore>| Stage {
        input: StageInput::Source(super::graph::Source::new(Arc::clone(t))),
        operators: Vec::new(),
        parallelism: 1,
    };
    JobGraph {
        stages: vec![
            source(a),
            source(b),
            Stage {
                input: StageInput::merge(vec![0, 1], Some(vec![0])),
                operators: vec![Box::new(agg)],
                parallelism: p,
            },
        ],
        state_ids: None,
    }
}

fn view_rows(view: &TableStore, store: &StateStore) -> BTreeMap<i64, (i64, i64)> {
    let mut out = BTreeMap::new();
    view.scan(&store.snapshot(), None, 1024, |b| {
        let col = |i: usize| b.column(i).as_primitive::<Int64Type>().clone();
        let (k, n, s) = (col(0), col(1), col(2));
        for r in 0..b.num_rows() {
            out.insert(k.value(r), (n.value(r), s.value(r)));
        }
        Ok(ControlFlow::Continue(()))
    })
    .unwrap();
    out
}

/// A store in a fresh directory (kept while the directory lives) with tables `a` and `b` and
/// view `v`, as [`start`] takes them.
fn tables() -> (
    tempfile::TempDir,
    StateStore,
    Arc<TableStore>,
    Arc<TableStore>,
    Arc<TableStore>,
) {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let open = |id, name, schema, key| {
        Arc::new(TableStore::open(store.clone(), id, name, schema, key).unwrap())
    };
    let a = open(1, "a", input_schema(), vec![]);
    let b = open(2, "b", input_schema(), vec![]);
    let view = open(3, "v", output_schema(), vec![0]);
    (dir, store, a, b, view)
}

fn start(
    store: &StateStore,
    a: &Arc<TableStore>,
    b: &Arc<TableStore>,
    view: &Arc<TableStore>,
    p: usize,
) -> Job {
    Job::start(JobSpec {
        id: 9,
        name: "v".into(),
        store: store.clone(),
        graph: graph(a, b, p),
        sink: Box::new(crate::sink::ViewSink::new(Arc::clone(view), false)),
        config: JobConfig {
            barrier_interval: Duration::from_millis(5),
            checkpoint_frequency: 3,
            ..JobConfig::default()
        },
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn union_into_parallel_aggregate_survives_rescaling() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let open = |id, name| {
        Arc::new(TableStore::open(store.clone(), id, name, input_schema(), vec![]).unwrap())
    };
    let (a, b) = (open(1, "a"), open(2, "b"));
    let view = Arc::new(TableStore::open(store.clone(), 3, "v", output_schema(), vec![0]).unwrap());
    let mut expected: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    let add = |expected: &mut BTreeMap<i64, (i64, i64)>, t: &TableStore, pairs: &[(i64, i64)]| {
        t.insert(&[rows(pairs)]).unwrap();
        for &(k, v) in pairs {
            let e = expected.entry(k).or_default();
            e.0 += 1;
            e.1 += v;
        }
    };
    // Rows before the job exists are its backfill.
    add(
        &mut expected,
        &a,
        &(0..500).map(|i| (i % 37, i)).collect::<Vec<_>>(),
    );
    for (round, p) in [3usize, 1, 4, 2].into_iter().enumerate() {
        let job = start(&store, &a, &b, &view, p);
        for i in 0..20 {
            let r = round as i64 * 1000 + i;
            add(&mut expected, &a, &[(r % 11, r), (r % 5, 1)]);
            add(&mut expected, &b, &[(r % 13, -r)]);
        }
        job.flush().await.unwrap();
        assert_eq!(view_rows(&view, &store), expected, "parallelism {p}");
        let stats = job.stats();
        assert_eq!(stats.parallelism, p);
        assert!(stats.state_bytes > 0);
        drop(job);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_task_fails_the_job_and_commits_nothing_of_its_epoch() {
    let (_dir, store, a, b, view) = tables();
    let job = start(&store, &a, &b, &view, 2);
    a.insert(&[rows(&[(1, 10)])]).unwrap();
    job.flush().await.unwrap();
    // A sum that overflows BIGINT fails the aggregate when it casts its result.
    a.insert(&[rows(&[(1, i64::MAX)])]).unwrap();
    let err = job.flush().await.unwrap_err();
    assert!(err.contains("materialized view \"v\" failed"), "{err}");
    job.stopped().await;
    assert_eq!(view_rows(&view, &store), BTreeMap::from([(1, (1, 10))]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_rows_per_operator_instance_and_epochs() {
    let (_dir, store, a, b, view) = tables();
    let job = start(&store, &a, &b, &view, 2);
    a.insert(&[rows(&[(1, 10), (2, 20), (3, 30)])]).unwrap();
    b.insert(&[rows(&[(5, 1), (4, 4)])]).unwrap();
    job.flush().await.unwrap();
    let m = job.metrics();
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    assert_eq!(m.sources.len(), 2);
    assert_eq!(m.sources[0].table, "a");
    assert_eq!(load(&m.sources[0].rows), 3);
    assert_eq!(load(&m.sources[1].rows), 2);
    assert!(m.sources[0].idle_for().is_some());
    // The aggregate's two instances together saw every row once and emitted one insert per
    // new group (the keys are all distinct).
    let agg = &m.stages[2];
    assert_eq!(agg.operators, ["HashAggregate"]);
    assert_eq!(agg.instances.len(), 2);
    let total = |f: fn(&metrics::OperatorMetrics) -> &AtomicU64| -> u64 {
        agg.instances.iter().map(|t| load(f(&t.operators[0]))).sum()
    };
    assert_eq!(total(|o| &o.rows_in), 5);
    assert_eq!(total(|o| &o.rows_out), 5);
    assert!(agg.instances.iter().any(|t| load(&t.busy_nanos) > 0));
    assert!(load(&m.epochs) >= 1);
    let recent = m.recent_epochs();
    assert!(recent.iter().any(|r| r.bytes > 0), "{recent:?}");
    assert!(recent.windows(2).all(|w| w[0].epoch < w[1].epoch));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_job_ends_at_a_synced_checkpoint_and_resumes_without_loss_or_duplicates() {
    let (_dir, store, a, b, view) = tables();
    let mut expected: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for (round, p) in [1usize, 4, 2].into_iter().enumerate() {
        let job = start(&store, &a, &b, &view, p);
        // Rows keep arriving while the job is asked to stop: what it had not committed by its
        // last barrier is read again by the next job, once.
        let writer = {
            let (a, b) = (Arc::clone(&a), Arc::clone(&b));
            std::thread::spawn(move || {
                let mut added = Vec::new();
                for i in 0..200i64 {
                    let r = round as i64 * 10_000 + i;
                    a.insert(&[rows(&[(r % 7, r)])]).unwrap();
                    b.insert(&[rows(&[(r % 3, 1)])]).unwrap();
                    added.push((r % 7, r));
                    added.push((r % 3, 1));
                }
                added
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let last = job.stop().await.unwrap();
        assert!(job.failure().is_none());
        assert_eq!(
            job.stats().checkpoint_epoch,
            last,
            "the last epoch is synced"
        );
        assert_eq!(read_u64(&store, &epoch_key(9), 9).unwrap(), last);
        // The stopped job writes nothing more.
        let frozen = view_rows(&view, &store);
        for (k, v) in writer.join().unwrap() {
            let e = expected.entry(k).or_default();
            e.0 += 1;
            e.1 += v;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(view_rows(&view, &store), frozen);
        drop(job);
    }
    let job = start(&store, &a, &b, &view, 3);
    job.flush().await.unwrap();
    assert_eq!(view_rows(&view, &store), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_behind_a_dropped_table_waits_to_be_stopped_and_holds_no_thread() {
    let (_dir, store, a, b, view) = tables();
    let job = start(&store, &a, &b, &view, 1);
    a.insert(&[rows(&[(1, 10)])]).unwrap();
    job.flush().await.unwrap();
    job.stop().await.unwrap();
    drop(job);
    // A change the stopped job has not read, then the table dropped (closed, its keys deleted,
    // as DROP TABLE does): the next job resumes behind a log that is gone. It used to read on
    // forever without yielding, holding a worker thread of every job.
    a.insert(&[rows(&[(2, 20)])]).unwrap();
    a.close();
    let mut batch = crate::state::StateBatch::new();
    TableStore::drop_data(&mut batch, a.id());
    store.write(batch, false).unwrap();
    let job = start(&store, &a, &b, &view, 1);
    b.insert(&[rows(&[(3, 30)])]).unwrap();
    tokio::time::timeout(Duration::from_secs(20), job.flush())
        .await
        .expect("the job still checkpoints")
        .unwrap();
    assert_eq!(view_rows(&view, &store).get(&3), Some(&(1, 30)));
    tokio::time::timeout(Duration::from_secs(20), job.stop())
        .await
        .expect("the job stops")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halted_job_writes_nothing_more() {
    let (_dir, store, a, b, view) = tables();
    let job = start(&store, &a, &b, &view, 1);
    a.insert(&[rows(&[(1, 10)])]).unwrap();
    job.flush().await.unwrap();
    // As DROP MATERIALIZED VIEW does: halt the job, then delete its keys and its view's rows.
    job.halt();
    let mut batch = crate::state::StateBatch::new();
    super::drop_state(&mut batch, 9);
    TableStore::drop_data(&mut batch, view.id());
    store.write(batch, false).unwrap();
    // Changes keep coming while the job's tasks wind down: none of them is committed.
    for i in 2..6 {
        a.insert(&[rows(&[(i, 10 * i)])]).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        view_rows(&view, &store).is_empty(),
        "a dropped view got rows"
    );
    let mut left = 0;
    store
        .scan_prefix(None, &super::job_prefix(9), None, |_, _| {
            left += 1;
            Ok(std::ops::ControlFlow::Continue(()))
        })
        .unwrap();
    assert_eq!(left, 0, "a dropped job's keys came back");
    assert_eq!(job.failure(), None, "a halt is no failure");
}
