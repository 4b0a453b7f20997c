//! Write and query throughput of plain tables over the Postgres wire, against the release binary:
//! multi-row INSERT, COPY FROM STDIN (CSV), single-row INSERT latency (each one a synced commit),
//! a GROUP BY over everything loaded, and how fresh a materialized view is under a steady write load.
//! Rows look like Nexmark bids.
//!
//! Run with `scripts/bench` (builds the release server and sets `RIVULET_BIN`). Figures are rows per
//! second of wall time and per CPU-second of the server process (user + system, from /proc).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::SinkExt;
use rivulet_sql_tests::TestServer;

const ROWS: usize = 1_000_000;
const ROWS_PER_INSERT: usize = 1_000;
const AUCTIONS: usize = 10_000;
const SINGLE_INSERTS: usize = 500;

/// Bid `i` as (auction, bidder, price, channel, ts) in SQL literal and CSV form.
fn bid(i: usize) -> (usize, usize, usize, &'static str, String) {
    let channel = ["web", "app", "api", "partner"][i % 4];
    let secs = i / 100;
    let ts = format!(
        "2026-01-01 {:02}:{:02}:{:02}.{:03}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60,
        i % 1000
    );
    (
        (i * 7919) % AUCTIONS,
        i % 50_000,
        100 + (i * 31) % 10_000,
        channel,
        ts,
    )
}

struct Figure {
    what: &'static str,
    rows: usize,
    wall: Duration,
    cpu: Duration,
}

impl Figure {
    fn print(&self) {
        let per_s = self.rows as f64 / self.wall.as_secs_f64();
        let per_cpu_s = self.rows as f64 / self.cpu.as_secs_f64().max(1e-3);
        println!(
            "| {:<34} | {:>9} | {:>8.2} s | {:>12.0} | {:>14.0} |",
            self.what,
            self.rows,
            self.wall.as_secs_f64(),
            per_s,
            per_cpu_s
        );
    }
}

async fn measure<F, Fut>(server: &TestServer, what: &'static str, rows: usize, f: F) -> Figure
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let cpu0 = server.cpu_time().unwrap();
    let t0 = Instant::now();
    f().await;
    let wall = t0.elapsed();
    let cpu = server.cpu_time().unwrap() - cpu0;
    Figure {
        what,
        rows,
        wall,
        cpu,
    }
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("spine benchmark: run it with `scripts/bench`");
        return;
    }
    let server = TestServer::start().await.unwrap();
    let client = server.connect("dev").await.unwrap();
    let ddl = "(auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, ts TIMESTAMP)";
    client
        .batch_execute(&format!(
            "CREATE TABLE bids_insert {ddl}; CREATE TABLE bids_copy {ddl}; CREATE TABLE bids_one {ddl}"
        ))
        .await
        .unwrap();

    // Statements are rendered before timing starts: the figure is the server's, not the text's.
    let statements: Vec<String> = (0..ROWS / ROWS_PER_INSERT)
        .map(|s| {
            let values: Vec<String> = (s * ROWS_PER_INSERT..(s + 1) * ROWS_PER_INSERT)
                .map(|i| {
                    let (a, b, p, c, t) = bid(i);
                    format!("({a},{b},{p},'{c}','{t}')")
                })
                .collect();
            format!("INSERT INTO bids_insert VALUES {}", values.join(","))
        })
        .collect();
    let csv: Vec<Bytes> = (0..ROWS)
        .collect::<Vec<_>>()
        .chunks(10_000)
        .map(|chunk| {
            let mut s = String::with_capacity(chunk.len() * 48);
            for &i in chunk {
                let (a, b, p, c, t) = bid(i);
                s.push_str(&format!("{a},{b},{p},{c},{t}\n"));
            }
            Bytes::from(s)
        })
        .collect();

    let mut figures = Vec::new();
    figures.push(
        measure(&server, "INSERT, 1000 rows per statement", ROWS, || async {
            for s in &statements {
                client.batch_execute(s).await.unwrap();
            }
        })
        .await,
    );
    figures.push(
        measure(&server, "COPY FROM STDIN (CSV)", ROWS, || async {
            let sink = client
                .copy_in::<_, Bytes>("COPY bids_copy FROM STDIN WITH (FORMAT csv)")
                .await
                .unwrap();
            futures::pin_mut!(sink);
            for chunk in &csv {
                sink.send(chunk.clone()).await.unwrap();
            }
            let n = sink.finish().await.unwrap();
            assert_eq!(n as usize, ROWS);
        })
        .await,
    );

    let mut latencies = Vec::with_capacity(SINGLE_INSERTS);
    figures.push(
        measure(
            &server,
            "INSERT, 1 row per statement",
            SINGLE_INSERTS,
            || async {
                for i in 0..SINGLE_INSERTS {
                    let (a, b, p, c, t) = bid(i);
                    let sql = format!("INSERT INTO bids_one VALUES ({a},{b},{p},'{c}','{t}')");
                    let t0 = Instant::now();
                    client.batch_execute(&sql).await.unwrap();
                    latencies.push(t0.elapsed());
                }
            },
        )
        .await,
    );

    let query = "SELECT auction, count(*), sum(price), max(price) FROM bids_copy GROUP BY auction";
    let mut groups = 0;
    for _ in 0..3 {
        let f = measure(&server, "GROUP BY auction over 1M rows", ROWS, || async {
            groups = client.query(query, &[]).await.unwrap().len();
        })
        .await;
        figures.push(f);
    }
    assert_eq!(groups, AUCTIONS);

    let count: i64 = client
        .query_one("SELECT count(*) FROM bids_insert", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count as usize, ROWS);

    println!(
        "\n| what                               |      rows |     wall |   rows / s   | rows / CPU-s   |"
    );
    println!(
        "|------------------------------------|-----------|----------|--------------|----------------|"
    );
    for f in &figures {
        f.print();
    }
    let freshness = view_freshness(&server).await;
    // The same with barriers every 10 ms instead of the default 100 ms.
    let fast = TestServer::start_with_flags(&["--barrier-interval-ms", "10"])
        .await
        .unwrap();
    let freshness_10ms = view_freshness(&fast).await;
    let fast_cpu = fast.cpu_time().unwrap();
    fast.kill9().await.unwrap();

    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "\nsingle-row INSERT commit latency (synced WAL): p50 {:.2} ms, p99 {:.2} ms",
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3
    );
    println!(
        "materialized view freshness at {} rows/s (INSERT committed -> visible in the view), \
         default barrier interval (100 ms): p50 {:.1} ms, p99 {:.1} ms over {} probes",
        FRESHNESS_ROWS_PER_S, freshness.0, freshness.1, freshness.2
    );
    println!(
        "the same with --barrier-interval-ms 10: p50 {:.1} ms, p99 {:.1} ms over {} probes \
         (server CPU {:.1} s for the whole run)",
        freshness_10ms.0,
        freshness_10ms.1,
        freshness_10ms.2,
        fast_cpu.as_secs_f64()
    );
    server.kill9().await.unwrap();
}

const FRESHNESS_ROWS_PER_S: usize = 20_000;

/// While one client writes bids at a steady rate, another inserts a marker row every 50 ms and polls
/// a view until the marker's group appears. Returns (p50 ms, p99 ms, probes).
async fn view_freshness(server: &TestServer) -> (f64, f64, usize) {
    let setup = server.connect("dev").await.unwrap();
    setup
        .batch_execute(
            "CREATE TABLE fresh (auction BIGINT, price BIGINT); \
             CREATE MATERIALIZED VIEW fresh_v AS \
               SELECT auction, count(*) AS n, sum(price) AS total FROM fresh GROUP BY auction",
        )
        .await
        .unwrap();
    let writer = server.connect("dev").await.unwrap();
    let prober = server.connect("dev").await.unwrap();
    let rows_per_tick = FRESHNESS_ROWS_PER_S / 100;
    let write = async {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        for t in 0..500usize {
            tick.tick().await;
            let values: Vec<String> = (0..rows_per_tick)
                .map(|i| format!("({}, {})", (t * rows_per_tick + i) % AUCTIONS, i))
                .collect();
            writer
                .batch_execute(&format!("INSERT INTO fresh VALUES {}", values.join(",")))
                .await
                .unwrap();
        }
    };
    let probe = async {
        let mut out = Vec::new();
        for p in 0..80i64 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let marker = -1 - p;
            prober
                .batch_execute(&format!("INSERT INTO fresh VALUES ({marker}, 1)"))
                .await
                .unwrap();
            let t0 = Instant::now();
            loop {
                let rows = prober
                    .query("SELECT n FROM fresh_v WHERE auction = $1", &[&marker])
                    .await
                    .unwrap();
                if !rows.is_empty() {
                    break;
                }
                if t0.elapsed() > Duration::from_secs(10) {
                    panic!("marker {marker} not visible after 10 s");
                }
            }
            out.push(t0.elapsed());
        }
        out
    };
    let ((), mut probes) = tokio::join!(write, probe);
    probes.sort();
    let at = |p: f64| probes[((probes.len() as f64 * p) as usize).min(probes.len() - 1)];
    (
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        probes.len(),
    )
}
