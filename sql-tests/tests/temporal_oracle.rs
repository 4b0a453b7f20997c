//! The oracle property for event-time temporal joins (`FOR SYSTEM_TIME AS OF o.ts`): orders
//! with out-of-order times, and a versioned rates table (primary key and watermark) whose rows
//! are inserted and updated with new times, some of them late; a kill -9 while orders wait for the
//! rates' watermark; parallelism 1 and 3. The test keeps both watermarks as the sources do, so it
//! knows the late rows (an order or a version older than its own table's watermark when it came)
//! and copies the others: every version into `history`, every order into `orders_on`. At the end
//! each view equals the batch answer: each order before the rates' final watermark, with the
//! latest version at or before its time (inner: orders that have one; left: all of them).
//!
//! Seeded and bounded: `RIVULET_ORACLE_SEED=<n>` replays one seed.
#![allow(clippy::unwrap_used)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rivulet_sql_tests::{TestServer, sorted_rows, text_rows};

const DELAY_MS: i64 = 2_000;
/// Milliseconds since the epoch of 2026-01-01 10:00:00.
const BASE_MS: i64 = 1_767_261_600_000;

fn ts(ms: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(ms).unwrap();
    t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

fn parallelism(seed: u64) -> u64 {
    [1, 3][(seed % 2) as usize]
}

async fn run_seed(seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_in(dir.path()).await.unwrap();
    let mut c = server.connect("dev").await.unwrap();
    c.batch_execute(
        "CREATE TABLE orders (id INT, cur INT, amount INT, ts TIMESTAMP(3), \
           WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) APPEND ONLY; \
         CREATE TABLE rates (cur INT PRIMARY KEY, rate INT, ts TIMESTAMP(3), \
           WATERMARK FOR ts AS ts - INTERVAL '2' SECOND); \
         CREATE TABLE orders_on (id INT, cur INT, amount INT, ts TIMESTAMP(3)); \
         CREATE TABLE history (cur INT, rate INT, ts TIMESTAMP(3))",
    )
    .await
    .unwrap();
    let p = parallelism(seed);
    c.batch_execute(&format!(
        "SET streaming_parallelism = {p}; \
         CREATE MATERIALIZED VIEW converted AS SELECT o.id, o.amount * r.rate AS value, r.ts AS since \
           FROM orders o JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r ON o.cur = r.cur; \
         CREATE MATERIALIZED VIEW priced AS SELECT o.id, r.rate \
           FROM orders o LEFT JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r \
           ON o.cur = r.cur AND r.rate > 1"
    ))
    .await
    .unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut watermarks: [Option<i64>; 2] = [None, None];
    let mut clock = BASE_MS;
    let mut known: Vec<i32> = Vec::new();
    let mut late = 0usize;
    let mut next_id = 0;
    for statement in 0..160 {
        if statement == 80 {
            server.kill9().await.unwrap();
            server = TestServer::start_in(dir.path()).await.unwrap();
            c = server.connect("dev").await.unwrap();
        }
        clock += rng.random_range(0..300);
        let t = clock - rng.random_range(0..3_000);
        let s = usize::from(rng.random_bool(0.4));
        let is_late = watermarks[s].is_some_and(|w| t < w);
        if s == 0 {
            next_id += 1;
            let (cur, amount) = (rng.random_range(0..4), rng.random_range(1..10));
            let row = format!("({next_id}, {cur}, {amount}, '{}')", ts(t));
            c.batch_execute(&format!("INSERT INTO orders VALUES {row}"))
                .await
                .unwrap();
            if !is_late {
                c.batch_execute(&format!("INSERT INTO orders_on VALUES {row}"))
                    .await
                    .unwrap();
            }
        } else {
            let (cur, rate) = (rng.random_range(0..4), rng.random_range(1..5));
            let sql = if known.contains(&cur) {
                format!(
                    "UPDATE rates SET rate = {rate}, ts = '{}' WHERE cur = {cur}",
                    ts(t)
                )
            } else {
                known.push(cur);
                format!("INSERT INTO rates VALUES ({cur}, {rate}, '{}')", ts(t))
            };
            c.batch_execute(&sql).await.unwrap();
            if !is_late {
                // A version at the same time as an earlier one of its key replaces it.
                c.batch_execute(&format!(
                    "DELETE FROM history WHERE cur = {cur} AND ts = '{0}'; \
                     INSERT INTO history VALUES ({cur}, {rate}, '{0}')",
                    ts(t)
                ))
                .await
                .unwrap();
            }
        }
        late += usize::from(is_late);
        if watermarks[s].is_none_or(|w| t - DELAY_MS > w) {
            watermarks[s] = Some(t - DELAY_MS);
        }
    }
    c.batch_execute("FLUSH").await.unwrap();
    let rates_watermark = ts(watermarks[1].unwrap());
    // Each order before the rates' final watermark with its version: the latest at or before
    // its time.
    let version = format!(
        "SELECT id, amount, rate, ts FROM (SELECT o.id, o.amount, h.rate, h.ts, \
           ROW_NUMBER() OVER (PARTITION BY o.id ORDER BY h.ts DESC) AS rn \
           FROM orders_on o JOIN history h ON h.cur = o.cur AND h.ts <= o.ts \
           WHERE o.ts < TIMESTAMP '{rates_watermark}') x WHERE rn = 1"
    );
    let due = format!("o.ts < TIMESTAMP '{rates_watermark}'");
    let view = sorted_rows(&c, "SELECT * FROM converted").await.unwrap();
    let oracle = sorted_rows(
        &c,
        &format!("SELECT v.id, v.amount * v.rate, v.ts FROM ({version}) v"),
    )
    .await
    .unwrap();
    assert!(!oracle.is_empty(), "seed {seed}: converted is empty");
    assert_eq!(
        view, oracle,
        "seed {seed} (parallelism {p}): converted differs"
    );
    let view = sorted_rows(&c, "SELECT * FROM priced").await.unwrap();
    let oracle = sorted_rows(
        &c,
        &format!(
            "SELECT o.id, v.rate FROM orders_on o LEFT JOIN ({version}) v \
               ON v.id = o.id AND v.rate > 1 WHERE {due}"
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        view, oracle,
        "seed {seed} (parallelism {p}): priced differs"
    );
    for name in ["converted", "priced"] {
        let kept = text_rows(
            &c,
            &format!("SELECT count(*) FROM rivulet_late_rows WHERE view_name = '{name}'"),
        )
        .await
        .unwrap();
        assert_eq!(
            kept,
            vec![late.to_string()],
            "seed {seed}: late rows of {name}"
        );
    }
    eprintln!(
        "seed {seed} (parallelism {p}): {} orders joined, {late} late rows kept",
        view.len()
    );
    assert!(late > 0, "seed {seed}: the test makes late rows");
    server.kill9().await.unwrap();
}

#[tokio::test]
async fn temporal_join_views_equal_the_version_valid_at_each_order_across_kill_9() {
    let seeds: Vec<u64> = match std::env::var("RIVULET_ORACLE_SEED") {
        Ok(s) => vec![s.parse().unwrap()],
        Err(_) => vec![1, 2],
    };
    for seed in seeds {
        run_seed(seed).await;
    }
}
