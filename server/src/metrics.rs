//! Prometheus metrics: what `/metrics` exports, in the OpenMetrics text format
//! (`prometheus-client`).
//!
//! Two kinds of figures. The server's own instruments (pgwire sessions, statement latency) live
//! in the registry and are updated where things happen. Everything about jobs is read at scrape
//! time from the engine's [`rivulet_engine::job::metrics::JobMetrics`] through a collector, so the
//! data path never touches the registry. Names follow Flink's metrics (`numRecordsIn` is
//! `rivulet_operator_records_in_total`, `lastCheckpointDuration` is
//! `rivulet_job_last_checkpoint_duration_seconds`, ...) in Prometheus' snake case with base units
//! (seconds, bytes); every job figure carries `database` and `job` labels, operator figures also
//! `stage`, `instance` and `operator`. A restarted job's counters start again from zero.

use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use rivulet_engine::job::metrics::JobMetrics;

use crate::jobs::JobOverview;
use crate::session::Shared;

/// Open pgwire connections.
pub static SESSIONS: LazyLock<Gauge> = LazyLock::new(Gauge::default);

/// Seconds each statement took to run (until its result was ready to send).
pub static QUERY_DURATION: LazyLock<Histogram> = LazyLock::new(|| {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
});

/// Panics caught: each ended one task (a connection, say) and is a bug.
pub static PANICS: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Counts an open connection until dropped.
pub struct SessionGuard(());

impl SessionGuard {
    pub fn new() -> Self {
        SESSIONS.inc();
        Self(())
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        SESSIONS.dec();
    }
}

/// The registry `/metrics` encodes: the server's instruments and the jobs' collector.
pub fn registry(shared: Weak<Shared>) -> Registry {
    let mut registry = Registry::default();
    registry.register(
        "rivulet_pgwire_sessions",
        "Open Postgres wire connections",
        SESSIONS.clone(),
    );
    registry.register(
        "rivulet_pgwire_query_duration_seconds",
        "Seconds from receiving a statement to its result being ready",
        QUERY_DURATION.clone(),
    );
    registry.register(
        "rivulet_panics",
        "Panics caught; each ended one task (a connection, a job) and is a bug",
        PANICS.clone(),
    );
    registry.register_collector(Box::new(JobsCollector { shared }));
    registry.register_collector(Box::new(ProcessCollector));
    registry
}

/// The registry as OpenMetrics text.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

/// Labels of one sample.
type Labels = Vec<(&'static str, String)>;

/// One metric family being written: its descriptor, then its samples.
#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Labels, f64)>,
}

impl Family {
    fn new(name: &'static str, help: &'static str, kind: MetricType) -> Self {
        Self {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    fn push(&mut self, labels: &Labels, value: f64) {
        let labels = labels.iter().map(|(k, v)| (*k, escape(v))).collect();
        self.samples.push((labels, value));
    }

    fn encode(self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let mut family = encoder.encode_descriptor(self.name, self.help, None, self.kind)?;
        for (labels, value) in &self.samples {
            let sample = family.encode_family(labels)?;
            match self.kind {
                MetricType::Counter => ConstCounter::new(value.max(0.0)).encode(sample)?,
                _ => ConstGauge::new(*value).encode(sample)?,
            }
        }
        Ok(())
    }
}

/// A label value in the exposition's escaped form. prometheus-client 0.24 writes label values
/// as given, and a view's name may hold `"` or `\` (a quoted identifier): unescaped, one such
/// name would make the whole scrape unparsable.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Families by name, in the order first asked for.
#[derive(Debug, Default)]
struct Families(Vec<Family>);

impl Families {
    fn get(&mut self, name: &'static str, help: &'static str, kind: MetricType) -> &mut Family {
        let at = match self.0.iter().position(|f| f.name == name) {
            Some(at) => at,
            None => {
                self.0.push(Family::new(name, help, kind));
                self.0.len() - 1
            }
        };
        &mut self.0[at]
    }

    fn gauge(&mut self, name: &'static str, help: &'static str, labels: &Labels, v: f64) {
        self.get(name, help, MetricType::Gauge).push(labels, v);
    }

    fn counter(&mut self, name: &'static str, help: &'static str, labels: &Labels, v: f64) {
        self.get(name, help, MetricType::Counter).push(labels, v);
    }

    /// Declares a family that may have no samples now (so that it is always listed).
    fn declare(&mut self, name: &'static str, help: &'static str, kind: MetricType) {
        self.get(name, help, kind);
    }
}

/// Seconds since the Unix epoch of an event time in microseconds.
fn seconds_of_micros(micros: i64) -> f64 {
    micros as f64 / 1e6
}

/// Now, in microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// How far event time `watermark` is behind the wall clock, in seconds (0 once a source has
/// ended, `i64::MAX`).
pub fn watermark_lag(watermark: i64) -> f64 {
    if watermark == i64::MAX {
        return 0.0;
    }
    (now_micros().saturating_sub(watermark)).max(0) as f64 / 1e6
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn nanos_seconds(n: u64) -> f64 {
    Duration::from_nanos(n).as_secs_f64()
}

/// Reads every job's figures at scrape time.
#[derive(Debug)]
struct JobsCollector {
    shared: Weak<Shared>,
}

impl Collector for JobsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let mut f = Families::default();
        declare_all(&mut f);
        if let Some(shared) = self.shared.upgrade() {
            for job in shared.jobs.overview(&shared.catalog) {
                job_figures(&mut f, &job);
            }
        }
        for family in f.0 {
            family.encode(&mut encoder)?;
        }
        Ok(())
    }
}

/// Families listed even when no job has samples for them.
fn declare_all(f: &mut Families) {
    for (name, help, kind) in FAMILIES {
        f.declare(name, help, *kind);
    }
}

const G: MetricType = MetricType::Gauge;
const C: MetricType = MetricType::Counter;

/// Every job family: name, help, type (counters get `_total` in the exposition).
const FAMILIES: &[(&str, &str, MetricType)] = &[
    (
        "rivulet_job_up",
        "1 while the job runs (or retries a broker), 0 once it failed",
        G,
    ),
    (
        "rivulet_job_uptime_seconds",
        "Seconds since the job (re)started",
        G,
    ),
    (
        "rivulet_job_restarts",
        "Times the job was restarted after a failure (numRestarts)",
        C,
    ),
    (
        "rivulet_job_parallelism",
        "Instances of each keyed stage",
        G,
    ),
    ("rivulet_job_records_in", "Rows the job's sources read", C),
    (
        "rivulet_job_records_out",
        "Result changes the job committed",
        C,
    ),
    ("rivulet_job_epoch", "The last committed epoch", G),
    (
        "rivulet_job_epochs",
        "Epochs committed since the job started",
        C,
    ),
    (
        "rivulet_job_epoch_duration_seconds",
        "Seconds from barrier injection to commit, summed over epochs",
        C,
    ),
    (
        "rivulet_job_last_epoch_duration_seconds",
        "Commit latency of the last epoch: barrier injection to commit",
        G,
    ),
    (
        "rivulet_job_checkpoints",
        "Synced epochs (numberOfCompletedCheckpoints)",
        C,
    ),
    (
        "rivulet_job_checkpoint_failures",
        "Epochs lost because the job failed before committing them (numberOfFailedCheckpoints)",
        C,
    ),
    (
        "rivulet_job_last_checkpoint_duration_seconds",
        "Duration of the last checkpoint (lastCheckpointDuration)",
        G,
    ),
    (
        "rivulet_job_last_checkpoint_size_bytes",
        "Bytes the last checkpoint wrote (lastCheckpointSize)",
        G,
    ),
    (
        "rivulet_job_last_checkpoint_alignment_seconds",
        "Longest barrier alignment of the last checkpoint",
        G,
    ),
    (
        "rivulet_job_last_checkpoint_timestamp_seconds",
        "When the last checkpoint completed, Unix time (lastCompletedCheckpointTimestamp)",
        G,
    ),
    (
        "rivulet_job_state_bytes",
        "Bytes of operator state as of the last epoch",
        G,
    ),
    (
        "rivulet_job_late_rows",
        "Rows set aside as late (after the watermark closed their window)",
        C,
    ),
    (
        "rivulet_job_dead_letters",
        "Source records that could not be decoded",
        C,
    ),
    ("rivulet_sink_records", "Records the job's sink wrote", C),
    ("rivulet_sink_bytes", "Bytes the job's sink wrote", C),
    (
        "rivulet_sink_committed_epoch",
        "The last epoch the sink committed",
        G,
    ),
    (
        "rivulet_operator_records_in",
        "Rows into the operator instance (numRecordsIn)",
        C,
    ),
    (
        "rivulet_operator_records_out",
        "Rows out of the operator instance (numRecordsOut)",
        C,
    ),
    (
        "rivulet_operator_current_input_watermark_seconds",
        "Smallest watermark over the operator's inputs, Unix time (currentInputWatermark)",
        G,
    ),
    (
        "rivulet_operator_current_output_watermark_seconds",
        "Watermark the operator forwards, Unix time (currentOutputWatermark)",
        G,
    ),
    (
        "rivulet_operator_watermark_lag_seconds",
        "Wall clock minus the operator's input watermark",
        G,
    ),
    (
        "rivulet_operator_state_bytes",
        "Bytes of state the operator instance held at the last barrier",
        G,
    ),
    (
        "rivulet_operator_state_cache_hits",
        "Point reads of the operator's state tables answered from memory (as of the last barrier)",
        C,
    ),
    (
        "rivulet_operator_state_cache_misses",
        "Point reads of the operator's state tables that went to RocksDB (as of the last barrier)",
        C,
    ),
    (
        "rivulet_state_table_bytes",
        "Approximate bytes a state table of the operator instance holds in RocksDB",
        G,
    ),
    (
        "rivulet_state_table_memory_bytes",
        "Bytes a state table of the operator instance holds in memory (cache and pending writes)",
        G,
    ),
    (
        "rivulet_state_table_cache_hits",
        "Point reads of a state table answered from memory (as of the last barrier)",
        C,
    ),
    (
        "rivulet_state_table_cache_misses",
        "Point reads of a state table that went to RocksDB (as of the last barrier)",
        C,
    ),
    (
        "rivulet_task_busy_seconds",
        "Seconds the task ran operators (busyTime)",
        C,
    ),
    (
        "rivulet_task_idle_seconds",
        "Seconds the task waited for input (idleTime)",
        C,
    ),
    (
        "rivulet_task_backpressured_seconds",
        "Seconds the task waited for room in a full output channel (backPressuredTime)",
        C,
    ),
    (
        "rivulet_task_alignment_seconds",
        "Seconds the task's inputs were blocked aligning barriers",
        C,
    ),
    ("rivulet_source_records_in", "Rows the source read", C),
    (
        "rivulet_source_position",
        "Position the source read up to (change-log sequence, or an external source's progress)",
        G,
    ),
    (
        "rivulet_source_watermark_seconds",
        "The source's watermark, Unix time",
        G,
    ),
    (
        "rivulet_source_watermark_lag_seconds",
        "Wall clock minus the source's watermark",
        G,
    ),
    (
        "rivulet_source_idle_seconds",
        "Seconds since the source last read rows",
        G,
    ),
    (
        "rivulet_kafka_partition_offset",
        "Next offset the job reads in the partition",
        G,
    ),
    (
        "rivulet_kafka_partition_high_watermark",
        "The partition's high watermark when last asked",
        G,
    ),
    (
        "rivulet_kafka_partition_lag",
        "High watermark minus the next offset to read (records-lag)",
        G,
    ),
];

fn job_figures(f: &mut Families, job: &JobOverview) {
    let labels: Labels = vec![
        ("database", job.database.clone()),
        ("job", job.name.clone()),
    ];
    let up = if job.status == "failed" { 0.0 } else { 1.0 };
    f.gauge("rivulet_job_up", "", &labels, up);
    f.counter("rivulet_job_restarts", "", &labels, f64::from(job.restarts));
    let Some((running, stats)) = &job.job else {
        return;
    };
    let m: &Arc<JobMetrics> = running.metrics();
    f.gauge(
        "rivulet_job_uptime_seconds",
        "",
        &labels,
        m.uptime().as_secs_f64(),
    );
    f.gauge(
        "rivulet_job_parallelism",
        "",
        &labels,
        stats.parallelism as f64,
    );
    f.counter("rivulet_job_records_in", "", &labels, stats.rows_in as f64);
    f.counter(
        "rivulet_job_records_out",
        "",
        &labels,
        stats.rows_out as f64,
    );
    f.gauge("rivulet_job_epoch", "", &labels, stats.epoch as f64);
    f.counter(
        "rivulet_job_epochs",
        "",
        &labels,
        m.epochs.load(Ordering::Relaxed) as f64,
    );
    let epoch_micros = m.epoch_micros.load(Ordering::Relaxed);
    f.counter(
        "rivulet_job_epoch_duration_seconds",
        "",
        &labels,
        epoch_micros as f64 / 1e6,
    );
    if let Some(last) = m.recent_epochs().last() {
        let d = last.duration.as_secs_f64();
        f.gauge("rivulet_job_last_epoch_duration_seconds", "", &labels, d);
    }
    let checkpoints = m.checkpoints.load(Ordering::Relaxed) as f64;
    f.counter("rivulet_job_checkpoints", "", &labels, checkpoints);
    let failures = m.failed_epochs.load(Ordering::Relaxed) as f64;
    f.counter("rivulet_job_checkpoint_failures", "", &labels, failures);
    if let Some(c) = m.last_checkpoint() {
        let done = c.started + c.duration;
        f.gauge(
            "rivulet_job_last_checkpoint_duration_seconds",
            "",
            &labels,
            c.duration.as_secs_f64(),
        );
        f.gauge(
            "rivulet_job_last_checkpoint_size_bytes",
            "",
            &labels,
            c.bytes as f64,
        );
        f.gauge(
            "rivulet_job_last_checkpoint_alignment_seconds",
            "",
            &labels,
            c.alignment.as_secs_f64(),
        );
        f.gauge(
            "rivulet_job_last_checkpoint_timestamp_seconds",
            "",
            &labels,
            unix_seconds(done),
        );
    }
    f.gauge(
        "rivulet_job_state_bytes",
        "",
        &labels,
        stats.state_bytes as f64,
    );
    let late = m.late_rows.load(Ordering::Relaxed) as f64;
    f.counter("rivulet_job_late_rows", "", &labels, late);
    f.counter(
        "rivulet_job_dead_letters",
        "",
        &labels,
        stats.dead_letters as f64,
    );
    if job.kind == "sink" {
        let mut sink = labels.clone();
        sink.push(("connector", stats.sink.connector.clone()));
        f.counter("rivulet_sink_records", "", &sink, stats.sink.records as f64);
        f.counter("rivulet_sink_bytes", "", &sink, stats.sink.bytes as f64);
        let committed = stats.sink.committed_epoch as f64;
        f.gauge("rivulet_sink_committed_epoch", "", &sink, committed);
    }
    operator_figures(f, &labels, m);
    source_figures(f, &labels, m);
}

/// The figures of each of an operator instance's state tables, labelled with its state table
/// (`<state table id>.<tag>`; the id is 0 for a view that stores none).
fn state_table_figures(
    f: &mut Families,
    operator: &Labels,
    op: &rivulet_engine::job::metrics::OperatorMetrics,
) {
    for (tag, t) in op.state.tables() {
        let mut labels = operator.clone();
        let id = op.state_table.unwrap_or(0);
        let tag = rivulet_engine::state::table::StateFigures::tag_name(tag);
        labels.push(("state_table", format!("{id}.{tag}")));
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
        f.gauge(
            "rivulet_state_table_bytes",
            "",
            &labels,
            load(&t.stored_bytes),
        );
        f.gauge(
            "rivulet_state_table_memory_bytes",
            "",
            &labels,
            load(&t.memory_bytes),
        );
        f.counter("rivulet_state_table_cache_hits", "", &labels, load(&t.hits));
        f.counter(
            "rivulet_state_table_cache_misses",
            "",
            &labels,
            load(&t.misses),
        );
    }
}

fn operator_figures(f: &mut Families, job: &Labels, m: &JobMetrics) {
    for (s, stage) in m.stages.iter().enumerate() {
        for (i, task) in stage.instances.iter().enumerate() {
            let mut labels = job.clone();
            labels.push(("stage", s.to_string()));
            labels.push(("instance", i.to_string()));
            let busy = nanos_seconds(task.busy_nanos.load(Ordering::Relaxed));
            f.counter("rivulet_task_busy_seconds", "", &labels, busy);
            f.counter(
                "rivulet_task_idle_seconds",
                "",
                &labels,
                nanos_seconds(task.idle_nanos()),
            );
            let bp = nanos_seconds(task.backpressured_nanos.load(Ordering::Relaxed));
            f.counter("rivulet_task_backpressured_seconds", "", &labels, bp);
            let align = nanos_seconds(task.alignment_nanos.load(Ordering::Relaxed));
            f.counter("rivulet_task_alignment_seconds", "", &labels, align);
            for (o, (name, op)) in stage.operators.iter().zip(&task.operators).enumerate() {
                let mut labels = labels.clone();
                labels.push(("operator", format!("{o}:{name}")));
                let rows_in = op.rows_in.load(Ordering::Relaxed) as f64;
                f.counter("rivulet_operator_records_in", "", &labels, rows_in);
                let rows_out = op.rows_out.load(Ordering::Relaxed) as f64;
                f.counter("rivulet_operator_records_out", "", &labels, rows_out);
                let state = op.state_bytes.load(Ordering::Relaxed) as f64;
                f.gauge("rivulet_operator_state_bytes", "", &labels, state);
                let (hits, misses) = op.state.reads();
                f.counter(
                    "rivulet_operator_state_cache_hits",
                    "",
                    &labels,
                    hits as f64,
                );
                f.counter(
                    "rivulet_operator_state_cache_misses",
                    "",
                    &labels,
                    misses as f64,
                );
                state_table_figures(f, &labels, op);
                if let Some(w) = op.input_watermark().filter(|&w| w != i64::MAX) {
                    let s = seconds_of_micros(w);
                    f.gauge(
                        "rivulet_operator_current_input_watermark_seconds",
                        "",
                        &labels,
                        s,
                    );
                    f.gauge(
                        "rivulet_operator_watermark_lag_seconds",
                        "",
                        &labels,
                        watermark_lag(w),
                    );
                }
                if let Some(w) = op.output_watermark().filter(|&w| w != i64::MAX) {
                    let s = seconds_of_micros(w);
                    f.gauge(
                        "rivulet_operator_current_output_watermark_seconds",
                        "",
                        &labels,
                        s,
                    );
                }
            }
        }
    }
}

fn source_figures(f: &mut Families, job: &Labels, m: &JobMetrics) {
    for (i, source) in m.sources.iter().enumerate() {
        let mut labels = job.clone();
        labels.push(("source", i.to_string()));
        labels.push(("table", source.table.clone()));
        let rows = source.rows.load(Ordering::Relaxed) as f64;
        f.counter("rivulet_source_records_in", "", &labels, rows);
        let position = source.position.load(Ordering::Relaxed) as f64;
        f.gauge("rivulet_source_position", "", &labels, position);
        if let Some(w) = source.watermark() {
            if w != i64::MAX {
                f.gauge(
                    "rivulet_source_watermark_seconds",
                    "",
                    &labels,
                    seconds_of_micros(w),
                );
            }
            f.gauge(
                "rivulet_source_watermark_lag_seconds",
                "",
                &labels,
                watermark_lag(w),
            );
        }
        let idle = source.idle_for().unwrap_or(m.uptime()).as_secs_f64();
        f.gauge("rivulet_source_idle_seconds", "", &labels, idle);
        for split in source.splits() {
            let mut labels = labels.clone();
            labels.push(("partition", split.name.clone()));
            f.gauge(
                "rivulet_kafka_partition_offset",
                "",
                &labels,
                split.position as f64,
            );
            if let Some(end) = split.end {
                f.gauge(
                    "rivulet_kafka_partition_high_watermark",
                    "",
                    &labels,
                    end as f64,
                );
                let lag = end.saturating_sub(split.position).max(0) as f64;
                f.gauge("rivulet_kafka_partition_lag", "", &labels, lag);
            }
        }
    }
}

/// The process' CPU time, memory, threads and files, from `/proc/self` (Linux; nothing
/// elsewhere), under the standard `process_*` names.
#[derive(Debug)]
struct ProcessCollector;

/// The process' start, for `process_start_time_seconds`.
static STARTED: LazyLock<SystemTime> = LazyLock::new(SystemTime::now);

/// Marks the process' start time (call early in `main`).
pub fn mark_start() {
    LazyLock::force(&STARTED);
}

/// CPU seconds (user + system) and resident and virtual bytes, from `/proc/self/stat`.
fn proc_stat() -> Option<(f64, f64, f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    // Linux reports CPU time in clock ticks of 1/100 s (USER_HZ) and RSS in 4 KiB pages on the
    // architectures we run on.
    let cpu = (num(11)? + num(12)?) / 100.0;
    let threads = num(17)?;
    let virt = num(20)?;
    let rss = num(21)? * 4096.0;
    Some((cpu, rss, virt, threads))
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some((cpu, rss, virt, threads)) = proc_stat() else {
            return Ok(());
        };
        let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()) as f64;
        let mut f = Families::default();
        let none: Labels = Vec::new();
        f.counter(
            "process_cpu_seconds",
            "User and system CPU seconds",
            &none,
            cpu,
        );
        f.gauge(
            "process_resident_memory_bytes",
            "Resident memory in bytes",
            &none,
            rss,
        );
        f.gauge(
            "process_virtual_memory_bytes",
            "Virtual memory in bytes",
            &none,
            virt,
        );
        f.gauge("process_threads", "OS threads", &none, threads);
        f.gauge("process_open_fds", "Open file descriptors", &none, fds);
        let start = unix_seconds(*STARTED);
        f.gauge(
            "process_start_time_seconds",
            "Start time, Unix seconds",
            &none,
            start,
        );
        for family in f.0 {
            family.encode(&mut encoder)?;
        }
        Ok(())
    }
}

/// A short text summary for logs and tests: `name value` lines of the job families' samples.
#[cfg(test)]
fn summary(f: &Families) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for family in &f.0 {
        for (_, v) in &family.samples {
            let _ = writeln!(out, "{} {v}", family.name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_encode_as_openmetrics() {
        let mut f = Families::default();
        let labels: Labels = vec![("job", "v\"1".into())];
        f.counter("rivulet_job_records_in", "Rows", &labels, 3.0);
        f.gauge("rivulet_job_epoch", "Epoch", &labels, 7.0);
        assert_eq!(
            summary(&f),
            "rivulet_job_records_in 3\nrivulet_job_epoch 7\n"
        );
        #[derive(Debug)]
        struct One(std::sync::Mutex<Option<Families>>);
        impl Collector for One {
            fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
                for family in self.0.lock().unwrap().take().unwrap().0 {
                    family.encode(&mut encoder)?;
                }
                Ok(())
            }
        }
        let mut registry = Registry::default();
        registry.register_collector(Box::new(One(std::sync::Mutex::new(Some(f)))));
        let text = encode(&registry).unwrap();
        assert!(
            text.contains("# TYPE rivulet_job_records_in counter\n"),
            "{text}"
        );
        assert!(
            text.contains("rivulet_job_records_in_total{job=\"v\\\"1\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("rivulet_job_epoch{job=\"v\\\"1\"} 7"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn watermark_lag_is_zero_at_the_end_of_input() {
        assert_eq!(watermark_lag(i64::MAX), 0.0);
        let lag = watermark_lag(now_micros() - 2_000_000);
        assert!((1.9..10.0).contains(&lag), "{lag}");
    }
}
