//! What observability costs and how fast pushed results arrive (`scripts/bench observability`):
//!
//! 1. **Metrics overhead.** The tumble query of `scripts/bench flink` (a 10-second TUMBLE count
//!    and sum per auction over the JSON bids, into a blackhole sink, parallelism 1, 100 ms
//!    barriers) with the server's `--metrics on` and `--metrics off`, alternating, three runs
//!    each, a fresh server per run; events per CPU-second of each run and the medians' ratio.
//! 2. **SUBSCRIBE latency.** A writer inserts 10,000 rows a second (100-row INSERTs every 10
//!    ms, for `RIVULET_BENCH_SUBSCRIBE_SECS`, default 15) into a table, each row carrying the
//!    microsecond it was sent; one client subscribes to the table and one to a view over it (a
//!    count and the latest send time per key, maintained by a job with 100 ms barriers), both
//!    with `COPY (SUBSCRIBE ...) TO STDOUT` through tokio-postgres. Each line's latency is the
//!    time it arrived minus the send time it carries (for the view, of the newest row behind
//!    the change): p50, p99 and max.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use rivulet_sql_tests::{TestServer, bids, text_rows};

/// One run of the tumble query: events per CPU-second.
async fn tumble_run(path: &Path, rows: u64, metrics: &str) -> f64 {
    let server = TestServer::start_with_flags(&[
        "--streaming-parallelism",
        "1",
        "--barrier-interval-ms",
        "100",
        "--metrics",
        metrics,
    ])
    .await
    .unwrap();
    let c = server.connect("dev").await.unwrap();
    c.batch_execute(&format!(
        "{}; CREATE TABLE sink (window_start TIMESTAMPTZ, window_end TIMESTAMPTZ, \
         auction BIGINT, cnt BIGINT, total BIGINT) WITH ('connector' = 'blackhole')",
        bids::table_ddl(path)
    ))
    .await
    .unwrap();
    let cpu0 = server.cpu_time().unwrap();
    c.batch_execute(&format!("INSERT INTO sink {}; FLUSH", bids::TUMBLE))
        .await
        .unwrap();
    let cpu = (server.cpu_time().unwrap() - cpu0).as_secs_f64();
    let jobs = text_rows(&c, "SHOW JOBS").await.unwrap();
    assert!(
        jobs.iter().all(|j| !j.contains("failed")),
        "a job failed: {jobs:?}"
    );
    server.kill9().await.unwrap();
    rows as f64 / cpu.max(1e-3)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// Reads a `COPY (SUBSCRIBE ...) TO STDOUT` until `until`; the latency in microseconds of
/// every line that adds a row, from the send time in column `sent` (0-based among the
/// relation's columns, after `epoch` and `op`).
async fn subscriber(
    c: tokio_postgres::Client,
    query: String,
    sent: usize,
    until: Instant,
) -> Vec<i64> {
    let stream = c.copy_out(query.as_str()).await.unwrap();
    futures::pin_mut!(stream);
    let mut latencies = Vec::new();
    loop {
        let next = tokio::time::timeout_at(until.into(), stream.next()).await;
        let Ok(Some(line)) = next else {
            break;
        };
        let line = line.unwrap();
        let arrived = now_us();
        let text = String::from_utf8_lossy(&line);
        let fields: Vec<&str> = text.trim_end().split('\t').collect();
        if !matches!(fields.get(1), Some(&"insert") | Some(&"update_after")) {
            continue;
        }
        if let Some(sent) = fields.get(2 + sent).and_then(|s| s.parse::<i64>().ok()) {
            latencies.push(arrived - sent);
        }
    }
    latencies
}

fn percentiles(name: &str, mut us: Vec<i64>) {
    us.sort_unstable();
    let at = |q: f64| us[((us.len() as f64 * q) as usize).min(us.len() - 1)] as f64 / 1000.0;
    println!(
        "| {name:<24} | {:>8} | {:>8.1} | {:>8.1} | {:>8.1} |",
        us.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
}

async fn subscribe_latency(secs: u64) {
    let server = TestServer::start().await.unwrap();
    let c = server.connect("dev").await.unwrap();
    c.batch_execute(
        "CREATE TABLE t (id BIGINT, k INT, sent_us BIGINT);
         CREATE MATERIALIZED VIEW v AS
           SELECT k, count(*) AS n, max(sent_us) AS last_us FROM t GROUP BY k;",
    )
    .await
    .unwrap();
    let until = Instant::now() + Duration::from_secs(secs + 2);
    let on_table = subscriber(
        server.connect("dev").await.unwrap(),
        "COPY (SUBSCRIBE t WITH (SNAPSHOT = false)) TO STDOUT".into(),
        2,
        until,
    );
    let on_view = subscriber(
        server.connect("dev").await.unwrap(),
        "COPY (SUBSCRIBE v WITH (SNAPSHOT = false)) TO STDOUT".into(),
        2,
        until,
    );
    let writer = async {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let started = Instant::now();
        let mut id = 0u64;
        while started.elapsed() < Duration::from_secs(secs) {
            tick.tick().await;
            let sent = now_us();
            let values: Vec<String> = (0..100)
                .map(|i| {
                    id += 1;
                    format!("({id}, {}, {sent})", i % 100)
                })
                .collect();
            c.batch_execute(&format!("INSERT INTO t VALUES {}", values.join(",")))
                .await
                .unwrap();
        }
        (id, started.elapsed())
    };
    let ((rows, took), table, view) = tokio::join!(writer, on_table, on_view);
    println!(
        "\nSUBSCRIBE latency: {rows} rows inserted in {:.1} s ({:.0} rows/s), 100 per INSERT; \
         latency from send to arrival at the subscriber, in ms:\n",
        took.as_secs_f64(),
        rows as f64 / took.as_secs_f64()
    );
    println!("| subscription             | lines    | p50      | p99      | max      |");
    println!("|--------------------------|----------|----------|----------|----------|");
    percentiles("table t", table);
    percentiles("view v (100 ms barriers)", view);
    server.kill9().await.unwrap();
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("observability costs: run it with `scripts/bench observability`");
        return;
    }
    let rows = bids::events();
    let path = bids::file(rows);
    let lines = bids::count(&path);
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for run in 0..3 {
        on.push(tumble_run(&path, lines, "on").await);
        off.push(tumble_run(&path, lines, "off").await);
        println!(
            "run {run}: metrics on {:.0} ev/CPU-s, off {:.0} ev/CPU-s",
            on[run], off[run]
        );
    }
    let (on_m, off_m) = (median(on), median(off));
    println!(
        "\ntumble over {lines} JSON bids ({}): median {on_m:.0} ev/CPU-s with metrics, \
         {off_m:.0} without: recording costs {:.1}%",
        path.display(),
        (1.0 - on_m / off_m) * 100.0
    );
    let secs = std::env::var("RIVULET_BENCH_SUBSCRIBE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    subscribe_latency(secs).await;
}
