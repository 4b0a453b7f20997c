//! The monitoring system tables: `rivulet_jobs`, `rivulet_operators`, `rivulet_state_tables`,
//! `rivulet_checkpoints`, `rivulet_sources` and `rivulet_sinks`, the figures `/metrics`
//! exports, for psql and BI tools; and `rivulet_change_logs`, what each relation's change log
//! holds.
//!
//! Each is built when a statement names it, from the jobs of the session's database as they are
//! at that moment (the same reading as a scrape: `Jobs::overview`), as an in-memory table; a
//! user's own relation of the same name hides it. Counters count from the job's (re)start.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::UNIX_EPOCH;

use datafusion::arrow::array::new_empty_array;
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::error::Result;
use datafusion::scalar::ScalarValue;

use rivulet_engine::state::table::StateFigures;

use crate::jobs::JobOverview;
use crate::metrics::watermark_lag;
use crate::session::Shared;

/// The names of the tables, for `table_exist`.
pub const NAMES: [&str; 7] = [
    "rivulet_jobs",
    "rivulet_operators",
    "rivulet_state_tables",
    "rivulet_checkpoints",
    "rivulet_sources",
    "rivulet_sinks",
    "rivulet_change_logs",
];

/// System table `name` of `database`, if `name` is one.
pub fn table(
    shared: &Shared,
    database: &str,
    name: &str,
) -> Result<Option<Arc<dyn TableProvider>>> {
    let build: fn(&[JobOverview]) -> Rows = match name {
        "rivulet_jobs" => jobs,
        "rivulet_operators" => operators,
        "rivulet_state_tables" => state_tables,
        "rivulet_checkpoints" => checkpoints,
        "rivulet_sources" => sources,
        "rivulet_sinks" => sinks,
        "rivulet_change_logs" => return change_logs(shared, database).into_table().map(Some),
        _ => return Ok(None),
    };
    let overview: Vec<JobOverview> = shared
        .jobs
        .overview(&shared.catalog)
        .into_iter()
        .filter(|j| j.database == database)
        .collect();
    build(&overview).into_table().map(Some)
}

/// A table being built: its columns and rows of scalars.
struct Rows {
    fields: Vec<Field>,
    rows: Vec<Vec<ScalarValue>>,
}

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, None)
}

impl Rows {
    fn new(columns: &[(&str, DataType)]) -> Self {
        Self {
            fields: columns
                .iter()
                .map(|(n, t)| Field::new(*n, t.clone(), true))
                .collect(),
            rows: Vec::new(),
        }
    }

    fn into_table(self) -> Result<Arc<dyn TableProvider>> {
        let schema = Arc::new(Schema::new(self.fields));
        let columns = (0..schema.fields().len())
            .map(|c| {
                if self.rows.is_empty() {
                    return Ok(new_empty_array(schema.field(c).data_type()));
                }
                ScalarValue::iter_to_array(self.rows.iter().map(|r| r[c].clone()))
            })
            .collect::<Result<Vec<_>>>()?;
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
    }
}

fn text(s: impl Into<String>) -> ScalarValue {
    ScalarValue::Utf8(Some(s.into()))
}

fn opt_text(s: Option<impl Into<String>>) -> ScalarValue {
    ScalarValue::Utf8(s.map(Into::into))
}

fn int(v: u64) -> ScalarValue {
    ScalarValue::Int64(Some(i64::try_from(v).unwrap_or(i64::MAX)))
}

fn opt_int(v: Option<i64>) -> ScalarValue {
    ScalarValue::Int64(v)
}

fn float(v: f64) -> ScalarValue {
    ScalarValue::Float64(Some(v))
}

/// A watermark (microseconds since the Unix epoch) as a timestamp; NULL before any, or once
/// the input has ended (`i64::MAX`).
fn watermark(w: Option<i64>) -> ScalarValue {
    ScalarValue::TimestampMicrosecond(w.filter(|&w| w != i64::MAX), None)
}

fn time(t: Option<std::time::SystemTime>) -> ScalarValue {
    let micros = t
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_micros() as i64);
    ScalarValue::TimestampMicrosecond(micros, None)
}

const I64: DataType = DataType::Int64;
const F64: DataType = DataType::Float64;
const TEXT: DataType = DataType::Utf8;

/// One row per relation of `database`: what its change log keeps (entries after `trimmed_to` up
/// to `last_seq`; the server trims what every reader has committed) and the entries and bytes
/// stored now.
fn change_logs(shared: &Shared, database: &str) -> Rows {
    let mut rows = Rows::new(&[
        ("relation", TEXT),
        ("kind", TEXT),
        ("last_seq", I64),
        ("trimmed_to", I64),
        ("entries", I64),
        ("bytes", I64),
    ]);
    let mut tables = shared.catalog.tables(database);
    tables.sort_by(|a, b| a.def.name.cmp(&b.def.name));
    for t in tables {
        let kind = match &t.def.view {
            Some(v) if v.sink.is_some() => "sink",
            Some(_) => "materialized view",
            None => "table",
        };
        // A log that cannot be read shows NULL sizes; the error is the storage's to report.
        let (entries, bytes) = match t.store.log_size() {
            Ok((e, b)) => (int(e), int(b)),
            Err(_) => (opt_int(None), opt_int(None)),
        };
        rows.rows.push(vec![
            text(t.def.name.clone()),
            text(kind),
            int(t.store.last_seq()),
            int(t.store.trimmed()),
            entries,
            bytes,
        ]);
    }
    rows
}

/// One row per job: `SHOW JOBS`' figures and the checkpoint counts.
fn jobs(overview: &[JobOverview]) -> Rows {
    let mut t = Rows::new(&[
        ("job_name", TEXT),
        ("kind", TEXT),
        ("status", TEXT),
        ("parallelism", I64),
        ("epoch", I64),
        ("checkpoint_epoch", I64),
        ("checkpoint_time", timestamp_type()),
        ("checkpoints", I64),
        ("checkpoint_failures", I64),
        ("records_in", I64),
        ("records_out", I64),
        ("state_bytes", I64),
        ("late_rows", I64),
        ("dead_letters", I64),
        ("restarts", I64),
        ("uptime_ms", I64),
        ("error", TEXT),
        ("progress", F64),
    ]);
    for j in overview {
        let mut row = vec![text(&j.name), text(j.kind), text(j.status)];
        match &j.job {
            Some((job, s)) => {
                let m = job.metrics();
                row.extend([
                    int(s.parallelism as u64),
                    int(s.epoch),
                    int(s.checkpoint_epoch),
                    time(s.checkpoint_at),
                    int(m.checkpoints.load(Ordering::Relaxed)),
                    int(m.failed_epochs.load(Ordering::Relaxed)),
                    int(s.rows_in),
                    int(s.rows_out),
                    int(s.state_bytes),
                    int(m.late_rows.load(Ordering::Relaxed)),
                    int(s.dead_letters),
                    int(u64::from(j.restarts)),
                    int(m.uptime().as_millis() as u64),
                ]);
            }
            None => {
                row.extend((0..3).map(|_| ScalarValue::Int64(None)));
                row.push(time(None));
                row.extend((0..9).map(|_| ScalarValue::Int64(None)));
            }
        }
        row.push(opt_text(j.error.clone()));
        row.push(ScalarValue::Float64(j.progress));
        t.rows.push(row);
    }
    t
}

/// The share of `hits + misses` state reads answered from memory; `None` before the first.
fn hit_rate((hits, misses): (u64, u64)) -> Option<f64> {
    (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64)
}

/// One row per state table of each stateful operator, its figures summed over the operator's
/// instances. An operator's state tables share its state table id (stored with the view) and
/// are told apart by their tag (a join's `l` and `r` sides, say).
fn state_tables(overview: &[JobOverview]) -> Rows {
    let mut t = Rows::new(&[
        ("job_name", TEXT),
        ("state_table_id", I64),
        ("tag", TEXT),
        ("stage", I64),
        ("operator_index", I64),
        ("operator", TEXT),
        ("instances", I64),
        ("stored_bytes", I64),
        ("memory_bytes", I64),
        ("cache_hits", I64),
        ("cache_misses", I64),
        ("cache_hit_rate", F64),
    ]);
    for j in overview {
        let Some((job, _)) = &j.job else { continue };
        let m = job.metrics();
        for (s, stage) in m.stages.iter().enumerate() {
            for (o, name) in stage.operators.iter().enumerate() {
                // Figures by table index: instances, stored, memory, hits, misses.
                let mut tables = std::collections::BTreeMap::<u8, [u64; 5]>::new();
                let mut id = None;
                for task in &stage.instances {
                    let Some(op) = task.operators.get(o) else {
                        continue;
                    };
                    id = id.or(op.state_table);
                    for (tag, f) in op.state.tables() {
                        let sum = tables.entry(tag).or_default();
                        let figures = [
                            1,
                            f.stored_bytes.load(Ordering::Relaxed),
                            f.memory_bytes.load(Ordering::Relaxed),
                            f.hits.load(Ordering::Relaxed),
                            f.misses.load(Ordering::Relaxed),
                        ];
                        for (total, v) in sum.iter_mut().zip(figures) {
                            *total += v;
                        }
                    }
                }
                for (tag, [instances, stored, memory, hits, misses]) in tables {
                    t.rows.push(vec![
                        text(&j.name),
                        opt_int(id.map(i64::from)),
                        text(StateFigures::tag_name(tag)),
                        int(s as u64),
                        int(o as u64),
                        text(name),
                        int(instances),
                        int(stored),
                        int(memory),
                        int(hits),
                        int(misses),
                        ScalarValue::Float64(hit_rate((hits, misses))),
                    ]);
                }
            }
        }
    }
    t
}

/// One row per operator instance.
fn operators(overview: &[JobOverview]) -> Rows {
    let mut t = Rows::new(&[
        ("job_name", TEXT),
        ("stage", I64),
        ("instance", I64),
        ("operator_index", I64),
        ("operator", TEXT),
        ("records_in", I64),
        ("records_out", I64),
        ("input_watermark", timestamp_type()),
        ("output_watermark", timestamp_type()),
        ("watermark_lag_s", F64),
        ("state_bytes", I64),
        ("state_cache_hit_rate", F64),
        ("busy_pct", F64),
        ("backpressured_pct", F64),
        ("idle_pct", F64),
    ]);
    for j in overview {
        let Some((job, _)) = &j.job else { continue };
        let m = job.metrics();
        let life = m.uptime().as_nanos().max(1) as f64;
        let pct = |n: u64| (n as f64 * 100.0 / life).min(100.0);
        for (s, stage) in m.stages.iter().enumerate() {
            for (i, task) in stage.instances.iter().enumerate() {
                let busy = pct(task.busy_nanos.load(Ordering::Relaxed));
                let back = pct(task.backpressured_nanos.load(Ordering::Relaxed));
                let idle = pct(task.idle_nanos());
                for (o, (name, op)) in stage.operators.iter().zip(&task.operators).enumerate() {
                    let input = op.input_watermark();
                    t.rows.push(vec![
                        text(&j.name),
                        int(s as u64),
                        int(i as u64),
                        int(o as u64),
                        text(name),
                        int(op.rows_in.load(Ordering::Relaxed)),
                        int(op.rows_out.load(Ordering::Relaxed)),
                        watermark(input),
                        watermark(op.output_watermark()),
                        ScalarValue::Float64(input.map(watermark_lag)),
                        int(op.state_bytes.load(Ordering::Relaxed)),
                        ScalarValue::Float64(hit_rate(op.state.reads())),
                        float(busy),
                        float(back),
                        float(idle),
                    ]);
                }
            }
        }
    }
    t
}

/// One row per recent epoch of each job (the last `RECENT_EPOCHS`), newest first.
fn checkpoints(overview: &[JobOverview]) -> Rows {
    let mut t = Rows::new(&[
        ("job_name", TEXT),
        ("epoch", I64),
        ("checkpoint", DataType::Boolean),
        ("started_at", timestamp_type()),
        ("duration_ms", F64),
        ("alignment_ms", F64),
        ("size_bytes", I64),
        ("rows", I64),
        ("state_bytes", I64),
    ]);
    for j in overview {
        let Some((job, _)) = &j.job else { continue };
        for e in job.metrics().recent_epochs().iter().rev() {
            t.rows.push(vec![
                text(&j.name),
                int(e.epoch),
                ScalarValue::Boolean(Some(e.checkpoint)),
                time(Some(e.started)),
                float(e.duration.as_secs_f64() * 1e3),
                float(e.alignment.as_secs_f64() * 1e3),
                int(e.bytes),
                int(e.rows),
                int(e.state_bytes),
            ]);
        }
    }
    t
}

/// One row per source of each job, or per split (a Kafka partition) where the source has them.
fn sources(overview: &[JobOverview]) -> Rows {
    let mut t = Rows::new(&[
        ("job_name", TEXT),
        ("source", I64),
        ("table_name", TEXT),
        ("split", TEXT),
        ("records_in", I64),
        ("position", I64),
        ("end_position", I64),
        ("lag", I64),
        ("watermark", timestamp_type()),
        ("watermark_lag_s", F64),
        ("idle_ms", I64),
    ]);
    for j in overview {
        let Some((job, _)) = &j.job else { continue };
        for (i, s) in job.metrics().sources.iter().enumerate() {
            let w = s.watermark();
            let common = |split: ScalarValue, position: i64, end: Option<i64>| {
                vec![
                    text(&j.name),
                    int(i as u64),
                    text(&s.table),
                    split,
                    int(s.rows.load(Ordering::Relaxed)),
                    opt_int(Some(position)),
                    opt_int(end),
                    opt_int(end.map(|e| e.saturating_sub(position).max(0))),
                    watermark(w),
                    ScalarValue::Float64(w.map(watermark_lag)),
                    opt_int(s.idle_for().map(|d| d.as_millis() as i64)),
                ]
            };
            let splits = s.splits();
            if splits.is_empty() {
                let position =
                    i64::try_from(s.position.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
                t.rows.push(common(ScalarValue::Utf8(None), position, None));
            }
            for split in splits {
                t.rows
                    .push(common(text(split.name), split.position, split.end));
            }
        }
    }
    t
}

/// How long ago `since` was, in milliseconds.
pub fn open_ms(since: std::time::SystemTime) -> i64 {
    since.elapsed().map_or(0, |d| d.as_millis() as i64)
}

/// One row per sink: SHOW SINKS' figures.
fn sinks(overview: &[JobOverview]) -> Rows {
    let mut t = Rows::new(&[
        ("sink_name", TEXT),
        ("connector", TEXT),
        ("target", TEXT),
        ("guarantee", TEXT),
        ("status", TEXT),
        ("committed_epoch", I64),
        ("open_epoch", I64),
        ("records", I64),
        ("bytes", I64),
        ("transaction", TEXT),
        ("transaction_open_ms", I64),
        ("retries", I64),
        ("error", TEXT),
    ]);
    for j in overview.iter().filter(|j| j.kind == "sink") {
        let Some((_, s)) = &j.job else { continue };
        let sink = &s.sink;
        t.rows.push(vec![
            text(&j.name),
            text(&sink.connector),
            text(&sink.target),
            text(&sink.guarantee),
            text(j.status),
            int(sink.committed_epoch),
            opt_int(sink.open.map(|e| e as i64)),
            int(sink.records),
            int(sink.bytes),
            opt_text(sink.transaction.clone()),
            opt_int(sink.open_since.map(open_ms)),
            int(sink.retries),
            opt_text(j.error.clone()),
        ]);
    }
    t
}
