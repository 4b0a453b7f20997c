//! Rivulet and Flink side by side: the same 10M bids as newline-delimited JSON, the same queries,
//! each into a blackhole sink, measured in one run on this machine.
//!
//! 1. Writes the bids file if it is not there (`genbids.py`'s format and generator, in Rust:
//!    `RIVULET_BENCH_BIDS`, default `/tmp/rivulet-bench/bids.jsonl`, `RIVULET_BENCH_EVENTS` rows,
//!    default 10,000,000).
//! 2. Rivulet (release binary, one instance per stage): each query as
//!    `INSERT INTO sink SELECT ...` over a `filesystem` table, timed until FLUSH returns (every
//!    line read and committed), with the server's CPU seconds (user + system, from /proc).
//! 3. Flink 1.20.3, when a Python with PyFlink is found (`FLINK_PYTHON`, default
//!    `/tmp/flinkvenv/bin/python`; `scripts/bench flink` installs it): `bench/flink_side.py`
//!    runs the same query at parallelism 1 without checkpoints; its JVM CPU seconds are counted.
//!    The queries: a projection, TUMBLE, HOP and SESSION windows, the top 10 bids per auction
//!    (Nexmark q19's shape), the last bid per bidder (Flink's deduplication on event time) and
//!    Flink's event-time OVER (a 10-second RANGE frame per auction).
//! 4. The same queries on Rivulet's built-in Nexmark generator, read into a table first (no
//!    JSON), to show the engine's own speed.
//!
//! 5. The tumble query as a materialized view, as a user creates it by default (emit on update)
//!    and with `EMIT ON WINDOW CLOSE`, timed from CREATE until FLUSH returns; compared with
//!    Flink's blackhole figure for the same query.
//!
//! Prints a table: events/s and events per CPU-second of each side, and their ratio.
//!
//! Rivulet commits an epoch (operator state and source positions, synced every tenth) at every
//! barrier: `RIVULET_BENCH_BARRIER_MS` apart, default 100 (the server's default; 1000 is
//! RisingWave's default interval). Flink runs without checkpoints.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use rivulet_sql_tests::{TestServer, text_rows};

/// (name, sink columns, query over `bid`)
const QUERIES: &[(&str, &str, &str)] = &[
    (
        "projection",
        "auction BIGINT, bidder BIGINT, price_eur DOUBLE, ts TIMESTAMPTZ",
        "SELECT auction, bidder, 0.908 * price, ts FROM bid WHERE auction % 123 <> 0",
    ),
    (
        "tumble",
        "window_start TIMESTAMPTZ, window_end TIMESTAMPTZ, auction BIGINT, cnt BIGINT, total BIGINT",
        rivulet_sql_tests::bids::TUMBLE,
    ),
    (
        "hop",
        "window_start TIMESTAMPTZ, window_end TIMESTAMPTZ, auction BIGINT, cnt BIGINT",
        "SELECT window_start, window_end, auction, COUNT(*) \
         FROM TABLE(HOP(TABLE bid, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '10' SECOND)) \
         GROUP BY window_start, window_end, auction",
    ),
    (
        "session",
        "window_start TIMESTAMPTZ, window_end TIMESTAMPTZ, bidder BIGINT, cnt BIGINT, top BIGINT",
        "SELECT window_start, window_end, bidder, COUNT(*), MAX(price) \
         FROM TABLE(SESSION(TABLE bid PARTITION BY bidder, DESCRIPTOR(ts), INTERVAL '10' SECOND)) \
         GROUP BY window_start, window_end, bidder",
    ),
    (
        "topn",
        "auction BIGINT, bidder BIGINT, price BIGINT, ts TIMESTAMPTZ",
        "SELECT auction, bidder, price, ts FROM (SELECT auction, bidder, price, ts, \
         ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rn FROM bid) \
         WHERE rn <= 10",
    ),
    (
        "dedup",
        "auction BIGINT, bidder BIGINT, price BIGINT, ts TIMESTAMPTZ",
        "SELECT auction, bidder, price, ts FROM (SELECT auction, bidder, price, ts, \
         ROW_NUMBER() OVER (PARTITION BY bidder ORDER BY ts DESC) AS rn FROM bid) \
         WHERE rn = 1",
    ),
    (
        "over",
        "auction BIGINT, price BIGINT, ts TIMESTAMPTZ, total BIGINT",
        "SELECT auction, price, ts, SUM(price) OVER (PARTITION BY auction ORDER BY ts \
         RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW) FROM bid",
    ),
];

/// The tumble query as views: (row name, what follows the query).
const VIEWS: &[(&str, &str)] = &[
    ("tumble MV", ""),
    ("tumble MV EOWC", " EMIT ON WINDOW CLOSE"),
];

/// Writes `n` bids as `genbids.py` does: the same LCG, fields and text.
/// (events/s, events per CPU-second)
type Figures = (f64, f64);

fn barrier_ms() -> String {
    std::env::var("RIVULET_BENCH_BARRIER_MS").unwrap_or_else(|_| "100".into())
}

async fn server() -> TestServer {
    let barrier = barrier_ms();
    TestServer::start_with_flags(&[
        "--streaming-parallelism",
        "1",
        "--barrier-interval-ms",
        &barrier,
    ])
    .await
    .unwrap()
}

async fn rivulet_side(path: &Path, rows: u64) -> Vec<Figures> {
    let server = server().await;
    let c = server.connect("dev").await.unwrap();
    c.batch_execute(&rivulet_sql_tests::bids::table_ddl(path))
        .await
        .unwrap();
    let mut figures = run_queries(&server, &c, rows).await;
    figures.extend(run_views(&server, &c, rows).await);
    server.kill9().await.unwrap();
    figures
}

/// Runs the tumble query as each of [`VIEWS`], timed from CREATE until FLUSH returns.
async fn run_views(server: &TestServer, c: &tokio_postgres::Client, rows: u64) -> Vec<Figures> {
    let mut figures = Vec::new();
    let tumble = QUERIES[1].2;
    for (_, suffix) in VIEWS {
        let cpu0 = server.cpu_time().unwrap();
        let t0 = Instant::now();
        c.batch_execute(&format!(
            "CREATE MATERIALIZED VIEW mv AS {tumble}{suffix}; FLUSH"
        ))
        .await
        .unwrap();
        let wall = t0.elapsed().as_secs_f64();
        let cpu = (server.cpu_time().unwrap() - cpu0).as_secs_f64();
        c.batch_execute("DROP MATERIALIZED VIEW mv").await.unwrap();
        figures.push((rows as f64 / wall, rows as f64 / cpu.max(1e-3)));
    }
    figures
}

/// Runs every query over `bid` into a blackhole sink, timed until FLUSH returns; `rows` is the
/// number of events `bid` holds.
async fn run_queries(server: &TestServer, c: &tokio_postgres::Client, rows: u64) -> Vec<Figures> {
    let mut figures = Vec::new();
    for (name, columns, query) in QUERIES {
        c.batch_execute(&format!(
            "CREATE TABLE sink_{name} ({columns}) WITH ('connector' = 'blackhole')"
        ))
        .await
        .unwrap();
        let cpu0 = server.cpu_time().unwrap();
        let t0 = Instant::now();
        c.batch_execute(&format!("INSERT INTO sink_{name} {query}; FLUSH"))
            .await
            .unwrap();
        let wall = t0.elapsed().as_secs_f64();
        let cpu = (server.cpu_time().unwrap() - cpu0).as_secs_f64();
        let jobs = text_rows(c, "SHOW JOBS").await.unwrap();
        assert!(
            jobs.iter().all(|j| !j.contains("failed")),
            "a job failed: {jobs:?}"
        );
        c.batch_execute(&format!("DROP SINK sink_{name}_insert_1"))
            .await
            .unwrap();
        figures.push((rows as f64 / wall, rows as f64 / cpu.max(1e-3)));
    }
    figures
}

fn flink_side(python: &Path, path: &Path) -> Vec<Option<Figures>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/flink_side.py");
    QUERIES
        .iter()
        .map(|(name, _, _)| {
            let out = std::process::Command::new(python)
                .arg(&script)
                .arg(name)
                .arg(path)
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout);
            let line = text.lines().find_map(|l| l.strip_prefix("RESULT "))?;
            let number = |key: &str| -> Option<f64> {
                let at = line.find(&format!("\"{key}\": "))? + key.len() + 4;
                line[at..].split([',', '}']).next()?.trim().parse().ok()
            };
            let (rows, secs, cpu) = (number("rows")?, number("seconds")?, number("cpu_seconds")?);
            Some((rows / secs, rows / cpu.max(1e-3)))
        })
        .collect()
}

async fn nexmark_side(events: u64) -> Vec<Figures> {
    let server = server().await;
    let c = server.connect("dev").await.unwrap();
    c.batch_execute(&format!(
        "CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP(3), \
           ts AS CAST(date_time AS TIMESTAMPTZ), \
           WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) APPEND ONLY \
         WITH ('connector' = 'nexmark', 'nexmark.table.type' = 'bid', \
               'nexmark.events-per-second' = '100000000', 'nexmark.events.num' = '{events}', \
               'nexmark.event-time.events-per-second' = '100000')"
    ))
    .await
    .unwrap();
    let bids = events * 46 / 50;
    loop {
        let n = text_rows(&c, "SELECT count(*) FROM bid").await.unwrap();
        if n == vec![bids.to_string()] {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let mut figures = run_queries(&server, &c, bids).await;
    figures.extend(run_views(&server, &c, bids).await);
    server.kill9().await.unwrap();
    figures
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("Flink comparison: run it with `scripts/bench flink`");
        return;
    }
    let rows = rivulet_sql_tests::bids::events();
    let path = rivulet_sql_tests::bids::file(rows);
    let lines = rivulet_sql_tests::bids::count(&path);
    let rivulet = rivulet_side(&path, lines).await;
    let python = PathBuf::from(
        std::env::var("FLINK_PYTHON").unwrap_or_else(|_| "/tmp/flinkvenv/bin/python".into()),
    );
    let flink = if python.exists() {
        flink_side(&python, &path)
    } else {
        println!(
            "no PyFlink at {} (FLINK_PYTHON): Rivulet only",
            python.display()
        );
        vec![None; QUERIES.len()]
    };
    let nexmark = nexmark_side(rows).await;
    println!(
        "\n{lines} JSON bids ({}), parallelism 1, blackhole sink (views: their own storage), \
         {} ms barriers:\n",
        path.display(),
        barrier_ms()
    );
    println!(
        "| query          | Rivulet ev/s | Rivulet ev/CPU-s | Flink ev/s | Flink ev/CPU-s | ratio (CPU-s) | Rivulet on Nexmark ev/CPU-s |"
    );
    println!(
        "|----------------|--------------|------------------|------------|----------------|---------------|-----------------------------|"
    );
    let names = QUERIES
        .iter()
        .map(|(name, _, _)| *name)
        .chain(VIEWS.iter().map(|(name, _)| *name));
    for (i, name) in names.enumerate() {
        let (r_wall, r_cpu) = rivulet[i];
        // A view is compared with Flink's blackhole run of the same query.
        let f = if i < QUERIES.len() {
            flink[i]
        } else {
            flink[1]
        };
        let (f_wall, f_cpu, ratio) = match f {
            Some((w, c)) => (
                format!("{w:.0}"),
                format!("{c:.0}"),
                format!("{:.2}x", r_cpu / c),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "| {name:<14} | {r_wall:>12.0} | {r_cpu:>16.0} | {f_wall:>10} | {f_cpu:>14} | {ratio:>13} | {:>27.0} |",
            nexmark[i].1
        );
    }
}
