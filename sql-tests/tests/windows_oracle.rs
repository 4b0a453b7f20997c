//! The windows oracle: a seeded, out-of-order stream into a table with a watermark, TUMBLE and
//! SESSION views in both syntaxes and both emit modes (and RisingWave's SESSION WITH GAP frame),
//! HOP and CUMULATE views, and a kill -9 in the middle of open windows.
//!
//! The test keeps its own watermark (the largest event time so far minus the delay, advanced after
//! each statement as the source does), so it knows which rows are late: those whose window had
//! closed when they came. It inserts the others into a plain table, and at the end every view must
//! equal DataFusion's batch answer to the same query over those rows (an EMIT ON WINDOW CLOSE view:
//! over the windows the final watermark closed), and `rivulet_late_rows` must hold exactly the
//! late rows of each view.
#![allow(clippy::unwrap_used)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rivulet_sql_tests::{TestServer, sorted_rows, text_rows};

const WINDOW_MS: i64 = 5_000;
const HOP_SLIDE_MS: i64 = 2_000;
const HOP_SIZE_MS: i64 = 6_000;
const DELAY_MS: i64 = 3_000;
const SESSION_GAP_MS: i64 = 1_000;
const CUMULATE_STEP_MS: i64 = 2_000;
const CUMULATE_SIZE_MS: i64 = 6_000;
/// Milliseconds since the epoch of 2026-01-01 10:00:00.
const BASE_MS: i64 = 1_767_261_600_000;

fn ts(ms: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(ms).unwrap();
    t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

/// (name, query over `{t}`, emits on window close)
const VIEWS: &[(&str, &str, bool)] = &[
    (
        "rw_updates",
        "SELECT window_start, window_end, k, count(*) AS n, sum(v) AS s, max(v) AS hi \
         FROM TUMBLE({t}, ts, INTERVAL '5' SECOND) GROUP BY window_start, window_end, k",
        false,
    ),
    (
        "flink_closed",
        "SELECT window_start, window_end, count(*) AS n, min(v) AS lo \
         FROM TABLE(TUMBLE(TABLE {t}, DESCRIPTOR(ts), INTERVAL '5' SECONDS)) \
         GROUP BY window_start, window_end",
        true,
    ),
];

/// (name, query over `{t}`, emits on window close): session views.
const SESSION_VIEWS: &[(&str, &str, bool)] = &[
    (
        "sessions_rw",
        "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s, max(v) AS hi \
         FROM SESSION({t}, ts, INTERVAL '1' SECOND) GROUP BY k, window_start, window_end",
        false,
    ),
    (
        "sessions_flink",
        "SELECT window_start, window_end, k, count(*) AS n, min(v) AS lo \
         FROM TABLE(SESSION(TABLE {t} PARTITION BY k, DESCRIPTOR(ts), INTERVAL '1' SECONDS)) \
         GROUP BY window_start, window_end, k",
        true,
    ),
    (
        "sessions_frame",
        "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s FROM ( \
           SELECT k, v, first_value(ts) OVER w AS window_start, last_value(ts) OVER w AS window_end \
           FROM {t} WINDOW w AS (PARTITION BY k ORDER BY ts SESSION WITH GAP INTERVAL '1' SECOND)) q \
         GROUP BY k, window_start, window_end",
        false,
    ),
];

/// The sessions (start, end) over event times `times`: runs at most the gap apart.
fn sessions_of(times: &[i64]) -> Vec<(i64, i64)> {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::new();
    for t in sorted {
        match out.last_mut() {
            Some((_, end)) if t <= *end => *end = t + SESSION_GAP_MS,
            _ => out.push((t, t + SESSION_GAP_MS)),
        }
    }
    out
}

async fn run_seed(seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_in(dir.path()).await.unwrap();
    let mut c = server.connect("dev").await.unwrap();
    c.batch_execute(
        "CREATE TABLE ev (k INT, v BIGINT, ts TIMESTAMP(3), \
           WATERMARK FOR ts AS ts - INTERVAL '3' SECOND) APPEND ONLY; \
         CREATE TABLE ontime (k INT, v BIGINT, ts TIMESTAMP(3)); \
         CREATE TABLE hop_ontime (k INT, v BIGINT, ws TIMESTAMP(3)); \
         CREATE TABLE session_ontime (k INT, v BIGINT, ts TIMESTAMP(3)); \
         CREATE TABLE cumulate_ontime (k INT, v BIGINT, ws TIMESTAMP(3), we TIMESTAMP(3))",
    )
    .await
    .unwrap();
    c.batch_execute(
        "CREATE MATERIALIZED VIEW cumulating AS \
           SELECT window_start, window_end, k, count(*) AS n, max(v) AS hi \
           FROM CUMULATE(ev, ts, INTERVAL '2' SECOND, INTERVAL '6' SECOND) \
           GROUP BY window_start, window_end, k",
    )
    .await
    .unwrap();
    c.batch_execute(
        "CREATE MATERIALIZED VIEW hop_closed AS \
           SELECT window_start, window_end, k, count(*) AS n, max(v) AS hi \
           FROM TABLE(HOP(TABLE ev, DESCRIPTOR(ts), INTERVAL '2' SECOND, INTERVAL '6' SECOND)) \
           GROUP BY window_start, window_end, k EMIT ON WINDOW CLOSE",
    )
    .await
    .unwrap();
    c.batch_execute(
        "CREATE MATERIALIZED VIEW hopping AS \
           SELECT window_start, window_end, count(*) AS n, sum(v) AS s \
           FROM HOP(ev, ts, INTERVAL '2' SECOND, INTERVAL '6' SECOND) GROUP BY window_start, window_end",
    )
    .await
    .unwrap();
    for (name, query, eowc) in VIEWS.iter().chain(SESSION_VIEWS) {
        let emit = if *eowc { " EMIT ON WINDOW CLOSE" } else { "" };
        c.batch_execute(&format!(
            "CREATE MATERIALIZED VIEW {name} AS {}{emit}",
            query.replace("{t}", "ev")
        ))
        .await
        .unwrap();
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut watermark: Option<i64> = None;
    let mut late = 0usize;
    let mut hop_late = 0usize;
    let mut session_late = 0usize;
    let mut cumulate_late = 0usize;
    // Event times of the rows each key's sessions hold (those that were not late for them).
    let mut session_times: std::collections::HashMap<i32, Vec<i64>> = Default::default();
    let mut clock = BASE_MS;
    for statement in 0..150 {
        if statement == 75 {
            // Kill -9 with windows open, then go on where the table left off.
            server.kill9().await.unwrap();
            server = TestServer::start_in(dir.path()).await.unwrap();
            c = server.connect("dev").await.unwrap();
        }
        let rows: Vec<(i32, i64, i64)> = (0..rng.random_range(1..4))
            .map(|_| {
                clock += rng.random_range(0..400);
                let jitter = rng.random_range(-6_000..500);
                (
                    rng.random_range(0..4),
                    rng.random_range(0..100),
                    clock + jitter,
                )
            })
            .collect();
        let values: Vec<String> = rows
            .iter()
            .map(|(k, v, t)| format!("({k}, {v}, '{}')", ts(*t)))
            .collect();
        c.batch_execute(&format!("INSERT INTO ev VALUES {}", values.join(", ")))
            .await
            .unwrap();
        let mut kept = Vec::new();
        for (k, v, t) in &rows {
            let end = t.div_euclid(WINDOW_MS) * WINDOW_MS + WINDOW_MS;
            if watermark.is_some_and(|w| end <= w) {
                late += 1;
            } else {
                kept.push(format!("({k}, {v}, '{}')", ts(*t)));
            }
        }
        if !kept.is_empty() {
            c.batch_execute(&format!("INSERT INTO ontime VALUES {}", kept.join(", ")))
                .await
                .unwrap();
        }
        // A row is in every hopping window [s, s + size) with s on the slide grid; each of
        // those windows decides on its own whether the row is late.
        let mut hop_kept = Vec::new();
        for (k, v, t) in &rows {
            let mut s = t.div_euclid(HOP_SLIDE_MS) * HOP_SLIDE_MS;
            while s > t - HOP_SIZE_MS {
                if watermark.is_some_and(|w| s + HOP_SIZE_MS <= w) {
                    hop_late += 1;
                } else {
                    hop_kept.push(format!("({k}, {v}, '{}')", ts(s)));
                }
                s -= HOP_SLIDE_MS;
            }
        }
        if !hop_kept.is_empty() {
            c.batch_execute(&format!(
                "INSERT INTO hop_ontime VALUES {}",
                hop_kept.join(", ")
            ))
            .await
            .unwrap();
        }
        // A cumulating window [s, e) has e on the step grid up to s + size; a row is in every
        // one whose end is after it, and each decides on its own whether the row is late.
        let mut cumulate_kept = Vec::new();
        for (k, v, t) in &rows {
            let start = t.div_euclid(CUMULATE_SIZE_MS) * CUMULATE_SIZE_MS;
            let mut end = t.div_euclid(CUMULATE_STEP_MS) * CUMULATE_STEP_MS + CUMULATE_STEP_MS;
            while end <= start + CUMULATE_SIZE_MS {
                if watermark.is_some_and(|w| end <= w) {
                    cumulate_late += 1;
                } else {
                    cumulate_kept.push(format!("({k}, {v}, '{}', '{}')", ts(start), ts(end)));
                }
                end += CUMULATE_STEP_MS;
            }
        }
        if !cumulate_kept.is_empty() {
            c.batch_execute(&format!(
                "INSERT INTO cumulate_ontime VALUES {}",
                cumulate_kept.join(", ")
            ))
            .await
            .unwrap();
        }
        // A row is late for the session views when its own session would be closed already,
        // or when it touches a session that closed (one that ended at or before the watermark).
        let mut session_kept = Vec::new();
        for (k, v, t) in &rows {
            let times = session_times.entry(*k).or_default();
            let late = watermark.is_some_and(|w| {
                t + SESSION_GAP_MS <= w
                    || sessions_of(times)
                        .iter()
                        .any(|&(s, e)| e <= w && s - SESSION_GAP_MS <= *t && *t <= e)
            });
            if late {
                session_late += 1;
            } else {
                times.push(*t);
                session_kept.push(format!("({k}, {v}, '{}')", ts(*t)));
            }
        }
        if !session_kept.is_empty() {
            c.batch_execute(&format!(
                "INSERT INTO session_ontime VALUES {}",
                session_kept.join(", ")
            ))
            .await
            .unwrap();
        }
        let max = rows.iter().map(|r| r.2).max().unwrap();
        watermark = Some(watermark.map_or(max - DELAY_MS, |w| w.max(max - DELAY_MS)));
    }
    c.batch_execute("FLUSH").await.unwrap();
    let closed = watermark.unwrap();
    let views = VIEWS.iter().map(|v| (v, "ontime", late)).chain(
        SESSION_VIEWS
            .iter()
            .map(|v| (v, "session_ontime", session_late)),
    );
    for ((name, query, eowc), ontime, late) in views {
        let view = sorted_rows(&c, &format!("SELECT * FROM {name}"))
            .await
            .unwrap();
        let mut oracle = query.replace("{t}", ontime);
        if *eowc {
            oracle = format!(
                "SELECT * FROM ({oracle}) o WHERE window_end <= TIMESTAMP '{}'",
                ts(closed)
            );
        }
        let oracle = sorted_rows(&c, &oracle).await.unwrap();
        assert!(!oracle.is_empty(), "seed {seed}: {name} is empty");
        assert_eq!(
            view, oracle,
            "seed {seed}: view {name} differs from its query"
        );
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
    let view = sorted_rows(&c, "SELECT * FROM cumulating").await.unwrap();
    let oracle = sorted_rows(
        &c,
        "SELECT ws, we, k, count(*), max(v) FROM cumulate_ontime GROUP BY ws, we, k",
    )
    .await
    .unwrap();
    assert_eq!(
        view, oracle,
        "seed {seed}: view cumulating differs from its query"
    );
    let kept = text_rows(
        &c,
        "SELECT count(*) FROM rivulet_late_rows WHERE view_name = 'cumulating'",
    )
    .await
    .unwrap();
    assert_eq!(
        kept,
        vec![cumulate_late.to_string()],
        "seed {seed}: late rows of cumulating"
    );
    // The same windows emitted on close (aggregated by slices): those the final watermark closed.
    let view = sorted_rows(&c, "SELECT * FROM hop_closed").await.unwrap();
    let oracle = sorted_rows(
        &c,
        &format!(
            "SELECT ws, ws + INTERVAL '6' SECOND, k, count(*), max(v) FROM hop_ontime \
             WHERE ws + INTERVAL '6' SECOND <= TIMESTAMP '{}' GROUP BY ws, k",
            ts(closed)
        ),
    )
    .await
    .unwrap();
    assert!(!oracle.is_empty(), "seed {seed}: hop_closed is empty");
    assert_eq!(
        view, oracle,
        "seed {seed}: view hop_closed differs from its query"
    );
    let kept = text_rows(
        &c,
        "SELECT count(*) FROM rivulet_late_rows WHERE view_name = 'hop_closed'",
    )
    .await
    .unwrap();
    assert_eq!(
        kept,
        vec![hop_late.to_string()],
        "seed {seed}: late rows of hop_closed"
    );
    let view = sorted_rows(&c, "SELECT * FROM hopping").await.unwrap();
    let oracle = sorted_rows(
        &c,
        "SELECT ws, ws + INTERVAL '6' SECOND, count(*), sum(v) FROM hop_ontime GROUP BY ws",
    )
    .await
    .unwrap();
    assert_eq!(
        view, oracle,
        "seed {seed}: view hopping differs from its query"
    );
    let kept = text_rows(
        &c,
        "SELECT count(*) FROM rivulet_late_rows WHERE view_name = 'hopping'",
    )
    .await
    .unwrap();
    assert_eq!(
        kept,
        vec![hop_late.to_string()],
        "seed {seed}: late rows of hopping"
    );
    assert!(
        late > 5 && session_late > 5,
        "seed {seed}: too few late rows ({late}, {session_late}) to test anything"
    );
    server.kill9().await.unwrap();
}

#[tokio::test]
async fn windowed_views_equal_their_queries_over_the_rows_that_were_not_late() {
    let seeds: Vec<u64> = match std::env::var("RIVULET_ORACLE_SEED") {
        Ok(s) => vec![s.parse().unwrap()],
        Err(_) => vec![1, 2],
    };
    for seed in seeds {
        run_seed(seed).await;
    }
}
