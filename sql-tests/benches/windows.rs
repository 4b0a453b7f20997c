//! Windowed aggregation over Nexmark bids from the built-in generator, against the release binary.
//!
//! 1. The generator alone: N bid events into a table (each commit holds rows and position).
//! 2. Each query as a view over those rows (its backfill), timed until FLUSH returns:
//!    events/s and events per server CPU-second (user + system, from /proc).
//! 3. State after the final watermark: a 10 s TUMBLE with EMIT ON WINDOW CLOSE keeps state only
//!    for open windows, so its state bytes stay flat however long the stream runs.
//!
//! Run with `scripts/bench windows`. `RIVULET_BENCH_EVENTS` sets N (default 2,000,000);
//! `RIVULET_BENCH_BARRIER_MS` the server's `--barrier-interval-ms` (default 100; RisingWave's
//! default is 1000).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use rivulet_sql_tests::{TestServer, text_rows};

const QUERIES: &[(&str, &str)] = &[
    (
        "q1 projection (keyed by a count)",
        "SELECT auction, bidder, price * 908 / 1000 AS euro, ts FROM bid WHERE price > 0",
    ),
    (
        "10 s TUMBLE count/max per auction",
        "SELECT auction, window_start, window_end, count(*) AS n, max(price) AS top \
         FROM TUMBLE(bid, ts, INTERVAL '10' SECOND) GROUP BY auction, window_start, window_end",
    ),
    (
        "10 s TUMBLE, EMIT ON WINDOW CLOSE",
        "SELECT auction, window_start, count(*) AS n, max(price) AS top \
         FROM TUMBLE(bid, ts, INTERVAL '10' SECOND) GROUP BY auction, window_start \
         EMIT ON WINDOW CLOSE",
    ),
    (
        "10 s / 2 s HOP count per auction",
        "SELECT auction, window_start, count(*) AS n \
         FROM HOP(bid, ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND) GROUP BY auction, window_start",
    ),
    (
        "10 s SESSION count/max per bidder",
        "SELECT bidder, window_start, window_end, count(*) AS n, max(price) AS top \
         FROM SESSION(bid, ts, INTERVAL '10' SECOND) GROUP BY bidder, window_start, window_end",
    ),
    (
        "10 s SESSION per bidder, EMIT ON WINDOW CLOSE",
        "SELECT bidder, window_start, window_end, count(*) AS n, max(price) AS top \
         FROM SESSION(bid, ts, INTERVAL '10' SECOND) GROUP BY bidder, window_start, window_end \
         EMIT ON WINDOW CLOSE",
    ),
];

async fn state_bytes(c: &tokio_postgres::Client, view: &str) -> u64 {
    for m in c.simple_query("SHOW JOBS").await.unwrap() {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m
            && r.get("Name") == Some(view)
        {
            return r
                .get("State bytes")
                .and_then(|b| b.parse().ok())
                .unwrap_or(0);
        }
    }
    0
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("windows benchmark: run it with `scripts/bench windows`");
        return;
    }
    let events: u64 = std::env::var("RIVULET_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let bids = events * 46 / 50;
    let barrier = std::env::var("RIVULET_BENCH_BARRIER_MS").unwrap_or_else(|_| "100".into());
    println!("barrier interval: {barrier} ms");
    let server = TestServer::start_with_flags(&[
        "--streaming-parallelism",
        "1",
        "--barrier-interval-ms",
        &barrier,
    ])
    .await
    .unwrap();
    let c = server.connect("dev").await.unwrap();
    // Ten minutes of event time, generated as fast as the machine allows.
    let cpu0 = server.cpu_time().unwrap();
    let t0 = Instant::now();
    c.batch_execute(&format!(
        "CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, ts TIMESTAMP(3), \
           WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) APPEND ONLY \
         WITH ('connector' = 'nexmark', 'nexmark.table.type' = 'bid', \
               'nexmark.events-per-second' = '100000000', 'nexmark.events.num' = '{events}', \
               'nexmark.event-time.events-per-second' = '{}', \
               'nexmark.max-out-of-orderness' = '1000')",
        events / 600
    ))
    .await
    .unwrap();
    loop {
        let n: Vec<String> = text_rows(&c, "SELECT count(*) FROM bid").await.unwrap();
        if n == vec![bids.to_string()] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let wall = t0.elapsed();
    let cpu = server.cpu_time().unwrap() - cpu0;
    println!(
        "\nnexmark generator: {events} events ({bids} bids) in {:.2} s: {:.0} events/s, {:.0} events per CPU-s",
        wall.as_secs_f64(),
        events as f64 / wall.as_secs_f64(),
        events as f64 / cpu.as_secs_f64().max(1e-3)
    );
    println!(
        "\n| query (one instance per stage)            |  bids/s | bids / CPU-s | state after |"
    );
    println!(
        "|--------------------------------------------|---------|--------------|-------------|"
    );
    for (i, (what, query)) in QUERIES.iter().enumerate() {
        let view = format!("v{i}");
        let cpu0 = server.cpu_time().unwrap();
        let t0 = Instant::now();
        c.batch_execute(&format!(
            "CREATE MATERIALIZED VIEW {view} AS {query}; FLUSH"
        ))
        .await
        .unwrap();
        let wall = t0.elapsed();
        let cpu = server.cpu_time().unwrap() - cpu0;
        let state = state_bytes(&c, &view).await;
        println!(
            "| {what:<42} | {:>7.0} | {:>12.0} | {:>8.1} MB |",
            bids as f64 / wall.as_secs_f64(),
            bids as f64 / cpu.as_secs_f64().max(1e-3),
            state as f64 / 1e6
        );
        c.batch_execute(&format!("DROP MATERIALIZED VIEW {view}"))
            .await
            .unwrap();
    }
    server.kill9().await.unwrap();
}
