//! Joins, Rivulet and Flink side by side: Nexmark-shaped persons, auctions and bids as
//! newline-delimited JSON files, Nexmark q3 (person ⋈ auction), q8 (windowed persons ⋈ windowed
//! auctions), q4 (auction ⋈ bid, then two aggregates) and a MATCH_RECOGNIZE over the bids (a bid,
//! rising bids, a drop, per auction within 10 s) as materialized views in Rivulet (the
//! default settings: emit on update, 100 ms barriers, parallelism 1) and as `INSERT INTO` a
//! blackhole table in Flink 1.20 (`bench/flink_joins.py`, parallelism 1, heap state, no
//! checkpoints), measured in one run: events per CPU-second of each (events: lines of the files
//! the query reads), from CREATE until FLUSH returns (every line read and committed).
//!
//! Then q4 once more with a state cache larger than its state, and with a cache a tenth of its
//! state: the throughput of state that does not fit in the cache relative to state that does.
//!
//! `RIVULET_BENCH_EVENTS` (default 5,000,000) events, written once under `RIVULET_BENCH_DIR`
//! (default `/tmp/rivulet-bench/nexmark`); `FLINK_PYTHON` names PyFlink's Python.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rivulet_sql_tests::{TestServer, text_rows};

/// (name, tables, query, emit on window close)
const QUERIES: &[(&str, &[&str], &str, bool)] = &[
    (
        "q3",
        &["person", "auction"],
        "SELECT P.name, P.city, P.state, A.id FROM auction AS A INNER JOIN person AS P \
         ON A.seller = P.id WHERE A.category = 10 AND (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA')",
        false,
    ),
    ("q8", &["person", "auction"], Q8, false),
    ("q8 eowc", &["person", "auction"], Q8, true),
    (
        "q4",
        &["auction", "bid"],
        "SELECT Q.category, AVG(Q.final) FROM ( \
           SELECT MAX(B.price) AS final, A.category FROM auction A, bid B \
           WHERE A.id = B.auction AND B.ts BETWEEN A.ts AND A.expires_ts \
           GROUP BY A.id, A.category) Q GROUP BY Q.category",
        false,
    ),
    ("cep", &["bid"], CEP, false),
];

/// Complex event processing: per auction, a bid, then rising bids, then a bid below the last
/// rise, within 10 s. (Flink 1.20 refuses `PREV`, "physical offsets within partition": the
/// rise is written with `LAST(B.price, 1)`, the previous row mapped to B.)
const CEP: &str = "SELECT * FROM bid MATCH_RECOGNIZE ( \
       PARTITION BY auction ORDER BY ts \
       MEASURES A.price AS start_price, LAST(B.price) AS top, C.price AS drop_price \
       ONE ROW PER MATCH AFTER MATCH SKIP PAST LAST ROW \
       PATTERN (A B+ C) WITHIN INTERVAL '10' SECOND \
       DEFINE B AS (LAST(B.price, 1) IS NULL AND B.price > A.price) OR B.price > LAST(B.price, 1), \
              C AS C.price < LAST(B.price))";

const Q8: &str = "SELECT P.id, P.name, P.starttime FROM ( \
       SELECT id, name, window_start AS starttime, window_end AS endtime \
       FROM TABLE(TUMBLE(TABLE person, DESCRIPTOR(ts), INTERVAL '10' SECOND)) \
       GROUP BY id, name, window_start, window_end) P \
     JOIN ( \
       SELECT seller, window_start AS starttime, window_end AS endtime \
       FROM TABLE(TUMBLE(TABLE auction, DESCRIPTOR(ts), INTERVAL '10' SECOND)) \
       GROUP BY seller, window_start, window_end) A \
     ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime";

/// A small deterministic generator (an LCG), so both sides read the same files.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 16
    }
}

/// Writes `n` events as Nexmark does: of every 50, 1 person, 3 auctions and 46 bids; 100 events
/// per millisecond of event time; auctions by recent persons, bids on recent auctions.
fn write_events(dir: &Path, n: u64) {
    const STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
    const CITIES: [&str; 6] = [
        "Phoenix",
        "Los Angeles",
        "Boise",
        "Portland",
        "Seattle",
        "Cheyenne",
    ];
    let base: u64 = 1_700_000_000_000;
    let file = |name: &str| {
        std::io::BufWriter::with_capacity(
            1 << 22,
            std::fs::File::create(dir.join(format!("{name}.partial"))).unwrap(),
        )
    };
    let (mut persons, mut auctions, mut bids) = (file("person"), file("auction"), file("bid"));
    let mut rng = Lcg(42);
    let (mut person, mut auction) = (1000u64, 1000u64);
    for i in 0..n {
        let t = base + i / 100;
        match i % 50 {
            0 => {
                person += 1;
                let s = (rng.next() % 6) as usize;
                writeln!(
                    persons,
                    "{{\"id\":{person},\"name\":\"person {person}\",\"emailAddress\":\"p{person}@example.com\",\"creditCard\":\"1234 5678 9012 3456\",\"city\":\"{}\",\"state\":\"{}\",\"date_time\":{t},\"extra\":\"\"}}",
                    CITIES[s], STATES[s]
                )
                .unwrap();
            }
            1..=3 => {
                auction += 1;
                let seller = person.saturating_sub(rng.next() % 10).max(1001);
                let expires = t + 2_000 + rng.next() % 20_000;
                writeln!(
                    auctions,
                    "{{\"id\":{auction},\"itemName\":\"item {auction}\",\"description\":\"a thing\",\"initialBid\":{},\"reserve\":{},\"date_time\":{t},\"expires\":{expires},\"seller\":{seller},\"category\":{},\"extra\":\"\"}}",
                    1 + rng.next() % 1000,
                    1000 + rng.next() % 1000,
                    10 + rng.next() % 10
                )
                .unwrap();
            }
            _ => {
                let a = auction.saturating_sub(rng.next() % 100).max(1001);
                writeln!(
                    bids,
                    "{{\"auction\":{a},\"bidder\":{},\"price\":{},\"channel\":\"Google\",\"url\":\"https://www.nexmark.com/item.htm?id={a}\",\"date_time\":{t},\"extra\":\"\"}}",
                    1000 + rng.next() % 100_000,
                    1 + rng.next() % 100_000
                )
                .unwrap();
            }
        }
    }
    for (mut f, name) in [(persons, "person"), (auctions, "auction"), (bids, "bid")] {
        f.flush().unwrap();
        drop(f);
        std::fs::rename(
            dir.join(format!("{name}.partial")),
            dir.join(format!("{name}.jsonl")),
        )
        .unwrap();
    }
}

fn lines(path: &Path) -> u64 {
    std::io::BufRead::lines(std::io::BufReader::new(std::fs::File::open(path).unwrap())).count()
        as u64
}

fn ddl(table: &str, dir: &Path) -> String {
    let columns = match table {
        "person" => {
            "id BIGINT, name VARCHAR, emailAddress VARCHAR, creditCard VARCHAR, city VARCHAR, \
             state VARCHAR, date_time BIGINT, extra VARCHAR"
        }
        "auction" => {
            "id BIGINT, itemName VARCHAR, description VARCHAR, initialBid BIGINT, reserve BIGINT, \
             date_time BIGINT, expires BIGINT, seller BIGINT, category BIGINT, extra VARCHAR, \
             expires_ts AS TO_TIMESTAMP_LTZ(expires, 3)"
        }
        _ => {
            "auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, \
             date_time BIGINT, extra VARCHAR"
        }
    };
    format!(
        "CREATE TABLE {table} ({columns}, ts AS TO_TIMESTAMP_LTZ(date_time, 3), \
           WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) \
         WITH ('connector' = 'filesystem', 'path' = 'file://{}/{table}.jsonl', 'format' = 'json')",
        dir.display()
    )
}

/// (events/s, events per CPU-second, state bytes at the end)
type Figures = (f64, f64, u64);

/// One query as a view on a fresh server with `flags`, timed from CREATE until FLUSH returns.
async fn rivulet(dir: &Path, query: usize, flags: &[&str]) -> Figures {
    let (name, tables, select, eowc) = QUERIES[query];
    let server = TestServer::start_with_flags(flags).await.unwrap();
    let c = server.connect("dev").await.unwrap();
    c.batch_execute("SET streaming_parallelism = 1")
        .await
        .unwrap();
    for t in tables {
        c.batch_execute(&ddl(t, dir)).await.unwrap();
    }
    let events: u64 = tables
        .iter()
        .map(|t| lines(&dir.join(format!("{t}.jsonl"))))
        .sum();
    let emit = if eowc { " EMIT ON WINDOW CLOSE" } else { "" };
    let cpu0 = server.cpu_time().unwrap();
    let t0 = Instant::now();
    c.batch_execute(&format!(
        "CREATE MATERIALIZED VIEW v AS {select}{emit}; FLUSH"
    ))
    .await
    .unwrap();
    let wall = t0.elapsed().as_secs_f64();
    let cpu = (server.cpu_time().unwrap() - cpu0).as_secs_f64();
    // SHOW JOBS: name, status, ..., state bytes (the tenth column).
    let jobs = text_rows(&c, "SHOW JOBS").await.unwrap();
    assert!(
        jobs.iter().all(|j| !j.contains("failed")),
        "{name}: the job failed: {jobs:?}"
    );
    let state = jobs
        .first()
        .and_then(|j| j.split('|').nth(9))
        .and_then(|b| b.parse().ok())
        .unwrap_or(0);
    let rows = text_rows(&c, "SELECT count(*) FROM v").await.unwrap();
    println!(
        "{name}: {} view rows, {wall:.1} s, {cpu:.1} CPU-s",
        rows.join("")
    );
    server.kill9().await.unwrap();
    (events as f64 / wall, events as f64 / cpu.max(1e-3), state)
}

fn flink(python: &Path, dir: &Path, name: &str) -> Option<(f64, f64)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/flink_joins.py");
    let out = std::process::Command::new(python)
        .arg(&script)
        .arg(name)
        .arg(dir)
        .env("JVM_ARGS", "-Xmx8g")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().find_map(|l| l.strip_prefix("RESULT ")) else {
        println!(
            "flink {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join(" / ")
        );
        return None;
    };
    let number = |key: &str| -> Option<f64> {
        let at = line.find(&format!("\"{key}\": "))? + key.len() + 4;
        line[at..].split([',', '}']).next()?.trim().parse().ok()
    };
    let (rows, secs, cpu) = (number("rows")?, number("seconds")?, number("cpu_seconds")?);
    Some((rows / secs, rows / cpu.max(1e-3)))
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("joins against Flink: run it with `scripts/bench joins`");
        return;
    }
    let events: u64 = std::env::var("RIVULET_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000_000);
    let dir = PathBuf::from(
        std::env::var("RIVULET_BENCH_DIR").unwrap_or_else(|_| "/tmp/rivulet-bench/nexmark".into()),
    );
    if !dir.join("bid.jsonl").exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let t0 = Instant::now();
        write_events(&dir, events);
        println!(
            "wrote {events} events to {} in {:.1} s",
            dir.display(),
            t0.elapsed().as_secs_f64()
        );
    }
    let only: Option<String> = std::env::var("RIVULET_BENCH_QUERY").ok();
    let python = PathBuf::from(
        std::env::var("FLINK_PYTHON").unwrap_or_else(|_| "/tmp/flinkvenv/bin/python".into()),
    );
    let mut table = Vec::new();
    for (i, (name, ..)) in QUERIES.iter().enumerate() {
        if only.as_deref().is_some_and(|q| q != *name) {
            continue;
        }
        let ours = rivulet(&dir, i, &[]).await;
        let theirs = if name.ends_with("eowc") || !python.exists() {
            None
        } else {
            flink(&python, &dir, name)
        };
        table.push((name, ours, theirs));
    }
    println!(
        "\nNexmark joins over JSON files in {}, parallelism 1:\n",
        dir.display()
    );
    println!(
        "| query   | Rivulet ev/s | Rivulet ev/CPU-s | state MB | Flink ev/s | Flink ev/CPU-s | ratio (CPU-s) |"
    );
    println!(
        "|---------|--------------|------------------|----------|------------|----------------|---------------|"
    );
    for (name, (r_wall, r_cpu, state), flink) in &table {
        let (f_wall, f_cpu, ratio) = match flink {
            Some((w, c)) => (
                format!("{w:.0}"),
                format!("{c:.0}"),
                format!("{:.2}x", r_cpu / c),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "| {name:<7} | {r_wall:>12.0} | {r_cpu:>16.0} | {:>8.0} | {f_wall:>10} | {f_cpu:>14} | {ratio:>13} |",
            *state as f64 / 1e6
        );
    }
    if only.as_deref().is_none_or(|q| q == "q4") {
        // q4's state (every auction and bid) with a cache that holds all of it, then with a
        // cache a tenth of its size.
        let q4 = QUERIES.iter().position(|q| q.0 == "q4").unwrap();
        let large = rivulet(&dir, q4, &["--state-cache-mb", "16384"]).await;
        let tenth = (large.2 / 10_000_000).max(1).to_string();
        let small = rivulet(&dir, q4, &["--state-cache-mb", &tenth]).await;
        println!(
            "\nq4 with {:.0} MB of state: {:.0} ev/CPU-s with a {tenth} MB cache, {:.0} with a 16 GB cache: {:.0}%",
            small.2 as f64 / 1e6,
            small.1,
            large.1,
            100.0 * small.1 / large.1
        );
    }
}
