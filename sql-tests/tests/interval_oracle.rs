//! The oracle property for interval joins: out-of-order rows into two append-only tables with
//! watermarks, interval-join views (inner, left, full with a residual condition, and a window
//! closed over the join's output), a kill -9 while rows wait for their matches, at parallelism 1
//! and 3. The test keeps each table's watermark as the source does (the largest time so far minus
//! the delay, advanced after each statement), so it knows which rows are late (older than their
//! own table's watermark when they came) and which unmatched rows have expired (the other table's
//! watermark passed their last chance). It copies the rows that were not late into plain tables;
//! at the end every view equals DataFusion's batch answer to the same join over those copies,
//! keeping only the NULL-padded rows that have expired and the windows the join's output
//! watermark has closed, and `rivulet_late_rows` holds exactly the late rows of each view.
//!
//! Window joins (equal windows on both sides) are checked the same way: a row is late for them
//! when its window had closed on its own side, and an unmatched row shows once the other side
//! closed its window.
//!
//! Seeded and bounded: `RIVULET_ORACLE_SEED=<n>` replays one seed.
#![allow(clippy::unwrap_used)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rivulet_sql_tests::{TestServer, sorted_rows, text_rows};

/// The join condition: `b.ts - a.ts` between these, milliseconds.
const LOWER_MS: i64 = -2_000;
const UPPER_MS: i64 = 1_000;
const DELAY_MS: i64 = 3_000;
/// Milliseconds since the epoch of 2026-01-01 10:00:00.
const BASE_MS: i64 = 1_767_261_600_000;

fn ts(ms: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(ms).unwrap();
    t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

const ON: &str =
    "a.k = b.k AND b.ts BETWEEN a.ts - INTERVAL '2' SECOND AND a.ts + INTERVAL '1' SECOND";

/// (name, query over `{a}` and `{b}`)
fn views() -> Vec<(&'static str, String)> {
    vec![
        (
            "inner_",
            format!(
                "SELECT a.id, b.id AS bid, a.ts, b.ts AS bts FROM {{a}} a JOIN {{b}} b ON {ON}"
            ),
        ),
        (
            "left_",
            format!(
                "SELECT a.id, a.v, b.id AS bid, a.ts, b.ts AS bts FROM {{a}} a LEFT JOIN {{b}} b ON {ON}"
            ),
        ),
        (
            "full_",
            format!(
                "SELECT a.id, b.id AS bid, a.ts, b.ts AS bts FROM {{a}} a FULL JOIN {{b}} b \
                 ON {ON} AND a.v < b.v"
            ),
        ),
    ]
}

/// Window joins (Flink's TVF form and RisingWave's): rows meet when their windows are equal.
const WINDOW_MS: i64 = 5_000;

fn window_views() -> Vec<(&'static str, String)> {
    let tvf = |t: &str| {
        format!(
            "(SELECT * FROM TABLE(TUMBLE(TABLE {{{t}}}, DESCRIPTOR(ts), INTERVAL '5' SECONDS)))"
        )
    };
    vec![
        (
            "wjoin_inner",
            format!(
                "SELECT a.id, b.id AS bid, a.window_start, a.window_end FROM {} a JOIN {} b \
                 ON a.k = b.k AND a.window_start = b.window_start AND a.window_end = b.window_end",
                tvf("a"),
                tvf("b")
            ),
        ),
        (
            "wjoin_full",
            format!(
                "SELECT a.id, b.id AS bid, a.window_end AS aend, b.window_end AS bend \
                 FROM {} a FULL JOIN {} b ON a.k = b.k AND a.window_start = b.window_start \
                 AND a.window_end = b.window_end AND a.v <= b.v",
                tvf("a"),
                tvf("b")
            ),
        ),
        (
            "wjoin_rw",
            "SELECT a.id, b.id AS bid, a.window_start FROM TUMBLE({a}, ts, INTERVAL '5' SECOND) a \
             JOIN TUMBLE({b}, ts, INTERVAL '5' SECOND) b ON a.k = b.k AND a.window_start = b.window_start"
                .to_string(),
        ),
    ]
}

const WINDOWED: &str = "SELECT window_start, window_end, count(*) AS n, sum(b.v) AS s \
     FROM TABLE(TUMBLE(TABLE {a}, DESCRIPTOR(ts), INTERVAL '5' SECONDS)) a JOIN {b} b ON {ON} \
     GROUP BY window_start, window_end";

fn parallelism(seed: u64) -> u64 {
    [1, 3][(seed % 2) as usize]
}

async fn run_seed(seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_in(dir.path()).await.unwrap();
    let mut c = server.connect("dev").await.unwrap();
    for t in ["a", "b"] {
        c.batch_execute(&format!(
            "CREATE TABLE {t} (id INT, k INT, v INT, ts TIMESTAMP(3), \
               WATERMARK FOR ts AS ts - INTERVAL '3' SECOND) APPEND ONLY; \
             CREATE TABLE {t}_on (id INT, k INT, v INT, ts TIMESTAMP(3)); \
             CREATE TABLE {t}_won (id INT, k INT, v INT, ts TIMESTAMP(3))"
        ))
        .await
        .unwrap();
    }
    let p = parallelism(seed);
    c.batch_execute(&format!("SET streaming_parallelism = {p}"))
        .await
        .unwrap();
    let on_tables = |q: &str, suffix: &str| {
        q.replace("{a}", &format!("a{suffix}"))
            .replace("{b}", &format!("b{suffix}"))
    };
    for (name, query) in views() {
        c.batch_execute(&format!(
            "CREATE MATERIALIZED VIEW {name} AS {}",
            on_tables(&query, "")
        ))
        .await
        .unwrap_or_else(|e| panic!("view {name}: {e}"));
    }
    for (name, query) in window_views() {
        c.batch_execute(&format!(
            "CREATE MATERIALIZED VIEW {name} AS {}",
            on_tables(&query, "")
        ))
        .await
        .unwrap_or_else(|e| panic!("view {name}: {e}"));
    }
    c.batch_execute(&format!(
        "CREATE MATERIALIZED VIEW windowed AS {} EMIT ON WINDOW CLOSE",
        on_tables(&WINDOWED.replace("{ON}", ON), "")
    ))
    .await
    .unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut watermarks: [Option<i64>; 2] = [None, None];
    let mut late = 0usize;
    // Late for a window join: the row's window had closed on its own side.
    let mut window_late = 0usize;
    let mut clocks = [BASE_MS; 2];
    let mut next_id = 0;
    for statement in 0..160 {
        if statement == 80 {
            // Kill -9 while rows wait for matches and windows are open.
            server.kill9().await.unwrap();
            server = TestServer::start_in(dir.path()).await.unwrap();
            c = server.connect("dev").await.unwrap();
        }
        let s = rng.random_range(0..2usize);
        let table = ["a", "b"][s];
        let rows: Vec<(i32, i32, i32, i64)> = (0..rng.random_range(1..4))
            .map(|_| {
                clocks[s] += rng.random_range(0..400);
                next_id += 1;
                (
                    next_id,
                    rng.random_range(0..4),
                    rng.random_range(0..10),
                    clocks[s] - rng.random_range(0..5_000),
                )
            })
            .collect();
        let values = |rows: &[&(i32, i32, i32, i64)]| {
            rows.iter()
                .map(|(id, k, v, t)| format!("({id}, {k}, {v}, '{}')", ts(*t)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let all: Vec<&(i32, i32, i32, i64)> = rows.iter().collect();
        c.batch_execute(&format!("INSERT INTO {table} VALUES {}", values(&all)))
            .await
            .unwrap();
        let kept: Vec<&(i32, i32, i32, i64)> = rows
            .iter()
            .filter(|r| watermarks[s].is_none_or(|w| r.3 >= w))
            .collect();
        late += rows.len() - kept.len();
        if !kept.is_empty() {
            c.batch_execute(&format!("INSERT INTO {table}_on VALUES {}", values(&kept)))
                .await
                .unwrap();
        }
        let window_kept: Vec<&(i32, i32, i32, i64)> = rows
            .iter()
            .filter(|r| {
                let end = r.3.div_euclid(WINDOW_MS) * WINDOW_MS + WINDOW_MS;
                watermarks[s].is_none_or(|w| end > w)
            })
            .collect();
        window_late += rows.len() - window_kept.len();
        if !window_kept.is_empty() {
            c.batch_execute(&format!(
                "INSERT INTO {table}_won VALUES {}",
                values(&window_kept)
            ))
            .await
            .unwrap();
        }
        let max = rows.iter().map(|r| r.3).max().unwrap() - DELAY_MS;
        if watermarks[s].is_none_or(|w| max > w) {
            watermarks[s] = Some(max);
        }
    }
    c.batch_execute("FLUSH").await.unwrap();
    let [Some(wa), Some(wb)] = watermarks else {
        panic!("seed {seed}: both tables have rows")
    };
    // An unmatched left row shows once b's watermark passed its last match time, a right row
    // once a's did; a window once the join's output watermark (the smaller input watermark held
    // back by the larger of the bounds) reached its end.
    let left_expired = ts(wb - UPPER_MS);
    let right_expired = ts(wa + LOWER_MS);
    let closed = ts(wa.min(wb) - UPPER_MS.max(-LOWER_MS));
    let mut compared = 0;
    for (name, query) in views() {
        let view = sorted_rows(&c, &format!("SELECT * FROM {name}"))
            .await
            .unwrap();
        let oracle = format!(
            "SELECT * FROM ({}) j WHERE (j.id IS NOT NULL AND j.bid IS NOT NULL) \
               OR (j.bid IS NULL AND j.ts < TIMESTAMP '{left_expired}') \
               OR (j.id IS NULL AND j.bts < TIMESTAMP '{right_expired}')",
            on_tables(&query, "_on")
        );
        let oracle = sorted_rows(&c, &oracle).await.unwrap();
        assert!(!oracle.is_empty(), "seed {seed}: {name} is empty");
        assert_eq!(
            view, oracle,
            "seed {seed} (parallelism {p}): view {name} differs from its query"
        );
        compared += view.len();
    }
    // A window's unmatched rows show once the other side's watermark closed it.
    for (name, query) in window_views() {
        let view = sorted_rows(&c, &format!("SELECT * FROM {name}"))
            .await
            .unwrap();
        let oracle = if name == "wjoin_full" {
            format!(
                "SELECT * FROM ({}) j WHERE (j.id IS NOT NULL AND j.bid IS NOT NULL) \
                   OR (j.bid IS NULL AND j.aend <= TIMESTAMP '{}') \
                   OR (j.id IS NULL AND j.bend <= TIMESTAMP '{}')",
                on_tables(&query, "_won"),
                ts(wb),
                ts(wa)
            )
        } else {
            on_tables(&query, "_won")
        };
        let oracle = sorted_rows(&c, &oracle).await.unwrap();
        assert!(!oracle.is_empty(), "seed {seed}: {name} is empty");
        assert_eq!(
            view, oracle,
            "seed {seed} (parallelism {p}): view {name} differs from its query"
        );
        let kept = text_rows(
            &c,
            &format!("SELECT count(*) FROM rivulet_late_rows WHERE view_name = '{name}'"),
        )
        .await
        .unwrap();
        assert_eq!(
            kept,
            vec![window_late.to_string()],
            "seed {seed}: late rows of {name}"
        );
        compared += view.len();
    }
    let view = sorted_rows(&c, "SELECT * FROM windowed").await.unwrap();
    let oracle = sorted_rows(
        &c,
        &format!(
            "SELECT * FROM ({}) w WHERE window_end <= TIMESTAMP '{closed}'",
            on_tables(&WINDOWED.replace("{ON}", ON), "_on")
        ),
    )
    .await
    .unwrap();
    assert!(!oracle.is_empty(), "seed {seed}: windowed is empty");
    assert_eq!(
        view, oracle,
        "seed {seed} (parallelism {p}): view windowed differs from its query"
    );
    for name in ["inner_", "left_", "full_", "windowed"] {
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
    eprintln!("seed {seed} (parallelism {p}): {compared} join rows equal, {late} late rows kept");
    assert!(late > 0, "seed {seed}: the test makes late rows");
    server.kill9().await.unwrap();
}

#[tokio::test]
async fn interval_join_views_equal_their_queries_over_rows_on_time_across_kill_9() {
    let seeds: Vec<u64> = match std::env::var("RIVULET_ORACLE_SEED") {
        Ok(s) => vec![s.parse().unwrap()],
        Err(_) => vec![1, 2],
    };
    for seed in seeds {
        run_seed(seed).await;
    }
}
